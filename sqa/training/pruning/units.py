"""Prunable unit groups, their masks, parameter counts as a function of kept units, physical removal.

A *group* is one :class:`Units` module inside a prunable model: the output channels of one conv
layer, the heads or the FFN neurons of one transformer layer, the neurons of the attention-pool
scorer, or one whole layer (a group of one unit, its *gate*). Its ``mask`` is ``None`` (all units
kept), a (n,) 0/1 vector (zeros: units masked out), or a (batch, n) tensor of per-sample values
(importance estimation: the gradient w.r.t. row b is the gradient of sample b alone).

A prunable model declares, per tensor of its state dict, which axes are made of which group's
units (:class:`TensorPlan`, with a block size: a head is ``head_dim`` rows, a last-conv channel is
``freq_bins`` features) and which layer gate owns it. From that plan follow the parameter count
for any numbers of kept units (:func:`count_for`) and the removal of masked units
(:func:`compact`): masking units and removing them give the same outputs.

Protocol of a prunable model (``PrunedStudent``, ``PrunedXlsrTeacher``): ``unit_plan()``,
``stacks()`` (layer lists whose indices shift when layers go), ``rebuilt(keep)`` (the model for
the kept units, fresh weights), ``fold_removed(state, keep)`` (constants of removed units folded
into kept tensors), ``score_crops(wave)`` (MOS of each row as one window) and ``unit_table()``.
"""

from __future__ import annotations

import re
from collections import ChainMap
from dataclasses import dataclass
from typing import Mapping

import torch
from torch import Tensor, nn


class Units(nn.Module):
    """``n`` prunable units of one ``kind`` ("conv", "heads", "ffn", "pool", "layer")."""

    def __init__(self, n: int, kind: str, min_keep: int = 0) -> None:
        super().__init__()
        self.n, self.kind, self.min_keep = int(n), kind, int(min_keep)
        self.register_buffer("mask", None, persistent=False)

    def extra_repr(self) -> str:
        return f"n={self.n}, kind={self.kind!r}"

    def _shaped(self, like: Tensor, dim: int) -> Tensor:
        m = self.mask
        shape = [1] * like.dim()
        shape[dim] = self.n
        if m.dim() == 2:
            shape[0] = m.shape[0]
        return m.to(like.dtype).reshape(shape)

    def scale(self, x: Tensor, dim: int) -> Tensor:
        """``x`` with the slices of axis ``dim`` (one per unit) multiplied by the mask."""
        return x if self.mask is None else x * self._shaped(x, dim)

    def mix(self, x: Tensor, y: Tensor) -> Tensor:
        """Layer gate: ``y`` (the layer's output) where kept, its input ``x`` where masked."""
        if self.mask is None:
            return y
        g = self.mask.to(y.dtype).reshape(-1, *([1] * (y.dim() - 1)))
        return x + g * (y - x)

    def layer_norm(self, x: Tensor, norm: nn.LayerNorm) -> Tensor:
        """LayerNorm over the last axis (these units) that normalises over the kept units only:
        with a 0/1 mask, kept units get exactly what a LayerNorm of the smaller model gives."""
        if self.mask is None:
            return norm(x)
        w = self._shaped(x, -1)
        n = w.sum(-1, keepdim=True)
        mean = (x * w).sum(-1, keepdim=True) / n
        var = ((x - mean).square() * w).sum(-1, keepdim=True) / n
        return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


@dataclass(frozen=True)
class TensorPlan:
    """Which axes of a tensor are made of which group's units (``(axis, group, block)``), and
    the layer gate whose removal removes the whole tensor (``None``: never removed)."""

    axes: tuple[tuple[int, str, int], ...] = ()
    layer: str | None = None


def unit_groups(model: nn.Module) -> dict[str, Units]:
    """Every :class:`Units` module of ``model`` by its qualified name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, Units)}


def kept_counts(model: nn.Module) -> dict[str, int]:
    """Units each group keeps under its current (0/1) mask."""
    out = {}
    for name, u in unit_groups(model).items():
        out[name] = u.n if u.mask is None else int((u.mask.reshape(-1, u.n)[0] > 0.5).sum())
    return out


class Counter:
    """``count(kept)``: the parameter count of ``model`` with ``kept[g]`` units kept in group ``g``
    (numbers, or tensors of expected counts: then it is differentiable). Layers whose gate is 0
    count nothing. The plan is compiled once, so a count costs one pass over the tensors."""

    def __init__(self, model: nn.Module) -> None:
        plan = model.unit_plan()
        self.terms: list[tuple[int, tuple[tuple[str, int], ...]]] = []
        for name, p in model.named_parameters():
            tp = plan.get(name, TensorPlan())
            tagged = {a for a, _, _ in tp.axes}
            fixed = 1
            for axis, dim in enumerate(p.shape):
                if axis not in tagged:
                    fixed *= dim
            factors = tuple((g, b) for _, g, b in tp.axes) + (((tp.layer, 1),) if tp.layer is not None else ())
            self.terms.append((fixed, factors))

        self.by_group: dict[str, list[int]] = {}
        for i, (_, factors) in enumerate(self.terms):
            for group in {g for g, _ in factors}:
                self.by_group.setdefault(group, []).append(i)

    @staticmethod
    def _term(fixed: int, factors: tuple[tuple[str, int], ...], kept: Mapping[str, float]) -> float:
        size = fixed
        for group, block in factors:
            size = size * (kept[group] * block)
        return size

    def __call__(self, kept: Mapping[str, float]) -> float:
        total = 0.0
        for fixed, factors in self.terms:
            total = total + self._term(fixed, factors, kept)
        return total

    def change(self, kept: Mapping[str, float], group: str, value: float) -> float:
        """How the count changes when ``kept[group]`` becomes ``value`` (only the tensors of that
        group are visited)."""
        new = ChainMap({group: value}, kept)
        return sum(self._term(*self.terms[i], new) - self._term(*self.terms[i], kept)
                   for i in self.by_group.get(group, ()))


def count_for(model: nn.Module, kept: Mapping[str, float]) -> float:
    """Parameter count of ``model`` with ``kept[g]`` units kept in group ``g`` (see :class:`Counter`)."""
    return Counter(model)(kept)


def owner_gates(model: nn.Module) -> dict[str, str | None]:
    """For every group, the layer gate that removes it with its layer (``None``: no such gate)."""
    out: dict[str, str | None] = {name: None for name in unit_groups(model)}
    for tp in model.unit_plan().values():
        for _, group, _ in tp.axes:
            if tp.layer is not None and group != tp.layer:
                out[group] = tp.layer
    return out


def check_plan(model: nn.Module) -> None:
    """The plan's groups exist and every tagged axis has ``n * block`` entries (a coding error
    in a prunable model otherwise)."""
    groups = unit_groups(model)
    state = model.state_dict()
    for name, tp in model.unit_plan().items():
        if name not in state:
            raise AssertionError(f"unit plan names {name!r}, which is not in the state dict")
        for axis, group, block in tp.axes:
            if group not in groups or state[name].shape[axis] != groups[group].n * block:
                raise AssertionError(f"unit plan: {name} axis {axis} does not match group {group!r} x {block}")
        if tp.layer is not None and tp.layer not in groups:
            raise AssertionError(f"unit plan: {name} names layer gate {tp.layer!r}, which does not exist")


def kept_indices(model: nn.Module) -> dict[str, Tensor]:
    """Sorted indices of the units each group keeps (mask > 0.5; every unit without a mask)."""
    out = {}
    for name, u in unit_groups(model).items():
        if u.mask is None:
            out[name] = torch.arange(u.n)
            continue
        if u.mask.dim() != 1:
            raise ValueError(f"group {name}: mask has shape {tuple(u.mask.shape)}; removal needs a 0/1 vector")
        out[name] = torch.nonzero(u.mask.detach().cpu() > 0.5).flatten()
    return out


def _block_index(units: Tensor, block: int) -> Tensor:
    return (units[:, None] * block + torch.arange(block)[None, :]).flatten()


def _renamer(model: nn.Module, keep: Mapping[str, Tensor]):
    pairs = []
    for prefix, gates in model.stacks().items():
        new = 0
        for old, gate in enumerate(gates):
            if len(keep[gate]):
                pairs.append((f"{prefix}.{old}.", f"{prefix}.{new}."))
                new += 1
    table = dict(pairs)
    pattern = re.compile("|".join(re.escape(k) for k in sorted(table, key=len, reverse=True))) if table else None

    def rename(name: str) -> str:
        if pattern is None:
            return name
        m = pattern.match(name)
        return table[m.group(0)] + name[m.end():] if m else name

    return rename


def compact(model: nn.Module) -> nn.Module:
    """A new model without the masked units (the same outputs in eval mode), masks cleared."""
    keep = kept_indices(model)
    for name, u in unit_groups(model).items():
        if len(keep[name]) < u.min_keep:
            raise ValueError(f"group {name} keeps {len(keep[name])} units; it needs at least {u.min_keep}")
    new = model.rebuilt(keep)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.fold_removed(state, keep)
    plan = model.unit_plan()
    rename = _renamer(model, keep)
    out = {}
    for name, t in state.items():
        tp = plan.get(name)
        if tp is not None:
            if tp.layer is not None and len(keep[tp.layer]) == 0:
                continue
            for axis, group, block in tp.axes:
                t = t.index_select(axis, _block_index(keep[group], block).to(t.device))
        out[rename(name)] = t
    new.load_state_dict(out, strict=True)
    return new.to(next(model.parameters()).device).train(model.training)


def clear_masks(model: nn.Module) -> None:
    for u in unit_groups(model).values():
        u.mask = None
