"""Hint distillation: the teacher's pooled summaries (cached, standardised), the student with its
adapter, the training loop's extra loss, the stage's guards and the identity of runs without hints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from sqa.models.student import PRESETS, ConvTransformerSQA, distillmos_v7
from sqa.pipeline import runs, stages
from sqa.training import hints, loop

from signals import speechlike

pytestmark = pytest.mark.usefixtures("one_thread")


def _clips(folder: Path, seconds: list[float]) -> pd.DataFrame:
    rows = []
    for i, s in enumerate(seconds):
        sf.write(folder / f"c{i}.wav", speechlike(s, i), 16000, subtype="FLOAT")
        rows.append({"utt_id": f"pool/c{i}", "corpus": "pool", "path": f"c{i}.wav"})
    return pd.DataFrame(rows)


def test_embed_is_the_window_mean_of_the_pooled_summary():
    torch.manual_seed(0)
    model = ConvTransformerSQA(PRESETS["10k"]).eval()
    size, hop = model.config.window_samples, model.config.window_hop
    long = torch.from_numpy(speechlike(9.5, 1)).unsqueeze(0)
    short = torch.from_numpy(speechlike(3.0, 2)).unsqueeze(0)
    with torch.no_grad():
        starts = [0, (long.shape[1] - size) // 2, long.shape[1] - size]
        windows = [model.forward_window_pooled(long[:, s:s + size])[1] for s in starts]
        padded = model.forward_window_pooled(torch.nn.functional.pad(short, (0, size - short.shape[1])))
        assert hop >= starts[1] - starts[0]
        assert torch.allclose(model.embed(long), torch.stack(windows).mean(0), atol=1e-5)
        assert torch.allclose(model.embed(short), padded[1], atol=1e-5)
        mos, pooled = model.forward_window_pooled(long[:, :size])
        assert torch.allclose(mos, model.forward_window(long[:, :size])) and pooled.shape == (1, 18)


def test_teacher_summaries_are_cached_standardised_and_in_row_order(tmp_path):
    teacher = distillmos_v7()
    df = _clips(tmp_path, [2.0, 3.0, 2.0, 4.0, 3.0])
    cache = tmp_path / "cache"
    z = hints.teacher_summaries(teacher, df, {"pool": tmp_path}, cache, device="cpu", progress=False)
    assert z.shape == (5, 200) and z.dtype == np.float32
    assert np.allclose(z.mean(axis=0), 0, atol=1e-4) and np.allclose(z.std(axis=0), 1, atol=1e-3)
    with torch.no_grad():
        direct = torch.cat([teacher.embed(torch.from_numpy(sf.read(tmp_path / p, dtype="float32")[0])[None])
                            for p in df["path"]]).numpy()
    assert np.allclose(z, (direct - direct.mean(0)) / (direct.std(0) + 1e-6), atol=0.02)  # cached as fp16
    files = sorted(cache.glob("*.safetensors"))
    stamps = [f.stat().st_mtime_ns for f in files]
    again = hints.teacher_summaries(teacher, df.iloc[::-1], {"pool": tmp_path}, cache, device="cpu", progress=False)
    assert [f.stat().st_mtime_ns for f in files] == stamps  # read back, not recomputed
    assert np.allclose(again, z[::-1], atol=1e-6)


def test_a_teacher_without_a_pooled_summary_is_refused():
    with pytest.raises(ValueError, match="pooled summary.*hint_weight 0"):
        hints.TeacherSummary(torch.nn.Linear(2, 1))


def test_the_loop_adds_the_weighted_hint_loss_and_trains_the_adapter(tmp_path):
    torch.manual_seed(0)
    student = ConvTransformerSQA(PRESETS["10k"], windowed=False)
    model = hints.HintStudent(student, teacher_dim=6)
    wave = 0.1 * torch.randn(4, 16000)
    target = torch.randn(4, 6)
    batch = {"wave": wave, "hint": target}
    mos, extra = hints.hint_forward(0.5)(model, batch)
    guess = model(wave, hint=True)[1]
    assert torch.allclose(extra, 0.5 * torch.nn.functional.mse_loss(guess, target))
    assert torch.allclose(hints.hint_forward(0.5)(model, {"wave": wave}), student(wave))  # dev scoring: the score

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            return {"wave": 0.1 * torch.randn(8000, generator=g), "target": torch.tensor(1.0 + i / 2)}

    data = hints.HintDataset(Items(), np.random.default_rng(0).normal(size=(8, 6)).astype(np.float32))
    assert data[3]["hint"].shape == (6,) and float(data[3]["target"]) == 2.5
    before = model.adapter.weight.detach().clone()
    cfg = loop.TrainConfig(epochs=1, lr=1e-2, batch_size=4, device="cpu", progress=False)
    result = loop.fit(model, data, None, cfg, tmp_path / "run", forward_fn=hints.hint_forward(1.0))
    assert not torch.equal(result.model.adapter.weight, before)
    with pytest.raises(ValueError, match="clips but"):
        hints.HintDataset(Items(), np.zeros((3, 6), np.float32))


@pytest.mark.parametrize("mode, mix, weight", [("labeled-only", 0.0, 0.1), ("distill", 0.2, 0.1),
                                               ("distill", 0.0, -1.0)])
def test_hints_need_distillation_from_the_pool_alone(mode, mix, weight):
    with pytest.raises(ValueError, match="hint_weight"):
        stages.fit_student(None, None, None, None, mode, mix, Path("."), 4.0, hint_weight=weight)


def test_runs_without_hints_keep_the_identity_they_had_before_the_parameter():
    resolved = {"size": "250k", "mode": "distill", "labeled_mix": 0.0, "seed": 0, "profile": "release"}
    before = runs.identity_record("04_distill", resolved, {})
    assert runs.identity_record("04_distill", {**resolved, "hint_weight": 0.0}, {}) == before
    assert runs.identity_record("04_distill", {**resolved, "hint_weight": 0.1}, {}) != before
