"""Benchmark: how the release student's agreement with its teacher grows with the pseudo-labeled pool.

The 250k student is distilled by stage 04's training call with the release sweep's settings (the
profile's epochs, batch size and 4-s windows, the sweep's learning rate; pseudo-labels alone, no
hint loss: the scaling of plain distillation, as the study was first made; ``bench.hints`` adds it) on
random subsets of the release pool's pseudo-labeled clips (``--clips``; a seed draws both the
subset and the initialisation; the whole pool with seed 0 is stage 04's release 250k run without hints),
then scored on the held-out test clips against the teacher's labels with the clustered bootstrap
CIs of :mod:`bench.release_models`. Every (clips, seed) point is kept as it is
finished (``outputs/release/bench/data_scaling``), so an interrupted benchmark resumes.

Writes ``bench/results/release_scaling.json``: each point, and per subset size the mean and SD of
the test PCC over seeds.

    python -m bench.release_scaling                  # 1,250 / 2,500 / 5,000 clips x seeds 0, 1, 2
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402

import numpy as np  # noqa: E402

from sqa import atomic, paths  # noqa: E402
from sqa.pipeline import profiles, runs, stages  # noqa: E402

from .common import machine, results_dir  # noqa: E402
from .release_models import agreement, heldout_test  # noqa: E402

PROFILE = "release"
SIZE = "250k"
CLIPS = (1250, 2500, 5000)
SEEDS = (0, 1, 2)


def train_point(data: stages.StageData, pool, n: int, seed: int, folder, hint_weight: float = 0.0,
                pseudo_dir=None):
    """The ``SIZE`` student distilled on ``n`` pool clips drawn with ``seed`` by stage 04's own
    training call (the drawn clips keep the pool's order, so all of them is stage 04's run);
    ``hint_weight > 0`` adds the hint loss on the summaries of the teacher of ``pseudo_dir``.
    Returns the training result and the model."""
    from sqa.training import loop

    p = profiles.resolve(PROFILE, "04_distill", {"epochs": None, "batch_size": None, "window_s": None})
    lr = next(float(s["lr"]) for s in profiles.sweep(PROFILE, "04_distill") if s["size"] == SIZE)
    subset = pool.iloc[np.sort(np.random.default_rng(seed).permutation(len(pool))[:n])].reset_index(drop=True)
    cfg = loop.TrainConfig(epochs=p["epochs"], lr=lr, batch_size=p["batch_size"], seed=seed, device="auto")
    model = stages.build_model(SIZE, window_s=p["window_s"], profile=PROFILE, seed=seed)
    run = runs.Run(PROFILE, "bench", folder.name, folder, {})
    hints = stages.pool_hints(PROFILE, data, subset, pseudo_dir, cfg) if hint_weight else None
    return stages.fit(run, model, data, cfg, subset, p["window_s"], target="pseudo_mos", hints=hints,
                      hint_weight=hint_weight)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, nargs="+", default=list(CLIPS))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    args = parser.parse_args(argv)
    pseudo_dir = runs.latest(PROFILE, "03_pseudo_labels")
    test, data = heldout_test(PROFILE, stages.manifest_of(pseudo_dir))
    pool = stages.pseudo_frame(data, pseudo_dir)
    if max(args.clips) > len(pool):
        raise SystemExit(f"--clips {max(args.clips)}: the pool has {len(pool)} pseudo-labeled clips")
    points = []
    for n in args.clips:
        for seed in args.seeds:
            folder = paths.profile_dir(PROFILE) / "bench" / "data_scaling" / f"clips-{n}_seed-{seed}"
            done = folder / "agreement.json"
            if not done.is_file():
                model = train_point(data, pool, n, seed, folder, hint_weight=0.0)[1]
                atomic.write_json(done, agreement(model, test, data)["overall"])
            overall = json.loads(done.read_text())
            points.append({"clips": n, "seed": seed, **overall})
            print(f"{n} clips, seed {seed}: PCC {overall['pcc']['estimate']:.3f}", flush=True)
    points.sort(key=lambda p: (p["clips"], p["seed"]))
    summary = {}
    for n in sorted(args.clips):
        pcc = [p["pcc"]["estimate"] for p in points if p["clips"] == n]
        summary[str(n)] = {"seeds": len(pcc), "pcc_mean": float(np.mean(pcc)),
                           "pcc_sd": float(np.std(pcc, ddof=1)) if len(pcc) > 1 else None}
    result = {"machine": machine(), "profile": PROFILE, "size": SIZE, "pseudo_labels": pseudo_dir.name,
              "pool_clips": int(len(pool)), "n_test": int(len(test)), "points": points, "by_clips": summary}
    atomic.write_json(results_dir() / "release_scaling.json", result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
    print(json.dumps({"written": str(results_dir() / "release_scaling.json")}))
