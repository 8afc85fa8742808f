"""Audio Deep Packet Loss Concealment (PLC) Challenge: crowdsourced ACR ratings of the
participants' concealed blind-set clips (Diener et al., Interspeech 2022).

The exact published layout could not be confirmed; this adapter reads one per-clip table in the
column names of Microsoft's other P.808-rated releases (e.g. the PSTN corpus)::

    <root>/plc_mos.csv               filename,MOS[,std,95%CI,votes]
    <root>/<system>/<clip>.wav       ``filename``: the clip path relative to the root

Ratings are ACR 1-5; the corpus is a test set. ``sys_id`` = the first folder of ``filename`` (the
PLC system, incl. reference conditions such as the lossy input), ``source_id`` = the clip's file
name: every system concealed the same blind-set clips, so they group together. A ``filename``
without a folder gets ``sys_id`` = ``source_id`` = ``utt_id``. Another table name can be given
with ``label_file=``.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pandas as pd

from sqa.data.corpora import base

NAME = "plc-challenge"
SCALE = "acr-1-5"

LABEL_FILE = "plc_mos.csv"
REQUIRED = ["filename", "MOS"]


def load(root: Path | str, label_file: str = LABEL_FILE) -> base.CorpusLoad:
    root = base.require_root(NAME, root)
    table = base.read_table(NAME, root / label_file, REQUIRED, "the PLC challenge per-clip MOS table",
                            dtype={"filename": str})
    paths = table["filename"].map(base.rel_path, na_action="ignore").map(PurePosixPath, na_action="ignore")
    in_folder = paths.map(lambda p: len(p.parts) > 1, na_action="ignore").fillna(False).astype(bool)
    rows = pd.DataFrame({
        "path": paths.map(str, na_action="ignore"),
        "split": "test",
        "sys_id": paths.map(lambda p: p.parts[0], na_action="ignore").where(in_folder),
        "source_id": paths.map(lambda p: f"{NAME}/{p.stem}", na_action="ignore").where(in_folder),
        "mos_raw": table["MOS"],
        "mos_std_raw": table["std"] if "std" in table else float("nan"),
        "n_votes": table["votes"] if "votes" in table else float("nan"),
    })
    return base.finalize(rows, NAME, root, SCALE, label_file=label_file)
