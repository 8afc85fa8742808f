"""``sqa score``: MOS of audio files, folders or list files with a student, a run or a baseline.

    sqa score clips/ more.wav list.txt [--model sqa-250k] [--out scores.csv|scores.jsonl] [--format csv|jsonl]
              [--batch 8] [--device cpu]

Inputs (in the order given, one CSV row per resolved file; a file reached twice is scored once):

- an audio file of any format soundfile reads (any rate and channel count: ``sqa.data.audio.load``
  downmixes and resamples to 16 kHz mono);
- a folder: every ``.wav``/``.flac``/``.ogg`` below it (recursive, suffix case-insensitive),
  sorted by relative path; a folder without such files gets one error row;
- a list file (``.txt``/``.lst``): one file or folder per line, relative paths relative to the
  list file; blank lines and lines starting with ``#`` are skipped.

``--model`` is one of: a shipped student (``sqa-50k``, ``sqa-250k``, ``sqa-1M``:
:mod:`sqa.pretrained`; the default is ``sqa-250k``); a baseline name (``distillmos``,
``dnsmos-p808``, ``dnsmos-p835``, ``mfcc-sqa``; the ``baselines`` extra); a run folder holding
``model.safetensors``; a ``.safetensors`` checkpoint; an ONNX file exported by ``sqa export``
(scored with :class:`sqa.export.OnnxScorer`); or a size such as ``1M``/``250k``: the latest
finished ``04_distill`` run of ``--profile`` whose tag starts with ``size-<size>_`` (from
``outputs/registry.jsonl``). A model trained by a demo or smoke run gets a note in the summary:
it predicts PESQ-WB of synthetic speech, not listeners' opinion.

Output: one row per input with the fields ``path, mos, duration_s, status, error, warning``
(``status`` is ``ok`` or ``failed``; ``error`` names why a file failed; ``warning`` flags clips
that were scored but whose score may mean little: silent or near-silent ones), written to
``--out`` or, without ``--out`` or with ``--out -``, to stdout, in one of :data:`FORMATS`:

- ``csv`` (the default): a header line, then every field quoted, MOS with 4 decimals, duration
  with 3, empty fields for what is missing;
- ``jsonl``: one JSON object per line with the same fields and rounding, ``null`` for what is
  missing (``{"path": "a.wav", "mos": 3.1234, "duration_s": 4.0, "status": "ok", "error": null,
  "warning": null}``); chosen by ``--format jsonl`` or, without ``--format``, an ``--out`` ending
  in ``.jsonl``.

Rows are written as they are scored, in either format: ``--out`` is checked writable (and refused
if it is a symlink, device or folder) before any model is loaded or file read; the rows go to a
temporary file beside it, renamed onto ``--out`` when the batch ends; if the batch is interrupted,
the rows scored so far are kept in ``<out stem>.partial<suffix>`` (``scores.partial.csv``). The
summary (files scored/failed, mean/std MOS, wall seconds, audio seconds per wall second) and the
failed files with their reasons go to stdout with ``--out``, else to stderr.

A file that cannot be read (corrupt, empty, missing, NaN samples, a header that lies about its
length, a rate outside 8-192 kHz, any exception of the decoder) or that the model fails on, or a
clip shorter than the model's minimum duration (:data:`MIN_SECONDS`), fails that file with the
reason and never stops the batch.

Exit codes: 0 if at least one file was scored; 1 if none was (all failed or no input); 2 for
a usage error (unknown model, no such run, a shipped student whose weights are missing, a
baseline without the ``baselines`` extra, bad ``--batch`` or ``--device``).

Batching: clips of equal length (after resampling) share a forward pass of up to ``--batch``
clips; the others run one by one (every model windows long clips itself, ``--batch`` windows at a
time, so memory does not grow with a clip's length beyond the clip itself). Files are read in
groups of at most ``GROUP_SIZE`` files and ``GROUP_SECONDS`` of audio (a longer clip is a group of
its own) so memory stays bounded for large folders.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator, Sequence, TextIO

import numpy as np

from sqa import atomic, extras, paths
from sqa.data import audio

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
LIST_SUFFIXES = (".txt", ".lst")
CSV_COLUMNS = ("path", "mos", "duration_s", "status", "error", "warning")
FORMATS = ("csv", "jsonl")
GROUP_SIZE = 64  # files decoded and held in memory at once, at most ...
GROUP_SECONDS = 600.0  # ... and at most this much audio (38 MB at 16 kHz float32)
DISTILL_STAGE = "04_distill"
STDOUT = "-"  # ``--out -``: the CSV goes to standard output
MIN_SECONDS = 0.5  # shortest clip any model scores: below it there is hardly one syllable to judge
SILENT_DBFS = -60.0  # RMS below this: the clip is flagged near-silent (still scored)


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
    warning: str | None = None

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
    min_seconds: float = MIN_SECONDS  # shorter clips fail with the reason


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
    """``--model``: a shipped student, a baseline name, a run folder, a ``.safetensors``/``.onnx``
    file, or a size."""
    from sqa import pretrained
    from sqa.models import baselines

    if spec in pretrained.NAMES:
        try:
            return replace(_checkpoint_model(pretrained.weights_file(spec), device), name=spec)
        except pretrained.MissingWeights as err:
            raise ScoreError(f"--model {spec}: {err}") from None
    if spec in baselines.NAMES:
        try:
            b = baselines.get(spec, device=device, intra_op_threads=threads)
        except extras.MissingExtra as err:
            raise ScoreError(f"--model {spec}: {err}") from None
        return Model(spec, b.predict, b.n_params, f"baseline {spec}", min_seconds(b.min_samples))
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
            f"--model {spec!r} is not a shipped student ({', '.join(pretrained.NAMES)}), a baseline "
            f"({', '.join(baselines.NAMES)}), an existing run folder, checkpoint (.safetensors) or ONNX file, "
            "nor a size like '1M' or '250k'") from None
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
    need = int(getattr(getattr(module, "config", None), "stft_win", 1))
    return Model(f"{info.arch} ({path})", scorer.predict, scorer.n_params, str(path), min_seconds(need))


def _onnx_model(path: Path, threads: int) -> Model:
    from sqa.export import ExportError, OnnxScorer

    try:
        scorer = OnnxScorer(path, threads)
    except ExportError as err:
        raise ScoreError(f"--model: {err}") from err
    return Model(f"onnx ({path})", scorer.predict, scorer.n_params, str(path), min_seconds(scorer.min_samples))


def min_seconds(model_min_samples: int) -> float:
    """A model's minimum clip duration: :data:`MIN_SECONDS`, or longer if the model's own
    analysis window (e.g. its STFT) needs more samples at 16 kHz."""
    return max(MIN_SECONDS, model_min_samples / audio.TARGET_SR)


# ------------------------------------------------------------------ scoring


def score_items(items: Sequence[Item], model: Model, batch_size: int = 8, progress: bool = False) -> list[Row]:
    """One row per item, in order; failures become rows with ``error`` set."""
    return list(iter_rows(items, model, batch_size, progress))


def iter_rows(items: Sequence[Item], model: Model, batch_size: int = 8, progress: bool = False) -> Iterator[Row]:
    """Yield one row per item, in order, as soon as its group is scored (so callers can write
    results as they come); failures become rows with ``error`` set."""
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ScoreError(f"--batch must be >= 1, got {batch_size}")
    rows = [Row(str(item.path), error=item.error) for item in items]
    todo = [i for i, item in enumerate(items) if item.error is None]
    done = 0  # rows before this index are yielded
    with tqdm(total=len(todo), unit="file", disable=not progress, file=sys.stderr) as bar:
        while todo:
            group, waves, todo = _read_group(items, rows, todo, model, bar)
            for i, mos in zip(group, _predict_isolated(model, waves, batch_size)):
                if isinstance(mos, str):
                    rows[i].error, rows[i].warning = mos, None
                else:
                    rows[i].mos = mos
            bar.update(len(group))
            upto = todo[0] if todo else len(rows)
            yield from rows[done:upto]
            done = upto
    yield from rows[done:]


def _read_group(items: Sequence[Item], rows: list[Row], todo: list[int], model: Model,
                bar) -> tuple[list[int], list[np.ndarray], list[int]]:
    """Read files from ``todo`` until ``GROUP_SIZE`` files or ``GROUP_SECONDS`` of audio are held;
    returns the readable ones, their waves, and what is left to read."""
    group: list[int] = []
    waves: list[np.ndarray] = []
    held = 0.0
    taken = 0
    for i in todo:
        if len(group) >= GROUP_SIZE or (group and held >= GROUP_SECONDS):
            break
        taken += 1
        wave, rows[i].error = read_clip(items[i].path, model.min_seconds)
        if wave is None:
            bar.update()
            continue
        rows[i].duration_s = len(wave) / audio.TARGET_SR
        rows[i].warning = level_warning(wave)
        held += rows[i].duration_s
        group.append(i)
        waves.append(wave)
    return group, waves, todo[taken:]


def read_clip(path: Path, min_s: float = MIN_SECONDS) -> tuple[np.ndarray | None, str | None]:
    """``(wave, None)`` or ``(None, reason)``: any exception while reading fails this file only."""
    try:
        wave = audio.load(path)
    except audio.AudioError as err:
        return None, _without_prefix(str(err), path)
    except Exception as err:  # noqa: BLE001 - a decoder bug on one file must not end the batch
        return None, f"cannot read: {type(err).__name__}: {err}"
    reason = length_error(wave, min_s)
    return (None, reason) if reason else (wave, None)


def length_error(wave: np.ndarray, min_s: float = MIN_SECONDS) -> str | None:
    """Why a 16 kHz clip is too short for a model needing ``min_s`` seconds, or None."""
    if len(wave) < min_s * audio.TARGET_SR:
        return (f"clip is {len(wave) / audio.TARGET_SR:.3f} s long, shorter than the {min_s:g} s "
                "this model needs")
    return None


def level_warning(wave: np.ndarray) -> str | None:
    """A warning for silent or near-silent clips (RMS below :data:`SILENT_DBFS`), else None."""
    step = 1 << 20  # in blocks: no temporary as large as a long clip
    energy, peak = 0.0, 0.0
    for i in range(0, len(wave), step):
        block = wave[i:i + step].astype(np.float64)
        energy += float(np.dot(block, block))
        peak = max(peak, float(np.max(np.abs(block))))
    if peak == 0.0:
        return "silent: every sample is zero; the score means little"
    rms = math.sqrt(energy / len(wave))
    level = 20.0 * math.log10(rms) if rms > 0 else -math.inf
    if level < SILENT_DBFS:
        return f"near-silent: RMS {level:.1f} dBFS (below {SILENT_DBFS:g} dBFS); the score means little"
    return None


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
    write_rows(rows, buf)
    return buf.getvalue()


def format_for(out: Path | str | None) -> str:
    """The output format when ``--format`` is not given: ``jsonl`` for an ``--out`` ending in
    ``.jsonl``, else ``csv``."""
    return "jsonl" if out is not None and Path(out).suffix.lower() == ".jsonl" else "csv"


def row_record(r: Row) -> dict:
    """A row as a JSON object: the CSV's fields and rounding, ``None`` for what is missing."""
    return {"path": r.path, "mos": None if r.mos is None else round(r.mos, 4),
            "duration_s": None if r.duration_s is None else round(r.duration_s, 3),
            "status": "ok" if r.ok else "failed", "error": r.error, "warning": r.warning}


def write_rows(rows: Iterator[Row] | Sequence[Row], stream: TextIO, fmt: str = "csv") -> list[Row]:
    """Write each row as it comes (flushed, so an interruption keeps every row finished before
    it) as CSV (after its header) or JSON lines; returns the rows."""
    if fmt not in FORMATS:
        raise ScoreError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    writer = csv.writer(stream, quoting=csv.QUOTE_ALL, lineterminator="\n")
    if fmt == "csv":
        writer.writerow(CSV_COLUMNS)
    done = []
    for r in rows:
        if fmt == "jsonl":
            stream.write(json.dumps(row_record(r), ensure_ascii=False) + "\n")
        else:
            writer.writerow([r.path, "" if r.mos is None else f"{r.mos:.4f}",
                             "" if r.duration_s is None else f"{r.duration_s:.3f}",
                             "ok" if r.ok else "failed", r.error or "", r.warning or ""])
        stream.flush()
        done.append(r)
    return done


def write_file(rows: Iterator[Row] | Sequence[Row], path: Path | str, fmt: str = "csv") -> list[Row]:
    """Write rows as they come to a temporary file beside ``path``, renamed onto it at the end;
    if the rows stop with an error, what was written stays in ``atomic.partial_path(path)``."""
    with atomic.atomic_path(path, keep_partial=True) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
        return write_rows(rows, fh, fmt)


def training_note(source: str) -> str:
    """What a model trained by a run of this repo learned, from the run's ``params.json`` beside its
    checkpoint: demo and smoke runs learned PESQ-WB of synthetic speech ("" when unknown or paper);
    the shipped students (``sqa/weights``) imitate the released DistillMOS."""
    if not Path(str(source)).is_file():  # a baseline
        return ""
    if Path(str(source)).resolve().parent == Path(__file__).resolve().parent / "weights":
        from sqa.pipeline.profiles import SHIPPED_NOTE

        return SHIPPED_NOTE
    params = Path(str(source)).parent / "params.json"
    try:
        profile = json.loads(params.read_text()).get("profile")
    except (OSError, ValueError, AttributeError):
        return ""
    if profile not in paths.PROFILES:
        return ""
    from sqa.pipeline.profiles import label_note

    return label_note(profile)


def report(summary: dict, rows: Sequence[Row]) -> str:
    """Human-readable summary and the failed files with their reasons."""
    s = summary
    lines = [f"model: {s['model']} ({s['n_params']:,} parameters)",
             f"scored {s['n_scored']} of {s['n_files']} files, {s['n_failed']} failed"]
    if s["n_scored"]:
        lines.append(f"MOS mean {s['mos_mean']:.3f}, std {s['mos_std']:.3f}")
    warned = [r for r in rows if r.ok and r.warning]
    if warned:
        lines.append(f"{len(warned)} scored with a warning:")
        lines += [f"  {r.path}: {r.warning}" for r in warned]
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
          device: str = "cpu", profile: str = "demo", progress: bool = False,
          stream: TextIO | None = None, fmt: str = "csv") -> tuple[list[Row], dict]:
    """Resolve ``model``, score every input and return ``(rows, summary)``. The rows are written
    as they come, in ``fmt`` (one of :data:`FORMATS`), to ``out`` (a path, checked before anything
    else is done; ``"-"`` is standard output) or to ``stream``; with neither, nothing is written."""
    check_options(device, batch_size, profile, fmt)
    if out is not None and str(out) != STDOUT:
        try:
            atomic.check_destination(out)
        except atomic.DestinationError as err:
            raise ScoreError(f"--out {err}") from None
    items = find_inputs(inputs)
    resolved = resolve_model(model, profile, device)
    t0 = time.perf_counter()
    rows_iter = iter_rows(items, resolved, batch_size, progress)
    if out is not None and str(out) == STDOUT:
        stream = sys.stdout
    if out is not None and str(out) != STDOUT:
        rows = write_file(rows_iter, out, fmt)
    elif stream is not None:
        rows = write_rows(rows_iter, stream, fmt)
    else:
        rows = list(rows_iter)
    summary = {**summarize(rows, time.perf_counter() - t0), "model": resolved.name, "n_params": resolved.n_params,
               "note": training_note(resolved.source)}
    return rows, summary


def check_options(device: str, batch_size: int, profile: str, fmt: str = "csv") -> None:
    """A :class:`ScoreError` for an unknown output format, device, profile or a batch below 1."""
    if fmt not in FORMATS:
        raise ScoreError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if device not in ("cpu", "cuda"):
        raise ScoreError(f"--device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ScoreError("--device cuda: no CUDA device is available here; use --device cpu")
    if batch_size < 1:
        raise ScoreError(f"--batch must be >= 1, got {batch_size}")
    if profile not in paths.PROFILES:
        raise ScoreError(f"--profile must be one of {', '.join(paths.PROFILES)}, got {profile!r}")
