"""Tests for the Debian codec tools (sqa.synth.codec_tools) as run by sqa.synth.codecs: codec2, Speex, GSM.

A codec whose programs are absent skips its round-trip tests (naming the package); the
availability, error and sampler tests run everywhere.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from scipy import signal

from sqa.synth import codec_tools, codecs
from sqa.synth import degradations as D

from signals import formant_speech

SR = 16000
CASES = [(name, kbps) for name, spec in codec_tools.TOOL_CODECS.items()
         for kbps in sorted({min(spec.kbps_choices), spec.default_kbps, max(spec.kbps_choices)})]


def need(name: str) -> None:
    spec = codec_tools.TOOL_CODECS[name]
    if name not in codecs.available_codecs():
        pytest.skip(f"{spec.encoder}/{spec.decoder} not installed (apt-get install {spec.package})")


def band_envelopes(x: np.ndarray) -> np.ndarray:
    """Log energy in 6 bands (200-3400 Hz), 10 ms frames."""
    freqs, _, z = signal.stft(x, SR, nperseg=320, noverlap=160)
    edges = np.geomspace(200, 3400, 7)
    return np.log(np.stack([np.sum(np.abs(z[(freqs >= lo) & (freqs < hi)]) ** 2, axis=0)
                            for lo, hi in zip(edges[:-1], edges[1:])]) + 1e-9)


def envelope_corr(y: np.ndarray, x: np.ndarray, shift: int = 0) -> float:
    """Correlation of the band envelopes of ``y`` shifted by ``shift`` 10-ms frames and ``x``."""
    ey, ex = band_envelopes(y), band_envelopes(x)
    ey = np.roll(ey, -shift, axis=1)[:, 5:-5]
    return float(np.corrcoef(ey.ravel(), ex[:, 5:-5].ravel())[0, 1])


@pytest.mark.parametrize("name, kbps", CASES)
def test_round_trip_keeps_length_changes_the_signal_and_stays_correlated(name, kbps):
    need(name)
    x = formant_speech(1.0, seed=4)
    y = codecs.roundtrip(x, SR, name, kbps)
    assert y.dtype == np.float32 and len(y) == len(x) and np.all(np.isfinite(y))
    assert not np.allclose(y, x, atol=1e-3)
    corr = [envelope_corr(y, x, k) for k in (-2, -1, 0, 1, 2)]
    assert corr[2] > 0.6 and corr[2] >= max(corr) - 0.02, corr  # aligned to within 10 ms
    spec = codec_tools.TOOL_CODECS[name]
    if spec.waveform and kbps >= spec.default_kbps:
        assert np.corrcoef(y, x)[0, 1] > 0.7


def test_codec_degradation_draws_every_mode_from_low_to_high():
    need("codec2")
    sampler = D.ChainSampler(families=("codec",), codecs=("codec2",))
    rates = {sampler.sample(seed).steps[0].bitrate_kbps for seed in range(60)}
    assert rates == set(codec_tools.TOOL_CODECS["codec2"].kbps_choices)
    x = formant_speech(1.0, seed=2)
    y = D.Codec("codec2", 0.7).apply(x, SR, 0)
    assert len(y) == len(x) and envelope_corr(y, x) > 0.5


def test_lower_speex_bit_rate_means_larger_error():
    need("speex_wb")
    x = formant_speech(1.5, seed=6)
    errors = [np.mean((codecs.roundtrip(x, SR, "speex_wb", kbps) - x) ** 2) for kbps in (5.75, 12.8, 42.2)]
    assert errors[0] > errors[1] > errors[2]


@pytest.mark.parametrize("seconds", [0.5, 7.0])
def test_speex_delay_does_not_depend_on_the_clip_length(seconds):
    # speexdec keeps the encoder lookahead when the stream fits on one Ogg page (short, low-rate)
    need("speex_nb")
    x = formant_speech(seconds, seed=7)
    y = codecs.roundtrip(x, SR, "speex_nb", 8.0)
    c = signal.correlate(y, x, mode="full")
    lags = signal.correlation_lags(len(y), len(x), mode="full")
    keep = np.abs(lags) <= 400
    assert abs(int(lags[keep][np.argmax(c[keep])])) <= 2


def test_gsm_is_fixed_rate_and_bad_bit_rates_are_named():
    need("gsm_fr")
    assert codecs.resolve_bitrate("gsm_fr", None) == 13.0
    with pytest.raises(ValueError, match=r"bitrate_kbps=6 is not one of the allowed values \[13.0\] for codec 'gsm_fr'"):
        codecs.resolve_bitrate("gsm_fr", 6)
    with pytest.raises(ValueError, match=r"codec 'codec2': bit rate 5 kb/s is not one of"):
        codec_tools.tool_commands(codec_tools.TOOL_CODECS["codec2"], 5)


@pytest.fixture
def no_codec_tools(monkeypatch):
    monkeypatch.setattr(codec_tools.shutil, "which", lambda *args, **kwargs: None)
    codecs.available_codecs.cache_clear()
    yield
    codecs.available_codecs.cache_clear()


def test_absent_tools_are_unavailable_skipped_and_counted(no_codec_tools):
    names = codecs.available_codecs()
    assert not set(codec_tools.TOOL_CODECS) & set(names)
    assert {"g711_mulaw", "g711_alaw"} <= set(names)  # ffmpeg codecs are unaffected
    with pytest.raises(codecs.CodecUnavailable, match=r"codec='codec2' needs the programs 'c2enc' and 'c2dec' "
                                                       r"on PATH \(Debian package 'codec2': apt-get install codec2\)"):
        codecs.roundtrip(formant_speech(0.5), SR, "codec2")
    with pytest.warns(UserWarning, match="skipping unavailable codec 'speex_nb'"):
        sampler = D.ChainSampler(families=("codec",), codecs=("speex_nb", "g711_alaw"))
        chains = [sampler.sample(seed) for seed in range(6)]
    assert all(c.steps == (D.Codec("g711_alaw"),) for c in chains)
    assert 0 < sampler.skipped["speex_nb"] < 6 and set(sampler.skipped) == {"speex_nb"}


def test_a_failing_codec_program_is_reported_with_its_stderr(monkeypatch):
    need("gsm_fr")
    failing = [sys.executable, "-c", "import sys; sys.stderr.write('bad frame'); sys.exit(2)"]
    monkeypatch.setattr(codecs, "tool_commands", lambda spec, kbps: (failing, failing))
    with pytest.raises(codecs.CodecError, match=r"failed while encoding gsm_fr at 13.0 kb/s \(exit 2\): bad frame"):
        codecs.roundtrip(formant_speech(0.5), SR, "gsm_fr")
