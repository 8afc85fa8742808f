"""Benchmark: synthesis speed of the offline voices and round-trip speed of the added codecs.

Voices (``sqa.synth.voices``; default: every installed voice except espeak-ng, of which two stand
for all 96, since its variants share one engine): CPU seconds per second of audio for a text of
about 10 s (three sentences of ``sqa.synth.sentences``), counting this process and the engine's
child processes, on one thread (torch and onnxruntime set to 1). One warm-up call (the piper model
loads), then ``--repeats`` calls with different style draws; the median counts. Codecs (the Debian
codec tools and ffmpeg's G.723.1 and RealAudio 14.4, where available): the same measure for a round
trip of the piper voice's 10-s clip, at each codec's lowest and highest bit rate.
Writes ``bench/results/voices.json``.

    python -m bench.voices [--voices piper-joe flite-slt ...] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
from typing import Callable

import numpy as np

from sqa import atomic
from sqa.synth import codecs, sentences, voices

from .common import machine, results_dir

DEFAULT_ESPEAK = ("espeak-en-us+m3", "espeak-en-gb+f3")
ADDED_CODECS = ("codec2", "speex_nb", "speex_wb", "gsm_fr", "g723_1", "ra_144")


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def timed(run: Callable[[int], np.ndarray], repeats: int) -> tuple[float, float]:
    """(median CPU s per audio s, audio s of the first timed call) over ``repeats`` calls after a warm-up."""
    run(0)
    ratios, seconds = [], []
    for i in range(1, repeats + 1):
        start = cpu_seconds()
        y = run(i)
        seconds.append(len(y) / voices.SAMPLE_RATE)
        ratios.append((cpu_seconds() - start) / seconds[-1])
    return statistics.median(ratios), seconds[0]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--voices", nargs="*", help="voice names (default: see the module docstring)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    installed = {v.name: v for v in voices.available()}
    names = args.voices or [n for n, v in installed.items() if v.engine != "espeak-ng" or n in DEFAULT_ESPEAK]
    missing = [n for n in names if n not in installed]
    if missing:
        raise SystemExit(f"bench.voices: not installed here: {missing}; installed: {sorted(installed)}")
    text = " ".join(sentences.generate(3, seed=11))
    rows = []
    for name in names:
        voice = installed[name]
        ratio, seconds = timed(lambda i: voice.synthesize(text, np.random.default_rng(i)), args.repeats)
        rows.append({"source": name, "kind": "voice", "audio_s": round(seconds, 2), "cpu_s_per_audio_s": round(ratio, 4)})
        print(f"{name}: {ratio:.4f} CPU s per audio s ({seconds:.1f} s of audio)", flush=True)
    clip = installed["piper-joe"].synthesize(text, np.random.default_rng(0))
    for name in [c for c in ADDED_CODECS if c in codecs.available_codecs()]:
        spec = codecs.CODECS[name]
        for kbps in sorted({min(spec.kbps_choices), max(spec.kbps_choices)}):
            ratio, seconds = timed(lambda i: codecs.roundtrip(clip, voices.SAMPLE_RATE, name, kbps), args.repeats)
            rows.append({"source": f"{name} {kbps:g} kb/s", "kind": "codec", "audio_s": round(seconds, 2),
                         "cpu_s_per_audio_s": round(ratio, 4)})
            print(f"{name} {kbps:g} kb/s: {ratio:.4f} CPU s per audio s", flush=True)
    result = {"text": text, "rows": rows, "machine": machine()}
    atomic.write_json(results_dir() / "voices.json", result)
    return result


if __name__ == "__main__":
    main()
