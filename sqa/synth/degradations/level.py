"""Level and capture: hard clipping, quantization, gain."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from sqa.synth.degradations.base import Degradation, _register


@_register
@dataclass(frozen=True)
class Clipping(Degradation):
    """Hard clipping at ``threshold`` times the signal's peak."""

    name: ClassVar[str] = "clipping"
    family: ClassVar[str] = "clip"
    threshold: float

    def _check(self) -> None:
        self._num("threshold", 0.01, 1.0)

    def _apply(self, x, sr, rng, pool):
        c = self.threshold * np.max(np.abs(x))
        return np.clip(x, -c, c)


@_register
@dataclass(frozen=True)
class Quantize(Degradation):
    """Uniform mid-tread quantization of [-1, 1] to ``bits`` bits (values clip to the grid)."""

    name: ClassVar[str] = "quantize"
    family: ClassVar[str] = "clip"
    bits: int

    def _check(self) -> None:
        self._num("bits", 2, 16, integer=True)

    def _apply(self, x, sr, rng, pool):
        step = 2.0 ** (1 - self.bits)
        return np.clip(np.round(x / step) * step, -1.0, 1.0 - step)


@_register
@dataclass(frozen=True)
class Gain(Degradation):
    """Level change by ``gain_db``; overload hard-clips to [-1, 1] like a fixed-point converter."""

    name: ClassVar[str] = "gain"
    family: ClassVar[str] = "clip"
    gain_db: float

    def _check(self) -> None:
        self._num("gain_db", -60.0, 40.0)

    def _apply(self, x, sr, rng, pool):
        return np.clip(x * 10 ** (self.gain_db / 20), -1.0, 1.0)
