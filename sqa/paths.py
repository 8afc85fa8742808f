"""The only place where run and artifact paths are built.

Environment variables:
- ``SQA_OUTPUTS``: where runs land (default ``<repo>/outputs``).
- ``SQA_DATA_ROOT``: where real corpora live (paper profile; default ``<repo>/data``).

``<repo>`` is the checkout the package lives in (:func:`checkout`). A package installed without
one (``pip install .`` into site-packages) has no notebooks; its default outputs and data folders
are ``./outputs`` and ``./data`` under the current folder (:func:`repo_root`), and whatever needs
the notebooks raises :class:`NoCheckoutError`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

PROFILES = ("smoke", "demo", "paper", "release")
_TAG_OK = re.compile(r"[^A-Za-z0-9._+-]+")


class NoCheckoutError(RuntimeError):
    """The numbered notebooks were asked for, but the package is installed without a checkout."""


def _package_parent() -> Path:
    return Path(__file__).resolve().parent.parent


def checkout() -> Path | None:
    """The checkout this package lives in (the folder holding ``pyproject.toml`` and
    ``notebooks/`` beside ``sqa/``), or None for an installed package (site-packages)."""
    root = _package_parent()
    return root if (root / "pyproject.toml").is_file() and (root / "notebooks").is_dir() else None


def repo_root() -> Path:
    """The checkout, or for a package installed without one the current folder: where the default
    ``outputs/`` and ``data/`` are and what relative paths in run records are relative to."""
    return checkout() or Path.cwd()


def outputs_root() -> Path:
    env = os.environ.get("SQA_OUTPUTS")
    return Path(env).expanduser().resolve() if env else repo_root() / "outputs"


def data_root() -> Path:
    env = os.environ.get("SQA_DATA_ROOT")
    return Path(env).expanduser().resolve() if env else repo_root() / "data"


def notebooks_dir() -> Path:
    """``<checkout>/notebooks``; :class:`NoCheckoutError` for a package installed without a checkout."""
    root = checkout()
    if root is None:
        raise NoCheckoutError(
            f"the numbered notebooks (sqa run, sqa reproduce, sqa stages) come only with a checkout of the "
            f"sqa repository, and this sqa is installed at {_package_parent() / 'sqa'} without one: clone the "
            "repository and run `pip install -e '.[demo]'` in it (sqa score, sqa export and sqa.load work "
            "from any install)")
    return root / "notebooks"


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise ValueError(f"profile={profile!r} is not one of {', '.join(PROFILES)}")
    return profile


def profile_dir(profile: str) -> Path:
    return outputs_root() / check_profile(profile)


def stage_dir(profile: str, stage: str) -> Path:
    """``outputs/<profile>/<NN_stage>``."""
    if not re.fullmatch(r"\d\d_[a-z0-9_]+", stage):
        raise ValueError(f"stage={stage!r} must look like '04_distill'")
    return profile_dir(profile) / stage


def run_dir(profile: str, stage: str, tag: str) -> Path:
    """``outputs/<profile>/<NN_stage>/<tag>``; the tag is made filesystem-safe."""
    return stage_dir(profile, stage) / safe_tag(tag)


def safe_tag(tag: str) -> str:
    """``tag`` as a folder name: ``%`` spelled ``pct`` (size 29% -> ``size-29pct``), every other
    character outside letters, digits, ``.``, ``_``, ``+``, ``-`` replaced by ``-``."""
    cleaned = _TAG_OK.sub("-", str(tag).replace("%", "pct")).strip("-.")
    if not cleaned:
        raise ValueError(f"run tag {tag!r} has no usable characters")
    return cleaned


def demo_data_dir(profile: str) -> Path:
    """Where the generated demo/smoke corpora are built."""
    return profile_dir(profile) / "data"


def registry_path() -> Path:
    return outputs_root() / "registry.jsonl"


def portable(path: Path | str) -> str:
    """A path as stored in run records and manifests' root tables: relative to the outputs
    folder, the data root or the repo when inside one of them (so records survive a move)."""
    p = Path(path).resolve()
    for prefix, base in (("$SQA_OUTPUTS", outputs_root()), ("$SQA_DATA_ROOT", data_root())):
        if p.is_relative_to(base):
            return f"{prefix}/{p.relative_to(base).as_posix()}"
    if p.is_relative_to(repo_root()):
        return p.relative_to(repo_root()).as_posix()
    return p.as_posix()


def resolve_portable(text: str) -> Path:
    """Inverse of :func:`portable`."""
    for prefix, base in (("$SQA_OUTPUTS/", outputs_root()), ("$SQA_DATA_ROOT/", data_root())):
        if text.startswith(prefix):
            return base / text[len(prefix):]
    p = Path(text)
    return p if p.is_absolute() else repo_root() / p
