"""A tiny generated corpus for the listening widgets: demo-style layout, a manifest with roots.

    <data>/clean/src<i>.wav        clean "speech" (voiced tone complexes with syllable envelopes)
    <data>/toy/wav/toy-<k>.wav     degraded versions (noise at several SNRs), one at 96 kHz
    <data>/other/wav/other-<k>.wav a second corpus (dev split only)
    <data>/manifest.csv (+ .roots.json), validated by sqa.data.manifest.write
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from sqa.data import manifest

SR = 16000


def speechlike(seed: int, seconds: float = 1.0, sr: int = SR) -> np.ndarray:
    """A harmonic complex with a wandering pitch and syllable-rate amplitude envelope."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 110 + 40 * rng.random() + 15 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 12))
    env = np.clip(np.sin(2 * np.pi * (3 + rng.random()) * t), 0, None) ** 0.5
    return (0.3 * x * env / np.max(np.abs(x))).astype(np.float32)


def make_corpus(data: Path) -> tuple[pd.DataFrame, dict[str, Path], Path]:
    """Write the corpus under ``data``; returns (manifest, roots, manifest path)."""
    data = Path(data)
    rng = np.random.default_rng(0)
    (data / "clean").mkdir(parents=True, exist_ok=True)
    sources = {f"src{i}": speechlike(i) for i in range(3)}
    for name, x in sources.items():
        sf.write(data / "clean" / f"{name}.wav", x, SR, subtype="PCM_16")
    rows = []
    specs = [("toy", k, f"src{k % 3}", "test" if k % 3 != 2 else "train") for k in range(9)]
    specs += [("other", k, f"src{k % 3}", "dev") for k in range(3)]
    for corpus, k, src, split in specs:
        snr = 40 - 5 * k
        clean = sources[src]
        noise = rng.standard_normal(len(clean)).astype(np.float32)
        noise *= np.sqrt(np.mean(clean ** 2) / np.mean(noise ** 2) / 10 ** (snr / 10))
        x = np.clip(clean + noise, -1, 1)
        sr = SR
        if corpus == "toy" and k == 1:
            sr = 96000
            x = np.interp(np.arange(len(x) * 6) / 6, np.arange(len(x)), x).astype(np.float32)
        rel = f"wav/{corpus}-{k:03d}.wav"
        (data / corpus / "wav").mkdir(parents=True, exist_ok=True)
        sf.write(data / corpus / rel, x, sr, subtype="PCM_16")
        mos = float(np.clip(1.2 + 0.45 * k, 1, 5))
        rows.append({"utt_id": f"{corpus}/{corpus}-{k:03d}", "corpus": corpus, "split": split, "path": rel,
                     "sys_id": f"{corpus}/snr{snr}", "source_id": f"demo/{src}", "mos": mos, "mos_raw": mos,
                     "mos_scale": "acr-1-5", "mos_std": 0.5, "n_votes": 8.0, "duration": len(x) / sr,
                     "sample_rate": sr})
    roots = {"toy": data / "toy", "other": data / "other"}
    path = manifest.write(pd.DataFrame(rows), data / "manifest.csv", roots=roots)
    return manifest.read(path), manifest.roots(path), path
