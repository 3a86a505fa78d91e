"""A cold nftables observe beside iptables-nft's compat targets (OpenStack Neutron's ``-j CT``).

Run as root from the repository root::

    .venv/bin/python benchmarks/bench_xt_targets.py [--rules 2000] [--runs 7] [--target T] \\
        [--accepts N]

One fresh namespace (``bench-xt-PID``, deleted at the end, also on error) holds ``--rules``
rules in iptables-nft's ``raw PREROUTING``, each ``-s 10.X.Y.0/24`` and ``--target``
(``{n}``: the rule's number from 1), then ``--accepts`` ``-j ACCEPT`` rules. Each run is a
fresh process timing ``NftablesBackend(ns, keep_read=False).observe()`` (imports not timed): CPU
(``time.process_time``) and wall time, min and median of ``--runs``. Compare
``--target '-j ACCEPT'`` (a target libnftables lists whole) for what reading the
targets' data adds (docs/performance.md, "iptables-nft's compat targets").
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

_OBSERVE = """
import time
from k3snet.backends.nftables import NftablesBackend
backend = NftablesBackend({ns!r}, keep_read=False)
cpu, wall = time.process_time(), time.perf_counter()
backend.observe()
print(time.process_time() - cpu, time.perf_counter() - wall)
backend.close()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rules", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--target", default="-j CT --zone {n}")
    parser.add_argument("--name", default="bench-xt", help="the namespace's name, before -PID")
    parser.add_argument("--accepts", type=int, default=0,
                        help="this many -j ACCEPT rules (of other sources) after them")
    args = parser.parse_args()
    ns = f"{args.name}-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        lines = ["*raw", *(f"-A PREROUTING -s 10.{100 + n // 250}.{n % 250}.0/24 "
                           + args.target.format(n=n + 1) for n in range(args.rules)),
                 *(f"-A PREROUTING -s 10.{200 + n // 250}.{n % 250}.0/24 -j ACCEPT"
                   for n in range(args.accepts)),
                 "COMMIT", ""]
        subprocess.run(["ip", "netns", "exec", ns, "iptables-nft-restore", "-w"],
                       input="\n".join(lines), text=True, check=True)
        cpu, wall = [], []
        for _ in range(args.runs):
            out = subprocess.run([sys.executable, "-c", _OBSERVE.format(ns=ns)],
                                 capture_output=True, text=True, check=True).stdout.split()
            cpu.append(float(out[0]) * 1000)
            wall.append(float(out[1]) * 1000)
        print(f"{args.rules} rules '{args.target}', {args.accepts} accepts: CPU min "
              f"{min(cpu):.1f} median "
              f"{statistics.median(cpu):.1f} ms; wall median {statistics.median(wall):.1f} ms")
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=False)


if __name__ == "__main__":
    main()
