"""A filter chain at exactly the NAT core's priority, against the kernel's.

Every nat chain of a family runs from the NAT core's hooks (``srcnat``, 100, in
postrouting; ``dstnat``, -100, in prerouting), which the kernel registers when the
family's first nat chain is made (``nf_nat_register_fn``). A filter chain at that very
priority runs before the core when it was registered after it, and after it (seeing
the masqueraded source) when it was registered first: the capture does not tell
which. The doctor ran it before the core always: ``ip saddr 10.42.0.0/16 drop`` at
``srcnat`` read "blocked" for a node where the kernel masqueraded first and the
connection went through.
"""

from __future__ import annotations

import pytest

from k3snet.doctor import Flow, NodeState, Verdict, trace
from k3snet.lab.netns import run_in

from .conftest import FIX_MASQUERADE, DoctorLab, Topology, diagnosed_then_fixed

pytestmark = [pytest.mark.kernel]

_FILTER = """table ip lab_post {
 chain post {
  type filter hook postrouting priority srcnat; policy accept;
  ip saddr 10.42.0.0/16 drop
 }
}
"""


@pytest.mark.parametrize("filter_first", [False, True],
                         ids=["nat-core-first", "filter-chain-first"])
def test_a_filter_chain_at_the_nat_priority_is_traced_both_ways_round_the_nat_core(
        doctor_lab_without_legacy: DoctorLab, filter_first: bool) -> None:
    doctor_lab = doctor_lab_without_legacy
    topology = Topology(nat="none")
    doctor_lab.configure(topology)
    node = doctor_lab.node
    try:
        # No nat chain of IPv4 left (no iptables-legacy table in this lab either): the
        # NAT core's hooks are unregistered until the first script's nat chain.
        run_in(node, ["nft", "delete", "table", "ip", "nat"])
        assert run_in(node, ["iptables-legacy-save"]).stdout.strip() == ""
        scripts = [_FILTER, FIX_MASQUERADE] if filter_first else [FIX_MASQUERADE, _FILTER]
        for script in scripts:
            run_in(node, ["nft", "-f", "-"], input_text=script)
        probe = doctor_lab.start_probe(topology.destination, 1.5, topology.port)
        state = NodeState.from_capture(doctor_lab.capture())
        answer = probe.answer()
        found = trace(state, Flow(topology.pod, topology.destination, port=topology.port))
        # registered after the core, the filter chain sees the pod's source and drops
        assert answer["ok"] is filter_first, answer
        assert found.verdict is Verdict.UNKNOWN, found.render()
        order = [s for s in found.steps if s.code == "chain-order"]
        assert order, found.render()
        assert "NAT core" in order[0].detail, found.render()
    finally:
        for table in ("lab_post", "lab_nat"):
            run_in(node, ["nft", "delete", "table", "ip", table], check=False)


def test_a_filter_chain_at_the_nat_priority_runs_before_an_iptables_legacy_nat_core(
        doctor_lab: DoctorLab) -> None:
    """With iptables-legacy's nat table there (registered first, as on a node that used
    it at boot), the NAT core is older than any nftables chain: one at its priority runs
    before it, and the trace says so, not unknown."""
    topology = Topology(nat="none")
    doctor_lab.configure(topology)
    node = doctor_lab.node
    try:
        assert "*nat" in run_in(node, ["iptables-legacy-save"]).stdout
        for script in (_FILTER, FIX_MASQUERADE):
            run_in(node, ["nft", "-f", "-"], input_text=script)
        answer, found = doctor_lab.kernel_and_trace(topology)
        assert answer["ok"] is False, answer
        assert found.verdict is Verdict.BLOCKED, found.render()
        assert not [s for s in found.steps if s.code == "chain-order"], found.render()
    finally:
        for table in ("lab_post", "lab_nat"):
            run_in(node, ["nft", "delete", "table", "ip", table], check=False)


def test_the_fix_s_masquerade_registers_the_nat_core_after_a_filter_chain_at_its_priority(
        doctor_lab_without_legacy: DoctorLab) -> None:
    """No nat chain yet: the fix's masquerade will register the NAT core, after the
    filter chain, so that chain sees the masqueraded source, as the prediction says."""
    def made(node: str) -> None:
        run_in(node, ["nft", "-f", "-"], input_text=_FILTER.replace(
            "ip saddr 10.42.0.0/16 drop", "ip saddr 192.168.1.5 drop"))

    d, answer = diagnosed_then_fixed(doctor_lab_without_legacy, made)
    assert d.findings[0].code == "no-masquerade", d.render()
    assert d.after.verdict is Verdict.BLOCKED, d.render()
    assert d.after.blocked_at is not None
    assert d.after.blocked_at.where == "nft ip lab_post post", d.render()
    assert answer["ok"] is False  # the fix's masquerade, made now
