"""How the netlink backend judges IPv6 source-specific routes beside k3snet's, without a
kernel: which pairs it weighs, and what it says when several ``from`` prefixes share
k3snet's destination (the kernel's answers are in ``test_source_routes.py``).

At k3snet's destination the kernel serves a packet from the routes whose ``from`` holds
its source, and passes every route there (k3snet's too) by for the other sources
(``ip -6 route get fd01:2::7 from fd42:42:0:7::5`` answers "Network is unreachable"
beside ``fd01:2::/64 from fd42:42::/64``).
"""

from __future__ import annotations

import ipaddress
import types
from typing import Any

import pytest

from k3snet.backends.netlink import backend as netlink_backend
from k3snet.backends.netlink.backend import NetlinkBackend
from k3snet.backends.netlink.codec import SourceRoute
from k3snet.model import Route
from k3snet.model.cidr import parse_network


def _source(destination: str, source: str, table: int = 254) -> SourceRoute:
    return SourceRoute(ipaddress.IPv6Network(destination), ipaddress.IPv6Network(source),
                       table, f"{destination} from {source} dev eth1 metric 1024")


def _warnings(ours: list[Route], sourced: list[SourceRoute],
              pods: list[str] | None) -> tuple[str, ...]:
    """What the backend's warnings say of ``sourced`` beside ``ours`` (a stand-in for the
    backend's state: its driver reads ``sourced``)."""
    view = types.SimpleNamespace(links=dict, version=(0, 0), in_scope=lambda _table: True)
    driver = types.SimpleNamespace(follows_changes=True,
                                   source_routes=lambda _names: list(sourced))
    state: Any = types.SimpleNamespace(
        _wanted_routes=tuple(ours), _observed=None, _driver=driver, _routes=view,
        pod_cidrs=None if pods is None else tuple(parse_network(p) for p in pods),
        _where="network namespace 'node'", _source_warned=None)
    found: tuple[str, ...] = NetlinkBackend._source_warnings(state)
    return found


def test_each_source_route_is_weighed_only_against_routes_whose_destination_holds_its_own(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent asks at every pass whose routes moved: 2 000 routes of k3snet's beside
    60 source-specific routes elsewhere were 120 000 judgements (10 000 beside 200:
    8 s a pass); a source route is weighed against the routes at its destination or a
    shorter one holding it, no other."""
    judged: list[tuple[Route, SourceRoute]] = []
    real = netlink_backend._source_taking

    def counting(route: Route, other: SourceRoute, *args: Any) -> str | None:
        judged.append((route, other))
        return real(route, other, *args)

    monkeypatch.setattr(netlink_backend, "_source_taking", counting)
    ours = [Route(f"fd01:{i:x}::/64", gateway="fd01:1::1", device="eth0")
            for i in range(2, 2002)]
    elsewhere = [_source(f"fd99:{i:x}::/64", "fd42:42::/56") for i in range(60)]
    at_ours = _source("fd01:7::/64", "fd42:42::/56")
    inside = _source("fd01:8::/80", "fd42:42::/64", table=100)
    found = _warnings(ours, [*elsewhere, at_ours, inside], ["fd42:42::/56"])
    assert len(found) == 1
    assert "`fd01:7::/64 from fd42:42::/56 dev eth1 metric 1024`" in found[0]
    assert {(str(r.destination), o.text.split()[0]) for r, o in judged} <= {
        ("fd01:7::/64", "fd01:7::/64"), ("fd01:8::/64", "fd01:8::/80")}


def _route() -> list[Route]:
    return [Route("fd01:2::/64", gateway="fd01:1::1", device="eth0")]


def test_a_from_holding_part_of_the_pods_at_k3snets_destination_names_the_rest_passed_by(
        ) -> None:
    """``fd01:2::/64 from fd42:42::/64`` beside k3snet's ``fd01:2::/64``, pods in
    ``fd42:42::/56``: the kernel sends the pods of ``fd42:42::/64`` through it, and passes
    every route at ``fd01:2::/64`` by for the other 255 /64s of the pods (unreachable
    here); the warning said only the first."""
    [warning] = _warnings(_route(), [_source("fd01:2::/64", "fd42:42::/64")],
                          ["fd42:42::/56", "10.42.0.0/16"])
    assert "takes the pods' packets from fd42:42::/64 to fd01:2::/64" in warning
    assert ("instead of k3snet's route fd01:2::/64 via fd01:1::1 dev eth0 table main "
            "metric 1024 proto k3snet, and the pods' packets from fd42:42::/56 outside "
            "fd42:42::/64 pass that route by") in warning
    [whole] = _warnings(_route(), [_source("fd01:2::/64", "fd42::/16")], ["fd42:42::/56"])
    assert "pass that route by" not in whole


def test_a_from_holding_no_pod_is_harmless_at_k3snets_destination_when_another_holds_them(
        ) -> None:
    """Beside ``fd01:2::/64 from fd42:42::/56`` (every pod), ``fd01:2::/64 from fd43::/56``
    changes nothing for the pods (the kernel serves them from the first): only the first
    is named, not the second as passing k3snet's route by."""
    found = _warnings(_route(), [_source("fd01:2::/64", "fd42:42::/56"),
                                 _source("fd01:2::/64", "fd43::/56")], ["fd42:42::/56"])
    assert len(found) == 1
    assert "`fd01:2::/64 from fd42:42::/56" in found[0]
    assert "pass" not in found[0]
    [alone] = _warnings(_route(), [_source("fd01:2::/64", "fd43::/56")], ["fd42:42::/56"])
    assert ("makes the kernel pass by k3snet's route fd01:2::/64 via fd01:1::1 dev eth0 "
            "table main metric 1024 proto k3snet for the pods' packets from fd42:42::/56 "
            "(no `from` at that destination holds them") in alone


def test_unknown_pods_at_k3snets_destination_say_the_other_sources_pass_it_by() -> None:
    [warning] = _warnings(_route(), [_source("fd01:2::/64", "fd42:42::/56")], None)
    assert "takes the pods' packets from fd42:42::/56 to fd01:2::/64" in warning
    assert "the packets from any other source pass that route by" in warning


