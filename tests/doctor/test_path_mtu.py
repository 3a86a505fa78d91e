"""The ``path-mtu`` warning from a bundle, without root: an overlay's device MTU below the
pods' (flannel's vxlan at 1450 behind 1500 veths), a route's ``mtu``, and what ``ip -j``
prints that is not a number (ignored, never an error). The kernel's side is
tests/doctor/test_path_mtu_kernel.py."""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest

from k3snet.doctor import Flow, NodeCapture, NodeState, Verdict, diagnose


def _bundle(uplink_mtu: int, route: dict[str, Any]) -> NodeState:
    addresses = [
        {"ifname": "cni0", "mtu": 1500, "flags": ["UP"],
         "addr_info": [{"local": "10.42.0.1", "prefixlen": 24}]},
        {"ifname": "ovl0", "mtu": uplink_mtu, "flags": ["UP"],
         "addr_info": [{"local": "192.168.1.5", "prefixlen": 24}]},
    ]
    routes = [
        {"dst": "10.42.0.0/24", "dev": "cni0", "scope": "link"},
        {"dst": "192.168.1.0/24", "dev": "ovl0", "scope": "link"},
        {"dst": "192.168.2.0/24", "gateway": "192.168.1.1", "dev": "ovl0", **route},
    ]
    nat = ("*nat\n:POSTROUTING ACCEPT [0:0]\n"
           "-A POSTROUTING -s 10.42.0.0/24 -j MASQUERADE\nCOMMIT\n")
    return NodeState.from_capture(NodeCapture.from_texts({
        "addr.json": json.dumps(addresses), "routes-v4.json": json.dumps(routes),
        "iptables-nft-v4.save": nat, "sysctl.txt": "net.ipv4.ip_forward = 1\n"}))


def _path_mtu(state: NodeState) -> list[Any]:
    d = diagnose(state, Flow("10.42.0.10", "192.168.2.10", port=5432))
    assert d.verdict is Verdict.REACHES, d.render()
    return [f for f in d.findings if f.code == "path-mtu"]


def test_an_overlay_device_smaller_than_the_pods_interface_is_a_path_mtu_warning() -> None:
    (finding,) = _path_mtu(_bundle(1450, {}))
    assert finding.severity == "warning"
    assert finding.where == "dev ovl0 mtu 1450"
    assert "over 1450 bytes cannot leave by ovl0" in finding.what
    assert "cni0 takes 1500" in finding.what
    assert "MTU: 1500 for vxlan" in (finding.advice or "")  # flannel takes 50 off it


def test_a_route_mtu_is_the_path_mtu_even_on_a_larger_device() -> None:
    (finding,) = _path_mtu(_bundle(1500, {"metrics": [{"mtu": 1280, "advmss": 1200}]}))
    assert finding.where == "route 192.168.2.0/24 via 192.168.1.1 dev ovl0 mtu 1280"


def test_the_same_mtu_on_the_way_out_and_a_larger_one_give_no_path_mtu_warning() -> None:
    assert _path_mtu(_bundle(1500, {})) == []
    assert _path_mtu(_bundle(9000, {"metrics": [{"mtu": 1500}]})) == []


@pytest.mark.parametrize("metrics", [{"mtu": 1280}, [{"mtu": "1280"}], [{"mtu": True}],
                                     [{"mtu": -5}], ["mtu"], [{"mtu": {"lock": 1280}}]])
def test_a_route_mtu_not_as_ip_prints_it_is_ignored(metrics: object) -> None:
    assert _path_mtu(_bundle(1500, {"metrics": metrics})) == []


def test_each_path_of_a_multipath_route_is_checked_by_its_own_device() -> None:
    """The first nexthop by a 1500 device, the second by the 1450 overlay: the kernel
    picks one per connection, and the second one's MTU is the warning."""
    multipath = json.dumps([
        {"dst": "10.42.0.0/24", "dev": "cni0", "scope": "link"},
        {"dst": "192.168.1.0/24", "dev": "ovl0", "scope": "link"},
        {"dst": "192.168.3.0/24", "dev": "eth9", "scope": "link"},
        {"dst": "192.168.2.0/24", "nexthops": [
            {"gateway": "192.168.3.1", "dev": "eth9", "weight": 1},
            {"gateway": "192.168.1.1", "dev": "ovl0", "weight": 1}]}])
    capture = NodeCapture.from_texts({
        "addr.json": json.dumps([
            {"ifname": name, "mtu": mtu, "addr_info": [{"local": local, "prefixlen": 24}]}
            for name, mtu, local in (("cni0", 1500, "10.42.0.1"), ("ovl0", 1450, "192.168.1.5"),
                                     ("eth9", 1500, "192.168.3.5"))]),
        "routes-v4.json": multipath,
        "iptables-nft-v4.save": "*nat\n:POSTROUTING ACCEPT [0:0]\n"
                                "-A POSTROUTING -s 10.42.0.0/24 -j MASQUERADE\nCOMMIT\n",
        "sysctl.txt": "net.ipv4.ip_forward = 1\n"})
    (finding,) = _path_mtu(NodeState.from_capture(capture))
    assert finding.where == "dev ovl0 mtu 1450"


def test_a_device_the_capture_does_not_list_has_no_mtu_and_no_finding_but_its_route_s() -> None:
    """A route by an interface absent from ``ip -j addr`` (gone since, another capture):
    no MTU to compare, neither a finding nor an error; a route ``mtu`` still counts."""
    ghost: dict[str, Any] = {"dst": "192.168.2.0/24", "dev": "ghost0", "scope": "link"}
    capture_routes: list[dict[str, Any]] = [
        {"dst": "10.42.0.0/24", "dev": "cni0", "scope": "link"}, ghost]
    for route, expected in ((ghost, None), ({**ghost, "metrics": [{"mtu": 1400}]}, 1400)):
        capture_routes[1] = route
        capture = NodeCapture.from_texts({
            "addr.json": json.dumps([{"ifname": "cni0", "mtu": 1500, "addr_info": [
                {"local": "10.42.0.1", "prefixlen": 24}]}]),
            "routes-v4.json": json.dumps(capture_routes),
            "sysctl.txt": "net.ipv4.ip_forward = 1\n"})
        d = diagnose(NodeState.from_capture(capture),
                     Flow("10.42.0.10", "192.168.2.10", port=5432))
        found = [f.where for f in d.findings if f.code == "path-mtu"]
        assert found == ([] if expected is None else
                         [f"route 192.168.2.0/24 dev ghost0 mtu {expected}"]), d.render()


@pytest.mark.parametrize(("route_mtu", "minimum"), [(1000, True), (1280, False), (1400, False)])
def test_an_ipv6_route_mtu_below_1280_is_said_as_below_ipv6_s_minimum(
        route_mtu: int, minimum: bool) -> None:
    """Below 1280 no pods' MTU avoids the hole (tests/doctor/test_path_mtu_kernel.py
    shows the kernel's side): the advice is the route's mtu to raise, never a pods' MTU
    under 1280, which turns IPv6 off on their interfaces."""
    capture = NodeCapture.from_texts({
        "addr.json": json.dumps([
            {"ifname": name, "mtu": 1500, "addr_info": [{"local": local, "prefixlen": 64}]}
            for name, local in (("cni0", "fd42::1"), ("eth0", "fd01::5"))]),
        "routes-v6.json": json.dumps([
            {"dst": "fd42::/64", "dev": "cni0"}, {"dst": "fd01::/64", "dev": "eth0"},
            {"dst": "fd02::/64", "gateway": "fd01::1", "dev": "eth0",
             "metrics": [{"mtu": route_mtu}]}]),
        "iptables-nft-v6.save": "*nat\n:POSTROUTING ACCEPT [0:0]\n"
                                "-A POSTROUTING -s fd42::/64 -j MASQUERADE\nCOMMIT\n",
        "sysctl.txt": "net.ipv6.conf.all.forwarding = 1\n"})
    d = diagnose(NodeState.from_capture(capture), Flow("fd42::10", "fd02::10", port=5432))
    (finding,) = [f for f in d.findings if f.code == "path-mtu"]
    assert finding.where == f"route fd02::/64 via fd01::1 dev eth0 mtu {route_mtu}", d.render()
    assert ("smallest MTU of IPv6" in finding.what) is minimum, d.render()
    assert ("raise the route's mtu" in (finding.advice or "")) is minimum, d.render()
    assert (f"at most {route_mtu}" in (finding.advice or "")) is not minimum, d.render()


def test_an_ipv4_route_mtu_over_its_device_s_is_a_hole_with_no_icmp_error() -> None:
    """The route at 1400 through a 1300 device: the kernel checks forwarded packets
    against 1400, and the device drops those of 1301 to 1400 bytes with no ICMP error
    (tests/doctor/test_path_mtu_kernel.py shows it): the route's mtu is the one to lower."""
    (finding,) = _path_mtu(_bundle(1300, {"metrics": [{"mtu": 1400}]}))
    assert finding.where == ("route 192.168.2.0/24 via 192.168.1.1 dev ovl0 mtu 1400 "
                             "(dev ovl0 mtu 1300)")
    assert "1301 to 1400 bytes are lost with no ICMP error" in finding.why
    assert "lower the route's mtu to at most 1300" in (finding.advice or "")


def _ipv6_bundle(sysctls: str) -> NodeState:
    return NodeState.from_capture(NodeCapture.from_texts({
        "addr.json": json.dumps([
            {"ifname": name, "mtu": 1500, "addr_info": [{"local": local, "prefixlen": 64}]}
            for name, local in (("cni0", "fd42::1"), ("eth0.7", "fd01::5"))]),
        "routes-v6.json": json.dumps([
            {"dst": "fd42::/64", "dev": "cni0"}, {"dst": "fd01::/64", "dev": "eth0.7"},
            {"dst": "fd02::/64", "gateway": "fd01::1", "dev": "eth0.7"}]),
        "iptables-nft-v6.save": "*nat\n:POSTROUTING ACCEPT [0:0]\n"
                                "-A POSTROUTING -s fd42::/64 -j MASQUERADE\nCOMMIT\n",
        "sysctl.txt": "net.ipv6.conf.all.forwarding = 1\n" + sysctls}))


def test_an_ipv6_mtu_of_the_way_out_below_its_link_s_is_the_path_mtu() -> None:
    """``net.ipv6.conf.DEV.mtu`` (lowered by a router advertisement's MTU) is what the
    kernel checks a forwarded IPv6 packet against: 1400 on a 1500 link (a VLAN's name
    as sysctl prints it, ``eth0/7``) is a way out smaller than the pods' 1500; ``all``'s
    and ``default``'s (1280 as the kernel shows them) and the pods' side do not count."""
    d = diagnose(_ipv6_bundle("net.ipv6.conf.all.mtu = 1280\nnet.ipv6.conf.default.mtu = 1280\n"
                              "net.ipv6.conf.eth0/7.mtu = 1400\nnet.ipv6.conf.cni0.mtu = 1500\n"),
                 Flow("fd42::10", "fd02::10", port=5432))
    (finding,) = [f for f in d.findings if f.code == "path-mtu"]
    assert finding.where == "sysctl net.ipv6.conf.eth0/7.mtu = 1400 (dev eth0.7 mtu 1500)"
    assert "over 1400 bytes cannot leave by eth0.7" in finding.what
    assert "at most 1400" in (finding.advice or "")


@pytest.mark.parametrize("sysctls", ["", "net.ipv6.conf.eth0/7.mtu = 1500\n",
                                     "net.ipv6.conf.eth0/7.mtu = 9000\n",
                                     "net.ipv6.conf.eth0/7.mtu = x\n",
                                     "net.ipv6.conf.all.mtu = 1280\n"
                                     "net.ipv6.conf.default.mtu = 1280\n"])
def test_an_ipv6_mtu_not_below_its_link_s_or_not_captured_is_no_path_mtu_warning(
        sysctls: str) -> None:
    d = diagnose(_ipv6_bundle(sysctls), Flow("fd42::10", "fd02::10", port=5432))
    assert "path-mtu" not in [f.code for f in d.findings], d.render()


def test_an_ipv4_flow_does_not_take_the_ipv6_mtu_of_its_way_out() -> None:
    state = _bundle(1500, {})
    state = attrs.evolve(state, sysctls={**state.sysctls, "net.ipv6.conf.ovl0.mtu": "1280"})
    assert _path_mtu(state) == []


def test_an_ipv6_route_mtu_over_its_device_s_is_the_ordinary_warning_not_the_ipv4_hole() -> None:
    """IPv6 forwarding checks the device's MTU and answers Packet Too Big
    (tests/doctor/test_path_mtu_kernel.py): no IPv4-only 'no ICMP error' finding."""
    capture = NodeCapture.from_texts({
        "addr.json": json.dumps([
            {"ifname": name, "mtu": mtu, "addr_info": [{"local": local, "prefixlen": 64}]}
            for name, mtu, local in (("cni0", 9000, "fd42::1"), ("eth0", 1500, "fd01::5"))]),
        "routes-v6.json": json.dumps([
            {"dst": "fd42::/64", "dev": "cni0"}, {"dst": "fd01::/64", "dev": "eth0"},
            {"dst": "fd02::/64", "gateway": "fd01::1", "dev": "eth0",
             "metrics": [{"mtu": 9000}]}]),
        "sysctl.txt": "net.ipv6.conf.all.forwarding = 1\n"})
    d = diagnose(NodeState.from_capture(capture), Flow("fd42::10", "fd02::10", port=5432))
    (finding,) = [f for f in d.findings if f.code == "path-mtu"]
    assert finding.where == "dev eth0 mtu 1500", d.render()
    assert "Packet Too Big" in finding.why
    assert "no ICMP error" not in finding.why
