"""Benchmark: CPU inference speed against parameter count, pruned and distilled models side by side.

Every model run of a profile that notebook 06 would collect (``sqa.analysis.tables.collect``: the teacher
of 02, the students of 04, the pruned teachers of 05), loaded from its run folder's
``model.safetensors`` and timed the same way (``bench.models.time_calls``: warm-up, median of
repeats) on one 4-s clip at batch 1 with 1 and 2 threads. Beside each: parameters and the run's
mean test PCC (clip-weighted, from its ``metrics.json``).

Writes ``bench/results/pruned_vs_distilled_<profile>.json`` and a figure
``pruned_vs_distilled_<profile>.png`` (milliseconds per clip against parameters, one series per
kind). Run it after stages 02, 04 and 05 of the profile (``make demo`` and the 05 sizes).

    python -m bench.pruned_vs_distilled [--profile demo]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench.models

import argparse  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from sqa import atomic  # noqa: E402
from sqa.analysis import figures, tables
from sqa.models import checkpoint  # noqa: E402

from .common import machine, results_dir  # noqa: E402
from .models import FULL, Setting, clips, threads, time_calls  # noqa: E402

SETTING = Setting(4.0, 1)
THREADS = (1, 2)


def _test_pcc(folder: Path) -> float | None:
    metrics = json.loads((folder / "metrics.json").read_text())
    return metrics.get("test_mean", {}).get("pcc", {}).get("weighted")


def measure(row) -> dict:
    model, info = checkpoint.load(Path(row["dir"]) / "model.safetensors")
    model.eval()
    wave = torch.from_numpy(clips(SETTING.clip_s, SETTING.batch)[0])[None]
    out = {"label": row["label"], "kind": row["kind"], "size": row["size"], "arch": info.arch,
           "params": int(sum(p.numel() for p in model.parameters())), "test_pcc": _test_pcc(Path(row["dir"])),
           "run": f"{row['stage']}/{row['tag']}", "timing": {}}
    for n in THREADS:
        with threads(n), torch.inference_mode():
            t = time_calls(lambda: model(wave), FULL)
        out["timing"][str(n)] = {**t, "ms_per_clip": 1000 * t["median_s"],
                                 "audio_s_per_s": SETTING.clip_s / t["median_s"]}
    print(f"  {row['label']}: {out['params']:,} params, {out['timing']['1']['ms_per_clip']:.1f} ms (1 thread)",
          flush=True)
    return out


def figure(rows: list[dict], profile: str):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for kind, marker in (("teacher", "*"), ("pruned", "s"), ("distilled", "o"), ("labeled-only", "x")):
        pts = sorted((r["params"], r["timing"]["1"]["ms_per_clip"], r["size"]) for r in rows if r["kind"] == kind)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, label=kind)
    ax.set(xscale="log", yscale="log", xlabel="parameters", ylabel="ms per 4-s clip (CPU, 1 thread)",
           title=f"inference time vs. size ({profile} runs)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="demo")
    args = ap.parse_args(argv)
    found = tables.collect(args.profile)
    if not {"pruned", "distilled"} <= set(found["kind"]):
        raise SystemExit(f"bench.pruned_vs_distilled: profile {args.profile!r} needs finished 04_distill and "
                         f"05_prune runs; found kinds {sorted(set(found['kind']))}")
    rows = [measure(r) for _, r in found.iterrows()]
    result = {"machine": machine(), "profile": args.profile, "setting": SETTING.key, "threads": list(THREADS),
              "models": rows}
    out = results_dir() / f"pruned_vs_distilled_{args.profile}"
    atomic.write_json(out.with_suffix(".json"), result)
    figures.save(figure(rows, args.profile), out, ("png",))
    return result


if __name__ == "__main__":
    main()
