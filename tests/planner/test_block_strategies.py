"""The exported strategies draw the foreign blocks the planner judges (ForwardBlock,
NatBlock, RouteBlock), each accepted by its model and round-tripping through its dict
form: ``for_type`` had none of them, and a planner property of a third party never met
a foreign drop or an earlier NAT rule."""

from __future__ import annotations

from ipaddress import ip_network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from k3snet import State, plan
from k3snet.errors import ModelError
from k3snet.model import ForwardBlock, NatBlock, NetObject, RouteBlock, object_from_dict
from k3snet.testing import strategies as ks

_nets = st.sampled_from(["10.42.0.0/16", "192.168.2.0/24", "fd42:42::/56",
                         "fd01:2::/64"]).map(ip_network)


@pytest.mark.parametrize("cls", [ForwardBlock, NatBlock, RouteBlock])
@given(data=st.data())
def test_for_type_draws_each_foreign_block_the_model_accepts_and_round_trips(
        cls: type[NetObject], data: st.DataObject) -> None:
    obj = data.draw(ks.for_type(cls))
    assert type(obj) is cls
    assert object_from_dict(obj.to_dict()) == obj


@given(ks.forward_rules(sources=_nets, destinations=_nets),
       st.lists(ks.forward_blocks(networks_of=_nets, verdicts=("drop", "reject")), max_size=3),
       st.lists(ks.nat_blocks(networks_of=_nets), max_size=3))
def test_a_wanted_forward_rule_a_drawn_final_block_decides_is_a_conflict_never_added(
        wanted: NetObject, drops: list[ForwardBlock], nat: list[NatBlock]) -> None:
    p = plan(State(foreign=[*drops, *nat]), State(owned=[wanted]))
    deciding = [b for b in drops if b.decides(wanted)]  # type: ignore[arg-type]
    assert bool(p.conflicts) == bool(deciding)
    assert bool(p.changes) == (not deciding)


@pytest.mark.parametrize("make", [
    lambda: ks.forward_blocks(devices=["eth0 "]), lambda: ks.forward_blocks(verdicts=["accept"]),
    lambda: ks.nat_blocks(actions=["dnat"]), lambda: ks.forward_blocks(family=5),
    lambda: ks.nat_blocks(networks_of="10.0.0.0/8"),  # type: ignore[arg-type]
])
def test_block_strategies_refuse_bad_arguments_up_front(make: object) -> None:
    with pytest.raises(ModelError):
        make()  # type: ignore[operator]
