"""Benchmark: what the hint loss is worth to a release student, and which weight the release uses.

The 250k student is distilled by stage 04's training call with the release recipe
(:func:`bench.release_scaling.train_point`) on a random 1,250-clip subset of the release pool,
with hint weights 0 (plain distillation), 0.3 and 1 (:mod:`sqa.training.hints`). A seed
draws the subset and the initialisation, the same for every weight, so the runs of one seed are
paired. Each run keeps its best epoch by dev PCC (held-out dev clips) and is scored on the
held-out test clips against the teacher. The release default is the weight with the best mean
dev PCC; test clips never choose. Per weight > 0 and seed, the test PCC difference to weight 0
has a paired clustered-bootstrap 95 % CI on the same clips (:func:`sqa.analysis.metrics.paired_bootstrap_diff`).

Each point is kept when finished (:func:`bench.release_scaling.student`), so an interrupted
benchmark resumes. Writes ``bench/results/hints.json``.

    python -m bench.hints                   # weights 0, 0.3, 1 x seeds 0, 1, 2 on 1,250 clips
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from sqa import atomic  # noqa: E402
from sqa.analysis import metrics  # noqa: E402
from sqa.pipeline import runs, stages  # noqa: E402

from .common import machine, results_dir  # noqa: E402
from .release_models import heldout_test  # noqa: E402
from .release_scaling import PROFILE, SIZE, scaling_point  # noqa: E402

WEIGHTS = (0.0, 0.3, 1.0)
SEEDS = (0, 1, 2)
CLIPS = 1250


def paired(test: pd.DataFrame, a: pd.DataFrame, b: pd.DataFrame) -> dict:
    """Test PCC of predictions ``a`` minus that of ``b`` on the same clips, paired 95 % CI."""
    wide = test[["utt_id", "corpus", "mos", "source_id", "sys_id"]].merge(a, on="utt_id").merge(
        b, on="utt_id", suffixes=("_a", "_b"), validate="1:1")
    d = metrics.paired_bootstrap_diff(wide, "pred_a", "pred_b", "pcc", n_boot=1000, seed=0)["weighted"]
    return {"estimate": float(d["estimate"]), "lo": float(d["lo"]), "hi": float(d["hi"])}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=float, nargs="+", default=list(WEIGHTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--clips", type=int, default=CLIPS)
    args = parser.parse_args(argv)
    if 0.0 not in args.weights:
        raise SystemExit("--weights must include 0 (plain distillation, what the others are compared with)")
    pseudo_dir = runs.latest(PROFILE, "03_pseudo_labels")
    test, data = heldout_test(PROFILE, stages.manifest_of(pseudo_dir))
    pool = stages.pseudo_frame(data, pseudo_dir)
    runs_by = {(w, s): scaling_point(data, pool, test, pseudo_dir, args.clips, s, w)
               for s in args.seeds for w in args.weights}
    points = []
    for (w, s), r in sorted(runs_by.items()):
        row = {"weight": w, "seed": s, "best_dev_pcc": r["best_dev_pcc"], "best_epoch": r["best_epoch"],
               "test": {m: r[m] for m in ("pcc", "srcc", "rmse")}}
        if w:
            row["test_pcc_minus_plain"] = paired(test, r["preds"], runs_by[(0.0, s)]["preds"])
        points.append(row)
        print(f"hint {w:g}, seed {s}: dev PCC {r['best_dev_pcc']:.3f}, test PCC {r['pcc']['estimate']:.3f}", flush=True)
    by_weight = {}
    for w in sorted(args.weights):
        rows = [p for p in points if p["weight"] == w]
        by_weight[f"{w:g}"] = {"seeds": len(rows), "dev_pcc_mean": float(np.mean([p["best_dev_pcc"] for p in rows])),
                               "test_pcc_mean": float(np.mean([p["test"]["pcc"]["estimate"] for p in rows])),
                               "test_pcc_sd": float(np.std([p["test"]["pcc"]["estimate"] for p in rows], ddof=1))
                               if len(rows) > 1 else None}
    chosen = max(by_weight, key=lambda w: by_weight[w]["dev_pcc_mean"])
    result = {"machine": machine(), "profile": PROFILE, "size": SIZE, "clips": args.clips,
              "pseudo_labels": pseudo_dir.name, "n_test": int(len(test)), "points": points, "by_weight": by_weight,
              "chosen_by_dev": chosen}
    atomic.write_json(results_dir() / "hints.json", result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
    print(json.dumps({"written": str(results_dir() / "hints.json")}))
