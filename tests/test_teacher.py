import numpy as np
import pytest
import torch

from sqa.models import checkpoint
from sqa.models.teacher import SslFeatures, TeacherConfig, XlsrTeacher, parse_name, tiny_backbone


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return tiny_backbone(tmp_path_factory.mktemp("w2v2") / "tiny", seed=0, layers=4)


def wave(n=2, seconds=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(16000 * seconds)) / 16000
    return 0.3 * torch.sin(2 * np.pi * 220 * t) * torch.rand(n, 1, generator=g) + 0.01 * torch.randn(n, t.numel(), generator=g)


def test_parse_name():
    assert parse_name("xlsr-2b-l10") == ("facebook/wav2vec2-xls-r-2b", [10])
    assert parse_name("xlsr-300m-l5+21") == ("facebook/wav2vec2-xls-r-300m", [5, 21])
    with pytest.raises(ValueError, match="xlsr-<300m|1b|2b>"):
        parse_name("xlsr-3b-l10")


@pytest.mark.parametrize("layer", [0, 1, 3])
def test_block_outputs_equal_hidden_states_of_the_full_model(backbone, layer):
    from transformers import Wav2Vec2Model

    full = Wav2Vec2Model.from_pretrained(str(backbone)).eval()
    feats = SslFeatures(backbone, [layer] if layer else [0]).eval()
    x = wave(1)
    with torch.no_grad():
        norm = (x - x.mean(1, keepdim=True)) / torch.sqrt(x.var(1, keepdim=True, unbiased=False) + 1e-7)
        ref = full(norm, output_hidden_states=True).hidden_states[layer]
        ours = feats(x)[0]
    assert len(feats.model.encoder.layers) == max(layer, 1)
    assert ours.shape == ref.shape and abs(ours.shape[1] - 150) <= 2  # 50 frames/s
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_teacher_forward_fusion_and_checkpoint_round_trip(backbone, tmp_path):
    teacher = XlsrTeacher(TeacherConfig(str(backbone), [2, 4], head={"dim_transformer": 16, "n_layers": 1}))
    teacher.eval()
    x = wave(2, seconds=9.0)  # longer than 384 frames: windowed
    with torch.no_grad():
        mos = teacher(x)
    assert mos.shape == (2,) and torch.all((mos >= 1) & (mos <= 5))
    assert teacher.head.config.fusion and teacher.head.config.dim_input == 32
    path = checkpoint.save(tmp_path / "t.safetensors", teacher, "xlsr-teacher", teacher.checkpoint_config())
    loaded, info = checkpoint.load(path)
    loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), mos)
    assert info.arch == "xlsr-teacher"


def test_a_deep_copy_captures_its_own_block_outputs(backbone):
    import copy

    teacher = XlsrTeacher(TeacherConfig(str(backbone), [0, 3], head={"dim_transformer": 16, "n_layers": 1})).eval()
    twin = copy.deepcopy(teacher)
    with torch.no_grad():
        for p in twin.features.model.encoder.layers[2].parameters():
            p.add_(0.5)
        x = wave(1)
        ours, theirs = twin.features(x), teacher.features(x)
    assert twin.features._captured.keys() == {0, 3} and teacher.features._captured.keys() == {0, 3}
    torch.testing.assert_close(ours[0], theirs[0])
    assert not torch.allclose(ours[1], theirs[1])  # the copy's changed block 3, not the original's


def test_frozen_backbone_and_finetune_top(backbone):
    t = XlsrTeacher(TeacherConfig(str(backbone), [3]))
    trainable = {n for n, p in t.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("head.") for n in trainable)
    t2 = XlsrTeacher(TeacherConfig(str(backbone), [3], finetune_top=1))
    assert any(n.startswith("features.model.encoder.layers.2.") for n, p in t2.named_parameters() if p.requires_grad)
    assert not any(n.startswith("features.model.encoder.layers.1.") for n, p in t2.named_parameters() if p.requires_grad)


def test_too_high_layer_is_named(backbone):
    with pytest.raises(ValueError, match="layer 9 requested but .* has 4 encoder blocks"):
        SslFeatures(backbone, [9])


def test_long_clips_go_through_the_encoder_in_bounded_chunks(backbone, monkeypatch):
    """Memory stays bounded for any clip length: past WHOLE_CLIP_MAX_S the encoder sees chunks of
    at most 1.5 times that; shorter clips still go through whole (as the released model scores them)."""
    from sqa.models import teacher as T

    model = XlsrTeacher(TeacherConfig(str(backbone), [3], head={"dim_transformer": 16, "n_layers": 1})).eval()
    monkeypatch.setattr(T, "WHOLE_CLIP_MAX_S", 2.0)
    seen = []
    features = model.features.forward
    monkeypatch.setattr(model.features, "forward", lambda w: seen.append(w.shape[-1]) or features(w))
    wave = 0.1 * torch.randn(1, int(6.8 * T.SAMPLE_RATE), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        short = model(wave[:, : 2 * T.SAMPLE_RATE])
        assert seen == [2 * T.SAMPLE_RATE]
        seen.clear()
        long = model(wave)
    assert seen == [2 * T.SAMPLE_RATE, 2 * T.SAMPLE_RATE, int(2.8 * T.SAMPLE_RATE)]  # the 0.8-s tail joins
    assert torch.isfinite(long).all() and 1.0 <= float(long) <= 5.0 and short.shape == long.shape == (1,)
