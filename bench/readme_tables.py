"""The README's results and benchmark tables, regenerated from committed files only.

Each table sits in README.md between ``<!-- begin: NAME -->`` and ``<!-- end: NAME -->``:

- ``results-<profile>``: the tables notebook 06 wrote for the reported runs, committed under
  ``docs/results/<profile>/`` (copy them there with ``--publish``);
- ``speed-<profile>``: trained models timed side by side (``bench/results/pruned_vs_distilled_<profile>.json``);
- ``models``: architecture presets and baselines (``bench/results/models.json``).

The model card, ``docs/models.md``, has its own blocks (``release-*``: the shipped students'
agreement with their teacher and speed, from ``bench/results/release_models.json``; the agreement
against the pool's size, from ``bench/results/release_scaling.json``; the hint loss's weights, from
``bench/results/hints.json``; the ensemble teacher against
them, from ``bench/results/release_teachers.json``).

    python -m bench.readme_tables                                     # rewrite the README tables
    python -m bench.readme_tables --check                             # exit 1 if the README is stale
    python -m bench.readme_tables --publish outputs/demo/06_analysis/seed-0   # then commit docs/results/demo

Every speed figure in the README follows one protocol (:data:`SPEED_PROTOCOL`).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

from sqa.pipeline.progress import clock

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MODEL_CARD = ROOT / "docs" / "models.md"
RESULTS = ROOT / "docs" / "results"
BENCH = ROOT / "bench" / "results"
PROFILES = ("demo",)
#: the files of a 06 run that are published (small text tables; ``sqa.analysis.tables.write_tables``)
PUBLISHED = ("notes.md", "results_pcc.md", "seeds.md", "comparisons.md", "left_out.md",
             "results_pcc.csv", "results_srcc.csv", "results_rmse.csv", "seeds.csv", "comparisons.csv",
             "left_out.csv", "runs.csv")
SPEED_PROTOCOL = ("wall time of one call on one 4-s clip (batch 1) on the CPU, median of repeated calls after "
                  "a warm-up (`bench.models.time_calls`)")
_BLOCK = re.compile(r"(<!-- begin: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- end: (?P=name) -->)", re.S)


def _count(n: float) -> str:
    for div, unit in ((1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return str(int(n))


def results_block(profile: str) -> str:
    folder = RESULTS / profile
    if not (folder / "results_pcc.md").is_file():
        return (f"No {profile} results are committed yet: run `sqa reproduce --profile {profile}`, then "
                f"`python -m bench.readme_tables --publish outputs/{profile}/06_analysis/seed-0` and commit "
                f"`docs/results/{profile}/`.\n")
    parts = [f"From `docs/results/{profile}/` (written by notebook 06).\n"]
    titles = {"notes.md": None, "results_pcc.md": "PCC per test corpus, 95 % cluster-bootstrap CIs",
              "seeds.md": "Seeds: mean ± sd over runs of one kind and size",
              "comparisons.md": "Paired differences (same clips, same resamples), 95 % CIs",
              "left_out.md": "Runs left out (another lineage)"}
    for name, title in titles.items():
        f = folder / name
        if f.is_file():
            parts.append((f"**{title}**\n\n" if title else "") + f.read_text().strip() + "\n")
        if name == "comparisons.md":
            parts += dev_block(folder)
    return "\n".join(parts)


def dev_block(folder: Path) -> list[str]:
    """The trained runs' best dev PCC (the epoch each kept), from the published ``runs.csv``."""
    import pandas as pd

    f = folder / "runs.csv"
    runs = pd.read_csv(f) if f.is_file() else pd.DataFrame()
    if "best_dev_pcc" not in runs or runs["best_dev_pcc"].isna().all():
        return []
    runs = runs[runs["best_dev_pcc"].notna()]
    lines = ["**Dev PCC of the epoch each run kept (early stopping)**", "", "| run | kind | size | dev PCC |",
             "|---|---|---|---|"]
    lines += [f"| {r.tag} | {r.kind} | {r.size} | {r.best_dev_pcc:.3f} |" for r in runs.itertuples()]
    return ["\n".join(lines) + "\n"]


def speed_block(profile: str) -> str:
    f = BENCH / f"pruned_vs_distilled_{profile}.json"
    data = json.loads(f.read_text())
    lines = [f"From `{f.relative_to(ROOT)}` (`python -m bench.pruned_vs_distilled --profile {profile}`).", "",
             "| model | params | ms per clip, 1 / 2 threads | test PCC (clip-weighted) |", "|---|---|---|---|"]
    for m in data["models"]:
        t = m["timing"]
        pcc = f"{m['test_pcc']:.3f}" if m.get("test_pcc") is not None else "n/a"
        lines.append(f"| {m['label']} | {_count(m['params'])} | {t['1']['ms_per_clip']:.0f} / "
                     f"{t['2']['ms_per_clip']:.0f} | {pcc} |")
    return "\n".join(lines) + "\n"


def models_block() -> str:
    f = BENCH / "models.json"
    data = json.loads(f.read_text())
    lines = [f"From `{f.relative_to(ROOT)}` (`python -m bench.models`).", "",
             "| model | params | ms per clip, 1 / 2 threads | training clips/s, 1 / 2 threads |", "|---|---|---|---|"]
    for m in data["models"]:
        inf = {r["threads"]: r for r in m["inference"] if r["setting"] == "4s-b1"}
        ms = " / ".join(f"{1000 * inf[t]['median_s']:.0f}" if t in inf else "–" for t in (1, 2))
        train = {r["threads"]: r["clips_per_s"] for r in m.get("training") or []}
        tr = " / ".join(f"{train[t]:.3g}" if t in train else "–" for t in (1, 2)) if train else "–"
        lines.append(f"| {m['name']} | {_count(m['n_params'])} | {ms} | {tr} |")
    return "\n".join(lines) + "\n"


def demo_e2e_block() -> str:
    f, data = _bench("demo_e2e")
    if data is None:
        return _unmeasured("demo_e2e")
    lines = [f"From `{f.relative_to(ROOT)}` (`python -m bench.demo_e2e`; {data['machine']['cores']} cores, "
             f"1-min load {data['load_avg_1min_before']:.1f} before the run).", "",
             "| stage run | wall (m:ss) |", "|---|---|"]
    for r in data["stages"]:
        detail = ", ".join(f"{k} {v}" for k, v in r["overrides"].items() if k != "baselines")
        lines.append(f"| {r['stage']}{' (' + detail + ')' if detail else ''} | {clock(r['seconds'])} |")
    lines.append(f"| **total** | **{clock(data['total_s'])}** |")
    p = data["points"]
    t, s, pr = p["teacher_vs_released_distillmos"], p["distilled_vs_labeled_only"], p["pruning"]
    lines += ["", f"What it shows (clip-weighted test PCC on the demo's PESQ-WB labels): the teacher "
              f"{t['teacher']:.3f} vs. the released DistillMOS {t['distillmos']:.3f}; the {p['student_size']} student distilled "
              f"{s['distill']:.3f} vs. labeled-only {s['labeled-only']:.3f}; the teacher pruned to "
              f"{_count(pr['target'])} has {pr['params']:,} parameters; 06 wrote "
              f"{', '.join(p['analysis_files'])}."]
    return "\n".join(lines) + "\n"


def test_suite_block() -> str:
    f, data = _bench("test_suite")
    if data is None:
        return _unmeasured("test_suite")
    counts = ", ".join(f"{n} {k}" for k, n in data["outcome"].items())
    return (f"`make test` took **{clock(data['wall_s'])}** ({counts}; {data['machine']['cores']} cores, 1-min "
            f"load {data['load_avg_1min_before']:.1f} before the run) — from `{f.relative_to(ROOT)}` "
            f"(`python -m bench.test_suite`).\n")


def score_memory_block() -> str:
    f = BENCH / "score_memory.json"
    data = json.loads(f.read_text())
    short, long = data["minutes"]
    lines = [f"From `{f.relative_to(ROOT)}` (`python -m bench.score_memory`; {data['threads']} thread, peak resident "
             f"set size of a fresh process per model and clip).", "",
             f"| model | peak MB, {short} min | peak MB, {long} min | ratio (target ≤ {data['target_ratio']}) |",
             "|---|---|---|---|"]
    for r in data["rows"]:
        lines.append(f"| {r['model']} | {r[f'peak_mb_{short}min']:.0f} | {r[f'peak_mb_{long}min']:.0f} | "
                     f"{r['ratio']:.2f} |")
    return "\n".join(lines) + "\n"


def lazy_memory_block() -> str:
    f = BENCH / "lazy_memory.json"
    data = json.loads(f.read_text())
    lines = [f"From `{f.relative_to(ROOT)}` (`python -m bench.lazy_memory`).", "",
             f"| clips ({data['clips_seconds']:g} s each, batch {data['batch_size']}, {data['loader_workers']} loader "
             "workers) | peak PSS, process + workers |", "|---|---|"]
    for part in ("small", "large"):
        lines.append(f"| {data[part]['clips']:,} | {data[part]['peak_pss_mb']:,.0f} MB |")
    lines += ["", f"Ratio {data['ratio']:.2f} (target ≤ {data['ratio_max']})."]
    return "\n".join(lines) + "\n"


def _ci(m: dict) -> str:
    return f"{m['estimate']:.3f} [{m['lo']:.3f}, {m['hi']:.3f}]"


def _metric_cis(agreement: dict) -> str:
    """PCC, SRCC and RMSE with their CIs as three table cells."""
    return " | ".join(_ci(agreement[m]) for m in ("pcc", "srcc", "rmse"))


def _bench(name: str) -> tuple[Path, dict | None]:
    """``bench/results/<name>.json`` and its content (None when the benchmark has not run)."""
    f = BENCH / f"{name}.json"
    return f, json.loads(f.read_text()) if f.is_file() else None


def _unmeasured(name: str) -> str:
    return f"Not measured yet: `python -m bench.{name}`.\n"


def release_agreement_block() -> str:
    f, data = _bench("release_models")
    if data is None:
        return _unmeasured("release_models")
    lines = [f"From `{f.relative_to(ROOT)}` (`python -m bench.release_models`): {data['n_test']} held-out test "
             f"clips, 95 % bootstrap CIs over whole clean files and conditions ({data['n_boot']} resamples).", "",
             "| model | params | PCC | SRCC | RMSE |", "|---|---|---|---|---|"]
    for name, m in data["models"].items():
        if "agreement" in m:
            a = m["agreement"]["overall"]
            lines.append(f"| {name} | {_count(m['params'])} | {_metric_cis(a)} |")
    return "\n".join(lines) + "\n"


def release_families_block() -> str:
    f, data = _bench("release_models")
    if data is None:
        return _unmeasured("release_models")
    students = [n for n, m in data["models"].items() if "agreement" in m]
    families = sorted({fam for n in students for fam in data["models"][n]["agreement"]["per_family"]})
    lines = ["PCC with the teacher per degradation family (a clip counts in every family of its chain), 95 % CIs:",
             "", "| family | clips | " + " | ".join(students) + " |", "|---|---|" + "---|" * len(students)]
    for fam in families:
        per = [data["models"][n]["agreement"]["per_family"][fam] for n in students]
        lines.append(f"| {fam} | {per[0]['n']} | " + " | ".join(_ci(p["pcc"]) for p in per) + " |")
    return "\n".join(lines) + "\n"


def release_speed_block(protocol: bool = True) -> str:
    """The shipped students' speed against DistillMOS (``protocol``: say how it was timed, for a
    document that does not state the protocol elsewhere)."""
    f, data = _bench("release_models")
    if data is None:
        return _unmeasured("release_models")
    how = f"Speed: {SPEED_PROTOCOL}" if protocol else "Speed"
    lines = [f"{how}; {data['machine']['cores']} cores, from `{f.relative_to(ROOT)}`.", "",
             "| model | params | ms per clip, 1 / 2 threads | faster than DistillMOS, 1 / 2 threads |",
             "|---|---|---|---|"]
    for name, m in data["models"].items():
        t = m["speed"]
        up = m.get("speedup_vs_distillmos")
        lines.append(f"| {name} | {_count(m['params'])} | {t['1']['ms_per_clip']:.1f} / {t['2']['ms_per_clip']:.1f} | "
                     + (f"{up['1']:.1f}x / {up['2']:.1f}x |" if up else "– |"))
    return "\n".join(lines) + "\n"


def release_data_block() -> str:
    f, data = _bench("release_models")
    if data is None:
        return _unmeasured("release_models")
    b = data["build"]
    from collections import Counter

    from sqa.synth.release_corpus import engine

    engines = Counter(engine(v) for v in b["voices"])
    human = {k: n for k, n in b["human_files"].items() if k != "skipped"}
    pools = {k: v["n_clips"] - v["n_skipped"] for k, v in b["pools"].items()}
    lines = [f"From the build report in `{f.relative_to(ROOT)}`:", "",
             f"- voices: {len(b['voices'])} ({', '.join(f'{n} {e}' for e, n in sorted(engines.items()))}); "
             f"held out: {len(b['heldout_voices'])} ({', '.join(b['heldout_voices'])})",
             "- clean files from human recordings (4 prompts joined per file): "
             + ", ".join(f"{k} {n}" for k, n in sorted(human.items()))
             + f"; {len(b['human_files']['skipped'])} unreadable recording(s) left out",
             f"- clean files spoken: {b['size']['train_files']} for training, {b['size']['heldout_files']} held out "
             f"({b['size']['sentences_per_file']} sentences each)",
             "- pools: " + ", ".join(f"{k} {n:,} clips" for k, n in sorted(pools.items()))]
    return "\n".join(lines) + "\n"


def release_scaling_block() -> str:
    """The 250k release student's agreement against the size of its pseudo-labeled pool, without
    and with the hint loss, and where each series' trend reaches the targets."""
    f, data = _bench("release_scaling")
    if data is None:
        return _unmeasured("release_scaling")
    series = [(f, data)] + sorted((path, json.loads(path.read_text())) for path in BENCH.glob("release_scaling_hint-*.json"))
    lines = [f"From {', '.join(f'`{path.relative_to(ROOT)}`' for path, _ in series)} (`python -m bench.release_scaling`): "
             f"the {data['size']} student distilled by stage 04's recipe on random subsets of the "
             f"{data['pool_clips']:,}-clip pool, PCC with the teacher on the {data['n_test']} held-out test clips "
             "(95 % CIs as above).", "",
             "| hint weight | pool clips | seeds | PCC, mean ± SD over seeds | PCC per seed [95 % CI] |",
             "|---|---|---|---|---|"]
    trends = []
    for _, d in series:
        weight = f"{d.get('hint_weight', 0.0):g}"
        for n, row in d["by_clips"].items():
            points = [p for p in d["points"] if str(p["clips"]) == n]
            sd = f" ± {row['pcc_sd']:.3f}" if row["pcc_sd"] is not None else ""
            lines.append(f"| {weight} | {int(n):,} | {row['seeds']} | {row['pcc_mean']:.3f}{sd} | "
                         + "; ".join(_ci(p["pcc"]) for p in points) + " |")
        t = d.get("trend")
        if t:
            reach = ", ".join(f"PCC {k} near {float(f'{v:.2g}'):,.0f} clips" if v else f"PCC {k} never"
                              for k, v in t["clips_to_reach"].items())
            trends.append(f"- hint weight {weight}: Fisher z {t['z_per_doubling']:+.3f} per doubling of the pool; "
                          f"extrapolated, {reach}")
    if trends:
        lines += ["", "Trend (a least-squares line of Fisher's z of the test PCC in log2(clips) over every point, "
                  "extrapolated on the assumption that the gain per doubling stays constant):", *trends]
    return "\n".join(lines) + "\n"


def release_hints_block() -> str:
    """The 250k release student with and without the hint loss, paired by seed."""
    f, data = _bench("hints")
    if data is None:
        return _unmeasured("hints")
    lines = [f"From `{f.relative_to(ROOT)}` (`python -m bench.hints`): the {data['size']} student distilled by "
             f"stage 04's recipe on {data['clips']:,} pool clips drawn per seed, with each hint weight (0: plain "
             f"distillation); dev PCC chooses the weight, test PCC (the {data['n_test']} held-out test clips) "
             "reports it; per seed, the test PCC difference to weight 0 with a paired 95 % CI on the same clips.",
             "", "| hint weight | dev PCC, mean | test PCC, mean ± SD | test PCC minus weight 0, per seed [paired 95 % CI] |",
             "|---|---|---|---|"]
    for w, row in data["by_weight"].items():
        diffs = [p["test_pcc_minus_plain"] for p in data["points"] if f"{p['weight']:g}" == w and p["weight"]]
        sd = f" ± {row['test_pcc_sd']:.3f}" if row["test_pcc_sd"] is not None else ""
        lines.append(f"| {w} | {row['dev_pcc_mean']:.3f} | {row['test_pcc_mean']:.3f}{sd} | "
                     + ("; ".join(_signed(d) for d in diffs) or "–")
                     + " |")
    lines += ["", f"Chosen by dev PCC: hint weight {data['chosen_by_dev']}."]
    return "\n".join(lines) + "\n"


def release_teachers_block() -> str:
    """The ensemble teacher against DistillMOS and the shipped students on the held-out test clips."""
    f, data = _bench("release_teachers")
    if data is None:
        return _unmeasured("release_teachers")
    lines = [f"From `{f.relative_to(ROOT)}` (`python -m bench.release_teachers`): agreement with the ensemble "
             f"({', '.join(data['ensemble_members'])}; unweighted mean) on the {data['n_test']} held-out test clips, "
             "95 % CIs as above.", "", "| model | PCC | SRCC | RMSE |", "|---|---|---|---|"]
    for name, m in data["models"].items():
        a = m["agreement"]["overall"]
        lines.append(f"| {name} | {_metric_cis(a)} |")
    return "\n".join(lines) + "\n"


def ensemble_students_block() -> str:
    """Students distilled from each release teacher, scored against both."""
    f, data = _bench("ensemble_students")
    if data is None:
        return _unmeasured("ensemble_students")
    lines = [f"From `{f.relative_to(ROOT)}` (`python -m bench.ensemble_students`): the {data['size']} student "
             f"distilled by stage 04's recipe (no hint loss) on the same {data['clips']:,} pool clips from each "
             f"teacher's labels, one run per initialisation seed, PCC on the {data['n_test']} held-out test clips "
             "with each teacher (mean ± SD over seeds; per seed [95 % CI]).", "",
             "| distilled from | PCC with DistillMOS | PCC with the ensemble |", "|---|---|---|"]
    for teacher, row in data["by_teacher"].items():
        cells = []
        for ref in ("vs_distillmos", "vs_ensemble"):
            sd = f" ± {row[ref]['pcc_sd']:.3f}" if row[ref]["pcc_sd"] is not None else ""
            per_seed = "; ".join(_ci(p[ref]["pcc"]) for p in data["points"] if p["teacher"] == teacher)
            cells.append(f"{row[ref]['pcc_mean']:.3f}{sd} ({per_seed})")
        lines.append(f"| {teacher} | " + " | ".join(cells) + " |")
    lines += ["", "Ensemble student minus DistillMOS student, PCC per seed [paired 95 % CI on the same clips]: "
              + "; ".join(f"seed {d['seed']}: with DistillMOS {_signed(d['vs_distillmos'])}, with the ensemble "
                          f"{_signed(d['vs_ensemble'])}"
                          for d in data["ensemble_minus_distillmos_student"]) + "."]
    return "\n".join(lines) + "\n"


def release_pruning_block() -> str:
    """The teacher pruned (stage 05) beside the student distilled to the same size, from notebook
    06's published release tables (test PCC with the teacher; paired difference on the same clips)."""
    import pandas as pd

    folder = RESULTS / "release"
    if not (folder / "comparisons.csv").is_file():
        return results_block("release")
    pcc = pd.read_csv(folder / "results_pcc.csv").set_index("label")
    cmp = pd.read_csv(folder / "comparisons.csv")
    col = "release-heldout"

    def cell(label: str) -> str:
        r = pcc.loc[label]
        return f"{r[col]:.3f} [{r[f'{col}_lo']:.3f}, {r[f'{col}_hi']:.3f}]"

    lines = ["From `docs/results/release/` (notebook 06 of the release runs): test PCC with the teacher on the "
             "held-out test clips, 95 % CIs; the difference is paired (same clips, same resamples).", "",
             "| size | pruned: params | pruned PCC | distilled PCC | pruned minus distilled | verdict |",
             "|---|---|---|---|---|---|"]
    for _, r in cmp.iterrows():
        diff = _signed({"estimate": r["difference"], "lo": r["lo"], "hi": r["hi"]})
        lines.append(f"| {r['size']} | {_count(pcc.loc[r['a'], 'params'])} | {cell(r['a'])} | {cell(r['b'])} "
                     f"| {diff} | {r['verdict']} |")
    return "\n".join(lines) + "\n"


def _signed(d: dict) -> str:
    return f"{d['estimate']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]"


def card_blocks() -> dict[str, str]:
    return {"release-data": release_data_block(), "release-agreement": release_agreement_block(),
            "release-families": release_families_block(), "release-speed": release_speed_block(),
            "release-scaling": release_scaling_block(), "release-hints": release_hints_block(),
            "release-teachers": release_teachers_block(), "ensemble-students": ensemble_students_block(),
            "release-pruning": release_pruning_block()}


def blocks() -> dict[str, str]:
    out = {"models": models_block(), "speed-protocol": f"Speed, everywhere in this README: {SPEED_PROTOCOL}.\n",
           "demo-e2e": demo_e2e_block(), "test-suite": test_suite_block(), "score-memory": score_memory_block(),
           "lazy-memory": lazy_memory_block()}
    out.update({"release-agreement": release_agreement_block(), "release-speed": release_speed_block(False)})
    for profile in PROFILES:
        out[f"results-{profile}"] = results_block(profile)
        out[f"speed-{profile}"] = speed_block(profile)
    return out


def render(text: str, made: dict[str, str] | None = None, doc: str = "README.md") -> str:
    """``text`` (the README, or ``doc`` with ``made``) with every known block replaced by its
    regenerated content."""
    made = blocks() if made is None else made
    missing = [name for name in made if f"<!-- begin: {name} -->" not in text]
    if missing:
        raise ValueError(f"{doc} lacks the marker comments of {missing}")
    return _BLOCK.sub(lambda m: m.group(1) + made.get(m.group("name"), m.group("body")) + m.group(4), text)


def publish(run_dir: Path) -> Path:
    """Copy a 06 run's small tables into ``docs/results/<profile>/`` (to be committed)."""
    profile = json.loads((run_dir / "params.json").read_text())["profile"]
    dest = RESULTS / profile
    dest.mkdir(parents=True, exist_ok=True)
    for name in PUBLISHED:
        if (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, dest / name)
    for fig in run_dir.glob("score_vs_params.png"):
        shutil.copyfile(fig, ROOT / "docs" / f"score_vs_params_{profile}.png")
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.readme_tables", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md differs from the files")
    parser.add_argument("--publish", type=Path, help="a 06_analysis run folder to copy into docs/results/")
    args = parser.parse_args(argv)
    if args.publish:
        print(f"published {publish(args.publish)}")
    stale = 0
    for path, made in ((README, blocks()), (MODEL_CARD, card_blocks())):
        text = path.read_text()
        new = render(text, made, path.name)
        if args.check:
            if new != text:
                print(f"{path.name} tables differ from the committed files: run python -m bench.readme_tables",
                      file=sys.stderr)
                stale = 1
            continue
        path.write_text(new)
        print(f"{path.name} tables regenerated" if new != text else f"{path.name} tables already current")
    return stale


if __name__ == "__main__":
    sys.exit(main())
