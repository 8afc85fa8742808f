"""Batches of clips of equal length: what every scorer that stacks waveforms needs."""

from __future__ import annotations

from typing import Sequence


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped by equal length, at most ``batch_size`` per group, in first-seen order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    groups: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        groups.setdefault(n, []).append(i)
    return [g[s : s + batch_size] for g in groups.values() for s in range(0, len(g), batch_size)]
