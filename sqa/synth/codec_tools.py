"""Speech codecs run through Debian's command-line tools: codec2, Speex and GSM 06.10.

These are the low-bit-rate and parametric codecs that the bundled ffmpeg lacks. Each is a pair of
programs (encoder, decoder) that read 16-bit little-endian mono PCM at the codec's rate on stdin
and write to stdout, so a round trip is two piped calls and no temporary files.
:mod:`sqa.synth.codecs` runs them (resampling to and from the codec's rate) next to the ffmpeg
codecs, under the same names, bit-rate checks, delay compensation and errors.

| codec | Debian package | programs | rate | bit rates (kb/s) | kind |
|---|---|---|---|---|---|
| ``codec2`` | ``codec2`` (LGPL-2.1) | ``c2enc``/``c2dec`` | 8 kHz | 0.45-3.2 | parametric (sinusoidal) |
| ``speex_nb`` | ``speex`` (BSD-3-Clause) | ``speexenc``/``speexdec`` | 8 kHz | 2.15-24.6 | CELP |
| ``speex_wb`` | ``speex`` (BSD-3-Clause) | ``speexenc``/``speexdec`` | 16 kHz | 3.95-42.2 | CELP |
| ``gsm_fr`` | ``libgsm-tools`` (TU-Berlin-2.0) | ``toast``/``untoast`` | 8 kHz | 13 | RPE-LTP |

A codec is available where both its programs are on PATH; absent ones are skipped (and counted)
by the chain sampler like an ffmpeg codec the binary lacks. Codec2 is parametric: it keeps the
spectral envelope and pitch but not the waveform, so its delay is found on energy envelopes
(``waveform=False``), not on the waveform.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass

__all__ = ["TOOL_CODECS", "ToolCodec", "tool_commands", "tools_present"]

# speexdec removes the encoder's lookahead only when the Ogg stream has more than one audio page
# (a page that is both first and last keeps it), so the delay would depend on the clip's length and
# bit rate. A page holds at most 255 packets (5.1 s of 20-ms frames): 5.5 s of trailing silence
# always makes a second page, and the delay a constant.
_SPEEX_PAD_S = 5.5
_CODEC2_MODES = {0.45: "450", 0.7: "700C", 1.2: "1200", 1.3: "1300", 1.4: "1400", 1.6: "1600",
                 2.4: "2400", 3.2: "3200"}


@dataclass(frozen=True)
class ToolCodec:
    """One codec run through a Debian encoder/decoder pair (see the module docstring).

    The fields shared with :class:`sqa.synth.codecs.CodecSpec` (``name``, ``rate``,
    ``default_kbps``, ``kbps_range``, ``kbps_choices``, ``waveform``) mean the same there.
    ``pad_s`` seconds of silence are appended before encoding (the round trip is cropped after).
    """

    name: str
    package: str
    licence: str
    encoder: str
    decoder: str
    rate: int
    default_kbps: float
    kbps_choices: tuple[float, ...]
    waveform: bool = True
    pad_s: float = 0.0
    kbps_range: tuple[float, float] | None = None


TOOL_CODECS: dict[str, ToolCodec] = {
    spec.name: spec
    for spec in (
        ToolCodec("codec2", "codec2", "LGPL-2.1", "c2enc", "c2dec", 8000, 1.3,
                  tuple(_CODEC2_MODES), waveform=False),
        ToolCodec("speex_nb", "speex", "BSD-3-Clause", "speexenc", "speexdec", 8000, 8.0,
                  (2.15, 3.95, 5.95, 8.0, 11.0, 15.0, 18.2, 24.6), pad_s=_SPEEX_PAD_S),
        ToolCodec("speex_wb", "speex", "BSD-3-Clause", "speexenc", "speexdec", 16000, 16.8,
                  (3.95, 5.75, 7.75, 9.8, 12.8, 16.8, 20.6, 23.8, 27.8, 34.2, 42.2), pad_s=_SPEEX_PAD_S),
        ToolCodec("gsm_fr", "libgsm-tools", "TU-Berlin-2.0", "toast", "untoast", 8000, 13.0, (13.0,)),
    )
}


def tools_present(spec: ToolCodec) -> bool:
    """Whether both programs of ``spec`` are on PATH."""
    return shutil.which(spec.encoder) is not None and shutil.which(spec.decoder) is not None


def tool_commands(spec: ToolCodec, kbps: float) -> tuple[list[str], list[str]]:
    """Encoder and decoder argument lists for ``spec`` at ``kbps`` (one of its ``kbps_choices``).

    Both read 16-bit little-endian mono PCM (encoder) or the coded stream (decoder) on stdin and
    write to stdout. Raises ``ValueError`` for a bit rate the codec does not have.
    """
    matches = [c for c in spec.kbps_choices if abs(c - kbps) < 1e-6]
    if not matches:
        raise ValueError(f"codec {spec.name!r}: bit rate {kbps} kb/s is not one of "
                         f"{list(spec.kbps_choices)}")
    enc, dec = shutil.which(spec.encoder) or spec.encoder, shutil.which(spec.decoder) or spec.decoder
    if spec.name == "codec2":
        mode = _CODEC2_MODES[matches[0]]
        return [enc, mode, "-", "-"], [dec, mode, "-", "-"]
    if spec.name.startswith("speex"):
        band = "--narrowband" if spec.rate == 8000 else "--wideband"
        return ([enc, band, "--rate", str(spec.rate), "--16bit", "--le",
                 "--bitrate", str(round(matches[0] * 1000)), "-", "-"], [dec, "-", "-"])
    return [enc, "-l"], [dec, "-l"]
