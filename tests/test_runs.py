import json
import os
import re

import pytest

from sqa import paths
from sqa.pipeline import notebooks, runs
from sqa.pipeline.notebooks import ParameterError

CELL = '''profile: str = "demo"  # smoke | demo | paper
size: str = "1M"  # target size
epochs: int = 3  # passes
lr: float = 1e-3  # learning rate
corpora: list = []  # specs
'''


def test_parse_parameters_reads_types_defaults_and_help():
    p = notebooks.parse_parameters(CELL)
    assert list(p) == ["profile", "size", "epochs", "lr", "corpora"]
    assert (p["epochs"].type, p["epochs"].default, p["epochs"].help) == (int, 3, "passes")


@pytest.mark.parametrize("bad, message", [
    ("x = 3\n", "only `name: type = literal`"),
    ("x: tuple = (1,)\n", "type 'tuple' not in"),
    ("x: int = 2 * y\n", "must be a literal"),
])
def test_parameters_cell_must_be_literal_annotated(bad, message):
    with pytest.raises(ParameterError, match=message):
        notebooks.parse_parameters(bad)


def test_check_names_suggests_the_close_match():
    declared = notebooks.parse_parameters(CELL)
    with pytest.raises(ParameterError, match="unknown parameter 'profle' \\(did you mean 'profile'\\?\\)"):
        notebooks.check_names("04_distill", ["profle"], declared)


def test_values_are_type_checked_and_coerced():
    p = notebooks.parse_parameters(CELL)
    assert notebooks.check_value("s", p["lr"], 1) == 1.0
    assert notebooks.check_value("s", p["size"], 10) == "10"
    with pytest.raises(ParameterError, match="'epochs' must be int, got str 'three'"):
        notebooks.check_value("s", p["epochs"], "three")
    with pytest.raises(ParameterError, match="'epochs' must be int, got bool"):
        notebooks.check_value("s", p["epochs"], True)
    assert notebooks.parse_cli_value(p["corpora"], "a,b") == ["a", "b"]
    assert notebooks.parse_cli_value(p["corpora"], '["a=x"]') == ["a=x"]
    assert notebooks.parse_cli_value(p["lr"], "1e-4") == 1e-4
    with pytest.raises(ParameterError, match="'epochs' must be int, cannot read '1.5'"):
        notebooks.parse_cli_value(p["epochs"], "1.5")


def test_paths_and_tags(outputs):
    assert paths.run_dir("demo", "04_distill", "size-1M seed/0") == outputs / "demo/04_distill/size-1M-seed-0"
    assert runs.make_tag({"size": "1M", "labeled_mix": 0.2, "seed": 0}, ["size", "labeled_mix", "seed"]) \
        == "size-1M_labeled-mix-0.2_seed-0"
    assert runs.make_tag({}, []) == "main"
    assert runs.make_tag({"size": "29%", "method": "taylor"}, ["size", "method"]) == "size-29pct_method-taylor"
    with pytest.raises(ValueError, match="profile='prod'"):
        paths.profile_dir("prod")
    with pytest.raises(ValueError, match="stage='distill'"):
        paths.stage_dir("demo", "distill")
    inside = outputs / "demo" / "x"
    assert paths.portable(inside) == "$SQA_OUTPUTS/demo/x"
    assert paths.resolve_portable(paths.portable(inside)) == inside


def test_start_finish_registry_and_lineage(outputs):
    ns = {"profile": "smoke", "corpora": [], "data_root": "", "dev_frac": 0.2, "test_frac": 0.0, "seed": 3}
    run = runs.start("01_merge_datasets", ns, tag=("seed",))
    assert run.dir == outputs / "smoke/01_merge_datasets/seed-3"
    params = json.loads((run.dir / "params.json").read_text())
    assert params["params"]["dev_frac"] == 0.2 and params["stage"] == "01_merge_datasets"
    env = json.loads((run.dir / "env.json").read_text())
    assert env["packages"]["torch"].startswith("2.") and env["device"]
    with pytest.raises(FileNotFoundError, match="no finished run of 01_merge_datasets"):
        runs.latest("smoke", "01_merge_datasets")
    upstream = outputs / "smoke" / "00_x"
    upstream.mkdir(parents=True)
    run.use_input("upstream", upstream)
    run.finish({"clips": 5})
    assert json.loads((run.dir / "metrics.json").read_text()) == {"clips": 5}
    assert runs.latest("smoke", "01_merge_datasets") == run.dir
    rec = runs.registry("smoke")[-1]
    assert rec["inputs"] == {"upstream": "$SQA_OUTPUTS/smoke/00_x"}
    assert not list(run.dir.glob("*.tmp"))


def test_start_rejects_papermill_injected_typo(outputs):
    ns = {"profile": "smoke", "profle": "smoke",
          "In": ["", '# Parameters\nprofle = "smoke"\n', "run = ..."]}
    with pytest.raises(ParameterError, match="unknown parameter 'profle'"):
        runs.start("01_merge_datasets", ns)


def test_registry_reports_torn_lines(outputs):
    paths.registry_path().parent.mkdir(parents=True)
    paths.registry_path().write_text('{"profile": "demo", "stage": "01_x"}\n{"profile": \n')
    with pytest.raises(ValueError, match="registry.jsonl, line 2: not a JSON record"):
        runs.registry()


def test_reproduce_runs_the_sweeps_or_the_quick_demo(monkeypatch, capsys):
    from sqa import cli
    from sqa.pipeline import notebooks, profiles

    calls = []
    monkeypatch.setattr(cli, "run_stage", lambda stage, pairs, quiet, timer: calls.append((stage, dict(pairs))))
    assert cli.main(["reproduce", "--profile", "demo", "-q"]) == 0
    prune_runs = [p for s, p in calls if s == "05_prune"]
    assert [p["size"] for p in prune_runs] == [o["size"] for o in profiles.SWEEPS["demo"]["05_prune"]]
    assert all(p["profile"] == "demo" for _, p in calls)
    calls.clear()
    assert cli.main(["reproduce", "--profile", "demo", "--quick", "-q"]) == 0
    quick = [(stage, {"profile": "demo", **o}) for stage in notebooks.stages() for o in profiles.QUICK.get(stage, [{}])]
    assert calls == quick
    students = [p for s, p in calls if s == "04_distill"]
    assert {p["mode"] for p in students} == {"distill", "labeled-only"} and len({p["size"] for p in students}) == 1
    assert "stage wall times:" in capsys.readouterr().err


def test_remove_stale_deletes_only_leftover_temporary_files(tmp_path):
    from sqa import atomic

    atomic.write_text(tmp_path / "a" / "kept.wav", "done")
    (tmp_path / "a" / ".kept.wav.x1y2.tmp.wav").write_text("half")
    (tmp_path / ".labels.csv.abc.tmp.csv").write_text("half")
    (tmp_path / "notes.tmp.txt").write_text("not ours: no leading dot")
    assert atomic.remove_stale(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["kept.wav", "notes.tmp.txt"]


def test_stage_timer_prints_a_line_per_stage_with_its_wall_time(tmp_path):
    import io

    from sqa.pipeline import progress

    stream = io.StringIO()
    timer = progress.StageTimer(stream)
    with timer.stage("01_merge_datasets", "profile=smoke") as info:
        info["run_dir"] = tmp_path
    with pytest.raises(RuntimeError), timer.stage("02_teacher"):
        raise RuntimeError("boom")
    lines = stream.getvalue().splitlines()
    assert lines[0] == "== 01_merge_datasets profile=smoke"
    assert lines[1].startswith("== 01_merge_datasets done in 0:00 -> ") and lines[1].endswith(str(tmp_path))
    assert lines[3].startswith("== 02_teacher failed in ")
    assert [s for s, _, _ in timer.finished] == ["01_merge_datasets", "02_teacher"]
    assert "total" in timer.summary() and progress.clock(3725) == "1:02:05" and progress.clock(83.2) == "1:23"


def test_text_bars_only_when_the_cli_asks(monkeypatch):
    import io

    import tqdm.auto
    import tqdm.std

    from sqa.pipeline import progress

    original = tqdm.auto.tqdm
    monkeypatch.setattr(tqdm.auto, "tqdm", original)
    monkeypatch.setattr(tqdm.auto, "trange", tqdm.auto.trange)
    monkeypatch.delenv(progress.ENV, raising=False)
    monkeypatch.delenv("TQDM_MININTERVAL", raising=False)
    progress.text_bars_if_requested()
    assert tqdm.auto.tqdm is original
    with progress.kernel_environment(io.StringIO()):  # not a terminal: fixed width, slow redraws
        assert os.environ[progress.ENV] == "text" and os.environ["TQDM_MININTERVAL"] == str(progress.LOG_INTERVAL_S)
        progress.text_bars_if_requested()
        assert tqdm.auto.tqdm is tqdm.std.tqdm
    assert progress.ENV not in os.environ and "TQDM_MININTERVAL" not in os.environ
# ---------------------------------------------------------------- profile default and validation


def test_zero_reaches_the_code_for_a_parameter_whose_profile_default_is_not_zero(outputs):
    from sqa.training.pruning import pruner

    assert profiles_default("05_prune", "smoke", "finetune_epochs") != 0
    run = runs.start("05_prune", {"profile": "smoke", "finetune_epochs": 0, "steps": None})
    assert run.resolved["finetune_epochs"] == 0
    assert run.resolved["steps"] == profiles_default("05_prune", "smoke", "steps")
    assert pruner.settings("smoke", run.resolved)["finetune_epochs"] == 0
    declared = notebooks.declared("05_prune")
    assert notebooks.parse_cli_value(declared["finetune_epochs"], "0") == 0
    assert notebooks.parse_cli_value(declared["finetune_epochs"], "default") is None
    with pytest.raises(ParameterError, match="'seed' must be int, cannot read 'default'"):
        notebooks.parse_cli_value(declared["seed"], "default")
    with pytest.raises(ParameterError, match="'seed' has no profile default"):
        notebooks.check_value("05_prune", declared["seed"], None)


def profiles_default(stage: str, profile: str, name: str):
    from sqa.pipeline import profiles

    return profiles.STAGE_DEFAULTS[stage][profile][name]


def test_sqa_run_passes_a_zero_to_the_notebook(monkeypatch):
    import papermill

    from sqa import cli

    seen = {}
    monkeypatch.setattr(papermill, "execute_notebook", lambda nb, out, parameters, **kw: seen.update(parameters))
    cli.run_stage("05", [("profile", "smoke"), ("finetune_epochs", "0"), ("steps", "default")], quiet=True)
    assert seen == {"profile": "smoke", "finetune_epochs": 0, "steps": None}


@pytest.mark.parametrize("pairs, message", [
    ([("profile", "foo")], "'profile'='foo' must be one of 'smoke', 'demo', 'paper'"),
    ([("seed", "1"), ("seed", "2")], "parameter 'seed' given more than once"),
    ([("dev_frac", "1.5")], r"'dev_frac'=1.5 must lie in \[0, 1\)"),
    ([("dev_frac", "-1"), ("profile", "prod")], "'profile'='prod' must be one of .*'dev_frac'=-1.0 must lie"),
])
def test_sqa_run_checks_every_parameter_before_the_first_cell(monkeypatch, capsys, pairs, message):
    import papermill

    from sqa import cli

    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **kw: pytest.fail("the notebook started"))
    argv = ["run", "01"] + [x for pair in pairs for x in ("-p", *pair)]
    assert cli.main(argv) == 2
    assert re.search(message, capsys.readouterr().err)


@pytest.mark.parametrize("stage, name, bad", [
    ("04_distill", "mode", "distil"), ("04_distill", "size", "big"), ("04_distill", "labeled_mix", 1.0),
    ("05_prune", "method", "l1"), ("06_analysis", "baselines", ["pesq"]), ("07_listen", "split", "val"),
    ("02_teacher", "lr", 0.0), ("06_analysis", "n_boot", 0),
])
def test_allowed_values_are_declared_once_and_checked(stage, name, bad):
    with pytest.raises(ParameterError, match=f"'{name}'"):
        notebooks.validate(stage, {name: bad})


def test_every_rule_names_a_declared_parameter():
    for stage, rules in notebooks.RULES.items():
        if stage != "*":
            assert set(rules) <= set(notebooks.declared(stage)), stage
    for stage in notebooks.stages():
        notebooks.validate(stage, {})  # every notebook's defaults are allowed


# ---------------------------------------------------------------- identity and lineage


def _finish(run, model_file: bool = True) -> None:
    """Finish a run as its notebook would, with the files stage 06 reads."""
    if model_file:
        (run.dir / "model.safetensors").write_bytes(b"")
        run.path("predictions.csv").write_text("utt_id,corpus,sys_id,mos,pred,split\n")
    run.finish({"params": 1000})


def _chain(teacher_seed: int) -> tuple[runs.Run, runs.Run]:
    """A stage-02 teacher (of the latest manifest) and stage-03 pseudo-labels from it."""
    teacher = runs.start("02_teacher", {"profile": "smoke", "seed": teacher_seed}, tag=("teacher", "seed"))
    teacher.use_input("manifest", runs.latest("smoke", "01_merge_datasets"))
    _finish(teacher)
    pseudo = runs.start("03_pseudo_labels", {"profile": "smoke"}, tag=("pool", "seed"))
    pseudo.use_input("teacher", teacher.dir)
    pseudo.use_input("manifest", runs.latest("smoke", "01_merge_datasets"))
    _finish(pseudo, model_file=False)
    return teacher, pseudo


def _student(mode: str = "distill") -> runs.Run:
    run = runs.start("04_distill", {"profile": "smoke", "size": "50k", "mode": mode},
                     tag=("size", "mode", "labeled_mix", "seed"))
    pseudo = runs.resolve_input("smoke", "03_pseudo_labels", "")
    run.use_input("pseudo_labels", pseudo)
    run.use_input("manifest", runs.latest("smoke", "01_merge_datasets"))
    return run


def test_rerunning_04_after_a_new_teacher_and_pool_does_not_return_the_old_student(outputs, capsys):
    import torch

    from sqa.analysis import tables
    from sqa.training import train_state

    _finish(runs.start("01_merge_datasets", {"profile": "smoke"}), model_file=False)
    _chain(teacher_seed=0)
    old = _student()
    train_state.save_state(old.path("training", train_state.STATE_FILE), {"model": {"w": torch.zeros(1)}})
    _finish(old)
    again = _student()  # same parameters, same inputs: the same run, re-entered (and resumable)
    assert again.dir == old.dir and again.identity == old.identity
    assert train_state.load_state(again.dir / "training") is not None

    new_teacher, new_pseudo = _chain(teacher_seed=1)  # the 03 run that 04 used is replaced
    assert new_pseudo.dir.name.startswith("pool-unlabeled_seed-0_id-")
    new = _student()
    assert new.dir != old.dir and not (new.dir / "model.safetensors").exists()
    assert "input pseudo_run" in capsys.readouterr().err
    assert json.loads((new.dir / "params.json").read_text())["identity_record"]["inputs"]["pseudo_run"] \
        == new_pseudo.identity
    # the old training state copied into the new run is not resumed: it belongs to another identity
    (new.dir / "training").mkdir()
    (new.dir / "training" / train_state.STATE_FILE).write_bytes(
        (old.dir / "training" / train_state.STATE_FILE).read_bytes())
    with pytest.raises(ValueError, match="saved by run identity .* not resuming it"):
        train_state.load_state(new.dir / "training")

    # 06 before the new student finished: the old one descends from the replaced teacher, left out
    found = tables.collect("smoke")
    assert set(found["kind"]) == {"teacher"}  # both teachers read the same manifest: both are rows
    dropped = tables.left_out(found)
    reasons = dict(zip(dropped["stage"], dropped["reason"]))
    assert "descends from teacher run" in reasons["04_distill"] and "teacher seed-0" not in reasons["04_distill"]
    assert set(dropped["stage"]) == {"04_distill"}
    _finish(new)
    found = tables.collect("smoke")
    assert new.dir in set(found["dir"]) and old.dir not in set(found["dir"]) and tables.left_out(found).empty


def test_collect_leaves_out_runs_of_another_manifest(outputs):
    from sqa.analysis import tables

    _finish(runs.start("01_merge_datasets", {"profile": "smoke"}), model_file=False)
    _chain(teacher_seed=0)
    _finish(_student("labeled-only"))
    _finish(runs.start("01_merge_datasets", {"profile": "smoke", "seed": 5}, tag=("seed",)), model_file=False)
    teacher, _ = _chain(teacher_seed=2)
    found = tables.collect("smoke")
    assert list(found["dir"]) == [teacher.dir]
    dropped = tables.left_out(found)
    assert sorted(dropped["stage"]) == ["02_teacher", "04_distill"]
    assert all("read manifest" in r for r in dropped["reason"])


def test_pruning_that_fine_tunes_on_labeled_clips_does_not_depend_on_the_pool(outputs):
    _finish(runs.start("01_merge_datasets", {"profile": "smoke"}), model_file=False)
    _chain(teacher_seed=0)

    def prune(finetune_on: str) -> runs.Run:
        return runs.start("05_prune", {"profile": "smoke", "finetune_on": finetune_on}, tag=("size", "method", "seed"))

    labeled, pooled = prune("labeled"), prune("pool")
    assert labeled.identity_record["inputs"]["pseudo_run"] is None
    assert pooled.identity_record["inputs"]["pseudo_run"] == runs.run_identity(runs.latest("smoke", "03_pseudo_labels"))
    _chain(teacher_seed=1)  # a new teacher and pool
    assert prune("labeled").identity_record["inputs"]["pseudo_run"] is None
    assert prune("pool").identity != pooled.identity


def test_rerunning_01_on_changed_corpora_keeps_the_manifest_its_readers_were_made_from(outputs, tmp_path):
    import pandas as pd
    import soundfile as sf

    from sqa.data import merge

    from signals import speechlike

    root = tmp_path / "data" / "mine"
    (root / "clips").mkdir(parents=True)
    for i in range(4):
        sf.write(root / "clips" / f"{i}.wav", speechlike(1.0, i), 16000)

    def stage_01(mos: list[float]) -> tuple[runs.Run, merge.MergeResult]:
        pd.DataFrame({"path": [f"clips/{i}.wav" for i in range(4)], "mos": mos}).to_csv(root / "mos.csv", index=False)
        run = runs.start("01_merge_datasets", {"profile": "smoke", "corpora": ["generic-csv:mine"]})
        return run, merge.run_merge(["generic-csv:mine"], tmp_path / "data", 0.0, 0.0, 0)

    run, result = stage_01([1.0, 2.0, 3.0, 4.0])
    merge.write_outputs(run, result)
    _finish(run, model_file=False)
    run, result = stage_01([1.0, 2.0, 3.0, 4.5])
    merge.write_outputs(run, result)  # nothing read the first manifest yet: replaced
    assert merge.manifest.read(run.path("manifest.parquet"))["mos_raw"].max() == 4.5
    _chain(teacher_seed=0)  # a teacher and pseudo-labels made from it
    merge.write_outputs(run, result)  # the same rows again: fine
    run, result = stage_01([1.0, 2.0, 3.5, 4.5])
    with pytest.raises(merge.ManifestChangedError, match=r"1 rows changed.*2 finished run\(s\) were made from it"):
        merge.write_outputs(run, result)
    assert merge.manifest.read(run.path("manifest.parquet"))["mos_raw"].tolist() == [1.0, 2.0, 3.0, 4.5]


def test_an_input_that_changes_after_start_is_refused(outputs):
    _finish(runs.start("01_merge_datasets", {"profile": "smoke"}), model_file=False)
    first = runs.start("02_teacher", {"profile": "smoke"}, tag=("teacher", "seed"))
    _finish(runs.start("01_merge_datasets", {"profile": "smoke", "seed": 1}, tag=("seed",)), model_file=False)
    with pytest.raises(ValueError, match="identity was fixed with 01_merge_datasets run"):
        first.use_input("manifest", runs.latest("smoke", "01_merge_datasets"))


def test_demo_sweep_makes_every_student_row_the_readme_reports():
    from sqa.pipeline import profiles

    runs_04 = profiles.sweep("demo", "04_distill")
    count = {}
    for r in runs_04:
        count[(r["size"], r["mode"])] = count.get((r["size"], r["mode"]), 0) + 1
        notebooks.validate("04_distill", {n: notebooks.parse_cli_value(notebooks.declared("04_distill")[n], v)
                                          for n, v in r.items()})
    for size in ("50k", "250k", "1M"):
        assert count[(size, "distill")] == 3 and count[(size, "labeled-only")] == 3
    assert count[("2M", "distill")] >= 1
    assert {r["lr"] for r in runs_04 if r["size"] == "2M"} == {profiles.DEMO_STUDENT_LR["2M"]}
    assert {r["size"] for r in profiles.sweep("demo", "05_prune")} >= {"1M", "250k"}


def test_sqa_score_says_what_a_demo_model_learned(tmp_path):
    from sqa import score

    ckpt = tmp_path / "run" / "model.safetensors"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"")
    assert score.training_note(str(ckpt)) == ""  # no params.json: nothing known
    (ckpt.parent / "params.json").write_text(json.dumps({"profile": "demo"}))
    note = score.training_note(str(ckpt))
    assert "PESQ-WB of synthetic speech" in note and "not listeners' opinion" in note
    summary = {"model": "m", "n_params": 1, "n_scored": 0, "n_files": 0, "n_failed": 0, "seconds": 0.0,
               "audio_seconds": 0.0, "x_realtime": 0.0, "note": note}
    assert f"note: {note}" in score.report(summary, [])
    (ckpt.parent / "params.json").write_text(json.dumps({"profile": "paper"}))
    assert score.training_note(str(ckpt)) == "" and score.training_note("baseline distillmos") == ""


def test_bar_redraws_become_lines_outside_a_terminal():
    import io

    from sqa.pipeline import progress

    log = io.StringIO()
    out = progress.LineStream(log)
    out.write("\rclips:  10%|#  | 1/10\rclips:  20%|## | 2/10")
    out.write("epoch 1/2: train loss 0.1\n")
    assert log.getvalue().splitlines() == ["clips:  10%|#  | 1/10", "clips:  20%|## | 2/10", "epoch 1/2: train loss 0.1"]
