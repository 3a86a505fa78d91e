"""CPU of the netlink backend's ``warnings`` in a lab namespace holding many IPv6 routes,
where the source-specific route judgement reads IPv6's routes: warm (the agent's idle
pass: the same routes again) and cold (a fresh backend's first call after its observe),
beside the observe, and ``ip -6 route show`` reading the same routes. Needs root; the
namespace is made and removed here.

    .venv/bin/python benchmarks/bench_source_routes.py [--routes N] [--driver D] [--runs N]

Each run: a fresh backend's ``observe``, then ``warnings`` once (cold) and ``--warm`` times
(warm, default 20); the last column counts the round trips of those ``warnings`` calls.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from functools import partial
from typing import Literal

from k3snet.backends.netlink import NetlinkBackend
from k3snet.lab.netns import temporary_netns
from k3snet.model import Route, State
from k3snet.planner import plan


def _ip(ns: str, *args: str, batch: str | None = None) -> str:
    return subprocess.run(["ip", "-n", ns, *args], check=True, input=batch, text=True,
                          capture_output=True).stdout


def _cpu(call: Callable[[], object]) -> float:
    start = time.process_time()
    call()
    return (time.process_time() - start) * 1000


def _measure(ns: str, driver: Literal["socket", "pyroute2"], wanted: State,
             runs: int, warm_calls: int) -> tuple[float, float, float, int]:
    observed: list[float] = []
    cold: list[float] = []
    warm: list[float] = []
    dumps = 0
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as state, \
                NetlinkBackend(ns, state_dir=state, driver=driver) as backend:
            backend.expect(wanted)
            observed.append(_cpu(backend.observe))
            before = backend._operations
            warnings = partial(getattr, backend, "warnings")
            cold.append(_cpu(warnings))
            warm.extend(_cpu(warnings) for _ in range(warm_calls))
            dumps = backend._operations - before
    return statistics.median(cold), statistics.median(warm), statistics.median(observed), dumps


def _shown(ns: str, runs: int) -> float:
    """Wall-clock ms of ``ip -6 route show`` (a child process: its CPU is not ours)."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        _ip(ns, "-6", "route", "show")
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--routes", type=int, default=10000)
    parser.add_argument("--driver", default="socket", choices=("socket", "pyroute2"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warm", type=int, default=20, help="warm calls a run")
    args = parser.parse_args()
    with temporary_netns("srcbench") as ns:
        _ip(ns, "link", "add", "d0", "type", "veth", "peer", "name", "d0p")
        for link in ("d0p", "d0", "lo"):
            _ip(ns, "link", "set", link, "up")
        _ip(ns, "addr", "add", "fd00:1::1/64", "dev", "d0", "nodad")
        lines = [f"route add fd10:{i // 65536:x}:{i % 65536:x}::/64 dev d0"
                 for i in range(args.routes)]
        _ip(ns, "-batch", "-", batch="\n".join(lines) + "\n")
        wanted = State(owned=[Route(f"fd09:{i:x}::/64", gateway="fd00:1::2")
                              for i in range(100)])
        with tempfile.TemporaryDirectory() as state, \
                NetlinkBackend(ns, state_dir=state, driver=args.driver) as backend:
            backend.apply(plan(backend.observe(), wanted))
        print(f"{args.routes} IPv6 routes, driver {args.driver}, CPU ms (medians): "
              "cold, warm, observe; round trips of the warnings")
        cold, warm, observed, dumps = _measure(ns, args.driver, wanted, args.runs,
                                                args.warm)
        print(f"warnings {cold:9.2f} {warm:7.2f} {observed:9.2f} {dumps:5d}")
        print(f"ip -6 route show: {_shown(ns, args.runs):.2f} ms wall-clock")


if __name__ == "__main__":
    main()
