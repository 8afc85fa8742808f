"""DNSMOS P.808 and P.835 scored with the ONNX models shipped in the `speechmos` wheel.

The windowing reproduces the reference DNSMOS scorer: clips shorter than 9.01 s are repeated
(doubled) until they reach 9.01 s; windows of 9.01 s start every second; a clip's score is the
mean over its windows. As in the reference script, a window's end is computed in floating point
(`int((i + 9.01) * 16000)`), which truncates one sample short for some window indices (7-23,
119-..., ...); those windows are skipped, exactly as the reference does. So any clip of 16 s
to 34 s is scored on windows 0-6 only (its first 16 s), as by speechmos and DNSMOS.

P.808 reads a log-mel spectrogram (librosa, 120 mels, 321-point FFT, 10 ms hop, dB relative to the
window's maximum, clamped at -80 dB, mapped by (dB + 40) / 40) of the window without its last
10 ms. P.835 reads the raw window and maps its SIG/BAK/OVRL outputs through fixed quadratic
polynomials.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
WINDOW_SECONDS = 9.01
WINDOW_SAMPLES = int(WINDOW_SECONDS * SAMPLE_RATE)  # 144160
HOP_SAMPLES = SAMPLE_RATE

P808_MODEL = "model_v8.onnx"
P835_MODEL = "sig_bak_ovr.onnx"

# Quadratic maps from the P.835 network's raw outputs to MOS (coefficients, highest power first).
_P835_POLY = {
    "sig": (-0.08397278, 1.22083953, 0.0052439),
    "bak": (-0.13166888, 1.60915514, -0.39604546),
    "ovrl": (-0.06766283, 1.11546468, 0.04602535),
}
_P835_KEYS = ("sig", "bak", "ovrl")

_N_MELS = 120
_N_FFT = 321
_MEL_HOP = 160
_AMIN = 1e-10
_TOP_DB = 80.0


def as_waveform(wave: object, what: str) -> np.ndarray:
    """Return `wave` as a 1-D float32 array; raise ValueError naming `what` if it is unusable."""
    arr = np.asarray(wave)
    if arr.ndim != 1:
        raise ValueError(f"{what}: expected a 1-D mono waveform, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{what}: waveform is empty")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{what}: expected float samples in [-1, 1], got dtype {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    step = 1 << 20  # checked in blocks: no temporary as large as a long clip
    if not all(np.isfinite(arr[i:i + step]).all() for i in range(0, arr.size, step)):
        raise ValueError(f"{what}: waveform contains NaN or Inf")
    return arr


def model_path(filename: str) -> Path:
    """Path of a DNSMOS ONNX file inside the installed speechmos package (not imported)."""
    spec = importlib.util.find_spec("speechmos")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("speechmos is not installed; it ships the DNSMOS ONNX models")
    path = Path(spec.submodule_search_locations[0]) / "dnsmos_models" / filename
    if not path.is_file():
        raise FileNotFoundError(f"DNSMOS model {filename!r} not found at {path}")
    return path


@functools.lru_cache(maxsize=None)
def _session(filename: str, intra_op_threads: int):
    """One CPU onnxruntime session per (model, thread count), created on first use."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_op_threads
    opts.enable_cpu_mem_arena = False  # the arena grows with each new batch shape and never shrinks
    return ort.InferenceSession(
        str(model_path(filename)), sess_options=opts, providers=["CPUExecutionProvider"]
    )


def onnx_parameter_count(filename: str, exclude: Sequence[str] = ()) -> int:
    """Number of initializer elements in an ONNX model, skipping initializers whose name
    contains any string of `exclude`."""
    import onnx

    graph = onnx.load(str(model_path(filename))).graph
    return sum(
        int(np.prod(init.dims))
        for init in graph.initializer
        if not any(part in init.name for part in exclude)
    )


def windows(wave: np.ndarray) -> list[np.ndarray]:
    """The 9.01 s windows DNSMOS scores for one 16 kHz clip (views, float32)."""
    audio = wave
    while len(audio) < WINDOW_SAMPLES:
        audio = np.concatenate([audio, audio])
    n_hops = int(np.floor(len(audio) / SAMPLE_RATE) - WINDOW_SECONDS) + 1
    out = []
    for idx in range(n_hops):
        seg = audio[int(idx * HOP_SAMPLES) : int((idx + WINDOW_SECONDS) * HOP_SAMPLES)]
        if len(seg) == WINDOW_SAMPLES:
            out.append(seg)
    return out


def p808_features(batch: np.ndarray) -> np.ndarray:
    """(n, 144160) windows -> (n, 900, 120) P.808 log-mel input."""
    import librosa

    mel = librosa.feature.melspectrogram(
        y=batch[:, :-_MEL_HOP], sr=SAMPLE_RATE, n_fft=_N_FFT, hop_length=_MEL_HOP, n_mels=_N_MELS
    )
    ref = mel.max(axis=(1, 2), keepdims=True)
    db = 10.0 * np.log10(np.maximum(_AMIN, mel))
    db -= 10.0 * np.log10(np.maximum(_AMIN, ref))
    db = np.maximum(db, db.max(axis=(1, 2), keepdims=True) - _TOP_DB)
    return ((db + 40.0) / 40.0).transpose(0, 2, 1).astype(np.float32, copy=False)


def _score_windows(
    waves: Sequence[np.ndarray], score: Callable[[np.ndarray], np.ndarray], batch_size: int
) -> list[np.ndarray]:
    """Score every window of every clip, `batch_size` windows per forward; per-clip score rows."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not waves:
        return []
    per_clip = [windows(as_waveform(w, f"waveform {i}")) for i, w in enumerate(waves)]
    flat: Iterator[np.ndarray] = (seg for segs in per_clip for seg in segs)
    total = sum(len(segs) for segs in per_clip)
    rows = []
    for start in range(0, total, batch_size):
        chunk = [next(flat) for _ in range(min(batch_size, total - start))]
        rows.append(score(np.stack(chunk)))
    scores = np.concatenate(rows).astype(np.float64)
    bounds = np.cumsum([0] + [len(segs) for segs in per_clip])
    return [scores[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


class DnsmosP808:
    """DNSMOS P.808 (ITU-T P.808 overall quality) on 16 kHz mono audio."""

    name = "dnsmos-p808"

    def __init__(self, intra_op_threads: int = 0) -> None:
        """`intra_op_threads`: onnxruntime intra-op threads (0 = onnxruntime's default)."""
        self.intra_op_threads = intra_op_threads

    @functools.cached_property
    def n_params(self) -> int:
        """Initializer elements of the ONNX network (the mel front end is librosa, not counted)."""
        return onnx_parameter_count(P808_MODEL)

    def _score(self, batch: np.ndarray) -> np.ndarray:
        sess = _session(P808_MODEL, self.intra_op_threads)
        return sess.run(None, {"input_1": p808_features(batch)})[0][:, 0]

    def predict_batch(self, waves: Sequence[np.ndarray], batch_size: int = 8) -> np.ndarray:
        """MOS per clip; `batch_size` windows per ONNX forward."""
        return np.array([s.mean() for s in _score_windows(waves, self._score, batch_size)])

    def predict(self, wave: np.ndarray) -> float:
        """MOS of one clip."""
        return float(self.predict_batch([wave])[0])


class DnsmosP835:
    """DNSMOS P.835 (SIG, BAK, OVRL) on 16 kHz mono audio, optionally with P.808 as well."""

    name = "dnsmos-p835"

    def __init__(self, intra_op_threads: int = 0, with_p808: bool = False) -> None:
        """`with_p808`: also run the P.808 model on the same windows (key "p808")."""
        self.intra_op_threads = intra_op_threads
        self.with_p808 = with_p808
        self._p808 = DnsmosP808(intra_op_threads)

    @functools.cached_property
    def n_params(self) -> int:
        """Learned initializer elements of the SIG/BAK/OVRL network. The fixed STFT basis
        (2 x 161 x 320 DFT kernels stored as initializers) is a feature transform, not counted."""
        return onnx_parameter_count(P835_MODEL, exclude=("stft",))

    def _score(self, batch: np.ndarray) -> np.ndarray:
        sess = _session(P835_MODEL, self.intra_op_threads)
        raw = sess.run(None, {"input_1": batch})[0].astype(np.float64)
        cols = [np.polyval(_P835_POLY[k], raw[:, i]) for i, k in enumerate(_P835_KEYS)]
        if self.with_p808:
            cols.append(self._p808._score(batch).astype(np.float64))
        return np.stack(cols, axis=1)

    def predict_batch(
        self, waves: Sequence[np.ndarray], batch_size: int = 8
    ) -> dict[str, np.ndarray]:
        """{"sig", "bak", "ovrl"[, "p808"]} -> MOS per clip; `batch_size` windows per forward."""
        keys = _P835_KEYS + (("p808",) if self.with_p808 else ())
        rows = [s.mean(axis=0) for s in _score_windows(waves, self._score, batch_size)]
        means = np.stack(rows) if rows else np.empty((0, len(keys)))
        return {k: means[:, i] for i, k in enumerate(keys)}

    def predict(self, wave: np.ndarray) -> dict[str, float]:
        """{"sig", "bak", "ovrl"[, "p808"]} MOS of one clip."""
        return {k: float(v[0]) for k, v in self.predict_batch([wave]).items()}
