"""Run every benchmark, one after the other, then print the goals table: ``make bench``.

``make bench QUICK=1`` (``run.py --quick``) runs the CI-size subset: 1k objects
instead of 10k, fewer runs, and only the benchmarks that carry a goal.

Kernel benchmarks (routes, nftables, iptables, the paths) need root and build
their own network namespaces, which they delete at the end; they never touch
the root namespace. Each benchmark records its goal figures (``goals.record``)
in a results file; the table at the end lists them all and marks with ✗ each
one above its goal (issue 9's goals; docs/performance.md says what misses and why).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from goals import RESULTS_ENV, read_results, summary

HERE = Path(__file__).resolve().parent
# (script, arguments in full mode, arguments in quick mode; None: not in quick mode)
ORDER: list[tuple[str, list[str], list[str] | None]] = [
    ("bench_cli.py", [], ["--quick"]),
    ("bench_spec.py", [], ["--quick"]),
    ("bench_render.py", [], None),
    ("bench_memory.py", [], ["--quick"]),
    ("bench_planner.py", [], None),
    ("bench_paths.py", [], ["--quick"]),
    ("agent_memory.py", ["--kernel", "2000", "10000"], ["2000"]),
    ("bench_routes.py", [], None),
    ("bench_nftables.py", [], None),
    ("bench_iptables.py", [], None),
    ("bench_legacy_token.py", [], None),
    ("bench_chain_dump.py", [], None),
    ("bench_read_shapes.py", [], None),
    ("bench_two_flavours.py", [], None),
    ("bench_foreign_accepts.py", ["--sizes", "1000", "2000", "5000"], None),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the CI-size subset")
    args = parser.parse_args()
    failed = []
    with tempfile.TemporaryDirectory(prefix="k3snet-bench-") as tmp:
        results = Path(tmp) / "results.jsonl"
        env = {**os.environ, RESULTS_ENV: str(results)}
        # k3snet's state (spec cache, the nftables kept read) in the run's own directory,
        # not under /run/k3snet: each benchmark that needs its own sets another.
        env.setdefault("K3SNET_STATE_DIR", str(Path(tmp) / "state"))
        for name, full, quick in ORDER:
            extra = quick if args.quick else full
            script = HERE / name
            if extra is None or not script.exists():
                continue
            print(f"\n===== {name} {' '.join(extra)}", flush=True)
            done = subprocess.run([sys.executable, str(script), *extra], check=False, env=env)
            if done.returncode != 0:
                failed.append(name)
        print("\n===== goals (issue 9)\n")
        print(summary(read_results(results)))
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
