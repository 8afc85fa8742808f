"""Self-describing checkpoints: one safetensors file = architecture name + full config + weights.

The file's safetensors metadata carries ``format``, ``arch``, ``config`` (JSON), ``extra`` (JSON),
``sqa_version``, ``torch_version`` and ``builder_module`` (the ``sqa`` module that registers the
architecture, imported on load if the architecture is not registered yet). ``load`` rebuilds the
model with the registered builder from the stored config (which may hold per-layer dims after
pruning) and loads the weights strictly. The config is first built on the meta device and its
tensor shapes compared with the file's, so a config with huge sizes is refused before anything
is allocated. Nothing is ever unpickled.

Builders are registered per architecture name::

    @register("student")
    def build_student(config: dict) -> nn.Module: ...
"""

from __future__ import annotations

import copy
import importlib
import json
import numbers
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import safetensors
import safetensors.torch
import torch
from torch import nn

import sqa
from sqa.atomic import atomic_path

FORMAT = "sqa-checkpoint/1"
Builder = Callable[[dict], nn.Module]
_REGISTRY: dict[str, Builder] = {}
_MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own upper bound on the JSON header


class CheckpointError(Exception):
    """A checkpoint cannot be written or read; the message names the file and the problem."""


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint says about itself (read without building the model)."""

    path: Path
    arch: str
    config: dict
    extra: dict
    sqa_version: str
    torch_version: str
    builder_module: str


def register(arch: str, builder: Builder | None = None) -> Any:
    """Register ``builder(config) -> nn.Module`` under ``arch``; without ``builder``, a decorator.

    Registering another builder under a taken name is an error (re-registering the same function,
    e.g. on module reload, is allowed).
    """
    if not isinstance(arch, str) or not arch:
        raise ValueError(f"arch must be a non-empty string, got {arch!r}")

    def add(fn: Builder) -> Builder:
        if not callable(fn):
            raise TypeError(f"builder for arch {arch!r} is not callable: {fn!r}")
        old = _REGISTRY.get(arch)
        if old is not None and _qualified_name(old) != _qualified_name(fn):
            raise ValueError(
                f"arch {arch!r} is already registered to {_qualified_name(old)}; "
                f"refusing to rebind it to {_qualified_name(fn)}"
            )
        _REGISTRY[arch] = fn
        return fn

    return add if builder is None else add(builder)


def known_archs() -> list[str]:
    return sorted(_REGISTRY)


def _qualified_name(fn: Callable) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _json_ready(value: Any, where: str) -> Any:
    """``value`` as plain JSON types (tuples -> lists, numpy scalars -> Python), or an error
    naming the offending entry; so that the stored config is exactly what the builder gets back."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise CheckpointError(f"{where} has a non-string key {key!r}; JSON keys must be strings")
            out[key] = _json_ready(item, f"{where}[{key!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [_json_ready(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise CheckpointError(f"{where} = {value!r} ({type(value).__name__}) cannot be stored as JSON")


def _plain_tensors(model: nn.Module, path: Path) -> dict[str, torch.Tensor]:
    """The state dict as contiguous CPU tensors that share no memory (tied weights are copied)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in model.state_dict().items():
        if not isinstance(tensor, torch.Tensor):
            raise CheckpointError(f"cannot save {path}: state entry {name!r} is a {type(tensor).__name__}, "
                                  "not a tensor")
        t = tensor.detach().to("cpu").contiguous()
        storage = t.untyped_storage()
        if storage.data_ptr() in seen or storage.nbytes() != t.numel() * t.element_size():
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        out[name] = t
    return out


def save(path: Path | str, model: nn.Module, arch: str, config: dict, extra: dict | None = None) -> Path:
    """Write ``model``'s weights with ``arch``, ``config`` and ``extra`` as one safetensors file.

    ``arch`` must be registered (so the file can be rebuilt); ``config`` must be what its builder
    takes and, like ``extra``, JSON-representable. The write is atomic.
    """
    path = Path(path)
    if arch not in _REGISTRY:
        raise CheckpointError(f"cannot save {path}: arch {arch!r} is not registered "
                              f"(known: {known_archs()}); register its builder first")
    for name, value in (("config", config), ("extra", extra or {})):
        if not isinstance(value, Mapping):
            raise CheckpointError(f"cannot save {path}: {name} must be a dict, got {type(value).__name__}")
    try:
        config_json = json.dumps(_json_ready(config, "config"))
        extra_json = json.dumps(_json_ready(extra or {}, "extra"))
    except CheckpointError as err:
        raise CheckpointError(f"cannot save {path}: {err}") from None
    metadata = {
        "format": FORMAT,
        "arch": arch,
        "config": config_json,
        "extra": extra_json,
        "sqa_version": sqa.__version__,
        "torch_version": torch.__version__,
        "builder_module": getattr(_REGISTRY[arch], "__module__", ""),
    }
    tensors = _plain_tensors(model, path)
    with atomic_path(path) as tmp:
        safetensors.torch.save_file(tensors, str(tmp), metadata=metadata)
        _sort_metadata(tmp)
    return path


def _sort_metadata(path: Path) -> None:
    """Rewrite the file's header in place with its metadata sorted by key. The safetensors library
    writes metadata in hash order, which changes between processes, so the same weights, config
    and versions would otherwise get different bytes (and SHA-256) each time they are saved; the
    reordered header has the same length, so the tensors do not move."""
    with path.open("r+b") as fh:
        size = struct.unpack("<Q", fh.read(8))[0]
        raw = fh.read(size)
        header = json.loads(raw)
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) <= size:
            fh.seek(8)
            fh.write(text.ljust(size, b" "))


def _sniff(path: Path) -> None:
    """Refuse anything that is not laid out as a safetensors file (8-byte little-endian header
    length, then a JSON object), judging by its first bytes only."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    with path.open("rb") as fh:
        head = fh.read(9)
    size = path.stat().st_size
    header_len = struct.unpack("<Q", head[:8])[0] if len(head) == 9 else -1
    if 0 < header_len <= min(size - 8, _MAX_HEADER_BYTES) and head[8:9] == b"{":
        return
    what = "invalid safetensors header"
    if head[:2] == b"PK":
        what = "it is a zip archive, e.g. a torch.save .pt file"
    elif head[:1] == b"\x80":
        what = "it looks like a Python pickle"
    raise CheckpointError(f"{path} is not a safetensors file ({what}); refusing to read it "
                          "(pickled checkpoints are never unpickled)")


def _read_metadata(path: Path) -> tuple[dict[str, str], dict[str, tuple[int, ...]]]:
    _sniff(path)
    try:
        with safetensors.safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata()
            shapes = {key: tuple(fh.get_slice(key).get_shape()) for key in fh.keys()}
    except Exception as err:  # the library raises its own error types for corrupt files
        raise CheckpointError(f"{path} is not a readable safetensors file: {err}") from err
    if not metadata:
        raise CheckpointError(f"{path} has no metadata: it was not written by sqa.models.checkpoint.save "
                              "(arch and config are needed to rebuild the model)")
    return metadata, shapes


def _parse_info(path: Path, metadata: dict[str, str]) -> CheckpointInfo:
    missing = [key for key in ("arch", "config") if key not in metadata]
    if missing:
        raise CheckpointError(f"{path} metadata lacks {missing} (has {sorted(metadata)}); "
                              "it was not written by sqa.models.checkpoint.save")
    parsed = {}
    for key in ("config", "extra"):
        try:
            parsed[key] = json.loads(metadata.get(key, "{}"))
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{path} metadata {key!r} is not valid JSON: {err}") from None
        if not isinstance(parsed[key], dict):
            raise CheckpointError(f"{path} metadata {key!r} is not a JSON object: {metadata[key][:200]!r}")
    return CheckpointInfo(
        path=path,
        arch=metadata["arch"],
        config=parsed["config"],
        extra=parsed["extra"],
        sqa_version=metadata.get("sqa_version", ""),
        torch_version=metadata.get("torch_version", ""),
        builder_module=metadata.get("builder_module", ""),
    )


def read_info(path: Path | str) -> CheckpointInfo:
    """Arch, config, extra and versions of a checkpoint, without building the model."""
    path = Path(path)
    return _parse_info(path, _read_metadata(path)[0])


#: builder modules that moved (checkpoints written before the move name the old module)
MOVED_MODULES = {"sqa.pruning.": "sqa.training.pruning."}


def _builder_for(info: CheckpointInfo) -> Builder:
    module = info.builder_module
    for old, new in MOVED_MODULES.items():
        if module.startswith(old):
            module = new + module[len(old):]
    if info.arch not in _REGISTRY and (module == "sqa" or module.startswith("sqa.")):
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise CheckpointError(f"{info.path}: cannot import {module!r}, the module that registers "
                                  f"arch {info.arch!r}: {err}") from err
    if info.arch not in _REGISTRY:
        raise CheckpointError(f"{info.path}: unknown architecture {info.arch!r}; "
                              f"known architectures: {known_archs()}")
    return _REGISTRY[info.arch]


def _compare(path: Path, expected: dict[str, torch.Tensor], found: dict[str, tuple[int, ...]]) -> None:
    problems = []
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing:
        problems.append(f"missing keys {missing}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected}")
    for name in sorted(set(expected) & set(found)):
        want = tuple(expected[name].shape)
        if want != found[name]:
            problems.append(
                f"tensor {name!r}: model expects shape {list(want)}, file has {list(found[name])}"
            )
    if problems:
        raise CheckpointError(
            f"{path} does not match the model built from its config: " + "; ".join(problems)
        )


def _build(path: Path, info: CheckpointInfo, builder: Builder, config: dict) -> nn.Module:
    try:
        model = builder(copy.deepcopy(config))
    except CheckpointError:
        raise
    except Exception as err:
        raise CheckpointError(f"{path}: the builder for arch {info.arch!r} failed on the stored config "
                              f"{config}: {type(err).__name__}: {err}") from err
    if not isinstance(model, nn.Module):
        raise CheckpointError(f"{path}: the builder for arch {info.arch!r} returned "
                              f"{type(model).__name__}, not an nn.Module")
    return model


def build_checked(path: Path, info: CheckpointInfo, shapes: dict[str, tuple[int, ...]],
                  build: Callable[[dict], nn.Module], config: dict) -> nn.Module:
    """``build(config)`` first on the meta device (no memory), its tensor shapes compared with the
    file's, and only then for real: a config with huge sizes is refused before anything is
    allocated."""
    with torch.device("meta"):
        shell = _build(path, info, build, config)
    _compare(path, shell.state_dict(), shapes)
    del shell
    return _build(path, info, build, config)


def load_weights(path: Path | str, model: nn.Module, map_location: str | torch.device = "cpu") -> nn.Module:
    """Load the file's weights strictly into ``model`` (shapes already checked), move it to
    ``map_location``, eval mode."""
    model.load_state_dict(safetensors.torch.load_file(str(path), device="cpu"), strict=True)
    return model.to(map_location).eval()


def load(path: Path | str, map_location: str | torch.device = "cpu") -> tuple[nn.Module, CheckpointInfo]:
    """Rebuild the model from the file's arch + config (sizes checked against the file's tensor
    shapes before anything is allocated), load its weights strictly, move it to ``map_location``
    and put it in eval mode. Returns ``(model, info)``."""
    path = Path(path)
    metadata, shapes = _read_metadata(path)
    info = _parse_info(path, metadata)
    builder = _builder_for(info)
    model = build_checked(path, info, shapes, builder, info.config)
    return load_weights(path, model, map_location), info


def read_shapes(path: Path | str) -> tuple[CheckpointInfo, dict[str, tuple[int, ...]]]:
    """The checkpoint's info and its tensors' shapes (names -> shape), nothing loaded."""
    path = Path(path)
    metadata, shapes = _read_metadata(path)
    return _parse_info(path, metadata), shapes



def read_tensors(path: Path | str) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors (names -> CPU tensor) after the same checks as :func:`read_info`."""
    path = Path(path)
    _read_metadata(path)
    return safetensors.torch.load_file(str(path), device="cpu")
