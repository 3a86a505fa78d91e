"""A connection's next packets from the pod, against the kernel.

After the first packet (conntrack ``new``) and its reply, the pod's next packets (the
handshake's ACK, the data) cross prerouting, forward and postrouting again, now
``established`` and in conntrack's ``SNAT``/``DNAT`` states. A forward chain accepting
only ``new`` packets from pods (and ``established`` ones towards them) lets the first
packet and the replies through and drops the rest: the connection fails. The doctor
traced the first packet and the replies only, and said "reaches".
"""

from __future__ import annotations

import pytest

from k3snet.doctor import Flow, NodeState, Verdict, diagnose
from k3snet.lab.netns import run_in

from .conftest import DoctorLab, Topology, counted

pytestmark = [pytest.mark.kernel]

_NEW_ONLY = [
    ["iptables-nft", "-A", "FORWARD", "-s", "10.42.0.0/16", "-m", "conntrack", "--ctstate",
     "NEW", "-j", "ACCEPT"],
    ["iptables-nft", "-A", "FORWARD", "-d", "10.42.0.0/16", "-m", "conntrack", "--ctstate",
     "RELATED,ESTABLISHED", "-j", "ACCEPT"]]
_NFT_NEW_ONLY = """table inet lab_fw {
 chain fw {
  type filter hook forward priority 0; policy drop;
  iifname "cni0" ct state new accept
  oifname "cni0" ct state established accept
 }
}
"""
#: name -> (topology, iptables commands or an nft script, the kernel lets it through)
_CASES = {
    "iptables-new-only-from-pods": (Topology(forward_policy="drop-nft"), _NEW_ONLY, False),
    "nft-new-only-from-pods": (Topology(), _NFT_NEW_ONLY, False),
    "snat-state-dropped": (Topology(), [
        ["iptables-nft", "-A", "FORWARD", "-s", "10.42.0.0/16", "-m", "conntrack",
         "--ctstate", "SNAT", "-j", "DROP"]], False),
    "established-accepted-both-ways": (Topology(forward_policy="drop-nft"), [
        ["iptables-nft", "-A", "FORWARD", "-m", "conntrack", "--ctstate",
         "RELATED,ESTABLISHED", "-j", "ACCEPT"],
        ["iptables-nft", "-A", "FORWARD", "-s", "10.42.0.0/16", "-m", "conntrack",
         "--ctstate", "NEW", "-j", "ACCEPT"]], True),
}


@pytest.mark.parametrize("case", list(_CASES))
def test_the_connections_next_packets_cross_the_chains_as_in_the_kernel(
        doctor_lab: DoctorLab, case: str) -> None:
    topology, how, reaches = _CASES[case]
    doctor_lab.configure(topology)
    if isinstance(how, str):
        run_in(doctor_lab.node, ["nft", "-f", "-"], input_text=counted(how))
    else:
        for argv in how:
            run_in(doctor_lab.node, argv)
    answer, found = doctor_lab.kernel_and_trace(topology, timeout=2,
                                                until_dropped=not reaches)
    assert answer["ok"] is reaches, answer
    assert found.verdict is (Verdict.REACHES if reaches else Verdict.BLOCKED), found.render()
    if not reaches:
        assert found.blocked_at is not None, found.render()
        assert "next packets" in found.blocked_at.detail, found.render()


def test_a_forward_accept_for_the_pods_is_the_fix_for_new_only_rules(
        doctor_lab: DoctorLab) -> None:
    topology = Topology(forward_policy="drop-nft")
    doctor_lab.configure(topology)
    for argv in _NEW_ONLY:
        run_in(doctor_lab.node, argv)
    d = diagnose(NodeState.from_capture(doctor_lab.capture()),
                 Flow(topology.pod, topology.destination, port=topology.port))
    assert [f.code for f in d.findings][:1] == ["forward-drop"], d.render()
    assert d.after.verdict is Verdict.REACHES, d.render()


def _mark_pods(which: str) -> str:
    return ("table ip lab_mark {\n chain pre {\n  type filter hook prerouting priority -150; "
            f'policy accept;\n  iifname "cni0" {which}meta mark set 0x10\n }}\n}}\n')


#: name -> (topology, a rule marking pods' packets (their new ones only?), kernel passes)
_MARKED = {
    # The first packet leaves by eth1 (table 100); the rest have no route in main.
    "new-only-no-route": (Topology(route="missing"), "ct state new ", False),
    # The rest leave by eth0, not eth1 where the connection was masqueraded.
    "new-only-masquerade-other-uplink": (Topology(), "ct state new ", False),
    # SNAT holds no interface: the rest leave by eth0 with the same source, and pass.
    "new-only-snat-other-uplink": (Topology(nat="snat"), "ct state new ", True),
    "every-packet": (Topology(), "", True),
}


@pytest.mark.parametrize("case", list(_MARKED))
def test_the_connections_next_packets_are_routed_on_their_own_mark_as_in_the_kernel(
        doctor_lab: DoctorLab, case: str) -> None:
    """Pods' packets marked in prerouting for ``fwmark 0x10 lookup 100`` (the database
    by ``eth1``): a rule marking only ``new`` packets routes the connection's next
    packets by the main table. With no route there, or a route by another interface
    than the one its masquerade was made on (the kernel drops those packets and kills
    the connection: nf_nat_oif_changed), the connection fails; the doctor routed them
    as the first and said "reaches"."""
    topology, which, reaches = _MARKED[case]
    doctor_lab.configure(topology)
    node = doctor_lab.node
    run_in(node, ["ip", "route", "add", "192.168.2.0/24", "via", "192.168.4.1", "dev", "eth1",
                  "table", "100"])
    run_in(node, ["ip", "rule", "add", "fwmark", "0x10", "lookup", "100", "pref", "100"])
    run_in(node, ["nft", "-f", "-"], input_text=_mark_pods(which))
    answer, found = doctor_lab.kernel_and_trace(topology, timeout=2)
    assert answer["ok"] is reaches, answer
    assert found.verdict is (Verdict.REACHES if reaches else Verdict.BLOCKED), found.render()
    if not reaches:
        assert found.blocked_at is not None, found.render()
        assert found.blocked_at.code == "onward-route", found.render()
        assert "next packets" in found.blocked_at.detail, found.render()


def test_the_connections_next_packets_pass_rp_filter_with_their_own_mark(
        doctor_lab: DoctorLab) -> None:
    """``src_valid_mark`` on, strict ``rp_filter`` on ``cni0``: the connection's next
    packets, marked 0x10 where the first was not, are routed by table 100 (the same
    uplink) and validated with that mark, where the pods' network is unreachable: the
    kernel drops them; the doctor validated the first packet only."""
    topology = Topology(rp_cni=1)
    doctor_lab.configure(topology)
    node = doctor_lab.node
    run_in(node, ["ip", "route", "add", "192.168.2.0/24", "via", "192.168.1.1", "dev", "eth0",
                  "table", "100"])
    run_in(node, ["ip", "route", "add", "unreachable", "10.42.0.0/16", "table", "100"])
    run_in(node, ["ip", "rule", "add", "fwmark", "0x10", "lookup", "100", "pref", "100"])
    run_in(node, ["nft", "-f", "-"], input_text=_mark_pods("ct state established "))
    run_in(node, ["sysctl", "-q", "-w", "net.ipv4.conf.all.src_valid_mark=1"])
    try:
        answer, found = doctor_lab.kernel_and_trace(topology, timeout=2)
    finally:
        run_in(node, ["sysctl", "-q", "-w", "net.ipv4.conf.all.src_valid_mark=0"])
    assert answer["ok"] is False, answer
    assert found.verdict is Verdict.BLOCKED, found.render()
    assert found.blocked_at is not None
    assert found.blocked_at.code == "rp-filter", found.render()
    assert "next packets" in found.blocked_at.detail, found.render()
