"""The whole notebook chain in the smoke profile, executed with papermill through `sqa run`.

Asserts on files and metrics the stages write, not on notebook internals.
"""

import json
import subprocess
import sys

import pandas as pd
import pytest

from sqa.data import manifest
from sqa.pipeline import notebooks, runs

pytestmark = pytest.mark.slow


def sqa_run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "sqa.cli", "run", *args, "-q"], capture_output=True,
                          text=True, env=env, timeout=900)


def sqa_run_streaming(*args, env=None) -> tuple[subprocess.CompletedProcess, list[tuple[bool, str]]]:
    """`sqa run` with its progress streaming (stdout and stderr merged); each line with whether the
    stage was still running when the line arrived."""
    proc = subprocess.Popen([sys.executable, "-m", "sqa.cli", "run", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, bufsize=1)
    lines = [(proc.poll() is None, line) for line in iter(proc.stdout.readline, "")]
    proc.wait(timeout=900)
    text = "".join(line for _, line in lines)
    return subprocess.CompletedProcess(proc.args, proc.returncode, text, text), lines


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Run every stage once (smoke profile) into a private outputs folder."""
    import os

    out = tmp_path_factory.mktemp("outputs")
    env = {**os.environ, "SQA_OUTPUTS": str(out)}
    results = {}
    for stage in notebooks.stages():
        if stage == "02_teacher":
            res, results["02_teacher_lines"] = sqa_run_streaming(stage, "-p", "profile", "smoke", env=env)
        else:
            res = sqa_run(stage, "-p", "profile", "smoke", env=env)
        results[stage] = res
        assert res.returncode == 0, f"{stage} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return out, results


def run_dir(out, stage):
    rows = [json.loads(line) for line in (out / "registry.jsonl").read_text().splitlines()]
    return out / [r for r in rows if r["stage"] == stage][-1]["dir"].removeprefix("$SQA_OUTPUTS/")


def test_01_writes_a_validated_manifest_and_statistics(chain):
    out, _ = chain
    d = run_dir(out, "01_merge_datasets")
    df = manifest.read(d / "manifest.parquet")
    assert set(df["split"]) >= {"train", "dev", "test", "unlabeled"}
    assert df["corpus"].nunique() >= 5
    stats = pd.read_csv(d / "corpus_stats.csv")
    assert stats["clips"].sum() == len(df)
    assert (d / "mos_histograms.png").stat().st_size > 1000
    assert (d / "notebook.ipynb").is_file() and (d / "env.json").is_file()
    m = json.loads((d / "metrics.json").read_text())
    assert m["clips"] == len(df) and "skipped_by_reason" in m


def test_cli_streams_a_stage_progress_while_it_runs(chain):
    """A line printed inside the running notebook (an epoch's loss and dev PCC) reaches the
    terminal before the stage ends; the stage ends with a line giving its wall time."""
    _, results = chain
    lines = results["02_teacher_lines"]
    epochs = [(alive, line) for alive, line in lines if "epoch 1/" in line and "dev PCC" in line]
    assert epochs, "no epoch line reached stderr:\n" + "".join(line for _, line in lines)[-3000:]
    assert epochs[0][0], "the epoch line arrived only after the stage had ended"
    done = [line for _, line in lines if line.startswith("== 02_teacher done in ")]
    assert len(done) == 1 and "-> " in done[0]


def test_typo_in_a_parameter_fails_naming_it(tmp_path):
    res = sqa_run("01_merge_datasets", "-p", "profle", "smoke")
    assert res.returncode == 2
    assert "unknown parameter 'profle'" in res.stderr and "did you mean 'profile'" in res.stderr


def test_papermill_from_another_folder_writes_to_the_same_outputs(chain, tmp_path):
    import os

    out, _ = chain
    env = {**os.environ, "SQA_OUTPUTS": str(out)}
    nb = notebooks.path("01_merge_datasets")
    res = subprocess.run([sys.executable, "-m", "papermill", str(nb), str(tmp_path / "o.ipynb"),
                          "-p", "profile", "smoke", "-p", "seed", "0", "--no-progress-bar"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (out / "smoke" / "01_merge_datasets" / "main" / "manifest.parquet").is_file()
    assert not (tmp_path / "outputs").exists()


def test_papermill_typo_is_rejected_by_the_notebook(tmp_path):
    nb = notebooks.path("01_merge_datasets")
    res = subprocess.run([sys.executable, "-m", "papermill", str(nb), str(tmp_path / "o.ipynb"),
                          "-p", "profle", "smoke", "--no-progress-bar"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert res.returncode != 0
    assert "unknown parameter 'profle'" in (res.stdout + res.stderr)
    assert runs.injected_names({"In": ['# Parameters\nprofle = "smoke"\n']}) == ["profle"]


def test_02_trains_the_xlsr_path_and_writes_a_rebuildable_teacher(chain):
    from sqa.models import checkpoint

    out, _ = chain
    d = run_dir(out, "02_teacher")
    assert d.name == "teacher-xlsr-tiny-l2_seed-0"
    model, info = checkpoint.load(d / "model.safetensors")
    assert info.arch == "xlsr-teacher" and info.config["layers"] == [2]
    preds = pd.read_csv(d / "predictions.csv")
    assert set(preds["split"]) == {"dev", "test"} and preds["pred"].between(1, 5).all()
    m = json.loads((d / "metrics.json").read_text())
    assert set(m["test"]) == {"demo-noise", "demo-reverb", "demo-codec", "demo-loss", "demo-mixed"}
    assert m["best_epoch"] >= 1 and "init" in m
    assert (d / "training" / "train_log.csv").is_file() and (d / "learning_curve.png").is_file()
    params = json.loads((d / "params.json").read_text())
    assert params["inputs"]["manifest"].endswith("01_merge_datasets/main")


def test_03_labels_every_pool_clip_once_and_matches_the_teacher_on_dev(chain):
    out, _ = chain
    d = run_dir(out, "03_pseudo_labels")
    labels = pd.read_parquet(d / "pseudo" / "pseudo_labels.parquet")
    pool = manifest.read(run_dir(out, "01_merge_datasets") / "manifest.parquet").query("split == 'unlabeled'")
    assert sorted(labels["utt_id"]) == sorted(pool["utt_id"])
    m = json.loads((d / "metrics.json").read_text())
    assert m["dev_check"]["matches"] and m["n_failed"] == 0 and m["oracle"]["available"]
    assert (d / "pseudo_hist.png").is_file()


def test_04_distills_and_the_labeled_only_baseline_lands_in_its_own_run(chain):
    import os

    out, _ = chain
    env = {**os.environ, "SQA_OUTPUTS": str(out)}
    res = sqa_run("04_distill", "-p", "profile", "smoke", "-p", "size", "25k", "-p", "mode", "labeled-only",
                  env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    runs_04 = {r["tag"]: r for r in runs_registry(out) if r["stage"] == "04_distill"}
    assert {"size-1M_mode-distill_labeled-mix-0.2_seed-0", "size-25k_mode-labeled-only_labeled-mix-0.2_seed-0"} <= set(runs_04)
    for tag, params in (("size-1M_mode-distill_labeled-mix-0.2_seed-0", (900_000, 1_100_000)),
                        ("size-25k_mode-labeled-only_labeled-mix-0.2_seed-0", (22_500, 27_500))):
        m = json.loads((out / "smoke" / "04_distill" / tag / "metrics.json").read_text())
        assert params[0] <= m["params"] <= params[1]
        assert set(m["test"]) == {"demo-noise", "demo-reverb", "demo-codec", "demo-loss", "demo-mixed"}


def test_05_prunes_the_teacher_to_its_target_and_fine_tunes_it(chain):
    from sqa.models import checkpoint

    out, _ = chain
    d = run_dir(out, "05_prune")
    assert d.name == "size-50pct_method-taylor_seed-0"
    m = json.loads((d / "metrics.json").read_text())
    assert abs(m["target_error"]) <= 0.03 and m["params"] < m["params_before"]
    assert m["target_params"] == round(m["params_before"] * 0.5)
    model, info = checkpoint.load(d / "model.safetensors")
    assert info.arch == "pruned-xlsr-teacher" and sum(p.numel() for p in model.parameters()) == m["params"]
    assert set(m["test"]) == {"demo-noise", "demo-reverb", "demo-codec", "demo-loss", "demo-mixed"}
    units = pd.read_csv(d / "kept_units.csv")
    assert (units["kept"] <= units["total"]).all() and (units["kept"] < units["total"]).any()
    assert len(pd.read_csv(d / "prune_history.csv")) >= 1 and (d / "kept_units.png").stat().st_size > 1000


def runs_registry(out):
    return [json.loads(line) for line in (out / "registry.jsonl").read_text().splitlines()]


def test_06_collects_every_run_and_baseline(chain):
    out, _ = chain
    d = run_dir(out, "06_analysis")
    table = pd.read_csv(d / "results_pcc.csv")
    labels = " ".join(table.iloc[:, 0].astype(str))
    assert "teacher" in labels and "distilled 1M" in labels and "pruned 50%" in labels and "mfcc-sqa" in labels
    for fig in ("score_vs_params", "score_vs_throughput", "corpus_heatmap"):
        assert (d / f"{fig}.png").stat().st_size > 1000 and (d / f"{fig}.pdf").is_file()
    assert (d / "results_pcc.md").is_file() and (d / "metrics.json").is_file()
    assert "PESQ-WB" in (d / "notes.md").read_text() and (d / "seeds.csv").is_file()
    assert (d / "comparisons.csv").is_file() and (d / "left_out.csv").is_file()


def test_07_offers_clips_headless(chain):
    """Run All without a listener starts no session, makes up no vote and registers nothing."""
    out, results = chain
    folder = out / "smoke" / "07_listen" / "main"
    assert (folder / "params.json").is_file() and not (folder / "metrics.json").exists()
    assert "07_listen" not in {json.loads(line)["stage"] for line in (out / "registry.jsonl").read_text().splitlines()}
    assert not (folder / "ratings.csv").exists() and (folder / "notebook.ipynb").is_file()
