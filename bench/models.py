"""Benchmark: size and CPU speed of every model (student presets, baselines, the XLS-R teacher).

Per model: parameter count and inference throughput (seconds of audio scored per second of wall
time) on the CPU with 1 and 2 threads (torch ``set_num_threads``; DNSMOS: onnxruntime intra-op
threads; BLAS/OpenMP pools limited alike), for 4-s clips at batch 1 and 8 and for one 20-s clip.
Per student preset also training throughput (clips/s): forward + backward + AdamW step (the
``TrainConfig`` defaults: MSE on scaled MOS, gradient clipping) on batches of 16 4-s windows.
Each figure is the median of several timed calls after warm-up; repeats adapt to a time budget.

Models are scored as the pipeline runs them: students with the 4-s window they are trained and
scored on (``sqa.pipeline.stages.build_model``: a 20-s clip = 17 windows, hop 1 s), baselines through
``sqa.models.baselines`` (DistillMOS 7.68-s windows, DNSMOS 9.01-s windows, a 4-s clip doubled to
16 s first), the teacher as ``XlsrTeacher`` with a randomly initialised XLS-R 300M (the real
architecture, cut after block 21: speed only, no download possible here).

Writes ``bench/results/models.json`` (``models_quick.json`` with ``--quick``: a < 1 min subset)
with the machine (incl. 1-min load average at start, and per model) and prints a Markdown table.

    python -m bench.models [--quick]
"""

from __future__ import annotations

import os
import sys

# Before torch loads libgomp (which reads this once): with the default spinning wait policy, two
# threads on a shared CPU ran 10-50x slower than one here (load average 6-7 on 2 cores); waiting
# passively keeps the numbers about the model rather than about the neighbours' jobs.
OMP_POLICY_APPLIED = "torch" not in sys.modules
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator, Sequence  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from sqa import atomic  # noqa: E402
from sqa.models import baselines  # noqa: E402
from sqa.models.student import PRESETS, ConvTransformerSQA  # noqa: E402

from . import table  # noqa: E402
from .common import machine, results_dir  # noqa: E402

SR = 16000
THREADS = (1, 2)
STUDENT_WINDOW_S = 4.0  # the window students train and score on (sqa.pipeline.stages.build_model)
TRAIN_BATCH = 16
TRAIN_CLIP_S = 4.0
TEACHER_NAME = "xlsr-300m-l21 (random weights, timing only)"
TEACHER_LAYER = 21


@dataclass(frozen=True)
class Setting:
    """One inference measurement: ``batch`` clips of ``clip_s`` seconds per call."""

    clip_s: float
    batch: int

    @property
    def key(self) -> str:
        return f"{self.clip_s:g}s-b{self.batch}"


@dataclass(frozen=True)
class Plan:
    """What one run measures and how long it may spend per figure."""

    students: tuple[str, ...]
    baselines: tuple[str, ...]
    teacher: bool
    settings: tuple[Setting, ...]
    teacher_settings: tuple[Setting, ...]
    train_students: tuple[str, ...]
    budget_s: float  # repeats per figure: as many as fit this long (within the bounds below)
    min_repeats: int
    min_repeats_long: int  # for calls taking long_call_s or more
    max_repeats: int
    long_call_s: float = 2.0
    single_call_s: float = 10.0


FULL = Plan(students=tuple(PRESETS), baselines=baselines.NAMES, teacher=True,
            settings=(Setting(4.0, 1), Setting(4.0, 8), Setting(20.0, 1)),
            teacher_settings=(Setting(4.0, 1), Setting(20.0, 1)),
            train_students=tuple(PRESETS), budget_s=1.0, min_repeats=3, min_repeats_long=2, max_repeats=7)
QUICK = Plan(students=("10k",), baselines=("dnsmos-p808", "mfcc-sqa"), teacher=False,
             settings=(Setting(4.0, 1), Setting(20.0, 1)), teacher_settings=(),
             train_students=("10k",), budget_s=0.3, min_repeats=2, min_repeats_long=2, max_repeats=3)


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """Run torch, BLAS and OpenMP pools with ``n`` threads; restore torch's count afterwards."""
    before = torch.get_num_threads()
    with threadpool_limits(limits=n):
        torch.set_num_threads(n)
        try:
            yield
        finally:
            torch.set_num_threads(before)


def time_calls(fn: Callable[[], object], plan: Plan, warmed: bool = False) -> dict:
    """Median wall time of ``fn`` over repeats after warm-up.

    Warm-up: calls until 0.3 s have passed (1 to 3 calls). A first call that takes at least
    ``plan.single_call_s`` (or ``plan.long_call_s`` when the model already ran at this thread
    count, ``warmed``) counts as the first repeat instead: one-time costs (milliseconds) are
    negligible against it. Repeats:
    as many as fit ``plan.budget_s``, at least ``min_repeats`` (``min_repeats_long`` for long
    calls, one for calls of ``single_call_s`` or more), at most ``max_repeats``.
    """
    times: list[float] = []
    warm, t_start = 0, time.perf_counter()
    while True:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        if warm == 0 and dt >= (plan.long_call_s if warmed else plan.single_call_s):
            times.append(dt)
            break
        warm += 1
        if warm >= 3 or time.perf_counter() - t_start >= 0.3:
            break
    floor = plan.min_repeats if dt < plan.long_call_s else plan.min_repeats_long if dt < plan.single_call_s else 1
    repeats = int(min(plan.max_repeats, max(floor, plan.budget_s // dt)))
    while len(times) < repeats:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "repeats": repeats, "warmup_calls": warm}


def clips(seconds: float, n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` deterministic noise-like 16 kHz float32 clips (speed does not depend on content)."""
    rng = np.random.default_rng(seed)
    length = int(round(seconds * SR))
    envelope = 0.5 + 0.5 * np.sin(np.linspace(0, 8 * np.pi, length))
    return [(0.1 * rng.standard_normal(length) * envelope).astype(np.float32) for _ in range(n)]


def inference(make: Callable[[int], baselines.Baseline], settings: Sequence[Setting], plan: Plan) -> list[dict]:
    """Throughput of ``make(threads).predict`` for every setting and thread count."""
    rows = []
    for n_threads in THREADS:
        with threads(n_threads):
            model = make(n_threads)
            for i, s in enumerate(settings):
                waves = clips(s.clip_s, s.batch)
                timing = time_calls(lambda: model.predict(waves, batch_size=s.batch), plan, warmed=i > 0)
                rows.append({"setting": s.key, "clip_s": s.clip_s, "batch": s.batch, "threads": n_threads,
                             **timing, "audio_s_per_s": s.clip_s * s.batch / timing["median_s"]})
    return rows


def training(name: str, plan: Plan) -> list[dict]:
    """Clips/s of full training steps of a freshly initialised student preset."""
    from sqa.training.loop import TrainConfig

    cfg = TrainConfig()
    rows = []
    for n_threads in THREADS:
        with threads(n_threads):
            torch.manual_seed(0)
            model = ConvTransformerSQA(PRESETS[name]).with_window(STUDENT_WINDOW_S).train()
            opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
            x = torch.from_numpy(np.stack(clips(TRAIN_CLIP_S, TRAIN_BATCH, seed=1)))
            target = torch.linspace(1.0, 5.0, TRAIN_BATCH)

            def step() -> None:
                loss = F.mse_loss((model(x) - 1.0) / 4.0, (target - 1.0) / 4.0)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()

            timing = time_calls(step, plan)
        rows.append({"batch": TRAIN_BATCH, "clip_s": TRAIN_CLIP_S, "threads": n_threads, **timing,
                     "clips_per_s": TRAIN_BATCH / timing["median_s"]})
    return rows


def student(name: str) -> baselines.TorchBaseline:
    """A randomly initialised student preset, as the pipeline scores it (4-s windows, eval mode)."""
    torch.manual_seed(0)
    model = ConvTransformerSQA(PRESETS[name]).with_window(STUDENT_WINDOW_S)
    return baselines.TorchBaseline(f"student-{name}", model, model, "cpu")


def xlsr_300m_config() -> dict:
    """The facebook/wav2vec2-xls-r-300m architecture (its config.json's non-default fields)."""
    from transformers import Wav2Vec2Config

    return Wav2Vec2Config(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                          intermediate_size=4096, conv_dim=(512,) * 7, conv_stride=(5, 2, 2, 2, 2, 2, 2),
                          conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_bias=True, feat_extract_norm="layer",
                          do_stable_layer_norm=True, num_conv_pos_embeddings=128,
                          num_conv_pos_embedding_groups=16).to_dict()


def teacher() -> baselines.TorchBaseline:
    """``XlsrTeacher`` on a random XLS-R 300M cut after block 21, with the default head."""
    from sqa.models.teacher import TeacherConfig, XlsrTeacher

    torch.manual_seed(0)
    model = XlsrTeacher(TeacherConfig(backbone="xls-r-300m (random init)", layers=[TEACHER_LAYER],
                                      backbone_config=xlsr_300m_config()))
    return baselines.TorchBaseline(TEACHER_NAME, model, model, "cpu")


def measure(name: str, kind: str, make: Callable[[int], baselines.Baseline], settings: Sequence[Setting],
            plan: Plan, train: bool) -> dict:
    """One result row: parameters, inference timings, training timings (students)."""
    t0, load = time.perf_counter(), os.getloadavg()[0]
    row = {"name": name, "kind": kind, "n_params": int(make(THREADS[0]).n_params), "load_avg_1min": load,
           "inference": inference(make, settings, plan),
           "training": training(name, plan) if train else []}
    row["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"  {name}: {row['seconds']} s", flush=True)
    return row


def run(plan: Plan) -> list[dict]:
    """Measure every model of ``plan``."""
    out = []
    for name in plan.students:
        model = student(name)
        out.append(measure(name, "student", lambda _t, m=model: m, plan.settings, plan,
                           train=name in plan.train_students))
    for name in plan.baselines:
        shared = None if name.startswith("dnsmos") else baselines.get(name)
        out.append(measure(name, "baseline",
                           lambda t, n=name, s=shared: s or baselines.get(n, intra_op_threads=t),
                           plan.settings, plan, train=False))
    if plan.teacher:
        model = teacher()
        out.append(measure(TEACHER_NAME, "teacher", lambda _t: model, plan.teacher_settings, plan, train=False))
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a subset in < 1 min (smoke check)")
    args = ap.parse_args(argv)
    plan = QUICK if args.quick else FULL
    t0 = time.perf_counter()
    info = machine()
    print(f"bench.models ({'quick' if args.quick else 'full'}), load average {info['load_avg_1min']:.2f} "
          f"on {info['cores']} cores", flush=True)
    models = run(plan)
    policy = os.environ["OMP_WAIT_POLICY"] if OMP_POLICY_APPLIED else "unknown (torch imported before bench.models)"
    result = {"machine": info, "omp_wait_policy": policy, "quick": args.quick, "plan": asdict(plan),
              "threads": list(THREADS), "student_window_s": STUDENT_WINDOW_S,
              "train": {"batch": TRAIN_BATCH, "clip_s": TRAIN_CLIP_S}, "models": models,
              "load_avg_1min_end": os.getloadavg()[0], "seconds": round(time.perf_counter() - t0, 1)}
    atomic.write_json(results_dir() / ("models_quick.json" if args.quick else "models.json"), result)
    print(table.models_table(result))
    return result


if __name__ == "__main__":
    main()
