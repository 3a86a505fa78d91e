"""Rules on TCP flags, against the kernel: iptables ``--syn`` / ``--tcp-flags``, nftables
``tcp flags``. The packets traced carry a connection's flags: its first a SYN, its
reply a SYN-ACK, the next ones an ACK. The doctor reported every such rule unknown,
so the hardening rule ``-p tcp ! --syn -m state --state NEW -j DROP`` made every TCP
flow ``unknown``; it now evaluates them.
"""

from __future__ import annotations

import pytest

from k3snet.doctor import Verdict
from k3snet.lab.netns import run_in

from .conftest import DoctorLab, Topology, counted

pytestmark = [pytest.mark.kernel]

_NFT = ("table inet lab_flags {{\n chain f {{\n  type filter hook forward priority 0; "
        "policy accept;\n  {}\n }}\n}}\n")

#: name -> (nft rule, or iptables FORWARD rule arguments; the kernel lets the flow through)
_CASES: dict[str, tuple[str | list[str], bool]] = {
    "nft-not-syn-new-drop": ("tcp flags & (fin|syn|rst|ack) != syn ct state new drop", True),
    "nft-syn-bit-drop": ("tcp flags syn drop", False),
    "nft-syn-ack-drop": ("tcp flags == syn|ack drop", False),
    "nft-no-syn-from-pods-drop": ('iifname "cni0" tcp flags ! syn drop', False),
    "nft-set-drop": ('tcp flags { syn } oifname "eth0" drop', False),
    "nft-ack-from-pods-drop": ('tcp flags & (syn|ack) == ack iifname "cni0" drop', False),
    "iptables-not-syn-new-drop": (["-p", "tcp", "!", "--syn", "-m", "state", "--state", "NEW",
                                   "-j", "DROP"], True),
    "iptables-syn-ack-drop": (["-p", "tcp", "--tcp-flags", "SYN,ACK", "SYN,ACK", "-j", "DROP"],
                              False),
    "iptables-syn-from-pods-drop": (["-s", "10.42.0.0/16", "-p", "tcp", "--syn", "-j", "DROP"],
                                    False),
    "iptables-null-scan-drop": (["-p", "tcp", "--tcp-flags", "ALL", "NONE", "-j", "DROP"], True),
}


@pytest.mark.parametrize("case", list(_CASES))
def test_a_rule_on_tcp_flags_decides_as_in_the_kernel(doctor_lab: DoctorLab, case: str) -> None:
    rule, reaches = _CASES[case]
    topology = Topology()
    doctor_lab.configure(topology)
    if isinstance(rule, str):
        run_in(doctor_lab.node, ["nft", "-f", "-"], input_text=counted(_NFT.format(rule)))
    else:
        run_in(doctor_lab.node, ["iptables-nft", "-A", "FORWARD", *rule])
    answer, found = doctor_lab.kernel_and_trace(topology, timeout=2,
                                                   until_dropped=not reaches)
    assert answer["ok"] is reaches, answer
    assert found.verdict is (Verdict.REACHES if reaches else Verdict.BLOCKED), found.render()
