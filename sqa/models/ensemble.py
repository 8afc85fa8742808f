"""The ensemble teacher: the offline MOS models trained on human ratings, averaged by a fixed rule.

Members are baselines of :mod:`sqa.models.baselines` by name, by default all four (``MEMBERS``):
the released DistillMOS v7, DNSMOS P.808, DNSMOS P.835 (OVRL as the MOS) and the xls-r-sqa MFCC
head. **Rule: the ensemble's MOS is the unweighted mean of its members' MOS**, each already on the
1-5 ACR scale. No weight is fitted on any data (so none on test data); the member list is the only
choice, and the checkpoint stores it.

    teacher = EnsembleTeacher()              # or EnsembleTeacher(["distillmos", "dnsmos-p808"])
    mos = teacher(wave)                      # (B, T) 16 kHz on the teacher's device -> (B,) there
    each = teacher.members_scores(wave)      # (B, n_members), columns in ``teacher.members`` order

Every member scores exactly as ``baselines.get(name).predict`` does, windowing included. The torch
members (DistillMOS, the MFCC head) are submodules built by ``baselines.torch_network`` and scored
by ``baselines.torch_score`` on their own device, so ``.to(device)``, ``.eval()`` and
``state_dict()`` work as for any module. DNSMOS runs through ``baselines.get`` on a CPU numpy copy
of the batch, in onnxruntime with as many intra-op threads as torch has at the call
(``torch.get_num_threads()``: the labeling engine's one-thread worker processes stay at one
thread). The module holds no onnxruntime session: each process creates its own on first use
(``sqa.models.dnsmos``), so the teacher pickles to worker processes and loads there from its
checkpoint. Cost: about 5 s per 4-s clip on one (busy) CPU core, 85 % of it DNSMOS P.835, which
repeats a clip shorter than 9.01 s to 16 s and scores 7 windows of it.

The teacher is fixed: scores are computed without gradients and ``train()`` is refused, so the
members' batch norms stay in eval mode. Checkpoints: arch ``"ensemble"``, config
``{"members": [...]}`` and the torch members' weights; loading builds the members untrained and
takes the file's weights.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from sqa.models import baselines, checkpoint

MEMBERS = ("distillmos", "dnsmos-p808", "dnsmos-p835", "mfcc-sqa")


class EnsembleTeacher(nn.Module):
    """MOS (B,) of a (B, T) 16 kHz batch: the unweighted mean of the members' MOS (module docstring)."""

    arch = "ensemble"

    def __init__(self, members: Sequence[str] = MEMBERS, pretrained: bool = True) -> None:
        """``members``: baseline names (``baselines.NAMES``); ``pretrained``: the torch members with
        their released weights, else untrained (for a checkpoint's weights)."""
        super().__init__()
        self.members = _checked_members(members)
        self.nets = nn.ModuleDict({name: baselines.torch_network(name, pretrained)
                                   for name in self.members if name in baselines.TORCH_NAMES})
        self.min_samples = max(baselines.min_samples(name) for name in self.members)
        self.eval()

    def train(self, mode: bool = True) -> "EnsembleTeacher":
        """Eval mode only: ``train()`` is an error (the teacher has no weights of its own to fit)."""
        if mode:
            raise RuntimeError("EnsembleTeacher is a fixed teacher (the unweighted mean of released models) "
                               "and cannot be trained; keep it as given (epochs 0)")
        return super().train(False)

    @torch.no_grad()
    def members_scores(self, wave: Tensor) -> Tensor:
        """Each member's MOS: (B, n_members) float32 on ``wave``'s device, columns in ``members`` order."""
        self._check_wave(wave)
        cols, cpu_waves = [], None
        for name in self.members:
            if name in self.nets:
                col = _torch_member(name, self.nets[name], wave)
            else:
                if cpu_waves is None:
                    cpu_waves = list(wave.detach().to("cpu", torch.float32).numpy())
                col = torch.from_numpy(_dnsmos_member(name, cpu_waves))
            cols.append(col.to(wave.device, torch.float32).reshape(-1))
        return torch.stack(cols, dim=1)

    def forward(self, wave: Tensor) -> Tensor:
        """MOS (B,) float32 on ``wave``'s device: the unweighted mean of ``members_scores``."""
        return self.members_scores(wave).mean(dim=1)

    def with_window(self, seconds: float) -> "EnsembleTeacher":
        """Unchanged: every member keeps its own windows (DistillMOS 7.68 s, the MFCC head 4.8 s,
        DNSMOS 9.01 s), as its released scorer does."""
        return self

    def checkpoint_config(self) -> dict:
        return {"members": list(self.members)}

    def _check_wave(self, wave: Tensor) -> None:
        if not isinstance(wave, Tensor) or wave.dim() != 2 or not wave.is_floating_point() or not len(wave):
            got = f"{wave.dtype} {tuple(wave.shape)}" if isinstance(wave, Tensor) else type(wave).__name__
            raise ValueError(f"EnsembleTeacher: wave must be a float (batch, samples) tensor of >= 1 clip, got {got}")
        if wave.shape[1] < self.min_samples:
            raise ValueError(f"EnsembleTeacher: wave has {wave.shape[1]} samples; its members {list(self.members)} "
                             f"need >= {self.min_samples}")


def _checked_members(members: Sequence[str]) -> tuple[str, ...]:
    """``members`` as a tuple of known, distinct baseline names, or a ValueError saying what is wrong."""
    if isinstance(members, str):
        raise ValueError(f"EnsembleTeacher: members must be a list of baseline names, got the string {members!r}")
    names = tuple(members)
    unknown = [n for n in names if n not in baselines.NAMES]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if not names or unknown or repeated:
        what = "no members" if not names else f"unknown {unknown}" if unknown else f"repeated {repeated}"
        raise ValueError(f"EnsembleTeacher: {what}; members are distinct names of {list(baselines.NAMES)}")
    return names


def _torch_member(name: str, net: nn.Module, wave: Tensor) -> Tensor:
    """MOS (B,) of torch member ``name``, computed on its network's device."""
    device = next(net.parameters()).device
    return baselines.torch_score(name, net, wave.to(device))


def _dnsmos_member(name: str, waves: list[np.ndarray]) -> np.ndarray:
    """MOS (B,) of DNSMOS member ``name`` on CPU clips, with torch's current thread count."""
    return _dnsmos(name, torch.get_num_threads()).predict(waves)


@functools.lru_cache(maxsize=None)
def _dnsmos(name: str, threads: int) -> baselines.Baseline:
    """The DNSMOS baseline ``name`` with ``threads`` onnxruntime threads, built once per process."""
    return baselines.get(name, intra_op_threads=threads)


@checkpoint.register(EnsembleTeacher.arch)
def _build(config: dict) -> EnsembleTeacher:
    if set(config) != {"members"}:
        raise ValueError(f"an ensemble config is {{'members': [...]}}, got keys {sorted(config)}")
    return EnsembleTeacher(config["members"], pretrained=False)
