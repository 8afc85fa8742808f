"""Hint distillation: a student also learns its teacher's summary of each clip, not only its score.

A DistillMOS-family head attention-pools a window's frames into one summary vector
(``SqaHead.pooled``) that a linear readout turns into the score. Distilling the score alone
gives the student one number per clip. With a hint weight ``w > 0`` the student's own pooled
summary, through a linear adapter, also regresses the teacher's summary of the same clip
(averaged over the clip's windows like its scores, standardised per dimension over the pool):

    loss = MSE(score) + w * MSE(adapter(student summary), teacher summary)

This is the FitNets hint (Romero et al., 2015) placed at the pooled summary, where the two models'
representations mean the same thing whatever their sizes. The adapter exists only while training;
the saved student is the plain model. The teacher's summaries are computed once per clip and
cached (:class:`sqa.training.feature_cache.FeatureCache`), so every student of a sweep shares them
and an interrupted extraction resumes.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from sqa.data.datasets import set_epoch


class TeacherSummary(nn.Module):
    """A teacher's clip summary as a one-frame feature extractor: (B, T) -> [(B, 1, D)]."""

    def __init__(self, teacher: nn.Module) -> None:
        super().__init__()
        if not callable(getattr(teacher, "embed", None)):
            raise ValueError(f"hint distillation needs a teacher with a pooled summary (embed), such as "
                             f"DistillMOS; {type(teacher).__name__} has none: set hint_weight 0")
        self.teacher = teacher

    def forward(self, wave: Tensor) -> list[Tensor]:
        return [self.teacher.embed(wave).unsqueeze(1)]


def teacher_summaries(teacher: nn.Module, df: pd.DataFrame, roots: Mapping[str, Path], folder: Path | str,
                      device: str = "auto", amp: str | None = "auto", progress: bool = True) -> np.ndarray:
    """The teacher's summaries (N, D) of ``df``'s clips, in row order, standardised per dimension;
    computed into (and read from) the cache ``folder``."""
    from sqa.training.feature_cache import FeatureCache

    cache = FeatureCache(folder, TeacherSummary(teacher).eval())
    cache.extract(df, roots, device=device, amp=amp, progress=progress)
    z = np.stack([cache.load(u).numpy().reshape(-1) for u in df["utt_id"]]).astype(np.float32)
    return (z - z.mean(axis=0)) / (z.std(axis=0) + 1e-6)


class HintDataset(Dataset):
    """Items of ``base`` with the teacher's standardised summary of the same clip as ``"hint"``."""

    def __init__(self, base: Dataset, hints: np.ndarray) -> None:
        if len(base) != len(hints):
            raise ValueError(f"HintDataset: {len(base)} clips but {len(hints)} hints")
        self.base, self.hints = base, torch.from_numpy(np.ascontiguousarray(hints, dtype=np.float32))
        self.preloaded = getattr(base, "preloaded", False)

    def __len__(self) -> int:
        return len(self.base)

    def set_epoch(self, epoch: int, seed: int = 0) -> None:
        set_epoch(self.base, epoch, seed)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**self.base[i], "hint": self.hints[i]}


class HintStudent(nn.Module):
    """A student and the linear adapter from its pooled summary to the teacher's (training only).

    ``forward(wave)`` is the student's score; ``forward(wave, hint=True)`` also returns the
    adapted summary of each row taken as one window."""

    def __init__(self, student: nn.Module, teacher_dim: int) -> None:
        super().__init__()
        self.student = student
        self.adapter = nn.Linear(student.config.dim_transformer, teacher_dim)

    def forward(self, wave: Tensor, hint: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        if not hint:
            return self.student(wave)
        mos, pooled = self.student.forward_window_pooled(wave)
        return mos, self.adapter(pooled)


def hint_forward(weight: float):
    """The training loop's ``forward_fn`` (picklable, for training processes): on batches with
    hints, the score and ``weight`` times the hint loss; elsewhere (dev scoring) the score."""
    return functools.partial(_hint_step, weight=weight)


def _hint_step(model: nn.Module, batch: Mapping[str, Any], weight: float) -> Tensor | tuple[Tensor, Tensor]:
    if "hint" not in batch:
        return model(batch["wave"])
    mos, guess = model(batch["wave"], hint=True)
    return mos, weight * F.mse_loss(guess.float(), batch["hint"].float())
