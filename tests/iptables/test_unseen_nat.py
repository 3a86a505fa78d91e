"""Foreign NAT anywhere on the POSTROUTING path decides first, against the real kernel.

A NETMAP, or an SNAT two jumps down (POSTROUTING -> chain -> chain -> SNAT), met
before k3snet's jump translates the connection before k3snet's masquerade is
reached: the plan must say so (a ``!`` conflict naming the rule) instead of
adding a rule that would never take effect. iptables-nft and iptables-legacy,
IPv4 and IPv6, each in a fresh ``k3snet-ipt-*`` namespace.
"""

from __future__ import annotations

import pytest

from k3snet.backends.iptables import IptablesBackend
from k3snet.lab.netns import run_in
from k3snet.model import MasqueradeRule, NatBlock, State
from k3snet.planner import plan

MASQ = {4: MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24"),
        6: MasqueradeRule("fd42:42::/56", destination="fd01:2::/64")}
NETMAP = {4: "192.0.2.0/24", 6: "2001:db8::/56"}
SNAT_TO = {4: "192.0.2.9", 6: "2001:db8::9"}


def admin(ns: str, mode: str, family: int, kind: str) -> str:
    """Put an admin's NAT rule of ``kind`` before k3snet's jump; the rule's text."""
    tool = [f"{'ip' if family == 4 else 'ip6'}tables-{mode}", "-w", "-t", "nat"]
    source = str(MASQ[family].source)
    if kind == "netmap":
        rule = ["-s", source, "-j", "NETMAP", "--to", NETMAP[family]]
        run_in(ns, [*tool, "-I", "POSTROUTING", "1", *rule])
        return "-A POSTROUTING " + " ".join(rule)
    for chain in ("ADMIN-1", "ADMIN-2"):
        run_in(ns, [*tool, "-N", chain])
    run_in(ns, [*tool, "-I", "POSTROUTING", "1", "-s", source, "-j", "ADMIN-1"])
    run_in(ns, [*tool, "-A", "ADMIN-1", "-j", "ADMIN-2"])
    rule = ["-j", "SNAT", "--to-source", SNAT_TO[family]]
    run_in(ns, [*tool, "-A", "ADMIN-2", *rule])
    return "-A ADMIN-2 " + " ".join(rule)


@pytest.mark.kernel
@pytest.mark.parametrize("mode", ["nft", "legacy"])
@pytest.mark.parametrize("kind", ["netmap", "snat-two-jumps-down"])
def test_foreign_nat_at_any_depth_before_our_jump_is_a_conflict(
    ns: str, mode: str, kind: str
) -> None:
    desired = State(owned=list(MASQ.values()))
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        backend.apply(plan(backend.observe(), desired))
        rules = {family: admin(ns, mode, family, kind) for family in (4, 6)}
        observed = backend.observe()
        p = plan(observed, desired)
        for family in (4, 6):
            assert MASQ[family] in observed.owned, family  # in place, noted
            notes = [n for n in p.conflicts if n.wanted == n.owned == MASQ[family]]
            assert len(notes) == 1, p.render()
            assert isinstance(notes[0].foreign, NatBlock)
            assert notes[0].foreign.rule.startswith(rules[family].split(" --to")[0]), \
                notes[0].foreign.rule
            assert f"+ {MASQ[family].describe()}" not in p.render()


@pytest.mark.kernel
@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_an_exemption_of_unmarked_packets_before_our_jump_is_a_conflict(
    ns: str, mode: str
) -> None:
    """``-m mark --mark 0x0/0x4000 -j RETURN`` is kube-proxy's ``! --mark 0x4000/0x4000``
    return written the other way: every unmarked packet (a pod's) leaves POSTROUTING
    untranslated. It was read as "another program's marked traffic" (any positive mark
    test was), so the plan added a masquerade that never runs, and said nothing."""
    rule = ["-m", "mark", "--mark", "0x0/0x4000", "-j", "RETURN"]
    for family in (4, 6):
        run_in(ns, [f"{'ip' if family == 4 else 'ip6'}tables-{mode}", "-w", "-t", "nat",
                    "-A", "POSTROUTING", *rule])
    desired = State(owned=list(MASQ.values()))
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        p = plan(backend.observe(), desired)
        for family in (4, 6):
            notes = [n for n in p.conflicts if n.wanted == MASQ[family]]
            assert len(notes) == 1, p.render()
            assert isinstance(notes[0].foreign, NatBlock)
            assert notes[0].foreign.rule == "-A POSTROUTING " + " ".join(rule)
        backend.apply(p)
    for family in (4, 6):
        saved = run_in(ns, [f"{'ip' if family == 4 else 'ip6'}tables-{mode}-save", "-t",
                            "nat"]).stdout
        assert "-A POSTROUTING " + " ".join(rule) in saved, saved
        assert "MASQUERADE" not in saved, saved  # held: it would never run
