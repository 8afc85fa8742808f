"""``sqa score``: MOS of audio files, folders or list files with a student, a run or a baseline.

    sqa score clips/ more.wav list.txt --model 1M [--out scores.csv] [--batch 8] [--device cpu]

Inputs (in the order given, one CSV row per resolved file; a file reached twice is scored once):

- an audio file of any format soundfile reads (any rate and channel count: ``sqa.data.audio.load``
  downmixes and resamples to 16 kHz mono);
- a folder: every ``.wav``/``.flac``/``.ogg`` below it (recursive, suffix case-insensitive),
  sorted by relative path; a folder without such files gets one error row;
- a list file (``.txt``/``.lst``): one file or folder per line, relative paths relative to the
  list file; blank lines and lines starting with ``#`` are skipped.

``--model`` is one of: a baseline name (``distillmos``, ``dnsmos-p808``, ``dnsmos-p835``,
``mfcc-sqa``); a run folder holding ``model.safetensors``; a ``.safetensors`` checkpoint; an ONNX
file exported by ``sqa export`` (scored with :class:`sqa.export.OnnxScorer`); or a size such as
``1M``/``250k``: the latest finished ``04_distill`` run of ``--profile`` whose tag starts with
``size-<size>_`` (from ``outputs/registry.jsonl``).

Output: a CSV (``path, mos, duration_s, status, error``; ``status`` is ``ok`` or ``failed``;
``error`` names why a file failed), written atomically to ``--out`` or, without ``--out``, to
stdout. The summary (files scored/failed, mean/std MOS, wall seconds, audio seconds per wall
second) and the failed files with their reasons go to stdout with ``--out``, else to stderr.
A file that cannot be read (corrupt, empty, missing, NaN samples, ...) or that the model fails
on never stops the batch.

Exit codes: 0 if at least one file was scored; 1 if none was (all failed or no input); 2 for
a usage error (unknown model, no such run, bad ``--batch`` or ``--device``).

Batching: clips of equal length (after resampling) share a forward pass of up to ``--batch``
clips; the others run one by one (every model windows long clips itself). Files are read in
groups of at most ``GROUP_SIZE`` so memory stays bounded for large folders.
"""

from __future__ import annotations

import csv
import io
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from sqa import atomic, paths
from sqa.data import audio

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
LIST_SUFFIXES = (".txt", ".lst")
CSV_COLUMNS = ("path", "mos", "duration_s", "status", "error")
GROUP_SIZE = 64  # files decoded and held in memory at once
DISTILL_STAGE = "04_distill"


class ScoreError(ValueError):
    """A usage error (model cannot be resolved, bad option); the message says what to do."""


@dataclass(frozen=True)
class Item:
    """One input to score, or one input that failed before reading (``error`` set)."""

    path: Path
    error: str | None = None


@dataclass
class Row:
    """One CSV row."""

    path: str
    mos: float | None = None
    duration_s: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.mos is not None


@dataclass
class Model:
    """What scores waveforms: ``predict(list of 16 kHz mono arrays, batch_size) -> MOS array``."""

    name: str
    predict: Callable[[Sequence[np.ndarray], int], np.ndarray]
    n_params: int
    source: str


# ------------------------------------------------------------------ inputs


def find_inputs(args: Sequence[Path | str]) -> list[Item]:
    """Expand files, folders and list files into items, in order, without duplicates."""
    items: list[Item] = []
    seen: set[Path] = set()

    for arg in args:
        path = Path(arg)
        listed = path.is_file() and path.suffix.lower() in LIST_SUFFIXES
        for item in _expand_list(path) if listed else _expand(path):
            key = item.path.resolve()
            if key not in seen:
                seen.add(key)
                items.append(item)
    return items


def _expand(path: Path) -> list[Item]:
    if path.is_dir():
        found = sorted((p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()),
                       key=lambda p: p.relative_to(path).as_posix())
        if not found:
            return [Item(path, f"folder has no {'/'.join(AUDIO_SUFFIXES)} files")]
        return [Item(p) for p in found]
    return [Item(path)]  # a file (any format) or a missing path: sqa.data.audio.load names the problem


def _expand_list(list_file: Path) -> list[Item]:
    try:
        text = list_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        return [Item(list_file, f"cannot read list file ({type(err).__name__}: {err})")]
    items: list[Item] = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            entry = Path(line).expanduser()
            items += _expand(entry if entry.is_absolute() else list_file.parent / entry)
    if not items:
        return [Item(list_file, "list file names no files")]
    return items


# ------------------------------------------------------------------ models


def resolve_model(spec: str, profile: str = "demo", device: str = "cpu", threads: int = 0) -> Model:
    """``--model``: a baseline name, a run folder, a ``.safetensors``/``.onnx`` file, or a size."""
    from sqa.models import baselines

    if spec in baselines.NAMES:
        b = baselines.get(spec, device=device, intra_op_threads=threads)
        return Model(spec, b.predict, b.n_params, f"baseline {spec}")
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "model.safetensors").is_file():
            raise ScoreError(f"--model {spec}: run folder has no model.safetensors")
        return _checkpoint_model(path / "model.safetensors", device)
    if path.is_file():
        if path.suffix.lower() == ".onnx":
            return _onnx_model(path, threads)
        return _checkpoint_model(path, device)
    try:
        from sqa.models.student import parse_size

        parse_size(spec)
    except ValueError:
        raise ScoreError(
            f"--model {spec!r} is not a baseline ({', '.join(baselines.NAMES)}), an existing run folder, "
            "checkpoint (.safetensors) or ONNX file, nor a size like '1M' or '250k'") from None
    return _checkpoint_model(distill_run(spec, profile) / "model.safetensors", device)


def distill_run(size: str, profile: str = "demo") -> Path:
    """Folder of the latest finished 04_distill run of ``profile`` whose tag starts with ``size-<size>``."""
    from sqa.pipeline import runs

    prefix = f"size-{paths.safe_tag(size)}"
    try:
        rows = [r for r in runs.registry(profile, DISTILL_STAGE)
                if r["tag"] == prefix or r["tag"].startswith(prefix + "_")]
    except (ValueError, KeyError) as err:
        raise ScoreError(f"--model {size}: cannot read the run registry {paths.registry_path()}: {err}") from err
    hint = f"run `sqa run {DISTILL_STAGE} -p profile {profile} -p size {size}` first"
    if not rows:
        raise ScoreError(f"--model {size}: no finished {DISTILL_STAGE} run of size {size} for profile "
                         f"{profile!r} in {paths.registry_path()}; {hint}")
    folder = paths.resolve_portable(rows[-1]["dir"])
    if not (folder / "model.safetensors").is_file():
        raise ScoreError(f"--model {size}: the latest {DISTILL_STAGE} run {folder} has no model.safetensors; {hint}")
    return folder


def _checkpoint_model(path: Path, device: str) -> Model:
    from sqa.models import baselines, checkpoint

    try:
        module, info = checkpoint.load(path, map_location=device)
    except checkpoint.CheckpointError as err:
        raise ScoreError(f"--model: {err}") from err
    scorer = baselines.TorchBaseline(info.arch, module, module, device)
    return Model(f"{info.arch} ({path})", scorer.predict, scorer.n_params, str(path))


def _onnx_model(path: Path, threads: int) -> Model:
    from sqa.export import ExportError, OnnxScorer

    try:
        scorer = OnnxScorer(path, threads)
    except ExportError as err:
        raise ScoreError(f"--model: {err}") from err
    return Model(f"onnx ({path})", scorer.predict, scorer.n_params, str(path))


# ------------------------------------------------------------------ scoring


def score_items(items: Sequence[Item], model: Model, batch_size: int = 8, progress: bool = False) -> list[Row]:
    """One row per item, in order; failures become rows with ``error`` set."""
    from tqdm import tqdm

    if batch_size < 1:
        raise ScoreError(f"--batch must be >= 1, got {batch_size}")
    rows = [Row(str(item.path), error=item.error) for item in items]
    todo = [i for i, item in enumerate(items) if item.error is None]
    bar = tqdm(total=len(todo), unit="file", disable=not progress, file=sys.stderr)
    for start in range(0, len(todo), GROUP_SIZE):
        group, waves = [], []
        for i in todo[start:start + GROUP_SIZE]:
            try:
                wave = audio.load(items[i].path)
            except audio.AudioError as err:
                rows[i].error = _without_prefix(str(err), items[i].path)
                bar.update()
                continue
            rows[i].duration_s = len(wave) / audio.TARGET_SR
            group.append(i)
            waves.append(wave)
        for i, mos in zip(group, _predict_isolated(model, waves, batch_size)):
            if isinstance(mos, str):
                rows[i].error = mos
            else:
                rows[i].mos = mos
        bar.update(len(group))
    bar.close()
    return rows


def _without_prefix(message: str, path: Path) -> str:
    """An error message without its leading ``<path>: `` (the CSV row names the file)."""
    prefix = f"{path}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def _predict_isolated(model: Model, waves: list[np.ndarray], batch_size: int) -> list[float | str]:
    """MOS per clip, or an error text for clips the model fails on (others are still scored)."""
    if not waves:
        return []
    try:
        scores = np.asarray(model.predict(waves, batch_size), dtype=np.float64)
        results: list[float | str] = [float(s) for s in scores]
    except Exception:  # find the clip(s) at fault: score one by one
        results = []
        for wave in waves:
            try:
                results.append(float(np.asarray(model.predict([wave], 1), dtype=np.float64)[0]))
            except Exception as err:  # any model failure is reported for this file only
                results.append(f"model failed: {type(err).__name__}: {err}")
    return [r if isinstance(r, str) or math.isfinite(r) else f"model returned a non-finite score ({r})"
            for r in results]


def summarize(rows: Sequence[Row], seconds: float) -> dict:
    """Counts, MOS mean/std, ``seconds`` (reading + scoring) and audio seconds per second."""
    mos = np.array([r.mos for r in rows if r.ok], dtype=np.float64)
    audio_s = float(sum(r.duration_s for r in rows if r.ok))
    return {
        "n_files": len(rows),
        "n_scored": int(mos.size),
        "n_failed": len(rows) - int(mos.size),
        "mos_mean": float(mos.mean()) if mos.size else float("nan"),
        "mos_std": float(mos.std()) if mos.size else float("nan"),
        "seconds": seconds,
        "audio_seconds": audio_s,
        "x_realtime": audio_s / seconds if seconds > 0 else float("nan"),
    }


def csv_text(rows: Sequence[Row]) -> str:
    """The CSV (header + one row per input); every field quoted, MOS with 4 decimals."""
    buf = io.StringIO()
    writer = csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        writer.writerow([r.path, "" if r.mos is None else f"{r.mos:.4f}",
                         "" if r.duration_s is None else f"{r.duration_s:.3f}",
                         "ok" if r.ok else "failed", r.error or ""])
    return buf.getvalue()


def write_csv(rows: Sequence[Row], path: Path | str) -> Path:
    """Write :func:`csv_text` atomically."""
    return atomic.write_text(path, csv_text(rows))


def training_note(source: str) -> str:
    """What a model trained by a run of this repo learned, from the run's ``params.json`` beside its
    checkpoint: demo and smoke runs learned PESQ-WB of synthetic speech ("" when unknown or paper)."""
    import json

    if not Path(str(source)).is_file():  # a baseline
        return ""
    params = Path(str(source)).parent / "params.json"
    try:
        profile = json.loads(params.read_text()).get("profile")
    except (OSError, ValueError):
        return ""
    if profile not in paths.PROFILES:
        return ""
    from sqa.analysis.comparisons import label_note

    return label_note(profile)


def report(summary: dict, rows: Sequence[Row]) -> str:
    """Human-readable summary and the failed files with their reasons."""
    s = summary
    lines = [f"model: {s['model']} ({s['n_params']:,} parameters)",
             f"scored {s['n_scored']} of {s['n_files']} files, {s['n_failed']} failed"]
    if s["n_scored"]:
        lines.append(f"MOS mean {s['mos_mean']:.3f}, std {s['mos_std']:.3f}")
    lines.append(f"{s['seconds']:.1f} s (reading + scoring) for {s['audio_seconds']:.1f} s of audio "
                 f"({s['x_realtime']:.1f}x real time)")
    if s.get("note"):
        lines.append(f"note: {s['note']}")
    failed = [r for r in rows if not r.ok]
    if failed:
        lines.append("failed:")
        lines += [f"  {r.path}: {r.error}" for r in failed]
    return "\n".join(lines)


def score(inputs: Sequence[Path | str], model: str, out: Path | str | None = None, batch_size: int = 8,
          device: str = "cpu", profile: str = "demo", progress: bool = False) -> tuple[list[Row], dict]:
    """Resolve ``model``, score every input, write the CSV to ``out`` (if given): ``(rows, summary)``."""
    if device not in ("cpu", "cuda"):
        raise ScoreError(f"--device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ScoreError("--device cuda: no CUDA device is available here; use --device cpu")
    if batch_size < 1:
        raise ScoreError(f"--batch must be >= 1, got {batch_size}")
    if out is not None and Path(out).is_dir():
        raise ScoreError(f"--out {out} is a folder; give the path of the CSV file to write")
    if profile not in paths.PROFILES:
        raise ScoreError(f"--profile must be one of {', '.join(paths.PROFILES)}, got {profile!r}")
    items = find_inputs(inputs)
    resolved = resolve_model(model, profile, device)
    t0 = time.perf_counter()
    rows = score_items(items, resolved, batch_size, progress)
    summary = {**summarize(rows, time.perf_counter() - t0), "model": resolved.name, "n_params": resolved.n_params,
               "note": training_note(resolved.source)}
    if out is not None:
        write_csv(rows, out)
    return rows, summary
