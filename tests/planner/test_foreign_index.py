"""The planner's index of foreign forward and NAT rules judges as a scan of all of them.

Forward and NAT rules have no clash key: every wanted one was judged against every
foreign rule of its kind, wanted x foreign checks (10 000 forward accepts beside 100
foreign rules: 2.4 s of a cold apply). From ``_INDEX_FROM`` foreign objects on, a
wanted one is judged only against those whose destination (and, for NAT, source)
meets its own. That must never change a plan: the same notes, the same changes.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from k3snet import planner
from k3snet.model import (
    ForwardBlock,
    ForwardRule,
    MasqueradeRule,
    NatBlock,
    NetObject,
    SnatRule,
    State,
)
from k3snet.planner import plan

# Nested and disjoint prefixes of both families, so that draws meet often.
NETS = {4: ["0.0.0.0/0", "10.0.0.0/8", "10.42.0.0/16", "10.42.1.0/24", "10.43.0.0/16",
            "192.168.0.0/16", "192.168.2.0/24", "192.168.2.128/25", "192.168.3.0/24",
            "192.168.2.7/32", "172.17.0.0/16"],
        6: ["::/0", "fd00::/8", "fd00:42::/56", "fd00:42::/64", "fd00:43::/112",
            "2001:db8::/32", "2001:db8:2::/48", "2001:db8:2::/64", "2001:db8:3::/48"]}
DEVICES = [None, "eth0", "eth1"]


def _net(version: int) -> st.SearchStrategy[str]:
    return st.sampled_from(NETS[version])


def _narrow(version: int) -> st.SearchStrategy[str]:  # no /0: a rule's own networks
    return st.sampled_from(NETS[version][1:])


@st.composite
def _wanted(draw: st.DrawFn, version: int) -> NetObject:
    kind = draw(st.sampled_from(["forward", "masquerade", "snat"]))
    source, destination = draw(_narrow(version)), draw(_narrow(version))
    if kind == "forward":
        return ForwardRule(source, destination, in_interface=draw(st.sampled_from(DEVICES)),
                           out_interface=draw(st.sampled_from(DEVICES)))
    extra: dict[str, Any] = {"destination": draw(st.sampled_from([None, destination])),
                             "out_interface": draw(st.sampled_from(DEVICES))}
    if kind == "masquerade":
        return MasqueradeRule(source, **extra)
    return SnatRule(source, to_address="192.0.2.9" if version == 4 else "2001:db8::9", **extra)


@st.composite
def _foreign(draw: st.DrawFn, version: int, index: int) -> NetObject:
    kind = draw(st.sampled_from(["forward", "forward-block", "masquerade", "nat-block"]))
    source = draw(st.sampled_from([None, *NETS[version][1:]]))
    destination = draw(st.sampled_from([None, *NETS[version][1:]]))
    device = draw(st.sampled_from(DEVICES))
    text = f"rule {index}"
    if kind == "forward":
        return ForwardRule(source or NETS[version][0], destination or NETS[version][0],
                           out_interface=device)
    if kind == "forward-block":
        return ForwardBlock(version, draw(st.sampled_from(["drop", "reject", "return"])), text,
                            "iptables filter FORWARD", source=source, destination=destination,
                            out_interface=device)
    if kind == "masquerade":
        return MasqueradeRule(source or NETS[version][1], destination=destination,
                              out_interface=device)
    return NatBlock(version, draw(st.sampled_from(["masquerade", "exempt"])), text,
                    "iptables nat POSTROUTING", source=source, destination=destination,
                    out_interface=device)


@st.composite
def _states(draw: st.DrawFn) -> tuple[State, State]:
    version = draw(st.sampled_from([4, 6]))
    wanted = draw(st.lists(_wanted(version), min_size=1, max_size=12,
                           unique_by=lambda o: o.key))
    count = draw(st.integers(planner._INDEX_FROM, planner._INDEX_FROM + 24))
    foreign = [draw(_foreign(version, i)) for i in range(count)]
    return State(foreign=foreign), State(owned=wanted)


@settings(deadline=None)
@given(_states())
def test_the_foreign_index_gives_the_plan_a_scan_of_every_foreign_rule_gives(
        states: tuple[State, State]) -> None:
    observed, desired = states
    indexed = plan(observed, desired)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(planner, "_INDEX_FROM", 10**9)
        scanned = plan(observed, desired)
    assert indexed == scanned
    assert indexed.to_json() == scanned.to_json()


def test_the_index_leaves_out_what_cannot_meet_and_keeps_the_order() -> None:
    """A wanted accept to 192.168.2.0/24 is met by the first foreign accept holding it,
    whatever the many unrelated rules around it, in the foreign objects' order."""
    unrelated = [ForwardBlock(4, "drop", f"-d 172.{16 + i}.0.0/16 -j DROP",
                              "iptables filter FORWARD", destination=f"172.{16 + i}.0.0/16")
                 for i in range(planner._INDEX_FROM)]
    holders = [ForwardRule("10.0.0.0/8", "192.168.0.0/16"),
               ForwardRule("10.0.0.0/8", "192.168.2.0/24")]
    wanted = ForwardRule("10.42.0.0/16", "192.168.2.0/24")
    p = plan(State(foreign=[*unrelated, *holders]), State(owned=[wanted]))
    assert [(n.status, n.foreign) for n in p.notes] == [("met", min(holders,
                                                                   key=lambda o: o.sort_key))]
    blocked = plan(State(foreign=[*unrelated, ForwardBlock(
        4, "drop", "-s 192.168.2.0/24 -j DROP", "iptables filter FORWARD",
        source="192.168.2.0/24")]), State(owned=[wanted]))
    assert [n.status for n in blocked.notes] == ["conflict"]  # the replies' way
