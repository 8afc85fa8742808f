"""Synthetic test signals shared by model tests."""

import math

import torch


def speechlike(seconds: float, seed: int, sr: int = 16000) -> torch.Tensor:
    """A voiced, syllable-modulated harmonic signal with noise: (T,) float32."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * sr), dtype=torch.float64) / sr
    f0 = 130 + 25 * torch.sin(2 * math.pi * 0.7 * t)
    phase = 2 * math.pi * torch.cumsum(f0 / sr, 0)
    voiced = sum(torch.sin(k * phase) / k for k in range(1, 12))
    envelope = torch.sin(2 * math.pi * 4 * t).clamp(min=0) ** 0.5
    noise = torch.randn(t.shape, generator=g, dtype=torch.float64)
    return (0.2 * voiced * envelope + 0.02 * noise).float()
