"""k3snet's rules a foreign drop meets first stay through the edit of another change.

A foreign rule before k3snet's jump that drops some of a wanted forward rule's traffic
sets that rule aside: observe leaves it out of what k3snet owns, and the plan notes a
conflict instead of adding it again. The edit of the table for another change (a
rule an admin put in k3snet's chain, repaired as drift) removed it with the chains
and the hook jump, though the plan said only "- drift": once the foreign drop was
gone, the pods' forwarding was missing until the next apply. iptables-nft and
iptables-legacy, each in a fresh ``k3snet-ipt-*`` namespace.
"""

from __future__ import annotations

import pytest

from k3snet.backends.iptables import IptablesBackend
from k3snet.lab.netns import run_in
from k3snet.model import Drift, ForwardRule, MasqueradeRule, State
from k3snet.planner import plan

FLOW = ForwardRule("10.42.0.0/16", "192.168.2.0/24")
DESIRED = State(owned=[FLOW, MasqueradeRule("10.42.0.0/16", out_interface="eth0")])
DROP = ["-s", "10.42.0.0/16", "-j", "DROP"]


def _k3snet_lines(ns: str, mode: str) -> list[str]:
    text = run_in(ns, [f"iptables-{mode}-save", "-t", "filter"]).stdout
    return [line for line in text.splitlines() if "k3snet" in line]


@pytest.mark.kernel
@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_a_wanted_rule_a_foreign_drop_meets_first_survives_a_drift_repair_of_its_table(
        ns: str, mode: str) -> None:
    tool = [f"iptables-{mode}", "-w"]
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        backend.apply(plan(backend.observe(), DESIRED))
    ours = _k3snet_lines(ns, mode)
    assert any("k3snet:" in line and "-j ACCEPT" in line for line in ours), ours
    run_in(ns, [*tool, "-I", "FORWARD", "1", *DROP])
    bucket = next(line.split()[1] for line in ours if "k3snet:" in line)
    run_in(ns, [*tool, "-I", bucket, "1", "-j", "RETURN"])  # an admin's, in k3snet's chain
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        repair = plan(backend.observe(), DESIRED)
        assert [isinstance(c.before, Drift) for c in repair.changes] == [True], repair.changes
        assert [note.wanted for note in repair.conflicts] == [FLOW]
        backend.apply(repair)
    assert _k3snet_lines(ns, mode) == ours  # the RETURN alone went
    run_in(ns, [*tool, "-D", "FORWARD", *DROP])
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        assert plan(backend.observe(), DESIRED).changes == ()
