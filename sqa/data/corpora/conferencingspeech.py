"""ConferencingSpeech 2022 challenge training data: Tencent, PSTN and IU Bloomington corpora.

Layout (each part as its distributor's archive unpacks; NISQA has its own adapter)::

    <root>/TencentCorups/withReverberationTrainDevMOS.csv     deg_wav,mos
    <root>/TencentCorups/withReverberationTrainDevMOS/*.wav
    <root>/TencentCorups/withoutReverberationTrainDevMOS.csv  deg_wav,mos
    <root>/TencentCorups/withoutReverberationTrainDev/*.wav
    <root>/pstn_train/pstn_train.csv                          filename,MOS,std,95%CI,votes
    <root>/pstn_train/*.wav
    <root>/IUB/audio_scaled_mos_cosine.csv                    AudioName,Ratings,MOS,AudioType,ScaledMOS
    <root>/IUB/audio_scaled_mos_voices.csv
    <root>/IUB/<AudioName>

Audio paths in every table are relative to the table's folder. Tencent and PSTN ratings are ACR
1-5; IU Bloomington's ``MOS`` is the mean of 0-100 slider ``Ratings`` (a list per clip, used for
``n_votes`` and ``mos_std``) and keeps ``mos_scale`` "0-100". Each table is its own manifest corpus
(see ``PARTS``); none publishes a split, a system or a clean source, so ``split`` is left for
``manifest.assign_splits`` and ``sys_id`` = ``source_id`` = ``utt_id``. ``load(root)`` reads
every part whose table exists (at least one must); ``parts=[...]`` requires the named ones.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sqa.data.corpora import base

NAME = "conferencingspeech"
SCALE = "acr-1-5"
IUB_SCALE = "0-100"


@dataclass(frozen=True)
class Part:
    table: str  # label file, relative to the root
    path: str  # column holding the audio path (relative to the table's folder)
    mos: str
    scale: str
    std: str | None = None
    votes: str | None = None
    ratings: str | None = None  # column holding the list of individual ratings


PARTS: dict[str, Part] = {
    "tencent-with-reverb": Part("TencentCorups/withReverberationTrainDevMOS.csv", "deg_wav", "mos",
                                SCALE),
    "tencent-without-reverb": Part("TencentCorups/withoutReverberationTrainDevMOS.csv", "deg_wav", "mos",
                                   SCALE),
    "pstn": Part("pstn_train/pstn_train.csv", "filename", "MOS", SCALE, std="std", votes="votes"),
    "iub-cosine": Part("IUB/audio_scaled_mos_cosine.csv", "AudioName", "MOS", IUB_SCALE, ratings="Ratings"),
    "iub-voices": Part("IUB/audio_scaled_mos_voices.csv", "AudioName", "MOS", IUB_SCALE, ratings="Ratings"),
}


def load(root: Path | str, parts: list[str] | None = None) -> base.CorpusLoad:
    root = base.require_root(NAME, root)
    unknown = sorted(set(parts or []) - set(PARTS))
    if unknown:
        raise base.CorpusError(f"[{NAME}] unknown part(s) {unknown}; known: {', '.join(PARTS)}")
    wanted = parts or [p for p, spec in PARTS.items() if (root / spec.table).is_file()]
    if not wanted:
        raise base.CorpusError(f"[{NAME}] no label table found under {root}; expected at least one of "
                               + ", ".join(spec.table for spec in PARTS.values()))
    return base.combine([_load_part(root, name, PARTS[name]) for name in wanted])


def _load_part(root: Path, corpus: str, part: Part) -> base.CorpusLoad:
    required = [c for c in (part.path, part.mos, part.std, part.votes, part.ratings) if c]
    table = base.read_table(NAME, root / part.table, required, f"the {corpus} MOS table",
                            dtype={part.path: str})
    folder = str(Path(part.table).parent)
    rows = pd.DataFrame({"path": table[part.path].map(lambda p: base.rel_path(folder, p)),
                         "mos_raw": table[part.mos]})
    if part.std:
        rows["mos_std_raw"] = table[part.std]
    if part.votes:
        rows["n_votes"] = table[part.votes]
    if part.ratings:
        votes = table[part.ratings].map(_ratings)
        rows["n_votes"] = votes.map(lambda v: len(v) if v else np.nan)
        rows["mos_std_raw"] = votes.map(lambda v: np.std(v, ddof=1) if v and len(v) > 1 else np.nan)
    if "AudioType" in table:
        rows["audio_type"] = table["AudioType"]
    return base.finalize(rows, corpus, root, part.scale, label_file=part.table)


def _ratings(text) -> list[float] | None:
    """The individual ratings of an IUB ``Ratings`` cell such as ``[55, 70, 62]``; None if unreadable."""
    try:
        return [float(v) for v in ast.literal_eval(str(text))]
    except (ValueError, TypeError, SyntaxError):
        return None
