"""A fix object k3snet owns already with another value (its spec's) is not planned, and
``after`` is never predicted from a fix the plan does not carry; a fix added beside what
k3snet owns says what the next ``apply -f SPEC`` does to it and which spec keys keep it."""

from __future__ import annotations

from pathlib import Path

from k3snet.doctor import Flow, NodeCapture, NodeState, diagnose
from k3snet.model import MasqueradeRule, State, Sysctl

GOLDEN = Path(__file__).parent / "golden"
FLOW = Flow("10.42.0.10", "192.168.2.10", port=5432)


def _state(name: str) -> NodeState:
    return NodeState.from_capture(NodeCapture.read_dir(GOLDEN / name))


def test_a_fix_the_spec_owns_otherwise_is_not_planned_and_after_stays_blocked() -> None:
    # The node's spec owns eth1.rp_filter = 0 (all's 1 makes it strict); the doctor's
    # fix is eth1.rp_filter = 2.
    owned = Sysctl("net.ipv4.conf.eth1.rp_filter", "0")
    d = diagnose(_state("rp-filter-strict"), FLOW, observed=State(owned=[owned]))
    assert d.plan.empty
    assert not d.fixes.owned
    assert d.after.verdict.value == "blocked"  # was "reaches": a fix never applied
    finding = next(f for f in d.findings if f.code == "rp-filter")
    assert finding.fix == ()
    assert finding.advice is not None
    assert "k3snet's own spec sets sysctl net.ipv4.conf.eth1.rp_filter = 0" in finding.advice
    assert "sysctls: {net.ipv4.conf.eth1.rp_filter: 2}" in finding.advice
    assert "fix:" not in d.render()  # no plan, no prediction of one


def test_a_fix_the_spec_owns_with_the_same_value_is_met_not_withheld() -> None:
    owned = Sysctl("net.ipv4.conf.eth1.rp_filter", "2")
    d = diagnose(_state("rp-filter-strict"), FLOW, observed=State(owned=[owned]))
    assert [f.fix for f in d.findings if f.code == "rp-filter"] == [(owned,)]
    assert d.after.verdict.value == "reaches"


def test_the_other_findings_fixes_are_planned_and_after_stops_at_the_withheld_one() -> None:
    # seed: forwarding off and no masquerade; the spec owns ip_forward = 0.
    d0 = diagnose(_state("seed"), FLOW)
    assert [f.code for f in d0.findings][:2] == ["forwarding-off", "no-masquerade"]
    forwarding = d0.findings[0].fix[0]
    assert isinstance(forwarding, Sysctl)
    owned = Sysctl(forwarding.name, "0")
    d = diagnose(_state("seed"), FLOW, observed=State(owned=[owned]))
    assert d.findings[0].fix == ()
    assert [type(o) for o in d.fixes.owned] == [MasqueradeRule]
    assert d.after.verdict.value == "blocked"
    assert d.after.blocked_at is not None
    assert d.after.blocked_at.code == "forwarding-off"


def test_a_fix_beside_objects_k3snet_owns_warns_the_next_apply_deletes_it() -> None:
    # The spec's, not the fix's keys: a sysctl and a masquerade of another network.
    owned = [Sysctl("net.ipv4.conf.all.rp_filter", "2"),
             MasqueradeRule("10.99.0.0/16", destination="192.168.9.0/24")]
    d = diagnose(_state("seed"), FLOW, observed=State(owned=owned))
    assert len(d.warnings) == 1
    assert "the next apply of a spec or agent pass deletes this fix again" in d.warnings[0]
    assert "sysctls: {net.ipv4.ip_forward: 1}" in d.warnings[0]
    assert d.to_dict()["warnings"] == list(d.warnings)
    assert f"warning: {d.warnings[0]}" in d.render()


def test_a_fix_owning_alone_through_its_backend_warns_of_the_teardown_guard() -> None:
    d = diagnose(_state("seed"), FLOW, observed=State())
    assert len(d.warnings) == 1
    assert "teardown guard" in d.warnings[0]
    assert "--allow-teardown" in d.warnings[0]


def test_a_fix_alone_in_one_of_its_backends_warns_of_the_teardown_guard() -> None:
    """The spec owns a sysctl (netlink) but no masquerade: the fix's masquerade is all
    k3snet owns through nftables, and the spec's next apply, deleting it, is refused
    (teardown_emptied names nftables). It said that apply deletes the fix."""
    owned = Sysctl("net.ipv4.conf.all.rp_filter", "2")
    d = diagnose(_state("seed"), FLOW, observed=State(owned=[owned]))
    assert len(d.warnings) == 1
    assert "teardown guard" in d.warnings[0], d.warnings[0]
    assert "deletes this fix again" not in d.warnings[0]


def test_without_the_node_observed_there_is_no_warning() -> None:
    d = diagnose(_state("seed"), FLOW)
    assert d.warnings == ()
    assert d.to_dict()["warnings"] == []

