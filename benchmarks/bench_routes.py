"""Routes at scale: the netlink backend's two drivers and ``ip -batch``, in a throwaway netns.

Run as root::

    .venv/bin/python benchmarks/bench_routes.py [--routes 10000] [--runs 5]
                                                [--drivers socket,pyroute2]

Cases (each the median of ``--runs``; the namespace is deleted at the end), for
each driver of :class:`~k3snet.backends.netlink.NetlinkBackend` side by side:

* full apply: N routes added to an empty table (``apply`` of a ready plan, and
  observe+plan+apply from a fresh backend; ip: ``ip -batch``);
* 1 change among N existing routes: one gateway replaced (with the same backend
  again and again, which keeps its route view warm with the socket driver and
  dumps again with the pyroute2 one; and from a fresh backend, which must dump N
  routes first; ip: one ``ip route replace``);
* observe N routes (a dump, decoded into Route objects, fresh backend);
* full delete of the N routes;
* pyroute2 at its fast path, without the backend: the N requests prepared as
  ``rtmsg`` objects and sent with ``IPRoute.nlm_request_batch`` (1024 requests
  per send on one socket, each acknowledged: with only the last acknowledged
  pyroute2 0.9.7 waits forever), adding then deleting them; and the time
  ``IPBatch`` takes only to compile the N add requests into its buffer (a lower
  bound for that path: nothing is sent). Skip with ``--no-pyroute2-fast``.

``ops`` is what ``ApplyResult.operations`` reports: round trips to the kernel
(socket: a batch of up to 1024 requests is one; pyroute2: one per request) and
the dumps the apply needed.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import ipaddress
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal, TypeVar

from k3snet.backends.netlink import NetlinkBackend
from k3snet.backends.netns import NetnsRunner
from k3snet.lab.netns import create_netns, delete_netns, exit_on_signals, unique_name
from k3snet.model import Route, State
from k3snet.planner import plan

TABLE = 100
T = TypeVar("T")
Driver = Literal["socket", "pyroute2"]
DRIVERS: tuple[Driver, ...] = ("socket", "pyroute2")


def ip(ns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True)


def setup(ns: str) -> str:
    """A device with 10.0.0.1/16 in ``ns``: dummy when the kernel has it, else a veth pair."""
    try:
        ip(ns, "link", "add", "d0", "type", "dummy")
        kind = "dummy"
    except subprocess.CalledProcessError:
        ip(ns, "link", "add", "d0", "type", "veth", "peer", "name", "d0p")
        ip(ns, "link", "set", "d0p", "up")
        kind = "veth (no dummy module)"
    ip(ns, "link", "set", "d0", "up")
    ip(ns, "addr", "add", "10.0.0.1/16", "dev", "d0")
    return kind


def routes(count: int, gateway: str = "10.0.0.2") -> list[Route]:
    base = int(ipaddress.IPv4Address("11.0.0.0"))
    return [Route(ipaddress.IPv4Network((base + (i << 8), 24)), gateway=gateway, device="d0",
                  table=TABLE) for i in range(count)]


def batch_file(path: Path, wanted: list[Route], verb: str) -> Path:
    lines = [f"route {verb} {r.destination} via {r.gateway} dev d0 table {TABLE} "
             f"metric {r.metric} proto 211\n" for r in wanted]
    path.write_text("".join(lines))
    return path


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


@dataclass
class Measured:
    """The median seconds of one case, and the operations its last apply reported."""

    seconds: float
    ops: int | None = None


def median(values: list[float]) -> float:
    return statistics.median(values)


@dataclass
class Bench:
    """One namespace, one set of N routes, the runs to take medians of."""

    ns: str
    tmp: Path
    count: int
    runs: int

    def backend(self, driver: Driver) -> NetlinkBackend:
        return NetlinkBackend(self.ns, state_dir=self.tmp / "state", driver=driver)

    def ip_cycle(self) -> dict[str, Measured]:
        """``ip -batch`` adding the N routes, then deleting them."""
        wanted = routes(self.count)
        add_file = batch_file(self.tmp / "add.batch", wanted, "add")
        del_file = batch_file(self.tmp / "del.batch", wanted, "del")
        added: list[float] = []
        deleted: list[float] = []
        for _ in range(self.runs):
            added.append(timed(partial(ip, self.ns, "-batch", str(add_file)))[0])
            deleted.append(timed(partial(ip, self.ns, "-batch", str(del_file)))[0])
        return {"add": Measured(median(added)), "delete": Measured(median(deleted))}

    def full_cycle(self, driver: Driver) -> dict[str, Measured]:
        """Add N routes and delete them again with ``driver``."""
        desired = State(owned=routes(self.count))
        times: dict[str, list[float]] = {k: [] for k in ("add", "delete", "observe", "e2e")}
        ops: dict[str, int] = {}
        for _ in range(self.runs):
            with self.backend(driver) as backend:
                ready = plan(backend.observe(), desired)
                seconds, result = timed(partial(backend.apply, ready))
                times["add"].append(seconds)
                ops["add"] = result.operations
                with self.backend(driver) as fresh:
                    times["observe"].append(timed(fresh.observe)[0])
                removal = plan(backend.observe(), State())
                seconds, result = timed(partial(backend.apply, removal))
                times["delete"].append(seconds)
                ops["delete"] = result.operations
            seconds, ops["e2e"] = timed(partial(self.converge, driver, desired))
            times["e2e"].append(seconds)
            flush(self.ns)
        return {case: Measured(median(values), ops.get(case)) for case, values in times.items()}

    def converge(self, driver: Driver, desired: State) -> int:
        """A fresh backend: observe (a dump), plan, apply; the operations it took."""
        with self.backend(driver) as backend:
            return backend.apply(plan(backend.observe(), desired)).operations

    def target(self, gateway: str) -> State:
        """The N routes, the middle one through ``gateway``."""
        wanted = routes(self.count)
        middle = self.count // 2
        one = Route(wanted[middle].destination, gateway=gateway, device="d0", table=TABLE)
        return State(owned=[*wanted[:middle], one, *wanted[middle + 1:]])

    def one_change(self, driver: Driver) -> dict[str, Measured]:
        """Replace one route's gateway among N: the same backend again, and fresh ones."""
        ip(self.ns, "-batch", str(batch_file(self.tmp / "add.batch", routes(self.count), "add")))
        warm: list[float] = []
        cold: list[float] = []
        warm_ops = cold_ops = 0
        with self.backend(driver) as backend:
            backend.observe()
            for turn in range(self.runs):
                wanted = self.target("10.0.0.3" if turn % 2 == 0 else "10.0.0.2")
                seconds, warm_ops = timed(partial(converge_with, backend, wanted))
                warm.append(seconds)
        for turn in range(self.runs):
            wanted = self.target("10.0.0.4" if turn % 2 == 0 else "10.0.0.2")
            seconds, cold_ops = timed(partial(self.converge, driver, wanted))
            cold.append(seconds)
        flush(self.ns)
        return {"warm": Measured(median(warm), warm_ops), "cold": Measured(median(cold), cold_ops)}

    def ip_one_change(self) -> Measured:
        """One ``ip route replace`` among N routes."""
        wanted = routes(self.count)
        middle = wanted[self.count // 2]
        ip(self.ns, "-batch", str(batch_file(self.tmp / "add.batch", wanted, "add")))
        times = [timed(partial(ip, self.ns, "route", "replace", str(middle.destination), "via",
                               "10.0.0.4" if turn % 2 == 0 else "10.0.0.2", "dev", "d0",
                               "table", str(TABLE), "proto", "211"))[0]
                 for turn in range(self.runs)]
        flush(self.ns)
        return Measured(median(times))


    def pyroute2_fast(self) -> dict[str, Measured]:
        """pyroute2's batched requests on one socket (and IPBatch's compile), in the netns."""
        with NetnsRunner(self.ns) as runner:
            return runner.call(partial(pyroute2_fast_path, self.ns, self.count, self.runs))


def pyroute2_fast_path(ns: str, count: int, runs: int) -> dict[str, Measured]:
    """Run in the namespace's thread: pyroute2 sockets belong to the thread's namespace."""
    from pyroute2 import IPBatch, IPRoute  # noqa: PLC0415 - optional, only for this case
    from pyroute2.netlink import (  # noqa: PLC0415
        NLM_F_ACK,
        NLM_F_CREATE,
        NLM_F_EXCL,
        NLM_F_REQUEST,
    )
    from pyroute2.netlink.rtnl.rtmsg import rtmsg  # noqa: PLC0415

    wanted = routes(count)
    with IPRoute() as ipr:
        oif = ipr.link_lookup(ifname="d0")[0]

        def requests(kind: int, flags: int) -> list[object]:
            made = []
            for route in wanted:
                msg = rtmsg()
                msg["family"] = 2  # AF_INET
                msg["dst_len"] = route.destination.prefixlen
                msg["table"] = TABLE
                msg["proto"] = 211
                msg["type"] = 1  # unicast
                msg["attrs"] = [("RTA_DST", str(route.destination.network_address)),
                                ("RTA_TABLE", TABLE), ("RTA_PRIORITY", 0),
                                ("RTA_GATEWAY", str(route.gateway)), ("RTA_OIF", oif)]
                msg["header"]["type"] = kind
                msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK | flags
                made.append(msg)
            return made

        def send(kind: int, flags: int) -> None:
            made = requests(kind, flags)
            for start in range(0, len(made), 1024):
                for _answer in ipr.nlm_request_batch(made[start:start + 1024]):
                    pass

        added: list[float] = []
        deleted: list[float] = []
        for _ in range(runs):
            added.append(timed(partial(send, 24, NLM_F_CREATE | NLM_F_EXCL))[0])  # NEWROUTE
            assert len(list(ipr.route("dump", table=TABLE))) == count
            deleted.append(timed(partial(send, 25, 0))[0])  # RTM_DELROUTE
            assert not list(ipr.route("dump", table=TABLE))

    def compile_batch() -> None:
        with IPBatch() as batch:
            for route in wanted:
                batch.route("add", dst=str(route.destination), table=TABLE, proto=211,
                            gateway=str(route.gateway), oif=oif, priority=0)

    compiled = timed(compile_batch)[0]
    return {"add": Measured(median(added)), "delete": Measured(median(deleted)),
            "compile": Measured(compiled)}


def converge_with(backend: NetlinkBackend, desired: State) -> int:
    return backend.apply(plan(backend.observe(), desired)).operations


def flush(ns: str) -> None:
    ip(ns, "route", "flush", "table", str(TABLE))


@dataclass
class Row:
    """One case: each driver's measurement, and iproute2's when it has one."""

    name: str
    drivers: dict[Driver, Measured]
    ip: Measured | None


def run(count: int, runs: int, drivers: Sequence[Driver], fast: bool) -> None:
    ns = create_netns(unique_name("bench"))
    fast_path: dict[str, Measured] = {}
    try:
        kind = setup(ns)
        with tempfile.TemporaryDirectory() as tmp:
            bench = Bench(ns, Path(tmp), count, runs)
            by_ip = bench.ip_cycle()
            ip_change = bench.ip_one_change()
            full = {driver: bench.full_cycle(driver) for driver in drivers}
            change = {driver: bench.one_change(driver) for driver in drivers}
            if fast:
                fast_path = bench.pyroute2_fast()
    finally:
        delete_netns(ns)
    n = count
    rows = [
        Row(f"add {n} routes (apply)", {d: full[d]["add"] for d in drivers}, by_ip["add"]),
        Row(f"add {n} routes (new backend: observe+plan+apply)",
            {d: full[d]["e2e"] for d in drivers}, by_ip["add"]),
        Row(f"observe {n} routes (dump, new backend)",
            {d: full[d]["observe"] for d in drivers}, None),
        Row(f"delete {n} routes (apply)", {d: full[d]["delete"] for d in drivers},
            by_ip["delete"]),
        Row(f"1 change among {n} (same backend: observe+plan+apply)",
            {d: change[d]["warm"] for d in drivers}, ip_change),
        Row(f"1 change among {n} (new backend: dump+plan+apply)",
            {d: change[d]["cold"] for d in drivers}, ip_change),
    ]
    report(rows, drivers, count, runs, kind)
    if fast_path:
        report_fast(fast_path, full.get("socket"), by_ip, count)


def ms(value: Measured | None) -> str:
    return "-" if value is None else f"{value.seconds * 1000:.1f}ms"


def ratio(mine: Measured | None, theirs: Measured | None) -> str:
    return "-" if mine is None or theirs is None else f"{mine.seconds / theirs.seconds:.2f}x"


def report(rows: list[Row], drivers: Sequence[Driver], count: int, runs: int,
           kind: str) -> None:
    try:
        pyroute2 = importlib.metadata.version("pyroute2")
    except importlib.metadata.PackageNotFoundError:
        pyroute2 = "not installed"
    print(f"\nk3snet netlink backend (drivers: {', '.join(drivers)}) vs iproute2, {count} IPv4 "
          f"routes in table {TABLE}, device {kind}, median of {runs} run(s); python "
          f"{sys.version.split()[0]}, pyroute2 {pyroute2}, "
          f"kernel {os.uname().release}")
    header = f"{'case':<54}" + "".join(f" {d:>10}" for d in drivers) + f" {'ip':>10}"
    header += "".join(f" {d + '/ip':>11}" for d in drivers)
    if "socket" in drivers and "pyroute2" in drivers:
        header += f" {'pyroute2/socket':>15}"
    header += "".join(f" {'ops ' + d:>12}" for d in drivers)
    print(header)
    print("-" * len(header))
    for row in rows:
        line = f"{row.name:<54}" + "".join(f" {ms(row.drivers[d]):>10}" for d in drivers)
        line += f" {ms(row.ip):>10}"
        line += "".join(f" {ratio(row.drivers[d], row.ip):>11}" for d in drivers)
        if "socket" in drivers and "pyroute2" in drivers:
            line += f" {ratio(row.drivers['pyroute2'], row.drivers['socket']):>15}"
        line += "".join(f" {'-' if row.drivers[d].ops is None else row.drivers[d].ops:>12}"
                        for d in drivers)
        print(line)
    print("\nip: `ip -n NS -batch FILE` (one process, one netlink request per route, each "
          "acknowledged) or one `ip route replace`;\nsocket: requests batched up to 1024 "
          "per sendmsg, only the last acknowledged, route view kept warm by notifications;"
          "\npyroute2: IPRoute.route() per change in the namespace's worker thread, a dump "
          "on every call;\nops = round trips reported by ApplyResult (requests/batches and "
          "the dumps the apply needed).")


def report_fast(fast: dict[str, Measured], socket: dict[str, Measured] | None,
                by_ip: dict[str, Measured], count: int) -> None:
    """pyroute2 at its fast path next to ``ip -batch`` and the socket driver."""
    mine = socket or {}
    rows = [
        (f"add {count} routes", fast["add"], by_ip["add"], mine.get("add")),
        (f"delete {count} routes", fast["delete"], by_ip["delete"], mine.get("delete")),
        (f"compile {count} adds (IPBatch, nothing sent)", fast["compile"], by_ip["add"], None),
    ]
    print(f"\npyroute2 at its fast path (nlm_request_batch: prepared rtmsg requests, 1024 "
          f"per send on one socket)\n{'case':<54} {'pyroute2':>10} {'ip':>10} "
          f"{'socket':>10} {'pyroute2/ip':>12} {'socket/ip':>10}")
    print("-" * 111)
    for name, theirs, ip_time, socket_time in rows:
        print(f"{name:<54} {ms(theirs):>10} {ms(ip_time):>10} {ms(socket_time):>10} "
              f"{ratio(theirs, ip_time):>12} {ratio(socket_time, ip_time):>10}")
    print("\nThe rule (docs/performance.md): pyroute2 becomes the default driver if its fast "
          "path comes within 1.5x of `ip -batch`.")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--routes", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--drivers", default=",".join(DRIVERS),
                        help="comma-separated, from: socket, pyroute2")
    parser.add_argument("--no-pyroute2-fast", action="store_true",
                        help="skip pyroute2's batched requests (nlm_request_batch, IPBatch)")
    args = parser.parse_args()
    drivers: list[Driver] = []
    for name in args.drivers.split(","):
        if name not in DRIVERS:
            parser.error(f"unknown driver {name!r}")
        drivers.append("socket" if name == "socket" else "pyroute2")
    if os.geteuid() != 0:
        sys.exit("needs root (it creates a network namespace)")
    run(args.routes, args.runs, drivers, not args.no_pyroute2_fast)


if __name__ == "__main__":
    exit_on_signals()  # a timeout or a closed terminal still deletes the namespaces
    main()
