"""A pool built by :mod:`sqa.synth.pool` as an adapter: every clip ``split=unlabeled``, unless the
pool holds ``teacher_labels.csv`` (``clip, mos_raw, split``: a teacher's MOS and a dev/test split,
written by :func:`sqa.synth.release_corpus.label_heldout`); then its clips are labeled by it.

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
TEACHER_LABELS = "teacher_labels.csv"


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
    if (root / TEACHER_LABELS).is_file():
        rows, unlabeled = _with_teacher_labels(rows, root, corpus)
        skipped = base.combine([skipped, unlabeled])
    return base.combine([skipped, base.finalize(rows, corpus, root, SCALE, label_file=LABEL_FILE)])


def _with_teacher_labels(rows: pd.DataFrame, root: Path, corpus: str) -> tuple[pd.DataFrame, base.CorpusLoad]:
    """Rows labeled from ``teacher_labels.csv``; clips it has no label for are skipped, counted."""
    labels = base.read_table(NAME, root / TEACHER_LABELS, ["clip", "mos_raw", "split"],
                             "a teacher label file written by sqa.synth.release_corpus.label_heldout")
    labels = labels.set_index(corpus + "/" + labels["clip"].astype(str))
    known = rows["utt_id"].isin(labels.index)
    missing = base.skipped_only([{"corpus": corpus, "file": TEACHER_LABELS, "row": u,
                                  "reason": "no teacher label (the teacher failed on it)"}
                                 for u in rows.loc[~known, "utt_id"]])
    rows = rows[known].copy()
    rows["mos_raw"] = rows["utt_id"].map(labels["mos_raw"]).to_numpy()
    rows["split"] = rows["utt_id"].map(labels["split"]).to_numpy()
    return rows, missing
