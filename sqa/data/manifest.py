"""The manifest: one row per clip, one schema for every corpus (docs/architecture.md, "The manifest").

Every write validates. Paths are relative to the corpus root; the roots of a merged manifest are
kept beside it in ``<manifest>.roots.json`` (see :func:`write` / :func:`roots`).
"""

from __future__ import annotations

import json
import posixpath
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from sqa import atomic
from sqa.paths import portable, resolve_portable

SPLITS = ("train", "dev", "test", "unlabeled")

#: required columns and their pandas dtype kind ("O" text, "f" float, "i" integer)
COLUMNS: dict[str, str] = {
    "utt_id": "O",
    "corpus": "O",
    "split": "O",
    "path": "O",
    "sys_id": "O",
    "source_id": "O",
    "mos": "f",
    "mos_raw": "f",
    "mos_scale": "O",
    "mos_std": "f",
    "n_votes": "f",
    "duration": "f",
    "sample_rate": "i",
}

#: native rating scales: name -> (low, high); mapped linearly onto 1-5
SCALES: dict[str, tuple[float, float]] = {
    "acr-1-5": (1.0, 5.0),
    "0-100": (0.0, 100.0),
    "0-10": (0.0, 10.0),
    "pesq-wb": (1.0, 5.0),  # MOS-LQO already lives on the 1-5 axis (P.862.2 range 1.04-4.64)
}


class ManifestError(ValueError):
    """A manifest that breaks the schema; the message names the rows and the rule."""


def to_mos(raw: Iterable[float] | float, scale: str) -> np.ndarray:
    """Map native ratings onto MOS 1-5 linearly."""
    if scale not in SCALES:
        raise ManifestError(f"unknown mos_scale {scale!r}; known: {', '.join(SCALES)}")
    lo, hi = SCALES[scale]
    raw = np.asarray(raw, dtype=float)
    return 1.0 + 4.0 * (raw - lo) / (hi - lo)


def std_to_mos(raw_std: Iterable[float] | float, scale: str) -> np.ndarray:
    lo, hi = SCALES[scale]
    return np.asarray(raw_std, dtype=float) * 4.0 / (hi - lo)


def empty() -> pd.DataFrame:
    return coerce(pd.DataFrame({c: [] for c in COLUMNS}))


def coerce(df: pd.DataFrame) -> pd.DataFrame:
    """Put the required columns first with their dtypes; extras follow unchanged."""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(f"manifest lacks required column(s): {', '.join(missing)}")
    out = df.copy()
    for col, kind in COLUMNS.items():
        if kind == "O":
            out[col] = out[col].astype(object).where(out[col].notna(), None)
        elif kind == "f":
            out[col] = pd.to_numeric(out[col], errors="coerce").astype("float64")
        else:
            out[col] = pd.to_numeric(out[col], errors="coerce").astype("Int64")
    extras = [c for c in out.columns if c not in COLUMNS]
    return out[list(COLUMNS) + extras].reset_index(drop=True)


def _rows(df: pd.DataFrame, mask: pd.Series, limit: int = 5) -> str:
    bad = df.loc[mask, "utt_id"].astype(str).tolist()
    more = f" (+{len(bad) - limit} more)" if len(bad) > limit else ""
    return ", ".join(bad[:limit]) + more


def validate(df: pd.DataFrame, roots: Mapping[str, Path] | None = None) -> pd.DataFrame:
    """Check the schema; returns the coerced frame or raises :class:`ManifestError`.

    Paths must stay inside their corpus root (no ``..`` climbing out) and name each audio file
    once per corpus. With ``roots`` (corpus -> folder) every audio file must exist and resolve
    inside its root (no symlink leading out).
    """
    df = coerce(df)
    problems: list[str] = []
    for col in ("utt_id", "corpus", "split", "path", "sys_id", "source_id", "mos_scale"):
        mask = df[col].isna() | (df[col].astype(str).str.len() == 0)
        if mask.any():
            problems.append(f"empty {col} in rows: {_rows(df, mask)}")
    dup = df["utt_id"].duplicated(keep=False)
    if dup.any():
        problems.append(f"duplicate utt_id: {_rows(df, dup)}")
    bad_split = ~df["split"].isin(SPLITS)
    if bad_split.any():
        problems.append(f"split not in {SPLITS}: {_rows(df, bad_split)}")
    unknown_scale = ~df["mos_scale"].isin(list(SCALES))
    if unknown_scale.any():
        problems.append(f"unknown mos_scale (known: {', '.join(SCALES)}): {_rows(df, unknown_scale)}")
    labeled = df["split"] != "unlabeled"
    no_mos = labeled & df["mos"].isna()
    if no_mos.any():
        problems.append(f"labeled rows without mos: {_rows(df, no_mos)}")
    out_of_range = df["mos"].notna() & ((df["mos"] < 1.0 - 1e-6) | (df["mos"] > 5.0 + 1e-6))
    if out_of_range.any():
        problems.append(f"mos outside 1-5 after scale mapping: {_rows(df, out_of_range)}")
    bad_dur = ~(df["duration"] > 0)
    if bad_dur.any():
        problems.append(f"non-positive or missing duration: {_rows(df, bad_dur)}")
    bad_sr = df["sample_rate"].isna() | (df["sample_rate"] <= 0)
    if bad_sr.any():
        problems.append(f"non-positive or missing sample_rate: {_rows(df, bad_sr)}")
    abs_path = df["path"].astype(str).map(lambda p: Path(p).is_absolute())
    if abs_path.any():
        problems.append(f"absolute path (must be relative to the corpus root): {_rows(df, abs_path)}")
    escapes = ~abs_path & df["path"].astype(str).map(_leaves_root)
    if escapes.any():
        problems.append(f"path outside the corpus root ('..'): {_rows(df, escapes)}")
    dup_path = df.assign(_p=df["path"].astype(str).map(posixpath.normpath)).duplicated(["corpus", "_p"], keep=False)
    if dup_path.any():
        problems.append(f"two rows for one audio file: {_rows(df, dup_path)}")
    for col in ("source_id", "sys_id"):
        straddle = _straddling(df, col)
        if straddle:
            problems.append(f"{col} spanning two splits: {', '.join(straddle[:5])}")
    if roots is not None:
        missing_root = sorted(set(df["corpus"]) - set(roots))
        if missing_root:
            problems.append(f"no root folder for corpus: {', '.join(missing_root)}")
        else:
            real = {c: Path(r).resolve() for c, r in roots.items()}
            linked_out = df.apply(lambda r: not (real[r["corpus"]] / r["path"]).resolve().is_relative_to(
                real[r["corpus"]]), axis=1) if len(df) else pd.Series(dtype=bool)
            if linked_out.any():
                problems.append(f"path resolves outside the corpus root: {_rows(df, linked_out)}")
            gone = df.apply(lambda r: not (Path(roots[r["corpus"]]) / r["path"]).is_file(), axis=1)
            if gone.any():
                problems.append(f"audio file missing: {_rows(df, gone)}")
    if problems:
        raise ManifestError("invalid manifest:\n  - " + "\n  - ".join(problems))
    return df


def _leaves_root(path: str) -> bool:
    """True if a relative ``path`` climbs above its root (``../x``, ``a/../../x``)."""
    norm = posixpath.normpath(path.replace("\\", "/"))
    return norm in ("", ".") or norm.split("/")[0] == ".."


def _straddling(df: pd.DataFrame, col: str) -> list[str]:
    """Groups of ``col`` that sit in two labeled splits of the same corpus.

    Exempt: the per-clip default ``sys_id = utt_id``; ``unlabeled`` rows (the pool is kept apart
    by construction); groups whose rows all carry splits published by the corpus itself
    (``split_official`` true; e.g. BVCC shares systems between its official train and test).
    """
    sub = df[(df["split"] != "unlabeled") & (df[col] != df["utt_id"])]
    if sub.empty:
        return []
    official = sub["split_official"].fillna(False).astype(bool) if "split_official" in sub else False
    keys = ["corpus", col]
    n = sub.groupby(keys)["split"].nunique()
    ours = sub.assign(_ours=~official).groupby(keys)["_ours"].any()
    bad = n[(n > 1) & ours.reindex(n.index)]
    return [f"{c}/{g}" for (c, g) in bad.index]


def read(path: Path | str) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    if path.suffix == ".parquet":
        df = pd.read_parquet(path)
    elif path.suffix == ".csv":
        df = pd.read_csv(path, dtype={"utt_id": str, "sys_id": str, "source_id": str, "path": str})
    else:
        raise ManifestError(f"{path}: manifest must be .csv or .parquet, not {path.suffix!r}")
    try:
        return validate(df)
    except ManifestError as e:
        raise ManifestError(f"{path}: {e}") from None


def write(df: pd.DataFrame, path: Path | str, roots: Mapping[str, Path] | None = None) -> Path:
    """Validate, then write atomically (.csv or .parquet); ``roots`` go to ``<path>.roots.json``."""
    path = Path(path)
    df = validate(df, roots=roots)
    with atomic.atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        elif path.suffix == ".csv":
            df.to_csv(tmp, index=False)
        else:
            raise ManifestError(f"{path}: manifest must be .csv or .parquet, not {path.suffix!r}")
    if roots is not None:
        atomic.write_json(_roots_file(path), {c: portable(r) for c, r in sorted(roots.items())})
    return path


def _roots_file(path: Path) -> Path:
    return path.with_name(path.name + ".roots.json")


def roots(path: Path | str) -> dict[str, Path]:
    """The corpus -> root folder table written beside a manifest."""
    f = _roots_file(Path(path))
    if not f.is_file():
        raise FileNotFoundError(f"{f} not found: the manifest {path} was written without roots")
    return {c: resolve_portable(r) for c, r in json.loads(f.read_text()).items()}


def audio_paths(df: pd.DataFrame, root_table: Mapping[str, Path]) -> list[Path]:
    """Absolute audio paths of a manifest's rows."""
    return [Path(root_table[c]) / p for c, p in zip(df["corpus"], df["path"])]


def merge(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate corpora; a ``utt_id`` that occurs in two corpora is an error naming both."""
    frames = [coerce(f) for f in frames]
    if not frames:
        return empty()
    seen: dict[str, str] = {}
    clashes: list[str] = []
    for f in frames:
        for utt, corpus in zip(f["utt_id"], f["corpus"]):
            if utt in seen and seen[utt] != corpus:
                clashes.append(f"{utt!r} in both {seen[utt]!r} and {corpus!r}")
            seen.setdefault(utt, corpus)
    if clashes:
        raise ManifestError("duplicate utt_id across corpora: " + "; ".join(clashes[:5])
                            + (f" (+{len(clashes) - 5} more)" if len(clashes) > 5 else ""))
    return coerce(pd.concat(frames, ignore_index=True, sort=False))


def split_groups(df: pd.DataFrame) -> pd.Series:
    """Per row, a group label such that no ``source_id`` and no ``sys_id`` crosses two groups:
    the connected components of the clip-source-system graph (union-find), per corpus."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for corpus, src, sys_id, utt in zip(df["corpus"], df["source_id"], df["sys_id"], df["utt_id"]):
        a = find(f"{corpus}\0src\0{src}")
        if sys_id != utt:
            parent[find(f"{corpus}\0sys\0{sys_id}")] = a
    return pd.Series([find(f"{c}\0src\0{s}") for c, s in zip(df["corpus"], df["source_id"])],
                     index=df.index)


def assign_splits(df: pd.DataFrame, dev_frac: float = 0.1, test_frac: float = 0.0,
                  seed: int = 0) -> pd.DataFrame:
    """Fill missing splits per corpus so that no source and no system straddles two splits.

    Rows whose ``split`` is already set (official splits as published) are kept, and rows of the
    same group (:func:`split_groups`) join them. Remaining groups are shuffled with ``seed`` and
    dealt to dev/test until each reaches its fraction of the corpus's open clips; the rest is
    train. Rows that had a split beforehand are marked ``split_official``.
    """
    if not 0 <= dev_frac < 1 or not 0 <= test_frac < 1 or dev_frac + test_frac >= 1:
        raise ValueError(f"dev_frac={dev_frac} and test_frac={test_frac} must be in [0,1) with sum < 1")
    out = df.copy()
    out["split"] = out["split"].where(out["split"].notna() & (out["split"].astype(str) != ""), None)
    official = out["split_official"].fillna(False).astype(bool) if "split_official" in out else False
    out["split_official"] = out["split"].notna() | official
    group = split_groups(out)
    rng = np.random.default_rng(seed)
    for corpus in sorted(out["corpus"].unique()):
        in_c = out["corpus"] == corpus
        known = out[in_c & out["split"].notna()].groupby(group[in_c])["split"].first()
        open_rows = in_c & out["split"].isna()
        inherit = group[open_rows].map(known).dropna()
        out.loc[inherit.index, "split"] = inherit
        open_rows = in_c & out["split"].isna()
        if not open_rows.any():
            continue
        sizes = group[open_rows].value_counts().sort_index()
        order = rng.permutation(len(sizes))
        n_total = int(open_rows.sum())
        target = {"dev": dev_frac * n_total, "test": test_frac * n_total}
        filled = {"dev": 0, "test": 0}
        assignment: dict[str, str] = {}
        for i in order:
            g, size = sizes.index[i], int(sizes.iloc[i])
            split = next((s for s in ("dev", "test") if filled[s] < target[s]), "train")
            if split != "train":
                filled[split] += size
            assignment[g] = split
        out.loc[open_rows, "split"] = group[open_rows].map(assignment)
    return coerce(out)


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per-corpus statistics: clips, hours, MOS mean/std and clips per split."""
    g = df.groupby("corpus")
    stats = pd.DataFrame({
        "clips": g.size(),
        "hours": g["duration"].sum() / 3600.0,
        "mos_mean": g["mos"].mean(),
        "mos_std": g["mos"].std(),
        "systems": g["sys_id"].nunique(),
    })
    splits = df.pivot_table(index="corpus", columns="split", values="utt_id", aggfunc="count", fill_value=0)
    splits = splits.reindex(columns=[s for s in SPLITS if s in splits.columns])
    return stats.join(splits).reset_index()
