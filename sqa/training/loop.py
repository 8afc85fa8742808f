"""One training loop for every trainable model: AdamW + warm-up, early stopping on dev PCC, resume.

Contract: ``model(batch["wave"])`` returns the MOS (1..5) of each clip, shape ``(B,)``. A model
that needs other inputs (e.g. a head on cached features in ``batch["feats"]``) passes
``forward_fn(model, batch)``; it must call ``model(...)`` itself (under data parallel ``model`` is
the DistributedDataParallel wrapper, which synchronises gradients only through ``__call__``).

Choices (all in :class:`TrainConfig`):
- **Loss** on MOS scaled to [0, 1], ``(mos - 1) / 4``, for both prediction and target: ``"mse"``
  (default), ``"l1"``, or ``"bias-aware"``: the first-order bias-aware loss (Mittag et al., 2021).
  Each corpus c gets a linear map ``a_c * p + b_c`` applied to the scaled prediction inside the
  loss only (never at inference). The maps start as the identity and are refitted by least
  squares after every epoch from that epoch's training predictions (detached, collected during
  the epoch), for each corpus with at least ``BIAS_MIN_N`` clips whose predictions correlate with
  its targets at PCC >= ``BIAS_MIN_PCC`` (below that the model has not learned enough for a fitted
  map to mean anything, and the old map is kept). Batches must carry ``"corpus"`` (ClipDataset does).
  A ``forward_fn`` may return ``(prediction, extra_loss)`` on training batches: the extra term
  (e.g. a student's hint loss, :mod:`sqa.training.hints`) is added to the loss.
- **Schedule**: linear warm-up over the first ``warmup_frac`` of all optimizer steps
  (``(s + 1) / warmup``), then ``"cosine"`` (default) or ``"linear"`` decay to 0 at the last step.
  The step count is ``epochs * steps_per_epoch``; early stopping cuts it short.
- **Early stopping**: stop after ``patience`` epochs in a row without a higher dev PCC (a NaN PCC
  counts as no improvement); the returned model carries the best epoch's weights.
- **Training batches**: every epoch is a fresh shuffle seeded by ``(seed, epoch)`` (a
  ``DistributedSampler``, also with one process), random crops seeded by ``(seed, epoch, index)``;
  the last incomplete batch is dropped when a rank has at least one full batch (a batch of one
  clip breaks BatchNorm).
- **Resume**: at the end of every epoch rank 0 writes ``train_state.pt`` atomically (model,
  optimizer, scheduler, grad scaler, best weights, early-stopping counters, history, bias maps,
  torch/CUDA/numpy/python RNG states) and ``train_log.csv``. ``fit`` on a folder that holds a
  ``train_state.pt`` continues after its last finished epoch, so a run killed mid-epoch repeats
  that epoch; on CPU it ends with exactly the weights of an uninterrupted run. Resuming with a
  different config (other than device, num_workers, eval_batch_size, progress) is refused.
- **Data parallel**: under ``torchrun`` (``WORLD_SIZE > 1``) ``fit`` joins/initialises the process
  group (gloo on CPU, nccl on GPU), wraps the model in DistributedDataParallel and shards batches
  (DistributedSampler, or the rank-aware ``batch_sampler_fn``). Dev predictions of all ranks are
  gathered, so every rank takes the same early-stopping decision. Only rank 0 writes files and
  shows progress bars.
- **Devices and precision** (:mod:`sqa.training.devices`): ``device="auto"`` trains on the GPU
  when there is one. ``amp="auto"`` (default) is bf16 autocast on a GPU that supports it and
  float32 on the CPU; ``"bf16"`` or ``"fp16"`` (with a gradient scaler) ask for it explicitly
  (GPU only; on CPU switched off with a warning); ``None`` is float32 everywhere. The returned
  model stays on the training device; :func:`predict` feeds inputs to the model's own device.
"""

from __future__ import annotations

import functools
import math
import os
import random
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Protocol, Union

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from sqa import atomic
from sqa.data.datasets import collate, set_epoch
from sqa.training.devices import AMP_CHOICES, AMP_DTYPES, autocast, model_device, resolve_amp, resolve_device
from sqa.training.train_state import (
    STATE_FILE,
    Progress,
    check_resumable,
    check_same_shapes,
    config_dict,
    cpu_copy,
    load_state,
    rng_state,
    save_state,
    set_rng_state,
)

LOG_FILE = "train_log.csv"
LOG_COLUMNS = ("epoch", "step", "train_loss", "dev_pcc", "dev_rmse", "lr", "seconds", "clips_per_s")
LOSSES = ("mse", "l1", "bias-aware")
SCHEDULES = ("cosine", "linear")
BIAS_MIN_N = 10
BIAS_MIN_PCC = 0.7

ForwardFn = Callable[[nn.Module, Mapping[str, Any]], Union[Tensor, tuple[Tensor, Tensor]]]


class EpochBatchSampler(Protocol):
    def __iter__(self): ...
    def __len__(self) -> int: ...
    def set_epoch(self, epoch: int) -> None: ...


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`fit` (see the module docstring for their meaning)."""

    epochs: int = 20
    lr: float = 1e-4
    batch_size: int = 16
    weight_decay: float = 0.01
    warmup_frac: float = 0.1
    schedule: str = "cosine"  # decay after warm-up: "cosine" | "linear"
    loss: str = "mse"  # "mse" | "l1" | "bias-aware", on MOS scaled to [0, 1]
    patience: int | None = 5  # epochs without dev-PCC improvement before stopping; None: never
    grad_clip: float | None = 1.0  # max global gradient norm; None: no clipping
    seed: int = 0
    num_workers: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    amp: str | None = "auto"  # "auto" (bf16 on a GPU, off on CPU) | None | "bf16" | "fp16" (GPU only)
    eval_batch_size: int | None = None  # default: batch_size
    progress: bool = True

    def __post_init__(self) -> None:
        def bad(name: str, rule: str) -> ValueError:
            return ValueError(f"TrainConfig.{name}={getattr(self, name)!r}: {rule}")

        for name, least in (("epochs", 0), ("batch_size", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < least:
                raise bad(name, f"must be an integer >= {least}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise bad("lr", "must be a positive number")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise bad("weight_decay", "must be >= 0")
        if not (isinstance(self.warmup_frac, (int, float)) and 0 <= self.warmup_frac < 1):
            raise bad("warmup_frac", "must be in [0, 1)")
        if self.schedule not in SCHEDULES:
            raise bad("schedule", f"must be one of {SCHEDULES}")
        if self.loss not in LOSSES:
            raise bad("loss", f"must be one of {LOSSES}")
        if self.patience is not None and (isinstance(self.patience, bool) or not isinstance(self.patience, int)
                                          or self.patience < 1):
            raise bad("patience", "must be an integer >= 1 or None")
        if self.grad_clip is not None and not (isinstance(self.grad_clip, (int, float)) and self.grad_clip > 0):
            raise bad("grad_clip", "must be a positive number or None")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise bad("seed", "must be an integer >= 0")
        if not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise bad("num_workers", "must be an integer >= 0")
        if not (self.device in ("auto", "cpu", "cuda") or str(self.device).startswith("cuda:")):
            raise bad("device", "must be 'auto', 'cpu', 'cuda' or 'cuda:N'")
        if self.amp not in AMP_CHOICES:
            raise bad("amp", f"must be one of {AMP_CHOICES}")
        if self.eval_batch_size is not None and (not isinstance(self.eval_batch_size, int) or self.eval_batch_size < 1):
            raise bad("eval_batch_size", "must be an integer >= 1 or None")


@dataclass
class FitResult:
    best_epoch: int  # 1-based, as in the log
    best_dev_pcc: float
    best_dev_rmse: float
    stopped_early: bool
    log: pd.DataFrame
    model: nn.Module  # best weights loaded, in eval mode


# ---------------------------------------------------------------- schedule


def lr_factor(step: int, total_steps: int, warmup_steps: int, kind: str = "cosine") -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based)."""
    if kind not in SCHEDULES:
        raise ValueError(f"lr_factor: kind must be one of {SCHEDULES}, got {kind!r}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress)) if kind == "cosine" else 1.0 - progress


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Warm-up + decay of :func:`lr_factor` over ``total_steps`` optimizer steps."""
    warmup = int(round(cfg.warmup_frac * total_steps))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, functools.partial(lr_factor, total_steps=total_steps, warmup_steps=warmup, kind=cfg.schedule))


# ---------------------------------------------------------------- devices and processes


def _dist_env() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from the torchrun environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    return int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0"))


def _to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


def _default_forward(model: nn.Module, batch: Mapping[str, Any]) -> Tensor:
    return model(batch["wave"])


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _gather(obj: Any, world: int) -> list[Any]:
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


# ---------------------------------------------------------------- loss


def _scaled(mos: Tensor) -> Tensor:
    return (mos - 1.0) / 4.0


def _pcc(x: np.ndarray, y: np.ndarray) -> float:
    from sqa.analysis.metrics import scores

    return scores(x, y)["pcc"]


class BiasMaps:
    """Per-corpus first-order maps ``a * p + b`` of the bias-aware loss (see module docstring)."""

    def __init__(self, coef: Mapping[str, Iterable[float]] | None = None) -> None:
        self.coef: dict[str, tuple[float, float]] = {k: tuple(map(float, v)) for k, v in (coef or {}).items()}

    def apply(self, p: Tensor, corpora: list[str]) -> Tensor:
        ab = torch.tensor([self.coef.get(c, (1.0, 0.0)) for c in corpora], dtype=p.dtype, device=p.device)
        return ab[:, 0] * p + ab[:, 1]

    def refit(self, corpora: list[str], p: np.ndarray, t: np.ndarray) -> None:
        corpora_arr = np.asarray(corpora)
        for c in sorted(set(corpora)):
            m = corpora_arr == c
            if m.sum() < BIAS_MIN_N or np.ptp(p[m]) == 0 or np.ptp(t[m]) == 0:
                continue
            if _pcc(p[m], t[m]) >= BIAS_MIN_PCC:
                a, b = np.polyfit(p[m], t[m], 1)
                self.coef[c] = (float(a), float(b))


def _loss(kind: str, p: Tensor, t: Tensor, corpora: list[str] | None, bias: BiasMaps) -> Tensor:
    if kind == "bias-aware":
        if corpora is None:
            raise ValueError("loss='bias-aware' needs batch['corpus'] (a list of corpus names per clip)")
        p = bias.apply(p, corpora)
    return torch.mean((p - t) ** 2) if kind != "l1" else torch.mean(torch.abs(p - t))


# ---------------------------------------------------------------- prediction


@torch.no_grad()
def predict(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    forward_fn: ForwardFn | None = None,
    amp: str | None = None,
    num_workers: int = 0,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and targets (float64 arrays, dataset order) of ``model`` in eval mode.

    ``device`` moves the model there first; the inputs always go to the model's own device."""
    from tqdm.auto import tqdm

    if device is not None:
        model.to(resolve_device(device))
    device = model_device(model)
    forward = forward_fn or _default_forward
    was_training = model.training
    model.eval()
    preds, targets = [], []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate, num_workers=num_workers)
    try:
        for batch in tqdm(loader, desc="predict", disable=not progress, leave=False):
            targets.append(batch["target"].float().numpy())  # read on the CPU, before the batch moves
            batch = _to_device(batch, device)
            with autocast(device, amp):
                pred = forward(model, batch)
            _check_pred(pred, batch)
            preds.append(pred.float().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(preds).astype(np.float64), np.concatenate(targets).astype(np.float64)


def _check_pred(pred: Tensor, batch: Mapping[str, Any]) -> None:
    n = len(batch["target"])
    if not isinstance(pred, Tensor) or pred.shape != (n,):
        shape = tuple(pred.shape) if isinstance(pred, Tensor) else type(pred).__name__
        raise ValueError(f"the model/forward_fn returned {shape}; expected a MOS tensor of shape ({n},)")


def _evaluate(model: nn.Module, dev_ds: Dataset, cfg: TrainConfig, device: torch.device, forward: ForwardFn,
              rank: int, world: int) -> tuple[float, float]:
    """Dev PCC and RMSE (MOS scale); each rank predicts a shard, results are gathered."""
    from sqa.analysis.metrics import scores

    shard = list(range(rank, len(dev_ds), world))
    pred, target = (np.empty(0), np.empty(0))
    if shard:
        pred, target = predict(model, Subset(dev_ds, shard), batch_size=cfg.eval_batch_size or cfg.batch_size,
                               device=device, forward_fn=forward, amp=cfg.amp, num_workers=cfg.num_workers)
    parts = _gather((shard, pred, target), world)
    index = np.concatenate([np.asarray(s, dtype=np.int64) for s, _, _ in parts])
    order = np.argsort(index, kind="stable")
    pred = np.concatenate([p for _, p, _ in parts])[order]
    target = np.concatenate([t for _, _, t in parts])[order]
    s = scores(target, pred)
    return s["pcc"], s["rmse"]


# ---------------------------------------------------------------- the loop


@dataclass
class _Env:
    """Where this process trains: its rank among ``world`` processes, device, precision, wrapper."""

    rank: int
    world: int
    device: torch.device
    amp: str | None
    net: nn.Module
    created_group: bool

    @property
    def main(self) -> bool:
        return self.rank == 0


def _setup(model: nn.Module, cfg: TrainConfig) -> _Env:
    """Seed, pick the device, join or create the process group, move (and wrap) the model."""
    rank, world, local_rank = _dist_env()
    device = resolve_device(cfg.device, local_rank)
    created_group = False
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        created_group = True
    if cfg.amp in AMP_DTYPES and device.type != "cuda":
        warnings.warn(f"TrainConfig.amp={cfg.amp!r} needs a GPU; training in float32 on {device}", stacklevel=3)
    amp = resolve_amp(cfg.amp, device)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)
    model.to(device)
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return _Env(rank, world, device, amp, net, created_group)


class _TrainLoader:
    """Each epoch's DataLoader: a fresh shuffle (or the caller's batch sampler) seeded by (seed, epoch)."""

    def __init__(self, train_ds: Dataset, cfg: TrainConfig, env: _Env,
                 batch_sampler_fn: Callable[[int, int], EpochBatchSampler] | None) -> None:
        self.ds, self.cfg, self.env = train_ds, cfg, env
        self.batch_sampler = self.sampler = None
        if batch_sampler_fn is not None:
            self.batch_sampler = batch_sampler_fn(env.rank, env.world)
            if not (hasattr(self.batch_sampler, "set_epoch") and hasattr(self.batch_sampler, "__len__")):
                raise TypeError("batch_sampler_fn must return a batch sampler with set_epoch(epoch) and __len__")
        else:
            self.sampler = DistributedSampler(train_ds, num_replicas=env.world, rank=env.rank, shuffle=True,
                                              seed=cfg.seed)
            self.drop_last = len(self.sampler) >= cfg.batch_size
        self.steps = len(self(0))
        if self.steps == 0:
            raise ValueError(f"fit: the training set ({len(train_ds)} clips) gives no batch")

    def __call__(self, epoch: int) -> DataLoader:
        cfg = self.cfg
        set_epoch(self.ds, epoch, cfg.seed)
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        common = dict(collate_fn=collate, num_workers=cfg.num_workers, generator=g,
                      pin_memory=self.env.device.type == "cuda")
        if self.batch_sampler is not None:
            self.batch_sampler.set_epoch(epoch)
            return DataLoader(self.ds, batch_sampler=self.batch_sampler, **common)
        self.sampler.set_epoch(epoch)
        return DataLoader(self.ds, batch_size=cfg.batch_size, sampler=self.sampler, drop_last=self.drop_last,
                          **common)


@dataclass
class _Optim:
    """The trainable parameters and what updates them."""

    params: list
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler | None

    @classmethod
    def make(cls, model: nn.Module, cfg: TrainConfig, amp: str | None, total_steps: int) -> _Optim:
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("fit: the model has no trainable parameters")
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        return cls(params, optimizer, make_scheduler(optimizer, cfg, total_steps),
                   torch.amp.GradScaler("cuda") if amp == "fp16" else None)

    def update(self, loss: Tensor, grad_clip: float | None) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(self.params, grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()


def _resume(out_dir: Path, cfg: TrainConfig, steps_per_epoch: int, model: nn.Module, opt: _Optim,
            ) -> tuple[Progress, BiasMaps]:
    """The progress saved in ``out_dir`` (checked against this run and loaded), or a fresh start."""
    saved = load_state(out_dir)
    if saved is None:
        return Progress(), BiasMaps()
    path = out_dir / STATE_FILE
    check_resumable(saved["config"], cfg, path)
    if saved["steps_per_epoch"] != steps_per_epoch:
        raise ValueError(f"{path}: saved with {saved['steps_per_epoch']} steps per epoch, "
                         f"the data now give {steps_per_epoch}; the training set changed")
    check_same_shapes(saved["model"], model, path)
    model.load_state_dict(saved["model"])
    opt.optimizer.load_state_dict(saved["optimizer"])
    opt.scheduler.load_state_dict(saved["scheduler"])
    if opt.scaler is not None and saved["scaler"]:
        opt.scaler.load_state_dict(saved["scaler"])
    set_rng_state(saved["rng"])
    best_weights = saved["best_model"] if saved["best_model"] is not None else cpu_copy(model)
    return Progress(saved["epoch"], saved["step"], list(saved["history"]), dict(saved["best"]), best_weights,
                    saved["bad_epochs"], saved["stopped"]), BiasMaps(saved["bias"])


def _train_epoch(env: _Env, loader: _TrainLoader, opt: _Optim, cfg: TrainConfig, forward: ForwardFn,
                 bias: BiasMaps, state: Progress, epoch: int) -> tuple[float, int]:
    """One pass over the training data; returns the summed loss and clip count over all ranks and
    refits the bias maps (bias-aware loss) from the epoch's predictions."""
    from tqdm.auto import tqdm

    env.net.train()
    t0 = time.perf_counter()
    loss_sum, n_clips = 0.0, 0
    seen: tuple[list, list, list] = ([], [], [])
    bar = tqdm(loader(epoch), total=loader.steps, desc=f"epoch {epoch + 1}/{cfg.epochs}",
               disable=not (env.main and cfg.progress), leave=False)
    for batch in bar:
        batch = _to_device(batch, env.device)
        with autocast(env.device, env.amp):
            out = forward(env.net, batch)
        pred, extra = out if isinstance(out, tuple) else (out, None)
        _check_pred(pred, batch)
        p, t = _scaled(pred.float()), _scaled(batch["target"].float())
        loss = _loss(cfg.loss, p, t, batch.get("corpus"), bias)
        if extra is not None:
            loss = loss + extra.float()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"fit: loss is {loss.item()} at epoch {epoch + 1}, step {state.step + 1}")
        opt.update(loss, cfg.grad_clip)
        state.step += 1
        loss_sum += loss.item() * len(t)
        n_clips += len(t)
        if cfg.loss == "bias-aware":
            seen[0].extend(batch["corpus"])
            seen[1].append(p.detach().cpu().numpy())
            seen[2].append(t.cpu().numpy())
        bar.set_postfix(loss=f"{loss_sum / n_clips:.4f}",
                        clips_s=f"{n_clips * env.world / (time.perf_counter() - t0):.1f}")
    bar.close()
    totals = _gather((loss_sum, n_clips), env.world)
    if cfg.loss == "bias-aware":
        parts = _gather((seen[0], np.concatenate(seen[1]), np.concatenate(seen[2])), env.world)
        bias.refit([c for cs, _, _ in parts for c in cs], np.concatenate([x for _, x, _ in parts]),
                   np.concatenate([x for _, _, x in parts]))
    return sum(x for x, _ in totals), sum(n for _, n in totals)


def _end_epoch(env: _Env, model: nn.Module, dev_ds: Dataset | None, cfg: TrainConfig, forward: ForwardFn,
               state: Progress, row: dict, save_best: Callable[[nn.Module, dict], None] | None) -> bool:
    """Score the dev set, record the epoch, keep the best weights, decide on early stopping;
    returns whether this epoch is the new best."""
    dev_pcc, dev_rmse = (float("nan"), float("nan"))
    if dev_ds is not None:
        dev_pcc, dev_rmse = _evaluate(model, dev_ds, cfg, env.device, forward, env.rank, env.world)
    score = dev_pcc if math.isfinite(dev_pcc) else -math.inf
    improved = dev_ds is None or state.best_weights is None or score > state.best["score"]
    state.history.append({**row, "dev_pcc": dev_pcc, "dev_rmse": dev_rmse})
    if improved:
        state.best = {"epoch": row["epoch"], "pcc": dev_pcc, "rmse": dev_rmse, "score": score}
        state.best_weights = cpu_copy(model)
        state.bad_epochs = 0
        if env.main and save_best is not None:
            save_best(model, {"epoch": row["epoch"], "step": state.step, "dev_pcc": dev_pcc, "dev_rmse": dev_rmse})
    else:
        state.bad_epochs += 1
    state.stopped = cfg.patience is not None and state.bad_epochs >= cfg.patience
    state.epoch = row["epoch"]
    return improved


def _write_state(out_dir: Path, cfg: TrainConfig, model: nn.Module, opt: _Optim, bias: BiasMaps,
                 state: Progress, steps_per_epoch: int, improved: bool) -> None:
    save_state(out_dir / STATE_FILE, {
        "version": 1, "config": config_dict(cfg), "epoch": state.epoch, "step": state.step,
        "steps_per_epoch": steps_per_epoch, "model": model.state_dict(),
        "optimizer": opt.optimizer.state_dict(), "scheduler": opt.scheduler.state_dict(),
        "scaler": opt.scaler.state_dict() if opt.scaler is not None else {},
        "best": state.best, "best_model": None if improved else state.best_weights,
        "bad_epochs": state.bad_epochs, "stopped": state.stopped, "history": state.history,
        "bias": {k: list(v) for k, v in bias.coef.items()}, "rng": rng_state()})
    atomic.write_text(out_dir / LOG_FILE, pd.DataFrame(state.history, columns=LOG_COLUMNS).to_csv(index=False))


def _report_epoch(row: dict, epochs: int, improved: bool) -> None:
    """One line per finished epoch under the progress bars (a text line in a terminal)."""
    from tqdm.auto import tqdm

    best = " (best so far)" if improved and math.isfinite(row["dev_pcc"]) else ""
    tqdm.write(f"epoch {row['epoch']}/{epochs}: train loss {row['train_loss']:.4f}, dev PCC {row['dev_pcc']:.3f}, "
               f"dev RMSE {row['dev_rmse']:.3f}{best} [{row['seconds']:.0f} s, {row['clips_per_s']:.1f} clips/s]")


def untrained(model: nn.Module) -> FitResult:
    """The result of ``epochs=0``: the model as given, in eval mode, with an empty log."""
    nan = float("nan")
    return FitResult(best_epoch=0, best_dev_pcc=nan, best_dev_rmse=nan, stopped_early=False,
                     log=pd.DataFrame(columns=LOG_COLUMNS), model=model.eval())


def fit(
    model: nn.Module,
    train_ds: Dataset,
    dev_ds: Dataset | None,
    cfg: TrainConfig,
    out_dir: Path | str,
    *,
    save_best: Callable[[nn.Module, dict], None] | None = None,
    batch_sampler_fn: Callable[[int, int], EpochBatchSampler] | None = None,
    forward_fn: ForwardFn | None = None,
) -> FitResult:
    """Train ``model`` on ``train_ds``, early-stop on the dev PCC, resume from ``out_dir`` if possible.

    ``save_best(model, info)`` runs on rank 0 at every new best epoch (``info``: epoch, step,
    dev_pcc, dev_rmse). ``batch_sampler_fn(rank, world_size)`` returns a batch sampler with
    ``set_epoch`` and ``__len__`` (e.g. :class:`sqa.data.datasets.MixedBatchSampler`) that replaces the
    default shuffled batches. Without ``dev_ds`` there is no early stopping and the last epoch is
    the best.
    """
    out_dir = Path(out_dir)
    forward = forward_fn or _default_forward
    env = _setup(model, cfg)
    try:
        loader = _TrainLoader(train_ds, cfg, env, batch_sampler_fn)
        opt = _Optim.make(model, cfg, env.amp, cfg.epochs * loader.steps)
        state, bias = _resume(out_dir, cfg, loader.steps, model, opt)
        for epoch in range(state.epoch, cfg.epochs):
            if state.stopped:
                break
            t0 = time.perf_counter()
            loss_sum, n_clips = _train_epoch(env, loader, opt, cfg, forward, bias, state, epoch)
            seconds = time.perf_counter() - t0
            row = {"epoch": epoch + 1, "step": state.step, "train_loss": loss_sum / n_clips,
                   "lr": opt.optimizer.param_groups[0]["lr"], "seconds": seconds, "clips_per_s": n_clips / seconds}
            improved = _end_epoch(env, model, dev_ds, cfg, forward, state, row, save_best)
            if env.main:
                _write_state(out_dir, cfg, model, opt, bias, state, loader.steps, improved)
                if cfg.progress:
                    _report_epoch(state.history[-1], cfg.epochs, improved)
    finally:
        if env.created_group:
            dist.destroy_process_group()
    if state.best_weights is not None:
        model.load_state_dict(state.best_weights)
    model.eval()
    return FitResult(best_epoch=state.best["epoch"], best_dev_pcc=state.best["pcc"],
                     best_dev_rmse=state.best["rmse"], stopped_early=state.stopped,
                     log=pd.DataFrame(state.history, columns=LOG_COLUMNS), model=model)
