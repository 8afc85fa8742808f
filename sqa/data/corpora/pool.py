"""The unlabeled pool built by :mod:`sqa.synth.pool` as an adapter (every clip ``split=unlabeled``).

Layout: ``<root>/pool.csv`` (one record per clip: ``clip, path, clean, chain, condition, ...``)
and ``<root>/clips/<shard>/<clip>.wav``. ``sys_id`` is the clip's degradation condition,
``source_id`` its clean file (so pseudo-labeled clips of one utterance stay together); the
recorded chain is kept as an extra column. Clips the builder skipped are reported as skipped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from sqa.data.corpora import base

NAME = "pool"
SCALE = "acr-1-5"
LABEL_FILE = "pool.csv"
REQUIRED = ["clip", "path", "clean", "chain", "condition", "skip_reason"]


def load(root: Path | str) -> base.CorpusLoad:
    """Read a built pool (``<root>/pool.csv``); its corpus name is the root folder's name."""
    root = base.require_root(NAME, root)
    corpus = root.name
    table = base.read_table(NAME, root / LABEL_FILE, REQUIRED,
                            "a pool record file written by sqa.synth.pool.build (build the pool first)",
                            dtype=str, keep_default_na=False)
    skip = table["skip_reason"] != ""
    skipped = base.skipped_only([{"corpus": corpus, "file": LABEL_FILE, "row": f"{corpus}/{c}",
                                  "reason": f"not built: {r}"}
                                 for c, r in zip(table.loc[skip, "clip"], table.loc[skip, "skip_reason"])])
    table = table[~skip]
    rows = pd.DataFrame({"path": table["path"], "utt_id": corpus + "/" + table["clip"], "split": "unlabeled",
                         "sys_id": corpus + "/" + table["condition"], "source_id": corpus + "/" + table["clean"],
                         "mos_raw": np.nan, "chain": table["chain"], "clean": table["clean"]})
    return base.combine([skipped, base.finalize(rows, corpus, root, SCALE, label_file=LABEL_FILE)])
