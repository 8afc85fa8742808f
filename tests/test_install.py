"""What an install gives: the core dependencies score audio without any extra (simulated by a Python
that cannot see the optional packages), a missing extra is named, a wheel ships the shipped
students and reads its version from sqa.__version__, `sqa --version` and `python -m sqa` work, and a
package installed without a checkout keeps its outputs in the current folder and says the notebooks
need a checkout."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import sqa
from sqa import cli, export, extras, paths, pretrained
from sqa.models import checkpoint, student
from sqa.pipeline import runs

REPO = Path(__file__).resolve().parents[1]
CORE = {"torch", "torchaudio", "safetensors", "numpy", "soundfile", "onnxruntime", "tqdm"}


def dist_name(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower()


def test_pyproject_core_is_light_and_every_optional_package_is_in_its_extra() -> None:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = {dist_name(d) for d in project["dependencies"]}
    assert core == CORE
    extras_of = {k: {dist_name(d) for d in v} for k, v in project["optional-dependencies"].items()}
    for module, (dist, extra) in extras.PACKAGES.items():
        assert dist in extras_of[extra], f"{module}: {dist} is not in the {extra} extra"
    everything = core.union(*extras_of.values())
    assert not everything & {"accelerate", "requests"}  # nothing imports them
    assert "sqa[baselines,export,notebooks,demo]" in project["optional-dependencies"]["dev"]
    assert "sqa[notebooks]" in project["optional-dependencies"]["demo"]
    assert "sqa[baselines]" in project["optional-dependencies"]["notebooks"]
    assert "version" not in project and project["dynamic"] == ["version"]


_LIGHT = r'''
import importlib.util, json, sys
from pathlib import Path

import numpy as np

import sqa
from sqa import cli, extras, pretrained

tmp = Path(sys.argv[1])
pretrained.WEIGHTS_DIR = tmp / "weights"
clip = (0.3 * np.sin(2 * np.pi * 150 * np.arange(48000) / 16000) * np.hanning(48000)).astype(np.float32)
weights = str(tmp / "weights" / f"{pretrained.DEFAULT}.safetensors")
out = {
    "optional_found": sorted(m for m in extras.PACKAGES if importlib.util.find_spec(m) is not None),
    "load": sqa.load().score(clip, sample_rate=16000),
    "onnx": sqa.load(tmp / "model.onnx").score(clip, sample_rate=16000),
    "score": cli.main(["score", str(tmp / "a.wav"), "--out", str(tmp / "s.jsonl")]),
    "baseline": cli.main(["score", str(tmp / "a.wav"), "--model", "distillmos"]),
    "export_onnx": cli.main(["export", "--run", weights, "--format", "onnx", "--out", str(tmp / "x.onnx")]),
    "export_pt2": cli.main(["export", "--run", weights, "--format", "pt2", "--out", str(tmp / "x.pt2")]),
    "run": cli.main(["run", "04", "-p", "profile", "smoke"]),
}
print(json.dumps(out))
'''


def core_only_site(folder: Path) -> Path:
    """A site-packages folder holding links to every entry of this environment's, except the
    optional packages (:data:`sqa.extras.PACKAGES`, by import and distribution name) and the
    ``.pth`` files: a Python started with ``-S`` and this folder on its path has the core only."""
    hidden = {n.lower() for n in extras.PACKAGES} | {d.replace("-", "_").lower() for d, _ in extras.PACKAGES.values()}
    folder.mkdir()
    for site in {Path(sysconfig.get_paths()[k]) for k in ("purelib", "platlib")}:
        for entry in site.iterdir():
            key = re.split(r"[-.]", entry.name, maxsplit=1)[0].lower()
            if key not in hidden and entry.suffix != ".pth" and not (folder / entry.name).exists():
                (folder / entry.name).symlink_to(entry)
    return folder


def test_the_core_alone_scores_and_names_each_missing_extra(tmp_path) -> None:
    torch.manual_seed(5)
    model = student.ConvTransformerSQA(student.preset("50k")).with_window(2.0).eval()
    (tmp_path / "weights").mkdir()
    ckpt = checkpoint.save(tmp_path / "weights" / f"{pretrained.DEFAULT}.safetensors", model, model.arch,
                           model.checkpoint_config())
    export.export(ckpt, "onnx", tmp_path / "model.onnx")
    sf.write(tmp_path / "a.wav", 0.1 * np.random.default_rng(0).standard_normal(32000), 16000)
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{core_only_site(tmp_path / 'site')}"}
    proc = subprocess.run([sys.executable, "-S", "-c", _LIGHT, str(tmp_path)], capture_output=True, text=True,
                          timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["optional_found"] == []  # the simulation holds: no optional package can be found
    assert 1.0 <= out["load"] <= 5.0 and out["onnx"] == pytest.approx(out["load"], abs=1e-4)
    assert out["score"] == 0
    assert json.loads((tmp_path / "s.jsonl").read_text())["mos"] == pytest.approx(out["load"], abs=0.5)
    assert out["export_pt2"] == 0 and (tmp_path / "x.pt2").is_file()  # torch.export needs no extra
    assert (out["baseline"], out["export_onnx"], out["run"]) == (2, 2, 2)
    for extra in ("baselines", "export", "notebooks"):
        assert f"pip install 'sqa[{extra}]'" in proc.stderr
    assert not (tmp_path / "x.onnx").exists()


def test_a_wheel_ships_the_students_and_reads_its_version(tmp_path) -> None:
    pytest.importorskip("setuptools")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "sqa", src / "sqa", ignore=shutil.ignore_patterns("__pycache__"))
    shipped = [f"{pretrained.NAMES[0]}.safetensors", f"{pretrained.NAMES[0]}.onnx", f"{pretrained.NAMES[0]}.onnx.json"]
    for name in shipped:
        (src / "sqa" / "weights" / name).write_text("stand-in")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("sqa-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {f"sqa/weights/{n}" for n in shipped} <= set(names)
    assert {"sqa/__main__.py", "sqa/pretrained.py", "sqa/extras.py"} <= set(names)
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert f"\nVersion: {sqa.__version__}\n" in meta
    core = {dist_name(line.split(":", 1)[1].strip()) for line in meta.splitlines()
            if line.startswith("Requires-Dist:") and "extra ==" not in line}
    assert core == CORE


def test_version_and_python_dash_m(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"sqa {sqa.__version__}"
    proc = subprocess.run([sys.executable, "-m", "sqa", "--version"], capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stdout.strip()) == (0, f"sqa {sqa.__version__}")
    proc = subprocess.run([sys.executable, "-m", "sqa", "score", "x.wav", "--model", "no-such-model"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "sqa score: error: --model 'no-such-model'" in proc.stderr


def test_a_checkout_keeps_its_folders(monkeypatch) -> None:
    monkeypatch.delenv("SQA_OUTPUTS", raising=False)
    monkeypatch.delenv("SQA_DATA_ROOT", raising=False)
    assert paths.checkout() == REPO == paths.repo_root()
    assert (paths.outputs_root(), paths.data_root(), paths.notebooks_dir()) == (
        REPO / "outputs", REPO / "data", REPO / "notebooks")
    assert paths.portable(REPO / "notebooks" / "x.ipynb") == "notebooks/x.ipynb"


def test_an_installed_package_uses_the_current_folder(tmp_path, monkeypatch, capsys) -> None:
    site = tmp_path / "site-packages"
    site.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setattr(paths, "_package_parent", lambda: site)
    monkeypatch.delenv("SQA_OUTPUTS", raising=False)
    monkeypatch.delenv("SQA_DATA_ROOT", raising=False)
    monkeypatch.chdir(work)
    assert paths.checkout() is None and paths.repo_root() == work
    assert (paths.outputs_root(), paths.data_root()) == (work / "outputs", work / "data")
    run = paths.run_dir("demo", "04_distill", "size-1M")
    assert run == work / "outputs" / "demo" / "04_distill" / "size-1M"
    assert paths.resolve_portable(paths.portable(run)) == run
    monkeypatch.setenv("SQA_OUTPUTS", str(tmp_path / "elsewhere"))
    assert paths.outputs_root() == tmp_path / "elsewhere"
    assert runs.git_state() == {"commit": None, "dirty": None}
    with pytest.raises(paths.NoCheckoutError, match="come only with a checkout"):
        paths.notebooks_dir()
    for argv in (["run", "04_distill", "-p", "size", "50k"], ["stages"]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert "come only with a checkout of the sqa repository" in err and str(site / "sqa") in err
    (site / "pyproject.toml").write_text("")
    (site / "notebooks").mkdir()
    assert paths.checkout() == site  # a checkout is a pyproject.toml with notebooks beside the package
