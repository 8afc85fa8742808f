"""Objective quality labels for the demo corpus: PESQ wideband MOS-LQO (ITU-T P.862.2).

``pesq_wb(ref, deg)`` scores a degraded clip against its clean reference (both 16 kHz, same length)
with the ``pesq`` package in "wb" mode. Scores lie in about 1.02-4.64 (4.64 for identical signals).

Handling of bad input:

- **Errors** (``ValueError``, the message starts with the clip id when one is given): sample rate
  other than 16 kHz, arrays that are not 1-D, different lengths, NaN/inf samples, clips shorter
  than PESQ's minimum of 0.25 s. These are caller mistakes and stop the run.
- **Skips** (the score is NaN, the reason is in :class:`PesqResult`): a digitally silent reference
  or degraded clip, or PESQ's own ``NoUtterancesError`` (it found no speech in the reference).
  Such a pair has no PESQ score; the caller keeps the row and counts it as skipped with the
  reason (``pesq_wb_results``), never as a low score. ``pesq_wb_many`` warns with the count.

``pesq_wb_many`` runs pairs in parallel worker processes (``fork`` start method on Linux, so it
needs no ``if __name__ == "__main__"`` guard and works from a Jupyter kernel or papermill; ``spawn``
elsewhere). The PESQ C library keeps global state and holds the GIL, so threads cannot be used.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from sqa import extras

SAMPLE_RATE = 16000
MIN_SECONDS = 0.25
PESQ_WB_MAX = 4.644  # score of a clip against itself

_SILENT_RATIO = 1e-30  # peak ratio below which a signal is digitally silent for PESQ's float32 code


@dataclass(frozen=True)
class PesqResult:
    """One PESQ-WB score; ``score`` is NaN exactly when ``skip_reason`` says why."""

    score: float
    skip_reason: str | None = None


def pesq_wb(ref: np.ndarray, deg: np.ndarray, sr: int = SAMPLE_RATE, *, clip_id: str | None = None) -> float:
    """PESQ-WB MOS-LQO of ``deg`` against ``ref``; NaN if the pair is skipped (see module doc)."""
    return pesq_wb_result(ref, deg, sr, clip_id=clip_id).score


def pesq_wb_result(
    ref: np.ndarray, deg: np.ndarray, sr: int = SAMPLE_RATE, *, clip_id: str | None = None
) -> PesqResult:
    """Like :func:`pesq_wb`, with the reason when the pair is skipped."""
    ref, deg = _check_pair(ref, deg, sr, clip_id)
    return _score(ref, deg)


def pesq_wb_many(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    n_jobs: int | None = None,
    *,
    sr: int = SAMPLE_RATE,
    clip_ids: Sequence[str] | None = None,
    progress: bool = True,
) -> list[float]:
    """PESQ-WB of each ``(ref, deg)`` pair, in order; NaN for skipped pairs (a warning counts them)."""
    ids, results = _score_pairs(pairs, n_jobs, sr, clip_ids, progress)
    _warn_skipped(ids, results)
    return [r.score for r in results]


def pesq_wb_results(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    n_jobs: int | None = None,
    *,
    sr: int = SAMPLE_RATE,
    clip_ids: Sequence[str] | None = None,
    progress: bool = True,
) -> list[PesqResult]:
    """Score all pairs over ``n_jobs`` processes (default: all usable cores; 1 runs in-process).

    Every pair is checked before any work starts, so a bad pair fails fast, naming its clip id
    (or its index when ``clip_ids`` is not given).
    """
    ids, results = _score_pairs(pairs, n_jobs, sr, clip_ids, progress)
    _warn_skipped(ids, results)
    return results


def _score_pairs(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    n_jobs: int | None,
    sr: int,
    clip_ids: Sequence[str] | None,
    progress: bool,
) -> tuple[list[str], list[PesqResult]]:
    from tqdm.auto import tqdm

    pairs = list(pairs)
    if clip_ids is None:
        ids = [f"pair {i}" for i in range(len(pairs))]
    else:
        ids = [str(c) for c in clip_ids]
        if len(ids) != len(pairs):
            raise ValueError(f"pesq_wb_many: {len(ids)} clip_ids for {len(pairs)} pairs")
    checked = []
    for i, (clip, pair) in enumerate(zip(ids, pairs)):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise ValueError(f"{clip}: expected a (ref, deg) pair, got {type(pair).__name__} at position {i}")
        checked.append(_check_pair(pair[0], pair[1], sr, clip))
    jobs = _n_jobs(n_jobs, len(checked))
    results: dict[int, PesqResult] = {}
    with tqdm(total=len(checked), desc="PESQ-WB", unit="clip", disable=not progress) as bar:
        if jobs == 1:
            for i, (ref, deg) in enumerate(checked):
                results[i] = _score(ref, deg)
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=jobs, mp_context=_mp_context()) as pool:
                futures = {pool.submit(_score, ref, deg): i for i, (ref, deg) in enumerate(checked)}
                for future in as_completed(futures):
                    results[futures[future]] = future.result()
                    bar.update()
    return ids, [results[i] for i in range(len(checked))]


def _warn_skipped(ids: list[str], results: list[PesqResult]) -> None:
    skipped = [(clip, r.skip_reason) for clip, r in zip(ids, results) if r.skip_reason is not None]
    if skipped:
        shown = "; ".join(f"{clip}: {reason}" for clip, reason in skipped[:5])
        more = f" (and {len(skipped) - 5} more)" if len(skipped) > 5 else ""
        warnings.warn(f"PESQ-WB skipped {len(skipped)} of {len(results)} pairs (NaN): {shown}{more}", stacklevel=3)


def _check_pair(ref: object, deg: object, sr: object, clip_id: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Validate one pair; return both as arrays (no copy when they already are numeric arrays)."""
    where = f"{clip_id}: " if clip_id is not None else ""
    if isinstance(sr, bool) or sr != SAMPLE_RATE:
        raise ValueError(f"{where}PESQ-WB needs sr={SAMPLE_RATE} Hz, got sr={sr!r}; resample both signals first")
    arrays = []
    for name, x in (("ref", ref), ("deg", deg)):
        a = np.asarray(x)
        if a.ndim != 1:
            raise ValueError(f"{where}{name} must be a 1-D (mono) signal, got shape {a.shape}")
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise ValueError(f"{where}{name} must hold real numbers, got dtype {a.dtype}")
        bad = int(np.count_nonzero(~np.isfinite(a)))
        if bad:
            raise ValueError(f"{where}{name} has {bad} NaN/inf samples")
        arrays.append(a)
    ref_a, deg_a = arrays
    if len(ref_a) != len(deg_a):
        raise ValueError(
            f"{where}ref and deg differ in length ({len(ref_a)} vs {len(deg_a)} samples); "
            "PESQ labels need time-aligned clips of equal length"
        )
    if len(ref_a) < MIN_SECONDS * SAMPLE_RATE:
        raise ValueError(
            f"{where}clip is {len(ref_a) / SAMPLE_RATE:.3f} s long; PESQ needs at least {MIN_SECONDS} s"
        )
    return ref_a, deg_a


def _score(ref: np.ndarray, deg: np.ndarray) -> PesqResult:
    """PESQ-WB of a checked pair (runs in worker processes)."""
    pesq_module = extras.require("pesq", "PESQ labels")
    NoUtterancesError, pesq = pesq_module.NoUtterancesError, pesq_module.pesq

    ref, deg = ref.astype(np.float64), deg.astype(np.float64)
    ref_peak, deg_peak = float(np.max(np.abs(ref))), float(np.max(np.abs(deg)))
    if ref_peak == 0.0 or ref_peak <= _SILENT_RATIO * deg_peak:
        return PesqResult(math.nan, "reference is digitally silent")
    if deg_peak <= _SILENT_RATIO * ref_peak:
        return PesqResult(math.nan, "degraded clip is digitally silent")
    try:
        return PesqResult(float(pesq(SAMPLE_RATE, ref, deg, "wb")))
    except NoUtterancesError:
        return PesqResult(math.nan, "PESQ detected no utterance in the reference")


def _n_jobs(n_jobs: int | None, n_pairs: int) -> int:
    if n_jobs is None:
        n_jobs = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    elif isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs < 1:
        raise ValueError(f"pesq_wb_many: n_jobs must be a positive integer or None, got {n_jobs!r}")
    return max(1, min(n_jobs, n_pairs))


def _mp_context() -> multiprocessing.context.BaseContext:
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")


__all__ = [
    "MIN_SECONDS",
    "PESQ_WB_MAX",
    "PesqResult",
    "SAMPLE_RATE",
    "pesq_wb",
    "pesq_wb_many",
    "pesq_wb_result",
    "pesq_wb_results",
]
