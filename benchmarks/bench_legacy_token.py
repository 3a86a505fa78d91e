"""iptables-legacy's change token against one ``iptables-legacy-save``, in a fresh namespace.

Run as root from the repository root::

    .venv/bin/python benchmarks/bench_legacy_token.py [--sizes 1000 10000] [--runs 9]

For N k3snet masquerade rules (applied through the iptables backend, legacy,
into the nat table of a fresh namespace), side by side, medians of ``--runs``:

* the token (:meth:`IptablesBackend.change_token`: the filter and nat tables of
  both families read with ``getsockopt``, counters zeroed, hashed), against one
  ``iptables-legacy-save`` (what ``observe`` runs per family, and the raw read of
  ``bench_paths.py``), wall and CPU time (self and children);
* its parts, in CPU time of the thread reading: the kernel's copy of the nat
  table (``IPT_SO_GET_ENTRIES``), zeroing the counters entry by entry (the
  obvious loop) and as :func:`~k3snet.backends.iptables.xtables.zero_counters`
  does (runs of one size, strided slices), and the SHA-256.

The namespace is deleted at the end, also on error; the root namespace is never
touched.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from goals import measure

from k3snet.backends.iptables import IptablesBackend
from k3snet.backends.iptables.xtables import ENTRIES_AT, LAYOUTS, fetch_table, zero_counters
from k3snet.backends.netns import NetnsRunner
from k3snet.lab.netns import exit_on_signals, run_in, temporary_netns
from k3snet.model import MasqueradeRule, State
from k3snet.planner import plan


def desired(count: int) -> State:
    return State(owned=[MasqueradeRule(f"10.{i // 256}.{i % 256}.0/24",
                                       destination="192.168.2.0/24") for i in range(count)])


def one_by_one(blob: bytearray) -> None:
    """The obvious zeroing: one entry after the other."""
    layout = LAYOUTS[0]
    offset, unpack = ENTRIES_AT, struct.Struct("=H").unpack_from
    while offset < len(blob):
        blob[offset + layout.counters:offset + layout.counters + 16] = bytes(16)
        offset += unpack(blob, offset + layout.next_offset)[0]


def parts(runs: int) -> dict[str, float]:
    """Medians, in ms of this thread's CPU time (run in the namespace)."""
    times: dict[str, list[float]] = {}

    def timed(name: str, start: float) -> None:
        times.setdefault(name, []).append(time.thread_time() - start)

    layout = LAYOUTS[0]
    with socket.socket(layout.af, socket.SOCK_RAW, socket.IPPROTO_RAW) as sock:
        for _ in range(runs):
            start = time.thread_time()
            _, blob = fetch_table(sock, layout, "nat")
            timed("kernel copy (GET_INFO + GET_ENTRIES, nat)", start)
            copy = bytearray(blob)
            start = time.thread_time()
            one_by_one(copy)
            timed("zeroing, entry by entry", start)
            start = time.thread_time()
            zero_counters(blob, ENTRIES_AT, len(blob), layout)
            timed("zeroing, zero_counters", start)
            start = time.thread_time()
            hashlib.sha256(blob).digest()
            timed("sha256", start)
    return {name: 1000 * statistics.median(values) for name, values in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    for size in args.sizes:
        with temporary_netns("bench") as ns, tempfile.TemporaryDirectory() as state, \
                IptablesBackend(ns, mode="legacy", state_dir=state) as backend:
            backend.apply(plan(backend.observe(), desired(size)))
            backend.change_token()  # its thread started, as the agent's is
            token = measure(backend.change_token, args.runs)
            save = measure(lambda: run_in(ns, ["iptables-legacy-save"], timeout=300), args.runs)
            with NetnsRunner(ns) as runner:
                split = runner.call(lambda: parts(args.runs))
        print(f"-- {size} rules, medians of {args.runs}")
        for name, sample in (("token", token), ("iptables-legacy-save", save)):
            print(f"  {name:22s} {1000 * sample.wall:8.1f} ms wall {1000 * sample.cpu:8.1f} ms CPU")
        print(f"  {'ratio':22s} {token.wall / save.wall:8.2f}x wall "
              f"{token.cpu / save.cpu:8.2f}x CPU")
        for name, value in split.items():
            print(f"  {name:44s} {value:6.2f} ms CPU")
    return 0


if __name__ == "__main__":
    exit_on_signals()  # a timeout or a closed terminal still deletes the namespaces
    sys.exit(main())
