"""A Calico node in iptables mode: Calico's workload chains decide pod forwarding first.

``tests/data/iptables/calico-felix-filter.save`` is a filter table in the shape
Calico's felix writes (one workload interface ``cali1234``, the default
namespace profile), written by hand from felix's rule shapes, not recorded from a
live node. Felix puts its ``cali-FORWARD`` jump at the top of FORWARD, before
k3snet's; below it, every workload chain ends with "Drop if no profiles matched"
(two jumps and a goto down), and its dispatch chains drop unknown interfaces.
Which of them a pod's packet meets depends on marks Calico sets on the way, so
k3snet cannot tell that its forward accept would ever decide: the plan names
Calico's drop as a conflict, and the spec's ``forward: false`` leaves forwarding
to Calico (docs/backends.md).
"""

from __future__ import annotations

from pathlib import Path

from k3snet.backends.iptables.foreign import foreign_blocks
from k3snet.backends.iptables.save import parse_save
from k3snet.model import ForwardRule, State
from k3snet.planner import plan

SAVE = Path(__file__).resolve().parents[1] / "data" / "iptables" / "calico-felix-filter.save"


def _blocks() -> set[str]:
    dump = parse_save(SAVE.read_text())["filter"]
    return {block.describe() for block in
            foreign_blocks(dump, 4, len(dump.chain("FORWARD")))}


def test_calicos_workload_and_dispatch_drops_are_read_two_jumps_and_a_goto_down() -> None:
    blocks = _blocks()
    for rule in ("Drop if no profiles matched", "Unknown interface",
                 "Drop VXLAN encapped packets originating in workloads"):
        assert any(rule in block for block in blocks), (rule, blocks)
    assert not any("INVALID" in block for block in blocks)  # valid traffic goes on


def test_a_forward_rule_on_a_calico_node_is_a_conflict_naming_calicos_drop() -> None:
    dump = parse_save(SAVE.read_text())["filter"]
    foreign = foreign_blocks(dump, 4, len(dump.chain("FORWARD")))
    wanted = ForwardRule("10.42.0.0/16", "192.168.2.0/24", out_interface="eth0")
    p = plan(State(foreign=foreign), State(owned=[wanted]))
    assert not p.changes
    (note,) = p.notes
    assert note.status == "conflict"
    assert "cali-" in note.foreign.describe()
