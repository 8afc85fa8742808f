"""What each profile picks by default. Profiles choose defaults only, never code paths."""

from __future__ import annotations

from pathlib import Path

from sqa import paths

#: what demo and smoke models learn (their corpora are synthetic speech labelled by PESQ-WB)
SYNTHETIC_NOTE = ("Labels are PESQ-WB (ITU-T P.862.2 MOS-LQO) of synthetic speech: these models predict "
                  "PESQ-WB of synthetic speech, not listeners' opinion.")

#: real corpora under SQA_DATA_ROOT: adapter:folder (the folder as its distributors unpack it), and the
#: unlabeled pool that stage 01 builds into SQA_DATA_ROOT/pool from the clean speech, noise and RIRs in
#: SQA_DATA_ROOT/pool-sources (sqa.synth.pool; pool-sources/pool.json overrides sqa.synth.pool.PAPER_POOL)
PAPER_CORPORA = [
    "nisqa:NISQA_Corpus",
    "conferencingspeech:ConferencingSpeech2022",
    "bvcc:BVCC",
    "tcd-voip:TCD-VOIP",
    "genspeech:GenSpeech",
    "dns-challenge:DNS-P835",
    "plc-challenge:PLC-Challenge",
    "pool:pool",
]


def demo_corpora() -> list[str]:
    """The demo corpora, one per degradation family, plus the unlabeled pool (built by
    ``sqa.synth.demo_corpus``, imported here only: this module stays light for ``sqa score``)."""
    from sqa.synth import demo_corpus

    return [f"{demo_corpus.NAME}:{name}" for name in (*demo_corpus.CORPORA, demo_corpus.POOL)]


def release_corpora() -> list[str]:
    """The release profile's pools, built by ``sqa.synth.release_corpus`` into outputs/release/data:
    the training pool (pseudo-labeled by stage 03) and the held-out pool labeled by the teacher."""
    from sqa.synth import release_corpus

    return [f"pool:{name}" for name in (release_corpus.POOL, release_corpus.HELDOUT)]


def default_corpora(profile: str) -> list[str]:
    profile = paths.check_profile(profile)
    return list(PAPER_CORPORA) if profile == "paper" else release_corpora() if profile == "release" else demo_corpora()


#: what release models learn (the release teacher's scores of synthetic degraded speech)
TEACHER_NOTE = ("Labels are the released DistillMOS's scores of synthetic degraded speech: these numbers measure "
                "agreement with that teacher, not with listeners' opinion.")


#: what the shipped students (sqa/weights, made by the release profile) predict
SHIPPED_NOTE = ("This shipped student imitates the released DistillMOS (distilled from its scores of synthetic "
                "degraded speech, docs/models.md): it predicts what DistillMOS would say, not listeners' opinion "
                "directly.")


def label_note(profile: str) -> str:
    """What the models of ``profile`` predict ("" for the paper profile: real listening-test MOS)."""
    profile = paths.check_profile(profile)
    return "" if profile == "paper" else TEACHER_NOTE if profile == "release" else SYNTHETIC_NOTE


def default_data_root(profile: str) -> Path:
    """Real corpora live under ``SQA_DATA_ROOT``; demo, smoke and release corpora are built into outputs."""
    return paths.data_root() if paths.check_profile(profile) == "paper" else paths.demo_data_dir(profile)


def resolve_data_root(profile: str, data_root: str) -> Path:
    """The ``data_root`` parameter, or the profile's default when it is empty."""
    return Path(data_root).expanduser().resolve() if data_root else default_data_root(profile)


def demo_size(profile: str) -> str:
    """How large the generated demo corpora are built: ``smoke`` tiny, else full demo size."""
    return "smoke" if paths.check_profile(profile) == "smoke" else "demo"


#: per stage and profile: what a notebook parameter declared ``None`` (the profile-default sentinel,
#: ``sqa.pipeline.notebooks.PROFILE_DEFAULT``) stands for; 0, "" and [] are values like any other
STAGE_DEFAULTS: dict[str, dict[str, dict]] = {
    "02_teacher": {
        "smoke": {"teacher": "xlsr-tiny-l2", "epochs": 2, "lr": 1e-3, "batch_size": 8, "window_s": 4.0},
        "demo": {"teacher": "distillmos", "init": "released", "epochs": 6, "lr": 3e-5, "batch_size": 16,
                 "window_s": 4.0},
        "paper": {"teacher": "xlsr-2b-l10", "epochs": 30, "lr": 1e-3, "batch_size": 32, "window_s": 7.68},
        # the released DistillMOS as shipped: no training, its own 7.68-s windows
        "release": {"teacher": "distillmos", "init": "released", "epochs": 0, "lr": 3e-5, "batch_size": 16,
                    "window_s": 7.68},
    },
    "06_analysis": {
        "smoke": {"baselines": ["mfcc-sqa", "dnsmos-p808"]},
        "demo": {"baselines": ["dnsmos-p808", "dnsmos-p835", "distillmos", "mfcc-sqa"]},
        "paper": {"baselines": ["dnsmos-p808", "dnsmos-p835", "distillmos", "mfcc-sqa"]},
        # the teacher's own labels make DistillMOS trivially 1.0; P.835 costs ~4 s a clip on one core
        "release": {"baselines": ["dnsmos-p808", "mfcc-sqa"]},
    },
    # hint_weight: the release students also learn the teacher's pooled summary (sqa.training.hints);
    # the weight is the one with the best mean dev PCC in bench.hints
    "04_distill": {
        "smoke": {"epochs": 2, "lr": 1e-3, "batch_size": 8, "window_s": 4.0, "hint_weight": 0.0},
        "demo": {"epochs": 4, "lr": 1e-3, "batch_size": 16, "window_s": 4.0, "hint_weight": 0.0},
        "paper": {"epochs": 20, "lr": 1e-3, "batch_size": 32, "window_s": 7.68, "hint_weight": 0.0},
        "release": {"epochs": 6, "lr": 1e-3, "batch_size": 16, "window_s": 4.0, "hint_weight": 0.3},
    },
    # stage 05 also reads settings that are not notebook parameters from here (sqa.training.pruning.pruner.settings)
    "05_prune": {
        "smoke": {"size": "50%", "method": "taylor", "calibration_clips": 16, "steps": 2, "finetune_epochs": 2,
                  "recover_steps": 4, "gate_steps": 10, "recover_lr": 1e-4, "lr": 1e-3, "batch_size": 8,
                  "window_s": 4.0, "labeled_mix": 0.2, "timing_repeats": 3},
        "demo": {"size": "1M", "method": "taylor", "calibration_clips": 32, "steps": 3, "finetune_epochs": 2,
                 "recover_steps": 4, "gate_steps": 40, "recover_lr": 1e-4, "lr": 3e-4, "batch_size": 16,
                 "window_s": 4.0, "labeled_mix": 0.2, "timing_repeats": 5},
        "paper": {"size": "29%", "method": "taylor", "calibration_clips": 512, "steps": 8, "finetune_epochs": 10,
                  "recover_steps": 200, "gate_steps": 3000, "recover_lr": 5e-5, "lr": 1e-4, "batch_size": 32,
                  "window_s": 7.68, "labeled_mix": 0.2, "timing_repeats": 0},
        "release": {"size": "1M", "method": "taylor", "calibration_clips": 32, "steps": 3, "finetune_epochs": 2,
                    "recover_steps": 4, "gate_steps": 40, "recover_lr": 1e-4, "lr": 3e-4, "batch_size": 16,
                    "window_s": 7.68, "labeled_mix": 0.0, "timing_repeats": 5},
    },
}


def resolve(profile: str, stage: str, params: dict) -> dict:
    """``params`` with every ``None`` (the profile-default sentinel) replaced by the profile's
    default for the stage; a ``None`` the profile has no default for stays ``None``."""
    defaults = STAGE_DEFAULTS.get(stage, {}).get(paths.check_profile(profile), {})
    return {k: (defaults[k] if v is None and k in defaults else v) for k, v in params.items()}


#: peak learning rate of a student by size in the demo (one rate for every size made the 2M student
#: train unstably: dev PCC 0.46 at 1e-3); used by the demo sweep, explicit per run so it shows in
#: each run's parameters. Larger transformers need smaller steps with AdamW and a short warm-up.
DEMO_STUDENT_LR = {"50k": "1e-3", "250k": "1e-3", "1M": "5e-4", "2M": "2e-4"}
#: seeds of the demo's student rows (the 2M student, at several times the CPU cost, gets the first)
DEMO_SEEDS = ("0", "1", "2")


def _demo_students() -> list[dict[str, str]]:
    """Distilled and labeled-only students at 50k, 250k and 1M with 3 seeds, and at 2M with one.
    Labeled-only students get 8 epochs: about as many optimizer steps as the 4 distillation epochs
    (their train split is ~2.5x smaller than the pseudo-labeled pool with its labeled mix); 2M
    students get 6 epochs."""
    out = []
    for size, lr in DEMO_STUDENT_LR.items():
        for seed in DEMO_SEEDS if size != "2M" else DEMO_SEEDS[:1]:
            out.append({"size": size, "mode": "distill", "lr": lr, "seed": seed}
                       | ({"epochs": "6"} if size == "2M" else {}))
            out.append({"size": size, "mode": "labeled-only", "lr": lr, "seed": seed, "epochs": "8"})
    return out


#: extra runs ``sqa reproduce`` makes of a stage (each a set of ``-p`` overrides); default: one run.
#: ``sqa reproduce --profile demo`` is the one command that makes every demo row of the README.
SWEEPS: dict[str, dict[str, list[dict[str, str]]]] = {
    "demo": {
        "04_distill": _demo_students(),
        "05_prune": [{"size": size} for size in ("1M", "250k")],
    },
    # the shipped students (sqa.pretrained): distilled from the released DistillMOS on the release
    # pool alone (no labeled mix: its only labels are the teacher's); the teacher pruned to 1M and
    # 250k, the paper's alternative, for comparison (not shipped); no listening
    "release": {
        "04_distill": [{"size": size, "mode": "distill", "labeled_mix": "0", "lr": DEMO_STUDENT_LR[size]}
                       for size in ("50k", "250k", "1M")],
        "05_prune": [{"size": "1M"}, {"size": "250k"}],
        "07_listen": [],
    },
    "paper": {
        "04_distill": [{"size": size, "mode": mode} for size in ("10k", "50k", "250k", "1M", "4M")
                       for mode in ("distill", "labeled-only")],
        "05_prune": [{"size": size} for size in ("29%", "10%", "4M", "1M")],
    },
}


#: what ``sqa reproduce --quick`` (``make demo``) runs: every stage once; the teacher's head tuned for
#: 2 epochs (dev PCC is within 0.01 of its best by then); a 50k student distilled and its labeled-only
#: twin with the sweep's recipe (at 50k distillation wins clearly on the demo's 1,200-clip pool; at
#: 250k it needs more pool than a quick demo can label); the teacher pruned to 250k with one epoch of
#: fine-tuning on the labeled train split (its kept convolutional front end makes fine-tuning on the
#: pool the costliest step of the chain); and the baselines that score in seconds
QUICK: dict[str, list[dict[str, str]]] = {
    "02_teacher": [{"epochs": "2"}],
    "04_distill": [{"size": "50k", "mode": "distill"}, {"size": "50k", "mode": "labeled-only", "epochs": "8"}],
    "05_prune": [{"size": "250k", "finetune_epochs": "1", "finetune_on": "labeled"}],
    "06_analysis": [{"baselines": "dnsmos-p808,distillmos,mfcc-sqa"}],
}


def sweep(profile: str, stage: str, quick: bool = False) -> list[dict[str, str]]:
    """The parameter sets ``sqa reproduce`` runs a stage with (``[{}]``: once, with defaults);
    ``quick``: the quick demo's set, the same for every profile."""
    if quick:
        return QUICK.get(stage, [{}])
    return SWEEPS.get(paths.check_profile(profile), {}).get(stage, [{}])
