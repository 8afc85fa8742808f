"""Listening-test ratings: an append-only CSV that survives crashes and parallel listeners.

A ratings folder (stage 07's run folder, or any folder) holds::

    ratings.csv   one row per vote: time, listener, utt_id, corpus, path, rating, is_reference, session
    roots.json    rated corpus -> its audio root (portable paths, as in a manifest's roots table)
    audio/        copies of the rated clips, ``audio/<corpus>/<path>`` (see :func:`stored_path`)

``path`` is relative to the rated corpus's root (a hidden reference that lives beside the corpus,
like the demo corpora's ``../clean/<source>.wav``, may start with ``..``). ``rating`` is the ACR
score 1 (Bad) ... 5 (Excellent).

Writing: the file is created together with its header in one step (a hard link of a finished
temporary file, so no reader or second writer ever sees a file without its header); each vote
is then one ``write`` on an ``O_APPEND`` descriptor followed by ``fsync``. After a crash the last
line may be torn (cut short): :func:`read_ratings` reports and skips it, and the next
:func:`append_rating` starts on a fresh line so the torn text never merges with a good row.
"""

from __future__ import annotations

import csv
import io
import json
import os
import posixpath
import shutil
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from sqa import atomic
from sqa.paths import portable, resolve_portable

COLUMNS = ["time", "listener", "utt_id", "corpus", "path", "rating", "is_reference", "session"]
ACR_LABELS = {1: "Bad", 2: "Poor", 3: "Fair", 4: "Good", 5: "Excellent"}
RATINGS_FILE = "ratings.csv"
ROOTS_FILE = "roots.json"
AUDIO_DIR = "audio"
_HEADER = ",".join(COLUMNS) + "\n"


class RatingsError(ValueError):
    """A malformed rating row or ratings file; the message names the file, line and field."""


class TornLineWarning(UserWarning):
    """A ratings line that was cut short (a crash during a write); it is skipped and reported."""


def new_session() -> str:
    """A fresh session id (12 hex characters)."""
    return uuid.uuid4().hex[:12]


def now() -> str:
    """The current local time as stored in ``time`` (ISO 8601, seconds)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def check_row(row: Mapping[str, Any], where: str = "rating row") -> dict[str, str]:
    """The row's fields as CSV text, in column order; raises :class:`RatingsError` if malformed."""
    missing = [c for c in COLUMNS if c not in row]
    extra = [c for c in row if c not in COLUMNS]
    if missing or extra:
        raise RatingsError(f"{where}: missing field(s) {missing}, unknown field(s) {extra}; "
                           f"expected exactly {COLUMNS}")
    out: dict[str, str] = {}
    for col in ("time", "listener", "utt_id", "corpus", "path", "session"):
        value = str(row[col]).strip() if row[col] is not None else ""
        if not value:
            raise RatingsError(f"{where}: field {col!r} is empty")
        if "\n" in value or "\r" in value:
            raise RatingsError(f"{where}: field {col!r} contains a line break: {value!r}")
        out[col] = value
    if Path(out["path"]).is_absolute():
        raise RatingsError(f"{where}: path {out['path']!r} must be relative to the corpus root")
    rating = row["rating"]
    if isinstance(rating, bool) or not isinstance(rating, (int, float, str)):
        raise RatingsError(f"{where}: rating must be an integer 1-5, got {rating!r}")
    try:
        value = float(rating)
    except ValueError:
        raise RatingsError(f"{where}: rating must be an integer 1-5, got {rating!r}") from None
    if value not in ACR_LABELS:
        raise RatingsError(f"{where}: rating must be an integer 1-5, got {rating!r}")
    out["rating"] = str(int(value))
    ref = row["is_reference"]
    if str(ref).strip().lower() in ("1", "true"):
        out["is_reference"] = "1"
    elif str(ref).strip().lower() in ("0", "false"):
        out["is_reference"] = "0"
    else:
        raise RatingsError(f"{where}: is_reference must be 0/1 or true/false, got {ref!r}")
    return {c: out[c] for c in COLUMNS}


def _csv_line(fields: dict[str, str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([fields[c] for c in COLUMNS])
    return buf.getvalue()


def _create_with_header(path: Path) -> None:
    """Create ``path`` holding only the header, unless it exists (safe against a racing writer)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.write(fd, _HEADER.encode("utf-8"))
        os.fsync(fd)
        os.close(fd)
        fd = -1
        try:
            os.link(tmp, path)
        except FileExistsError:
            return
        except OSError:  # a filesystem without hard links: exclusive create, then the header
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return
            os.write(fd, _HEADER.encode("utf-8"))
            os.fsync(fd)
        _fsync_dir(path.parent)
    finally:
        if fd >= 0:
            os.close(fd)
        os.unlink(tmp)


def _fsync_dir(folder: Path) -> None:
    """Make a new directory entry durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def append_rating(path: Path | str, row: Mapping[str, Any]) -> None:
    """Append one vote to the ratings CSV ``path`` (created with its header if missing).

    One ``O_APPEND`` write per row, then ``fsync``. If the file ends in a torn line (a crash cut
    the last write short), the row starts on a new line so the torn text stays on its own line.
    """
    path = Path(path)
    line = _csv_line(check_row(row, where=f"{path}: new rating"))
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        _create_with_header(path)
    fd = os.open(path, os.O_RDWR | os.O_APPEND)
    try:
        size = os.fstat(fd).st_size
        if size == 0:  # left empty by a crash during creation
            line = _HEADER + line
        elif os.pread(fd, 1, size - 1) != b"\n":
            line = "\n" + line
        os.write(fd, line.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def empty_ratings() -> pd.DataFrame:
    return _typed(pd.DataFrame({c: [] for c in COLUMNS}))


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    out = df[COLUMNS].copy()
    for col in ("time", "listener", "utt_id", "corpus", "path", "session"):
        out[col] = out[col].astype(str).astype(object)
    out["rating"] = out["rating"].astype("int64")
    out["is_reference"] = out["is_reference"].map(lambda v: str(v) == "1").astype(bool)
    return out.reset_index(drop=True)


def read_ratings(path: Path | str, missing_ok: bool = False) -> pd.DataFrame:
    """All votes of a ratings CSV, typed (``rating`` int, ``is_reference`` bool).

    A torn line (cut short by a crash: no line end at the end of the file, or too few fields,
    or fields that no complete row could hold) is skipped with a :class:`TornLineWarning`
    naming its line number; the skipped lines are listed in ``df.attrs["torn_lines"]`` as
    ``(line_number, text)``. A wrong header is an error. ``missing_ok`` returns an empty frame
    for a missing file.
    """
    path = Path(path)
    if not path.is_file():
        if missing_ok:
            out = empty_ratings()
            out.attrs["torn_lines"] = []
            return out
        raise FileNotFoundError(f"ratings file not found: {path}")
    text = path.read_bytes().decode("utf-8", errors="replace")
    lines = text.split("\n")
    complete_end = text.endswith("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise RatingsError(f"{path}: empty file, expected the header {_HEADER.strip()!r}")
    if lines[0] != _HEADER.strip():
        raise RatingsError(f"{path}, line 1: header {lines[0]!r} is not {_HEADER.strip()!r}")
    good: list[dict[str, str]] = []
    torn: list[tuple[int, str]] = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        is_last = number == len(lines)
        try:
            if is_last and not complete_end:
                raise RatingsError("no line end")
            fields = next(csv.reader([line]))
            if len(fields) != len(COLUMNS):
                raise RatingsError(f"{len(fields)} fields instead of {len(COLUMNS)}")
            good.append(check_row(dict(zip(COLUMNS, fields)), where=f"{path}, line {number}"))
        except (RatingsError, csv.Error) as e:
            torn.append((number, line))
            warnings.warn(f"{path}, line {number}: torn or malformed rating line skipped ({e}): {line!r}",
                          TornLineWarning, stacklevel=2)
    out = _typed(pd.DataFrame(good, columns=COLUMNS)) if good else empty_ratings()
    out.attrs["torn_lines"] = torn
    return out


def latest_votes(ratings: pd.DataFrame) -> pd.DataFrame:
    """One vote per listener and stimulus: a listener's later rating of a clip replaces the earlier."""
    keys = ["listener", "corpus", "path", "is_reference"]
    return ratings.sort_values("time", kind="stable").drop_duplicates(keys, keep="last")


def to_corpus(ratings: pd.DataFrame) -> pd.DataFrame:
    """Per stimulus (corpus, path, is_reference): ``mos`` = mean over listeners, ``n_votes``,
    ``mos_std`` (sample std; NaN for a single vote), ``utt_id`` and the listeners' names.

    Each listener counts once per stimulus (their latest vote, :func:`latest_votes`).
    """
    cols = ["corpus", "path", "is_reference", "utt_id", "mos", "n_votes", "mos_std", "listeners"]
    if ratings.empty:
        return pd.DataFrame({c: [] for c in cols})
    votes = latest_votes(ratings)
    g = votes.groupby(["corpus", "path", "is_reference"], sort=True)
    out = pd.DataFrame({
        "utt_id": g["utt_id"].last(),
        "mos": g["rating"].mean(),
        "n_votes": g["rating"].size(),
        "mos_std": g["rating"].std(ddof=1),
        "listeners": g["listener"].agg(lambda s: "+".join(sorted(set(s)))),
    }).reset_index()
    return out[cols]


def summary(ratings: pd.DataFrame) -> dict[str, Any]:
    """Counts for a run's metrics: votes, listeners, sessions, clips rated, reference votes."""
    return {"votes": int(len(ratings)), "listeners": int(ratings["listener"].nunique()),
            "sessions": int(ratings["session"].nunique()),
            "clips_rated": int(ratings.loc[~ratings["is_reference"], ["corpus", "path"]]
                               .drop_duplicates().shape[0]),
            "reference_votes": int(ratings["is_reference"].sum()),
            "torn_lines": len(ratings.attrs.get("torn_lines", []))}


# ---------------------------------------------------------------- roots and audio copies

def read_roots(folder: Path | str) -> dict[str, Path]:
    """The ``roots.json`` of a ratings folder (an empty table if there is none)."""
    f = Path(folder) / ROOTS_FILE
    if not f.is_file():
        return {}
    try:
        table = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise RatingsError(f"{f}: not a JSON object of corpus -> folder ({e})") from None
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise RatingsError(f"{f}: expected a JSON object mapping corpus names to folders")
    return {c: resolve_portable(r) for c, r in table.items()}


def record_roots(folder: Path | str, roots: Mapping[str, Path | str]) -> dict[str, Path]:
    """Add corpus roots to ``roots.json`` (atomically); a corpus already recorded with another
    folder is an error (its ratings' paths would point elsewhere)."""
    folder = Path(folder)
    table = read_roots(folder)
    for corpus, root in roots.items():
        root = Path(root).resolve()
        if corpus in table and table[corpus].resolve() != root:
            raise RatingsError(f"{folder / ROOTS_FILE}: corpus {corpus!r} is recorded with root "
                               f"{table[corpus]}, but these ratings come from {root}; "
                               f"use another ratings folder")
        table[corpus] = root
    atomic.write_json(folder / ROOTS_FILE, {c: portable(r) for c, r in sorted(table.items())})
    return table


def stored_path(corpus: str, path: str) -> str:
    """Where a rated clip's copy lives, relative to the ratings folder:
    ``audio/<corpus>/<path>``, with ``..`` segments of ``path`` spelled ``_up``."""
    parts = posixpath.normpath(str(path).replace("\\", "/")).split("/")
    if not parts or Path(path).is_absolute() or "/" in corpus or corpus in ("", ".", ".."):
        raise RatingsError(f"cannot store clip {corpus!r}/{path!r}: need a corpus name and a relative path")
    return posixpath.join(AUDIO_DIR, corpus, *("_up" if p == ".." else p for p in parts))


def copy_audio(folder: Path | str, corpus: str, path: str, roots: Mapping[str, Path]) -> Path | None:
    """Copy one rated clip into the ratings folder (once; atomically). Returns the copy, or
    ``None`` when neither the copy nor the original exists."""
    dest = Path(folder) / stored_path(corpus, path)
    if dest.is_file():
        return dest
    if corpus not in roots:
        return None
    src = Path(roots[corpus]) / path
    if not src.is_file():
        return None
    with atomic.atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
    return dest
