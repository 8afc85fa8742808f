"""What every corpus adapter shares: the result type, row finalisation and error helpers.

An adapter is a module in ``sqa.data.corpora`` with ``NAME`` (the family name), ``SCALE`` (its native
rating scale, a key of ``sqa.data.manifest.SCALES``) and ``load(root) -> CorpusLoad``. It reads the
layout and label files as the corpus's distributors publish them and never touches audio
samples (only headers, for duration and sample rate).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from sqa.data import manifest

SKIP_COLUMNS = ["corpus", "file", "row", "reason"]


class CorpusError(ValueError):
    """A missing or malformed corpus root or label file; names corpus, file and expectation."""


@dataclass
class CorpusLoad:
    """Rows in the manifest schema, plus every row that was skipped and why."""

    manifest: pd.DataFrame
    skipped: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=SKIP_COLUMNS))

    def __iter__(self):
        yield self.manifest
        yield self.skipped


def require_root(corpus: str, root: Path | str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"[{corpus}] corpus root {root} does not exist or is not a folder")
    return root


def require_file(corpus: str, path: Path, expected: str) -> Path:
    if not path.is_file():
        raise CorpusError(f"[{corpus}] expected {expected} at {path}, but the file is missing")
    return path


def read_table(corpus: str, path: Path, required: list[str], expected: str, **kw) -> pd.DataFrame:
    """Read a CSV/TSV label file and check its columns, with an error naming what was expected."""
    require_file(corpus, path, expected)
    try:
        df = pd.read_csv(path, **kw)
    except Exception as e:  # pandas raises many types for malformed text
        raise CorpusError(f"[{corpus}] cannot parse {path} as {expected}: {e}") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise CorpusError(f"[{corpus}] {path} lacks column(s) {missing}; expected {expected} "
                          f"with columns {required}, found {list(df.columns)}")
    return df


def finalize(rows: pd.DataFrame, corpus: str, root: Path, scale: str,
             label_file: str | None = None) -> CorpusLoad:
    """Complete adapter rows into manifest rows.

    ``rows`` needs ``path`` (relative to ``root``) and ``mos_raw``; optional: ``utt_id``,
    ``split``, ``sys_id``, ``source_id``, ``mos_std_raw``, ``n_votes`` and extras. Paths are
    normalised (``clips/./b.wav`` is ``clips/b.wav``). Rows whose path is absolute or resolves
    outside ``root`` (``..``, or a symlink leading out), that repeat an earlier row's path or
    ``utt_id``, whose rating is not a number or out of the scale, or whose audio is missing or
    unreadable are skipped, each with a reason. Splits given here count as published
    (``split_official``).
    """
    rows = rows.reset_index(drop=True).copy()
    rows["path"] = rows["path"].astype(str).map(lambda p: posixpath.normpath(p.replace("\\", "/")))
    if "utt_id" not in rows:
        rows["utt_id"] = corpus + "/" + rows["path"].map(lambda p: str(Path(p).with_suffix("")))
    for col in ("split", "sys_id", "source_id"):
        if col not in rows:
            rows[col] = None
    rows["split_official"] = rows["split"].notna()
    rows["sys_id"] = rows["sys_id"].where(rows["sys_id"].notna(), rows["utt_id"]).astype(str)
    rows["source_id"] = rows["source_id"].where(rows["source_id"].notna(), rows["utt_id"]).astype(str)
    rows["corpus"] = corpus
    rows["mos_scale"] = scale
    rows["mos_raw"] = pd.to_numeric(rows["mos_raw"], errors="coerce")
    rows["mos"] = manifest.to_mos(rows["mos_raw"], scale)
    std_raw = pd.to_numeric(rows.pop("mos_std_raw"), errors="coerce") if "mos_std_raw" in rows else np.nan
    rows["mos_std"] = manifest.std_to_mos(std_raw, scale) if np.ndim(std_raw) else np.nan
    rows["n_votes"] = pd.to_numeric(rows["n_votes"], errors="coerce") if "n_votes" in rows else np.nan

    skipped: list[dict] = []
    keep = np.ones(len(rows), dtype=bool)
    durations = np.full(len(rows), np.nan)
    rates = np.zeros(len(rows), dtype=int)
    labeled = rows["split"].astype(str) != "unlabeled"
    first_of = _first_rows(rows)
    real_root = root.resolve()
    for i, r in rows.iterrows():
        reason = (path_problem(real_root, r["path"]) or first_of.get(i)
                  or _rating_problem(r, bool(labeled[i]), scale))
        if not reason:
            reason, durations[i], rates[i] = _audio_problem(root / r["path"])
        if reason:
            keep[i] = False
            skipped.append({"corpus": corpus, "file": label_file or str(r["path"]),
                            "row": str(r["utt_id"]), "reason": reason})
    rows["duration"] = durations
    rows["sample_rate"] = rates
    out = manifest.coerce(rows[keep])
    return CorpusLoad(out, pd.DataFrame(skipped, columns=SKIP_COLUMNS))


def path_problem(real_root: Path, path: str) -> str | None:
    """Why ``path`` (relative, normalised) cannot be a clip of the corpus at ``real_root`` (a
    resolved folder), or None: absolute, leading outside, or resolving outside through a link."""
    if posixpath.isabs(path) or Path(path).is_absolute():
        return "path is absolute (must be relative to the corpus root)"
    if path in ("", ".") or path.split("/")[0] == "..":
        return f"path {path!r} points outside the corpus root"
    if not (real_root / path).resolve().is_relative_to(real_root):
        return f"path {path!r} resolves outside the corpus root (through a link)"
    return None


def _first_rows(rows: pd.DataFrame) -> dict[int, str]:
    """Row index -> reason, for rows repeating an earlier row's path or utt_id (the first is kept)."""
    reasons: dict[int, str] = {}
    for col in ("path", "utt_id"):
        first: dict[str, int] = {}
        for i, value in zip(rows.index, rows[col].astype(str)):
            if value in first and i not in reasons:
                reasons[i] = f"duplicate {col} {value!r} (first in row {first[value]}); kept the first"
            first.setdefault(value, i)
    return reasons


def drop_duplicates(df: pd.DataFrame, corpus_of_first: dict[str, str] | None = None,
                    file: str = "") -> tuple[pd.DataFrame, list[dict]]:
    """Keep the first row of each ``utt_id``; the others become skip records with the reason.
    ``corpus_of_first`` (utt_id -> corpus) holds ids already taken by earlier loads and is updated."""
    taken = {} if corpus_of_first is None else corpus_of_first
    keep, skipped = [], []
    for utt, corpus in zip(df["utt_id"].astype(str), df["corpus"].astype(str)):
        ok = utt not in taken
        keep.append(ok)
        if ok:
            taken[utt] = corpus
        else:
            skipped.append({"corpus": corpus, "file": file, "row": utt,
                            "reason": f"duplicate utt_id (already loaded from corpus {taken[utt]!r}); kept the first"})
    return df[np.array(keep, dtype=bool)] if len(df) else df, skipped


def _rating_problem(r: pd.Series, labeled: bool, scale: str) -> str | None:
    if labeled and not np.isfinite(r["mos_raw"]):
        return "rating is not a number"
    if labeled and not 1.0 - 1e-6 <= r["mos"] <= 5.0 + 1e-6:
        return f"rating {r['mos_raw']} outside the {scale} scale"
    return None


def _audio_problem(audio: Path) -> tuple[str | None, float, int]:
    """``(reason or None, duration, sample rate)`` from the audio file's header."""
    if not audio.is_file():
        return "audio file missing", np.nan, 0
    try:
        info = sf.info(str(audio))
    except Exception as e:  # soundfile raises its own error types for bad headers
        return f"audio header unreadable: {e}", np.nan, 0
    return ("audio file is empty" if info.frames == 0 else None), info.duration, info.samplerate


def combine(loads: list[CorpusLoad]) -> CorpusLoad:
    """One result from several: manifests merged, rows repeating an earlier part's ``utt_id``
    skipped and counted (like any bad row), skipped rows stacked."""
    frames = [ld.manifest for ld in loads if not ld.manifest.empty]
    merged, dups = drop_duplicates(manifest.coerce(pd.concat(frames, ignore_index=True, sort=False))) \
        if frames else (manifest.empty(), [])
    skipped = [ld.skipped for ld in loads if not ld.skipped.empty] + [pd.DataFrame(dups, columns=SKIP_COLUMNS)]
    return CorpusLoad(manifest.coerce(merged), pd.concat(skipped, ignore_index=True))


def skipped_only(records: list[dict]) -> CorpusLoad:
    """A result holding no clips, only skipped rows (``corpus, file, row, reason`` dicts)."""
    return CorpusLoad(manifest.empty(), pd.DataFrame(records, columns=SKIP_COLUMNS))


def rel_path(*parts: str) -> str:
    """Join path pieces as published (``./x``, backslashes) into a clean relative POSIX path."""
    return posixpath.normpath(posixpath.join(*(str(p).strip().replace("\\", "/") for p in parts)))
