"""A model and its inputs meet on the model's device on every path that feeds a model: caught on
the CPU with a model on the ``meta`` device whose forward asserts that its input is there too
(meta tensors hold no data, so the probe returns its scores as a CPU tensor made from the shape)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from sqa.training import devices

from corpus_fixtures import tone

META = torch.device("meta")


class Probe(nn.Module):
    """Scores 3.0 for every clip, after asserting that the input is on the parameter's device."""

    unit_plan = None  # the pruning protocol's marker: calibration uses the probe as it is

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def _check(self, x: torch.Tensor) -> None:
        assert x.device == self.w.device, f"input on {x.device}, model on {self.w.device}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return torch.full((x.shape[0],), 3.0)

    score_crops = forward


class ProbeExtractor(Probe):
    """A feature extractor: one (B, 5 frames, 4 dims) layer."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self._check(x)
        return [torch.zeros(x.shape[0], 5, 4)]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> tuple[pd.DataFrame, dict[str, Path]]:
    root = tmp_path_factory.mktemp("clips")
    rows = [{"utt_id": f"c/{i}", "corpus": "c", "path": tone(root / f"{i}.wav").name, "sys_id": "s",
             "mos": 1.0 + i / 2, "split": ("dev", "test")[i % 2], "duration": 0.5} for i in range(6)]
    return pd.DataFrame(rows), {"c": root}


def on_meta(cls=Probe) -> nn.Module:
    return cls().to(META)


def test_the_probe_catches_a_mismatch():
    with pytest.raises(AssertionError, match="input on cpu, model on meta"):
        on_meta()(torch.zeros(2, 100))


def test_training_loop_predict_feeds_the_models_device(clips):
    from sqa.data.datasets import ClipDataset
    from sqa.training import loop

    pred, target = loop.predict(on_meta(), ClipDataset(clips[0], clips[1]), batch_size=4)
    assert np.all(pred == 3.0) and len(target) == 6


def test_manifest_predictions_and_stage_splits_feed_the_models_device(clips):
    from sqa.analysis import predictions
    from sqa.pipeline import stages

    df, roots = clips
    assert (predictions.predict(on_meta(), df, roots)["pred"] == 3.0).all()
    data = stages.StageData(df, roots, Path("."))
    preds = stages.predict_splits(on_meta(), data)  # what notebooks 02, 04 and 05 call right after training
    assert len(preds) == 6 and (preds["pred"] == 3.0).all() and set(preds["split"]) == {"dev", "test"}


def test_a_device_argument_moves_the_model_and_its_inputs_follow(clips):
    from sqa.analysis import predictions

    model = Probe()
    out = predictions.predict(model, clips[0], clips[1], device="meta")
    assert devices.model_device(model) == META and (out["pred"] == 3.0).all()


def test_pseudo_labeling_feeds_the_models_device(clips, tmp_path):
    from sqa.training import pseudo_labels

    df, roots = clips
    run = pseudo_labels.pseudo_label(Probe(), df, roots, tmp_path, device="meta", batch_size=4, progress=False)
    assert run.n_ok == 6 and (run.labels["pseudo_mos"] == 3.0).all()


def test_feature_extraction_feeds_the_extractors_device(clips, tmp_path):
    from sqa.training.feature_cache import FeatureCache

    df, roots = clips
    cache = FeatureCache(tmp_path, ProbeExtractor())
    assert cache.extract(df, roots, device="meta", progress=False) == 6
    assert cache.load("c/0").shape == (1, 5, 4)


def test_pruning_calibration_feeds_the_models_device(clips):
    from sqa.training.pruning import pruner

    model = Probe()
    cal = pruner.calibration_set(model, clips[0], clips[1], n=4, window_s=0.25, device="meta")
    assert devices.model_device(model) == META and torch.all(cal.targets == 3.0) and cal.waves.shape == (4, 4000)


def test_precision_and_device_defaults_on_the_cpu(monkeypatch):
    from sqa.training import loop, pseudo_labels

    assert loop.TrainConfig().amp == "auto" and devices.resolve_amp("auto", "cpu") is None
    assert devices.resolve_amp("bf16", "cpu") is None and devices.default_amp("cpu") is None
    assert devices.resolve_device("auto") == torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="'cuda' requested but CUDA is not available"):
            devices.resolve_device("cuda")
        monkeypatch.setenv(devices.GPUS_ENV, "2")
        with pytest.raises(RuntimeError, match="2 GPUs asked for, 0 present"):
            devices.gpu_count()
        monkeypatch.setenv(devices.GPUS_ENV, "1")
        assert pseudo_labels.placement("auto", 0) == {"device": "cpu", "num_workers": pseudo_labels.workers_for(0)}
    with pytest.raises(ValueError, match="amp='fp32'"):
        devices.resolve_amp("fp32", "cpu")
