"""Model definitions: SQA heads, teacher, students, baselines, checkpoints.

:func:`count_params` is the one parameter count every stage, table and benchmark reports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn


def count_params(model: "nn.Module") -> int:
    """Number of parameters (trainable or not; buffers excluded)."""
    return sum(p.numel() for p in model.parameters())
