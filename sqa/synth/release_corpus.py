"""The release profile's corpora: a large, varied pool of degraded speech from every offline
voice, and a held-out pool labeled by the release teacher (the released DistillMOS as shipped).

Clean speech comes from every voice :func:`sqa.synth.voices.available` finds (the bundled piper
voice in varied styles, and the voices Debian packages add) speaking sentences of our grammar
(:mod:`sqa.synth.sentences`), plus the human recordings installed packages ship. Voices, human
speakers and sentences are split once: the held-out pool's voices and speakers (every
:data:`HELDOUT_EVERY`-th by name, never the piper voice) and sentences are used nowhere in
training, and its degradations are drawn with another seed. Both pools are made by the pool builder (:func:`sqa.synth.pool.build`) with
every degradation family at wide severities (:data:`POOL_CONFIG`).

Layout under the data root::

    release-sources/{train,heldout}/clean/<voice>/<file>.wav(+.json)  spoken sentences, resumable
    release-pool/       the training pool (unlabeled; stage 03 pseudo-labels it)
    release-heldout/    the held-out pool, with ``teacher_labels.csv``: the teacher's MOS of every
                        clip and a dev/test split by clean file (the ``pool`` adapter reads it)
    release.json        optional overrides of the size (keys of :class:`Size`)
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from sqa import atomic

if TYPE_CHECKING:
    from torch import nn

SOURCES, POOL, HELDOUT = "release-sources", "release-pool", "release-heldout"
TEACHER_LABELS = "teacher_labels.csv"
OVERRIDES = "release.json"
HUMAN_CHUNK = 4  # human recordings (short prompts) joined into one clean file
HELDOUT_EVERY = 4  # every 4th voice (sorted by name, piper excepted) speaks only held-out sentences
DEV_SHARE = 0.3  # share of the held-out clean files whose clips form the dev split (the rest: test)
#: wide severities: noise in most clips (-5..35 dB SNR), rooms in half, 1-3 further steps of
#: every family (band limits, codecs incl. low-bitrate and parametric ones, packet loss, clipping,
#: enhancement artifacts)
POOL_CONFIG = {"clip_s": 4.0, "p_rir": 0.5, "p_noise": 0.75, "p_chain": 0.7, "max_chain": 3,
               "snr_db": (-5.0, 35.0), "shard_size": 250}


@dataclass(frozen=True)
class Size:
    train_files: int = 240  # clean files (2-3 sentences each) for the training pool
    heldout_files: int = 60
    pool_clips: int = 5000
    heldout_clips: int = 600
    sentences_per_file: int = 3
    human_files_per_set: int = 40  # clean files made from each human recording set (speaker)


def size_for(data: Path) -> Size:
    """The default :class:`Size`, overridden by ``<data>/release.json`` when it exists."""
    f = Path(data) / OVERRIDES
    if not f.is_file():
        return Size()
    overrides = json.loads(f.read_text())
    unknown = sorted(set(overrides) - set(Size.__dataclass_fields__))
    if unknown:
        raise ValueError(f"{f}: unknown key(s) {unknown}; known: {sorted(Size.__dataclass_fields__)}")
    return Size(**overrides)


# ---------------------------------------------------------------- the plan (pure, seeded)


def split_voices(names: list[str]) -> tuple[list[str], list[str]]:
    """(training voices, held-out voices): every :data:`HELDOUT_EVERY`-th non-piper voice is held
    out (at least one when there are two or more voices)."""
    names = sorted(names)
    others = [n for n in names if not n.startswith("piper")]
    held = others[HELDOUT_EVERY - 1::HELDOUT_EVERY] or others[-1:]
    if len(held) == len(names):
        held = []
    return [n for n in names if n not in held], held


def engine(voice: str) -> str:
    """The synthesis engine of a voice name (``espeak-en-us+m3`` -> ``espeak``)."""
    return voice.split("-", 1)[0]


def by_engine(voices: list[str], n: int) -> list[str]:
    """``n`` voices in turn: engines take turns (so 96 espeak-ng variants do not crowd out piper,
    flite and festival), each engine's voices take turns within it."""
    groups: dict[str, list[str]] = {}
    for v in sorted(voices):
        groups.setdefault(engine(v), []).append(v)
    engines = sorted(groups)
    picked = []
    for i in range(n):
        group = groups[engines[i % len(engines)]]
        picked.append(group[(i // len(engines)) % len(group)])
    return picked


def plan(voice_names: list[str], size: Size, seed: int) -> pd.DataFrame:
    """One row per clean file: ``part`` (train/heldout), ``voice``, ``file``, ``text``, ``seed``.
    Held-out files use held-out voices (all voices when there is only one) and sentences that no
    training file speaks; engines take turns (:func:`by_engine`)."""
    from sqa.synth import sentences

    train_voices, held_voices = split_voices(voice_names)
    k = size.sentences_per_file
    texts = sentences.generate((size.train_files + size.heldout_files) * k, seed=seed)
    rows = []
    for part, n, voices, offset in (("train", size.train_files, train_voices, 0),
                                    ("heldout", size.heldout_files, held_voices or train_voices,
                                     size.train_files * k)):
        for i, voice in enumerate(by_engine(voices, n)):
            rows.append({"part": part, "voice": voice, "file": f"clean/{voice}/{part}-{i:05d}.wav",
                         "text": " ".join(texts[offset + i * k: offset + (i + 1) * k]),
                         "seed": int(np.random.default_rng([seed, 7, offset + i]).integers(2**31))})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- clean speech


_VOICES: dict = {}


def _speak(folder: str, voice: str, text: str, seed: int) -> str:
    """Speak ``text`` with ``voice`` into ``folder`` (wav, then its json: the json marks it done)."""
    from sqa.data import audio
    from sqa.synth import voices

    out = Path(folder)
    if out.with_suffix(".json").is_file():
        return str(out)
    if not _VOICES:
        import torch

        torch.set_num_threads(1)
        _VOICES.update({v.name: v for v in voices.available()})
    x = _VOICES[voice].synthesize(text, np.random.default_rng(seed))
    audio.save(out, x, 16000, subtype="PCM_16")
    atomic.write_json(out.with_suffix(".json"), {"voice": voice, "text": text, "seed": seed})
    return str(out)


def speak_all(sources: Path, files: pd.DataFrame, n_jobs: int, progress: bool) -> None:
    """Every clean file of ``files`` under ``sources/<part>/`` (resumes: spoken files are kept)."""
    from tqdm.auto import tqdm

    if sources.is_dir():
        atomic.remove_stale(sources)
    with ProcessPoolExecutor(n_jobs, mp_context=get_context("forkserver")) as ex:
        jobs = [ex.submit(_speak, str(sources / r.part / r.file), r.voice, r.text, r.seed)
                for r in files.itertuples()]
        for f in tqdm(as_completed(jobs), total=len(jobs), desc="clean speech", disable=not progress):
            f.result()


def _readable(path: Path, skipped: dict) -> np.ndarray:
    """A recording's samples, or none (its reason kept in ``skipped``) if it cannot be read."""
    from sqa.data import audio

    try:
        return audio.load(path)
    except audio.AudioError as err:
        skipped[str(path)] = str(err).removeprefix(f"{path}: ")
        return np.zeros(0, dtype=np.float32)


def add_human_recordings(sources: Path, size: Size, seed: int) -> dict[str, int]:
    """The human speech recordings that installed packages ship, as clean files: per recording
    set (a speaker), up to ``size.human_files_per_set`` files of :data:`HUMAN_CHUNK` consecutive
    recordings joined by short pauses; sets are held out like voices (:func:`split_voices`).
    Recordings that cannot be read (some packages ship empty prompts) are left out and counted.
    Returns the files written per set (``heldout/`` or ``train/`` below ``sources``) and the
    recordings left out with their reasons (``"skipped"``)."""
    from sqa.data import audio
    from sqa.synth import voices

    by_set: dict[str, list[Path]] = {}
    for rec in voices.human_recordings():
        by_set.setdefault(rec.source.name, []).append(rec.path)
    train, held = split_voices(list(by_set))
    written: dict = {"skipped": {}}
    for name, files in sorted(by_set.items()):
        part = "heldout" if name in held else "train"
        order = np.random.default_rng([seed, 13]).permutation(len(files))
        chunks = [sorted(files[i] for i in order[k:k + HUMAN_CHUNK]) for k in range(0, len(files), HUMAN_CHUNK)]
        for i, chunk in enumerate(chunks[:size.human_files_per_set]):
            out = sources / part / "clean" / f"human-{name}" / f"{part}-{i:05d}.wav"
            if not out.is_file():
                pause = np.zeros(int(0.3 * 16000), dtype=np.float32)
                x = np.concatenate([y for f in chunk for y in (_readable(f, written["skipped"]), pause)])
                peak = float(np.max(np.abs(x)))  # resampling 8 kHz prompts can overshoot full scale
                if peak > 0:
                    audio.save(out, x * (0.99 / peak) if peak > 0.99 else x, 16000, subtype="PCM_16")
        written[f"{part}/{name}"] = sum(1 for p in (sources / part / "clean" / f"human-{name}").glob("*.wav"))
    log = sources / "human_skipped.json"  # kept across resumed builds
    written["skipped"] = {**(json.loads(log.read_text()) if log.is_file() else {}), **written["skipped"]}
    atomic.write_json(log, written["skipped"])
    return written


# ---------------------------------------------------------------- the build


def build(data: Path | str, seed: int = 0, n_jobs: int | None = None, progress: bool = True) -> dict:
    """Build (or finish building) the release corpora under ``data``; returns the build report."""
    from sqa.synth import pool, voices

    data = Path(data)
    size = size_for(data)
    names = [v.name for v in voices.available()]
    files = plan(names, size, seed)
    n_jobs = n_jobs or len(os.sched_getaffinity(0))
    sources = data / SOURCES
    speak_all(sources, files, n_jobs, progress)
    human = add_human_recordings(sources, size, seed)
    reports = {}
    for part, folder, n, pool_seed in (("train", POOL, size.pool_clips, seed),
                                       ("heldout", HELDOUT, size.heldout_clips, seed + 1000)):
        cfg = pool.PoolConfig.from_dict({**POOL_CONFIG, "n_clips": n, "seed": pool_seed})
        reports[folder] = asdict(pool.build(sources / part, data / folder, cfg, n_jobs=n_jobs, progress=progress))
    label_heldout(data / HELDOUT, seed, progress)
    report = {"size": asdict(size), "seed": seed, "voices": names, "heldout_voices": split_voices(names)[1],
              "human_files": human, "pools": reports}
    atomic.write_json(data / "release_report.json", report)
    return report


def teacher() -> "nn.Module":
    """The release teacher: the released DistillMOS v7 as shipped (7.68-s windows)."""
    from sqa.models import student

    return student.distillmos_v7(pretrained=True)


def label_heldout(folder: Path, seed: int, progress: bool = True) -> pd.DataFrame:
    """The teacher's MOS of every held-out clip and its split (dev/test by clean file, seeded),
    in ``teacher_labels.csv`` (written once; the labeling job resumes)."""
    from sqa.training import pseudo_labels

    out = folder / TEACHER_LABELS
    if out.is_file():
        return pd.read_csv(out)
    records = pd.read_csv(folder / "pool.csv", dtype=str, keep_default_na=False)
    records = records[records["skip_reason"] == ""]
    df = pd.DataFrame({"utt_id": records["clip"], "corpus": folder.name, "path": records["path"],
                       "sys_id": records["condition"]})
    labels = pseudo_labels.pseudo_label(teacher(), df, {folder.name: folder}, folder / "teacher-job",
                                        progress=progress, **pseudo_labels.placement("auto", 0)).labels
    cleans = sorted(records["clean"].unique())
    order = np.random.default_rng([seed, 11]).permutation(len(cleans))
    dev = {cleans[i] for i in order[:max(1, int(round(DEV_SHARE * len(cleans))))]}
    split = records.set_index("clip")["clean"].map(lambda c: "dev" if c in dev else "test")
    table = pd.DataFrame({"clip": labels["utt_id"], "mos_raw": labels["pseudo_mos"].round(5),
                          "split": labels["utt_id"].map(split)})
    with atomic.atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)
    return table
