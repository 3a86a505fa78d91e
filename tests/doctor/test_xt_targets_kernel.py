"""iptables-nft's targets as nft's own view lists them (``xt`` targets), against the
kernel's.

Where ``iptables-nft-save`` is not there to print iptables-nft's tables (the node's
iptables is K3s' own, or another program's, not on the path) or calls one
incompatible (written by a newer iptables-nft), the doctor reads them from ``nft -j
list ruleset``, which names a compat target and nothing more: ``{"xt": {"type":
"target", "name": "REJECT"}}``. The doctor took every one for a rule it cannot
evaluate (verdict unknown), while ``REJECT`` always drops (``reject_tg`` answers
``NF_DROP``) and ``MASQUERADE`` always masquerades: what they do is in the name. ``CT``
(and ``-j NOTRACK``, which iptables-nft writes as ``CT``) is not: its options say
whether it exempts the packet.
"""

from __future__ import annotations

import pytest

from k3snet.doctor import Flow, NodeCapture, NodeState, Verdict, trace
from k3snet.lab.netns import run_in

from .conftest import DoctorLab, Topology

pytestmark = [pytest.mark.kernel]


def _without_iptables_save(capture: NodeCapture) -> NodeCapture:
    """``capture`` as a node without ``iptables-nft-save`` on its path takes it."""
    gone = ("iptables-nft-v4.save", "iptables-nft-v6.save")
    return NodeCapture({k: v for k, v in capture.texts.items() if k not in gone},
                       {**capture.missing,
                        **dict.fromkeys(gone, "iptables-nft-save: not installed")})


@pytest.mark.parametrize(("nat", "extra", "reaches"), [
    ("masq-nft", [], True),
    ("masq-nft", ["-I", "FORWARD", "-d", "192.168.2.0/24", "-j", "REJECT"], False),
], ids=["masquerade", "reject"])
def test_iptables_nft_targets_read_from_nft_decide_as_in_the_kernel(
        doctor_lab: DoctorLab, nat: str, extra: list[str], reaches: bool) -> None:
    topology = Topology(nat=nat)  # type: ignore[arg-type]
    doctor_lab.configure(topology)
    if extra:
        run_in(doctor_lab.node, ["iptables-nft", *extra])
    probe = doctor_lab.start_probe(topology.destination, 1.5, topology.port)
    state = NodeState.from_capture(_without_iptables_save(doctor_lab.capture()))
    answer = probe.answer()
    found = trace(state, Flow(topology.pod, topology.destination, port=topology.port))
    assert answer["ok"] is reaches, answer
    assert found.verdict is (Verdict.REACHES if reaches else Verdict.BLOCKED), found.render()
    if reaches:
        assert str(found.source_seen) == answer["seen"], found.render()


@pytest.mark.parametrize("target", [["CT", "--notrack"], ["CT", "--zone", "3"], ["NOTRACK"]])
def test_an_iptables_nft_ct_target_read_from_nft_stays_unknown(
        doctor_lab: DoctorLab, target: list[str]) -> None:
    """``-j CT``'s options (``--notrack`` or a zone) are not in nft's JSON, and
    iptables-nft writes ``-j NOTRACK`` as ``CT`` too: unknown."""
    topology = Topology(nat="masq-nft")
    doctor_lab.configure(topology)
    run_in(doctor_lab.node, ["iptables-nft", "-t", "raw", "-A", "PREROUTING", "-s",
                             "10.42.0.0/16", "-j", *target])
    state = NodeState.from_capture(_without_iptables_save(doctor_lab.capture()))
    found = trace(state, Flow(topology.pod, topology.destination, port=topology.port))
    assert found.verdict is Verdict.UNKNOWN, found.render()
