"""Pseudo-labeling: sharded, resumable after SIGKILL, same shards with worker processes,
ensembles, failures listed with reasons, row order kept, other inputs refused on resume."""

from __future__ import annotations

import fcntl
import importlib
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

from sqa.training import pseudo_labels

TOY_SOURCE = '''
"""A deterministic toy teacher: MOS = 1 + 4 * sigmoid(a * rms + b), optionally slow."""
import json
import sys
import time

import torch


class Toy(torch.nn.Module):
    def __init__(self, a: float = 30.0, b: float = -2.0, delay: float = 0.0):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(float(a)))
        self.b = torch.nn.Parameter(torch.tensor(float(b)))
        self.delay = delay

    def forward(self, x):
        if self.delay:
            time.sleep(self.delay)
        rms = x.pow(2).mean(dim=1).sqrt()
        return 1 + 4 * torch.sigmoid(self.a * rms + self.b)


def main(manifest, roots, out_dir, delay):
    import pandas as pd
    from sqa.training.pseudo_labels import pseudo_label

    df = pd.read_parquet(manifest)
    roots = {k: v for k, v in json.loads(open(roots).read()).items()}
    pseudo_label(Toy(delay=delay), df, roots, out_dir, batch_size=4, shard_size=5, progress=False)
'''

LENGTHS = (4000, 8000, 12000)
BAD = {3: "garbage", 17: "empty", 31: "text"}  # row -> kind of bad file
SHARD = 5
N = 40


@pytest.fixture(scope="session")
def toy(tmp_path_factory):
    """The ``toymodel`` module, written to a folder on sys.path (so spawned workers import it too)."""
    folder = tmp_path_factory.mktemp("toy")
    (folder / "toymodel.py").write_text(TOY_SOURCE)
    sys.path.insert(0, str(folder))
    try:
        yield importlib.import_module("toymodel")
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("toymodel", None)


@pytest.fixture(scope="session")
def pool(tmp_path_factory):
    """40 clips over two corpora (3 lengths, varied levels) with 3 bad files; manifest + roots."""
    base = tmp_path_factory.mktemp("pool")
    roots = {"a": base / "root_a", "b": base / "root_b"}
    rng = np.random.default_rng(0)
    rows, rms = [], {}
    for i in range(N):
        corpus = "a" if i % 3 else "b"
        rel = f"spk{i % 4}/clip{i:02d}.wav"
        f = roots[corpus] / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        if i in BAD:
            if BAD[i] == "empty":
                sf.write(f, np.zeros(0, dtype=np.float32), 16000)
            else:
                f.write_bytes(rng.bytes(300) if BAD[i] == "garbage" else b"not audio at all\n" * 20)
        else:
            x = (rng.uniform(0.01, 0.3) * rng.standard_normal(LENGTHS[i % 3])).clip(-0.99, 0.99)
            sf.write(f, x.astype(np.float32), 16000, subtype="FLOAT")
            rms[f"{corpus}/clip{i:02d}"] = float(np.sqrt(np.mean(x.astype(np.float32).astype(np.float64) ** 2)))
        rows.append({"utt_id": f"{corpus}/clip{i:02d}", "corpus": corpus, "path": rel, "sys_id": f"sys{i % 5}"})
    df = pd.DataFrame(rows)
    df.to_parquet(base / "manifest.parquet", index=False)
    (base / "roots.json").write_text(json.dumps({k: str(v) for k, v in roots.items()}))
    return {"df": df, "roots": roots, "rms": rms, "base": base,
            "bad": {df["utt_id"][i] for i in BAD}, "good": [u for i, u in enumerate(df["utt_id"]) if i not in BAD]}


@pytest.fixture(scope="session")
def reference(toy, pool, tmp_path_factory):
    """An uninterrupted in-process run."""
    out = tmp_path_factory.mktemp("ref")
    return pseudo_labels.pseudo_label(toy.Toy(), pool["df"], pool["roots"], out, batch_size=4,
                                shard_size=SHARD, progress=False)


def _toy_mos(rms: float, a: float = 30.0, b: float = -2.0) -> float:
    return 1 + 4 / (1 + np.exp(-(a * rms + b)))


def _shards(out: Path) -> dict[str, pd.DataFrame]:
    return {f.name: pd.read_parquet(f) for f in sorted((out / "shards").glob("shard-*.parquet"))}


def test_reference_run_scores_every_loadable_clip_and_lists_failures(reference, pool):
    labels = reference.labels
    assert list(labels.columns) == ["utt_id", "corpus", "sys_id", "pseudo_mos"]
    assert labels["utt_id"].tolist() == pool["good"]
    assert reference.n_ok == 37 and reference.n_failed == 3
    expected = [_toy_mos(pool["rms"][u]) for u in labels["utt_id"]]
    np.testing.assert_allclose(labels["pseudo_mos"], expected, rtol=1e-5)
    sys_of = dict(zip(pool["df"]["utt_id"], pool["df"]["sys_id"]))
    assert labels["sys_id"].tolist() == [sys_of[u] for u in labels["utt_id"]]

    fails = reference.failures.set_index("utt_id")
    assert set(fails.index) == pool["bad"]
    assert "0 frames" in fails.loc["a/clip17", "reason"] and "clip17.wav" in fails.loc["a/clip17", "reason"]
    assert "corrupt audio header" in fails.loc["a/clip31", "reason"]
    assert fails.loc["b/clip03", "path"] == "spk3/clip03.wav"

    out = reference.out_dir
    pd.testing.assert_frame_equal(pd.read_parquet(out / "pseudo_labels.parquet"), labels)
    on_disk = pd.read_csv(out / "failures.csv")
    assert list(on_disk.columns) == ["utt_id", "path", "reason"] and set(on_disk["utt_id"]) == pool["bad"]
    shards = _shards(out)
    assert list(shards) == [f"shard-{k:05d}.parquet" for k in range(N // SHARD)]
    assert all(f["row"].tolist() == list(range(k * SHARD, (k + 1) * SHARD)) for k, f in enumerate(shards.values()))
    progress = [json.loads(line) for line in (out / "progress.jsonl").read_text().splitlines()]
    assert [p["rows"] for p in progress] == [[k * SHARD, (k + 1) * SHARD] for k in range(N // SHARD)]
    assert sum(p["failed"] for p in progress) == 3 and all(p["seconds"] >= 0 for p in progress)
    job = json.loads((out / "job.json").read_text())
    assert job["n_rows"] == N and job["shard_size"] == SHARD and job["models"][0]["class"] == "toymodel.Toy"


def test_sigkill_then_resume_gives_every_clip_once_and_equals_uninterrupted_run(toy, pool, reference, tmp_path):
    out = tmp_path / "job"
    base = pool["base"]
    cmd = [sys.executable, "-c", f"import toymodel; toymodel.main({str(base / 'manifest.parquet')!r}, "
                                 f"{str(base / 'roots.json')!r}, {str(out)!r}, 0.3)"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(toy.__file__).parent), *sys.path])}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    progress = out / "progress.jsonl"
    deadline = time.monotonic() + 40
    while not (progress.is_file() and len(progress.read_text().splitlines()) >= 2):
        if proc.poll() is not None:
            pytest.fail(f"job ended before it was killed: {proc.stderr.read().decode()[-2000:]}")
        assert time.monotonic() < deadline, "no two shards finished within 40 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    proc.stdout.close()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

    done = len(progress.read_text().splitlines())
    assert 2 <= done < N // SHARD, "the kill must interrupt the job"
    assert not (out / "pseudo_labels.parquet").exists()
    for name, frame in _shards(out).items():  # whatever exists is a complete shard
        assert len(frame) == SHARD, name

    resumed = pseudo_labels.pseudo_label(toy.Toy(), pool["df"], pool["roots"], out, batch_size=4,
                                   shard_size=SHARD, progress=False)
    assert resumed.shards_skipped == done and resumed.shards_run == N // SHARD - done
    labels = resumed.labels
    assert labels["utt_id"].is_unique and labels["utt_id"].tolist() == pool["good"]
    pd.testing.assert_frame_equal(labels, reference.labels, check_exact=True)
    assert set(resumed.failures["utt_id"]) == pool["bad"] and resumed.failures["reason"].str.len().min() > 10
    assert (resumed.n_ok, resumed.n_failed) == (37, 3)
    lines = [json.loads(line) for line in progress.read_text().splitlines()]
    assert sorted(p["shard"] for p in lines) == list(range(N // SHARD))
    for name, frame in _shards(out).items():
        pd.testing.assert_frame_equal(frame, _shards(reference.out_dir)[name], check_exact=True)

    again = pseudo_labels.pseudo_label(toy.Toy(), pool["df"], pool["roots"], out, shard_size=SHARD, progress=False)
    assert again.shards_run == 0 and again.shards_skipped == N // SHARD
    pd.testing.assert_frame_equal(again.labels, labels)

    with pytest.raises(pseudo_labels.PseudoLabelError, match="different manifest.*n_rows"):
        pseudo_labels.pseudo_label(toy.Toy(), pool["df"].iloc[:-1], pool["roots"], out, shard_size=SHARD, progress=False)
    with pytest.raises(pseudo_labels.PseudoLabelError, match="manifest_sha256"):
        pseudo_labels.pseudo_label(toy.Toy(), pool["df"].iloc[::-1], pool["roots"], out, shard_size=SHARD, progress=False)
    with pytest.raises(pseudo_labels.PseudoLabelError, match="models"):
        pseudo_labels.pseudo_label(toy.Toy(a=31.0), pool["df"], pool["roots"], out, shard_size=SHARD, progress=False)
    with pytest.raises(pseudo_labels.PseudoLabelError, match="shard_size"):
        pseudo_labels.pseudo_label(toy.Toy(), pool["df"], pool["roots"], out, shard_size=8, progress=False)


def test_two_worker_processes_write_the_same_shards(toy, pool, reference, tmp_path):
    run = pseudo_labels.pseudo_label(toy.Toy(), pool["df"], pool["roots"], tmp_path / "w2", batch_size=4,
                               shard_size=SHARD, num_workers=2, progress=False)
    ref_shards, shards = _shards(reference.out_dir), _shards(tmp_path / "w2")
    assert list(shards) == list(ref_shards)
    for name in shards:
        pd.testing.assert_frame_equal(shards[name], ref_shards[name], check_exact=True)
    pd.testing.assert_frame_equal(run.labels, reference.labels, check_exact=True)
    pd.testing.assert_frame_equal(run.failures, reference.failures)
    lines = [json.loads(line) for line in (tmp_path / "w2" / "progress.jsonl").read_text().splitlines()]
    assert sorted(p["shard"] for p in lines) == list(range(N // SHARD))


def test_ensemble_mean_std_and_members(toy, pool, reference, tmp_path):
    params = [(30.0, -2.0), (10.0, 0.5), (60.0, -4.0)]
    run = pseudo_labels.pseudo_label([toy.Toy(a, b) for a, b in params], pool["df"], pool["roots"], tmp_path,
                               shard_size=SHARD, progress=False)
    labels = run.labels
    members = ["pseudo_mos_0", "pseudo_mos_1", "pseudo_mos_2"]
    assert list(labels.columns) == ["utt_id", "corpus", "sys_id", "pseudo_mos", *members, "pseudo_std"]
    np.testing.assert_allclose(labels["pseudo_mos_0"], reference.labels["pseudo_mos"], rtol=1e-12)
    for col, (a, b) in zip(members, params):
        np.testing.assert_allclose(labels[col], [_toy_mos(pool["rms"][u], a, b) for u in labels["utt_id"]], rtol=1e-5)
    m = labels[members].to_numpy()
    np.testing.assert_allclose(labels["pseudo_mos"], m.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(labels["pseudo_std"], m.std(axis=1, ddof=0), rtol=1e-12, atol=1e-15)
    assert (labels["pseudo_std"] > 0.01).all() and run.n_failed == 3


def test_row_order_follows_the_input(toy, pool, reference, tmp_path):
    order = np.random.default_rng(1).permutation(N)
    df = pool["df"].iloc[order].reset_index(drop=True)
    run = pseudo_labels.pseudo_label(toy.Toy(), df, pool["roots"], tmp_path, batch_size=3, shard_size=7, progress=False)
    assert run.labels["utt_id"].tolist() == [u for u in df["utt_id"] if u not in pool["bad"]]
    ref = reference.labels.set_index("utt_id").loc[run.labels["utt_id"]]
    np.testing.assert_allclose(run.labels["pseudo_mos"], ref["pseudo_mos"], rtol=1e-6)
    assert run.failures["utt_id"].tolist() == [u for u in df["utt_id"] if u in pool["bad"]]


def test_model_problems_fail_clearly(pool, tmp_path):
    def half_nan(x):
        out = x.abs().mean(dim=1).double() + 1
        out[0] = float("nan")
        return out

    run = pseudo_labels.pseudo_label(half_nan, pool["df"], pool["roots"], tmp_path / "nan", batch_size=2,
                               shard_size=10, progress=False)
    nan_rows = run.failures[run.failures["reason"].str.contains("non-finite")]
    assert len(nan_rows) > 0 and run.n_ok + run.n_failed == N and run.labels["pseudo_mos"].notna().all()

    def broken(x):
        raise FloatingPointError("kaboom")

    expected = r"model 0 \(.*broken\) failed on shard 0, a batch of 13 clips x 4000 samples \(b/clip00.*kaboom"
    with pytest.raises(RuntimeError, match=expected):
        pseudo_labels.pseudo_label(broken, pool["df"], pool["roots"], tmp_path / "broken", progress=False)


def test_bad_arguments_and_concurrent_jobs_are_refused(toy, pool, tmp_path):
    df, roots = pool["df"], pool["roots"]
    with pytest.raises(pseudo_labels.PseudoLabelError, match="duplicate utt_id"):
        pseudo_labels.pseudo_label(toy.Toy(), pd.concat([df, df.iloc[:1]]), roots, tmp_path / "x", progress=False)
    with pytest.raises(pseudo_labels.PseudoLabelError, match=r"no root folder for corpus \['b'\]"):
        pseudo_labels.pseudo_label(toy.Toy(), df, {"a": roots["a"]}, tmp_path / "x", progress=False)
    with pytest.raises(pseudo_labels.PseudoLabelError, match="shard_size must be a positive integer"):
        pseudo_labels.pseudo_label(toy.Toy(), df, roots, tmp_path / "x", shard_size=0, progress=False)
    with pytest.raises(pseudo_labels.PseudoLabelError, match="lacks columns.*sys_id"):
        pseudo_labels.pseudo_label(toy.Toy(), df.drop(columns="sys_id"), roots, tmp_path / "x", progress=False)
    with pytest.raises(pseudo_labels.PseudoLabelError, match="checkpoint .* does not exist"):
        pseudo_labels.pseudo_label(tmp_path / "nope.safetensors", df, roots, tmp_path / "x", progress=False)
    with pytest.raises(pseudo_labels.PseudoLabelError, match="num_workers=2 contradicts"):
        pseudo_labels.pseudo_label(toy.Toy(), df, roots, tmp_path / "x", num_workers=2,
                             devices=["cuda:0", "cuda:1", "cuda:2"], progress=False)

    with pytest.raises(pseudo_labels.PseudoLabelError, match="cannot be sent to worker processes"):
        pseudo_labels.pseudo_label(lambda x: x.mean(dim=1), df, roots, tmp_path / "lambda", num_workers=2, progress=False)
    assert not (tmp_path / "lambda").exists()
    empty = pseudo_labels.pseudo_label(toy.Toy(), df.iloc[:0], roots, tmp_path / "empty", progress=False)
    assert (empty.n_ok, empty.n_failed, len(empty.labels)) == (0, 0, 0)
    assert pd.read_csv(tmp_path / "empty" / "failures.csv").columns.tolist() == ["utt_id", "path", "reason"]

    busy = tmp_path / "busy"
    busy.mkdir()
    fd = os.open(busy / ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(pseudo_labels.PseudoLabelError, match="another pseudo_label job"):
            pseudo_labels.pseudo_label(toy.Toy(), df, roots, busy, progress=False)
    finally:
        os.close(fd)


@pytest.mark.slow
def test_teacher_checkpoint_path_in_workers_equals_in_process(pool, tmp_path):
    """Workers load a real (tiny) XLS-R teacher from its checkpoint path (each imports transformers)."""
    from sqa.models import checkpoint
    from sqa.models.teacher import TeacherConfig, XlsrTeacher, tiny_backbone

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    teacher = XlsrTeacher(TeacherConfig(str(tiny_backbone(tmp_path / "w2v2", layers=2)), [2],
                                        head={"dim_transformer": 16, "n_layers": 1}))
    ckpt = checkpoint.save(tmp_path / "teacher.safetensors", teacher, "xlsr-teacher", teacher.checkpoint_config())
    df = pool["df"].iloc[:20]
    one = pseudo_labels.pseudo_label(ckpt, df, pool["roots"], tmp_path / "one", shard_size=SHARD, progress=False)
    two = pseudo_labels.pseudo_label(ckpt, df, pool["roots"], tmp_path / "two", shard_size=SHARD, num_workers=2,
                               progress=False)
    assert one.n_ok == 18 and one.labels["pseudo_mos"].between(1, 5).all()
    assert one.labels["pseudo_mos"].std() > 0
    pd.testing.assert_frame_equal(two.labels, one.labels, check_exact=False, rtol=1e-5)
    assert json.loads((tmp_path / "two" / "job.json").read_text())["models"][0]["kind"] == "checkpoint"


def test_workers_for_picks_one_process_per_cpu_core():
    assert pseudo_labels.workers_for(0) == len(os.sched_getaffinity(0))
    assert pseudo_labels.workers_for(0, "cuda:0") == 1 and pseudo_labels.workers_for(3) == 3
    with pytest.raises(ValueError, match="num_workers=-1"):
        pseudo_labels.workers_for(-1)


def test_a_parametrized_module_is_refused_for_workers_with_the_way_out(pool, tmp_path):
    import torch

    model = torch.nn.Sequential(torch.nn.utils.parametrizations.weight_norm(torch.nn.Linear(4, 1)))
    with pytest.raises(pseudo_labels.PseudoLabelError, match="parametrized weights.*pass its checkpoint path"):
        pseudo_labels.pseudo_label(model, pool["df"], pool["roots"], tmp_path / "wn", num_workers=2, progress=False)


def test_a_checkpoint_is_known_by_its_weights_not_its_file_bytes(pool, tmp_path):
    """Rewriting the same weights (newer code, other metadata) resumes the job; other weights are
    refused; a job that recorded the file's SHA-256 (before) resumes and is upgraded."""
    import torch

    from sqa import export
    from sqa.models import checkpoint
    from sqa.models.student import ConvTransformerSQA, preset

    torch.manual_seed(0)
    model = ConvTransformerSQA(preset("10k"))
    ckpt = tmp_path / "teacher.safetensors"
    checkpoint.save(ckpt, model, model.arch, model.checkpoint_config())
    df, out = pool["df"].iloc[:SHARD], tmp_path / "job"
    first = pseudo_labels.pseudo_label(ckpt, df, pool["roots"], out, shard_size=SHARD, progress=False)
    record = json.loads((out / "job.json").read_text())["models"][0]
    assert set(record) == {"kind", "arch", "content_sha256"}

    checkpoint.save(ckpt, model, model.arch, model.checkpoint_config(), extra={"written": "again"})
    again = pseudo_labels.pseudo_label(ckpt, df, pool["roots"], out, shard_size=SHARD, progress=False)
    pd.testing.assert_frame_equal(again.labels, first.labels)

    job = json.loads((out / "job.json").read_text())
    job["models"] = [{"kind": "checkpoint", "arch": model.arch, "sha256": export.sha256(ckpt)}]
    (out / "job.json").write_text(json.dumps(job))
    pseudo_labels.pseudo_label(ckpt, df, pool["roots"], out, shard_size=SHARD, progress=False)
    assert json.loads((out / "job.json").read_text())["models"][0] == record

    with torch.no_grad():
        next(model.parameters()).add_(0.01)
    checkpoint.save(ckpt, model, model.arch, model.checkpoint_config())
    with pytest.raises(pseudo_labels.PseudoLabelError, match="different manifest or model.*content_sha256"):
        pseudo_labels.pseudo_label(ckpt, df, pool["roots"], out, shard_size=SHARD, progress=False)
    job["models"][0]["sha256"] = "0" * 64
    (out / "job.json").write_text(json.dumps(job))
    with pytest.raises(pseudo_labels.PseudoLabelError, match="different manifest or model"):
        pseudo_labels.pseudo_label(ckpt, df, pool["roots"], out, shard_size=SHARD, progress=False)
