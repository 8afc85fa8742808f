"""The only place where PCC, SRCC, Kendall's tau, RMSE and their bootstrap CIs are computed.

Conventions
- ``pcc``: Pearson's r; ``srcc``: Spearman's rho (Pearson on average ranks); ``ktau``: Kendall's
  tau-b (ties handled, as ``scipy.stats.kendalltau``); ``rmse``: root mean squared error of ``pred``
  against ``mos``.
- Undefined correlations are NaN, never a warning or an exception, and ``scores`` says why in
  ``note``: fewer than 3 clips (with 1 or 2 points a correlation is +-1 or undefined, so it carries
  no information), constant ``mos`` or constant ``pred`` (zero variance: the correlation is 0/0).
  RMSE is defined for any n >= 1.
- Inputs must be finite: NaN MOS or predictions raise (nothing is dropped silently).
- A predictions frame has the columns ``utt_id, corpus, sys_id, mos, pred`` (one row per clip).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

METRICS = ("pcc", "srcc", "ktau", "rmse")
CORRELATIONS = ("pcc", "srcc", "ktau")
MIN_N = 3  # fewest clips (or systems) for which a correlation is reported
# Largest set for which the bootstrap computes Kendall's tau from n x n pair matrices (one matrix
# product for all resamples); above it, scipy's O(n log n) routine runs once per resample.
KTAU_PAIR_MATRIX_MAX_N = 2000
# Resamples are drawn in blocks of about this many values (bounds memory, not the result).
_BOOT_BLOCK_VALUES = 2_000_000


def _as_vector(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        first = np.flatnonzero(bad)[:5].tolist()
        raise ValueError(f"{name} has {int(bad.sum())} non-finite values (positions {first}...)")
    return arr


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson's r of each row pair of two (B, n) arrays; NaN for rows that are constant or n < 3."""
    out = np.full(x.shape[0], np.nan)
    if x.shape[1] < MIN_N:
        return out
    ok = (np.ptp(x, axis=1) > 0) & (np.ptp(y, axis=1) > 0)
    xc = x[ok] - x[ok].mean(axis=1, keepdims=True)
    yc = y[ok] - y[ok].mean(axis=1, keepdims=True)
    r = (xc * yc).sum(axis=1) / np.sqrt((xc * xc).sum(axis=1) * (yc * yc).sum(axis=1))
    out[ok] = np.clip(r, -1.0, 1.0)
    return out


def _rmse_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    if x.shape[1] == 0:
        return np.full(x.shape[0], np.nan)
    return np.sqrt(((y - x) ** 2).mean(axis=1))


def _kendall_point(x: np.ndarray, y: np.ndarray) -> float:
    if x.size < MIN_N or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    from scipy import stats  # imported here: scipy.stats takes seconds to import

    return float(stats.kendalltau(x, y).statistic)


def _counts(codes: np.ndarray, k: int) -> np.ndarray:
    """Per row of ``codes`` (B, n) with values in [0, k), how often each value occurs: (B, k)."""
    flat = (codes + k * np.arange(codes.shape[0])[:, None]).ravel()
    return np.bincount(flat, minlength=codes.shape[0] * k).reshape(codes.shape[0], k)


def _value_counts(x: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes (B, n) of the distinct values of each resample ``x[idx[b]]`` and their counts (B, k)."""
    values, codes_1d = np.unique(x, return_inverse=True)
    codes = codes_1d[idx]
    return codes, _counts(codes, values.size)


def _resample_ranks(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank) within each resample ``x[idx[b]]``, from the
    counts of each distinct value: O(B n), no sort per resample. With ``idx = arange(n)[None]``
    these are the ranks of ``x`` itself."""
    codes, counts = _value_counts(x, idx)
    average = np.cumsum(counts, axis=1) - counts + (counts + 1) / 2
    return np.take_along_axis(average, codes, axis=1)


def _kendall_rows(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of each resample ``x[idx[b]], y[idx[b]]`` without a pair loop.

    With c the multiplicities (B, n) of the original points in a resample and P[i, j] =
    sign(x_i - x_j) sign(y_i - y_j), the resample's concordant-minus-discordant count is c' P c / 2;
    its pairs tied in x are sum over distinct values of m (m - 1) / 2 (m: the value's count).
    """
    n = x.size
    pairs = np.sign(x[:, None] - x[None, :]) * np.sign(y[:, None] - y[None, :])
    c = _counts(idx, n).astype(float)
    s = np.einsum("bi,bi->b", c @ pairs, c) / 2
    mx = _value_counts(x, idx)[1]
    my = _value_counts(y, idx)[1]
    tied_x = (mx * (mx - 1)).sum(axis=1) / 2
    tied_y = (my * (my - 1)).sum(axis=1) / 2
    n0 = n * (n - 1) / 2
    denom = np.sqrt((n0 - tied_x) * (n0 - tied_y))
    out = np.full(idx.shape[0], np.nan)
    ok = denom > 0
    out[ok] = np.clip(s[ok] / denom[ok], -1.0, 1.0)
    return out


def _boot_rows(metric: str, x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``metric`` of each resample ``x[idx[b]], y[idx[b]]`` (idx: (B, n) indices into x and y)."""
    n = x.size
    if metric == "ktau":
        if n < MIN_N:
            return np.full(idx.shape[0], np.nan)
        if n <= KTAU_PAIR_MATRIX_MAX_N:
            return _kendall_rows(x, y, idx)
        return np.array([_kendall_point(x[i], y[i]) for i in idx])
    if metric == "srcc":
        return _pearson_rows(_resample_ranks(x, idx), _resample_ranks(y, idx))
    fn = {"pcc": _pearson_rows, "rmse": _rmse_rows}[metric]
    return fn(x[idx], y[idx])


def scores(mos: Any, pred: Any) -> dict[str, Any]:
    """PCC, SRCC, Kendall tau-b and RMSE of ``pred`` against ``mos``.

    Returns ``{"pcc", "srcc", "ktau", "rmse", "n", "note"}``; ``note`` is "" when every metric is
    defined, otherwise the reason for the NaNs ("n<3", "constant mos", "constant pred", "n=0").
    """
    x = _as_vector(mos, "mos")
    y = _as_vector(pred, "pred")
    if x.shape != y.shape:
        raise ValueError(f"mos and pred differ in length: {x.size} vs {y.size}")
    n = x.size
    whole = np.arange(n)[None]
    notes = []
    if n == 0:
        notes.append("n=0")
    elif n < MIN_N:
        notes.append(f"n<{MIN_N}")
    else:
        if np.ptp(x) == 0:
            notes.append("constant mos")
        if np.ptp(y) == 0:
            notes.append("constant pred")
    return {
        "pcc": float(_pearson_rows(x[None], y[None])[0]),
        "srcc": float(_pearson_rows(_resample_ranks(x, whole), _resample_ranks(y, whole))[0]),
        "ktau": _kendall_point(x, y),
        "rmse": float(_rmse_rows(x[None], y[None])[0]),
        "n": int(n),
        "note": "; ".join(notes),
    }


def _check_frame(df: pd.DataFrame, columns: Sequence[str], numeric: Sequence[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"predictions frame lacks columns {missing} (has {list(df.columns)})")
    for col in columns:
        if col in numeric:
            number = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
            bad = ~np.isfinite(number)
        else:
            bad = df[col].isna().to_numpy()
        if bad.any():
            ids = df.loc[bad, "utt_id"].head(5).tolist() if "utt_id" in df.columns else []
            raise ValueError(
                f"column {col!r} has {int(bad.sum())} missing or non-numeric values "
                f"(e.g. utt_id {ids}); filter unlabeled clips before scoring"
            )
    if "utt_id" in df.columns and df["utt_id"].duplicated().any():
        dup = df.loc[df["utt_id"].duplicated(), "utt_id"].head(5).tolist()
        raise ValueError(f"predictions frame has duplicate utt_id values, e.g. {dup}")


_SCORE_COLUMNS = ["n", "pcc", "srcc", "ktau", "rmse", "note"]


def per_corpus(df: pd.DataFrame, pred_col: str = "pred", mos_col: str = "mos") -> pd.DataFrame:
    """Clip-level scores, one row per corpus (sorted): ``corpus, n, pcc, srcc, ktau, rmse, note``."""
    _check_frame(df, ["utt_id", "corpus", mos_col, pred_col], [mos_col, pred_col])
    rows = [
        {"corpus": corpus, **scores(g[mos_col], g[pred_col])}
        for corpus, g in df.groupby("corpus", sort=True)
    ]
    return pd.DataFrame(rows, columns=["corpus", *_SCORE_COLUMNS])


def per_system(df: pd.DataFrame, pred_col: str = "pred", mos_col: str = "mos") -> pd.DataFrame:
    """System-level scores per corpus: mean MOS and mean prediction per ``sys_id``, then the metrics
    over systems. Columns ``corpus, n, n_clips, pcc, srcc, ktau, rmse, note`` (``n``: systems)."""
    _check_frame(df, ["utt_id", "corpus", "sys_id", mos_col, pred_col], [mos_col, pred_col])
    rows = []
    for corpus, g in df.groupby("corpus", sort=True):
        systems = g.groupby("sys_id", sort=True)[[mos_col, pred_col]].mean()
        rows.append({"corpus": corpus, **scores(systems[mos_col], systems[pred_col]), "n_clips": len(g)})
    columns = ["corpus", "n", "n_clips", *_SCORE_COLUMNS[1:]]
    return pd.DataFrame(rows, columns=columns)


def _weighted(values: np.ndarray, weights: np.ndarray) -> float:
    return float((values * weights).sum() / weights.sum()) if weights.sum() > 0 else float("nan")


def summarize(per_corpus_df: pd.DataFrame) -> dict[str, Any]:
    """Means over corpora of each metric present in a ``per_corpus``/``per_system`` frame.

    For each metric: ``weighted`` (weights = ``n``, i.e. clips, or systems for a system-level
    frame), ``unweighted`` (plain mean over corpora), ``n_used``, and the corpora ``ignored``
    because the metric is NaN there (``n_ignored`` of them).
    """
    for col in ("corpus", "n"):
        if col not in per_corpus_df.columns:
            raise ValueError(f"summarize needs a {col!r} column (got {list(per_corpus_df.columns)})")
    n = per_corpus_df["n"].to_numpy(dtype=float)
    out: dict[str, Any] = {"n_corpora": len(per_corpus_df), "n": int(n.sum())}
    for metric in (m for m in METRICS if m in per_corpus_df.columns):
        values = per_corpus_df[metric].to_numpy(dtype=float)
        ok = np.isfinite(values)
        out[metric] = {
            "weighted": _weighted(values[ok], n[ok]),
            "unweighted": float(values[ok].mean()) if ok.any() else float("nan"),
            "n_used": int(ok.sum()),
            "n_ignored": int((~ok).sum()),
            "ignored": per_corpus_df.loc[~ok, "corpus"].tolist(),
        }
    return out


def _interval(boots: np.ndarray, alpha: float) -> tuple[float, float]:
    finite = boots[np.isfinite(boots)]
    if finite.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def _mean_boots(boots: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per resample, the weighted mean over groups (rows) of ``boots`` ignoring NaN groups."""
    ok = np.isfinite(boots)
    w = np.where(ok, weights[:, None], 0.0)
    total = w.sum(axis=0)
    sums = (np.where(ok, boots, 0.0) * w).sum(axis=0)
    return np.divide(sums, total, out=np.full(total.shape, np.nan), where=total > 0)


def bootstrap_ci(
    df: pd.DataFrame,
    metric: str = "pcc",
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    by: str = "corpus",
    pred_col: str = "pred",
    mos_col: str = "mos",
) -> dict[str, Any]:
    """Percentile bootstrap CIs of a clip-level ``metric``, resampling clips within each ``by`` group.

    Each resample draws every group's clips with replacement (group sizes fixed), so the CIs of the
    clip-weighted and unweighted means over groups come from the same resamples as the per-group CIs.
    Resamples where the metric is undefined (e.g. a constant resample) are left out of the quantiles
    and counted in ``n_undefined``; in the means, such a group is left out of that resample.

    Returns ``{"metric", "n_boot", "alpha", "seed", "per_corpus": DataFrame[<by>, n, estimate, lo, hi,
    n_undefined], "weighted": {"estimate", "lo", "hi"}, "unweighted": {...}}``.
    """
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r} is not one of {METRICS}")
    if int(n_boot) != n_boot or n_boot < 1:
        raise ValueError(f"n_boot={n_boot!r} must be a positive integer")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha!r} must lie strictly between 0 and 1")
    n_boot = int(n_boot)
    _check_frame(df, ["utt_id", by, mos_col, pred_col], [mos_col, pred_col])
    rng = np.random.default_rng(seed)
    rows, all_boots = [], []
    for group, g in df.groupby(by, sort=True):
        x = g[mos_col].to_numpy(dtype=float)
        y = g[pred_col].to_numpy(dtype=float)
        n = x.size
        block = max(1, _BOOT_BLOCK_VALUES // n)
        boots = np.concatenate([
            _boot_rows(metric, x, y, rng.integers(0, n, size=(min(block, n_boot - start), n)))
            for start in range(0, n_boot, block)
        ])
        lo, hi = _interval(boots, alpha)
        rows.append({by: group, "n": n, "estimate": scores(x, y)[metric], "lo": lo, "hi": hi,
                     "n_undefined": int((~np.isfinite(boots)).sum())})
        all_boots.append(boots)
    per_group = pd.DataFrame(rows, columns=[by, "n", "estimate", "lo", "hi", "n_undefined"])
    out: dict[str, Any] = {"metric": metric, "n_boot": n_boot, "alpha": alpha, "seed": seed,
                           "per_corpus": per_group}
    if not rows:
        nan = float("nan")
        out["weighted"] = out["unweighted"] = {"estimate": nan, "lo": nan, "hi": nan}
        return out
    boots = np.stack(all_boots)
    estimates = per_group["estimate"].to_numpy(dtype=float)
    for name, weights in (("weighted", per_group["n"].to_numpy(dtype=float)),
                          ("unweighted", np.ones(len(per_group)))):
        point = _mean_boots(estimates[:, None], weights)[0]
        lo, hi = _interval(_mean_boots(boots, weights), alpha)
        out[name] = {"estimate": float(point), "lo": lo, "hi": hi}
    return out


def gap_closed(student: float, baseline: float, teacher: float) -> float:
    """Share of the baseline-to-teacher gap a student closes: (student - baseline) / (teacher - baseline).

    NaN when teacher == baseline (no gap to close) or any input is NaN.
    """
    student, baseline, teacher = float(student), float(baseline), float(teacher)
    if teacher == baseline or not np.isfinite([student, baseline, teacher]).all():
        return float("nan")
    return (student - baseline) / (teacher - baseline)
