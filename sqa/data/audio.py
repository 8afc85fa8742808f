"""Audio I/O: read any soundfile-readable clip as mono float32 at a target rate, and write clips.

Policies (each one tested in ``tests/test_audio.py``):

- **Reading** uses soundfile (libsndfile: WAV, FLAC, OGG/Vorbis, AIFF, ...). Integer PCM
  (16/24/32 bit) is scaled to float32 in [-1, 1); float files are returned as stored (a float file
  may hold samples beyond ±1: they are not clipped, since clipping would change the signal).
  Resampling can overshoot ±1 slightly near full-scale transients.
- **Multichannel** audio is downmixed to mono as the plain mean of all channels.
- **Resampling** uses ``torchaudio.functional.resample`` with its defaults (windowed sinc); torch is
  imported only when the file's rate differs from the target. Long files are resampled block by
  block with enough context on both sides of each block that the result equals resampling the
  whole signal at once (up to float rounding). The synthesis chains (TTS voices, codec rates)
  use :func:`resample_poly` instead, which their built corpora's bytes depend on.
- **Memory**: files are always decoded block by block (``BLOCK_SECONDS``), so ``load`` needs the
  output array plus one decoded block, and ``iter_blocks`` needs one block, however long the file
  (plus torch's temporary convolution buffers for that block, a few times its size).
- **Untrusted headers**: before anything is allocated, the frame count a header declares is
  bounded by the file's size (exactly, from the bytes per frame, for uncompressed PCM/float
  subtypes; by :data:`MAX_FRAMES_PER_BYTE` for compressed ones: a FLAC claiming 2^35 frames in
  a few kB is refused instead of allocating 128 GiB). A WAV whose ``data`` chunk declares more
  bytes than the file holds is truncated (libsndfile would silently read the shorter clip) and is
  refused. The file's own sample rate must lie in ``MIN_SR..MAX_SR`` (8-192 kHz); "audio" at 1 Hz
  is not upsampled and scored.
- **Errors** are all :class:`AudioError` (a ``ValueError``), and each message starts with the file:
  missing file, not a regular file, unrecognised or corrupt header, 0 frames, undecodable or
  truncated data (header promises more frames than the file holds), NaN/inf samples
  (with their count), a sample rate out of range, unsupported ``target_sr``, bad
  ``max_seconds``/``block_seconds``. Any other exception the decoder raises while reading a file
  (:func:`load`, :func:`iter_blocks`) becomes an :class:`AudioError` naming the file too.
  A NaN/inf check covers the whole file; ``iter_blocks`` raises when it reaches the first bad block
  (after yielding the clean blocks before it), counting the bad samples of the whole file.
- **Arrays** (:func:`from_array`: samples already in memory, e.g. for ``sqa.load().score``) get
  the same policies: float samples only (integer PCM is refused rather than guessed at), 1-D or
  ``(samples, channels)`` as ``soundfile.read`` returns them (a 2-D array with more columns than
  rows is refused as probably ``(channels, samples)``), channels averaged, the rate in
  ``MIN_SR..MAX_SR``, NaN/inf refused, resampled by the same resampler (whole, in one call).
- **Silence** is not an error: an all-zero file loads as zeros; callers decide with
  :func:`is_silent`.
- **Writing** (:func:`save`) is atomic and refuses NaN/inf and, for integer PCM subtypes, samples
  beyond ±1 (which would wrap around instead of clipping).
"""

from __future__ import annotations

import contextlib
import math
import numbers
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

import numpy as np
import soundfile as sf

from sqa.atomic import atomic_path

TARGET_SR = 16000
MIN_SR = 8000
MAX_SR = 192000
BLOCK_SECONDS = 10.0
MAX_FRAMES_PER_BYTE = 8192  # compressed formats: above any real codec (FLAC's best: ~6500 for silence)
_BYTES_PER_SAMPLE = {"PCM_S8": 1, "PCM_U8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8,
                     "ULAW": 1, "ALAW": 1}
_UNKNOWN_DATA_SIZES = (0, 0xFFFFFFFF)  # streaming WAV writers leave the data size unset

_LOWPASS_FILTER_WIDTH = 6  # torchaudio.functional.resample defaults, used to size block context
_ROLLOFF = 0.99


class AudioError(ValueError):
    """Unreadable, empty or invalid audio; the message names the file and what is wrong."""


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of an audio file (nothing is decoded)."""

    path: Path
    sample_rate: int
    channels: int
    frames: int
    duration: float
    format: str
    subtype: str


def info(path: Path | str) -> AudioInfo:
    """Read only the header of ``path``. A file with 0 frames is reported, not rejected."""
    with _open(path) as f:
        return AudioInfo(
            path=Path(path),
            sample_rate=f.samplerate,
            channels=f.channels,
            frames=f.frames,
            duration=f.frames / f.samplerate,
            format=f.format,
            subtype=f.subtype,
        )


def load(path: Path | str, target_sr: int = TARGET_SR, *, max_seconds: float | None = None) -> np.ndarray:
    """Read ``path`` as mono float32 at ``target_sr`` (channels averaged).

    ``max_seconds`` keeps only the first ``max_seconds`` of the file (the rest is never decoded).
    Memory stays at the output size plus one decoded block of ``BLOCK_SECONDS``.
    """
    path = Path(path)
    target_sr = _check_sr(path, target_sr)
    with _any_error_names(path), _open(path) as f:
        frames = _frames_to_read(path, f, max_seconds)
        out = np.empty(_resampled_length(frames, f.samplerate, target_sr), dtype=np.float32)
        pos = 0
        for block in _mono_blocks(path, f, frames, BLOCK_SECONDS, target_sr):
            out[pos : pos + len(block)] = block
            pos += len(block)
    if pos != len(out):
        raise AudioError(f"{path}: decoded {pos} samples, expected {len(out)} from the header")
    return out


def from_array(x: np.ndarray, sample_rate: int, target_sr: int = TARGET_SR, *, name: str = "samples") -> np.ndarray:
    """Float samples ``x`` (1-D, or ``(samples, channels)``) at ``sample_rate`` as mono float32 at
    ``target_sr``; errors are :class:`AudioError` starting with ``name``."""
    sr = _check_sr(name, sample_rate, "sample_rate")
    target_sr = _check_sr(name, target_sr)
    arr = np.asarray(x)
    if not np.issubdtype(arr.dtype, np.floating):
        raise AudioError(f"{name}: samples must be floats (about -1..1), got dtype {arr.dtype}; scale integer "
                         "PCM first, e.g. x / 32768 for 16-bit")
    if arr.ndim == 2 and arr.shape[1] > arr.shape[0]:
        raise AudioError(f"{name}: shape {arr.shape} looks like (channels, samples); pass (samples, channels), "
                         "e.g. x.T")
    if arr.ndim not in (1, 2) or arr.size == 0:
        raise AudioError(f"{name}: expected a non-empty 1-D array of samples or (samples, channels), "
                         f"got shape {arr.shape}")
    mono = arr.astype(np.float32) if arr.ndim == 1 else arr.mean(axis=1, dtype=np.float32)
    bad = ~np.isfinite(mono)
    if bad.any():
        raise AudioError(f"{name}: {int(bad.sum())} non-finite samples (NaN or inf), first at sample "
                         f"{int(np.flatnonzero(bad)[0])}")
    return mono if sr == target_sr else resample(np.ascontiguousarray(mono), sr, target_sr)


def iter_blocks(
    path: Path | str,
    block_seconds: float = BLOCK_SECONDS,
    target_sr: int = TARGET_SR,
    *,
    max_seconds: float | None = None,
) -> Iterator[np.ndarray]:
    """Yield consecutive mono float32 blocks of ``path`` at ``target_sr``, about ``block_seconds`` each.

    Only one block (plus resampling context) is decoded at a time. The concatenated blocks equal
    :func:`load` of the same file.
    """
    path = Path(path)
    target_sr = _check_sr(path, target_sr)
    if not (isinstance(block_seconds, numbers.Real) and math.isfinite(block_seconds) and block_seconds > 0):
        raise AudioError(f"{path}: block_seconds must be a positive number, got {block_seconds!r}")
    with _any_error_names(path), _open(path) as f:
        frames = _frames_to_read(path, f, max_seconds)
        yield from _mono_blocks(path, f, frames, block_seconds, target_sr)


def save(path: Path | str, x: np.ndarray, sr: int = TARGET_SR, subtype: str | None = None) -> Path:
    """Write ``x`` (mono ``(n,)`` or ``(n, channels)``) atomically; the format follows the suffix.

    ``subtype=None`` takes the format's default (PCM_16 for WAV and FLAC, VORBIS for OGG).
    """
    path = Path(path)
    fmt = path.suffix.lstrip(".").upper()
    if fmt not in sf.available_formats():
        raise AudioError(f"{path}: cannot tell the audio format from suffix {path.suffix!r}")
    subtype = subtype or sf.default_subtype(fmt)
    if not sf.check_format(fmt, subtype):
        raise AudioError(
            f"{path}: subtype {subtype!r} is not valid for {fmt}; choose one of {sorted(sf.available_subtypes(fmt))}"
        )
    if not (isinstance(sr, numbers.Integral) and sr > 0):
        raise AudioError(f"{path}: sample rate must be a positive integer, got {sr!r}")
    x = np.asarray(x)
    if x.ndim not in (1, 2) or x.shape[0] == 0:
        raise AudioError(f"{path}: expected a non-empty (n,) or (n, channels) array, got shape {x.shape}")
    if np.issubdtype(x.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(x)))
        if bad:
            raise AudioError(f"{path}: refusing to write {bad} NaN/inf samples")
        peak = float(np.max(np.abs(x)))
        if peak > 1.0 and subtype not in ("FLOAT", "DOUBLE"):
            raise AudioError(f"{path}: peak {peak:.4g} exceeds 1.0 and would wrap around in {subtype}")
    with atomic_path(path) as tmp:
        sf.write(tmp, x, sr, subtype=subtype, format=fmt)
    return path


def is_silent(x: np.ndarray, threshold_db: float = -60.0) -> bool:
    """True if the RMS level of ``x`` is below ``threshold_db`` dBFS (an empty array is silent)."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return True
    rms = math.sqrt(float(np.mean(np.square(x))))
    return rms == 0.0 or 20.0 * math.log10(rms) < threshold_db


def crop_or_pad(
    x: np.ndarray,
    n: int,
    mode: Literal["center", "start", "random"] = "center",
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Return a new array of exactly ``n`` samples: a crop of ``x`` or ``x`` padded with zeros.

    ``center`` takes/places ``x`` in the middle, ``start`` keeps the beginning (pads at the end),
    ``random`` picks the offset with ``rng`` (required, so results are reproducible).
    """
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"crop_or_pad: x must be 1-D, got shape {x.shape}")
    if not (isinstance(n, numbers.Integral) and n > 0):
        raise ValueError(f"crop_or_pad: n must be a positive integer, got {n!r}")
    if mode not in ("center", "start", "random"):
        raise ValueError(f"crop_or_pad: mode must be 'center', 'start' or 'random', got {mode!r}")
    if mode == "random" and rng is None:
        raise ValueError("crop_or_pad: mode='random' needs rng (a numpy Generator)")
    slack = abs(len(x) - n)
    if mode == "random":
        offset = int(rng.integers(0, slack + 1))
    else:
        offset = slack // 2 if mode == "center" else 0
    if len(x) >= n:
        return x[offset : offset + n].copy()
    out = np.zeros(n, dtype=x.dtype)
    out[offset : offset + len(x)] = x
    return out


def segment(x: np.ndarray, n: int, hop: int) -> np.ndarray:
    """Cut ``x`` into windows of ``n`` samples, shape ``(n_windows, n)``, covering the whole clip.

    Like DistillMOS: a clip shorter than ``n`` is zero-padded at the end into one window; otherwise
    ``ceil((len - n) / hop) + 1`` windows start at ``linspace(0, 1, k) * (len - n)`` (truncated),
    so the first starts at 0, the last ends at the clip's end, and no step exceeds ``hop``.
    Holds every window at once; :func:`iter_segments` yields them one at a time.
    """
    return np.stack(list(iter_segments(x, n, hop)))


def iter_segments(x: np.ndarray, n: int, hop: int) -> Iterator[np.ndarray]:
    """The windows of :func:`segment`, one at a time (views into ``x``; a padded copy for a clip
    shorter than ``n``), so memory does not grow with the number of windows."""
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"segment: x must be 1-D, got shape {x.shape}")
    if not (isinstance(n, numbers.Integral) and n > 0):
        raise ValueError(f"segment: n must be a positive integer, got {n!r}")
    if not (isinstance(hop, numbers.Integral) and 0 < hop <= n):
        raise ValueError(f"segment: hop must be an integer in 1..n={n} (larger hops leave gaps), got {hop!r}")
    if len(x) <= n:
        yield crop_or_pad(x, n, "start")
        return
    over = len(x) - n
    k = math.ceil(over / hop) + 1
    for s in (np.linspace(0.0, 1.0, k) * over).astype(np.int64):
        yield x[s : s + n]


def _open(path: Path | str) -> sf.SoundFile:
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: file not found")
    if not path.is_file():
        raise AudioError(f"{path}: not a regular file")
    try:
        return sf.SoundFile(path)
    except RuntimeError as e:
        raise AudioError(f"{path}: unrecognised or corrupt audio header ({e})") from e


def _check_sr(path: Path | str, target_sr: object, what: str = "target_sr") -> int:
    if isinstance(target_sr, float) and target_sr.is_integer():
        target_sr = int(target_sr)
    if isinstance(target_sr, bool) or not isinstance(target_sr, numbers.Integral) or not MIN_SR <= target_sr <= MAX_SR:
        raise AudioError(f"{path}: unsupported {what} {target_sr!r}; use an integer in {MIN_SR}..{MAX_SR} Hz")
    return int(target_sr)


@contextlib.contextmanager
def _any_error_names(path: Path) -> Iterator[None]:
    """Turn whatever the decoder raises on a hostile file (MemoryError, OverflowError, ...) into an
    :class:`AudioError` naming the file, so one file never ends a batch."""
    try:
        yield
    except AudioError:
        raise
    except GeneratorExit:
        raise
    except Exception as err:  # noqa: BLE001 - reported with the file, not swallowed
        raise AudioError(f"{path}: cannot decode ({type(err).__name__}: {err})") from err


def _frames_to_read(path: Path, f: sf.SoundFile, max_seconds: float | None) -> int:
    if f.frames == 0:
        raise AudioError(f"{path}: empty audio (0 frames)")
    if not MIN_SR <= f.samplerate <= MAX_SR:
        raise AudioError(f"{path}: sample rate {f.samplerate} Hz is outside the supported {MIN_SR}..{MAX_SR} Hz")
    _check_declared_length(path, f)
    if max_seconds is None:
        return f.frames
    if not (isinstance(max_seconds, numbers.Real) and math.isfinite(max_seconds) and max_seconds > 0):
        raise AudioError(f"{path}: max_seconds must be a positive number, got {max_seconds!r}")
    return min(f.frames, max(1, round(max_seconds * f.samplerate)))


def _check_declared_length(path: Path, f: sf.SoundFile) -> None:
    """Refuse a header whose frame count the file's size cannot hold (before allocating for it),
    and a WAV whose data chunk was cut short."""
    size = path.stat().st_size
    per_sample = _BYTES_PER_SAMPLE.get(f.subtype) if f.format not in ("FLAC", "OGG", "MP3") else None
    if per_sample is not None:
        need = f.frames * f.channels * per_sample
        if need > size:
            raise AudioError(f"{path}: header declares {f.frames} frames ({need} bytes of {f.subtype}), but the "
                             f"file has only {size} bytes: it is truncated or its header is wrong")
    elif f.frames > size * MAX_FRAMES_PER_BYTE:
        raise AudioError(f"{path}: header declares {f.frames} frames ({f.frames / f.samplerate:.0f} s), more than "
                         f"a {size}-byte {f.format} file can hold; its header is wrong")
    if f.format == "WAV":
        _check_wav_data(path, size)


def _check_wav_data(path: Path, size: int) -> None:
    """A RIFF/RIFX WAV whose ``data`` chunk declares more bytes than follow it is truncated."""
    with path.open("rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
            return  # RF64, W64 or odd layouts: libsndfile's own checks apply
        order = "<" if head[:4] == b"RIFF" else ">"
        for _ in range(64):  # chunks before "data": fmt, fact, LIST, ...
            chunk = fh.read(8)
            if len(chunk) < 8:
                return
            cid, csize = chunk[:4], struct.unpack(order + "I", chunk[4:])[0]
            if cid == b"data":
                held = size - fh.tell()
                if csize not in _UNKNOWN_DATA_SIZES and csize > held:
                    raise AudioError(f"{path}: WAV data chunk declares {csize} bytes but the file holds only "
                                     f"{held} after its header: the file is truncated")
                return
            fh.seek(csize + (csize & 1), 1)


def _resampled_length(frames: int, sr: int, target_sr: int) -> int:
    g = math.gcd(sr, target_sr)
    return -(-frames * (target_sr // g) // (sr // g))


def _mono_blocks(path: Path, f: sf.SoundFile, frames: int, block_seconds: float, target_sr: int) -> Iterator[np.ndarray]:
    """Decode ``frames`` frames of ``f`` block by block, downmix, resample with context, yield."""
    sr = f.samplerate
    g = math.gcd(sr, target_sr)
    up, down = target_sr // g, sr // g
    # Blocks start at multiples of `down`, so each block's output grid is the whole signal's grid.
    # Context of `ctx` input frames on each side covers the sinc kernel (width + down frames).
    width = math.ceil(_LOWPASS_FILTER_WIDTH * down / (min(up, down) * _ROLLOFF))
    ctx = 0 if sr == target_sr else down * math.ceil((width + down) / down)
    block = down * max(1, round(block_seconds * sr / down))
    for start in range(0, frames, block):
        stop = min(start + block, frames)
        lo, hi = max(0, start - ctx), min(frames, stop + ctx)
        raw = _read(path, f, lo, hi - lo)
        if not np.isfinite(raw).all():
            _raise_nonfinite(path, f, frames, lo, block)
        mono = raw[:, 0] if raw.shape[1] == 1 else raw.mean(axis=1, dtype=np.float32)
        del raw
        if sr == target_sr:
            yield mono
            continue
        y = resample(mono, sr, target_sr)
        first = (start - lo) // down * up
        n_out = (stop - start) // down * up if stop < frames else _resampled_length(stop - start, sr, target_sr)
        yield y[first : first + n_out]


def _read(path: Path, f: sf.SoundFile, start: int, n: int) -> np.ndarray:
    """Frames ``start .. start + n`` of ``f`` as float32 ``(n, channels)``."""
    try:
        f.seek(start)
        raw = f.read(n, dtype="float32", always_2d=True)
    except RuntimeError as e:
        raise AudioError(f"{path}: cannot decode frames {start}..{start + n} of {f.frames} ({e})") from e
    if len(raw) != n:
        raise AudioError(f"{path}: file ends after {start + len(raw)} frames, header promised {f.frames}")
    return raw


def resample(x: np.ndarray, sr: int, target_sr: int) -> np.ndarray:
    """``x`` (1-D float32) from ``sr`` to ``target_sr`` Hz (torchaudio's windowed-sinc resampler)."""
    import torch
    import torchaudio.functional

    with torch.inference_mode():
        return torchaudio.functional.resample(torch.from_numpy(x), sr, target_sr).numpy()


def resample_poly(x: np.ndarray, sr: int, target_sr: int) -> np.ndarray:
    """``x`` from ``sr`` to ``target_sr`` Hz as float64 by polyphase filtering (scipy's
    ``resample_poly`` at the reduced ratio): the synthesis chains' resampler (TTS voices, codec
    rates), kept apart from :func:`resample` so that built corpora stay byte-identical."""
    from fractions import Fraction

    from scipy import signal

    ratio = Fraction(target_sr, sr)
    return signal.resample_poly(np.asarray(x, dtype=np.float64), ratio.numerator, ratio.denominator)


def _raise_nonfinite(path: Path, f: sf.SoundFile, frames: int, start: int, block: int) -> None:
    """Count NaN/inf samples from ``start`` to ``frames`` (block by block) and raise."""
    n_nan = n_inf = 0
    first: int | None = None
    for pos in range(start, frames, block):
        raw = _read(path, f, pos, min(block, frames - pos))
        nan, inf = np.isnan(raw), np.isinf(raw)
        n_nan += int(np.count_nonzero(nan))
        n_inf += int(np.count_nonzero(inf))
        if first is None and (nan.any() or inf.any()):
            first = pos + int(np.flatnonzero((nan | inf).any(axis=1))[0])
    raise AudioError(
        f"{path}: {n_nan + n_inf} non-finite samples ({n_nan} NaN, {n_inf} inf), first at frame {first} "
        f"({first / f.samplerate:.3f} s)"
    )


__all__ = [
    "AudioError",
    "AudioInfo",
    "BLOCK_SECONDS",
    "MAX_FRAMES_PER_BYTE",
    "MAX_SR",
    "MIN_SR",
    "TARGET_SR",
    "crop_or_pad",
    "from_array",
    "info",
    "is_silent",
    "iter_blocks",
    "iter_segments",
    "load",
    "resample",
    "resample_poly",
    "save",
    "segment",
]
