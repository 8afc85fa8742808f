"""sqa export: ONNX (the dynamo-based exporter) and torch.export (.pt2) exports equal PyTorch (any batch
size), OnnxScorer reproduces the windowing of ConvTransformerSQA.forward on clips of any length, int8
stays within its documented tolerance, sidecars describe the export, bad sources fail clearly, and a
missing export extra is named."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sqa import cli, export
from sqa.models import checkpoint, count_params, student

from signals import speechlike

SR = 16000




def inputs(window: int, batch: int, seed: int) -> list[np.ndarray]:
    """Random and speech-like windows: white noise, a loud noise burst, speech with noise."""
    rng = np.random.default_rng(seed)
    out = [0.1 * rng.standard_normal((batch, window)).astype(np.float32),
           np.stack([speechlike(window / SR, seed + i, snr_db=[None, 20, 5][i % 3]) for i in range(batch)])]
    burst = 0.01 * rng.standard_normal((batch, window))
    burst[:, window // 3: window // 2] *= 50
    out.append(burst.astype(np.float32))
    return out


def torch_window(model: student.ConvTransformerSQA, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.forward_window(torch.from_numpy(x)).numpy()


def torch_clip(model: student.ConvTransformerSQA, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x[None] if x.ndim == 1 else x)).numpy()


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A 100k student with random weights and a 2-s window, saved as a run folder."""
    torch.manual_seed(0)
    model = student.ConvTransformerSQA(student.preset("100k")).with_window(2.0).eval()
    run = tmp_path_factory.mktemp("run-100k")
    checkpoint.save(run / "model.safetensors", model, model.arch, model.checkpoint_config())
    return model, run


@pytest.fixture(scope="module")
def small_onnx(small):
    return export.export(small[1], "onnx")


@pytest.fixture(scope="module")
def small_pt2(small):
    return export.export(small[1], "pt2")


def test_onnx_equals_torch_any_batch(small, small_onnx) -> None:
    model, run = small
    assert small_onnx == run / "model.onnx"
    scorer = export.OnnxScorer(small_onnx)
    assert scorer.window.samples == model.config.window_samples == 32000
    for batch in (1, 3):
        for x in inputs(scorer.window.samples, batch, seed=batch):
            got = scorer.run_windows(x)
            want = torch_window(model, x)
            assert got.shape == (batch,)
            np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    # random weights still separate inputs: the check is not comparing constants
    spread = torch_window(model, np.concatenate(inputs(scorer.window.samples, 3, seed=9)))
    assert np.ptp(spread) > 1e-3


def test_sidecar_describes_the_export(small, small_onnx) -> None:
    model, run = small
    meta = json.loads(export.sidecar_path(small_onnx).read_text())
    assert meta["format"] == "onnx" and meta["int8"] is False and meta["opset"] == export.OPSET
    assert meta["arch"] == "conv-transformer-sqa"
    assert meta["config"] == model.checkpoint_config()
    assert (meta["window_samples"], meta["window_hop"], meta["sample_rate"]) == (32000, 16000, SR)
    assert meta["source_sha256"] == export.sha256(run / "model.safetensors")
    assert meta["n_params"] == count_params(model)
    assert meta["check_max_abs_diff_vs_torch"] < 1e-4
    # the rebuilt model from the sidecar's config has the same shape as the exported one
    rebuilt = student.ConvTransformerSQA(student.StudentConfig.from_dict(meta["config"]))
    assert count_params(rebuilt) == meta["n_params"]


def test_onnx_scorer_windows_like_forward(small, small_onnx) -> None:
    model, _ = small
    scorer = export.OnnxScorer(small_onnx)
    clips = [speechlike(9.0, 1, snr_db=10), speechlike(1.3, 2), 0.05 * np.random.default_rng(3)
             .standard_normal(int(2.0 * SR)).astype(np.float32), speechlike(5.51, 4, snr_db=0)]
    want = np.array([torch_clip(model, c)[0] for c in clips])
    for batch_size in (1, 8):
        np.testing.assert_allclose(scorer.predict(clips, batch_size), want, atol=1e-4, rtol=0)
    batch = np.stack([speechlike(6.0, 5), speechlike(6.0, 6, snr_db=5)])
    np.testing.assert_allclose(scorer(batch), torch_clip(model, batch), atol=1e-4, rtol=0)
    # the 9-s clip is really windowed: scoring only its first window gives another MOS
    assert abs(scorer.run_windows(clips[0][None, :32000])[0] - want[0]) > 1e-4


def test_window_override(small, tmp_path) -> None:
    model, run = small
    out = export.export(run, "onnx", tmp_path / "w1.onnx", window_s=1.0)
    scorer = export.OnnxScorer(out)
    assert scorer.window == export.Window(16000, 16000, SR)
    clip = speechlike(4.5, 7, snr_db=15)
    other = student.ConvTransformerSQA(model.config)
    other.load_state_dict(model.state_dict())
    other.eval().with_window(1.0)
    np.testing.assert_allclose(scorer.predict([clip]), torch_clip(other, clip), atol=1e-4, rtol=0)


def test_onnx_comes_from_the_current_exporter(small_onnx) -> None:
    """Opset 18 (the dynamo exporter's; the deprecated one wrote 17), one file without external
    data, the STFT as a real-valued convolution (no complex tensors, no STFT op)."""
    import onnx

    graph = onnx.load(str(small_onnx))
    assert [(o.domain, o.version) for o in graph.opset_import if o.domain == ""] == [("", export.OPSET)]
    assert export.OPSET >= 18
    assert not list(small_onnx.parent.glob("*.data"))
    ops = {n.op_type for n in graph.graph.node}
    assert "Conv" in ops and "STFT" not in ops and "DFT" not in ops


def test_onnx_file_does_not_name_this_machines_folders(small_onnx) -> None:
    """The exporter's per-node stack traces (file paths, line numbers) are dropped: a shipped file
    is the same wherever the checkout sits; the module names of each node stay."""
    import onnx

    from sqa import paths

    graph = onnx.load(str(small_onnx))
    keys = {p.key for n in graph.graph.node for p in n.metadata_props}
    assert export.STACK_TRACE_KEY not in keys and "pkg.torch.onnx.name_scopes" in keys
    assert str(paths.repo_root()).encode() not in small_onnx.read_bytes()


def test_pt2_equals_torch(small, small_pt2) -> None:
    model, _ = small
    out = small_pt2
    assert out.name == "model.pt2"
    program = torch.export.load(str(out)).module()
    for batch in (1, 3):
        for x in inputs(32000, batch, seed=10 + batch):
            with torch.no_grad():
                got = program(torch.from_numpy(x)).numpy()
            np.testing.assert_allclose(got, torch_window(model, x), atol=1e-5, rtol=0)
    meta = json.loads(export.sidecar_path(out).read_text())
    assert meta["format"] == "pt2" and meta["opset"] is None and meta["check_max_abs_diff_vs_torch"] < 1e-5


def _int8_ops(path) -> int:
    """Integer matrix products in an exported ONNX graph."""
    import onnx

    return sum(n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") for n in onnx.load(str(path)).graph.node)


def _twenty_inputs(window: int) -> np.ndarray:
    return np.concatenate([inputs(window, 2, seed=s)[s % 3] for s in range(10)])


def test_int8_within_tolerance(small, small_onnx, tmp_path) -> None:
    model, run = small
    int8 = export.export(run, "onnx", tmp_path / "model.int8.onnx", int8=True)
    assert export.default_out(run / "model.safetensors", "onnx", True).name == "model.int8.onnx"
    assert _int8_ops(small_onnx) == 0 and _int8_ops(int8) > 0
    x = _twenty_inputs(32000)
    assert len(x) == 20
    want = torch_window(model, x)
    got = export.OnnxScorer(int8).run_windows(x)
    diff = np.abs(got - want)
    assert diff.max() < export.INT8_TOLERANCE_MOS
    assert diff.max() > 0  # really quantised
    assert json.loads(export.sidecar_path(int8).read_text())["int8"] is True
    with pytest.raises(export.ExportError, match="--int8 is for ONNX only"):
        export.export(run, "pt2", tmp_path / "x.pt2", int8=True)
    assert not (tmp_path / "x.pt2").exists()


def test_missing_export_extra_is_named(small, tmp_path, monkeypatch, capsys) -> None:
    _, run = small
    real = export.extras.installed
    monkeypatch.setattr(export.extras, "installed", lambda module: module != "onnxscript" and real(module))
    with pytest.raises(export.extras.MissingExtra, match=r"onnxscript.*pip install 'sqa\[export\]'"):
        export.export(run, "onnx", tmp_path / "m.onnx")
    assert cli.main(["export", "--run", str(run), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 2
    assert "sqa[export]" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


def test_cli_writes_default_file_and_reports(small, tmp_path, capsys) -> None:
    _, run = small
    out = tmp_path / "cli" / "m.onnx"
    assert cli.main(["export", "--run", str(run / "model.safetensors"), "--format", "onnx", "--out", str(out)]) == 0
    assert out.is_file() and export.sidecar_path(out).is_file()
    assert "wrote" in capsys.readouterr().out
    assert not list(out.parent.glob(".*tmp*"))  # no temporary leftovers
    assert cli.main(["export", "--run", str(tmp_path / "nope"), "--format", "onnx"]) == 2
    assert "no such run folder or checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["export", "--run", str(run), "--format", "tflite"])


def test_bad_sources_fail_clearly(small, tmp_path) -> None:
    _, run = small
    empty = tmp_path / "empty-run"
    empty.mkdir()
    with pytest.raises(export.ExportError, match="no model.safetensors"):
        export.export(empty, "onnx")
    with pytest.raises(export.ExportError, match="has no forward_window"):
        export.export_model(torch.nn.Linear(4, 1), tmp_path / "x.onnx", window=export.Window(320, 160))
    with pytest.raises(export.ExportError, match="--window-s must be a positive"):
        export.export(run, "onnx", tmp_path / "x.onnx", window_s=-1.0)
    with pytest.raises(export.ExportError, match="shorter than the model's STFT window"):
        export.export(run, "onnx", tmp_path / "x.onnx", window_s=0.001)
    with pytest.raises(export.ExportError, match="format 'tflite'"):
        export.export(run, "tflite")
    with pytest.raises(export.ExportError, match="--opset 17: the ONNX exporter writes opset 18 or later"):
        export.export(run, "onnx", tmp_path / "x.onnx", opset=17)
    not_ckpt = tmp_path / "model.safetensors"
    not_ckpt.write_bytes(b"\x80\x04pickle")
    with pytest.raises(export.ExportError, match="not a safetensors file"):
        export.export(not_ckpt, "onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_onnx_scorer_errors(small_onnx, tmp_path) -> None:
    lonely = tmp_path / "lonely.onnx"
    lonely.write_bytes(small_onnx.read_bytes())
    with pytest.raises(export.ExportError, match="sidecar lonely.onnx.json is missing"):
        export.OnnxScorer(lonely)
    export.sidecar_path(lonely).write_text("{}")
    with pytest.raises(export.ExportError, match="not a valid export sidecar"):
        export.OnnxScorer(lonely)
    scorer = export.OnnxScorer(small_onnx)
    with pytest.raises(export.ExportError, match=r"expected windows of shape \(n, 32000\)"):
        scorer.run_windows(np.zeros((1, 100), np.float32))
    with pytest.raises(ValueError, match="waveform 1 must be a non-empty 1-D array"):
        scorer.predict([np.zeros(100, np.float32), np.zeros(0, np.float32)])


@pytest.mark.slow
def test_released_distillmos_v7_exports_exactly(tmp_path) -> None:
    """The released DistillMOS v7 weights at their own 7.68-s window: ONNX and .pt2 equal PyTorch,
    OnnxScorer equals forward on a long clip, int8 ONNX keeps PCC > 0.98 over 20 inputs."""
    model = student.distillmos_v7(pretrained=True)
    ckpt = checkpoint.save(tmp_path / "model.safetensors", model, model.arch, model.checkpoint_config())
    window = model.config.window_samples
    scorer = export.OnnxScorer(export.export(ckpt, "onnx"))
    assert scorer.window.samples == window == 122880
    for batch in (1, 3):
        for x in inputs(window, batch, seed=20 + batch):
            np.testing.assert_allclose(scorer.run_windows(x), torch_window(model, x), atol=1e-4, rtol=0)
    clip = speechlike(12.0, 3, snr_db=10)
    np.testing.assert_allclose(scorer.predict([clip]), torch_clip(model, clip), atol=1e-4, rtol=0)
    program = torch.export.load(str(export.export(ckpt, "pt2"))).module()
    x = inputs(window, 3, seed=30)[1]
    with torch.no_grad():
        np.testing.assert_allclose(program(torch.from_numpy(x)).numpy(), torch_window(model, x), atol=1e-5, rtol=0)
    int8 = export.OnnxScorer(export.export(ckpt, "onnx", int8=True))
    snrs = [None, 30, 20, 15, 10, 5, 0, -5]
    x = np.stack([speechlike(3.0, s, snr_db=snrs[s % len(snrs)]) for s in range(20)])
    x = np.pad(x, ((0, 0), (0, window - x.shape[1])))
    want, got = torch_window(model, x), int8.run_windows(x)
    assert np.std(want) > 0.1  # the inputs span a real MOS range
    assert np.corrcoef(want, got)[0, 1] > 0.98
    assert np.abs(got - want).max() < export.INT8_TOLERANCE_MOS
