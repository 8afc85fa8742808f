"""Enhancement artifacts: spectral subtraction of an estimated noise floor (musical noise)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from scipy import signal

from sqa.synth.degradations.base import Degradation, _register


@_register
@dataclass(frozen=True)
class SpectralSubtraction(Degradation):
    """Power spectral subtraction (Berouti-style), leaving musical-noise artifacts.

    STFT with ~32 ms Hann frames and 75 % overlap; the noise PSD is the mean of the
    ``noise_fraction`` lowest-energy frames; ``|S|^2 = |X|^2 - over_subtraction * N`` floored at
    ``floor * N``; the noisy phase is kept.
    """

    name: ClassVar[str] = "spectral_subtraction"
    family: ClassVar[str] = "enhance"
    over_subtraction: float = 2.0
    floor: float = 0.02
    noise_fraction: float = 0.1

    def _check(self) -> None:
        self._num("over_subtraction", 0.5, 10.0)
        self._num("floor", 0.0, 1.0)
        self._num("noise_fraction", 0.01, 0.5)

    def _apply(self, x, sr, rng, pool):
        nper = 1 << int(round(np.log2(0.032 * sr)))
        if len(x) < nper:
            raise ValueError(f"{self.name}: input of {len(x)} samples is shorter than one STFT "
                             f"frame ({nper})")
        kw = dict(fs=sr, window="hann", nperseg=nper, noverlap=3 * nper // 4)
        _, _, z = signal.stft(x, **kw)
        power = np.abs(z) ** 2
        k = max(1, int(np.ceil(self.noise_fraction * power.shape[1])))
        quiet = np.argsort(power.sum(axis=0))[:k]
        noise = power[:, quiet].mean(axis=1, keepdims=True)
        clean = np.maximum(power - self.over_subtraction * noise, self.floor * noise)
        gain = np.sqrt(clean / np.maximum(power, 1e-20))
        _, y = signal.istft(z * np.minimum(gain, 1.0), **kw)
        return np.pad(y, (0, max(0, len(x) - len(y))))[: len(x)]
