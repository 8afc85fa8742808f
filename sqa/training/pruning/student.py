"""The convolutional-transformer student (DistillMOS family), prunable: arch ``pruned-conv-transformer-sqa``.

Units: the output channels of every conv layer (at least one kept per layer), the heads and FFN
neurons of every head layer, whole head layers, the attention-pool scorer's neurons. Removing a
last-conv channel removes its ``freq_bins_out`` features from the head's norms and projection;
their eval-mode constants are folded into the projection bias.

Checkpoint config: ``student`` (a :class:`StudentConfig`: front end and windowing, with the kept
``conv_channels``; its transformer fields are those of the unpruned source and unused), ``head``
(a :class:`PrunedHeadConfig` with per-layer dims), ``origin`` (arch, parameters and conv channels
of the unpruned model).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sqa.models import checkpoint, count_params
from sqa.models.student import ConvFrontEnd, ConvTransformerSQA, StudentConfig, compressed_spectrum
from sqa.training.pruning.head import PrunableSqaHead, PrunedHeadConfig, from_sqa_head
from sqa.training.pruning.units import TensorPlan, Units

ARCH = "pruned-conv-transformer-sqa"


@dataclass(frozen=True)
class PrunedStudentConfig:
    student: StudentConfig
    head: PrunedHeadConfig
    origin: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"student": self.student.to_dict(), "head": self.head.to_dict(), "origin": dict(self.origin)}

    @classmethod
    def from_dict(cls, data: Mapping) -> "PrunedStudentConfig":
        unknown = sorted(set(data) - {"student", "head", "origin"})
        if unknown or "student" not in data or "head" not in data:
            raise ValueError("PrunedStudentConfig.from_dict: needs keys student, head (and origin); "
                             f"got {sorted(data)}")
        student = StudentConfig.from_dict(data["student"])
        head = PrunedHeadConfig.from_dict(data["head"])
        if head.dim_input != student.feature_dim:
            raise ValueError(f"PrunedStudentConfig: head.dim_input={head.dim_input} but the front end gives "
                             f"{student.feature_dim} features ({student.conv_channels[-1]} x {student.freq_bins_out})")
        return cls(student, head, dict(data.get("origin", {})))


class MaskedConvFrontEnd(ConvFrontEnd):
    """``ConvFrontEnd`` whose conv output channels can be masked (after the activation)."""

    def __init__(self, config: StudentConfig) -> None:
        super().__init__(config)
        self.units = nn.ModuleList(Units(c, "conv", min_keep=1) for c in config.conv_channels)

    def forward(self, wave: Tensor) -> Tensor:
        c = self.config
        x = compressed_spectrum(wave, c.stft_win, c.stft_hop, c.compression)
        for conv, units in zip(self.convs, self.units):
            x = units.scale(F.leaky_relu(conv(x), c.leaky_slope), 1)
        return x.flatten(1, 2).transpose(1, 2)


class PrunedStudent(ConvTransformerSQA):
    """A (pruned) ``ConvTransformerSQA``: same forward pass, per-layer dims from the config."""

    arch = ARCH

    def __init__(self, config: PrunedStudentConfig, windowed: bool = True, window_batch: int = 8) -> None:
        nn.Module.__init__(self)
        self.config = config.student
        self.origin = dict(config.origin)
        self.windowed, self.window_batch = windowed, window_batch
        self.frontend = MaskedConvFrontEnd(config.student)
        self.head = PrunableSqaHead(config.head)

    def pruned_config(self) -> PrunedStudentConfig:
        return PrunedStudentConfig(self.config, self.head.config, self.origin)

    def checkpoint_config(self) -> dict:
        return self.pruned_config().to_dict()

    def score_crops(self, wave: Tensor) -> Tensor:
        """MOS of each row as one window (importance estimation, calibration targets)."""
        return self.forward_window(wave)

    # ---------------------------------------------------------------- pruning protocol

    def _conv_group(self, i: int) -> str:
        return f"frontend.units.{i}"

    def unit_plan(self) -> dict[str, TensorPlan]:
        plan = {}
        for i in range(len(self.frontend.convs)):
            axes = ((0, self._conv_group(i), 1),) + (((1, self._conv_group(i - 1), 1),) if i else ())
            plan[f"frontend.convs.{i}.weight"] = TensorPlan(axes)
            plan[f"frontend.convs.{i}.bias"] = TensorPlan(((0, self._conv_group(i), 1),))
        last = self._conv_group(len(self.frontend.convs) - 1)
        plan.update(self.head.plan("head.", last, self.config.freq_bins_out))
        return plan

    def stacks(self) -> dict[str, list[str]]:
        return self.head.stacks("head.")

    def rebuilt(self, keep: Mapping[str, Tensor]) -> "PrunedStudent":
        channels = tuple(len(keep[self._conv_group(i)]) for i in range(len(self.frontend.convs)))
        student = replace(self.config, conv_channels=channels)
        head = self.head.config_for(keep, "head.", student.feature_dim)
        return PrunedStudent(PrunedStudentConfig(student, head, self.origin), self.windowed, self.window_batch)

    def fold_removed(self, state: dict[str, Tensor], keep: Mapping[str, Tensor]) -> None:
        last = len(self.frontend.convs) - 1
        kept = set(keep[self._conv_group(last)].tolist())
        removed = [c for c in range(self.config.conv_channels[last]) if c not in kept]
        f = self.config.freq_bins_out
        features = torch.tensor([c * f + j for c in removed for j in range(f)], dtype=torch.long)
        self.head.fold_removed_inputs(state, "head.", features)

    def unit_rows(self) -> list[dict]:
        origin = self.origin.get("conv_channels", list(self.config.conv_channels))
        rows = [{"part": "frontend", "layer": i, "kind": "conv", "kept": c, "total": origin[i], "layer_kept": True}
                for i, c in enumerate(self.config.conv_channels)]
        return rows + self.head.unit_rows("head")


def from_student(model: ConvTransformerSQA) -> PrunedStudent:
    """The prunable equivalent of a student (same outputs); a pruned student is copied."""
    if isinstance(model, PrunedStudent):
        return copy.deepcopy(model)
    head, head_state = from_sqa_head(model.head)
    origin = {"arch": model.arch, "params": count_params(model), "conv_channels": list(model.config.conv_channels)}
    out = PrunedStudent(PrunedStudentConfig(model.config, head.config, origin), model.windowed, model.window_batch)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    state.update({f"head.{k}": v for k, v in head_state.items()})
    out.load_state_dict(state, strict=True)
    return out.to(next(model.parameters()).device).train(model.training)


@checkpoint.register(ARCH)
def _build(config: dict) -> PrunedStudent:
    return PrunedStudent(PrunedStudentConfig.from_dict(config))
