"""Foreign rules in the built-in chains that carry k3snet's tags, or a comment forging its
lines, are never k3snet's: an apply and a removal of everything leave them as they were.

An administrator's copy of k3snet's rule (its ``k3snet:DIGEST`` comment, another
verdict) in FORWARD, a rule tagged ``k3snet`` that jumps nowhere (POSTROUTING's
``ACCEPT``), and a comment holding quotes and a line break that reads as k3snet's own
hook jump and rule in the save's text. iptables-nft and iptables-legacy, each in a
fresh ``k3snet-ipt-*`` namespace; what stays is read in ``iptables-save``.
"""

from __future__ import annotations

import pytest

from k3snet.backends.iptables import IptablesBackend
from k3snet.backends.iptables.save import parse_save
from k3snet.lab.netns import run_in
from k3snet.model import ForwardRule, MasqueradeRule, State
from k3snet.planner import plan

DESIRED = State(owned=[ForwardRule("10.42.0.0/16", "192.168.2.0/24"),
                       MasqueradeRule("10.42.0.0/16", out_interface="eth0")])
FORGED = ('x"\n-A FORWARD -m comment --comment k3snet -j K3SNET-FORWARD\n'
          '-A K3SNET-F-4 -s 10.99.0.0/16 -m comment --comment "k3snet:0" -j ACCEPT')


def _foreign(ns: str, mode: str) -> list[tuple[str, str, str]]:
    """Every rule of the built-in chains but k3snet's hook jumps, whole (a comment's line
    breaks kept), as (table, chain, rule)."""
    dump = parse_save(run_in(ns, [f"iptables-{mode}-save"]).stdout)
    return [(table, chain, rule) for table, held in sorted(dump.items())
            for chain, rules in held.rules.items() if not chain.startswith("K3SNET-")
            for rule in rules if rule != f"-m comment --comment k3snet -j K3SNET-{chain}"]


@pytest.mark.kernel
@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_foreign_rules_carrying_k3snets_tags_survive_an_apply_and_a_removal_of_everything(
        ns: str, mode: str) -> None:
    tool = [f"iptables-{mode}", "-w"]
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        backend.apply(plan(backend.observe(), DESIRED))
    digest = next(line.split('"')[1] for line in
                  run_in(ns, [f"iptables-{mode}-save", "-t", "filter"]).stdout.splitlines()
                  if "k3snet:" in line)
    run_in(ns, [*tool, "-I", "FORWARD", "1", "-s", "10.99.0.0/16", "-m", "comment",
                "--comment", digest, "-j", "DROP"])
    run_in(ns, [*tool, "-t", "nat", "-I", "POSTROUTING", "1", "-s", "10.7.0.0/16", "-m",
                "comment", "--comment", "k3snet", "-j", "ACCEPT"])
    run_in(ns, [*tool, "-A", "FORWARD", "-s", "10.98.0.0/16", "-m", "comment", "--comment",
                FORGED, "-j", "DROP"])
    foreign = _foreign(ns, mode)
    assert len(foreign) == 3, foreign
    assert any("\n" in rule for _, _, rule in foreign), foreign
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        again = plan(backend.observe(), DESIRED)
        assert again.changes == (), again.changes
        backend.apply(plan(backend.observe(), State()))
    assert _foreign(ns, mode) == foreign
    saved = run_in(ns, [f"iptables-{mode}-save"]).stdout
    assert ":K3SNET-" not in saved, saved
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        assert plan(backend.observe(), State()).changes == ()
