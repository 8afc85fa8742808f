"""A chain of degradations applied in order, serialized with its exact parameters."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import numpy as np

from sqa.synth.degradations.base import _JSON_VERSION, REGISTRY, Degradation, Pool, _audio, _rng


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
