"""What stage 06 may compare, and how: one lineage of runs, seeds summarised, paired differences.

- :func:`lineage_filter`: runs of one manifest (and one teacher for distilled and pruned models);
  the rest is left out with the reason.
- :func:`with_sources`: the ``source_id`` of each clip, so bootstrap CIs resample whole source
  utterances (:mod:`sqa.analysis.metrics`).
- :func:`seed_summary`: several runs of one kind and size (seeds) as mean ± sd.
- :func:`paired_comparisons`: distilled vs labeled-only and pruned vs distilled at each size, as
  paired bootstrap CIs of the difference on the same clips.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from sqa import paths
from sqa.analysis import metrics
from sqa.pipeline import runs

LEFT_OUT_COLUMNS = ["label", "stage", "tag", "dir", "reason"]
#: the comparisons the text of a results section makes: (kind A, kind B) at the same size
PAIRS = (("distilled", "labeled-only"), ("pruned", "distilled"))
SEED_KINDS = ("pruned", "distilled", "labeled-only")
def lineage_filter(found: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split collected runs into those of the reference lineage and those left out, with why.

    The reference is the last finished teacher run (else the last run; column ``order`` when
    present, else ``finished``) and the manifest it read. A run whose manifest differs is left out
    (its test clips or labels may differ); a distilled or pruned run that descends from another
    teacher is left out (it learned another teacher's labels). Labeled-only students need only
    the same manifest."""
    if found.empty:
        return found, pd.DataFrame(columns=LEFT_OUT_COLUMNS)
    lineages = {i: runs.lineage(r["dir"]) for i, r in found.iterrows()}
    teachers = found[found["kind"] == "teacher"]
    order = "order" if "order" in found.columns else "finished"
    ref_row = (teachers if len(teachers) else found).sort_values(order, kind="stable").iloc[-1]
    ref = lineages[ref_row.name]
    ref_manifest = ref.get("01_merge_datasets", set())
    ref_teacher = ref.get("02_teacher", set())
    keep, dropped = [], []
    for i, r in found.iterrows():
        lin = lineages[i]
        reason = ""
        if lin.get("01_merge_datasets", set()) != ref_manifest:
            reason = (f"read manifest {_names(lin.get('01_merge_datasets'))}, not {_names(ref_manifest)} "
                      f"(the manifest of {ref_row['label']})")
        elif r["kind"] in ("distilled", "pruned") and ref_teacher and lin.get("02_teacher", set()) != ref_teacher:
            reason = (f"descends from teacher run {_names(lin.get('02_teacher'))}, not the reference "
                      f"teacher {_names(ref_teacher)}")
        if reason:
            dropped.append({"label": r["label"], "stage": r["stage"], "tag": r["tag"],
                            "dir": paths.portable(r["dir"]), "reason": reason})
        else:
            keep.append(i)
    return found.loc[keep], pd.DataFrame(dropped, columns=LEFT_OUT_COLUMNS)


def _names(folders: set[str] | None) -> str:
    return " + ".join(sorted(folders)) if folders else "none"


def with_sources(preds: pd.DataFrame, clips: pd.DataFrame) -> pd.DataFrame:
    """``preds`` with the ``source_id`` of each clip from the manifest rows ``clips`` (every
    predicted clip must be there)."""
    if "source_id" not in clips.columns:
        return preds
    sources = clips.drop_duplicates("utt_id").set_index("utt_id")["source_id"]
    out = preds.drop(columns=[c for c in ("source_id",) if c in preds.columns])
    out = out.assign(source_id=out["utt_id"].map(sources))
    missing = out["source_id"].isna()
    if missing.any():
        raise ValueError(f"{int(missing.sum())} predicted clips are not in the manifest, e.g. "
                         f"{out.loc[missing, 'utt_id'].head(3).tolist()}")
    return out


def seed_summary(table: pd.DataFrame, column: str = "weighted") -> pd.DataFrame:
    """Runs of one kind and size (seeds, or repeats) of a results table as ``kind, size, params,
    n_runs, mean, sd, min, max, runs``: ``sd`` is the sample standard deviation over runs (NaN
    for one run). Rows in the table's order."""
    rows = []
    scaled = table[table["kind"].isin(SEED_KINDS)]
    for (kind, size), g in scaled.groupby(["kind", "size"], sort=False):
        v = g[column].to_numpy(dtype=float)
        rows.append({"kind": kind, "size": size, "params": int(g["params"].mean()), "n_runs": len(g),
                     "mean": float(np.nanmean(v)) if np.isfinite(v).any() else float("nan"),
                     "sd": float(np.nanstd(v, ddof=1)) if np.isfinite(v).sum() > 1 else float("nan"),
                     "min": float(np.nanmin(v)) if np.isfinite(v).any() else float("nan"),
                     "max": float(np.nanmax(v)) if np.isfinite(v).any() else float("nan"),
                     "runs": " + ".join(g["label"])})
    out = pd.DataFrame(rows, columns=["kind", "size", "params", "n_runs", "mean", "sd", "min", "max", "runs"])
    out.attrs.update(metric=table.attrs.get("metric", ""), column=column)
    return out


def format_seeds(summary: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """Seed summary for reading: ``0.843 ± 0.012 (n=3)``."""
    def cell(r: pd.Series) -> str:
        sd = f" ± {r['sd']:.{digits}f}" if np.isfinite(r["sd"]) else ""
        return f"{r['mean']:.{digits}f}{sd} (n={r['n_runs']})"
    return summary[["kind", "size"]].assign(**{summary.attrs.get("metric", "score") or "score":
                                               summary.apply(cell, axis=1)})


def paired_comparisons(preds: pd.DataFrame, metric: str = "pcc", n_boot: int = 1000, seed: int = 0,
                       pairs: Sequence[tuple[str, str]] = PAIRS) -> pd.DataFrame:
    """Per size and pair of kinds (:data:`PAIRS`), ``metric(A) - metric(B)`` on the same test
    clips with a paired cluster-bootstrap 95 % CI (clip-weighted mean over corpora). Several runs
    of a kind and size are paired in label order (seed 0 with seed 0, ...). Columns: ``size, a, b,
    difference, lo, hi, verdict`` (verdict: which is better, or "no difference shown" when the CI
    includes 0)."""
    rows = []
    models = preds.drop_duplicates("label")[["label", "kind", "size"]]
    for kind_a, kind_b in pairs:
        for size in models.loc[models["kind"] == kind_a, "size"].unique():
            a = sorted(models[(models["kind"] == kind_a) & (models["size"] == size)]["label"])
            b = sorted(models[(models["kind"] == kind_b) & (models["size"] == size)]["label"])
            for la, lb in zip(a, b):
                rows.append(_paired_row(preds, la, lb, size, metric, n_boot, seed))
    out = pd.DataFrame(rows, columns=["size", "a", "b", "difference", "lo", "hi", "verdict"])
    out.attrs.update(metric=metric, n_boot=n_boot, seed=seed)
    return out


def _paired_row(preds: pd.DataFrame, a: str, b: str, size: str, metric: str, n_boot: int, seed: int) -> dict:
    keys = [c for c in ("utt_id", "corpus", "sys_id", "source_id", "mos") if c in preds.columns]
    wide = preds[preds["label"] == a][[*keys, "pred"]].merge(
        preds[preds["label"] == b][["utt_id", "pred"]], on="utt_id", suffixes=("_a", "_b"), validate="1:1")
    d = metrics.paired_bootstrap_diff(wide, "pred_a", "pred_b", metric, n_boot=n_boot, seed=seed)["weighted"]
    better_high = metric != "rmse"
    if d["lo"] > 0:
        verdict = f"{a} better" if better_high else f"{b} better"
    elif d["hi"] < 0:
        verdict = f"{b} better" if better_high else f"{a} better"
    else:
        verdict = "no difference shown (CI includes 0)"
    return {"size": size, "a": a, "b": b, "difference": d["estimate"], "lo": d["lo"], "hi": d["hi"],
            "verdict": verdict}
