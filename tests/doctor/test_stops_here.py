"""A finding k3snet has no fix for ends the trace: it says so, since what lies past it
(forwarding, NAT, the replies) is not looked for until it is fixed."""

from __future__ import annotations

from pathlib import Path

from k3snet.doctor import Flow, NodeCapture, NodeState, diagnose

GOLDEN = Path(__file__).parent / "golden"
FLOW = Flow("10.42.0.10", "192.168.2.10", port=5432)


def _state(name: str) -> NodeState:
    return NodeState.from_capture(NodeCapture.read_dir(GOLDEN / name))


def test_a_finding_without_a_fix_says_the_trace_stops_there() -> None:
    # A missing route hides what lies past it (forwarding, masquerade): the finding says
    # so, and a finding with a fix (the trace goes on past it) does not.
    d = diagnose(_state("missing-route"), FLOW)
    blocking = [f for f in d.findings if f.severity == "blocking"]
    assert [f.code for f in blocking] == ["no-route"]
    assert blocking[0].fix == ()
    assert "the trace stops here: problems past this step are not looked for" in (
        blocking[0].why)
    seed = diagnose(_state("seed"), FLOW)
    assert not any("the trace stops here" in f.why for f in seed.findings)
