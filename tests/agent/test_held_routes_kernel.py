"""The agent holds a route whose gateway the node lost, and converges the rest (kernel).

Wired as ``k3snet agent --backend netlink --backend nftables`` in a fresh
namespace: eth0 on 192.168.1.0/24, a VPN-like vpn0 (a veth) on 10.9.0.0/24. The
VPN's address goes: the kernel flushes the route through it, the node facts find
its gateway unreachable. Checked in the kernel's own listing (``ip -j route``).
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
    gateway: 10.9.0.1
    device: vpn0
"""


def _our_rules(ns: str) -> list[Any]:
    listing = json.loads(run_in(ns, ["nft", "-j", "list", "table", "inet", "k3snet"]).stdout)
    return [item["rule"]["expr"] for item in listing["nftables"] if "rule" in item]


def _our_routes(ns: str) -> dict[str, dict[str, Any]]:
    listing = json.loads(run_in(ns, ["ip", "-4", "-j", "route", "show", "proto", "211"]
                                ).stdout or "[]")
    return {route["dst"]: route for route in listing}


@contextlib.contextmanager
def _agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, str]]:
    from k3snet import cli  # noqa: PLC0415 - the CLI's own agent wiring, as `k3snet agent`
    from k3snet.agent import Agent, AgentOptions, FileSpecSource  # noqa: PLC0415

    monkeypatch.setenv("K3SNET_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("K3SNET_LOCK_DIR", str(tmp_path))
    with temporary_netns("hold") as ns:
        run_in(ns, ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"])
        run_in(ns, ["ip", "link", "set", "eth1", "up"])
        run_in(ns, ["ip", "addr", "add", "192.168.1.5/24", "dev", "eth0"])
        run_in(ns, ["ip", "link", "set", "eth0", "up"])
        run_in(ns, ["ip", "link", "add", "vpn0", "type", "veth", "peer", "name", "vpn1"])
        run_in(ns, ["ip", "link", "set", "vpn1", "up"])
        run_in(ns, ["ip", "addr", "add", "10.9.0.2/24", "dev", "vpn0"])
        run_in(ns, ["ip", "link", "set", "vpn0", "up"])
        spec = tmp_path / "spec.yaml"
        spec.write_text(SPEC)
        args = cli.build_parser().parse_args(["agent", "-f", str(spec), "--netns", ns,
                                              "--backend", "netlink", "--backend", "nftables"])
        desired = cli._AgentDesired(args)
        agent = Agent(FileSpecSource(spec), lambda s: cli._backend(args, s), desired,
                      AgentOptions("hold", interval=60))
        try:
            yield agent, ns
        finally:
            agent.shutdown()
            desired.close()


def test_a_route_through_a_lost_gateway_is_held_while_the_rest_is_repaired_kernel(
        require_root: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with _agent(tmp_path, monkeypatch) as (agent, ns):
        assert agent.run_pass().status == "ok"
        assert set(_our_routes(ns)) == {"10.100.0.0/24", "10.101.0.0/24"}
        rules = _our_rules(ns)
        assert any("vpn0" in json.dumps(rule) for rule in rules)
        run_in(ns, ["ip", "addr", "del", "10.9.0.2/24", "dev", "vpn0"])
        assert set(_our_routes(ns)) == {"10.100.0.0/24"}  # the kernel flushed it
        run_in(ns, ["ip", "route", "del", "10.100.0.0/24", "proto", "211"])  # drift
        held = agent.run_pass()
        assert held.status == "failed"
        assert "unreachable: 1 destination(s) held" in held.message
        assert "10.101.0.0/24" in held.message
        # The other destination's route is repaired; the held one is not forced back.
        assert set(_our_routes(ns)) == {"10.100.0.0/24"}
        assert _our_rules(ns) == rules  # the NAT and forward rules through vpn0 stay
        # The facts can be wrong: the gateway reached on-link. That route stays.
        run_in(ns, ["ip", "route", "add", "10.101.0.0/24", "via", "10.9.0.1", "dev", "vpn0",
                    "onlink", "proto", "211"])
        again = agent.run_pass()
        assert again.status == "failed"
        assert again.applied == ()
        assert set(_our_routes(ns)) == {"10.100.0.0/24", "10.101.0.0/24"}
        run_in(ns, ["ip", "route", "del", "10.101.0.0/24", "proto", "211"])
        run_in(ns, ["ip", "addr", "add", "10.9.0.2/24", "dev", "vpn0"])
        back = agent.run_pass()
        assert back.status == "ok", back.message
        routes = _our_routes(ns)
        assert set(routes) == {"10.100.0.0/24", "10.101.0.0/24"}
        assert routes["10.101.0.0/24"]["gateway"] == "10.9.0.1"
        assert "onlink" not in routes["10.101.0.0/24"].get("flags", [])


def test_held_passes_compile_nothing_again_and_the_address_coming_back_starts_a_pass_kernel(
        require_root: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While the node facts stand still a held pass compiles nothing (the refusal is
    kept with the state: both compiles ran every pass, 2 x 250 ms at 2k destinations),
    observes nothing when no token moved, and the address coming back moves the
    netlink token: the next look starts the pass, with no back-off."""
    from k3snet import cli  # noqa: PLC0415
    from k3snet.converge import compile_for, converge  # noqa: PLC0415

    compiles = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        compiles.append(kwargs.get("hold"))
        return compile_for(*args, **kwargs)

    from k3snet.agent import _loop  # noqa: PLC0415

    converges = []

    def converged(*args: Any, **kwargs: Any) -> Any:
        converges.append(args)
        return converge(*args, **kwargs)

    monkeypatch.setattr(cli, "compile_for", counted)
    monkeypatch.setattr(_loop, "converge", converged)
    with _agent(tmp_path, monkeypatch) as (agent, ns):
        assert agent.run_pass().status == "ok"
        run_in(ns, ["ip", "addr", "del", "10.9.0.2/24", "dev", "vpn0"])
        compiles.clear()
        converges.clear()
        for _ in range(4):
            assert agent.run_pass().status == "failed"
        assert compiles == [frozenset(), {1}]  # the first held pass's two, then none
        assert len(converges) == 1  # then nothing moved: nothing observed
        _, token = agent.changes_seen(None)
        assert token is not None
        assert agent.repair_gap() == agent.options.watch_gap
        run_in(ns, ["ip", "addr", "add", "10.9.0.2/24", "dev", "vpn0"])
        moved, _ = agent.changes_seen(token)
        assert moved
        back = agent.run_pass()
        assert back.status == "ok", back.message
        assert set(_our_routes(ns)) == {"10.100.0.0/24", "10.101.0.0/24"}
