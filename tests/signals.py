"""Synthetic speech-like test signals, one helper per kind, all ``(seconds, seed, ...)`` -> float32 numpy."""

import numpy as np
from scipy import signal

SR = 16000


def speechlike(seconds: float, seed: int, snr_db: float | None = None, sr: int = SR) -> np.ndarray:
    """A harmonic voice with a wandering pitch under a syllable-rate envelope; white noise at
    ``snr_db`` if given. Peak 0.3."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 100 + 20 * seed % 120 + 30 * np.sin(2 * np.pi * 0.4 * t + seed)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voice = sum(np.sin(k * phase) / k ** 1.2 for k in range(1, 30))
    envelope = np.clip(np.sin(2 * np.pi * (3.5 + seed % 3) * t + rng.uniform(0, 6)), 0, None) ** 1.5
    x = voice * envelope
    x /= np.sqrt(np.mean(x ** 2))
    if snr_db is not None:
        x = x + 10 ** (-snr_db / 20) * rng.standard_normal(t.size)
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def formant_speech(seconds: float, seed: int = 0, silence_s: float = 0.0, sr: int = SR) -> np.ndarray:
    """Synthetic speech: syllables of jittered glottal pulses through two formant resonators
    (voiced) or high-passed noise (unvoiced) under a raised-cosine envelope; ``silence_s`` of
    exact zeros at the end."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    out, pos = np.zeros(n), 0
    while pos < n:
        m = min(int(rng.uniform(0.12, 0.22) * sr), n - pos)
        if rng.random() < 0.2:
            s = signal.sosfilt(signal.butter(4, 3000, "highpass", fs=sr, output="sos"),
                               rng.standard_normal(m))
        else:
            f0 = rng.uniform(100, 200) * np.linspace(1.08, 0.92, m) * (1 + 0.02 * rng.standard_normal(m))
            s = np.diff(np.floor(np.cumsum(f0 / sr)), prepend=0.0)
            for fc in (rng.uniform(300, 800), rng.uniform(900, 2500)):
                r = np.exp(-np.pi * 90 / sr)
                s = signal.lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * fc / sr), r * r], s)
        out[pos: pos + m] = s / np.max(np.abs(s)) * np.hanning(m) * rng.uniform(0.4, 1.0)
        pos += m
    out = 0.5 * out / np.max(np.abs(out))
    return np.concatenate([out, np.zeros(int(silence_s * sr))]).astype(np.float32)
