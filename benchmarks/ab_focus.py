"""Focused A/B of two installs on one operation, CPU time, old and new in turn.

Run as root; each side runs this file with its own interpreter, so it imports that
install's k3snet (nothing is added to ``sys.path``) and uses only what both
``d5962fa`` (the commit before issue 7) and later trees have::

    .venv/bin/python benchmarks/ab_focus.py --old /tmp/old-d5962fa/.venv/bin/python \\
        [--turns 6] routes|iptables

Cases (docs/performance.md, "Issue 7 before/after"):

* ``routes``: in a fresh namespace, 10 000 routes through the netlink backend
  (socket driver): ``add``, the apply of a ready plan; ``delete``, the apply of
  the plan removing them; ``e2e``, a fresh backend's observe + plan + apply of
  the 10 000 adds. Three rounds per process, each a sample.
* ``iptables``: a cold process (nothing rendered in it) builds an iptables-nft
  backend and observes 10 000 k3snet masquerade rules that the same install
  wrote beforehand into a namespace of its own: one sample per process.

For instruction counts, one side runs alone under callgrind, in a namespace made
beforehand (``ip netns add NS``; for ``iptables-open`` filled by ``--side
iptables-setup NS``), once with ``observe`` and once without::

    PYTHONHASHSEED=0 valgrind --tool=callgrind PYTHON benchmarks/ab_focus.py \\
        --side iptables-apply|iptables-open NS [observe]

CPU time is the process's (all threads) plus its waited-for children
(``iptables-nft-save``), each operation timed after a full collection (so that
it pays for the collections its own allocations start, not for an earlier
operation's garbage). Every namespace is deleted at the end, also on error;
the root namespace is never touched.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import ipaddress
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from k3snet.backends.iptables import IptablesBackend
from k3snet.backends.netlink import NetlinkBackend
from k3snet.model import MasqueradeRule, Route, State
from k3snet.planner import plan

try:  # the lab helpers moved there with issue 7
    from k3snet.lab.netns import create_netns, delete_netns, unique_name
except ImportError:  # d5962fa
    from k3snet.testing.netns import create_netns, delete_netns, unique_name

RULES = 10_000
# Whether this install's iptables backend keeps a record of the built-in chains it made
# (under its state_dir); asked once, not within a timed observe.
_KEEPS_RECORD = "state_dir" in inspect.signature(IptablesBackend).parameters


def cpu_ms() -> float:
    """CPU milliseconds of this process (all threads) and of its waited-for children."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (time.process_time() + children.ru_utime + children.ru_stime) * 1000.0


def start_clock() -> float:
    """:func:`cpu_ms` after a full collection (not timed): an operation pays for the
    collections its own allocations start, not for garbage an earlier one left."""
    gc.collect()
    return cpu_ms()


def ip(ns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True)


def routes_side(rounds: int) -> None:
    """One process of the ``routes`` case: a JSON line of CPU ms per round."""
    base = int(ipaddress.IPv4Address("11.0.0.0"))
    desired = State(owned=[Route(ipaddress.IPv4Network((base + (i << 8), 24)),
                                 gateway="10.0.0.2", device="d0", table=100)
                           for i in range(RULES)])
    ns = create_netns(unique_name("ab"))
    try:
        ip(ns, "link", "add", "d0", "type", "veth", "peer", "name", "d0p")
        ip(ns, "link", "set", "d0p", "up")
        ip(ns, "link", "set", "d0", "up")
        ip(ns, "addr", "add", "10.0.0.1/16", "dev", "d0")
        with tempfile.TemporaryDirectory() as tmp:
            state_dir = Path(tmp) / "state"
            for _ in range(rounds):
                sample: dict[str, float] = {}
                with NetlinkBackend(ns, state_dir=state_dir, driver="socket") as backend:
                    ready = plan(backend.observe(), desired)
                    start = start_clock()
                    backend.apply(ready)
                    sample["add"] = cpu_ms() - start
                    removal = plan(backend.observe(), State())
                    start = start_clock()
                    backend.apply(removal)
                    sample["delete"] = cpu_ms() - start
                start = start_clock()
                with NetlinkBackend(ns, state_dir=state_dir, driver="socket") as backend:
                    backend.apply(plan(backend.observe(), desired))
                sample["e2e"] = cpu_ms() - start
                ip(ns, "route", "flush", "table", "100")
                print(json.dumps(sample), flush=True)
    finally:
        delete_netns(ns)


def _masquerade_rules() -> list[MasqueradeRule]:
    return [MasqueradeRule(f"10.{i // 256}.{i % 256}.0/24", destination="192.168.2.0/24")
            for i in range(RULES)]


def _iptables(ns: str, state: str) -> IptablesBackend:
    """This install's iptables-nft backend on ``ns``; its record of the built-in chains
    it made (an install that keeps one) goes under ``state``, not /run/k3snet."""
    options = {"state_dir": state} if _KEEPS_RECORD else {}
    return IptablesBackend(ns, mode="nft", driver="restore", **options)  # type: ignore[arg-type]


def iptables_setup(ns: str) -> None:
    """Write the 10 000 rules into ``ns`` with this install."""
    with tempfile.TemporaryDirectory() as state, _iptables(ns, state) as backend:
        backend.apply(plan(backend.observe(), State(owned=_masquerade_rules())))


def iptables_observe(ns: str) -> None:
    """One cold observe of ``ns``: a JSON line of CPU ms."""
    with tempfile.TemporaryDirectory() as state:
        start = start_clock()
        with _iptables(ns, state) as backend:
            owned = len(backend.observe().owned)
    spent = cpu_ms() - start
    if owned != RULES:
        sys.exit(f"observed {owned} owned objects, not {RULES}")
    print(json.dumps({"observe": spent}), flush=True)


def iptables_counted(ns: str, what: str, then: str | None) -> None:
    """An operation for an instruction count (``valgrind --tool=callgrind``), run twice:
    with ``then`` = ``observe`` and without; the difference is the observe's count.

    ``apply``: the 10 000 rules applied into the empty ``ns``, then the observe in the
    same process (the bench_iptables row "observe 10k (cold, 10k rules)"); ``open``: a
    cold process's backend on ``ns`` holding them, then its observe.
    """
    with tempfile.TemporaryDirectory() as state, _iptables(ns, state) as backend:
        if what == "apply":
            backend.apply(plan(backend.observe(), State(owned=_masquerade_rules())))
        if then == "observe" and len(backend.observe().owned) != RULES:
            sys.exit(f"observed another number of owned objects than {RULES}")


def run_side(python: str, *args: str) -> list[dict[str, float]]:
    env = dict(os.environ, K3SNET_SKIP_NETNS_CHECK="1")
    out = subprocess.run([python, __file__, *args], check=True, env=env,
                         capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def ab(case: str, sides: dict[str, str], turns: int) -> None:
    """Alternate the two installs ``turns`` times; print each figure's median and range."""
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
    namespaces: dict[str, str] = {}
    try:
        if case == "iptables":
            for name, python in sides.items():
                namespaces[name] = create_netns(unique_name("ab"))
                run_side(python, "--side", "iptables-setup", namespaces[name])
        for _ in range(turns):
            for name, python in sides.items():
                if case == "routes":
                    samples[name] += run_side(python, "--side", "routes")
                else:
                    samples[name] += run_side(python, "--side", "iptables-observe",
                                              namespaces[name])
    finally:
        for ns in namespaces.values():
            delete_netns(ns)
    for name, rows in samples.items():
        for figure in rows[0]:
            values = sorted(row[figure] for row in rows)
            print(f"{case} {figure:<8} {name:<4} median {statistics.median(values):7.1f} ms CPU "
                  f"(min {values[0]:.1f}, max {values[-1]:.1f}, n={len(values)})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("case", nargs="?", choices=["routes", "iptables"])
    parser.add_argument("--old", help="the other install's python (the 'old' side)")
    parser.add_argument("--new", default=sys.executable, help="this side's python")
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--side", nargs="+", help=argparse.SUPPRESS)  # one side's process
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    if args.side:
        what, *rest = args.side
        if what == "routes":
            routes_side(rounds=3)
        elif what == "iptables-setup":
            iptables_setup(rest[0])
        elif what in ("iptables-apply", "iptables-open"):
            iptables_counted(rest[0], what.removeprefix("iptables-"), rest[1] if rest[1:] else None)
        else:
            iptables_observe(rest[0])
        return 0
    if args.case is None or args.old is None:
        parser.error("give the case and --old")
    ab(args.case, {"old": args.old, "new": args.new}, args.turns)
    return 0


if __name__ == "__main__":
    sys.exit(main())
