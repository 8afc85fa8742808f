"""Benchmark: peak memory of one training epoch over 30,000 short clips vs 3,000 (lazy loading).

Generates ``--clips`` short noise bursts (``--seconds`` each, 16 kHz PCM_16) once, then trains a
small student (``sqa.models.student`` preset ``--size``) for one epoch with
``sqa.training.loop.fit`` on ``ClipDataset(preload=False)`` read by 2 DataLoader worker processes
(what the stages do above ``PRELOAD_MAX_SECONDS`` of audio), once over the first 3,000 clips and
once over all 30,000, each in a fresh process. Peak memory is the largest sum of the proportional
set sizes (PSS: shared pages split between the processes that map them) of the training process
and its workers, sampled every 50 ms. It also records what ``preload="auto"`` decides and what
preloading the large set would hold.

Writes ``bench/results/lazy_memory.json``; passes when the large epoch's peak is within 1.3x of
the small one's.

    python -m bench.lazy_memory [--clips 30000] [--small 3000] [--seconds 0.5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from sqa import atomic

from .common import machine, results_dir

RATIO_MAX = 1.3


def write_clips(folder: Path, n: int, seconds: float) -> None:
    """``n`` clips and ``manifest.parquet`` (labels: the clip's level, MOS 1-5)."""
    import pandas as pd
    import soundfile as sf

    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        level = rng.uniform(0.01, 0.5)
        path = folder / "wav" / f"{i // 1000:03d}" / f"c{i:06d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, (level * rng.standard_normal(int(seconds * 16000))).astype(np.float32).clip(-1, 1), 16000,
                 subtype="PCM_16")
        rows.append({"utt_id": f"b/{i}", "corpus": "b", "path": str(path.relative_to(folder)),
                     "mos": 1 + 8 * level, "duration": seconds})
    pd.DataFrame(rows).to_parquet(folder / "manifest.parquet")


def epoch(folder: str, n: int, size: str) -> None:
    """One training epoch over the first ``n`` clips (run in its own process)."""
    import pandas as pd
    import torch

    from sqa.data.datasets import ClipDataset
    from sqa.models.student import ConvTransformerSQA, preset
    from sqa.training import loop

    torch.set_num_threads(1)
    df = pd.read_parquet(Path(folder) / "manifest.parquet").iloc[:n]
    window = int(df["duration"].iloc[0] * 16000)
    ds = ClipDataset(df, {"b": folder}, window=window, crop="random", preload=False, progress=False)
    cfg = loop.TrainConfig(epochs=1, batch_size=64, num_workers=2, device="cpu", progress=False, patience=None)
    model = ConvTransformerSQA(preset(size))
    with tempfile.TemporaryDirectory() as out:
        loop.fit(model, ds, None, cfg, out)


def _pss(pid: int) -> int:
    import psutil

    total = 0
    try:
        root = psutil.Process(pid)
        for p in [root, *root.children(recursive=True)]:
            try:
                total += p.memory_full_info().pss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
    except psutil.NoSuchProcess:
        pass
    return total


def measure(folder: Path, n: int, size: str) -> dict:
    """Peak PSS (MB) and seconds of :func:`epoch` over ``n`` clips in a fresh process."""
    code = f"from bench.lazy_memory import epoch; epoch({str(folder)!r}, {n}, {size!r})"
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code])
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], _pss(proc.pid))
            time.sleep(0.05)

    watcher = threading.Thread(target=sample)
    watcher.start()
    proc.wait()
    watcher.join()
    if proc.returncode != 0:
        raise RuntimeError(f"the epoch over {n} clips failed (exit {proc.returncode})")
    return {"clips": n, "peak_pss_mb": round(peak[0] / 2**20, 1), "seconds": round(time.perf_counter() - t0, 1)}


def main(argv: list[str] | None = None) -> dict:
    import pandas as pd

    from sqa.data.datasets import PRELOAD_MAX_SECONDS, should_preload

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=30_000)
    ap.add_argument("--small", type=int, default=3_000)
    ap.add_argument("--seconds", type=float, default=0.5)
    ap.add_argument("--size", default="10k")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lazy-memory-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        write_clips(folder, args.clips, args.seconds)
        t_write = time.perf_counter() - t0
        df = pd.read_parquet(folder / "manifest.parquet")
        small, large = measure(folder, args.small, args.size), measure(folder, args.clips, args.size)
        auto = {n: should_preload(df.iloc[:n]) for n in (args.small, args.clips)}
    ratio = large["peak_pss_mb"] / small["peak_pss_mb"]
    result = {"clips_seconds": args.seconds, "student": args.size, "batch_size": 64, "loader_workers": 2,
              "small": small, "large": large, "ratio": round(ratio, 3), "ratio_max": RATIO_MAX,
              "passes": ratio <= RATIO_MAX, "seconds_writing_clips": round(t_write, 1),
              "preload_auto": {"threshold_s": PRELOAD_MAX_SECONDS, **{str(k): v for k, v in auto.items()}},
              "preloaded_large_would_hold_mb": round(args.clips * args.seconds * 16000 * 4 / 2**20, 1),
              "machine": machine()}
    atomic.write_json(results_dir() / "lazy_memory.json", result)
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
