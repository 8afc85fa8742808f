"""Run folders: ``outputs/<profile>/<NN_stage>/<tag>/`` that explain themselves.

A notebook starts its run right after its parameters cell::

    run = runs.start("04_distill", globals(), tag=("size", "mode", "labeled_mix", "seed"))

``start`` reads the notebook's declared parameters, rejects names papermill injected that the
notebook does not declare (papermill itself only warns), checks types, fills empty values with
the profile's defaults (``run.resolved``, see ``sqa.pipeline.profiles``) and writes ``params.json`` and
``env.json``. ``run.finish(metrics)`` writes ``metrics.json`` and appends
one line to ``outputs/registry.jsonl``. Every file is written atomically.
"""

from __future__ import annotations

import ast
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Mapping

from sqa import atomic, paths
from sqa.pipeline import notebooks, profiles, progress

#: set by ``sqa run``: the file where ``start`` records its run folder
RUN_RECORD_ENV = "SQA_RUN_RECORD"
_PACKAGES = ("sqa", "torch", "torchaudio", "transformers", "numpy", "scipy", "pandas",
             "onnxruntime", "distillmos", "xls-r-sqa", "papermill")


@dataclass
class Run:
    profile: str
    stage: str
    tag: str
    dir: Path
    params: dict[str, Any]
    inputs: dict[str, str] = field(default_factory=dict)
    resolved: dict[str, Any] = field(default_factory=dict)  # params with profile defaults filled in

    def path(self, *parts: str) -> Path:
        """A path inside the run folder (parent folders created)."""
        p = self.dir.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def use_input(self, name: str, run_dir: Path | str) -> Path:
        """Record that this run reads another run's folder (lineage)."""
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise FileNotFoundError(f"input {name!r}: run folder {run_dir} does not exist")
        self.inputs[name] = paths.portable(run_dir)
        self._write_params()
        return run_dir

    def _write_params(self) -> None:
        atomic.write_json(self.dir / "params.json", {
            "stage": self.stage, "profile": self.profile, "tag": self.tag,
            "params": self.params, "resolved": self.resolved, "inputs": self.inputs})

    def finish(self, metrics: Mapping[str, Any]) -> Path:
        """Write ``metrics.json`` and register the run; returns the metrics file."""
        out = atomic.write_json(self.dir / "metrics.json", dict(metrics))
        atomic.append_line(paths.registry_path(), json.dumps({
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "profile": self.profile,
            "stage": self.stage, "tag": self.tag, "dir": paths.portable(self.dir),
            "params": self.params, "resolved": self.resolved, "inputs": self.inputs}, default=str))
        return out


def make_tag(params: Mapping[str, Any], keys: Iterable[str]) -> str:
    """Readable, deterministic tag: ``size-1M_mix-0.2_seed-0``; ``main`` without keys."""
    parts = []
    for k in keys:
        v = params[k]
        v = "+".join(map(str, v)) if isinstance(v, (list, tuple)) else v
        parts.append(f"{k.replace('_', '-')}-{v}")
    return paths.safe_tag("_".join(parts)) if parts else "main"


def injected_names(namespace: Mapping[str, Any]) -> list[str]:
    """Names that papermill injected into this kernel (its ``# Parameters`` cell)."""
    names: list[str] = []
    for src in namespace.get("In", []) or []:
        if isinstance(src, str) and src.lstrip().startswith("# Parameters"):
            for node in ast.parse(src).body:
                if isinstance(node, ast.Assign):
                    names += [t.id for t in node.targets if isinstance(t, ast.Name)]
    return names


def start(stage: str, namespace: Mapping[str, Any], tag: Iterable[str] = (),
          overrides: Mapping[str, Any] | None = None) -> Run:
    """Start (or re-enter) the run of ``stage`` for the parameters found in ``namespace``."""
    progress.text_bars_if_requested()
    nb_stage = notebooks.path(stage).stem
    declared = notebooks.declared(nb_stage)
    notebooks.check_names(nb_stage, injected_names(namespace), declared)
    values = {**{n: namespace[n] for n in declared if n in namespace}, **(overrides or {})}
    notebooks.check_names(nb_stage, list(values), declared)
    params = {n: notebooks.check_value(nb_stage, p, values.get(n, p.default)) for n, p in declared.items()}
    profile = paths.check_profile(params.get("profile", "demo"))
    resolved = profiles.resolve(profile, nb_stage, params)
    tag_text = make_tag(resolved, tag)
    run = Run(profile, nb_stage, tag_text, paths.run_dir(profile, nb_stage, tag_text), params,
              resolved=resolved)
    run.dir.mkdir(parents=True, exist_ok=True)
    run._write_params()
    atomic.write_json(run.dir / "env.json", environment())
    record = os.environ.get(RUN_RECORD_ENV)
    if record:
        atomic.write_text(record, str(run.dir))
    return run


def environment() -> dict[str, Any]:
    """Package versions, git commit, device: enough to say what produced a run."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"python": sys.version.split()[0], "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "packages": versions, "git": git_state(),
            "device": device_name()}


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            res = subprocess.run(["git", *args], cwd=paths.repo_root(), capture_output=True,
                                 text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return res.stdout.strip() if res.returncode == 0 else None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None}


def device_name() -> str:
    """The accelerator a run would use."""
    try:
        import torch
    except ImportError:
        return "cpu"
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def registry(profile: str | None = None, stage: str | None = None) -> list[dict[str, Any]]:
    """Finished runs, oldest first; a torn or foreign line is reported, not skipped silently."""
    f = paths.registry_path()
    if not f.is_file():
        return []
    rows = []
    for i, line in enumerate(f.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{f}, line {i}: not a JSON record ({e})") from None
        if (profile is None or row["profile"] == profile) and (stage is None or row["stage"] == stage):
            rows.append(row)
    return rows


def latest(profile: str, stage: str) -> Path:
    """The folder of the most recently finished run of a stage: a later stage's default input."""
    rows = registry(profile, stage)
    if not rows:
        raise FileNotFoundError(f"no finished run of {stage} for profile {profile!r}: "
                                f"run notebooks/{stage}.ipynb (or `sqa run {stage} -p profile {profile}`) first")
    return paths.resolve_portable(rows[-1]["dir"])


def resolve_input(profile: str, stage: str, given: str) -> Path:
    """A stage input: an explicit run folder (path or tag) or, if empty, the latest run."""
    if not given:
        return latest(profile, stage)
    candidate = Path(given)
    if candidate.is_dir():
        return candidate.resolve()
    by_tag = paths.run_dir(profile, stage, given)
    if by_tag.is_dir():
        return by_tag
    raise FileNotFoundError(f"input run {given!r} is neither a folder nor a tag of {stage} ({by_tag})")
