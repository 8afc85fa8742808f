"""The embedded demo corpora as an adapter: reads what :mod:`sqa.synth.demo_corpus` built.

Each built corpus folder (``<data>/<corpus>``) holds ``labels.csv`` (PESQ-WB MOS-LQO labels,
``mos_scale = "pesq-wb"``) and ``wav/``.
"""

from __future__ import annotations

from pathlib import Path

from sqa.data.corpora import base

NAME = "demo"
SCALE = "pesq-wb"

def load(root: Path | str) -> base.CorpusLoad:
    """Read one built demo corpus (``<data>/<corpus>``) as manifest rows."""
    root = base.require_root(NAME, root)
    table = base.read_table(NAME, root / "labels.csv",
                            ["path", "utt_id", "split", "sys_id", "source_id", "mos_raw"],
                            "a demo corpus label file written by sqa.synth.demo_corpus.build")
    return base.finalize(table, root.name, root, SCALE, label_file=str(root / "labels.csv"))
