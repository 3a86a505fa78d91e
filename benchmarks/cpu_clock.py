"""Run a benchmark script with its wall clock replaced by CPU time.

    .venv/bin/python benchmarks/cpu_clock.py benchmarks/bench_routes.py --routes 10000

``time.perf_counter`` becomes ``time.process_time()`` (this process, all its
threads) plus the CPU time of its waited-for children (``getrusage``), so every
figure a script prints in milliseconds is CPU time instead: on a shared machine
it moves much less than wall time. Used for the issue 7 before/after in
docs/performance.md (scripts that time themselves with ``time.perf_counter``).
"""

from __future__ import annotations

import resource
import runpy
import sys
import time


def cpu_seconds() -> float:
    """CPU seconds of this process (all threads) and of its waited-for children."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(f"usage: {sys.argv[0]} SCRIPT [ARGS...]")
    time.perf_counter = cpu_seconds
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
