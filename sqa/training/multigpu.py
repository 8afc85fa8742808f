"""Training on several GPUs from inside a stage: :func:`sqa.training.loop.fit` in one spawned
process per GPU, joined through the loop's own data-parallel path (the environment torchrun
would set: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``).

``sqa run STAGE --gpus N`` sets ``SQA_GPUS=N`` for the notebook; the stage calls :func:`fit`
with ``nprocs=N``. Rank 0 writes ``train_state.pt`` after every epoch as usual; when all ranks
are done this process loads the best weights and the history from it, so the caller gets the
same :class:`~sqa.training.loop.FitResult` as from a single-process ``fit``. With one process the
call is ``loop.fit`` itself. Everything handed over (model, datasets, ``batch_sampler_fn``,
``forward_fn``) must pickle: module-level classes and functions (or ``functools.partial`` of
them), no closures.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn
from torch.utils.data import Dataset

from sqa.training import loop
from sqa.training.devices import resolve_device
from sqa.training.train_state import load_state


def fit(nprocs: int, model: nn.Module, train_ds: Dataset, dev_ds: Dataset | None, cfg: loop.TrainConfig,
        out_dir: Path | str, **kwargs: Any) -> loop.FitResult:
    """:func:`sqa.training.loop.fit` over ``nprocs`` processes (one per GPU on a GPU; gloo
    processes on the CPU); ``kwargs`` go to ``loop.fit``."""
    import torch.multiprocessing

    if nprocs < 1:
        raise ValueError(f"nprocs={nprocs} must be >= 1")
    if nprocs == 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return loop.fit(model, train_ds, dev_ds, cfg, out_dir, **kwargs)
    torch.multiprocessing.start_processes(_rank_main, args=(nprocs, _free_port(), model, train_ds, dev_ds, cfg,
                                                            str(out_dir), kwargs),
                                          nprocs=nprocs, join=True, start_method="spawn")
    return _result(model, cfg, Path(out_dir))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, model: nn.Module, train_ds: Dataset, dev_ds: Dataset | None,
               cfg: loop.TrainConfig, out_dir: str, kwargs: dict) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    loop.fit(model, train_ds, dev_ds, cfg, out_dir, **kwargs)


def _result(model: nn.Module, cfg: loop.TrainConfig, out_dir: Path) -> loop.FitResult:
    """The finished run's result from the state rank 0 saved: best weights, history, stop."""
    saved = load_state(out_dir)
    if saved is None:
        raise RuntimeError(f"{out_dir}: the training processes ended without writing a training state")
    model.load_state_dict(saved["best_model"] if saved["best_model"] is not None else saved["model"])
    model.to(resolve_device(cfg.device)).eval()
    best = saved["best"]
    return loop.FitResult(best_epoch=best["epoch"], best_dev_pcc=best["pcc"], best_dev_rmse=best["rmse"],
                          stopped_early=saved["stopped"],
                          log=pd.DataFrame(saved["history"], columns=loop.LOG_COLUMNS), model=model)
