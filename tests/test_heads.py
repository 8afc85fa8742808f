"""SqaHead vs the released xls-r-sqa models: same numbers from the same weights."""

from __future__ import annotations

import math

import pytest
import torch

from sqa.models.heads import (
    BACKBONES,
    HeadConfig,
    SqaHead,
    convert_released_state_dict,
    crop_features,
    load_released_head,
    mfcc_features,
    predict_long,
    released_head_path,
    sinusoid_positions,
    window_starts,
)

from signals import speechlike

xls_config = pytest.importorskip("xls_r_sqa.config")
xls_model = pytest.importorskip("xls_r_sqa.sqa_model")


pytestmark = pytest.mark.usefixtures("one_thread")


HEADS = [(b, layer) for b, (_, layers) in BACKBONES.items() if b != "mfcc" for layer in (*layers, "fusion")]
HEADS.append(("mfcc", None))


def reference_head(backbone: str, layer, variant: str, version: str) -> torch.nn.Module:
    """The xls-r-sqa model class with the shipped weights, eval mode."""
    cfg = xls_config.Config(
        "reference",
        xls_config.Input.MFCC if backbone == "mfcc" else xls_config.Input.XLSR,
        feat_seq_len=384,
        dim_transformer=32,
        xlsr_name=None if backbone == "mfcc" else f"wav2vec2-xls-r-{backbone}",
        nhead_transformer=4,
        nlayers_transformer=4,
    )
    model = (xls_model.FusionModel if layer == "fusion" else xls_model.SingleLayerModel)(cfg)
    path = released_head_path(backbone, layer, variant, version)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def realistic_features(head: SqaHead, n: int, batch: int, seed: int) -> list[torch.Tensor]:
    """Random features at the scale the head's input BatchNorms were trained on."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for norm in head.input_norms:
        std = norm.running_var.sqrt()
        out.append(norm.running_mean + std * torch.randn(batch, n, head.config.dim_input, generator=g))
    return out


# every shipped sqa-v2 "full" head, plus the other variant / version on a few
CASES = [(b, layer, "full", "sqa-v2") for b, layer in HEADS] + [
    ("300m", 5, "subset", "sqa-v2"),
    ("1b", "fusion", "full", "sqa"),
    ("mfcc", None, "subset", "sqa"),
]


@pytest.mark.parametrize("backbone,layer,variant,version", CASES)
def test_released_heads_match_reference(backbone, layer, variant, version):
    ours = load_released_head(backbone, layer, variant, version)
    ref = reference_head(backbone, layer, variant, version)
    feats = realistic_features(ours, 384, batch=2, seed=CASES.index((backbone, layer, variant, version)))
    with torch.no_grad():
        expected = 1 + 4 * ref(tuple(feats) if layer == "fusion" else feats[0]).squeeze(-1)
        got = ours(feats if layer == "fusion" else feats[0])
    assert got.shape == (2,)
    assert (got - expected).abs().max().item() < 1e-5
    assert got.min() >= 1 and got.max() <= 5
    assert (got[0] - got[1]).abs() > 1e-4  # inputs differ, so must the scores (not a saturated head)
    with torch.no_grad():
        unit = ours.forward_unit(feats if layer == "fusion" else feats[0])
    assert torch.allclose(1 + 4 * unit, got)


@pytest.mark.filterwarnings("ignore:At least one mel filterbank has all zero values")
def test_mfcc_end_to_end_matches_xls_r_sqa():
    e2e_mod = pytest.importorskip("xls_r_sqa.e2e_model")
    ref = e2e_mod.E2EModel(xls_config.MFCC_TRANSFORMER_32DEEP_CONFIG, dataset_variant="full").eval()
    head = load_released_head("mfcc", variant="full")
    for seconds, seed in ((3.0, 1), (9.0, 2)):  # shorter than 384 frames (pad) and longer (center crop)
        wave = torch.from_numpy(speechlike(seconds, seed)).unsqueeze(0)
        feats = mfcc_features(wave)
        assert feats.shape == (1, int(seconds * 16000) // 200 + 1, 40)
        with torch.no_grad():
            ref_feats = ref.mfcc_calculator(wave).transpose(1, 2)
            expected = ref(wave).squeeze(-1)
            got = head(crop_features(feats))
        assert torch.equal(feats, ref_feats)
        assert (got - expected).abs().max().item() < 1e-5


def test_mfcc_features_are_per_clip_and_validated():
    a, b = torch.from_numpy(speechlike(2.0, 3)), 0.001 * torch.from_numpy(speechlike(2.0, 4))
    both = mfcc_features(torch.stack([a, b]))
    alone = mfcc_features(b.unsqueeze(0))
    assert torch.allclose(both[1], alone[0], atol=1e-4)  # the 80 dB floor does not leak across the batch
    with pytest.raises(ValueError, match="batch, samples"):
        mfcc_features(a)


def test_crop_features_center_random_and_fusion():
    x = torch.arange(10.0).reshape(1, 10, 1)
    assert crop_features(x, 4).flatten().tolist() == [3, 4, 5, 6]
    padded = crop_features(x, 13)
    assert padded.shape == (1, 13, 1) and padded[0, 10:].abs().sum() == 0 and padded[0, 9, 0] == 9
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    r1 = crop_features(x, 4, mode="random", generator=g1)
    assert torch.equal(r1, crop_features(x, 4, mode="random", generator=g2))
    start = int(r1[0, 0, 0])
    assert r1.flatten().tolist() == list(range(start, start + 4))
    pair = crop_features([x, 2 * x], 4, mode="random", generator=torch.Generator().manual_seed(1))
    assert torch.equal(pair[1], 2 * pair[0])
    with pytest.raises(ValueError, match="mode"):
        crop_features(x, 4, mode="middle")
    with pytest.raises(ValueError, match="features\\[1\\]"):
        crop_features([x, x[:, :5]], 4)


def test_window_starts_cover_clip_with_bounded_spacing():
    assert window_starts(300, 384, 50) == [0]
    starts = window_starts(1000, 384, 50)
    assert starts[0] == 0 and starts[-1] == 1000 - 384
    assert max(b - a for a, b in zip(starts, starts[1:])) <= 50
    assert len(starts) == math.ceil((1000 - 384) / 50) + 1


def test_predict_long_is_mean_over_windows():
    head = load_released_head("mfcc")
    feats = realistic_features(head, 700, batch=2, seed=7)[0]
    with torch.no_grad():
        got = predict_long(head, feats, hop=100)
        starts = window_starts(700, 384, 100)
        manual = torch.stack([head(feats[:, s:s + 384]) for s in starts]).mean(0)
        short = predict_long(head, feats[:, :200])
        assert torch.allclose(got, manual, atol=1e-5)
        assert torch.allclose(short, head(crop_features(feats[:, :200])))
    fusion = load_released_head("300m", "fusion")
    pair = realistic_features(fusion, 500, batch=1, seed=8)
    with torch.no_grad():
        assert predict_long(fusion, pair).shape == (1,)


def test_positions_extend_beyond_table_and_head_takes_any_length():
    table = sinusoid_positions(384, 32, 768)
    longer = sinusoid_positions(500, 32, 768)
    assert torch.allclose(longer[:384], table)
    head = SqaHead(HeadConfig(dim_input=12, dim_transformer=16, n_heads=2, n_layers=1)).eval()
    with torch.no_grad():
        for n in (50, 384, 500):
            out = head(torch.randn(2, n, 12))
            assert out.shape == (2,) and torch.isfinite(out).all()


def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match="backbone"):
        load_released_head("600m", 5)
    with pytest.raises(ValueError, match="layer"):
        load_released_head("1b", 5)
    with pytest.raises(ValueError, match="variant"):
        load_released_head("300m", 5, variant="half")
    with pytest.raises(ValueError, match="n_heads"):
        HeadConfig(dim_input=10, dim_transformer=30, n_heads=4)
    with pytest.raises(ValueError, match="unknown keys"):
        HeadConfig.from_dict({"dim_input": 10, "dims": 3})
    cfg = HeadConfig(dim_input=40, fusion=True)
    assert HeadConfig.from_dict(cfg.to_dict()) == cfg
    head = load_released_head("mfcc")
    with pytest.raises(ValueError, match=r"\(batch, frames, 40\)"):
        head(torch.randn(2, 384, 41))
    with pytest.raises(ValueError, match="2 feature tensors"):
        load_released_head("300m", "fusion")(torch.randn(1, 384, 1024))
    sd = torch.load(released_head_path("mfcc"), weights_only=True)
    sd["extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="extra.weight"):
        convert_released_state_dict(sd)
