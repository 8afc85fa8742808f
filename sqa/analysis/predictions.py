"""Score a manifest's clips with any model and turn predictions into per-corpus results.

A model here is an ``nn.Module`` mapping a batch of 16 kHz waveforms (B, T) to MOS (B,)
(students, teachers: they window long clips themselves) or a baseline (``predict(list of
waveforms)``, see ``sqa.models.baselines``). Clips are batched by equal length so no clip is padded or cut.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import pandas as pd

from sqa.analysis import metrics
from sqa.data import audio, manifest
from sqa.data.batching import length_batches

PRED_COLUMNS = ["utt_id", "corpus", "sys_id", "mos", "pred"]


def predict(model: Callable, df: pd.DataFrame, roots: Mapping[str, Path], *, batch_size: int = 16,
            device: str | None = None, desc: str = "scoring", target: str = "mos",
            chunk: int = 512) -> pd.DataFrame:
    """Predictions frame ``utt_id, corpus, sys_id, mos, pred`` (``mos`` from column ``target``).

    A module scores on its own device (``device``, e.g. ``"auto"``, moves it there first) and
    its inputs are sent there. Audio is read ``chunk`` clips at a time, so memory stays bounded
    on large test sets.
    """
    import torch
    from tqdm.auto import tqdm

    from sqa.training.devices import model_device, resolve_device

    files = manifest.audio_paths(df, roots)
    preds = np.full(len(df), np.nan)
    is_module = isinstance(model, torch.nn.Module)
    if is_module:
        if device is not None:
            model.to(resolve_device(device))
        model.eval()
        device = model_device(model)
    with torch.inference_mode(), tqdm(total=len(df), desc=desc, unit="clip") as bar:
        for start in range(0, len(files), chunk):
            waves = [audio.load(f) for f in files[start:start + chunk]]
            for idx in length_batches([len(w) for w in waves], batch_size):
                if is_module:
                    batch = torch.from_numpy(np.stack([waves[i] for i in idx])).to(device)
                    out = model(batch).detach().float().cpu().numpy()
                else:
                    out = np.asarray(model.predict([waves[i] for i in idx]), dtype=float)
                preds[[start + i for i in idx]] = out
                bar.update(len(idx))
    return pd.DataFrame({"utt_id": df["utt_id"].to_numpy(), "corpus": df["corpus"].to_numpy(),
                         "sys_id": df["sys_id"].to_numpy(), "mos": df[target].to_numpy(dtype=float),
                         "pred": preds})


def report(preds: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Per-corpus clip-level scores and their clip-weighted / unweighted means."""
    table = metrics.per_corpus(preds)
    return table, metrics.summarize(table)
