"""End to end: ``make demo`` (``sqa reproduce --profile demo --quick``) timed per stage from nothing.

Runs every stage of the quick demo into a fresh outputs folder (the demo corpus is built too), the
same way the CLI does, and writes ``bench/results/demo_e2e.json``: wall seconds per stage run and
in total, the machine's load, and each stage's point as the runs' own files state it — the
teacher against the released DistillMOS on the demo test sets (06), the distilled student against
the labeled-only one of the same size (04), the pruned teacher against its target (05), and that
06 wrote its tables and figures. Protocol: an otherwise idle machine, the environment created.

    python -m bench.demo_e2e [--outputs DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from bench.common import machine, results_dir

LIMIT_S = 15 * 60


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def _pcc(metrics: dict) -> float:
    """Clip-weighted mean test PCC of a training stage's ``metrics.json``."""
    return metrics["test_mean"]["pcc"]["weighted"]


def stage_points(runs: list[dict]) -> dict:
    """What each stage shows, read from the metrics.json of its runs."""
    by = {}
    for r in runs:
        by.setdefault(r["stage"], []).append(r)
    students = {(m := _metrics(Path(r["run_dir"])))["mode"]: m for r in by["04_distill"]}
    prune = _metrics(Path(by["05_prune"][0]["run_dir"]))
    analysis_dir = Path(by["06_analysis"][0]["run_dir"])
    models = _metrics(analysis_dir)["models"]
    pcc = {label: m["pcc"]["weighted"]["estimate"] for label, m in models.items()}
    teacher = next(label for label, m in models.items() if m["kind"] == "teacher")
    return {
        "teacher_vs_released_distillmos": {"teacher": pcc[teacher], "distillmos": pcc["distillmos"],
                                           "teacher_wins": pcc[teacher] > pcc["distillmos"]},
        "student_size": students["distill"]["size"],
        "distilled_vs_labeled_only": {mode: _pcc(m) for mode, m in students.items()}
        | {"distilled_wins": _pcc(students["distill"]) > _pcc(students["labeled-only"])},
        "pruning": {"target": prune["target_params"], "params": prune["params_after"],
                    "within_3pct": abs(prune["params_after"] / prune["target_params"] - 1) <= 0.03},
        "analysis_files": sorted(p.name for p in analysis_dir.glob("results_*.csv")),
        "test_pcc_weighted": pcc,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--outputs", type=Path, default=None, help="outputs folder (default: a fresh temporary one)")
    args = ap.parse_args(argv)
    out = args.outputs or Path(tempfile.mkdtemp(prefix="sqa-demo-e2e-"))
    os.environ["SQA_OUTPUTS"] = str(out)
    from sqa import cli
    from sqa.pipeline import notebooks, profiles, progress

    timer = progress.StageTimer()
    runs = []
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    for stage in notebooks.stages():
        for overrides in profiles.sweep("demo", stage, quick=True):
            t = time.perf_counter()
            run_dir = cli.run_stage(stage, [("profile", "demo"), *overrides.items()], quiet=True, timer=timer)
            runs.append({"stage": stage, "overrides": overrides, "seconds": round(time.perf_counter() - t, 1),
                         "run_dir": str(run_dir)})
    total = time.perf_counter() - t0
    result = {"command": "sqa reproduce --profile demo --quick", "machine": machine(),
              "load_avg_1min_before": load_before, "total_s": round(total, 1), "limit_s": LIMIT_S,
              "within_limit": total <= LIMIT_S, "stages": runs, "points": stage_points(runs)}
    path = results_dir() / "demo_e2e.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(timer.summary(), file=sys.stderr)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
