"""Benchmark: how the release student's agreement with its teacher grows with the pseudo-labeled pool.

The 250k student is distilled by stage 04's training call with the release sweep's settings (the
profile's epochs, batch size and 4-s windows, the sweep's learning rate; pseudo-labels alone, or
with the hint loss, ``--hint-weights``) on random subsets of the release pool's pseudo-labeled
clips (``--clips``; a seed draws both the subset and the initialisation; the whole pool with seed 0
is stage 04's release 250k run), then scored on the held-out test clips against the teacher's
labels with the clustered bootstrap CIs of :mod:`bench.release_models`. Every (clips, seed) point
is kept as it is finished (``outputs/release/bench/students``, shared with :mod:`bench.hints` and
:mod:`bench.ensemble_students`, with the labels it learned: a point made with other labels is
trained again), so an interrupted benchmark resumes.

The trend: Fisher's z of the test PCC fitted by least squares as a line in log2(clips) over every
point, and where that line reaches PCC 0.92 and 0.95 -- an extrapolation that assumes the gain per
doubling stays constant, which it need not.

Writes ``bench/results/release_scaling.json`` (plain distillation) and ``release_scaling_hint-<w>.json``
(each positive hint weight): each point, per subset size the mean and SD of the test PCC over
seeds, and the trend.

    python -m bench.release_scaling      # 1,250 / 2,500 / 5,000 clips x seeds 0, 1, 2 x hint weights 0, 0.3
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from sqa import atomic, paths  # noqa: E402
from sqa.analysis import predictions  # noqa: E402
from sqa.pipeline import profiles, runs, stages  # noqa: E402

from .common import machine, results_dir  # noqa: E402
from .release_models import agreement_of, heldout_test  # noqa: E402

PROFILE = "release"
SIZE = "250k"
CLIPS = (1250, 2500, 5000)
SEEDS = (0, 1, 2)
HINT_WEIGHTS = (0.0, 0.3)  # plain distillation, and the release default
TARGETS = (0.92, 0.95)


def draw(pool, n: int, seed: int):
    """``n`` rows of ``pool`` drawn at random with ``seed``, in the pool's order."""
    return pool.iloc[np.sort(np.random.default_rng(seed).permutation(len(pool))[:n])].reset_index(drop=True)


def train_point(data: stages.StageData, pool, n: int, seed: int, folder, hint_weight: float = 0.0,
                pseudo_dir=None):
    """The ``SIZE`` student distilled on ``n`` pool clips drawn with ``seed`` by stage 04's own
    training call (the drawn clips keep the pool's order, so all of them is stage 04's run);
    ``hint_weight > 0`` adds the hint loss on the summaries of the teacher of ``pseudo_dir``.
    Returns the training result and the model."""
    from sqa.training import loop

    p = profiles.resolve(PROFILE, "04_distill", {"epochs": None, "batch_size": None, "window_s": None})
    lr = next(float(s["lr"]) for s in profiles.sweep(PROFILE, "04_distill") if s["size"] == SIZE)
    subset = draw(pool, n, seed)
    cfg = loop.TrainConfig(epochs=p["epochs"], lr=lr, batch_size=p["batch_size"], seed=seed, device="auto")
    model = stages.build_model(SIZE, window_s=p["window_s"], profile=PROFILE, seed=seed)
    run = runs.Run(PROFILE, "bench", folder.name, folder, {})
    hints = stages.pool_hints(PROFILE, data, subset, pseudo_dir, cfg) if hint_weight else None
    return stages.fit(run, model, data, cfg, subset, p["window_s"], target="pseudo_mos", hints=hints,
                      hint_weight=hint_weight)


def labels_fingerprint(subset, dev) -> str:
    """What a point learned from: the training clips' pseudo-labels and the dev clips' labels (which
    choose its best epoch), every digit."""
    text = subset[["utt_id", "pseudo_mos"]].to_csv(index=False) + dev[["utt_id", "mos"]].to_csv(index=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def student(data: stages.StageData, pool, test, n: int, seed: int, folder: Path, hint_weight: float = 0.0,
            pseudo_dir=None) -> dict:
    """:func:`train_point`, kept in ``folder`` once trained: its best dev PCC and epoch and its
    ``preds`` on ``test``. A folder made with other labels (or that does not say which,
    ``labels.txt``) is trained again from scratch, and says so."""
    done, preds_file, seen = folder / "student.json", folder / "test_predictions.csv", folder / "labels.txt"
    labels = labels_fingerprint(draw(pool, n, seed), data.split("dev"))
    if folder.exists() and (not seen.is_file() or seen.read_text() != labels):
        print(f"{folder}: made with other labels than the current ones (or does not say which); training again",
              flush=True)
        shutil.rmtree(folder)
    if not done.is_file():  # labels.txt comes first: an interrupted training of the same labels resumes
        atomic.write_text(seen, labels)
        result, model = train_point(data, pool, n, seed, folder, hint_weight=hint_weight, pseudo_dir=pseudo_dir)
        preds = predictions.predict(model, test, data.roots, desc="held-out test")[["utt_id", "pred"]]
        atomic.write_text(preds_file, preds.to_csv(index=False))
        atomic.write_json(done, {"best_dev_pcc": result.best_dev_pcc, "best_epoch": result.best_epoch})
    return {**json.loads(done.read_text()), "preds": pd.read_csv(preds_file)}


def scaling_point(data: stages.StageData, pool, test, pseudo_dir, n: int, seed: int, hint_weight: float) -> dict:
    """The point (clips ``n``, ``seed``, ``hint_weight``): best dev PCC and epoch, test predictions
    and the test agreement (overall) that they give."""
    r = student(data, pool, test, n, seed, point_folder(n, seed, hint_weight), hint_weight, pseudo_dir)
    return {**r, **agreement_of(r["preds"], test)["overall"]}


def point_folder(n: int, seed: int, hint_weight: float) -> Path:
    return paths.profile_dir(PROFILE) / "bench" / "students" / f"clips-{n}_seed-{seed}_hint-{hint_weight:g}"


def trend(points: list[dict]) -> dict:
    """Fisher's z of the test PCC as a least-squares line in log2(clips); the clips where it reaches
    each of ``TARGETS`` (None where the line does not rise); None with fewer than two pool sizes."""
    if len({p["clips"] for p in points}) < 2:
        return None
    x = np.log2([p["clips"] for p in points])
    z = np.arctanh([p["pcc"]["estimate"] for p in points])
    slope, intercept = np.polyfit(x, z, 1)
    reach = {f"{t:g}": float(2 ** ((np.arctanh(t) - intercept) / slope)) if slope > 0 else None for t in TARGETS}
    return {"z_per_doubling": float(slope), "z_intercept": float(intercept), "clips_to_reach": reach}


def results_file(hint_weight: float):
    name = "release_scaling" + (f"_hint-{hint_weight:g}" if hint_weight else "")
    return results_dir() / f"{name}.json"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, nargs="+", default=list(CLIPS))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--hint-weights", type=float, nargs="+", default=list(HINT_WEIGHTS))
    args = parser.parse_args(argv)
    pseudo_dir = runs.latest(PROFILE, "03_pseudo_labels")
    test, data = heldout_test(PROFILE, stages.manifest_of(pseudo_dir))
    pool = stages.pseudo_frame(data, pseudo_dir)
    if max(args.clips) > len(pool):
        raise SystemExit(f"--clips {max(args.clips)}: the pool has {len(pool)} pseudo-labeled clips")
    return [series(data, pool, test, pseudo_dir, args.clips, args.seeds, w) for w in args.hint_weights]


def series(data: stages.StageData, pool, test, pseudo_dir, clips: list[int], seeds: list[int],
           hint_weight: float) -> dict:
    """Every (clips, seed) point with ``hint_weight``, written to :func:`results_file`."""
    points = []
    for n in clips:
        for seed in seeds:
            overall = {k: v for k, v in scaling_point(data, pool, test, pseudo_dir, n, seed, hint_weight).items()
                       if k != "preds"}
            points.append({"clips": n, "seed": seed, **overall})
            print(f"hint weight {hint_weight:g}, {n} clips, seed {seed}: PCC {overall['pcc']['estimate']:.3f}",
                  flush=True)
    points.sort(key=lambda p: (p["clips"], p["seed"]))
    summary = {}
    for n in sorted(clips):
        pcc = [p["pcc"]["estimate"] for p in points if p["clips"] == n]
        summary[str(n)] = {"seeds": len(pcc), "pcc_mean": float(np.mean(pcc)),
                           "pcc_sd": float(np.std(pcc, ddof=1)) if len(pcc) > 1 else None}
    result = {"machine": machine(), "profile": PROFILE, "size": SIZE, "hint_weight": hint_weight,
              "pseudo_labels": pseudo_dir.name, "pool_clips": int(len(pool)), "n_test": int(len(test)),
              "points": points, "by_clips": summary, "trend": trend(points)}
    atomic.write_json(results_file(hint_weight), result)
    return result


if __name__ == "__main__":
    print(json.dumps({"written": [str(results_file(r["hint_weight"])) for r in main(sys.argv[1:])]}))
