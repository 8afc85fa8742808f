"""BVCC, the VoiceMOS Challenge 2022 main track (Cooper & Yamagishi 2021; Huang et al. 2022).

Layout (the challenge's ``main`` package)::

    <root>/DATA/sets/train_mos_list.txt   -> train
    <root>/DATA/sets/val_mos_list.txt     -> dev
    <root>/DATA/sets/test_mos_list.txt    -> test
    <root>/DATA/wav/<sys>-<utt>.wav

Each list has one ``<wav name>,<mean rating>`` line per clip and no header. Ratings are ACR 1-5.
``sys_id`` is the wav name up to its first ``-`` (e.g. ``sys64e2f``); there is no published clean
source, so ``source_id`` = ``utt_id``. All three lists are required.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sqa.data.corpora import base

NAME = "bvcc"
SCALE = "acr-1-5"

LISTS = {"train": "train_mos_list.txt", "dev": "val_mos_list.txt", "test": "test_mos_list.txt"}
SETS_DIR = "DATA/sets"
WAV_DIR = "DATA/wav"


def load(root: Path | str) -> base.CorpusLoad:
    root = base.require_root(NAME, root)
    return base.combine([_load_list(root, split, f"{SETS_DIR}/{name}") for split, name in LISTS.items()])


def _load_list(root: Path, split: str, label: str) -> base.CorpusLoad:
    wavs, ratings = _read_list(root / label)
    rows = pd.DataFrame({
        "path": [f"{WAV_DIR}/{w}" for w in wavs],
        "split": split,
        "sys_id": [w.split("-", 1)[0] if "-" in w else None for w in wavs],
        "mos_raw": ratings,
    })
    return base.finalize(rows, NAME, root, SCALE, label_file=label)


def _read_list(path: Path) -> tuple[list[str], list[str]]:
    """``(wav names, ratings as text)``; a line without exactly two fields is a format error."""
    expected = "a VoiceMOS list of '<wav name>,<mos>' lines without header"
    base.require_file(NAME, path, expected)
    wavs, ratings = [], []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 2 or not fields[0]:
            raise base.CorpusError(f"[{NAME}] {path} line {number}: {line!r} has {len(fields)} field(s); "
                                   f"expected {expected}")
        wavs.append(fields[0])
        ratings.append(fields[1])
    return wavs, ratings
