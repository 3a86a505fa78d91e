"""What chains that run before conntrack see of a packet's connection, against the kernel.

Conntrack takes a packet in at priority -200 of prerouting; a chain before it (the
``raw`` table, an nftables chain at ``priority raw`` or -250) finds no conntrack entry:
``ct state`` / ``--ctstate`` read ``invalid`` there, for a flow's first packet and its
replies alike, and ``ct direction`` matches nothing (not even with ``!=``). So ``ct
state invalid drop`` in such a chain drops every packet, and ``ct state
new,established accept`` under a ``drop`` policy accepts none. The doctor said
"reaches" for these: it gave those chains the state conntrack decides later.
"""

from __future__ import annotations

from typing import Literal

import pytest

from k3snet.doctor import Verdict
from k3snet.lab.netns import run_in

from .conftest import DoctorLab, Topology, counted

pytestmark = [pytest.mark.kernel]

_NFT = """table {family} lab_early {{
 chain pre {{
  type filter hook prerouting priority {priority}; policy {policy};
  {rule}
 }}
}}
"""

_CASES: dict[str, tuple[Literal[4, 6], tuple[str | int, str, str] | list[list[str]], bool]] = {
    "nft-raw-invalid-drop": (4, ("raw", "accept", "ct state invalid drop"), False),
    "nft-early-new-accept": (4, (-250, "drop", "ct state new,established accept"), False),
    "nft-raw-direction-drop": (4, ("raw", "accept", "ct direction original drop"), True),
    "nft-v6-raw-invalid-drop": (6, ("raw", "accept", "ct state invalid drop"), False),
    "nft-mangle-invalid-drop": (4, ("mangle", "accept", "ct state invalid drop"), True),
    "iptables-nft-raw-invalid-drop": (
        4, [["iptables-nft", "-t", "raw", "-A", "PREROUTING", "-m", "conntrack",
             "--ctstate", "INVALID", "-j", "DROP"]], False),
    "iptables-nft-raw-new-accept": (
        4, [["iptables-nft", "-t", "raw", "-P", "PREROUTING", "DROP"],
            ["iptables-nft", "-t", "raw", "-A", "PREROUTING", "-m", "state", "--state",
             "NEW,ESTABLISHED", "-j", "ACCEPT"]], False),
}


@pytest.mark.parametrize("case", list(_CASES))
def test_a_chain_before_conntrack_sees_every_packet_as_invalid_as_the_kernel_does(
        doctor_lab: DoctorLab, case: str) -> None:
    family, how, reaches = _CASES[case]
    topology = Topology(family=family)
    doctor_lab.configure(topology)
    if isinstance(how, tuple):
        priority, policy, rule = how
        run_in(doctor_lab.node, ["nft", "-f", "-"], input_text=counted(_NFT.format(
            family="inet", priority=priority, policy=policy, rule=rule)))
    else:
        for argv in how:
            run_in(doctor_lab.node, argv)
    answer, trace = doctor_lab.kernel_and_trace(topology, timeout=2,
                                                until_dropped=not reaches)
    assert answer["ok"] is reaches, answer
    expected = Verdict.REACHES if reaches else Verdict.BLOCKED
    assert trace.verdict is expected, trace.render()
    if not reaches:
        assert trace.blocked_at is not None, trace.render()
        assert trace.blocked_at.stage == "prerouting", trace.render()
