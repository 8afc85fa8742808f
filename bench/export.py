"""Benchmark: CPU throughput of PyTorch, its torch.export program (.pt2) and ONNX Runtime (float32 and
dynamic int8).

For each model (student presets with random weights — speed does not depend on the weights —
and the released DistillMOS v7), exported with ``sqa.export`` for a fixed 4-s window, measures
seconds of audio scored per second for 1 and 2 threads and batches of 1 and 8 clips of 4 s,
plus each runtime's max |MOS diff| from PyTorch on the timed batch. Timing: one warm-up call,
then calls until ``--min-time`` seconds and at least 3 calls have passed; the median call counts.
Writes ``bench/results/export.json``.

    python -m bench.export [--models 250k 1M distillmos-v7] [--threads 1 2] [--batches 1 8]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from sqa import atomic, export
from sqa.models import count_params, student

from .common import machine, results_dir

CLIP_S = 4.0
RUNTIMES = ("pytorch", "pt2", "onnx", "onnx-int8")
#: runtime -> (sqa.export format, int8, file suffix)
EXPORTS = {"pt2": ("pt2", False, ".pt2"), "onnx": ("onnx", False, ".onnx"), "onnx-int8": ("onnx", True, ".onnx")}


def build(name: str):
    """A model for ``name`` (a preset; ``distillmos-v7`` with its released weights), 4-s window."""
    import torch

    if name == "distillmos-v7":
        model = student.distillmos_v7(pretrained=True)
    else:
        torch.manual_seed(0)
        model = student.ConvTransformerSQA(student.preset(name))
    return model.with_window(CLIP_S).eval()


def clips(batch: int, seed: int = 0) -> np.ndarray:
    """``batch`` 4-s clips: harmonic tones under a syllable envelope with noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(CLIP_S * 16000)) / 16000
    rows = []
    for i in range(batch):
        x = sum(np.sin(2 * np.pi * (110 + 20 * i) * k * t) / k for k in range(1, 20))
        x = x * np.clip(np.sin(2 * np.pi * 4 * t + i), 0, None) + 0.05 * rng.standard_normal(t.size)
        rows.append(0.3 * x / np.abs(x).max())
    return np.stack(rows).astype(np.float32)


def runners(model, files: dict[str, Path], threads: int) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Runtime name -> function scoring a (batch, window) array, each limited to ``threads``."""
    import torch

    torch.set_num_threads(threads)
    out: dict[str, Callable[[np.ndarray], np.ndarray]] = {}

    def torch_fn(module):
        def run(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return module(torch.from_numpy(x)).numpy()
        return run

    out["pytorch"] = torch_fn(model.forward_window)
    out["pt2"] = torch_fn(torch.export.load(str(files["pt2"])).module())
    for name in ("onnx", "onnx-int8"):
        out[name] = export.OnnxScorer(files[name], threads=threads).run_windows
    return out


def time_call(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, min_time: float) -> float:
    """Median seconds per call after one warm-up call."""
    fn(x)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def export_all(model, folder: Path) -> dict[str, Path]:
    return {name: export.export_model(model, folder / f"{name}{suffix}", fmt, int8=int8, window=export.window_for(model))
            for name, (fmt, int8, suffix) in EXPORTS.items()}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["250k", "1M", "distillmos-v7"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--min-time", type=float, default=1.0, help="seconds of timed calls per measurement")
    ap.add_argument("--out", type=Path, default=None, help="default bench/results/export.json")
    args = ap.parse_args(argv)
    rows = []
    for name in args.models:
        model = build(name)
        with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
            files = export_all(model, Path(tmp))
            sizes = {k: v.stat().st_size for k, v in files.items()}
            for threads in args.threads:
                fns = runners(model, files, threads)
                for batch in args.batches:
                    x = clips(batch)
                    reference = fns["pytorch"](x)
                    for runtime in RUNTIMES:
                        seconds = time_call(fns[runtime], x, args.min_time)
                        diff = float(np.max(np.abs(fns[runtime](x) - reference)))
                        rows.append({"model": name, "n_params": count_params(model), "runtime": runtime,
                                     "threads": threads, "batch": batch, "seconds_per_call": seconds,
                                     "audio_s_per_s": batch * CLIP_S / seconds, "max_abs_diff_vs_pytorch": diff,
                                     "file_bytes": sizes.get(runtime)})
                        print(f"{name:>13} {runtime:>16} threads={threads} batch={batch}: "
                              f"{batch * CLIP_S / seconds:8.1f} s audio/s (|diff| {diff:.1e})", flush=True)
    result = {"machine": machine(), "clip_s": CLIP_S, "min_time": args.min_time, "results": rows}
    atomic.write_json(args.out or results_dir() / "export.json", result)
    print(table(rows))
    return result


def table(rows: list[dict]) -> str:
    """Audio seconds per second: one row per model and runtime, one column per threads x batch."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    pivot = frame.pivot_table(index=["model", "runtime"], columns=["threads", "batch"], values="audio_s_per_s",
                              sort=False)
    pivot.columns = [f"{t} thr, b{b}" for t, b in pivot.columns]
    return pivot.round(1).to_string()


if __name__ == "__main__":
    main()
