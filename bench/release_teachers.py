"""Benchmark: the release profile's two candidate teachers on the held-out test clips.

The shipped students learned from the released DistillMOS. The alternative teacher is the
ensemble (:class:`sqa.models.ensemble.EnsembleTeacher`: the unweighted mean of DistillMOS,
DNSMOS P.808, DNSMOS P.835 OVRL and the MFCC-SQA head, a rule fixed in advance). The ensemble
scores the release profile's held-out test clips through the labeling engine, placed as stage 03
places it (resumable, kept in ``outputs/release/bench/ensemble_heldout``); then, with the
clustered bootstrap CIs of :mod:`bench.release_models`, this reports how the two teachers agree
and how every shipped student agrees with the ensemble it never saw.

Writes ``bench/results/release_teachers.json``.

    python -m bench.release_teachers
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402

from sqa import atomic, paths, pretrained  # noqa: E402
from sqa.models import checkpoint  # noqa: E402
from sqa.models.ensemble import MEMBERS, EnsembleTeacher  # noqa: E402
from sqa.training.pseudo_labels import placement, pseudo_label  # noqa: E402

from .common import machine, results_dir  # noqa: E402
from .release_models import _ci, agreement, heldout_test  # noqa: E402

PROFILE = "release"


def ensemble_scores(clips, data, folder: str, workers: int = 0):
    """The ensemble's score of every clip of ``clips`` (a Series by utt_id), labeled as stage 03
    labels (resumable, in ``outputs/release/bench/<folder>``); a clip that fails stops the benchmark."""
    out = paths.profile_dir(PROFILE) / "bench" / folder
    result = pseudo_label(EnsembleTeacher(), clips, data.roots, out, batch_size=4, shard_size=32,
                          **placement("auto", workers))
    if result.n_failed:
        raise SystemExit(f"the ensemble failed on {result.n_failed} clips of {out}: {result.failures}")
    return result.labels.set_index("utt_id")["pseudo_mos"]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=0, help="scoring processes; 0: one per CPU core on the "
                        "CPU, one per GPU on GPUs (as stage 03 places them)")
    args = parser.parse_args(argv)
    test, data = heldout_test(PROFILE)
    scores = ensemble_scores(test, data, "ensemble_heldout", args.workers)
    both = test.assign(pred=test["mos"], mos=test["utt_id"].map(scores), group="all")
    rows = {"distillmos (the shipped students' teacher)": {"agreement": {"overall": _ci(both, "group")["all"]}}}
    against_ensemble = test.assign(mos=both["mos"])
    for name in pretrained.NAMES:
        model, _ = checkpoint.load(pretrained.weights_file(name))
        rows[name] = {"agreement": agreement(model.eval(), against_ensemble, data)}
        print(f"{name} vs the ensemble: PCC {rows[name]['agreement']['overall']['pcc']['estimate']:.3f}", flush=True)
    report = {"machine": machine(), "profile": PROFILE, "manifest": str(data.source.name), "n_test": int(len(test)),
              "ensemble_members": list(MEMBERS), "reference": "ensemble", "models": rows}
    atomic.write_json(results_dir() / "release_teachers.json", report)
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
    print(json.dumps({"written": str(results_dir() / "release_teachers.json")}))
