"""sqa score: folders of mixed formats, rates and channel counts are scored; corrupt, empty and
missing files become CSV rows with reasons without stopping the batch; list files; quoted paths;
--model resolution (shipped student by default, run folder, checkpoint, ONNX export, baseline, size
preset via the registry); JSON-lines output; the note on what demo runs' models predict."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from sqa import atomic, cli, export, extras, pretrained, score
from sqa.data import audio
from sqa.models import checkpoint, count_params, student

SR = 16000


def tone(seconds: float, sr: int, seed: int, channels: int = 1) -> np.ndarray:
    """A buzzy harmonic tone with noise; different per seed."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = sum(np.sin(2 * np.pi * (120 + 15 * seed) * k * t) / k for k in range(1, 12))
    x = 0.2 * x / np.abs(x).max() + 0.02 * (1 + seed) * rng.standard_normal(t.size)
    return np.stack([x] * channels, axis=1) * [1.0, 0.5][:channels] if channels > 1 else x


@pytest.fixture(scope="module")
def model_run(tmp_path_factory):
    """A 25k student with random weights and a 2-s window, saved as a run folder."""
    torch.manual_seed(1)
    model = student.ConvTransformerSQA(student.preset("25k")).with_window(2.0).eval()
    run = tmp_path_factory.mktemp("run")
    checkpoint.save(run / "model.safetensors", model, model.arch, model.checkpoint_config())
    return model, run


GOOD = {  # relative name -> (seconds, sample rate, channels, subtype or None)
    "a.wav": (2.0, 8000, 1, None),
    "b, with comma.flac": (3.0, 16000, 2, None),
    'sub/c "quoted" name.ogg': (2.5, 44100, 1, None),
    "sub/deeper/D.WAV": (1.5, 48000, 2, "FLOAT"),
    "long 20 s.wav": (20.0, 16000, 1, None),
    "same-length-1.wav": (3.0, 16000, 1, None),
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    for i, (name, (seconds, sr, ch, subtype)) in enumerate(GOOD.items()):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / name, tone(seconds, sr, i, ch), sr, subtype=subtype)
    (root / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk" + bytes(range(200)))
    (root / "empty.flac").write_bytes(b"")
    sf.write(root / "zero frames.wav", np.zeros((0, 1)), SR)
    (root / "notes.txt").write_text("not audio, not scored")
    return root


BAD = {"corrupt.wav": "corrupt audio header", "empty.flac": "corrupt audio header",
       "zero frames.wav": "empty audio (0 frames)"}


def run_cli(*argv: str) -> int:
    return cli.main(["score", *argv])


def read_csv(path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_folder_scores_good_files_and_reports_bad_ones(folder, model_run, tmp_path, capsys) -> None:
    model, run = model_run
    out = tmp_path / "out" / "scores.csv"
    assert run_cli(str(folder), "--model", str(run), "--out", str(out), "--batch", "4") == 0
    rows = {r["path"]: r for r in read_csv(out)}
    assert set(rows) == {str(folder / n) for n in [*GOOD, *BAD]}  # notes.txt is not audio
    for name, (seconds, *_rest) in GOOD.items():
        row = rows[str(folder / name)]
        assert row["status"] == "ok" and row["error"] == ""
        assert 1.0 <= float(row["mos"]) <= 5.0
        assert float(row["duration_s"]) == pytest.approx(seconds, abs=1e-3)
        with torch.no_grad():
            want = model(torch.from_numpy(audio.load(folder / name))[None]).item()
        assert float(row["mos"]) == pytest.approx(want, abs=2e-4)
    for name, reason in BAD.items():
        row = rows[str(folder / name)]
        assert (row["status"], row["mos"]) == ("failed", "")
        assert reason in row["error"], row
    assert len({rows[str(folder / n)]["mos"] for n in GOOD}) > 1
    text = out.read_text()
    assert text.startswith('"path","mos","duration_s","status","error","warning"\n')
    assert f'"{folder / "b, with comma.flac"}"' in text
    assert '""quoted""' in text  # csv quoting of quotes inside a name
    printed = capsys.readouterr().out
    assert f"scored {len(GOOD)} of {len(GOOD) + len(BAD)} files, {len(BAD)} failed" in printed
    assert "x real time" in printed and "MOS mean" in printed
    for name in BAD:
        assert str(folder / name) in printed
    assert not list(out.parent.glob(".*tmp*"))


def test_csv_to_stdout_without_out(folder, model_run, capsys) -> None:
    assert run_cli(str(folder / "a.wav"), str(folder / "corrupt.wav"), "--model",
                   str(model_run[1] / "model.safetensors")) == 0
    captured = capsys.readouterr()
    rows = list(csv.DictReader(captured.out.splitlines()))
    assert [r["status"] for r in rows] == ["ok", "failed"]
    assert "scored 1 of 2 files" in captured.err


def test_batching_equals_one_by_one(folder, model_run) -> None:
    model = score.resolve_model(str(model_run[1]))
    items = score.find_inputs([folder])
    batched = score.score_items(items, model, batch_size=8)
    single = score.score_items(items, model, batch_size=1)
    assert [r.path for r in batched] == [r.path for r in single]
    for a, b in zip(batched, single):
        assert a.error == b.error
        if a.ok:
            assert a.mos == pytest.approx(b.mos, abs=1e-5)


def test_list_file_relative_paths_comments_and_missing(folder, model_run, tmp_path) -> None:
    lists = folder / "lists"
    lists.mkdir(exist_ok=True)
    listing = lists / "files.lst"
    listing.write_text(f"# clips to score\n../a.wav\n\n  ../sub  \n{folder / 'empty.flac'}\nmissing.wav\n../a.wav\n")
    out = tmp_path / "list.csv"
    assert run_cli(str(listing), "--model", str(model_run[1]), "--out", str(out)) == 0
    rows = read_csv(out)
    assert [r["path"] for r in rows] == [
        str(lists / "../a.wav"), str(lists / "../sub" / "c \"quoted\" name.ogg"),
        str(lists / "../sub" / "deeper" / "D.WAV"), str(folder / "empty.flac"), str(lists / "missing.wav")]
    assert [r["status"] for r in rows] == ["ok", "ok", "ok", "failed", "failed"]
    assert rows[-1]["error"] == "file not found"


def test_nothing_scored_exits_1(folder, model_run, tmp_path, capsys) -> None:
    empty_dir = tmp_path / "no-audio"
    empty_dir.mkdir()
    out = tmp_path / "bad.csv"
    assert run_cli(str(folder / "corrupt.wav"), str(empty_dir), "--model", str(model_run[1]),
                   "--out", str(out)) == 1
    rows = read_csv(out)
    assert [r["status"] for r in rows] == ["failed", "failed"]
    assert "folder has no .wav/.flac/.ogg files" in rows[1]["error"]
    assert "scored 0 of 2 files" in capsys.readouterr().out


def test_model_failure_is_isolated(folder) -> None:
    def predict(waves, batch_size):
        if any(len(w) == int(2.5 * SR) for w in waves):
            raise RuntimeError("cannot score 2.5 s")
        return np.array([2.0 + len(w) / 1e7 for w in waves])

    fake = score.Model("length-model", predict, 0, "test")
    rows = score.score_items(score.find_inputs([folder]), fake, batch_size=8)
    by_name = {r.path.split("/")[-1]: r for r in rows}
    assert by_name['c "quoted" name.ogg'].error == "model failed: RuntimeError: cannot score 2.5 s"
    assert by_name["a.wav"].ok and by_name["long 20 s.wav"].mos == pytest.approx(2.0 + 20 * SR / 1e7)
    nan = score.Model("nan-model", lambda waves, b: np.full(len(waves), np.nan), 0, "test")
    rows = score.score_items([score.Item(folder / "a.wav")], nan)
    assert rows[0].error.startswith("model returned a non-finite score")


def test_onnx_export_scores_like_its_checkpoint(folder, model_run) -> None:
    onnx_file = export.export(model_run[1], "onnx")
    via_onnx = score.score([folder], str(onnx_file))[0]
    via_torch = score.score([folder], str(model_run[1]))[0]
    for a, b in zip(via_onnx, via_torch):
        assert a.path == b.path and a.ok == b.ok
        if a.ok:
            assert a.mos == pytest.approx(b.mos, abs=1e-4)


def test_size_resolves_latest_distill_run(outputs, model_run, tmp_path) -> None:
    with pytest.raises(score.ScoreError, match=r"no finished 04_distill run of size 1M .*sqa run 04_distill"):
        score.resolve_model("1M")
    registry = outputs / "registry.jsonl"
    registry.parent.mkdir(parents=True)
    folders = {}
    for tag in ("size-1M_mix-0.2_seed-0", "size-1M_mix-0.5_seed-1", "size-1M5_mix-0.2_seed-0"):
        folders[tag] = outputs / "demo" / "04_distill" / tag
        folders[tag].mkdir(parents=True)
        (folders[tag] / "model.safetensors").write_bytes((model_run[1] / "model.safetensors").read_bytes())
        line = {"profile": "demo", "stage": "04_distill", "tag": tag, "dir": f"$SQA_OUTPUTS/demo/04_distill/{tag}"}
        with registry.open("a") as fh:
            fh.write(json.dumps(line) + "\n")
    assert score.distill_run("1M") == folders["size-1M_mix-0.5_seed-1"]
    assert score.distill_run("1M5") == folders["size-1M5_mix-0.2_seed-0"]
    resolved = score.resolve_model("1M")
    assert resolved.source == str(folders["size-1M_mix-0.5_seed-1"] / "model.safetensors")
    assert resolved.n_params == count_params(model_run[0])
    with pytest.raises(score.ScoreError, match="profile 'smoke'"):
        score.resolve_model("1M", profile="smoke")
    (folders["size-1M_mix-0.5_seed-1"] / "model.safetensors").unlink()
    with pytest.raises(score.ScoreError, match="has no model.safetensors"):
        score.resolve_model("1M")


def test_model_resolution_errors(folder, tmp_path, capsys) -> None:
    with pytest.raises(score.ScoreError, match="is not a shipped student .*, a baseline .*nor a size like"):
        score.resolve_model("no-such-model")
    with pytest.raises(score.ScoreError, match="run folder has no model.safetensors"):
        score.resolve_model(str(tmp_path))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(score.ScoreError, match="not a safetensors file"):
        score.resolve_model(str(junk))
    assert run_cli(str(folder / "a.wav"), "--model", "no-such-model") == 2
    assert "sqa score: error: --model 'no-such-model'" in capsys.readouterr().err
    with pytest.raises(score.ScoreError, match="is a folder; refusing to replace it"):
        score.score([folder / "a.wav"], "dnsmos-p808", out=tmp_path)
    with pytest.raises(score.ScoreError, match="--batch must be >= 1"):
        score.score([folder / "a.wav"], "dnsmos-p808", batch_size=0)
    if not torch.cuda.is_available():
        assert run_cli(str(folder / "a.wav"), "--model", "dnsmos-p808", "--device", "cuda") == 2
        assert "no CUDA device" in capsys.readouterr().err


def test_baseline_name_scores(folder) -> None:
    rows, summary = score.score([folder / "a.wav", folder / "empty.flac"], "dnsmos-p808")
    assert summary["model"] == "dnsmos-p808" and summary["n_params"] > 0
    assert rows[0].ok and 1.0 <= rows[0].mos <= 5.0
    assert not rows[1].ok
    assert summary["n_scored"] == 1 and summary["x_realtime"] > 0


def test_default_model_is_the_shipped_student(folder, model_run, tmp_path, monkeypatch, capsys) -> None:
    assert cli.build_parser().parse_args(["score", "x.wav"]).model == pretrained.DEFAULT == "sqa-250k"
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / f"{pretrained.DEFAULT}.safetensors").write_bytes((model_run[1] / "model.safetensors").read_bytes())
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", weights)
    out = tmp_path / "default.csv"
    assert run_cli(str(folder / "a.wav"), "--out", str(out)) == 0
    row = read_csv(out)[0]
    with torch.no_grad():
        want = model_run[0](torch.from_numpy(audio.load(folder / "a.wav"))[None]).item()
    assert row["status"] == "ok" and float(row["mos"]) == pytest.approx(want, abs=2e-4)
    assert f"model: {pretrained.DEFAULT} (" in capsys.readouterr().out
    assert run_cli(str(folder / "a.wav"), "--model", "sqa-1M") == 2
    err = capsys.readouterr().err
    assert f"--model sqa-1M: {weights / 'sqa-1M.safetensors'} is missing" in err
    assert "sqa reproduce --profile release" in err


def test_jsonl_rows_have_the_csv_fields_and_values(folder, model_run, tmp_path, capsys) -> None:
    args = [str(folder), "--model", str(model_run[1])]
    assert run_cli(*args, "--out", str(tmp_path / "s.csv")) == 0
    assert run_cli(*args, "--out", str(tmp_path / "s.jsonl")) == 0  # the suffix picks JSON lines
    rows = read_csv(tmp_path / "s.csv")
    records = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert len(records) == len(rows) == len(GOOD) + len(BAD)
    for record, row in zip(records, rows):
        assert list(record) == list(score.CSV_COLUMNS)
        assert (record["path"], record["status"]) == (row["path"], row["status"])
        assert (record["error"] or "", record["warning"] or "") == (row["error"], row["warning"])
        assert ("" if record["mos"] is None else f"{record['mos']:.4f}") == row["mos"]
        assert ("" if record["duration_s"] is None else f"{record['duration_s']:.3f}") == row["duration_s"]
    assert {r["status"] for r in records} == {"ok", "failed"}
    assert all((r["mos"] is None) == (r["status"] == "failed") for r in records)
    assert not list(tmp_path.glob(".*tmp*"))
    # --format wins over the suffix; --format jsonl also streams to stdout
    assert run_cli(*args, "--out", str(tmp_path / "forced.jsonl"), "--format", "csv") == 0
    assert (tmp_path / "forced.jsonl").read_text().startswith('"path","mos","duration_s"')
    capsys.readouterr()
    assert run_cli(str(folder / "a.wav"), "--model", str(model_run[1]), "--format", "jsonl") == 0
    captured = capsys.readouterr()
    assert [json.loads(line)["status"] for line in captured.out.splitlines()] == ["ok"]
    assert "scored 1 of 1 files" in captured.err
    with pytest.raises(score.ScoreError, match="--format must be one of csv, jsonl"):
        score.score([folder / "a.wav"], str(model_run[1]), fmt="xml")


def test_interrupted_jsonl_keeps_its_rows(folder, model_run, tmp_path, monkeypatch) -> None:
    out = tmp_path / "scores.jsonl"
    monkeypatch.setattr(score, "GROUP_SIZE", 1)
    real = score.resolve_model(str(model_run[1]))
    calls = []

    def predict(waves, batch_size):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real.predict(waves, batch_size)

    monkeypatch.setattr(score, "resolve_model", lambda *a, **k: score.Model("m", predict, 1, "test"))
    with pytest.raises(KeyboardInterrupt):
        run_cli(str(folder / "a.wav"), str(folder / "long 20 s.wav"), str(folder / "same-length-1.wav"),
                "--out", str(out))
    assert not out.exists()
    partial = atomic.partial_path(out)
    assert partial.name == "scores.partial.jsonl"
    records = [json.loads(line) for line in partial.read_text().splitlines()]
    assert [r["path"].split("/")[-1] for r in records] == ["a.wav", "long 20 s.wav"]
    assert all(r["status"] == "ok" and 1 <= r["mos"] <= 5 for r in records)


@pytest.mark.parametrize("profile, noted", [("demo", True), ("smoke", True), ("paper", False)])
def test_demo_models_say_they_predict_pesq_wb(folder, model_run, tmp_path, capsys, profile, noted) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.safetensors").write_bytes((model_run[1] / "model.safetensors").read_bytes())
    (run / "params.json").write_text(json.dumps({"profile": profile}))
    assert run_cli(str(folder / "a.wav"), "--model", str(run), "--out", str(tmp_path / "s.csv")) == 0
    printed = capsys.readouterr().out
    assert ("note: Labels are PESQ-WB" in printed and "not listeners' opinion" in printed) == noted


def test_baseline_without_its_extra_names_it(folder, monkeypatch, capsys) -> None:
    real = extras.installed
    monkeypatch.setattr(extras, "installed", lambda module: module != "distillmos" and real(module))
    assert run_cli(str(folder / "a.wav"), "--model", "distillmos") == 2
    err = capsys.readouterr().err
    assert "baseline 'distillmos' needs the package distillmos" in err and "pip install 'sqa[baselines]'" in err
