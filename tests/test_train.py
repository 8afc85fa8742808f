"""Training loop and datasets: learning, early stopping, schedule, exact resume after a kill, DDP.

Synthetic data: white-noise clips whose MOS is a linear function of their level in dBFS, written as
WAV files; a tiny conv model with log-energy pooling can learn it in seconds. The subprocess
scripts import this module (``PYTHONPATH`` = tests folder) for the model and the data.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from torch import nn
from torch.utils.data import ConcatDataset

from sqa.analysis.figures import learning_curve_figure
from sqa.analysis.metrics import scores
from sqa.data import audio
from sqa.data.datasets import ClipDataset, MixedBatchSampler, collate
from sqa.training.loop import (
    LOG_COLUMNS,
    LOG_FILE,
    TrainConfig,
    fit,
    lr_factor,
    make_scheduler,
    predict,
)
from sqa.training.train_state import STATE_FILE, load_state

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
SR = 16000
WINDOW = 2048


class TinyNet(nn.Module):
    """Conv filter bank -> log energy per channel -> linear -> MOS in 1..5."""

    def __init__(self, dropout: float = 0.1, channels: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, channels, 32, stride=16)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(channels, 1)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        energy = torch.log(self.conv(wave[:, None]).pow(2).mean(-1) + 1e-8)
        return 1.0 + 4.0 * torch.sigmoid(self.out(self.drop(energy)) / 4.0).squeeze(-1)


def level_to_mos(level_db: np.ndarray) -> np.ndarray:
    return 1.0 + 4.0 * (level_db + 40.0) / 35.0


def write_corpus(root: Path, n: int, seed: int, corpus: str = "synth", split: str = "train") -> pd.DataFrame:
    """``n`` noise clips of 2500..6000 samples at levels -40..-5 dBFS; MOS from the level."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        level = rng.uniform(-40.0, -5.0)
        x = rng.standard_normal(int(rng.integers(2500, 6000))) * 10 ** (level / 20)
        rel = f"{split}/{i:03d}.wav"
        (root / split).mkdir(parents=True, exist_ok=True)
        sf.write(root / rel, x.astype(np.float32), SR, subtype="FLOAT")
        rows.append({"utt_id": f"{corpus}/{split}/{i:03d}", "corpus": corpus, "path": rel,
                     "mos": float(level_to_mos(np.array(level))), "noise_mos": rng.uniform(1, 5)})
    return pd.DataFrame(rows)


def make_datasets(root: Path, target: str = "mos") -> tuple[ClipDataset, ClipDataset]:
    roots = {"synth": root}
    train = ClipDataset(pd.read_csv(root / "train.csv"), roots, target=target, window=WINDOW, crop="random",
                        preload=True, progress=False)
    dev = ClipDataset(pd.read_csv(root / "dev.csv"), roots, target=target, window=WINDOW, crop="center",
                      preload=True, progress=False)
    return train, dev


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    write_corpus(root, 64, seed=1, split="train").to_csv(root / "train.csv", index=False)
    write_corpus(root, 32, seed=2, split="dev").to_csv(root / "dev.csv", index=False)
    return root


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models train far faster on one thread


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(TESTS), str(REPO)]))
    env.pop("WORLD_SIZE", None)
    return env


# ---------------------------------------------------------------- datasets


def test_clip_dataset_crops_are_seeded_by_seed_epoch_index(corpus):
    train, dev = make_datasets(corpus)
    a = train[3]["wave"]
    assert a.shape == (WINDOW,) and a.dtype == torch.float32
    assert torch.equal(train[3]["wave"], a)  # same (seed, epoch, index) -> same crop
    train.set_epoch(1, seed=0)
    assert not torch.equal(train[3]["wave"], a)
    train.set_epoch(0, seed=0)
    assert torch.equal(train[3]["wave"], a)
    full = audio.load(dev.paths[5])
    assert torch.equal(dev[5]["wave"], torch.from_numpy(audio.crop_or_pad(full, WINDOW, "center")))
    item = dev[0]
    assert item["index"] == 0 and item["corpus"] == "synth"
    assert item["target"].item() == pytest.approx(pd.read_csv(corpus / "dev.csv")["mos"][0], abs=1e-5)


def test_clip_dataset_pads_short_clips_at_the_end_as_scoring_does(corpus):
    from sqa.models.student import ConvTransformerSQA, preset

    df = pd.read_csv(corpus / "train.csv")
    window = 7000  # longer than every clip (2500..6000 samples)
    model = ConvTransformerSQA(replace(preset("10k"), window_samples=window)).eval()
    for crop in ("random", "center"):
        ds = ClipDataset(df, {"synth": corpus}, window=window, crop=crop, progress=False)
        for epoch in (0, 1):
            ds.set_epoch(epoch, seed=0)
            full = torch.from_numpy(audio.load(ds.paths[2]))
            wave = ds[2]["wave"]
            assert torch.equal(wave[: len(full)], full) and torch.all(wave[len(full):] == 0)
            with torch.no_grad():  # the training input of a short clip is what scoring the clip sees
                assert torch.allclose(model.forward_window(wave[None]), model(full[None]), atol=1e-6)


def test_clip_dataset_full_clips_collate_with_padding(corpus):
    ds = ClipDataset(pd.read_csv(corpus / "train.csv"), {"synth": corpus}, crop=None)
    items = [ds[0], ds[1], ds[2]]
    batch = collate(items)
    lengths = [len(it["wave"]) for it in items]
    assert batch["wave"].shape == (3, max(lengths))
    assert batch["lengths"].tolist() == lengths
    assert batch["index"].tolist() == [0, 1, 2] and batch["corpus"] == ["synth"] * 3
    short = int(np.argmin(lengths))
    assert torch.all(batch["wave"][short, lengths[short]:] == 0)
    assert torch.equal(batch["wave"][short, : lengths[short]], items[short]["wave"])


def test_clip_dataset_rejects_bad_input(corpus):
    df = pd.read_csv(corpus / "train.csv")
    with pytest.raises(ValueError, match=r"no root folder.*synth"):
        ClipDataset(df, {"other": corpus})
    bad = df.copy()
    bad.loc[4, "mos"] = np.nan
    with pytest.raises(ValueError, match=r"1 row\(s\) have no finite 'mos'.*synth/train/004"):
        ClipDataset(bad, {"synth": corpus})
    assert math.isnan(ClipDataset(bad, {"synth": corpus}, target=None)[4]["target"].item())
    with pytest.raises(ValueError, match="crop must be"):
        ClipDataset(df, {"synth": corpus}, window=WINDOW, crop="left")
    with pytest.raises(ValueError, match="a window needs crop"):
        ClipDataset(df, {"synth": corpus}, crop="random")
    with pytest.raises(ValueError, match="a window needs crop"):
        ClipDataset(df, {"synth": corpus}, window=WINDOW)
    missing = df.copy()
    missing.loc[0, "path"] = "train/nope.wav"
    with pytest.raises(audio.AudioError, match=r"synth/train/000.*nope.wav.*not found"):
        ClipDataset(missing, {"synth": corpus})[0]


def test_mixed_batch_sampler_shares_and_epochs():
    s = MixedBatchSampler(50, 12, batch_size=10, share_b=0.2, seed=3)
    batches = list(s)
    assert len(batches) == len(s) == math.ceil(50 / 8)
    a_seen = [i for b in batches for i in b if i < 50]
    assert sorted(a_seen) == list(range(50))  # every A item exactly once per epoch
    assert all(sum(i >= 50 for i in b) == 2 for b in batches)  # 20 % of 10 from B
    assert all(50 <= i < 62 for b in batches for i in b if i >= 50)
    assert list(s) == batches  # same epoch -> same order
    s.set_epoch(1)
    assert list(s) != batches
    s.set_epoch(0)
    shards = [list(MixedBatchSampler(50, 12, 10, 0.2, seed=3, rank=r, world_size=3)) for r in range(3)]
    assert len({len(x) for x in shards}) == 1  # every rank runs the same number of steps
    padded = batches + batches[:2]  # 7 batches dealt to 3 ranks: the first two are repeated
    assert [shards[r] for r in range(3)] == [padded[r::3] for r in range(3)]
    with pytest.raises(ValueError, match="share_b"):
        MixedBatchSampler(50, 12, 10, 1.0)
    with pytest.raises(ValueError, match="both must be >= 1"):
        MixedBatchSampler(50, 12, 4, 0.1)


# ---------------------------------------------------------------- schedule and config


def test_warmup_then_decay_schedule_shape():
    total, warm = 100, 10
    f = np.array([lr_factor(s, total, warm, "cosine") for s in range(total)])
    np.testing.assert_allclose(f[:warm], np.arange(1, warm + 1) / warm)  # linear warm-up to the peak
    assert f.max() == pytest.approx(1.0) and int(np.argmax(f)) == warm - 1
    assert np.all(np.diff(f[warm - 1:]) <= 1e-12) and f[-1] < 0.01  # cosine decay towards 0
    lin = np.array([lr_factor(s, total, warm, "linear") for s in range(warm, total)])
    np.testing.assert_allclose(np.diff(lin), -1 / (total - warm))
    opt = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=0.5)
    sched = make_scheduler(opt, TrainConfig(lr=0.5, warmup_frac=0.1), total)
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    np.testing.assert_allclose(lrs, 0.5 * f)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match=r"TrainConfig.loss='huber'"):
        TrainConfig(loss="huber")
    with pytest.raises(ValueError, match=r"TrainConfig.warmup_frac=1.0"):
        TrainConfig(warmup_frac=1.0)
    with pytest.raises(ValueError, match=r"TrainConfig.patience=0"):
        TrainConfig(patience=0)


# ---------------------------------------------------------------- learning, stopping, resume


def test_fit_learns_signal_level(corpus, tmp_path):
    torch.manual_seed(0)
    train, dev = make_datasets(corpus)
    best_calls = []
    cfg = TrainConfig(epochs=8, lr=0.05, batch_size=8, patience=None, progress=False, device="cpu")
    t0 = time.perf_counter()
    res = fit(TinyNet(), train, dev, cfg, tmp_path / "run", save_best=lambda m, info: best_calls.append(info))
    seconds = time.perf_counter() - t0
    log = pd.read_csv(tmp_path / "run" / LOG_FILE)
    assert list(log.columns) == list(LOG_COLUMNS) and len(log) == 8
    assert log["step"].tolist() == [8 * e for e in range(1, 9)]
    assert log["train_loss"].iloc[-1] < 0.3 * log["train_loss"].iloc[0]
    assert log["dev_rmse"].min() < 0.5 * log["dev_rmse"].iloc[0]
    assert res.best_dev_pcc > 0.9 and res.best_dev_pcc == pytest.approx(log["dev_pcc"].max())
    assert best_calls[-1]["epoch"] == res.best_epoch
    pred, target = predict(res.model, dev, batch_size=8)
    assert scores(target, pred)["pcc"] == pytest.approx(res.best_dev_pcc, abs=1e-6)  # best weights returned
    assert seconds < 60, f"training took {seconds:.1f} s"
    fig = learning_curve_figure(log)
    assert len(fig.axes) == 2 and len(fig.axes[1].lines[0].get_xdata()) == 8


def test_early_stopping_after_patience_and_resume_of_a_stopped_run(corpus, tmp_path):
    torch.manual_seed(0)
    train, dev = make_datasets(corpus, target="noise_mos")  # targets unrelated to the audio
    cfg = TrainConfig(epochs=40, lr=0.03, batch_size=16, patience=2, progress=False, device="cpu")
    res = fit(TinyNet(), train, dev, cfg, tmp_path / "run")
    log = res.log
    assert res.stopped_early and len(log) == res.best_epoch + 2 < 40
    after = log[log["epoch"] > res.best_epoch]["dev_pcc"]
    assert (after.fillna(-np.inf) <= res.best_dev_pcc).all()
    again = fit(TinyNet(), train, dev, cfg, tmp_path / "run")  # resuming a finished run trains nothing
    assert len(again.log) == len(log) and again.best_epoch == res.best_epoch
    assert all(torch.equal(a, b) for a, b in zip(again.model.state_dict().values(), res.model.state_dict().values()))
    with pytest.raises(ValueError, match=r"cannot resume with a different config \(lr: 0.03 -> 0.01\)"):
        fit(TinyNet(), train, dev, TrainConfig(**{**cfg.__dict__, "lr": 0.01}), tmp_path / "run")
    with pytest.raises(ValueError, match=r"train_state.pt: holds a different model \(conv.bias: \(8,\) -> \(6,\)"):
        fit(TinyNet(channels=6), train, dev, cfg, tmp_path / "run")


def test_bias_aware_loss_with_mixed_batches(tmp_path):
    root = tmp_path / "data"
    a = write_corpus(root, 48, seed=5, corpus="a", split="a")
    b = write_corpus(root, 24, seed=6, corpus="b", split="b")
    b["mos"] = 1.0 + 0.5 * (b["mos"] - 1.0)  # corpus b rates on a compressed scale
    roots = {"a": root, "b": root}
    train = ConcatDataset([ClipDataset(x, roots, window=WINDOW, crop="random", preload=True, progress=False)
                           for x in (a, b)])
    dev = ClipDataset(a.iloc[:16], roots, window=WINDOW, crop="center")
    cfg = TrainConfig(epochs=10, lr=0.03, batch_size=10, loss="bias-aware", patience=None, progress=False,
                      device="cpu")
    torch.manual_seed(0)
    res = fit(TinyNet(), train, dev, cfg, tmp_path / "run",
              batch_sampler_fn=lambda r, w: MixedBatchSampler(48, 24, 10, 0.2, seed=0, rank=r, world_size=w))
    assert res.log["step"].iloc[0] == 6  # ceil(48 / 8) mixed batches per epoch
    maps = load_state(tmp_path / "run")["bias"]
    assert set(maps) == {"a", "b"}
    assert maps["b"][0] < 0.75 * maps["a"][0]  # b's map learned the compressed scale
    assert res.best_dev_pcc > 0.9


def train_for_resume_test(data: Path, out: Path, model_cls: type[nn.Module]) -> None:
    """The run of the resume test: 3 epochs of 8 steps; saves the returned and the last weights."""
    torch.manual_seed(0)
    train, dev = make_datasets(data)
    cfg = TrainConfig(epochs=3, lr=0.03, batch_size=8, patience=None, progress=False, device="cpu", grad_clip=0.5)
    res = fit(model_cls(), train, dev, cfg, out / "run")
    torch.save(res.model.state_dict(), out / "final.pt")
    torch.save(load_state(out / "run")["model"], out / "last.pt")


TRAIN_SCRIPT = """
import os, signal, sys
import torch
torch.set_num_threads(1)
from pathlib import Path
from test_train import TinyNet, train_for_resume_test

kill_at = int(sys.argv[3])

class KilledAt(TinyNet):
    calls = 0
    def forward(self, wave):
        if self.training:
            KilledAt.calls += 1
            if KilledAt.calls == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        return super().forward(wave)

train_for_resume_test(Path(sys.argv[1]), Path(sys.argv[2]), KilledAt)
"""


def test_killed_run_resumes_to_identical_weights(corpus, tmp_path):
    """A process SIGKILLed mid-epoch 2, resumed in a fresh process == an uninterrupted run (here)."""
    script = tmp_path / "train_script.py"
    script.write_text(TRAIN_SCRIPT)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    for d in (straight, killed):
        d.mkdir()
    steps = 8  # 64 clips / batch 8
    run = [sys.executable, str(script), str(corpus), str(killed)]
    victim = subprocess.Popen(run + [str(steps + 3)], env=_env(), stderr=subprocess.PIPE, text=True)
    train_for_resume_test(corpus, straight, TinyNet)  # meanwhile, the uninterrupted run
    assert victim.wait(timeout=120) == -signal.SIGKILL, victim.stderr.read()
    victim.stderr.close()
    state = load_state(killed / "run")
    assert state["epoch"] == 1 and state["step"] == steps and not (killed / "final.pt").exists()
    resumed = subprocess.run(run + ["0"], env=_env(), capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    for name in ("last.pt", "final.pt"):
        a = torch.load(straight / name, weights_only=True)
        b = torch.load(killed / name, weights_only=True)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    columns = ["epoch", "step", "train_loss", "dev_pcc", "dev_rmse", "lr"]
    pd.testing.assert_frame_equal(pd.read_csv(straight / "run" / LOG_FILE)[columns],
                                  pd.read_csv(killed / "run" / LOG_FILE)[columns])


DDP_SCRIPT = """
import os, sys
import torch
torch.set_num_threads(1)
from pathlib import Path
from test_train import TinyNet, make_datasets
from sqa.training.loop import TrainConfig, fit

data, out = Path(sys.argv[1]), Path(sys.argv[2])
torch.manual_seed(0)
train, dev = make_datasets(data)
cfg = TrainConfig(epochs=5, lr=0.05, batch_size=8, patience=None, progress=False, device="cpu")
res = fit(TinyNet(), train, dev, cfg, out / "run")
torch.save(res.model.state_dict(), out / f"final_rank{os.environ['RANK']}.pt")
"""


def test_ddp_two_cpu_processes(corpus, tmp_path):
    script = tmp_path / "ddp_script.py"
    script.write_text(DDP_SCRIPT)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
                           str(script), str(corpus), str(tmp_path)], env=_env(), capture_output=True, text=True,
                          timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:]
    w0 = torch.load(tmp_path / "final_rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "final_rank1.pt", weights_only=True)
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    log = pd.read_csv(tmp_path / "run" / LOG_FILE)
    assert len(log) == 5
    assert log["step"].tolist() == [4 * e for e in range(1, 6)]  # 64 clips / 2 ranks / batch 8
    assert log["train_loss"].iloc[-1] < 0.5 * log["train_loss"].iloc[0]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == sorted([STATE_FILE, LOG_FILE])
    # the logged dev PCC of the best epoch covers the whole dev set, gathered from both ranks
    model = TinyNet()
    model.load_state_dict(w0)
    pred, target = predict(model, make_datasets(corpus)[1], batch_size=8)
    best = log.loc[log["dev_pcc"].idxmax()]
    assert scores(target, pred)["pcc"] == pytest.approx(best["dev_pcc"], abs=1e-6)


def test_multigpu_fit_spawns_cpu_processes_and_returns_the_best_weights(corpus, tmp_path):
    """``sqa run --gpus N``'s path (:func:`sqa.training.multigpu.fit`) on the CPU: two spawned gloo
    processes split each epoch's batches, rank 0's state comes back as the caller's result."""
    from sqa.training import multigpu

    torch.manual_seed(0)
    train, dev = make_datasets(corpus)
    cfg = TrainConfig(epochs=3, lr=0.05, batch_size=8, patience=None, progress=False, device="cpu")
    res = multigpu.fit(2, TinyNet(), train, dev, cfg, tmp_path / "run")
    assert res.log["step"].tolist() == [4, 8, 12]  # 64 clips / 2 ranks / batch 8
    assert res.log["train_loss"].iloc[-1] < res.log["train_loss"].iloc[0]
    pred, target = predict(res.model, dev, batch_size=8)
    assert scores(target, pred)["pcc"] == pytest.approx(res.best_dev_pcc, abs=1e-6)
    assert res.best_epoch == int(res.log.loc[res.log["dev_pcc"].idxmax(), "epoch"])
