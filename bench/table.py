"""Render ``bench/results/*.json`` as Markdown tables (for the README).

``models.json`` and ``demo_corpus_<size>.json`` have their own layouts; any other result file
(``export.json``, later benchmarks) is rendered generically: its list of records as a table, else
its scalar fields as name/value rows. ``models_quick.json`` (a smoke check) is left out.

    python -m bench.table [FILE.json ...]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from .common import results_dir

SKIP = ("models_quick.json",)


def fmt(value: object) -> str:
    """A cell: numbers to 3 significant digits (integers whole), None as '–'."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:
            return "nan"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.3g}"
    return str(value).replace("|", "\\|")


def count(n: int) -> str:
    """Parameter count as 12.3k / 4.56M."""
    if n >= 1_000_000:
        return f"{n / 1e6:.3g}M"
    if n >= 1_000:
        return f"{n / 1e3:.3g}k"
    return str(n)


def markdown(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c if isinstance(c, str) else fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_line(info: Mapping) -> str:
    """One line describing the machine a result came from."""
    load = info.get("load_avg_1min")
    return (f"Machine: {info.get('cpu', '?')}, {info.get('cores', '?')} cores, torch {info.get('torch', '?')}, "
            f"{info.get('device', '?')}" + (f", 1-min load average {load:.2f} at start" if load is not None else ""))


def _timed(row: Mapping | None, key: str) -> str:
    """A throughput cell; '*' marks a figure from a single timed call."""
    if row is None:
        return "–"
    return fmt(row[key]) + ("*" if row["repeats"] == 1 else "")


def models_table(result: Mapping) -> str:
    """``models.json``: params, inference audio-s per wall-s and training clips/s, 1 / 2 threads."""
    settings: list[str] = []
    for m in result["models"]:
        for r in m["inference"]:
            if r["setting"] not in settings:
                settings.append(r["setting"])
    header = ["model", "kind", "params", *(f"infer {s}" for s in settings), "train clips/s", "load"]
    rows = []
    for m in result["models"]:
        by = {(r["setting"], r["threads"]): r for r in m["inference"]}
        cells = [" / ".join(_timed(by.get((s, t)), "audio_s_per_s") for t in result["threads"]) for s in settings]
        train = {r["threads"]: r for r in m["training"]}
        train_cell = " / ".join(_timed(train.get(t), "clips_per_s") for t in result["threads"]) if train else "–"
        rows.append([m["name"], m["kind"], count(m["n_params"]), *cells, train_cell, fmt(m["load_avg_1min"])])
    threads = " / ".join(str(t) for t in result["threads"])
    notes = (f"Inference: seconds of audio scored per second of wall time (median), `<clip>-b<batch>`, "
             f"threads {threads}. Training: clips/s of forward+backward+AdamW, batch {result['train']['batch']} "
             f"x {result['train']['clip_s']:g}-s windows, threads {threads}. Medians over repeats after "
             f"warm-up; * = one timed call (calls over {result['plan']['single_call_s']:g} s). Students use "
             f"{result['student_window_s']:g}-s windows and random weights; 'load' = 1-min load average "
             f"when the model's measurement started (above the core count = shared CPU, noisy numbers).")
    return "\n\n".join([markdown(header, rows), notes, machine_line(result["machine"])])


def demo_corpus_table(result: Mapping) -> str:
    """``demo_corpus_<size>.json``: build time, clip counts, label spread, DistillMOS vs PESQ."""
    build = result["build"]
    pcc = result["distillmos_vs_pesq_test"]
    rows = [[corpus, v["n"], v["pcc"], v["srcc"]] for corpus, v in pcc.items()]
    rows.append(["clip-weighted mean", sum(v["n"] for v in pcc.values()),
                 result["distillmos_vs_pesq_test_mean_pcc"], None])
    labels = build["labels"]
    summary = (f"Demo corpora (size {result['size']}, seed {result['seed']}): {sum(build['clips'].values()):,} clips "
               f"built in {build['seconds']['total']:.0f} s (clean speech {build['seconds']['clean_speech']:.0f} s); "
               f"PESQ-WB labels {labels['min']:.2f}–{labels['max']:.2f} (mean {labels['mean']:.2f}, "
               f"largest 0.5-wide bin {labels['max_bin_share']:.0%}).")
    return "\n\n".join([summary, markdown(["test corpus", "clips", "DistillMOS PCC", "SRCC"], rows),
                        machine_line(result["machine"])])


def distill_table(result: Mapping) -> str:
    """``distill_<profile>.json``: pseudo-labeling and distillation wall times against their budgets."""
    budget = result["budget_s"]
    rows = [[f"pseudo-label {result['pool_clips']:,} pool clips, {r['workers']} worker(s)", r["seconds"],
             budget["pseudo_label"], f"{r['clips_per_s']:.1f} clips/s"] for r in result["pseudo_label"]]
    d = result["distill"]
    rows.append([f"distill a {d['size']} student ({d['params']:,} params), {d['epochs']} epochs + test",
                 d["seconds"], budget["distill"], f"test PCC {d['test_pcc_weighted']:.3f}"])
    return "\n\n".join([markdown(["job", "seconds", "budget s", "note"], rows), machine_line(result["machine"])])


def pruned_vs_distilled_table(result: Mapping) -> str:
    """``pruned_vs_distilled_<profile>.json``: ms per 4-s clip against parameters, by kind."""
    rows = [[m["label"], m["kind"], count(m["params"]), m["timing"]["1"]["ms_per_clip"],
             m["timing"]["2"]["ms_per_clip"], m["test_pcc"]] for m in result["models"]]
    header = ["model", "kind", "params", "ms/clip 1 thread", "ms/clip 2 threads", "test PCC"]
    return "\n\n".join([markdown(header, rows), machine_line(result["machine"])])


def _flatten(obj: Mapping, prefix: str = "") -> dict:
    out: dict = {}
    for key, value in obj.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        elif not isinstance(value, list):
            out[f"{prefix}{key}"] = value
    return out


def generic_table(result: Mapping) -> str:
    """Any result: its first list of records as a table (text columns first), else scalar fields
    as name/value rows."""
    records = next((v for k, v in result.items()
                    if k != "machine" and isinstance(v, list) and v and all(isinstance(r, Mapping) for r in v)), None)
    if records is not None:
        flat = [_flatten(r) for r in records]
        keys = list(dict.fromkeys(k for r in flat for k in r))
        is_label = {k: all(isinstance(r.get(k, ""), str) for r in flat) for k in keys}
        header = [k for k in keys if is_label[k]] + [k for k in keys if not is_label[k]]  # labels first
        body = markdown(header, [[r.get(k) for k in header] for r in flat])
    else:
        fields = _flatten({k: v for k, v in result.items() if k != "machine"})
        body = markdown(["field", "value"], [[k, v] for k, v in fields.items()])
    return body + (f"\n\n{machine_line(result['machine'])}" if isinstance(result.get("machine"), Mapping) else "")


def render(path: Path) -> str:
    """The Markdown section for one result file."""
    result = json.loads(path.read_text())
    if path.name.startswith("models"):
        body = models_table(result)
    elif path.name.startswith("demo_corpus_"):
        body = demo_corpus_table(result)
    elif path.name.startswith("distill_"):
        body = distill_table(result)
    elif path.name.startswith("pruned_vs_distilled_"):
        body = pruned_vs_distilled_table(result)
    else:
        body = generic_table(result)
    return f"### {path.stem}\n\n{body}\n"


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", type=Path, help="result files (default: every bench/results/*.json)")
    args = ap.parse_args(argv)
    files = args.files or sorted(p for p in results_dir().glob("*.json") if p.name not in SKIP)
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise SystemExit(f"bench.table: no such result file(s): {', '.join(missing)}")
    text = "\n".join(render(p) for p in files) if files else f"no results in {results_dir()} yet (run `python -m bench`)"
    print(text)
    return text


if __name__ == "__main__":
    main()
