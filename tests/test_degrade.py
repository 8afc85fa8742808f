"""Tests for sqa.synth.degradations (degradation chain) and sqa.synth.codecs (ffmpeg codec round trips)."""

from __future__ import annotations

import json
import time
from collections import Counter

import numpy as np
import pytest
from scipy import signal

from sqa.synth import codecs
from sqa.synth import degradations as D

from signals import formant_speech

SR = 16000




@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return formant_speech(2.0, seed=1)


def band_energy(y: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(y)) ** 2
    f = np.fft.rfftfreq(len(y), 1 / SR)
    return float(spec[(f >= lo) & (f < hi)].sum())


def lag_of(y: np.ndarray, x: np.ndarray, max_lag: int = 400) -> int:
    c = signal.correlate(y, x, mode="full")
    lags = signal.correlation_lags(len(y), len(x), mode="full")
    keep = np.abs(lags) <= max_lag
    return int(lags[keep][np.argmax(c[keep])])


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize("make, match", [
    (lambda: D.WhiteNoise(snr_db=100), r"white_noise: parameter snr_db=100 is outside the allowed "
                                       r"range \[-20.0, 60.0\]"),
    (lambda: D.Quantize(bits=1), r"quantize: parameter bits=1 is outside the allowed range \[2, 16\]"),
    (lambda: D.Quantize(bits=4.5), r"quantize: parameter bits=4.5 must be an integer in \[2, 16\]"),
    (lambda: D.Lowpass(cutoff_hz=10), r"lowpass: parameter cutoff_hz=10 .*\[50.0, 20000.0\]"),
    (lambda: D.Bandpass(2000, 1000), r"bandpass: parameter high_hz=1000.0 must exceed low_hz"),
    (lambda: D.PacketLoss(0.2, model="markov"), r"packet_loss: parameter model='markov' is not one "
                                                r"of the allowed values \['bernoulli', "),
    (lambda: D.PacketLoss(0.9), r"packet_loss: parameter loss_rate=0.9 .*\[0.0, 0.5\]"),
    (lambda: D.PacketLoss(0.2, mean_burst=3.0), r"packet_loss: parameter mean_burst=3.0 applies only"),
    (lambda: D.Hum(10, hum_hz=55), r"hum: parameter hum_hz=55 is not one of the allowed values \[50, 60\]"),
    (lambda: D.Clipping(threshold=0.0), r"clipping: parameter threshold=0.0 .*\[0.01, 1.0\]"),
    (lambda: D.Gain(gain_db=float("nan")), r"gain: parameter gain_db=nan must be a number"),
    (lambda: D.Resample(rate_hz=9000), r"resample: parameter rate_hz=9000 is not one of the allowed"),
    (lambda: D.SpectralSubtraction(floor=2), r"spectral_subtraction: parameter floor=2 .*\[0.0, 1.0\]"),
    (lambda: D.Babble(5, n_talkers=2, talkers=("a",)), r"babble: parameter n_talkers=2 must equal"),
    (lambda: D.Reverb(0.1, (20, 20, 5), (2, 2, 1.5), (5, 5, 1.5)),
     r"reverb: parameter rt60_s=0.1 is too short for room_m=\[20.0, 20.0, 5.0\]"),
    (lambda: D.Reverb(0.5, (4, 3, 2.5), (2, 2, 1.5), (5, 1, 1.5)),
     r"reverb: parameter mic_m=\[5.0, 1.0, 1.5\] has x=5.0, outside the allowed range \[0.1, 3.90\]"),
    (lambda: D.Codec("opus", 300), r"codec: parameter bitrate_kbps=300 is outside the allowed range "
                                   r"\[6.0, 128.0\] for codec 'opus'"),
    (lambda: D.Codec("amr_nb", 9), r"codec: parameter bitrate_kbps=9 is not one of the allowed values"),
    (lambda: D.Codec("bogus"), r"codec: parameter codec='bogus' is not one of the known codecs"),
])
def test_bad_parameter_names_degradation_parameter_and_range(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_apply_time_errors_are_clear(x):
    with pytest.raises(ValueError, match=r"lowpass: parameter cutoff_hz=9000.0 must be below the "
                                         r"Nyquist frequency 8000.0"):
        D.Lowpass(9000).apply(x, SR, 0)
    with pytest.raises(ValueError, match=r"babble: talkers \['a'\] are recorded but apply\(\) got no pool"):
        D.Babble(5, 1, ("a",)).apply(x, SR, 0)
    with pytest.raises(ValueError, match="white_noise: input is silent"):
        D.WhiteNoise(5).apply(np.zeros(SR, np.float32), SR, 0)
    with pytest.raises(ValueError, match="chain: audio must be a non-empty 1-D"):
        D.Chain(()).apply(np.zeros((2, 100)), SR, 0)
    with pytest.raises(ValueError, match="chain: step 0 .*unknown parameters \\['snr'\\]"):
        D.Chain.from_json(json.dumps({"version": 1, "steps": [{"name": "white_noise",
                                                                "params": {"snr": 3}}]}))
    with pytest.raises(ValueError, match="chain: step 0 must be"):
        D.Chain.from_json(json.dumps({"version": 1, "steps": [{"name": "nope", "params": {}}]}))
    with pytest.raises(ValueError, match=r"sampler: families=\['noise', 'wind'\] must be distinct"):
        D.ChainSampler(families=("noise", "wind"))


# ---------------------------------------------------------------- seeds and serialization


def test_same_seed_same_output_different_seed_different(x):
    chain = D.Chain((D.PinkNoise(10), D.PacketLoss(0.2, "gilbert_elliott", 3.0, "repeat")))
    a, b, c = chain.apply(x, SR, 7), chain.apply(x, SR, 7), chain.apply(x, SR, 8)
    assert a.dtype == np.float32 and len(a) == len(x)
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)
    assert D.sample_chain(3).to_json() == D.sample_chain(3).to_json()
    assert len({D.sample_chain(s).to_json() for s in range(10)}) > 5


def test_json_round_trip_reproduces_output(x):
    sampler = D.ChainSampler(n_min=2, n_max=3, codecs=codecs.available_codecs())
    for seed in range(10):
        chain = sampler.sample(seed)
        text = chain.to_json()
        again = D.Chain.from_json(text)
        assert again == chain and again.to_json() == text
        assert np.array_equal(chain.apply(x, SR, seed), again.apply(x, SR, seed)), str(chain)
    assert sampler.skipped == Counter()


def test_sampler_draws_families_in_physical_order():
    fams = ("noise", "enhance", "loss")
    for seed in range(20):
        chain = D.sample_chain(seed, families=fams, n_min=1, n_max=2)
        n_families = len(chain.steps) - chain.families.count("enhance")  # enhance adds 2 steps
        assert 1 <= n_families <= 2 and set(chain.families) <= set(fams)
        assert list(chain.families) == sorted(chain.families, key=D.ORDER.index)
        if "enhance" in chain.families:  # enhancement = a noise, then the enhancer
            i = chain.families.index("enhance")
            assert isinstance(chain.steps[i - 1], D.AdditiveNoise)
    full = D.sample_chain(0, families=("enhance",))
    assert [s.family for s in full.steps] == ["noise", "enhance"]


def test_chain_rescales_overload_instead_of_clipping(x):
    y = D.Chain((D.Gain(6.0), D.WhiteNoise(-5.0))).apply(x, SR, 0)
    g = np.random.default_rng(0)
    raw = D.WhiteNoise(-5.0).apply(D.Gain(6.0).apply(x, SR, g), SR, g)
    assert np.max(np.abs(raw)) > 1.0
    assert np.allclose(y, raw / np.max(np.abs(raw)), atol=1e-6)
    assert np.array_equal(D.Chain(()).apply(x, SR, 0), x)


# ---------------------------------------------------------------- noise


@pytest.mark.parametrize("deg", [
    D.WhiteNoise(-5.0), D.PinkNoise(10.0), D.BrownNoise(40.0), D.Babble(0.0, 5), D.Hum(20.0, 60.0, 4),
    D.Clicks(15.0, 8.0), D.BandNoise(3.0, 500.0, 1500.0),
])
def test_noise_hits_target_active_speech_snr(x, deg):
    y = deg.apply(x, SR, 0)
    noise = y.astype(np.float64) - x
    snr = 10 * np.log10(D.active_power(x, SR) / np.mean(noise**2))
    assert abs(snr - deg.snr_db) < 0.5
    assert 10 * np.log10(np.mean(x.astype(float) ** 2) / np.mean(noise**2)) < snr


def test_noise_kinds_have_their_spectra(x):
    def slope(deg):
        n = deg.apply(x, SR, 1).astype(float) - x
        f, p = signal.welch(n, SR, nperseg=2048)
        keep = (f > 100) & (f < 4000)
        return np.polyfit(np.log10(f[keep]), np.log10(p[keep]), 1)[0]

    assert abs(slope(D.WhiteNoise(0))) < 0.3
    assert abs(slope(D.PinkNoise(0)) + 1) < 0.3
    assert abs(slope(D.BrownNoise(0)) + 2) < 0.3
    hum = D.Hum(0, 50.0, 3).apply(x, SR, 0).astype(float) - x
    assert band_energy(hum, 45, 155) > 0.98 * band_energy(hum, 0, SR / 2)
    band = D.BandNoise(0, 1000.0, 2000.0).apply(x, SR, 0).astype(float) - x
    assert band_energy(band, 800, 2500) > 0.95 * band_energy(band, 0, SR / 2)
    clicks = D.Clicks(0, 3.0).apply(x, SR, 0).astype(float) - x
    assert np.mean(clicks**4) / np.mean(clicks**2) ** 2 > 20  # impulsive: heavy kurtosis


def test_babble_from_pool_and_self_babble_fallback(x):
    pool = {f"utt{i}": formant_speech(1.3, seed=10 + i) for i in range(3)}
    deg = D.Babble(5.0, 3, ("utt0", "utt2", "utt1"))
    y = deg.apply(x, SR, 0, pool=pool)
    assert np.array_equal(y, deg.apply(x, SR, 0, pool=pool))
    noise = y.astype(float) - x
    assert abs(10 * np.log10(D.active_power(x, SR) / np.mean(noise**2)) - 5.0) < 0.5
    with pytest.raises(ValueError, match=r"babble: talkers \['utt2'\] are not in the pool"):
        deg.apply(x, SR, 0, pool={"utt0": pool["utt0"], "utt1": pool["utt1"]})
    own = D.Babble(5.0, 4).apply(x, SR, 0).astype(float) - x  # shifted copies, not the clip itself
    assert abs(np.corrcoef(own, x)[0, 1]) < 0.3
    for seed in range(40):
        chain = D.ChainSampler(families=("noise",), pool_ids=list(pool)).sample(seed)
        if isinstance(chain.steps[0], D.Babble):
            assert set(chain.steps[0].talkers) <= set(pool) and chain.steps[0].talkers
            break
    else:
        pytest.fail("no babble drawn in 40 noise chains")


# ---------------------------------------------------------------- reverb


def test_reverb_adds_decay_tail_keeps_alignment_and_rt60():
    import pyroomacoustics as pra

    x = formant_speech(1.5, seed=2, silence_s=0.5)
    tail = slice(len(x) - SR // 2, None)
    fractions = {}
    for rt60 in (0.3, 1.2):
        deg = D.Reverb(rt60, (6.0, 5.0, 3.0), (2.0, 2.5, 1.6), (3.0, 2.6, 1.4))
        y = deg.apply(x, SR, 0).astype(float)
        assert len(y) == len(x)
        assert np.isclose(np.sqrt(np.mean(y**2)), np.sqrt(np.mean(x.astype(float) ** 2)), rtol=1e-3)
        fractions[rt60] = np.sum(y[tail] ** 2) / np.sum(y**2)
        assert abs(lag_of(y, x)) <= 2  # direct path compensated
        h, _ = deg.rir(SR, np.random.default_rng(0))
        assert abs(pra.experimental.measure_rt60(h, fs=SR, decay_db=30) / rt60 - 1) < 0.15
    assert np.sum(x[tail].astype(float) ** 2) == 0
    assert fractions[1.2] > 3 * fractions[0.3] > 3e-4


def test_reverb_is_fast_on_4s_clip():
    x = formant_speech(4.0, seed=3)
    sampler = D.ChainSampler(families=("reverb",))
    sampler.sample(0).apply(x, SR, 0)  # warm-up: pyroomacoustics import
    times = []
    for seed in range(1, 4):
        chain = sampler.sample(seed)
        t0 = time.perf_counter()
        chain.apply(x, SR, seed)
        times.append(time.perf_counter() - t0)
    assert np.median(times) < 0.5, times


# ---------------------------------------------------------------- band limitation


def test_band_limitation_removes_out_of_band_energy(x):
    total = band_energy(x, 0, SR / 2)
    low = D.Lowpass(2000.0).apply(x, SR, 0)
    assert band_energy(low, 3000, SR / 2) < 1e-4 * band_energy(x, 3000, SR / 2)
    assert band_energy(low, 0, 1500) > 0.95 * band_energy(x, 0, 1500)
    high = D.Highpass(1000.0).apply(x, SR, 0)
    assert band_energy(high, 0, 500) < 1e-3 * band_energy(x, 0, 500)
    band = D.Bandpass(500.0, 2500.0).apply(x, SR, 0)
    assert band_energy(band, 700, 2000) > 0.9 * band_energy(x, 700, 2000)
    assert band_energy(band, 0, 250) + band_energy(band, 4000, SR / 2) < 1e-3 * total
    tel = D.Resample(8000).apply(x, SR, 0)
    assert len(tel) == len(x)
    assert band_energy(tel, 4500, SR / 2) < 1e-4 * band_energy(x, 4500, SR / 2)
    assert np.corrcoef(tel, D.Lowpass(3800.0).apply(x, SR, 0))[0, 1] > 0.95


# ---------------------------------------------------------------- codecs


def test_every_available_codec_round_trips_aligned_with_same_length():
    names = codecs.available_codecs()
    assert {"g711_mulaw", "g711_alaw"} <= set(names)  # pcm codecs are in every ffmpeg build
    # a parametric codec keeps no waveform to correlate: tests/test_codec_tools.py checks codec2
    names = [n for n in names if codecs.CODECS[n].waveform]
    x = formant_speech(1.0, seed=4)
    odd = formant_speech(1.37, seed=5)
    for name in names:
        y = codecs.roundtrip(x, SR, name)
        assert y.dtype == np.float32 and len(y) == len(x), name
        assert np.all(np.isfinite(y)) and not np.array_equal(y, x), name
        z = codecs.roundtrip(odd, SR, name)
        assert len(z) == len(odd)
        assert abs(lag_of(z, odd)) <= 2, (name, lag_of(z, odd), codecs.codec_delay(name))
        assert np.corrcoef(z, odd)[0, 1] > 0.5, name


def test_high_bitrate_opus_is_aligned_at_lag_zero():
    if "opus" not in codecs.available_codecs():
        pytest.skip("this ffmpeg has no libopus")
    x = formant_speech(1.5, seed=6)
    y = D.Codec("opus", 64).apply(x, SR, 0)
    corr = [np.corrcoef(np.roll(y, k), x)[0, 1] for k in range(-3, 4)]
    assert corr[3] > 0.95 and int(np.argmax(corr)) == 3
    low = D.Codec("opus", 6).apply(x, SR, 0)
    assert np.mean((low - x) ** 2) > np.mean((y - x) ** 2)  # lower bit rate, larger error


def test_unavailable_codec_is_warned_and_counted(monkeypatch, x):
    with pytest.raises(codecs.CodecUnavailable, match="'bogus' is not one of the known codecs"):
        codecs.roundtrip(x, SR, "bogus")
    with pytest.warns(UserWarning, match="skipping unavailable codec 'bogus'"):
        sampler = D.ChainSampler(families=("codec",), codecs=("bogus", "g711_alaw"))
        chains = [sampler.sample(seed) for seed in range(6)]
    assert all(c.steps == (D.Codec("g711_alaw"),) for c in chains)
    assert 0 < sampler.skipped["bogus"] < 6 and set(sampler.skipped) == {"bogus"}

    skipped: Counter = Counter()
    with pytest.warns(UserWarning) as caught:
        chain = D.sample_chain(0, families=("codec",), codecs=("bogus",), skipped=skipped)
    messages = [str(w.message) for w in caught]
    assert any("skipping unavailable codec 'bogus'" in m for m in messages)
    assert any("none of the codecs ['bogus'] is available" in m for m in messages)
    assert chain.steps == () and skipped == Counter({"bogus": 1, "family:codec": 1})

    monkeypatch.setattr(codecs, "available_codecs", lambda: ("g711_mulaw",))
    with pytest.raises(codecs.CodecUnavailable, match="codec='g711_alaw' needs ffmpeg encoder 'pcm_alaw'"):
        D.Codec("g711_alaw")


# ---------------------------------------------------------------- packet loss


def test_packet_loss_zero_fill_matches_mask_and_rate():
    x = formant_speech(10.0, seed=7)
    deg = D.PacketLoss(0.2)
    y = deg.apply(x, SR, 3)
    frames = y[: len(y) // 320 * 320].reshape(-1, 320)
    zero = np.all(frames == 0, axis=1)
    mask = deg.loss_mask(-(-len(x) // 320), np.random.default_rng(3))[: len(zero)]
    assert np.array_equal(zero, mask)
    assert abs(zero.mean() - 0.2) < 0.05
    kept = ~mask
    assert np.array_equal(frames[kept], x[: len(frames) * 320].reshape(-1, 320)[kept])


def test_packet_loss_bursts_and_repeat_concealment(x):
    ge = D.PacketLoss(0.2, "gilbert_elliott", 4.0)
    lost = ge.loss_mask(40000, np.random.default_rng(0))
    edges = np.diff(np.r_[0, lost.astype(int), 0])
    bursts = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
    assert abs(lost.mean() - 0.2) < 0.02 and abs(bursts.mean() - 4.0) < 0.3
    bern = D.PacketLoss(0.2).loss_mask(40000, np.random.default_rng(0))
    edges = np.diff(np.r_[0, bern.astype(int), 0])
    assert (np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)).mean() < 1.5

    rep = D.PacketLoss(0.3, concealment="repeat")
    y = rep.apply(x, SR, 5)
    mask = rep.loss_mask(-(-len(x) // 320), np.random.default_rng(5))
    yf, xf = y.reshape(-1, 320), x.reshape(-1, 320)
    last = np.zeros(320, np.float32)
    for i, m in enumerate(mask):
        assert np.array_equal(yf[i], last if m else xf[i])
        last = last if m else xf[i]
    assert mask.any()


# ---------------------------------------------------------------- clipping, quantization, level


def test_clipping_quantization_and_gain(x):
    clipped = D.Clipping(0.3).apply(x, SR, 0)
    assert np.isclose(np.max(np.abs(clipped)), 0.3 * np.max(np.abs(x)))
    assert np.mean(np.abs(clipped) == np.max(np.abs(clipped))) > 0.01
    q = D.Quantize(4).apply(x, SR, 0)
    assert len(np.unique(q)) <= 16 and np.max(np.abs(q - x)) <= 2.0**-4 + 1e-7
    q8 = D.Quantize(8).apply(x, SR, 0)
    assert np.mean((q8 - x) ** 2) < np.mean((q - x) ** 2) / 100  # ~6 dB per bit
    quiet = D.Gain(-12.0).apply(x, SR, 0)
    assert np.allclose(quiet, x * 10 ** (-12 / 20), atol=1e-7)
    loud = D.Gain(20.0).apply(x, SR, 0)
    assert np.max(np.abs(loud)) == 1.0 and np.mean(np.abs(loud) == 1.0) > 0.01


# ---------------------------------------------------------------- enhancement


def test_spectral_subtraction_reduces_noise_and_leaves_musical_noise():
    x = formant_speech(2.0, seed=8, silence_s=0.6)
    noisy = D.WhiteNoise(5.0).apply(x, SR, 0)
    enhanced = D.SpectralSubtraction(3.0, 0.005).apply(noisy, SR, 0)
    assert len(enhanced) == len(x)
    pause = slice(len(x) - int(0.5 * SR), None)
    assert np.mean((enhanced[pause]) ** 2) < 0.2 * np.mean(noisy[pause] ** 2)
    assert 0.5 < np.sqrt(np.mean(enhanced[: SR] ** 2) / np.mean(x[: SR] ** 2)) < 1.5

    def peakiness(s):  # kurtosis of STFT magnitudes: isolated spectral peaks = musical noise
        m = np.abs(signal.stft(s, fs=SR, nperseg=512)[2])
        return np.mean(m**4) / np.mean(m**2) ** 2

    assert peakiness(enhanced[pause]) > 2 * peakiness(noisy[pause])
