"""A route via a gateway only a conflicted device route of the spec reaches is a conflict.

The kernel checks a route's gateway when it is written: a route of scope link on the
route's device must reach it ("Nexthop has invalid gateway"). When a foreign route
holds the place of the spec's device route (the plan's ``!`` conflict, left out), a
route via a gateway in it on that device could only fail, and with it the apply of
every other change (all or nothing): ``k3snet apply --allow-conflicts`` and the agent's
passes under a conflict applied nothing. The plan sets it aside as the same conflict.
"""

from __future__ import annotations

import attrs
import pytest

from k3snet.model import Route, State
from k3snet.model.sysctl import Sysctl
from k3snet.planner import plan

FAMILIES = {
    4: ("10.100.0.0/24", "10.200.0.0/24", "10.100.0.1"),
    6: ("fd00:100::/64", "fd00:200::/64", "fd00:100::1"),
}


def _case(family: int) -> tuple[Route, Route, Route]:
    link, far, gateway = FAMILIES[family]
    device = Route(link, device="eth1")
    via = Route(far, gateway=gateway, device="eth1")
    foreign = Route(link, device="eth2", protocol=4)
    return device, via, foreign


@pytest.mark.parametrize("family", [4, 6])
def test_a_route_whose_gateway_only_a_blocked_device_route_reaches_is_a_conflict(
        family: int) -> None:
    device, via, foreign = _case(family)
    forward = Sysctl("net.ipv4.ip_forward", "1")
    p = plan(State(foreign=[foreign]), State(owned=[forward, device, via]))
    assert [c.after for c in p.changes] == [forward]
    assert [(n.wanted, n.foreign) for n in p.conflicts] == [(device, foreign), (via, foreign)]
    assert "only by the spec's route to" in p.conflicts[1].render()
    # Sound: what the plan leaves is what its target says.
    desired = State(owned=[forward, device, via])
    assert p.apply_to(State(foreign=[foreign])).owned == p.target(desired)


@pytest.mark.parametrize("family", [4, 6])
def test_a_replace_via_such_a_gateway_keeps_the_route_in_place(family: int) -> None:
    device, via, foreign = _case(family)
    old_via = Route(via.destination, device="eth1")  # in place: through the device alone
    assert old_via.key == via.key
    p = plan(State(owned=[old_via], foreign=[foreign]), State(owned=[device, via]))
    assert p.changes == ()
    assert [(n.wanted, n.owned) for n in p.conflicts] == [(device, None), (via, old_via)]
    assert p.apply_to(State(owned=[old_via], foreign=[foreign])).owned == p.target(
        State(owned=[device, via]))


@pytest.mark.parametrize("family", [4, 6])
def test_a_gateway_another_link_route_reaches_is_still_added(family: int) -> None:
    device, via, foreign = _case(family)
    covering = Route(device.destination.supernet(), device="eth1", protocol=2)
    p = plan(State(foreign=[foreign, covering]), State(owned=[device, via]))
    assert [c.after for c in p.changes] == [via]
    assert [n.wanted for n in p.conflicts] == [device]


def test_a_gateway_on_another_device_than_the_blocked_route_is_still_added() -> None:
    device, via, foreign = _case(4)
    other = Route(via.destination, gateway=via.gateway, device="eth3")
    p = plan(State(foreign=[foreign]), State(owned=[device, other]))
    assert [c.after for c in p.changes] == [other]


@pytest.mark.parametrize("family", [4, 6])
def test_a_link_route_the_plan_deletes_does_not_reach_the_gateway(family: int) -> None:
    # The spec's device route moved from a /16 to a /24 a foreign route blocks: the /16
    # is deleted first, so the kernel refuses the route via the gateway in it.
    device, via, foreign = _case(family)
    old = Route(device.destination.supernet(8), device="eth1")
    forward = Sysctl("net.ipv4.ip_forward", "1")
    observed = State(owned=[old], foreign=[foreign])
    desired = State(owned=[forward, device, via])
    p = plan(observed, desired)
    assert [(c.action, c.before or c.after) for c in p.changes] == [
        ("delete", old), ("add", forward)]
    assert [(n.wanted, n.foreign) for n in p.conflicts] == [(device, foreign), (via, foreign)]
    assert p.apply_to(observed).owned == p.target(desired)


@pytest.mark.parametrize("family", [4, 6])
def test_a_link_route_the_plan_replaces_reaches_by_what_it_becomes(family: int) -> None:
    device, via, foreign = _case(family)
    wide = device.destination.supernet(8)
    elsewhere = "10.9.9.9" if family == 4 else "fd00:999::9"
    # Through the device alone now, via a gateway after: the gateway is no longer reached.
    old = Route(wide, device="eth1")
    new = Route(wide, gateway=elsewhere, device="eth1")
    p = plan(State(owned=[old], foreign=[foreign]), State(owned=[device, new, via]))
    assert [c.after for c in p.changes] == [new]
    assert [n.wanted for n in p.conflicts] == [device, via]
    # And the other way: the route through the device alone the replace makes reaches it.
    p = plan(State(owned=[new], foreign=[foreign]), State(owned=[device, old, via]))
    assert [c.after for c in p.changes] == [old, via]
    assert [n.wanted for n in p.conflicts] == [device]


def test_an_ipv4_device_route_of_scope_universe_does_not_reach_the_gateway() -> None:
    # fib_check_nh_v4_gw looks the gateway up at scope link: a route through the device
    # alone but of scope global (`ip route add 10.100.0.0/16 dev eth1 scope global`) is
    # skipped, "Nexthop has invalid gateway" (kernel-checked).
    device, via, foreign = _case(4)
    wide = Route(device.destination.supernet(8), device="eth1", scope="universe", protocol=4)
    p = plan(State(foreign=[foreign, wide]), State(owned=[device, via]))
    assert p.changes == ()
    assert [n.wanted for n in p.conflicts] == [device, via]
    # Of scope host it does (the kernel takes it).
    host = attrs.evolve(wide, scope="host")
    p = plan(State(foreign=[foreign, host]), State(owned=[device, via]))
    assert [c.after for c in p.changes] == [via]


def test_setting_routes_aside_compares_no_add_with_the_others(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Linear in the plan's size: each route set aside was taken out of the adds by
    # list.remove(), an equality test against every add before it (quadratic: 10 000
    # routes and 2 000 set aside, 8 s of plan). Counted, not timed.
    device, _, foreign = _case(4)
    others = [Route(f"100.64.{i}.0/24", gateway="192.168.1.1", device="eth0")
              for i in range(200)]
    vias = [Route(f"120.0.{i}.0/24", gateway="10.100.0.1", device="eth1") for i in range(50)]
    compared = 0
    real_eq = Route.__eq__

    def counting_eq(self: Route, other: object) -> bool:
        nonlocal compared
        compared += 1
        return real_eq(self, other)

    monkeypatch.setattr(Route, "__eq__", counting_eq)
    p = plan(State(foreign=[foreign]), State(owned=[device, *others, *vias]))
    assert [c.after for c in p.changes] == others
    assert [n.wanted for n in p.conflicts] == [device, *vias]
    assert compared < len(others)


def test_an_ipv6_link_local_gateway_is_never_behind_a_blocked_route() -> None:
    # ip6_validate_gw looks no link-local gateway up (on every link), as the netlink
    # backend's check: the kernel writes the route via it whatever the routes
    # (kernel-checked: fe80::/64 on eth2 alone, `via fe80::1 dev eth1` written).
    device = Route("fe80::/64", device="eth1")
    foreign = Route("fe80::/64", device="eth2", protocol=4)
    via = Route("fd00:200::/64", gateway="fe80::1", device="eth1")
    p = plan(State(foreign=[foreign]), State(owned=[device, via]))
    assert [c.after for c in p.changes] == [via]
    assert [n.wanted for n in p.conflicts] == [device]
