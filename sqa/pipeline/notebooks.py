"""The numbered notebooks as data: where they are, their parameters cell, type checks.

The parameters cell holds literal, annotated assignments, one per line::

    size: str = "1M"  # target parameter count: 10k ... 4M
    epochs: int = None  # passes over the data; None: profile default

``None`` (:data:`PROFILE_DEFAULT`) is the one sentinel for "the profile's default": only a
parameter declared with it accepts it, and every other value, 0 and "" included, is taken as
given. :data:`RULES` declares the allowed values of each parameter once; :func:`validate` checks
them (``sqa run`` before the first cell, ``sqa.pipeline.runs.start`` again inside the kernel).
"""

from __future__ import annotations

import ast
import difflib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from sqa.paths import PROFILES, notebooks_dir

TYPES: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool, "list": list, "dict": dict}
#: the value of a parameter that stands for "the profile's default" (``sqa.pipeline.profiles.resolve``)
PROFILE_DEFAULT = None
#: what ``-p name default`` means on the command line for such a parameter
CLI_DEFAULT_WORDS = ("default", "none")


class ParameterError(ValueError):
    """A parameter that the notebook does not declare, or a value of the wrong type."""


@dataclass(frozen=True)
class Param:
    name: str
    type: type
    default: Any
    help: str

    @property
    def takes_profile_default(self) -> bool:
        """Declared with the sentinel: ``None`` means the profile's default."""
        return self.default is PROFILE_DEFAULT


def stages() -> list[str]:
    """Stage names (``01_merge_datasets`` ...) in order."""
    return sorted(p.stem for p in notebooks_dir().glob("[0-9][0-9]_*.ipynb"))


def path(stage: str) -> Path:
    """The notebook of a stage, by full name (``04_distill``) or number (``04``)."""
    matches = [s for s in stages() if s == stage or s.split("_", 1)[0] == stage]
    if len(matches) != 1:
        raise ParameterError(f"no notebook named {stage!r}; known: {', '.join(stages())}")
    return notebooks_dir() / f"{matches[0]}.ipynb"


def parameters_source(nb_path: Path) -> str:
    nb = json.loads(Path(nb_path).read_text())
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ParameterError(f"{nb_path}: expected exactly one cell tagged 'parameters', found {len(cells)}")
    src = cells[0]["source"]
    return "".join(src) if isinstance(src, list) else src


def parse_parameters(source: str, where: str = "parameters cell") -> dict[str, Param]:
    """Declared parameters of a parameters cell: literal annotated assignments only."""
    tree = ast.parse(source)
    lines = source.splitlines()
    out: dict[str, Param] = {}
    for node in tree.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(node.annotation, ast.Name) and node.value is not None):
            raise ParameterError(f"{where}, line {node.lineno}: only `name: type = literal` lines are allowed")
        type_name = node.annotation.id
        if type_name not in TYPES:
            raise ParameterError(f"{where}, line {node.lineno}: type {type_name!r} not in {sorted(TYPES)}")
        try:
            default = ast.literal_eval(node.value)
        except ValueError:
            raise ParameterError(f"{where}, line {node.lineno}: {node.target.id} must be a literal "
                                 "(derive values in the next cell)") from None
        if default is not PROFILE_DEFAULT and not _is_type(default, TYPES[type_name]):
            raise ParameterError(f"{where}, line {node.lineno}: {node.target.id} declares {type_name} "
                                 f"but its default is {default!r}")
        line = lines[node.lineno - 1]
        comment = line.split("#", 1)[1].strip() if "#" in line else ""
        out[node.target.id] = Param(node.target.id, TYPES[type_name], default, comment)
    return out


def declared(stage: str) -> dict[str, Param]:
    nb = path(stage)
    return parse_parameters(parameters_source(nb), where=f"{nb.name} parameters cell")


def _is_type(value: Any, t: type) -> bool:
    if t is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, t) and not (t is int and isinstance(value, bool))


def check_value(stage: str, param: Param, value: Any) -> Any:
    """Coerce ``value`` to the declared type where lossless; otherwise raise. ``None`` passes only
    for a parameter declared with the profile-default sentinel."""
    t = param.type
    if value is PROFILE_DEFAULT:
        if param.takes_profile_default:
            return value
        raise ParameterError(f"{stage}: parameter {param.name!r} has no profile default; give a {t.__name__}")
    if t is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if t is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # papermill turns `-p tag 10` into an int
    if isinstance(value, t) and not (t is int and isinstance(value, bool)):
        return value
    raise ParameterError(f"{stage}: parameter {param.name!r} must be {t.__name__}, "
                         f"got {type(value).__name__} {value!r}")


def check_names(stage: str, names: list[str], known: dict[str, Param]) -> None:
    unknown = [n for n in names if n not in known]
    if unknown:
        hints = []
        for n in unknown:
            close = difflib.get_close_matches(n, list(known), n=1)
            hints.append(f"{n!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ParameterError(f"unknown parameter {', '.join(hints)} for notebook {stage}; "
                             f"it declares: {', '.join(known)}")


def parse_cli_value(param: Param, text: str) -> Any:
    """A ``-p name value`` string turned into the declared type."""
    t = param.type
    if param.takes_profile_default and text.strip().lower() in CLI_DEFAULT_WORDS:
        return PROFILE_DEFAULT
    try:
        if t is str:
            return text
        if t is bool:
            low = text.strip().lower()
            if low in ("true", "1", "yes"):
                return True
            if low in ("false", "0", "no"):
                return False
            raise ValueError(text)
        if t is int:
            return int(text)
        if t is float:
            return float(text)
        if t is list:
            text = text.strip()
            if text.startswith("["):
                value = json.loads(text)
            else:
                value = [v.strip() for v in text.split(",") if v.strip()]
            if not isinstance(value, list):
                raise ValueError(text)
            return value
        value = json.loads(text)
        if not isinstance(value, dict):
            raise ValueError(text)
        return value
    except ValueError:
        raise ParameterError(f"parameter {param.name!r} must be {t.__name__}, cannot read {text!r}") from None


# ---------------------------------------------------------------- allowed values

#: a rule returns what is wrong with a value ("" when it is allowed)
Rule = Callable[[Any], str]


def one_of(*choices: str) -> Rule:
    return lambda v: "" if v in choices else f"must be one of {', '.join(map(repr, choices))}"


def choices_from(module: str, name: str) -> Rule:
    """Allowed values declared elsewhere in sqa (imported when checked, so the list stays in one place)."""
    def rule(v: Any) -> str:
        import importlib

        return one_of(*getattr(importlib.import_module(module), name))(v)
    return rule


def subset_from(module: str, name: str) -> Rule:
    def rule(v: Any) -> str:
        import importlib

        known = tuple(getattr(importlib.import_module(module), name))
        bad = [x for x in v if x not in known]
        return f"has unknown entries {bad}; known: {', '.join(known)}" if bad else ""
    return rule


def in_range(lo: float, hi: float | None = None, lo_open: bool = False, hi_open: bool = True) -> Rule:
    def rule(v: Any) -> str:
        ok = (v > lo if lo_open else v >= lo) and (hi is None or (v < hi if hi_open else v <= hi))
        text = ("(" if lo_open else "[") + f"{lo:g}, " + ("inf)" if hi is None else f"{hi:g}" + (")" if hi_open else "]"))
        return "" if ok else f"must lie in {text}"
    return rule


def matches(pattern: str, what: str) -> Rule:
    return lambda v: "" if re.fullmatch(pattern, str(v)) else f"must be {what}"


_COUNT = r"\d+(\.\d+)?[kKmM]?"
#: allowed values per stage ("*": every stage); parameters without a rule only have their type checked
RULES: dict[str, dict[str, Rule]] = {
    "*": {"profile": one_of(*PROFILES), "seed": in_range(0), "epochs": in_range(0), "batch_size": in_range(1),
          "lr": in_range(0, lo_open=True), "window_s": in_range(0, lo_open=True)},
    "01_merge_datasets": {"dev_frac": in_range(0, 1), "test_frac": in_range(0, 1)},
    "03_pseudo_labels": {"num_workers": in_range(0)},
    "04_distill": {"size": matches(_COUNT, "a parameter count such as 50k, 1M or 25000"),
                   "mode": one_of("distill", "labeled-only"), "labeled_mix": in_range(0, 1)},
    "05_prune": {"size": matches(_COUNT + r"|\d+(\.\d+)?%", "a parameter count (1M, 250k) or a share (29%)"),
                 "method": one_of("taylor", "l0"), "calibration_clips": in_range(1), "steps": in_range(1),
                 "finetune_epochs": in_range(0), "finetune_on": one_of("pool", "labeled")},
    "06_analysis": {"baselines": subset_from("sqa.models.baselines", "NAMES"), "n_boot": in_range(1)},
    "07_listen": {"split": choices_from("sqa.data.manifest", "SPLITS"), "n_clips": in_range(1)},
}


def validate(stage: str, values: Mapping[str, Any], known: Mapping[str, Param] | None = None) -> dict[str, Any]:
    """Every declared parameter of ``stage`` (its default where ``values`` lacks it) checked against its
    type and :data:`RULES`; returns the coerced values. Raises one :class:`ParameterError` that names
    every bad parameter, so nothing expensive runs on a value a later cell would reject."""
    known = dict(known) if known is not None else declared(stage)
    check_names(stage, list(values), known)
    out, problems = {}, []
    rules = {**RULES["*"], **RULES.get(stage, {})}
    for name, param in known.items():
        try:
            value = check_value(stage, param, values.get(name, param.default))
        except ParameterError as err:
            problems.append(str(err).split(": ", 1)[-1])
            continue
        out[name] = value
        why = rules[name](value) if name in rules and value is not PROFILE_DEFAULT else ""
        if why:
            problems.append(f"parameter {name!r}={value!r} {why}")
    if problems:
        raise ParameterError(f"{stage}: " + "; ".join(problems))
    return out


def check_repeats(names: list[str]) -> None:
    """A parameter given twice (``-p x 1 -p x 2``) is an error, not "the last one wins"."""
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ParameterError(f"parameter {', '.join(map(repr, twice))} given more than once; give each once")
