"""Speech codec round trips through an ffmpeg binary or Debian's codec tools, in memory and time-aligned.

The binary is the system ``ffmpeg`` on PATH if there is one, else the one bundled with
``imageio-ffmpeg``. Audio goes through two piped ffmpeg calls (encode to the codec's raw/container
stream on stdout, decode back to float32 at the input rate); no temporary files are written.
The codecs of :mod:`sqa.synth.codec_tools` (codec2, Speex, GSM 06.10) go through their own
encoder and decoder programs the same way, as 16-bit PCM resampled to and from the codec's rate.

Alignment: every codec has a constant delay at a given sample rate (encoder priming, lookahead,
resampler) that ffmpeg does not always remove (raw AAC/MP3 streams keep it). It is measured once
per codec and rate by cross-correlating the round trip of a fixed synthetic-speech probe with the
probe (see :func:`codec_delay`; on energy envelopes for a parametric codec, which does not keep the
waveform), cached, and removed; the result is then cropped or zero-padded
at the end to exactly the input length.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import signal

from sqa import extras
from sqa.data.audio import resample_poly
from sqa.synth.codec_tools import TOOL_CODECS, ToolCodec, tool_commands, tools_present

__all__ = [
    "CODECS",
    "CodecError",
    "CodecSpec",
    "CodecUnavailable",
    "available_codecs",
    "codec_delay",
    "ffmpeg_exe",
    "resolve_bitrate",
    "roundtrip",
]

_MAX_DELAY_S = 0.2


class CodecUnavailable(ValueError):
    """The codec is unknown, or this ffmpeg binary cannot encode it, or its programs are absent."""


class CodecError(RuntimeError):
    """ffmpeg or a codec program failed while encoding or decoding."""


@dataclass(frozen=True)
class CodecSpec:
    """How to run one codec through ffmpeg.

    ``kbps_range`` is a continuous allowed bit-rate range, ``kbps_choices`` a discrete set (one
    value = fixed-rate codec). ``demux`` are the input options needed to read the raw stream back.
    ``waveform`` is False for a parametric codec, which keeps the spectrum but not the waveform.
    """

    name: str
    encoder: str
    muxer: str
    rate: int
    default_kbps: float
    kbps_range: tuple[float, float] | None = None
    kbps_choices: tuple[float, ...] | None = None
    enc_args: tuple[str, ...] = ()
    demux: tuple[str, ...] = ()
    waveform: bool = True


_FFMPEG_CODECS: dict[str, CodecSpec] = {
    spec.name: spec
    for spec in (
        CodecSpec("opus", "libopus", "ogg", 16000, 24.0, kbps_range=(6.0, 128.0),
                  enc_args=("-application", "voip")),
        CodecSpec("mp3", "libmp3lame", "mp3", 16000, 32.0,
                  kbps_choices=(8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)),
        CodecSpec("aac", "aac", "adts", 16000, 32.0, kbps_range=(12.0, 64.0)),
        CodecSpec("amr_nb", "libopencore_amrnb", "amr", 8000, 12.2,
                  kbps_choices=(4.75, 5.15, 5.9, 6.7, 7.4, 7.95, 10.2, 12.2)),
        CodecSpec("g722", "g722", "g722", 16000, 64.0, kbps_choices=(64,), demux=("-f", "g722")),
        CodecSpec("g711_mulaw", "pcm_mulaw", "mulaw", 8000, 64.0, kbps_choices=(64,),
                  demux=("-f", "mulaw", "-ar", "8000", "-ac", "1")),
        CodecSpec("g711_alaw", "pcm_alaw", "alaw", 8000, 64.0, kbps_choices=(64,),
                  demux=("-f", "alaw", "-ar", "8000", "-ac", "1")),
        CodecSpec("g726", "g726", "g726", 8000, 32.0, kbps_choices=(16, 24, 32, 40),
                  demux=("-f", "g726", "-sample_rate", "8000")),
        CodecSpec("g723_1", "g723_1", "g723_1", 8000, 6.3, kbps_choices=(6.3,), demux=("-f", "g723_1")),
        CodecSpec("ra_144", "real_144", "rm", 8000, 8.0, kbps_choices=(8.0,)),
    )
}
CODECS: dict[str, CodecSpec | ToolCodec] = {**_FFMPEG_CODECS, **TOOL_CODECS}


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary: system ``ffmpeg`` if on PATH, else imageio-ffmpeg's."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    return extras.require("imageio_ffmpeg", "codec degradations without an ffmpeg on PATH").get_ffmpeg_exe()


def _list_section(flag: str) -> set[str]:
    """Names in ``ffmpeg -encoders`` / ``-muxers`` output (second column after the flag field)."""
    out = subprocess.run([ffmpeg_exe(), "-hide_banner", flag], capture_output=True, text=True,
                         check=True).stdout
    names = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1] != "=" and not parts[0].startswith("-"):
            names.update(parts[1].split(","))
    return names


@functools.lru_cache(maxsize=1)
def available_codecs() -> tuple[str, ...]:
    """Names from :data:`CODECS` that work here (probed once, cached): the ffmpeg codecs whose
    encoder and muxer this ffmpeg has, then the tool codecs whose two programs are on PATH.

    If no ffmpeg can be run at all, this warns and no ffmpeg codec is available.
    """
    tools = tuple(n for n, s in TOOL_CODECS.items() if tools_present(s))
    try:
        encoders, muxers = _list_section("-encoders"), _list_section("-muxers")
    except (OSError, RuntimeError, subprocess.CalledProcessError) as e:
        warnings.warn(f"no usable ffmpeg binary, so no ffmpeg codecs are available: {e}", stacklevel=2)
        return tools
    return tuple(n for n, s in _FFMPEG_CODECS.items() if s.encoder in encoders and s.muxer in muxers) + tools


def _spec(codec: str) -> CodecSpec | ToolCodec:
    """The spec of an available codec, else :class:`CodecUnavailable` saying why."""
    if not isinstance(codec, str) or codec not in CODECS:
        raise CodecUnavailable(f"codec: parameter codec={codec!r} is not one of the known codecs "
                               f"{sorted(CODECS)}")
    spec = CODECS[codec]
    if codec not in available_codecs() and isinstance(spec, ToolCodec):
        raise CodecUnavailable(
            f"codec: parameter codec={codec!r} needs the programs {spec.encoder!r} and "
            f"{spec.decoder!r} on PATH (Debian package {spec.package!r}: apt-get install "
            f"{spec.package}); available: {available_codecs()}"
        )
    if codec not in available_codecs():
        raise CodecUnavailable(
            f"codec: parameter codec={codec!r} needs ffmpeg encoder {CODECS[codec].encoder!r} "
            f"and muxer {CODECS[codec].muxer!r}, which {ffmpeg_exe()} lacks; "
            f"available: {available_codecs()}"
        )
    return CODECS[codec]


def resolve_bitrate(codec: str, kbps: float | None) -> float:
    """Validated bit rate in kb/s for ``codec`` (``None`` -> the codec's default).

    Raises :class:`CodecUnavailable` for an unavailable codec and ``ValueError`` (naming the codec,
    the value and the allowed range/set) for a bad bit rate.
    """
    spec = _spec(codec)
    if kbps is None:
        return float(spec.default_kbps)
    if isinstance(kbps, bool) or not isinstance(kbps, (int, float)) or not np.isfinite(kbps):
        raise ValueError(f"codec: parameter bitrate_kbps={kbps!r} for codec {codec!r} must be a "
                         f"finite number")
    if spec.kbps_range is not None:
        lo, hi = spec.kbps_range
        if not lo <= kbps <= hi:
            raise ValueError(f"codec: parameter bitrate_kbps={kbps} is outside the allowed "
                             f"range [{lo}, {hi}] for codec {codec!r}")
    elif not any(np.isclose(kbps, c) for c in spec.kbps_choices or ()):
        raise ValueError(f"codec: parameter bitrate_kbps={kbps} is not one of the allowed "
                         f"values {list(spec.kbps_choices or ())} for codec {codec!r}")
    return float(kbps)


def _run(cmd: list[str], data: bytes, what: str) -> bytes:
    """Run ``cmd`` with ``data`` on stdin; return stdout or raise :class:`CodecError`."""
    try:
        proc = subprocess.run(cmd, input=data, capture_output=True, check=False)
    except OSError as e:
        raise CodecError(f"{Path(cmd[0]).name} could not be run while {what}: {e}") from e
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()[-800:]
        raise CodecError(f"{Path(cmd[0]).name} failed while {what} (exit {proc.returncode}): {err}")
    return proc.stdout


def _tool_roundtrip(x: np.ndarray, sr: int, spec: ToolCodec, kbps: float) -> np.ndarray:
    """Encode + decode with the codec's programs, as 16-bit PCM at its rate; float32 at ``sr``."""
    enc_cmd, dec_cmd = tool_commands(spec, kbps)
    padded = np.concatenate([resample_poly(x, sr, spec.rate), np.zeros(round(spec.pad_s * spec.rate))])
    pcm = np.round(np.clip(padded, -1.0, 32767 / 32768) * 32768).astype("<i2")
    enc = _run(enc_cmd, pcm.tobytes(), f"encoding {spec.name} at {kbps} kb/s")
    dec = _run(dec_cmd, enc, f"decoding {spec.name} at {kbps} kb/s")
    y = np.frombuffer(dec[: len(dec) // 2 * 2], dtype="<i2").astype(np.float64) / 32768.0
    if y.size == 0:
        raise CodecError(f"{Path(dec_cmd[0]).name} returned no audio while decoding {spec.name} at {kbps} kb/s")
    return resample_poly(y, spec.rate, sr).astype(np.float32)


def _raw_roundtrip(x: np.ndarray, sr: int, spec: CodecSpec | ToolCodec, kbps: float) -> np.ndarray:
    """Encode + decode without alignment; returns float32 at ``sr`` (any length)."""
    if isinstance(spec, ToolCodec):
        return _tool_roundtrip(x, sr, spec, kbps)
    exe = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error"]
    bitrate = [] if spec.kbps_choices and len(spec.kbps_choices) == 1 else ["-b:a", f"{kbps}k"]
    pcm = np.clip(np.asarray(x, dtype="<f4"), -1.0, 1.0).tobytes()
    enc = _run(exe + ["-f", "f32le", "-ar", str(sr), "-ac", "1", "-i", "pipe:0",
                      "-c:a", spec.encoder, "-ar", str(spec.rate), *bitrate, *spec.enc_args,
                      "-f", spec.muxer, "pipe:1"], pcm, f"encoding {spec.name} at {kbps} kb/s")
    demux = list(spec.demux)
    if spec.name == "g726":
        demux += ["-code_size", str(round(kbps / 8))]
    dec = _run(exe + [*demux, "-i", "pipe:0", "-f", "f32le", "-ac", "1", "-ar", str(sr), "pipe:1"],
               enc, f"decoding {spec.name} at {kbps} kb/s")
    return np.frombuffer(dec, dtype="<f4").astype(np.float32)


_VOWELS = ((730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480),
           (640, 1190, 2390), (490, 1350, 1690))


def _probe(sr: int, seconds: float = 2.0) -> np.ndarray:
    """Fixed synthetic speech for delay finding: 160 ms syllables, each a vowel (jittered glottal
    pulses through three formant resonators) or a fricative (band-passed noise), with onsets.

    Speech codecs (CELP: AMR) only keep the waveform of speech-like input, so a broadband probe
    would misplace their delay; the pitch jitter keeps the cross-correlation peak unambiguous.
    """
    rng = np.random.default_rng(12345)
    n, seg = int(seconds * sr), int(0.16 * sr)
    out = np.zeros(n)
    fric = signal.butter(4, [2500, min(6000, 0.45 * sr)], "bandpass", fs=sr, output="sos")
    for pos in range(0, n, seg):
        m = min(seg, n - pos)
        if rng.random() < 0.25:
            s = signal.sosfilt(fric, 0.3 * rng.standard_normal(m))
        else:
            f0 = rng.uniform(90, 220) * (1 + 0.1 * rng.choice([-1, 1]) * np.linspace(-1, 1, m))
            f0 *= 1 + 0.02 * rng.standard_normal(m)
            cycles = np.floor(np.cumsum(f0 / sr))
            s = np.diff(cycles, prepend=0.0)
            for freq, bw in zip(_VOWELS[rng.integers(len(_VOWELS))], (80, 100, 120)):
                if freq < 0.45 * sr:
                    r = np.exp(-np.pi * bw / sr)
                    a = [1, -2 * r * np.cos(2 * np.pi * freq / sr), r * r]
                    s = signal.lfilter([1 - r], a, s)
        ramp = np.minimum(1.0, np.minimum(np.arange(m), m - np.arange(m)) / (0.02 * sr))
        out[pos: pos + m] = s * ramp * rng.uniform(0.3, 1.0)
    return (0.5 * out / np.max(np.abs(out))).astype(np.float32)


def _lag(y: np.ndarray, x: np.ndarray, max_lag: int) -> int:
    """Lag (samples) by which ``y`` trails ``x``: argmax of the cross-correlation in ±max_lag."""
    n = len(x) + len(y)
    nfft = 1 << (n - 1).bit_length()
    c = np.fft.irfft(np.fft.rfft(y, nfft) * np.conj(np.fft.rfft(x, nfft)), nfft)
    lags = np.r_[np.arange(0, max_lag + 1), np.arange(-max_lag, 0)]
    return int(lags[np.argmax(c[lags])])


def _band_envelopes(x: np.ndarray, sr: int, hop: int) -> np.ndarray:
    """Log power in 8 log-spaced bands (150 Hz-3.8 kHz, 16 ms frames every ``hop`` samples), each
    band's mean removed: what a parametric codec keeps of the signal over time."""
    nperseg = 1 << round(np.log2(0.016 * sr))
    freqs, _, z = signal.stft(np.asarray(x, np.float64), sr, nperseg=nperseg, noverlap=nperseg - hop,
                              boundary=None, padded=False)
    edges = np.geomspace(150.0, min(3800.0, 0.45 * sr), 9)
    power = np.abs(z) ** 2
    bands = np.log(np.stack([power[(freqs >= lo) & (freqs < hi)].sum(axis=0)
                             for lo, hi in zip(edges[:-1], edges[1:])]) + 1e-10)
    return bands - bands.mean(axis=1, keepdims=True)


def _envelope_lag(y: np.ndarray, x: np.ndarray, sr: int, max_lag: int) -> int:
    """Lag (samples, to 0.5 ms) by which ``y`` trails ``x``: argmax of the band envelopes'
    cross-correlation summed over bands, in ±max_lag."""
    hop = max(1, sr // 2000)
    ey, ex = _band_envelopes(y, sr, hop), _band_envelopes(x, sr, hop)
    n = ex.shape[1] + ey.shape[1]
    nfft = 1 << (n - 1).bit_length()
    c = np.fft.irfft(np.sum(np.fft.rfft(ey, nfft) * np.conj(np.fft.rfft(ex, nfft)), axis=0), nfft)
    m = max_lag // hop
    lags = np.r_[np.arange(0, m + 1), np.arange(-m, 0)]
    return int(lags[np.argmax(c[lags])]) * hop


@functools.lru_cache(maxsize=64)
def codec_delay(codec: str, sr: int = 16000, kbps: float | None = None) -> int:
    """Constant delay in samples at ``sr`` that a round trip adds, measured once on a probe.

    The delay of waveform codecs comes from fixed framing, lookahead and priming, not from the bit
    rate, so it is measured at the codec's highest bit rate (``kbps=None``), where the waveform is
    kept best. A parametric codec (``waveform=False``: codec2, whose modes differ in framing) is
    measured at ``kbps`` on band energy envelopes instead, to within about 1 ms.
    """
    spec = _spec(codec)
    top = max(spec.kbps_choices) if spec.kbps_choices else spec.kbps_range[1]
    probe = _probe(sr)
    y = _raw_roundtrip(probe, sr, spec, top if kbps is None else resolve_bitrate(codec, kbps))
    if not spec.waveform:
        return _envelope_lag(y, probe, sr, int(_MAX_DELAY_S * sr))
    return _lag(y, probe, int(_MAX_DELAY_S * sr))


def roundtrip(x: np.ndarray, sr: int, codec: str, bitrate_kbps: float | None = None) -> np.ndarray:
    """Encode ``x`` (mono float, clipped to [-1, 1]) with ``codec`` and decode it back.

    Returns float32 at ``sr``, delay-compensated and exactly ``len(x)`` samples long. Raises
    :class:`CodecUnavailable`, ``ValueError`` (bad bit rate / input) or :class:`CodecError`.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 1 or len(x) == 0:
        raise ValueError(f"codec {codec!r}: input must be non-empty mono 1-D audio, got shape "
                         f"{x.shape}")
    if not isinstance(sr, (int, np.integer)) or sr <= 0:
        raise ValueError(f"codec {codec!r}: sample rate must be a positive integer, got {sr!r}")
    kbps = resolve_bitrate(codec, bitrate_kbps)
    delay = codec_delay(codec, int(sr), None if _spec(codec).waveform else kbps)
    y = _raw_roundtrip(x, int(sr), _spec(codec), kbps)
    y = y[delay:] if delay >= 0 else np.concatenate([np.zeros(-delay, np.float32), y])
    out = np.zeros(len(x), dtype=np.float32)
    out[: min(len(x), len(y))] = y[: len(x)]
    return out
