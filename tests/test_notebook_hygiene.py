"""Every committed notebook follows the notebook contract (docs/architecture.md, "Notebook contract")."""

import ast
import json
import re

import pytest

from sqa.pipeline import notebooks

NOTEBOOKS = [notebooks.path(s) for s in notebooks.stages()]


def test_there_are_notebooks():
    assert notebooks.stages()[0] == "01_merge_datasets"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_contract(nb_path):
    nb = json.loads(nb_path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    cells = nb["cells"]
    first = "".join(cells[0]["source"])
    assert cells[0]["cell_type"] == "markdown" and re.match(r"# \d\d · ", first), "title cell"
    assert "Inputs" in first and "Outputs" in first
    params = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1
    declared = notebooks.parse_parameters("".join(params[0]["source"]))
    assert "profile" in declared
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        assert not cell.get("outputs") and cell.get("execution_count") is None, "outputs committed"
        src = "".join(cell["source"])
        tree = ast.parse(src)
        assert not any(isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef, ast.Lambda))
                       for n in ast.walk(tree)), f"def/class/lambda in {nb_path.name}"
        assert "sys.path" not in src and "!pip" not in src and "%pip" not in src
        assert not re.search(r"['\"](/|[A-Z]:\\\\)", src), f"absolute path in {nb_path.name}"
        assert "http://" not in src and "https://" not in src, "downloads belong in sqa/"
    last = "".join(cells[-1]["source"])
    if nb_path.stem == "07_listen":  # registered when a listener finishes a session, not by Run All
        assert any("on_finish=run.finish" in "".join(c["source"]) for c in cells)
    else:
        assert "run.finish(" in last
