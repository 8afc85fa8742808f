import json
import os

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
