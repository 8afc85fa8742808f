"""GPU check: the smoke chain on ``device auto``, then pseudo-labeling and student-training speed
against the bare bf16 forward pass of the same models.

1. **Chain**: stages 01 -> 06 of the smoke profile through ``sqa run`` (stages 02-05 with
   ``-p device auto``) in a temporary ``SQA_OUTPUTS``; seconds per stage.
2. **Pseudo-labeling**: an XLS-R-300M-shaped teacher (Wav2Vec2, 24 blocks of 1024, random
   weights, cut at layer 21, XLS-R-SQA head) labels ``--clips`` 4-s clips written as WAV files,
   with ``sqa.training.pseudo_labels.pseudo_label`` as stage 03 runs it (``device auto``: decoding
   workers, equal-length batches, bf16 autocast), against the teacher's bare forward pass on
   batches already on the device under bf16 autocast. Target: >= 60 % of the bare throughput.
3. **Student training**: one epoch of ``sqa.training.loop.fit`` (``amp auto``) of a ``--student``
   student on those clips and their pseudo-labels (lazy loading with DataLoader workers, as the
   stages do above the preload threshold), against its bare bf16 training step (forward,
   backward, AdamW) on batches already on the device.

Writes ``bench/results/gpu_<device>.json``. ``--quick`` (for the CPU: a tiny teacher, 32 clips,
no chain unless ``--chain``) writes ``gpu_<device>_quick.json`` instead, which is a test of the
script, not a result.

    python -m bench.gpu                 # on the GPU machine: a few minutes on one H200
    python -m bench.gpu --quick         # on a CPU, to check the script
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sqa import atomic

from .common import machine, results_dir

SR = 16000
CHAIN = ("01", "02", "03", "04", "05", "06")
XLSR_300M = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                 feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True, hidden_dropout=0.0,
                 attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0, layerdrop=0.0,
                 mask_time_prob=0.0)


def run_chain(out: Path) -> dict:
    """Seconds of each smoke stage through ``sqa run`` with ``device auto`` where a stage has it."""
    env = {**os.environ, "SQA_OUTPUTS": str(out)}
    times = {}
    for stage in CHAIN:
        extra = ["-p", "device", "auto"] if stage in ("02", "03", "04", "05") else []
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "sqa.cli", "run", stage, "-q", "-p", "profile", "smoke", *extra],
                              env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"sqa run {stage} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        times[stage] = round(time.perf_counter() - t0, 1)
    return {"completed": True, "seconds": times}


def teacher(folder: Path, quick: bool):
    """The XLS-R-300M-shaped teacher cut at layer 21 (``--quick``: the tiny one cut at layer 2)."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from sqa.models.teacher import TeacherConfig, XlsrTeacher, tiny_backbone

    torch.manual_seed(0)
    if quick:
        return XlsrTeacher(TeacherConfig(str(tiny_backbone(folder)), [2])), "tiny (4 x 32) cut at 2"
    Wav2Vec2Model(Wav2Vec2Config(**XLSR_300M)).save_pretrained(folder)
    return XlsrTeacher(TeacherConfig(str(folder), [21])), "XLS-R-300M-shaped (24 x 1024, random) cut at 21"


def write_clips(folder: Path, n: int, seconds: float = 4.0):
    import pandas as pd
    import soundfile as sf

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        path = folder / f"c{i:05d}.wav"
        sf.write(path, (rng.uniform(0.02, 0.3) * rng.standard_normal(int(seconds * SR))).clip(-1, 1), SR,
                 subtype="PCM_16")
        rows.append({"utt_id": f"g/{i}", "corpus": "g", "path": path.name, "sys_id": "g", "duration": seconds})
    return pd.DataFrame(rows)


def timed(fn, device, repeats: int) -> float:
    """Seconds per call of ``fn`` (after two warm-up calls), synchronised on a GPU."""
    import torch

    for _ in range(2):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) / repeats


def bare_forward(model, device, batch: int, repeats: int) -> float:
    """Clips/s of the model's forward pass on 4-s batches already on the device (bf16 on a GPU)."""
    import torch

    from sqa.training.devices import autocast, default_amp

    model.to(device).eval()
    x = 0.1 * torch.randn(batch, 4 * SR, device=device)

    def step():
        with torch.inference_mode(), autocast(device, default_amp(device)):
            model(x)
    return batch / timed(step, device, repeats)


def bare_train_step(model, device, batch: int, repeats: int) -> float:
    """Clips/s of forward + backward + AdamW on 4-s batches already on the device (bf16 on a GPU)."""
    import torch

    from sqa.training.devices import autocast, default_amp

    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, t = 0.1 * torch.randn(batch, 4 * SR, device=device), torch.full((batch,), 3.0, device=device)

    def step():
        with autocast(device, default_amp(device)):
            loss = torch.mean((model(x).float() - t) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return batch / timed(step, device, repeats)


def label_and_train(args, tmp: Path, device) -> dict:
    import pandas as pd

    from sqa.data.datasets import ClipDataset
    from sqa.models.student import ConvTransformerSQA, preset
    from sqa.training import loop, pseudo_labels

    model, shape = teacher(tmp / "backbone", args.quick)
    df = write_clips(tmp / "clips", args.clips)
    bare = bare_forward(model, device, args.batch, args.repeats)
    t0 = time.perf_counter()
    labels = pseudo_labels.pseudo_label(model, df, {"g": tmp / "clips"}, tmp / "labels", batch_size=args.batch,
                                        device="auto", progress=False)
    label_rate = labels.n_ok / (time.perf_counter() - t0)
    train_df = df.merge(labels.labels[["utt_id", "pseudo_mos"]], on="utt_id")
    student = ConvTransformerSQA(preset(args.student))
    bare_train = bare_train_step(student, device, args.batch, args.repeats)
    ds = ClipDataset(train_df, {"g": tmp / "clips"}, target="pseudo_mos", window=4 * SR, crop="random",
                     preload=False, progress=False)
    from sqa.data.datasets import loader_workers

    cfg = loop.TrainConfig(epochs=1, batch_size=args.batch, device="auto", num_workers=loader_workers(False),
                           progress=False, patience=None)
    fit = loop.fit(student, ds, None, cfg, tmp / "train")
    train_rate = float(pd.Series(fit.log["clips_per_s"]).iloc[-1])
    return {"teacher": shape, "clips": args.clips, "batch": args.batch,
            "pseudo_label": {"clips_per_s": round(label_rate, 1), "bare_bf16_forward_clips_per_s": round(bare, 1),
                             "share_of_bare": round(label_rate / bare, 3), "target_share": 0.6,
                             "meets_target": label_rate / bare >= 0.6, "failed": labels.n_failed},
            "student_training": {"student": args.student, "clips_per_s": round(train_rate, 1),
                                 "bare_bf16_train_step_clips_per_s": round(bare_train, 1),
                                 "share_of_bare": round(train_rate / bare_train, 3)}}


def main(argv: list[str] | None = None) -> dict:
    import torch

    from sqa.training.devices import resolve_device

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="CPU check of the script: tiny teacher, few clips")
    ap.add_argument("--chain", action="store_true", help="with --quick: run the smoke chain too")
    ap.add_argument("--clips", type=int, default=None, help="4-s clips to label (default 2048; quick 32)")
    ap.add_argument("--batch", type=int, default=None, help="clips per batch (default 32; quick 8)")
    ap.add_argument("--repeats", type=int, default=None, help="timed bare passes (default 20; quick 2)")
    ap.add_argument("--student", default="1M")
    args = ap.parse_args(argv)
    args.clips = args.clips or (32 if args.quick else 2048)
    args.batch = args.batch or (8 if args.quick else 32)
    args.repeats = args.repeats or (2 if args.quick else 20)
    device = resolve_device("auto")
    result = {"device": str(device), "machine": machine(), "quick": args.quick}
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        result["chain"] = run_chain(Path(tmp) / "outputs") if (args.chain or not args.quick) else {"completed": None}
        result.update(label_and_train(args, Path(tmp), device))
    name = re.sub(r"[^a-z0-9]+", "-", (torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu").lower())
    out = results_dir() / f"gpu_{name.strip('-')}{'_quick' if args.quick else ''}.json"
    atomic.write_json(out, result)
    print(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
