"""Additive noise at an active-speech SNR: white, pink, brown, babble, hum, clicks, band noise."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from scipy import signal

from sqa.synth.degradations.base import Degradation, Pool, _register, active_power


@dataclass(frozen=True)
class AdditiveNoise(Degradation):
    """Adds a noise scaled to ``snr_db`` (active-speech SNR, see :func:`active_power`)."""

    family: ClassVar[str] = "noise"
    snr_db: float

    def _check(self) -> None:
        self._num("snr_db", -20.0, 60.0)

    def _noise(self, x: np.ndarray, sr: int, rng: np.random.Generator,
               pool: Pool | None) -> np.ndarray:
        raise NotImplementedError

    def _apply(self, x, sr, rng, pool):
        ps = active_power(x, sr)
        if ps <= 0:
            raise ValueError(f"{self.name}: input is silent, so snr_db={self.snr_db} is undefined")
        n = self._noise(x, sr, rng, pool)
        pn = float(np.mean(n**2))
        if pn <= 0:
            raise ValueError(f"{self.name}: generated noise is silent for {self}")
        return x + n * np.sqrt(ps / (pn * 10 ** (self.snr_db / 10)))


def _colored(n: int, sr: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with power spectral density ~ 1/f**exponent (flat below 20 Hz, no DC)."""
    spec = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    f = np.fft.rfftfreq(n, 1 / sr)
    shape = np.maximum(f, 20.0) ** (-exponent / 2)
    shape[0] = 0.0
    return np.fft.irfft(spec * shape, n)


@_register
@dataclass(frozen=True)
class WhiteNoise(AdditiveNoise):
    name: ClassVar[str] = "white_noise"

    def _noise(self, x, sr, rng, pool):
        return rng.standard_normal(len(x))


@_register
@dataclass(frozen=True)
class PinkNoise(AdditiveNoise):
    name: ClassVar[str] = "pink_noise"

    def _noise(self, x, sr, rng, pool):
        return _colored(len(x), sr, 1.0, rng)


@_register
@dataclass(frozen=True)
class BrownNoise(AdditiveNoise):
    name: ClassVar[str] = "brown_noise"

    def _noise(self, x, sr, rng, pool):
        return _colored(len(x), sr, 2.0, rng)


@_register
@dataclass(frozen=True)
class Babble(AdditiveNoise):
    """Babble of pool talkers ``talkers`` (ids into ``pool``), else ``n_talkers`` self-copies."""

    name: ClassVar[str] = "babble"
    n_talkers: int = 4
    talkers: tuple[str, ...] = ()

    def _check(self) -> None:
        super()._check()
        self._num("n_talkers", 1, 20, integer=True)
        if isinstance(self.talkers, str) or not all(isinstance(t, str) for t in self.talkers):
            raise ValueError(f"{self.name}: parameter talkers={self.talkers!r} must be a sequence "
                             f"of pool ids (strings)")
        self._set("talkers", tuple(self.talkers))
        if self.talkers and len(self.talkers) != self.n_talkers:
            raise ValueError(f"{self.name}: parameter n_talkers={self.n_talkers} must equal the "
                             f"number of talkers ({len(self.talkers)})")

    def _sources(self, x: np.ndarray, rng: np.random.Generator, pool: Pool | None) -> list:
        if not self.talkers:
            return [x[::-1] if rng.random() < 0.5 else x for _ in range(self.n_talkers)]
        if pool is None:
            raise ValueError(f"{self.name}: talkers {list(self.talkers)} are recorded but apply() "
                             f"got no pool")
        missing = [t for t in self.talkers if t not in pool]
        if missing:
            raise ValueError(f"{self.name}: talkers {missing} are not in the pool")
        return [np.asarray(pool[t], dtype=np.float64) for t in self.talkers]

    def _noise(self, x, sr, rng, pool):
        out = np.zeros(len(x))
        for i, s in enumerate(self._sources(x, rng, pool)):
            if s.ndim != 1 or active_power(s, sr) <= 0:
                raise ValueError(f"{self.name}: talker {i} "
                                 f"{self.talkers[i] if self.talkers else '(self)'} is not "
                                 f"non-silent mono audio")
            if self.talkers:
                offset = rng.integers(len(s))
            else:  # shift self-babble copies well away from the clip itself
                offset = rng.integers(len(s) // 4, 3 * len(s) // 4 + 1)
            seg = np.take(s, (offset + np.arange(len(x))) % len(s))
            out += seg / np.sqrt(max(active_power(seg, sr), 1e-12))
        return out


@_register
@dataclass(frozen=True)
class Hum(AdditiveNoise):
    """Mains hum at ``hum_hz`` with ``harmonics`` harmonics of amplitude 1/k and random phases."""

    name: ClassVar[str] = "hum"
    hum_hz: float = 50.0
    harmonics: int = 5

    def _check(self) -> None:
        super()._check()
        self._choice("hum_hz", (50, 60))
        self._set("hum_hz", float(self.hum_hz))
        self._num("harmonics", 1, 20, integer=True)

    def _noise(self, x, sr, rng, pool):
        t = np.arange(len(x)) / sr
        ks = [k for k in range(1, self.harmonics + 1) if k * self.hum_hz < sr / 2]
        phases = rng.uniform(0, 2 * np.pi, len(ks))
        return sum(np.sin(2 * np.pi * k * self.hum_hz * t + p) / k for k, p in zip(ks, phases))


@_register
@dataclass(frozen=True)
class Clicks(AdditiveNoise):
    """Clicks at Poisson(``rate_hz``) times (at least one), random sign and size, 0.5 ms decay."""

    name: ClassVar[str] = "clicks"
    rate_hz: float = 5.0

    def _check(self) -> None:
        super()._check()
        self._num("rate_hz", 0.1, 100.0)

    def _noise(self, x, sr, rng, pool):
        count = max(1, int(rng.poisson(self.rate_hz * len(x) / sr)))
        kernel = np.exp(-np.arange(max(1, int(0.003 * sr))) / (0.0005 * sr))
        impulses = np.zeros(len(x))
        np.add.at(impulses, rng.integers(0, len(x), count),
                  rng.choice([-1.0, 1.0], count) * rng.uniform(0.3, 1.0, count))
        return signal.fftconvolve(impulses, kernel)[: len(x)]


@_register
@dataclass(frozen=True)
class BandNoise(AdditiveNoise):
    """White noise band-passed to [``low_hz``, ``high_hz``] (4th-order Butterworth)."""

    name: ClassVar[str] = "band_noise"
    low_hz: float = 500.0
    high_hz: float = 2000.0

    def _check(self) -> None:
        super()._check()
        self._num("low_hz", 20.0, 20000.0)
        self._num("high_hz", 20.0, 20000.0)
        if self.high_hz <= self.low_hz * 1.05:
            raise ValueError(f"{self.name}: parameter high_hz={self.high_hz} must exceed "
                             f"low_hz={self.low_hz} by at least 5 %")

    def _noise(self, x, sr, rng, pool):
        self._below_nyquist("high_hz", sr)
        sos = signal.butter(4, [self.low_hz, self.high_hz], "bandpass", fs=sr, output="sos")
        return signal.sosfilt(sos, rng.standard_normal(len(x)))
