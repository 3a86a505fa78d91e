"""Connection tracking exemptions (``NOTRACK``, ``CT --notrack``, nftables ``notrack``)
against the kernel's.

A packet a raw rule exempts from conntrack is never translated: the nat chains are
not even called for it (``nf_nat_inet_fn`` finds no conntrack entry), so the
masquerade the healthy lab node has does not apply and the database sees, and
answers, the pod's own address, which the router cannot route back. A reply
exempted in the same way is not translated back to the pod either. The doctor said
"reaches" for all of these: it took ``NOTRACK`` and ``notrack`` for no-ops.
"""

from __future__ import annotations

import pytest

from k3snet.doctor import Diagnosis, Flow, NodeState, Verdict, diagnose
from k3snet.lab.netns import run_in

from .conftest import DoctorLab, Topology

pytestmark = [pytest.mark.kernel]

_NFT_NOTRACK = """table {family} lab_raw {{
 chain pre {{
  type filter hook prerouting priority raw; policy accept;
  {match} notrack
 }}
}}
"""


def _diagnosis(doctor_lab: DoctorLab, topology: Topology, *, dropped: bool = False
               ) -> tuple[dict[str, object], Diagnosis]:
    """The kernel's answer and the diagnosis; ``dropped``: the test expects the kernel to
    drop the flow, which a counter shows at once (the router's ``InNoRoutes`` for the
    untranslated replies of IPv4: :meth:`~tests.doctor.conftest.DoctorLab.answer_or_drop`)."""
    answer, _ = doctor_lab.kernel_and_trace(topology, timeout=3, until_dropped=dropped)
    state = NodeState.from_capture(doctor_lab.capture())
    return answer, diagnose(state, Flow(topology.pod, topology.destination, port=topology.port))


@pytest.mark.parametrize(("family", "how"), [
    (4, ["iptables-nft", "-t", "raw", "-A", "PREROUTING", "-s", "10.42.0.0/16",
         "-j", "NOTRACK"]),
    (4, ["iptables-legacy", "-t", "raw", "-A", "PREROUTING", "-s", "10.42.0.0/16",
         "-j", "CT", "--notrack"]),
    (4, "ip saddr 10.42.0.0/16"),
    (6, ["ip6tables-nft", "-t", "raw", "-A", "PREROUTING", "-s", "fd42:42::/56",
         "-j", "NOTRACK"]),
    (6, "ip6 saddr fd42:42::/56"),
], ids=["iptables-nft", "iptables-legacy-ct", "nftables", "ip6tables-nft", "nftables-v6"])
def test_a_flow_exempted_from_conntrack_is_blocked_and_named_not_masqueraded(
        doctor_lab: DoctorLab, family: int, how: list[str] | str) -> None:
    topology = Topology(family=family)  # type: ignore[arg-type]
    doctor_lab.configure(topology)
    if isinstance(how, str):
        run_in(doctor_lab.node, ["nft", "-f", "-"], input_text=_NFT_NOTRACK.format(
            family="ip" if family == 4 else "ip6", match=how))
    else:
        run_in(doctor_lab.node, how)
    try:
        answer, d = _diagnosis(doctor_lab, topology, dropped=True)
    finally:  # the lab's reset restores the legacy filter and nat tables only
        if how[0] == "iptables-legacy":
            run_in(doctor_lab.node, ["iptables-legacy", "-t", "raw", "-F"])
    assert not answer["ok"], answer
    assert d.verdict is Verdict.BLOCKED, d.render()
    codes = [f.code for f in d.findings]
    assert codes[0] == "untracked", d.render()
    assert "no-masquerade" not in codes, d.render()
    # No k3snet object undoes another program's exemption: nothing is planned that
    # would be predicted to help.
    assert d.after.verdict is Verdict.BLOCKED, d.render()


def test_an_exemption_for_other_traffic_leaves_the_flow_reaching(
        doctor_lab: DoctorLab) -> None:
    topology = Topology()
    doctor_lab.configure(topology)
    run_in(doctor_lab.node, ["iptables-nft", "-t", "raw", "-A", "PREROUTING", "-p", "tcp",
                             "--dport", "80", "-j", "NOTRACK"])
    answer, d = _diagnosis(doctor_lab, topology)
    assert answer["ok"], answer
    assert d.verdict is Verdict.REACHES, d.render()


def test_an_exempted_reply_is_not_translated_back_to_the_pod(doctor_lab: DoctorLab) -> None:
    """The replies from the database's network are exempted: conntrack never sees them,
    so their destination stays the node's address and the pod gets nothing."""
    topology = Topology()
    doctor_lab.configure(topology)
    run_in(doctor_lab.node, ["iptables-nft", "-t", "raw", "-A", "PREROUTING", "-s",
                             "192.168.2.0/24", "-j", "NOTRACK"])
    answer, d = _diagnosis(doctor_lab, topology, dropped=True)
    assert not answer["ok"], answer
    assert d.verdict is Verdict.BLOCKED, d.render()
    assert d.findings[0].code == "untracked", d.render()


def test_notrack_after_conntrack_changes_nothing(doctor_lab: DoctorLab) -> None:
    """``notrack`` in a chain that runs after conntrack (priority above -200) finds the
    packet tracked already, and the kernel leaves it so."""
    topology = Topology()
    doctor_lab.configure(topology)
    run_in(doctor_lab.node, ["nft", "-f", "-"], input_text=_NFT_NOTRACK.format(
        family="ip", match="ip saddr 10.42.0.0/16").replace("priority raw", "priority -150"))
    answer, d = _diagnosis(doctor_lab, topology)
    assert answer["ok"], answer
    assert d.verdict is Verdict.REACHES, d.render()


def test_a_service_address_exempted_from_conntrack_says_why_it_has_no_route(
        doctor_lab: DoctorLab) -> None:
    """A ClusterIP is translated by kube-proxy's DNAT, which an untracked packet never
    gets: the node then has no route to the ClusterIP itself. The doctor said only "add
    a route to 10.43.0.100", a fix that cannot help."""
    topology = Topology(kube_proxy="iptables-nft", dest="service")
    doctor_lab.configure(topology)
    run_in(doctor_lab.node, ["iptables-nft", "-t", "raw", "-A", "PREROUTING", "-s",
                             "10.42.0.0/16", "-j", "NOTRACK"])
    answer, d = _diagnosis(doctor_lab, topology, dropped=True)
    assert not answer["ok"], answer
    assert d.verdict is Verdict.BLOCKED, d.render()
    finding = d.findings[0]
    assert finding.code == "no-route", d.render()
    assert finding.advice is not None
    assert "exempted from connection tracking" in finding.advice, d.render()
