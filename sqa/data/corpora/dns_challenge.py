"""Deep Noise Suppression (DNS) Challenge subjective results, as per-clip tables of Microsoft's
P.808 crowdsourcing toolkit (ACR per ITU-T P.808, or P.835 SIG/BAK/OVRL).

The exact published layout could not be confirmed; this adapter reads the toolkit's per-clip
report::

    <root>/<batch>_votes_per_clip.csv   one or more tables (``*_all_votes_per_clip.csv`` ignored)
    <root>/<short_file_name>            the rated clips, relative to the root

A table with ``MOS_SIG``, ``MOS_BAK`` and ``MOS_OVRL`` is P.835: OVRL is the mos (``std_ovrl``
its spread) and SIG/BAK are kept as extra columns ``mos_sig``, ``mos_bak`` (+ ``std_sig``,
``std_bak`` when present). Otherwise the table needs ``MOS`` (P.808 ACR; ``std``). Both need
``short_file_name`` (else the file name at the end of ``file_url``); ``n`` gives the votes.
Ratings are ACR 1-5. Corpora: ``dns-p808`` and ``dns-p835``, test sets. ``sys_id`` = the condition
column the toolkit writes from its ``condition_pattern`` (first of ``model``, ``condition_name``,
``condition``), else ``utt_id``; ``source_id`` = ``utt_id``. A clip rated again in a later table
(name order) of the same method is skipped and reported.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sqa.data.corpora import base

NAME = "dns-challenge"
SCALE = "acr-1-5"

TABLE_GLOB = "*_votes_per_clip.csv"
P835 = ["MOS_SIG", "MOS_BAK", "MOS_OVRL"]
CONDITION_COLUMNS = ("model", "condition_name", "condition")
EXPECTED = ("a P.808-toolkit per-clip table with short_file_name (or file_url) and MOS (P.808) "
            "or MOS_SIG, MOS_BAK, MOS_OVRL (P.835)")


def load(root: Path | str) -> base.CorpusLoad:
    root = base.require_root(NAME, root)
    tables = sorted(t for t in root.glob(TABLE_GLOB) if not t.name.endswith("_all_votes_per_clip.csv"))
    if not tables:
        raise base.CorpusError(f"[{NAME}] no {TABLE_GLOB} under {root}; expected {EXPECTED}")
    seen: dict[tuple[str, str], str] = {}
    loads = []
    for path in tables:
        table = base.read_table(NAME, path, [], EXPECTED)
        loads.extend(_read_table(root, path, table, seen))
    return base.combine(loads)


def _read_table(root: Path, path: Path, table: pd.DataFrame,
                seen: dict[tuple[str, str], str]) -> list[base.CorpusLoad]:
    """Rows of one per-clip table; ``seen`` (corpus, clip) -> earlier table guards against repeats."""
    label = path.relative_to(root).as_posix()
    clips = _clip_names(path, table)
    if all(c in table for c in P835):
        corpus, mos, std = "dns-p835", "MOS_OVRL", "std_ovrl"
    elif "MOS" in table:
        corpus, mos, std = "dns-p808", "MOS", "std"
    else:
        raise base.CorpusError(f"[{NAME}] {path} lacks column(s) MOS or {', '.join(P835)}; expected "
                               f"{EXPECTED}, found {list(table.columns)}")
    repeat, keep, here = [], [], set()
    for clip in clips:
        earlier = seen.get((corpus, clip), label if clip in here else None)
        keep.append(earlier is None)
        if earlier is None:
            here.add(clip)
        else:
            repeat.append({"corpus": corpus, "file": label, "reason": f"clip already rated in {earlier}",
                           "row": f"{corpus}/{Path(clip).with_suffix('').as_posix()}"})
    seen.update({(corpus, clip): label for clip in here})
    table, clips = table[keep], clips[keep]
    condition = next((c for c in CONDITION_COLUMNS if c in table), None)
    rows = pd.DataFrame({
        "path": clips,
        "split": "test",
        "sys_id": table[condition] if condition else None,
        "mos_raw": table[mos],
        "mos_std_raw": table[std] if std in table else float("nan"),
        "n_votes": table["n"] if "n" in table else float("nan"),
    })
    if corpus == "dns-p835":
        for col in ("MOS_SIG", "MOS_BAK", "std_sig", "std_bak"):
            if col in table:
                rows[col.lower()] = pd.to_numeric(table[col], errors="coerce")
    return [base.skipped_only(repeat), base.finalize(rows, corpus, root, SCALE, label_file=label)]


def _clip_names(path: Path, table: pd.DataFrame) -> pd.Series:
    if "short_file_name" in table:
        return table["short_file_name"].astype(str).map(base.rel_path)
    if "file_url" in table:
        return table["file_url"].astype(str).map(lambda u: u.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1])
    raise base.CorpusError(f"[{NAME}] {path} lacks column(s) short_file_name or file_url; "
                           f"expected {EXPECTED}, found {list(table.columns)}")
