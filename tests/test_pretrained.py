"""sqa.load and the shipped students: names resolve to files in sqa/weights (a tiny random student stands
in for them here), files and arrays score like the model itself, arrays need their rate, bad input is
named, a missing shipped file says how to build it, and every shipped file that exists scores a clip."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

import sqa
from sqa import export, pretrained, score
from sqa.data import audio
from sqa.models import checkpoint, student

from signals import speechlike

SR = 16000
REAL_WEIGHTS = pretrained.WEIGHTS_DIR  # the package's own folder, before any test moves it


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 50k student with random weights and a 2-s window, saved as the shipped default."""
    torch.manual_seed(3)
    model = student.ConvTransformerSQA(student.preset("50k")).with_window(2.0).eval()
    folder = tmp_path_factory.mktemp("weights")
    checkpoint.save(folder / f"{pretrained.DEFAULT}.safetensors", model, model.arch, model.checkpoint_config())
    return model, folder


@pytest.fixture
def shipped(tiny, monkeypatch):
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", tiny[1])
    return tiny[0]


def torch_mos(model: student.ConvTransformerSQA, wave: np.ndarray) -> float:
    with torch.no_grad():
        return float(model(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))[None])[0])


def test_load_default_scores_files_and_arrays_like_the_model(shipped, tmp_path) -> None:
    model = sqa.load()
    assert model.name == pretrained.DEFAULT and model.source == str(pretrained.path(pretrained.DEFAULT))
    assert model.n_params == sum(p.numel() for p in shipped.parameters()) and model.note == ""
    clip = speechlike(3.0, 1, snr_db=10)
    want = torch_mos(shipped, clip)
    assert model.score(clip, sample_rate=SR) == pytest.approx(want, abs=1e-5)
    sf.write(tmp_path / "a.flac", clip, SR)
    assert model.score(tmp_path / "a.flac") == pytest.approx(want, abs=1e-4)
    assert model.score(str(tmp_path / "a.flac")) == pytest.approx(want, abs=1e-4)
    other = speechlike(3.0, 2, snr_db=0)
    assert abs(model.score(other, SR) - want) > 1e-4  # random weights still tell clips apart
    stereo = np.stack([clip, 0.5 * other], axis=1)
    assert model.score(stereo, SR) == pytest.approx(torch_mos(shipped, stereo.mean(axis=1)), abs=1e-5)


def test_arrays_at_another_rate_are_resampled_like_files(shipped, tmp_path) -> None:
    model = sqa.load(pretrained.DEFAULT)
    clip = speechlike(2.5, 4, snr_db=20, sr=44100)
    sf.write(tmp_path / "b.wav", clip, 44100, subtype="FLOAT")
    from_file = model.score(tmp_path / "b.wav")
    assert model.score(clip, sample_rate=44100) == pytest.approx(from_file, abs=1e-5)
    assert model.score(clip.astype(np.float64), sample_rate=44100.0) == pytest.approx(from_file, abs=1e-5)
    assert abs(model.score(clip, sample_rate=SR) - from_file) > 1e-4  # the rate matters: it is not ignored


def test_score_many_equals_score_one_by_one(shipped) -> None:
    model = sqa.load()
    clips = [speechlike(2.0, 5), speechlike(2.0, 6, snr_db=5), speechlike(4.3, 7), speechlike(0.8, 8)]
    many = model.score_many(clips, sample_rate=SR, batch_size=2)
    assert many.shape == (4,) and many.dtype == np.float64
    np.testing.assert_allclose(many, [model.score(c, SR) for c in clips], atol=1e-5)
    assert model.score_many([], sample_rate=SR).shape == (0,)


@pytest.mark.parametrize("clip, kwargs, error, match", [
    (speechlike(1.0, 0), {}, ValueError, r"needs sample_rate .*sample_rate=16000"),
    (speechlike(1.0, 0)[None, :], {"sample_rate": SR}, audio.AudioError, r"looks like \(channels, samples\).*x\.T"),
    ((speechlike(1.0, 0) * 32767).astype(np.int16), {"sample_rate": SR}, audio.AudioError, "must be floats"),
    (np.full(SR, np.nan, np.float32), {"sample_rate": SR}, audio.AudioError, "16000 non-finite samples"),
    (np.zeros((2, 2, SR), np.float32), {"sample_rate": SR}, audio.AudioError, r"got shape \(2, 2, 16000\)"),
    (np.zeros(0, np.float32), {"sample_rate": SR}, audio.AudioError, "non-empty"),
    (speechlike(0.3, 0), {"sample_rate": SR}, audio.AudioError, r"0\.300 s long, shorter than the 0\.5 s"),
    (speechlike(1.0, 0), {"sample_rate": 100}, audio.AudioError, "unsupported sample_rate 100"),
])
def test_bad_arrays_fail_clearly(shipped, clip, kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        sqa.load().score(clip, **kwargs)


def test_bad_paths_and_calls_fail_clearly(shipped, tmp_path) -> None:
    model = sqa.load()
    sf.write(tmp_path / "c.wav", speechlike(1.0, 0), SR)
    with pytest.raises(ValueError, match="c.wav: sample_rate applies to arrays only"):
        model.score(tmp_path / "c.wav", sample_rate=SR)
    with pytest.raises(audio.AudioError, match="missing.wav: file not found"):
        model.score(tmp_path / "missing.wav")
    with pytest.raises(TypeError, match="takes a list of clips"):
        model.score_many(str(tmp_path / "c.wav"))
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        model.score_many([tmp_path / "c.wav"], batch_size=0)
    with pytest.raises(score.ScoreError, match="not a shipped student .*sqa-50k"):
        sqa.load("sqa-2M")
    with pytest.raises(score.ScoreError, match="--device must be"):
        sqa.load(device="tpu")


def test_missing_shipped_file_names_it_and_how_to_build_it(shipped) -> None:
    with pytest.raises(pretrained.MissingWeights) as err:
        sqa.load("sqa-1M")
    assert str(pretrained.WEIGHTS_DIR / "sqa-1M.safetensors") in str(err.value)
    assert "sqa reproduce --profile release" in str(err.value)
    with pytest.raises(FileNotFoundError, match=r"sqa-250k\.onnx is missing"):
        pretrained.weights_file(pretrained.DEFAULT, "onnx")
    with pytest.raises(ValueError, match="runtime must be one of torch, onnx"):
        pretrained.path(pretrained.DEFAULT, "tflite")


def test_run_folders_checkpoints_and_onnx_files_load_too(tiny, tmp_path) -> None:
    model, folder = tiny
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.safetensors").write_bytes((folder / f"{pretrained.DEFAULT}.safetensors").read_bytes())
    (run / "params.json").write_text(json.dumps({"profile": "demo"}))
    clip = speechlike(3.5, 9, snr_db=15)
    from_run = sqa.load(run)
    assert from_run.score(clip, SR) == pytest.approx(torch_mos(model, clip), abs=1e-5)
    assert "predict PESQ-WB of synthetic speech" in from_run.note  # a demo run's model says what it learned
    onnx_file = export.export(run, "onnx")
    from_onnx = sqa.load(onnx_file)
    assert from_onnx.name.startswith("onnx")
    assert from_onnx.score(clip, SR) == pytest.approx(torch_mos(model, clip), abs=1e-4)


def test_importing_sqa_stays_light_and_load_is_lazy() -> None:
    code = ("import sys, sqa; assert 'torch' not in sys.modules and 'sqa.pretrained' not in sys.modules; "
            "load = sqa.load; import sqa.pretrained; assert load is sqa.pretrained.load; "
            "assert 'load' in dir(sqa); print(sqa.__version__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == sqa.__version__
    with pytest.raises(AttributeError, match="no attribute 'lod'"):
        sqa.lod  # noqa: B018 - the attribute access is the test


@pytest.mark.parametrize("runtime", list(pretrained.SUFFIXES))
@pytest.mark.parametrize("name", pretrained.NAMES)
def test_every_shipped_file_scores_a_clip(name, runtime, monkeypatch) -> None:
    """The files shipped in the package's own sqa/weights (built by the release profile)."""
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", REAL_WEIGHTS)
    file = pretrained.path(name, runtime)
    assert file.is_file() and file.stat().st_size < 8 * 2**20, f"{file} is missing or over 8 MB"
    model = sqa.load(name) if runtime == "torch" else sqa.load(file)
    mos = model.score(speechlike(4.0, 11, snr_db=20), sample_rate=SR)
    assert np.isfinite(mos) and 1.0 <= mos <= 5.0
    if runtime == "torch":
        assert "imitates the released DistillMOS" in model.note


@pytest.mark.parametrize("name", pretrained.NAMES)
def test_shipped_onnx_is_the_same_model_as_the_checkpoint(name, monkeypatch) -> None:
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", REAL_WEIGHTS)
    files = [pretrained.path(name, runtime) for runtime in pretrained.SUFFIXES]
    onnx, torch_model = sqa.load(files[1]), sqa.load(name)
    clips = [speechlike(4.0, 12, snr_db=40), speechlike(9.0, 13, snr_db=5), speechlike(15.0, 15, snr_db=40)]
    np.testing.assert_allclose(onnx.score_many(clips, SR), torch_model.score_many(clips, SR), atol=1e-4)
    # digital silence (half of this clip is exact zeros) makes |X|^0.3 ill-conditioned: the two
    # runtimes' STFTs differ in the last bits of near-zero bins, which moves the score by up to ~1e-3
    silent_gaps = speechlike(4.0, 12)
    assert np.mean(silent_gaps == 0) > 0.4
    assert abs(onnx.score(silent_gaps, SR) - torch_model.score(silent_gaps, SR)) < 2e-3
