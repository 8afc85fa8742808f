"""TCD-VoIP (Harte, Gillen & Hines, QoMEX 2015): VoIP degradations rated by 24 listeners.

Layout (as distributed by Trinity College Dublin's Sigmedia group)::

    <root>/Test Set/<type>/C_<nn>_<TYPE>_<talker>.wav      degraded clip (type: chop, clip,
                                                           compspkr, echo, noise)
    <root>/Test Set/<type>/ref/R_<nn>_<TYPE>_<talker>.wav  its clean reference
    <root>/Subjective Test Scores.csv   (or the published .xlsx, sheet "Subjective Test Scores")

Score columns: ``Filename``, ``ConditionID``, the clip MOS as ``sample MOS`` (published sheet) or
``MOS`` (CSV exports), and optionally one column per listener headed ``1`` ... ``24`` (used for
``n_votes`` and ``mos_std``). ``Test_Set`` is accepted for ``Test Set``. Ratings are ACR 1-5. The
whole corpus is a test set. ``sys_id`` = ``<type>-<ConditionID>`` (condition numbers restart in
each degradation type); ``source_id`` = the clip's ``ref/R_...`` reference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from sqa.data.corpora import base

NAME = "tcd-voip"
SCALE = "acr-1-5"

SCORES = "Subjective Test Scores"
SHEET = "Subjective Test Scores"
AUDIO_DIRS = ("Test Set", "Test_Set")
MOS_COLUMNS = ("sample MOS", "MOS")
EXPECTED = "the TCD-VoIP score table with columns Filename, ConditionID and 'sample MOS' (or 'MOS')"


def load(root: Path | str) -> base.CorpusLoad:
    root = base.require_root(NAME, root)
    audio_dir = next((d for d in AUDIO_DIRS if (root / d).is_dir()), None)
    if audio_dir is None:
        raise base.CorpusError(f"[{NAME}] expected the clip folder {root / AUDIO_DIRS[0]} "
                               f"(with chop/, clip/, compspkr/, echo/, noise/), but it is missing")
    path, table = _read_scores(root)
    mos_col = next(c for c in MOS_COLUMNS if c in table.columns)
    label = path.relative_to(root).as_posix()
    names = table["Filename"].astype(str).str.strip()
    parts = names.str.split("_")
    ok = parts.map(len).eq(4) & parts.str[0].eq("C")
    bad = base.skipped_only([{"corpus": NAME, "file": label, "row": n,
                         "reason": "Filename is not C_<nn>_<TYPE>_<talker>.wav"} for n in names[~ok]])
    table, names, parts = table[ok], names[ok], parts[ok]
    kind = parts.str[2].str.lower()
    folder = audio_dir + "/" + kind + "/"
    listeners = [c for c in table.columns if c.isdigit()]
    votes = table[listeners].apply(pd.to_numeric, errors="coerce")
    rows = pd.DataFrame({
        "path": folder + names,
        "split": "test",
        "sys_id": kind + "-" + table["ConditionID"].map(_condition),
        "source_id": NAME + "/" + folder + "ref/R_" + names.str[2:].str.replace(r"\.wav$", "", regex=True),
        "mos_raw": table[mos_col],
        "mos_std_raw": votes.std(axis=1, ddof=1) if votes.shape[1] else np.nan,
        "n_votes": votes.notna().sum(axis=1) if votes.shape[1] else np.nan,
        "degradation": kind,
        "condition_id": table["ConditionID"].map(_condition),
    })
    return base.combine([bad, base.finalize(rows, NAME, root, SCALE, label_file=label)])


def _condition(value) -> str:
    number = pd.to_numeric(value, errors="coerce")
    return f"{int(number):02d}" if np.isfinite(number) and number == int(number) else str(value)


def _read_scores(root: Path) -> tuple[Path, pd.DataFrame]:
    csv, xlsx = root / f"{SCORES}.csv", root / f"{SCORES}.xlsx"
    if csv.is_file():
        path, table = csv, base.read_table(NAME, csv, [], EXPECTED)
    elif xlsx.is_file():
        path = xlsx
        try:
            table = pd.read_excel(xlsx, sheet_name=SHEET)
        except ImportError as e:
            raise base.CorpusError(f"[{NAME}] reading {xlsx} needs openpyxl ({e}); install it or export "
                                   f"sheet {SHEET!r} as {csv}") from None
        except Exception as e:  # openpyxl/pandas raise many types for a broken workbook
            raise base.CorpusError(f"[{NAME}] cannot read sheet {SHEET!r} of {xlsx} as {EXPECTED}: "
                                   f"{e}") from None
    else:
        raise base.CorpusError(f"[{NAME}] expected {EXPECTED} at {csv} or {xlsx}, but neither exists")
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in ("Filename", "ConditionID") if c not in table.columns]
    if not any(c in table.columns for c in MOS_COLUMNS):
        missing.append(" or ".join(repr(c) for c in MOS_COLUMNS))
    if missing:
        raise base.CorpusError(f"[{NAME}] {path} lacks column(s) {', '.join(missing)}; expected {EXPECTED}, "
                               f"found {list(table.columns)}")
    return path, table
