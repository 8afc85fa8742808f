"""NISQA Corpus (Mittag et al., Interspeech 2021), as unpacked from ``NISQA_Corpus.zip``.

Layout::

    <root>/NISQA_corpus_file.csv                    every clip of every sub-dataset
    <root>/NISQA_TRAIN_SIM/NISQA_TRAIN_SIM_file.csv the same rows, one file per sub-dataset
    <root>/NISQA_TRAIN_SIM/deg/*.wav, ref/*.wav     (likewise NISQA_VAL_SIM, NISQA_TRAIN_LIVE,
                                                     NISQA_VAL_LIVE, NISQA_TEST_FOR,
                                                     NISQA_TEST_P501, NISQA_TEST_LIVETALK)

``NISQA_corpus_file.csv`` is read when present, else every ``<db>/<db>_file.csv``. Columns used:
``db, con, filepath_deg, filepath_ref, mos, mos_std, votes`` (paths relative to the root) and the
quality dimensions ``noi, col, dis, loud`` with their ``*_std``, kept as extra columns. Ratings are
ACR 1-5 (P.808 crowdsourcing). Each sub-dataset becomes its own manifest corpus
(``NISQA_TEST_FOR`` -> ``nisqa-test-for``) with its published split (TRAIN -> train, VAL -> dev,
TEST -> test). ``sys_id`` = ``con`` (the condition); ``source_id`` = ``filepath_ref`` (live
recordings have none: ``utt_id``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from sqa.data.corpora import base

NAME = "nisqa"
SCALE = "acr-1-5"

CORPUS_FILE = "NISQA_corpus_file.csv"
REQUIRED = ["db", "con", "filepath_deg", "filepath_ref", "mos", "mos_std", "votes"]
DIMENSIONS = ["noi", "col", "dis", "loud", "noi_std", "col_std", "dis_std", "loud_std"]
SPLITS = {"TRAIN": "train", "VAL": "dev", "TEST": "test"}
_DB = re.compile(r"NISQA_(TRAIN|VAL|TEST)_([A-Za-z0-9]+)")


def corpus_name(db: str) -> str:
    """``NISQA_TEST_FOR`` -> ``nisqa-test-for``."""
    return db.lower().replace("_", "-")


def load(root: Path | str) -> base.CorpusLoad:
    root = base.require_root(NAME, root)
    return base.combine([part for f in _label_files(root) for part in _load_table(root, f)])


def _label_files(root: Path) -> list[Path]:
    if (root / CORPUS_FILE).is_file():
        return [root / CORPUS_FILE]
    per_db = sorted(f for f in root.glob("NISQA_*/NISQA_*_file.csv") if f.stem == f.parent.name + "_file")
    if not per_db:
        raise base.CorpusError(f"[{NAME}] found neither {root / CORPUS_FILE} nor any "
                               f"<db>/<db>_file.csv (e.g. NISQA_TEST_FOR/NISQA_TEST_FOR_file.csv) "
                               f"under {root}")
    return per_db


def _load_table(root: Path, path: Path) -> list[base.CorpusLoad]:
    table = base.read_table(NAME, path, REQUIRED, "a NISQA corpus file", dtype={"db": str, "con": str})
    label = path.relative_to(root).as_posix()
    parts = []
    for db, rows in table.groupby("db", sort=True):
        match = _DB.fullmatch(str(db))
        if not match:
            parts.append(base.skipped_only([{"corpus": NAME, "file": label, "row": str(p),
                                        "reason": f"db {db!r} is not NISQA_<TRAIN|VAL|TEST>_<name>"}
                                       for p in rows["filepath_deg"]]))
            continue
        parts.append(base.finalize(_rows(rows, corpus_name(str(db)), SPLITS[match.group(1)]),
                                   corpus_name(str(db)), root, SCALE, label_file=label))
    return parts


def _rows(table: pd.DataFrame, corpus: str, split: str) -> pd.DataFrame:
    ref = table["filepath_ref"].where(table["filepath_ref"].notna())
    out = pd.DataFrame({
        "path": table["filepath_deg"].map(base.rel_path),
        "split": split,
        "sys_id": table["con"],
        "source_id": ref.map(lambda r: f"{corpus}/{Path(base.rel_path(r)).with_suffix('').as_posix()}",
                             na_action="ignore"),
        "mos_raw": table["mos"],
        "mos_std_raw": table["mos_std"],
        "n_votes": table["votes"],
    })
    for dim in DIMENSIONS:
        if dim in table:
            out[dim] = pd.to_numeric(table[dim], errors="coerce")
    return out
