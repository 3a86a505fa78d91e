"""``path-mtu`` on bundles shaped as each CNI's real node: no warning where the pods'
packets fit their way out, so an operator does not learn to pass over it.

Each shape as the CNI makes it (its code, at the versions named): flannel's vxlan
(``flannel.1`` and ``cni0`` at the Backend's ``MTU`` less 50, the external interface's
by default, v0.21.3 and later), wireguard (``flannel-wg`` less 80) and host-gw (the
interface's); Calico's IPIP (``tunl0``, each pod's ``cali*`` veth, both ends, at the pods'
MTU, Felix's smallest tunnel MTU) and VXLAN (``vxlan.calico``); Cilium's tunnel mode
(``cilium_host`` and the pods' ``lxc*`` veths at the device MTU, the routes to other
nodes' pods through ``cilium_host`` at the route MTU, the device's less the tunnel's 50).
A pod's flow off the cluster leaves by ``eth0``, to another node's pods by the overlay,
IPv4 and, dual-stack, IPv6 (a router advertisement's default route carries its ``mtu``,
``net.ipv6.conf.IF.mtu`` is captured for every interface).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from ipaddress import ip_network
from typing import Any

import attrs
import pytest

from k3snet.doctor import Flow, NodeCapture, NodeState, diagnose
from k3snet.doctor.routing import RouteEntry


def _link(name: str, mtu: int, *addresses: tuple[str, int]) -> dict[str, Any]:
    return {"ifname": name, "mtu": mtu, "flags": ["UP", "LOWER_UP"],
            "addr_info": [{"local": a, "prefixlen": p} for a, p in addresses]}


def _node(links: list[dict[str, Any]], v4: list[dict[str, Any]],
          v6: list[dict[str, Any]] | None = None, **extra: str) -> NodeState:
    """The node: its links, routes and every interface's IPv6 MTU as sysctl prints them
    (``all`` and ``default`` at 1280, as the kernel shows them)."""
    sysctls = ["net.ipv4.ip_forward = 1", "net.ipv6.conf.all.forwarding = 1",
               "net.ipv6.conf.all.mtu = 1280", "net.ipv6.conf.default.mtu = 1280"]
    sysctls += [f"net.ipv6.conf.{link['ifname'].replace('.', '/')}.mtu = {link['mtu']}"
                for link in links]
    return NodeState.from_capture(NodeCapture.from_texts({
        "addr.json": json.dumps([_link("lo", 65536, ("127.0.0.1", 8)), *links]),
        "routes-v4.json": json.dumps(v4), "routes-v6.json": json.dumps(v6 or []),
        "sysctl.txt": "\n".join(sysctls) + "\n", **extra}))


_DEFAULT: dict[str, Any] = {"dst": "default", "gateway": "192.168.1.1", "dev": "eth0",
                            "protocol": "dhcp"}
_LAN: dict[str, Any] = {"dst": "192.168.1.0/24", "dev": "eth0", "protocol": "kernel",
                        "scope": "link"}


def _flannel(backend: str) -> NodeState:
    eth0 = _link("eth0", 1500, ("192.168.1.5", 24), ("fd01::5", 64))
    overlay: list[dict[str, Any]] = []
    remote: list[dict[str, Any]]
    remote6: list[dict[str, Any]]
    if backend == "host-gw":
        pods = 1500
        remote = [{"dst": "10.42.1.0/24", "gateway": "192.168.1.6", "dev": "eth0"}]
        remote6 = [{"dst": "fd42:0:0:1::/64", "gateway": "fd01::6", "dev": "eth0"}]
    elif backend == "vxlan":
        pods = 1450
        overlay = [_link("flannel.1", 1450, ("10.42.0.0", 32)),
                   _link("flannel-v6.1", 1450, ("fd42::", 128))]
        remote = [{"dst": "10.42.1.0/24", "gateway": "10.42.1.0", "dev": "flannel.1",
                   "flags": ["onlink"]}]
        remote6 = [{"dst": "fd42:0:0:1::/64", "gateway": "fd42:0:0:1::", "dev": "flannel-v6.1",
                    "flags": ["onlink"]}]
    else:  # wireguard
        pods = 1420
        overlay = [_link("flannel-wg", 1420, ("10.42.0.0", 32)),
                   _link("flannel-wg-v6", 1420, ("fd42::", 128))]
        remote = [{"dst": "10.42.0.0/16", "dev": "flannel-wg", "scope": "link"}]
        remote6 = [{"dst": "fd42::/56", "dev": "flannel-wg-v6"}]
    links = [eth0, _link("cni0", pods, ("10.42.0.1", 24), ("fd42::1", 64)), *overlay]
    v4 = [_DEFAULT, _LAN, {"dst": "10.42.0.0/24", "dev": "cni0", "scope": "link"}, *remote]
    v6: list[dict[str, Any]] = [
          {"dst": "default", "gateway": "fe80::1", "dev": "eth0", "protocol": "ra",
           "metrics": [{"mtu": 1500}]},
          {"dst": "fd01::/64", "dev": "eth0", "protocol": "ra"},
          {"dst": "fd42::/64", "dev": "cni0"}, *remote6]
    return _node(links, v4, v6, **{"flannel-subnet.env": (
        f"FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET=10.42.0.1/24\nFLANNEL_MTU={pods}\n"
        "FLANNEL_IPMASQ=true\n")})


def _calico(encapsulation: str) -> NodeState:
    pods = 1480 if encapsulation == "ipip" else 1450
    tunnel = (_link("tunl0", 1480, ("10.42.0.0", 32)) if encapsulation == "ipip"
              else _link("vxlan.calico", 1450, ("10.42.0.0", 32)))
    remote: dict[str, Any] = ({"dst": "10.42.1.0/26", "gateway": "192.168.1.6", "dev": "tunl0",
               "protocol": "bird", "flags": ["onlink"]} if encapsulation == "ipip" else
              {"dst": "10.42.1.0/26", "gateway": "10.42.1.0", "dev": "vxlan.calico",
               "protocol": "80", "flags": ["onlink"]})
    links = [_link("eth0", 1500, ("192.168.1.5", 24)), tunnel,
             _link("cali1a2b3c4d5e6", pods)]
    v4: list[dict[str, Any]] = [
          _DEFAULT, _LAN, {"type": "blackhole", "dst": "10.42.0.0/26", "protocol": "bird"},
          {"dst": "10.42.0.10", "dev": "cali1a2b3c4d5e6", "scope": "link"}, remote]
    return _node(links, v4)


def _cilium(*, endpoint_routes: bool = False,
            extra: tuple[dict[str, Any], ...] = ()) -> NodeState:
    """Cilium's tunnel mode; with ``enable-endpoint-routes``, each pod's own ``/32``
    (``/128``) route through its ``lxc*`` veth, scope link, as the agent installs it,
    so the pod's packets arrive on that veth (at the device MTU, 1500), not on
    ``cilium_host``: the pod's own default route carries the route MTU, 1450."""
    links = [_link("eth0", 1500, ("192.168.1.5", 24), ("fd01::5", 64)),
             _link("cilium_net", 1500), _link("cilium_host", 1500, ("10.0.0.1", 32),
                                                  ("fd00::1", 128)),
             _link("cilium_vxlan", 1500), _link("lxc0a1b2c3d4e5f", 1500), *extra]
    v4: list[dict[str, Any]] = [
          _DEFAULT, _LAN,
          {"dst": "10.0.0.0/24", "gateway": "10.0.0.1", "dev": "cilium_host",
           "protocol": "kernel", "prefsrc": "10.0.0.1"},
          {"dst": "10.0.0.1", "dev": "cilium_host", "protocol": "kernel", "scope": "link"},
          {"dst": "10.0.1.0/24", "gateway": "10.0.0.1", "dev": "cilium_host",
           "protocol": "kernel", "prefsrc": "10.0.0.1", "metrics": [{"mtu": 1450}]}]
    v6: list[dict[str, Any]] = [
          {"dst": "default", "gateway": "fe80::1", "dev": "eth0", "protocol": "ra"},
          {"dst": "fd01::/64", "dev": "eth0", "protocol": "kernel"},
          {"dst": "fd00::/112", "gateway": "fd00::1", "dev": "cilium_host",
           "protocol": "kernel"},
          {"dst": "fd00::1", "dev": "cilium_host", "protocol": "kernel"},
          {"dst": "fd00::1:0/112", "gateway": "fd00::1", "dev": "cilium_host",
           "protocol": "kernel", "metrics": [{"mtu": 1450}]}]
    if endpoint_routes:
        v4.append({"dst": "10.0.0.10", "dev": "lxc0a1b2c3d4e5f", "protocol": "kernel",
                   "scope": "link"})
        v6.append({"dst": "fd00::10", "dev": "lxc0a1b2c3d4e5f", "protocol": "kernel"})
    return _node(links, v4, v6)


_SHAPES: dict[str, tuple[Callable[[], NodeState], str, str]] = {
    "flannel-vxlan": (lambda: _flannel("vxlan"), "10.42.0.10", "10.42.1.10"),
    "flannel-wireguard": (lambda: _flannel("wireguard"), "10.42.0.10", "10.42.1.10"),
    "flannel-host-gw": (lambda: _flannel("host-gw"), "10.42.0.10", "10.42.1.10"),
    "flannel-vxlan-ipv6": (lambda: _flannel("vxlan"), "fd42::10", "fd42:0:0:1::10"),
    "flannel-wireguard-ipv6": (lambda: _flannel("wireguard"), "fd42::10", "fd42:0:0:1::10"),
    "calico-ipip": (lambda: _calico("ipip"), "10.42.0.10", "10.42.1.10"),
    "calico-vxlan": (lambda: _calico("vxlan"), "10.42.0.10", "10.42.1.10"),
    "cilium-tunnel": (_cilium, "10.0.0.10", "10.0.1.10"),
    "cilium-endpoint-routes": (lambda: _cilium(endpoint_routes=True), "10.0.0.10",
                               "10.0.1.10"),
    "cilium-endpoint-routes-ipv6": (lambda: _cilium(endpoint_routes=True), "fd00::10",
                                    "fd00::1:10"),
}


@pytest.mark.parametrize("shape", sorted(_SHAPES))
@pytest.mark.parametrize("where", ["off the cluster", "another node's pod"])
def test_a_healthy_cni_node_s_pod_flows_have_no_path_mtu_warning(shape: str, where: str) -> None:
    make, pod, remote_pod = _SHAPES[shape]
    off = "2606:4700::1111" if ":" in pod else "1.1.1.1"
    d = diagnose(make(), Flow(pod, off if where == "off the cluster" else remote_pod, port=443))
    assert d.trace.ingress is not None, d.render()  # the trace found the pod's interface
    assert d.trace.egress is not None, d.render()
    assert "path-mtu" not in [f.code for f in d.findings], d.render()


def test_the_same_flannel_node_behind_a_smaller_vpn_route_is_a_path_mtu_warning() -> None:
    """The shapes above do warn when the way out is smaller: a route to an office network
    through a 1380 tunnel, behind flannel's 1450 pods. The advice gives the vxlan Backend
    MTU that makes flannel's pods 1380 (1430: flannel takes 50 off it), not 1380."""
    office = {"dst": "172.16.0.0/12", "dev": "wg0", "scope": "link"}
    capture = NodeCapture.from_texts({
        "addr.json": json.dumps([_link("eth0", 1500, ("192.168.1.5", 24)),
                                 _link("cni0", 1450, ("10.42.0.1", 24)),
                                 _link("flannel.1", 1450, ("10.42.0.0", 32)),
                                 _link("wg0", 1380, ("172.31.0.2", 32))]),
        "routes-v4.json": json.dumps([_DEFAULT, _LAN, office,
                                      {"dst": "10.42.0.0/24", "dev": "cni0", "scope": "link"}]),
        "sysctl.txt": "net.ipv4.ip_forward = 1\n"})
    d = diagnose(NodeState.from_capture(capture), Flow("10.42.0.10", "172.16.5.5", port=443))
    (finding,) = [f for f in d.findings if f.code == "path-mtu"]
    assert finding.where == "dev wg0 mtu 1380", d.render()
    advice = finding.advice or ""
    assert "make the pods' MTU at most 1380" in advice
    assert "MTU: 1430 for vxlan" in advice
    assert "MTU: 1460 for wireguard" in advice
    assert "MTU: 1380" not in advice  # flannel would make its pods 1330
    assert "spec.calicoNetwork.mtu" in advice
    assert "veth_mtu" in advice
    assert "cilium-config" in advice


def test_a_cilium_pod_behind_an_endpoint_route_is_warned_only_past_cilium_s_route_mtu() -> None:
    """With endpoint routes the pod's packets arrive on its ``lxc*`` veth at 1500; to
    another node's pod they leave by ``cilium_host``'s route at 1450, the route MTU
    Cilium also gives the pod's own routes: no warning (there was one, 1450 against
    1500). A route through a 1380 tunnel is still smaller than what the pod sends, and
    said so against the route MTU, not the veth's."""
    wg = _link("wg0", 1380, ("172.31.0.2", 32))
    state = _cilium(endpoint_routes=True, extra=(wg,))
    state = attrs.evolve(state, routes={**state.routes, 4: (*state.routes[4], RouteEntry(
        ip_network("172.16.0.0/12"), device="wg0", scope="link"))})
    d = diagnose(state, Flow("10.0.0.10", "10.0.1.10", port=443))
    assert d.trace.ingress == "lxc0a1b2c3d4e5f", d.render()
    assert "path-mtu" not in [f.code for f in d.findings], d.render()
    d = diagnose(state, Flow("10.0.0.10", "172.16.5.5", port=443))
    (finding,) = [f for f in d.findings if f.code == "path-mtu"]
    assert "over 1380 bytes" in finding.what, d.render()
    assert "takes 1450" in finding.what, d.render()
    assert "Cilium's route MTU" in finding.what, d.render()


@pytest.mark.parametrize("family", [4, 6])
def test_a_cilium_pod_with_ipsec_is_taken_at_the_main_table_s_route_mtu(family: int) -> None:
    """With IPsec, Cilium also routes through ``cilium_host`` in its table 200 at the
    post-encryption MTU (1423 here), beside the main table's route MTU: two MTUs, so
    none was taken, the pod was judged at its veth's 1500, and the path-mtu warning was
    back for every flow to another node's pod. The pod's own routes carry the main
    table's (the CNI plugin's ``RouteMTU``); several there are still not guessed."""
    state = _cilium(endpoint_routes=True)
    out = ip_network("10.0.1.0/24" if family == 4 else "fd00::1:0/112")
    ipsec = RouteEntry(out, table=200, device="cilium_host", mtu=1423)
    state = attrs.evolve(state, routes={**state.routes,
                                        family: (*state.routes[family], ipsec)})
    source, destination = (("10.0.0.10", "10.0.1.10") if family == 4
                           else ("fd00::10", "fd00::1:10"))
    d = diagnose(state, Flow(source, destination, port=443))
    assert d.trace.ingress == "lxc0a1b2c3d4e5f", d.render()
    assert "path-mtu" not in [f.code for f in d.findings], d.render()
    other = RouteEntry(ip_network("10.0.2.0/24" if family == 4 else "fd00::2:0/112"),
                       device="cilium_host", mtu=1400)
    state = attrs.evolve(state, routes={**state.routes,
                                        family: (*state.routes[family], other)})
    d = diagnose(state, Flow(source, destination, port=443))
    assert "path-mtu" in [f.code for f in d.findings], d.render()  # 1450 against 1500
