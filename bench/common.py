"""What every benchmark records beside its numbers: where results go and what machine ran them."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def results_dir() -> Path:
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    return out


def machine() -> dict:
    import torch

    return {"cpu": platform.processor() or platform.machine(), "cores": len(os.sched_getaffinity(0)),
            "torch": torch.__version__, "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
            "load_avg_1min": os.getloadavg()[0]}
