"""k3snet's rules a foreign rule meets first go with a removal of them.

A foreign rule before k3snet's jump that decides some of a rule's packets otherwise (a
drop, a NAT exemption) sets that rule aside: the plan notes the conflict instead of
adding it again. Left out of what observe reported as owned, such a rule was never
deleted on its own: ``destroy`` planned "No changes" and left the rule, its chains and
the hook jump, and a spec that dropped its destination left it until another edit of
its table. iptables-nft and iptables-legacy, IPv4 and IPv6, filter and nat, each in a
fresh ``k3snet-ipt-*`` namespace; the kernel's view is ``iptables-save``'s.
"""

from __future__ import annotations

import pytest

from k3snet.backends.iptables import IptablesBackend
from k3snet.lab.netns import run_in
from k3snet.model import ForwardRule, MasqueradeRule, NetObject, State
from k3snet.planner import plan

CASES: dict[tuple[int, str], tuple[NetObject, NetObject, str, list[str]]] = {
    # (family, table): (the rule set aside, another of that table no foreign rule meets,
    # the built-in chain, the foreign rule met first)
    (4, "filter"): (ForwardRule("10.42.0.0/16", "192.168.2.0/24"),
                    ForwardRule("10.42.0.0/16", "192.168.3.0/24"), "FORWARD",
                    ["-s", "10.42.0.0/16", "-d", "192.168.2.0/24", "-j", "DROP"]),
    (6, "filter"): (ForwardRule("fd42::/56", "fd00:2::/64"),
                    ForwardRule("fd42::/56", "fd00:3::/64"), "FORWARD",
                    ["-s", "fd42::/56", "-d", "fd00:2::/64", "-j", "DROP"]),
    (4, "nat"): (MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24"),
                 MasqueradeRule("10.42.0.0/16", destination="192.168.3.0/24"), "POSTROUTING",
                 ["-s", "10.42.0.0/16", "-d", "192.168.2.0/24", "-j", "RETURN"]),
    (6, "nat"): (MasqueradeRule("fd42::/56", destination="fd00:2::/64"),
                 MasqueradeRule("fd42::/56", destination="fd00:3::/64"), "POSTROUTING",
                 ["-s", "fd42::/56", "-d", "fd00:2::/64", "-j", "RETURN"]),
}
IDS = [f"ipv{family}-{table}" for family, table in CASES]


def _tool(mode: str, family: int) -> str:
    return f"ip6tables-{mode}" if family == 6 else f"iptables-{mode}"


def _lines(ns: str, mode: str, family: int, table: str) -> list[str]:
    text = run_in(ns, [f"{_tool(mode, family)}-save", "-t", table]).stdout
    return [line for line in text.splitlines() if line.startswith(("-A", ":"))]


def _ours(lines: list[str]) -> list[str]:
    return [line for line in lines if "k3snet" in line.lower()]


def _foreign_first(ns: str, mode: str, family: int, table: str) -> list[str]:
    _, _, chain, rule = CASES[family, table]
    run_in(ns, [_tool(mode, family), "-w", "-t", table, "-I", chain, "1", *rule])
    return [f"-A {chain} {' '.join(rule)}"]


@pytest.mark.kernel
@pytest.mark.parametrize(("family", "table"), list(CASES), ids=IDS)
@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_destroy_removes_a_rule_a_foreign_rule_meets_first_with_its_chains_and_hook_jump(
        ns: str, mode: str, family: int, table: str) -> None:
    aside = CASES[family, table][0]
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        backend.apply(plan(backend.observe(), State(owned=[aside])))
    assert _ours(_lines(ns, mode, family, table))
    foreign = _foreign_first(ns, mode, family, table)
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        noted = plan(backend.observe(), State(owned=[aside]))
        assert noted.changes == ()
        assert [note.wanted for note in noted.conflicts] == [aside]
        destroy = plan(backend.observe(), State())
        assert [(c.action, c.before) for c in destroy.changes] == [("delete", aside)]
        assert "- " in destroy.render()
        assert backend.check(destroy) == ()
        backend.apply(destroy)
        assert plan(backend.observe(), State()).changes == ()
    lines = _lines(ns, mode, family, table)
    assert _ours(lines) == []  # the rule, its chains and the hook jump
    assert [line for line in lines if line.startswith("-A")] == foreign


@pytest.mark.kernel
@pytest.mark.parametrize(("family", "table"), list(CASES), ids=IDS)
@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_a_spec_dropping_a_destination_a_foreign_rule_meets_first_removes_its_rule_alone(
        ns: str, mode: str, family: int, table: str) -> None:
    aside, other, _, _ = CASES[family, table]
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        backend.apply(plan(backend.observe(), State(owned=[aside, other])))
    before = _ours(_lines(ns, mode, family, table))
    _foreign_first(ns, mode, family, table)
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        dropped = plan(backend.observe(), State(owned=[other]))
        assert [(c.action, c.before) for c in dropped.changes] == [("delete", aside)]
        assert dropped.conflicts == ()
        backend.apply(dropped)
        assert plan(backend.observe(), State(owned=[other])).changes == ()
    after = _ours(_lines(ns, mode, family, table))
    assert any(f"-d {aside.destination} " in line for line in before)
    assert not any(f"-d {aside.destination} " in line for line in after)
    assert any(f"-d {other.destination} " in line for line in after)
    assert all(line in before for line in after)  # the other's rule, chains and jump as they were
