"""The release recipe: voice and sentence hold-out, the teacher-labeled held-out pool as a corpus,
the teacher kept as shipped (``epochs 0``), and the release profile's stages 01 -> 04 through
``sqa run`` on a miniature build."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sqa.data import corpora
from sqa.pipeline import profiles
from sqa.synth import pool, release_corpus, voices
from sqa.training import loop

from corpus_fixtures import sqa_run as run_stage
from corpus_fixtures import write_pool_sources

VOICES = ["espeak-en+m3", "espeak-en-us", "flite-kal", "flite-slt", "mbrola-us1", "piper-joe"]


def test_held_out_voices_and_sentences_are_used_nowhere_in_training():
    train, held = release_corpus.split_voices(VOICES)
    assert held and not set(held) & set(train) and set(train) | set(held) == set(VOICES)
    assert "piper-joe" in train
    files = release_corpus.plan(VOICES, release_corpus.Size(train_files=20, heldout_files=6, sentences_per_file=2),
                                seed=3)
    by_part = {p: g for p, g in files.groupby("part")}
    assert len(by_part["train"]) == 20 and len(by_part["heldout"]) == 6
    assert set(by_part["heldout"]["voice"]) <= set(held) and not set(by_part["train"]["voice"]) & set(held)
    assert not set(by_part["train"]["text"]) & set(by_part["heldout"]["text"])
    assert files["file"].is_unique
    assert files.equals(release_corpus.plan(VOICES, release_corpus.Size(20, 6, sentences_per_file=2), seed=3))


def test_a_single_voice_speaks_both_parts():
    assert release_corpus.split_voices(["piper-joe"]) == (["piper-joe"], [])
    files = release_corpus.plan(["piper-joe"], release_corpus.Size(4, 2, sentences_per_file=1), seed=0)
    assert set(files["voice"]) == {"piper-joe"}


def test_size_overrides_are_checked(tmp_path):
    (tmp_path / release_corpus.OVERRIDES).write_text(json.dumps({"pool_clips": 10}))
    assert release_corpus.size_for(tmp_path).pool_clips == 10
    (tmp_path / release_corpus.OVERRIDES).write_text(json.dumps({"pool_clip": 10}))
    with pytest.raises(ValueError, match="unknown key.*pool_clip"):
        release_corpus.size_for(tmp_path)


def test_pool_with_teacher_labels_is_a_labeled_corpus(tmp_path):
    src = write_pool_sources(tmp_path / "src")
    folder = tmp_path / "held"
    pool.build(src, folder, pool.PoolConfig(n_clips=6, clip_s=1.0, shard_size=3), n_jobs=1, progress=False)
    clips = pd.read_csv(folder / "pool.csv")["clip"].tolist()
    pd.DataFrame({"clip": clips[:5], "mos_raw": [1.5, 2.0, 3.25, 4.0, 4.5],
                  "split": ["dev", "test", "test", "dev", "test"]}).to_csv(folder / "teacher_labels.csv", index=False)
    loaded = corpora.load("pool", folder)
    m = loaded.manifest.set_index("utt_id")
    assert len(m) == 5 and m.loc[f"held/{clips[2]}", "mos"] == 3.25 and m.loc[f"held/{clips[2]}", "split"] == "test"
    assert sorted(m["split"].unique()) == ["dev", "test"]
    assert loaded.skipped["row"].tolist() == [f"held/{clips[5]}"]
    assert "no teacher label" in loaded.skipped["reason"].iloc[0]


def test_zero_epochs_keep_the_model_as_given():
    model = torch.nn.Linear(3, 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = loop.untrained(model)
    assert result.model is model and not model.training and result.log.empty and result.best_epoch == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert loop.TrainConfig(epochs=0).epochs == 0
    with pytest.raises(ValueError, match="epochs"):
        loop.TrainConfig(epochs=-1)


def test_release_profile_defaults():
    assert profiles.default_corpora("release") == ["pool:release-pool", "pool:release-heldout"]
    assert profiles.resolve("release", "02_teacher", {"epochs": None, "init": None})["epochs"] == 0
    students = profiles.sweep("release", "04_distill")
    assert {s["size"] for s in students} == {"50k", "250k", "1M"} and {s["labeled_mix"] for s in students} == {"0"}
    assert profiles.sweep("release", "05_prune") == [{"size": "1M"}, {"size": "250k"}] and profiles.sweep("release", "07_listen") == []
    assert profiles.resolve("release", "04_distill", {"hint_weight": None})["hint_weight"] == 0.3
    assert all(profiles.resolve(p, "04_distill", {"hint_weight": None})["hint_weight"] == 0.0
               for p in ("smoke", "demo", "paper"))


def sqa_run(stage: str, env: dict, *params: str) -> Path:
    return run_stage("release", stage, env, *params)


@pytest.mark.slow
def test_release_profile_stages_01_to_04(tmp_path):
    """A miniature release build: spoken sources, both pools, the teacher's held-out labels, the
    teacher as shipped, pseudo-labels and a student distilled from them alone."""
    data_root = tmp_path / "data"
    data_root.mkdir()
    size = {"train_files": 3, "heldout_files": 2, "pool_clips": 8, "heldout_clips": 6, "sentences_per_file": 1,
            "human_files_per_set": 1}
    (data_root / release_corpus.OVERRIDES).write_text(json.dumps(size))
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "SQA_OUTPUTS": str(tmp_path / "outputs"), "OMP_WAIT_POLICY": "PASSIVE",
           "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}

    merged = sqa_run("01", env, "data_root", str(data_root))
    manifest = pd.read_parquet(merged / "manifest.parquet")
    held = manifest[manifest["corpus"] == release_corpus.HELDOUT]
    train = manifest[manifest["corpus"] == release_corpus.POOL]
    assert len(train) == 8 and set(train["split"]) == {"unlabeled"}
    assert len(held) == 6 and set(held["split"]) <= {"dev", "test"} and held["mos"].between(1, 5).all()
    voice = lambda df: set(df["source_id"].str.split("/").str[2])  # noqa: E731 - <corpus>/clean/<voice>/<file>
    if len(voices.available()) > 1:  # with the piper voice alone (no Debian voices) both parts share it
        assert voice(held) and not voice(held) & voice(train)

    teacher = sqa_run("02", env)
    preds = pd.read_csv(teacher / "predictions.csv")
    assert sorted(preds["utt_id"]) == sorted(held["utt_id"])
    assert (preds["pred"] - preds["mos"]).abs().max() < 1e-4  # the held-out labels are its own scores

    labels = sqa_run("03", env, "num_workers", "1", "batch_size", "4")
    pseudo = pd.read_parquet(labels / "pseudo" / "pseudo_labels.parquet")
    assert sorted(pseudo["utt_id"]) == sorted(train["utt_id"])

    student = sqa_run("04", env, "size", "10k", "labeled_mix", "0", "epochs", "1", "batch_size", "4",
                      "window_s", "1.0")
    assert student.name.startswith("size-10k_mode-distill_labeled-mix-0.0_")
    assert json.loads((student / "metrics.json").read_text())["test"][release_corpus.HELDOUT]["n"] > 0
    assert json.loads((student / "params.json").read_text())["resolved"]["hint_weight"] == 0.3
    summaries = list((tmp_path / "outputs" / "release" / "cache" / "hints").glob("*/*.safetensors"))
    assert len(summaries) == len(train)  # the teacher's summary of every pool clip, for the hint loss


def test_engines_take_turns_before_voices():
    voices = [f"espeak-en+m{i}" for i in range(1, 9)] + ["flite-slt", "piper-joe"]
    picked = release_corpus.by_engine(voices, 9)
    assert [release_corpus.engine(v) for v in picked] == ["espeak", "flite", "piper"] * 3
    assert picked[0::3] == ["espeak-en+m1", "espeak-en+m2", "espeak-en+m3"]


def test_human_recordings_are_joined_held_out_by_set_and_unreadable_ones_counted(tmp_path, monkeypatch):
    import soundfile as sf

    recs = []
    for s, name in enumerate(["alsa", "asterisk-a", "asterisk-b", "asterisk-c"]):
        source = voices.HumanSpeech(name, "pkg", "CC0", "en", "someone", str(tmp_path / name))
        for i in range(6):
            path = tmp_path / name / f"p{i}.wav"
            path.parent.mkdir(exist_ok=True)
            sf.write(path, 0.3 * np.sin(np.arange(8000 * (i + 1)) * 0.05 * (s + 1)).astype(np.float32) if i else
                     np.zeros(0, dtype=np.float32), 8000)
            recs.append(voices.Recording(path, source))
    monkeypatch.setattr(voices, "human_recordings", lambda: recs)
    out = release_corpus.add_human_recordings(tmp_path / "src", release_corpus.Size(human_files_per_set=5), seed=0)
    assert out["heldout/asterisk-c"] == 2 and out["train/alsa"] == 2 and len(out["skipped"]) == 4
    assert all("empty" in why for why in out["skipped"].values())
    joined = sorted((tmp_path / "src" / "train" / "clean" / "human-alsa").glob("*.wav"))
    assert len(joined) == 2 and sf.info(joined[0]).samplerate == 16000 and sf.info(joined[0]).duration > 2
