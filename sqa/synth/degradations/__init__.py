"""Composable, seeded degradations of mono float32 speech (designed for 16 kHz).

Each degradation is a frozen dataclass with a ``name``, a ``family``, validated parameters (a bad
one raises ``ValueError`` naming the degradation, the parameter and the allowed range) and
``apply(x, sr, rng, *, pool=None) -> y`` with ``len(y) == len(x)``. A :class:`Chain` (``chain``) applies
several in order and serializes them with their exact parameters (``to_json`` / ``from_json``); the
same chain with the same seed gives bit-identical output. :class:`ChainSampler` (or
:func:`sample_chain`) draws 1-3 degradations with random parameters from the families in
:data:`FAMILIES`.

Conventions (documented policies):

- **SNR** is the active-speech SNR: power of the 20 ms frames of the signal within 40 dB of its
  loudest frame (:func:`active_power`) over the mean power of the whole noise.
- **Level**: :class:`Gain` hard-clips to [-1, 1] like a fixed-point converter; :meth:`Chain.apply`
  rescales (never clips) its output to a peak of 1 if any step pushed it beyond [-1, 1].
- **Babble** mixes talkers from a ``pool`` (``{utt_id: audio}`` passed to ``apply``; the chosen ids
  are recorded in ``talkers``). Without recorded talkers it falls back to self-babble: ``n_talkers``
  circularly shifted copies of the clip itself, each reversed with probability 1/2.
- **Reverb** uses pyroomacoustics (ShoeBox, image-source method, absorption from
  ``pra.inverse_sabine``, no ray tracing) up to image order :data:`ISM_MAX_ORDER`; where Sabine
  needs a higher order, the late part is a Gaussian tail decaying at exactly ``rt60_s``,
  level-matched to the image-source response. Output is aligned to the direct path and has the
  input's RMS.
- **Families** are applied in the physical order of :data:`ORDER` (room, noise, enhancement,
  capture level, band limit, codec, transmission); the "enhance" family adds a noise and then the
  spectral-subtraction enhancer, so it contributes two steps.

Modules: ``base`` (validation, registry, active power, the base class), ``noise``, ``room``
(reverb), ``filters`` (band limits, resampling), ``transmission`` (codecs, packet loss), ``level``
(clipping, quantization, gain), ``enhance`` (spectral subtraction), ``chain``, ``sampling``.
"""

from sqa.synth.degradations.base import FAMILIES, ISM_MAX_ORDER, ORDER, REGISTRY, Degradation, active_power
from sqa.synth.degradations.chain import Chain
from sqa.synth.degradations.enhance import SpectralSubtraction
from sqa.synth.degradations.filters import Bandpass, Highpass, Lowpass, Resample
from sqa.synth.degradations.level import Clipping, Gain, Quantize
from sqa.synth.degradations.noise import (
    AdditiveNoise,
    Babble,
    BandNoise,
    BrownNoise,
    Clicks,
    Hum,
    PinkNoise,
    WhiteNoise,
)
from sqa.synth.degradations.room import Reverb
from sqa.synth.degradations.sampling import ChainSampler, sample_chain
from sqa.synth.degradations.transmission import Codec, PacketLoss

__all__ = [
    "FAMILIES",
    "ORDER",
    "ISM_MAX_ORDER",
    "Degradation",
    "Chain",
    "ChainSampler",
    "sample_chain",
    "active_power",
    "AdditiveNoise",
    "WhiteNoise",
    "PinkNoise",
    "BrownNoise",
    "Babble",
    "Hum",
    "Clicks",
    "BandNoise",
    "Reverb",
    "Lowpass",
    "Highpass",
    "Bandpass",
    "Resample",
    "Codec",
    "PacketLoss",
    "Clipping",
    "Quantize",
    "Gain",
    "SpectralSubtraction",
    "REGISTRY",
]
