"""The node's own ICMP error of path MTU discovery, dropped by a foreign rule in its
output path, against the kernel.

The node's route to the database carries ``mtu 1280`` while the pod's interface is at
1500: the node drops the pod's larger packets it forwards and answers fragmentation
needed (IPv6: Packet Too Big) itself. That error is the node's own: it leaves through
the output chains, then postrouting, never forward. A foreign rule in output dropping
that ICMP type (nftables or iptables) makes a black hole: connections open, large
packets die. The doctor said so only in ``path-mtu``'s text, without following the
error; it now traces it through output and postrouting and names the rule
(``pmtu-error-dropped``). The kernel's own view: the pod's route to the database (``ip
route get``, after the pod sent datagrams too large with don't-fragment) holds ``mtu
1280`` once the error arrived, never while the rule drops it.

Each test starts with :meth:`DoctorLab.configure`, which resets the node (its tables,
rules and routes), and each probe of the MTU the pod learnt flushes the pod's route cache
first: a test undoes only what neither does (the links' MTUs, the router's route).
"""

from __future__ import annotations

import sys
from typing import Literal

import pytest

from k3snet.doctor import Diagnosis, Flow, NodeState, Verdict, diagnose
from k3snet.lab.netns import run_in
from tests.pmtu import learnt_mtu_in

from .conftest import DEST_NETS, UPLINKS, DoctorLab, Topology, to_v6

pytestmark = [pytest.mark.kernel]

_NFT_DROP = """table inet h_own_pmtu {
 chain output {
  type filter hook output priority 0; policy accept;
  icmp type destination-unreachable icmp code frag-needed drop
  icmpv6 type packet-too-big drop
 }
}
"""
_XT_DROP = {4: ["iptables-nft", "-A", "OUTPUT", "-p", "icmp", "-m", "icmp", "--icmp-type",
                "fragmentation-needed", "-j", "DROP"],
            6: ["ip6tables-nft", "-A", "OUTPUT", "-p", "ipv6-icmp", "-m", "icmp6",
                "--icmpv6-type", "packet-too-big", "-j", "DROP"]}
#: How the listing names the rule: nft's words, iptables-save's numbers.
_NAMED = {("nft", 4): "frag-needed", ("nft", 6): "packet-too-big",
          ("iptables", 4): "--icmp-type 3/4", ("iptables", 6): "--icmpv6-type 2"}


def _narrow_route(lab: DoctorLab, family: int, lock: bool = False) -> None:
    """The node's route to the database at ``mtu 1280`` (``mtu lock 1280``)."""
    convert = to_v6 if family == 6 else str
    run_in(lab.node, ["ip", f"-{family}", "route", "replace", convert(DEST_NETS["plain"]),
                      "via", convert(UPLINKS["eth0"][1]), "dev", "eth0", "mtu",
                      *(["lock"] if lock else []), "1280", "proto", "static"])


def _learnt(lab: DoctorLab, topology: Topology) -> str:
    pod = lab.names["pod"]
    run_in(pod, ["ip", f"-{topology.family}", "route", "flush", "cache"], check=False)
    return learnt_mtu_in(pod, topology.family, topology.destination)


def _diagnosed(lab: DoctorLab, topology: Topology, *,
               upstream_routes_pods: bool = False) -> Diagnosis:
    """The doctor's diagnosis of the topology's flow on the lab's node as it is now."""
    return diagnose(NodeState.from_capture(lab.capture()),
                    Flow(topology.pod, topology.destination, port=topology.port),
                    upstream_routes_pods=upstream_routes_pods)


@pytest.mark.parametrize("tool", ["nft", "iptables"])
@pytest.mark.parametrize("family", [4, 6])
def test_an_output_rule_dropping_the_node_s_own_pmtu_error_is_named_where_the_kernel_loses_it(
        doctor_lab: DoctorLab, family: Literal[4, 6], tool: str) -> None:
    topology = Topology(family=family)
    doctor_lab.configure(topology)
    _narrow_route(doctor_lab, family)
    # Without the rule the node's error passes: the pod learns the path's MTU.
    assert "mtu 1280" in _learnt(doctor_lab, topology)
    clean = _diagnosed(doctor_lab, topology)
    assert "pmtu-error-dropped" not in [f.code for f in clean.findings], clean.render()
    if tool == "nft":
        run_in(doctor_lab.node, ["nft", "-f", "-"], input_text=_NFT_DROP)
    else:
        run_in(doctor_lab.node, _XT_DROP[family])
    hole = _learnt(doctor_lab, topology)
    d = _diagnosed(doctor_lab, topology)
    assert "mtu 1280" not in hole, hole  # the kernel: the rule made the hole
    assert d.verdict is Verdict.REACHES, d.render()  # the first, small packet does
    assert "path-mtu" in [f.code for f in d.findings], d.render()
    (finding,) = [f for f in d.findings if f.code == "pmtu-error-dropped"]
    assert finding.severity == "warning", d.render()
    assert _NAMED[tool, family] in finding.where, d.render()
    assert "OUTPUT" in finding.where or " output" in finding.where, d.render()
    kind = "fragmentation needed" if family == 4 else "Packet Too Big"
    assert kind in finding.what, d.render()
    assert "the node sends" in finding.what, d.render()
    assert "output" in (finding.advice or ""), d.render()


@pytest.mark.parametrize("family", [4, 6])
def test_an_output_rule_accepting_related_first_lets_the_node_s_pmtu_error_through(
        doctor_lab: DoctorLab, family: Literal[4, 6]) -> None:
    """The advice's fix: ``ct state related accept`` before the drop. The kernel: the pod
    learns the MTU; the doctor: no finding."""
    topology = Topology(family=family)
    doctor_lab.configure(topology)
    _narrow_route(doctor_lab, family)
    run_in(doctor_lab.node, ["nft", "-f", "-"], input_text=_NFT_DROP.replace(
        "policy accept;\n", "policy accept;\n  ct state related accept\n"))
    learnt = _learnt(doctor_lab, topology)
    d = _diagnosed(doctor_lab, topology)
    assert "mtu 1280" in learnt, learnt
    assert "pmtu-error-dropped" not in [f.code for f in d.findings], d.render()


#: A chain at raw's priority that would drop a packet of no connection, or exempt ICMP
#: from tracking before a filter chain accepting what is related and dropping other ICMP.
_RAW_NFT = {"invalid": """table inet h_own_pmtu {
 chain output {
  type filter hook output priority raw; policy accept;
  ct state invalid drop
 }
}
""", "notrack": """table inet h_own_pmtu {
 chain raw_output {
  type filter hook output priority raw; policy accept;
  meta l4proto { icmp, ipv6-icmp } notrack
 }
 chain output {
  type filter hook output priority filter; policy accept;
  ct state related accept
  meta l4proto { icmp, ipv6-icmp } drop
 }
}
"""}


def _raw_xt(family: int, shape: str) -> list[list[str]]:
    tool, proto = ("iptables-nft", "icmp") if family == 4 else ("ip6tables-nft", "ipv6-icmp")
    if shape == "invalid":
        return [[tool, "-t", "raw", "-A", "OUTPUT", "-m", "conntrack", "--ctstate", "INVALID",
                 "-j", "DROP"]]
    return [[tool, "-t", "raw", "-A", "OUTPUT", "-p", proto, "-j", "CT", "--notrack"],
            [tool, "-A", "OUTPUT", "-m", "conntrack", "--ctstate", "RELATED", "-j", "ACCEPT"],
            [tool, "-A", "OUTPUT", "-p", proto, "-j", "DROP"]]


@pytest.mark.parametrize("shape", ["invalid", "notrack"])
@pytest.mark.parametrize("tool", ["nft", "iptables"])
@pytest.mark.parametrize("family", [4, 6])
def test_a_raw_output_chain_sees_the_node_s_own_pmtu_error_with_its_connection(
        doctor_lab: DoctorLab, family: Literal[4, 6], tool: str, shape: str) -> None:
    """The kernel gives the node's error the connection of the packet it answers before
    the output hook: a chain at raw's priority, before conntrack's, sees it ``related``
    (a ``ct state invalid drop`` there misses it, a ``notrack`` leaves it be, and a
    later ``related`` accept takes it). The kernel: the pod learns the MTU; the doctor
    read the error ``invalid`` (``untracked``) there and named a rule dropping it."""
    topology = Topology(family=family)
    doctor_lab.configure(topology)
    _narrow_route(doctor_lab, family)
    if tool == "nft":
        run_in(doctor_lab.node, ["nft", "-f", "-"], input_text=_RAW_NFT[shape])
    else:
        for command in _raw_xt(family, shape):
            run_in(doctor_lab.node, command)
    learnt = _learnt(doctor_lab, topology)
    d = _diagnosed(doctor_lab, topology)
    assert "mtu 1280" in learnt, learnt
    assert "path-mtu" in [f.code for f in d.findings], d.render()
    assert "pmtu-error-dropped" not in [f.code for f in d.findings], d.render()


#: A raw prerouting rule exempting from tracking the replies (which come in by the
#: uplink) or the pod's own packets (by cni0), then output and forward chains accepting
#: what is related and dropping the ICMP error. Only TCP's replies for the router's
#: error, which comes in by the uplink too.
_EXEMPT_NFT = {"replies": 'iifname "eth0" meta l4proto tcp notrack',
               "pod's packets": 'iifname "cni0" notrack'}
_EXEMPT_XT = {"replies": ["-i", "eth0", "-p", "tcp"], "pod's packets": ["-i", "cni0"]}


def _exempt(lab: DoctorLab, family: int, tool: str, exempted: str) -> None:
    if tool == "nft":
        drops = ("  ct state related accept\n  icmp type destination-unreachable drop\n"
                 "  icmpv6 type packet-too-big drop\n")
        run_in(lab.node, ["nft", "-f", "-"], input_text=(
            "table inet h_own_pmtu {\n chain raw_prerouting {\n"
            "  type filter hook prerouting priority raw; policy accept;\n"
            f"  {_EXEMPT_NFT[exempted]}\n }}\n"
            + "".join(f" chain {hook} {{\n  type filter hook {hook} priority filter; "
                      f"policy accept;\n{drops} }}\n" for hook in ("output", "forward"))
            + "}\n"))
        return
    tool, proto = ("iptables-nft", "icmp") if family == 4 else ("ip6tables-nft", "ipv6-icmp")
    run_in(lab.node, [tool, "-t", "raw", "-A", "PREROUTING", *_EXEMPT_XT[exempted],
                      "-j", "CT", "--notrack"])
    for chain in ("OUTPUT", "FORWARD"):
        run_in(lab.node, [tool, "-A", chain, "-m", "conntrack", "--ctstate", "RELATED",
                          "-j", "ACCEPT"])
        run_in(lab.node, [tool, "-A", chain, "-p", proto, "-j", "DROP"])


@pytest.mark.parametrize("exempted", ["replies", "pod's packets"])
@pytest.mark.parametrize("tool", ["nft", "iptables"])
@pytest.mark.parametrize("family", [4, 6])
def test_the_node_s_own_pmtu_error_is_related_unless_the_pod_s_packets_are_untracked(
        doctor_lab: DoctorLab, family: Literal[4, 6], tool: str, exempted: str) -> None:
    """The error quotes the pod's packet: conntrack finds that packet's connection unless a
    raw rule exempted the pod's packets themselves. Exempting only the replies (pods not
    masqueraded, the network routing them back) leaves the connection: the error is
    ``related`` and a related accept before the drop lets it through. The kernel: the pod
    learns the MTU then, never where its own packets are exempted; the doctor took any
    exemption on the flow's way, the replies' too, for the pod's and named the drop."""
    topology = Topology(family=family, nat="none", cluster_route=True)
    doctor_lab.configure(topology)
    _narrow_route(doctor_lab, family)
    _exempt(doctor_lab, family, tool, exempted)
    learnt = _learnt(doctor_lab, topology)
    d = _diagnosed(doctor_lab, topology, upstream_routes_pods=True)
    assert d.verdict is Verdict.REACHES, d.render()
    assert "path-mtu" in [f.code for f in d.findings], d.render()
    dropped = [f for f in d.findings if f.code == "pmtu-error-dropped"]
    if exempted == "replies":
        assert "mtu 1280" in learnt, learnt
        assert not dropped, d.render()
    else:
        assert "mtu 1280" not in learnt, learnt
        # the forward chain's drop of a router's error is named too
        assert [f.severity for f in dropped if "a router" not in f.what] == ["warning"], (
            d.render())


@pytest.mark.parametrize("exempted", ["replies", "pod's packets"])
@pytest.mark.parametrize("tool", ["nft", "iptables"])
@pytest.mark.parametrize("family", [4, 6])
def test_a_router_s_pmtu_error_is_related_unless_the_pod_s_packets_are_untracked(
        doctor_lab: DoctorLab, family: Literal[4, 6], tool: str, exempted: str) -> None:
    """The same for the error a router beyond the node sends (its link towards the
    database the smaller), crossing the node's forward path: ``related`` where only the
    replies (TCP's: not the error) are exempted from tracking, and so accepted before the
    drop; not where the pod's own packets are. The router routes the pods' network to
    the node (their addresses not translated)."""
    topology = Topology(family=family, nat="none", cluster_route=True)
    doctor_lab.configure(topology)
    router, db = doctor_lab.names["router"], doctor_lab.names["db"]
    convert = to_v6 if family == 6 else str
    pods = [convert("10.42.0.0/16"), "via", convert(UPLINKS["eth0"][0]), "dev", "eth0"]
    try:
        run_in(router, ["ip", f"-{family}", "route", "add", *pods])
        run_in(router, ["ip", "link", "set", "eth1", "mtu", "1280"])
        run_in(db, ["ip", "link", "set", "eth0", "mtu", "1280"])
        _exempt(doctor_lab, family, tool, exempted)
        learnt = _learnt(doctor_lab, topology)
        d = _diagnosed(doctor_lab, topology, upstream_routes_pods=True)
    finally:
        run_in(router, ["ip", f"-{family}", "route", "del", *pods], check=False)
        run_in(router, ["ip", "link", "set", "eth1", "mtu", "1500"])
        run_in(db, ["ip", "link", "set", "eth0", "mtu", "1500"])
    assert d.verdict is Verdict.REACHES, d.render()
    dropped = [f for f in d.findings if f.code == "pmtu-error-dropped"]
    if exempted == "replies":
        assert "mtu 1280" in learnt, learnt
        assert not dropped, d.render()
    else:
        assert "mtu 1280" not in learnt, learnt
        assert [f.severity for f in dropped] == ["warning"], d.render()
        assert "router beyond the node" in dropped[0].what, d.render()


#: A drop of the node's error in an output chain, on one address or interface it could
#: carry: (priority, match) in the lab's IPv4 words (to_v6 gives IPv6's). Raw's priority
#: runs before the NAT core's point of the hook, filter's after it.
_CANDIDATES = {
    "from the pods' gateway": ("filter", "ip saddr 10.42.0.1"),
    "from the uplink's address": ("filter", "ip saddr 192.168.1.5"),
    "to the pod, before the NAT point": ("raw", "ip daddr 10.42.0.10"),
    "to the uplink's address, before the NAT point": ("raw", "ip daddr 192.168.1.5"),
    "to the pod, after the NAT point": ("filter", "ip daddr 10.42.0.10"),
    "out by lo": ("filter", 'oifname "lo"'),
    "out by cni0": ("filter", 'oifname "cni0"'),
}


@pytest.mark.parametrize("candidate", list(_CANDIDATES))
@pytest.mark.parametrize("lock", [False, True], ids=["mtu", "mtu lock"])
@pytest.mark.parametrize("family", [4, 6])
def test_the_node_s_pmtu_error_of_a_masqueraded_pod_carries_what_the_kernel_gives_it(
        doctor_lab: DoctorLab, family: Literal[4, 6], lock: bool, candidate: str) -> None:
    """An IPv6 route's ``mtu`` not locked is met after postrouting (``ip6_forward`` lets
    the packet through up to its device's MTU): the masquerade translated it, so the
    node's Packet Too Big goes from the uplink's address to it, by ``lo``, and the NAT
    core's point of the output hook sends it back to the pod. A locked one, and IPv4's
    either way, answers before: from the pods' gateway to the pod, by cni0. The kernel:
    the pod learns the MTU unless the rule matched; the doctor names the rule exactly
    then. It read every error as the second kind."""
    topology = Topology(family=family)
    doctor_lab.configure(topology)
    _narrow_route(doctor_lab, family, lock)
    convert = to_v6 if family == 6 else str
    priority, match = _CANDIDATES[candidate]
    error = ("icmpv6 type packet-too-big" if family == 6
             else "icmp type destination-unreachable icmp code frag-needed")
    run_in(doctor_lab.node, ["nft", "-f", "-"], input_text=(
        "table inet h_own_pmtu {\n chain output {\n"
        f"  type filter hook output priority {priority}; policy accept;\n"
        f"  {error} {convert(match)} drop\n }}\n}}\n"))
    learnt = _learnt(doctor_lab, topology)
    d = _diagnosed(doctor_lab, topology)
    assert "path-mtu" in [f.code for f in d.findings], d.render()
    dropped = [f for f in d.findings if f.code == "pmtu-error-dropped"]
    assert [f.severity for f in dropped] == ([] if "mtu 1280" in learnt else ["warning"]), (
        learnt, d.render())
    late = family == 6 and not lock
    expected = {"from the uplink's address", "to the uplink's address, before the NAT point",
                "to the pod, after the NAT point", "out by lo"} if late else {
        "from the pods' gateway", "to the pod, before the NAT point",
        "to the pod, after the NAT point", "out by cni0"}
    assert ("mtu 1280" not in learnt) is (candidate in expected), learnt  # the kernel's word


#: An address the node does not hold, in its uplink's subnet: a ``snat to`` there.
_NOT_THE_NODE_S = "fd01:1::77"


@pytest.mark.parametrize("candidate", [*_CANDIDATES, "to the snat address, before the NAT point",
                                       "out by eth0"])
def test_the_late_error_of_a_pod_snatted_to_an_address_not_the_node_s_leaves_by_its_route(
        doctor_lab: DoctorLab, candidate: str) -> None:
    """A route ``mtu`` not locked, the pod's packets translated (``snat to``) to an address
    the node does not hold: the node's Packet Too Big goes to that address by its route
    (eth0), from the pods' gateway, until the output hook's NAT point sends it back to
    the pod. The doctor traced it by cni0, to the pod all the way (a rule on cni0 named
    for nothing, one on eth0 or the address missed). The kernel: the pod learns the MTU
    unless the rule matched; the doctor names the rule exactly then."""
    topology = Topology(family=6)
    doctor_lab.configure(topology)
    _narrow_route(doctor_lab, 6)
    priority, match = {"to the snat address, before the NAT point": (
                           "raw", f"ip6 daddr {_NOT_THE_NODE_S}"),
                       "out by eth0": ("filter", 'oifname "eth0"')}.get(
        candidate) or _CANDIDATES[candidate]
    run_in(doctor_lab.node, ["nft", "-f", "-"], input_text=(
        "table inet h_own_pmtu {\n chain output {\n"
        f"  type filter hook output priority {priority}; policy accept;\n"
        f"  icmpv6 type packet-too-big {to_v6(match)} drop\n }}\n"
        " chain post {\n  type nat hook postrouting priority 99; policy accept;\n"
        f"  ip6 saddr {to_v6(topology.pod)} snat ip6 to {_NOT_THE_NODE_S}\n }}\n}}\n"))
    learnt = _learnt(doctor_lab, topology)
    d = _diagnosed(doctor_lab, topology)
    assert f"snat to {_NOT_THE_NODE_S}" in d.render(), d.render()
    expected = {"from the pods' gateway", "to the snat address, before the NAT point",
                "to the pod, after the NAT point", "out by eth0"}
    assert ("mtu 1280" not in learnt) is (candidate in expected), learnt  # the kernel's word
    dropped = [f for f in d.findings if f.code == "pmtu-error-dropped"]
    assert [f.severity for f in dropped] == ([] if "mtu 1280" in learnt else ["warning"]), (
        learnt, d.render())


@pytest.mark.parametrize("lock", [False, True], ids=["mtu", "mtu lock"])
@pytest.mark.parametrize("table", ["mangle", "filter"])
def test_an_ip6tables_output_rule_on_the_masquerade_s_address_drops_the_late_error(
        doctor_lab: DoctorLab, lock: bool, table: str) -> None:
    """The same through ip6tables-nft: ``-t mangle`` / ``-t filter -A OUTPUT -s`` the
    uplink's address drops the node's Packet Too Big only where the route's mtu is not
    locked (the error then comes from the address the masquerade gave the pod's packet);
    the doctor names the rule exactly then."""
    topology = Topology(family=6)
    doctor_lab.configure(topology)
    _narrow_route(doctor_lab, 6, lock)
    run_in(doctor_lab.node, ["ip6tables-nft", "-t", table, "-A", "OUTPUT", "-s",
                             to_v6(UPLINKS["eth0"][0]), "-p", "ipv6-icmp", "-m", "icmp6",
                             "--icmpv6-type", "packet-too-big", "-j", "DROP"])
    learnt = _learnt(doctor_lab, topology)
    d = _diagnosed(doctor_lab, topology)
    assert ("mtu 1280" in learnt) is lock, learnt  # the kernel's word
    dropped = [f for f in d.findings if f.code == "pmtu-error-dropped"]
    assert [f.severity for f in dropped] == ([] if lock else ["warning"]), d.render()
    if not lock:
        assert "OUTPUT" in dropped[0].where, d.render()


#: Datagrams from the pod as TCP sizes its segments: the largest its interface takes
#: (1448 bytes), a smaller one (1348) only once an error told it that one is too large.
_SEND_AS_LEARNT = """
import socket, sys
sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
sock.connect((sys.argv[1], 9))
for _ in range(3):
    try:
        sock.send(b"x" * 1400)
    except OSError:  # EMSGSIZE: the node's first error arrived
        try:
            sock.send(b"x" * 1300)
        except OSError:
            pass
"""


@pytest.mark.parametrize("oif", ["cni0", "lo", None])
def test_both_errors_of_an_unlocked_route_mtu_below_a_device_mtu_below_the_pod_s_are_followed(
        doctor_lab: DoctorLab, oif: str | None) -> None:
    """The pod's interface 1500, the uplink's 1400, its route ``mtu 1280`` not locked: the
    pod's 1448-byte packets are over the device's MTU, so ``ip6_forward`` answers them
    before postrouting (Packet Too Big 1400, from the pods' gateway by cni0); the
    1348-byte ones it sends only then pass it and meet the route's mtu after postrouting (1280,
    from the masquerade's address by lo). A rule dropping either leaves the pod without
    the path's MTU; the doctor followed the second alone. Without a rule, the pod learns
    the route's mtu."""
    topology = Topology(family=6)
    doctor_lab.configure(topology)
    _narrow_route(doctor_lab, 6)
    run_in(doctor_lab.node, ["ip", "link", "set", "eth0", "mtu", "1400"])
    pod = doctor_lab.names["pod"]
    try:
        if oif is not None:
            run_in(doctor_lab.node, ["nft", "-f", "-"], input_text=(
                "table inet h_own_pmtu {\n chain output {\n"
                "  type filter hook output priority filter; policy accept;\n"
                f"  icmpv6 type packet-too-big oifname {oif} drop\n }}\n}}\n"))
        run_in(pod, ["ip", "-6", "route", "flush", "cache"], check=False)
        run_in(pod, [sys.executable, "-I", "-S", "-c", _SEND_AS_LEARNT, topology.destination])
        learnt = run_in(pod, ["ip", "-6", "-o", "route", "get", topology.destination]).stdout
        d = _diagnosed(doctor_lab, topology)
    finally:
        run_in(doctor_lab.node, ["ip", "link", "set", "eth0", "mtu", "1500"])
    assert ("mtu 1280" in learnt) is (oif is None), learnt  # the kernel: a rule, a hole
    dropped = [f for f in d.findings if f.code == "pmtu-error-dropped"]
    assert [f.severity for f in dropped] == ([] if oif is None else ["warning"]), (
        learnt, d.render())
    assert all(f'oifname "{oif}"' in f.where for f in dropped), d.render()
