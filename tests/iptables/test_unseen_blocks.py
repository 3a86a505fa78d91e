"""A foreign drop deep on the FORWARD path decides first, against the real kernel.

A DROP two or three jumps down (FORWARD -> chain -> chain -> DROP) met before
k3snet's jump drops the pods' egress before k3snet's accept is reached: the plan
must say so (a ``!`` conflict naming the rule) instead of writing an accept that
would never take effect, as it does for a drop in FORWARD itself. iptables-nft and
iptables-legacy, each in a fresh ``k3snet-ipt-*`` namespace.
"""

from __future__ import annotations

import itertools

import pytest

from k3snet.backends.iptables import IptablesBackend
from k3snet.lab.netns import run_in
from k3snet.model import ForwardBlock, ForwardRule, State
from k3snet.planner import plan

FLOW = ForwardRule("10.42.0.0/16", "192.168.2.0/24")
OTHER = ForwardRule("10.42.0.0/16", "198.51.100.0/24")
DROP = ["-d", "192.168.2.0/24", "-j", "DROP"]


@pytest.mark.kernel
@pytest.mark.parametrize("mode", ["nft", "legacy"])
@pytest.mark.parametrize("depth", [2, 3])
def test_a_foreign_drop_jumps_down_before_our_jump_is_a_conflict_naming_it(
    ns: str, mode: str, depth: int
) -> None:
    desired = State(owned=[FLOW, OTHER])
    tool = [f"iptables-{mode}", "-w"]
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        backend.apply(plan(backend.observe(), desired))
        chains = [f"ADMIN-{level}" for level in range(1, depth + 1)]
        for chain in chains:
            run_in(ns, [*tool, "-N", chain])
        run_in(ns, [*tool, "-I", "FORWARD", "1", "-s", "10.42.0.0/16", "-j", chains[0]])
        for upper, lower in itertools.pairwise(chains):
            run_in(ns, [*tool, "-A", upper, "-j", lower])
        run_in(ns, [*tool, "-A", chains[-1], *DROP])
        rule = f"-A {chains[-1]} {' '.join(DROP)}"
        observed = backend.observe()
        assert FLOW in observed.owned  # in place, noted: a destroy deletes it
        assert OTHER in observed.owned
        p = plan(observed, desired)
        assert p.changes == ()
        notes = [n for n in p.conflicts if n.wanted == n.owned == FLOW]
        assert len(notes) == 1, p.render()
        assert isinstance(notes[0].foreign, ForwardBlock)
        assert notes[0].foreign.rule == rule
        rendered = p.render()
        assert f"! {FLOW.describe()}" in rendered
        assert rule in rendered
        assert f"+ {FLOW.describe()}" not in rendered
