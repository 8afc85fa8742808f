"""The README's results and benchmark tables agree with the committed files they come from."""

from __future__ import annotations

import json

import pytest

from bench import readme_tables


def test_readme_tables_equal_what_the_committed_files_give():
    text = readme_tables.README.read_text()
    assert readme_tables.render(text) == text, "README tables are stale: run python -m bench.readme_tables"
    assert readme_tables.main(["--check"]) == 0


def test_speed_rows_come_from_the_benchmark_file():
    data = json.loads((readme_tables.BENCH / "pruned_vs_distilled_demo.json").read_text())
    block = readme_tables.speed_block("demo")
    for m in data["models"]:
        assert f"| {m['label']} |" in block and f"{m['timing']['1']['ms_per_clip']:.0f} / " in block


def test_a_changed_number_is_caught(tmp_path, monkeypatch):
    text = readme_tables.README.read_text()
    stale = text.replace("<!-- begin: speed-demo -->\n", "<!-- begin: speed-demo -->\n| edited | 1 |\n", 1)
    assert readme_tables.render(stale) == text
    with pytest.raises(ValueError, match="lacks the marker comments"):
        readme_tables.render(text.replace("<!-- begin: models -->", ""))


def test_publish_copies_the_small_tables(tmp_path, monkeypatch):
    run = tmp_path / "06_analysis" / "seed-0"
    run.mkdir(parents=True)
    (run / "params.json").write_text(json.dumps({"profile": "demo"}))
    (run / "results_pcc.md").write_text("| model | pcc |\n|---|---|\n| a | 0.5 |\n")
    (run / "model.safetensors").write_bytes(b"big")
    monkeypatch.setattr(readme_tables, "RESULTS", tmp_path / "docs")
    dest = readme_tables.publish(run)
    assert sorted(p.name for p in dest.iterdir()) == ["results_pcc.md"]
    assert "| a | 0.5 |" in readme_tables.results_block("demo")


def test_test_suite_outcome_is_read_from_pytests_closing_line():
    from bench.test_suite import outcome_counts

    assert outcome_counts("3 failed, 420 passed, 1 skipped, 2 errors in 300.12s (0:05:00)") == {
        "failed": 3, "passed": 420, "skipped": 1, "errors": 2}
    assert outcome_counts("no tests ran in 0.01s") == {}


def test_model_card_tables_equal_what_the_committed_files_give():
    text = readme_tables.MODEL_CARD.read_text()
    assert readme_tables.render(text, readme_tables.card_blocks(), "models.md") == text
