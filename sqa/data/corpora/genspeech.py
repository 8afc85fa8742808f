"""GenSpeech: listening test of generative (neural) and classic speech codecs (Jassim et al., WARP-Q).

The exact published layout could not be confirmed; this adapter follows the table convention of
the WARP-Q toolkit that evaluated it (one row per coded clip)::

    <root>/genspeech_mos.csv    Ref_Wave,Test_Wave,MOS,Codec
    <root>/<Test_Wave>          coded clip, path relative to the root
    <root>/<Ref_Wave>           its clean reference

Ratings are ACR 1-5. The corpus is a test set. ``sys_id`` = ``Codec``; ``source_id`` = the
reference ``Ref_Wave`` (every codec coded the same references). Another table name can be given
with ``label_file=``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sqa.data.corpora import base

NAME = "genspeech"
SCALE = "acr-1-5"

LABEL_FILE = "genspeech_mos.csv"
REQUIRED = ["Ref_Wave", "Test_Wave", "MOS", "Codec"]


def load(root: Path | str, label_file: str = LABEL_FILE) -> base.CorpusLoad:
    root = base.require_root(NAME, root)
    table = base.read_table(NAME, root / label_file, REQUIRED, "the GenSpeech MOS table",
                            dtype={"Ref_Wave": str, "Test_Wave": str, "Codec": str})
    rows = pd.DataFrame({
        "path": table["Test_Wave"].map(base.rel_path),
        "split": "test",
        "sys_id": table["Codec"],
        "source_id": table["Ref_Wave"].map(lambda r: f"{NAME}/{Path(base.rel_path(r)).with_suffix('').as_posix()}",
                                           na_action="ignore"),
        "mos_raw": table["MOS"],
    })
    return base.finalize(rows, NAME, root, SCALE, label_file=label_file)
