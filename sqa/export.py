"""``sqa export``: a trained student (or pruned model) as ONNX or a ``torch.export`` program for one
fixed window.

    sqa export --run outputs/demo/04_distill/size-1M_... --format onnx|pt2 [--int8] [--out PATH]

What is exported is the model's ``forward_window``: a ``(batch, window_samples)`` float32 16 kHz
waveform -> MOS ``(batch,)``, max-abs normalisation, STFT, conv front end and head included; the
batch size is free (a dynamic dimension of the exported program), the window length is fixed.
**Windowing stays outside the graph**: a clip of any length is cut into windows and their MOS
averaged by the caller, exactly as ``ConvTransformerSQA.forward`` does — use
:class:`OnnxScorer` (numpy + onnxruntime only, no torch), which reads the window from the sidecar.

- Window: ``--window-s`` seconds, default the checkpoint's own ``window_samples`` (what its
  ``forward`` scores with, so :class:`OnnxScorer` equals the PyTorch model on any clip length);
  a model without a ``config.window_samples`` needs ``--window-s``. Hop: the config's
  ``window_hop`` (default 1 s).
- ONNX (``onnx``; needs the ``export`` extra: onnx, onnxscript): the current exporter,
  ``torch.onnx.export(dynamo=True)`` (``torch.export`` captures the graph, onnxscript translates
  it), opset :data:`OPSET`, one self-contained file (no external data). The STFT is exported as
  the real-valued DFT-as-convolution branch of ``compressed_spectrum`` (ONNX has no complex
  tensors, and its STFT op is far less exact). There is no fallback to the deprecated
  TorchScript-based exporter: a model the current one cannot export is an error. After export
  onnxruntime is checked against PyTorch on a random batch (max |diff| recorded; above
  :data:`CHECK_TOLERANCE` is an error).
- ``pt2``: the ``torch.export`` program (``torch.export.save``; load it with
  ``torch.export.load(path).module()``), the replacement of the deprecated TorchScript format,
  for deployment with PyTorch alone (or ahead-of-time compilation) without sqa's code; checked
  the same way. ``sqa score`` and ``sqa.load`` take the ``.safetensors`` checkpoint or the ONNX
  file instead.
- ``--int8`` (ONNX only): dynamic quantisation of the weights of matrix products only —
  onnxruntime's ``quantize_dynamic`` on MatMul/Gemm. Convolutions stay float, so models whose
  cost sits in the conv front end (DistillMOS v7) gain little speed. Accuracy: within
  :data:`INT8_TOLERANCE_MOS` MOS of float32 (tested on 20 inputs; the deviation is recorded).
  PyTorch's eager dynamic quantisation (``torch.ao.quantization``) is deprecated and does not go
  through ``torch.export``, so a ``pt2`` file is float32 only.
- Every file is written atomically, with a sidecar ``<file>.json``: arch, model config, window,
  hop, sample rate, opset, int8, source checkpoint path and SHA-256, parameter count, versions.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from sqa import atomic, extras, paths
from sqa.data.audio import iter_segments
from sqa.models import count_params

if TYPE_CHECKING:
    import torch

FORMATS = ("onnx", "pt2")
#: node metadata the exporter adds and :func:`_onnx_fp32` removes, so that a file does not depend on
#: where the code sits (the other metadata, module and fx-node names, stays)
STACK_TRACE_KEY = "pkg.torch.onnx.stack_trace"
OPSET = 18  # the lowest opset the dynamo-based ONNX exporter translates to (older ones need a converter that fails)
CHECK_TOLERANCE = 1e-3  # max |MOS diff| from PyTorch accepted by the check after a float32 export
INT8_TOLERANCE_MOS = 0.1  # documented int8 accuracy: |int8 - float32| below this on typical inputs
_SUFFIX = {("onnx", False): ".onnx", ("onnx", True): ".int8.onnx", ("pt2", False): ".pt2"}
ONNX_PACKAGES = ["onnx", "onnxscript"]  # the export extra: what --format onnx needs besides torch


class ExportError(ValueError):
    """The source cannot be exported or an exported file cannot be used; the message says why."""


@dataclass(frozen=True)
class Window:
    """The fixed input of an exported graph and the hop used to cover longer clips."""

    samples: int
    hop: int
    sample_rate: int = 16000

    @property
    def seconds(self) -> float:
        return self.samples / self.sample_rate


def sidecar_path(path: Path | str) -> Path:
    """``model.onnx`` -> ``model.onnx.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def sha256(path: Path | str) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_file(source: Path | str) -> Path:
    """A run folder (holding ``model.safetensors``) or a ``.safetensors`` file -> the file."""
    source = Path(source)
    if source.is_dir():
        source = source / "model.safetensors"
        if not source.is_file():
            raise ExportError(f"{source.parent}: run folder has no model.safetensors")
    elif not source.is_file():
        raise ExportError(f"{source}: no such run folder or checkpoint file")
    return source


def load_source(source: Path | str) -> tuple["torch.nn.Module", dict, Path]:
    """Load the checkpoint of a run folder or ``.safetensors`` file: ``(model, meta, file)``,
    ``meta`` holding arch and config. The model must have ``forward_window``."""
    from sqa.models import checkpoint

    path = checkpoint_file(source)
    try:
        model, info = checkpoint.load(path)
    except checkpoint.CheckpointError as err:
        raise ExportError(str(err)) from err
    if not callable(getattr(model, "forward_window", None)):
        raise ExportError(f"{path}: arch {info.arch!r} has no forward_window(wave); only fixed-window "
                          "models (students, pruned students) can be exported")
    return model, {"arch": info.arch, "config": info.config}, path


def window_for(model: "torch.nn.Module", window_s: float | None = None) -> Window:
    """The export window: ``window_s`` seconds, or the model config's ``window_samples``."""
    config = getattr(model, "config", None)
    sr = int(getattr(config, "sample_rate", 16000))
    hop = int(getattr(config, "window_hop", sr))
    if window_s is None:
        samples = getattr(config, "window_samples", None)
        if samples is None:
            raise ExportError(f"{type(model).__name__} has no config.window_samples: give --window-s")
    else:
        if not (isinstance(window_s, (int, float)) and np.isfinite(window_s) and window_s > 0):
            raise ExportError(f"--window-s must be a positive number of seconds, got {window_s!r}")
        samples = int(round(window_s * sr))
    min_samples = int(getattr(config, "stft_win", 1))
    if samples < min_samples:
        raise ExportError(f"window of {samples} samples is shorter than the model's STFT window ({min_samples})")
    return Window(samples=int(samples), hop=min(hop, int(samples)), sample_rate=sr)


def _window_module(model: "torch.nn.Module") -> "torch.nn.Module":
    import torch

    class WindowScorer(torch.nn.Module):
        """``forward`` = the wrapped model's ``forward_window``."""

        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, wave: torch.Tensor) -> torch.Tensor:
            return self.inner.forward_window(wave)

    return WindowScorer(model).eval()


@contextlib.contextmanager
def _quiet_export() -> Iterator[None]:
    """Silence the exporters' warnings and log lines (about operators of packages we do not use,
    such as torchvision's): the export is checked numerically instead."""
    import logging
    import warnings

    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            for category in (DeprecationWarning, UserWarning, FutureWarning):
                warnings.simplefilter("ignore", category)
            yield
    finally:
        logger.setLevel(level)


def _batch_dim() -> dict:
    """The dynamic batch dimension of the exported graph's input ``wave``."""
    import torch

    return {"wave": {0: torch.export.Dim("batch")}}


def _example(window: Window, batch: int, seed: int = 0) -> "torch.Tensor":
    import torch

    g = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(batch, window.samples, generator=g)


def _onnx_fp32(model: "torch.nn.Module", path: Path, window: Window, opset: int) -> None:
    import torch

    onnx = extras.require("onnx", "sqa export --format onnx")
    with _quiet_export(), torch.no_grad():
        torch.onnx.export(_window_module(model), (_example(window, 2),), str(path), dynamo=True,
                          external_data=False, opset_version=opset, input_names=["wave"], output_names=["mos"],
                          dynamic_shapes=_batch_dim(), verbose=False)
    graph = onnx.load(str(path))
    for node in graph.graph.node:  # Python stack traces: this machine's file paths and line numbers
        kept = [p for p in node.metadata_props if p.key != STACK_TRACE_KEY]
        del node.metadata_props[:]
        node.metadata_props.extend(kept)
    onnx.save(graph, str(path))
    onnx.checker.check_model(str(path))


def _onnx_int8(fp32: Path, path: Path) -> None:
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic logs advice to pre-process (it does not help here)
    try:
        quantize_dynamic(str(fp32), str(path), op_types_to_quantize=["MatMul", "Gemm"],
                         weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)


def _pt2(model: "torch.nn.Module", path: Path, window: Window) -> None:
    import torch

    with _quiet_export(), torch.no_grad():
        program = torch.export.export(_window_module(model), (_example(window, 2),), dynamic_shapes=_batch_dim())
    torch.export.save(program, str(path))


def _torch_reference(model: "torch.nn.Module", x: "torch.Tensor") -> np.ndarray:
    import torch

    with torch.no_grad():
        return model.forward_window(x).double().numpy()


def _check(model: "torch.nn.Module", path: Path, fmt: str, window: Window) -> float:
    """Max |MOS diff| between the exported file and PyTorch on a random batch of 3."""
    x = _example(window, 3, seed=1)
    if fmt == "onnx":
        got = _onnx_session(path, threads=0).run(None, {"wave": x.numpy()})[0]
    else:
        import torch

        with torch.no_grad():
            got = torch.export.load(str(path)).module()(x).numpy()
    return float(np.max(np.abs(np.asarray(got, dtype=np.float64) - _torch_reference(model, x))))


def default_out(checkpoint: Path, fmt: str, int8: bool) -> Path:
    """``<folder>/<checkpoint stem><suffix>``, e.g. ``run/model.int8.onnx``."""
    return checkpoint.with_name(checkpoint.stem + _SUFFIX[(fmt, int8)])


def export_model(
    model: "torch.nn.Module",
    out: Path | str,
    fmt: str = "onnx",
    *,
    int8: bool = False,
    window: Window | None = None,
    meta: dict | None = None,
    opset: int = OPSET,
) -> Path:
    """Export ``model.forward_window`` for ``window`` to ``out`` (atomic) plus its sidecar JSON.

    ``meta`` (e.g. source, source_sha256) is copied into the sidecar; arch and config default to
    the model's ``arch`` and ``checkpoint_config()`` where it has them."""
    import torch

    check_format(fmt, int8, opset)
    if not callable(getattr(model, "forward_window", None)):
        raise ExportError(f"{type(model).__name__} has no forward_window(wave); cannot export it")
    out = Path(out)
    model = model.eval()
    window = window or window_for(model)
    with tempfile.TemporaryDirectory(prefix="sqa-export-") as tmp, atomic.atomic_path(out) as target:
        if fmt == "onnx":
            fp32 = Path(tmp) / "fp32.onnx"
            _onnx_fp32(model, fp32 if int8 else target, window, opset)
            if int8:
                _onnx_int8(fp32, target)
        else:
            _pt2(model, target, window)
        diff = _check(model, target, fmt, window)
        if not int8 and not diff <= CHECK_TOLERANCE:
            raise ExportError(f"{out}: exported {fmt} differs from PyTorch by {diff:.3g} MOS "
                              f"(> {CHECK_TOLERANCE}); not writing it")
    sidecar = {
        "format": fmt,
        "int8": int8,
        "input": "wave: float32 (batch, window_samples), mono, max-abs normalised inside the graph",
        "output": "mos: float32 (batch,), 1..5",
        "window_samples": window.samples,
        "window_hop": window.hop,
        "window_s": window.seconds,
        "sample_rate": window.sample_rate,
        "opset": opset if fmt == "onnx" else None,
        "n_params": count_params(model),
        "check_max_abs_diff_vs_torch": diff,
        "torch_version": torch.__version__,
        **_runtime_versions(fmt),
        **_model_meta(model),
        **(meta or {}),
    }
    atomic.write_json(sidecar_path(out), sidecar)
    return out


def _model_meta(model: "torch.nn.Module") -> dict:
    meta = {"arch": getattr(model, "arch", type(model).__name__)}
    if callable(getattr(model, "checkpoint_config", None)):
        meta["config"] = model.checkpoint_config()
    return meta


def _runtime_versions(fmt: str) -> dict:
    if fmt != "onnx":
        return {}
    import onnx
    import onnxruntime
    import onnxscript

    return {"onnx_version": onnx.__version__, "onnxscript_version": onnxscript.__version__,
            "onnxruntime_version": onnxruntime.__version__}


def check_format(fmt: str, int8: bool = False, opset: int = OPSET) -> None:
    """An :class:`ExportError` for an unknown format, int8 outside ONNX or an opset below
    :data:`OPSET`; a :class:`sqa.extras.MissingExtra` when ONNX is asked for without the
    ``export`` extra."""
    if fmt not in FORMATS:
        raise ExportError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt == "onnx" and not (isinstance(opset, int) and opset >= OPSET):
        raise ExportError(f"--opset {opset!r}: the ONNX exporter writes opset {OPSET} or later")
    if int8 and fmt != "onnx":
        raise ExportError(f"--int8 is for ONNX only (onnxruntime's dynamic quantisation); a {fmt} export is "
                          "float32")
    if fmt == "onnx":
        extras.check(ONNX_PACKAGES, "sqa export --format onnx")


def export(source: Path | str, fmt: str = "onnx", out: Path | str | None = None, *, int8: bool = False,
           window_s: float | None = None, opset: int = OPSET) -> Path:
    """Export the checkpoint of a run folder or ``.safetensors`` file; returns the written file."""
    check_format(fmt, int8, opset)
    path = checkpoint_file(source)
    out = Path(out or default_out(path, fmt, int8))
    for target in (out, sidecar_path(out)):
        try:
            atomic.check_destination(target)  # before the (slow) load and export
        except atomic.DestinationError as err:
            raise ExportError(f"--out {err}") from None
    model, meta, path = load_source(path)
    window = window_for(model, window_s)
    meta = {**meta, "source": paths.portable(path), "source_sha256": sha256(path)}
    return export_model(model, out, fmt, int8=int8, window=window, meta=meta, opset=opset)


def _onnx_session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.enable_cpu_mem_arena = False  # the arena grows with each new batch shape and never shrinks
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class OnnxScorer:
    """An exported ONNX model scoring 16 kHz mono clips of any length (no torch needed).

    Reproduces ``ConvTransformerSQA.forward``: a clip shorter than the window is zero-padded at
    the end; longer clips are covered by windows spread evenly at most ``window_hop`` apart; the
    clip's MOS is the mean of its windows' MOS. Windows of all clips share batches of
    ``batch_size``. The window comes from the sidecar ``<file>.json`` written by :func:`export`.
    """

    def __init__(self, path: Path | str, threads: int = 0) -> None:
        self.path = Path(path)
        side = sidecar_path(self.path)
        if not self.path.is_file():
            raise ExportError(f"{self.path}: no such ONNX file")
        if not side.is_file():
            raise ExportError(f"{self.path}: sidecar {side.name} is missing (it holds the window); "
                              "export the model with `sqa export`")
        try:
            self.meta = json.loads(side.read_text())
            self.window = Window(int(self.meta["window_samples"]), int(self.meta["window_hop"]),
                                 int(self.meta["sample_rate"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise ExportError(f"{side}: not a valid export sidecar ({type(err).__name__}: {err})") from err
        try:
            self.session = _onnx_session(self.path, threads)
        except Exception as err:  # onnxruntime raises its own exception types for unreadable files
            raise ExportError(f"{self.path}: onnxruntime cannot load it ({err})") from err
        self.name = self.path.name
        self.n_params = int(self.meta.get("n_params", 0))
        self.min_samples = int((self.meta.get("config") or {}).get("stft_win", 1))

    def run_windows(self, windows: np.ndarray) -> np.ndarray:
        """MOS of each row of ``windows`` (n, window_samples) as one window."""
        windows = np.ascontiguousarray(windows, dtype=np.float32)
        if windows.ndim != 2 or windows.shape[1] != self.window.samples:
            raise ExportError(f"{self.path}: expected windows of shape (n, {self.window.samples}), "
                              f"got {windows.shape}")
        return self.session.run(None, {"wave": windows})[0].astype(np.float64)

    def predict(self, waveforms: Sequence[np.ndarray], batch_size: int = 8) -> np.ndarray:
        """MOS (1-5) per clip, shape ``(len(waveforms),)``; clips may differ in length. Windows are
        cut and scored ``batch_size`` at a time, so memory does not grow with a clip's length."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        sums = np.zeros(len(waveforms))
        counts = np.zeros(len(waveforms), dtype=np.int64)
        owners: list[int] = []
        batch: list[np.ndarray] = []
        for i, wave in enumerate(waveforms):
            wave = np.asarray(wave, dtype=np.float32)
            if wave.ndim != 1 or wave.size == 0:
                raise ValueError(f"{self.name}: waveform {i} must be a non-empty 1-D array, got shape {wave.shape}")
            for window in iter_segments(wave, self.window.samples, self.window.hop):
                owners.append(i)
                batch.append(window)
                if len(batch) == batch_size:
                    self._add(sums, counts, owners, batch)
        if batch:
            self._add(sums, counts, owners, batch)
        return sums / np.maximum(counts, 1)

    def _add(self, sums: np.ndarray, counts: np.ndarray, owners: list[int], batch: list[np.ndarray]) -> None:
        """Score ``batch`` and add each window's MOS to its clip's sum; empties both lists."""
        np.add.at(sums, owners, self.run_windows(np.stack(batch)))
        np.add.at(counts, owners, 1)
        owners.clear()
        batch.clear()

    def __call__(self, waves: np.ndarray, batch_size: int = 8) -> np.ndarray:
        """MOS (B,) of a (B, T) batch, like ``ConvTransformerSQA.forward``."""
        waves = np.asarray(waves)
        if waves.ndim != 2:
            raise ValueError(f"{self.name}: expected a (batch, samples) array, got shape {waves.shape}")
        return self.predict(list(waves), batch_size)
