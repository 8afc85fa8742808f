"""Benchmark: the demo profile's stage budgets for pseudo-labeling (03) and distilling (04).

Times, on the demo corpora and the demo teacher that ``make demo`` made (the latest
``02_teacher`` run of the demo profile):

- **pseudo-labeling** the whole unlabeled pool (``sqa.training.pseudo_labels.pseudo_label``, what notebook 03
  runs), once per ``--workers`` setting (1: in-process with every torch thread; N: N processes of
  one thread each), each into a fresh folder;
- **distilling** one student (``--size``, default 250k) on those pseudo-labels with the demo
  profile's defaults (``sqa.pipeline.stages.fit_student``, what notebook 04 runs), plus its evaluation
  on every test corpus (``predict_splits`` + ``test_report``).

Writes ``bench/results/distill_demo.json`` with seconds, clips/s, the test PCC reached and the
budgets (issue: pseudo-labeling ≤ 6 min, one 250k student ≤ 5 min on 2 cores).

    python -m bench.distill [--workers 1 2] [--size 250k] [--epochs N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from sqa import atomic
from sqa.models import count_params
from sqa.pipeline import profiles, runs, stages
from sqa.training import loop, pseudo_labels

from .common import machine, results_dir

PROFILE = "demo"
BUDGET_S = {"pseudo_label": 6 * 60, "distill": 5 * 60}


def _pseudo_label(teacher, pool, roots, workers: int, out: Path) -> dict:
    t0 = time.perf_counter()
    labels = pseudo_labels.pseudo_label(teacher, pool, roots, out, num_workers=workers)
    seconds = time.perf_counter() - t0
    return {"workers": workers, "seconds": round(seconds, 1), "clips": labels.n_ok, "failed": labels.n_failed,
            "clips_per_s": round(labels.n_ok / seconds, 2)}


def _distill(data, pseudo_dir: Path, size: str, epochs: int, out: Path) -> dict:
    p = profiles.STAGE_DEFAULTS["04_distill"][PROFILE]
    epochs = epochs or p["epochs"]
    run = runs.Run(PROFILE, "04_distill", "bench", out, {})
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    model = stages.build_model(size, window_s=p["window_s"], profile=PROFILE, seed=0)
    cfg = loop.TrainConfig(epochs=epochs, lr=p["lr"], batch_size=p["batch_size"], seed=0)
    result, model = stages.fit_student(run, model, data, cfg, "distill", 0.2, pseudo_dir, p["window_s"])
    t_fit = time.perf_counter() - t0
    table, summary = stages.test_report(stages.predict_splits(model, data))
    seconds = time.perf_counter() - t0
    return {"size": size, "params": count_params(model), "epochs": epochs, "batch_size": p["batch_size"],
            "seconds_training": round(t_fit, 1), "seconds": round(seconds, 1),
            "test_pcc_weighted": summary["pcc"]["weighted"], "best_epoch": result.best_epoch}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="pseudo-labeling processes to time")
    ap.add_argument("--size", default="250k", help="student size to distill")
    ap.add_argument("--epochs", type=int, default=0, help="distillation epochs (0: the demo profile's default)")
    args = ap.parse_args(argv)
    try:
        teacher, teacher_dir = stages.load_teacher(PROFILE, "")
    except FileNotFoundError as e:
        raise SystemExit(f"bench.distill needs the demo teacher: run `make demo` (stages 01-02) first ({e})")
    data = stages.load_data(PROFILE, stages.manifest_of(teacher_dir))
    pool = stages.pool_frame(data, "unlabeled")
    result = {"machine": machine(), "profile": PROFILE, "teacher_run": str(teacher_dir), "pool_clips": len(pool),
              "budget_s": BUDGET_S, "pseudo_label": []}
    with tempfile.TemporaryDirectory(prefix="sqa-bench-distill-") as tmp:
        tmp = Path(tmp)
        for workers in args.workers:
            result["pseudo_label"].append(_pseudo_label(teacher, pool, data.roots, workers, tmp / f"pl-{workers}"))
            print(result["pseudo_label"][-1], flush=True)
        pseudo_dir = tmp / "pseudo-run"  # laid out like a 03 run folder: <run>/pseudo/
        pseudo_dir.mkdir()
        (tmp / f"pl-{args.workers[-1]}").rename(pseudo_dir / "pseudo")
        result["distill"] = _distill(data, pseudo_dir, args.size, args.epochs, tmp / "distill")
        print(result["distill"], flush=True)
    best = min(r["seconds"] for r in result["pseudo_label"])
    result["within_budget"] = {"pseudo_label": best <= BUDGET_S["pseudo_label"],
                               "distill": result["distill"]["seconds"] <= BUDGET_S["distill"]}
    atomic.write_json(results_dir() / f"distill_{PROFILE}.json", result)
    return result


if __name__ == "__main__":
    main()
