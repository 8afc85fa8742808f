"""Run the benchmarks (what ``make bench`` runs), then print the results as Markdown tables.

Every module of ``bench/`` with a ``main`` function is a benchmark, except the helpers
(``common``, ``table``). Each runs in its own Python process with default arguments, so that
thread pools, memory and environment settings made before torch loads start fresh for each.
Slow ones (minutes to hours, some reading the runs ``make demo`` or ``sqa reproduce --profile
release`` made: ``SLOW``) run only with ``--all``.

    python -m bench [--all] [--only NAME ...] [--list]
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
HELPERS = ("__init__", "__main__", "common", "table")
SLOW = ("demo_corpus", "distill", "pruned_vs_distilled", "demo_e2e", "test_suite", "gpu", "lazy_memory",
        "score_memory", "release_models", "release_scaling", "release_teachers", "hints",
        "ensemble_students")


def benchmarks() -> list[str]:
    """Names of the modules in bench/ that define a top-level ``main`` (read, not imported)."""
    names = []
    for path in sorted(HERE.glob("*.py")):
        if path.stem in HELPERS:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        if any(isinstance(node, ast.FunctionDef) and node.name == "main" for node in tree.body):
            names.append(path.stem)
    return names


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--all", action="store_true", help=f"also the slow ones ({', '.join(SLOW)})")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run just these benchmarks")
    ap.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = ap.parse_args(argv)
    found = benchmarks()
    if args.list:
        print("\n".join(f"{n}{' (slow: --all)' if n in SLOW else ''}" for n in found))
        return 0
    if args.only:
        unknown = sorted(set(args.only) - set(found))
        if unknown:
            ap.error(f"unknown benchmark(s) {unknown}; found: {', '.join(found)}")
        chosen = [n for n in found if n in args.only]
    else:
        chosen = [n for n in found if args.all or n not in SLOW]
    failed = []
    for name in chosen:
        print(f"== bench.{name}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable, "-m", f"bench.{name}"], cwd=HERE.parent)
        print(f"== bench.{name}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} in {time.perf_counter() - t0:.0f} s",
              flush=True)
        if rc:
            failed.append(name)
    skipped = [n for n in found if n not in chosen]
    if skipped:
        print(f"not run: {', '.join(skipped)}" + (" (slow: python -m bench --all)" if not args.only else ""))
    from . import table

    table.main([])
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
