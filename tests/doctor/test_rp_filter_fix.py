"""The ``rp-filter`` finding's fix against the kernel's rule: the larger of ``all``'s and
the interface's ``rp_filter`` is used (Documentation/networking/ip-sysctl.rst), so the
interface's 2 alone lifts a strict drop, and nothing short of 0 lifts a loose one."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from k3snet.doctor import Flow, NodeCapture, NodeState, trace
from k3snet.doctor.findings import _rp_filter
from k3snet.doctor.trace import Step
from k3snet.model import NetObject, Sysctl

GOLDEN = Path(__file__).parent / "golden"
FLOW = Flow("10.42.0.10", "192.168.2.10", port=5432)


def _explained(all_: int, eth1: int) -> tuple[tuple[NetObject, ...], bool]:
    """The fix of a drop by ``rp_filter`` on ``eth1`` with these values, and whether the
    finding changes the node state (its fix applied) for the next trace."""
    state = NodeState.from_capture(NodeCapture.read_dir(GOLDEN / "rp-filter-strict"))
    state = attrs.evolve(state, sysctls={**state.sysctls,
                                         "net.ipv4.conf.all.rp_filter": str(all_),
                                         "net.ipv4.conf.eth1.rp_filter": str(eth1)})
    mode = max(all_, eth1)
    kind = "strict" if mode == 1 else "loose"
    step = Step("reply", "rp_filter", "drop", f"rp_filter={mode} ({kind}) on eth1",
                "the route back to 192.168.2.10 is via eth0", "rp-filter")
    finding, change = _rp_filter(state, trace(state, FLOW), step)
    return finding.fix, change is not None


@pytest.mark.parametrize(("all_", "eth1"), [(1, 0), (0, 1), (1, 1)])
def test_a_strict_drop_is_fixed_by_the_interface_s_rp_filter_alone(all_: int, eth1: int) -> None:
    assert _explained(all_, eth1) == ((Sysctl("net.ipv4.conf.eth1.rp_filter", 2),), True)


@pytest.mark.parametrize(("all_", "eth1"), [(1, 2), (2, 1), (2, 0), (0, 2)])
def test_a_loose_drop_has_no_rp_filter_fix_since_2_changes_nothing(all_: int, eth1: int) -> None:
    """``all`` 1 and ``eth1`` 2 (loose): ``all`` = 2 was planned, which leaves it loose."""
    assert _explained(all_, eth1) == ((), False)


@pytest.mark.parametrize(("all_", "eth1"), [(1, 2), (2, 0)])
def test_a_loose_drop_is_said_as_loose_with_a_route_back_to_make(all_: int, eth1: int) -> None:
    """It was titled "strict reverse-path filtering drops ...", why strict mode drops, with
    the effective ``rp_filter`` at 2."""
    state = NodeState.from_capture(NodeCapture.read_dir(GOLDEN / "rp-filter-strict"))
    state = attrs.evolve(state, sysctls={**state.sysctls,
                                         "net.ipv4.conf.all.rp_filter": str(all_),
                                         "net.ipv4.conf.eth1.rp_filter": str(eth1)})
    step = Step("reply", "rp_filter", "drop", "rp_filter=2 (loose) on eth1",
                "the route back to 192.168.2.10 is unreachable 192.168.2.0/24", "rp-filter")
    finding, _ = _rp_filter(state, trace(state, FLOW), step)
    assert finding.what == "loose reverse-path filtering drops replies on eth1"
    assert "strict" not in finding.why
    assert "a route back to the source" in (finding.advice or "")


def _strict_finding(all_: int, default: int) -> str | None:
    state = NodeState.from_capture(NodeCapture.read_dir(GOLDEN / "rp-filter-strict"))
    state = attrs.evolve(state, sysctls={**state.sysctls,
                                         "net.ipv4.conf.all.rp_filter": str(all_),
                                         "net.ipv4.conf.default.rp_filter": str(default),
                                         "net.ipv4.conf.eth1.rp_filter": "1"})
    step = Step("reply", "rp_filter", "drop", "rp_filter=1 (strict) on eth1",
                "the route back to 192.168.2.10 is via eth0", "rp-filter")
    finding, _ = _rp_filter(state, trace(state, FLOW), step)
    return finding.advice


@pytest.mark.parametrize(("all_", "default"), [(0, 1), (1, 0), (1, 1)])
def test_a_strict_fix_says_an_interface_made_again_is_strict_again_and_how_to_keep_it(
        all_: int, default: int) -> None:
    """The fix is owned with the interface it was set on: one made again under that name
    (a CNI's bridge, a VLAN) takes ``default``'s ``rp_filter``, the larger of it and
    ``all``'s strict, and only a spec naming the sysctl sets it anew."""
    advice = _strict_finding(all_, default) or ""
    assert "lasts as long as the interface" in advice, advice
    assert f"net.ipv4.conf.default.rp_filter ({default})" in advice, advice
    assert "sysctls ({net.ipv4.conf.eth1.rp_filter: 2})" in advice, advice


@pytest.mark.parametrize(("all_", "default"), [(0, 0), (0, 2), (1, 2)])
def test_a_strict_fix_says_nothing_of_an_interface_made_again_that_is_not_strict(
        all_: int, default: int) -> None:
    assert _strict_finding(all_, default) is None
