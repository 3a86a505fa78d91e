"""conntrack's ``SNAT`` and ``DNAT`` states (``-m conntrack --ctstate DNAT``) against the
kernel's.

They are virtual states: a packet is in ``DNAT`` when its connection's destination was
translated (a Service's, by kube-proxy), in ``SNAT`` when its source was (masquerade),
for every packet after the translation, replies included. A ``FORWARD DROP`` node
accepting ``--ctstate DNAT`` lets a pod reach a Service; accepting ``--ctstate SNAT``
lets the replies of masqueraded flows back. The doctor read these states as never
matching and said "blocked" for both.
"""

from __future__ import annotations

import pytest

from k3snet.doctor import Verdict
from k3snet.lab.netns import run_in

from .conftest import DoctorLab, Topology

pytestmark = [pytest.mark.kernel]

_CASES = {
    "dnat-accepted": (
        Topology(dest="service", kube_proxy="iptables-nft", forward_policy="drop-nft"),
        [["iptables-nft", "-A", "FORWARD", "-m", "conntrack", "--ctstate", "DNAT",
          "-j", "ACCEPT"]]),
    "snat-replies-accepted": (
        Topology(forward_policy="drop-nft"),
        [["iptables-nft", "-A", "FORWARD", "-s", "10.42.0.0/16", "-j", "ACCEPT"],
         ["iptables-nft", "-A", "FORWARD", "-m", "conntrack", "--ctstate", "SNAT",
          "-j", "ACCEPT"]]),
    "snat-replies-accepted-v6": (
        Topology(family=6, forward_policy="drop-nft"),
        [["ip6tables-nft", "-A", "FORWARD", "-s", "fd42:42::/56", "-j", "ACCEPT"],
         ["ip6tables-nft", "-A", "FORWARD", "-m", "conntrack", "--ctstate", "SNAT,DNAT",
          "-j", "ACCEPT"]]),
}


@pytest.mark.parametrize("case", list(_CASES))
def test_ctstate_snat_and_dnat_match_translated_connections_as_the_kernel_does(
        doctor_lab: DoctorLab, case: str) -> None:
    topology, commands = _CASES[case]
    doctor_lab.configure(topology)
    for argv in commands:
        run_in(doctor_lab.node, argv)
    answer, found = doctor_lab.kernel_and_trace(topology, timeout=2)
    assert answer["ok"], answer
    assert found.verdict is Verdict.REACHES, found.render()
