"""Chains that run after the NAT point of their hook see the translated packet, as the
kernel's do.

Every nat chain of a hook is run from the NAT core's one hook, at priority -100 in
prerouting and 100 in postrouting whatever its own priority, and the translation is
made there: a prerouting chain at priority 0 sees a Service's endpoint, not its
ClusterIP; a postrouting chain at 300, or an ``egress`` chain, sees the masqueraded
source, not the pod's. The doctor showed them the untranslated packet and said
"blocked" for flows the kernel lets through, and "reaches" for flows it drops.
"""

from __future__ import annotations

import pytest

from k3snet.doctor import Flow, NodeState, Verdict, trace
from k3snet.lab.netns import run_in

from .conftest import DoctorLab, Topology, counted

pytestmark = [pytest.mark.kernel]


def _chain(hook: str, priority: int, rule: str) -> str:
    return (f"table inet lab_late {{\n chain c {{\n  type filter hook {hook} priority "
            f"{priority}; policy accept;\n  {rule}\n }}\n}}\n")


_SERVICE = Topology(dest="service", kube_proxy="iptables-nft")
_SERVICE_NFT = Topology(dest="service", kube_proxy="nftables")
#: name -> (topology, nft script, the kernel lets the flow through)
_CASES = {
    "prerouting-after-dnat-clusterip-drop": (
        _SERVICE, _chain("prerouting", 0, "ip daddr 10.43.0.100 drop"), True),
    "prerouting-after-dnat-endpoint-drop": (
        _SERVICE, _chain("prerouting", 0, "ip daddr { 192.168.2.10, 192.168.2.11 } drop"),
        False),
    "prerouting-after-nft-dnat-endpoint-drop": (
        _SERVICE_NFT, _chain("prerouting", -50, "tcp dport 5432 drop"), False),
    "postrouting-after-masquerade-pod-drop": (
        Topology(), _chain("postrouting", 300, "ip saddr 10.42.0.0/16 drop"), True),
    "postrouting-after-masquerade-node-drop": (
        Topology(), _chain("postrouting", 300, "ip saddr 192.168.1.5 drop"), False),
    "postrouting-v6-after-masquerade-pod-drop": (
        Topology(family=6), _chain("postrouting", 300, "ip6 saddr fd42:42::10 drop"), True),
    "egress-after-masquerade-pod-drop": (
        Topology(), "table netdev lab_egress {\n chain c {\n  type filter hook egress "
        "device eth0 priority 0; policy accept;\n  ip saddr 10.42.0.0/16 drop\n }\n}\n", True),
    "reply-postrouting-after-undo-dnat-endpoint-drop": (
        _SERVICE, _chain("postrouting", 300, "ip saddr { 192.168.2.10, 192.168.2.11 } drop"),
        True),
}


@pytest.mark.parametrize("case", list(_CASES))
def test_a_chain_after_the_nat_point_sees_the_translated_packet_as_the_kernel_does(
        doctor_lab: DoctorLab, case: str) -> None:
    topology, script, reaches = _CASES[case]
    doctor_lab.configure(topology)
    run_in(doctor_lab.node, ["nft", "-f", "-"], input_text=counted(script))
    answer, found = doctor_lab.kernel_and_trace(topology, timeout=2,
                                                until_dropped=not reaches)
    assert answer["ok"] is reaches, answer
    assert found.verdict is (Verdict.REACHES if reaches else Verdict.BLOCKED), found.render()


def test_a_nat_chain_of_an_early_priority_runs_at_the_nat_point(doctor_lab: DoctorLab) -> None:
    """A nat chain at priority -150 still translates at -100: a filter chain at -120
    sees the destination the pod asked for (the kernel drops the flow here)."""
    topology = Topology()
    doctor_lab.configure(topology)
    run_in(doctor_lab.node, ["nft", "-f", "-"], input_text=(
        "table ip lab_early_nat {\n chain pre {\n  type nat hook prerouting priority -150; "
        "policy accept;\n  ip daddr 10.99.0.1 tcp dport 5432 dnat to 192.168.2.10:5432\n }\n"
        " chain f {\n  type filter hook prerouting priority -120; policy accept;\n"
        "  ip daddr 10.99.0.1 drop\n }\n}\n"))
    probe = doctor_lab.start_probe("10.99.0.1", 2)
    found = trace(NodeState.from_capture(doctor_lab.capture()),
                  Flow(topology.pod, "10.99.0.1", port=5432))
    assert probe.answer()["ok"] is False
    assert found.verdict is Verdict.BLOCKED, found.render()
    assert found.blocked_at is not None, found.render()
    assert found.blocked_at.where == "nft ip lab_early_nat f", found.render()
