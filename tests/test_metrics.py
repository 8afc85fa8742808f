"""Tests for sqa.analysis.metrics: agreement with scipy, undefined cases, aggregation, bootstrap."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from sqa.analysis import metrics

pytestmark = pytest.mark.filterwarnings("error")  # undefined cases must not warn


def _frame(sizes: dict[str, int], seed: int = 0, noise: float = 0.8) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    parts = []
    for corpus, n in sizes.items():
        mos = np.round(rng.uniform(1, 5, n), 1)
        parts.append(pd.DataFrame({
            "utt_id": [f"{corpus}/{i}" for i in range(n)],
            "corpus": corpus,
            "sys_id": [f"sys{i % 7}" for i in range(n)],
            "mos": mos,
            "pred": mos + rng.normal(0, noise, n),
        }))
    return pd.concat(parts, ignore_index=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("decimals", [None, 0])  # 0: heavy ties in both variables
def test_scores_match_scipy(seed: int, decimals: int | None) -> None:
    rng = np.random.default_rng(seed)
    mos = rng.uniform(1, 5, 157)
    pred = mos + rng.normal(0, 1, 157)
    if decimals is not None:
        mos, pred = np.round(mos, decimals), np.round(pred, decimals)
    got = metrics.scores(mos, pred)
    assert got["n"] == 157 and got["note"] == ""
    assert got["pcc"] == pytest.approx(stats.pearsonr(mos, pred).statistic, abs=1e-12)
    assert got["srcc"] == pytest.approx(stats.spearmanr(mos, pred).statistic, abs=1e-12)
    assert got["ktau"] == pytest.approx(stats.kendalltau(mos, pred).statistic, abs=1e-12)
    assert got["rmse"] == pytest.approx(math.sqrt(np.mean((mos - pred) ** 2)), abs=1e-12)


def test_scores_constant_inputs_are_nan_with_reason() -> None:
    got = metrics.scores([1.0, 2.0, 3.0, 4.0], [3.0, 3.0, 3.0, 3.0])
    assert math.isnan(got["pcc"]) and math.isnan(got["srcc"]) and math.isnan(got["ktau"])
    assert got["rmse"] == pytest.approx(math.sqrt((4 + 1 + 0 + 1) / 4))
    assert got["note"] == "constant pred"
    got = metrics.scores([2.0] * 5, [1.0, 2.0, 3.0, 4.0, 5.0])
    assert math.isnan(got["pcc"]) and got["note"] == "constant mos"
    got = metrics.scores([2.0] * 5, [2.0] * 5)
    assert got["note"] == "constant mos; constant pred" and got["rmse"] == 0.0


def test_scores_small_sets() -> None:
    two = metrics.scores([1.0, 2.0], [1.5, 3.0])
    assert two["n"] == 2 and two["note"] == "n<3"
    assert all(math.isnan(two[k]) for k in metrics.CORRELATIONS)
    assert two["rmse"] == pytest.approx(math.sqrt((0.25 + 1.0) / 2))
    one = metrics.scores([4.0], [3.0])
    assert one["n"] == 1 and one["rmse"] == pytest.approx(1.0) and math.isnan(one["pcc"])
    empty = metrics.scores([], [])
    assert empty["n"] == 0 and math.isnan(empty["rmse"]) and empty["note"] == "n=0"


def test_scores_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="pred has 1 non-finite"):
        metrics.scores([1.0, 2.0, 3.0], [1.0, float("nan"), 3.0])
    with pytest.raises(ValueError, match="differ in length: 3 vs 2"):
        metrics.scores([1.0, 2.0, 3.0], [1.0, 2.0])


def test_per_corpus_matches_scores_and_checks_frame() -> None:
    df = _frame({"b": 40, "a": 60})
    table = metrics.per_corpus(df)
    assert table["corpus"].tolist() == ["a", "b"]
    sub = df[df["corpus"] == "b"]
    expected = metrics.scores(sub["mos"], sub["pred"])
    row = table.set_index("corpus").loc["b"]
    assert row["n"] == 40 and row["pcc"] == pytest.approx(expected["pcc"])
    assert row["ktau"] == pytest.approx(expected["ktau"])

    alt = df.rename(columns={"pred": "score"})
    assert metrics.per_corpus(alt, pred_col="score")["pcc"].tolist() == table["pcc"].tolist()
    with pytest.raises(ValueError, match=r"lacks columns \['pred'\]"):
        metrics.per_corpus(alt)
    unlabeled = df.copy()
    unlabeled.loc[3, "mos"] = np.nan
    with pytest.raises(ValueError, match=r"'mos' has 1 missing.*a/3|'mos' has 1 missing.*b/3"):
        metrics.per_corpus(unlabeled)
    with pytest.raises(ValueError, match="duplicate utt_id"):
        metrics.per_corpus(pd.concat([df, df.head(1)]))


def test_per_system_hand_computed() -> None:
    df = pd.DataFrame({
        "utt_id": [f"u{i}" for i in range(10)],
        "corpus": ["A"] * 6 + ["B"] * 4,
        "sys_id": ["s1", "s1", "s2", "s2", "s3", "s3", "t1", "t1", "t2", "t2"],
        "mos": [1.0, 2.0, 3.0, 3.0, 4.0, 5.0, 2.0, 4.0, 3.0, 3.0],
        "pred": [1.5, 1.5, 2.0, 4.0, 5.0, 5.0, 1.0, 1.0, 2.0, 2.0],
    })
    table = metrics.per_system(df).set_index("corpus")
    # A: system means mos (1.5, 3, 4.5), pred (1.5, 3, 5)
    a = table.loc["A"]
    assert a["n"] == 3 and a["n_clips"] == 6 and a["note"] == ""
    assert a["pcc"] == pytest.approx(5.25 / math.sqrt(4.5 * (37 / 6)))
    assert a["srcc"] == pytest.approx(1.0) and a["ktau"] == pytest.approx(1.0)
    assert a["rmse"] == pytest.approx(math.sqrt(0.25 / 3))
    b = table.loc["B"]  # two systems: correlations undefined, RMSE over system means (3 vs 1, 3 vs 2)
    assert b["n"] == 2 and b["n_clips"] == 4 and b["note"] == "n<3" and math.isnan(b["pcc"])
    assert b["rmse"] == pytest.approx(math.sqrt((4 + 1) / 2))


def test_summarize_weighted_and_unweighted() -> None:
    table = pd.DataFrame({
        "corpus": ["a", "b", "c"],
        "n": [100, 300, 2],
        "pcc": [0.8, 0.6, float("nan")],
        "rmse": [0.5, 0.7, 0.1],
    })
    summary = metrics.summarize(table)
    assert summary["n_corpora"] == 3 and summary["n"] == 402
    assert summary["pcc"]["weighted"] == pytest.approx((100 * 0.8 + 300 * 0.6) / 400)
    assert summary["pcc"]["unweighted"] == pytest.approx(0.7)
    assert summary["pcc"]["n_ignored"] == 1 and summary["pcc"]["ignored"] == ["c"]
    assert summary["rmse"]["weighted"] == pytest.approx((50 + 210 + 0.2) / 402)
    assert summary["rmse"]["unweighted"] == pytest.approx(1.3 / 3) and summary["rmse"]["n_used"] == 3
    assert "srcc" not in summary


def test_summarize_all_nan() -> None:
    table = pd.DataFrame({"corpus": ["a"], "n": [2], "pcc": [float("nan")]})
    summary = metrics.summarize(table)
    assert math.isnan(summary["pcc"]["weighted"]) and math.isnan(summary["pcc"]["unweighted"])
    assert summary["pcc"]["n_ignored"] == 1


@pytest.mark.parametrize("metric", metrics.METRICS)
@pytest.mark.parametrize("pair_matrix", [True, False])
def test_resample_metrics_match_scores(metric: str, pair_matrix: bool, monkeypatch) -> None:
    if not pair_matrix:
        monkeypatch.setattr(metrics, "KTAU_PAIR_MATRIX_MAX_N", 0)
    rng = np.random.default_rng(3)
    x = np.round(rng.uniform(1, 5, 40), 0)  # ties, and some resamples may be constant
    y = np.round(x + rng.normal(0, 1, 40), 1)
    idx = rng.integers(0, 40, size=(30, 40))
    got = metrics._boot_rows(metric, x, y, idx)
    expected = np.array([metrics.scores(x[i], y[i])[metric] for i in idx])
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_bootstrap_ci_contains_estimate_shrinks_and_is_fast() -> None:
    df = _frame({f"c{i}": 300 for i in range(5)}, seed=4)
    start = time.perf_counter()
    ci = metrics.bootstrap_ci(df, metric="pcc", n_boot=1000, seed=0)
    assert time.perf_counter() - start < 1.0
    table = ci["per_corpus"]
    assert table["corpus"].tolist() == [f"c{i}" for i in range(5)]
    assert ((table["lo"] < table["estimate"]) & (table["estimate"] < table["hi"])).all()
    assert (table["n_undefined"] == 0).all()
    summary = metrics.summarize(metrics.per_corpus(df))
    for name in ("weighted", "unweighted"):
        assert ci[name]["estimate"] == pytest.approx(summary["pcc"][name])
        assert ci[name]["lo"] < ci[name]["estimate"] < ci[name]["hi"]
    # the mean over 5 corpora is tighter than any single corpus
    assert ci["weighted"]["hi"] - ci["weighted"]["lo"] < (table["hi"] - table["lo"]).min()

    small = metrics.bootstrap_ci(_frame({"x": 50}, seed=5), n_boot=500)["per_corpus"].iloc[0]
    large = metrics.bootstrap_ci(_frame({"x": 1000}, seed=5), n_boot=500)["per_corpus"].iloc[0]
    assert (large["hi"] - large["lo"]) < 0.6 * (small["hi"] - small["lo"])


@pytest.mark.parametrize("metric", metrics.METRICS)
def test_bootstrap_ci_deterministic_under_seed(metric: str) -> None:
    df = _frame({"a": 80, "b": 120}, seed=6)
    first = metrics.bootstrap_ci(df, metric=metric, n_boot=200, seed=11)
    again = metrics.bootstrap_ci(df, metric=metric, n_boot=200, seed=11)
    other = metrics.bootstrap_ci(df, metric=metric, n_boot=200, seed=12)
    pd.testing.assert_frame_equal(first["per_corpus"], again["per_corpus"])
    assert first["weighted"] == again["weighted"] and first["unweighted"] == again["unweighted"]
    assert first["weighted"]["lo"] != other["weighted"]["lo"]
    row = first["per_corpus"].iloc[0]
    assert row["lo"] <= row["estimate"] <= row["hi"]


def test_bootstrap_ci_undefined_corpus_and_bad_arguments() -> None:
    df = pd.concat([_frame({"big": 200}, seed=7), _frame({"tiny": 2}, seed=8)], ignore_index=True)
    ci = metrics.bootstrap_ci(df, n_boot=100)
    tiny = ci["per_corpus"].set_index("corpus").loc["tiny"]
    assert tiny["n_undefined"] == 100 and math.isnan(tiny["lo"]) and math.isnan(tiny["estimate"])
    big = ci["per_corpus"].set_index("corpus").loc["big"]
    # the undefined corpus drops out of the means, which then equal the big corpus alone
    assert ci["weighted"]["lo"] == pytest.approx(big["lo"])
    assert ci["unweighted"]["estimate"] == pytest.approx(big["estimate"])
    with pytest.raises(ValueError, match="metric='mae'"):
        metrics.bootstrap_ci(df, metric="mae")
    with pytest.raises(ValueError, match="n_boot=0"):
        metrics.bootstrap_ci(df, n_boot=0)
    with pytest.raises(ValueError, match="alpha=1.5"):
        metrics.bootstrap_ci(df, alpha=1.5)


def test_gap_closed() -> None:
    assert metrics.gap_closed(0.76, 0.72, 0.80) == pytest.approx(0.5)
    assert metrics.gap_closed(0.70, 0.72, 0.80) == pytest.approx(-0.25)
    assert math.isnan(metrics.gap_closed(0.8, 0.7, 0.7))
    assert math.isnan(metrics.gap_closed(float("nan"), 0.7, 0.8))


@pytest.mark.parametrize("metric", metrics.METRICS)
def test_weighted_resamples_equal_the_metric_of_repeated_clips(metric: str) -> None:
    rng = np.random.default_rng(9)
    x = np.round(rng.uniform(1, 5, 30), 0)
    y = np.round(x + rng.normal(0, 1, 30), 1)
    w = rng.integers(0, 4, size=(20, 30)).astype(float)  # multiplicities, as a cluster draw gives
    got = metrics._weighted_rows(metric, x, y, w)
    expected = [metrics.scores(np.repeat(x, r.astype(int)), np.repeat(y, r.astype(int)))[metric] for r in w]
    np.testing.assert_allclose(got, expected, atol=1e-12)


def _sources_frame(n_sources: int = 40, per_source: int = 10, seed: int = 0) -> pd.DataFrame:
    """Clips that share a source share most of their prediction error (as degraded versions of
    one utterance do): clips are not independent, sources are."""
    rng = np.random.default_rng(seed)
    src = np.repeat(np.arange(n_sources), per_source)
    mos = rng.uniform(1, 5, src.size)
    pred = mos + rng.normal(0, 1.0, n_sources)[src] + rng.normal(0, 0.1, src.size)
    return pd.DataFrame({"utt_id": [f"u{i}" for i in range(src.size)], "corpus": "c", "sys_id": "",
                         "source_id": [f"s{s}" for s in src], "mos": mos, "pred": pred})


def test_bootstrap_resamples_whole_sources_so_shared_errors_widen_the_ci() -> None:
    df = _sources_frame().assign(sys_id=lambda d: d["utt_id"])  # no systems: sys_id is each clip's own
    by_source = metrics.bootstrap_ci(df, n_boot=1000, seed=1)
    by_clip = metrics.bootstrap_ci(df, n_boot=1000, seed=1, clusters=())
    assert by_source["per_corpus"]["resampled"].iloc[0] == "source_id"
    assert by_clip["per_corpus"]["resampled"].iloc[0] == "clips"
    width = {k: v["weighted"]["hi"] - v["weighted"]["lo"] for k, v in (("src", by_source), ("clip", by_clip))}
    assert width["src"] > 1.5 * width["clip"]
    # the right width: the spread of the estimate over independent replications of the experiment
    reps = [metrics.scores(d["mos"], d["pred"])["pcc"] for d in (_sources_frame(seed=s) for s in range(1, 200))]
    assert 0.6 < width["src"] / (np.quantile(reps, 0.975) - np.quantile(reps, 0.025)) < 1.5


def test_systems_and_sources_are_resampled_together() -> None:
    df = _sources_frame(seed=3).assign(sys_id=lambda d: [f"sys{i % 5}" for i in range(len(d))])
    ci = metrics.bootstrap_ci(df, n_boot=200, seed=0)
    assert ci["per_corpus"]["resampled"].iloc[0] == "source_id+sys_id"
    w = metrics._resample_weights(df, 50, np.random.default_rng(0), metrics.CLUSTERS)
    assert w.shape == (50, len(df)) and (w.sum(axis=1) > 0).all()


def test_paired_difference_ci() -> None:
    df = _sources_frame(seed=4)
    rng = np.random.default_rng(5)
    df["same"] = df["pred"]
    df["worse"] = df["pred"] + rng.normal(0, 1.5, len(df))
    same = metrics.paired_bootstrap_diff(df, "pred", "same", n_boot=300)
    assert same["weighted"] == {"estimate": 0.0, "lo": 0.0, "hi": 0.0}
    diff = metrics.paired_bootstrap_diff(df, "pred", "worse", n_boot=1000)
    expected = metrics.scores(df["mos"], df["pred"])["pcc"] - metrics.scores(df["mos"], df["worse"])["pcc"]
    assert diff["weighted"]["estimate"] == pytest.approx(expected)
    assert 0 < diff["weighted"]["lo"] < expected < diff["weighted"]["hi"]  # a real difference: CI excludes 0
    # pairing: the CI of the difference is narrower than either model's own CI
    own = metrics.bootstrap_ci(df, n_boot=1000)["weighted"]
    assert diff["weighted"]["hi"] - diff["weighted"]["lo"] < own["hi"] - own["lo"]
