"""The generated demo corpora: seeded, resumable, byte-identical; labels behave."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from sqa.data import audio, manifest
from sqa.data.corpora import demo as demo_adapter
from sqa.synth import degradations, demo_corpus, objective_labels, pool, speech


def digest(folder):
    """Every built file's hash, but the reports (timings) and the pool's job file (its sources' folder)."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name not in ("build_report.json", "job.json")}


@pytest.fixture(scope="session")
def smoke_corpus(tmp_path_factory):
    data = tmp_path_factory.mktemp("demo") / "data"
    report = demo_corpus.build(data, "smoke", seed=0, progress=False)
    return data, report


def test_plan_splits_sources_once_and_keeps_pool_apart(tmp_path):
    sources, clips = demo_corpus.plan("smoke", 0)
    assert set(clips["corpus"]) == set(demo_corpus.CORPORA)
    assert clips.groupby("source")["split"].nunique().max() == 1
    assert set(clips["split"]) == {"train", "dev", "test"}
    pool = demo_corpus.pool_sources(tmp_path, sources)
    assert len(pool.clean) == demo_corpus.SIZES["smoke"].pool_sources and not pool.noise and not pool.rir
    assert not {f"clean/{s}.wav" for s in clips["source"]} & set(pool.clean)
    s2, c2 = demo_corpus.plan("smoke", 0)
    assert c2.equals(clips) and s2.equals(sources)
    assert not demo_corpus.plan("smoke", 1)[0]["text"].equals(sources["text"])


def test_built_corpora_load_as_ordinary_corpora(smoke_corpus):
    data, report = smoke_corpus
    assert report["clips"]["demo-noise"] == demo_corpus.SIZES["smoke"].clips_per_corpus
    frames = [demo_adapter.load(data / c).manifest for c in [*demo_corpus.CORPORA, demo_corpus.POOL]]
    df = manifest.validate(manifest.merge(frames), roots={c: data / c for c in [*demo_corpus.CORPORA, demo_corpus.POOL]})
    labeled = df[df["split"] != "unlabeled"]
    assert labeled["mos"].between(1.0, 4.65).all() and labeled["mos_scale"].eq("pesq-wb").all()
    pool = df[df["split"] == "unlabeled"]
    assert set(pool["corpus"]) == {demo_corpus.POOL} and len(pool) == demo_corpus.SIZES["smoke"].pool_clips
    assert pool["mos"].isna().all() and pool["oracle_mos"].notna().all()
    assert not set(pool["source_id"]) & set(labeled["source_id"])
    chain = degradations.Chain.from_json(df.loc[df["corpus"] == "demo-reverb", "chain"].iloc[0])
    assert all(step.family == "reverb" for step in chain.steps) or not chain.steps


def test_interrupted_build_resumes_to_byte_identical_files(smoke_corpus, tmp_path):
    data, _ = smoke_corpus
    other = tmp_path / "data"
    code = f"from sqa.synth import demo_corpus; demo_corpus.build({str(other)!r}, 'smoke', seed=0, progress=False)"
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while len(list(other.glob("demo-*/wav/*.json"))) < 5:
        if proc.poll() is not None:
            pytest.fail(f"the build ended (exit {proc.returncode}) before it was killed: "
                        f"{proc.stderr.read().decode()[-2000:]}")
        if time.time() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            pytest.fail("the build wrote no clip within 300 s: nothing to interrupt")
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, f"the build exited with {proc.returncode}, not by the kill"
    proc.stderr.close()
    assert not (other / "build_report.json").exists(), "killed too late to test resuming"
    demo_corpus.build(other, "smoke", seed=0, progress=False)
    assert not list(other.rglob("*.tmp*"))
    assert digest(other) == digest(data)


def test_different_size_or_seed_in_the_same_folder_is_refused(smoke_corpus):
    data, _ = smoke_corpus
    with pytest.raises(ValueError, match="built with size='smoke', seed=0; asked for size='smoke', seed=1"):
        demo_corpus.build(data, "smoke", seed=1, progress=False)


def test_corpora_of_the_earlier_builder_are_refused_not_mixed(smoke_corpus, tmp_path):
    data, _ = smoke_corpus
    old = tmp_path / "data"
    old.mkdir()
    report = json.loads((data / "build_report.json").read_text())
    (old / "build_report.json").write_text(json.dumps({k: v for k, v in report.items() if k != "format"}))
    for corpus in [*demo_corpus.CORPORA, demo_corpus.POOL]:
        (old / corpus).mkdir()
        (old / corpus / "labels.csv").write_text("path\n")
    with pytest.raises(ValueError, match="earlier builder .*its pool was not made by sqa.synth.pool"):
        demo_corpus.build(old, "smoke", seed=0, progress=False)


def test_the_pool_is_the_pool_builders_output_with_oracle_labels(smoke_corpus):
    data, report = smoke_corpus
    built = pd.read_csv(data / demo_corpus.POOL / pool.LABELS, dtype=str, keep_default_na=False)
    labels = pd.read_csv(data / demo_corpus.POOL / "labels.csv")
    assert labels["path"].tolist() == built["path"].tolist()
    assert labels["chain"].tolist() == built["chain"].tolist()
    assert report["pool"]["n_clips"] == len(built) and report["pool"]["n_skipped"] == 0
    ref = audio.load(data / built["clean"].iloc[0])
    deg = audio.load(data / demo_corpus.POOL / built["path"].iloc[0])
    assert labels["oracle_mos"].iloc[0] == pytest.approx(objective_labels.pesq_wb(ref, deg), abs=1e-4)


@pytest.fixture(scope="module")
def utterance():
    return speech.Voice().synthesize("Please leave the parcel at the blue door next to the garden gate.",
                                  level_db=-26.0)


def test_labels_fall_monotonically_with_snr(utterance):
    rng = np.random.default_rng(0)
    scores = [objective_labels.pesq_wb(utterance, degradations.WhiteNoise(snr).apply(utterance, 16000, rng))
              for snr in (40, 30, 20, 10, 5, 0, -5)]
    assert all(a > b for a, b in zip(scores, scores[1:])), scores
    assert scores[0] > 3.0 and scores[-1] < 1.5


def test_labels_fall_monotonically_with_opus_bitrate(utterance):
    scores = [objective_labels.pesq_wb(utterance, degradations.Codec("opus", kbps).apply(utterance, 16000, 0))
              for kbps in (24, 16, 12, 9, 6)]
    assert all(a > b for a, b in zip(scores, scores[1:])), scores


def test_demo_pool_recipe_is_the_paper_pools_with_pinned_codecs():
    cfg = demo_corpus.pool_config("demo", seed=3)
    size = demo_corpus.SIZES["demo"]
    assert (cfg.n_clips, cfg.seed, cfg.clip_s, cfg.codecs) == (size.pool_clips, 3, demo_corpus.CLIP_SECONDS,
                                                                demo_corpus.CODECS)
    defaults = pool.PoolConfig(n_clips=1)
    assert all(getattr(cfg, k) == getattr(defaults, k) for k in ("p_rir", "p_noise", "p_chain", "max_chain",
                                                                 "snr_db", "families"))
    assert size.pool_oracle_clips < size.pool_clips
