"""Frozen-backbone features, extracted once per clip and cached on disk (fp16 safetensors).

Training a head on a frozen SSL backbone reads this cache instead of running the backbone every
epoch. One file per clip, written atomically; an interrupted extraction resumes where it stopped.
Extraction runs on the extractor's device (``device="auto"``: the GPU when there is one) under
bf16 autocast there by default; DataLoader worker processes decode the next clips meanwhile, and
clips of equal length are batched together (never padded).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from sqa import atomic
from sqa.data import audio, manifest
from sqa.models.heads import FEAT_SEQ_LEN, crop_features


class FeatureCache:
    """``folder/<sha1(utt_id)>.safetensors`` holding ``layers``: (n_layers, frames, dim) fp16."""

    def __init__(self, folder: Path | str, extractor: torch.nn.Module):
        self.folder = Path(folder)
        self.extractor = extractor

    def path(self, utt_id: str) -> Path:
        return self.folder / f"{hashlib.sha1(utt_id.encode()).hexdigest()}.safetensors"

    def extract(self, df: pd.DataFrame, roots: Mapping[str, Path], device: str = "auto",
                progress: bool = True, *, amp: str | None = "auto", batch_size: int = 8,
                loader_workers: int | None = None) -> int:
        """Extract every missing clip; returns how many were computed (the rest were cached).

        The extractor is moved to ``device`` and each batch to the extractor's device; ``amp``:
        ``"auto"`` (bf16 on a GPU), ``None``, ``"bf16"``, ``"fp16"``; ``loader_workers``: audio
        decoding processes (default: none on the CPU, one per core but one with a GPU)."""
        from torch.utils.data import DataLoader
        from tqdm.auto import tqdm

        from sqa.data.datasets import loader_workers as default_workers
        from sqa.training.devices import model_device, resolve_amp, resolve_device

        todo = [(u, str(p)) for u, p in zip(df["utt_id"], manifest.audio_paths(df, roots))
                if not self.path(u).is_file()]
        self.extractor.eval().to(resolve_device(device))
        where = model_device(self.extractor)
        workers = (default_workers(False) if where.type == "cuda" else 0) if loader_workers is None else loader_workers
        extra = {"prefetch_factor": max(2, 2 * batch_size // workers)} if workers else {}
        clips = DataLoader(_Waves(todo), batch_size=None, num_workers=workers, collate_fn=_as_is, **extra)
        buckets: dict[int, list[tuple[str, np.ndarray]]] = {}
        with tqdm(total=len(todo), desc="features", unit="clip", disable=not progress) as bar:
            for utt_id, wave in clips:
                bucket = buckets.setdefault(len(wave), [])
                bucket.append((utt_id, wave))
                if len(bucket) == batch_size:
                    bar.update(self._save_batch(buckets.pop(len(wave)), where, resolve_amp(amp, where)))
            for bucket in buckets.values():
                bar.update(self._save_batch(bucket, where, resolve_amp(amp, where)))
        return len(todo)

    def _save_batch(self, items: list[tuple[str, np.ndarray]], device: torch.device, amp: str | None) -> int:
        """Features of equal-length clips in one forward pass, one file per clip."""
        from safetensors.torch import save_file

        from sqa.training.devices import autocast

        x = torch.from_numpy(np.stack([w for _, w in items])).to(device)
        with torch.inference_mode(), autocast(device, amp):
            layers = torch.stack(self.extractor(x), dim=1).half().cpu()
        for (utt_id, _), clip_layers in zip(items, layers):
            with atomic.atomic_path(self.path(utt_id)) as tmp:
                save_file({"layers": clip_layers.contiguous()}, str(tmp), metadata={"utt_id": utt_id})
        return len(items)

    def load(self, utt_id: str) -> torch.Tensor:
        from safetensors.torch import load_file

        f = self.path(utt_id)
        if not f.is_file():
            raise FileNotFoundError(f"no cached features for {utt_id} ({f}): run extract first")
        return load_file(str(f))["layers"].float()


class _Waves(Dataset):
    """``(utt_id, wave)`` of each ``(utt_id, path)``: decoded by DataLoader workers."""

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int) -> tuple[str, np.ndarray]:
        utt_id, path = self.items[k]
        return utt_id, audio.load(path)


def _as_is(item):
    return item


class FeatureDataset(Dataset):
    """Cached features of a manifest's clips, cropped to the head's frame count.

    ``crop="random"`` (training, seeded per epoch and clip) or ``"center"`` (evaluation).
    Items: ``{"feats": (n_layers, frames, dim), "target", "index", "corpus"}``.
    """

    def __init__(self, df: pd.DataFrame, cache: FeatureCache, target: str = "mos",
                 frames: int = FEAT_SEQ_LEN, crop: str = "center"):
        self.df = df.reset_index(drop=True)
        self.cache, self.target, self.frames, self.crop = cache, target, frames, crop
        self._epoch_seed = (0, 0)

    def __len__(self) -> int:
        return len(self.df)

    def set_epoch(self, epoch: int, seed: int) -> None:
        self._epoch_seed = (seed, epoch)

    def __getitem__(self, i: int) -> dict:
        row = self.df.iloc[i]
        layers = self.cache.load(row["utt_id"])
        g = torch.Generator().manual_seed(int(np.random.SeedSequence([*self._epoch_seed, i]).generate_state(1)[0]))
        cropped = crop_features(list(layers.unsqueeze(1).unbind(0)), self.frames, self.crop, generator=g)
        return {"feats": torch.cat(cropped).contiguous(), "target": torch.tensor(float(row[self.target])),
                "index": i, "corpus": row["corpus"]}


def head_forward(head: torch.nn.Module, batch: dict) -> torch.Tensor:
    """``forward_fn`` for training a head on cached features (one layer or two fused)."""
    feats = batch["feats"].unbind(1)
    return head(feats[0] if len(feats) == 1 else list(feats))
