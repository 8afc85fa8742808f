"""Data-driven Taylor importance and the iterative prune -> recover loop.

Importance of unit i: the increase of the squared error ``(p_b - t_b)^2`` (MOS scaled to [0, 1])
summed over calibration clips b when the unit alone is removed, with the prediction linearised in
the unit's mask m_i: removal changes p_b by ``-J_bi``, ``J_bi = m_i dp_b/dm_i``, so

    order=2 (default):  sum_b (r_b - J_bi)^2 - r_b^2 = sum_b J_bi^2 - 2 r_b J_bi,   r_b = p_b - t_b
    order=1:            sum over batches of |sum_b 2 r_b J_bi|

``m_i dL/dm_i`` equals ``sum_w w dL/dw`` over the weights the unit's output passes through, so
order 1 is the first-order Taylor criterion |w * grad| summed over the unit's parameters (group
form, Molchanov et al. 2019). Order 2 adds the Gauss-Newton term: with targets = the unpruned
model's own outputs (distillation) the residual r is 0 at the start and only that term is left.
Per-sample J comes from one backward pass: masks are (batch, n) tensors during estimation
(eval mode, so BatchNorm does not mix samples).

Iterative pruning: the size shrinks geometrically over ``steps`` steps; each step scores the
units, removes the lowest importance per parameter until the step's size is reached, then
recovers with a few AdamW steps on the calibration clips.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from sqa.models import count_params
from sqa.training.devices import model_device
from sqa.training.pruning.units import Counter, compact, kept_counts, owner_gates, unit_groups


@dataclass
class Calibration:
    """Calibration clips: equal-length waveforms (N, T) at 16 kHz and their targets (MOS, N)."""

    waves: Tensor
    targets: Tensor

    def __post_init__(self) -> None:
        if self.waves.dim() != 2 or len(self.waves) == 0:
            raise ValueError("Calibration.waves must be a non-empty (clips, samples) tensor, "
                             f"got {tuple(self.waves.shape)}")
        if self.targets.shape != (len(self.waves),) or not torch.isfinite(self.targets).all():
            raise ValueError(f"Calibration.targets must be {len(self.waves)} finite MOS values, "
                             f"got shape {tuple(self.targets.shape)}")

    def __len__(self) -> int:
        return len(self.waves)


@torch.no_grad()
def predict_crops(model: nn.Module, waves: Tensor, batch_size: int = 8) -> Tensor:
    """MOS of each row as one window (eval mode), on the model's device; returned on the CPU."""
    was = model.training
    model.eval()
    device = model_device(model)
    out = torch.cat([model.score_crops(w.to(device)).float().cpu() for w in waves.split(batch_size)])
    model.train(was)
    return out


def importance(model: nn.Module, calibration: Calibration, batch_size: int = 8, order: int = 2) -> dict[str, Tensor]:
    """Importance of every unit (see the module docstring), per group; masked units score NaN."""
    if order not in (1, 2):
        raise ValueError(f"importance: order must be 1 or 2, got {order!r}")
    groups = unit_groups(model)
    base = {g: u.mask for g, u in groups.items()}
    was = model.training
    model.eval()
    device = model_device(model)
    scores = {g: torch.zeros(u.n, dtype=torch.float64) for g, u in groups.items()}
    try:
        for waves, targets in zip(calibration.waves.split(batch_size), calibration.targets.split(batch_size)):
            b = len(waves)
            leaves = {}
            for g, u in groups.items():
                m0 = base[g].detach() if base[g] is not None else torch.ones(u.n, device=device)
                u.mask = leaves[g] = m0.to(device).expand(b, u.n).clone().requires_grad_(True)
            p = (model.score_crops(waves.to(device)) - 1.0) / 4.0
            grads = torch.autograd.grad(p.sum(), list(leaves.values()), allow_unused=True)
            r = (p.detach() - (targets.to(device) - 1.0) / 4.0).double()[:, None]
            for (g, leaf), grad in zip(leaves.items(), grads):
                if grad is None:  # the group does not reach the output
                    continue
                j = (grad * leaf.detach()).double()
                step = (j.square() - 2.0 * r * j).sum(0) if order == 2 else (2.0 * r * j).sum(0).abs()
                scores[g] += step.cpu()
    finally:
        for g, u in groups.items():
            u.mask = base[g]
        model.train(was)
    for g, u in groups.items():
        if u.mask is not None:
            scores[g][u.mask.detach().cpu() < 0.5] = float("nan")
    return scores


def select(model: nn.Module, scores: dict[str, Tensor], size: float, floor: float | None = None,
           per_param: bool = True) -> dict[str, int]:
    """Mask the units of lowest score (per parameter it saves, if ``per_param``) until the model
    has <= ``size`` parameters; removals that would go below ``floor`` are skipped. Returns the
    units masked per group.

    Every unit of a group costs the same (what it saves at the current sizes); a layer gate costs
    the whole layer. Units inside a masked layer are no longer candidates. (Scoring sets of units
    by their joint linearised loss instead was tried and rejected: the greedy search then finds
    units whose sensitivities cancel in the linear model but not in the network.)
    """
    groups = unit_groups(model)
    count = Counter(model)
    kept = {g: float(v) for g, v in kept_counts(model).items()}
    owner = owner_gates(model)
    total = count(kept)
    cost = {g: max(-count.change(kept, g, kept[g] - 1), 1e-9) for g in groups}
    candidates = sorted(((float(s) / cost[g] if per_param else float(s), g, i)
                         for g, vec in scores.items() for i, s in enumerate(vec.tolist()) if not math.isnan(s)),
                        key=lambda item: item[0])
    masks = {g: (np.ones(u.n) if u.mask is None else u.mask.detach().cpu().double().numpy().copy())
             for g, u in groups.items()}
    removed = {g: 0 for g in groups}
    for _, g, i in candidates:
        if total <= size:
            break
        gate = owner[g]
        if kept[g] - 1 < groups[g].min_keep or (gate is not None and kept[gate] == 0):
            continue
        d = count.change(kept, g, kept[g] - 1)
        if floor is not None and total + d < floor:
            continue
        masks[g][i] = 0.0
        kept[g] -= 1
        total += d
        removed[g] += 1
    device = model_device(model)
    for g, n in removed.items():
        if n:
            groups[g].mask = torch.from_numpy(masks[g]).float().to(device)
    return removed


def recover(model: nn.Module, calibration: Calibration, steps: int, lr: float = 1e-4, batch_size: int = 8,
            seed: int = 0) -> float:
    """A few AdamW steps on the calibration clips (BatchNorm statistics frozen); mean loss."""
    if steps <= 0:
        return float("nan")
    device = model_device(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    losses = []
    for _ in range(steps):
        idx = torch.randperm(len(calibration), generator=g)[:batch_size]
        p = model.score_crops(calibration.waves[idx].to(device))
        loss = torch.mean(((p - calibration.targets[idx].to(device)) / 4.0) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
    model.eval()
    return sum(losses) / len(losses)


def calibration_loss(model: nn.Module, calibration: Calibration, batch_size: int = 8) -> float:
    """Mean squared error (MOS / 4 scale) of the model on the calibration clips."""
    p = predict_crops(model, calibration.waves, batch_size)
    return float(torch.mean(((p - calibration.targets) / 4.0) ** 2))


@dataclass
class Outcome:
    """A pruned model and one history row per round (or per logged step)."""

    model: nn.Module
    history: pd.DataFrame = field(default_factory=pd.DataFrame)


def prune(model: nn.Module, size: int, calibration: Calibration, *, steps: int = 5, recover_steps: int = 20,
          lr: float = 1e-4, batch_size: int = 8, order: int = 2, tolerance: float = 0.03, seed: int = 0,
          progress: bool = True) -> Outcome:
    """Iteratively prune a prunable ``model`` (modified copies; the input is not changed) to
    ``size`` parameters (the result lies in ``[size * (1 - tolerance), size]``)."""
    from tqdm.auto import tqdm

    start = Counter(model)(kept_counts(model))
    if not 0 < size < start:
        raise ValueError(f"prune: target size {size:,} must be below the model's {int(start):,} parameters")
    rows = []
    bar = tqdm(range(1, steps + 1), desc="pruning", disable=not progress)
    for step in bar:
        t0 = time.perf_counter()
        last = step == steps
        goal = size if last else start * (size / start) ** (step / steps)
        scores = importance(model, calibration, batch_size, order)
        removed = select(model, scores, goal, floor=size * (1 - tolerance) if last else None)
        kinds = {}
        for g, n in removed.items():
            kind = unit_groups(model)[g].kind
            kinds[kind] = kinds.get(kind, 0) + n
        model = compact(model)
        loss_pruned = calibration_loss(model, calibration, batch_size)
        train_loss = recover(model, calibration, recover_steps, lr, batch_size, seed + step)
        params = count_params(model)
        rows.append({"step": step, "goal": int(goal), "params": params, "loss_pruned": loss_pruned,
                     "recover_loss": train_loss, "loss_recovered": calibration_loss(model, calibration, batch_size),
                     **{f"removed_{k}": v for k, v in sorted(kinds.items())}, "seconds": time.perf_counter() - t0})
        bar.set_postfix(params=f"{params:,}", loss=f"{rows[-1]['loss_recovered']:.4f}")
    return Outcome(model, pd.DataFrame(rows).fillna(0))
