"""An iptables apply that changes every table: restore runs, time, CPU and the commit window.

Run as root from the repository root::

    .venv/bin/python benchmarks/bench_iptables_tables.py [--rules 1 1000] [--repeat 11]

For each iptables flavour (nft, legacy), in a fresh namespace holding ``N``
forward accepts and ``N`` masquerade rules per family, plans that change one
rule in each of the four tables (filter and nat, IPv4 and IPv6) are applied
back and forth through the restore driver:

* the restore processes an apply starts (counted at the driver seam), its wall
  time and its CPU time (``resource.getrusage``, self and children), medians
  over ``--repeat`` applies;
* with ``--full N``: a full apply of ``N`` rules per table and family into
  empty chains (then removed again), wall and CPU time;
* the window between the commits of one family's tables: the same applies with
  every restore process run under ``strace -f --seccomp-bpf -tt`` (wall-clock
  microseconds; only the traced calls stop the process), from
  the first table's commit syscall to the last one's (nft: the ``sendmsg`` of
  the batch; legacy: ``setsockopt(IPT_SO_SET_REPLACE)``). strace slows the
  process down: the figure is an upper bound.

Works against any version of the backend that runs its tools through
``Processes.argv`` (so a checkout before the one-run-per-family change can be
measured the same way). Namespaces are deleted at the end, also on failure;
nothing is done in the root namespace.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from k3snet.backends.iptables import IptablesBackend
from k3snet.backends.iptables.driver import Processes
from k3snet.lab.netns import exit_on_signals, temporary_netns
from k3snet.model import ForwardRule, MasqueradeRule, NetObject, State
from k3snet.planner import plan

_COMMIT = {"nft": "sendmsg(", "legacy": "_SO_SET_REPLACE"}


class Traced(Processes):
    """The real tools; restore runs counted, and run under strace when ``trace_dir`` is set."""

    def __init__(self, netns: str) -> None:
        super().__init__(netns)
        self.restores = 0
        self.trace_dir: str | None = None

    def argv(self, argv: Sequence[str]) -> list[str]:
        argv = list(argv)
        if argv and argv[0].endswith("-restore") and "--test" not in argv:
            self.restores += 1
            if self.trace_dir is not None:
                out = os.path.join(self.trace_dir, f"run{self.restores:04d}-{argv[0]}")
                # --seccomp-bpf: only the traced calls stop the process (it needs -f).
                argv = ["strace", "-f", "--seccomp-bpf", "-tt", "-e", "trace=sendmsg,setsockopt",
                        "-o", out, *argv]
        return super().argv(argv)


def state(count: int, variant: int) -> State:
    """``count`` forward accepts and masquerades per family; ``variant`` moves one of each."""
    objects: list[NetObject] = []
    for i in range(count):
        last = i == count - 1
        net4 = f"10.{i // 256}.{i % 256}.0/24" if not (last and variant) else "10.250.0.0/24"
        net6 = f"fd42:{i:x}::/64" if not (last and variant) else "fd42:ffff::/64"
        objects += [ForwardRule(net4, "192.168.2.0/24"),
                    MasqueradeRule(net4, destination="192.168.2.0/24"),
                    ForwardRule(net6, "fd01:2::/64"),
                    MasqueradeRule(net6, destination="fd01:2::/64")]
    return State(owned=objects)


def _stamp(line: str) -> float:
    clock = datetime.datetime.strptime(line.split()[1], "%H:%M:%S.%f")  # after the pid
    return clock.hour * 3600 + clock.minute * 60 + clock.second + clock.microsecond / 1e6


def windows(trace_dir: str, mode: str) -> list[float]:
    """Per family: seconds from the first commit syscall to the last."""
    found: dict[str, list[float]] = {}
    for path in sorted(glob.glob(os.path.join(trace_dir, "run*"))):
        family = "6" if "ip6tables" in path else "4"
        with open(path) as handle:
            found.setdefault(family, []).extend(
                _stamp(line) for line in handle
                if _COMMIT[mode] in line and not line.rsplit("= ", 1)[-1].startswith("-"))
    return [max(stamps) - min(stamps) for stamps in found.values() if len(stamps) > 1]


def bench(mode: str, count: int, repeat: int) -> dict[str, float]:
    with temporary_netns("benchtab") as ns, tempfile.TemporaryDirectory() as records:
        backend = IptablesBackend(ns, mode=mode, state_dir=records)  # type: ignore[arg-type]
        seam = Traced(ns)
        backend._kernel = seam  # the real seam, counted
        with backend:
            backend.apply(plan(backend.observe(), state(count, 0)))
            walls, cpus, runs, gaps = [], [], [], []
            for attempt in range(2 * repeat):
                traced = attempt >= repeat
                wanted = state(count, (attempt + 1) % 2)
                p = plan(backend.observe(), wanted)
                assert {(c.subject.family, c.kind) for c in p.changes} == {
                    (4, "nat"), (4, "forward"), (6, "nat"), (6, "forward")}, p.render()
                seam.restores = 0
                with tempfile.TemporaryDirectory(prefix="iptone-trace-") as trace_dir:
                    seam.trace_dir = trace_dir if traced else None
                    before_self = resource.getrusage(resource.RUSAGE_SELF)
                    before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
                    start = time.perf_counter()
                    backend.apply(p)
                    wall = time.perf_counter() - start
                    after_self = resource.getrusage(resource.RUSAGE_SELF)
                    after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
                    if traced:
                        gaps += windows(trace_dir, mode)
                        continue
                cpu = sum(a.ru_utime + a.ru_stime - b.ru_utime - b.ru_stime
                          for a, b in ((after_self, before_self),
                                       (after_children, before_children)))
                walls.append(wall)
                cpus.append(cpu)
                runs.append(seam.restores)
    return {"restore runs": statistics.median(runs), "wall ms": statistics.median(walls) * 1e3,
            "cpu ms": statistics.median(cpus) * 1e3,
            "window us": statistics.median(gaps) * 1e6 if gaps else float("nan"),
            "window max us": max(gaps) * 1e6 if gaps else float("nan")}


def bench_full(mode: str, count: int, repeat: int) -> dict[str, float]:
    """A full apply of ``count`` rules per table and family into empty chains (no strace)."""
    with temporary_netns("benchtab") as ns, tempfile.TemporaryDirectory() as records:
        backend = IptablesBackend(ns, mode=mode, state_dir=records)  # type: ignore[arg-type]
        seam = Traced(ns)
        backend._kernel = seam
        with backend:
            walls, cpus = [], []
            for _ in range(repeat):
                p = plan(backend.observe(), state(count, 0))
                before_self = resource.getrusage(resource.RUSAGE_SELF)
                before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
                start = time.perf_counter()
                backend.apply(p)
                walls.append(time.perf_counter() - start)
                after_self = resource.getrusage(resource.RUSAGE_SELF)
                after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpus.append(sum(a.ru_utime + a.ru_stime - b.ru_utime - b.ru_stime
                                for a, b in ((after_self, before_self),
                                             (after_children, before_children))))
                backend.apply(plan(backend.observe(), State()))
    return {"wall ms": statistics.median(walls) * 1e3, "cpu ms": statistics.median(cpus) * 1e3}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, nargs="*", default=[1, 1000],
                        help="forward accepts and masquerades per family")
    parser.add_argument("--repeat", type=int, default=11)
    parser.add_argument("--modes", nargs="+", default=["nft", "legacy"])
    parser.add_argument("--full", type=int, nargs="*", default=[],
                        help="also time full applies of these many rules per table and family")
    args = parser.parse_args(argv)
    if shutil.which("strace") is None:
        parser.error("strace is needed for the commit window")
    for mode in args.modes:
        for count in args.full:
            figures = bench_full(mode, count, args.repeat)
            print(f"iptables-{mode}, full apply of {count} rules per table and family: "
                  + ", ".join(f"{k} {v:.1f}" for k, v in figures.items()), flush=True)
        for count in args.rules:
            figures = bench(mode, count, args.repeat)
            print(f"iptables-{mode}, {count} rules per table and family: "
                  + ", ".join(f"{k} {v:.1f}" for k, v in figures.items()), flush=True)
    return 0


if __name__ == "__main__":
    exit_on_signals()  # a timeout or a closed terminal still deletes the namespaces
    raise SystemExit(main())
