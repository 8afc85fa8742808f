"""Where models run: one helper per question (which device, which precision, where a model is,
how many GPUs a stage may use).

Every stage takes ``device="auto"`` (the GPU when there is one) and resolves it here; code that
feeds a model sends the inputs to :func:`model_device` of that model, so a model and its inputs
always meet on the model's device, whatever the caller passed. Mixed precision (bf16 autocast)
is the GPU default for training, feature extraction and labeling (:func:`default_amp`), never on
the CPU.
"""

from __future__ import annotations

import contextlib
import os

import torch
from torch import nn

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
AMP_CHOICES = (None, "auto", *AMP_DTYPES)
GPUS_ENV = "SQA_GPUS"  # set by ``sqa run --gpus N``: how many GPUs a stage may use


def resolve_device(name: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA when available; ``cuda`` means ``cuda:local_rank`` (one GPU per
    data-parallel process). A CUDA device without CUDA is an error naming the device."""
    name = str(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    if name == "cuda":
        name = f"cuda:{local_rank}"
    return torch.device(name)


def default_amp(device: torch.device | str) -> str | None:
    """``"bf16"`` on a GPU that supports it, else ``None`` (float32; always on the CPU)."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return None


def resolve_amp(amp: str | None, device: torch.device | str) -> str | None:
    """``"auto"`` -> :func:`default_amp`; an explicit ``"bf16"``/``"fp16"`` is kept on a GPU and
    dropped (float32) elsewhere; ``None`` stays off."""
    if amp not in AMP_CHOICES:
        raise ValueError(f"amp={amp!r} must be one of {AMP_CHOICES}")
    if amp == "auto":
        return default_amp(device)
    return amp if torch.device(device).type == "cuda" else None


def autocast(device: torch.device | str, amp: str | None):
    """A CUDA autocast context for ``amp`` (``"bf16"``/``"fp16"``), or a no-op."""
    device = torch.device(device)
    if amp is None or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=AMP_DTYPES[amp])


def model_device(model: object) -> torch.device:
    """The device of a module's first parameter (or buffer); the CPU for anything else."""
    if isinstance(model, nn.Module):
        for t in model.parameters():
            return t.device
        for t in model.buffers():
            return t.device
    return torch.device("cpu")


def gpu_count() -> int:
    """GPUs a stage may use: ``SQA_GPUS`` (``sqa run --gpus N``), default 1, at most those present."""
    text = os.environ.get(GPUS_ENV, "1")
    try:
        n = int(text)
    except ValueError:
        raise ValueError(f"{GPUS_ENV}={text!r} must be a whole number of GPUs") from None
    if n < 1:
        raise ValueError(f"{GPUS_ENV}={n} must be >= 1")
    available = torch.cuda.device_count()
    if n > 1 and n > available:
        raise RuntimeError(f"{GPUS_ENV}={n} GPUs asked for, {available} present")
    return n


def stage_devices(device: str) -> list[str]:
    """The devices a labeling stage spreads over: ``cuda:0..N-1`` when ``device`` resolves to the
    GPU and :func:`gpu_count` is N > 1, else the one resolved device."""
    resolved = resolve_device(device)
    n = gpu_count()
    if resolved.type == "cuda" and n > 1:
        return [f"cuda:{i}" for i in range(n)]
    return [str(resolved)]
