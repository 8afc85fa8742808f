"""The unlabeled pool for pseudo-labeling, built from real clean speech, noise and room impulse
responses (the paper's pool is made from the DNS Challenge's clean speech, noise and RIRs).

Sources: one folder holding ``clean/``, ``noise/`` and ``rir/`` (any trees of .wav/.flac/.ogg
files), or a DNS Challenge checkout (``datasets[_fullband]/clean[_fullband]``, ``noise[_fullband]``,
``impulse_responses``); see :data:`SOURCE_DIRS`. Clean speech is required; without noise or RIR
files the pool uses sqa's simulated noise and rooms instead (counted in the report).

Each clip ``k`` is fully determined by ``(seed, k)``: a clean file and a ``clip_s`` crop of it,
then a chain of sqa degradations (:mod:`sqa.synth.degradations`) applied in their physical order:
a recorded RIR (:class:`RecordedRoom`, else a simulated room) and a recorded noise at an
active-speech SNR (:class:`RecordedNoise`, else a synthetic one), each with its probability, plus
``1..max_chain`` steps drawn from ``families`` (band limits, codecs, packet loss, clipping,
enhancement). The chain is recorded with its exact parameters (``Chain.to_json``).

Layout of a built pool (a manifest-compatible corpus, read by the ``pool`` adapter)::

    <out>/job.json                  config + a hash of the source file lists (resume refuses others)
    <out>/clips/<shard>/<clip>.wav  16 kHz PCM_16, written atomically
    <out>/shards/shard-<k>.csv      the records of shard k, written when all its clips are on disk
    <out>/pool.csv                  every record (clip, path, clean, chain, condition, ...), at the end
    <out>/build_report.json         counts, skips, timings

Clips are built shard by shard in worker processes; nothing holds more than one clip's audio
(and its noise and RIR). A killed build resumes: stale temporary files are removed, shards with
a record file are kept, the others are rebuilt with identical bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
from scipy import signal

from sqa import atomic
from sqa.synth.degradations.base import ORDER, Degradation, _register
from sqa.synth.degradations.noise import AdditiveNoise

SR = 16000
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
LABELS = "pool.csv"
#: where each kind of source is looked for under the sources folder, first match wins
SOURCE_DIRS = {
    "clean": ("clean", "clean_fullband", "datasets/clean", "datasets_fullband/clean_fullband"),
    "noise": ("noise", "noise_fullband", "datasets/noise", "datasets_fullband/noise_fullband"),
    "rir": ("rir", "impulse_responses", "datasets/impulse_responses", "datasets_fullband/impulse_responses"),
}
#: the paper profile's pool under SQA_DATA_ROOT: sources in SOURCES_FOLDER, the pool in POOL_FOLDER
SOURCES_FOLDER, POOL_FOLDER, CONFIG_FILE = "pool-sources", "pool", "pool.json"


class PoolError(ValueError):
    """Bad sources, config, or a pool folder built from something else; the message says which."""


# ---------------------------------------------------------------- recorded degradations


@_register
@dataclass(frozen=True)
class RecordedNoise(AdditiveNoise):
    """A recorded noise (``file``, a key of the ``pool`` passed to ``apply``) from ``offset_s``,
    looped if shorter than the clip, at ``snr_db``."""

    name: ClassVar[str] = "recorded_noise"
    file: str = ""
    offset_s: float = 0.0

    def _noise(self, x, sr, rng, pool):
        if not pool or self.file not in pool:
            raise ValueError(f"{self.name}: noise {self.file!r} is not in the pool passed to apply")
        n = np.asarray(pool[self.file], dtype=np.float64)
        start = min(int(round(self.offset_s * sr)), max(0, len(n) - 1))
        return np.resize(n[start:] if len(n) - start >= len(x) else np.roll(n, -start), len(x))


@_register
@dataclass(frozen=True)
class RecordedRoom(Degradation):
    """Convolution with a recorded room impulse response (``file``, a key of the ``pool``),
    aligned to its direct path, at the input's RMS."""

    name: ClassVar[str] = "recorded_rir"
    family: ClassVar[str] = "reverb"
    file: str = ""

    def _apply(self, x, sr, rng, pool):
        if not pool or self.file not in pool:
            raise ValueError(f"{self.name}: impulse response {self.file!r} is not in the pool passed to apply")
        h = np.asarray(pool[self.file], dtype=np.float64)
        direct = int(np.argmax(np.abs(h)))
        y = signal.fftconvolve(x, h)[direct: direct + len(x)]
        ry, rx = np.sqrt(np.mean(y**2)), np.sqrt(np.mean(x**2))
        return y * (rx / ry) if ry > 0 else y


# ---------------------------------------------------------------- sources and config


@dataclass(frozen=True)
class Sources:
    """Audio files (relative to ``root``) of each kind, sorted."""

    root: str
    clean: tuple[str, ...]
    noise: tuple[str, ...]
    rir: tuple[str, ...]

    def digest(self) -> str:
        h = hashlib.sha256()
        for kind in ("clean", "noise", "rir"):
            h.update(("\n".join(getattr(self, kind)) + f"\0{kind}\0").encode())
        return h.hexdigest()


def find_sources(folder: Path | str) -> Sources:
    """The clean, noise and RIR files under ``folder`` (see :data:`SOURCE_DIRS`)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PoolError(f"pool sources folder {folder} does not exist")
    found = {}
    for kind, candidates in SOURCE_DIRS.items():
        sub = next((folder / c for c in candidates if (folder / c).is_dir()), None)
        files = [] if sub is None else sorted(
            str(p.relative_to(folder)) for p in sub.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
        found[kind] = tuple(files)
    if not found["clean"]:
        raise PoolError(f"no clean speech under {folder}: expected audio files ({', '.join(AUDIO_SUFFIXES)}) in "
                        f"one of {', '.join(SOURCE_DIRS['clean'])}")
    return Sources(str(folder), found["clean"], found["noise"], found["rir"])


@dataclass(frozen=True)
class PoolConfig:
    """How many clips and how they are degraded (every number is part of the job's fingerprint)."""

    n_clips: int
    clip_s: float = 4.0
    seed: int = 0
    shard_size: int = 500
    p_rir: float = 0.5  # share of clips in a room (recorded RIR, else simulated)
    p_noise: float = 0.8  # share with additive noise (recorded, else synthetic)
    p_chain: float = 0.6  # share with further steps drawn from ``families``
    max_chain: int = 2
    snr_db: tuple[float, float] = (-5.0, 30.0)
    families: tuple[str, ...] = ("bandlimit", "codec", "loss", "clip", "enhance")
    codecs: tuple[str, ...] | None = None  # None: every codec of sqa.synth.codecs that works here

    def __post_init__(self) -> None:
        for name in ("n_clips", "shard_size", "max_chain"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise PoolError(f"PoolConfig.{name}={v!r} must be a positive integer")
        if not 0.5 <= self.clip_s <= 60:
            raise PoolError(f"PoolConfig.clip_s={self.clip_s!r} must be in [0.5, 60] seconds")
        for name in ("p_rir", "p_noise", "p_chain"):
            if not 0 <= getattr(self, name) <= 1:
                raise PoolError(f"PoolConfig.{name}={getattr(self, name)!r} must be in [0, 1]")
        object.__setattr__(self, "snr_db", tuple(self.snr_db))
        object.__setattr__(self, "families", tuple(self.families))
        if self.codecs is not None:
            object.__setattr__(self, "codecs", tuple(self.codecs))

    @classmethod
    def from_dict(cls, d: dict) -> PoolConfig:
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise PoolError(f"pool config: unknown key(s) {unknown}; known: {sorted(cls.__dataclass_fields__)}")
        return cls(**d)


# ---------------------------------------------------------------- one clip (pure given seed and index)


def _crop(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    if len(x) >= n:
        start = int(rng.integers(0, len(x) - n + 1))
        return x[start:start + n]
    out = np.zeros(n, dtype=np.float32)
    offset = int(rng.integers(0, n - len(x) + 1))
    out[offset:offset + len(x)] = x
    return out


def _steps(cfg: PoolConfig, src: Sources, rng: np.random.Generator, loaded: dict, clip_s: float,
           skipped: Counter) -> list[Degradation]:
    """The clip's degradations in sqa's physical order; loads the recorded noise/RIR it uses."""
    from sqa.data import audio
    from sqa.synth.degradations import sampling

    sampler = sampling.ChainSampler(cfg.families, 1, min(cfg.max_chain, len(cfg.families)), cfg.codecs)
    steps: list[Degradation] = []
    if rng.random() < cfg.p_rir:
        if src.rir:
            file = src.rir[int(rng.integers(len(src.rir)))]
            loaded[file] = audio.load(Path(src.root) / file, SR)
            steps.append(RecordedRoom(file))
        else:
            steps += sampler._draw_reverb(rng)
    if rng.random() < cfg.p_noise:
        snr = round(float(rng.uniform(*cfg.snr_db)), 1)
        if src.noise:
            file = src.noise[int(rng.integers(len(src.noise)))]
            loaded[file] = noise = audio.load(Path(src.root) / file, SR)
            offset = round(float(rng.random()) * max(0.0, len(noise) / SR - clip_s), 3)
            steps.append(RecordedNoise(snr, file, offset))
        else:
            steps += sampler._draw_noise(rng, ("white", "pink", "brown", "hum", "band"), cfg.snr_db)
    if rng.random() < cfg.p_chain:
        steps += sampler.sample(rng).steps
        skipped.update(sampler.skipped)
    return sorted(steps, key=lambda s: ORDER.index(s.family))


def make_clip(cfg: PoolConfig, src: Sources, k: int) -> tuple[dict, np.ndarray | None]:
    """Clip ``k``: its record and its samples (as PCM_16 stores them), or a record with a
    ``skip_reason`` and no samples when every clean crop tried was silent."""
    from sqa.data import audio
    from sqa.synth import degradations

    rng = np.random.default_rng([cfg.seed, k])
    n = int(round(cfg.clip_s * SR))
    record = {"clip": f"pool-{k:07d}", "index": k, "shard": k // cfg.shard_size}
    for _ in range(5):
        clean_file = src.clean[int(rng.integers(len(src.clean)))]
        clean = _crop(audio.load(Path(src.root) / clean_file, SR), n, rng)
        if not audio.is_silent(clean, -50.0):
            break
    else:
        return {**record, "clean": clean_file, "skip_reason": "5 clean crops in a row were silent"}, None
    loaded: dict[str, np.ndarray] = {}
    skipped: Counter = Counter()
    chain = degradations.Chain(tuple(_steps(cfg, src, rng, loaded, cfg.clip_s, skipped)))
    y = chain.apply(clean, SR, np.random.default_rng([cfg.seed, k, 1]), pool=loaded)
    y = (np.clip(np.round(y * 32768.0), -32768, 32767) / 32768.0).astype(np.float32)  # as PCM_16 stores it
    return {**record, "clean": clean_file, "chain": chain.to_json(),
            "condition": "+".join(s.name for s in chain.steps) or "clean",
            "codec_skipped": json.dumps(dict(skipped)), "skip_reason": ""}, y


def clip_path(k: int, cfg: PoolConfig) -> str:
    return f"clips/{k // cfg.shard_size:05d}/pool-{k:07d}.wav"


def _build_shard(out: str, cfg: PoolConfig, src: Sources, shard: int) -> tuple[int, int, int]:
    """Every clip of ``shard`` on disk, then its record file; returns (shard, clips, skipped)."""
    import torch

    from sqa.data import audio

    torch.set_num_threads(1)
    rows = []
    for k in range(shard * cfg.shard_size, min((shard + 1) * cfg.shard_size, cfg.n_clips)):
        record, y = make_clip(cfg, src, k)
        record["path"] = clip_path(k, cfg) if y is not None else ""
        if y is not None:
            audio.save(Path(out) / record["path"], y, SR, subtype="PCM_16")
        rows.append(record)
    with atomic.atomic_path(_shard_file(Path(out), shard)) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    return shard, len(rows), sum(r["skip_reason"] != "" for r in rows)


def _shard_file(out: Path, shard: int) -> Path:
    return out / "shards" / f"shard-{shard:05d}.csv"


# ---------------------------------------------------------------- the build


@dataclass
class BuildReport:
    n_clips: int
    n_skipped: int
    shards_built: int
    shards_kept: int
    sources: dict = field(default_factory=dict)
    seconds: float = 0.0


def build(sources: Path | str | Sources, out: Path | str, cfg: PoolConfig, n_jobs: int | None = None,
          progress: bool = True) -> BuildReport:
    """Build (or finish building) ``cfg.n_clips`` degraded clips from ``sources`` into ``out``."""
    from tqdm.auto import tqdm

    src = sources if isinstance(sources, Sources) else find_sources(sources)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_job(out, cfg, src)
    atomic.remove_stale(out)
    n_shards = -(-cfg.n_clips // cfg.shard_size)
    todo = [s for s in range(n_shards) if not _shard_file(out, s).is_file()]
    n_jobs = max(1, min(n_jobs or len(os.sched_getaffinity(0)), len(todo) or 1))
    t0 = time.perf_counter()
    if todo:
        with ProcessPoolExecutor(n_jobs, mp_context=get_context("forkserver")) as ex, \
                tqdm(total=cfg.n_clips, initial=(n_shards - len(todo)) * cfg.shard_size, desc="pool clips",
                     unit="clip", disable=not progress) as bar:
            for fut in as_completed([ex.submit(_build_shard, str(out), cfg, src, s) for s in todo]):
                bar.update(fut.result()[1])
    n_skipped = _write_labels(out, n_shards)
    report = BuildReport(cfg.n_clips, n_skipped, len(todo), n_shards - len(todo),
                         {k: len(getattr(src, k)) for k in ("clean", "noise", "rir")}, time.perf_counter() - t0)
    atomic.write_json(out / "build_report.json", {**asdict(report), "config": asdict(cfg)})
    return report


def _check_job(out: Path, cfg: PoolConfig, src: Sources) -> None:
    want = {"format": "sqa-pool/1", "config": json.loads(json.dumps(asdict(cfg))), "sources": src.digest(),
            "sources_root": src.root}
    job = out / "job.json"
    if not job.is_file():
        if any(out.glob("shards/shard-*.csv")):
            raise PoolError(f"{out}: shard files exist but job.json is missing; use a new folder")
        atomic.write_json(job, want)
        return
    have = json.loads(job.read_text())
    diffs = [k for k in ("format", "config", "sources") if have.get(k) != want[k]]
    if diffs:
        raise PoolError(f"{out} holds a pool built with another {' and '.join(diffs)} "
                        f"(job.json: {json.dumps({k: have.get(k) for k in diffs})[:300]}); "
                        "use another folder or delete this one")


def _write_labels(out: Path, n_shards: int) -> int:
    """``pool.csv`` from the shard files (rows in clip order); returns the skipped clips."""
    frames = [pd.read_csv(_shard_file(out, s), dtype={"skip_reason": str}, keep_default_na=False)
              for s in range(n_shards)]
    table = pd.concat(frames, ignore_index=True)
    with atomic.atomic_path(out / LABELS) as tmp:
        table.to_csv(tmp, index=False)
    return int((table["skip_reason"] != "").sum())


def build_under_data_root(pool_root: Path | str, progress: bool = True) -> BuildReport | None:
    """The paper profile's pool: built into ``pool_root`` (``SQA_DATA_ROOT/pool``) from the sibling
    ``pool-sources`` folder with :data:`PAPER_POOL` overridden by ``pool-sources/pool.json``;
    None when there are no sources and the pool is already built (or absent: the adapter says so)."""
    pool_root = Path(pool_root)
    sources = pool_root.parent / SOURCES_FOLDER
    if not sources.is_dir():
        return None
    overrides = json.loads((sources / CONFIG_FILE).read_text()) if (sources / CONFIG_FILE).is_file() else {}
    return build(sources, pool_root, PoolConfig.from_dict({**PAPER_POOL, **overrides}), progress=progress)


#: the paper profile's pool (``pool-sources/pool.json`` overrides any key)
PAPER_POOL = {"n_clips": 100_000, "clip_s": 8.0, "seed": 0, "shard_size": 500}
