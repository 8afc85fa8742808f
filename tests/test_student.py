"""Students: preset sizes, DistillMOS equivalence, windowing, short-window training."""

from __future__ import annotations

import json

import pytest
import torch

from sqa.models import count_params
from sqa.models.heads import window_starts
from sqa.models.student import (
    PRESETS,
    ConvTransformerSQA,
    StudentConfig,
    config_params,
    distillmos_v7,
    parse_size,
    preset,
)

from signals import speechlike

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", [n for n in PRESETS if n != "distillmos-v7"])
def test_presets_within_ten_percent(name):
    with torch.device("meta"):
        model = ConvTransformerSQA(PRESETS[name])
    n = count_params(model)
    assert abs(n - parse_size(name)) <= 0.10 * parse_size(name)
    assert config_params(PRESETS[name]) == n


def test_distillmos_preset_is_the_released_size():
    with torch.device("meta"):
        assert count_params(ConvTransformerSQA(PRESETS["distillmos-v7"])) == 4_133_226


@pytest.mark.parametrize("size", ["15k", "300k", "1.5M", "75000", "8M"])
def test_any_size_is_found_within_ten_percent(size):
    cfg = preset(size)
    with torch.device("meta"):
        n = count_params(ConvTransformerSQA(cfg))
    assert abs(n - parse_size(size)) <= 0.10 * parse_size(size)


def test_impossible_or_malformed_sizes_are_named():
    with pytest.raises(ValueError, match="'100'"):
        preset("100")
    with pytest.raises(ValueError, match="'1.5G'"):
        preset("1.5G")
    assert parse_size("1.5M") == 1_500_000 and parse_size("10k") == 10_000


def test_distillmos_equivalence_long_and_short():
    dm = pytest.importorskip("distillmos")
    ref = dm.ConvTransformerSQAModel().eval()
    ours = distillmos_v7()
    assert count_params(ours) == count_params(ref)
    long_wave = torch.from_numpy(speechlike(12.0, 0)).unsqueeze(0)  # 6 windows spaced <= 1 s
    short_wave = (torch.from_numpy(speechlike(3.0, 1)) + 0.05 * torch.randn(48000, generator=torch.Generator().manual_seed(2)))
    assert len(window_starts(long_wave.shape[1], 122880, 16000)) == 6
    with torch.no_grad():
        for wave in (long_wave, short_wave.unsqueeze(0)):
            expected = ref(wave).squeeze(-1)
            got = ours(wave)
            assert got.shape == (1,)
            assert (got - expected).abs().max().item() < 1e-4
            assert 1 <= got.item() <= 5


def test_windowing_is_mean_over_windows_and_chunking_invariant():
    torch.manual_seed(0)
    model = ConvTransformerSQA(PRESETS["10k"]).eval()
    wave = torch.stack([torch.from_numpy(speechlike(9.5, 3)), 0.3 * torch.from_numpy(speechlike(9.5, 4))])
    size, hop = model.config.window_samples, model.config.window_hop
    starts = window_starts(wave.shape[1], size, hop)
    assert len(starts) == 3
    with torch.no_grad():
        got = model(wave)
        manual = torch.stack([model.forward_window(wave[:, s:s + size]) for s in starts]).mean(0)
        model.window_batch = 1
        chunked = model(wave)
        short = model(wave[:, :16000])
        padded = model.forward_window(torch.nn.functional.pad(wave[:, :16000], (0, size - 16000)))
    assert got.shape == (2,)
    assert torch.allclose(got, manual, atol=1e-5)
    assert torch.allclose(got, chunked, atol=1e-6)
    assert torch.allclose(short, padded, atol=1e-6)


@pytest.mark.parametrize("name", ["distillmos-v7", "250k"])
def test_short_clips_skip_the_padding_and_score_as_padded(name):
    torch.manual_seed(0)
    model = distillmos_v7() if name == "distillmos-v7" else ConvTransformerSQA(PRESETS[name]).eval()
    size, pad = model.config.window_samples, (model.config.stft_win - model.config.stft_hop) // 2
    for n in (320, 999, 48000, 64000, 64001, size - 2001, size - pad - 1, size - pad, size - 1):
        wave = 0.1 * torch.randn(2, n)
        with torch.inference_mode():
            got = model(wave)
            padded = model.forward_window(torch.nn.functional.pad(wave, (0, size - n)))
        assert (got - padded).abs().max().item() < 1e-5, n


def test_silence_response_follows_the_weights():
    torch.manual_seed(0)
    model = ConvTransformerSQA(PRESETS["25k"]).eval()
    wave = 0.1 * torch.randn(1, 32000)
    size = model.config.window_samples
    with torch.no_grad():
        model(wave)  # caches the response to silence of these weights
        model.load_state_dict(ConvTransformerSQA(PRESETS["25k"]).state_dict())  # other weights, in place
        got = model(wave)
        padded = model.forward_window(torch.nn.functional.pad(wave, (0, size - 32000)))
    assert (got - padded).abs().max().item() < 1e-6
    graph = model(wave.requires_grad_())  # with gradients: the whole padded window runs
    graph.sum().backward()
    assert wave.grad is not None and torch.isfinite(wave.grad).all()


def test_short_window_training_gives_finite_outputs_and_gradients():
    torch.manual_seed(0)
    model = ConvTransformerSQA(PRESETS["25k"], windowed=False).train()
    wave = torch.stack([torch.from_numpy(speechlike(2.0, s)) for s in range(4)]) * torch.tensor([[1.0], [0.5], [0.1], [1.0]])
    out = model(wave)  # 2 s crops: 100 head frames instead of 384
    assert out.shape == (4,) and torch.isfinite(out).all()
    loss = torch.nn.functional.mse_loss(out, torch.tensor([1.5, 2.5, 3.5, 4.5]))
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0
    pretrained = distillmos_v7()
    with torch.no_grad():
        crop = pretrained.forward_window(wave[:2])
    assert torch.isfinite(crop).all() and ((crop >= 1) & (crop <= 5)).all()


def test_config_round_trip_rebuilds_the_same_model():
    cfg = PRESETS["50k"]
    again = StudentConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    torch.manual_seed(1)
    a = ConvTransformerSQA(cfg).eval()
    b = ConvTransformerSQA(again).eval()
    b.load_state_dict(a.state_dict())
    wave = torch.from_numpy(speechlike(4.0, 5)).unsqueeze(0)
    with torch.no_grad():
        assert torch.equal(a(wave), b(wave))


def test_bad_input_and_config_are_named():
    model = ConvTransformerSQA(PRESETS["10k"])
    with pytest.raises(ValueError, match="batch, samples"):
        model(torch.zeros(16000))
    with pytest.raises(ValueError, match="needs >= 320"):
        model.forward_window(torch.zeros(1, 100))
    with pytest.raises(ValueError, match="conv_freq_strides"):
        StudentConfig((4,) * 6, (4,) * 6, (1,) * 6, dim_transformer=16, n_heads=2, n_layers=1)
    with pytest.raises(ValueError, match="differ in length"):
        StudentConfig((4, 4), (2,), (1, 2), dim_transformer=16, n_heads=2, n_layers=1)
    with pytest.raises(ValueError, match="unknown keys"):
        StudentConfig.from_dict({**PRESETS["10k"].to_dict(), "width": 3})
