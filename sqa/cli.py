"""The ``sqa`` command: ``run``, ``reproduce``, ``stages``, ``score``, ``export``."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from . import export, notebooks, runs, score


def run_stage(stage: str, pairs: list[tuple[str, str]], quiet: bool = False) -> Path | None:
    """Execute one notebook with ``-p`` pairs checked against its parameters cell; the executed
    notebook is kept in the run folder (also when it failed). Returns the run folder."""
    import papermill

    stage = notebooks.path(stage).stem
    declared = notebooks.declared(stage)
    notebooks.check_names(stage, [n for n, _ in pairs], declared)
    params = {n: notebooks.parse_cli_value(declared[n], v) for n, v in pairs}
    with tempfile.TemporaryDirectory(prefix="sqa-run-") as tmp:
        record = Path(tmp) / "run_dir.txt"
        executed = Path(tmp) / f"{stage}.ipynb"
        env_before = os.environ.get(runs.RUN_RECORD_ENV)
        os.environ[runs.RUN_RECORD_ENV] = str(record)
        try:
            papermill.execute_notebook(str(notebooks.path(stage)), str(executed), parameters=params,
                                       kernel_name="python3", progress_bar=not quiet,
                                       cwd=str(notebooks.path(stage).parent))
        finally:
            _restore_env(runs.RUN_RECORD_ENV, env_before)
            run_dir = Path(record.read_text().strip()) if record.is_file() else None
            if run_dir and executed.is_file():
                shutil.copyfile(executed, run_dir / "notebook.ipynb")
                print(f"executed notebook: {run_dir / 'notebook.ipynb'}")
    return run_dir


def _run(args: argparse.Namespace) -> int:
    run_stage(args.stage, [tuple(p) for p in args.param or []], args.quiet)
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    """Every numbered notebook in order for one profile (stages with a sweep run once per set,
    or once with their defaults under ``--once``)."""
    from . import profiles

    for stage in notebooks.stages():
        for overrides in [{}] if args.once else profiles.sweep(args.profile, stage):
            pairs = [("profile", args.profile), *overrides.items()]
            print(f"== {stage} " + " ".join(f"{k}={v}" for k, v in pairs), flush=True)
            run_stage(stage, pairs, args.quiet)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sqa", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute a numbered notebook with checked parameters")
    run.add_argument("stage", help="notebook name or number, e.g. 04_distill or 04")
    run.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                     help="a parameter of the notebook's parameters cell (repeatable)")
    run.add_argument("-q", "--quiet", action="store_true", help="no cell progress bar")
    run.set_defaults(func=_run)
    rep = sub.add_parser("reproduce", help="run every notebook in order for a profile")
    rep.add_argument("--profile", default="demo", choices=["smoke", "demo", "paper"])
    rep.add_argument("--once", action="store_true",
                     help="each stage once with its defaults, without the profile's sweeps of sizes and modes")
    rep.add_argument("-q", "--quiet", action="store_true", help="no cell progress bar")
    rep.set_defaults(func=_reproduce)
    stages = sub.add_parser("stages", help="list the notebooks and their parameters")
    stages.set_defaults(func=_stages)
    score.add_parser(sub)
    export.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from papermill.exceptions import PapermillExecutionError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except notebooks.ParameterError as e:
        print(f"sqa: error: {e}", file=sys.stderr)
        return 2
    except PapermillExecutionError as e:
        print(f"sqa: error: notebook failed in cell {e.exec_count}: {e.ename}: {e.evalue}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
