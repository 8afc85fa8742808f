"""Stage 06: every model run of a profile side by side (teacher, students, pruned models, baselines).

    found = collect("demo")                                  # one row per model run
    preds = combine(predictions(found, reference=test_df),   # test predictions, long
                    baseline_predictions(data, run, NAMES))
    tables = results_tables(preds, n_boot=1000)             # paper layout, with bootstrap CIs
    gap = gap_closed_by_size(tables["pcc"], teacher=...)     # what distillation buys per size
    speed = throughput_table(found, NAMES)                   # seconds of audio per second, CPU, 1 thread

All scores come from :mod:`sqa.analysis.metrics`. Model rows keep the run they came from (``dir``), so
every number in the tables traces back to a run folder.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from sqa import atomic, paths
from sqa.analysis import comparisons, metrics
from sqa.models.baselines import NAMES
from sqa.pipeline import runs

if TYPE_CHECKING:
    from sqa.pipeline.stages import StageData

#: what a run of each stage (by its number) is; stage 04 splits by its ``mode``
STAGE_KINDS = {"02": "teacher", "04": "student", "05": "pruned"}
STUDENT_KINDS = {"distill": "distilled", "labeled-only": "labeled-only"}
#: display order of the kinds in every table
KINDS = ("baseline", "teacher", "pruned", "distilled", "labeled-only")
MODEL_COLUMNS = ["label", "kind", "size", "params"]
RUN_COLUMNS = [*MODEL_COLUMNS, "best_dev_pcc", "stage", "tag", "dir", "finished"]
PRED_COLUMNS = [*MODEL_COLUMNS, "utt_id", "corpus", "sys_id", "mos", "pred"]
MEANS = ("weighted", "unweighted")
SR = 16000


# ---------------------------------------------------------------- runs


def collect(profile: str) -> pd.DataFrame:
    """One row per model run of ``profile`` (the latest finished run per stage and tag) of stages
    02 (teacher), 04 (students) and 05 (pruned): ``label, kind, size, params, best_dev_pcc (the
    dev PCC of the epoch the run kept; NaN where it trained none), stage, tag, dir, finished``.
    An empty frame (with these columns) when there is none.

    Only runs of one lineage are kept: those that read the reference
    teacher's manifest and, for distilled and pruned models, descend from that teacher
    (:func:`sqa.analysis.comparisons.lineage_filter`). What was left out and why is in
    ``found.attrs["left_out"]`` (:func:`left_out`)."""
    latest: dict[tuple[str, str], tuple[int, dict]] = {}
    for i, row in enumerate(runs.registry(profile)):
        if row["stage"][:2] in STAGE_KINDS:
            latest[(row["stage"], row["tag"])] = (i, row)
    rows = [{**_run_row(r), "order": i} for i, r in latest.values()]
    found = pd.DataFrame(rows, columns=[*RUN_COLUMNS, "order"])
    found, dropped = comparisons.lineage_filter(found)
    found = found.drop(columns="order")
    found = _unique_labels(found)
    found = _ordered(found).reset_index(drop=True)
    found.attrs["left_out"] = dropped
    return found


def left_out(found: pd.DataFrame) -> pd.DataFrame:
    """The runs :func:`collect` left out (``label, stage, tag, dir, reason``)."""
    return found.attrs.get("left_out", pd.DataFrame(columns=comparisons.LEFT_OUT_COLUMNS))


def _run_row(row: dict) -> dict:
    folder = paths.resolve_portable(row["dir"])
    where = f"run {row['stage']}/{row['tag']} ({folder})"
    if not folder.is_dir():
        raise FileNotFoundError(f"{where}: the registry lists it but its folder is gone; "
                                "rerun the stage or remove the line from outputs/registry.jsonl")
    for name in ("predictions.csv", "model.safetensors"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{where} has no {name}: rerun the stage")
    resolved = row.get("resolved") or row.get("params") or {}
    kind = STAGE_KINDS[row["stage"][:2]]
    size = str(resolved.get("size", ""))
    if kind == "student":
        mode = resolved.get("mode")
        if mode not in STUDENT_KINDS:
            raise ValueError(f"{where}: mode={mode!r} is neither of {sorted(STUDENT_KINDS)}")
        kind = STUDENT_KINDS[mode]
    if kind == "teacher":
        label = f"teacher {resolved.get('teacher', row['tag'])}"
    elif kind == "pruned":
        method = resolved.get("method", "")
        label = f"pruned {size}" + (f" ({method})" if method else "")
    else:
        label = f"{kind} {size}"
    return {"label": label, "kind": kind, "size": size, "params": _run_params(folder),
            "best_dev_pcc": _run_metric(folder, "best_dev_pcc"), "stage": row["stage"], "tag": row["tag"],
            "dir": folder, "finished": row.get("time", "")}


def _run_metric(folder: Path, key: str) -> float | None:
    """A number of the run's ``metrics.json``, or None when it has none."""
    m = folder / "metrics.json"
    value = json.loads(m.read_text()).get(key) if m.is_file() else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _run_params(folder: Path) -> int:
    """Parameter count from the run's ``metrics.json`` (``params``) or else from its model."""
    value = _run_metric(folder, "params")
    if value is not None:
        return int(value)
    from sqa.models import checkpoint

    model, _ = checkpoint.load(folder / "model.safetensors")
    return sum(p.numel() for p in model.parameters())


def _unique_labels(found: pd.DataFrame) -> pd.DataFrame:
    """Labels that collide (e.g. two seeds of one size) get their run tag appended."""
    dup = found["label"].duplicated(keep=False)
    found.loc[dup, "label"] = found.loc[dup, "label"] + " [" + found.loc[dup, "tag"] + "]"
    return found


def _ordered(df: pd.DataFrame) -> pd.DataFrame:
    """Rows in display order: by kind (``KINDS``), then by parameter count."""
    rank = df["kind"].map({k: i for i, k in enumerate(KINDS)})
    if rank.isna().any():
        raise ValueError(f"unknown model kinds {sorted(df.loc[rank.isna(), 'kind'].unique())}; known: {KINDS}")
    order = np.lexsort((df["label"].to_numpy(), df["params"].to_numpy(dtype=float), rank.to_numpy()))
    return df.iloc[order]


def reference_teacher(found: pd.DataFrame) -> pd.Series:
    """The most recently finished teacher run (the one later stages read by default)."""
    teachers = found[found["kind"] == "teacher"]
    if teachers.empty:
        raise FileNotFoundError("no finished 02_teacher run among the collected runs: "
                                "run notebooks/02_teacher.ipynb for this profile first")
    return teachers.sort_values("finished", kind="stable").iloc[-1]


def use_inputs(run: runs.Run, found: pd.DataFrame) -> None:
    """Record every collected run as an input of ``run`` (lineage in its ``params.json``)."""
    for _, r in found.iterrows():
        run.use_input(f"{r['stage']}/{r['tag']}", r["dir"])


# ---------------------------------------------------------------- predictions


def predictions(found: pd.DataFrame, split: str = "test", reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """The ``split`` predictions of every collected run, long: ``label, kind, size, params, utt_id,
    corpus, sys_id, mos, pred``. With ``reference`` (the manifest rows of that split), each run
    must hold exactly those clips with the same MOS, so all models are scored on the same set."""
    frames = []
    for _, r in found.iterrows():
        f = Path(r["dir"]) / "predictions.csv"
        df = pd.read_csv(f)
        missing = [c for c in ("utt_id", "corpus", "sys_id", "mos", "pred", "split") if c not in df.columns]
        if missing:
            raise ValueError(f"{f} lacks columns {missing} (has {list(df.columns)})")
        df = df[df["split"] == split]
        if df.empty:
            raise ValueError(f"{f} has no {split!r} predictions: rerun the stage")
        if reference is not None:
            _check_same_clips(df, reference, str(f))
        frames.append(df.assign(**{c: r[c] for c in MODEL_COLUMNS})[PRED_COLUMNS])
    if not frames:
        return pd.DataFrame(columns=PRED_COLUMNS)
    return pd.concat(frames, ignore_index=True)


def _check_same_clips(df: pd.DataFrame, reference: pd.DataFrame, where: str) -> None:
    have, want = set(df["utt_id"]), set(reference["utt_id"])
    if have != want:
        extra, lacking = sorted(have - want), sorted(want - have)
        raise ValueError(f"{where}: its test clips differ from the manifest's test split "
                         f"({len(lacking)} missing, e.g. {lacking[:3]}; {len(extra)} not in the manifest, "
                         f"e.g. {extra[:3]}): the run read another manifest; rerun it")
    both = df.set_index("utt_id")["mos"].astype(float).sub(reference.set_index("utt_id")["mos"].astype(float))
    off = both[both.abs() > 1e-6]
    if len(off):
        raise ValueError(f"{where}: MOS of {len(off)} test clips differ from the manifest's "
                         f"(e.g. {off.index[:3].tolist()}): the run read another manifest; rerun it")


def split_digest(df: pd.DataFrame) -> str:
    """A short fingerprint of a split's clips (ids, files, MOS): the key of cached scores."""
    cols = [c for c in ("utt_id", "corpus", "path", "mos") if c in df.columns]
    text = df[cols].sort_values("utt_id").to_csv(index=False)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def baseline_predictions(data: "StageData", run: runs.Run, names: Sequence[str] = NAMES,
                         split: str = "test", batch_size: int = 8) -> pd.DataFrame:
    """Each baseline's predictions on the ``split`` clips of ``data``, long like :func:`predictions`.

    Scores are cached in the run folder (``baselines/<name>_<digest of the split>.csv``), so a
    rerun on the same clips reads them instead of scoring again.
    """
    from sqa.analysis import predictions
    from sqa.models import baselines

    unknown = [n for n in names if n not in NAMES]
    if unknown:
        raise ValueError(f"unknown baselines {unknown}; known: {', '.join(NAMES)}")
    df = data.split(split)
    if df.empty:
        raise ValueError(f"the manifest {data.source} has no {split!r} clips to score the baselines on")
    key = split_digest(df)
    frames = []
    for name in names:
        cache = run.path("baselines", f"{name}_{key}.csv")
        if cache.is_file():
            scored = pd.read_csv(cache)
            _check_same_clips(scored, df, str(cache))
        else:
            model = baselines.get(name)
            scored = predictions.predict(model, df, data.roots, batch_size=batch_size, desc=f"baseline {name}")
            scored = scored.assign(label=name, kind="baseline", size="", params=int(model.n_params))[PRED_COLUMNS]
            with atomic.atomic_path(cache) as tmp:
                scored.to_csv(tmp, index=False)
        frames.append(scored.assign(size="")[PRED_COLUMNS])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=PRED_COLUMNS)


def combine(*frames: pd.DataFrame) -> pd.DataFrame:
    """Prediction frames of several models in one; every model must cover the same clips."""
    frames = [f for f in frames if len(f)]
    if not frames:
        raise ValueError("no predictions to combine: no model run and no baseline was found")
    out = pd.concat(frames, ignore_index=True)
    clip_sets = out.groupby("label")["utt_id"].apply(frozenset)
    first = clip_sets.iloc[0]
    odd = [label for label, s in clip_sets.items() if s != first]
    if odd:
        raise ValueError(f"models {odd} were scored on other clips than {clip_sets.index[0]!r}")
    dup = out.duplicated(["label", "utt_id"])
    if dup.any():
        raise ValueError(f"duplicate predictions for {out.loc[dup, ['label', 'utt_id']].head(3).values.tolist()}")
    return out


# ---------------------------------------------------------------- tables


def score_models(preds: pd.DataFrame, metric: str = "pcc", n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per model, ``metric`` per corpus and its clip-weighted / unweighted means over corpora with
    percentile bootstrap 95 % CIs (:func:`sqa.analysis.metrics.bootstrap_ci`; the same seed for every model,
    so all models see the same resamples). Long: ``label, kind, size, params, corpus, n, estimate,
    lo, hi`` (``corpus`` is ``weighted``/``unweighted`` for the means)."""
    rows = []
    for label, g in preds.groupby("label", sort=False):
        try:
            ci = metrics.bootstrap_ci(g, metric, n_boot=n_boot, seed=seed)
        except ValueError as err:
            raise ValueError(f"model {label!r}: {err}") from None
        model = {c: g[c].iloc[0] for c in MODEL_COLUMNS}
        for _, r in ci["per_corpus"].iterrows():
            rows.append({**model, "corpus": r["corpus"], "n": int(r["n"]),
                         **{k: float(r[k]) for k in ("estimate", "lo", "hi")}})
        for mean in MEANS:
            rows.append({**model, "corpus": mean, "n": len(g), **ci[mean]})
    return pd.DataFrame(rows, columns=[*MODEL_COLUMNS, "corpus", "n", "estimate", "lo", "hi"])


def results_table(preds: pd.DataFrame, metric: str = "pcc", n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """The paper's table for one metric: one row per model (``label, kind, size, params``), per test
    corpus the score and its CI (``<corpus>``, ``<corpus>_lo``, ``<corpus>_hi``), then the
    clip-weighted and unweighted means (``weighted``, ``weighted_lo`` ... ``unweighted_hi``)."""
    long = score_models(preds, metric, n_boot, seed)
    corpora = sorted(c for c in long["corpus"].unique() if c not in MEANS)
    wide = long.pivot(index="label", columns="corpus", values=["estimate", "lo", "hi"])
    out = preds.drop_duplicates("label").set_index("label")[MODEL_COLUMNS[1:]]
    for col in [*corpora, *MEANS]:
        out[col] = wide[("estimate", col)]
        out[f"{col}_lo"] = wide[("lo", col)]
        out[f"{col}_hi"] = wide[("hi", col)]
    out = _ordered(out.reset_index()).reset_index(drop=True)
    out.attrs.update(metric=metric, n_boot=n_boot, seed=seed, corpora=corpora)
    return out


def results_tables(preds: pd.DataFrame, names: Sequence[str] = ("pcc", "srcc", "rmse"), n_boot: int = 1000,
                   seed: int = 0) -> dict[str, pd.DataFrame]:
    """:func:`results_table` for each metric in ``names``."""
    return {m: results_table(preds, m, n_boot, seed) for m in names}


def corpora_of(table: pd.DataFrame) -> list[str]:
    """The test corpora of a results table, in column order."""
    return [c for c in table.columns if f"{c}_lo" in table.columns and c not in MEANS]


def format_table(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """A results table for reading: each score as ``0.812 [0.790, 0.831]``, parameters as ``4.1M``."""
    out = table[["label", "kind"]].copy()
    out["params"] = table["params"].map(format_count)
    for col in [*corpora_of(table), *MEANS]:
        out[col] = [_with_ci(e, lo, hi, digits) for e, lo, hi in
                    zip(table[col], table[f"{col}_lo"], table[f"{col}_hi"])]
    return out


def _with_ci(estimate: float, lo: float, hi: float, digits: int) -> str:
    if not np.isfinite(estimate):
        return "n/a"
    ci = f" [{lo:.{digits}f}, {hi:.{digits}f}]" if np.isfinite(lo) and np.isfinite(hi) else ""
    return f"{estimate:.{digits}f}{ci}"


def format_count(n: float) -> str:
    """``4133226`` -> ``4.13M``, ``54945`` -> ``54.9k``."""
    if not np.isfinite(n):
        return "n/a"
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return str(int(n))


def best_of(table: pd.DataFrame, kinds: Sequence[str] = ("distilled", "labeled-only"),
            column: str = "weighted") -> str | None:
    """Label of the model of ``kinds`` with the highest ``column`` (None if there is none; the
    largest model of the first kind present when every score is undefined). Meant for
    correlation tables (higher is better)."""
    rows = table[table["kind"].isin(kinds)]
    if rows.empty:
        return None
    scores = rows[column].to_numpy(dtype=float)
    if np.isfinite(scores).any():
        return str(rows.iloc[int(np.nanargmax(scores))]["label"])
    first_kind = next(k for k in kinds if k in set(rows["kind"]))
    return str(rows[rows["kind"] == first_kind].sort_values("params").iloc[-1]["label"])


def gap_closed_by_size(table: pd.DataFrame, teacher: str | None = None) -> pd.DataFrame:
    """Per student size, the share of the baseline-to-teacher gap distillation closes
    (:func:`sqa.analysis.metrics.gap_closed`), the baseline being the labeled-only student of that size.

    One row per distilled run (several for several seeds or mixes) and per size that lacks one:
    ``size, params, student, baseline, teacher, student_score, baseline_score, teacher_score,
    gap_closed, gap_closed_unweighted, note``. Scores are the clip-weighted means of ``table``.
    Several labeled-only runs of one size are averaged. ``teacher`` is a teacher label; by
    default the only teacher row of ``table``.
    """
    teachers = table[table["kind"] == "teacher"]
    if teacher is None and len(teachers) > 1:
        raise ValueError(f"several teachers in the table ({teachers['label'].tolist()}): name one")
    t = teachers if teacher is None else teachers[teachers["label"] == teacher]
    if teacher is not None and t.empty:
        raise ValueError(f"teacher={teacher!r} is not a teacher row of the table "
                         f"(teachers: {teachers['label'].tolist()})")
    t_row = t.iloc[0] if len(t) else None
    students = table[table["kind"] == "distilled"]
    labeled = table[table["kind"] == "labeled-only"]
    rows = []
    for size in _sizes_by_params(table):
        dist = students[students["size"] == size]
        base = labeled[labeled["size"] == size]
        for _, s in (dist.iterrows() if len(dist) else iter([(None, None)])):
            rows.append(_gap_row(size, s, base, t_row))
    columns = ["size", "params", "student", "baseline", "teacher", "student_score", "baseline_score",
               "teacher_score", "gap_closed", "gap_closed_unweighted", "note"]
    return pd.DataFrame(rows, columns=columns)


def _sizes_by_params(table: pd.DataFrame) -> list[str]:
    students = table[table["kind"].isin(["distilled", "labeled-only"])]
    return list(students.groupby("size")["params"].min().sort_values().index)


def _gap_row(size: str, student: pd.Series | None, base: pd.DataFrame, teacher: pd.Series | None) -> dict:
    nan = float("nan")
    notes = []
    if student is None:
        notes.append(f"no distilled run of size {size}")
    if base.empty:
        notes.append(f"no labeled-only run of size {size}")
    elif len(base) > 1:
        notes.append(f"baseline: mean of {len(base)} labeled-only runs")
    if teacher is None:
        notes.append("no teacher run")
    score = {}
    for mean in MEANS:
        score[mean] = (
            nan if student is None else float(student[mean]),
            float(base[mean].mean()) if len(base) else nan,
            nan if teacher is None else float(teacher[mean]),
        )
    return {
        "size": size,
        "params": nan if student is None else int(student["params"]),
        "student": None if student is None else student["label"],
        "baseline": " + ".join(base["label"]) if len(base) else None,
        "teacher": None if teacher is None else teacher["label"],
        "student_score": score["weighted"][0], "baseline_score": score["weighted"][1],
        "teacher_score": score["weighted"][2],
        "gap_closed": metrics.gap_closed(*score["weighted"]),
        "gap_closed_unweighted": metrics.gap_closed(*score["unweighted"]),
        "note": "; ".join(notes),
    }


# ---------------------------------------------------------------- speed


def synthetic_clips(seconds: float = 4.0, n: int = 2, seed: int = 0) -> list[np.ndarray]:
    """Speech-like test signals (16 kHz float32): a voiced harmonic tone with a gliding pitch and
    syllable-rate loudness changes, plus noise. For timing, not for scores."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * SR))) / SR
    clips = []
    for _ in range(n):
        f0 = rng.uniform(90, 220) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.3, 1.0) * t))
        phase = 2 * np.pi * np.cumsum(f0) / SR
        voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
        envelope = np.clip(np.sin(2 * np.pi * rng.uniform(3, 5) * t + rng.uniform(0, np.pi)), 0, None)
        wave = 0.1 * voiced * envelope + 0.005 * rng.standard_normal(t.size)
        clips.append(wave.astype(np.float32))
    return clips


@contextmanager
def one_thread() -> Iterator[None]:
    """torch on one CPU thread inside the block (restored afterwards)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def throughput(model: Any, seconds: float = 4.0, repeats: int = 3, clips: int = 2, budget_s: float = 3.0,
               seed: int = 0) -> float:
    """Seconds of audio scored per second of wall time on the CPU with one thread, one clip per
    call: an ``nn.Module`` (B, T) -> (B,) or a baseline (``predict``). After one warm-up call,
    ``repeats`` passes over ``clips`` synthetic clips of ``seconds`` are timed, stopping early
    once ``budget_s`` is spent (at least one call is timed). For DNSMOS, build the baseline with
    ``intra_op_threads=1``."""
    import torch

    if seconds <= 0 or repeats < 1 or clips < 1:
        raise ValueError(f"throughput: seconds={seconds}, repeats={repeats}, clips={clips} must be positive")
    waves = synthetic_clips(seconds, clips, seed)
    if isinstance(model, torch.nn.Module):
        devices = {p.device.type for p in model.parameters()}
        if devices - {"cpu"}:
            raise ValueError(f"throughput is measured on the CPU; the model is on {sorted(devices)}")
        model.eval()

        def call(w: np.ndarray) -> None:
            model(torch.from_numpy(w)[None])
    elif hasattr(model, "predict"):
        def call(w: np.ndarray) -> None:
            model.predict([w])
    else:
        raise TypeError(f"throughput: {type(model).__name__} is neither an nn.Module nor a baseline "
                        "with predict()")
    with one_thread(), torch.inference_mode():
        call(waves[0])
        done, start = 0, time.perf_counter()
        for _ in range(repeats):
            for w in waves:
                call(w)
                done += 1
                if time.perf_counter() - start > budget_s:
                    break
            else:
                continue
            break
        elapsed = time.perf_counter() - start
    return done * seconds / elapsed


def throughput_table(found: pd.DataFrame, baseline_names: Sequence[str] = NAMES, seconds: float = 4.0,
                     repeats: int = 3, budget_s: float = 3.0) -> pd.DataFrame:
    """:func:`throughput` of every collected model and baseline: ``label, kind, size, params,
    throughput`` (seconds of audio per second, CPU, one thread) and ``ms_per_clip``."""
    from tqdm.auto import tqdm

    from sqa.models import baselines, checkpoint

    jobs = [(r["label"], r["kind"], r["size"], r["params"], Path(r["dir"]) / "model.safetensors")
            for _, r in found.iterrows()]
    jobs += [(name, "baseline", "", None, name) for name in baseline_names]
    rows = []
    for label, kind, size, params, source in tqdm(jobs, desc="throughput", unit="model"):
        if kind == "baseline":
            model = baselines.get(source, intra_op_threads=1)
            params = model.n_params
        else:
            model, _ = checkpoint.load(source)
        speed = throughput(model, seconds, repeats, budget_s=budget_s)
        rows.append({"label": label, "kind": kind, "size": size, "params": int(params),
                     "throughput": speed, "ms_per_clip": 1000 * seconds / speed})
        del model
    out = pd.DataFrame(rows, columns=[*MODEL_COLUMNS, "throughput", "ms_per_clip"])
    out.attrs.update(seconds=seconds, threads=1, device="cpu")
    return _ordered(out).reset_index(drop=True)


# ---------------------------------------------------------------- outputs


def write_tables(run: runs.Run, results: Mapping[str, pd.DataFrame] | None = None, notes: str = "",
                 **tables: pd.DataFrame) -> list[Path]:
    """Write each results table (``results_<metric>``) and each other table as CSV (all numbers)
    and Markdown (for reading; scores with their CIs), atomically, and ``notes`` (what the labels
    are, what the CIs are) as ``notes.md``: small text files meant to be committed
    (``python -m bench.readme_tables --publish``). Returns the files."""
    out = []
    if notes:
        out.append(atomic.write_text(run.path("notes.md"), notes.strip() + "\n"))
    named = {f"results_{m}": t for m, t in (results or {}).items()} | tables
    for name, table in named.items():
        csv = _portable_dirs(table)
        readable = format_table(table) if "weighted_lo" in table.columns else csv
        with atomic.atomic_path(run.path(f"{name}.csv")) as tmp:
            csv.to_csv(tmp, index=False)
        out.append(run.path(f"{name}.csv"))
        out.append(atomic.write_text(run.path(f"{name}.md"),
                                     readable.to_markdown(index=False, floatfmt=".3f") + "\n"))
    return out


def _portable_dirs(table: pd.DataFrame) -> pd.DataFrame:
    if "dir" not in table.columns:
        return table
    return table.assign(dir=[paths.portable(d) for d in table["dir"]])


def _num(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _plain(x: Any) -> Any:
    """A table cell as a JSON value (numpy numbers to Python, NaN to None)."""
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return _num(x)
    return x


def metrics_dict(tables: Mapping[str, pd.DataFrame], gap: pd.DataFrame | None = None,
                 speed: pd.DataFrame | None = None) -> dict:
    """``metrics.json`` content: per model, its kind and size and, per metric, the score with its
    CI per corpus and for both means; the gap closed per size; the measured throughput."""
    models: dict[str, dict] = {}
    first = next(iter(tables.values()))
    for _, r in first.iterrows():
        models[r["label"]] = {"kind": r["kind"], "size": _plain(r["size"]), "params": int(r["params"])}
    for metric, table in tables.items():
        for _, r in table.iterrows():
            models[r["label"]][metric] = {
                col: {"estimate": _num(r[col]), "lo": _num(r[f"{col}_lo"]), "hi": _num(r[f"{col}_hi"])}
                for col in [*corpora_of(table), *MEANS]}
    if speed is not None:
        for _, r in speed.iterrows():
            if r["label"] in models:
                models[r["label"]]["throughput"] = _num(r["throughput"])
    out: dict[str, Any] = {"models": models, "corpora": corpora_of(first),
                           "n_boot": first.attrs.get("n_boot"), "seed": first.attrs.get("seed"),
                           "kinds": sorted({m["kind"] for m in models.values()})}
    if gap is not None:
        out["gap_closed"] = [{k: _plain(v) for k, v in r.items()} for r in gap.to_dict("records")]
    return out
