"""An agent pass holding one destination's route, at 2k and 10k other destinations
(docs/performance.md, "Passes holding routes").

As root, in a fresh network namespace with the netlink and nftables backends: the first
pass applies, then the VPN-like device's address goes (its gateway unreachable) and
``PASSES`` passes hold its route; prints the CPU milliseconds (user + system, this
process and its children) per held pass, the first one apart.

    python benchmarks/bench_held.py [COUNT ...]
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from functools import partial
from pathlib import Path

from agent_steady import cpu

from k3snet.agent import Agent, AgentOptions, FileSpecSource
from k3snet.cli import _AgentDesired, _backend, build_parser
from k3snet.lab.netns import exit_on_signals, run_in, temporary_netns

PASSES = 20


def spec(count: int) -> str:
    """``count`` destinations through eth0, and one through vpn0."""
    lines = ["apiVersion: k3snet.io/v1alpha1", "kind: EgressSpec", "destinations:"]
    for i in range(count):
        lines += [f"  - cidr: 10.{100 + i // 256}.{i % 256}.0/24",
                  "    gateway: 192.168.1.1", "    device: eth0"]
    lines += ["  - cidr: 10.99.0.0/24", "    gateway: 10.9.0.1", "    device: vpn0"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("counts", nargs="*", type=int, default=[2000, 10000])
    counts = parser.parse_args().counts
    logging.disable(logging.ERROR)  # each held pass's "pass failed" line
    print(f"{'destinations':>12}{'first held pass ms':>20}{'CPU ms / held pass':>20}")
    for count in counts:
        with tempfile.TemporaryDirectory() as tmp, temporary_netns("bench") as ns:
            os.environ["K3SNET_STATE_DIR"] = tmp
            os.environ["K3SNET_LOCK_DIR"] = tmp
            for device, peer, address in (("eth0", "eth1", "192.168.1.5/24"),
                                          ("vpn0", "vpn1", "10.9.0.2/24")):
                run_in(ns, ["ip", "link", "add", device, "type", "veth", "peer", "name", peer])
                run_in(ns, ["ip", "link", "set", peer, "up"])
                run_in(ns, ["ip", "addr", "add", address, "dev", device])
                run_in(ns, ["ip", "link", "set", device, "up"])
            path = Path(tmp) / "spec.yaml"
            path.write_text(spec(count))
            args = build_parser().parse_args(["agent", "-f", str(path), "--netns", ns,
                                              "--backend", "netlink", "--backend", "nftables"])
            desired = _AgentDesired(args)  # as `k3snet agent` compiles and reads the facts
            agent = Agent(FileSpecSource(path), partial(_backend, args), desired,
                          AgentOptions("bench"))
            assert agent.run_pass().status == "ok"
            run_in(ns, ["ip", "addr", "del", "10.9.0.2/24", "dev", "vpn0"])
            start = time.monotonic()
            assert "held" in agent.run_pass().message
            first = (time.monotonic() - start) * 1000
            before = cpu()
            for _ in range(PASSES):
                result = agent.run_pass()
                assert result.status == "failed", result
                assert result.applied == (), result
            per_pass = (cpu() - before) / PASSES * 1000
            agent.shutdown()
            desired.close()
        print(f"{count:>12}{first:>20.0f}{per_pass:>20.1f}")


if __name__ == "__main__":
    exit_on_signals()  # a timeout or a closed terminal still deletes the namespaces
    main()
