"""Transformer layers with a per-layer head count and FFN width (what pruning leaves).

``PrunableLayer`` is a post-norm (``nn.TransformerEncoderLayer``, wav2vec 2.0 base) or pre-norm
(XLS-R's "stable layer norm") encoder layer. Attention heads keep their width (``head_dim``) and
the residual width stays ``dim``: removing a head shrinks the q/k/v rows and the output
projection's columns, which stock ``nn.MultiheadAttention`` cannot express. A layer with no heads
adds the output projection's bias; with no FFN neurons, the second linear's bias.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Iterator

import torch.nn.functional as F
from torch import Tensor, nn

from sqa.training.pruning.units import TensorPlan, Units

ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


@contextmanager
def quiet_init() -> Iterator[None]:
    """Building layers with zero units warns that initialising empty tensors is a no-op."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
        yield


def activation(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"activation {name!r} is not supported; use one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class PrunableAttention(nn.Module):
    """Multi-head self-attention, ``heads`` heads of ``head_dim`` each, on (B, L, dim)."""

    def __init__(self, dim: int, heads: int, head_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads, self.head_dim, self.dropout = heads, head_dim, dropout
        self.q, self.k, self.v = (nn.Linear(dim, inner) for _ in range(3))
        self.out = nn.Linear(inner, dim)
        self.units = Units(heads, "heads")

    def forward(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        if self.heads == 0:
            return self.out(x[..., :0])
        q, k, v = (proj(x).view(b, n, self.heads, self.head_dim).transpose(1, 2) for proj in (self.q, self.k, self.v))
        o = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        o = self.units.scale(o, 1)
        return self.out(o.transpose(1, 2).reshape(b, n, self.heads * self.head_dim))


class PrunableFeedForward(nn.Module):
    """Linear -> activation -> dropout -> Linear -> dropout, ``width`` prunable neurons."""

    def __init__(self, dim: int, width: int, act: str, act_dropout: float = 0.0, out_dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, width), nn.Linear(width, dim)
        self.act_name, self.act = act, activation(act)
        self.act_drop, self.out_drop = nn.Dropout(act_dropout), nn.Dropout(out_dropout)
        self.units = Units(width, "ffn")

    def forward(self, x: Tensor) -> Tensor:
        h = self.units.scale(self.act(self.fc1(x)), -1)
        return self.out_drop(self.fc2(self.act_drop(h)))


class PrunableLayer(nn.Module):
    """One encoder layer; its ``gate`` (a group of one unit) removes the whole layer."""

    def __init__(self, dim: int, heads: int, head_dim: int, ffn: int, *, norm_first: bool, act: str,
                 eps: float = 1e-5, dropout: float = 0.0, attn_dropout: float = 0.0,
                 act_dropout: float = 0.0) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.attn = PrunableAttention(dim, heads, head_dim, attn_dropout)
        self.drop = nn.Dropout(dropout)
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=eps), nn.LayerNorm(dim, eps=eps)
        self.ffn = PrunableFeedForward(dim, ffn, act, act_dropout, dropout)
        self.gate = Units(1, "layer")

    def forward(self, x: Tensor) -> Tensor:
        if self.norm_first:
            y = x + self.drop(self.attn(self.norm1(x)))
            y = y + self.ffn(self.norm2(y))
        else:
            y = self.norm1(x + self.drop(self.attn(x)))
            y = self.norm2(y + self.ffn(y))
        return self.gate.mix(x, y)

    def plan(self, prefix: str) -> dict[str, TensorPlan]:
        """Tensor plan of this layer's state (``prefix`` ends with a dot)."""
        heads, ffn, gate = f"{prefix}attn.units", f"{prefix}ffn.units", f"{prefix}gate"
        hd = self.attn.head_dim
        out = {f"{prefix}{name}": TensorPlan((), gate)
               for name in ("attn.out.bias", "ffn.fc2.bias", "norm1.weight", "norm1.bias",
                            "norm2.weight", "norm2.bias")}
        for proj in ("q", "k", "v"):
            for t in ("weight", "bias"):
                out[f"{prefix}attn.{proj}.{t}"] = TensorPlan(((0, heads, hd),), gate)
        out[f"{prefix}attn.out.weight"] = TensorPlan(((1, heads, hd),), gate)
        out[f"{prefix}ffn.fc1.weight"] = TensorPlan(((0, ffn, 1),), gate)
        out[f"{prefix}ffn.fc1.bias"] = TensorPlan(((0, ffn, 1),), gate)
        out[f"{prefix}ffn.fc2.weight"] = TensorPlan(((1, ffn, 1),), gate)
        return out
