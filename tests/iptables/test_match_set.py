"""Foreign rules matching an ipset (``-m set --match-set``), as ``iptables-save`` prints them.

What a set holds is not in the ruleset (kube-router's, Calico's, firewalld's sets change
at run time), so such a rule is never read as meeting a wanted rule: its accept or
masquerade is no foreign object, its drop, reject or exemption hides what follows it (a
block, a conflict), and nothing raises. The kernel refuses a rule naming a set that does
not exist (and this host has no ipset tool to make one), so the cases are text.
"""

from __future__ import annotations

import pytest

from k3snet.backends.iptables.foreign import (
    foreign_blocks,
    foreign_forward,
    foreign_nat,
    nat_blocks,
    path_blocks,
    untracked_accepts,
)
from k3snet.backends.iptables.save import parse_save
from k3snet.model import MasqueradeRule, NatBlock
from k3snet.model.forward import ForwardBlock, ForwardRule

POD = "10.42.0.0/16"
DB = "192.168.2.0/24"
PAIR = f"-A FORWARD -s {POD} -d {DB} -j ACCEPT\n-A FORWARD -d {POD} -j ACCEPT"
MASQ = f"-A POSTROUTING -s {POD} -o eth0 -j MASQUERADE"
SET = "-m set --match-set"


def _filter(rules: str, policy: str = "DROP") -> str:
    return (f"*filter\n:INPUT ACCEPT [0:0]\n:FORWARD {policy} [0:0]\n:OUTPUT ACCEPT [0:0]\n"
            f":X - [0:0]\n{rules.strip()}\nCOMMIT\n")


def _nat(rules: str) -> str:
    return f"*nat\n:POSTROUTING ACCEPT [0:0]\n:X - [0:0]\n{rules.strip()}\nCOMMIT\n"


# Filter rules before (or instead of) the pair: none lets the pair be met on a set's strength.
FILTER_CASES: dict[str, str] = {
    "an accept pair by sets": (f"-A FORWARD {SET} pods src -j ACCEPT\n"
                               f"-A FORWARD {SET} pods dst -j ACCEPT"),
    "a drop by a set before the pair": f"-A FORWARD {SET} blocked src -j DROP\n{PAIR}",
    "a reject by a negated set before the pair": (
        f"-A FORWARD -m set ! --match-set allowed src,dst -j REJECT --reject-with "
        f"icmp-port-unreachable\n{PAIR}"),
    "a return to the policy by a set before the pair": (
        f"-A FORWARD {SET} skip dst -j RETURN\n{PAIR}"),
    "a jump by a set to a chain dropping": f"-A FORWARD {SET} s src -j X\n-A X -j DROP\n{PAIR}",
    "a chain gone to by a set": f"-A FORWARD {SET} s dst -g X\n{PAIR}",
    "a drop by a set in a chain jumped to": f"-A FORWARD -j X\n-A X {SET} s src -j DROP\n{PAIR}",
    "a pair in a chain jumped to by a set": (
        f"-A FORWARD {SET} pods src,dst -j X\n"
        f"-A X -s {POD} -d {DB} -j ACCEPT\n-A X -d {POD} -j ACCEPT"),
    "the pair with a set's test added": (
        f"-A FORWARD -s {POD} -d {DB} {SET} db dst -j ACCEPT\n-A FORWARD -d {POD} -j ACCEPT"),
}


@pytest.mark.parametrize("case", sorted(FILTER_CASES))
def test_a_rule_matching_an_ipset_never_meets_a_forward_rule(case: str) -> None:
    dump = parse_save(_filter(FILTER_CASES[case]))["filter"]
    assert ForwardRule(POD, DB) not in foreign_forward(dump, 4)
    assert ForwardRule(POD, DB) not in untracked_accepts(dump, 4)
    for rule in foreign_blocks(dump, 4, len(dump.chain("FORWARD"))):  # no raise
        assert isinstance(rule, ForwardBlock)


@pytest.mark.parametrize("rule", [
    f"-A FORWARD {SET} blocked src -j DROP",
    "-A FORWARD -m set ! --match-set allowed dst -j DROP",
    f"-A FORWARD -d {POD} {SET} blocked src -j REJECT --reject-with icmp-port-unreachable",
])
def test_a_drop_by_an_ipset_before_ours_is_a_conflict_of_the_forward_rule(rule: str) -> None:
    dump = parse_save(_filter(rule, "ACCEPT"))["filter"]
    blocks = foreign_blocks(dump, 4, 1)
    assert any(isinstance(b, ForwardBlock) and b.decides(ForwardRule(POD, DB)) for b in blocks)


NAT_CASES: dict[str, str] = {
    "a masquerade of a set's sources": f"-A POSTROUTING {SET} pods src -o eth0 -j MASQUERADE",
    "a masquerade with a negated set": (
        f"-A POSTROUTING -s {POD} -m set ! --match-set cluster dst -o eth0 -j MASQUERADE"),
    "an exemption by a set before the masquerade": f"-A POSTROUTING {SET} x dst -j RETURN\n{MASQ}",
    "an exemption by a negated set before the masquerade": (
        f"-A POSTROUTING -m set ! --match-set x dst -j ACCEPT\n{MASQ}"),
    "a masquerade in a chain jumped to by a set": (
        f"-A POSTROUTING {SET} pods src -j X\n-A X -s {POD} -o eth0 -j MASQUERADE"),
    "an snat by a set before the masquerade": (
        f"-A POSTROUTING {SET} x src -j SNAT --to-source 192.0.2.1\n{MASQ}"),
}


@pytest.mark.parametrize("case", sorted(NAT_CASES))
def test_a_nat_rule_matching_an_ipset_never_meets_a_masquerade(case: str) -> None:
    """Never met; what takes the pods' packets otherwise first (an exemption, an SNAT) is
    a conflict; a masquerade by a set, translating as the wanted rule does, is none (k3snet
    writes its own after it, redundant at worst)."""
    dump = parse_save(_nat(NAT_CASES[case]))["nat"]
    wanted = MasqueradeRule(POD, out_interface="eth0")
    assert wanted not in foreign_nat(dump, 4)
    blocks = nat_blocks(dump, 4, len(dump.chain("POSTROUTING")))
    assert all(isinstance(b, NatBlock) for b in blocks)
    if "before the masquerade" in case:
        assert any(isinstance(b, NatBlock) and b.decides(wanted) for b in blocks), blocks


def test_a_notrack_by_an_ipset_is_read_as_leaving_the_pods_untracked() -> None:
    raw = parse_save(f"*raw\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING {SET} x src -j NOTRACK\n"
                     "COMMIT\n")["raw"]
    blocks = path_blocks(raw, 4, forward_drops=True)
    wanted = MasqueradeRule(POD, out_interface="eth0")
    assert any(isinstance(b, NatBlock) and b.decides(wanted) for b in blocks)
    assert any(isinstance(b, ForwardBlock) and b.decides(ForwardRule(POD, DB)) for b in blocks)
