"""What every degradation shares: validation helpers, the registry, active-speech power and the
:class:`Degradation` base class."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

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
