"""Tests for sqa.models.checkpoint: round trips, tied weights, and every refusal."""

from __future__ import annotations

import importlib
import json
import pathlib
import pickle

import numpy as np
import pytest
import safetensors
import torch
from safetensors.torch import save_file
from torch import nn

import sqa
from sqa.models import checkpoint
from sqa.models.checkpoint import CheckpointError


class TinyNet(nn.Module):
    """Per-layer widths from the config (as after pruning), an optional head, a buffer."""

    def __init__(self, config: dict) -> None:
        super().__init__()
        dims = config["dims"]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.head = nn.Linear(dims[-1], 1) if config.get("head") else None
        self.register_buffer("scale", torch.linspace(0.5, 1.5, dims[-1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.tanh(layer(x))
        x = x * self.scale
        return self.head(x) if self.head is not None else x


@checkpoint.register("test-tied")
class TiedNet(nn.Module):
    """Embedding tied to the output projection, plus a non-contiguous buffer."""

    def __init__(self, config: dict) -> None:
        super().__init__()
        self.emb = nn.Embedding(config["vocab"], config["dim"])
        self.out = nn.Linear(config["dim"], config["vocab"], bias=False)
        self.out.weight = self.emb.weight
        self.register_buffer("proj", torch.randn(config["dim"], config["dim"] + 1).t())

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(self.emb(tokens)) + self.proj.sum()


checkpoint.register("test-tiny", TinyNet)
CONFIG = {"dims": [4, 7, 3], "head": True, "pruned": {"layer0": {"heads": [0, 2], "ffn": 5}}}


def _model(config: dict = CONFIG, seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet(config)


def test_round_trip_identical_outputs(tmp_path: pathlib.Path) -> None:
    model = _model()
    path = tmp_path / "sub" / "model.safetensors"
    extra = {"pcc": np.float64(0.81), "step": np.int64(12), "tags": ("a", "b"), "note": None}
    assert checkpoint.save(path, model, "test-tiny", CONFIG, extra=extra) == path
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.safetensors"]  # no temp files left

    loaded, info = checkpoint.load(path)
    x = torch.randn(5, 4)
    assert isinstance(loaded, TinyNet) and not loaded.training
    assert torch.equal(model.eval()(x), loaded(x))
    assert info.arch == "test-tiny" and info.config == CONFIG and info.path == path
    assert info.extra == {"pcc": 0.81, "step": 12, "tags": ["a", "b"], "note": None}
    assert info.sqa_version == sqa.__version__ and info.builder_module == __name__
    assert checkpoint.read_info(path) == info

    with safetensors.safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
        assert sorted(fh.keys()) == sorted(model.state_dict())
    assert meta["format"] == checkpoint.FORMAT and json.loads(meta["config"]) == CONFIG

    other, _ = checkpoint.load(path, map_location=torch.device("cpu"))
    assert torch.equal(other(x), loaded(x))


def test_tied_weights_and_non_contiguous_buffers(tmp_path: pathlib.Path) -> None:
    torch.manual_seed(1)
    config = {"vocab": 11, "dim": 6}
    model = TiedNet(config)
    with pytest.raises(Exception):  # what the helper must work around
        save_file(model.state_dict(), str(tmp_path / "raw.safetensors"))
    path = checkpoint.save(tmp_path / "tied.safetensors", model, "test-tied", config)
    loaded, _ = checkpoint.load(path)
    tokens = torch.tensor([[1, 4, 10], [0, 3, 3]])
    assert torch.equal(model(tokens), loaded(tokens))
    assert loaded.out.weight is loaded.emb.weight
    assert torch.equal(model.proj, loaded.proj)


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
def test_zero_size_tensors_of_fully_pruned_layers(tmp_path: pathlib.Path) -> None:
    @checkpoint.register("test-empty")
    def build(config: dict) -> nn.Module:
        return nn.Sequential(*(nn.Linear(a, b) for a, b in config["layers"]))

    config = {"layers": [[4, 0], [0, 3], [4, 0]]}
    model = build(config)
    loaded, info = checkpoint.load(checkpoint.save(tmp_path / "e.safetensors", model, "test-empty", config))
    assert info.config == config
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert {k: v.shape for k, v in loaded.state_dict().items()} == shapes
    assert torch.equal(loaded[1].bias, model[1].bias)


def test_register_decorator_and_rebinding() -> None:
    @checkpoint.register("test-decorated")
    def build(config: dict) -> nn.Module:
        return nn.Linear(config["n"], 1)

    assert "test-decorated" in checkpoint.known_archs()
    checkpoint.register("test-decorated", build)  # same builder again (module reload): allowed
    with pytest.raises(ValueError, match="already registered"):
        checkpoint.register("test-decorated", lambda config: nn.Linear(1, 1))
    with pytest.raises(ValueError, match="non-empty string"):
        checkpoint.register("", build)


def test_save_refusals(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "m.safetensors"
    with pytest.raises(CheckpointError, match=r"m\.safetensors: arch 'no-such' is not registered.*test-tiny"):
        checkpoint.save(path, _model(), "no-such", CONFIG)
    with pytest.raises(CheckpointError, match=r"config\['dims'\]\[1\] = .*tensor.*cannot be stored as JSON"):
        checkpoint.save(path, _model(), "test-tiny", {"dims": [4, torch.tensor(7), 3]})
    with pytest.raises(CheckpointError, match=r"extra must be a dict, got list"):
        checkpoint.save(path, _model(), "test-tiny", CONFIG, extra=[1, 2])
    with pytest.raises(CheckpointError, match=r"extra has a non-string key 3"):
        checkpoint.save(path, _model(), "test-tiny", CONFIG, extra={3: "x"})
    assert not path.exists()


def _assert_refused(path: pathlib.Path, *patterns: str) -> str:
    with pytest.raises(CheckpointError) as err:
        checkpoint.load(path)
    message = str(err.value)
    assert str(path) in message
    for pattern in patterns:
        assert pattern in message, message
    return message


def test_unknown_architecture_lists_known(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "alien.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"arch": "alien", "config": "{}"})
    message = _assert_refused(path, "unknown architecture 'alien'", "known architectures")
    assert "'test-tiny'" in message and "'test-tied'" in message
    assert checkpoint.read_info(path).arch == "alien"  # reading the info needs no builder


def test_missing_unexpected_and_mismatched_tensors(tmp_path: pathlib.Path) -> None:
    no_head = {"dims": [4, 7, 3], "head": False}
    missing = checkpoint.save(tmp_path / "missing.safetensors", _model(no_head), "test-tiny", CONFIG)
    _assert_refused(missing, "missing keys ['head.bias', 'head.weight']")
    unexpected = checkpoint.save(tmp_path / "unexpected.safetensors", _model(), "test-tiny", no_head)
    _assert_refused(unexpected, "unexpected keys ['head.bias', 'head.weight']")
    wider = {"dims": [4, 8, 3], "head": True}
    shapes = checkpoint.save(tmp_path / "shapes.safetensors", _model(), "test-tiny", wider)
    _assert_refused(shapes, "tensor 'layers.0.weight': model expects shape [8, 4], file has [7, 4]",
                    "tensor 'layers.1.weight': model expects shape [3, 8], file has [3, 7]")


def test_builder_failure_is_explained(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "bad-config.safetensors"
    save_file(_model().state_dict(), str(path), metadata={"arch": "test-tiny", "config": '{"widths": [4]}'})
    _assert_refused(path, "builder for arch 'test-tiny' failed", "KeyError")


class _Trap:
    """Unpickling this object creates a marker file."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_pickle_is_refused_without_unpickling(tmp_path: pathlib.Path) -> None:
    marker = tmp_path / "unpickled.marker"
    path = tmp_path / "model.pt"
    path.write_bytes(pickle.dumps({"state_dict": _Trap(marker)}))
    _assert_refused(path, "not a safetensors file", "pickle", "never unpickled")
    with pytest.raises(CheckpointError, match="pickle"):
        checkpoint.read_info(path)
    assert not marker.exists()
    pickle.loads(path.read_bytes())  # the trap is real: unpickling would have left the marker
    assert marker.exists()


def test_torch_save_zip_is_refused(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "model.pt"
    torch.save(_model().state_dict(), path)
    _assert_refused(path, "not a safetensors file", "zip archive")


def test_missing_metadata_and_garbage(tmp_path: pathlib.Path) -> None:
    bare = tmp_path / "bare.safetensors"
    save_file(_model().state_dict(), str(bare))
    _assert_refused(bare, "has no metadata")
    no_config = tmp_path / "no-config.safetensors"
    save_file(_model().state_dict(), str(no_config), metadata={"arch": "test-tiny"})
    _assert_refused(no_config, "metadata lacks ['config']")
    bad_json = tmp_path / "bad-json.safetensors"
    save_file(_model().state_dict(), str(bad_json), metadata={"arch": "test-tiny", "config": "{dims"})
    _assert_refused(bad_json, "metadata 'config' is not valid JSON")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"hello, not weights")
    _assert_refused(garbage, "not a safetensors file", "invalid safetensors header")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(bare.read_bytes()[:200])
    _assert_refused(truncated, "not a safetensors file")
    _assert_refused(tmp_path / "absent.safetensors", "does not exist")


@pytest.mark.parametrize("named, imported_module", [
    ("sqa.models.lazy_fake", "sqa.models.lazy_fake"),
    ("sqa.pruning.student", "sqa.training.pruning.student"),  # saved before the package layout changed
])
def test_registering_module_is_imported_on_load(tmp_path: pathlib.Path, monkeypatch, named, imported_module) -> None:
    path = tmp_path / "m.safetensors"
    save_file(_model().state_dict(), str(path), metadata={
        "arch": "test-lazy", "config": json.dumps(CONFIG), "builder_module": named})
    imported = []

    def fake_import(name: str):
        imported.append(name)
        checkpoint.register("test-lazy", TinyNet)

    monkeypatch.setattr(importlib, "import_module", fake_import)
    monkeypatch.delitem(checkpoint._REGISTRY, "test-lazy", raising=False)
    model, info = checkpoint.load(path)
    assert imported == [imported_module] and isinstance(model, TinyNet)
    monkeypatch.delitem(checkpoint._REGISTRY, "test-lazy")

    outside = tmp_path / "outside.safetensors"
    save_file(_model().state_dict(), str(outside), metadata={
        "arch": "test-lazy", "config": json.dumps(CONFIG), "builder_module": "os"})
    _assert_refused(outside, "unknown architecture 'test-lazy'")
    assert imported == [imported_module]  # modules outside sqa are never imported


def test_the_same_checkpoint_saved_by_separate_processes_has_the_same_bytes(tmp_path: pathlib.Path) -> None:
    """The safetensors library orders metadata by hash, which differs per process; save() sorts it."""
    import hashlib
    import subprocess
    import sys

    code = ("import sys, torch\nfrom sqa.models import checkpoint\nfrom sqa.models.student import ConvTransformerSQA, "
            "preset\ntorch.manual_seed(0)\nm = ConvTransformerSQA(preset('10k'))\n"
            "checkpoint.save(sys.argv[1], m, m.arch, m.checkpoint_config(), extra={'b': 'x', 'a': [1, 2]})\n")
    files = [tmp_path / f"run{i}.safetensors" for i in range(3)]
    for f in files:
        subprocess.run([sys.executable, "-c", code, str(f)], check=True)
    digests = {hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
    assert len(digests) == 1
    with safetensors.safe_open(str(files[0]), framework="pt") as fh:
        assert len(fh.metadata()) == 7
    model, info = checkpoint.load(files[0])
    assert info.extra == {"b": "x", "a": [1, 2]} and info.arch == "conv-transformer-sqa"
