"""MemoryBackend at scale: an apply of N adds from nothing, per change, N = 2k and 8k.

Run: ``.venv/bin/python benchmarks/bench_memory.py [--quick]``

The in-memory backend is what tests and ``--backend memory`` use; its apply
must stay linear (it was quadratic: 8k changes took 31 s). Goal: the cost per
change grows by at most 1.5x from 2k to 8k (quadratic shows 4x; putting the
state in order, n log n, about 1.2x).
"""

from __future__ import annotations

import argparse
import sys

from goals import Figure, measure, record

from k3snet.backends.memory import MemoryBackend
from k3snet.model import MasqueradeRule, State
from k3snet.planner import plan


def wanted(count: int) -> State:
    return State(owned=[MasqueradeRule(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}/32",
                                       destination="192.168.0.0/16") for i in range(count)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 runs")
    args = parser.parse_args()
    runs = 3 if args.quick else 5
    per_change = []
    for count in (2000, 8000):
        p = plan(State(), wanted(count))
        # Best of the runs: pure Python work, which a busy machine only ever slows down.
        best = min(measure(lambda p=p: MemoryBackend().apply(p), 1).cpu for _ in range(runs))
        per_change.append(best / count * 1e6)
        record(Figure("MemoryBackend apply per change (CPU)", "memory", per_change[-1], "us",
                      None, detail=f"{count} adds, {best * 1000:.1f} ms, best of {runs}"))
    record(Figure("MemoryBackend growth per change", "memory", per_change[1] / per_change[0],
                  "x", 1.5, detail="2k -> 8k adds"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
