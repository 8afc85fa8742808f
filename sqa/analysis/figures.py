"""Figures (each returns a matplotlib Figure; notebooks show them inline, runs save them).

General helpers (``pyplot``, ``save``) and the data figures of stages 01 and 03 come first; then
the figures of stage 06: score against size and against speed, predicted against true MOS per
corpus, and a models x corpora heatmap. Those read the tables of :mod:`sqa.analysis.tables`
(``results_table``, ``throughput_table``) and its long predictions frame; per-corpus scores in
titles come from :mod:`sqa.analysis.metrics`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from sqa.analysis import metrics
from sqa.analysis.tables import corpora_of, format_count


def pyplot():
    """matplotlib.pyplot with the project's seaborn theme applied once."""
    import matplotlib
    import matplotlib.pyplot as plt

    if not hasattr(matplotlib, "_sqa_style"):
        import seaborn as sns
        sns.set_theme(style="whitegrid", context="notebook")
        matplotlib._sqa_style = True
    return plt


def mos_histograms(df: pd.DataFrame, bins: np.ndarray | None = None):
    """One MOS histogram per corpus (labeled rows), sharing the 1-5 axis."""
    plt = pyplot()
    labeled = df[df["mos"].notna()]
    corpora = sorted(labeled["corpus"].unique())
    bins = np.arange(1.0, 5.01, 0.25) if bins is None else bins
    ncols = min(4, max(1, len(corpora)))
    nrows = int(np.ceil(len(corpora) / ncols)) or 1
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.4 * nrows), squeeze=False,
                             sharex=True)
    for ax, corpus in zip(axes.flat, corpora):
        ax.hist(labeled.loc[labeled["corpus"] == corpus, "mos"], bins=bins, color="tab:blue", alpha=0.8)
        ax.set_title(corpus, fontsize=10)
        ax.set_xlabel("MOS")
    for ax in list(axes.flat)[len(corpora):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def save(fig, path: Path | str, formats: tuple[str, ...] = ("png",)) -> list[Path]:
    """Save a figure atomically in each format (``path`` without suffix)."""
    from sqa import atomic

    out = []
    for fmt in formats:
        target = Path(path).with_suffix(f".{fmt}")
        with atomic.atomic_path(target) as tmp:
            fig.savefig(tmp, format=fmt, dpi=120, bbox_inches="tight")
        out.append(target)
    return out


def pseudo_label_hist(labels: pd.DataFrame):
    """Distribution of the teacher's pseudo-labels over the pool."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 3))
    ax.hist(labels["pseudo_mos"], bins=np.arange(1.0, 5.01, 0.1), color="tab:orange")
    ax.set_xlabel("pseudo-label (teacher MOS)")
    ax.set_ylabel("clips")
    fig.tight_layout()
    return fig


def oracle_scatter(pool: pd.DataFrame, labels: pd.DataFrame):
    """Pseudo-label against the pool's hidden oracle label (empty axes when there is none)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4, 4))
    if "oracle_mos" in pool and pool["oracle_mos"].notna().any():
        both = pool[["utt_id", "oracle_mos"]].merge(labels[["utt_id", "pseudo_mos"]], on="utt_id")
        ax.scatter(both["oracle_mos"], both["pseudo_mos"], s=6, alpha=0.5)
        ax.plot([1, 5], [1, 5], color="grey", lw=1)
    ax.set_xlabel("oracle (PESQ-WB MOS-LQO)")
    ax.set_ylabel("pseudo-label")
    ax.set_xlim(1, 5)
    ax.set_ylim(1, 5)
    fig.tight_layout()
    return fig


def learning_curve_figure(log_df: pd.DataFrame):
    """Train loss and dev PCC per epoch (from ``train_log.csv``), best epoch marked."""
    missing = [c for c in ("epoch", "train_loss", "dev_pcc") if c not in log_df.columns]
    if missing:
        raise ValueError(f"learning_curve_figure: log lacks column(s) {missing}")
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, (ax_loss, ax_pcc) = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax in (ax_loss, ax_pcc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_loss.plot(log_df["epoch"], log_df["train_loss"], marker="o", color="tab:blue")
    ax_loss.set(xlabel="epoch", ylabel="train loss (MOS scaled to [0, 1])", title="training loss")
    ax_pcc.plot(log_df["epoch"], log_df["dev_pcc"], marker="o", color="tab:green")
    ax_pcc.set(xlabel="epoch", ylabel="dev PCC", title="dev PCC")
    if log_df["dev_pcc"].notna().any():
        best = log_df.loc[log_df["dev_pcc"].idxmax()]
        ax_pcc.axvline(best["epoch"], color="grey", ls="--", lw=1)
        ax_pcc.annotate(f"best {best['dev_pcc']:.3f} @ {int(best['epoch'])}", (best["epoch"], best["dev_pcc"]),
                        textcoords="offset points", xytext=(4, -12), fontsize=9)
    fig.tight_layout()
    return fig


#: colour and marker per model kind
STYLE = {
    "distilled": ("tab:blue", "o"),
    "labeled-only": ("tab:orange", "s"),
    "pruned": ("tab:green", "D"),
    "teacher": ("tab:red", "*"),
    "baseline": ("tab:grey", "^"),
}
CURVE_KINDS = ("distilled", "labeled-only", "pruned")
METRIC_NAMES = {"pcc": "PCC", "srcc": "SRCC", "ktau": "Kendall tau", "rmse": "RMSE"}


def _metric_name(table: pd.DataFrame) -> str:
    return METRIC_NAMES.get(table.attrs.get("metric", ""), "score")


def _yerr(rows: pd.DataFrame, col: str) -> np.ndarray:
    """Asymmetric error bars (2, n) from a column's CI; zero where the CI is undefined."""
    est = rows[col].to_numpy(dtype=float)
    lo = np.nan_to_num(est - rows[f"{col}_lo"].to_numpy(dtype=float), nan=0.0)
    hi = np.nan_to_num(rows[f"{col}_hi"].to_numpy(dtype=float) - est, nan=0.0)
    return np.clip(np.stack([lo, hi]), 0.0, None)


#: what the error bars of the stage-06 figures are
ERROR_BARS = "error bars: 95 % bootstrap CI (whole source utterances and systems resampled)"


def score_vs_params(table: pd.DataFrame, column: str = "weighted", note: str = ""):
    """Score (``column``: the clip-weighted mean by default) against parameter count (log axis):
    per kind of scaled model, a line through the mean over its runs (seeds) at each size, each run
    a faint dot (the seeds' spread), the error bar of a size with one run its 95 % CI and of a size
    with several runs their min-max range; the teacher and each baseline labelled. ``note`` (e.g.
    what the labels are) and what the error bars are stand under the axes."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for kind in CURVE_KINDS:
        rows = table[table["kind"] == kind]
        if rows.empty:
            continue
        color, marker = STYLE[kind]
        ax.scatter(rows["params"], rows[column], color=color, alpha=0.35, s=14, marker=marker)
        means = _per_size(rows, column)
        ax.errorbar(means["params"], means["mean"], yerr=means[["below", "above"]].to_numpy().T, color=color,
                    marker=marker, capsize=3, lw=1.5, label=f"{kind} (mean of {int(means['n'].max())} max. runs)"
                    if means["n"].max() > 1 else kind)
    for kind, dashed in (("teacher", True), ("baseline", False)):
        color, marker = STYLE[kind]
        for _, r in table[table["kind"] == kind].iterrows():
            ax.errorbar([r["params"]], [r[column]], yerr=_yerr(r.to_frame().T, column), color=color,
                        marker=marker, ms=12 if kind == "teacher" else 7, capsize=3, ls="none")
            if dashed and np.isfinite(r[column]):
                ax.axhline(r[column], color=color, ls="--", lw=1)
            ax.annotate(f"{r['label']} ({format_count(r['params'])})", (r["params"], r[column]),
                        textcoords="offset points", xytext=(6, 4), fontsize=8, color=color)
    ax.set_xscale("log")
    counts = table["params"].to_numpy(dtype=float)
    counts = counts[np.isfinite(counts) & (counts > 0)]
    if counts.size:  # from the counts, not the points: every score may be undefined (NaN)
        ax.set_xlim(counts.min() / 2, counts.max() * 2)
    if not np.isfinite(table[column].to_numpy(dtype=float)).any():
        ax.text(0.5, 0.5, "no model has a defined score", transform=ax.transAxes, ha="center")
    ax.set_xlabel("parameters")
    mean = "clip-weighted mean" if column == "weighted" else column
    ax.set_ylabel(f"{_metric_name(table)} ({mean} over test corpora)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=8)
    caption = f"{ERROR_BARS}; sizes with several runs: dots = runs, bar = their range"
    fig.text(0.01, 0.01, caption + (f"\n{note}" if note else ""), fontsize=7, va="bottom", wrap=True)
    fig.tight_layout(rect=(0, 0.07 if note else 0.04, 1, 1))
    return fig


def _per_size(rows: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per size of one kind: mean parameters and score, run count, and the error bar below/above
    the mean (the CI for one run, the runs' range for several)."""
    out = []
    for _, g in rows.groupby("size", sort=False):
        v = g[column].to_numpy(dtype=float)
        m = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
        if len(g) == 1:
            below, above = _yerr(g, column)[:, 0]
        else:
            below, above = m - np.nanmin(v), np.nanmax(v) - m
        out.append({"params": g["params"].mean(), "mean": m, "n": len(g), "below": below, "above": above})
    return pd.DataFrame(out).sort_values("params")


def score_vs_throughput(table: pd.DataFrame, speed: pd.DataFrame, column: str = "weighted"):
    """Score against measured inference speed (seconds of audio per second on one CPU thread,
    log axis), one marker per model, coloured by kind and labelled."""
    plt = pyplot()
    both = table.merge(speed[["label", "throughput"]], on="label", how="inner")
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for kind, rows in both.groupby("kind", sort=False):
        color, marker = STYLE.get(kind, ("black", "x"))
        ax.errorbar(rows["throughput"], rows[column], yerr=_yerr(rows, column), color=color, marker=marker,
                    ls="none", capsize=3, ms=10 if kind == "teacher" else 6, label=kind)
        for _, r in rows.iterrows():
            ax.annotate(r["label"], (r["throughput"], r[column]), textcoords="offset points", xytext=(5, 3),
                        fontsize=7, color=color)
    ax.set_xscale("log")
    ax.margins(x=0.15)
    ax.set_xlabel(f"throughput (s of audio per s, {speed.attrs.get('device', 'cpu')}, 1 thread)")
    ax.set_ylabel(f"{_metric_name(table)} (clip-weighted mean)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig


def scatter_grid(preds: pd.DataFrame, labels: Sequence[str]):
    """Predicted against true MOS, one row per model in ``labels``, one column per test corpus;
    each panel titled with its PCC."""
    plt = pyplot()
    missing = [m for m in labels if m not in set(preds["label"])]
    if missing:
        raise ValueError(f"scatter_grid: no predictions for {missing}")
    corpora = sorted(preds["corpus"].unique())
    nrows, ncols = max(1, len(labels)), max(1, len(corpora))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.4 * ncols + 0.6, 2.4 * nrows + 0.4), squeeze=False,
                             sharex=True, sharey=True)
    for i, label in enumerate(labels):
        model = preds[preds["label"] == label]
        for j, corpus in enumerate(corpora):
            ax = axes[i, j]
            g = model[model["corpus"] == corpus]
            ax.scatter(g["mos"], g["pred"], s=8, alpha=0.6, color=STYLE.get(g["kind"].iloc[0], ("black",))[0])
            ax.plot([1, 5], [1, 5], color="grey", lw=0.8)
            pcc = metrics.scores(g["mos"], g["pred"])["pcc"]
            ax.set_title(f"{corpus}\nPCC {pcc:.2f}" if np.isfinite(pcc) else f"{corpus}\nPCC n/a", fontsize=8)
            ax.set_xlim(1, 5)
            ax.set_ylim(1, 5)
            if j == 0:
                ax.set_ylabel(f"{label}\npredicted", fontsize=8)
            if i == nrows - 1:
                ax.set_xlabel("true MOS", fontsize=8)
    fig.tight_layout()
    return fig


def corpus_heatmap(table: pd.DataFrame):
    """Score per model (rows) and test corpus (columns) with the clip-weighted mean alongside;
    in the demo each corpus is one degradation family."""
    import seaborn as sns

    plt = pyplot()
    cols = [*corpora_of(table), "weighted"]
    data = table.set_index("label")[cols].astype(float).rename(columns={"weighted": "mean (clip-weighted)"})
    finite = data.to_numpy()[np.isfinite(data.to_numpy())]
    lower_better = table.attrs.get("metric") == "rmse"
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if vmin == vmax:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    fig, ax = plt.subplots(figsize=(1.1 * len(cols) + 3.2, 0.42 * len(data) + 1.6))
    sns.heatmap(data, annot=True, fmt=".2f", cmap="viridis_r" if lower_better else "viridis", vmin=vmin,
                vmax=vmax, ax=ax, cbar_kws={"label": _metric_name(table)}, annot_kws={"fontsize": 8})
    ax.set_xlabel("test corpus")
    ax.set_ylabel("")
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    return fig


def saved(fig, folder_path: Path | str, formats: tuple[str, ...] = ("png", "pdf")):
    """Save ``fig`` (``folder_path`` without suffix) in each format, close it so a notebook shows
    it once (as the cell's value), and return it."""
    plt = pyplot()
    save(fig, folder_path, formats)
    plt.close(fig)
    return fig
