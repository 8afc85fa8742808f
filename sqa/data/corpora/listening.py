"""Your own listening-test ratings (collected with ``sqa.listen.widgets``, stage 07) as a MOS corpus.

Layout of a ratings folder (see ``sqa.listen.ratings_store``)::

    <root>/ratings.csv    one row per vote: time, listener, utt_id, corpus, path, rating,
                          is_reference, session (``path`` relative to the rated corpus's root)
    <root>/roots.json     rated corpus -> its audio root
    <root>/audio/<corpus>/<path>   copies of the rated clips

The manifest follows the rule "paths relative to the corpus root": on load, every rated clip that
has no copy under ``<root>/audio/`` yet is copied there from the root recorded in ``roots.json``
(once; later loads need only the ratings folder, so it stays usable when the rated corpus moves
or is deleted), and the rows point at the copies. A clip whose copy and original are both
missing is skipped with that reason.

One row per rated stimulus: ``mos`` = mean over listeners (each listener's latest vote counts
once), ``n_votes``, ``mos_std`` (NaN for a single vote; a clip rated by one listener still
counts). Hidden references are rows of their own with ``sys_id = "reference"``. Extras:
``rated_corpus``, ``rated_utt_id`` (the clip's id in its own corpus), ``is_reference``,
``listeners``. ``utt_id`` is ``<corpus>/<rated corpus>/<path without extension>`` (``..`` spelled
``_up``). All rows go to split ``test`` (a listening test makes evaluation data) unless
``split=None``, which leaves them to ``manifest.assign_splits``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sqa.data import manifest
from sqa.data.corpora import base
from sqa.listen import ratings_store

NAME = "ratings"
SCALE = "acr-1-5"
REFERENCE_SYSTEM = "reference"


def load(root: Path | str, corpus: str = NAME, split: str | None = "test") -> base.CorpusLoad:
    root = base.require_root(NAME, root)
    if split is not None and split not in manifest.SPLITS:
        raise base.CorpusError(f"[{NAME}] split {split!r} is not one of {', '.join(manifest.SPLITS)}")
    label_file = root / ratings_store.RATINGS_FILE
    base.require_file(NAME, label_file, "a ratings CSV written by sqa.listen.ratings_store.append_rating")
    try:
        votes = ratings_store.read_ratings(label_file)
        roots = ratings_store.read_roots(root)
    except ratings_store.RatingsError as e:
        raise base.CorpusError(f"[{NAME}] {e}") from None
    torn = base.skipped_only([{"corpus": corpus, "file": str(label_file), "row": f"line {n}",
                          "reason": "torn or malformed rating line"}
                         for n, _ in votes.attrs.get("torn_lines", [])])
    clips = ratings_store.to_corpus(votes)
    if clips.empty:
        return torn
    for r in clips.itertuples():
        ratings_store.copy_audio(root, r.corpus, r.path, roots)
    stored = [ratings_store.stored_path(c, p) for c, p in zip(clips["corpus"], clips["path"])]
    is_ref = clips["is_reference"].astype(bool)
    ids = [f"{corpus}/{Path(s).relative_to(ratings_store.AUDIO_DIR).with_suffix('').as_posix()}" for s in stored]
    rows = pd.DataFrame({
        "path": stored,
        "utt_id": ids,
        "split": split,
        "sys_id": [REFERENCE_SYSTEM if ref else utt for ref, utt in zip(is_ref, ids)],
        "mos_raw": clips["mos"].to_numpy(),
        "mos_std_raw": clips["mos_std"].to_numpy(),
        "n_votes": clips["n_votes"].to_numpy(),
        "rated_corpus": clips["corpus"].to_numpy(),
        "rated_utt_id": clips["utt_id"].to_numpy(),
        "is_reference": is_ref.to_numpy(),
        "listeners": clips["listeners"].to_numpy(),
    })
    return base.combine([torn, base.finalize(rows, corpus, root, SCALE, label_file=str(label_file))])
