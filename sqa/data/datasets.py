"""Torch datasets over a manifest, and the batch sampler for distillation mixes.

``ClipDataset`` yields ``{"wave": Tensor[T], "target": float tensor, "index": int, "corpus": str}``
per manifest row. Audio path = ``roots[corpus] / path``; audio comes from :func:`sqa.data.audio.load`
(mono float32, 16 kHz).

Crops (``window`` samples):
- ``"random"`` (training): the offset comes from a numpy Generator seeded with
  ``(seed, epoch, index)``; :meth:`ClipDataset.set_epoch` sets seed and epoch (the training loop
  calls it each epoch). A crop depends only on those three numbers, never on the order items are
  read in or on which DataLoader worker reads them, so a resumed run repeats it exactly.
- ``"center"`` (evaluation): the middle ``window`` samples.
- A clip shorter than ``window`` is zero-padded at its end in both modes, as the models sqa trains
  (students, DistillMOS, XLS-R teachers) pad a short clip when they score it, so training sees
  the input that scoring (and pseudo-labeling) sees.
- ``None``: the full clip; :func:`collate` zero-pads a batch to its longest clip.

Memory: ``preload="auto"`` (what the stages use) reads every clip into memory only when the
clips last less than :data:`PRELOAD_MAX_SECONDS` in all (one hour: 230 MB of float32 at 16 kHz,
from the manifest's ``duration`` column); larger corpora are read lazily, clip by clip, by the
DataLoader's worker processes (:func:`loader_workers`), so memory does not grow with the corpus
(``bench/lazy_memory.py``: 30,000 clips vs 3,000).

``MixedBatchSampler`` builds batches over ``ConcatDataset([A, B])`` with a fixed number of items
from B in every batch (e.g. pseudo-labeled A + 20 % labeled B), seeded per epoch and sharded across
data-parallel ranks.
"""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import ConcatDataset, Dataset, Sampler, Subset

from sqa.data import audio

Crop = Literal["random", "center", None]

#: ``preload="auto"`` preloads only clips that last less than this in all (seconds of audio)
PRELOAD_MAX_SECONDS = 3600.0
#: most DataLoader worker processes :func:`loader_workers` picks for lazily read clips
MAX_LOADER_WORKERS = 8


def should_preload(manifest: pd.DataFrame, max_seconds: float = PRELOAD_MAX_SECONDS) -> bool:
    """Whether ``preload="auto"`` reads the clips into memory: their total ``duration`` is known
    and below ``max_seconds``."""
    if "duration" not in manifest.columns:
        return False
    total = pd.to_numeric(manifest["duration"], errors="coerce").sum(min_count=len(manifest))
    return bool(np.isfinite(total) and total < max_seconds)


def loader_workers(preloaded: bool) -> int:
    """DataLoader worker processes for a training set: none for preloaded clips (reading is
    free), else one per CPU core but one (the main process drives the model), 1..MAX_LOADER_WORKERS."""
    if preloaded:
        return 0
    return max(1, min(MAX_LOADER_WORKERS, len(os.sched_getaffinity(0)) - 1))


class ClipDataset(Dataset):
    """Clips of a manifest as training/evaluation items (see module docstring).

    ``target=None`` gives items with a NaN target (for scoring unlabeled clips). ``preload=True``
    reads every clip into memory once (with a progress bar), for small corpora; ``"auto"``
    does so only below :data:`PRELOAD_MAX_SECONDS` of audio (:func:`should_preload`);
    ``False`` reads each clip when it is asked for. ``preloaded`` says which happened.
    """

    def __init__(
        self,
        manifest: pd.DataFrame,
        roots: Mapping[str, Path | str],
        *,
        target: str | None = "mos",
        window: int | None = None,
        crop: Crop = None,
        sample_rate: int = audio.TARGET_SR,
        preload: bool | str = False,
        progress: bool = True,
    ) -> None:
        needed = ["utt_id", "corpus", "path"] + ([target] if target is not None else [])
        missing = [c for c in needed if c not in manifest.columns]
        if missing:
            raise ValueError(f"ClipDataset: manifest lacks column(s) {missing}")
        if len(manifest) == 0:
            raise ValueError("ClipDataset: manifest has no rows")
        if crop not in ("random", "center", None):
            raise ValueError(f"ClipDataset: crop must be 'random', 'center' or None, got {crop!r}")
        if window is not None and not (isinstance(window, numbers.Integral) and window > 0):
            raise ValueError(f"ClipDataset: window must be a positive number of samples or None, got {window!r}")
        if (crop is None) != (window is None):
            raise ValueError(
                f"ClipDataset: crop={crop!r} with window={window!r}: a window needs crop 'random' or 'center', "
                "and full clips need window=None and crop=None"
            )
        unknown = sorted(set(manifest["corpus"]) - set(roots))
        if unknown:
            raise ValueError(f"ClipDataset: no root folder for corpus/corpora {unknown}; roots has {sorted(roots)}")
        self.utt_ids: list[str] = manifest["utt_id"].astype(str).tolist()
        self.corpora: list[str] = manifest["corpus"].astype(str).tolist()
        self.paths: list[Path] = [Path(roots[c]) / p for c, p in zip(self.corpora, manifest["path"])]
        if target is None:
            self.targets = np.full(len(manifest), np.nan, dtype=np.float32)
        else:
            values = pd.to_numeric(manifest[target], errors="coerce").to_numpy(dtype=np.float64)
            bad = np.flatnonzero(~np.isfinite(values))
            if bad.size:
                ids = [self.utt_ids[i] for i in bad[:5]]
                raise ValueError(
                    f"ClipDataset: {bad.size} row(s) have no finite {target!r} (e.g. {ids}); filter the "
                    "manifest (e.g. labeled splits only) or pass target=None"
                )
            self.targets = values.astype(np.float32)
        self.target = target
        self.window = window
        self.crop = crop
        self.sample_rate = sample_rate
        self.seed = 0
        self.epoch = 0
        self._cache: list[np.ndarray] | None = None
        if preload not in (True, False, "auto"):
            raise ValueError(f"ClipDataset: preload must be True, False or 'auto', got {preload!r}")
        self.preloaded = should_preload(manifest) if preload == "auto" else bool(preload)
        if self.preloaded:
            from tqdm.auto import tqdm

            self._cache = [self._read(i) for i in tqdm(range(len(self)), desc="loading clips", disable=not progress)]

    def __len__(self) -> int:
        return len(self.paths)

    def set_epoch(self, epoch: int, seed: int = 0) -> None:
        """Seed the random crops of the coming epoch."""
        self.epoch, self.seed = int(epoch), int(seed)

    def _read(self, i: int) -> np.ndarray:
        try:
            return audio.load(self.paths[i], self.sample_rate)
        except audio.AudioError as e:
            raise audio.AudioError(f"clip {self.utt_ids[i]!r}: {e}") from e

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = int(i)
        x = self._cache[i] if self._cache is not None else self._read(i)
        if self.crop is not None and len(x) < self.window:
            x = audio.crop_or_pad(x, self.window, "start")
        elif self.crop == "random":
            rng = np.random.default_rng((self.seed, self.epoch, i))
            x = audio.crop_or_pad(x, self.window, "random", rng)
        elif self.crop == "center":
            x = audio.crop_or_pad(x, self.window, "center")
        return {
            "wave": torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
            "target": torch.tensor(self.targets[i]),
            "index": i,
            "corpus": self.corpora[i],
        }


def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack items into a batch; waves of different lengths are zero-padded at the end.

    Tensors are stacked, numbers become a tensor, strings a list. ``lengths`` holds each wave's
    length before padding.
    """
    if not items:
        raise ValueError("collate: empty batch")
    out: dict[str, Any] = {}
    for key in items[0]:
        values = [it[key] for it in items]
        first = values[0]
        if key == "wave":
            lengths = [len(v) for v in values]
            wave = torch.zeros(len(values), max(lengths), dtype=first.dtype)
            for row, v in enumerate(values):
                wave[row, : len(v)] = v
            out["wave"] = wave
            out["lengths"] = torch.tensor(lengths)
        elif isinstance(first, torch.Tensor):
            out[key] = torch.stack(values)
        elif isinstance(first, (int, float, np.integer, np.floating)):
            out[key] = torch.tensor(values)
        else:
            out[key] = list(values)
    return out


def set_epoch(dataset: Dataset, epoch: int, seed: int) -> None:
    """Call ``set_epoch`` on ``dataset`` and on every dataset inside Concat/Subset wrappers."""
    if isinstance(dataset, ConcatDataset):
        for d in dataset.datasets:
            set_epoch(d, epoch, seed)
    elif isinstance(dataset, Subset):
        set_epoch(dataset.dataset, epoch, seed)
    elif hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch, seed)


class MixedBatchSampler(Sampler[list[int]]):
    """Batches over ``ConcatDataset([A, B])`` with ``round(share_b * batch_size)`` items of B each.

    Indices ``0..n_a-1`` are A, ``n_a..n_a+n_b-1`` are B. One epoch visits every item of A once
    (shuffled); B items are drawn from shuffled passes over B, as many passes as needed (B is
    usually the smaller, labeled set). Each batch is shuffled. The order depends only on
    ``(seed, epoch)`` (:meth:`set_epoch`).

    Data parallel: with ``world_size > 1`` the batches are dealt round-robin to ranks; the batch
    list is padded by repeating its first batches so that every rank runs the same number of steps.
    """

    def __init__(
        self,
        n_a: int,
        n_b: int,
        batch_size: int,
        share_b: float,
        seed: int = 0,
        *,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        for name, v in (("n_a", n_a), ("n_b", n_b), ("batch_size", batch_size)):
            if not (isinstance(v, (int, np.integer)) and v > 0):
                raise ValueError(f"MixedBatchSampler: {name} must be a positive integer, got {v!r}")
        if not 0.0 < share_b < 1.0:
            raise ValueError(f"MixedBatchSampler: share_b must be in (0, 1), got {share_b!r}")
        self.k_b = int(round(share_b * batch_size))
        self.k_a = batch_size - self.k_b
        if self.k_b == 0 or self.k_a == 0:
            raise ValueError(
                f"MixedBatchSampler: share_b={share_b} of batch_size={batch_size} leaves "
                f"{self.k_a} A and {self.k_b} B items per batch; both must be >= 1"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"MixedBatchSampler: rank {rank} not in 0..{world_size - 1}")
        self.n_a, self.n_b = int(n_a), int(n_b)
        self.batch_size, self.share_b = int(batch_size), float(share_b)
        self.seed, self.epoch = int(seed), 0
        self.rank, self.world_size = rank, world_size
        self.n_batches = math.ceil(self.n_a / self.k_a)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return math.ceil(self.n_batches / self.world_size)

    def _all_batches(self) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        a = torch.randperm(self.n_a, generator=g).tolist()
        passes = math.ceil(self.n_batches * self.k_b / self.n_b)
        b = [self.n_a + j for _ in range(passes) for j in torch.randperm(self.n_b, generator=g).tolist()]
        batches = []
        for k in range(self.n_batches):
            batch = a[k * self.k_a : (k + 1) * self.k_a] + b[k * self.k_b : (k + 1) * self.k_b]
            order = torch.randperm(len(batch), generator=g).tolist()
            batches.append([batch[j] for j in order])
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._all_batches()
        padded = [batches[k % len(batches)] for k in range(len(self) * self.world_size)]
        return iter(padded[self.rank :: self.world_size])
