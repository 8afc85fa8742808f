"""Data-driven structured pruning of a trained model to a parameter count (stage 05).

The teacher itself is shrunk instead of distilling a student: whole units are removed — conv
channels, attention heads, FFN neurons, attention-pool neurons and whole transformer layers — of
the XLS-R teacher (:mod:`sqa.training.pruning.wav2vec2`) or of a convolutional-transformer student
(:mod:`sqa.training.pruning.student`). Which units go is decided on calibration clips by importance
(:mod:`sqa.training.pruning.taylor`: the linearised increase of the squared error to the unpruned model's
outputs when a unit alone is removed, per parameter it saves), in ``steps`` rounds of
prune -> short recovery. The result is a smaller dense model (arch ``pruned-conv-transformer-sqa``
or ``pruned-xlsr-teacher``) whose per-layer dims live in its checkpoint config, so
``sqa.models.checkpoint.load`` rebuilds it without this module; then it is fine-tuned like any
model (``sqa.pipeline.stages.fit_student``).

    model = prune.prunable(teacher)                       # same outputs, maskable units
    cal = prune.calibration_set(model, df, roots, n=64, window_s=4.0)
    result = prune.prune_to(model, "1M", cal)             # or "29%"; within ±3 % (asserted)
    prune.kept_units(result.model)                        # units kept per layer (figure: units_figure)

Importing this module is cheap (torch is imported by the functions that need it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import pandas as pd

from sqa import paths
from sqa.models import count_params
from sqa.pipeline import profiles, runs

if TYPE_CHECKING:
    import torch
    from torch import nn

    from sqa.training.pruning.taylor import Calibration

STAGE = "05_prune"
METHODS = ("taylor", "l0")
TOLERANCE = 0.03

def stage_defaults(profile: str) -> dict:
    """Defaults and settings of stage 05 for ``profile`` (``sqa.pipeline.profiles.STAGE_DEFAULTS``)."""
    return dict(profiles.STAGE_DEFAULTS[STAGE][paths.check_profile(profile)])


def settings(profile: str, resolved: Mapping) -> dict:
    """The run's parameters (empty ones filled from the profile) and the profile's pruning and
    fine-tuning settings that are not notebook parameters."""
    return {**stage_defaults(profile), **profiles.resolve(profile, STAGE, dict(resolved))}


# ---------------------------------------------------------------- models


def prunable(model: "nn.Module") -> "nn.Module":
    """The prunable equivalent (same outputs) of a convolutional-transformer student, an XLS-R
    teacher, or a pruned model (copied); the input model is not changed."""
    from sqa.models.student import ConvTransformerSQA
    from sqa.models.teacher import XlsrTeacher
    from sqa.training.pruning import student, wav2vec2

    if isinstance(model, ConvTransformerSQA):
        return student.from_student(model)
    if isinstance(model, (XlsrTeacher, wav2vec2.PrunedXlsrTeacher)):
        return wav2vec2.from_teacher(model)
    raise TypeError(f"prunable: no pruning for {type(model).__name__}; "
                    "supported: ConvTransformerSQA students and XlsrTeacher teachers (and their pruned forms)")


def parse_size(size: str | int, params: int) -> int:
    """Target parameter count: a count (``"1M"``, ``"250k"``, ``12345``) or a share of
    ``params`` (``"29%"``); must be positive and below ``params``."""
    from sqa.models.student import parse_size as parse_count

    text = str(size).strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*%", text)
    if m:
        target = round(params * float(m.group(1)) / 100)
    else:
        try:
            target = parse_count(text)
        except ValueError:
            raise ValueError(f"size={size!r}: give a parameter count like '1M', '250k', '25000' "
                             "or a share like '29%'") from None
    if not 0 < target < params:
        raise ValueError(f"size={size!r} means {target:,} parameters; the model has {params:,}: "
                         "the target must be positive and smaller")
    return target


# ---------------------------------------------------------------- calibration and pruning


def calibration_set(model: "nn.Module", df: pd.DataFrame, roots: Mapping[str, Path], n: int, window_s: float,
                    seed: int = 0, fit_to: str = "teacher", batch_size: int = 8,
                    device: str | None = None) -> "Calibration":
    """``n`` clips of ``df`` (drawn with ``seed``), centre ``window_s`` crops, with targets: the
    model's own predictions on those crops (``fit_to="teacher"``) or the ``mos`` labels.

    ``device`` (e.g. ``"auto"``) moves ``model`` there first, so calibration, pruning and
    recovery run there; crops always go to the model's device."""
    import torch

    from sqa.data.datasets import ClipDataset
    from sqa.training.devices import resolve_device
    from sqa.training.pruning.taylor import Calibration, predict_crops

    if device is not None:
        model.to(resolve_device(device))
    if fit_to not in ("teacher", "labels"):
        raise ValueError(f"fit_to={fit_to!r}: use 'teacher' or 'labels'")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"calibration clips n={n!r} must be a positive integer")
    if len(df) == 0:
        raise ValueError("calibration_set: no clips to draw from")
    rows = df.sample(n=min(n, len(df)), random_state=seed).reset_index(drop=True)
    ds = ClipDataset(rows, roots, target="mos" if fit_to == "labels" else None,
                     window=int(round(window_s * 16000)), crop="center", progress=False)
    waves = torch.stack([ds[i]["wave"] for i in range(len(ds))])
    if fit_to == "labels":
        return Calibration(waves, torch.from_numpy(ds.targets).float())
    return Calibration(waves, predict_crops(prunable_or_self(model), waves, batch_size))


def prunable_or_self(model: "nn.Module") -> "nn.Module":
    """``model`` if it already has the pruning protocol, else its prunable equivalent."""
    return model if hasattr(model, "unit_plan") else prunable(model)


def importance(model: "nn.Module", calibration: "Calibration", batch_size: int = 8,
               order: int = 2) -> dict[str, "torch.Tensor"]:
    """Importance of every unit of a prunable model, per group (see :mod:`sqa.training.pruning.taylor`)."""
    from sqa.training.pruning import taylor

    return taylor.importance(prunable_or_self(model), calibration, batch_size, order)


@dataclass
class PruneResult:
    model: "nn.Module"  # the pruned model, eval mode
    history: pd.DataFrame  # one row per prune -> recover step
    params_before: int
    params_after: int
    target: int
    method: str

    @property
    def target_error(self) -> float:
        """(after - target) / target."""
        return (self.params_after - self.target) / self.target


def prune_to(model: "nn.Module", size: str | int, calibration: "Calibration", method: str = "taylor", *,
             steps: int = 5, recover_steps: int = 20, lr: float = 1e-4, gate_steps: int = 200,
             batch_size: int = 8, order: int = 2, seed: int = 0, progress: bool = True) -> PruneResult:
    """Prune ``model`` (unchanged; a copy is pruned) to ``size`` parameters (a count or a share,
    :func:`parse_size`) within ±3 %, guided by ``calibration``; the result is physically smaller.

    ``method="taylor"``: ``steps`` rounds of Taylor importance -> removal -> ``recover_steps``
    optimizer steps (:mod:`sqa.training.pruning.taylor`). ``method="l0"``: ``gate_steps`` steps of
    hard-concrete gate training under a size constraint, removal, ``recover_steps`` steps
    (:mod:`sqa.training.pruning.gates`). ``lr``: the model's learning rate while recovering / training gates.
    """
    import torch

    from sqa.training.pruning import gates, taylor

    if method not in METHODS:
        raise ValueError(f"method={method!r}: use one of {METHODS}")
    work = prunable(model)
    before = count_params(model)  # the prunable form may drop unused tensors (e.g. XLS-R's final LayerNorm)
    target = parse_size(size, before)
    torch.manual_seed(seed)
    if method == "taylor":
        out = taylor.prune(work, target, calibration, steps=steps, recover_steps=recover_steps, lr=lr,
                           batch_size=batch_size, order=order, tolerance=TOLERANCE, seed=seed, progress=progress)
    else:
        out = gates.prune(work, target, calibration, steps=gate_steps, lr=lr, batch_size=batch_size,
                          recover_steps=recover_steps, tolerance=TOLERANCE, seed=seed, progress=progress)
    after = count_params(out.model)
    if abs(after - target) > TOLERANCE * target:
        raise RuntimeError(f"prune_to: reached {after:,} parameters for a target of {target:,} "
                           f"(more than ±{TOLERANCE:.0%}); the units left cannot be removed")
    return PruneResult(out.model.eval(), out.history, before, after, target, method)


def prune_once(run: runs.Run, model: "nn.Module", calibrate, size: str | int, method: str = "taylor",
               **kwargs) -> PruneResult:
    """:func:`prune_to` on the calibration set that ``calibrate()`` draws (e.g. a ``functools.partial``
    of :func:`calibration_set`), done once per run: the pruned model (``pruned.safetensors``, before
    fine-tuning) and its history (``prune_history.csv``) are kept in the run folder, so a re-entered
    run (same identity) reads them back instead of pruning again."""
    from sqa import atomic
    from sqa.models import checkpoint

    saved, history = run.path("pruned.safetensors"), run.path("prune_history.csv")
    if saved.is_file() and history.is_file():
        pruned, _ = checkpoint.load(saved)
        before = count_params(model)
        return PruneResult(pruned.eval(), pd.read_csv(history), before, count_params(pruned),
                           parse_size(size, before), method)
    result = prune_to(model, size, calibrate(), method, **kwargs)
    atomic.write_text(history, result.history.to_csv(index=False))
    checkpoint.save(saved, result.model, result.model.arch, result.model.checkpoint_config(),
                    extra={"stage": run.stage, "tag": run.tag, "state": "pruned, not fine-tuned"})
    return result


# ---------------------------------------------------------------- reports


def kept_units(model: "nn.Module") -> pd.DataFrame:
    """Units kept per layer and kind: ``part, layer, kind, kept, total, share, layer_kept``."""
    table = pd.DataFrame(prunable_or_self(model).unit_rows())
    table["share"] = table["kept"] / table["total"]
    return table


def units_figure(table: pd.DataFrame, title: str = ""):
    """Bars of the share of units kept per layer, one panel per model part and kind; removed
    layers hatched."""
    from sqa.analysis.figures import pyplot

    plt = pyplot()
    panels = list(table.groupby(["part", "kind"], sort=False))
    fig, axes = plt.subplots(1, len(panels), figsize=(2.2 + 1.9 * len(panels), 3.0), squeeze=False,
                             sharey=True)
    for ax, ((part, kind), rows) in zip(axes[0], panels):
        labels = rows["layer"].astype(str)
        gone = ~rows["layer_kept"].astype(bool)
        ax.bar(labels, rows["share"].where(~gone, 0.0), color="tab:blue")
        ax.bar(labels[gone], [1.0] * int(gone.sum()), color="none", edgecolor="lightgrey", hatch="//")
        for x, (kept, removed) in enumerate(zip(rows["kept"], gone)):
            ax.annotate("removed" if removed else f"{kept}", (x, 0.03), ha="center", fontsize=7, rotation=90)
        ax.set(title=f"{part}: {kind} (of {int(rows['total'].max())})", xlabel="layer", ylim=(0, 1.05))
        ax.tick_params(axis="x", labelsize=7)
    axes[0][0].set_ylabel("share of units kept")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def inference_ms(model: "nn.Module", seconds: float = 4.0, threads: int = 1, repeats: int = 5,
                 clock: str = "wall") -> float:
    """Milliseconds to score one ``seconds`` clip on the CPU with ``threads`` threads: the best of
    ``repeats`` runs after a warm-up. ``clock="wall"``: elapsed time; ``"cpu"``: CPU time of the
    calling thread (with one thread, what the wall time is on an idle core, also on a busy machine)."""
    import time

    import torch

    from sqa.training.devices import model_device

    if repeats < 1:
        raise ValueError(f"inference_ms: repeats must be >= 1, got {repeats}")
    if clock not in ("wall", "cpu") or (clock == "cpu" and threads != 1):
        raise ValueError(f"inference_ms: clock must be 'wall', or 'cpu' with threads=1; got {clock!r}, {threads}")
    now = time.perf_counter if clock == "wall" else time.thread_time
    device, was = model_device(model), model.training
    model.cpu().eval()
    x = 0.1 * torch.randn(1, int(round(seconds * 16000)), generator=torch.Generator().manual_seed(0))
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            model(x)
            best = float("inf")
            for _ in range(repeats):
                t0 = now()
                model(x)
                best = min(best, now() - t0)
    finally:
        torch.set_num_threads(old)
        model.to(device).train(was)
    return 1000.0 * best


# ---------------------------------------------------------------- stage helpers


def finetune_plan(run: runs.Run, profile: str, given: str, finetune_on: str,
                  labeled_mix: float) -> tuple[Path | None, str, str]:
    """How the pruned model is fine-tuned: the stage-03 run whose pseudo-labels it learns from
    (recorded as an input of ``run``; None when it learns from the labeled train split only),
    the ``fit_student`` mode, and a sentence saying so. ``finetune_on="pool"``: the run ``given``
    (must exist) or, empty, the latest one if there is one; ``"labeled"``: no pseudo-labels."""
    if finetune_on not in ("pool", "labeled"):
        raise ValueError(f"finetune_on={finetune_on!r}: use 'pool' or 'labeled'")
    if finetune_on == "labeled":
        return None, "labeled-only", "fine-tuning on the labeled train split only (finetune_on='labeled')"
    if given:
        folder = runs.resolve_input(profile, "03_pseudo_labels", given)
    else:
        try:
            folder = runs.latest(profile, "03_pseudo_labels")
        except FileNotFoundError:
            return None, "labeled-only", (f"no finished 03_pseudo_labels run for profile {profile!r}: "
                                          "fine-tuning on the labeled train split only")
    labels = folder / "pseudo" / "pseudo_labels.parquet"
    if not labels.is_file():
        raise FileNotFoundError(f"pseudo-label run {folder} has no {labels.relative_to(folder)}")
    run.use_input("pseudo_labels", folder)
    share = (f"mixed with labeled train clips (labeled_mix {labeled_mix:g} of every batch)" if labeled_mix > 0
             else "alone (labeled_mix 0)")
    return folder, "distill", f"fine-tuning on the pseudo-labels of {folder} {share}"


def calibration_pool(data) -> pd.DataFrame:
    """Clips to calibrate on (stage data): the train split and the unlabeled pool; their targets
    are the unpruned model's outputs, so labels are not needed."""
    df = data.manifest
    return df[df["split"].isin(["train", "unlabeled"])].reset_index(drop=True)


def save_report(run: runs.Run, units: pd.DataFrame) -> None:
    """``kept_units.csv`` in the run folder (:func:`prune_once` keeps ``prune_history.csv``)."""
    from sqa import atomic

    atomic.write_text(run.path("kept_units.csv"), units.to_csv(index=False))


def speed(before: "nn.Module", after: "nn.Module", repeats: int, seconds: float = 4.0) -> dict:
    """Milliseconds per ``seconds`` clip (CPU time of one thread), before and after pruning ({} if
    repeats is 0)."""
    if repeats <= 0:
        return {}
    ms_before = inference_ms(before, seconds, 1, repeats, clock="cpu")
    ms_after = inference_ms(after, seconds, 1, repeats, clock="cpu")
    return {"ms_per_clip_before": ms_before, "ms_per_clip_after": ms_after, "speedup": ms_before / ms_after,
            "timing": f"{seconds:g}-s clip, CPU time of 1 thread, best of {repeats}"}


def result_metrics(result: PruneResult) -> dict:
    """Size facts of a pruning run for ``metrics.json``."""
    return {"method": result.method, "params_before": result.params_before, "params_after": result.params_after,
            "params": result.params_after, "target_params": result.target, "target_error": result.target_error,
            "steps": len(result.history)}


def teacher_scores(teacher_dir: Path) -> dict:
    """The unpruned teacher's mean test scores, from its run's ``metrics.json``."""
    import json

    return json.loads((Path(teacher_dir) / "metrics.json").read_text()).get("test_mean", {})
