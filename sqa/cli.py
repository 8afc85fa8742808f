"""The ``sqa`` command: ``run``, ``reproduce``, ``stages``, ``score``, ``export`` (also ``python -m sqa``).

``score`` and ``export`` work from any install; ``run``, ``reproduce`` and ``stages`` need a checkout
(the notebooks) and the ``notebooks`` extra: a missing one is one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable

from sqa import __version__, export, extras, paths, pretrained, score
from sqa.pipeline import notebooks, progress


def run_stage(stage: str, pairs: list[tuple[str, str]], quiet: bool = False,
              timer: progress.StageTimer | None = None) -> Path | None:
    """Execute one notebook with ``-p`` pairs checked against its parameters cell; the executed
    notebook is kept in the run folder (also when it failed). Returns the run folder.

    Every parameter, the profile included, is checked against its declared type and allowed
    values (:func:`sqa.pipeline.notebooks.validate`) before the first cell runs; a name given
    twice is an error. Unless ``quiet``, the stage's own progress (its text bars and prints)
    streams to the terminal while it runs, between a start line and a line with its wall time."""
    from sqa.pipeline import runs

    papermill = extras.require("papermill", "sqa run")
    stage = notebooks.path(stage).stem
    declared = notebooks.declared(stage)
    notebooks.check_repeats([n for n, _ in pairs])
    notebooks.check_names(stage, [n for n, _ in pairs], declared)
    params = {n: notebooks.parse_cli_value(declared[n], v) for n, v in pairs}
    notebooks.validate(stage, params, declared)
    timer = timer or progress.StageTimer()
    streams = {} if quiet else {"stdout_file": progress.LineStream(sys.stdout),
                                "stderr_file": progress.LineStream(sys.stderr)}
    detail = " ".join(f"{k}={v}" for k, v in pairs)
    with tempfile.TemporaryDirectory(prefix="sqa-run-") as tmp, timer.stage(stage, detail) as info, \
            progress.kernel_environment(sys.stderr):
        record = Path(tmp) / "run_dir.txt"
        executed = Path(tmp) / f"{stage}.ipynb"
        env_before = os.environ.get(runs.RUN_RECORD_ENV)
        os.environ[runs.RUN_RECORD_ENV] = str(record)
        try:
            papermill.execute_notebook(str(notebooks.path(stage)), str(executed), parameters=params,
                                       kernel_name="python3", progress_bar=False,
                                       cwd=str(notebooks.path(stage).parent), **streams)
        finally:
            _restore_env(runs.RUN_RECORD_ENV, env_before)
            run_dir = Path(record.read_text().strip()) if record.is_file() else None
            info["run_dir"] = run_dir
            if run_dir and executed.is_file():
                shutil.copyfile(executed, run_dir / "notebook.ipynb")
    return run_dir


def _run(args: argparse.Namespace) -> int:
    from sqa.training.devices import GPUS_ENV

    before = os.environ.get(GPUS_ENV)
    if args.gpus is not None:  # the notebook's kernel inherits it: training and labeling use N GPUs
        if args.gpus < 1:
            raise notebooks.ParameterError(f"--gpus {args.gpus}: give at least 1")
        os.environ[GPUS_ENV] = str(args.gpus)
    try:
        return _notebooks(lambda: run_stage(args.stage, [tuple(p) for p in args.param or []], args.quiet))
    finally:
        _restore_env(GPUS_ENV, before)


def _reproduce(args: argparse.Namespace) -> int:
    """Every numbered notebook in order for one profile (stages with a sweep run once per set, or
    the quick demo's set under ``--quick``), then the wall time of each stage."""
    from sqa.pipeline import profiles

    timer = progress.StageTimer()

    def every_stage() -> None:
        for stage in notebooks.stages():
            for overrides in profiles.sweep(args.profile, stage, args.quick):
                run_stage(stage, [("profile", args.profile), *overrides.items()], args.quiet, timer)

    try:
        return _notebooks(every_stage)
    finally:
        print(timer.summary(), file=sys.stderr, flush=True)


def _notebooks(run: Callable[[], object]) -> int:
    """``run()``, which executes notebooks; a failing cell is one line on stderr and exit code 1."""
    papermill = extras.require("papermill", "sqa run")
    try:
        run()
    except papermill.PapermillExecutionError as e:
        print(f"sqa: error: notebook failed in cell {e.exec_count}: {e.ename}: {e.evalue}", file=sys.stderr)
        return 1
    return 0


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def _stages(_: argparse.Namespace) -> int:
    for stage in notebooks.stages():
        print(stage)
        for p in notebooks.declared(stage).values():
            print(f"    {p.name}: {p.type.__name__} = {p.default!r}  # {p.help}")
    return 0


def _score(args: argparse.Namespace) -> int:
    to_stdout = args.out is None or str(args.out) == score.STDOUT
    fmt = args.format or score.format_for(args.out)
    try:
        rows, summary = score.score(args.paths, args.model, None if to_stdout else args.out, args.batch,
                                    args.device, args.profile, progress=sys.stderr.isatty(),
                                    stream=sys.stdout if to_stdout else None, fmt=fmt)
    except score.ScoreError as err:
        print(f"sqa score: error: {err}", file=sys.stderr)
        return 2
    except BaseException:
        partial = None if to_stdout else score.atomic.partial_path(args.out)
        if partial is not None and partial.is_file():
            print(f"sqa score: interrupted; the rows scored so far are in {partial}", file=sys.stderr)
        raise
    if to_stdout:
        print(score.report(summary, rows), file=sys.stderr)
    else:
        print(score.report(summary, rows))
        print(f"wrote {args.out}")
    return 0 if summary["n_scored"] else 1


def _export(args: argparse.Namespace) -> int:
    try:
        out = export.export(args.run, args.format, args.out, int8=args.int8, window_s=args.window_s, opset=args.opset)
    except (export.ExportError, extras.MissingExtra) as err:
        print(f"sqa export: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - anything else is reported as one clear line, not a traceback
        print(f"sqa export: error: export of {args.run} failed unexpectedly ({type(err).__name__}: {err}); "
              "nothing was written", file=sys.stderr)
        return 1
    meta = json.loads(export.sidecar_path(out).read_text())
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, {args.format}{' int8' if args.int8 else ''}, "
          f"window {meta['window_s']:g} s, max |diff| vs PyTorch {meta['check_max_abs_diff_vs_torch']:.2g} MOS)")
    print(f"wrote {export.sidecar_path(out)}")
    return 0


def _score_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score", help="score audio files, folders or list files (MOS 1-5)",
        description="Score audio files, folders (recursive .wav/.flac/.ogg) or list files (.txt/.lst, one "
                    "path per line). Writes one row per file (path, mos, duration_s, status, error, warning) "
                    "as CSV or JSON lines. Exit code 0 if at least one file was scored, 1 if none, 2 on a "
                    "usage error.")
    p.add_argument("paths", nargs="+", type=Path, help="audio files, folders or .txt/.lst list files")
    p.add_argument("--model", default=pretrained.DEFAULT,
                   help=f"a shipped student ({', '.join(pretrained.NAMES)}; default {pretrained.DEFAULT}), a "
                        "size like 1M or 250k (latest 04_distill run of --profile), a run folder, a .safetensors "
                        "checkpoint, an exported .onnx, or a baseline (the baselines extra): distillmos, "
                        "dnsmos-p808, dnsmos-p835, mfcc-sqa")
    p.add_argument("--out", type=Path, default=None,
                   help="file to write, rows as they are scored (default or '-': stdout); checked before "
                        "scoring; an interrupted batch keeps its rows in <out stem>.partial<suffix>")
    p.add_argument("--format", choices=score.FORMATS, default=None,
                   help="csv or jsonl (one JSON object per row); default: jsonl when --out ends in .jsonl, "
                        "else csv")
    p.add_argument("--batch", type=int, default=8, help="clips of equal length per forward pass (default 8)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--profile", default="demo", choices=list(paths.PROFILES),
                   help="whose 04_distill runs a size refers to (default demo)")
    p.set_defaults(func=_score)


def _export_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export a student to ONNX or a torch.export program (.pt2) for one fixed window",
        description="Export a student checkpoint's forward_window (fixed window, any batch size) to ONNX "
                    "(the export extra) or a torch.export program (.pt2), with a sidecar JSON. Windowing of "
                    "long clips stays outside the graph (sqa.export.OnnxScorer does it). Exit code 0 on "
                    "success, 2 on bad input.")
    p.add_argument("--run", required=True, type=Path, help="run folder (with model.safetensors) or a .safetensors file")
    p.add_argument("--format", required=True, choices=export.FORMATS)
    p.add_argument("--int8", action="store_true", help="dynamic int8 weights for matrix products (ONNX only)")
    p.add_argument("--out", type=Path, default=None,
                   help="output file (default: next to the checkpoint, e.g. model.onnx, model.int8.onnx)")
    p.add_argument("--window-s", type=float, default=None,
                   help="window length in seconds (default: the checkpoint's own window)")
    p.add_argument("--opset", type=int, default=export.OPSET, help=f"ONNX opset (default {export.OPSET})")
    p.set_defaults(func=_export)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sqa", description=__doc__)
    parser.add_argument("--version", action="version", version=f"sqa {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute a numbered notebook with checked parameters")
    run.add_argument("stage", help="notebook name or number, e.g. 04_distill or 04")
    run.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                     help="a parameter of the notebook's parameters cell (repeatable)")
    run.add_argument("-q", "--quiet", action="store_true", help="do not stream the stage's progress and output")
    run.add_argument("--gpus", type=int, default=None, metavar="N",
                     help="GPUs for a stage on device auto/cuda: training in N data-parallel processes, "
                          "pseudo-labeling in one process per GPU (default 1)")
    run.set_defaults(func=_run)
    rep = sub.add_parser("reproduce", help="run every notebook in order for a profile")
    rep.add_argument("--profile", default="demo", choices=list(paths.PROFILES))
    rep.add_argument("--quick", action="store_true",
                     help="the quick demo (make demo): each stage once, 04 also labeled-only, fast "
                          "baselines; without it, the profile's sweeps of sizes, modes and seeds")
    rep.add_argument("-q", "--quiet", action="store_true", help="do not stream the stage's progress and output")
    rep.set_defaults(func=_reproduce)
    stages = sub.add_parser("stages", help="list the notebooks and their parameters")
    stages.set_defaults(func=_stages)
    _score_parser(sub)
    _export_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (notebooks.ParameterError, extras.MissingExtra, paths.NoCheckoutError) as e:
        print(f"sqa: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
