"""Shipping the release students: the latest release run of each size is copied and exported, and
``models.json`` records where each file came from."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sqa import atomic, export, paths, pretrained
from sqa.models import checkpoint, student
from sqa.pipeline import ship

from signals import speechlike


def fake_release_run(outputs, tag: str, seed: int) -> None:
    folder = outputs / "release" / "04_distill" / tag
    model = student.ConvTransformerSQA(student.preset("10k")).with_window(4.0)
    checkpoint.save(folder / "model.safetensors", model, model.arch, model.checkpoint_config())
    atomic.write_json(folder / "params.json", {"inputs": {"pseudo_labels": "$SQA_OUTPUTS/release/03/x"}})
    atomic.write_json(folder / "metrics.json", {"params": 9_710, "best_dev_pcc": 0.5 + seed / 10,
                                                "test": {"release-heldout": {"pcc": 0.4, "n": 3}}})
    atomic.append_line(outputs / "registry.jsonl", json.dumps(
        {"profile": "release", "stage": "04_distill", "tag": tag.split("_id-")[0], "dir": paths.portable(folder)}))


def test_ship_copies_the_latest_release_run_and_exports_it(tmp_path, monkeypatch):
    outputs = tmp_path / "outputs"
    monkeypatch.setenv("SQA_OUTPUTS", str(outputs))
    fake_release_run(outputs, "size-10k_mode-distill_labeled-mix-0.0_seed-0", 0)
    fake_release_run(outputs, "size-10k_mode-distill_labeled-mix-0.2_seed-0", 1)  # not a release recipe run
    fake_release_run(outputs, "size-10k_mode-distill_labeled-mix-0.0_seed-0_id-0123abcd", 3)  # a re-run
    fake_release_run(outputs, "size-10k_mode-distill_labeled-mix-0.0_seed-1", 2)  # another seed: not shipped
    weights = outputs / "weights"
    record = ship.ship(weights, sizes=("10k",))
    assert record["sqa-10k"]["run"].endswith("size-10k_mode-distill_labeled-mix-0.0_seed-0_id-0123abcd")
    assert record["sqa-10k"]["best_dev_pcc"] == pytest.approx(0.8)
    assert ship.release_run("10k", seed=1).name.endswith("_seed-1")
    assert json.loads((weights / "models.json").read_text()) == record
    torch_file, onnx_file = weights / "sqa-10k.safetensors", weights / "sqa-10k.onnx"
    assert record["sqa-10k"]["sha256"]["onnx"] == export.sha256(onnx_file)
    clips = [speechlike(4.0, 3), speechlike(6.0, 4, snr_db=10)]
    np.testing.assert_allclose(pretrained.load(onnx_file).score_many(clips, 16000),
                               pretrained.load(torch_file).score_many(clips, 16000), atol=1e-4)
    sidecar = json.loads(onnx_file.with_suffix(".onnx.json").read_text())
    assert sidecar["source"] == "$SQA_OUTPUTS/weights/sqa-10k.safetensors"  # no machine's folder
    with pytest.raises(FileNotFoundError, match="no finished 04_distill run size-50k_mode-distill"):
        ship.release_run("50k")


def test_check_says_whether_the_runs_give_the_shipped_files(tmp_path, monkeypatch, capsys):
    outputs = tmp_path / "outputs"
    monkeypatch.setenv("SQA_OUTPUTS", str(outputs))
    tag = "size-10k_mode-distill_labeled-mix-0.0_seed-0"
    fake_release_run(outputs, tag, 0)
    weights = outputs / "weights"
    ship.ship(weights, sizes=("10k",))
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", weights)
    assert ship.check(weights) == {"sqa-10k": True}
    assert ship.main(["--check"]) == 0 and "sqa-10k: the same bytes as shipped" in capsys.readouterr().out

    run = outputs / "release" / "04_distill" / tag / "model.safetensors"
    model, info = checkpoint.load(run)
    model.head.readout.bias.data += 0.1
    checkpoint.save(run, model, info.arch, info.config)
    assert ship.main(["--check"]) == 1 and "sqa-10k: DIFFERS" in capsys.readouterr().out
    assert json.loads((weights / "models.json").read_text())["sqa-10k"]["sha256"]["safetensors"] == \
        export.sha256(weights / "sqa-10k.safetensors")
