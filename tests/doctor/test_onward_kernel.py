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

from .conftest import DoctorLab, Topology

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
        run_in(doctor_lab.node, ["nft", "-f", "-"], input_text=how)
    else:
        for argv in how:
            run_in(doctor_lab.node, argv)
    answer, found = doctor_lab.kernel_and_trace(topology, timeout=2)
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
