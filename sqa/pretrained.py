"""The shipped students and the one-line API: ``sqa.load()`` returns a model that scores clips.

    import sqa

    model = sqa.load()                                # the default shipped student, sqa-250k
    model.score("clip.flac")                          # MOS 1-5 of any file sqa.data.audio.load reads
    model.score(samples, sample_rate=44100)           # an array of float samples
    model.score_many(["a.wav", "b.wav"])              # several clips, batched: an array of MOS
    sqa.load("sqa-50k"); sqa.load("outputs/demo/04_distill/size-1M_..."); sqa.load("model.onnx")

**Shipped students** (:data:`NAMES`, default :data:`DEFAULT`) live in the package folder
``sqa/weights/`` (:data:`WEIGHTS_DIR`, package data of a ``pip install``) as
``<name>.safetensors``, a checkpoint written by :func:`sqa.models.checkpoint.save` (what a run
folder's ``model.safetensors`` is), and ``<name>.onnx`` with its sidecar ``<name>.onnx.json``,
written by ``sqa export`` from the same checkpoint. ``sqa.load(name)`` scores with the
checkpoint (PyTorch); ``sqa.load(sqa.pretrained.path(name, "onnx"))`` with the ONNX file
(onnxruntime). A missing file is :class:`MissingWeights`, naming the file and how to build it.

**Anything else** ``sqa score --model`` takes is loaded the same way
(:func:`sqa.score.resolve_model`): a run folder, a ``.safetensors`` or ``.onnx`` file, a
baseline name (the ``baselines`` extra), a size like ``1M`` (the latest ``04_distill`` run of
``profile``).

**Input.** A path (``str`` or ``os.PathLike``) is read with :func:`sqa.data.audio.load` (any
rate and channel count; downmixed and resampled to 16 kHz). An array is float samples, 1-D or
``(samples, channels)`` as ``soundfile.read`` returns them, and needs ``sample_rate``: an array
does not carry its rate, and a wrong guess would silently change the score, so there is no
default, not even 16000 (pass ``sample_rate=16000`` for 16-kHz samples). Arrays go through
:func:`sqa.data.audio.from_array` (channel mean, the same resampler as files). ``sample_rate``
with a path is an error: a file's rate comes from its header. A clip shorter than the model
needs (:data:`sqa.score.MIN_SECONDS`, 0.5 s) is an error; silent clips are scored.

A demo or smoke run's model predicts PESQ-WB of synthetic speech, not listeners' opinion:
:attr:`Scorer.note` says so (empty for other models).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from sqa import score
from sqa.data import audio

NAMES = ("sqa-50k", "sqa-250k", "sqa-1M")
DEFAULT = "sqa-250k"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: runtime -> suffix of its file in :data:`WEIGHTS_DIR`
SUFFIXES = {"torch": ".safetensors", "onnx": ".onnx"}
BUILD_HINT = ("the shipped students are built in a checkout with `sqa reproduce --profile release`; "
              "or load a run folder, a .safetensors checkpoint or an exported .onnx file instead")


class MissingWeights(FileNotFoundError):
    """A shipped student's file is not in this installation; the message says how to build it."""


def path(name: str, runtime: str = "torch") -> Path:
    """Where the shipped student ``name`` is for ``runtime`` (``torch``: ``.safetensors``,
    ``onnx``: ``.onnx``), whether or not the file is there."""
    if name not in NAMES:
        raise ValueError(f"no shipped student {name!r}; shipped: {', '.join(NAMES)}")
    if runtime not in SUFFIXES:
        raise ValueError(f"runtime must be one of {', '.join(SUFFIXES)}, got {runtime!r}")
    return WEIGHTS_DIR / f"{name}{SUFFIXES[runtime]}"


def weights_file(name: str, runtime: str = "torch") -> Path:
    """:func:`path`, or :class:`MissingWeights` when the file is not there."""
    file = path(name, runtime)
    if not file.is_file():
        raise MissingWeights(f"{file} is missing: the shipped student {name!r} is not in this installation; "
                             f"{BUILD_HINT}")
    return file


def load(model: str | os.PathLike | None = None, *, device: str = "cpu", profile: str = "demo") -> "Scorer":
    """A :class:`Scorer` for ``model``: a shipped name (default :data:`DEFAULT`) or anything
    ``sqa score --model`` takes. ``device``: ``cpu`` or ``cuda`` (torch models); ``profile``:
    whose runs a size like ``1M`` refers to."""
    spec = DEFAULT if model is None else os.fspath(model)
    if spec in NAMES:
        weights_file(spec)  # the clear error for a missing shipped file, without the CLI's wording
    score.check_options(device, 1, profile)
    return Scorer(score.resolve_model(spec, profile, device))


class Scorer:
    """A loaded MOS predictor (see the module docstring for what it accepts)."""

    def __init__(self, model: score.Model) -> None:
        self.model = model
        self.name = model.name
        self.n_params = model.n_params
        self.source = model.source
        self.note = score.training_note(model.source)

    def __repr__(self) -> str:
        return f"Scorer({self.name}, {self.n_params:,} parameters)"

    def score(self, clip: str | os.PathLike | np.ndarray, sample_rate: int | None = None) -> float:
        """MOS (1-5) of one clip: a path, or an array of float samples with its ``sample_rate``."""
        return float(self.score_many([clip], sample_rate, batch_size=1)[0])

    def score_many(self, clips: Sequence[str | os.PathLike | np.ndarray], sample_rate: int | None = None,
                   batch_size: int = 8) -> np.ndarray:
        """MOS of each clip, shape ``(len(clips),)``; clips of equal length share forward passes of
        ``batch_size``. All clips are held in memory at once: for large folders use ``sqa score``."""
        if isinstance(clips, (str, os.PathLike, np.ndarray)):
            raise TypeError("score_many takes a list of clips; use score() for one clip")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        waves = [self._wave(clip, sample_rate, i) for i, clip in enumerate(clips)]
        if not waves:
            return np.zeros(0)
        return np.asarray(self.model.predict(waves, batch_size), dtype=np.float64)

    def _wave(self, clip: str | os.PathLike | np.ndarray, sample_rate: int | None, index: int) -> np.ndarray:
        """One clip as 16 kHz mono float32, checked long enough for the model."""
        if isinstance(clip, (str, os.PathLike)):
            if sample_rate is not None:
                raise ValueError(f"{clip}: sample_rate applies to arrays only; a file's rate comes from its header")
            name = str(clip)
            wave = audio.load(clip)
        else:
            name = f"clip {index}"
            if sample_rate is None:
                raise ValueError(f"{name}: an array of samples needs sample_rate (it carries no rate); pass "
                                 "sample_rate=16000 if it is 16-kHz audio")
            wave = audio.from_array(clip, sample_rate, name=name)
        reason = score.length_error(wave, self.model.min_seconds)
        if reason:
            raise audio.AudioError(f"{name}: {reason}")
        return wave
