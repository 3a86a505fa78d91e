"""A foreign drop naming an interface and no address, judged by the node's routes.

A forwarded packet leaves by the device its destination is routed by, and comes in by
the one its source is: ``oifname "docker0" drop`` meets only docker0's subnet, never the
pods' connections, while ``oifname "eth0" drop`` on the uplink holding the default route
meets any destination. The nftables backend read such a drop as nothing (the pods'
connections dropped by ``iptables -I DOCKER-USER -o eth0 -j DROP``, no conflict, no
warning); it now reads it as the iptables backend does
(:class:`~k3snet.backends.routed.RoutedBy`). The kernel case with real packets is in
``tests/iptables/test_docker.py``.
"""

from __future__ import annotations

from typing import Any

from k3snet.backends.nftables.parse import ForeignReader
from k3snet.backends.routed import RoutedBy
from k3snet.model import ForwardBlock, ForwardRule, NetObject, State
from k3snet.planner import plan
from tests.nftables.test_foreign_cases import DROP, Expr, Kernel, daddr, jump, meta

ROUTES = RoutedBy([("172.17.0.0/16", "docker0"), ("0.0.0.0/0", "eth0"),
                   ("10.42.0.0/24", "cni0"), ("192.0.2.0/24", "br-int"),
                   ("fd17::/64", "docker0"), ("::/0", "eth0")])
POD = "10.42.0.0/16"
DB = "192.168.2.0/24"


def docker_user(*rules: list[Expr], family: str = "ip") -> Kernel:
    """iptables-nft's filter FORWARD jumping to DOCKER-USER, which holds ``rules``."""
    return Kernel({(family, "filter", "FORWARD"): ("forward", "accept", [[jump("DOCKER-USER")]]),
                   (family, "filter", "DOCKER-USER"): (None, "", list(rules))})


def blocks(kernel: Kernel, routed: RoutedBy | None = ROUTES) -> set[NetObject]:
    found = ForeignReader(kernel, frozenset(), routed=routed).read()
    return {o for o in found if isinstance(o, ForwardBlock)}


def block(text: str, family: int = 4, **fields: Any) -> ForwardBlock:
    return ForwardBlock(family, "drop", text, "nftables ip filter DOCKER-USER"
                        if family == 4 else "nftables ip6 filter DOCKER-USER", **fields)


def test_a_drop_on_the_uplink_holding_the_default_route_meets_any_destination() -> None:
    found = blocks(docker_user([meta("oifname", "eth0"), DROP]))
    assert found == {block("oifname eth0 drop", out_interface="eth0")}
    wanted = State(owned=[ForwardRule(POD, DB, out_interface="eth0")])
    assert plan(State(foreign=list(found)), wanted).conflicts


def test_a_drop_on_dockers_bridge_meets_only_what_the_node_routes_by_it() -> None:
    # Docker 28's `-A DOCKER ! -i docker0 -o docker0 -j DROP`, read through nft.
    found = blocks(docker_user([meta("iifname", "docker0", "!="), meta("oifname", "docker0"),
                                DROP]))
    assert found == {block("iifname != docker0 oifname docker0 drop",
                           destination="172.17.0.0/16", out_interface="docker0")}
    wanted = State(owned=[ForwardRule(POD, DB, out_interface="eth0")])
    assert not plan(State(foreign=list(found)), wanted).conflicts


def test_a_drop_by_in_interface_meets_the_sources_the_node_routes_by_it() -> None:
    # Docker 28's internal network: `! -d 192.0.2.0/24 -i br-int -j DROP`.
    found = blocks(docker_user([daddr("192.0.2.0/24", neg=True), meta("iifname", "br-int"),
                                DROP]))
    assert found == {block("ip daddr != 192.0.2.0/24 iifname br-int drop",
                           source="192.0.2.0/24", in_interface="br-int")}


def test_an_ipv6_drop_is_judged_with_the_ipv6_routes() -> None:
    found = blocks(docker_user([meta("oifname", "docker0"), DROP], family="ip6"))
    assert found == {block("oifname docker0 drop", family=6, destination="fd17::/64",
                           out_interface="docker0")}


def test_a_device_no_route_names_may_get_any_route_later() -> None:
    found = blocks(docker_user([meta("oifname", "br-new"), DROP]))
    assert found == {block("oifname br-new drop", out_interface="br-new")}


def test_without_the_routes_such_a_drop_is_no_block_as_before() -> None:
    # A replaced kernel seam reads no routes: no block (defaults judge the base chains).
    assert blocks(docker_user([meta("oifname", "eth0"), DROP]), routed=None) == set()


def test_a_drop_naming_neither_an_address_nor_an_interface_is_still_no_block() -> None:
    assert blocks(docker_user([DROP])) == set()


def test_an_inet_table_names_no_family_to_judge_such_a_drop_in() -> None:
    # Left as it was: a known gap (docs/backends.md).
    assert blocks(docker_user([meta("oifname", "eth0"), DROP], family="inet")) == set()


def test_a_drop_reached_through_a_jump_testing_the_same_interface_is_judged_by_it() -> None:
    # Docker 28: `-A DOCKER-BRIDGE -o docker0 -j DOCKER`, then the drop in DOCKER: the
    # name tested twice on the way is one interface, not "two interfaces, any".
    kernel = Kernel({
        ("ip", "filter", "FORWARD"): ("forward", "accept", [[jump("DOCKER-BRIDGE")]]),
        ("ip", "filter", "DOCKER-BRIDGE"): (None, "", [[meta("oifname", "docker0"),
                                                         jump("DOCKER")]]),
        ("ip", "filter", "DOCKER"): (None, "", [[meta("iifname", "docker0", "!="),
                                                  meta("oifname", "docker0"), DROP]])})
    assert blocks(kernel) == {ForwardBlock(
        4, "drop", "iifname != docker0 oifname docker0 oifname docker0 drop",
        "nftables ip filter DOCKER", destination="172.17.0.0/16", out_interface="docker0")}
