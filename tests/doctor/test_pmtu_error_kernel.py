"""The ICMP error of path MTU discovery, dropped by a foreign rule in the node's forward
path, against the kernel.

The router's link towards the database is 1280 while the pod, the node and the rest of
the path take 1500: the router drops the pod's larger packets and answers fragmentation
needed (IPv6: Packet Too Big), which comes back through the node's forward path to the
pod. A foreign rule there dropping that ICMP type (nftables or iptables, as admins write
them to "harden" a node) makes a black hole: connections open, large packets die. The
node's own MTUs are all 1500, so there was no finding at all (the doctor did not follow
the error); it now traces the error back through prerouting, forward and postrouting
and names the rule (``pmtu-error-dropped``). The kernel's own view: the pod's route to
the database (``ip route get``) holds ``mtu 1280`` once the error arrived, never while
the rule drops it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import pytest

from k3snet.doctor import Flow, NodeState, Verdict, diagnose
from k3snet.lab.netns import run_in
from tests.pmtu import learnt_mtu_in

from .conftest import DoctorLab, Topology

pytestmark = [pytest.mark.kernel]

_NFT_DROP = """table inet h_pmtu_drop {
 chain forward {
  type filter hook forward priority 0; policy accept;
  icmp type destination-unreachable icmp code frag-needed drop
  icmpv6 type packet-too-big drop
 }
}
"""
#: The same as verdict maps and a named set, as admins also write them: nft -j prints
#: their keys and elements by name.
_NFT_MAPS = """table inet h_pmtu_maps {
 set blocked6 { type icmpv6_type; elements = { packet-too-big } }
 chain forward {
  type filter hook forward priority 0; policy accept;
  icmp type vmap { echo-request : accept, destination-unreachable : drop }
  icmpv6 type @blocked6 drop
 }
}
"""
_XT_DROP = {4: ["iptables-nft", "-I", "FORWARD", "-p", "icmp", "-m", "icmp", "--icmp-type",
                "fragmentation-needed", "-j", "DROP"],
            6: ["ip6tables-nft", "-I", "FORWARD", "-p", "ipv6-icmp", "-m", "icmp6",
                "--icmpv6-type", "packet-too-big", "-j", "DROP"]}
#: How the listing names the rule: nft's words, iptables-save's numbers.
_NAMED = {("nft", 4): "frag-needed", ("nft", 6): "packet-too-big",
          ("nft-maps", 4): "destination-unreachable", ("nft-maps", 6): "@blocked6",
          ("iptables", 4): "--icmp-type 3/4", ("iptables", 6): "--icmpv6-type 2"}


@pytest.fixture
def narrow(doctor_lab: DoctorLab) -> Iterator[DoctorLab]:
    """The router's side towards the database, and the database's, at 1280 (the lab is
    shared by the module: put back afterwards, the pod's learnt MTUs forgotten)."""
    router, db, pod = (doctor_lab.names[n] for n in ("router", "db", "pod"))
    run_in(router, ["ip", "link", "set", "eth1", "mtu", "1280"])
    run_in(db, ["ip", "link", "set", "eth0", "mtu", "1280"])
    try:
        yield doctor_lab
    finally:
        run_in(router, ["ip", "link", "set", "eth1", "mtu", "1500"], check=False)
        run_in(db, ["ip", "link", "set", "eth0", "mtu", "1500"], check=False)
        for family in ("-4", "-6"):
            run_in(pod, ["ip", family, "route", "flush", "cache"], check=False)
        doctor_lab.reset()


def _learnt(lab: DoctorLab, topology: Topology) -> str:
    pod = lab.names["pod"]
    run_in(pod, ["ip", f"-{topology.family}", "route", "flush", "cache"], check=False)
    return learnt_mtu_in(pod, topology.family, topology.destination)


@pytest.mark.parametrize("tool", ["nft", "nft-maps", "iptables"])
@pytest.mark.parametrize("family", [4, 6])
def test_a_forward_rule_dropping_the_pmtu_error_is_named_where_the_kernel_loses_it(
        narrow: DoctorLab, family: Literal[4, 6], tool: str) -> None:
    topology = Topology(family=family)
    narrow.configure(topology)
    node = narrow.node
    # Without the rule the error passes: the pod learns the path's MTU.
    assert "mtu 1280" in _learnt(narrow, topology)
    clean = diagnose(NodeState.from_capture(narrow.capture()),
                     Flow(topology.pod, topology.destination, port=topology.port))
    assert "pmtu-error-dropped" not in [f.code for f in clean.findings], clean.render()
    if tool.startswith("nft"):
        run_in(node, ["nft", "-f", "-"], input_text=_NFT_DROP if tool == "nft" else _NFT_MAPS)
    else:
        run_in(node, _XT_DROP[family])
    hole = _learnt(narrow, topology)
    d = diagnose(NodeState.from_capture(narrow.capture()),
                 Flow(topology.pod, topology.destination, port=topology.port))
    assert "mtu 1280" not in hole, hole  # the kernel: the rule made the hole
    assert d.verdict is Verdict.REACHES, d.render()  # the first, small packet does
    (finding,) = [f for f in d.findings if f.code == "pmtu-error-dropped"]
    assert finding.severity == "warning", d.render()
    assert _NAMED[tool, family] in finding.where, d.render()
    kind = "fragmentation needed" if family == 4 else "Packet Too Big"
    assert kind in finding.what, d.render()
    assert "path-mtu" not in [f.code for f in d.findings], d.render()  # the node's MTUs fit


@pytest.mark.parametrize("family", [4, 6])
def test_a_forward_policy_drop_accepting_established_alone_drops_the_pmtu_error(
        narrow: DoctorLab, family: Literal[4, 6]) -> None:
    """A forward chain of policy drop that accepts the pods' packets and what is
    ``established`` for them, not ``related``: the flow passes, its ICMP error does not."""
    topology = Topology(family=family)
    narrow.configure(topology)
    pods = "10.42.0.0/16" if family == 4 else "fd42:42::/56"
    ip = "ip" if family == 4 else "ip6"
    run_in(narrow.node, ["nft", "-f", "-"], input_text=f"""table inet h_pmtu_policy {{
 chain forward {{
  type filter hook forward priority 0; policy drop;
  {ip} saddr {pods} accept
  ct state established accept
 }}
}}
""")
    hole = _learnt(narrow, topology)
    d = diagnose(NodeState.from_capture(narrow.capture()),
                 Flow(topology.pod, topology.destination, port=topology.port))
    assert "mtu 1280" not in hole, hole
    assert d.verdict is Verdict.REACHES, d.render()
    (finding,) = [f for f in d.findings if f.code == "pmtu-error-dropped"]
    assert "policy drop" in finding.where.lower(), d.render()


@pytest.mark.parametrize("family", [4, 6])
def test_a_raw_notrack_on_icmp_keeps_a_masqueraded_pod_s_pmtu_error_at_the_node(
        narrow: DoctorLab, family: Literal[4, 6]) -> None:
    """A raw rule exempting ICMP from tracking (``-t raw -p icmp -j NOTRACK``, a
    "lighter conntrack" tweak), every forward rule accepting: the error comes back
    addressed to the node's masqueraded address and, untracked, is not translated back
    to the pod (no NAT applies to it): the node takes it as its own, the pod never sees
    it. The doctor traced it on to the pod as if translated, and said nothing."""
    topology = Topology(family=family)
    narrow.configure(topology)
    tool, proto = ("iptables-nft", "icmp") if family == 4 else ("ip6tables-nft", "ipv6-icmp")
    run_in(narrow.node, [tool, "-t", "raw", "-A", "PREROUTING", "-p", proto, "-j", "NOTRACK"])
    hole = _learnt(narrow, topology)
    d = diagnose(NodeState.from_capture(narrow.capture()),
                 Flow(topology.pod, topology.destination, port=topology.port))
    assert "mtu 1280" not in hole, hole  # the kernel: the pod never learnt it
    assert d.verdict is Verdict.REACHES, d.render()
    (finding,) = [f for f in d.findings if f.code == "pmtu-error-dropped"]
    assert finding.severity == "warning", d.render()
    assert "NOTRACK" in finding.where, d.render()
