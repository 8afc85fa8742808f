"""Benchmark: students distilled from the ensemble teacher, beside students distilled from DistillMOS.

The release recipe has two candidate teachers. The shipped students learned from the released
DistillMOS; this distils the same 250k student from the ensemble (:class:`sqa.models.ensemble.EnsembleTeacher`,
the unweighted mean of four offline models trained on human MOS) at a scale a CPU affords. The
ensemble labels, through the labeling engine (resumable, ``outputs/release/bench/ensemble_*``):
the 1,250 pool clips that :mod:`bench.release_scaling` draws with seed 0, the held-out dev clips
(they choose each run's best epoch) and the held-out test clips (:mod:`bench.release_teachers`'s
job). With each initialisation seed, the student is distilled by stage 04's recipe
(:func:`bench.release_scaling.train_point`; no hint loss, the ensemble has no pooled summary) on
those clips twice: from the ensemble's labels and from DistillMOS's. Each student is scored on the
held-out test clips against both teachers (clustered bootstrap 95 % CIs), and per seed the two
students' PCC with each teacher is compared with a paired 95 % CI on the same clips.

Each student's test predictions are kept when it is trained (``outputs/release/bench/ensemble_students``,
:func:`bench.release_scaling.student`), so an interrupted benchmark resumes. Writes
``bench/results/ensemble_students.json``.

    python -m bench.ensemble_students           # seeds 0, 1, 2
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from sqa import atomic, paths  # noqa: E402
from sqa.pipeline import runs, stages  # noqa: E402

from .common import machine, results_dir  # noqa: E402
from .hints import paired  # noqa: E402
from .release_models import _ci, heldout_test  # noqa: E402
from .release_scaling import PROFILE, SIZE, draw, student  # noqa: E402
from .release_teachers import ensemble_scores  # noqa: E402

CLIPS = 1250
SUBSET_SEED = 0
SEEDS = (0, 1, 2)
TEACHERS = ("distillmos", "ensemble")


def relabeled(data: stages.StageData, scores: pd.Series) -> stages.StageData:
    """``data`` with the MOS of every clip in ``scores`` (by utt_id) replaced by that score."""
    found = data.manifest["utt_id"].map(scores)
    return stages.StageData(data.manifest.assign(mos=found.fillna(data.manifest["mos"])), data.roots, data.source)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--workers", type=int, default=0, help="labeling processes (as bench.release_teachers)")
    args = parser.parse_args(argv)
    pseudo_dir = runs.latest(PROFILE, "03_pseudo_labels")
    test, data = heldout_test(PROFILE, stages.manifest_of(pseudo_dir))
    subset = draw(stages.pseudo_frame(data, pseudo_dir), CLIPS, SUBSET_SEED)
    heldout = pd.concat([ensemble_scores(test, data, "ensemble_heldout", args.workers),
                         ensemble_scores(data.split("dev"), data, "ensemble_dev", args.workers)])
    pool = ensemble_scores(subset, data, "ensemble_pool", args.workers)
    setups = {"distillmos": (data, subset),
              "ensemble": (relabeled(data, heldout), subset.assign(pseudo_mos=subset["utt_id"].map(pool)))}
    targets = {"distillmos": test, "ensemble": test.assign(mos=test["utt_id"].map(heldout))}
    points, preds = [], {}
    for seed in args.seeds:
        for teacher, (teacher_data, clips) in setups.items():
            folder = paths.profile_dir(PROFILE) / "bench" / "ensemble_students" / f"teacher-{teacher}_seed-{seed}"
            r = student(teacher_data, clips, test, len(clips), seed, folder)
            preds[teacher, seed] = r["preds"]
            row = {"teacher": teacher, "seed": seed, "best_dev_pcc": r["best_dev_pcc"]}
            for ref, target in targets.items():
                df = target.merge(preds[teacher, seed], on="utt_id", validate="1:1")
                row[f"vs_{ref}"] = _ci(df.assign(group="all"), "group")["all"]
            points.append(row)
            print(f"{teacher} student, seed {seed}: PCC with distillmos {row['vs_distillmos']['pcc']['estimate']:.3f}, "
                  f"with the ensemble {row['vs_ensemble']['pcc']['estimate']:.3f}", flush=True)
    differences = [{"seed": s, **{f"vs_{ref}": paired(target, preds["ensemble", s], preds["distillmos", s])
                                 for ref, target in targets.items()}} for s in args.seeds]
    summary = {t: {f"vs_{ref}": {"pcc_mean": float(np.mean(v)), "pcc_sd": float(np.std(v, ddof=1)) if len(v) > 1
                                 else None}
                   for ref in targets
                   for v in [[p[f"vs_{ref}"]["pcc"]["estimate"] for p in points if p["teacher"] == t]]}
               for t in TEACHERS}
    result = {"machine": machine(), "profile": PROFILE, "size": SIZE, "clips": CLIPS, "subset_seed": SUBSET_SEED,
              "pseudo_labels": pseudo_dir.name, "n_dev": int(len(data.split("dev"))), "n_test": int(len(test)),
              "points": points, "ensemble_minus_distillmos_student": differences, "by_teacher": summary}
    atomic.write_json(results_dir() / "ensemble_students.json", result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
    print(json.dumps({"written": str(results_dir() / "ensemble_students.json")}))
