"""Frozen-backbone features, extracted once per clip and cached on disk (fp16 safetensors).

Training a head on a frozen SSL backbone reads this cache instead of running the backbone every
epoch. One file per clip, written atomically; an interrupted extraction resumes where it stopped.
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

    def extract(self, df: pd.DataFrame, roots: Mapping[str, Path], device: str = "cpu",
                progress: bool = True) -> int:
        """Extract every missing clip; returns how many were computed (the rest were cached)."""
        from safetensors.torch import save_file
        from tqdm.auto import tqdm

        todo = [(u, p) for u, p in zip(df["utt_id"], manifest.audio_paths(df, roots)) if not self.path(u).is_file()]
        self.extractor.eval().to(device)
        with torch.inference_mode():
            for utt_id, wav in tqdm(todo, desc="features", unit="clip", disable=not progress):
                x = torch.from_numpy(audio.load(wav)).unsqueeze(0).to(device)
                layers = torch.stack([f[0] for f in self.extractor(x)]).half().cpu().contiguous()
                with atomic.atomic_path(self.path(utt_id)) as tmp:
                    save_file({"layers": layers}, str(tmp), metadata={"utt_id": utt_id})
        return len(todo)

    def load(self, utt_id: str) -> torch.Tensor:
        from safetensors.torch import load_file

        f = self.path(utt_id)
        if not f.is_file():
            raise FileNotFoundError(f"no cached features for {utt_id} ({f}): run extract first")
        return load_file(str(f))["layers"].float()


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
