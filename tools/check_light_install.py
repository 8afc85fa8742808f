"""Check the light install: a fresh virtual environment, ``pip install .`` without extras, then
score a clip with a shipped student three ways (CLI, Python API, the ONNX file) and compare.

Kept out of the test suite for its install time (a few minutes). Writes what it ran and saw to
``bench/results/light_install.json`` (committed).

    python tools/check_light_install.py [--keep build/light-install]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "light_install.json"
MODEL = "sqa-250k"
#: packages the light install must not pull in (they belong to extras)
HEAVY = ("jupyterlab", "papermill", "piper", "pesq", "pyroomacoustics", "playwright", "matplotlib")
TOLERANCE = 1e-4
CLI_ROUNDING = 5e-5  # sqa score writes MOS with 4 decimals

CLIP = """
import numpy as np, soundfile as sf
t = np.arange(4 * 16000) / 16000
f0 = 120 + 20 * np.sin(2 * np.pi * 0.5 * t)
x = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / 16000) / k for k in range(1, 12))
x *= 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
x += 0.01 * np.random.default_rng(0).standard_normal(len(t))
sf.write("x.wav", (0.2 * x / np.abs(x).max()).astype("float32"), 16000)
"""
API = "import sqa; print(repr(sqa.load('{model}').score('x.wav')))"
ONNX = "import sqa, sqa.pretrained as p; print(repr(sqa.load(p.path('{model}', 'onnx')).score('x.wav')))"


def run(cmd: list[str], cwd: Path, log: list) -> str:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    log.append({"cmd": " ".join(cmd), "rc": done.returncode, "seconds": round(time.perf_counter() - t0, 1),
                "stdout_tail": done.stdout[-1500:], "stderr_tail": done.stderr[-1500:]})
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, help="build the venv here and keep it (default: a temp folder)")
    args = parser.parse_args(argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="sqa-light-"))
    work.mkdir(parents=True, exist_ok=True)
    src = work / "src"
    shutil.rmtree(src, ignore_errors=True)
    archive = subprocess.run(["git", "archive", "--format=tar", "HEAD"], cwd=ROOT, capture_output=True, check=True)
    src.mkdir()
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive.stdout, check=True)
    venv, log = work / "venv", []
    bin_ = venv / "bin"
    run([sys.executable, "-m", "venv", "--clear", str(venv)], work, log)
    run([str(bin_ / "python"), "-m", "pip", "install", "-q", str(src)], work, log)
    clips = work / "clips"
    clips.mkdir(exist_ok=True)
    run([str(bin_ / "python"), "-c", CLIP], clips, log)
    cli = run([str(bin_ / "sqa"), "score", "x.wav", "--model", MODEL, "--format", "jsonl"], clips, log)
    cli_mos = json.loads(cli.strip().splitlines()[-1])["mos"]
    api_mos = float(run([str(bin_ / "python"), "-c", API.format(model=MODEL)], clips, log).strip())
    onnx_mos = float(run([str(bin_ / "python"), "-c", ONNX.format(model=MODEL)], clips, log).strip())
    version = run([str(bin_ / "sqa"), "--version"], clips, log).strip()
    freeze = run([str(bin_ / "python"), "-m", "pip", "freeze"], work, log).lower()
    heavy = [p for p in HEAVY if any(line.startswith(p) for line in freeze.splitlines())]
    result = {"model": MODEL, "version": version, "cli_mos": cli_mos, "api_mos": api_mos, "onnx_mos": onnx_mos,
              "cli_equals_api": abs(cli_mos - api_mos) <= CLI_ROUNDING, "onnx_within_tolerance": abs(onnx_mos - api_mos) < TOLERANCE,
              "tolerance": TOLERANCE, "heavy_packages_installed": heavy,
              "n_packages": len(freeze.splitlines()), "steps": log}
    for step in log:  # machine-independent: the work folder and this interpreter by name only
        for key in ("cmd", "stdout_tail", "stderr_tail"):
            step[key] = step[key].replace(str(work), "<work>").replace(sys.executable, "python3")
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "steps"}, indent=2))
    ok = result["cli_equals_api"] and result["onnx_within_tolerance"] and not heavy
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
