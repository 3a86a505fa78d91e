"""The planner's order on both of its paths: few changes in a big state, and many.

``plan`` sorts a small set of changed objects directly and picks a large one
from the state's ordered tuple (more than 8 objects per change). Both paths
must give the same order: deletes NAT first, then replaces and adds, sysctls and
routes before the rules relying on them (device routes before routes via a
gateway), then the device routes a replaced route via a gateway may have relied on.
"""

from __future__ import annotations

import attrs
import pytest

from k3snet import State, plan
from k3snet.model import ForwardRule, MasqueradeRule, NetObject, Route, Sysctl
from k3snet.planner import Change

_BULK = [Route(f"192.168.{i}.0/24", gateway="192.168.200.1", device="eth0") for i in range(20)]
_ADDED: list[NetObject] = [
    MasqueradeRule("10.42.0.0/16", destination="172.16.0.0/24", out_interface="eth0"),
    ForwardRule("10.42.0.0/16", "172.16.0.0/24", out_interface="eth0"),
    Route("172.16.0.0/24", gateway="192.168.200.1", device="eth0"),
    Sysctl("net.ipv4.ip_forward", 1),
]


@pytest.mark.parametrize("bulk", [20, 3], ids=["small-subset-path", "linear-path"])
def test_adds_come_in_dependency_order(bulk: int) -> None:
    observed = State(owned=_BULK[:bulk])
    desired = State(owned=[*_BULK[:bulk], *_ADDED])
    p = plan(observed, desired)
    assert [c.action for c in p.changes] == ["add"] * 4
    assert [c.subject.kind for c in p.changes] == ["sysctl", "route", "forward", "nat"]


@pytest.mark.parametrize("bulk", [20, 3], ids=["small-subset-path", "linear-path"])
def test_deletes_come_nat_first(bulk: int) -> None:
    observed = State(owned=[*_BULK[:bulk], *_ADDED])
    desired = State(owned=_BULK[:bulk])
    p = plan(observed, desired)
    assert [c.subject.kind for c in p.changes] == ["nat", "forward", "route", "sysctl"]
    assert {c.action for c in p.changes} == {"delete"}


def test_two_adds_of_one_kind_in_a_big_state_come_in_the_total_order() -> None:
    first = Route("172.16.0.0/24", gateway="192.168.200.1", device="eth0")
    second = Route("172.16.1.0/24", gateway="192.168.200.1", device="eth0")
    p = plan(State(owned=_BULK), State(owned=[*_BULK, second, first]))
    assert [c.after for c in p.changes] == [first, second]


def test_replaces_in_a_big_state_keep_the_key_and_the_total_order() -> None:
    moved = [Route(r.destination, gateway="192.168.200.254", device="eth0") for r in _BULK[:2]]
    p = plan(State(owned=_BULK), State(owned=[*_BULK[2:], *reversed(moved)]))
    assert [c.action for c in p.changes] == ["replace", "replace"]
    assert [c.after for c in p.changes] == moved
    assert [c.before for c in p.changes] == _BULK[:2]


# A route via a gateway the kernel resolves through another of k3snet's routes (a
# device route to the gateway's network, here in table 100 where nothing else
# reaches it): that route must be there first, and go last.
_LINK = Route("192.168.9.0/24", device="d0", table=100)
_VIA = [Route("10.0.0.0/8", gateway="192.168.9.1", table=100),
        Route("10.0.0.0/8", gateway="192.168.9.1", device="d0", table=101)]


@pytest.mark.parametrize("bulk", [20, 3], ids=["small-subset-path", "linear-path"])
def test_routes_via_a_gateway_are_added_after_and_deleted_before_device_routes(
        bulk: int) -> None:
    observed = State(owned=_BULK[:bulk])
    desired = State(owned=[*_BULK[:bulk], *_VIA, _LINK])
    added = plan(observed, desired)
    assert [c.after for c in added.changes] == [_LINK, *_VIA]
    removed = plan(desired, observed)
    assert [c.before for c in removed.changes] == [*_VIA, _LINK]


# A route via a gateway moved to a gateway only a new device route of k3snet's reaches,
# while the device route reaching the old gateway goes: the kernel refuses the replace
# before that device route is there ("Nexthop has invalid gateway"), and an undo (in
# reverse) refuses to put the old gateway back after its device route is gone.
_OLD_LINK = Route("192.168.9.0/24", device="d0", table=100)
_NEW_LINK = Route("192.168.8.0/24", device="d0", table=100)
_OLD_VIA = Route("10.0.0.0/8", gateway="192.168.9.1", device="d0", table=100)
_NEW_VIA = Route("10.0.0.0/8", gateway="192.168.8.1", device="d0", table=100)


@pytest.mark.parametrize("bulk", [20, 3], ids=["small-subset-path", "linear-path"])
@pytest.mark.parametrize("family", [4, 6])
def test_a_gateway_moved_behind_a_new_device_route_is_replaced_between_the_two(
        bulk: int, family: int) -> None:
    if family == 4:
        old_link, new_link, old_via, new_via = _OLD_LINK, _NEW_LINK, _OLD_VIA, _NEW_VIA
    else:
        old_link = Route("fd09::/64", device="d0", table=100)
        new_link = Route("fd08::/64", device="d0", table=100)
        old_via = Route("fd77::/48", gateway="fd09::1", device="d0", table=100)
        new_via = Route("fd77::/48", gateway="fd08::1", device="d0", table=100)
    observed = State(owned=[*_BULK[:bulk], old_link, old_via])
    desired = State(owned=[*_BULK[:bulk], new_link, new_via])
    p = plan(observed, desired)
    assert [str(c) for c in p.changes] == [
        str(Change.add(new_link)), str(Change.replace(old_via, new_via)),
        str(Change.delete(old_link))]
    # The way back is the same plan's mirror image.
    back = plan(desired, observed)
    assert [str(c) for c in back.changes] == [
        str(Change.add(old_link)), str(Change.replace(new_via, old_via)),
        str(Change.delete(new_link))]


@pytest.mark.parametrize("bulk", [20, 3], ids=["small-subset-path", "linear-path"])
def test_a_route_moved_to_another_metric_is_added_before_its_old_form_is_deleted(
        bulk: int) -> None:
    """Make before break: deleted first, the destination had no route in between. The
    device route the old form's gateway relied on goes after it (an undo, in reverse,
    puts it back first), while the new gateway's device route comes before."""
    old_via = attrs.evolve(_OLD_VIA, metric=100)
    new_via = attrs.evolve(_NEW_VIA, metric=200)
    observed = State(owned=[*_BULK[:bulk], _OLD_LINK, old_via])
    desired = State(owned=[*_BULK[:bulk], _NEW_LINK, new_via])
    p = plan(observed, desired)
    assert [str(c) for c in p.changes] == [
        str(Change.add(_NEW_LINK)), str(Change.add(new_via)), str(Change.delete(old_via)),
        str(Change.delete(_OLD_LINK))]
    moved = plan(observed, State(owned=[*_BULK[:bulk], _OLD_LINK,
                                        attrs.evolve(old_via, metric=50)]))
    assert [c.action for c in moved.changes] == ["add", "delete"]


@pytest.mark.parametrize(("old", "new"), [("net.ipv4.conf.all.forwarding", "net.ipv4.ip_forward"),
                                          ("net.ipv4.ip_forward", "net.ipv4.conf.all.forwarding")])
def test_a_sysctl_wanted_under_its_other_name_is_added_before_the_old_name_is_given_back(
        old: str, new: str) -> None:
    """Make before break: ``ip_forward`` and ``conf.all.forwarding`` are one kernel value.
    The old name given back first wrote the value k3snet found (forwarding off), and the
    pods' traffic was dropped until the new name's add (for good when the run was killed
    in between)."""
    observed = State(owned=[Sysctl(old, "1", previous="0"), *_BULK[:3]])
    p = plan(observed, State(owned=[Sysctl(new, "1"), *_BULK[:3]]))
    assert [str(c) for c in p.changes] == [str(Change.add(Sysctl(new, "1"))),
                                           str(Change.delete(Sysctl(old, "1")))]
    # The netlink backend reads ip_forward always, owned or not: under the new name, the
    # value of k3snet's own write. It met the new name, which was not added, and the
    # give-back turned forwarding off ("= met", for good until the next run).
    seen = State(owned=observed.owned, foreign=[Sysctl(new, "1")])
    again = plan(seen, State(owned=[Sysctl(new, "1"), *_BULK[:3]]))
    assert again.changes == p.changes
    assert not again.notes
    kept = plan(seen, State(owned=[Sysctl(new, "1"), Sysctl(old, "1"), *_BULK[:3]]))
    assert kept.changes == ()
    assert [n.status for n in kept.notes] == ["met"]  # both wanted: the old name stays
    other = plan(observed, State(owned=[Sysctl("net.ipv4.conf.all.rp_filter", "1"), *_BULK[:3]]))
    assert [c.action for c in other.changes] == ["delete", "add"]
