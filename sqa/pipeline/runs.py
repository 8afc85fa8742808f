"""Run folders: ``outputs/<profile>/<NN_stage>/<tag>/`` that explain themselves.

A notebook starts its run right after its parameters cell::

    run = runs.start("04_distill", globals(), tag=("size", "mode", "labeled_mix", "seed"))

``start`` reads the notebook's declared parameters, rejects names papermill injected that the
notebook does not declare (papermill itself only warns), checks types and allowed values, fills
``None`` (the profile-default sentinel) with the profile's defaults (``run.resolved``, see
``sqa.pipeline.profiles``) and writes ``params.json`` and ``env.json``. ``run.finish(metrics)``
writes ``metrics.json`` and appends one line to ``outputs/registry.jsonl``. Every file is
written atomically.

**Identity.** A run's identity is its stage, all its resolved parameters and the identities of
its input runs (the runs its ``*_run`` parameters name, :data:`INPUT_PARAMS`, resolved when the run
starts: an empty one is the latest run of that stage). The folder is named by the readable tag;
when that folder already holds a run of another identity, the new run goes to
``<tag>_id-<first 8 hex of its identity>`` instead (and says what differs), so a re-run after a
new teacher or pool never re-enters, resumes or returns the old run.
"""

from __future__ import annotations

import ast
import hashlib
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
#: notebook parameters that name an input run, and the stage whose run they name
INPUT_PARAMS = {"manifest_run": "01_merge_datasets", "teacher_run": "02_teacher", "pseudo_run": "03_pseudo_labels"}
#: (stage, input parameter) -> (parameter, value) under which the stage does not read that input:
#: it is then not part of the run's identity (a new run of that stage leaves the run alone)
UNREAD_INPUTS = {("05_prune", "pseudo_run"): ("finetune_on", "labeled")}
#: parameters added after runs were made, with the value that does what those runs did: at that
#: value a parameter is left out of the identity, so the earlier runs keep theirs
LATER_PARAMS = {"04_distill": {"hint_weight": 0.0}}
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
    identity: str = ""  # hash of ``identity_record``
    identity_record: dict[str, Any] = field(default_factory=dict)  # stage, parameters, input identities
    planned: dict[str, Path] = field(default_factory=dict)  # stage -> input run resolved at start
    input_identities: dict[str, str | None] = field(default_factory=dict)

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
        stage = _stage_of(run_dir)
        planned = self.planned.get(stage) if stage else None
        if planned is not None and planned.resolve() != run_dir.resolve():
            raise ValueError(f"input {name!r}: this run's identity was fixed with {stage} run {planned} when it "
                             f"started, but it now reads {run_dir} (a newer run finished meanwhile?); run it again")
        self.inputs[name] = paths.portable(run_dir)
        self.input_identities[name] = run_identity(run_dir)
        self._write_params()
        return run_dir

    def _write_params(self) -> None:
        atomic.write_json(self.dir / "params.json", {
            "stage": self.stage, "profile": self.profile, "tag": self.tag,
            "params": self.params, "resolved": self.resolved, "inputs": self.inputs,
            "identity": self.identity, "identity_record": self.identity_record,
            "input_identities": self.input_identities})

    def readers(self) -> list[str]:
        """The folders of finished runs that read this run (their records name it as an input)."""
        me = paths.portable(self.dir)
        return [r["dir"] for r in registry(self.profile) if me in (r.get("inputs") or {}).values()]

    def finish(self, metrics: Mapping[str, Any]) -> Path:
        """Write ``metrics.json`` and register the run; returns the metrics file."""
        out = atomic.write_json(self.dir / "metrics.json", dict(metrics))
        atomic.append_line(paths.registry_path(), json.dumps({
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "profile": self.profile,
            "stage": self.stage, "tag": self.tag, "dir": paths.portable(self.dir), "identity": self.identity,
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
    params = notebooks.validate(nb_stage, values, declared)
    profile = paths.check_profile(params.get("profile", "demo"))
    resolved = profiles.resolve(profile, nb_stage, params)
    tag_text = make_tag(resolved, tag)
    planned = planned_inputs(profile, nb_stage, resolved)
    record = identity_record(nb_stage, resolved, planned)
    ident = identity_of(record)
    run = Run(profile, nb_stage, tag_text, folder_for(profile, nb_stage, tag_text, ident, record), params,
              resolved=resolved, identity=ident, identity_record=record,
              planned={INPUT_PARAMS[k]: v for k, v in planned.items() if v is not None})
    run.dir.mkdir(parents=True, exist_ok=True)
    run._write_params()
    atomic.write_json(run.dir / "env.json", environment())
    record = os.environ.get(RUN_RECORD_ENV)
    if record:
        atomic.write_text(record, str(run.dir))
    return run


# ---------------------------------------------------------------- identity


def planned_inputs(profile: str, stage: str, resolved: Mapping[str, Any]) -> dict[str, Path | None]:
    """The input run each ``*_run`` parameter of ``stage`` names (:data:`INPUT_PARAMS`): the given
    folder or tag, or the latest run of that stage when empty (None when there is none yet, or when
    the stage does not read it with these parameters, :data:`UNREAD_INPUTS`)."""
    out: dict[str, Path | None] = {}
    for name, input_stage in INPUT_PARAMS.items():
        if name not in resolved:
            continue
        unread = UNREAD_INPUTS.get((stage, name))
        if unread is not None and resolved.get(unread[0]) == unread[1]:
            out[name] = None
            continue
        try:
            out[name] = resolve_input(profile, input_stage, resolved[name] or "")
        except FileNotFoundError:
            if resolved[name]:
                raise
            out[name] = None
    return out


def identity_record(stage: str, resolved: Mapping[str, Any], planned: Mapping[str, Path | None]) -> dict[str, Any]:
    """What a run's identity is made of: its stage, every resolved parameter (the input-run
    parameters replaced by the identities of the runs they resolved to)."""
    later = LATER_PARAMS.get(stage, {})
    return {"stage": stage,
            "params": {k: v for k, v in sorted(resolved.items())
                       if k not in INPUT_PARAMS and not (k in later and v == later[k])},
            "inputs": {k: (run_identity(d) if d is not None else None) for k, d in sorted(planned.items())}}


def identity_of(record: Mapping[str, Any]) -> str:
    text = json.dumps(record, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _params_json(run_dir: Path) -> dict[str, Any] | None:
    f = Path(run_dir) / "params.json"
    return json.loads(f.read_text()) if f.is_file() else None


def _stage_of(run_dir: Path) -> str | None:
    p = _params_json(run_dir)
    return p.get("stage") if p else None


def run_identity(run_dir: Path | str) -> str:
    """The identity recorded in a run folder; a run made before identities were recorded gets one
    from the whole of its ``params.json`` (so two such runs still differ when their params do)."""
    p = _params_json(Path(run_dir))
    if p is None:
        return "no-params:" + paths.portable(Path(run_dir))
    return p.get("identity") or "legacy-" + identity_of(p)


def identity_diff(was: Mapping[str, Any] | None, now: Mapping[str, Any]) -> list[str]:
    """What differs between two identity records, as ``name: old -> new`` lines."""
    if not was:
        return ["the folder's run predates run identities"]
    out = []
    for part in ("params", "inputs"):
        a, b = was.get(part, {}), now.get(part, {})
        out += [f"{'input ' if part == 'inputs' else ''}{k}: {a.get(k)!r} -> {b.get(k)!r}"
                for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]
    return out or ["stage"]


def folder_for(profile: str, stage: str, tag: str, ident: str, record: Mapping[str, Any]) -> Path:
    """The run folder: ``<tag>`` if it is free or holds this identity, else ``<tag>_id-<hash8>``."""
    base = paths.run_dir(profile, stage, tag)
    held = _params_json(base)
    if held is None or held.get("identity") == ident:
        return base
    alt = paths.run_dir(profile, stage, f"{tag}_id-{ident[:8]}")
    other = _params_json(alt)
    if other is not None and other.get("identity") != ident:
        raise ValueError(f"{alt} holds a run of identity {other.get('identity')}, not {ident}: remove that folder")
    print(f"{base} holds another run ({'; '.join(identity_diff(held.get('identity_record'), record))}); "
          f"this run goes to {alt}", file=sys.stderr)
    return alt


def lineage(run_dir: Path | str) -> dict[str, set[str]]:
    """Every run a run descends from, by stage (portable folders), the run itself included: e.g.
    a student's ``01_merge_datasets`` (its manifest) and ``02_teacher`` (the teacher of its pseudo-labels)."""
    out: dict[str, set[str]] = {}
    todo, seen = [Path(run_dir)], set()
    while todo:
        folder = todo.pop()
        key = paths.portable(folder)
        if key in seen:
            continue
        seen.add(key)
        p = _params_json(folder)
        if p is None:
            continue
        out.setdefault(p["stage"], set()).add(key)
        todo += [paths.resolve_portable(d) for d in p.get("inputs", {}).values()]
    return out


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
    """Commit and dirtiness of the checkout the package lives in (None for an installed package)."""
    root = paths.checkout()

    def git(*args: str) -> str | None:
        if root is None:
            return None
        try:
            res = subprocess.run(["git", *args], cwd=root, capture_output=True,
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
    tagged = [r for r in registry(profile, stage) if r.get("tag") == given]
    if tagged:  # the latest finished run of that tag (its folder may carry an identity suffix)
        return paths.resolve_portable(tagged[-1]["dir"])
    by_tag = paths.run_dir(profile, stage, given)
    if by_tag.is_dir():
        return by_tag
    raise FileNotFoundError(f"input run {given!r} is neither a folder nor a tag of {stage} ({by_tag})")
