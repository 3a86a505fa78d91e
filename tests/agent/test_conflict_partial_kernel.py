"""The agent under a standing conflict repairs everything else (kernel).

Wired as ``k3snet agent --backend netlink --backend iptables`` (and ``nftables``) in
a fresh namespace, two destinations through eth0. An admin's ``DROP`` of the pods'
traffic to one of them comes before k3snet's jump: the plan's ``!`` conflict. A route
of the other destination deleted and ``ip_forward`` turned off meanwhile are repaired
by the next pass all the same; the foreign rule and k3snet's rules stay as they are,
and the pass fails ``conflict``. Until this release the whole pass was refused: that
drift stayed for as long as the foreign rule did. Checked in the kernel's own
listings (``iptables-save``, ``nft -j list``, ``ip -j route``, the sysctl file).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from k3snet.lab.netns import run_in, temporary_netns

pytestmark = pytest.mark.kernel

SPEC = """apiVersion: k3snet.io/v1alpha1
kind: EgressSpec
destinations:
  - cidr: 10.100.0.0/24
    gateway: 192.168.1.1
    device: eth0
  - cidr: 10.101.0.0/24
    gateway: 192.168.1.1
    device: eth0
"""

# The admin's rules, before k3snet's: each drops the pods' traffic to 10.100.0.0/24.
_IPTABLES_DROP = ["iptables", "-I", "FORWARD", "1", "-s", "10.42.0.0/16", "-d",
                  "10.100.0.0/24", "-j", "DROP"]
_NFT_DROP = ("table inet admin {\n chain forward {\n"
             "  type filter hook forward priority -10; policy accept;\n"
             "  ip saddr 10.42.0.0/16 ip daddr 10.100.0.0/24 drop\n }\n}\n")


def _routes(ns: str) -> set[str]:
    listing = json.loads(run_in(ns, ["ip", "-4", "-j", "route", "show", "proto", "211"]
                                ).stdout or "[]")
    return {route["dst"] for route in listing}


def _forwarding(ns: str) -> str:
    return run_in(ns, ["cat", "/proc/sys/net/ipv4/ip_forward"]).stdout.strip()


def _firewall(ns: str, backend: str) -> Any:
    """The kernel's view of every filter rule (counters and handles left out)."""
    if backend == "iptables":
        return [line for line in run_in(ns, ["iptables-save", "-t", "filter"]).stdout
                .splitlines() if line.startswith("-A")]
    listing = json.loads(run_in(ns, ["nft", "-j", "list", "ruleset"]).stdout)["nftables"]
    return [(item["rule"]["table"], item["rule"]["chain"], item["rule"]["expr"])
            for item in listing if "rule" in item]


def _drop_first(ns: str, backend: str) -> None:
    if backend == "iptables":
        run_in(ns, _IPTABLES_DROP)
    else:
        run_in(ns, ["nft", "-f", "-"], input_text=_NFT_DROP)


@contextlib.contextmanager
def _agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str, text: str = SPEC,
           ) -> Iterator[tuple[Any, Any, str]]:
    from k3snet import cli  # noqa: PLC0415 - the CLI's own agent wiring, as `k3snet agent`
    from k3snet.agent import Agent, AgentMetrics, AgentOptions, FileSpecSource  # noqa: PLC0415

    monkeypatch.setenv("K3SNET_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("K3SNET_LOCK_DIR", str(tmp_path))
    with temporary_netns("conflict") as ns:
        run_in(ns, ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"])
        run_in(ns, ["ip", "link", "set", "eth1", "up"])
        run_in(ns, ["ip", "addr", "add", "192.168.1.5/24", "dev", "eth0"])
        run_in(ns, ["ip", "link", "set", "eth0", "up"])
        spec = tmp_path / "spec.yaml"
        spec.write_text(text)
        backends = ["--backend", "netlink"] + ([] if backend == "netlink" else
                                               ["--backend", backend])
        args = cli.build_parser().parse_args(["agent", "-f", str(spec), "--netns", ns,
                                              *backends])
        desired = cli._AgentDesired(args)
        metrics = AgentMetrics()
        agent = Agent(FileSpecSource(spec), lambda s: cli._backend(args, s), desired,
                      AgentOptions("conflict", interval=60, not_ready_for=0),
                      metrics=metrics)
        try:
            yield agent, metrics, ns
        finally:
            agent.shutdown()
            desired.close()


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_a_foreign_drop_before_k3snets_jump_leaves_the_rest_of_the_node_repaired_kernel(
        require_root: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        backend: str) -> None:
    with _agent(tmp_path, monkeypatch, backend) as (agent, metrics, ns):
        assert agent.run_pass().status == "ok"
        assert _routes(ns) == {"10.100.0.0/24", "10.101.0.0/24"}
        _drop_first(ns, backend)
        rules = _firewall(ns, backend)
        run_in(ns, ["ip", "route", "del", "10.101.0.0/24", "proto", "211"])  # drift
        run_in(ns, ["sysctl", "-qw", "net.ipv4.ip_forward=0"])  # drift
        result = agent.run_pass()
        assert result.status == "failed"
        assert result.message.startswith("conflict: foreign state conflicts with the spec")
        assert "10.100.0.0/24" in result.message
        assert "everything else converged" in result.message
        # The unrelated drift is repaired while the DROP stands ...
        assert _routes(ns) == {"10.100.0.0/24", "10.101.0.0/24"}
        assert _forwarding(ns) == "1"
        assert sorted(c.kind for c in result.applied) == ["route", "sysctl"]
        # ... and nothing of the conflict forced: the foreign rule first, k3snet's as they were.
        assert _firewall(ns, backend) == rules
        sample = metrics.registry.get_sample_value
        assert sample("k3snet_agent_conflicts_total") == 1
        assert sample("k3snet_agent_sync_failures_total", {"reason": "conflict"}) == 1
        assert sample("k3snet_agent_changes_total", {"action": "add", "kind": "route"}) == 3
        # Still reported on every pass, and readiness goes after NOT_READY_AFTER of them.
        assert agent.readiness()[0] is True
        for _ in range(2):
            again = agent.run_pass()
            assert again.status == "failed"
            assert again.applied == ()
            assert again.message.startswith("conflict: ")
        assert agent.readiness()[0] is False
        assert sample("k3snet_agent_conflicts_total") == 3
        assert _firewall(ns, backend) == rules


# A device route, and a route via a gateway that only it reaches on that device.
GATEWAY_SPEC = """apiVersion: k3snet.io/v1alpha1
kind: EgressSpec
destinations:
  - cidr: 10.100.0.0/24
    device: eth1
  - cidr: 10.200.0.0/24
    gateway: 10.100.0.1
    device: eth1
"""


def test_a_route_via_a_gateway_a_foreign_route_holds_the_way_to_is_left_out_kernel(
        require_root: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A foreign route holds the place of the spec's device route (through eth0): the
    # route via 10.100.0.1 dev eth1 cannot be written ("Nexthop has invalid gateway").
    # Planned all the same, it failed the apply of the rest: the pass said "apply" and
    # repaired nothing (ip_forward stayed off) for as long as the foreign route stood.
    with _agent(tmp_path, monkeypatch, "netlink", GATEWAY_SPEC) as (agent, metrics, ns):
        run_in(ns, ["ip", "route", "add", "10.100.0.0/24", "dev", "eth0", "proto", "static"])
        run_in(ns, ["sysctl", "-qw", "net.ipv4.ip_forward=0"])
        result = agent.run_pass()
        assert result.status == "failed"
        assert result.message.startswith("conflict: foreign state conflicts with the spec: 2 "
                                          "wanted object(s)"), result.message
        assert "only by the spec's route to 10.100.0.0/24" in result.message
        assert [c.kind for c in result.applied] == ["sysctl"]
        assert _forwarding(ns) == "1"
        assert _routes(ns) == set()
        assert metrics.registry.get_sample_value("k3snet_agent_conflicts_total") == 1
        # The foreign route gone, the next pass puts the device route in: no conflict
        # left. (The route via the gateway is then held: the node facts never count
        # k3snet's own routes as a way to a gateway.)
        run_in(ns, ["ip", "route", "del", "10.100.0.0/24", "dev", "eth0", "proto", "static"])
        after = agent.run_pass()
        assert not after.message.startswith("conflict: "), after.message
        assert "10.100.0.0/24" in _routes(ns)
