"""Transmission: speech codec round trips and packet loss."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

import sqa.synth.codecs as sqa_codecs
from sqa.synth.degradations.base import Degradation, _register


@_register
@dataclass(frozen=True)
class Codec(Degradation):
    """Codec round trip, ffmpeg or codec tool (:func:`sqa.synth.codecs.roundtrip`); ``bitrate_kbps=None`` -> default."""

    name: ClassVar[str] = "codec"
    family: ClassVar[str] = "codec"
    codec: str
    bitrate_kbps: float | None = None

    def _check(self) -> None:
        self._set("bitrate_kbps", sqa_codecs.resolve_bitrate(self.codec, self.bitrate_kbps))

    def _apply(self, x, sr, rng, pool):
        return sqa_codecs.roundtrip(x.astype(np.float32), sr, self.codec, self.bitrate_kbps)


# ---------------------------------------------------------------- packet loss


@_register
@dataclass(frozen=True)
class PacketLoss(Degradation):
    """Drop ``frame_ms`` frames: Bernoulli, or Gilbert-Elliott (loss only in the Bad state).

    Gilbert-Elliott: P(Bad->Good) = 1/``mean_burst``, P(Good->Bad) chosen so the stationary loss
    rate is ``loss_rate``. Concealment: ``"zero"`` fills lost frames with zeros, ``"repeat"``
    repeats the last received frame (zeros before the first one).
    """

    name: ClassVar[str] = "packet_loss"
    family: ClassVar[str] = "loss"
    loss_rate: float
    model: str = "bernoulli"
    mean_burst: float = 1.0
    concealment: str = "zero"
    frame_ms: float = 20.0

    def _check(self) -> None:
        self._num("loss_rate", 0.0, 0.5)
        self._choice("model", ("bernoulli", "gilbert_elliott"))
        self._num("mean_burst", 1.0, 50.0)
        if self.model == "bernoulli" and self.mean_burst != 1.0:
            raise ValueError(f"{self.name}: parameter mean_burst={self.mean_burst} applies only to "
                             f"model 'gilbert_elliott'; use 1.0 with 'bernoulli'")
        self._choice("concealment", ("zero", "repeat"))
        self._num("frame_ms", 5.0, 60.0)

    def loss_mask(self, n_frames: int, rng: np.random.Generator) -> np.ndarray:
        """Boolean array, True for each lost frame."""
        if self.model == "bernoulli":
            return rng.random(n_frames) < self.loss_rate
        r = 1.0 / self.mean_burst
        p = self.loss_rate * r / (1.0 - self.loss_rate)
        u = rng.random(n_frames)
        lost = np.empty(n_frames, dtype=bool)
        bad = u[0] < self.loss_rate
        for i in range(n_frames):
            if i:
                bad = (u[i] >= r) if bad else (u[i] < p)
            lost[i] = bad
        return lost

    def _apply(self, x, sr, rng, pool):
        n = max(1, int(round(sr * self.frame_ms / 1000)))
        frames = -(-len(x) // n)
        lost = self.loss_mask(frames, rng)
        padded = np.pad(x, (0, frames * n - len(x))).reshape(frames, n)
        out = padded.copy()
        last = np.zeros(n)
        for i in range(frames):
            if lost[i]:
                out[i] = last if self.concealment == "repeat" else 0.0
            else:
                last = padded[i]
        return out.reshape(-1)[: len(x)]
