"""Baselines: DNSMOS equals speechmos, DistillMOS and the MFCC head equal their released
packages, every baseline gives finite MOS in [1, 5], bad names and inputs fail clearly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sqa.data.batching import length_batches
from sqa.models import baselines
from sqa.models.dnsmos import WINDOW_SAMPLES, DnsmosP808, DnsmosP835, windows

from signals import speechlike

SR = 16000




@pytest.fixture(scope="module")
def clips() -> dict[str, np.ndarray]:
    return {"short": speechlike(4.0, 0), "long": speechlike(20.0, 1)}


@pytest.fixture(scope="module")
def speechmos_scores(clips) -> dict[str, dict]:
    from speechmos import dnsmos

    return {k: dnsmos.run(x, SR) for k, x in clips.items()}


def test_windows_follow_reference_hopping() -> None:
    counts = [len(windows(np.zeros(int(s * SR), np.float32))) for s in (4, 9.5, 10.5, 11, 20, 40)]
    # < 9.01 s: doubled to 16 s -> 7 hops; hops = int(floor(seconds) - 9.01) + 1;
    # windows 7-23 end one sample short (float rounding) and are skipped, as in the reference.
    assert counts == [7, 1, 1, 2, 7, 14]
    x = speechlike(4.0, 3)
    w = windows(x)
    assert all(len(seg) == WINDOW_SAMPLES for seg in w)
    np.testing.assert_array_equal(w[1], np.tile(x, 4)[SR : SR + WINDOW_SAMPLES])


def test_dnsmos_equals_speechmos(clips, speechmos_scores) -> None:
    ours = DnsmosP835(with_p808=True).predict_batch([clips["short"], clips["long"]], batch_size=3)
    p808 = DnsmosP808().predict_batch([clips["short"], clips["long"]], batch_size=5)
    for i, key in enumerate(("short", "long")):
        ref = speechmos_scores[key]
        for dim in ("sig", "bak", "ovrl", "p808"):
            assert abs(ours[dim][i] - ref[f"{dim}_mos"]) < 1e-4, (key, dim, ours[dim][i], ref)
        assert abs(p808[i] - ref["p808_mos"]) < 1e-4, (key, p808[i], ref)
    single = DnsmosP835().predict(clips["short"])
    assert set(single) == {"sig", "bak", "ovrl"}
    assert abs(single["ovrl"] - speechmos_scores["short"]["ovrl_mos"]) < 1e-4


def test_dnsmos_rejects_bad_waveforms() -> None:
    model = DnsmosP808()
    with pytest.raises(ValueError, match="waveform 0: waveform is empty"):
        model.predict(np.zeros(0, np.float32))
    with pytest.raises(ValueError, match=r"waveform 1: expected a 1-D mono waveform, got shape \(2, 100\)"):
        model.predict_batch([np.zeros(100, np.float32), np.zeros((2, 100), np.float32)])
    with pytest.raises(ValueError, match="NaN or Inf"):
        model.predict(np.full(100, np.nan, np.float32))
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        model.predict_batch([np.zeros(100, np.float32)], batch_size=0)
    assert model.predict_batch([]).shape == (0,)
    assert DnsmosP835().predict_batch([])["ovrl"].shape == (0,)


def eval_clips(name: str) -> list[np.ndarray]:
    """Two clips of equal length (batched together) and one of another length. DNSMOS: one
    9.01 s window each (9.01-10 s); the torch models: one window each (< 4.8 s)."""
    seconds = (9.2, 9.2, 9.6) if name.startswith("dnsmos") else (3.0, 3.0, 4.0)
    return [speechlike(s, seed) for seed, s in enumerate(seconds, start=4)]


@pytest.mark.parametrize("name", baselines.NAMES)
def test_every_baseline_scores_in_range(name) -> None:
    model = baselines.get(name)
    assert isinstance(model, baselines.Baseline)
    assert model.name == name
    clips = eval_clips(name)
    mos = model.predict(clips, batch_size=2)
    assert mos.shape == (3,)
    assert np.isfinite(mos).all() and (mos >= 1).all() and (mos <= 5).all(), mos
    assert np.ptp(mos) > 1e-3  # different clips, different scores
    one = model.predict([clips[1]])
    assert abs(one[0] - mos[1]) < 1e-4


def test_parameter_counts() -> None:
    counts = {name: baselines.get(name).n_params for name in baselines.NAMES}
    assert counts["dnsmos-p808"] == 54_945  # initializer elements of model_v8.onnx
    assert counts["dnsmos-p835"] == 184_252  # sig_bak_ovr.onnx without its fixed STFT basis
    assert 3_500_000 < counts["distillmos"] < 5_000_000
    assert 20_000 < counts["mfcc-sqa"] < 60_000


def test_distillmos_equals_released_package() -> None:
    from distillmos import ConvTransformerSQAModel

    released = ConvTransformerSQAModel().eval()
    # two padded clips batched together, one of two 7.68 s windows
    clips = [speechlike(3.0, 7), speechlike(3.0, 8), speechlike(9.6, 9)]
    ours = baselines.get("distillmos").predict(clips, batch_size=8)
    with torch.inference_mode():
        ref = [released(torch.from_numpy(x)[None]).item() for x in clips]
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)


@pytest.mark.filterwarnings("ignore:At least one mel filterbank has all zero values")
def test_mfcc_head_equals_released_package_on_short_clips() -> None:
    """Reference = xls-r-sqa's E2EModel MFCC path (MFCC -> CenterCrop -> SingleLayerModel),
    assembled from its parts so the test does not import transformers."""
    from torchaudio.transforms import MFCC
    from xls_r_sqa.center_crop import CenterCrop
    from xls_r_sqa.config import FEAT_SEQ_LEN
    from xls_r_sqa.config import MFCC_TRANSFORMER_32DEEP_CONFIG as config
    from xls_r_sqa.sqa_model import SingleLayerModel
    from xls_r_sqa.utils import get_model_path

    released = SingleLayerModel(config).eval()
    released.load_state_dict(torch.load(get_model_path(config, None, "full")[1], weights_only=True))
    mfcc, crop = MFCC(sample_rate=SR), CenterCrop(FEAT_SEQ_LEN)
    clips = [speechlike(2.5, 8), speechlike(4.5, 9)]  # <= 4.8 s: one window, no cropping
    ours = baselines.get("mfcc-sqa").predict(clips)
    with torch.inference_mode():
        ref = [1 + 4 * released(crop(mfcc(torch.from_numpy(x)[None]).transpose(-1, -2))).item() for x in clips]
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(ValueError, match="unknown baseline 'dnsmos'.*dnsmos-p808, dnsmos-p835, distillmos, mfcc-sqa"):
        baselines.get("dnsmos")


def test_torch_baseline_rejects_bad_waveform() -> None:
    model = baselines.get("mfcc-sqa")
    with pytest.raises(ValueError, match=r"mfcc-sqa: waveform 1: expected float samples"):
        model.predict([np.zeros(1600, np.float32), np.zeros(1600, np.int16)])


def test_length_batches_groups_equal_lengths() -> None:
    assert length_batches([5, 3, 5, 5, 3], batch_size=2) == [[0, 2], [3], [1, 4]]
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        length_batches([5], batch_size=0)
