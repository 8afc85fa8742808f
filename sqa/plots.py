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
