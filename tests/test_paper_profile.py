"""The paper profile runs: stages 01 -> 04 through ``sqa run`` on a miniature SQA_DATA_ROOT (every
paper corpus in its distributor's layout, plus clean speech, noise and RIRs from which stage 01
builds the unlabeled pool), with a tiny local Wav2Vec2 standing in for XLS-R, ``device auto``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from sqa.pipeline import profiles

from corpus_fixtures import WRITERS, write_pool_sources
from corpus_fixtures import sqa_run as run_stage

pytestmark = pytest.mark.slow

POOL = {"n_clips": 24, "clip_s": 1.0, "shard_size": 8, "families": ["bandlimit", "loss", "clip"]}


def sqa_run(stage: str, env: dict, *params: str) -> Path:
    return run_stage("paper", stage, env, *params)


def write_data_root(root: Path) -> set[str]:
    """Every paper corpus in its folder and the pool sources; returns the labeled corpus names."""
    corpora = set()
    for spec in profiles.PAPER_CORPORA:
        adapter, _, folder = spec.partition(":")
        if adapter != "pool":
            corpora |= set(WRITERS[adapter](root / folder).clips)
    sources = write_pool_sources(root / "pool-sources")
    (sources / "pool.json").write_text(json.dumps(POOL))
    return corpora


def test_paper_profile_stages_01_to_04(tmp_path):
    from sqa.models.teacher import tiny_backbone

    data_root = tmp_path / "SQA_DATA_ROOT"
    labeled = write_data_root(data_root)
    backbone = tiny_backbone(tmp_path / "tiny-w2v2", layers=3)
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "SQA_DATA_ROOT": str(data_root), "SQA_OUTPUTS": str(tmp_path / "outputs"),
           "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")]), "OMP_WAIT_POLICY": "PASSIVE"}

    merged = sqa_run("01", env)
    manifest = pd.read_parquet(merged / "manifest.parquet")
    pool = manifest[manifest["corpus"] == "pool"]
    assert len(pool) == POOL["n_clips"] and set(pool["split"]) == {"unlabeled"}
    assert set(manifest["corpus"]) == labeled | {"pool"}
    assert (data_root / "pool" / "pool.csv").is_file() and pool["chain"].str.contains("recorded_").any()

    teacher = sqa_run("02", env, "teacher", "xlsr-300m-l2", "init", str(backbone), "epochs", "1", "batch_size", "4",
                      "window_s", "1.0", "device", "auto")
    assert "'device': 'auto'" in (teacher / "params.json").read_text().replace('"', "'")
    assert (teacher / "model.safetensors").is_file()

    labels_run = sqa_run("03", env, "num_workers", "1", "batch_size", "4", "device", "auto")
    labels = pd.read_parquet(labels_run / "pseudo" / "pseudo_labels.parquet")
    assert sorted(labels["utt_id"]) == sorted(pool["utt_id"]) and labels["pseudo_mos"].between(1, 5).all()
    metrics = json.loads((labels_run / "metrics.json").read_text())
    assert metrics["n_labeled"] == POOL["n_clips"] and metrics["dev_check"]["matches"]

    student = sqa_run("04", env, "size", "10k", "epochs", "1", "batch_size", "4", "window_s", "1.0",
                      "device", "auto")
    assert (student / "model.safetensors").is_file()
    assert json.loads((student / "metrics.json").read_text())["params"] > 0
