"""Band limitation: Butterworth low/high/band-pass filters and resampling round trips."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from scipy import signal

from sqa.synth.degradations.base import Degradation, _register


def _filtfilt(sos: np.ndarray, x: np.ndarray) -> np.ndarray:
    return signal.sosfiltfilt(sos, x, padlen=min(3 * (2 * len(sos) + 1), len(x) - 1))


@dataclass(frozen=True)
class _Butter(Degradation):
    family: ClassVar[str] = "bandlimit"
    btype: ClassVar[str] = ""

    def _band(self) -> float | list[float]:
        raise NotImplementedError

    def _apply(self, x, sr, rng, pool):
        for f in dataclasses.fields(self):
            if f.name.endswith("_hz"):
                self._below_nyquist(f.name, sr)
        sos = signal.butter(self.order, self._band(), self.btype, fs=sr, output="sos")
        return _filtfilt(sos, x)


@_register
@dataclass(frozen=True)
class Lowpass(_Butter):
    """Zero-phase Butterworth low-pass (effective order 2 * ``order``)."""

    name: ClassVar[str] = "lowpass"
    btype: ClassVar[str] = "lowpass"
    cutoff_hz: float
    order: int = 8

    def _check(self) -> None:
        self._num("cutoff_hz", 50.0, 20000.0)
        self._num("order", 1, 12, integer=True)

    def _band(self):
        return self.cutoff_hz


@_register
@dataclass(frozen=True)
class Highpass(Lowpass):
    """Zero-phase Butterworth high-pass (effective order 2 * ``order``)."""

    name: ClassVar[str] = "highpass"
    btype: ClassVar[str] = "highpass"


@_register
@dataclass(frozen=True)
class Bandpass(_Butter):
    """Zero-phase Butterworth band-pass [``low_hz``, ``high_hz``]."""

    name: ClassVar[str] = "bandpass"
    btype: ClassVar[str] = "bandpass"
    low_hz: float
    high_hz: float
    order: int = 6

    def _check(self) -> None:
        self._num("low_hz", 20.0, 20000.0)
        self._num("high_hz", 20.0, 20000.0)
        self._num("order", 1, 12, integer=True)
        if self.high_hz <= self.low_hz * 1.05:
            raise ValueError(f"{self.name}: parameter high_hz={self.high_hz} must exceed "
                             f"low_hz={self.low_hz} by at least 5 %")

    def _band(self):
        return [self.low_hz, self.high_hz]


@_register
@dataclass(frozen=True)
class Resample(Degradation):
    """Down-sample to ``rate_hz`` and back (polyphase, scipy ``resample_poly``)."""

    name: ClassVar[str] = "resample"
    family: ClassVar[str] = "bandlimit"
    rate_hz: int = 8000

    def _check(self) -> None:
        self._choice("rate_hz", (4000, 8000, 11025, 12000))
        self._set("rate_hz", int(self.rate_hz))

    def _apply(self, x, sr, rng, pool):
        if self.rate_hz >= sr:
            raise ValueError(f"{self.name}: parameter rate_hz={self.rate_hz} must be below the "
                             f"input sample rate {sr}")
        g = np.gcd(self.rate_hz, sr)
        low = signal.resample_poly(x, self.rate_hz // g, sr // g)
        y = signal.resample_poly(low, sr // g, self.rate_hz // g)
        return np.pad(y, (0, max(0, len(x) - len(y))))[: len(x)]
