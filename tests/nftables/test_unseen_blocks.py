"""A foreign drop deep below another table's forward chain decides, against the real kernel.

An accept in k3snet's table ends only that chain: a drop in any other base chain on
the forward hook, or in a chain two or three jumps below it, still drops the pods'
egress. The plan must say so (a ``!`` conflict naming the rule) instead of writing an
accept that would never take effect, as it does for a drop in the base chain itself.
"""

from __future__ import annotations

import pytest

from k3snet.backends.nftables import NftablesBackend
from k3snet.lab.netns import run_in
from k3snet.model import ForwardBlock, ForwardRule, State
from k3snet.planner import plan

FLOW = ForwardRule("10.42.0.0/16", "192.168.2.0/24")
OTHER = ForwardRule("10.42.0.0/16", "198.51.100.0/24")


def _admin_table(depth: int) -> str:
    """The admin's `inet admin` table: forward -> level1 -> ... -> a drop of 192.168.2.0/24."""
    chains = [f"level{n}" for n in range(1, depth + 1)]
    lines = ["table inet admin {",
             "  chain forward { type filter hook forward priority 10; policy accept;",
             f"    ip saddr 10.42.0.0/16 jump {chains[0]}", "  }"]
    for upper, lower in zip(chains, [*chains[1:], None], strict=True):
        body = f"jump {lower}" if lower else "ip daddr 192.168.2.0/24 drop"
        lines.append(f"  chain {upper} {{ {body}; }}")
    return "\n".join([*lines, "}", ""])


@pytest.mark.kernel
@pytest.mark.parametrize("depth", [2, 3])
def test_a_foreign_drop_jumps_below_another_forward_chain_is_a_conflict_naming_it(
    ns: str, depth: int
) -> None:
    run_in(ns, ["nft", "-f", "-"], input_text=_admin_table(depth))
    listed = run_in(ns, ["nft", "list", "chain", "inet", "admin", f"level{depth}"]).stdout
    assert "ip daddr 192.168.2.0/24 drop" in listed  # the kernel holds the admin's drop
    desired = State(owned=[FLOW, OTHER])
    with NftablesBackend(ns) as backend:
        p = plan(backend.observe(), desired)
        notes = [n for n in p.conflicts if n.wanted == FLOW]
        assert len(notes) == 1, p.render()
        assert isinstance(notes[0].foreign, ForwardBlock)
        # named by every test on the way there, as nftables NAT blocks are
        assert notes[0].foreign.rule == "ip saddr 10.42.0.0/16 ip daddr 192.168.2.0/24 drop"
        assert notes[0].foreign.where == f"nftables inet admin level{depth}"
        rendered = p.render()
        assert f"! {FLOW.describe()}" in rendered
        assert f"+ {FLOW.describe()}" not in rendered
        assert f"+ {OTHER.describe()}" in rendered  # what the drop does not touch is planned
