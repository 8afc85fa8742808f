"""Sentence generator and the piper TTS voice: format, rate, pitch, level, determinism, errors."""

from __future__ import annotations

import hashlib
import json
import pickle
import subprocess
import sys

import numpy as np
import pytest

from sqa.synth import sentences, speech

SR = speech.SAMPLE_RATE
TEXT = "Did you remember to water the plants before half past two?"
LONG_TEXT = "Last winter we took the night train from Vienna to Oslo to visit my grandmother and her dog."


@pytest.fixture(scope="module")
def voice() -> speech.Voice:
    return speech.Voice()


@pytest.fixture(scope="module")
def base(voice: speech.Voice) -> np.ndarray:
    return voice.synthesize(TEXT)


def _f0_median(x: np.ndarray) -> float:
    """Median f0 over voiced frames, from the normalized autocorrelation of 40 ms frames."""
    n, hop = 640, 160
    lo, hi = SR // 400, SR // 60
    frames = np.lib.stride_tricks.sliding_window_view(x.astype(np.float64), n)[::hop]
    loud = frames.std(axis=1) > 0.1 * frames.std(axis=1).max()
    f0s = []
    for frame in frames[loud]:
        frame = frame - frame.mean()
        spec = np.fft.rfft(frame, 2 * n)
        ac = np.fft.irfft(spec * np.conj(spec))[: hi + 1]
        lag = lo + int(np.argmax(ac[lo:]))
        if ac[lag] > 0.5 * ac[0]:
            f0s.append(SR / lag)
    assert len(f0s) > 20, "too few voiced frames to estimate f0"
    return float(np.median(f0s))


def test_sentences_deterministic_unique_and_varied():
    a = sentences.generate(500, seed=3)
    assert a == sentences.generate(500, seed=3)
    assert a[:50] == sentences.generate(50, seed=3)
    assert a != sentences.generate(500, seed=4)
    assert len(set(a)) == 500
    assert all(s.strip() == s and s[0].isupper() and s[-1] in ".?" for s in a)
    words = np.array([len(s.split()) for s in a])
    assert words.min() >= 5 and words.max() <= 18
    assert 8 <= np.median(words) <= 14
    assert 0.1 < np.mean([s.endswith("?") for s in a]) < 0.5
    assert any(s.startswith("Please") for s in a)
    assert len(set(sentences.generate(20000, seed=0))) == 20000
    assert sentences.generate(0, seed=1) == []


def test_sentences_reject_bad_arguments():
    with pytest.raises(ValueError, match="n must be"):
        sentences.generate(-1)
    with pytest.raises(ValueError, match="seed must be"):
        sentences.generate(3, seed="x")  # type: ignore[arg-type]
    assert sentences.number_words(42) == "forty-two"
    assert sentences.number_words(305) == "three hundred and five"
    with pytest.raises(ValueError, match="0..999"):
        sentences.number_words(1000)


def test_output_format_and_duration(voice, base):
    assert base.dtype == np.float32 and base.ndim == 1
    assert np.all(np.isfinite(base)) and np.max(np.abs(base)) < 1.0
    seconds = len(base) / SR
    assert 0.15 < seconds / len(TEXT.split()) < 0.6
    long = voice.synthesize(LONG_TEXT)
    word_ratio = len(LONG_TEXT.split()) / len(TEXT.split())
    assert 0.6 * word_ratio < len(long) / len(base) < 1.6 * word_ratio


def test_rate_changes_duration(voice, base):
    slow = voice.synthesize(TEXT, rate=0.8)
    fast = voice.synthesize(TEXT, rate=1.25)
    assert len(slow) > 1.08 * len(base)
    assert len(fast) < 0.92 * len(base)


def test_pitch_shift_moves_f0(voice, base):
    f0 = _f0_median(base)
    up = _f0_median(voice.synthesize(TEXT, pitch_semitones=3.0))
    down = _f0_median(voice.synthesize(TEXT, pitch_semitones=-3.0))
    assert 60 < f0 < 250
    assert up > f0 > down
    assert up / f0 == pytest.approx(2 ** (3 / 12), rel=0.06)
    assert down / f0 == pytest.approx(2 ** (-3 / 12), rel=0.06)


@pytest.mark.parametrize("target", [-35.0, -24.0])
def test_level_hits_target(voice, target):
    x = voice.synthesize(LONG_TEXT, level_db=target, seed=5)
    assert speech.active_level_db(x) == pytest.approx(target, abs=0.2)
    # An independent estimate: mean power over the 20 ms frames within 30 dB of the loudest one.
    frames = x[: len(x) // 320 * 320].reshape(-1, 320).astype(np.float64)
    power = np.mean(frames**2, axis=1)
    active = power > power.max() * 1e-3
    assert 10 * np.log10(power[active].mean()) == pytest.approx(target, abs=2.0)


def test_active_level_on_known_signals():
    t = np.arange(2 * SR) / SR
    sine = 0.1 * np.sin(2 * np.pi * 440 * t)
    rms_db = 20 * np.log10(0.1 / np.sqrt(2))
    assert speech.active_level_db(sine) == pytest.approx(rms_db, abs=0.1)
    gated = np.concatenate([sine, np.zeros(4 * SR)])  # silence does not lower the active level
    assert speech.active_level_db(gated) == pytest.approx(rms_db, abs=1.0)
    with pytest.raises(ValueError, match="silent"):
        speech.active_level_db(np.zeros(SR))


def test_deterministic_across_calls_and_processes(voice, base):
    assert voice.synthesize(TEXT).tobytes() == base.tobytes()
    assert voice.synthesize(TEXT, seed=1).tobytes() != base.tobytes()
    assert voice.synthesize(TEXT, noise_w=0.3).tobytes() != base.tobytes()
    code = (
        "import hashlib, sys; from sqa.synth.speech import Voice; "
        "x = Voice(threads=2).synthesize(sys.argv[1]); print(hashlib.sha256(x.tobytes()).hexdigest())"
    )
    out = subprocess.run([sys.executable, "-c", code, TEXT], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == hashlib.sha256(base.tobytes()).hexdigest()


def test_more_noise_frames_keep_the_output(voice, base, monkeypatch):
    monkeypatch.setattr(speech, "_FRAMES_PER_ID", 0.05)  # forces the draw-more path
    assert voice.synthesize(TEXT).tobytes() == base.tobytes()


def test_sample_style_ranges_and_reproducibility(voice):
    styles = [speech.sample_style(np.random.default_rng(7)) for _ in range(2)]
    assert styles[0] == styles[1]
    assert json.loads(json.dumps(styles[0])) == styles[0]
    many = [speech.sample_style(np.random.default_rng(s)) for s in range(200)]
    rates = [s["rate"] for s in many]
    assert 0.8 <= min(rates) < 0.85 and 1.2 < max(rates) <= 1.25
    assert all(-3 <= s["pitch_semitones"] <= 3 for s in many)
    assert all(-35 <= s["level_db"] <= -25 for s in many)
    x = voice.synthesize("Let's meet at the library on Friday.", **styles[0])
    assert speech.active_level_db(x) == pytest.approx(styles[0]["level_db"], abs=0.2)
    with pytest.raises(TypeError, match="Generator"):
        speech.sample_style(3)  # type: ignore[arg-type]


def test_errors_name_the_text_and_parameter(voice):
    with pytest.raises(ValueError, match="non-empty"):
        voice.synthesize("   ")
    with pytest.raises(ValueError, match=r"'Hello there\.'.*rate"):
        voice.synthesize("Hello there.", rate=0.0)
    with pytest.raises(ValueError, match="pitch_semitones"):
        voice.synthesize("Hello there.", pitch_semitones=20)
    with pytest.raises(ValueError, match="seed"):
        voice.synthesize("Hello there.", seed=-1)
    with pytest.raises(ValueError, match="clipping"):
        voice.synthesize("Hello there.", level_db=-4.0)
    with pytest.raises(ValueError, match="threads"):
        speech.Voice(threads=0)
    with pytest.raises(FileNotFoundError, match="no-such.onnx"):
        speech.Voice("no-such.onnx").synthesize("Hello.")


def test_voice_pickles_without_its_session(voice):
    clone = pickle.loads(pickle.dumps(voice))
    assert clone.model_path == voice.model_path and clone.threads == voice.threads
    assert clone._session is None
    assert len(pickle.dumps(voice)) < 2000
