"""A Blizzard-Challenge-style TTS MOS list: the mean rating of each system's rendering of each test
utterance.

Layout (a convention, since each Blizzard year publishes its own format)::

    <root>/mos_list.csv                     system,utterance,mos   (header row optional)
    <root>/wav/<system>/<utterance>.wav

Further columns after ``mos`` are ignored. Ratings are ACR 1-5 naturalness MOS. ``sys_id`` =
``system``; ``source_id`` = ``utterance`` (every system synthesised the same test sentences).
No split is published, and a system x sentence grid cannot be cut into parts that share neither
systems nor sentences, so the corpus is a test set unless ``split=None`` leaves it to
``manifest.assign_splits`` (which then keeps it whole in one split). ``corpus=`` names the
manifest corpus (e.g. ``blizzard-2019``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sqa.data.corpora import base

NAME = "blizzard"
SCALE = "acr-1-5"

LABEL_FILE = "mos_list.csv"
COLUMNS = ["system", "utterance", "mos"]
EXPECTED = "a MOS list of 'system,utterance,mos' rows"


def load(root: Path | str, label_file: str = LABEL_FILE, corpus: str = NAME,
         split: str | None = "test") -> base.CorpusLoad:
    root = base.require_root(NAME, root)
    table = base.read_table(NAME, root / label_file, [], EXPECTED, header=None, dtype=str,
                            skip_blank_lines=True)
    if table.shape[1] < len(COLUMNS):
        raise base.CorpusError(f"[{NAME}] {root / label_file} has {table.shape[1]} column(s); expected "
                               f"{EXPECTED}")
    table = table.iloc[:, :3].set_axis(COLUMNS, axis=1)
    first = table.iloc[:1].apply(lambda c: c.str.strip().str.lower())
    if len(table) and first.values.tolist()[0] == COLUMNS:
        table = table.iloc[1:]
    system, utterance = table["system"].str.strip(), table["utterance"].str.strip()
    rows = pd.DataFrame({
        "path": "wav/" + system + "/" + utterance.map(_wav_name, na_action="ignore"),
        "split": split,
        "sys_id": system,
        "source_id": corpus + "/" + utterance.str.replace(r"\.wav$", "", case=False, regex=True),
        "mos_raw": table["mos"],
    })
    return base.finalize(rows, corpus, root, SCALE, label_file=label_file)


def _wav_name(utterance: str) -> str:
    return utterance if utterance.lower().endswith(".wav") else utterance + ".wav"
