"""Reverberation: simulated shoebox rooms (pyroomacoustics image sources + a Sabine tail)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np
from scipy import signal

from sqa import extras
from sqa.synth.degradations.base import ISM_MAX_ORDER, Degradation, _register


@_register
@dataclass(frozen=True)
class Reverb(Degradation):
    """Simulated shoebox room (pyroomacoustics); see the module docstring for the hybrid tail."""

    name: ClassVar[str] = "reverb"
    family: ClassVar[str] = "reverb"
    rt60_s: float
    room_m: tuple[float, float, float]
    source_m: tuple[float, float, float]
    mic_m: tuple[float, float, float]

    def _vector(self, param: str, lo: Sequence[float], hi: Sequence[float]) -> None:
        v = getattr(self, param)
        try:
            vec = tuple(float(c) for c in v)
        except (TypeError, ValueError):
            vec = ()
        if len(vec) != 3 or not all(np.isfinite(vec)):
            raise ValueError(f"{self.name}: parameter {param}={v!r} must be 3 finite numbers (m)")
        for axis, c, a, b in zip("xyz", vec, lo, hi):
            if not a <= c <= b:
                raise ValueError(f"{self.name}: parameter {param}={list(vec)} has {axis}={c}, "
                                 f"outside the allowed range [{a}, {b:.2f}]")
        self._set(param, vec)

    def _check(self) -> None:
        pra = extras.require("pyroomacoustics", "simulated rooms")

        self._num("rt60_s", 0.1, 2.0)
        self._vector("room_m", (2.0,) * 3, (30.0,) * 3)
        inner_hi = tuple(d - 0.1 for d in self.room_m)
        self._vector("source_m", (0.1,) * 3, inner_hi)
        self._vector("mic_m", (0.1,) * 3, inner_hi)
        if self.distance_m < 0.1:
            raise ValueError(f"{self.name}: source_m and mic_m are {self.distance_m:.3f} m apart; "
                             f"the allowed minimum is 0.1 m")
        try:
            pra.inverse_sabine(self.rt60_s, self.room_m)
        except ValueError as e:
            raise ValueError(f"{self.name}: parameter rt60_s={self.rt60_s} is too short for "
                             f"room_m={list(self.room_m)} (Sabine absorption would exceed 1)"
                             ) from e

    @property
    def distance_m(self) -> float:
        return float(np.linalg.norm(np.subtract(self.source_m, self.mic_m)))

    def rir(self, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """Room impulse response at ``sr`` and the index of its direct-path peak."""
        pra = extras.require("pyroomacoustics", "simulated rooms")

        absorption, order = pra.inverse_sabine(self.rt60_s, self.room_m)
        k = min(order, ISM_MAX_ORDER)
        room = pra.ShoeBox(list(self.room_m), fs=sr, materials=pra.Material(absorption),
                           max_order=k, air_absorption=False, ray_tracing=False)
        room.add_source(list(self.source_m))
        room.add_microphone(list(self.mic_m))
        room.compute_rir()
        h = np.asarray(room.rir[0][0], dtype=np.float64)
        c = pra.constants.get("c")
        fdl = pra.constants.get("frac_delay_length")
        expected = int(round(self.distance_m / c * sr)) + fdl // 2
        direct = int(np.argmax(np.abs(h[: expected + 8])))
        if order > k:
            sides = [a * b / np.hypot(a, b) for a, b in
                     ((self.room_m[0], self.room_m[1]), (self.room_m[0], self.room_m[2]),
                      (self.room_m[1], self.room_m[2]))]
            complete = expected + int(k * min(sides) / c * sr)
            h = self._late_tail(h, sr, max(complete, direct + int(0.02 * sr)), rng)
        return h, direct

    def _late_tail(self, h: np.ndarray, sr: int, start: int,
                   rng: np.random.Generator) -> np.ndarray:
        """Replace ``h`` from ``start`` by Gaussian noise decaying 60 dB per ``rt60_s``."""
        decay = np.log(10**6) / (self.rt60_s * sr)  # energy decay rate per sample
        win = np.arange(max(1, start - int(0.03 * sr)), min(start, len(h)))
        level = float(np.mean(h[win] ** 2 * np.exp(decay * (win - start)))) if win.size else 0.0
        n = start + int(self.rt60_s * sr)
        fade = int(0.01 * sr)
        t = np.arange(n) - start
        tail = np.sqrt(level) * rng.standard_normal(n) * np.exp(-decay * np.maximum(t, -fade) / 2)
        w_early = np.clip(-t / fade, 0.0, 1.0)
        early = np.zeros(n)
        early[: min(n, len(h))] = h[:n]
        return early * w_early + tail * (1 - w_early)

    def _apply(self, x, sr, rng, pool):
        h, direct = self.rir(sr, rng)
        y = signal.fftconvolve(x, h)[direct: direct + len(x)]
        ry, rx = np.sqrt(np.mean(y**2)), np.sqrt(np.mean(x**2))
        return y * (rx / ry) if ry > 0 else y
