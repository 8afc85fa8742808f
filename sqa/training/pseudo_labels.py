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

Parallelism: ``num_workers > 1`` spreads shards over that many worker processes ('spawn'
context, one torch thread each). A model given as a checkpoint path is loaded by each worker
(``sqa.models.checkpoint.load``); a module or callable is pickled to the workers, so its class
must be importable there, and a script that starts workers needs the usual
``if __name__ == "__main__":`` guard. On a machine with several GPUs, ``devices=["cuda:0", "cuda:1"]``
starts one worker per device, each with its own copy of the model(s) on its device.
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
from sqa.data.batching import length_batches

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
    thread each: on the demo pool, 2 processes took 331 s where 1 process of 2 threads took 437 s;
    ``bench.distill``) and one on a GPU; a positive count is kept."""
    if num_workers < 0:
        raise ValueError(f"num_workers={num_workers} must be 0 (one per CPU core) or a positive count")
    if num_workers:
        return num_workers
    return len(os.sched_getaffinity(0)) if device == "cpu" else 1


def pseudo_label(model_or_models: ModelLike | Sequence[ModelLike], df: pd.DataFrame,
                 roots: Mapping[str, Path], out_dir: Path | str, *, batch_size: int = 16,
                 shard_size: int = 256, device: str = "cpu", num_workers: int = 1,
                 devices: Sequence[str] | None = None, progress: bool = True) -> PseudoLabels:
    """Score every clip of ``df`` (audio at ``roots[corpus] / path``) into ``out_dir``, resumably.

    Modules are put in eval mode; in-process (``num_workers=1``, no ``devices``) they are moved
    to ``device``. ``devices`` starts one worker per listed device instead (``num_workers``
    must then be 1 or ``len(devices)``). Unreadable audio and non-finite scores are failures
    (listed with their reason); an exception raised by a model stops the job, naming the clips.
    """
    models = list(model_or_models) if isinstance(model_or_models, (list, tuple)) else [model_or_models]
    _check_args(models, df, roots, batch_size, shard_size, num_workers, devices)
    workers = list(devices) if devices else ([device] * num_workers if num_workers > 1 else None)
    if workers:
        _check_picklable(models)
    out_dir = Path(out_dir)
    shard_dir = out_dir / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(out_dir):
        _check_job(out_dir, df, shard_size, models)
        for stale in shard_dir.glob(".shard-*.tmp.parquet"):
            stale.unlink()
        shards = _plan(df, roots, shard_size)
        done = _finished(out_dir, shards)
        todo = [s for s in shards if s.index not in done]
        _run(models, todo, df, out_dir, batch_size, device, workers, progress,
             initial=sum(s.stop - s.start for s in shards if s.index in done))
        return _finish(out_dir, shards, df, len(models), shards_run=len(todo),
                       shards_skipped=len(shards) - len(todo))


def shard_path(out_dir: Path | str, index: int) -> Path:
    """File of shard ``index`` (rows ``[index * shard_size, (index + 1) * shard_size)``)."""
    return Path(out_dir) / "shards" / f"shard-{index:05d}.parquet"


def model_identity(model: ModelLike) -> dict[str, str]:
    """What a job remembers about a model: checkpoint file hash, module class + weights hash,
    or a callable's qualified name (its internals are not hashed). A module and its checkpoint
    file are different identities."""
    import torch

    if isinstance(model, (str, Path)):
        from sqa.models import checkpoint

        path = Path(model)
        info = checkpoint.read_info(path)
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 24), b""):
                digest.update(block)
        return {"kind": "checkpoint", "arch": info.arch, "sha256": digest.hexdigest()}
    if isinstance(model, torch.nn.Module):
        digest = hashlib.sha256()
        for name, t in model.state_dict().items():
            t = t.detach().to("cpu").contiguous()
            digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        return {"kind": "module", "class": _qualname(type(model)), "sha256": digest.hexdigest()}
    return {"kind": "callable", "name": _qualname(model)}


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"


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


def _fingerprint(df: pd.DataFrame, shard_size: int, models: list) -> dict:
    digest = hashlib.sha256()
    for utt, path in zip(df["utt_id"], df["path"]):
        digest.update(f"{utt}\0{path}\n".encode())
    return {"format": FORMAT, "n_rows": len(df), "manifest_sha256": digest.hexdigest(),
            "shard_size": shard_size, "models": [model_identity(m) for m in models]}


def _check_job(out_dir: Path, df: pd.DataFrame, shard_size: int, models: list) -> None:
    """Write ``job.json`` for a new job; for an existing one, refuse any other input or model."""
    job_file = out_dir / "job.json"
    want = _fingerprint(df, shard_size, models)
    if not job_file.is_file():
        if any(shard_path(out_dir, 0).parent.glob("shard-*.parquet")):
            raise PseudoLabelError(f"{out_dir}: shard files exist but job.json is missing; "
                                   "cannot tell which job they belong to (use a new out_dir)")
        atomic.write_json(job_file, want)
        return
    have = json.loads(job_file.read_text())
    diffs = [f"{key}: job has {have.get(key)!r}, this call has {want[key]!r}"
             for key in ("format", "n_rows", "manifest_sha256", "shard_size", "models") if have.get(key) != want[key]]
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
         device: str, workers: list[str] | None, progress: bool, initial: int) -> None:
    """Label the ``todo`` shards in this process (``workers=None``) or in one process per entry
    of ``workers`` (its device), committing each shard as it finishes."""
    from tqdm.auto import tqdm

    if not todo:
        return
    failed = 0
    with tqdm(total=len(df), initial=initial, desc="pseudo-labels", unit="clip", disable=not progress) as bar:
        if workers is None:
            scorer = _Scorer(models, device)
            results = (_timed(scorer, shard, batch_size, bar.update) for shard in todo)
        else:
            results = _parallel(models, todo, batch_size, workers)
        for shard, preds, reasons, seconds in results:
            if workers is not None:
                bar.update(shard.stop - shard.start)
            failed += _commit(out_dir, shard, df, preds, reasons, seconds)
            bar.set_postfix(failed=failed, refresh=False)


class _Scorer:
    """The models of a job, ready on one device, scoring one shard at a time."""

    def __init__(self, models: list, device: str) -> None:
        self.device = device
        self.models = [_materialize(m, device) for m in models]

    def label(self, shard: _Shard, batch_size: int,
              on_progress: Callable[[int], Any] | None = None) -> tuple[np.ndarray, list[str | None]]:
        """Scores (clips x models, NaN where failed) and a failure reason (or None) per clip."""
        n = len(shard.files)
        waves: list[np.ndarray | None] = [None] * n
        reasons: list[str | None] = [None] * n
        for i, f in enumerate(shard.files):
            try:
                waves[i] = audio.load(f)
            except (audio.AudioError, OSError) as err:
                reasons[i] = f"unreadable audio: {err}"
        if on_progress and any(reasons):
            on_progress(sum(r is not None for r in reasons))
        preds = np.full((n, len(self.models)), np.nan)
        ok = [i for i in range(n) if waves[i] is not None]
        for idx in length_batches([len(waves[i]) for i in ok], batch_size):
            rows = [ok[j] for j in idx]
            batch = np.stack([waves[r] for r in rows])
            for m, model in enumerate(self.models):
                preds[rows, m] = self._score(m, model, batch, [shard.utt_ids[r] for r in rows], shard.index)
            if on_progress:
                on_progress(len(rows))
        for i in ok:
            bad = [m for m in range(len(self.models)) if not np.isfinite(preds[i, m])]
            if bad:
                reasons[i] = f"model(s) {bad} returned a non-finite score {preds[i, bad].tolist()}"
                preds[i] = np.nan
        return preds, reasons

    def _score(self, m: int, model: Callable, batch: np.ndarray, utts: list[str], shard: int) -> np.ndarray:
        import torch

        try:
            with torch.inference_mode():
                out = model(torch.from_numpy(batch).to(self.device))
            if isinstance(out, torch.Tensor):
                out = out.detach().to("cpu", torch.float64).numpy()
            out = np.asarray(out, dtype=np.float64)
            if out.shape not in ((len(batch),), (len(batch), 1)):
                raise ValueError(f"returned shape {out.shape}, expected ({len(batch)},)")
        except Exception as err:
            raise RuntimeError(
                f"model {m} ({_qualname(model)}) failed on shard {shard}, a batch of {len(batch)} clips "
                f"x {batch.shape[1]} samples ({', '.join(utts[:3])}{', ...' if len(utts) > 3 else ''}): "
                f"{type(err).__name__}: {err}") from err
        return out.reshape(-1)


def _materialize(model: ModelLike, device: str) -> Callable:
    """A checkpoint path loaded onto ``device``; a module moved there in eval mode; else as is."""
    import torch

    if isinstance(model, (str, Path)):
        from sqa.models import checkpoint

        return checkpoint.load(model, map_location=device)[0]
    if isinstance(model, torch.nn.Module):
        return model.to(device).eval()
    return model


def _timed(scorer: _Scorer, shard: _Shard, batch_size: int,
           on_progress: Callable[[int], Any] | None = None) -> tuple[_Shard, np.ndarray, list[str | None], float]:
    t0 = time.perf_counter()
    preds, reasons = scorer.label(shard, batch_size, on_progress)
    return shard, preds, reasons, time.perf_counter() - t0


_WORKER: _Scorer | None = None


def _worker_init(models: list, devices: Any) -> None:
    """Worker process start: one torch thread, the models loaded onto this worker's device."""
    import torch

    global _WORKER
    torch.set_num_threads(1)
    _WORKER = _Scorer(models, devices.get())


def _worker_label(shard: _Shard, batch_size: int) -> tuple[_Shard, np.ndarray, list[str | None], float]:
    assert _WORKER is not None, "worker used before _worker_init"
    return _timed(_WORKER, shard, batch_size)


def _parallel(models: list, todo: list[_Shard], batch_size: int,
              workers: list[str]) -> Iterator[tuple[_Shard, np.ndarray, list[str | None], float]]:
    """Shard results from worker processes ('spawn'), one per entry of ``workers`` (its device),
    in completion order."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    import torch.multiprocessing

    ctx = torch.multiprocessing.get_context("spawn")
    n = min(len(workers), len(todo))
    devices = ctx.Queue()
    for d in workers[:n]:
        devices.put(d)
    specs = [str(m) if isinstance(m, Path) else m for m in models]
    with ProcessPoolExecutor(n, mp_context=ctx, initializer=_worker_init, initargs=(specs, devices)) as pool:
        futures = [pool.submit(_worker_label, shard, batch_size) for shard in todo]
        try:
            for fut in as_completed(futures):
                yield fut.result()
        except BrokenProcessPool as err:
            raise RuntimeError(
                "a pseudo-labeling worker process died (crashed, was killed, or could not unpickle a model). "
                "Models given as modules or callables must be importable in a fresh process; pass a "
                "checkpoint path, or use num_workers=1") from err
        finally:
            for fut in futures:
                fut.cancel()


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
                f"model {i} ({_qualname(m)}) has parametrized weights (e.g. weight norm) and cannot be pickled "
                "to worker processes; pass its checkpoint path instead (each worker loads it), or use "
                "num_workers=1")
        try:
            pickle.dumps(type(m) if isinstance(m, torch.nn.Module) else m)
        except Exception as err:
            raise PseudoLabelError(
                f"model {i} ({_qualname(m)}) cannot be sent to worker processes: {err}; define it at module "
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
