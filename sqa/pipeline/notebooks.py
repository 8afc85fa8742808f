"""The numbered notebooks as data: where they are, their parameters cell, type checks.

The parameters cell holds literal, annotated assignments, one per line::

    size: str = "1M"  # target parameter count: 10k ... 4M
"""

from __future__ import annotations

import ast
import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqa.paths import notebooks_dir

TYPES: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool, "list": list, "dict": dict}


class ParameterError(ValueError):
    """A parameter that the notebook does not declare, or a value of the wrong type."""


@dataclass(frozen=True)
class Param:
    name: str
    type: type
    default: Any
    help: str


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
        line = lines[node.lineno - 1]
        comment = line.split("#", 1)[1].strip() if "#" in line else ""
        out[node.target.id] = Param(node.target.id, TYPES[type_name], default, comment)
    return out


def declared(stage: str) -> dict[str, Param]:
    nb = path(stage)
    return parse_parameters(parameters_source(nb), where=f"{nb.name} parameters cell")


def check_value(stage: str, param: Param, value: Any) -> Any:
    """Coerce ``value`` to the declared type where lossless; otherwise raise."""
    t = param.type
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
