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
    ``split``, ``sys_id``, ``source_id``, ``mos_std_raw``, ``n_votes`` and extras. Rows whose
    rating is not a number, out of the scale, or whose audio is missing or unreadable are
    skipped, each with a reason. Splits given here count as published (``split_official``).
    """
    rows = rows.reset_index(drop=True).copy()
    rows["path"] = rows["path"].astype(str).str.replace("\\", "/", regex=False)
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
    for i, r in rows.iterrows():
        reason = None
        if labeled[i] and not np.isfinite(r["mos_raw"]):
            reason = "rating is not a number"
        elif labeled[i] and not 1.0 - 1e-6 <= r["mos"] <= 5.0 + 1e-6:
            reason = f"rating {r['mos_raw']} outside the {scale} scale"
        else:
            audio = root / r["path"]
            if not audio.is_file():
                reason = "audio file missing"
            else:
                try:
                    info = sf.info(str(audio))
                    durations[i], rates[i] = info.duration, info.samplerate
                    if info.frames == 0:
                        reason = "audio file is empty"
                except Exception as e:  # soundfile raises its own error types for bad headers
                    reason = f"audio header unreadable: {e}"
        if reason:
            keep[i] = False
            skipped.append({"corpus": corpus, "file": label_file or str(r["path"]),
                            "row": str(r["utt_id"]), "reason": reason})
    rows["duration"] = durations
    rows["sample_rate"] = rates
    out = manifest.coerce(rows[keep])
    return CorpusLoad(out, pd.DataFrame(skipped, columns=SKIP_COLUMNS))


def combine(loads: list[CorpusLoad]) -> CorpusLoad:
    """One result from several: manifests merged (utt_id clashes raise), skipped rows stacked."""
    frames = [ld.manifest for ld in loads if not ld.manifest.empty]
    skipped = [ld.skipped for ld in loads if not ld.skipped.empty]
    return CorpusLoad(manifest.merge(frames) if frames else manifest.empty(),
                      pd.concat(skipped, ignore_index=True) if skipped
                      else pd.DataFrame(columns=SKIP_COLUMNS))


def skipped_only(records: list[dict]) -> CorpusLoad:
    """A result holding no clips, only skipped rows (``corpus, file, row, reason`` dicts)."""
    return CorpusLoad(manifest.empty(), pd.DataFrame(records, columns=SKIP_COLUMNS))


def rel_path(*parts: str) -> str:
    """Join path pieces as published (``./x``, backslashes) into a clean relative POSIX path."""
    return posixpath.normpath(posixpath.join(*(str(p).strip().replace("\\", "/") for p in parts)))
