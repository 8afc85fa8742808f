"""What the listening widgets show and play: stimuli, model predictions, playlists, audio and pictures.

No ipywidgets here: these helpers are plain functions over manifests, predictions and waveforms.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from sqa.data import audio
from sqa.paths import resolve_portable
from sqa.pipeline import runs

PRED_COLUMNS = ["utt_id", "pred"]
PLAYBACK_SR = (8000, 48000)



@dataclass(frozen=True)
class Stimulus:
    """One thing a listener hears: a manifest clip or a hidden reference."""

    utt_id: str
    corpus: str
    path: str
    is_reference: bool = False


def collect_predictions(profile: str) -> dict[str, pd.DataFrame]:
    """Every ``predictions.csv`` / ``predictions.parquet`` inside the finished runs of ``profile``,
    keyed ``<stage>/<tag>[/<subfolder>]``. A file without ``utt_id`` and ``pred`` or with duplicate
    ``utt_id`` is left out with a warning naming it."""
    found: dict[str, pd.DataFrame] = {}
    seen: set[Path] = set()
    for row in reversed(runs.registry(profile)):
        run_dir = resolve_portable(row["dir"])
        if run_dir in seen or not run_dir.is_dir():
            continue
        seen.add(run_dir)
        files = sorted([*run_dir.rglob("predictions.csv"), *run_dir.rglob("predictions.parquet")])
        for f in files:
            sub = f.parent.relative_to(run_dir).as_posix()
            name = f"{row['stage']}/{row['tag']}" + ("" if sub == "." else f"/{sub}")
            try:
                found[name] = read_predictions(f)
            except ValueError as e:
                warnings.warn(f"predictions left out: {e}", stacklevel=2)
    return dict(sorted(found.items()))


def read_predictions(path: Path | str) -> pd.DataFrame:
    """A predictions file (``utt_id, corpus, sys_id, mos, pred``; at least ``utt_id`` and ``pred``)."""
    path = Path(path)
    df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype={"utt_id": str})
    return check_predictions(df, str(path))


def check_predictions(df: pd.DataFrame, name: str) -> pd.DataFrame:
    missing = [c for c in PRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{name}: predictions lack column(s) {missing} (has {list(df.columns)})")
    dup = df["utt_id"][df["utt_id"].duplicated()]
    if len(dup):
        raise ValueError(f"{name}: duplicate utt_id in predictions, e.g. {dup.iloc[0]!r}")
    out = df.copy()
    out["pred"] = pd.to_numeric(out["pred"], errors="coerce")
    text = out["utt_id"][out["pred"].isna() & df["pred"].notna()]
    if len(text):
        raise ValueError(f"{name}: pred is not a number for {len(text)} clip(s), e.g. {text.iloc[0]!r}")
    return out


def prediction_table(predictions: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """utt_id x model: every model's prediction per clip (NaN where a model did not score it)."""
    cols = {name: check_predictions(df, name).set_index("utt_id")["pred"] for name, df in sorted(predictions.items())}
    return pd.DataFrame(cols) if cols else pd.DataFrame(index=pd.Index([], name="utt_id"))


def disagreements(a: pd.DataFrame, b: pd.DataFrame, top: int = 10,
                  names: tuple[str, str] = ("A", "B")) -> pd.DataFrame:
    """The clips two models disagree on most: ``utt_id, corpus, mos, <A>, <B>, diff, abs_diff``
    (``diff`` = A - B), largest ``abs_diff`` first (ties by ``utt_id``); clips scored by both only.
    ``attrs["only_one"]`` counts clips that only one of the models scored."""
    na, nb = names
    if na == nb:
        raise ValueError(f"the two models need different names, got {names}")
    a, b = check_predictions(a, na), check_predictions(b, nb)
    for name, df in ((na, a), (nb, b)):
        bad = df["utt_id"][df["pred"].isna()]
        if len(bad):
            raise ValueError(f"{name}: {len(bad)} prediction(s) are not numbers, e.g. {bad.iloc[0]!r}")
    keep_a = [c for c in ("utt_id", "corpus", "mos", "pred") if c in a.columns]
    both = a[keep_a].merge(b[["utt_id", "pred"]], on="utt_id", suffixes=("_a", "_b"), how="inner")
    both = both.rename(columns={"pred_a": na, "pred_b": nb})
    for col in ("corpus", "mos"):
        if col not in both:
            both[col] = np.nan
    both["diff"] = both[na] - both[nb]
    both["abs_diff"] = both["diff"].abs()
    out = both.sort_values(["abs_diff", "utt_id"], ascending=[False, True]).head(max(0, int(top)))
    out = out[["utt_id", "corpus", "mos", na, nb, "diff", "abs_diff"]].reset_index(drop=True)
    out.attrs["only_one"] = int(len(set(a["utt_id"]) ^ set(b["utt_id"])))
    return out


def reference_path(row: Mapping[str, Any], root: Path) -> str | None:
    """The hidden reference of a clip, relative to its corpus root, or ``None`` if it has none."""
    ref = row.get("reference_path")
    if isinstance(ref, str) and ref:
        return ref if (Path(root) / ref).is_file() else None
    source = str(row.get("source_id") or "")
    if source.startswith("demo/"):
        rel = f"../clean/{source.removeprefix('demo/')}.wav"
        if (Path(root) / rel).is_file():
            return rel
    return None


def listener_rng(seed: int, listener: str) -> np.random.Generator:
    """A generator seeded by ``seed`` and the listener's name (stable across processes)."""
    h = int.from_bytes(hashlib.sha256(listener.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng([int(seed), h])


def select_clips(pool: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """``n`` clips of ``pool`` chosen by ``seed`` alone (all listeners get the same set)."""
    pool = pool.sort_values("utt_id")
    if n >= len(pool):
        return pool
    idx = np.sort(np.random.default_rng(int(seed)).choice(len(pool), size=n, replace=False))
    return pool.iloc[idx]


def playlist(clips: pd.DataFrame, roots: Mapping[str, Path], seed: int, listener: str,
             references: bool = False) -> list[Stimulus]:
    """The stimuli of a session in the listener's order: the clips plus (optionally) one hidden
    reference per distinct reference file, shuffled together."""
    items = [Stimulus(r["utt_id"], r["corpus"], r["path"]) for _, r in clips.iterrows()]
    if references:
        seen: set[tuple[str, str]] = set()
        for _, r in clips.iterrows():
            ref = reference_path(r, Path(roots[r["corpus"]]))
            if ref and (r["corpus"], ref) not in seen:
                seen.add((r["corpus"], ref))
                stem = posixpath.splitext(posixpath.basename(ref))[0]
                items.append(Stimulus(f"{r['corpus']}/reference/{stem}", r["corpus"], ref, True))
    order = listener_rng(seed, listener).permutation(len(items))
    return [items[i] for i in order]



def playback_signal(path: Path | str) -> tuple[np.ndarray, int]:
    """A clip as mono float32 at its own rate, resampled into the 8-48 kHz range browsers play."""
    sr = int(np.clip(audio.info(path).sample_rate, *PLAYBACK_SR))
    return audio.load(path, target_sr=sr), sr


def normalize(x: np.ndarray, level_dbfs: float | None = -26.0, peak: float = 0.99) -> np.ndarray:
    """Scale to an RMS of ``level_dbfs`` (``None``: unchanged), lowered if the peak would pass ``peak``."""
    x = np.asarray(x, dtype=np.float64)
    gain = 1.0
    rms = float(np.sqrt(np.mean(x ** 2))) if x.size else 0.0
    if level_dbfs is not None and rms > 0:
        gain = 10 ** (level_dbfs / 20) / rms
    top = float(np.max(np.abs(x))) if x.size else 0.0
    if top * gain > peak:
        gain = peak / top
    return (x * gain).astype(np.float32)


def wav_bytes(x: np.ndarray, sr: int) -> bytes:
    """16-bit PCM WAV file contents."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(x, -1.0, 1.0), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def spectrogram_png(x: np.ndarray, sr: int, title: str = "", width: float = 7.5) -> bytes:
    """Waveform above a log-power spectrogram, as PNG bytes (matplotlib, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from scipy.signal import spectrogram

    fig = Figure(figsize=(width, 3.0), dpi=80)
    FigureCanvasAgg(fig)
    ax_w, ax_s = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1, 2.5]})
    duration = len(x) / sr
    step = max(1, len(x) // 2000)
    n = len(x) // step * step
    env = np.abs(x[:n]).reshape(-1, step).max(axis=1) if n else np.zeros(1)
    t = (np.arange(len(env)) + 0.5) * step / sr
    ax_w.fill_between(t, -env, env, lw=0, color="tab:blue")
    ax_w.set_ylim(-1, 1)
    ax_w.set_yticks([-1, 0, 1])
    ax_w.set_title(title, fontsize=9)
    nper = max(64, int(0.032 * sr))
    f, _, s = spectrogram(x, fs=sr, nperseg=nper, noverlap=nper * 3 // 4, window="hann")
    ax_s.imshow(10 * np.log10(s + 1e-12), origin="lower", aspect="auto", cmap="magma", vmin=-120, vmax=-20,
                extent=(0, duration, 0, f[-1] / 1000), interpolation="nearest")
    ax_s.set_ylabel("kHz")
    ax_s.set_xlabel("s")
    ax_s.set_xlim(0, duration)
    ax_s.grid(False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def html_table(df: pd.DataFrame) -> str:
    """A small frame as an HTML table with readable cell spacing (numbers to 2 decimals)."""
    text = df.to_html(index=False, float_format="%.2f", na_rep="–", border=0)
    cell = "style='padding:2px 12px 2px 0; text-align:left'"
    return text.replace("<td>", f"<td {cell}>").replace("<th>", f"<th {cell}>")
