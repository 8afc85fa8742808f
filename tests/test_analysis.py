"""Stage 06 analysis on fake run folders with known predictions (pred = MOS + noise of a known size)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from sqa import atomic, paths
from sqa.analysis import figures, metrics, tables
from sqa.pipeline import profiles, runs
from sqa.pipeline.stages import StageData

CORPORA = ("c-codec", "c-noise", "c-reverb")
N_PER_CORPUS = 60
#: (stage, tag, resolved params, noise sd of the predictions, params in metrics.json or None)
RUNS = [
    ("02_teacher", "teacher-tiny_seed-0", {"teacher": "tiny", "seed": 0}, 0.3, None),
    ("04_distill", "size-1M_mode-distill", {"size": "1M", "mode": "distill", "labeled_mix": 0.2}, 0.5, 1_000_000),
    ("04_distill", "size-1M_mode-labeled-only", {"size": "1M", "mode": "labeled-only"}, 0.9, 1_000_000),
    ("04_distill", "size-25k_mode-distill", {"size": "25k", "mode": "distill"}, 0.7, 25_000),
    ("04_distill", "size-25k_mode-labeled-only", {"size": "25k", "mode": "labeled-only"}, 1.1, 25_000),
    ("04_distill", "size-250k_mode-distill", {"size": "250k", "mode": "distill"}, 0.6, 250_000),
    ("05_prune", "size-50pct_method-taylor", {"size": "50%", "method": "taylor"}, 0.4, 33_000),
]


def tiny_student():
    from sqa.models import student

    return student.ConvTransformerSQA(student.preset("10k")).eval()


def make_test_split(n: int = N_PER_CORPUS, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [{"utt_id": f"{c}/{c}-{i:03d}", "corpus": c, "sys_id": f"{c}/sys{i % 5}", "split": "test",
             "path": f"wav/{i:03d}.wav", "mos": float(rng.uniform(1, 5))} for c in CORPORA for i in range(n)]
    return pd.DataFrame(rows)


@pytest.fixture
def fake_runs(outputs):
    """Run folders of stages 02/04/05 in a private SQA_OUTPUTS, registered like real runs."""
    from sqa.models import checkpoint

    test = make_test_split()
    model = tiny_student()
    rng = np.random.default_rng(1)
    for stage, tag, resolved, sd, n_params in RUNS:
        folder = paths.run_dir("smoke", stage, tag)
        run = runs.Run("smoke", stage, tag, folder, dict(resolved), resolved={"profile": "smoke", **resolved})
        folder.mkdir(parents=True)
        preds = test[["utt_id", "corpus", "sys_id", "mos"]].assign(
            pred=test["mos"] + rng.normal(0, sd, len(test)), split="test")
        dev = preds.head(5).assign(utt_id=lambda d: d["utt_id"] + "-dev", split="dev")
        pd.concat([preds, dev]).to_csv(folder / "predictions.csv", index=False)
        checkpoint.save(folder / "model.safetensors", model, model.arch, model.checkpoint_config())
        run.finish({} if n_params is None else {"params": n_params})
    # a rerun registers its tag again: collect keeps one row (the latest) per stage and tag
    atomic.append_line(paths.registry_path(), paths.registry_path().read_text().splitlines()[1])
    return test, model


@pytest.fixture
def found(fake_runs):
    return tables.collect("smoke")


@pytest.fixture
def preds(found, fake_runs):
    return tables.predictions(found, reference=fake_runs[0])


@pytest.fixture
def pcc_table(preds):
    return tables.results_table(preds, "pcc", n_boot=200, seed=0)


def test_collect_finds_one_row_per_run_with_kind_label_and_params(found, fake_runs):
    _, model = fake_runs
    assert len(found) == len(RUNS)
    assert found["kind"].value_counts().to_dict() == {"distilled": 3, "labeled-only": 2, "teacher": 1, "pruned": 1}
    by_label = found.set_index("label")
    assert by_label.loc["distilled 1M", "params"] == 1_000_000
    assert by_label.loc["pruned 50% (taylor)", "params"] == 33_000
    # the teacher's metrics.json has no parameter count: it is read from its model
    assert by_label.loc["teacher tiny", "params"] == sum(p.numel() for p in model.parameters())
    assert list(found["kind"]) == sorted(found["kind"], key=tables.KINDS.index)
    students = found[found["kind"] == "distilled"]
    assert list(students["params"]) == sorted(students["params"])
    assert all(d.is_dir() for d in found["dir"])


def test_collect_of_an_empty_profile_is_an_empty_frame(outputs):
    found = tables.collect("smoke")
    assert found.empty and list(found.columns) == tables.RUN_COLUMNS
    with pytest.raises(FileNotFoundError, match="02_teacher"):
        tables.reference_teacher(found)


def test_collect_names_a_run_without_predictions(fake_runs):
    (paths.run_dir("smoke", "04_distill", "size-25k_mode-distill") / "predictions.csv").unlink()
    with pytest.raises(FileNotFoundError, match="size-25k_mode-distill.*predictions.csv"):
        tables.collect("smoke")


def test_predictions_are_the_test_split_of_every_run(preds, found):
    assert set(preds["label"]) == set(found["label"])
    assert len(preds) == len(found) * len(CORPORA) * N_PER_CORPUS
    assert not preds["utt_id"].str.endswith("-dev").any()


def test_predictions_of_a_run_that_read_another_manifest_are_refused(found, fake_runs):
    other = fake_runs[0].iloc[1:]
    with pytest.raises(ValueError, match="differ from the manifest"):
        tables.predictions(found, reference=other)
    shifted = fake_runs[0].assign(mos=fake_runs[0]["mos"] + 0.1)
    with pytest.raises(ValueError, match="MOS of .* test clips differ"):
        tables.predictions(found, reference=shifted)


def test_results_table_matches_metrics_and_orders_models_by_their_noise(pcc_table, preds):
    t = pcc_table.set_index("label")
    for corpus in CORPORA:
        g = preds[(preds["label"] == "distilled 1M") & (preds["corpus"] == corpus)]
        assert t.loc["distilled 1M", corpus] == pytest.approx(metrics.scores(g["mos"], g["pred"])["pcc"])
    by_noise = [label for label in ("teacher tiny", "pruned 50% (taylor)", "distilled 1M", "distilled 250k",
                                    "distilled 25k", "labeled-only 1M", "labeled-only 25k")]
    assert list(t.loc[by_noise, "weighted"]) == sorted(t.loc[by_noise, "weighted"], reverse=True)
    assert tables.corpora_of(pcc_table) == list(CORPORA)
    assert tables.best_of(pcc_table) == "distilled 1M"


def test_bootstrap_cis_contain_the_point_estimates(pcc_table):
    for col in [*CORPORA, *tables.MEANS]:
        est, lo, hi = (pcc_table[c].to_numpy(dtype=float) for c in (col, f"{col}_lo", f"{col}_hi"))
        assert np.isfinite(est).all() and (lo <= est).all() and (est <= hi).all() and (lo < hi).all()


def test_rmse_table_is_close_to_the_noise_size(preds):
    rmse = tables.results_table(preds, "rmse", n_boot=50).set_index("label")
    sd = {"teacher tiny": 0.3, "labeled-only 25k": 1.1}
    for label, noise in sd.items():
        assert rmse.loc[label, "weighted"] == pytest.approx(noise, rel=0.15)


def test_gap_closed_on_a_hand_built_table():
    rows = [("teacher x", "teacher", "", 5e6, 0.80), ("distilled 1M", "distilled", "1M", 1e6, 0.70),
            ("labeled-only 1M", "labeled-only", "1M", 1e6, 0.60), ("distilled 25k", "distilled", "25k", 25e3, 0.5)]
    table = pd.DataFrame(rows, columns=["label", "kind", "size", "params", "weighted"])
    table["unweighted"] = table["weighted"] - 0.05
    gap = tables.gap_closed_by_size(table).set_index("size")
    assert list(gap.index) == ["25k", "1M"]
    assert gap.loc["1M", "gap_closed"] == pytest.approx(0.5)
    assert gap.loc["1M", "gap_closed_unweighted"] == pytest.approx(0.5)
    assert np.isnan(gap.loc["25k", "gap_closed"]) and "no labeled-only run of size 25k" in gap.loc["25k", "note"]


def test_gap_closed_by_size_from_the_results_table(pcc_table):
    gap = tables.gap_closed_by_size(pcc_table).set_index("size")
    t = pcc_table.set_index("label")["weighted"]
    expected = metrics.gap_closed(t["distilled 1M"], t["labeled-only 1M"], t["teacher tiny"])
    assert gap.loc["1M", "gap_closed"] == pytest.approx(expected)
    assert 0 < gap.loc["1M", "gap_closed"] < 1 and 0 < gap.loc["25k", "gap_closed"] < 1
    assert "no labeled-only" in gap.loc["250k", "note"]
    with pytest.raises(ValueError, match="not a teacher row"):
        tables.gap_closed_by_size(pcc_table, teacher="distilled 1M")


def test_figures_and_tables_are_written(pcc_table, preds, found, outputs):
    run = runs.Run("smoke", "06_analysis", "seed-0", paths.run_dir("smoke", "06_analysis", "seed-0"), {})
    speed = pd.DataFrame({"label": pcc_table["label"], "throughput": np.geomspace(1, 500, len(pcc_table))})
    made = {
        "score_vs_params": figures.score_vs_params(pcc_table),
        "score_vs_throughput": figures.score_vs_throughput(pcc_table, speed),
        "scatter": figures.scatter_grid(preds, ["teacher tiny", tables.best_of(pcc_table)]),
        "heatmap": figures.corpus_heatmap(pcc_table),
    }
    for name, fig in made.items():
        figures.saved(fig, run.path(name))
        for fmt in ("png", "pdf"):
            assert run.path(f"{name}.{fmt}").stat().st_size > 5000, name
    gap = tables.gap_closed_by_size(pcc_table)
    written = tables.write_tables(run, {"pcc": pcc_table}, gap_closed=gap, runs=found)
    assert {p.name for p in written} == {"results_pcc.csv", "results_pcc.md", "gap_closed.csv", "gap_closed.md",
                                          "runs.csv", "runs.md"}
    back = pd.read_csv(run.path("results_pcc.csv"))
    assert np.allclose(back["weighted"], pcc_table["weighted"])
    assert "[" in run.path("results_pcc.md").read_text()
    assert pd.read_csv(run.path("runs.csv"))["dir"].str.startswith("$SQA_OUTPUTS/").all()


def test_metrics_dict_is_strict_json_with_every_model(pcc_table, preds):
    by_metric = {"pcc": pcc_table, "rmse": tables.results_table(preds, "rmse", n_boot=20)}
    out = tables.metrics_dict(by_metric, tables.gap_closed_by_size(pcc_table))
    text = json.dumps(out, allow_nan=False)
    back = json.loads(text)
    assert set(back["models"]) == set(pcc_table["label"])
    m = back["models"]["distilled 1M"]
    assert m["params"] == 1_000_000 and m["kind"] == "distilled"
    expected = pcc_table.set_index("label").loc["distilled 1M", "weighted"]
    assert m["pcc"]["weighted"]["estimate"] == pytest.approx(expected)
    assert set(m["rmse"]) == {*CORPORA, "weighted", "unweighted"}
    assert back["gap_closed"][0]["size"] == "25k"


def test_throughput_of_a_tiny_student_is_positive_and_quick():
    import time

    start = time.perf_counter()
    speed = tables.throughput(tiny_student(), seconds=2.0, repeats=2, clips=1, budget_s=2.0)
    assert speed > 0 and np.isfinite(speed)
    assert time.perf_counter() - start < 20
    with pytest.raises(TypeError, match="neither"):
        tables.throughput(object())


def test_baseline_predictions_are_scored_once_and_cached(outputs, tmp_path, monkeypatch):
    from sqa.models import baselines

    test = make_test_split(n=3)
    root = tmp_path / "corpus"
    (root / "wav").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        sf.write(root / f"wav/{i:03d}.wav", (0.1 * rng.standard_normal(16000)).astype("float32"), 16000)
    data = StageData(test, {c: root for c in CORPORA}, tmp_path)
    run = runs.Run("smoke", "06_analysis", "seed-0", paths.run_dir("smoke", "06_analysis", "seed-0"), {})
    first = tables.baseline_predictions(data, run, ["mfcc-sqa"])
    assert list(first.columns) == tables.PRED_COLUMNS and len(first) == len(test)
    assert first["pred"].between(1, 5).all() and (first["kind"] == "baseline").all()
    assert first["params"].iloc[0] == baselines.get("mfcc-sqa").n_params
    assert len(list(run.path("baselines").glob("mfcc-sqa_*.csv"))) == 1

    def no_scoring(name, *args, **kwargs):
        raise AssertionError(f"{name} scored again instead of read from the cache")

    monkeypatch.setattr(baselines, "get", no_scoring)
    again = tables.baseline_predictions(data, run, ["mfcc-sqa"])
    pd.testing.assert_frame_equal(first, again, check_dtype=False)
    with pytest.raises(ValueError, match="unknown baselines"):
        tables.baseline_predictions(data, run, ["pesq"])
    combined = tables.combine(first, first.assign(label="copy"))
    assert len(combined) == 2 * len(test)
    with pytest.raises(ValueError, match="other clips"):
        tables.combine(first, first.iloc[1:].assign(label="short"))


def _seed_preds(n_src: int = 30, per: int = 4) -> pd.DataFrame:
    """Test predictions of 3 distilled and 3 labeled-only seeds at 50k and a pruned 50k: the
    distilled ones clearly better; clips share sources."""
    rng = np.random.default_rng(0)
    src = np.repeat(np.arange(n_src), per)
    mos = rng.uniform(1, 5, src.size)
    clips = pd.DataFrame({"utt_id": [f"c/{i}" for i in range(src.size)], "corpus": "c", "sys_id": "s",
                          "source_id": [f"s{s}" for s in src], "mos": mos})
    frames = []
    for kind, noise, seeds in (("distilled", 0.3, 3), ("labeled-only", 1.2, 3), ("pruned", 0.3, 1)):
        for seed in range(seeds):
            frames.append(clips.assign(label=f"{kind} 50k [seed-{seed}]", kind=kind, size="50k", params=50_000,
                                       pred=mos + rng.normal(0, noise, src.size)))
    return pd.concat(frames, ignore_index=True)


def test_seeds_summary_and_paired_comparisons():
    from sqa.analysis import comparisons

    preds = _seed_preds()
    table = tables.results_table(preds, n_boot=200)
    summary = comparisons.seed_summary(table)
    seeds = summary.set_index("kind")
    assert seeds.loc["distilled", "n_runs"] == 3 and seeds.loc["distilled", "sd"] > 0
    assert np.isnan(seeds.loc["pruned", "sd"])
    readable = comparisons.format_seeds(summary).set_index("kind")["pcc"]
    assert " ± " in readable["distilled"] and readable["distilled"].endswith("(n=3)")
    paired = comparisons.paired_comparisons(preds, n_boot=300)
    dist = paired[paired["b"].str.startswith("labeled-only")]
    assert len(dist) == 3 and (dist["lo"] > 0).all() and dist["verdict"].str.endswith("better").all()
    assert dist["a"].tolist() == [f"distilled 50k [seed-{s}]" for s in range(3)]  # paired seed with seed
    pruned = paired[paired["a"].str.startswith("pruned")]
    assert len(pruned) == 1 and pruned["b"].iloc[0] == "distilled 50k [seed-0]"
    fig = figures.score_vs_params(table, note=profiles.SYNTHETIC_NOTE)
    text = " ".join(t.get_text() for t in fig.texts)
    assert "95 % bootstrap CI" in text and "PESQ-WB" in text


def test_with_sources_needs_every_clip_in_the_manifest():
    from sqa.analysis import comparisons

    preds = _seed_preds().drop(columns="source_id")
    clips = _seed_preds().drop_duplicates("utt_id")[["utt_id", "source_id"]]
    assert comparisons.with_sources(preds, clips)["source_id"].notna().all()
    with pytest.raises(ValueError, match="not in the manifest"):
        comparisons.with_sources(preds, clips.iloc[1:])
