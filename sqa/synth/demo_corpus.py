"""The embedded demo corpora: built offline from pip-installable parts, deterministic per seed.

Clean speech comes from the bundled piper voice (``sqa.synth.speech``) speaking sentences of our own
grammar (``sqa.synth.sentences``) in varied styles; each clip gets a seeded degradation chain
(``sqa.synth.degradations``) and the objective label PESQ-WB MOS-LQO against its clean reference
(``sqa.synth.objective_labels``, ``mos_scale = "pesq-wb"``) — an honest stand-in for listening-test MOS.

Corpora (one per degradation family, plus a larger unlabeled pool)::

    <data>/clean/<source>.wav + .json      clean references (and babble talkers)
    <data>/<corpus>/wav/<clip>.wav + .json  degraded clips with chain, label and provenance
    <data>/<corpus>/labels.csv              the corpus's label file (read by ``load``)
    <data>/demo-pool/                       the unlabeled pool, as :func:`sqa.synth.pool.build` lays it
                                            out, plus its ``labels.csv``
    <data>/build_report.json                counts, skips, timings, label statistics

Labeled sources are split train/dev/test once, globally, so no utterance straddles two splits in
any corpus. The pool is made by the pool builder of real speech (:func:`sqa.synth.pool.build`,
:func:`pool_config`) from clean speech of sources that appear in no labeled corpus, with no
recorded noise or rooms (it simulates both); the first ``pool_oracle_clips`` pool clips keep their
PESQ score in ``oracle_mos`` (never read by training). A build resumes: a labeled clip whose
``.json`` exists is done (the ``.json`` is written after its ``.wav``, both atomically), and the
pool resumes as the pool builder does.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd

from sqa import atomic
from sqa.synth import pool as pool_builder

NAME = "demo"
SCALE = "pesq-wb"
SR = 16000
CLIP_SECONDS = 4.0
CLEAN_SHARE = 0.05  # share of labeled clips left undegraded (the top of the scale)

#: the codecs chains draw from, in this order: the bundled ffmpeg's original eight, pinned so that the
#: corpora stay byte-identical on every machine as codecs are added (the Debian codec tools of
#: ``sqa.synth.codec_tools`` are installed on some machines only)
CODECS = ("opus", "mp3", "aac", "amr_nb", "g722", "g711_mulaw", "g711_alaw", "g726")
#: corpus -> (degradation families, min, max chain length); the pool mixes everything
CORPORA: dict[str, tuple[tuple[str, ...], int, int]] = {
    "demo-noise": (("noise", "enhance"), 1, 1),
    "demo-reverb": (("reverb",), 1, 1),
    "demo-codec": (("codec", "bandlimit"), 1, 2),
    "demo-loss": (("loss", "clip"), 1, 2),
    "demo-mixed": (("noise", "reverb", "bandlimit", "codec", "loss", "clip", "enhance"), 1, 3),
}
POOL = "demo-pool"
SPLIT_SHARES = (("train", 0.7), ("dev", 0.15), ("test", 0.15))
#: what a build report of this builder says; folders built otherwise (before the pool came from
#: the pool builder) are refused rather than mixed
FORMAT = "sqa-demo/2"


@dataclass(frozen=True)
class Size:
    labeled_sources: int
    pool_sources: int
    talkers: int
    clips_per_corpus: int
    pool_clips: int
    #: pool clips that get the hidden oracle label (PESQ-WB; only stage 03's error report reads it)
    pool_oracle_clips: int
    #: pool clips per shard of the pool builder (the unit a killed build resumes from)
    pool_shard: int


#: the demo is sized for a laptop CPU: PESQ-WB (~0.1-0.18 s per 4-s clip and core) only where a
#: label is used, i.e. every labeled clip and a sample of the pool for the oracle report
SIZES = {
    "smoke": Size(labeled_sources=12, pool_sources=6, talkers=3, clips_per_corpus=10, pool_clips=16,
                  pool_oracle_clips=16, pool_shard=8),
    "demo": Size(labeled_sources=100, pool_sources=120, talkers=8, clips_per_corpus=160, pool_clips=1200,
                 pool_oracle_clips=200, pool_shard=100),
}


# ---------------------------------------------------------------- the plan (pure, seeded)

def plan(size: str, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(sources, clips): every clean source and every labeled clip to build, fully determined by the
    seed (the pool's clips are the pool builder's: :func:`pool_config`)."""
    from sqa.synth import sentences, speech

    if size not in SIZES:
        raise ValueError(f"demo size {size!r} is not one of {', '.join(SIZES)}")
    s = SIZES[size]
    n_src = s.labeled_sources + s.pool_sources + s.talkers
    texts = sentences.generate(n_src, seed=seed)
    rng = np.random.default_rng([seed, 1])
    roles = ["labeled"] * s.labeled_sources + ["pool"] * s.pool_sources + ["talker"] * s.talkers
    sources = pd.DataFrame({"source": [f"src{i:05d}" for i in range(n_src)], "text": texts, "role": roles})
    sources["style"] = [json.dumps(speech.sample_style(rng), sort_keys=True) for _ in range(n_src)]
    labeled = sources[sources["role"] == "labeled"]["source"].tolist()
    order = np.random.default_rng([seed, 2]).permutation(len(labeled))
    split_of, start = {}, 0
    for i, (split, share) in enumerate(SPLIT_SHARES):
        stop = len(labeled) if i == len(SPLIT_SHARES) - 1 else start + int(round(share * len(labeled)))
        split_of.update({labeled[j]: split for j in order[start:stop]})
        start = stop
    sources["split"] = sources["source"].map(split_of).fillna("unlabeled")

    clips = []
    for c, corpus in enumerate(CORPORA):
        for k in range(s.clips_per_corpus):
            clips.append((corpus, k, labeled[(k + 7 * c) % len(labeled)]))
    clips = pd.DataFrame(clips, columns=["corpus", "index", "source"])
    clips["clip"] = clips["corpus"] + "-" + clips["index"].map("{:05d}".format)
    clips["split"] = clips["source"].map(sources.set_index("source")["split"])
    return sources, clips


def pool_config(size: str, seed: int) -> pool_builder.PoolConfig:
    """The demo pool's recipe: the pool builder's defaults (as the paper profile's pool) on 4-s
    clips, with the codecs pinned (:data:`CODECS`) so that the pool is the same on every machine."""
    s = SIZES[size]
    return pool_builder.PoolConfig(n_clips=s.pool_clips, clip_s=CLIP_SECONDS, seed=seed, shard_size=s.pool_shard,
                                   codecs=CODECS)


def pool_sources(data: Path, sources: pd.DataFrame) -> pool_builder.Sources:
    """The pool's clean speech: the plan's pool sources (no recorded noise or rooms)."""
    files = sources.loc[sources["role"] == "pool", "source"].map(lambda s: f"clean/{s}.wav")
    return pool_builder.Sources(str(data), tuple(sorted(files)), (), ())


# ---------------------------------------------------------------- workers

_WORKER: dict = {}


def _init_worker(data: str, talkers: list[str]) -> None:
    import torch

    torch.set_num_threads(1)
    _WORKER.update(data=Path(data), talkers=talkers, voice=None, pool=None)


def _clean_path(data: Path, source: str) -> Path:
    return data / "clean" / f"{source}.wav"


def _make_clean(source: str, text: str, style: str) -> str:
    """Speak one source, fit it to the clip length, save it (atomically) with its description."""
    from sqa.data import audio
    from sqa.synth import speech

    data = _WORKER["data"]
    out = _clean_path(data, source)
    if out.with_suffix(".json").is_file():
        return source
    if _WORKER["voice"] is None:
        _WORKER["voice"] = speech.Voice(threads=1)
    x = _WORKER["voice"].synthesize(text, **json.loads(style))
    x = _fit(x, int(CLIP_SECONDS * SR), np.random.default_rng(int(json.loads(style)["seed"])))
    audio.save(out, x, SR, subtype="PCM_16")
    atomic.write_json(out.with_suffix(".json"), {"source": source, "text": text, "style": json.loads(style)})
    return source


def _fit(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Trim silence at the ends, then center-crop or pad (at a random offset) to ``n`` samples."""
    active = np.flatnonzero(np.abs(x) > 10 ** (-50 / 20))
    x = x[active[0]: active[-1] + 1] if active.size else x
    if len(x) >= n:
        start = (len(x) - n) // 2
        return x[start:start + n]
    out = np.zeros(n, dtype=np.float32)
    offset = int(rng.integers(0, n - len(x) + 1))
    out[offset:offset + len(x)] = x
    return out


def _quantize16(x: np.ndarray) -> np.ndarray:
    """The samples exactly as a PCM_16 file stores them (labels match the files)."""
    return (np.clip(np.round(x * 32767.0), -32768, 32767) / 32767.0).astype(np.float32)


def _condition(step) -> str:
    """A condition name for one step, coarse enough to group clips into systems."""
    if step.name == "codec":
        return f"codec-{step.codec}"
    if step.name == "reverb":
        return f"reverb-rt{round(step.rt60_s * 4) / 4:.2f}"
    if step.family == "noise":
        return f"{step.name}-snr{10 * round(step.snr_db / 10)}"
    return step.name


def _make_clip(corpus: str, index: int, clip: str, source: str, seed: int) -> dict:
    """Degrade one labeled clip, label it with PESQ-WB, save wav then json; returns the json record."""
    from sqa.data import audio
    from sqa.synth import degradations

    data = _WORKER["data"]
    wav = data / corpus / "wav" / f"{clip}.wav"
    meta = wav.with_suffix(".json")
    if meta.is_file():
        return json.loads(meta.read_text())
    if _WORKER["pool"] is None:
        _WORKER["pool"] = {t: audio.load(_clean_path(data, t)) for t in _WORKER["talkers"]}
    ref = audio.load(_clean_path(data, source))
    rng = np.random.default_rng([seed, list(CORPORA).index(corpus) + 1, index])
    families, n_min, n_max = CORPORA[corpus]
    skipped: Counter = Counter()
    if rng.random() < CLEAN_SHARE:
        chain = degradations.Chain(())
    else:
        chain = degradations.sample_chain(rng, families, n_min, n_max, codecs=CODECS, pool_ids=_WORKER["talkers"],
                                          skipped=skipped)
    deg = _quantize16(chain.apply(ref, SR, rng, pool=_WORKER["pool"]))
    score, skip_reason = _pesq(ref, deg, clip)
    audio.save(wav, deg, SR, subtype="PCM_16")
    record = {"clip": clip, "corpus": corpus, "source": source, "chain": chain.to_json(),
              "condition": "+".join(_condition(step) for step in chain.steps) or "clean",
              "pesq_wb": score, "skip_reason": skip_reason, "codec_skipped": dict(skipped)}
    atomic.write_json(meta, record)
    return record


def _pesq(ref: np.ndarray, deg: np.ndarray, clip: str) -> tuple[float | None, str | None]:
    """(PESQ-WB rounded to 4 decimals or None, why it is None)."""
    from sqa.synth import objective_labels

    result = objective_labels.pesq_wb_result(ref, deg, SR, clip_id=clip)
    return (None if np.isnan(result.score) else round(float(result.score), 4)), result.skip_reason


def _oracle(clean: str, path: str, clip: str) -> tuple[str, float | None, str | None]:
    """A pool clip's hidden label: PESQ-WB against the clean file it was made from (the demo's
    clean files are exactly one clip long, so the pool builder's crop is the whole file)."""
    from sqa.data import audio

    data = _WORKER["data"]
    ref, deg = audio.load(data / clean), audio.load(data / POOL / path)
    if len(ref) != len(deg):
        raise ValueError(f"{POOL}/{path}: {len(deg)} samples, but its clean file {clean} has {len(ref)}")
    return (clip, *_pesq(ref, deg, clip))


# ---------------------------------------------------------------- build and load

def build(data: Path | str, size: str = "demo", seed: int = 0, only: list[str] | None = None,
          n_jobs: int | None = None, progress: bool = True) -> dict:
    """Build (or finish building) the demo corpora under ``data``; returns the build report."""
    from tqdm.auto import tqdm

    data = Path(data)
    sources, clips = plan(size, seed)
    wanted = only or [*CORPORA, POOL]
    unknown = sorted(set(wanted) - {*CORPORA, POOL})
    if unknown:
        raise ValueError(f"unknown demo corpus {unknown}; known: {', '.join([*CORPORA, POOL])}")
    clips = clips[clips["corpus"].isin(wanted)]
    if all((data / c / "labels.csv").is_file() for c in wanted) and _same_plan(data, size, seed):
        return json.loads((data / "build_report.json").read_text())
    talkers = sources[sources["role"] == "talker"]["source"].tolist()
    speakers = set(clips["source"]) | set(talkers) | (set(sources.loc[sources["role"] == "pool", "source"])
                                                      if POOL in wanted else set())
    needed = sources[sources["source"].isin(speakers)]
    n_jobs = n_jobs or len(os.sched_getaffinity(0))
    if data.is_dir():
        atomic.remove_stale(data)  # left by a killed build; its finished clips are kept
    t0 = time.perf_counter()
    with _workers(data, talkers, n_jobs) as ex:
        jobs = [ex.submit(_make_clean, r.source, r.text, r.style) for r in needed.itertuples()]
        for f in tqdm(as_completed(jobs), total=len(jobs), desc="clean speech", disable=not progress):
            f.result()
        t_clean = time.perf_counter() - t0
        jobs = [ex.submit(_make_clip, r.corpus, r.index, r.clip, r.source, seed) for r in clips.itertuples()]
        records = [f.result() for f in tqdm(as_completed(jobs), total=len(jobs), desc="degrade + PESQ",
                                            disable=not progress)]
    by_clip = {r["clip"]: r for r in records}
    for corpus, group in clips.groupby("corpus"):
        _write_labels(data / corpus, group, by_clip, sources)
    pool_report = _build_pool(data, size, seed, sources, talkers, n_jobs, progress) if POOL in wanted else None
    report = _report(size, seed, clips, by_clip, pool_report, t_clean, time.perf_counter() - t0, n_jobs)
    atomic.write_json(data / "build_report.json", report)
    return report


def _workers(data: Path, talkers: list[str], n_jobs: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(n_jobs, mp_context=get_context("forkserver"), initializer=_init_worker,
                               initargs=(str(data), talkers))


def _build_pool(data: Path, size: str, seed: int, sources: pd.DataFrame, talkers: list[str], n_jobs: int,
                progress: bool) -> dict:
    """The pool through the pool builder, the oracle PESQ of its first clips, its ``labels.csv``;
    returns its part of the build report."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    built = pool_builder.build(pool_sources(data, sources), data / POOL, pool_config(size, seed), n_jobs, progress)
    table = pd.read_csv(data / POOL / pool_builder.LABELS, dtype=str, keep_default_na=False)
    oracle_rows = table[(table["path"] != "") & (table["index"].astype(int) < SIZES[size].pool_oracle_clips)]
    with _workers(data, talkers, n_jobs) as ex:
        jobs = [ex.submit(_oracle, r.clean, r.path, r.clip) for r in oracle_rows.itertuples()]
        oracle = {clip: (score, why) for clip, score, why in
                  (f.result() for f in tqdm(as_completed(jobs), total=len(jobs), desc="pool oracle PESQ",
                                            disable=not progress))}
    _write_pool_labels(data / POOL, table, oracle, sources)
    codec_skips: Counter = Counter()
    for skipped in table["codec_skipped"]:
        codec_skips.update(json.loads(skipped or "{}"))
    return {**asdict(built), "codec_skipped": dict(codec_skips),
            "oracle_skipped": {c: why for c, (_, why) in oracle.items() if why},
            "seconds": round(time.perf_counter() - t0, 1)}


def _same_plan(data: Path, size: str, seed: int) -> bool:
    f = data / "build_report.json"
    if not f.is_file():
        return False
    old = json.loads(f.read_text())
    if old.get("format") != FORMAT:
        raise ValueError(f"{data} holds demo corpora of an earlier builder (format {old.get('format')!r}, "
                         f"not {FORMAT!r}: its pool was not made by sqa.synth.pool): delete the folder "
                         "(and the runs made from it) or use another data_root")
    if (old.get("size"), old.get("seed")) != (size, seed):
        raise ValueError(f"{data} holds demo corpora built with size={old.get('size')!r}, "
                         f"seed={old.get('seed')}; asked for size={size!r}, seed={seed}: "
                         f"use another data_root or delete the folder")
    return True


def _write_labels(folder: Path, clips: pd.DataFrame, by_clip: dict, sources: pd.DataFrame) -> None:
    src = sources.set_index("source")
    rows = []
    for r in clips.sort_values("index").itertuples():
        rec = by_clip[r.clip]
        rows.append({"path": f"wav/{r.clip}.wav", "utt_id": f"{r.corpus}/{r.clip}", "split": r.split,
                     "sys_id": f"{r.corpus}/{rec['condition']}", "source_id": f"demo/{r.source}",
                     "mos_raw": rec["pesq_wb"], "oracle_mos": np.nan, "condition": rec["condition"],
                     "chain": rec["chain"], "text": src.loc[r.source, "text"], "skip_reason": rec["skip_reason"]})
    with atomic.atomic_path(folder / "labels.csv") as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)


def _write_pool_labels(folder: Path, table: pd.DataFrame, oracle: dict, sources: pd.DataFrame) -> None:
    """The pool's ``labels.csv`` from the pool builder's records: every clip on disk, unlabeled, with
    its oracle label where it has one (clips the builder skipped are counted in its report)."""
    text = sources.set_index("source")["text"]
    rows = []
    for r in table[table["path"] != ""].itertuples():
        source = Path(r.clean).stem
        score, why = oracle.get(r.clip, (None, None))
        rows.append({"path": r.path, "utt_id": f"{POOL}/{r.clip}", "split": "unlabeled",
                     "sys_id": f"{POOL}/{r.condition}", "source_id": f"demo/{source}", "mos_raw": np.nan,
                     "oracle_mos": np.nan if score is None else score, "condition": r.condition,
                     "chain": r.chain, "text": text[source], "skip_reason": why})
    with atomic.atomic_path(folder / "labels.csv") as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)


def _report(size: str, seed: int, clips: pd.DataFrame, by_clip: dict, pool_report: dict | None, t_clean: float,
            t_total: float, n_jobs: int) -> dict:
    labeled = pd.Series({c: by_clip[c]["pesq_wb"] for c in clips["clip"]}, dtype=float)
    bins = np.floor(labeled.dropna() * 2) / 2
    codec_skips: Counter = Counter()
    for rec in by_clip.values():
        codec_skips.update(rec["codec_skipped"])
    counts = {c: int(n) for c, n in clips["corpus"].value_counts().items()}
    if pool_report is not None:
        counts[POOL] = pool_report["n_clips"] - pool_report["n_skipped"]
    return {
        "format": FORMAT, "size": size, "seed": seed, "n_jobs": n_jobs,
        "clips": dict(sorted(counts.items())),
        "label_skipped": {c: by_clip[c]["skip_reason"] for c in clips["clip"] if by_clip[c]["skip_reason"]},
        "codec_skipped": dict(codec_skips),
        "labels": {"min": float(labeled.min()), "max": float(labeled.max()), "mean": float(labeled.mean()),
                   "max_bin_share": float(bins.value_counts(normalize=True).max()),
                   "bins": {f"{b:.1f}": int(n) for b, n in bins.value_counts().sort_index().items()}},
        "pool": pool_report,
        "seconds": {"clean_speech": round(t_clean, 1), "pool": pool_report and pool_report["seconds"],
                    "total": round(t_total, 1)},
    }
