"""Figure helpers: each returns a matplotlib Figure (shown inline by notebooks, saved by runs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def _plt():
    import matplotlib
    import matplotlib.pyplot as plt

    if not hasattr(matplotlib, "_sqa_style"):
        import seaborn as sns
        sns.set_theme(style="whitegrid", context="notebook")
        matplotlib._sqa_style = True
    return plt


def mos_histograms(df: pd.DataFrame, bins: np.ndarray | None = None):
    """One MOS histogram per corpus (labeled rows), sharing the 1-5 axis."""
    plt = _plt()
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
    from . import atomic

    out = []
    for fmt in formats:
        target = Path(path).with_suffix(f".{fmt}")
        with atomic.atomic_path(target) as tmp:
            fig.savefig(tmp, format=fmt, dpi=120, bbox_inches="tight")
        out.append(target)
    return out


def pseudo_label_hist(labels: pd.DataFrame):
    """Distribution of the teacher's pseudo-labels over the pool."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 3))
    ax.hist(labels["pseudo_mos"], bins=np.arange(1.0, 5.01, 0.1), color="tab:orange")
    ax.set_xlabel("pseudo-label (teacher MOS)")
    ax.set_ylabel("clips")
    fig.tight_layout()
    return fig


def oracle_scatter(pool: pd.DataFrame, labels: pd.DataFrame):
    """Pseudo-label against the pool's hidden oracle label (empty axes when there is none)."""
    plt = _plt()
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
