"""Saved training state: what ``train_state.pt`` holds, how it is written, read and checked.

At the end of every epoch rank 0 writes the state atomically (model, optimizer, scheduler, grad
scaler, best weights, early-stopping counters, history, bias maps, torch/CUDA/numpy/python RNG
states). Resuming checks the run identity (``sqa.pipeline.runs``: stage, resolved parameters and
input runs, read from the ``params.json`` of the run folder the state lies in), the config (all
fields but ``RESUMABLE_CHANGES``), the steps per epoch and the model's tensor shapes against the
file, and names what differs.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from sqa import atomic

if TYPE_CHECKING:
    from sqa.training.loop import TrainConfig

STATE_FILE = "train_state.pt"
#: config fields that may change between a run and its resumption
RESUMABLE_CHANGES = ("device", "num_workers", "eval_batch_size", "progress")


@dataclass
class Progress:
    """Where training stands after the last finished epoch."""

    epoch: int = 0
    step: int = 0
    history: list = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"epoch": 0, "pcc": math.nan, "rmse": math.nan, "score": -math.inf})
    best_weights: dict | None = None
    bad_epochs: int = 0
    stopped: bool = False


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": np_state[0], "key": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": random.getstate(),
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def cpu_copy(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def config_dict(cfg: "TrainConfig") -> dict[str, Any]:
    return asdict(cfg)


def check_resumable(saved: Mapping[str, Any], cfg: "TrainConfig", path: Path) -> None:
    now = config_dict(cfg)
    diff = [f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in now
            if k not in RESUMABLE_CHANGES and saved.get(k) != now[k]]
    if diff:
        raise ValueError(f"{path}: cannot resume with a different config ({'; '.join(diff)}); "
                         "use a fresh out_dir or the original config")


def check_same_shapes(saved: Mapping[str, Tensor], model: nn.Module, path: Path) -> None:
    """Refuse to resume into a model whose tensors differ from the saved ones (e.g. a student of
    another size, or a differently pruned model, under the same run folder)."""
    now = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    was = {k: tuple(v.shape) for k, v in saved.items()}
    diff = [f"{k}: {was.get(k, 'absent')} -> {now.get(k, 'absent')}" for k in sorted(now.keys() | was.keys())
            if now.get(k) != was.get(k)]
    if diff:
        more = f" and {len(diff) - 3} more" if len(diff) > 3 else ""
        raise ValueError(f"{path}: holds a different model ({'; '.join(diff[:3])}{more}); "
                         "the model changed since that training was saved: use a fresh out_dir")


def run_identity(out_dir: Path | str) -> str | None:
    """The identity of the run whose folder holds ``out_dir`` (its ``params.json`` in ``out_dir``
    or the folder above), or None when training runs outside a run folder."""
    for folder in (Path(out_dir), Path(out_dir).parent):
        f = folder / "params.json"
        if f.is_file():
            return json.loads(f.read_text()).get("identity") or None
    return None


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` atomically, stamped with the identity of the run it belongs to."""
    state = {**state, "run_identity": run_identity(Path(path).parent)}
    with atomic.atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state(out_dir: Path | str) -> dict[str, Any] | None:
    """The saved training state of ``out_dir`` (safe load), or None if there is none. A state saved
    by a run of another identity (other parameters or input runs) is refused, naming both."""
    path = Path(out_dir) / STATE_FILE
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt or foreign file: say which and why
        raise ValueError(f"{path}: not a readable training state ({type(e).__name__}: {e})") from e
    check_identity(state.get("run_identity"), run_identity(out_dir), path)
    return state


def check_identity(saved: str | None, now: str | None, path: Path) -> None:
    """Refuse to resume a training saved by another run (stage, parameters or input runs differ)."""
    if saved != now and (saved is not None or now is not None):
        raise ValueError(f"{path}: saved by run identity {saved}, but this run is {now} (its parameters or "
                         "input runs differ, see params.json): not resuming it; use a fresh run folder")
