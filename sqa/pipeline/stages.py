"""What the training stages share (02 teacher, 04 distill, 05 prune): the manifest of stage 01,
model construction by name, fitting, evaluation on every test corpus, and the run's outputs.

Devices: every stage has a ``device`` parameter (``"auto"``: the GPU when there is one),
resolved by :mod:`sqa.training.devices`. Training leaves the model on its device; predictions
move inputs to the model's device. ``sqa run STAGE --gpus N`` trains on N GPUs
(:mod:`sqa.training.multigpu`) and labels with one process per GPU."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from sqa import atomic, paths
from sqa.analysis import predictions
from sqa.data import manifest
from sqa.pipeline import runs

SR = 16000


@dataclass
class StageData:
    """The merged manifest (stage 01) with its corpus roots."""

    manifest: pd.DataFrame
    roots: dict[str, Path]
    source: Path  # the run folder it came from

    def split(self, name: str) -> pd.DataFrame:
        return self.manifest[self.manifest["split"] == name].reset_index(drop=True)


def load_data(profile: str, manifest_run: str = "") -> StageData:
    """The manifest of the latest (or the named) stage-01 run of ``profile``."""
    folder = runs.resolve_input(profile, "01_merge_datasets", manifest_run)
    path = folder / "manifest.parquet"
    return StageData(manifest.read(path), manifest.roots(path), folder)


def model_cache_dir(profile: str) -> Path:
    """Generated or downloaded model files shared by a profile's runs."""
    return paths.profile_dir(profile) / "models"


def build_model(name: str, init: str = "", window_s: float = 4.0, profile: str = "demo",
                finetune_top: int = 0, seed: int = 0) -> torch.nn.Module:
    """A trainable model by name.

    - ``distillmos``: the DistillMOS v7 architecture; ``init="released"`` loads the wheel's
      weights, ``"random"`` starts from scratch; trained and scored on ``window_s`` windows.
    - a student size (``"1M"``, ``"250k"``, any count): the convolutional-transformer family.
    - ``xlsr-<300m|1b|2b>-l<L>[+<L2>]``: XLS-R + head; ``init`` overrides the backbone (a hub id
      or a local folder); ``xlsr-tiny-l<L>`` is a random 4-block XLS-R-shaped model generated
      locally (the smoke profile's stand-in for a download).
    - ``ensemble``: :class:`sqa.models.ensemble.EnsembleTeacher`, the unweighted mean of the four
      offline models trained on human MOS (released weights; ``init`` "" or "released"); it is
      not trained (epochs 0) and every member keeps its own windows.
    """
    from sqa.models import student, teacher

    torch.manual_seed(seed)
    if name.startswith("xlsr-"):
        if name.startswith("xlsr-tiny-l"):
            layers = [int(x) for x in name.removeprefix("xlsr-tiny-l").split("+")]
            backbone = str(teacher.tiny_backbone(model_cache_dir(profile) / "xlsr-tiny", seed=0))
        else:
            backbone, layers = teacher.parse_name(name)
        return teacher.XlsrTeacher(teacher.TeacherConfig(init or backbone, layers, finetune_top=finetune_top))
    if name == "ensemble":
        from sqa.models.ensemble import EnsembleTeacher

        if init not in ("", "released"):
            raise ValueError(f"init={init!r} for ensemble: its members are the released models; use 'released'")
        model = EnsembleTeacher()
    elif name == "distillmos":
        if init not in ("released", "random"):
            raise ValueError(f"init={init!r} for distillmos: use 'released' or 'random'")
        model = student.distillmos_v7(pretrained=init == "released")
    else:
        model = student.ConvTransformerSQA(student.preset(name))
    return model.with_window(window_s)


def reference_model(name: str, init: str, model: torch.nn.Module):
    """What the model is measured against before training: the released DistillMOS exactly as
    shipped (7.68-s windows) when fine-tuning it, else the untrained model itself."""
    if name == "distillmos" and init == "released":
        from sqa.models import baselines

        return baselines.get("distillmos")
    return model


def frozen_extractor(model: torch.nn.Module, freeze: bool) -> tuple[torch.nn.Module, int, str] | None:
    """(extractor, frames per training crop, cache key) when only the head trains, else None.

    A teacher with a frozen XLS-R backbone, or a student whose conv front end is frozen
    (``freeze``), trains its head on features computed once per clip.
    """
    import hashlib

    from sqa.models.student import ConvTransformerSQA, FrontEndFeatures
    from sqa.models.teacher import XlsrTeacher

    if isinstance(model, XlsrTeacher) and model.config.finetune_top == 0:
        key = f"{Path(model.config.backbone).name}-l{'+'.join(map(str, model.config.layers))}"
        return model.features, model.head.config.feat_seq_len, key
    if isinstance(model, ConvTransformerSQA) and freeze:
        digest = hashlib.sha1()
        for t in model.frontend.state_dict().values():
            digest.update(t.detach().cpu().numpy().tobytes())
        return FrontEndFeatures(model), model.config.frames(model.config.window_samples), \
            f"{model.arch}-{digest.hexdigest()[:12]}"
    return None


def fit(run: runs.Run, model: torch.nn.Module, data: StageData, cfg, train_df: pd.DataFrame,
        window_s: float, target: str = "mos", freeze: bool = False, batch_sampler_fn=None,
        extra_train=None, hints=None, hint_weight: float = 0.0):
    """Train with :func:`sqa.training.loop.fit` on ``train_df`` (early stopping on the dev split).

    When only the head trains (:func:`frozen_extractor`), features are cached once per clip and
    the head trains on random crops of them; otherwise the whole model trains on random
    ``window_s`` crops of the waveforms. ``extra_train`` (a dataset) is concatenated after the
    main training set (the labeled share of a distillation mix). ``hints`` (N, D), one row per
    ``train_df`` clip: the teacher's standardised summaries, learned with ``hint_weight``
    (:mod:`sqa.training.hints`). ``cfg.epochs == 0`` trains nothing: the model is kept as given
    (the release profile's teacher, DistillMOS as shipped).
    """
    from torch.utils.data import ConcatDataset

    from sqa.training import loop

    if cfg.epochs == 0:
        result = loop.untrained(model)
        return result, result.model

    from sqa.data.datasets import ClipDataset
    from sqa.training import multigpu

    dev = data.split("dev")
    nprocs = train_processes(cfg.device)
    frozen = frozen_extractor(model, freeze)
    if frozen is not None:
        from sqa.training.feature_cache import (
            FeatureCache,
            FeatureDataset,
            head_forward,
        )

        extractor, frames, key = frozen
        cache = FeatureCache(paths.profile_dir(run.profile) / "cache" / "features" / paths.safe_tag(key), extractor)
        cache.extract(pd.concat([train_df, dev]), data.roots, device=cfg.device, amp=cfg.amp)
        train_ds = FeatureDataset(train_df, cache, target=target, frames=frames, crop="random")
        dev_ds = FeatureDataset(dev, cache, frames=frames, crop="center")
        result = multigpu.fit(nprocs, model.head, train_ds, dev_ds, cfg, run.path("training"), forward_fn=head_forward)
        model.head = result.model
        return result, model.eval()
    window = int(round(window_s * SR))
    train_ds = ClipDataset(train_df, data.roots, target=target, window=window, crop="random", preload="auto")
    dev_ds = ClipDataset(dev, data.roots, window=window, crop="center", preload="auto")
    cfg = with_loader_workers(cfg, train_ds.preloaded and getattr(extra_train, "preloaded", extra_train is None))
    if extra_train is not None:
        train_ds = ConcatDataset([train_ds, extra_train])
    if hints is None:
        result = multigpu.fit(nprocs, model, train_ds, dev_ds, cfg, run.path("training"),
                              batch_sampler_fn=batch_sampler_fn)
        return result, result.model.eval()
    from sqa.training.hints import HintDataset, HintStudent, hint_forward

    result = multigpu.fit(nprocs, HintStudent(model, hints.shape[1]), HintDataset(train_ds, hints), dev_ds, cfg,
                          run.path("training"), batch_sampler_fn=batch_sampler_fn,
                          forward_fn=hint_forward(hint_weight))
    return result, result.model.student.eval()


def pool_hints(profile: str, data: StageData, pool: pd.DataFrame, pseudo_dir: Path, cfg):
    """The summaries (N, D) of the pool's clips by the teacher that pseudo-labeled them, standardised;
    cached per teacher and manifest in ``outputs/<profile>/cache/hints``."""
    import json

    from sqa.training.hints import teacher_summaries

    inputs = json.loads((Path(pseudo_dir) / "params.json").read_text())["inputs"]
    teacher_dir = paths.resolve_portable(inputs["teacher"])
    teacher, _ = load_teacher(profile, str(teacher_dir))
    folder = paths.profile_dir(profile) / "cache" / "hints" / (
        f"{runs.run_identity(teacher_dir)}_{runs.run_identity(data.source)}")
    return teacher_summaries(teacher, pool, data.roots, folder, device=cfg.device, amp=cfg.amp)


def train_processes(device: str) -> int:
    """Training processes: one per GPU given by ``sqa run --gpus N`` when ``device`` is the GPU, else 1."""
    from sqa.training.devices import gpu_count, resolve_device

    return gpu_count() if resolve_device(device).type == "cuda" else 1


def with_loader_workers(cfg, preloaded: bool):
    """``cfg`` with DataLoader worker processes for clips read lazily (kept if the caller set some)."""
    import dataclasses

    from sqa.data.datasets import loader_workers

    if cfg.num_workers or preloaded:
        return cfg
    return dataclasses.replace(cfg, num_workers=loader_workers(False))


def predict_splits(model, data: StageData, splits=("dev", "test"), batch_size: int = 16,
                   device: str | None = None) -> pd.DataFrame:
    """Predictions on the labeled clips of ``splits``, with a ``split`` column; a module scores on
    its own device (``device``, e.g. ``"auto"``, moves it there first)."""
    frames = []
    for split in splits:
        df = data.split(split)
        if len(df):
            frames.append(predictions.predict(model, df, data.roots, batch_size=batch_size, device=device,
                                           desc=f"scoring {split}").assign(split=split))
    return pd.concat(frames, ignore_index=True)


def test_report(preds: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Per-corpus scores on the test split and their means."""
    return predictions.report(preds[preds["split"] == "test"])


def save_outputs(run: runs.Run, model: torch.nn.Module, preds: pd.DataFrame,
                 table: pd.DataFrame, log: pd.DataFrame | None = None) -> None:
    """Model (self-describing safetensors), predictions, the per-corpus table, the learning curve."""
    from sqa.analysis import figures
    from sqa.models import checkpoint

    checkpoint.save(run.path("model.safetensors"), model, model.arch, model.checkpoint_config(),
                    extra={"stage": run.stage, "tag": run.tag})
    for name, frame in (("predictions.csv", preds), ("test_metrics.csv", table)):
        with atomic.atomic_path(run.path(name)) as tmp:
            frame.to_csv(tmp, index=False)
    atomic.write_text(run.path("test_metrics.md"), table.to_markdown(index=False, floatfmt=".3f") + "\n")
    if log is not None and len(log):
        figures.save(figures.learning_curve_figure(log), run.path("learning_curve"), ("png", "pdf"))


def metrics_dict(table: pd.DataFrame, summary: dict, **extra) -> dict:
    """``metrics.json`` content: per-corpus test scores, their means, and stage extras."""
    per_corpus = {r["corpus"]: {k: (None if pd.isna(r[k]) else float(r[k])) for k in ("pcc", "srcc", "rmse")}
                  | {"n": int(r["n"])} for _, r in table.iterrows()}
    return {"test": per_corpus, "test_mean": summary, **extra}


def load_teacher(profile: str, teacher_run: str = "") -> tuple[torch.nn.Module, Path]:
    """The trained teacher of a stage-02 run (latest by default) and its run folder."""
    from sqa.models import checkpoint

    folder = runs.resolve_input(profile, "02_teacher", teacher_run)
    model, _ = checkpoint.load(folder / "model.safetensors")
    return model.eval(), folder


def manifest_of(run_dir: Path) -> str:
    """The stage-01 run a later run read (its recorded ``manifest`` input)."""
    import json

    inputs = json.loads((Path(run_dir) / "params.json").read_text())["inputs"]
    if "manifest" not in inputs:
        raise ValueError(f"{run_dir}/params.json records no manifest input")
    return str(paths.resolve_portable(inputs["manifest"]))


def pool_frame(data: StageData, pool: str) -> pd.DataFrame:
    """Clips to pseudo-label: a split name or a corpus name of the manifest."""
    df = data.manifest
    rows = df[df["split"] == pool] if pool in manifest.SPLITS else df[df["corpus"] == pool]
    if rows.empty:
        raise ValueError(f"pool={pool!r} matches no clip: give a split ({', '.join(manifest.SPLITS)}) "
                         f"or a corpus ({', '.join(sorted(df['corpus'].unique()))})")
    return rows.reset_index(drop=True)


def rescore_check(model: torch.nn.Module, data: StageData, teacher_dir: Path, device: str | None = None,
                  tolerance: float = 1e-4) -> dict:
    """Re-score the dev split (float32, on ``device``) and compare with the teacher run's own dev
    predictions (``tolerance`` in MOS: 1e-4 on the CPU; GPU kernels differ more from run to run)."""
    ref = pd.read_csv(Path(teacher_dir) / "predictions.csv")
    ref = ref[ref["split"] == "dev"].set_index("utt_id")["pred"]
    new = predictions.predict(model, data.split("dev"), data.roots, device=device,
                              desc="re-scoring dev").set_index("utt_id")["pred"]
    common = ref.index.intersection(new.index)
    diff = (new[common] - ref[common]).abs()
    return {"n": int(len(common)), "max_abs_diff": float(diff.max()), "matches": bool(diff.max() < tolerance)}


def oracle_report(pool_df: pd.DataFrame, labels: pd.DataFrame) -> dict:
    """Pseudo-label error against the pool's hidden oracle label (``oracle_mos``), if it has one."""
    from sqa.analysis import metrics

    if "oracle_mos" not in pool_df or pool_df["oracle_mos"].isna().all():
        return {"available": False}
    both = pool_df[["utt_id", "oracle_mos"]].merge(labels[["utt_id", "pseudo_mos"]], on="utt_id").dropna()
    s = metrics.scores(both["oracle_mos"], both["pseudo_mos"])
    return {"available": True, "n": s["n"], "pcc": s["pcc"], "srcc": s["srcc"], "rmse": s["rmse"]}


def pseudo_frame(data: StageData, pseudo_dir: Path) -> pd.DataFrame:
    """Pool rows of the manifest with their ``pseudo_mos`` (clips that failed are not in it)."""
    labels = pd.read_parquet(Path(pseudo_dir) / "pseudo" / "pseudo_labels.parquet")
    return data.manifest.merge(labels[["utt_id", "pseudo_mos"]], on="utt_id", how="inner")


def fit_student(run: runs.Run, model: torch.nn.Module, data: StageData, cfg, mode: str,
                labeled_mix: float, pseudo_dir: Path, window_s: float, hint_weight: float = 0.0):
    """``distill``: pseudo-labeled pool + a ``labeled_mix`` share of labeled train clips per batch;
    ``labeled-only``: the labeled train split alone. ``hint_weight > 0`` (distillation from the
    pool alone): the student also learns the pseudo-labeling teacher's summary of each clip."""
    from sqa.data.datasets import ClipDataset

    if hint_weight < 0 or (hint_weight and (mode != "distill" or labeled_mix)):
        raise ValueError(f"hint_weight={hint_weight}: must be >= 0, and hints come from the teacher's pass over "
                         f"the pool, so a positive weight needs mode 'distill' with labeled_mix 0 (got mode "
                         f"{mode!r}, labeled_mix {labeled_mix}); set hint_weight 0")
    train_df = data.split("train")
    if mode == "labeled-only":
        return fit(run, model, data, cfg, train_df, window_s)
    if mode != "distill":
        raise ValueError(f"mode={mode!r}: use 'distill' or 'labeled-only'")
    if not 0 <= labeled_mix < 1:
        raise ValueError(f"labeled_mix={labeled_mix} must be in [0, 1)")
    pool = pseudo_frame(data, pseudo_dir)
    if labeled_mix == 0:
        hints = pool_hints(run.profile, data, pool, pseudo_dir, cfg) if hint_weight else None
        return fit(run, model, data, cfg, pool, window_s, target="pseudo_mos", hints=hints, hint_weight=hint_weight)
    labeled = ClipDataset(train_df, data.roots, window=int(round(window_s * SR)), crop="random", preload="auto")
    sampler = functools.partial(_mixed_sampler, len(pool), len(labeled), cfg.batch_size, labeled_mix, cfg.seed)
    return fit(run, model, data, cfg, pool, window_s, target="pseudo_mos", batch_sampler_fn=sampler,
               extra_train=labeled)


def _mixed_sampler(n_pool: int, n_labeled: int, batch_size: int, labeled_mix: float, seed: int, rank: int,
                   world_size: int):
    """The distillation batch sampler of one rank (a module-level function: it pickles to the
    training processes of ``--gpus N``)."""
    from sqa.data.datasets import MixedBatchSampler

    return MixedBatchSampler(n_pool, n_labeled, batch_size, labeled_mix, seed=seed, rank=rank, world_size=world_size)
