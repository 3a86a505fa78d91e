"""Node facts on a node with many foreign routes: ``gather_facts`` against ``ip -j``.

Run as root (a throwaway namespace, deleted at the end)::

    .venv/bin/python benchmarks/bench_facts.py [--routes 10000] [--runs 9] [--name NS]

Run it with another install's interpreter (or ``PYTHONPATH`` on another checkout)
for that version's ``gather_facts``. The namespace holds ``--routes`` IPv4 routes
of protocol ``static`` (main table), a tenth as many IPv6 ones in table 100 and a
tenth of k3snet's own (protocol 211). Cases, each the median (min-max) wall ms of
``--runs``:

* ``after a change``: one foreign route deleted and added again before each read
  (what makes the agent read the facts again);
* ``unchanged``: reads one after another;
* ``ip -j listings``: the three ``ip -j`` processes and :func:`facts_from_ip_json`
  of their output, the reading ``gather_facts`` gives the same facts as (checked);
* ``agent pass, repair``: an agent (netlink backend, as ``k3snet agent`` reads the
  facts and compiles) whose spec has 10 routes via a gateway, after one of k3snet's
  routes was deleted by ``ip``: the pass that puts it back.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from k3snet import NodeFacts, facts_from_ip_json, gather_facts
from k3snet.agent import Agent, AgentOptions, FileSpecSource
from k3snet.cli import _AgentDesired, _backend, build_parser
from k3snet.lab.netns import create_netns, delete_netns, exit_on_signals, unique_name


def ip(ns: str, *args: str) -> str:
    return subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True,
                          text=True).stdout


def setup(ns: str, count: int) -> None:
    ip(ns, "link", "add", "d0", "type", "veth", "peer", "name", "d0p")
    for dev in ("d0", "d0p"):
        ip(ns, "link", "set", dev, "up")
    ip(ns, "addr", "add", "10.0.0.1/16", "dev", "d0")
    ip(ns, "addr", "add", "fd00::1/64", "dev", "d0", "nodad")
    lines = [f"route add 11.{i >> 8 & 255}.{i & 255}.0/24 dev d0 proto static\n"
             for i in range(count)]
    lines += [f"route add fd01:{i:x}::/64 dev d0 table 100 proto static\n"
              for i in range(count // 10)]
    lines += [f"route add 12.{i >> 8 & 255}.{i & 255}.0/24 dev d0 proto 211\n"
              for i in range(count // 10)]
    with tempfile.NamedTemporaryFile("w", suffix=".batch") as batch:
        batch.write("".join(lines))
        batch.flush()
        ip(ns, "-batch", batch.name)


def from_ip_json(ns: str) -> NodeFacts:
    """The facts of the three ``ip -j`` listings (one after another)."""
    def listing(*args: str) -> list[Any]:
        listed = json.loads(ip(ns, "-j", *args), strict=False)
        assert isinstance(listed, list)
        return listed
    routes = [*listing("-4", "route", "show", "table", "all"),
              *listing("-6", "route", "show", "table", "all")]
    return facts_from_ip_json(listing("addr", "show"), routes, hostname=ns)


def median_ms(fn: Callable[[], object], runs: int, before: Callable[[], object]) -> str:
    times = []
    for _ in range(runs):
        before()
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return f"{statistics.median(times):.0f} ms ({min(times):.0f}-{max(times):.0f})"


def agent_repair(ns: str, runs: int) -> str:
    """The median pass of an agent putting back a k3snet route deleted before it."""
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["K3SNET_STATE_DIR"] = tmp
        os.environ["K3SNET_LOCK_DIR"] = tmp
        path = Path(tmp) / "spec.yaml"
        path.write_text("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\ndestinations:\n"
                        + "".join(f"  - cidr: 13.0.{n}.0/24\n    gateway: 10.0.0.2\n"
                                  "    device: d0\n" for n in range(10)))
        args = build_parser().parse_args(["agent", "-f", str(path), "--netns", ns,
                                          "--backend", "netlink"])
        desired = _AgentDesired(args)
        agent = Agent(FileSpecSource(path), lambda s: _backend(args, s), desired,
                      AgentOptions("bench"))
        try:
            assert agent.run_pass().status == "ok"

            def repaired() -> None:
                assert agent.run_pass().applied, "nothing put back"

            return median_ms(repaired, runs,
                             lambda: ip(ns, "route", "del", "13.0.0.0/24", "proto", "211"))
        finally:
            agent.shutdown()
            desired.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--name", help="the namespace to create (default: a unique name)")
    args = parser.parse_args()
    exit_on_signals()
    ns = args.name or unique_name("facts")
    create_netns(ns)
    try:
        setup(ns, args.routes)

        def change() -> None:
            ip(ns, "route", "del", "11.0.0.0/24")
            ip(ns, "route", "add", "11.0.0.0/24", "dev", "d0", "proto", "static")

        same = gather_facts(ns) == from_ip_json(ns)
        print(f"{args.routes} foreign IPv4 routes, {args.routes // 10} IPv6, "
              f"{args.routes // 10} of k3snet's; gather_facts == ip -j reading: {same}")
        print("after a change:", median_ms(lambda: gather_facts(ns), args.runs, change))
        print("unchanged:     ", median_ms(lambda: gather_facts(ns), args.runs, lambda: None))
        print("ip -j listings:", median_ms(lambda: from_ip_json(ns), args.runs, change))
        print("agent pass, repair:", agent_repair(ns, args.runs))
    finally:
        delete_netns(ns)


if __name__ == "__main__":
    main()
