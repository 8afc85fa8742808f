"""Benchmark: the shipped students (``sqa/weights``) against their teacher, the released DistillMOS.

Agreement: every shipped student scores the held-out test clips of the release profile's latest
stage-01 run (the ``release-heldout`` pool: voices, sentences and degradation seeds used nowhere
in training), against the teacher's scores of the same clips: PCC, SRCC and RMSE with 95 %
percentile bootstrap CIs that resample whole clean files and conditions
(:func:`sqa.analysis.metrics.bootstrap_ci`), overall and per degradation family (a clip counts in
every family of its chain; ``clean``: no degradation).

Speed: one 4-s clip at batch 1 on the CPU with 1 and 2 threads, median of repeated calls after a
warm-up (``bench.models.time_calls``); DistillMOS as users run it (``sqa.models.baselines``:
7.68-s windows), each student as shipped (4-s window).

Writes ``bench/results/release_models.json`` (with the release build's report: voices, held-out
voices, human recording files, pool sizes).

    python -m bench.release_models
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from sqa import atomic, pretrained  # noqa: E402
from sqa.analysis import metrics, predictions  # noqa: E402
from sqa.models import baselines, checkpoint  # noqa: E402
from sqa.pipeline import stages  # noqa: E402
from sqa.synth import degradations, release_corpus  # noqa: E402

from .common import machine, results_dir  # noqa: E402
from .models import FULL, clips, threads, time_calls  # noqa: E402

THREADS = (1, 2)
CLIP_S = 4.0
METRICS = ("pcc", "srcc", "rmse")
N_BOOT = 1000


def families(chain: str) -> list[str]:
    """The degradation families of a recorded chain (``["clean"]`` for none)."""
    steps = degradations.Chain.from_json(chain).steps
    return sorted({s.family for s in steps}) or ["clean"]


def heldout_test(profile: str = "release", manifest_run: str = "") -> tuple[pd.DataFrame, stages.StageData]:
    """The held-out test clips of the latest (or the named) stage-01 run, and its stage data."""
    data = stages.load_data(profile, manifest_run)
    test = data.split("test")
    test = test[test["corpus"] == release_corpus.HELDOUT].reset_index(drop=True)
    if test.empty:
        raise SystemExit(f"the latest {profile} stage-01 run has no {release_corpus.HELDOUT} test clips: "
                         f"run `sqa reproduce --profile {profile}` first")
    return test, data


def _ci(df: pd.DataFrame, by: str) -> dict:
    out = {}
    for m in METRICS:
        ci = metrics.bootstrap_ci(df, m, n_boot=N_BOOT, by=by)
        for _, r in ci["per_corpus"].iterrows():
            out.setdefault(r[by], {"n": int(r["n"])})[m] = {"estimate": float(r["estimate"]), "lo": float(r["lo"]),
                                                           "hi": float(r["hi"])}
    return out


def agreement(model: torch.nn.Module, test: pd.DataFrame, data: stages.StageData) -> dict:
    """Scores against the teacher on the held-out test clips: overall and per degradation family."""
    return agreement_of(predictions.predict(model, test, data.roots, desc="held-out test"), test)


def agreement_of(preds: pd.DataFrame, test: pd.DataFrame) -> dict:
    """:func:`agreement` of predictions already made (``utt_id``, ``pred``; one per test clip)."""
    df = test[["utt_id", "corpus", "mos", "source_id", "sys_id", "chain"]].merge(preds[["utt_id", "pred"]],
                                                                                 on="utt_id", validate="1:1")
    overall = _ci(df.assign(group="all"), "group")["all"]
    per_family = df.assign(family=df["chain"].map(families)).explode("family")
    per_family["utt_id"] = per_family["utt_id"] + "#" + per_family["family"]  # a clip once per family
    return {"overall": overall, "per_family": _ci(per_family, "family")}


def speed(predict) -> dict:
    wave = clips(CLIP_S, 1)[0]
    out = {}
    for n in THREADS:
        with threads(n), torch.inference_mode():
            t = time_calls(lambda: predict(wave), FULL)
        out[str(n)] = {**t, "ms_per_clip": 1000 * t["median_s"]}
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="release")
    args = parser.parse_args(argv)
    test, data = heldout_test(args.profile)
    teacher = baselines.get("distillmos")
    rows = {"distillmos": {"params": teacher.n_params, "speed": speed(lambda w: teacher.predict([w]))}}
    for name in pretrained.NAMES:
        model, _ = checkpoint.load(pretrained.weights_file(name))
        model.eval()
        x = lambda w, m=model: m(torch.from_numpy(w)[None])  # noqa: E731
        rows[name] = {"params": int(sum(p.numel() for p in model.parameters())), "speed": speed(x),
                      "agreement": agreement(model, test, data)}
        rows[name]["speedup_vs_distillmos"] = {
            n: rows["distillmos"]["speed"][n]["ms_per_clip"] / rows[name]["speed"][n]["ms_per_clip"] for n in
            map(str, THREADS)}
        a = rows[name]["agreement"]["overall"]
        print(f"{name}: PCC {a['pcc']['estimate']:.3f} [{a['pcc']['lo']:.3f}, {a['pcc']['hi']:.3f}], "
              f"{rows[name]['speed']['1']['ms_per_clip']:.1f} ms (1 thread), "
              f"{rows[name]['speedup_vs_distillmos']['1']:.1f}x DistillMOS", flush=True)
    build = json.loads((data.roots[release_corpus.HELDOUT].parent / "release_report.json").read_text())
    result = {"machine": machine(), "profile": args.profile, "manifest": str(data.source.name), "build": build,
              "n_test": int(len(test)), "n_boot": N_BOOT, "clip_s": CLIP_S, "models": rows,
              "teacher_test_label_mean": float(np.mean(test["mos"]))}
    atomic.write_json(results_dir() / "release_models.json", result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
    print(json.dumps({"written": str(results_dir() / "release_models.json")}))
