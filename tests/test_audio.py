"""Tests for sqa.data.audio: reading, resampling, downmix, errors, block reading, crop/pad/segment, save."""

from __future__ import annotations

import math
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import soundfile as sf

from sqa.data import audio
from sqa.data.audio import AudioError


def sine(freq: float, sr: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spec)])


def write(path: Path, x: np.ndarray, sr: int, subtype: str = "FLOAT") -> Path:
    sf.write(path, x, sr, subtype=subtype)
    return path


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Resample on one thread: on a busy 2-core machine torch's thread pool is ~10x slower."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------- errors


def test_missing_file_names_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.wav"
    for call in (audio.load, audio.info, lambda p: next(audio.iter_blocks(p))):
        with pytest.raises(AudioError, match=r"nope\.wav: file not found"):
            call(path)


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="not a regular file"):
        audio.load(tmp_path)


def test_random_bytes_with_wav_suffix(tmp_path: Path) -> None:
    path = tmp_path / "noise.wav"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    for call in (audio.load, audio.info):
        with pytest.raises(AudioError, match=r"noise\.wav: unrecognised or corrupt audio header"):
            call(path)


def test_truncated_riff_header(tmp_path: Path) -> None:
    good = write(tmp_path / "good.wav", sine(440, 16000, 0.1), 16000, "PCM_16")
    bad = tmp_path / "cut.wav"
    bad.write_bytes(good.read_bytes()[:20])  # 'RIFF' size 'WAVE' 'fmt ' + 4 bytes: fmt chunk missing
    assert bad.read_bytes()[:4] == b"RIFF"
    with pytest.raises(AudioError, match=r"cut\.wav: unrecognised or corrupt audio header"):
        audio.load(bad)


def test_truncated_flac_data(tmp_path: Path) -> None:
    good = audio.save(tmp_path / "good.flac", np.random.default_rng(0).uniform(-0.3, 0.3, 48000))
    cut = tmp_path / "cut.flac"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert audio.info(cut).frames == 48000  # the header still promises the whole clip
    with pytest.raises(AudioError, match=r"cut\.flac: cannot decode frames .* of 48000"):
        audio.load(cut)


def test_zero_length_is_error_but_info_reports_it(tmp_path: Path) -> None:
    path = write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000, "PCM_16")
    assert audio.info(path).frames == 0
    with pytest.raises(AudioError, match=r"empty\.wav: empty audio \(0 frames\)"):
        audio.load(path)
    with pytest.raises(AudioError, match="0 frames"):
        list(audio.iter_blocks(path))


def test_all_silent_returns_zeros(tmp_path: Path) -> None:
    path = write(tmp_path / "silence.wav", np.zeros(22050, np.int16), 22050, "PCM_16")
    x = audio.load(path)
    assert x.dtype == np.float32 and len(x) == 16000
    assert not np.any(x)
    assert audio.is_silent(x)


def test_is_silent_threshold() -> None:
    quiet = sine(300, 16000, 0.5, amp=10 ** (-50 / 20) * math.sqrt(2))  # RMS = -50 dBFS
    assert audio.is_silent(quiet, threshold_db=-40)
    assert not audio.is_silent(quiet, threshold_db=-60)
    assert not audio.is_silent(sine(300, 16000, 0.5))
    assert audio.is_silent(np.zeros(0, np.float32))


def test_nan_and_inf_are_counted(tmp_path: Path) -> None:
    x = sine(440, 16000, 1.0)
    x[[10, 20, 30]] = np.nan
    x[[5000, 9000]] = [np.inf, -np.inf]
    path = write(tmp_path / "bad.wav", x, 16000, "FLOAT")
    with pytest.raises(AudioError, match=r"bad\.wav: 5 non-finite samples \(3 NaN, 2 inf\), first at frame 10 "):
        audio.load(path)


def test_nonfinite_counted_over_whole_file_in_blocks(tmp_path: Path) -> None:
    x = sine(440, 8000, 2.0)
    x[4000] = np.nan  # 0.5 s
    x[12000] = np.inf  # 1.5 s
    path = write(tmp_path / "late.wav", x, 8000, "FLOAT")
    blocks = audio.iter_blocks(path, block_seconds=0.25)
    assert len(next(blocks)) == 4000  # the first, clean block comes out
    with pytest.raises(AudioError, match=r"2 non-finite samples \(1 NaN, 1 inf\), first at frame 4000 \(0\.500 s\)"):
        list(blocks)


@pytest.mark.parametrize("target_sr", [0, -16000, 4000, 400000, 16000.5, "16000", True, None])
def test_unsupported_target_sr(tmp_path: Path, target_sr: object) -> None:
    path = write(tmp_path / "a.wav", sine(440, 16000, 0.1), 16000)
    with pytest.raises(AudioError, match=r"a\.wav: unsupported target_sr"):
        audio.load(path, target_sr)  # type: ignore[arg-type]


def test_integral_float_target_sr_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path / "a.wav", sine(440, 16000, 0.1), 16000)
    assert len(audio.load(path, 8000.0)) == 800  # type: ignore[arg-type]


def test_max_seconds(tmp_path: Path) -> None:
    path = write(tmp_path / "a.wav", sine(440, 48000, 2.0), 48000)
    assert len(audio.load(path, max_seconds=0.5)) == 8000
    assert len(audio.load(path, max_seconds=10)) == 32000
    for bad in (0, -1, float("nan")):
        with pytest.raises(AudioError, match=r"a\.wav: max_seconds must be a positive number"):
            audio.load(path, max_seconds=bad)


# ---------------------------------------------------------------- content


@pytest.mark.parametrize("channels", [2, 6])
def test_multichannel_is_mean_of_channels(tmp_path: Path, channels: int) -> None:
    data = np.stack([sine(200 * (c + 1), 16000, 0.5, amp=0.9 / channels) + 0.01 * c for c in range(channels)], axis=1)
    path = write(tmp_path / f"ch{channels}.wav", data, 16000, "FLOAT")
    assert audio.info(path).channels == channels
    x = audio.load(path)
    assert x.ndim == 1 and x.dtype == np.float32
    np.testing.assert_allclose(x, data.mean(axis=1), atol=1e-6)


def test_multichannel_resampled(tmp_path: Path) -> None:
    data = np.stack([sine(1000, 48000, 1.0, 0.1)] * 6, axis=1)
    data[:, 3] = 0  # mean of 6 channels, one silent: 5/6 of the tone
    path = write(tmp_path / "six.wav", data, 48000, "PCM_16")
    x = audio.load(path)
    assert len(x) == 16000
    assert peak_hz(x, 16000) == pytest.approx(1000, abs=2)
    np.testing.assert_allclose(np.max(np.abs(x[1000:-1000])), 0.1 * 5 / 6, rtol=0.01)


@pytest.mark.parametrize("sr", [8000, 22050, 44100, 48000])
def test_resampling_keeps_length_and_frequency(tmp_path: Path, sr: int) -> None:
    path = write(tmp_path / f"s{sr}.wav", sine(1000, sr, 1.5) + sine(2500, sr, 1.5, 0.2), sr, "PCM_16")
    x = audio.load(path)
    assert x.dtype == np.float32
    assert len(x) == math.ceil(round(1.5 * sr) * 16000 / sr)
    assert peak_hz(x, 16000) == pytest.approx(1000, abs=2)
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    freqs = np.fft.rfftfreq(len(x), 1 / 16000)
    ratio = spec[np.abs(freqs - 2500) < 5].max() / spec[np.abs(freqs - 1000) < 5].max()
    assert ratio == pytest.approx(0.4, rel=0.02)  # the second tone keeps its place and level


def test_downsampling_removes_content_above_nyquist(tmp_path: Path) -> None:
    x = sine(12000, 44100, 1.0)  # above the 8 kHz Nyquist of 16 kHz: must not alias to 4 kHz
    path = write(tmp_path / "hf.wav", x, 44100, "FLOAT")
    y = audio.load(path)
    assert np.sqrt(np.mean(y[2000:-2000] ** 2)) < 1e-2 * np.sqrt(np.mean(x**2))  # below -40 dB


def test_block_resampling_equals_whole_signal(tmp_path: Path) -> None:
    import torch
    import torchaudio.functional

    x = np.random.default_rng(1).standard_normal(44100 * 3).astype(np.float32) * 0.1
    path = write(tmp_path / "n.wav", x, 44100, "FLOAT")
    ref = torchaudio.functional.resample(torch.from_numpy(x), 44100, 16000).numpy()
    blocks = list(audio.iter_blocks(path, block_seconds=0.3))
    assert len(blocks) == 10
    np.testing.assert_allclose(np.concatenate(blocks), ref, atol=1e-6)
    np.testing.assert_allclose(audio.load(path), ref, atol=1e-6)


def test_pcm_subtypes_scale_to_unit_range(tmp_path: Path) -> None:
    i16 = np.array([0, 16384, -32768, 32767, -1], np.int16)
    x = audio.load(write(tmp_path / "i16.wav", i16, 16000, "PCM_16"))
    np.testing.assert_array_equal(x, i16 / np.float32(32768))
    i32 = np.array([0, 2**30, -(2**31), 2**31 - 1], np.int32)
    x = audio.load(write(tmp_path / "i32.wav", i32, 16000, "PCM_32"))
    np.testing.assert_allclose(x, i32 / 2.0**31, atol=1e-9)
    assert x.dtype == np.float32 and x.min() == -1.0 and x.max() <= 1.0


def test_float_subtype_exact_and_not_clipped(tmp_path: Path) -> None:
    f = np.array([0.0, 0.25, -0.75, 1.5, -2.0], np.float32)
    path = write(tmp_path / "f.wav", f, 16000, "FLOAT")
    assert audio.info(path).subtype == "FLOAT"
    np.testing.assert_array_equal(audio.load(path), f)  # documented: float files are not clipped


def test_flac_round_trip(tmp_path: Path) -> None:
    x = sine(440, 16000, 0.7)
    path = audio.save(tmp_path / "a.flac", x)
    i = audio.info(path)
    assert (i.format, i.subtype, i.frames, i.sample_rate, i.channels) == ("FLAC", "PCM_16", len(x), 16000, 1)
    np.testing.assert_allclose(audio.load(path), x, atol=1 / 32768)


def test_ogg_round_trip(tmp_path: Path) -> None:
    x = sine(440, 22050, 1.0)
    path = audio.save(tmp_path / "a.ogg", x, sr=22050)
    i = audio.info(path)
    assert (i.format, i.subtype, i.frames) == ("OGG", "VORBIS", len(x))
    y = audio.load(path)
    assert len(y) == 16000
    assert peak_hz(y, 16000) == pytest.approx(440, abs=2)
    ref = sine(440, 16000, 1.0)
    assert np.corrcoef(y[500:-500], ref[500:-500])[0, 1] > 0.99


def test_info_reads_header(tmp_path: Path) -> None:
    path = write(tmp_path / "i.wav", np.zeros((44100, 2), np.float32), 44100, "PCM_24")
    i = audio.info(path)
    assert i == audio.AudioInfo(path, 44100, 2, 44100, 1.0, "WAV", "PCM_24")


def test_long_file_bounded_memory(tmp_path: Path, one_torch_thread: None) -> None:
    sr, minutes = 8000, 20
    frames = sr * 60 * minutes
    path = tmp_path / "long.wav"
    chunk = sine(500, sr, 60.0)  # 500 Hz repeats exactly every 60 s
    with sf.SoundFile(path, "w", sr, 1, "PCM_16") as f:
        for _ in range(minutes):
            f.write(chunk)
    decoded_bytes = frames * 4  # float32 at the file's rate
    assert audio.info(path).frames == frames

    list(audio.iter_blocks(path, block_seconds=10.0, max_seconds=20.0))  # warm up torch's conv buffers
    rss_measured = _reset_peak_rss()
    rss_before = _peak_rss()
    tracemalloc.start()
    try:
        n_out = n_blocks = 0
        for block in audio.iter_blocks(path, block_seconds=10.0):
            n_out += len(block)
            n_blocks += 1
            if n_blocks == 61:
                middle = block
        _, peak_blocks = tracemalloc.get_traced_memory()
        rss_blocks = _peak_rss() - rss_before
        tracemalloc.reset_peak()
        _reset_peak_rss()
        rss_before = _peak_rss()
        x = audio.load(path)
        _, peak_load = tracemalloc.get_traced_memory()
        rss_load = _peak_rss() - rss_before
    finally:
        tracemalloc.stop()
    assert n_blocks == 120 and n_out == 2 * frames == len(x)
    assert peak_hz(middle, 16000) == pytest.approx(500, abs=1)
    np.testing.assert_array_equal(middle, x[60 * 160000 : 61 * 160000])
    # tracemalloc sees numpy/python allocations; peak RSS also sees torch's buffers
    assert peak_blocks < decoded_bytes / 20, f"iter_blocks peaked at {peak_blocks / 1e6:.1f} MB"
    if rss_measured:
        assert rss_blocks < decoded_bytes / 4, f"iter_blocks raised peak RSS by {rss_blocks / 1e6:.1f} MB"
    assert peak_load < 1.1 * x.nbytes, f"load peaked at {peak_load / 1e6:.1f} MB for {x.nbytes / 1e6:.1f} MB out"
    if rss_measured:
        assert rss_load < 1.25 * x.nbytes, f"load raised peak RSS by {rss_load / 1e6:.1f} MB"


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS (Linux); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _peak_rss() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# ---------------------------------------------------------------- crop / pad / segment


def test_crop_or_pad_modes() -> None:
    x = np.arange(1, 11, dtype=np.float32)
    np.testing.assert_array_equal(audio.crop_or_pad(x, 4, "start"), [1, 2, 3, 4])
    np.testing.assert_array_equal(audio.crop_or_pad(x, 4, "center"), [4, 5, 6, 7])
    np.testing.assert_array_equal(audio.crop_or_pad(x, 14, "start"), [*range(1, 11), 0, 0, 0, 0])
    np.testing.assert_array_equal(audio.crop_or_pad(x, 14, "center"), [0, 0, *range(1, 11), 0, 0])
    assert audio.crop_or_pad(x, 10) is not x and np.array_equal(audio.crop_or_pad(x, 10), x)
    crops = [audio.crop_or_pad(x, 4, "random", np.random.default_rng(s)) for s in range(20)]
    assert all(len(c) == 4 and np.all(np.diff(c) == 1) for c in crops)
    assert len({c[0] for c in crops}) > 1
    a = audio.crop_or_pad(x, 14, "random", np.random.default_rng(3))
    b = audio.crop_or_pad(x, 14, "random", np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and np.array_equal(a[a != 0], x)


def test_crop_or_pad_rejects_bad_arguments() -> None:
    x = np.zeros(10, np.float32)
    with pytest.raises(ValueError, match="needs rng"):
        audio.crop_or_pad(x, 4, "random")
    with pytest.raises(ValueError, match="n must be a positive integer"):
        audio.crop_or_pad(x, 0)
    with pytest.raises(ValueError, match="mode must be"):
        audio.crop_or_pad(x, 4, "end")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must be 1-D"):
        audio.crop_or_pad(np.zeros((2, 5)), 4)


@pytest.mark.parametrize("length", [1, 99, 100, 101, 150, 1000, 1234])
def test_segment_covers_clip(length: int) -> None:
    n, hop = 100, 40
    x = np.arange(1, length + 1, dtype=np.float32)
    w = audio.segment(x, n, hop)
    expected = 1 if length <= n else math.ceil((length - n) / hop) + 1
    assert w.shape == (expected, n) and w.dtype == np.float32
    if length <= n:
        np.testing.assert_array_equal(w[0], audio.crop_or_pad(x, n, "start"))
        return
    starts = w[:, 0].astype(int) - 1
    assert starts[0] == 0 and starts[-1] + n == length
    assert np.all(np.diff(starts) > 0) and np.all(np.diff(starts) <= hop)
    np.testing.assert_array_equal(starts, (np.linspace(0, 1, expected) * (length - n)).astype(int))
    for s, row in zip(starts, w):
        np.testing.assert_array_equal(row, x[s : s + n])
    covered = np.zeros(length, bool)
    for s in starts:
        covered[s : s + n] = True
    assert covered.all()


def test_segment_rejects_gapped_hop() -> None:
    with pytest.raises(ValueError, match="hop must be an integer in 1..n=100"):
        audio.segment(np.zeros(1000, np.float32), 100, 101)


# ---------------------------------------------------------------- save


def test_save_is_atomic_and_validates(tmp_path: Path) -> None:
    x = sine(440, 16000, 0.2)
    path = audio.save(tmp_path / "sub" / "out.wav", x)
    assert [p.name for p in path.parent.iterdir()] == ["out.wav"]
    assert audio.info(path).subtype == "PCM_16"
    with pytest.raises(AudioError, match=r"out\.xyz: cannot tell the audio format"):
        audio.save(tmp_path / "out.xyz", x)
    with pytest.raises(AudioError, match=r"o\.ogg: subtype 'PCM_16' is not valid for OGG.*VORBIS"):
        audio.save(tmp_path / "o.ogg", x, subtype="PCM_16")
    with pytest.raises(AudioError, match=r"loud\.wav: peak 1\.5 exceeds 1\.0"):
        audio.save(tmp_path / "loud.wav", x * 3)
    audio.save(tmp_path / "loud.wav", x * 3, subtype="FLOAT")
    y = x.copy()
    y[3] = np.nan
    with pytest.raises(AudioError, match="1 NaN/inf samples"):
        audio.save(tmp_path / "nan.wav", y)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loud.wav", "sub"]


def test_import_and_native_rate_load_do_not_import_torch(tmp_path: Path) -> None:
    path = write(tmp_path / "a.wav", sine(440, 16000, 0.1), 16000)
    code = f"import sys, sqa.data.audio as a; a.load({str(path)!r}); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_header_lengths_rates_and_truncation_are_checked(tmp_path) -> None:
    """A header must not promise more than the file can hold; the file's own rate must be 8-192 kHz."""
    sf.write(tmp_path / "ok.wav", np.zeros(16000, np.float32) + 0.1, 16000)
    data = (tmp_path / "ok.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[:-1000])
    with pytest.raises(audio.AudioError, match=r"cut.wav: WAV data chunk declares 32000 bytes .* truncated"):
        audio.load(tmp_path / "cut.wav")
    sf.write(tmp_path / "slow.wav", np.zeros(100, np.float32), 4000)
    with pytest.raises(audio.AudioError, match=r"sample rate 4000 Hz is outside the supported 8000..192000 Hz"):
        audio.load(tmp_path / "slow.wav")
    assert audio.info(tmp_path / "slow.wav").sample_rate == 4000  # info reports, load refuses


def test_any_decoder_exception_names_the_file(tmp_path, monkeypatch) -> None:
    sf.write(tmp_path / "a.wav", np.zeros(1600, np.float32) + 0.1, 16000)

    def boom(*args, **kwargs):
        raise MemoryError("decoder ran out")

    monkeypatch.setattr(audio, "_read", boom)
    with pytest.raises(audio.AudioError, match=r"a.wav: cannot decode \(MemoryError: decoder ran out\)"):
        audio.load(tmp_path / "a.wav")


def test_resample_poly_is_scipys_polyphase_filter_at_the_reduced_ratio() -> None:
    from scipy import signal

    x = np.random.default_rng(0).standard_normal(22050).astype(np.float32)
    y = audio.resample_poly(x, 22050, 16000)
    assert y.dtype == np.float64 and len(y) == 16000
    assert np.array_equal(y, signal.resample_poly(x.astype(np.float64), 320, 441))  # 16000/22050 reduced
    same = audio.resample_poly(x, 8000, 8000)
    assert same.dtype == np.float64 and np.array_equal(same, x) and not np.shares_memory(same, x)
