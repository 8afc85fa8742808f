"""Benchmark: peak memory of ``sqa score`` on a 1-minute and a 30-minute clip, per model.

Every model windows long clips itself and cuts the windows only as it scores them, so the peak
memory of scoring a clip should not grow with its length beyond the clip itself (30 min of 16 kHz
float32 is 115 MB). For each model and clip length, a fresh Python process resolves the model,
reads the clip and scores it through ``sqa.score`` (as ``sqa score`` does); its peak resident set
size (``VmHWM``) after loading the model and after scoring is recorded, with wall seconds and the
MOS. The ratio of the 30-minute peak to the 1-minute peak is the figure of merit (target <= 1.2).

Models: the baselines (``sqa.models.baselines.NAMES``), a 1M student checkpoint (random weights:
memory depends on the architecture, not the weights) and its ONNX export (``sqa.export``).
Clips: a speech-like harmonic signal under a syllable envelope with noise, 16 kHz mono PCM-16 WAV
(one minute, tiled for the long clip). One thread per process (the machine is shared).
Writes ``bench/results/score_memory.json``.

    python -m bench.score_memory [--models distillmos mfcc-sqa ...] [--minutes 1 30] [--update]

``--update`` keeps the rows of models not measured in this run from the existing result file
(to re-measure one model).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from sqa import atomic

from .common import machine, results_dir

SR = 16000
STUDENT_SIZE = "1M"
MODELS = ("distillmos", "dnsmos-p808", "dnsmos-p835", "mfcc-sqa", f"student-{STUDENT_SIZE}",
          f"student-{STUDENT_SIZE}-onnx")


def speechlike_minute(seed: int = 0) -> np.ndarray:
    """60 s of a harmonic voice with a wandering pitch, a syllable envelope and light noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(60 * SR) / SR
    phase = 2 * np.pi * np.cumsum(120 + 30 * np.sin(2 * np.pi * 0.4 * t)) / SR
    voice = sum(np.sin(k * phase) / k for k in range(1, 25))
    x = voice * np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 1.5 + 0.02 * rng.standard_normal(t.size)
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def write_clip(path: Path, minutes: int, minute: np.ndarray) -> Path:
    """``minutes`` minutes of ``minute`` repeated, written one minute at a time."""
    import soundfile as sf

    with sf.SoundFile(path, "w", samplerate=SR, channels=1, subtype="PCM_16") as f:
        for _ in range(minutes):
            f.write(minute)
    return path


def student_files(folder: Path) -> dict[str, Path]:
    """A random-weight student checkpoint and its ONNX export, by model label."""
    import torch

    from sqa import export
    from sqa.models import checkpoint, student

    torch.manual_seed(0)
    model = student.ConvTransformerSQA(student.preset(STUDENT_SIZE)).eval()
    ckpt = checkpoint.save(folder / "model.safetensors", model, model.arch, model.checkpoint_config())
    onnx = export.export(ckpt, "onnx")
    return {f"student-{STUDENT_SIZE}": ckpt, f"student-{STUDENT_SIZE}-onnx": onnx}


def _vm_hwm_mb() -> float:
    """Peak resident set size of this process so far (Linux ``VmHWM``), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child(spec: str, clip: str) -> dict:
    """Run in a fresh process: resolve the model, score ``clip``, report peak memory."""
    import time

    import torch

    from sqa import score

    torch.set_num_threads(1)
    items = score.find_inputs([clip])
    model = score.resolve_model(spec, threads=1)
    loaded = _vm_hwm_mb()
    t0 = time.perf_counter()
    rows = score.score_items(items, model, batch_size=8)
    seconds = time.perf_counter() - t0
    if not rows[0].ok:
        raise RuntimeError(f"{spec} failed on {clip}: {rows[0].error}")
    return {"peak_after_load_mb": loaded, "peak_mb": _vm_hwm_mb(), "seconds": seconds, "mos": rows[0].mos,
            "audio_s": rows[0].duration_s}


def measure(spec: str, clip: Path) -> dict:
    """:func:`child` in a fresh interpreter (so each peak is its own)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    done = subprocess.run([sys.executable, "-m", "bench.score_memory", "--child", spec, str(clip)],
                          capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parent.parent)
    if done.returncode:
        raise RuntimeError(f"{spec} on {clip.name}: exit {done.returncode}\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--minutes", nargs=2, type=int, default=[1, 30], metavar=("SHORT", "LONG"))
    parser.add_argument("--update", action="store_true", help="keep the other models' rows of the result file")
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "CLIP"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child)))
        return None
    rows: list[dict] = []
    result = {"minutes": args.minutes, "clip_mb_float32": {m: m * 60 * SR * 4 / 2**20 for m in args.minutes},
              "threads": 1, "target_ratio": 1.2, "rows": rows, "machine": machine()}
    with tempfile.TemporaryDirectory(prefix="sqa-score-memory-") as tmp:
        minute = speechlike_minute()
        clips = {m: write_clip(Path(tmp) / f"clip-{m}min.wav", m, minute) for m in args.minutes}
        specs = {name: name for name in args.models}
        if any(name.startswith("student") for name in args.models):
            specs.update({k: str(v) for k, v in student_files(Path(tmp)).items() if k in specs})
        for name in args.models:
            runs = {m: measure(specs[name], clip) for m, clip in clips.items()}
            short, long = (runs[m] for m in args.minutes)
            row = {"model": name, **{f"peak_mb_{m}min": runs[m]["peak_mb"] for m in args.minutes},
                   "ratio": long["peak_mb"] / short["peak_mb"],
                   "after_load_mb": short["peak_after_load_mb"],
                   **{f"seconds_{m}min": runs[m]["seconds"] for m in args.minutes},
                   **{f"mos_{m}min": runs[m]["mos"] for m in args.minutes}}
            rows.append(row)
            print(f"{name:22s} peak {row[f'peak_mb_{args.minutes[0]}min']:7.0f} MB ({args.minutes[0]} min) "
                  f"{row[f'peak_mb_{args.minutes[1]}min']:7.0f} MB ({args.minutes[1]} min)  ratio {row['ratio']:.3f}  "
                  f"{row[f'seconds_{args.minutes[1]}min']:.0f} s", flush=True)
            write(result, args.update)  # after each model: nothing lost
    return result


def write(result: dict, update: bool) -> None:
    """Write the result file; with ``update``, rows of models measured before (and not now) stay."""
    path = results_dir() / "score_memory.json"
    if update and path.is_file():
        mine = {row["model"] for row in result["rows"]}
        kept = [row for row in json.loads(path.read_text())["rows"] if row["model"] not in mine]
        order = {name: i for i, name in enumerate(MODELS)}
        result = {**result, "rows": sorted(kept + result["rows"], key=lambda row: order[row["model"]])}
    atomic.write_json(path, result)


if __name__ == "__main__":
    main()
