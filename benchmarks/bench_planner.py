"""Planner benchmark: full plans from empty, and one change among N owned objects.

Run: ``.venv/bin/python benchmarks/bench_planner.py [--sizes 1000 10000 100000]``

Objects are masquerade rules and routes in equal parts (distinct sources and
destinations), the shape of a large node. Timings are the median of several
runs of ``plan()`` alone; building the states is reported separately. The
"doubling" column is time(N) / time(N/2): linear growth keeps it near 2.0.
Targets (issue 2): full plan of 100k under 1 s, 1-change plan over 100k under
0.3 s, doubling at most 2.2x.

``--rules R`` adds R foreign NAT rules (other bridges' masquerades, exemptions of
other ranges), which no wanted rule meets: NAT and forward rules have no clash key,
and each wanted one used to be judged against every foreign rule of its kind.

``--foreign F`` adds F foreign routes (``proto static``, metric 500: backups
behind k3snet's routes, which they do not shadow) at the destinations of the
first F routes, the shape of a node that also learns routes from BGP: the
planner judges every owned route in place against them.
"""

from __future__ import annotations

import argparse
import functools
import gc
import ipaddress
import platform
import statistics
import time
from collections.abc import Callable

from k3snet import MasqueradeRule, NetObject, Route, State, plan
from k3snet.model import NatBlock


def objects(n: int) -> list[NetObject]:
    """``n`` distinct objects: half masquerade rules, half routes."""
    result: list[NetObject] = []
    base = int(ipaddress.IPv4Address("100.64.0.0"))
    for i in range(n):
        net = ipaddress.IPv4Network((base + (i << 8), 24))
        if i % 2:
            result.append(Route(net, gateway="192.168.1.1", device="eth0"))
        else:
            result.append(MasqueradeRule("10.42.0.0/16", destination=net, out_interface="eth0"))
    return result


def foreign_routes(n: int, count: int) -> list[Route]:
    """``count`` foreign backup routes at the destinations of the routes of ``objects(n)``."""
    backups = [Route(obj.destination, gateway="192.168.1.9", device="eth0", metric=500,
                     protocol="static") for obj in objects(n) if isinstance(obj, Route)]
    return backups[:count]


def foreign_rules(count: int) -> list[NetObject]:
    """``count`` NAT rules of other programs, half Docker-like bridges' masquerades
    (``-s 172.X.0.0/16 ! -o docker0 -j MASQUERADE``), half exemptions of other ranges
    (``-d 198.18.X.0/24 -j RETURN``): rules k3snet's wanted ones never meet."""
    rules: list[NetObject] = []
    for i in range(count):
        if i % 2:
            rules.append(NatBlock(4, "exempt", f"-d 198.18.{i // 2 % 256}.0/24 -j RETURN",
                                  "iptables IPv4 nat POSTROUTING",
                                  destination=f"198.18.{i // 2 % 256}.0/24"))
        else:
            rules.append(MasqueradeRule(f"172.{16 + i // 2 % 16}.{i // 32 % 256}.0/24",
                                        out_interface="eth0"))
    return rules


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``fn`` in seconds (garbage collection paused while timing)."""
    samples = []
    for _ in range(repeat):
        gc.collect()
        gc.disable()
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
        gc.enable()
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+",
                        default=[1000, 10_000, 25_000, 50_000, 100_000, 200_000])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--foreign", type=int, default=0,
                        help="foreign backup routes in the observed state (default 0)")
    parser.add_argument("--rules", type=int, default=0,
                        help="foreign NAT rules of other programs (default 0): every wanted "
                             "NAT rule is judged against those that may meet it")
    args = parser.parse_args()

    print(f"# k3snet planner benchmark, Python {platform.python_version()} on "
          f"{platform.machine()}, median of {args.repeat}, {args.foreign} foreign routes, "
          f"{args.rules} foreign NAT rules")
    print(f"{'N':>8} {'build state':>12} {'full plan':>10} {'doubling':>9} "
          f"{'1-change plan':>14} {'doubling':>9} {'changes':>8}")
    previous: tuple[int, float, float] | None = None
    for n in args.sizes:
        objs = objects(n + 1)
        start = time.perf_counter()
        foreign = [*foreign_routes(n, args.foreign), *foreign_rules(args.rules)]
        observed = State(owned=objs[:n], foreign=foreign)
        build = time.perf_counter() - start
        # One change: the same N objects, one of them with a new gateway (a replace).
        changed = objs[:n]
        index = 1 if n > 1 else 0
        victim = changed[index]
        if isinstance(victim, Route):
            changed[index] = Route(victim.destination, gateway="192.168.1.254", device="eth0")
        desired = State(owned=changed)
        empty = State(foreign=foreign)
        full = timed(functools.partial(plan, empty, observed), args.repeat)
        one = timed(functools.partial(plan, observed, desired), args.repeat)
        count = len(plan(observed, desired).changes)
        doubling_full = doubling_one = "-"
        if previous is not None and n == 2 * previous[0]:
            doubling_full = f"{full / previous[1]:.2f}x"
            doubling_one = f"{one / previous[2]:.2f}x"
        print(f"{n:>8} {build * 1000:>10.1f}ms {full * 1000:>8.1f}ms {doubling_full:>9} "
              f"{one * 1000:>12.1f}ms {doubling_one:>9} {count:>8}")
        previous = (n, full, one)


if __name__ == "__main__":
    main()
