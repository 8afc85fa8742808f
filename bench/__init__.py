"""Benchmarks (not timed tests): each module's ``main`` writes JSON under ``bench/results/``.

Idle OpenMP threads spin by default, which on a shared 2-core machine makes 2 threads many times
slower than 1; every benchmark therefore runs with passive waiting unless told otherwise.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
