"""Routes and nexthops with a lightweight tunnel (``ip route ... encap ip6 dst ...``) as
``ip -j`` prints them: iproute2 6.1 puts the encap's ``id``, ``src``, ``dst``, ``tos`` flat
among the route's own keys, so one object holds ``"dst"`` twice. Recorded from lab
namespaces (iproute2 6.1)."""

from __future__ import annotations

from k3snet.doctor import NodeCapture, NodeState

#: ip -6 route add fd19::/64 encap ip6 dst fd05::9 hoplimit 2 dev d0 mtu lock 1310
#: ip -6 route add fd20::/64 encap ip6 dst fd05::9 src fd05::7 dev d0 from fd30::/64
ROUTES_V6_JSON = (
    '[{"dst":"fd05::/64","dev":"d0","protocol":"kernel","metric":256,"flags":[],'
    '"pref":"medium"},{"dst":"fd19::/64","encap":"ip6","id":0,"src":"::","dst":"fd05::9",'
    '"hoplimit":2,"tc":0,"dev":"d0","metric":1024,"flags":[],"metrics":[{"mtu":1310}],'
    '"pref":"medium"},{"dst":"fd20::/64","from":"fd30::/64","encap":"ip6","id":0,'
    '"src":"fd05::7","dst":"fd05::9","hoplimit":0,"tc":0,"dev":"d0","metric":1024,'
    '"flags":[],"pref":"medium"}]\n')
ROUTES_V6_TXT = (
    "fd05::/64 dev d0 proto kernel metric 256 pref medium\n"
    "fd19::/64  encap ip6 id 0 src :: dst fd05::9 hoplimit 2 tc 0 dev d0 metric 1024 "
    "mtu lock 1310 pref medium\n"
    "fd20::/64 from fd30::/64  encap ip6 id 0 src fd05::7 dst fd05::9 hoplimit 0 tc 0 "
    "dev d0 metric 1024 pref medium\n")
#: ip route add 10.9.0.0/24 tos 0x10 encap ip dst 10.5.0.9 tos 4 dev d0 table 7 mtu lock 1300
#: ip route add 10.8.0.0/24 encap ip dst 10.5.0.9 dev d0
ROUTES_V4_JSON = (
    '[{"dst":"10.9.0.0/24","encap":"ip","id":0,"src":"0.0.0.0","dst":"10.5.0.9","ttl":0,'
    '"tos":4,"tos":"0x10","dev":"d0","table":"7","scope":"link","flags":[],'
    '"metrics":[{"mtu":1300}]},{"dst":"10.5.0.0/24","dev":"d0","protocol":"kernel",'
    '"scope":"link","prefsrc":"10.5.0.1","flags":[]},{"dst":"10.8.0.0/24","encap":"ip",'
    '"id":0,"src":"0.0.0.0","dst":"10.5.0.9","ttl":0,"tos":0,"dev":"d0","scope":"link",'
    '"flags":[]}]\n')
#: ip nexthop add id 7 encap ip id 3 dst 10.5.0.9 dev d0
NEXTHOPS_JSON = ('[{"id":7,"encap":"ip","id":3,"src":"0.0.0.0","dst":"10.5.0.9","ttl":0,'
                 '"tos":0,"dev":"d0","scope":"host","flags":[]}]\n')


def _state(texts: dict[str, str]) -> NodeState:
    return NodeState.from_capture(NodeCapture.from_texts(texts))


def test_an_ipv6_route_with_an_encap_keeps_its_destination_and_its_mtu_lock() -> None:
    """The route's ``dst`` is the first one; the encap's endpoint is not the route."""
    state = _state({"routes-v6.json": ROUTES_V6_JSON, "routes-v6.txt": ROUTES_V6_TXT})
    routes = {str(r.destination): r for r in state.routes[6]}
    assert sorted(routes) == ["fd05::/64", "fd19::/64", "fd20::/64"]
    assert routes["fd19::/64"].mtu == 1310
    assert routes["fd19::/64"].mtu_locked
    assert not routes["fd20::/64"].mtu_locked
    assert str(routes["fd20::/64"].source) == "fd30::/64"


def test_an_ipv4_route_with_an_encap_keeps_its_destination_and_its_own_tos() -> None:
    """The encap's ``tos`` (a number) comes first, the route's own (text) after it, or
    none: the route's TOS is 0x10, and 0 for the route without one."""
    routes = {str(r.destination): r
              for r in _state({"routes-v4.json": ROUTES_V4_JSON}).routes[4]}
    assert sorted(routes) == ["10.5.0.0/24", "10.8.0.0/24", "10.9.0.0/24"]
    assert routes["10.9.0.0/24"].tos == 0x10
    assert str(routes["10.9.0.0/24"].table) == "7"
    assert routes["10.8.0.0/24"].tos == 0


def test_a_nexthop_object_with_an_encap_keeps_its_own_id() -> None:
    capture = NodeCapture.from_texts({"nexthops.json": NEXTHOPS_JSON})
    nexthops = capture.json("nexthops.json")
    assert isinstance(nexthops, list)
    (nexthop,) = nexthops
    assert nexthop["id"] == 7
    assert nexthop["encap"]["id"] == 3
    assert nexthop["encap"]["dst"] == "10.5.0.9"
    assert nexthop["dev"] == "d0"
