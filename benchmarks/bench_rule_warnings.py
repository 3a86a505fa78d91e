"""CPU of the netlink backend's ``warnings`` (the policy-rule and table-local judgement)
in a lab namespace holding many IPv4 routes: warm (the agent's idle pass: the same
routes, rules and tables again) and cold (a fresh backend's first call after its
observe). Needs root; the namespace is made and removed here.

    .venv/bin/python benchmarks/bench_rule_warnings.py [--routes N] [--driver D]
                                                        [--addresses N]

Cases: ``merged`` (the rules a namespace starts with), ``apart`` (a rule added and
deleted: tables local and main apart for good), ``wide-local`` (apart, and an AnyIP
route of table local wider than a route of k3snet's: the judgement hangs on the state).
``--addresses N``: N more addresses (/32) on a link, each a host route of table local
(kube-proxy's IPVS mode binds every service address so); the ``observe`` column is the
CPU of the fresh backend's observe before its cold ``warnings`` (the pyroute2 driver
keeps table local from that observe's dump of every table).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Literal

from k3snet.backends.netlink import NetlinkBackend
from k3snet.lab.netns import temporary_netns
from k3snet.model import Route, State
from k3snet.planner import plan


def _ip(ns: str, *args: str, batch: str | None = None) -> None:
    subprocess.run(["ip", "-n", ns, *args], check=True, input=batch, text=True,
                   capture_output=True)


@contextlib.contextmanager
def _namespace(name: str | None) -> Iterator[str]:
    if name is None:
        with temporary_netns("rwbench") as ns:
            yield ns
        return
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


def _cpu(call: Callable[[], object]) -> float:
    start = time.process_time()
    call()
    return (time.process_time() - start) * 1000


def _measure(ns: str, driver: Literal["socket", "pyroute2"], wanted: State,
             runs: int) -> tuple[float, float, float]:
    observed: list[float] = []
    cold: list[float] = []
    warm: list[float] = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as state, \
                NetlinkBackend(ns, state_dir=state, driver=driver) as backend:
            backend.expect(wanted)
            observed.append(_cpu(backend.observe))
            warnings = partial(getattr, backend, "warnings")
            cold.append(_cpu(warnings))
            warm.extend(_cpu(warnings) for _ in range(20))
    return statistics.median(cold), statistics.median(warm), statistics.median(observed)


def _line(case: str, measured: tuple[float, float, float]) -> str:
    return f"{case:<11} {measured[0]:7.2f} {measured[1]:7.2f} {measured[2]:9.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--routes", type=int, default=18000)
    parser.add_argument("--driver", default="socket", choices=("socket", "pyroute2"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--addresses", type=int, default=0)
    parser.add_argument("--netns", help="the lab namespace's name (default: a fresh one)")
    args = parser.parse_args()
    with _namespace(args.netns) as ns:
        _ip(ns, "link", "add", "d0", "type", "veth", "peer", "name", "d0p")
        _ip(ns, "link", "set", "d0p", "up")
        _ip(ns, "link", "set", "d0", "up")
        _ip(ns, "link", "set", "lo", "up")
        _ip(ns, "addr", "add", "192.0.2.1/24", "dev", "d0")
        lines = [f"route add 10.{64 + i // 65536}.{i // 256 % 256}.{i % 256}/32 dev d0"
                 for i in range(args.routes)]
        lines += [f"addr add 10.{96 + i // 65536}.{i // 256 % 256}.{i % 256}/32 dev d0p"
                  for i in range(args.addresses)]
        _ip(ns, "-batch", "-", batch="\n".join(lines) + "\n")
        wanted = State(owned=[Route(f"10.9.{i}.0/24", gateway="192.0.2.2")
                              for i in range(100)])
        with tempfile.TemporaryDirectory() as state, \
                NetlinkBackend(ns, state_dir=state, driver=args.driver) as backend:
            backend.apply(plan(backend.observe(), wanted))
        print(f"{args.routes} routes, {args.addresses} addresses, driver {args.driver}, "
              "CPU ms (medians): cold, warm, observe")
        print(_line("merged", _measure(ns, args.driver, wanted, args.runs)))
        _ip(ns, "rule", "add", "to", "203.0.113.0/24", "lookup", "100", "pref", "100")
        _ip(ns, "rule", "del", "pref", "100")
        print(_line("apart", _measure(ns, args.driver, wanted, args.runs)))
        _ip(ns, "route", "add", "local", "10.9.0.0/16", "dev", "lo", "table", "local")
        print(_line("wide-local", _measure(ns, args.driver, wanted, args.runs)))


if __name__ == "__main__":
    main()
