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


def test_the_scaling_trend_recovers_a_known_line_and_its_crossings():
    import numpy as np

    from bench import release_scaling

    points = [{"clips": n, "pcc": {"estimate": float(np.tanh(0.2 + 0.1 * np.log2(n)))}} for n in (1000, 2000, 4000)]
    trend = release_scaling.trend(points)
    assert trend["z_per_doubling"] == pytest.approx(0.1) and trend["z_intercept"] == pytest.approx(0.2)
    assert trend["clips_to_reach"]["0.92"] == pytest.approx(2 ** ((np.arctanh(0.92) - 0.2) / 0.1))
    falling = [{**p, "pcc": {"estimate": 0.9 - 0.01 * i}} for i, p in enumerate(points)]
    assert release_scaling.trend(falling)["clips_to_reach"] == {"0.92": None, "0.95": None}
    assert release_scaling.trend(points[:1]) is None


def test_the_scaling_block_lists_every_hint_series(tmp_path, monkeypatch):
    def series(weight, pcc):
        points = [{"clips": n, "seed": 0, "pcc": {"estimate": p, "lo": p - 0.1, "hi": p + 0.05}}
                  for n, p in zip((1000, 2000), pcc)]
        return {"size": "250k", "pool_clips": 2000, "n_test": 10, "hint_weight": weight, "points": points,
                "by_clips": {str(q["clips"]): {"seeds": 1, "pcc_mean": q["pcc"]["estimate"], "pcc_sd": None}
                             for q in points},
                "trend": {"z_per_doubling": 0.1, "z_intercept": 0.0, "clips_to_reach": {"0.92": 12845.0, "0.95": None}}}

    monkeypatch.setattr(readme_tables, "BENCH", tmp_path)
    monkeypatch.setattr(readme_tables, "ROOT", tmp_path)
    (tmp_path / "release_scaling.json").write_text(json.dumps(series(0.0, (0.5, 0.6))))
    (tmp_path / "release_scaling_hint-0.3.json").write_text(json.dumps(series(0.3, (0.7, 0.8))))
    block = readme_tables.release_scaling_block()
    assert "| 0 | 1,000 | 1 | 0.500 |" in block and "| 0.3 | 2,000 | 1 | 0.800 |" in block
    assert block.count("PCC 0.92 near 13,000 clips, PCC 0.95 never") == 2  # two significant digits
