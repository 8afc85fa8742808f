"""Composable, seeded degradations of mono float32 speech (designed for 16 kHz).

Each degradation is a frozen dataclass with a ``name``, a ``family``, validated parameters (a bad
one raises ``ValueError`` naming the degradation, the parameter and the allowed range) and
``apply(x, sr, rng, *, pool=None) -> y`` with ``len(y) == len(x)``. A :class:`Chain` applies
several in order and serializes them with their exact parameters (``to_json`` / ``from_json``); the
same chain with the same seed gives bit-identical output. :class:`ChainSampler` (or
:func:`sample_chain`) draws 1-3 degradations with random parameters from the families in
:data:`FAMILIES`.

Conventions (documented policies):

- **SNR** is the active-speech SNR: power of the 20 ms frames of the signal within 40 dB of its
  loudest frame (:func:`active_power`) over the mean power of the whole noise.
- **Level**: :class:`Gain` hard-clips to [-1, 1] like a fixed-point converter; :meth:`Chain.apply`
  rescales (never clips) its output to a peak of 1 if any step pushed it beyond [-1, 1].
- **Babble** mixes talkers from a ``pool`` (``{utt_id: audio}`` passed to ``apply``; the chosen ids
  are recorded in ``talkers``). Without recorded talkers it falls back to self-babble: ``n_talkers``
  circularly shifted copies of the clip itself, each reversed with probability 1/2.
- **Reverb** uses pyroomacoustics (ShoeBox, image-source method, absorption from
  ``pra.inverse_sabine``, no ray tracing) up to image order :data:`ISM_MAX_ORDER`; where Sabine
  needs a higher order, the late part is a Gaussian tail decaying at exactly ``rt60_s``,
  level-matched to the image-source response. Output is aligned to the direct path and has the
  input's RMS.
- **Families** are applied in the physical order of :data:`ORDER` (room, noise, enhancement,
  capture level, band limit, codec, transmission); the "enhance" family adds a noise and then the
  spectral-subtraction enhancer, so it contributes two steps.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
from scipy import signal

import sqa.codecs as sqa_codecs

__all__ = [
    "FAMILIES", "ORDER", "ISM_MAX_ORDER", "Degradation", "Chain", "ChainSampler", "sample_chain",
    "active_power", "AdditiveNoise", "WhiteNoise", "PinkNoise", "BrownNoise", "Babble", "Hum",
    "Clicks", "BandNoise",
    "Reverb", "Lowpass", "Highpass", "Bandpass", "Resample", "Codec", "PacketLoss", "Clipping",
    "Quantize", "Gain", "SpectralSubtraction", "REGISTRY",
]

FAMILIES = ("noise", "reverb", "bandlimit", "codec", "loss", "clip", "enhance")
ORDER = ("reverb", "noise", "enhance", "clip", "bandlimit", "codec", "loss")
ISM_MAX_ORDER = 20
_JSON_VERSION = 1

Pool = Mapping[str, np.ndarray]
REGISTRY: dict[str, type["Degradation"]] = {}


def _register(cls: type["Degradation"]) -> type["Degradation"]:
    REGISTRY[cls.name] = cls
    return cls


def _rng(rng: np.random.Generator | int) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be a numpy Generator or an int seed, got {type(rng).__name__}")


def _audio(who: str, x: np.ndarray, sr: int) -> np.ndarray:
    """Validated mono float64 copy of ``x``."""
    if not isinstance(sr, (int, np.integer)) or isinstance(sr, bool) or sr <= 0:
        raise ValueError(f"{who}: sample rate must be a positive integer, got {sr!r}")
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{who}: audio must be a non-empty 1-D (mono) array, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{who}: audio contains NaN or infinite samples")
    return a


def active_power(x: np.ndarray, sr: int, frame_ms: float = 20.0, range_db: float = 40.0) -> float:
    """Mean power of the ``frame_ms`` frames within ``range_db`` of the loudest (0 if silent)."""
    a = np.asarray(x, dtype=np.float64)
    n = max(1, int(sr * frame_ms / 1000))
    if len(a) < n:
        return float(np.mean(a**2))
    p = np.mean(a[: len(a) // n * n].reshape(-1, n) ** 2, axis=1)
    if p.max() <= 0:
        return 0.0
    return float(p[p >= p.max() * 10 ** (-range_db / 10)].mean())


# ---------------------------------------------------------------- base class and validation


@dataclass(frozen=True)
class Degradation:
    """Base: subclasses set ``name``/``family``, validate in ``_check``, implement ``_apply``."""

    name: ClassVar[str] = ""
    family: ClassVar[str] = ""

    def __post_init__(self) -> None:
        self._check()

    def _check(self) -> None:
        """Validate and normalize the fields (override, calling ``super()._check()``)."""

    def _set(self, param: str, value: Any) -> None:
        object.__setattr__(self, param, value)

    def _num(self, param: str, lo: float, hi: float, integer: bool = False) -> None:
        """Check that field ``param`` is a number in [lo, hi]; store it as a plain int/float."""
        v = getattr(self, param)
        kind = "an integer" if integer else "a number"
        ok_type = isinstance(v, (int, np.integer) if integer else (int, float, np.number))
        if isinstance(v, bool) or not ok_type or not np.isfinite(v):
            raise ValueError(f"{self.name}: parameter {param}={v!r} must be {kind} in [{lo}, {hi}]")
        if not lo <= v <= hi:
            raise ValueError(f"{self.name}: parameter {param}={v!r} is outside the allowed range "
                             f"[{lo}, {hi}]")
        self._set(param, int(v) if integer else float(v))

    def _choice(self, param: str, choices: Sequence[Any]) -> None:
        v = getattr(self, param)
        if isinstance(v, bool) or v not in choices:
            raise ValueError(f"{self.name}: parameter {param}={v!r} is not one of the allowed "
                             f"values {list(choices)}")

    def _below_nyquist(self, param: str, sr: int) -> None:
        v = getattr(self, param)
        if v >= sr / 2:
            raise ValueError(f"{self.name}: parameter {param}={v} must be below the Nyquist "
                             f"frequency {sr / 2} Hz of sample rate {sr}")

    def params(self) -> dict[str, Any]:
        """The exact parameters as JSON-ready values."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def apply(self, x: np.ndarray, sr: int, rng: np.random.Generator | int, *,
              pool: Pool | None = None) -> np.ndarray:
        """Degrade ``x`` (mono, sample rate ``sr``); returns float32 of the same length."""
        a = _audio(self.name, x, sr)
        y = self._apply(a, int(sr), _rng(rng), pool)
        return np.asarray(y, dtype=np.float32)

    def _apply(self, x: np.ndarray, sr: int, rng: np.random.Generator,
               pool: Pool | None) -> np.ndarray:
        raise NotImplementedError

    def __str__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.params().items())
        return f"{self.name}({args})"


# ---------------------------------------------------------------- additive noise


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


# ---------------------------------------------------------------- reverberation


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
        import pyroomacoustics as pra

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
        import pyroomacoustics as pra

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


# ---------------------------------------------------------------- band limitation


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


# ---------------------------------------------------------------- codecs


@_register
@dataclass(frozen=True)
class Codec(Degradation):
    """ffmpeg codec round trip (:func:`sqa.codecs.roundtrip`); ``bitrate_kbps=None`` -> default."""

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


# ---------------------------------------------------------------- clipping, quantization, level


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


# ---------------------------------------------------------------- enhancement


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


# ---------------------------------------------------------------- chain


@dataclass(frozen=True)
class Chain:
    """Degradations applied in order; JSON round trip records each one's exact parameters."""

    steps: tuple[Degradation, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        for i, s in enumerate(self.steps):
            if not isinstance(s, Degradation):
                raise ValueError(f"chain: step {i} is {type(s).__name__}, not a Degradation")

    @property
    def families(self) -> tuple[str, ...]:
        return tuple(s.family for s in self.steps)

    def apply(self, x: np.ndarray, sr: int, rng: np.random.Generator | int, *,
              pool: Pool | None = None) -> np.ndarray:
        """Apply every step with the same generator; rescale to peak 1 if the result overloads."""
        y = _audio("chain", x, sr)
        g = _rng(rng)
        for s in self.steps:
            y = s.apply(y, sr, g, pool=pool).astype(np.float64)
        peak = np.max(np.abs(y))
        return (y / peak if peak > 1.0 else y).astype(np.float32)

    def to_json(self) -> str:
        return json.dumps({"version": _JSON_VERSION,
                           "steps": [{"name": s.name, "params": s.params()} for s in self.steps]})

    @classmethod
    def from_json(cls, text: str) -> "Chain":
        """Rebuild a chain from :meth:`to_json` output (``ValueError`` on anything malformed)."""
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"chain: not valid JSON: {e}") from e
        if not isinstance(obj, dict) or obj.get("version") != _JSON_VERSION \
                or not isinstance(obj.get("steps"), list):
            raise ValueError(f"chain: expected {{'version': {_JSON_VERSION}, 'steps': [...]}}, "
                             f"got {str(obj)[:200]}")
        steps = []
        for i, st in enumerate(obj["steps"]):
            if not isinstance(st, dict) or st.get("name") not in REGISTRY \
                    or not isinstance(st.get("params"), dict):
                raise ValueError(f"chain: step {i} must be {{'name': one of {sorted(REGISTRY)}, "
                                 f"'params': {{...}}}}, got {st!r}")
            cls_ = REGISTRY[st["name"]]
            known = {f.name for f in dataclasses.fields(cls_)}
            unknown = set(st["params"]) - known
            if unknown:
                raise ValueError(f"chain: step {i} ({st['name']}) has unknown parameters "
                                 f"{sorted(unknown)}; allowed: {sorted(known)}")
            try:
                steps.append(cls_(**st["params"]))
            except TypeError as e:
                raise ValueError(f"chain: step {i} ({st['name']}): {e}") from e
        return cls(tuple(steps))

    def __str__(self) -> str:
        return " > ".join(str(s) for s in self.steps) or "clean"


# ---------------------------------------------------------------- sampling


_NOISE_KINDS = ("white", "pink", "brown", "babble", "hum", "clicks", "band")
_ENHANCE_NOISES = ("white", "pink", "brown", "babble", "band")
_CODEC_KBPS: dict[str, Any] = {
    "opus": (6, 24), "aac": (12, 48), "mp3": [8, 16, 24, 32, 48, 64],
    "amr_nb": [4.75, 5.15, 5.9, 6.7, 7.4, 7.95, 10.2, 12.2], "g726": [16, 24, 32, 40],
}


def _r(v: float, nd: int = 2) -> float:
    return round(float(v), nd)


@dataclass
class ChainSampler:
    """Draws random chains: ``k`` in [n_min, n_max] distinct families, each with random parameters.

    ``codecs`` (default: every name in :data:`sqa.codecs.CODECS`) are tried in a random order; an
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
