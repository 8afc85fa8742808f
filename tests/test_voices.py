"""Tests for sqa.synth.voices: every offline voice speaks, varies with the generator, and is skipped
cleanly where its Debian package is absent; human recordings are found with their licences.

Tests of a voice or recording set that needs an apt package skip (naming the package) where it is
not installed; the piper voice (a pip dependency) and the registry tests always run.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from sqa.data import audio
from sqa.synth import voices
from sqa.synth.codec_tools import TOOL_CODECS
from sqa.synth.speech import active_level_db

pytestmark = pytest.mark.usefixtures("one_thread")

SR = 16000
TEXT = "Please bring the blue umbrella to the station before noon."


def need(voice: voices.Voice) -> None:
    if not voice.available():
        pytest.skip(f"{voice.name} is not installed (apt-get install {voice.package})")


def by_name(name: str) -> voices.Voice:
    return next(v for v in voices.VOICES if v.name == name)


def band_share(x: np.ndarray, lo: float, hi: float) -> float:
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / SR)
    return float(spectrum[(freqs >= lo) & (freqs < hi)].sum() / spectrum.sum())


def median_f0(x: np.ndarray) -> float:
    """Median autocorrelation pitch (60-400 Hz) over the loudest 40 ms frames."""
    n = int(0.04 * SR)
    frames = x[: len(x) // n * n].reshape(-1, n).astype(np.float64)
    loud = frames[np.sum(frames ** 2, axis=1) > 0.1 * np.max(np.sum(frames ** 2, axis=1))]
    lags = np.arange(SR // 400, SR // 60)
    f0 = [SR / lags[np.argmax([np.dot(f[:-k], f[k:]) for k in lags])] for f in loud]
    return float(np.median(f0))


@pytest.mark.parametrize("voice", voices.VOICES, ids=lambda v: v.name)
def test_every_voice_speaks_16k_speech_that_varies_with_the_generator(voice):
    need(voice)
    x = voice.synthesize(TEXT, np.random.default_rng(0))
    assert x.dtype == np.float32 and x.ndim == 1 and np.all(np.isfinite(x))
    assert 1.5 < len(x) / SR < 8.0, len(x) / SR  # about 10 words
    assert np.max(np.abs(x)) <= 10 ** (-1 / 20) + 1e-6  # peak at or below -1 dBFS
    assert -60.0 < active_level_db(x) <= voices.LEVEL_DB[1] + 0.2
    assert band_share(x, 80, 5000) > 0.8  # speech band, not noise or a tone at the edges
    frames = x[: len(x) // 320 * 320].reshape(-1, 320)
    loud = np.mean(frames ** 2, axis=1) > 1e-3 * np.max(np.mean(frames ** 2, axis=1))
    assert 0.3 < loud.mean() < 1.0  # syllables and pauses, not one steady sound
    again = voice.synthesize(TEXT, np.random.default_rng(0))
    other = voice.synthesize(TEXT, np.random.default_rng(1))
    assert np.array_equal(x, again)
    assert len(other) != len(x) or not np.allclose(other, x, atol=1e-3)


def test_espeak_variants_are_different_voices():
    female, male = by_name("espeak-en-gb+f3"), by_name("espeak-en-gb+m3")
    need(female)
    f = female.synthesize(TEXT, np.random.default_rng(3))
    m = male.synthesize(TEXT, np.random.default_rng(3))
    assert median_f0(f) > 1.4 * median_f0(m)  # the variant is applied, not silently dropped


@pytest.mark.parametrize("name", ["espeak-en-us+m3", "flite-slt", "festival-kal", "festival-slt-hts"])
def test_style_moves_pitch_and_rate(name):
    voice = by_name(name)
    need(voice)
    clips = [voice.synthesize(TEXT, np.random.default_rng(seed)) for seed in range(6)]
    durations = [len(c) / SR for c in clips]
    pitches = [median_f0(c) for c in clips]
    assert max(durations) / min(durations) > 1.1
    assert max(pitches) / min(pitches) > 1.1


def test_available_skips_absent_tools(monkeypatch):
    monkeypatch.setattr(voices.shutil, "which", lambda *args, **kwargs: None)
    assert [v.name for v in voices.available()] == ["piper-joe"]
    tts = voices.describe().query("kind == 'tts'")
    assert tts.loc[tts["available"], "name"].tolist() == ["piper-joe"]
    with pytest.raises(voices.VoiceError, match=r"espeak-en-us\+m3: not installed here .*apt-get install espeak-ng"):
        by_name("espeak-en-us+m3").synthesize(TEXT, np.random.default_rng(0))


def test_a_failing_program_is_reported_with_its_stderr(tmp_path, monkeypatch):
    fake = tmp_path / "espeak-ng"
    fake.write_text(f"#!{sys.executable}\nimport sys\nsys.stderr.write('no such voice: xx')\nsys.exit(3)\n")
    fake.chmod(0o755)
    monkeypatch.setattr(voices.shutil, "which", lambda name, *args, **kwargs: str(fake))
    with pytest.raises(voices.VoiceError, match=r"espeak-en-us\+m3: espeak-ng failed \(exit 3.*no such voice: xx"):
        by_name("espeak-en-us+m3").synthesize(TEXT, np.random.default_rng(0))


def test_bad_arguments_are_named():
    piper = by_name("piper-joe")
    with pytest.raises(ValueError, match="piper-joe: text must be a non-empty string"):
        piper.synthesize("  ", np.random.default_rng(0))
    with pytest.raises(TypeError, match="rng must be a numpy Generator, got int"):
        piper.synthesize(TEXT, 0)


def test_registry_names_are_unique_and_packages_are_in_the_apt_list():
    names = [v.name for v in voices.VOICES] + [s.name for s in voices.HUMAN_SOURCES]
    assert len(names) == len(set(names))
    assert len([v for v in voices.VOICES if v.engine == "espeak-ng"]) == 96
    apt = {v.package for v in voices.VOICES if v.engine != "piper"}
    apt |= {s.package for s in voices.HUMAN_SOURCES} | {c.package for c in TOOL_CODECS.values()}
    assert apt <= set(voices.DEBIAN_PACKAGES), apt - set(voices.DEBIAN_PACKAGES)
    table = voices.describe()
    assert list(table.columns) == ["name", "kind", "package", "licence", "available"]
    assert len(table) == len(names) and set(table["kind"]) == {"tts", "human"}
    assert table["licence"].str.len().min() > 2


def test_human_speech_files_skip_excluded_and_missing_folders(tmp_path):
    for rel in ("a.wav", "digits/1.wav", "silence/1.wav", "Noise.wav", "notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    source = voices.HumanSpeech("t", "pkg", "CC0", "en", "someone", str(tmp_path), exclude=("silence", "Noise.wav"))
    assert [p.relative_to(tmp_path).as_posix() for p in source.files()] == ["a.wav", "digits/1.wav"]
    gone = voices.HumanSpeech("t", "pkg", "CC0", "en", "someone", str(tmp_path / "absent"))
    assert gone.files() == []


@pytest.mark.parametrize("source", voices.HUMAN_SOURCES, ids=lambda s: s.name)
def test_installed_human_recordings_are_speech(source):
    files = source.files()
    if not files:
        pytest.skip(f"{source.name} is not installed (apt-get install {source.package})")
    recordings = [r for r in voices.human_recordings() if r.source == source]
    assert [r.path for r in recordings] == files
    assert not any("silence" in r.path.parts or r.path.name == "Noise.wav" for r in recordings)
    longest = max(files[:40], key=lambda p: p.stat().st_size)
    x = audio.load(longest, SR)
    assert len(x) > 0.3 * SR and np.all(np.isfinite(x))
    assert -50.0 < active_level_db(x) < 0.0
    assert band_share(x, 80, 5000) > 0.8


def test_a_voice_programs_wav_whose_header_promises_one_frame_more_is_read(tmp_path):
    import soundfile as sf

    from sqa.data import audio

    wav = tmp_path / "speech.wav"
    sf.write(wav, np.linspace(-0.5, 0.5, 22050, dtype=np.float32), 22050, subtype="PCM_16")
    raw = bytearray(wav.read_bytes())
    at = raw.index(b"data") + 4
    raw[at:at + 4] = (int.from_bytes(raw[at:at + 4], "little") + 2).to_bytes(4, "little")
    wav.write_bytes(bytes(raw))
    with pytest.raises(audio.AudioError):
        audio.load(wav)
    x = voices.read_output(wav, 16000)
    assert x.dtype == np.float32 and abs(len(x) - 16000) <= 1 and np.isfinite(x).all()
