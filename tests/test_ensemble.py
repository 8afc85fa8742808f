"""Ensemble teacher: its MOS is the unweighted mean of the baselines' own scores, it round-trips
through a checkpoint, the labeling engine scores with it in worker processes and in-process alike,
stages build it, and bad members or inputs fail clearly."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from sqa.models import baselines, checkpoint
from sqa.models.ensemble import MEMBERS, EnsembleTeacher
from sqa.pipeline import stages
from sqa.training import pseudo_labels

from signals import speechlike

SR = 16000
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def clips() -> dict[str, np.ndarray]:
    # < 9.01 s: DNSMOS repeats the clip, DistillMOS pads it; 10 s: several DistillMOS and MFCC windows
    return {"3s": speechlike(3.0, 0), "10s": speechlike(10.0, 1)}


@pytest.fixture(scope="module")
def teacher() -> EnsembleTeacher:
    return EnsembleTeacher()


@pytest.fixture(scope="module")
def member_scores(teacher, clips) -> dict[str, torch.Tensor]:
    """``members_scores`` of each clip scored alone, (n_members,)."""
    return {k: teacher.members_scores(torch.from_numpy(x)[None])[0] for k, x in clips.items()}


@pytest.fixture(scope="module")
def saved(teacher, tmp_path_factory):
    path = tmp_path_factory.mktemp("ensemble") / "model.safetensors"
    return checkpoint.save(path, teacher, teacher.arch, teacher.checkpoint_config())


def test_scores_are_the_unweighted_mean_of_the_baselines(teacher, clips, member_scores):
    assert teacher.members == MEMBERS
    for m, name in enumerate(MEMBERS):
        expected = baselines.get(name).predict(list(clips.values()))
        got = np.array([member_scores[k][m].item() for k in clips])
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0, err_msg=name)
        assert np.all((expected >= 1) & (expected <= 5)), (name, expected)
    # forward (their mean) is checked on a cheap pair below and through the labeling engine


def test_a_subset_of_members_averages_only_those(clips, member_scores):
    pair = EnsembleTeacher(["dnsmos-p808", "mfcc-sqa"])
    assert pair.checkpoint_config() == {"members": ["dnsmos-p808", "mfcc-sqa"]}
    assert [k.split(".")[0] for k in pair.state_dict()] == ["nets"] * len(pair.state_dict())
    assert {k.split(".")[1] for k in pair.state_dict()} == {"mfcc-sqa"}
    cols = [MEMBERS.index("dnsmos-p808"), MEMBERS.index("mfcc-sqa")]
    got = pair(torch.from_numpy(np.stack([clips["3s"], clips["3s"][::-1]])))
    assert got.shape == (2,) and got.dtype == torch.float32
    assert abs(got[0].item() - member_scores["3s"][cols].double().mean().item()) < 1e-5
    flipped = [baselines.get(name).predict([clips["3s"][::-1].copy()])[0] for name in pair.members]
    assert abs(got[1].item() - np.mean(flipped)) < 1e-5


def test_checkpoint_round_trip_gives_identical_scores(teacher, saved, clips, member_scores):
    loaded, info = checkpoint.load(saved)
    assert isinstance(loaded, EnsembleTeacher) and not loaded.training
    assert (info.arch, info.config) == ("ensemble", {"members": list(MEMBERS)})
    want = teacher.state_dict()
    assert loaded.state_dict().keys() == want.keys()
    assert all(torch.equal(t, want[k]) for k, t in loaded.state_dict().items())
    again = loaded.members_scores(torch.from_numpy(clips["3s"])[None])[0]
    torch.testing.assert_close(again, member_scores["3s"], rtol=0, atol=0)
    # nothing of onnxruntime travels with the module: each process opens its own sessions
    clone = pickle.loads(pickle.dumps(loaded))
    assert clone.members == MEMBERS
    assert not any(part in pickle.dumps(loaded) for part in (b"onnxruntime", b"sqa.models.dnsmos"))
    assert all(torch.equal(t, want[k]) for k, t in clone.state_dict().items())


def test_labeling_engine_scores_its_checkpoint_in_workers_and_in_process(saved, clips, member_scores, tmp_path):
    root = tmp_path / "audio"
    root.mkdir()
    for k, x in clips.items():
        sf.write(root / f"{k}.wav", x, SR, subtype="FLOAT")
    df = pd.DataFrame({"utt_id": [f"c/{k}" for k in clips], "corpus": "c", "path": [f"{k}.wav" for k in clips],
                       "sys_id": "s"})
    kwargs = {"device": "cpu", "shard_size": 1, "progress": False}
    workers = pseudo_labels.pseudo_label(saved, df, {"c": root}, tmp_path / "workers", num_workers=2, **kwargs)
    alone = pseudo_labels.pseudo_label(saved, df, {"c": root}, tmp_path / "alone", num_workers=1, **kwargs)
    expected = [member_scores[k].double().mean().item() for k in clips]
    for run in (workers, alone):
        assert run.n_ok == 2 and run.n_failed == 0
        assert run.labels["utt_id"].tolist() == df["utt_id"].tolist()
        np.testing.assert_allclose(run.labels["pseudo_mos"], expected, atol=1e-5, rtol=0)


def test_stages_build_the_ensemble_unchanged_by_the_window():
    model = stages.build_model("ensemble", init="released", window_s=4.0)
    assert isinstance(model, EnsembleTeacher) and model.members == MEMBERS
    assert model.with_window(2.0) is model
    assert stages.frozen_extractor(model, True) is None and stages.frozen_extractor(model, False) is None
    with pytest.raises(ValueError, match="init='random' for ensemble"):
        stages.build_model("ensemble", init="random")


def test_bad_members_inputs_configs_and_training_fail_clearly(teacher, tmp_path):
    for members, match in (([], "no members"), (["distillmos", "nope"], r"unknown \['nope'\]"),
                           (["mfcc-sqa", "mfcc-sqa"], r"repeated \['mfcc-sqa'\]"),
                           ("distillmos", "got the string")):
        with pytest.raises(ValueError, match=match):
            EnsembleTeacher(members)
    with pytest.raises(ValueError, match=r"float \(batch, samples\) tensor"):
        teacher(torch.zeros(SR))
    with pytest.raises(ValueError, match="has 300 samples.*need >= 400"):
        teacher(torch.zeros(1, 300))
    with pytest.raises(RuntimeError, match="cannot be trained"):
        teacher.train()
    assert not teacher.eval().training
    weighted = checkpoint.save(tmp_path / "w.safetensors", teacher, "ensemble",
                               {"members": list(MEMBERS), "weights": [0.4, 0.2, 0.2, 0.2]})
    with pytest.raises(checkpoint.CheckpointError, match=r"an ensemble config is \{'members'.*'weights'"):
        checkpoint.load(weighted)
