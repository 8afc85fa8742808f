"""The pool builder on generated clean/noise/RIR folders: counts, seeds, per-clip records, the
adapter, and a SIGKILL during the build followed by a resume (no duplicate, no missing clip,
identical bytes)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from sqa.synth import degradations, pool

from corpus_fixtures import write_pool_sources

CFG = pool.PoolConfig(n_clips=14, clip_s=1.0, seed=7, shard_size=4, families=("bandlimit", "loss", "clip", "enhance"))


def digests(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*.wav"))}


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> Path:
    return write_pool_sources(tmp_path_factory.mktemp("sources"))


@pytest.fixture(scope="module")
def reference(sources, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference")
    pool.build(sources, out, CFG, n_jobs=2, progress=False)
    return out


def test_counts_records_and_the_adapter(sources, reference):
    table = pd.read_csv(reference / "pool.csv", keep_default_na=False)
    assert table["clip"].tolist() == [f"pool-{k:07d}" for k in range(CFG.n_clips)]
    assert len(list(reference.rglob("*.wav"))) == CFG.n_clips
    assert sorted(p.name for p in (reference / "shards").iterdir()) == [f"shard-{s:05d}.csv" for s in range(4)]
    for row in table.itertuples():
        info = sf.info(str(reference / row.path))
        assert (info.samplerate, info.frames, info.subtype) == (16000, 16000, "PCM_16")
        chain = degradations.Chain.from_json(row.chain)  # every step rebuilds with its exact parameters
        assert "+".join(s.name for s in chain.steps) == row.condition or (row.condition == "clean" and not chain.steps)
        assert row.clean.startswith("clean/reader")
    names = {s["name"] for c in table["chain"] for s in json.loads(c)["steps"]}
    assert {"recorded_noise", "recorded_rir"} <= names, names
    report = json.loads((reference / "build_report.json").read_text())
    assert report["n_clips"] == 14 and report["n_skipped"] == 0 and report["sources"] == {"clean": 5, "noise": 2,
                                                                                           "rir": 1}
    from sqa.data import corpora

    loaded = corpora.load("pool", reference)
    assert len(loaded.manifest) == 14 and set(loaded.manifest["split"]) == {"unlabeled"}
    assert loaded.manifest["mos"].isna().all() and loaded.manifest["source_id"].str.contains("clean/reader").all()


def test_a_recorded_chain_replays_to_the_same_samples(sources, reference):
    from sqa.data import audio

    row = pd.read_csv(reference / "pool.csv", keep_default_na=False).iloc[1]
    rec, y = pool.make_clip(CFG, pool.find_sources(sources), 1)
    assert rec["chain"] == row["chain"]
    assert np.array_equal(y, audio.load(reference / row["path"]))


def test_seeds_and_layouts(sources, reference, tmp_path):
    dns = write_pool_sources(tmp_path / "dns", "dns")
    found = pool.find_sources(dns)
    assert (len(found.clean), len(found.noise), len(found.rir)) == (5, 2, 1)
    assert found.clean[0].startswith("datasets/clean/")
    same, other = tmp_path / "same", tmp_path / "other"
    pool.build(sources, same, CFG, n_jobs=1, progress=False)
    assert digests(same) == digests(reference)  # one process or two: the same bytes
    pool.build(sources, other, pool.PoolConfig(**{**CFG.__dict__, "seed": 8}), n_jobs=1, progress=False)
    assert digests(other) != digests(reference)
    with pytest.raises(pool.PoolError, match="another config"):
        pool.build(sources, same, pool.PoolConfig(**{**CFG.__dict__, "n_clips": 15}), progress=False)
    with pytest.raises(pool.PoolError, match="no clean speech"):
        pool.find_sources(tmp_path / "dns" / "datasets" / "noise")


def test_sigkill_during_the_build_then_resume(sources, reference, tmp_path):
    out = tmp_path / "killed"
    slow = pool.PoolConfig(**{**CFG.__dict__})
    code = (f"from sqa.synth import pool\nif __name__ == '__main__':\n"
            f"    pool.build({str(sources)!r}, {str(out)!r}, pool.PoolConfig(**{slow.__dict__!r}), n_jobs=1,"
            f" progress=False)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(pool.__file__).parents[2]), *sys.path])}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while not list((out / "shards").glob("shard-*.csv")):
        if proc.poll() is not None:
            pytest.fail(f"build ended before it was killed: {proc.stderr.read().decode()[-2000:]}")
        assert time.monotonic() < deadline, "no shard finished within 120 s"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the build and its worker process
    proc.wait(timeout=10)
    proc.stdout.close()
    proc.stderr.close()
    done = len(list((out / "shards").glob("shard-*.csv")))
    assert 1 <= done < 4 and not (out / "pool.csv").exists(), "the kill must interrupt the build"

    report = pool.build(sources, out, CFG, n_jobs=2, progress=False)
    assert report.shards_kept == done and report.shards_built == 4 - done
    table = pd.read_csv(out / "pool.csv", keep_default_na=False)
    assert table["clip"].is_unique and len(table) == CFG.n_clips
    pd.testing.assert_frame_equal(table, pd.read_csv(reference / "pool.csv", keep_default_na=False))
    assert digests(out) == digests(reference)
    assert not [p for p in out.rglob(".*.tmp*")], "stale temporary files are removed"
