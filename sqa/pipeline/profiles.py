"""What each profile picks by default. Profiles choose defaults only, never code paths."""

from __future__ import annotations

from pathlib import Path

from sqa import paths
from sqa.synth import demo_corpus

#: demo corpora, one per degradation family, plus the unlabeled pool (built by sqa.synth.demo_corpus)
DEMO_CORPORA = [f"{demo_corpus.NAME}:{name}" for name in (*demo_corpus.CORPORA, demo_corpus.POOL)]

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


def default_corpora(profile: str) -> list[str]:
    return list(PAPER_CORPORA if paths.check_profile(profile) == "paper" else DEMO_CORPORA)


def default_data_root(profile: str) -> Path:
    """Real corpora live under ``SQA_DATA_ROOT``; demo and smoke corpora are built into outputs."""
    return paths.data_root() if paths.check_profile(profile) == "paper" else paths.demo_data_dir(profile)


def resolve_data_root(profile: str, data_root: str) -> Path:
    """The ``data_root`` parameter, or the profile's default when it is empty."""
    return Path(data_root).expanduser().resolve() if data_root else default_data_root(profile)


def demo_size(profile: str) -> str:
    """How large the generated demo corpora are built: ``smoke`` tiny, else full demo size."""
    return "smoke" if paths.check_profile(profile) == "smoke" else "demo"


#: per stage and profile: what an empty string, a 0 or [] in a notebook parameter stands for
STAGE_DEFAULTS: dict[str, dict[str, dict]] = {
    "02_teacher": {
        "smoke": {"teacher": "xlsr-tiny-l2", "epochs": 2, "lr": 1e-3, "batch_size": 8, "window_s": 4.0},
        "demo": {"teacher": "distillmos", "init": "released", "epochs": 6, "lr": 3e-5, "batch_size": 16,
                 "window_s": 4.0},
        "paper": {"teacher": "xlsr-2b-l10", "epochs": 30, "lr": 1e-3, "batch_size": 32, "window_s": 7.68},
    },
    "06_analysis": {
        "smoke": {"baselines": ["mfcc-sqa", "dnsmos-p808"]},
        "demo": {"baselines": ["dnsmos-p808", "dnsmos-p835", "distillmos", "mfcc-sqa"]},
        "paper": {"baselines": ["dnsmos-p808", "dnsmos-p835", "distillmos", "mfcc-sqa"]},
    },
    "04_distill": {
        "smoke": {"epochs": 2, "lr": 1e-3, "batch_size": 8, "window_s": 4.0},
        "demo": {"epochs": 2, "lr": 1e-3, "batch_size": 16, "window_s": 4.0},
        "paper": {"epochs": 20, "lr": 1e-3, "batch_size": 32, "window_s": 7.68},
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
    },
}


def resolve(profile: str, stage: str, params: dict) -> dict:
    """``params`` with every empty/zero value replaced by the profile's default for the stage."""
    defaults = STAGE_DEFAULTS.get(stage, {}).get(paths.check_profile(profile), {})
    return {k: (defaults[k] if k in defaults and _empty(v) else v) for k, v in params.items()}


def _empty(value) -> bool:
    return not isinstance(value, bool) and (value in ("", 0, 0.0) or value == [])


#: extra runs ``sqa reproduce`` makes of a stage (each a set of ``-p`` overrides); default: one run
SWEEPS: dict[str, dict[str, list[dict[str, str]]]] = {
    "demo": {
        # labeled-only gets 8 epochs: about as many optimizer steps as 2 distillation epochs (its
        # train split is ~4x smaller than the pseudo-labeled pool); the 2M student gets 6 epochs,
        # about the CPU time of fine-tuning the teacher pruned to 2M (05) for its 2 epochs
        "04_distill": [{"size": size, "mode": "distill"} for size in ("50k", "250k")]
        + [{"size": "2M", "mode": "distill", "epochs": "6"}]
        + [{"size": size, "mode": "labeled-only", "epochs": "8"} for size in ("50k", "250k")],
        "05_prune": [{"size": size} for size in ("2M", "1M", "500k", "250k")],
    },
    "paper": {
        "04_distill": [{"size": size, "mode": mode} for size in ("10k", "50k", "250k", "1M", "4M")
                       for mode in ("distill", "labeled-only")],
        "05_prune": [{"size": size} for size in ("29%", "10%", "4M", "1M")],
    },
}


def sweep(profile: str, stage: str) -> list[dict[str, str]]:
    """The parameter sets ``sqa reproduce`` runs a stage with (``[{}]``: once, with defaults)."""
    return SWEEPS.get(paths.check_profile(profile), {}).get(stage, [{}])
