"""A table an earlier k3snet ordered longer destination first: drift once, then in order.

Two NAT rules neither of which holds the other (source /24 to a /16, source /16 to a
/24): a packet both match takes the one met first. The iptables backend now meets the
longer source first, as the nftables backend does; K3SNET-POSTROUTING as an earlier
version wrote it (the longer destination's group first) reads as out of order, and
the apply rewrites that chain, each rule kept once.
"""

from __future__ import annotations

import pytest

from k3snet.backends.iptables import IptablesBackend
from k3snet.lab.netns import run_in
from k3snet.model import Drift, MasqueradeRule, SnatRule, State
from k3snet.planner import plan
from k3snet.render.iptables.rules import render_unit

NARROW_SRC = MasqueradeRule("10.42.1.0/24", destination="192.168.0.0/16")
NARROW_DST = SnatRule("10.42.0.0/16", destination="192.168.2.0/24", to_address="192.0.2.1")
WANTED = State(owned=[NARROW_SRC, NARROW_DST])


def _main_chain(ns: str, mode: str) -> list[str]:
    saved = run_in(ns, [f"iptables-{mode}-save", "-t", "nat"]).stdout
    return [ln.split()[-1] for ln in saved.splitlines() if ln.startswith("-A K3SNET-POSTROUTING")]


@pytest.mark.kernel
@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_nat_groups_an_earlier_version_put_longer_destination_first_are_drift_and_reordered(
    ns: str, mode: str
) -> None:
    src_chain, dst_chain = render_unit(NARROW_SRC).chain, render_unit(NARROW_DST).chain
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        backend.apply(plan(backend.observe(), WANTED))
    assert _main_chain(ns, mode) == [src_chain, dst_chain]
    old = (
        f"*nat\n:K3SNET-POSTROUTING - [0:0]\n"
        f"-A K3SNET-POSTROUTING -m comment --comment k3snet -j {dst_chain}\n"
        f"-A K3SNET-POSTROUTING -m comment --comment k3snet -j {src_chain}\nCOMMIT\n"
    )
    run_in(ns, [f"iptables-{mode}-restore", "--noflush", "-w"], input_text=old)
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        changes = plan(backend.observe(), WANTED)
        assert any(isinstance(c.before, Drift) for c in changes.changes), changes
        assert any("out of order" in d for d in backend.drift), backend.drift
        backend.apply(changes)
        assert plan(backend.observe(), WANTED).changes == ()
    assert _main_chain(ns, mode) == [src_chain, dst_chain]
    saved = run_in(ns, [f"iptables-{mode}-save", "-t", "nat"]).stdout
    for unit in (render_unit(NARROW_SRC), render_unit(NARROW_DST)):
        assert saved.count(unit.digest) == 1, saved
