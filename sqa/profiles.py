"""What each profile picks by default. Profiles choose defaults only, never code paths."""

from __future__ import annotations

from pathlib import Path

from . import paths
from .corpora import demo

#: demo corpora, one per degradation family, plus the unlabeled pool (built by sqa.corpora.demo)
DEMO_CORPORA = [f"{demo.NAME}:{name}" for name in (*demo.CORPORA, demo.POOL)]

#: real corpora under SQA_DATA_ROOT: adapter:folder (the folder as its distributors unpack it)
PAPER_CORPORA = [
    "nisqa:NISQA_Corpus",
    "conferencingspeech:ConferencingSpeech2022",
    "bvcc:BVCC",
    "tcd-voip:TCD-VOIP",
    "genspeech:GenSpeech",
    "dns-challenge:DNS-P835",
    "plc-challenge:PLC-Challenge",
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
