"""A/B of the cold path: two k3snet installs' one-change `k3snet apply`, interleaved.

Run as root (one fresh network namespace, deleted at the end)::

    .venv/bin/python benchmarks/bench_cold.py --before /work/main/.venv/bin/k3snet \\
        [--after .venv/bin/k3snet] [--runs 3] [--backends routes nftables] \\
        [--figures one-change no-op full-apply]

For each backend of ``bench_paths.py``, with 10 000 owned objects: each
version in turn adds one destination, then takes it away again (a fresh
process each time, as a cron job runs it; the spec cache filled by earlier
runs, as a second run finds it); with ``--figures``, also a no-op apply of the spec
held (``no-op``) and an apply from nothing after the raw tool removed every owned
object (``full-apply``: a new jump placed, as a node's first apply). Prints the
median wall and CPU time
(``getrusage`` of the children) of each version. Both versions share one
namespace and one state directory and run under the same load, which makes
the two comparable on a busy machine where separate runs are not.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import bench_paths as paths

FIGURES = {"one-change": "one change, cold CLI", "no-op": "no-op, cold CLI",
           "full-apply": "full apply, CLI"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the other k3snet executable")
    parser.add_argument("--after", default=str(Path(sys.executable).parent / "k3snet"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--backends", nargs="+", choices=list(paths.BACKENDS),
                        default=["routes", "nftables"])
    parser.add_argument("--figures", nargs="+", choices=list(FIGURES), default=["one-change"])
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    versions = {"before": args.before, "after": args.after}
    for name in args.backends:
        with paths.node(name) as n:
            base, plus = n.spec(args.count), n.spec(args.count, 1)

            def apply(exe: str, spec: Path, n: paths.Node = n) -> tuple[float, float]:
                ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                start = time.perf_counter()
                subprocess.run([exe, "apply", "-f", str(spec), "--auto-approve",
                                "--allow-teardown", "--netns", n.ns, *n.args],
                               check=True, env=n.env, stdout=subprocess.DEVNULL)
                wall = time.perf_counter() - start
                ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                return wall, ru1.ru_utime - ru0.ru_utime + ru1.ru_stime - ru0.ru_stime

            for spec in (base, plus, base):  # fill the caches, as earlier runs would
                apply(args.after, spec)
            results: dict[tuple[str, str], list[tuple[float, float]]] = {
                (figure, key): [] for figure in args.figures for key in versions}
            for _ in range(args.runs):
                for key, exe in versions.items():
                    if "one-change" in args.figures:
                        for spec in (plus, base):
                            paths.settle()
                            results["one-change", key].append(apply(exe, spec))
                    if "no-op" in args.figures:
                        paths.settle()
                        results["no-op", key].append(apply(exe, base))
                    if "full-apply" in args.figures:
                        n.raw_clear()
                        results["full-apply", key].append(apply(exe, base))
            for (figure, key), samples in results.items():
                wall = statistics.median(w for w, _ in samples) * 1000
                cpu = statistics.median(c for _, c in samples) * 1000
                print(f"{name:16} {key:6}: {FIGURES[figure]}: wall {wall:7.0f} ms  "
                      f"CPU {cpu:7.0f} ms  ({len(samples)} runs)", flush=True)
            n.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
