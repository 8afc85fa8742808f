"""Listening widgets, rating storage and the ratings adapter, driven like a listener would
(setting widget values, clicking buttons) on a tiny generated corpus."""

from __future__ import annotations

import io
import json
import multiprocessing
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from browser.tiny_corpus import make_corpus

from sqa import atomic
from sqa.data import corpora, manifest
from sqa.data.corpora import listening as ratings_adapter
from sqa.listen import clips, ratings_store, widgets
from sqa.pipeline import notebooks, runs


@pytest.fixture
def corpus(tmp_path):
    df, roots, path = make_corpus(tmp_path / "data")
    return df, roots


def made_up_predictions(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Model A tracks the label; model B is off by a known, clip-specific amount."""
    offset = np.linspace(-1.5, 1.2, len(df))  # distinct gaps
    base = df[["utt_id", "corpus", "sys_id", "mos"]].reset_index(drop=True)
    return {"04_distill/size-1M": base.assign(pred=base["mos"] + 0.1),
            "02_teacher/main": base.assign(pred=base["mos"] + 0.1 + offset)}


def decode(value) -> tuple[np.ndarray, int]:
    x, sr = sf.read(io.BytesIO(bytes(value)))
    return x, sr


def start_test(corpus, tmp_path, listener="anna", **kw) -> widgets.ListeningTest:
    df, roots = corpus
    t = widgets.ListeningTest(df, roots, tmp_path / "listen" / "ratings.csv", **kw)
    t.listener.value = listener
    t.start_button.click()
    return t


# ---------------------------------------------------------------- filter, player, view

def test_filter_selects_corpus_split_mos_range_and_text(corpus):
    df, _ = corpus
    f = widgets.ClipFilter(df, split="test")
    assert f.corpus.value == "toy" and f.split.value == "test"
    assert list(f.frame()["utt_id"]) == ["toy/toy-000", "toy/toy-001", "toy/toy-003", "toy/toy-004",
                                         "toy/toy-006", "toy/toy-007"]
    f.mos.value = (2.0, 4.0)
    assert list(f.frame()["utt_id"]) == ["toy/toy-003", "toy/toy-004", "toy/toy-006"]
    assert f.count.value == "3 clips match"
    f.search.value = "SNR20"  # sys_id, case-insensitive
    assert list(f.frame()["utt_id"]) == ["toy/toy-004"]
    f.corpus.value = "other"  # no test split there: the split follows the corpus
    assert f.split.options == ("dev",) and f.split.value == "dev"
    f.search.value, f.mos.value = "", (1.0, 5.0)
    assert len(f.frame()) == 3
    with pytest.raises(ValueError, match="corpus='nope' is not in the manifest; it has: other, toy"):
        widgets.ClipFilter(df, corpus="nope")
    with pytest.raises(ValueError, match="split='tset'"):
        widgets.ClipFilter(df, split="tset")


def test_playing_gives_valid_normalised_wav_bytes_at_a_browser_rate(corpus, tmp_path):
    t = start_test(corpus, tmp_path, n_clips=20)
    heard = {}
    for _ in range(len(t.playlist)):
        x, sr = decode(t.view.audio.value)
        heard[t.current.utt_id] = (x, sr)
        assert t.view.image.value == b"" and t.view.info.value == ""  # blind ACR: audio only
        t.rate(4)
    assert set(heard) == set(t.filter.frame()["utt_id"])
    x, sr = heard["toy/toy-001"]  # stored at 96 kHz
    assert sr == 48000 and len(x) == 48000
    for x, sr in heard.values():
        assert sr in (16000, 48000)
        assert 20 * np.log10(np.sqrt(np.mean(x ** 2))) == pytest.approx(-26.0, abs=0.2)
        assert np.max(np.abs(x)) <= 0.99 + 1e-4


def test_normalize_respects_the_peak_and_leaves_silence_alone():
    loud = np.zeros(1000)
    loud[0] = 0.5  # RMS far below -26 dBFS, but one big sample
    assert np.max(np.abs(clips.normalize(loud))) == pytest.approx(0.99, abs=1e-6)
    assert not np.any(clips.normalize(np.zeros(100)))
    x = np.sin(np.arange(1600)) * 0.01
    np.testing.assert_allclose(clips.normalize(x, None), x, atol=1e-7)


def test_labels_and_every_prediction_side_by_side(corpus):
    df, roots = corpus
    preds = made_up_predictions(df)
    b = widgets.ClipBrowser(df, roots, preds, split="test")
    assert b.note.value == "showing 6 of 6"
    b.clips.value = "toy/toy-004"
    table = b.view.info_frame.set_index("source")
    assert list(table.index) == ["label", "02_teacher/main", "04_distill/size-1M"]
    assert table.loc["label", "MOS"] == pytest.approx(3.0)
    assert table.loc["04_distill/size-1M", "MOS"] == pytest.approx(3.1)
    assert "acr-1-5, 8 votes, std 0.50" in table.loc["label", "note"]
    assert "02_teacher/main" in b.view.info.value and "toy/toy-004" in b.view.title.value
    assert decode(b.view.audio.value)[1] == 16000


# ---------------------------------------------------------------- the listening test

def test_rating_by_clicks_appends_rows_and_copies_the_audio(corpus, tmp_path):
    t = start_test(corpus, tmp_path, n_clips=3, seed=1)
    assert len(t.playlist) == 3 and t.submit.disabled  # nothing chosen yet
    t.submit.click()  # ignored: no rating chosen
    assert not t.ratings_path.exists()
    scores = [5, 2, 3]
    heard = []
    for score in scores:
        heard.append(t.current)
        t.rating.value = score
        assert not t.submit.disabled
        t.submit.click()
    assert t.current is None and t.rating.disabled and "Done" in t.view.title.value
    assert "3 of 3 rated" in t.status.value
    lines = t.ratings_path.read_text().splitlines()
    assert lines[0] == ",".join(ratings_store.COLUMNS) and len(lines) == 4
    got = ratings_store.read_ratings(t.ratings_path)
    assert list(got["rating"]) == scores
    assert list(got["utt_id"]) == [s.utt_id for s in heard]
    assert list(got["path"]) == [s.path for s in heard] and all(p.startswith("wav/") for p in got["path"])
    assert set(got["listener"]) == {"anna"} and got["session"].nunique() == 1
    assert not got["is_reference"].any() and set(got["corpus"]) == {"toy"}
    folder = t.ratings_path.parent
    for s in heard:
        assert (folder / "audio" / "toy" / s.path).read_bytes() == (corpus[1]["toy"] / s.path).read_bytes()
    assert ratings_store.read_roots(folder) == {"toy": corpus[1]["toy"]}


def test_start_needs_a_listener_and_a_clip(corpus, tmp_path):
    df, roots = corpus
    t = widgets.ListeningTest(df, roots, tmp_path / "r.csv")
    t.start_button.click()
    assert "type a listener name" in t.status.value and t.playlist == []
    t.listener.value = "bo"
    t.filter.search.value = "no-such-clip"
    t.start_button.click()
    assert "no clip matches the filter" in t.status.value and t.playlist == []


def test_order_is_seeded_the_same_set_for_everyone_and_shuffled_per_listener(corpus, tmp_path):
    def order(listener, seed=0, n=5):
        t = start_test(corpus, tmp_path / listener / str(seed), listener, n_clips=n, seed=seed)
        return [s.utt_id for s in t.playlist]

    anna, anna_again, bo, cy = order("anna"), order("anna"), order("bo"), order("cy")
    assert anna == anna_again
    assert sorted(anna) == sorted(bo) == sorted(cy)
    assert len({tuple(anna), tuple(bo), tuple(cy)}) > 1
    assert sorted(order("anna", seed=3)) != sorted(anna)  # another seed picks another set


def test_hidden_references_are_mixed_in_and_not_revealed(corpus, tmp_path):
    t = start_test(corpus, tmp_path, n_clips=20, references=True)
    refs = [s for s in t.playlist if s.is_reference]
    # test clips come from src0 and src1: one reference per clean source
    assert sorted(s.path for s in refs) == ["../clean/src0.wav", "../clean/src1.wav"]
    assert len(t.playlist) == 6 + 2
    assert not all(s.is_reference for s in t.playlist[:2])  # shuffled in, not appended
    for _ in range(len(t.playlist)):
        s = t.current
        assert t.view.info.value == "" and s.utt_id not in t.view.title.value
        assert "reference" not in t.view.title.value.lower()
        x, sr = decode(t.view.audio.value)
        assert len(x) == sr == (48000 if s.utt_id == "toy/toy-001" else 16000)
        t.rate(5 if s.is_reference else 2)
    got = ratings_store.read_ratings(t.ratings_path)
    assert got["is_reference"].sum() == 2
    assert set(got.loc[got["is_reference"], "rating"]) == {5}
    assert (t.ratings_path.parent / "audio" / "toy" / "_up" / "clean" / "src0.wav").is_file()

    t.show_info.value = True  # revealed on request (for browsing, not while rating blind)
    t2 = start_test(corpus, tmp_path / "second", "bo", references=True)
    t2.show_info.value = True
    assert t2.current.utt_id in t2.view.title.value
    assert t2.view.image.value[:8] == b"\x89PNG\r\n\x1a\n" and t2.view.image.layout.display is None
    t2.show_info.value = False
    assert t2.view.image.value == b"" and t2.view.image.layout.display == "none"


def test_a_restarted_session_leaves_out_what_the_listener_rated(corpus, tmp_path):
    t = start_test(corpus, tmp_path, n_clips=4)
    first = list(t.playlist)
    t.rate(1)
    t.rate(2)
    again = start_test(corpus, tmp_path, n_clips=4)
    assert again.playlist == first[2:]
    assert "2 rated before are left out" in again.status.value
    other = start_test(corpus, tmp_path, "bo", n_clips=4)
    assert len(other.playlist) == 4
    assert again.session != t.session


# ---------------------------------------------------------------- storage and the adapter

def row(**kw):
    base = {"time": "2026-01-01T10:00:00", "listener": "anna", "utt_id": "toy/toy-000", "corpus": "toy",
            "path": "wav/toy-000.wav", "rating": 3, "is_reference": False, "session": "s1"}
    return {**base, **kw}


def test_append_rating_rejects_bad_rows_naming_the_field(tmp_path):
    f = tmp_path / "ratings.csv"
    with pytest.raises(ratings_store.RatingsError, match="rating must be an integer 1-5, got 6"):
        ratings_store.append_rating(f, row(rating=6))
    with pytest.raises(ratings_store.RatingsError, match="rating must be an integer 1-5, got 2.5"):
        ratings_store.append_rating(f, row(rating=2.5))
    with pytest.raises(ratings_store.RatingsError, match="must be relative"):
        ratings_store.append_rating(f, row(path="/abs/x.wav"))
    with pytest.raises(ratings_store.RatingsError, match="field 'listener' is empty"):
        ratings_store.append_rating(f, row(listener=" "))
    with pytest.raises(ratings_store.RatingsError, match="unknown field"):
        ratings_store.append_rating(f, {**row(), "mood": "ok"})
    assert not f.exists()
    ratings_store.append_rating(f, row(listener='Dr. "Q", PhD'))  # quoted, still one line
    assert ratings_store.read_ratings(f)["listener"].tolist() == ['Dr. "Q", PhD']


def _append_many(args):
    path, worker = args
    for i in range(40):
        ratings_store.append_rating(path, row(listener=f"w{worker}", utt_id=f"toy/{i}", rating=1 + i % 5))


def test_parallel_writers_share_one_header_and_lose_no_row(tmp_path):
    f = tmp_path / "ratings.csv"
    with multiprocessing.get_context("fork").Pool(4) as pool:
        pool.map(_append_many, [(f, w) for w in range(4)])
    lines = f.read_text().splitlines()
    assert lines.count(",".join(ratings_store.COLUMNS)) == 1 and lines[0].startswith("time,")
    got = ratings_store.read_ratings(f)
    assert len(got) == 160 and got.groupby("listener").size().tolist() == [40] * 4


def test_a_torn_last_line_is_reported_and_the_next_vote_starts_on_a_new_line(tmp_path):
    f = tmp_path / "ratings.csv"
    for i, r in enumerate((4, 5)):
        ratings_store.append_rating(f, row(rating=r, listener=f"l{i}"))
    with open(f, "a") as fh:
        fh.write("2026-01-01T10:00:09,bo,toy/toy-0")  # a crash in the middle of a write
    with pytest.warns(ratings_store.TornLineWarning, match=r"line 4: torn"):
        got = ratings_store.read_ratings(f)
    assert len(got) == 2 and got.attrs["torn_lines"] == [(4, "2026-01-01T10:00:09,bo,toy/toy-0")]
    ratings_store.append_rating(f, row(rating=1, listener="bo"))
    with pytest.warns(ratings_store.TornLineWarning, match=r"line 4"):
        got = ratings_store.read_ratings(f)
    assert got["rating"].tolist() == [4, 5, 1]
    assert ratings_store.summary(got)["torn_lines"] == 1
    f.write_text("")  # a crash right after creating the file
    ratings_store.append_rating(f, row(rating=2))
    assert ratings_store.read_ratings(f)["rating"].tolist() == [2]
    f.write_text("when,who\n")
    with pytest.raises(ratings_store.RatingsError, match="line 1: header"):
        ratings_store.read_ratings(f)


def test_to_corpus_means_over_listeners_latest_vote_counts():
    votes = pd.DataFrame([
        row(listener="a", rating=2), row(listener="a", rating=4, time="2026-01-01T11:00:00"),  # re-rated
        row(listener="b", rating=5), row(listener="c", rating=3),
        row(listener="a", utt_id="toy/toy-001", path="wav/toy-001.wav", rating=1),
        row(listener="a", utt_id="toy/reference/src0", path="../clean/src0.wav", rating=5, is_reference=True)])
    votes["is_reference"] = votes["is_reference"].astype(bool)
    per_clip = ratings_store.to_corpus(votes).set_index("path")
    assert per_clip.loc["wav/toy-000.wav", "mos"] == pytest.approx(4.0)
    assert per_clip.loc["wav/toy-000.wav", "n_votes"] == 3
    assert per_clip.loc["wav/toy-000.wav", "mos_std"] == pytest.approx(1.0)
    assert per_clip.loc["wav/toy-001.wav", "n_votes"] == 1 and np.isnan(per_clip.loc["wav/toy-001.wav", "mos_std"])
    assert bool(per_clip.loc["../clean/src0.wav", "is_reference"])
    assert per_clip.loc["wav/toy-000.wav", "listeners"] == "a+b+c"


def test_ratings_adapter_reads_the_votes_back_into_a_validated_manifest(corpus, tmp_path):
    df, roots = corpus
    folder = tmp_path / "listen"
    votes = {"anna": 4, "bo": 2}
    for name, score in votes.items():
        t = start_test(corpus, tmp_path, name, n_clips=3, references=True)
        while t.current is not None:
            t.rate(5 if t.current.is_reference else score)
    rated = {s.utt_id for s in t.playlist if not s.is_reference}
    extra = next(u for u in t.filter.frame()["utt_id"] if u not in rated)
    solo = widgets.ListeningTest(df, roots, folder / "ratings.csv")
    solo.listener.value, solo.filter.search.value = "cy", extra  # one clip, one listener
    solo.start()
    solo.rate(1)

    loaded = ratings_adapter.load(folder)
    assert loaded.skipped.empty
    m = manifest.validate(loaded.manifest, roots={"ratings": folder})
    assert set(m["corpus"]) == {"ratings"} and set(m["split"]) == {"test"}
    assert m["path"].str.startswith("audio/toy/").all()
    by_rated = m.set_index("rated_utt_id")
    offered = [s for s in t.playlist if not s.is_reference]
    for s in offered:
        r = by_rated.loc[s.utt_id]
        assert r["mos"] == pytest.approx(3.0) and r["n_votes"] == 2
        assert r["mos_std"] == pytest.approx(np.std([4, 2], ddof=1))
        assert r["listeners"] == "anna+bo"
    one = by_rated.loc[extra]
    assert one["n_votes"] == 1 and one["mos"] == 1.0 and np.isnan(one["mos_std"])
    refs = m[m["is_reference"]]
    assert len(refs) == 2 and set(refs["sys_id"]) == {"reference"} and (refs["mos"] == 5.0).all()
    assert refs["utt_id"].str.startswith("ratings/toy/_up/clean/").all()

    shutil.rmtree(roots["toy"])  # the rated corpus is gone: the copies keep the ratings usable
    again = ratings_adapter.load(folder)
    pd.testing.assert_frame_equal(again.manifest, loaded.manifest)


def test_adapter_reports_torn_lines_and_missing_audio(corpus, tmp_path):
    df, roots = corpus
    folder = tmp_path / "r"
    ratings_store.record_roots(folder, {"toy": roots["toy"]})
    ratings_store.append_rating(folder / "ratings.csv", row())
    ratings_store.append_rating(folder / "ratings.csv", row(utt_id="toy/gone", path="wav/gone.wav"))
    with open(folder / "ratings.csv", "a") as fh:
        fh.write("2026-01-01T10:00:09,bo")
    with pytest.warns(ratings_store.TornLineWarning):
        loaded = ratings_adapter.load(folder, corpus="my-test")
    assert list(loaded.manifest["rated_utt_id"]) == ["toy/toy-000"]
    reasons = dict(zip(loaded.skipped["row"], loaded.skipped["reason"]))
    assert reasons == {"line 4": "torn or malformed rating line", "my-test/toy/wav/gone": "audio file missing"}
    with pytest.raises(corpora.base.CorpusError, match=r"\[ratings\] expected a ratings CSV"):
        ratings_adapter.load(tmp_path)
    with pytest.raises(ratings_store.RatingsError, match="recorded with root"):
        ratings_store.record_roots(folder, {"toy": tmp_path})


@pytest.mark.skipif("ratings" not in corpora.names(), reason="adapter not registered in sqa.data.corpora yet")
def test_the_adapter_is_registered_for_merge_specs(corpus, tmp_path):
    t = start_test(corpus, tmp_path, n_clips=2)
    t.rate(3)
    assert len(corpora.load("ratings", t.ratings_path.parent).manifest) == 1


# ---------------------------------------------------------------- comparison

def test_disagreements_rank_the_largest_gaps_first():
    a = pd.DataFrame({"utt_id": ["x", "y", "z", "w"], "corpus": "c", "mos": [1, 2, 3, 4], "pred": [1.0, 2.0, 3.0, 4.0]})
    b = pd.DataFrame({"utt_id": ["x", "y", "z", "v"], "pred": [1.5, 4.0, 2.0, 1.0]})
    d = clips.disagreements(a, b, top=2, names=("m1", "m2"))
    assert list(d["utt_id"]) == ["y", "z"]
    assert list(d["diff"]) == [-2.0, 1.0] and list(d["m2"]) == [4.0, 2.0]
    assert d.attrs["only_one"] == 2
    with pytest.raises(ValueError, match="m2: 1 prediction"):
        clips.disagreements(a, b.assign(pred=[1, None, 2, 3]), names=("m1", "m2"))
    with pytest.raises(ValueError, match="m2: pred is not a number for 1 clip"):
        clips.disagreements(a, b.assign(pred=["1", "x", "2", "3"]), names=("m1", "m2"))
    with pytest.raises(ValueError, match="duplicate utt_id"):
        clips.disagreements(a, pd.concat([b, b]), names=("m1", "m2"))


def test_comparison_widget_lists_and_plays_the_top_disagreements(corpus):
    df, roots = corpus
    preds = made_up_predictions(df)
    c = widgets.Comparison(df, roots, preds, top=3)
    a, b = c.model_a.value, c.model_b.value
    assert {a, b} == set(preds)
    gap = (preds[a].set_index("utt_id")["pred"] - preds[b].set_index("utt_id")["pred"]).abs()
    assert list(c.rows["utt_id"]) == list(gap.sort_values(ascending=False).index[:3])
    assert len(c.play_buttons) == 3 and len(c.table.children) == 7 * 4
    c.play_buttons[1].click()
    assert c.view.stimulus.utt_id == c.rows.loc[1, "utt_id"]
    assert decode(c.view.audio.value)[1] in (16000, 48000)
    c.corpus.value = "other"
    assert set(c.rows["corpus"]) == {"other"} and len(c.rows) == 3
    c.model_b.value = a
    assert c.rows.empty and "two different models" in c.message.value
    lonely = widgets.Comparison(df, roots, {a: preds[a]})
    assert "needs predictions of two models; found 1" in lonely.message.value
    with pytest.raises(ValueError, match="model 'x' has no predictions"):
        widgets.Comparison(df, roots, preds, model_a="x")


def test_collect_predictions_finds_every_run_and_reports_bad_files(corpus, outputs):
    df, _ = corpus
    preds = made_up_predictions(df)
    for stage, tag, sub in (("04_distill", "size-1M", "."), ("06_analysis", "main", "dnsmos")):
        d = outputs / "smoke" / stage / tag
        (d / sub).mkdir(parents=True)
        preds["04_distill/size-1M"].to_csv(d / sub / "predictions.csv", index=False)
        atomic.append_line(outputs / "registry.jsonl", json.dumps(
            {"profile": "smoke", "stage": stage, "tag": tag, "dir": f"$SQA_OUTPUTS/smoke/{stage}/{tag}"}))
    bad = outputs / "smoke" / "05_prune" / "p"
    bad.mkdir(parents=True)
    pd.DataFrame({"utt_id": ["a"], "score": [1.0]}).to_csv(bad / "predictions.csv", index=False)
    atomic.append_line(outputs / "registry.jsonl", json.dumps(
        {"profile": "smoke", "stage": "05_prune", "tag": "p", "dir": "$SQA_OUTPUTS/smoke/05_prune/p"}))
    with pytest.warns(UserWarning, match=r"predictions lack column\(s\) \['pred'\]"):
        found = clips.collect_predictions("smoke")
    assert list(found) == ["04_distill/size-1M", "06_analysis/main/dnsmos"]
    assert len(found["06_analysis/main/dnsmos"]) == len(df)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert clips.collect_predictions("demo") == {}


def test_app_tabs_and_metrics(corpus, tmp_path):
    df, roots = corpus
    finished = []
    app = widgets.ListenApp(df, roots, tmp_path / "ratings.csv", made_up_predictions(df), listener="anna", n_clips=2,
                            on_finish=finished.append)
    assert [app.widget.get_title(i) for i in range(3)] == ["Listen & rate", "Browse clips", "Compare models"]
    app.test.start()
    app.test.rate(4)
    m = app.metrics()
    assert m["clips_offered"] == 6 and m["session_clips"] == 2 and m["models"] == 2
    assert m["ratings"]["votes"] == 1 and m["ratings"]["listeners"] == 1
    assert finished == []  # the run is registered when the session ends, not before
    app.test.rate(2)
    assert len(finished) == 1 and finished[0]["ratings"]["votes"] == 2


# ---------------------------------------------------------------- the notebook

@pytest.mark.slow
def test_notebook_07_runs_headless_after_a_merge(corpus, outputs, tmp_path):
    df, roots = corpus
    run01 = outputs / "smoke" / "01_merge_datasets" / "main"
    manifest.write(df, run01 / "manifest.parquet", roots=roots)
    atomic.append_line(outputs / "registry.jsonl", json.dumps(
        {"profile": "smoke", "stage": "01_merge_datasets", "tag": "main",
         "dir": "$SQA_OUTPUTS/smoke/01_merge_datasets/main"}))
    assert set(notebooks.declared("07_listen")) == {"profile", "listener", "corpus", "split", "n_clips", "seed"}
    res = subprocess.run([sys.executable, "-m", "papermill", str(notebooks.path("07_listen")),
                          str(tmp_path / "out.ipynb"), "-p", "profile", "smoke", "-p", "listener", "anna",
                          "-p", "n_clips", "4", "--no-progress-bar"],
                         capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "SQA_OUTPUTS": str(outputs)})
    assert res.returncode == 0, res.stderr[-3000:]
    run = outputs / "smoke" / "07_listen" / "main"
    assert not (run / "metrics.json").exists(), "registered before any vote"
    assert [r["stage"] for r in runs.registry("smoke")] == ["01_merge_datasets"]
    params = json.loads((run / "params.json").read_text())
    assert params["inputs"]["manifest"] == "$SQA_OUTPUTS/smoke/01_merge_datasets/main"
