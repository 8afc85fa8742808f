"""The package layout stays what the docs say: module maps match the tree, modules and functions stay small."""

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "sqa"
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def mapped_paths(doc: Path, heading: str) -> set[str]:
    """``sqa/...`` paths named in backticks in the section under ``heading``."""
    text = doc.read_text()
    section = text.split(heading, 1)[1]
    section = re.split(r"\n## ", section, maxsplit=1)[0]
    return set(re.findall(r"`(sqa/[\w/]*(?:\.py|/))`", section))


@pytest.mark.parametrize("doc, heading", [("README.md", "## Code layout"),
                                          ("docs/architecture.md", "## Module map")])
def test_module_map_matches_the_tree(doc, heading):
    named = mapped_paths(REPO / doc, heading)
    assert named, f"{doc}: no module map under {heading!r}"
    missing = sorted(n for n in named if not (REPO / n).exists())
    assert not missing, f"{doc} names paths that do not exist: {missing}"
    folders = [n for n in named if n.endswith("/")]
    unmapped = [rel for rel in (p.relative_to(REPO).as_posix() for p in modules())
                if rel not in named and not any(rel.startswith(f) for f in folders)
                and not (rel.endswith("__init__.py") and rel.count("/") <= 2)]
    assert not unmapped, f"{doc}: modules missing from the map: {unmapped}"


def test_modules_and_functions_stay_small():
    too_long = []
    for p in modules():
        text = p.read_text()
        if text.count("\n") > MAX_MODULE_LINES:
            too_long.append(f"{p.relative_to(REPO)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    too_long.append(f"{p.relative_to(REPO)}:{node.lineno} {node.name}: {n} lines")
    assert not too_long, too_long


def test_nothing_cites_the_old_design_notes():
    cited = [str(p.relative_to(REPO)) for p in [*modules(), *REPO.glob("tests/*.py"), *REPO.glob("notebooks/*")]
             if p.is_file() and p.name != "test_layout.py" and "DESIGN.md" in p.read_text()]
    assert not cited, f"cite docs/architecture.md instead: {cited}"
