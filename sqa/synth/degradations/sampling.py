"""Random chains: families, severities and parameters drawn for a seed."""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

import sqa.synth.codecs as sqa_codecs
from sqa.synth.codec_tools import TOOL_CODECS
from sqa.synth.degradations.base import FAMILIES, ORDER, Degradation, _rng
from sqa.synth.degradations.chain import Chain
from sqa.synth.degradations.enhance import SpectralSubtraction
from sqa.synth.degradations.filters import Bandpass, Highpass, Lowpass, Resample
from sqa.synth.degradations.level import Clipping, Gain, Quantize
from sqa.synth.degradations.noise import Babble, BandNoise, BrownNoise, Clicks, Hum, PinkNoise, WhiteNoise
from sqa.synth.degradations.room import Reverb
from sqa.synth.degradations.transmission import Codec, PacketLoss

_NOISE_KINDS = ("white", "pink", "brown", "babble", "hum", "clicks", "band")
_ENHANCE_NOISES = ("white", "pink", "brown", "babble", "band")
_CODEC_KBPS: dict[str, Any] = {
    "opus": (6, 24), "aac": (12, 48), "mp3": [8, 16, 24, 32, 48, 64],
    "amr_nb": [4.75, 5.15, 5.9, 6.7, 7.4, 7.95, 10.2, 12.2], "g726": [16, 24, 32, 40],
    # codec2, Speex: every mode, from 0.45 to 42.2 kb/s
    **{name: list(spec.kbps_choices) for name, spec in TOOL_CODECS.items() if len(spec.kbps_choices) > 1},
}


def _r(v: float, nd: int = 2) -> float:
    return round(float(v), nd)


@dataclass
class ChainSampler:
    """Draws random chains: ``k`` in [n_min, n_max] distinct families, each with random parameters.

    ``codecs`` (default: every name in :data:`sqa.synth.codecs.CODECS`) are tried in a random order; an
    unavailable one is skipped with a warning and counted in ``skipped[codec]``; if none is
    available the codec family is left out of that chain (counted in ``skipped["family:codec"]``).
    ``pool_ids`` are the utterance ids babble may draw talkers from (none -> self-babble).
    """

    families: Sequence[str] = FAMILIES
    n_min: int = 1
    n_max: int = 3
    codecs: Sequence[str] | None = None
    pool_ids: Sequence[str] = ()
    skipped: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.families = tuple(self.families)
        bad = [f for f in self.families if f not in FAMILIES]
        if bad or not self.families or len(set(self.families)) != len(self.families):
            raise ValueError(f"sampler: families={list(self.families)} must be distinct names "
                             f"from {list(FAMILIES)}")
        if not (isinstance(self.n_min, int) and isinstance(self.n_max, int)
                and 1 <= self.n_min <= self.n_max and self.n_min <= len(self.families)):
            raise ValueError(f"sampler: need 1 <= n_min <= n_max and n_min <= number of families "
                             f"({len(self.families)}); got n_min={self.n_min}, n_max={self.n_max}")
        self.codecs = tuple(sqa_codecs.CODECS) if self.codecs is None else tuple(self.codecs)
        self.pool_ids = tuple(self.pool_ids)

    def sample(self, rng: np.random.Generator | int) -> Chain:
        """One random chain; families are applied in :data:`ORDER`."""
        g = _rng(rng)
        k = int(g.integers(self.n_min, min(self.n_max, len(self.families)) + 1))
        chosen = set(g.choice(len(self.families), size=k, replace=False).tolist())
        steps: list[Degradation] = []
        for fam in ORDER:
            if any(self.families[i] == fam for i in chosen):
                steps += getattr(self, f"_draw_{fam}")(g)
        return Chain(tuple(steps))

    def _draw_noise(self, g: np.random.Generator, kinds: Sequence[str] = _NOISE_KINDS,
                    snr: tuple[float, float] = (-5.0, 40.0)) -> list[Degradation]:
        kind = kinds[int(g.integers(len(kinds)))]
        snr_db = _r(_skewed(g, snr[1], snr[0]), 1)
        if kind == "babble":
            n = int(g.integers(3, 9))
            if self.pool_ids:
                n = min(n, len(self.pool_ids))
                ids = g.choice(len(self.pool_ids), size=n, replace=False)
                return [Babble(snr_db, n, tuple(self.pool_ids[i] for i in ids))]
            return [Babble(snr_db, n)]
        if kind == "hum":
            return [Hum(snr_db, [50.0, 60.0][int(g.integers(2))], int(g.integers(1, 9)))]
        if kind == "clicks":
            return [Clicks(snr_db, _r(g.uniform(0.5, 20.0)))]
        if kind == "band":
            center, octaves = np.exp(g.uniform(np.log(200), np.log(4000))), g.uniform(0.5, 2.0)
            lo, hi = center * 2 ** (-octaves / 2), min(center * 2 ** (octaves / 2), 7800.0)
            return [BandNoise(snr_db, _r(lo, 1), _r(hi, 1))]
        return [{"white": WhiteNoise, "pink": PinkNoise, "brown": BrownNoise}[kind](snr_db)]

    def _draw_reverb(self, g: np.random.Generator) -> list[Degradation]:
        rt60 = _r(_skewed(g, 0.2, 1.5))
        for _ in range(1000):
            room = (_r(g.uniform(3.0, 10.0)), _r(g.uniform(2.5, 8.0)), _r(g.uniform(2.4, 4.0)))
            mic = (_r(g.uniform(0.5, room[0] - 0.5)), _r(g.uniform(0.5, room[1] - 0.5)),
                   _r(g.uniform(1.0, 1.8)))
            dist, az = _skewed(g, 0.3, 3.5), g.uniform(0, 2 * np.pi)
            src = (_r(mic[0] + dist * np.cos(az)), _r(mic[1] + dist * np.sin(az)),
                   _r(g.uniform(1.2, 1.9)))
            if not all(0.3 <= s <= d - 0.3 for s, d in zip(src, room)):
                continue
            try:
                return [Reverb(rt60, room, src, mic)]
            except ValueError:
                continue
        raise RuntimeError(f"sampler: no feasible room found for rt60_s={rt60}")

    def _draw_bandlimit(self, g: np.random.Generator) -> list[Degradation]:
        kind = int(g.integers(4))
        if kind == 0:
            return [Lowpass(_r(np.exp(g.uniform(np.log(1000), np.log(6000))), 1))]
        if kind == 1:
            return [Highpass(_r(np.exp(g.uniform(np.log(100), np.log(1000))), 1))]
        if kind == 2:
            return [Bandpass(_r(g.uniform(100, 600), 1), _r(g.uniform(2500, 5000), 1))]
        return [Resample(8000)]

    def _draw_codec(self, g: np.random.Generator) -> list[Degradation]:
        for i in g.permutation(len(self.codecs)):
            name = self.codecs[int(i)]
            spec = _CODEC_KBPS.get(name)
            if isinstance(spec, tuple):
                kbps: float | None = float(g.integers(spec[0], spec[1] + 1))
            elif isinstance(spec, list):
                kbps = float(spec[int(g.integers(len(spec)))])
            else:
                kbps = None
            try:
                return [Codec(name, kbps)]
            except sqa_codecs.CodecUnavailable as e:
                self.skipped[name] += 1
                warnings.warn(f"sampler: skipping unavailable codec {name!r}: {e}", stacklevel=3)
        self.skipped["family:codec"] += 1
        warnings.warn(f"sampler: none of the codecs {list(self.codecs)} is available; this chain "
                      f"has no codec step", stacklevel=3)
        return []

    def _draw_loss(self, g: np.random.Generator) -> list[Degradation]:
        rate = _r(_skewed(g, 0.01, 0.3), 3)
        conceal = ["zero", "repeat"][int(g.integers(2))]
        if g.random() < 0.5:
            return [PacketLoss(rate, "bernoulli", 1.0, conceal)]
        return [PacketLoss(rate, "gilbert_elliott", _r(g.uniform(1.5, 6.0)), conceal)]

    def _draw_clip(self, g: np.random.Generator) -> list[Degradation]:
        kind = int(g.integers(3))
        if kind == 0:
            return [Clipping(_r(_skewed(g, 0.6, 0.05), 3))]
        if kind == 1:
            return [Quantize(int(g.integers(4, 11)))]
        return [Gain(_r(g.uniform(-30.0, 15.0), 1))]

    def _draw_enhance(self, g: np.random.Generator) -> list[Degradation]:
        noise = self._draw_noise(g, _ENHANCE_NOISES, (0.0, 20.0))
        return noise + [SpectralSubtraction(_r(g.uniform(1.5, 5.0)), _r(g.uniform(0.002, 0.05), 4),
                                            _r(g.uniform(0.05, 0.2), 3))]


def _skewed(g: np.random.Generator, mild: float, severe: float) -> float:
    """A value between ``mild`` and ``severe``, drawn with most mass near ``mild``: objective
    scores fall steeply with severity (PESQ is near its floor below 10 dB SNR), so a uniform
    draw would pile the labels up at the bottom of the scale."""
    return float(mild + (severe - mild) * g.random() ** 2)


def sample_chain(rng: np.random.Generator | int, families: Sequence[str] = FAMILIES,
                 n_min: int = 1, n_max: int = 3, *, codecs: Sequence[str] | None = None,
                 pool_ids: Sequence[str] = (), skipped: Counter | None = None) -> Chain:
    """Draw one chain (see :class:`ChainSampler`); skipped codecs are added to ``skipped``."""
    sampler = ChainSampler(families, n_min, n_max, codecs, pool_ids)
    chain = sampler.sample(rng)
    if skipped is not None:
        skipped.update(sampler.skipped)
    return chain
