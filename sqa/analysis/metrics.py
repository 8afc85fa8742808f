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
- A predictions frame has the columns ``utt_id, corpus, sys_id, mos, pred`` (one row per clip),
  and ``source_id`` (the clean utterance a clip was made from) where the manifest has it.
- Bootstrap CIs resample whole clusters, not clips: clips made from one source utterance (and,
  where a corpus has systems, clips of one system) are not independent, so resampling clips
  alone makes the CIs too narrow. With both, sources and systems are drawn independently and a
  clip counts as often as the product of its source's and its system's draws (a two-way
  cluster bootstrap). Every resample is a vector of per-clip multiplicities, so two models
  scored on the same clips see exactly the same resamples (:func:`paired_bootstrap_diff`).
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


def _boot_rows(metric: str, x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``metric`` of each resample ``x[idx[b]], y[idx[b]]`` (idx: (B, n) indices into x and y)."""
    return _weighted_rows(metric, x, y, _counts(idx, x.size).astype(float))


def _weighted_rows(metric: str, x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``metric`` of each resample given as multiplicities ``w`` (B, n) of the n clips: the same as
    the metric of the clips repeated that many times."""
    if metric == "ktau":
        if w.shape[1] <= KTAU_PAIR_MATRIX_MAX_N:
            return _kendall_weighted(x, y, w)
        reps = w.astype(int)
        return np.array([_kendall_point(np.repeat(x, r), np.repeat(y, r)) for r in reps])
    if metric == "srcc":
        return _pearson_weighted(_weighted_ranks(x, w), _weighted_ranks(y, w), w)
    if metric == "rmse":
        total = w.sum(axis=1)
        sq = (w * (y - x)[None] ** 2).sum(axis=1)
        return np.sqrt(np.divide(sq, total, out=np.full(total.shape, np.nan), where=total > 0))
    return _pearson_weighted(np.broadcast_to(x, w.shape), np.broadcast_to(y, w.shape), w)


def _spread(v: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per row, max minus min of ``v`` over the clips drawn at least once."""
    drawn = w > 0
    return np.where(drawn, v, -np.inf).max(axis=1) - np.where(drawn, v, np.inf).min(axis=1)


def _pearson_weighted(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Pearson's r per row of (B, n) arrays weighted by ``w``; NaN where fewer than 3 clips were
    drawn or x or y is constant among the drawn clips."""
    total = w.sum(axis=1)
    out = np.full(w.shape[0], np.nan)
    if w.shape[1] == 0:
        return out
    ok = (total >= MIN_N) & (_spread(x, w) > 0) & (_spread(y, w) > 0)
    if not ok.any():
        return out
    x, y, w, total = x[ok], y[ok], w[ok], total[ok]
    xc = x - (w * x).sum(axis=1, keepdims=True) / total[:, None]
    yc = y - (w * y).sum(axis=1, keepdims=True) / total[:, None]
    r = (w * xc * yc).sum(axis=1) / np.sqrt((w * xc * xc).sum(axis=1) * (w * yc * yc).sum(axis=1))
    out[ok] = np.clip(r, -1.0, 1.0)
    return out


def _value_weights(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes (n,) of the distinct values of ``x`` and, per resample, how often each was drawn (B, k)."""
    values, codes = np.unique(x, return_inverse=True)
    k = values.size
    flat = (codes[None] + k * np.arange(w.shape[0])[:, None]).ravel()
    m = np.bincount(flat, weights=w.ravel(), minlength=w.shape[0] * k).reshape(w.shape[0], k)
    return codes, m


def _weighted_ranks(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Average rank (ties share their mean rank) of each clip within each resample: (B, n)."""
    codes, m = _value_weights(x, w)
    average = np.cumsum(m, axis=1) - m + (m + 1) / 2
    return average[:, codes]


def _kendall_weighted(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of each resample without a pair loop: with P[i, j] = sign(x_i - x_j)
    sign(y_i - y_j), the concordant-minus-discordant count is w' P w / 2; pairs tied in x are
    the sum over distinct values of m (m - 1) / 2 (m: how often the value was drawn)."""
    pairs = np.sign(x[:, None] - x[None, :]) * np.sign(y[:, None] - y[None, :])
    s = np.einsum("bi,bi->b", w @ pairs, w) / 2
    mx = _value_weights(x, w)[1]
    my = _value_weights(y, w)[1]
    total = w.sum(axis=1)
    n0 = total * (total - 1) / 2
    denom = np.sqrt((n0 - (mx * (mx - 1)).sum(axis=1) / 2) * (n0 - (my * (my - 1)).sum(axis=1) / 2))
    out = np.full(w.shape[0], np.nan)
    ok = (denom > 0) & (total >= MIN_N)
    out[ok] = np.clip(s[ok] / denom[ok], -1.0, 1.0)
    return out


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


#: what a bootstrap resamples by default: whole source utterances and whole systems
CLUSTERS = ("source_id", "sys_id")


def cluster_columns(g: pd.DataFrame, clusters: Sequence[str]) -> list[str]:
    """The ``clusters`` columns that group the clips of ``g`` (present, no missing value, and fewer
    distinct values than clips: a ``sys_id`` that is each clip's own id is no grouping)."""
    return [c for c in clusters if c in g.columns and g[c].notna().all() and g[c].nunique() < len(g)]


def _resample_weights(g: pd.DataFrame, n_boot: int, rng: np.random.Generator,
                      clusters: Sequence[str]) -> np.ndarray:
    """Per resample, how often each clip of ``g`` is drawn (n_boot, n): clips with replacement, or
    the product of independent draws of each cluster column (sources, systems)."""
    n = len(g)
    cols = cluster_columns(g, clusters)
    if not cols:
        return _counts(rng.integers(0, n, size=(n_boot, n)), n).astype(float)
    w = np.ones((n_boot, n))
    for col in cols:
        codes, uniques = pd.factorize(g[col], sort=True)
        k = len(uniques)
        draws = _counts(rng.integers(0, k, size=(n_boot, k)), k)
        w *= draws[:, codes]
    return w


def _group_boots(metric: str, g: pd.DataFrame, preds: Sequence[str], n_boot: int, rng: np.random.Generator,
                 clusters: Sequence[str], mos_col: str) -> list[np.ndarray]:
    """The bootstrap distribution of ``metric`` for each prediction column, on the same resamples."""
    x = g[mos_col].to_numpy(dtype=float)
    block = max(1, _BOOT_BLOCK_VALUES // max(1, x.size))
    parts: list[list[np.ndarray]] = [[] for _ in preds]
    for start in range(0, n_boot, block):
        w = _resample_weights(g, min(block, n_boot - start), rng, clusters)
        for i, col in enumerate(preds):
            parts[i].append(_weighted_rows(metric, x, g[col].to_numpy(dtype=float), w))
    return [np.concatenate(p) for p in parts]


def _check_args(metric: str, n_boot: Any, alpha: float) -> int:
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r} is not one of {METRICS}")
    if int(n_boot) != n_boot or n_boot < 1:
        raise ValueError(f"n_boot={n_boot!r} must be a positive integer")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha!r} must lie strictly between 0 and 1")
    return int(n_boot)


def bootstrap_ci(
    df: pd.DataFrame,
    metric: str = "pcc",
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    by: str = "corpus",
    pred_col: str = "pred",
    mos_col: str = "mos",
    clusters: Sequence[str] = CLUSTERS,
) -> dict[str, Any]:
    """Percentile bootstrap CIs of a clip-level ``metric`` within each ``by`` group, resampling
    whole ``clusters`` (:data:`CLUSTERS`: source utterances and systems, where a group has them;
    ``()``: clips).

    The CIs of the clip-weighted and unweighted means over groups come from the same resamples as
    the per-group CIs. Resamples where the metric is undefined (e.g. a constant resample) are left
    out of the quantiles and counted in ``n_undefined``; in the means, such a group is left out of
    that resample.

    Returns ``{"metric", "n_boot", "alpha", "seed", "clusters", "per_corpus": DataFrame[<by>, n,
    estimate, lo, hi, n_undefined, resampled], "weighted": {"estimate", "lo", "hi"}, "unweighted": {...}}``.
    """
    n_boot = _check_args(metric, n_boot, alpha)
    _check_frame(df, ["utt_id", by, mos_col, pred_col], [mos_col, pred_col])
    rng = np.random.default_rng(seed)
    rows, all_boots = [], []
    for group, g in df.groupby(by, sort=True):
        boots = _group_boots(metric, g, [pred_col], n_boot, rng, clusters, mos_col)[0]
        lo, hi = _interval(boots, alpha)
        rows.append({by: group, "n": len(g), "estimate": scores(g[mos_col], g[pred_col])[metric], "lo": lo,
                     "hi": hi, "n_undefined": int((~np.isfinite(boots)).sum()),
                     "resampled": "+".join(cluster_columns(g, clusters)) or "clips"})
        all_boots.append(boots)
    per_group = pd.DataFrame(rows, columns=[by, "n", "estimate", "lo", "hi", "n_undefined", "resampled"])
    out: dict[str, Any] = {"metric": metric, "n_boot": n_boot, "alpha": alpha, "seed": seed,
                           "clusters": tuple(clusters), "per_corpus": per_group}
    out.update(_means(per_group, all_boots, alpha))
    return out


def _means(per_group: pd.DataFrame, all_boots: list[np.ndarray], alpha: float) -> dict[str, dict]:
    """Clip-weighted and unweighted means over groups, with CIs from the groups' resamples."""
    nan = float("nan")
    if not all_boots:
        return {"weighted": {"estimate": nan, "lo": nan, "hi": nan},
                "unweighted": {"estimate": nan, "lo": nan, "hi": nan}}
    boots = np.stack(all_boots)
    estimates = per_group["estimate"].to_numpy(dtype=float)
    out = {}
    for name, weights in (("weighted", per_group["n"].to_numpy(dtype=float)),
                          ("unweighted", np.ones(len(per_group)))):
        point = _mean_boots(estimates[:, None], weights)[0]
        lo, hi = _interval(_mean_boots(boots, weights), alpha)
        out[name] = {"estimate": float(point), "lo": lo, "hi": hi}
    return out


def paired_bootstrap_diff(
    df: pd.DataFrame,
    pred_a: str,
    pred_b: str,
    metric: str = "pcc",
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    by: str = "corpus",
    mos_col: str = "mos",
    clusters: Sequence[str] = CLUSTERS,
) -> dict[str, Any]:
    """Paired percentile bootstrap CI of ``metric(pred_a) - metric(pred_b)``: two models' predictions
    of the same clips (columns of one frame), each resample scoring both on the same draws of
    clips (or clusters, as :func:`bootstrap_ci`). The CI of the difference is far narrower than
    the two separate CIs suggest when the models err alike; a CI that excludes 0 is a difference.

    Returns ``{"metric", "n_boot", "alpha", "seed", "per_corpus": DataFrame[<by>, n, estimate, lo,
    hi, n_undefined], "weighted": {...}, "unweighted": {...}}`` (``estimate``: the difference).
    """
    n_boot = _check_args(metric, n_boot, alpha)
    _check_frame(df, ["utt_id", by, mos_col, pred_a, pred_b], [mos_col, pred_a, pred_b])
    rng = np.random.default_rng(seed)
    rows, all_boots = [], []
    for group, g in df.groupby(by, sort=True):
        a, b = _group_boots(metric, g, [pred_a, pred_b], n_boot, rng, clusters, mos_col)
        diff = a - b
        lo, hi = _interval(diff, alpha)
        estimate = scores(g[mos_col], g[pred_a])[metric] - scores(g[mos_col], g[pred_b])[metric]
        rows.append({by: group, "n": len(g), "estimate": estimate, "lo": lo, "hi": hi,
                     "n_undefined": int((~np.isfinite(diff)).sum())})
        all_boots.append(diff)
    per_group = pd.DataFrame(rows, columns=[by, "n", "estimate", "lo", "hi", "n_undefined"])
    out: dict[str, Any] = {"metric": metric, "n_boot": n_boot, "alpha": alpha, "seed": seed,
                           "per_corpus": per_group}
    out.update(_means(per_group, all_boots, alpha))
    return out


def gap_closed(student: float, baseline: float, teacher: float) -> float:
    """Share of the baseline-to-teacher gap a student closes: (student - baseline) / (teacher - baseline).

    NaN when teacher == baseline (no gap to close) or any input is NaN.
    """
    student, baseline, teacher = float(student), float(baseline), float(teacher)
    if teacher == baseline or not np.isfinite([student, baseline, teacher]).all():
        return float("nan")
    return (student - baseline) / (teacher - baseline)
