"""Strict ``rp_filter`` against the kernel's where the route back is multipath.

``fib_validate_source`` passes a packet when *any* nexthop of the route back to its
source leaves by the interface it came in on (``fib_info_nh_uses_dev``). The lab's
node routes the database through both uplinks (``eth1`` first, then ``eth0``) with
strict ``rp_filter`` on them: whichever uplink the kernel hashes the flow onto, the
reply comes back there and passes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from k3snet.cli import main
from k3snet.doctor import Flow, NodeState, Verdict, diagnose
from k3snet.lab.netns import run_in
from k3snet.model import Sysctl

from .conftest import PORT, DoctorLab, Topology

pytestmark = [pytest.mark.kernel]


def test_strict_rp_filter_passes_a_reply_on_any_nexthop_of_a_multipath_route(
        doctor_lab: DoctorLab) -> None:
    topology = Topology(rp_uplink=1)
    doctor_lab.configure(topology)
    run_in(doctor_lab.node, ["ip", "route", "replace", "192.168.2.0/24", "proto", "static",
                             "nexthop", "via", "192.168.4.1", "dev", "eth1",
                             "nexthop", "via", "192.168.1.1", "dev", "eth0"])
    answer, result = doctor_lab.kernel_and_trace(topology, timeout=8)
    assert answer["ok"], answer
    assert [e.verdict for e in result.endpoints] == [Verdict.REACHES] * 2, result.render()
    assert result.verdict is Verdict.REACHES, result.render()


def test_strict_rp_filter_passes_a_reply_on_an_unnumbered_uplink_the_route_back_uses(
        doctor_lab: DoctorLab) -> None:
    """``eth0`` has no IPv4 address (the node's is ``192.168.9.5/32`` on ``lo``): the
    kernel checks the route back before the missing address, and it leaves by
    ``eth0``, so the reply passes (the doctor said any such interface fails)."""
    topology = Topology(rp_uplink=1)
    doctor_lab.configure(topology)
    with doctor_lab.unnumbered_uplink():
        answer, result = doctor_lab.kernel_and_trace(topology, timeout=8)
        assert answer["ok"], answer
        assert result.verdict is Verdict.REACHES, result.render()


_MARK_PODS = ("table ip lab_mark {\n chain pre {\n  type filter hook prerouting priority -150; "
              'policy accept;\n  iifname "cni0" meta mark set 0x10\n }\n}\n')


@pytest.mark.parametrize("where", ["off", "all", "cni0"])
def test_strict_rp_filter_looks_the_source_up_with_the_mark_where_src_valid_mark_says(
        doctor_lab: DoctorLab, where: str) -> None:
    """Pods' packets marked in prerouting, the mark routing them out by ``eth1`` (table
    100): with ``src_valid_mark`` on (``all`` or ``cni0``) the reverse lookup takes the
    mark too, so the route back to the pod leaves by ``eth1``, not ``cni0``, and strict
    ``rp_filter`` on ``cni0`` drops the flow; the doctor looked up with mark 0 and said
    "reaches". Off, the mark is not used there and the flow passes."""
    topology = Topology(rp_cni=1)
    doctor_lab.configure(topology)
    node = doctor_lab.node
    run_in(node, ["ip", "route", "add", "default", "via", "192.168.4.1", "dev", "eth1",
                  "table", "100"])
    run_in(node, ["ip", "rule", "add", "fwmark", "0x10", "lookup", "100", "pref", "100"])
    run_in(node, ["nft", "-f", "-"], input_text=_MARK_PODS)
    sysctl = f"net.ipv4.conf.{where}.src_valid_mark"
    try:
        if where != "off":
            run_in(node, ["sysctl", "-q", "-w", f"{sysctl}=1"])
        answer, result = doctor_lab.kernel_and_trace(topology, timeout=2)
    finally:
        if where != "off":
            run_in(node, ["sysctl", "-q", "-w", f"{sysctl}=0"])
    assert answer["ok"] is (where == "off"), answer
    assert result.verdict is (Verdict.REACHES if where == "off" else Verdict.BLOCKED), (
        result.render())
    if where != "off":
        assert result.blocked_at is not None
        assert result.blocked_at.code == "rp-filter", result.render()
        assert "src_valid_mark" in result.blocked_at.detail, result.render()


@pytest.mark.parametrize("rp_all", [1, 2])
def test_strict_rp_filter_where_the_network_may_answer_by_another_uplink_is_not_reaches(
        doctor_lab: DoctorLab, rp_all: int) -> None:
    """Pods leave by ``eth1`` (table 100, rule ``iif cni0``), masqueraded to its
    192.168.4.5; the node routes the database by ``eth0`` too (main), and the router
    sends the replies to 192.168.4.5 through the node's ``eth0``. Strict ``rp_filter``
    looks the database up as from ``cni0`` (table 100: ``eth1``) and drops the replies
    on ``eth0`` (``IPReversePathFilter``); the doctor assumed they come back on ``eth1``,
    which holds the address, and said "reaches". Now: unknown, and a finding names
    ``eth0``; loose (2), as the finding advises, the kernel passes them and the doctor
    says so."""
    topology = Topology(route="policy", uplink="eth1", rp_all=rp_all)
    doctor_lab.configure(topology)
    router = doctor_lab.names["router"]
    run_in(router, ["ip", "route", "add", "192.168.4.5/32", "via", "192.168.1.5",
                    "dev", "eth0"])
    try:
        answer, result = doctor_lab.kernel_and_trace(topology, timeout=2,
                                                     until_dropped=rp_all == 1)
        diagnosis = diagnose(NodeState.from_capture(doctor_lab.capture()),
                             Flow(topology.pod, topology.destination, port=topology.port))
    finally:
        run_in(router, ["ip", "route", "del", "192.168.4.5/32"], check=False)
    assert answer["ok"] is (rp_all == 2), answer
    codes = [f.code for f in diagnosis.findings]
    if rp_all == 2:
        assert result.verdict is Verdict.REACHES, result.render()
        assert "rp-filter-elsewhere" not in codes
        return
    assert result.verdict is Verdict.UNKNOWN, result.render()
    step = next(s for s in result.steps if s.code == "rp-filter-elsewhere")
    assert step.where == "rp_filter=1 (strict) on eth0"
    assert "through eth1 and eth0" in step.detail
    assert "rp-filter-elsewhere" in codes
    assert "unknown-rules" not in codes  # the step has a finding of its own
    finding = next(f for f in diagnosis.findings if f.code == "rp-filter-elsewhere")
    assert "net.ipv4.conf.eth0.rp_filter" in (finding.advice or "")


@pytest.mark.parametrize("other", ["table-no-rule-looks-up", "link-without-carrier"])
def test_strict_rp_filter_on_an_interface_no_reply_can_come_back_on_is_no_warning(
        doctor_lab: DoctorLab, other: str) -> None:
    """Pods leave by ``eth0`` (main), strict ``rp_filter``. A route to the database by
    ``eth1`` in table 100, which no rule looks up (a table left behind), or in main
    behind the uplink's with ``eth1`` without carrier (its cable out: the kernel keeps
    the route, flagged ``linkdown``): the node routes nothing by it, or receives nothing
    on it. The kernel passes the replies; the doctor said ``unknown`` and
    ``rp-filter-elsewhere`` naming ``eth1``."""
    topology = Topology(rp_all=1)
    doctor_lab.configure(topology)
    router = doctor_lab.names["router"]
    route = ["ip", "route", "add", "192.168.2.0/24", "via", "192.168.4.1", "dev", "eth1"]
    if other == "table-no-rule-looks-up":
        run_in(doctor_lab.node, [*route, "table", "100"])
    else:
        run_in(router, ["ip", "link", "set", "eth2", "down"])
        run_in(doctor_lab.node, [*route, "metric", "200", "proto", "static"])
    try:
        answer, result = doctor_lab.kernel_and_trace(topology)
        diagnosis = diagnose(NodeState.from_capture(doctor_lab.capture()),
                             Flow(topology.pod, topology.destination, port=topology.port))
    finally:
        run_in(router, ["ip", "link", "set", "eth2", "up"], check=False)
    assert answer["ok"] is True, answer
    assert result.verdict is Verdict.REACHES, result.render()
    assert "rp-filter-elsewhere" not in [f.code for f in diagnosis.findings]


def _rp_filter(node: str, interface: str) -> str:
    """The kernel's ``rp_filter`` of ``interface`` (``all`` too) in ``node``."""
    return run_in(node, ["cat", f"/proc/sys/net/ipv4/conf/{interface}/rp_filter"]
                  ).stdout.strip()


@pytest.mark.parametrize(("rp_all", "rp_uplink"), [(1, 0), (0, 1), (1, 1)])
def test_the_rp_filter_fix_sets_the_interface_s_alone_which_the_kernel_then_passes(
        doctor_lab: DoctorLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        rp_all: int, rp_uplink: int) -> None:
    """Replies masqueraded to ``eth1``'s address come back there, the route back leaves by
    ``eth0``: strict ``rp_filter`` (``all``, ``eth1`` or both at 1) drops them. The kernel
    takes the larger of ``all``'s and the interface's, so ``eth1``'s 2 alone is loose: the
    fix set ``all`` to 2 (every interface loosened) where ``all`` was 1, and both where both
    were. Now the one sysctl, ``eth1``'s; after ``--fix`` the kernel passes the replies
    and ``all`` is as it was."""
    monkeypatch.setenv("K3SNET_STATE_DIR", str(tmp_path))
    topology = Topology(nat="snat-other", rp_all=rp_all, rp_uplink=rp_uplink)
    doctor_lab.configure(topology)
    assert not doctor_lab.probe(topology.destination, until_dropped=True)["ok"]
    d = diagnose(NodeState.from_capture(doctor_lab.capture()),
                 Flow(topology.pod, topology.destination, port=topology.port))
    assert [f.code for f in d.findings] == ["rp-filter"], d.render()
    assert d.fixes.owned == {Sysctl("net.ipv4.conf.eth1.rp_filter", 2)}, d.render()
    assert d.after.verdict is Verdict.REACHES
    assert main(["doctor", "--netns", doctor_lab.node, "--from", topology.pod, "--to",
                 f"{topology.destination}:{PORT}", "--fix", "--auto-approve"]) == 0
    assert doctor_lab.probe(topology.destination)["ok"]
    assert (_rp_filter(doctor_lab.node, "all"), _rp_filter(doctor_lab.node, "eth1")) == (
        str(rp_all), "2")


def test_strict_rp_filter_on_all_is_loosened_on_one_uplink_by_that_uplink_s_alone(
        doctor_lab: DoctorLab) -> None:
    """The ``rp-filter-elsewhere`` case above with ``all`` strict (1): its advice, loose on
    ``eth0`` alone (it said ``all`` and ``eth0``), lets the kernel pass the replies there,
    ``all`` still 1, and the doctor says so."""
    topology = Topology(route="policy", uplink="eth1", rp_all=1)
    doctor_lab.configure(topology)
    router = doctor_lab.names["router"]
    run_in(router, ["ip", "route", "add", "192.168.4.5/32", "via", "192.168.1.5",
                    "dev", "eth0"])
    try:
        before = diagnose(NodeState.from_capture(doctor_lab.capture()),
                          Flow(topology.pod, topology.destination, port=topology.port))
        finding = next(f for f in before.findings if f.code == "rp-filter-elsewhere")
        assert "net.ipv4.conf.eth0.rp_filter = 2" in (finding.advice or "")
        assert "net.ipv4.conf.all.rp_filter" not in (finding.advice or "")
        run_in(doctor_lab.node, ["sysctl", "-q", "-w", "net.ipv4.conf.eth0.rp_filter=2"])
        answer, result = doctor_lab.kernel_and_trace(topology, timeout=2)
    finally:
        run_in(router, ["ip", "route", "del", "192.168.4.5/32"], check=False)
    assert answer["ok"] is True, answer
    assert _rp_filter(doctor_lab.node, "all") == "1"
    assert result.verdict is Verdict.REACHES, result.render()


#: The pod's packets, forwarded out of ``eth0``, have no route back in loose mode's
#: reverse lookup: it runs as if they came in by ``eth0`` (the forward route's device) and
#: with mark 0 (``src_valid_mark`` off), so it passes rule 100 (the replies, marked as they
#: come in by ``eth0``: the main table) and meets table 100's ``unreachable``.
_NO_WAY_BACK = """rule add pref 100 iif eth0 fwmark 0x1 lookup main
rule add pref 200 iif eth0 lookup 100
route add unreachable 10.42.0.0/16 table 100
"""
_MARK_REPLIES = ("table ip lab_mark {\n chain pre {\n  type filter hook prerouting priority "
                 '-150; policy accept;\n  iifname "eth0" meta mark set 0x1\n }\n}\n')


def test_a_drop_in_loose_mode_is_said_as_loose_and_names_the_missing_route_back(
        doctor_lab: DoctorLab) -> None:
    """``all`` loose (2): the kernel drops the pod's packets on ``cni0`` for want of any
    route back to the pod. The finding said "strict reverse-path filtering drops ..."
    and why strict mode drops, with ``rp_filter`` at 2 already; now it says loose, that
    no route leads back, and that a route back lifts it (or 0 on both ``all`` and the
    interface): no fix is planned."""
    topology = Topology(rp_all=2)
    doctor_lab.configure(topology)
    run_in(doctor_lab.node, ["ip", "-batch", "-"], input_text=_NO_WAY_BACK)
    run_in(doctor_lab.node, ["nft", "-f", "-"], input_text=_MARK_REPLIES)
    answer, result = doctor_lab.kernel_and_trace(topology, timeout=2, until_dropped=True)
    assert answer["ok"] is False, answer
    assert result.verdict is Verdict.BLOCKED, result.render()
    d = diagnose(NodeState.from_capture(doctor_lab.capture()),
                 Flow(topology.pod, topology.destination, port=topology.port))
    finding = next(f for f in d.findings if f.code == "rp-filter")
    assert finding.fix == ()
    assert finding.what == "loose reverse-path filtering drops the pod's packets on cni0"
    assert "strict" not in finding.why
    assert "unreachable 10.42.0.0/16" in finding.why, finding.why
    assert "a route back to the source" in (finding.advice or ""), finding.advice
    assert d.plan.empty


#: Rule 100 sends what comes in by ``eth0`` over TCP to the main table, everything else
#: from there to table 100, which has no way to the pods.
_BY_PROTOCOL = """rule add pref 100 iif eth0 ipproto tcp lookup main
rule add pref 200 iif eth0 lookup 100
route add unreachable 10.42.0.0/16 table 100
"""


def test_the_reverse_lookup_carries_the_protocol_where_a_rule_selects_on_it(
        doctor_lab: DoctorLab) -> None:
    """A rule selecting on the protocol (``ipproto``) makes the kernel dissect every
    packet for routing, its reverse-path lookup too (``fib4_rules_early_flow_dissect``):
    the pod's TCP packets, looked up back as if they came in by ``eth0``, match rule 100
    and find the route to the pod, so loose ``rp_filter`` passes them. The doctor looked
    up protocol 0 there, met table 100's ``unreachable`` and said "blocked"."""
    topology = Topology(rp_all=2)
    doctor_lab.configure(topology)
    run_in(doctor_lab.node, ["ip", "-batch", "-"], input_text=_BY_PROTOCOL)
    answer, result = doctor_lab.kernel_and_trace(topology, timeout=2)
    assert answer["ok"] is True, answer
    assert result.verdict is Verdict.REACHES, result.render()
