"""Learned hard-concrete (L0) gates with a Lagrangian constraint on the expected size.

Every unit gets a gate z in [0, 1] drawn from a hard-concrete distribution (Louizos et al., 2018)
with a learned ``log_alpha``; the gates multiply the units' outputs (the models' masks), and the
model and the gates are trained together on the calibration clips (squared error to the targets)
plus ``l1 * d + l2 * d^2``, ``d`` = (expected parameter count - goal) / start, where the
expected count follows from each unit's probability of a non-zero gate (:class:`Counter` with
expected numbers of kept units) and the multipliers l1, l2 are trained by gradient ascent (as in
CoFi / DPHuBERT). The goal falls linearly from the start size to the target over the first
``warmup`` share of the steps. At the end the units with the lowest keep probability are removed
until the target is met exactly (±tolerance), and a short recovery follows (gate values are not
folded into the weights: the kept units return to a gate of 1).
"""

from __future__ import annotations

import math
import time

import pandas as pd
import torch
from torch import Tensor, nn

from sqa.models import count_params
from sqa.training.pruning.taylor import Calibration, Outcome, calibration_loss, recover, select
from sqa.training.pruning.units import Counter, clear_masks, compact, kept_counts, unit_groups

BETA, GAMMA, ZETA = 2.0 / 3.0, -0.1, 1.1


class HardConcreteGates(nn.Module):
    """One ``log_alpha`` per unit of every group."""

    def __init__(self, sizes: dict[str, int], init: float = 2.0) -> None:
        super().__init__()
        self.names = list(sizes)
        self.log_alpha = nn.ParameterList(nn.Parameter(torch.full((n,), float(init))) for n in sizes.values())

    def sample(self) -> dict[str, Tensor]:
        """Stretched, clipped hard-concrete samples (training)."""
        out = {}
        for name, la in zip(self.names, self.log_alpha):
            u = torch.rand_like(la).clamp(1e-6, 1 - 1e-6)
            s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + la) / BETA)
            out[name] = (s * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)
        return out

    def keep_probability(self) -> dict[str, Tensor]:
        """P(z != 0) per unit."""
        shift = BETA * math.log(-GAMMA / ZETA)
        return {name: torch.sigmoid(la - shift) for name, la in zip(self.names, self.log_alpha)}


def prune(model: nn.Module, size: int, calibration: Calibration, *, steps: int = 200, lr: float = 1e-4,
          gate_lr: float = 0.05, lambda_lr: float = 0.05, warmup: float = 0.7, batch_size: int = 8,
          recover_steps: int = 20, tolerance: float = 0.03, seed: int = 0, progress: bool = True) -> Outcome:
    """Train gates towards ``size`` parameters, then remove the units least likely to be kept."""
    from tqdm.auto import tqdm

    groups = unit_groups(model)
    count = Counter(model)
    start = count(kept_counts(model))
    if not 0 < size < start:
        raise ValueError(f"prune: target size {size:,} must be below the model's {int(start):,} parameters")
    device = next(model.parameters()).device
    gates = HardConcreteGates({g: u.n for g, u in groups.items()}).to(device)
    lam = torch.zeros(2, device=device, requires_grad=True)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    gate_opt = torch.optim.Adam(gates.parameters(), lr=gate_lr)
    lam_opt = torch.optim.Adam([lam], lr=lambda_lr, maximize=True)
    torch.manual_seed(seed)
    order = torch.Generator().manual_seed(seed)
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    rows, t0 = [], time.perf_counter()
    bar = tqdm(range(steps), desc="gates", disable=not progress)
    try:
        for step in bar:
            for g, z in gates.sample().items():
                groups[g].mask = z
            idx = torch.randperm(len(calibration), generator=order)[:batch_size]
            p = model.score_crops(calibration.waves[idx].to(device))
            task = torch.mean(((p - calibration.targets[idx].to(device)) / 4.0) ** 2)
            expected = count({g: pr.sum() for g, pr in gates.keep_probability().items()})
            goal = start + (size - start) * min(1.0, (step + 1) / max(1.0, warmup * steps))
            d = (expected - goal) / start
            loss = task + lam[0] * d + lam[1] * d * d
            for o in (opt, gate_opt, lam_opt):
                o.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, 1.0)
            for o in (opt, gate_opt, lam_opt):
                o.step()
            if step % max(1, steps // 20) == 0 or step == steps - 1:
                e = float(expected.detach())
                rows.append({"step": step + 1, "goal": int(goal), "expected_params": e, "task_loss": task.item(),
                             "lambda1": lam[0].item(), "lambda2": lam[1].item()})
                bar.set_postfix(expected=f"{e:,.0f}", loss=f"{task.item():.4f}")
    finally:
        clear_masks(model)
    model.eval()
    with torch.no_grad():
        scores = {g: pr.detach().double().cpu() for g, pr in gates.keep_probability().items()}
    select(model, scores, size, floor=size * (1 - tolerance), per_param=False)
    model = compact(model)
    loss_pruned = calibration_loss(model, calibration, batch_size)
    recover_loss = recover(model, calibration, recover_steps, lr, batch_size, seed + 1)
    rows.append({"step": steps, "params": count_params(model), "loss_pruned": loss_pruned,
                 "recover_loss": recover_loss, "loss_recovered": calibration_loss(model, calibration, batch_size),
                 "seconds": time.perf_counter() - t0})
    return Outcome(model, pd.DataFrame(rows))
