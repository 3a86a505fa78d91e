"""Routes via a gateway without device: the kernel picks the device and reports it.

A wanted route that leaves the device out is in place when k3snet's route at its
key equals it but for the device (:meth:`~k3snet.model.NetObject.held_by`): the
plan holds it (``Plan.held``) instead of replacing it on every pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import ip_network

import attrs
from hypothesis import given
from hypothesis import strategies as st

from k3snet import Plan, State, plan
from k3snet.model import NetObject, Route
from k3snet.testing import strategies as ks

_GATEWAYS: dict[str, Sequence[str]] = {
    "eth0": ["192.168.1.1", "fd01:1::1"], "eth1": ["192.168.1.254"]}
_routes = ks.routes(
    destinations=st.sampled_from(["192.168.2.0/24", "192.168.3.0/24", "fd01:2::/64"]).map(
        ip_network),
    gateways=_GATEWAYS, devices=(None, "eth0", "eth1"), tables=(254,), metrics=(None, 100),
    protocols=(211, 4))
_foreign = ks.routes(
    destinations=st.sampled_from(["192.168.2.0/24", "fd01:2::/64"]).map(ip_network),
    gateways=_GATEWAYS, devices=("eth0", "eth1"), tables=(254,), metrics=(0, 50, 1024),
    protocols=(4,))


def _kernel_device(route: Route) -> str:
    """The device the kernel picks: the one whose gateways hold the route's."""
    return next(dev for dev, gws in _GATEWAYS.items() if str(route.gateway) in gws)


def as_the_kernel_reports(state: State) -> State:
    """``state`` with each device-less route given the device the kernel picked."""
    def read_back(obj: NetObject) -> NetObject:
        if isinstance(obj, Route) and obj.device is None:
            return attrs.evolve(obj, device=_kernel_device(obj))
        return obj
    return State(owned=[read_back(o) for o in state.owned], foreign=state.foreign)


def test_a_route_without_device_in_place_with_the_kernels_device_is_held_not_replaced() -> None:
    wanted = Route("192.168.2.0/24", gateway="192.168.1.1")
    in_place = Route("192.168.2.0/24", gateway="192.168.1.1", device="eth0")
    desired = State(owned=[wanted])
    p = plan(State(owned=[in_place]), desired)
    assert p.empty
    assert p.held == ((wanted, in_place),)
    assert p.target(desired) == {in_place}
    assert Plan.from_json(p.to_json()) == p
    assert p.only(["nat"]).held == ()
    # Anything else that differs is still replaced, the device included when it is named.
    for other in (Route("192.168.2.0/24", gateway="192.168.1.254"),
                  Route("192.168.2.0/24", gateway="192.168.1.1", device="eth1"),
                  Route("192.168.2.0/24", gateway="192.168.1.1", protocol="static")):
        again = plan(State(owned=[in_place]), State(owned=[other]))
        assert [c.action for c in again] == ["replace"], other
        assert again.held == ()


def test_a_held_route_behind_a_foreign_route_doing_another_job_is_a_conflict() -> None:
    wanted = Route("192.168.2.0/24", gateway="192.168.1.1", metric=100)
    in_place = Route("192.168.2.0/24", gateway="192.168.1.1", device="eth0", metric=100)
    foreign = Route("192.168.2.0/24", gateway="192.168.1.254", device="eth1", metric=50,
                    protocol="static")
    desired = State(owned=[wanted])
    p = plan(State(owned=[in_place], foreign=[foreign]), desired)
    assert p.empty
    assert p.held == ()
    [note] = p.notes
    assert (note.status, note.wanted, note.foreign, note.owned) == (
        "conflict", wanted, foreign, in_place)
    assert p.target(desired) == {in_place}


@given(ks.states(_routes, max_owned=4, max_foreign=0),
       ks.states(_routes, foreign=_foreign, max_owned=4, max_foreign=3))
def test_soundness_and_idempotence_when_the_kernel_fills_in_the_device(
        desired: State, observed: State) -> None:
    observed = as_the_kernel_reports(observed)
    p = plan(observed, desired)
    assert p.apply_to(observed).owned == p.target(desired)
    applied = as_the_kernel_reports(p.apply_to(observed))
    again = plan(applied, desired)
    assert again.empty, again.render()
    assert again.apply_to(applied).owned == again.target(desired)
    assert Plan.from_json(again.to_json()) == again
