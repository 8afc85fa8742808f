"""The test suite timed as ``make test`` runs it, the environment already created.

Runs the README's test command (``pytest -q -n auto --dist loadscope``: one worker per core, the
notebook chain included) and writes ``bench/results/test_suite.json``: wall seconds, the outcome
counts from pytest's closing line, and the machine's load before the run. Protocol: an otherwise
idle machine, as for every timing in the README.

    python -m bench.test_suite
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

from bench.common import machine, results_dir

COMMAND = [sys.executable, "-m", "pytest", "-q", "-n", "auto", "--dist", "loadscope", "-p", "no:cacheprovider"]
LIMIT_S = 5 * 60


def outcome_counts(closing_line: str) -> dict[str, int]:
    """``'3 failed, 420 passed, 1 skipped in 300.1s'`` -> ``{'failed': 3, 'passed': 420, 'skipped': 1}``."""
    return {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)",
                                                   closing_line)}


def main(argv: list[str] | None = None) -> int:
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    res = subprocess.run(COMMAND, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    closing = [line for line in res.stdout.splitlines() if re.search(r"\d+ (passed|failed)", line)][-1:]
    result = {"command": "make test (" + " ".join(["pytest", *COMMAND[3:]]) + ")", "machine": machine(),
              "load_avg_1min_before": load_before, "wall_s": round(wall, 1), "limit_s": LIMIT_S,
              "within_limit": wall <= LIMIT_S, "exit_code": res.returncode,
              "outcome": outcome_counts(closing[0]) if closing else {},
              "not_passed": [line for line in res.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]}
    path = results_dir() / "test_suite.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['outcome']} in {wall:.0f} s; wrote {path}")
    return res.returncode


if __name__ == "__main__":
    sys.exit(main())
