"""CPU of a no-change agent pass (steady state) at 0, 2k and 10k destinations (docs/scale.md).

As root, in a fresh network namespace with the netlink and nftables backends:
the first pass applies, then ``PASSES`` passes find nothing to do; prints the
CPU seconds (user + system, this process and its children) per no-change pass.

    python benchmarks/agent_steady.py [COUNT ...] [--veths N] [--passes P]

``--veths N``: N veth pairs more in the namespace (2N interfaces: pods' veths, each
with an IPv4 forwarding switch the netlink backend's warnings look at).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from agent_memory import spec

from k3snet.agent import Agent, AgentOptions, FileSpecSource
from k3snet.cli import _AgentDesired, _backend, build_parser
from k3snet.lab.netns import exit_on_signals, run_in, temporary_netns

PASSES = 20


def cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("counts", nargs="*", type=int, default=[0, 2000, 10000])
    parser.add_argument("--veths", type=int, default=0)
    parser.add_argument("--passes", type=int, default=PASSES)
    options = parser.parse_args()
    counts = options.counts
    print(f"{'destinations':>12}{'first pass s':>14}{'CPU ms / no-change pass':>26}")
    for count in counts:
        with tempfile.TemporaryDirectory() as tmp, temporary_netns("bench") as ns:
            os.environ["K3SNET_STATE_DIR"] = tmp
            os.environ["K3SNET_LOCK_DIR"] = tmp
            run_in(ns, ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"])
            run_in(ns, ["ip", "link", "set", "eth1", "up"])
            run_in(ns, ["ip", "addr", "add", "192.168.1.5/24", "dev", "eth0"])
            run_in(ns, ["ip", "link", "set", "eth0", "up"])
            if options.veths:
                run_in(ns, ["ip", "-batch", "-"], input_text="".join(
                    f"link add veth{i} type veth peer name pod{i}\n"
                    for i in range(options.veths)))
            path = Path(tmp) / "spec.yaml"
            path.write_text(spec(count))
            args = build_parser().parse_args(["agent", "-f", str(path), "--netns", ns,
                                              "--backend", "netlink", "--backend", "nftables"])
            desired = _AgentDesired(args)  # as `k3snet agent` compiles and reads the facts
            agent = Agent(FileSpecSource(path), lambda s, a=args: _backend(a, s), desired,
                          AgentOptions("bench"))
            start = time.monotonic()
            assert agent.run_pass().status == "ok"
            first = time.monotonic() - start
            before = cpu()
            for _ in range(options.passes):
                result = agent.run_pass()
                assert result.applied == (), result
            per_pass = (cpu() - before) / options.passes * 1000
            agent.shutdown()
            desired.close()
        print(f"{count:>12}{first:>14.2f}{per_pass:>26.1f}")


if __name__ == "__main__":
    exit_on_signals()  # a timeout or a closed terminal still deletes the namespaces
    main()
