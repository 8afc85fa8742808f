"""Baseline MOS predictors behind one interface, for every evaluation.

    b = get("distillmos")            # or any name in NAMES
    mos = b.predict([wave_a, wave_b])  # 16 kHz mono float32 clips of any length -> (n,) MOS

| name          | model                                             | long clips                 |
|---------------|---------------------------------------------------|----------------------------|
| `dnsmos-p808` | DNSMOS P.808 (ONNX from speechmos)                | 9.01 s windows, 1 s hop    |
| `dnsmos-p835` | DNSMOS P.835, OVRL as MOS (ONNX from speechmos)   | 9.01 s windows, 1 s hop    |
| `distillmos`  | released DistillMOS v7 weights, our model code    | 7.68 s windows, <= 1 s hop |
| `mfcc-sqa`    | released xls-r-sqa MFCC head (sqa-v2, "full")     | 4.8 s windows, <= 1 s hop  |

Scores equal the released packages (speechmos, distillmos, xls-r-sqa) except that `mfcc-sqa`
averages windows over clips longer than 4.8 s where xls-r-sqa center-crops them. DNSMOS keeps
the reference scorer's window quirks (see `sqa.models.dnsmos`). DNSMOS runs on onnxruntime
(CPU); the torch baselines run on `device`, batching clips of equal length together and scoring
the others one by one; every model cuts long clips into windows as it scores them, a few at a
time (never one giant forward, never every window at once), so memory does not grow with a clip's
length beyond the clip itself (`bench/score_memory.py` measures it). `min_samples` is the
shortest clip a model can analyse at all (its STFT window); `sqa score` asks for more.

The released weights, ONNX models and DNSMOS features come from optional packages (the
`baselines` extra, :data:`NEEDS`); `get` checks for them first and names the extra when one is
missing (:class:`sqa.extras.MissingExtra`).

`torch_network` and `torch_score` hand the torch baselines' networks and their windowed scoring
to modules that hold them as submodules (the ensemble teacher, `sqa.models.ensemble`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from sqa import extras
from sqa.data.batching import length_batches
from sqa.models.dnsmos import SAMPLE_RATE, DnsmosP808, DnsmosP835, as_waveform

if TYPE_CHECKING:
    import torch

NAMES = ("dnsmos-p808", "dnsmos-p835", "distillmos", "mfcc-sqa")
TORCH_NAMES = ("distillmos", "mfcc-sqa")  # the baselines that are torch modules
MFCC_HOP_FRAMES = SAMPLE_RATE // 200  # 1 s of MFCC frames (torchaudio MFCC hop: 200 samples)
MFCC_N_FFT = 400  # torchaudio MFCC's STFT window
DNSMOS_MIN_SAMPLES = 321  # P.808's mel FFT; shorter clips are repeated to 9.01 s by the scorer
#: the optional packages (the ``baselines`` extra) each baseline reads: weights, ONNX models, features
NEEDS = {"dnsmos-p808": ["speechmos", "librosa", "onnx"], "dnsmos-p835": ["speechmos", "onnx"],
         "distillmos": ["distillmos"], "mfcc-sqa": ["xls_r_sqa"]}


@runtime_checkable
class Baseline(Protocol):
    """A MOS predictor for 16 kHz mono clips."""

    name: str
    n_params: int
    min_samples: int

    def predict(self, waveforms: Sequence[np.ndarray], batch_size: int = 8) -> np.ndarray:
        """MOS (1-5) per clip, shape (len(waveforms),)."""
        ...


class DnsmosBaseline:
    """DNSMOS P.808, or P.835 with OVRL as the MOS; `batch_size` counts 9.01 s windows."""

    def __init__(self, model: DnsmosP808 | DnsmosP835) -> None:
        self.model = model
        self.name = model.name
        self.n_params = model.n_params
        self.min_samples = DNSMOS_MIN_SAMPLES

    def predict(self, waveforms: Sequence[np.ndarray], batch_size: int = 8) -> np.ndarray:
        """MOS per clip."""
        if isinstance(self.model, DnsmosP835):
            return self.model.predict_batch(waveforms, batch_size)["ovrl"]
        return self.model.predict_batch(waveforms, batch_size)


class TorchBaseline:
    """A torch model mapping a (B, T) 16 kHz batch to MOS (B,), windowing long clips itself."""

    def __init__(
        self, name: str, module: "torch.nn.Module", score: Callable[["torch.Tensor"], "torch.Tensor"], device: str,
        min_samples: int = 1,
    ) -> None:
        self.name = name
        self.module = module.to(device).eval()
        self.score = score
        self.device = device
        self.n_params = sum(p.numel() for p in module.parameters())
        self.min_samples = min_samples

    def predict(self, waveforms: Sequence[np.ndarray], batch_size: int = 8) -> np.ndarray:
        """MOS per clip; clips of equal length share a forward of up to `batch_size` clips."""
        import torch

        waves = [as_waveform(w, f"{self.name}: waveform {i}") for i, w in enumerate(waveforms)]
        out = np.full(len(waves), np.nan)
        with torch.inference_mode():
            for idx in length_batches([len(w) for w in waves], batch_size):
                x = torch.from_numpy(waves[idx[0]][None] if len(idx) == 1 else np.stack([waves[i] for i in idx]))
                x = x.to(self.device)  # one clip: a view, no copy of a long clip
                out[idx] = self.score(x).double().cpu().numpy().reshape(len(idx))
        return out


def torch_network(name: str, pretrained: bool = True) -> "torch.nn.Module":
    """The network of the torch baseline `name` (one of TORCH_NAMES): the released weights in eval
    mode if `pretrained`, else the released architecture untrained (for a checkpoint to fill)."""
    if name == "distillmos":
        from sqa.models.student import distillmos_v7

        return distillmos_v7(pretrained)
    if name == "mfcc-sqa":
        from sqa.models.heads import load_released_head

        return load_released_head("mfcc", weights=pretrained)
    raise ValueError(f"{name!r} is not a torch baseline; torch baselines: {', '.join(TORCH_NAMES)}")


def torch_score(name: str, network: "torch.nn.Module", wave: "torch.Tensor") -> "torch.Tensor":
    """MOS (B,) of a (B, T) 16 kHz batch on `network`'s device, windowed as baseline `name` scores:
    DistillMOS by its own forward, the MFCC head by `predict_long` over 4.8-s windows hopped <= 1 s."""
    if name == "mfcc-sqa":
        from sqa.models.heads import mfcc_features, predict_long

        return predict_long(network, mfcc_features(wave), hop=MFCC_HOP_FRAMES)
    if name == "distillmos":
        return network(wave)
    raise ValueError(f"{name!r} is not a torch baseline; torch baselines: {', '.join(TORCH_NAMES)}")


def min_samples(name: str) -> int:
    """The shortest clip baseline `name` can analyse at all: its STFT window."""
    if name == "distillmos":
        from sqa.models.student import DISTILLMOS_V7

        return DISTILLMOS_V7.stft_win
    if name == "mfcc-sqa":
        return MFCC_N_FFT
    if name in ("dnsmos-p808", "dnsmos-p835"):
        return DNSMOS_MIN_SAMPLES
    raise ValueError(f"unknown baseline {name!r}; known baselines: {', '.join(NAMES)}")


def get(name: str, device: str = "cpu", intra_op_threads: int = 0) -> Baseline:
    """The baseline called `name` (one of NAMES). `device` is for the torch baselines;
    `intra_op_threads` for DNSMOS's onnxruntime (0 = onnxruntime's default)."""
    extras.check(NEEDS.get(name, []), f"baseline {name!r}", extra="baselines")
    if name == "dnsmos-p808":
        return DnsmosBaseline(DnsmosP808(intra_op_threads))
    if name == "dnsmos-p835":
        return DnsmosBaseline(DnsmosP835(intra_op_threads))
    if name in TORCH_NAMES:
        network = torch_network(name)
        return TorchBaseline(name, network, functools.partial(torch_score, name, network), device, min_samples(name))
    raise ValueError(f"unknown baseline {name!r}; known baselines: {', '.join(NAMES)}")
