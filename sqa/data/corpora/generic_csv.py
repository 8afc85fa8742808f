"""Any corpus described by one CSV table: ``path,mos[,sys_id,source_id,split,mos_std,n_votes,...]``.

Layout::

    <root>/mos.csv            header row required; ``path`` relative to the root
    <root>/<path>

``mos`` and ``mos_std`` are on the native ``scale`` (a key of ``sqa.data.manifest.SCALES``, default
ACR 1-5), mapped to 1-5. Optional columns: ``sys_id``, ``source_id`` (empty: ``utt_id``),
``split`` (train/dev/test/unlabeled; empty: left to ``manifest.assign_splits``; any other value
skips the row), ``mos_std``, ``n_votes``. Every further column is kept as an extra column. Rows
with split ``unlabeled`` may leave ``mos`` empty. Columns the adapter computes itself (``utt_id``,
``corpus``, ``mos_raw``, ``mos_scale``, ``duration``, ``sample_rate``) are ignored. ``corpus``
defaults to the root folder's name; ``label_file`` names another table.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from sqa.data import manifest
from sqa.data.corpora import base

NAME = "generic-csv"
SCALE = "acr-1-5"

LABEL_FILE = "mos.csv"
REQUIRED = ["path", "mos"]
OPTIONAL = ["sys_id", "source_id", "split", "mos_std", "n_votes"]
_RESERVED = set(manifest.COLUMNS) | {"mos_std_raw"}


def corpus_name(root: Path) -> str:
    """The root folder's name as a corpus name: lower case, runs of other characters -> ``-``."""
    return re.sub(r"[^a-z0-9._+]+", "-", root.name.lower()).strip("-") or NAME


def load(root: Path | str, label_file: str = LABEL_FILE, scale: str = SCALE,
         corpus: str | None = None) -> base.CorpusLoad:
    root = base.require_root(NAME, root)
    if scale not in manifest.SCALES:
        raise base.CorpusError(f"[{NAME}] unknown scale {scale!r}; known: {', '.join(manifest.SCALES)}")
    corpus = corpus or corpus_name(root)
    table = base.read_table(NAME, root / label_file, REQUIRED,
                            f"a CSV with columns {', '.join(REQUIRED)}[, {', '.join(OPTIONAL)}, ...]",
                            dtype={c: str for c in ("path", "sys_id", "source_id", "split")})
    split = (table["split"].str.strip() if "split" in table
             else pd.Series(None, index=table.index, dtype=object))
    bad = split.notna() & (split != "") & ~split.isin(manifest.SPLITS)
    rejected = base.skipped_only([{"corpus": corpus, "file": label_file,
                              "row": f"{corpus}/{Path(base.rel_path(p)).with_suffix('').as_posix()}",
                              "reason": f"split {s!r} is not one of {', '.join(manifest.SPLITS)}"}
                             for p, s in zip(table.loc[bad, "path"].astype(str), split[bad])])
    table, split = table[~bad], split[~bad]
    rows = pd.DataFrame({"path": table["path"].map(base.rel_path, na_action="ignore"),
                         "split": split.where(split != ""), "mos_raw": table["mos"]})
    for col in ("sys_id", "source_id", "n_votes"):
        if col in table:
            rows[col] = table[col]
    if "source_id" in rows:
        rows["source_id"] = rows["source_id"].map(lambda s: f"{corpus}/{s}", na_action="ignore")
    if "mos_std" in table:
        rows["mos_std_raw"] = table["mos_std"]
    for col in table.columns:
        if col not in REQUIRED + OPTIONAL and col not in _RESERVED:
            rows[col] = table[col]
    return base.combine([rejected, base.finalize(rows, corpus, root, scale, label_file=label_file)])
