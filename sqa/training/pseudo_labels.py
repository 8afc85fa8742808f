"""Stage 03: pseudo-label an unlabeled manifest with a teacher (or an ensemble of teachers).

A model is an ``nn.Module`` or a callable mapping a (B, T) float 16 kHz waveform batch to MOS (B,)
(long clips are windowed by the model itself), or the path of an ``sqa.models.checkpoint`` file.
A list of models is an ensemble: ``pseudo_mos`` is the members' mean, ``pseudo_std`` their
standard deviation (ddof=0), and ``pseudo_mos_0``, ``pseudo_mos_1``, ... keep each member's score.

The job lives in ``out_dir``::

    job.json                 fingerprint: utt_ids + paths of the manifest, shard size, model identity
    shards/shard-00000.parquet  rows [0, shard_size) of the input, every row: scores or a failure reason
    progress.jsonl           one line per finished shard (rows, counts, seconds), appended after
                             the shard file is in place
    pseudo_labels.parquet    utt_id, corpus, sys_id, pseudo_mos (...) of every clip that loaded,
                             in input order (written when all shards are done)
    failures.csv             utt_id, path, reason of every clip that did not

Shards cover fixed slices of the input rows, so an interrupted job resumes where it stopped:
shards with a file and a progress line are skipped; a shard file is written atomically, so a
half-written one never exists. Resuming with another manifest, shard size or model is refused.
Within a shard, clips are batched by equal length (never padded together), so the scores do not
depend on how shards are spread over processes.

Speed: the clips of the shards to label are decoded and resampled by a torch DataLoader
(``loader_workers`` processes; by default one per CPU core but one when the model runs on a GPU,
none on the CPU) while the model scores; clips wait in buckets of equal length until a bucket is
a full batch, so the batches are exactly those of ``length_batches`` over each shard. On a GPU
the models run under bf16 autocast by default (``amp="auto"``; off on the CPU); the precision is
part of the job's fingerprint.

Parallelism: ``num_workers > 1`` spreads the shards over that many scoring processes ('spawn'
context, one torch thread each on the CPU), every n-th shard to each. A model given as a
checkpoint path is loaded by each process (``sqa.models.checkpoint.load``); a module or callable
is pickled to them, so its class must be importable there, and a script that starts them needs
the usual ``if __name__ == "__main__":`` guard. Results come back to the job's process, which
alone writes shards. On a machine with several GPUs, ``devices=["cuda:0", "cuda:1"]`` starts one
process per device, each with its own copy of the model(s) and its own decoding workers
(:func:`placement` gives the stage's choice).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence, Union

import numpy as np
import pandas as pd

from sqa import atomic
from sqa.data import audio, manifest
from sqa.training.model_identity import model_identity, qualname, upgrade_file_hashes

if TYPE_CHECKING:
    import torch

ModelLike = Union["torch.nn.Module", Callable, str, Path]

FORMAT = "sqa-pseudo-labels/1"
REQUIRED_COLUMNS = ("utt_id", "corpus", "path", "sys_id")
FAILURE_COLUMNS = ["utt_id", "path", "reason"]


class PseudoLabelError(ValueError):
    """Bad input to, or an inconsistent state of, a pseudo-labeling job; the message says which."""


@dataclass(frozen=True)
class PseudoLabels:
    """Result of :func:`pseudo_label`: ``labels`` (clips that loaded, input order), ``failures``."""

    labels: pd.DataFrame
    failures: pd.DataFrame
    out_dir: Path
    n_ok: int
    n_failed: int
    shards_run: int
    shards_skipped: int


@dataclass(frozen=True)
class _Shard:
    index: int
    start: int
    stop: int
    utt_ids: list[str]
    files: list[str]


def workers_for(num_workers: int, device: str = "cpu") -> int:
    """``num_workers`` for :func:`pseudo_label`: 0 picks one process per CPU core on the CPU (one
    thread each: on the earlier 3,000-clip demo pool 2 processes took 331 s where 1 process of 2
    threads took 437 s; on the 1,200-clip one both took about 180 s; ``bench.distill``) and one on
    a GPU; a positive count is kept."""
    if num_workers < 0:
        raise ValueError(f"num_workers={num_workers} must be 0 (one per CPU core) or a positive count")
    if num_workers:
        return num_workers
    return len(os.sched_getaffinity(0)) if device == "cpu" else 1


def placement(device: str = "auto", num_workers: int = 0) -> dict[str, Any]:
    """The stage's keyword arguments for :func:`pseudo_label`: one scoring process per GPU when
    ``sqa run --gpus N`` gave several (``devices``), else ``device`` with :func:`workers_for`
    processes (one per CPU core on the CPU, one on a GPU)."""
    from sqa.training.devices import stage_devices

    found = stage_devices(device)
    if len(found) > 1:
        return {"devices": found}
    return {"device": found[0], "num_workers": workers_for(num_workers, "cpu" if found[0] == "cpu" else "cuda")}


def pseudo_label(model_or_models: ModelLike | Sequence[ModelLike], df: pd.DataFrame,
                 roots: Mapping[str, Path], out_dir: Path | str, *, batch_size: int = 16,
                 shard_size: int = 256, device: str = "auto", num_workers: int = 1,
                 devices: Sequence[str] | None = None, amp: str | None = "auto",
                 loader_workers: int | None = None, progress: bool = True) -> PseudoLabels:
    """Score every clip of ``df`` (audio at ``roots[corpus] / path``) into ``out_dir``, resumably.

    Modules are put in eval mode; in-process (``num_workers=1``, no ``devices``) they are moved
    to ``device`` (``"auto"``: the GPU when there is one) and each batch goes to its model's
    device. ``devices`` starts one process per listed device instead (``num_workers`` must then
    be 1 or ``len(devices)``). ``amp``: ``"auto"`` (bf16 on a GPU), ``None``, ``"bf16"``,
    ``"fp16"`` (GPU only). Unreadable audio and non-finite scores are failures (listed with
    their reason); an exception raised by a model stops the job, naming the clips.
    """
    models = list(model_or_models) if isinstance(model_or_models, (list, tuple)) else [model_or_models]
    _check_args(models, df, roots, batch_size, shard_size, num_workers, devices)
    place = _placement(device, amp, num_workers, devices, loader_workers)
    if place.workers:
        _check_picklable(models)
    out_dir = Path(out_dir)
    shard_dir = out_dir / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(out_dir):
        _check_job(out_dir, df, shard_size, models, place.amp)
        for stale in shard_dir.glob(".shard-*.tmp.parquet"):
            stale.unlink()
        shards = _plan(df, roots, shard_size)
        done = _finished(out_dir, shards)
        todo = [s for s in shards if s.index not in done]
        _run(models, todo, df, out_dir, batch_size, place, progress,
             initial=sum(s.stop - s.start for s in shards if s.index in done))
        return _finish(out_dir, shards, df, len(models), shards_run=len(todo),
                       shards_skipped=len(shards) - len(todo))


def shard_path(out_dir: Path | str, index: int) -> Path:
    """File of shard ``index`` (rows ``[index * shard_size, (index + 1) * shard_size)``)."""
    return Path(out_dir) / "shards" / f"shard-{index:05d}.parquet"


def _check_args(models: list, df: pd.DataFrame, roots: Mapping[str, Path], batch_size: int,
                shard_size: int, num_workers: int, devices: Sequence[str] | None) -> None:
    if not models:
        raise PseudoLabelError("pseudo_label: no model given (an empty ensemble)")
    for i, m in enumerate(models):
        if isinstance(m, (str, Path)):
            if not Path(m).is_file():
                raise PseudoLabelError(f"pseudo_label: model {i}: checkpoint {m} does not exist")
        elif not callable(m):
            raise PseudoLabelError(f"pseudo_label: model {i} ({type(m).__name__}) is neither a module, "
                                   "a callable nor a checkpoint path")
    for name, value in (("batch_size", batch_size), ("shard_size", shard_size), ("num_workers", num_workers)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise PseudoLabelError(f"pseudo_label: {name} must be a positive integer, got {value!r}")
    if devices is not None:
        if isinstance(devices, str) or not devices:
            raise PseudoLabelError(f"pseudo_label: devices must be a non-empty list of device names, got {devices!r}")
        if num_workers not in (1, len(devices)):
            raise PseudoLabelError(f"pseudo_label: devices={list(devices)} starts one worker per device; "
                                   f"num_workers={num_workers} contradicts it (leave it at 1)")
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise PseudoLabelError(f"pseudo_label: manifest lacks columns {missing} (has {list(df.columns)})")
    dup = df["utt_id"][df["utt_id"].duplicated()].unique()
    if len(dup):
        raise PseudoLabelError(f"pseudo_label: manifest has {len(dup)} duplicate utt_id(s), e.g. {list(dup[:3])}")
    no_root = sorted(set(df["corpus"]) - set(roots))
    if no_root:
        raise PseudoLabelError(f"pseudo_label: no root folder for corpus {no_root} (roots: {sorted(roots)})")


@contextlib.contextmanager
def _exclusive(out_dir: Path) -> Iterator[None]:
    """Refuse a second job on the same ``out_dir`` while one runs (the lock dies with its process)."""
    import fcntl

    fd = os.open(out_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PseudoLabelError(f"{out_dir}: another pseudo_label job is running there") from None
        yield
    finally:
        os.close(fd)


def _fingerprint(df: pd.DataFrame, shard_size: int, models: list, amp: str | None) -> dict:
    digest = hashlib.sha256()
    for utt, path in zip(df["utt_id"], df["path"]):
        digest.update(f"{utt}\0{path}\n".encode())
    return {"format": FORMAT, "n_rows": len(df), "manifest_sha256": digest.hexdigest(),
            "shard_size": shard_size, "models": [model_identity(m) for m in models], "amp": amp}


def _check_job(out_dir: Path, df: pd.DataFrame, shard_size: int, models: list, amp: str | None) -> None:
    """Write ``job.json`` for a new job; for an existing one, refuse any other input or model."""
    job_file = out_dir / "job.json"
    want = _fingerprint(df, shard_size, models, amp)
    if not job_file.is_file():
        if any(shard_path(out_dir, 0).parent.glob("shard-*.parquet")):
            raise PseudoLabelError(f"{out_dir}: shard files exist but job.json is missing; "
                                   "cannot tell which job they belong to (use a new out_dir)")
        atomic.write_json(job_file, want)
        return
    have = json.loads(job_file.read_text())
    if upgrade_file_hashes(have, models, want):
        atomic.write_json(job_file, have)
    diffs = [f"{key}: job has {have.get(key)!r}, this call has {want[key]!r}"
             for key in ("format", "n_rows", "manifest_sha256", "shard_size", "models", "amp")
             if have.get(key) != want[key]]
    if diffs:
        raise PseudoLabelError(f"{out_dir} holds a pseudo-labeling job for a different manifest or model; "
                               f"refusing to resume it ({'; '.join(diffs)}). Use a new out_dir or delete this one.")


def _plan(df: pd.DataFrame, roots: Mapping[str, Path], shard_size: int) -> list[_Shard]:
    files = [str(f) for f in manifest.audio_paths(df, roots)]
    utts = [str(u) for u in df["utt_id"]]
    return [_Shard(k, s, min(s + shard_size, len(df)), utts[s:s + shard_size], files[s:s + shard_size])
            for k, s in enumerate(range(0, len(df), shard_size))]


def _finished(out_dir: Path, shards: list[_Shard]) -> set[int]:
    """Shards with a file in place and a matching progress line (an unparsable line counts as none)."""
    progress_file = out_dir / "progress.jsonl"
    records: dict[int, dict] = {}
    if progress_file.is_file():
        for line in progress_file.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                rec = json.loads(line)
                records[rec["shard"]] = rec
    return {s.index for s in shards if s.index in records and records[s.index]["rows"] == [s.start, s.stop]
            and shard_path(out_dir, s.index).is_file()}


def _run(models: list, todo: list[_Shard], df: pd.DataFrame, out_dir: Path, batch_size: int,
         place: _Placement, progress: bool, initial: int) -> None:
    """Label the ``todo`` shards in this process (``place.workers=None``) or in one process per
    entry of ``place.workers`` (its device), committing each shard as it finishes."""
    from tqdm.auto import tqdm

    if not todo:
        return
    failed = 0
    with tqdm(total=len(df), initial=initial, desc="pseudo-labels", unit="clip", disable=not progress) as bar:
        if place.workers is None:
            scorer = _Scorer(models, place.device, place.amp)
            results = _stream(scorer, todo, batch_size, place.loader_workers, bar.update)
        else:
            results = _parallel(models, todo, batch_size, place)
        for shard, preds, reasons, seconds in results:
            if place.workers is not None:
                bar.update(shard.stop - shard.start)
            failed += _commit(out_dir, shard, df, preds, reasons, seconds)
            bar.set_postfix(failed=failed, refresh=False)


@dataclass(frozen=True)
class _Placement:
    """Where a job computes: its device and precision, the processes that decode audio for each
    scoring process, and the scoring processes' devices (None: this process alone)."""

    device: str
    amp: str | None
    loader_workers: int
    workers: list[str] | None


def _placement(device: str, amp: str | None, num_workers: int, devices: Sequence[str] | None,
               loader_workers: int | None) -> _Placement:
    from sqa.data.datasets import loader_workers as default_loader_workers
    from sqa.training.devices import resolve_amp, resolve_device

    resolved = str(resolve_device(device))
    workers = list(devices) if devices else ([resolved] * num_workers if num_workers > 1 else None)
    on_gpu = any(d.startswith("cuda") for d in (workers or [resolved]))
    if loader_workers is None:  # decode in worker processes where the model computes on a GPU
        loader_workers = default_loader_workers(False) // max(1, len(workers or [1])) if on_gpu else 0
    return _Placement(resolved, resolve_amp(amp, resolved if not workers else workers[0]), loader_workers, workers)


class _Clips:
    """A map-style dataset of audio files: ``(position, wave or None, failure reason or None)``;
    DataLoader workers decode and resample the next clips while the model scores."""

    def __init__(self, files: list[str]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, k: int) -> tuple[int, np.ndarray | None, str | None]:
        try:
            return k, audio.load(self.files[k]), None
        except (audio.AudioError, OSError) as err:
            return k, None, f"unreadable audio: {err}"


def _as_is(item: Any) -> Any:
    return item


class _ShardWork:
    """One shard in flight: clips wait in buckets of equal length until a bucket is a full batch
    (or the shard's last clip arrived), so batches are those of ``length_batches`` over the shard."""

    def __init__(self, shard: _Shard, n_models: int) -> None:
        self.shard = shard
        self.waves: dict[int, np.ndarray] = {}
        self.reasons: list[str | None] = [None] * len(shard.files)
        self.preds = np.full((len(shard.files), n_models), np.nan)
        self.buckets: dict[int, list[int]] = {}

    def add(self, i: int, wave: np.ndarray | None, reason: str | None, batch_size: int) -> list[int] | None:
        """Take clip ``i``; returns a full batch of row indices when one is ready."""
        if wave is None:
            self.reasons[i] = reason
            return None
        self.waves[i] = wave
        bucket = self.buckets.setdefault(len(wave), [])
        bucket.append(i)
        if len(bucket) == batch_size:
            return self.buckets.pop(len(wave))
        return None

    def rest(self) -> list[list[int]]:
        """The partial batches left when every clip arrived (in first-seen length order)."""
        rest, self.buckets = list(self.buckets.values()), {}
        return rest

    def batch(self, rows: list[int]) -> np.ndarray:
        return np.stack([self.waves.pop(r) for r in rows])

    def result(self) -> tuple[np.ndarray, list[str | None]]:
        for i in range(len(self.reasons)):
            bad = [m for m in range(self.preds.shape[1]) if not np.isfinite(self.preds[i, m])]
            if bad and self.reasons[i] is None:
                self.reasons[i] = f"model(s) {bad} returned a non-finite score {self.preds[i, bad].tolist()}"
                self.preds[i] = np.nan
        return self.preds, self.reasons


def _stream(scorer: "_Scorer", todo: list[_Shard], batch_size: int, loader_workers: int,
            on_progress: Callable[[int], Any] | None = None) -> Iterator[tuple[_Shard, np.ndarray, list, float]]:
    """Shard results in order; a DataLoader (``loader_workers`` processes, 0: this one) decodes
    the clips of all ``todo`` shards ahead while the model scores full batches."""
    from torch.utils.data import DataLoader

    files = [f for s in todo for f in s.files]
    if not files:
        return
    extra = {"prefetch_factor": max(2, 2 * batch_size // loader_workers)} if loader_workers else {}
    clips = iter(DataLoader(_Clips(files), batch_size=None, shuffle=False, num_workers=loader_workers,
                            collate_fn=_as_is, **extra))
    for shard in todo:
        t0 = time.perf_counter()
        work = _ShardWork(shard, len(scorer.models))
        for i in range(len(shard.files)):
            _, wave, reason = next(clips)
            rows = work.add(i, wave, reason, batch_size)
            if rows:
                scorer.score(work, rows)
            if on_progress and (rows or wave is None):
                on_progress(len(rows) if rows else 1)
        for rows in work.rest():
            scorer.score(work, rows)
            if on_progress:
                on_progress(len(rows))
        yield shard, *work.result(), time.perf_counter() - t0


class _Scorer:
    """The models of a job, ready on one device, scoring batches of equal-length clips."""

    def __init__(self, models: list, device: str, amp: str | None = None) -> None:
        self.device, self.amp = device, amp
        self.models = [_materialize(m, device) for m in models]

    def score(self, work: _ShardWork, rows: list[int]) -> None:
        batch = work.batch(rows)
        utts = [work.shard.utt_ids[r] for r in rows]
        for m, model in enumerate(self.models):
            work.preds[rows, m] = self._score(m, model, batch, utts, work.shard.index)

    def _score(self, m: int, model: Callable, batch: np.ndarray, utts: list[str], shard: int) -> np.ndarray:
        import torch

        from sqa.training.devices import autocast, model_device

        try:
            device = model_device(model) if isinstance(model, torch.nn.Module) else torch.device(self.device)
            with torch.inference_mode(), autocast(device, self.amp):
                out = model(torch.from_numpy(batch).to(device))
            if isinstance(out, torch.Tensor):
                out = out.detach().to("cpu", torch.float64).numpy()
            out = np.asarray(out, dtype=np.float64)
            if out.shape not in ((len(batch),), (len(batch), 1)):
                raise ValueError(f"returned shape {out.shape}, expected ({len(batch)},)")
        except Exception as err:
            raise RuntimeError(
                f"model {m} ({qualname(model)}) failed on shard {shard}, a batch of {len(batch)} clips "
                f"x {batch.shape[1]} samples ({', '.join(utts[:3])}{', ...' if len(utts) > 3 else ''}): "
                f"{type(err).__name__}: {err}") from err
        return out.reshape(-1)


def _materialize(model: ModelLike, device: str) -> Callable:
    """A checkpoint path loaded onto ``device``; a module moved there in eval mode; else as is."""
    import torch

    if isinstance(model, (str, Path)):
        from sqa.models import checkpoint

        return checkpoint.load(model, map_location=device)[0].eval()
    if isinstance(model, torch.nn.Module):
        return model.to(device).eval()
    return model


def _worker_main(models: list, device: str, shards: list[_Shard], batch_size: int, place: _Placement,
                 results: Any) -> None:
    """One scoring process: its models on ``device``, its shards streamed, each result (or the
    error that stopped it) put on ``results``; it stops if the job's process is gone."""
    import torch

    parent = os.getppid()
    if not device.startswith("cuda"):
        torch.set_num_threads(1)
    try:
        scorer = _Scorer(models, device, place.amp)
        for result in _stream(scorer, shards, batch_size, place.loader_workers):
            if os.getppid() != parent:
                return
            results.put(("shard", result))
    except Exception as err:  # reported to the job's process, which raises it
        results.put(("error", f"{type(err).__name__}: {err}"))


def _parallel(models: list, todo: list[_Shard], batch_size: int,
              place: _Placement) -> Iterator[tuple[_Shard, np.ndarray, list[str | None], float]]:
    """Shard results from one 'spawn' process per entry of ``place.workers`` (its device), each
    streaming every n-th shard, in completion order."""
    import queue

    import torch.multiprocessing

    ctx = torch.multiprocessing.get_context("spawn")
    n = min(len(place.workers), len(todo))
    results = ctx.Queue()
    specs = [str(m) if isinstance(m, Path) else m for m in models]
    procs = [ctx.Process(target=_worker_main, args=(specs, d, todo[k::n], batch_size, place, results))
             for k, d in enumerate(place.workers[:n])]
    for p in procs:
        p.start()
    try:
        for _ in range(len(todo)):
            while True:
                try:
                    kind, payload = results.get(timeout=1.0)
                    break
                except queue.Empty:
                    if any(p.exitcode not in (None, 0) for p in procs):
                        raise RuntimeError(
                            "a pseudo-labeling worker process died (crashed, was killed, or could not unpickle a "
                            "model). Models given as modules or callables must be importable in a fresh process; "
                            "pass a checkpoint path, or use num_workers=1") from None
            if kind == "error":
                raise RuntimeError(f"a pseudo-labeling worker process failed: {payload}")
            yield payload
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join()


def _check_picklable(models: list) -> None:
    """Fail early when a model cannot reach a worker (checks a module's class and parametrizations,
    not its weights)."""
    import pickle

    import torch
    from torch.nn.utils import parametrize

    for i, m in enumerate(models):
        if isinstance(m, (str, Path)):
            continue
        if isinstance(m, torch.nn.Module) and any(parametrize.is_parametrized(x) for x in m.modules()):
            raise PseudoLabelError(
                f"model {i} ({qualname(m)}) has parametrized weights (e.g. weight norm) and cannot be pickled "
                "to worker processes; pass its checkpoint path instead (each worker loads it), or use "
                "num_workers=1")
        try:
            pickle.dumps(type(m) if isinstance(m, torch.nn.Module) else m)
        except Exception as err:
            raise PseudoLabelError(
                f"model {i} ({qualname(m)}) cannot be sent to worker processes: {err}; define it at module "
                "level of an importable module, pass a checkpoint path, or use num_workers=1") from err


def _score_columns(n_models: int) -> list[str]:
    if n_models == 1:
        return ["pseudo_mos"]
    return ["pseudo_mos", *[f"pseudo_mos_{i}" for i in range(n_models)], "pseudo_std"]


def _commit(out_dir: Path, shard: _Shard, df: pd.DataFrame, preds: np.ndarray,
            reasons: list[str | None], seconds: float) -> int:
    """Write the shard file atomically, then append its progress line; returns its failure count."""
    part = df.iloc[shard.start:shard.stop]
    cols: dict[str, Any] = {"row": np.arange(shard.start, shard.stop, dtype=np.int64)}
    for c in ("utt_id", "corpus", "sys_id", "path"):
        cols[c] = part[c].to_numpy()
    if preds.shape[1] == 1:
        cols["pseudo_mos"] = preds[:, 0]
    else:
        cols["pseudo_mos"] = preds.mean(axis=1)
        for i in range(preds.shape[1]):
            cols[f"pseudo_mos_{i}"] = preds[:, i]
        cols["pseudo_std"] = preds.std(axis=1)
    cols["reason"] = pd.array(reasons, dtype="string")
    with atomic.atomic_path(shard_path(out_dir, shard.index)) as tmp:
        pd.DataFrame(cols).to_parquet(tmp, index=False)
    n_failed = sum(r is not None for r in reasons)
    atomic.append_line(out_dir / "progress.jsonl", json.dumps({
        "shard": shard.index, "rows": [shard.start, shard.stop], "n": shard.stop - shard.start,
        "ok": shard.stop - shard.start - n_failed, "failed": n_failed, "seconds": round(seconds, 3)}))
    return n_failed


def _finish(out_dir: Path, shards: list[_Shard], df: pd.DataFrame, n_models: int, *,
            shards_run: int, shards_skipped: int) -> PseudoLabels:
    """Check every shard against its slice of the manifest, then write the final outputs."""
    score_cols = _score_columns(n_models)
    frames = []
    for s in shards:
        frame = pd.read_parquet(shard_path(out_dir, s.index))
        if frame["row"].tolist() != list(range(s.start, s.stop)) or frame["utt_id"].tolist() != s.utt_ids:
            raise PseudoLabelError(f"{shard_path(out_dir, s.index)} does not hold rows {s.start}..{s.stop - 1} "
                                   "of this manifest; delete it (and its progress line) to recompute it")
        frames.append(frame)
    columns = ["row", "utt_id", "corpus", "sys_id", "path", *score_cols, "reason"]
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    ok = rows["reason"].isna().to_numpy()
    labels = rows.loc[ok, ["utt_id", "corpus", "sys_id", *score_cols]].reset_index(drop=True)
    failures = rows.loc[~ok, FAILURE_COLUMNS].reset_index(drop=True)
    with atomic.atomic_path(out_dir / "pseudo_labels.parquet") as tmp:
        labels.to_parquet(tmp, index=False)
    with atomic.atomic_path(out_dir / "failures.csv") as tmp:
        failures.to_csv(tmp, index=False)
    return PseudoLabels(labels=labels, failures=failures, out_dir=out_dir, n_ok=len(labels),
                        n_failed=len(failures), shards_run=shards_run, shards_skipped=shards_skipped)
