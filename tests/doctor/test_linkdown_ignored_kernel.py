"""``ignore_routes_with_linkdown``: the failover a node with two uplinks relies on.

A route through an uplink without carrier stays, flagged ``linkdown``, and the kernel
still sends there by default (``test_link_down_kernel.py``). With
``ignore_routes_with_linkdown`` set, the kernel passes over it and the next best route
serves: a second uplink's default route, or a multipath route's other nexthop. The
doctor took the route anyway and said "link-down: goes nowhere" for a flow that
reaches. Here the doctor's lookup, made from a live capture of a namespace, is
compared with the kernel's own (``ip -j route get``) for each setting.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from ipaddress import ip_address

import pytest

from k3snet.doctor import NodeCapture, NodeState
from k3snet.doctor.routing import lookup
from k3snet.lab.netns import run_in, temporary_netns

pytestmark = [pytest.mark.kernel]

# (uplink with carrier, uplink without), their networks and gateways, and a
# destination routed through the uplink without carrier.
NETS = {4: ("10.1.0.1/24", "10.2.0.1/24", "10.1.0.2", "10.2.0.2", "192.168.50.0/24",
            "192.168.50.7"),
        6: ("fd01::1/64", "fd02::1/64", "fd01::2", "fd02::2", "fd50::/64", "fd50::7")}


@pytest.fixture
def node() -> Iterator[str]:
    """A namespace with uplinks ``up0`` (carrier) and ``dn0`` (its peer set down)."""
    with temporary_netns("lkd") as ns:
        run_in(ns, ["ip", "link", "set", "lo", "up"])
        for name, peer in (("up0", "up1"), ("dn0", "dn1")):
            run_in(ns, ["ip", "link", "add", name, "type", "veth", "peer", "name", peer])
            run_in(ns, ["ip", "link", "set", name, "up"])
        run_in(ns, ["ip", "link", "set", "up1", "up"])  # dn1 stays down: dn0 has no carrier
        for family, (up, down, *_) in NETS.items():
            extra = ["nodad"] if family == 6 else []
            run_in(ns, ["ip", "addr", "add", up, "dev", "up0", *extra])
            run_in(ns, ["ip", "addr", "add", down, "dev", "dn0", *extra])
        yield ns


def _sysctl(ns: str, name: str, value: int) -> None:
    run_in(ns, ["sysctl", "-q", "-w", f"{name}={value}"])


def _kernel_device(ns: str, destination: str) -> str:
    answer = json.loads(run_in(ns, ["ip", "-j", "route", "get", destination]).stdout)
    return str(answer[0]["dev"])


def _doctor_devices(ns: str, family: int, destination: str) -> set[str | None]:
    state = NodeState.from_capture(NodeCapture.read_live(ns))
    found = lookup(state.routes[family], state.rules[family], ip_address(destination),
                   ignore_linkdown=state.linkdown_ignored(family))
    assert found.route is not None, found
    return {found.route.device, *(device for _, device in found.route.nexthops)}


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("setting", ["unset", "device", "all"])
def test_the_doctor_picks_the_route_the_kernel_picks_beside_a_linkdown_one(
        node: str, family: int, setting: str) -> None:
    _, _, gw_up, gw_down, network, destination = NETS[family]
    ip = ["ip", f"-{family}"]
    run_in(node, [*ip, "route", "add", network, "via", gw_down, "dev", "dn0"])
    run_in(node, [*ip, "route", "add", "default", "via", gw_up, "dev", "up0"])
    routes = run_in(node, [*ip, "-j", "route", "show", network]).stdout
    assert "linkdown" in routes  # the kernel's own view: the route stays, flagged
    if setting != "unset":
        _sysctl(node, f"net.ipv{family}.conf.{'dn0' if setting == 'device' else 'all'}"
                ".ignore_routes_with_linkdown", 1)
    expected = "dn0" if setting == "unset" else "up0"
    assert _kernel_device(node, destination) == expected
    assert _doctor_devices(node, family, destination) == {expected}


@pytest.mark.parametrize("setting", ["unset", "device"])
def test_the_doctor_drops_a_multipath_nexthop_the_kernel_passes_over(
        node: str, setting: str) -> None:
    if setting == "device":
        # Set first: the kernel weighs a multipath route's nexthops when the route or a
        # link changes (fib_rebalance), not when this sysctl does.
        _sysctl(node, "net.ipv4.conf.dn0.ignore_routes_with_linkdown", 1)
    run_in(node, ["ip", "route", "add", "192.168.60.0/24",
                  "nexthop", "via", "10.1.0.2", "dev", "up0",
                  "nexthop", "via", "10.2.0.2", "dev", "dn0"])
    if setting == "device":
        # Every flow hashes onto the nexthop with carrier: try a few.
        kernel = {_kernel_device(node, f"192.168.60.{host}") for host in range(1, 30)}
        assert kernel == {"up0"}
        assert _doctor_devices(node, 4, "192.168.60.7") == {"up0"}
    else:
        assert _doctor_devices(node, 4, "192.168.60.7") == {"up0", "dn0"}


def test_with_every_nexthop_linkdown_and_ignored_the_lookup_goes_on(node: str) -> None:
    """A route all of whose nexthops are passed over is no route: the shorter one serves,
    and with none left the kernel and the doctor both say unreachable."""
    run_in(node, ["ip", "route", "add", "192.168.50.0/24", "via", "10.2.0.2", "dev", "dn0"])
    _sysctl(node, "net.ipv4.conf.dn0.ignore_routes_with_linkdown", 1)
    kernel = run_in(node, ["ip", "route", "get", "192.168.50.7"], check=False)
    assert kernel.returncode != 0
    assert "unreachable" in kernel.stderr.lower()
    state = NodeState.from_capture(NodeCapture.read_live(node))
    found = lookup(state.routes[4], state.rules[4], ip_address("192.168.50.7"),
                   ignore_linkdown=state.linkdown_ignored(4))
    assert found.type == "none", found
