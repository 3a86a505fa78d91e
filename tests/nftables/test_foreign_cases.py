"""The nftables foreign-rule reader, one small ruleset per case.

Each case is a few chains in ``nft -j`` form (built with the helpers below, in
the shapes libnftables prints) and the exact NAT and forward objects k3snet must
read from them: what is modelled with every field, and what an unknown match, a
negation, an exit before the rule or another base chain hides.
"""

from __future__ import annotations

from typing import Any

import pytest

from k3snet.backends.nftables.parse import ForeignReader
from k3snet.model import ForwardRule, MasqueradeRule, NetObject, SnatRule

Expr = dict[str, Any]


def _right(net: str) -> Any:
    addr, _, length = net.partition("/")
    return {"prefix": {"addr": addr, "len": int(length)}} if length else addr


def addr(field: str, net: str, *, neg: bool = False) -> Expr:
    proto = "ip6" if ":" in net else "ip"
    return {"match": {"op": "!=" if neg else "==",
                      "left": {"payload": {"protocol": proto, "field": field}},
                      "right": _right(net)}}


def saddr(net: str, *, neg: bool = False) -> Expr:
    return addr("saddr", net, neg=neg)


def daddr(net: str, *, neg: bool = False) -> Expr:
    return addr("daddr", net, neg=neg)


def meta(key: str, value: Any, op: str = "==") -> Expr:
    return {"match": {"op": op, "left": {"meta": {"key": key}}, "right": value}}


CT_REPLY = {"match": {"op": "in", "left": {"ct": {"key": "state"}},
                      "right": ["established", "related"]}}
MASQ: Expr = {"masquerade": None}


def ct_direction(direction: str, op: str = "==") -> Expr:
    return {"match": {"op": op, "left": {"ct": {"key": "direction"}}, "right": direction}}


RETURN: Expr = {"return": None}
ACCEPT: Expr = {"accept": None}
DROP: Expr = {"drop": None}


def jump(target: str) -> Expr:
    return {"jump": {"target": target}}


def snat(**body: Any) -> Expr:
    return {"snat": body}


# What ``Kernel`` reads: {(family, table, chain): (hook, policy, rules)}.
Chains = dict[tuple[str, str, str], tuple[str | None, str, list[list[Expr]]]]


class Kernel:
    """The kernel seam over a few chains: {(family, table, chain): (hook, policy, rules)}.

    Its nat chains sit at ``nat_prio``: by default ``srcnat + 10``, after k3snet's
    chain, so what these cases read is what is met, not what decides before k3snet
    (NAT blocks: ``test_nat_blocks.py``).
    """

    nat_prio: int | None = 110

    def __init__(self, chains: Chains) -> None:
        self.chains = chains

    def _chain(self, key: tuple[str, str, str]) -> dict[str, Any]:
        family, table, name = key
        hook, policy, _ = self.chains[key]
        chain: dict[str, Any] = {"family": family, "table": table, "name": name, "handle": 1}
        if hook is not None:
            chain |= {"type": "nat" if hook == "postrouting" else "filter", "hook": hook,
                      "prio": self.nat_prio if hook == "postrouting" else 0, "policy": policy}
            if chain["prio"] is None:
                del chain["prio"]
        return {"chain": chain}

    def list(self, kind: str, **ref: str) -> list[dict[str, Any]] | None:
        if kind == "chains":
            return [self._chain(key) for key in self.chains]
        key = (ref["family"], ref["table"], ref["name"])
        if kind != "chain" or key not in self.chains:
            return None
        family, table, name = key
        return [self._chain(key), *({"rule": {"family": family, "table": table, "chain": name,
                                              "handle": i + 2, "expr": expr}}
                                    for i, expr in enumerate(self.chains[key][2]))]

    def genid(self) -> int:
        return 1


def nat(*rules: list[Expr], family: str = "inet", **chains: list[list[Expr]]) -> Kernel:
    table: dict[tuple[str, str, str], tuple[str | None, str, list[list[Expr]]]] = {
        (family, "t", "post"): ("postrouting", "accept", list(rules))}
    table |= {(family, "t", name): (None, "", body) for name, body in chains.items()}
    return Kernel(table)


def _jumps(first: int, last: int) -> dict[str, Any]:
    """Chains ``c<first>`` to ``c<last - 1>``, each jumping to the next: keywords of
    :func:`nat` (``Any``: a dict of chains could hold ``family``, for all mypy knows)."""
    return {f"c{i}": [[jump(f"c{i + 1}")]] for i in range(first, last)}


def read(kernel: Kernel) -> set[NetObject]:
    found = ForeignReader(kernel, frozenset()).read()
    return {o for o in found if isinstance(o, MasqueradeRule | SnatRule | ForwardRule)}


POD = "10.42.0.0/16"
B = "192.168.2.0/24"
UNMARKED = {"match": {"op": "==", "left": {"&": [{"meta": {"key": "mark"}}, 16384]}, "right": 0}}
NAT_CASES: dict[str, tuple[Kernel, set[NetObject]]] = {
    "masquerade": (nat([saddr(POD), MASQ]), {MasqueradeRule(POD)}),
    "masquerade with every modelled field": (
        nat([saddr(POD), daddr("192.168.2.0/24"), meta("oifname", "eth1"),
             {"masquerade": {"flags": "fully-random"}}]),
        {MasqueradeRule(POD, destination="192.168.2.0/24", out_interface="eth1",
                        random_fully=True)}),
    "masquerade with a list of flags": (
        nat([saddr(POD), {"masquerade": {"flags": ["fully-random"]}}]),
        {MasqueradeRule(POD, random_fully=True)}),
    "masquerade with flags k3snet does not write": (
        nat([saddr(POD), {"masquerade": {"flags": ["fully-random", "persistent"]}}]), set()),
    "snat": (nat([saddr(POD), snat(addr="192.0.2.1")]),
             {SnatRule(POD, to_address="192.0.2.1")}),
    "snat with a port": (nat([saddr(POD), snat(addr="192.0.2.1", port=80)]), set()),
    "snat without an address": (nat([saddr(POD), snat(flags="fully-random")]), set()),
    "any IPv4 source, from meta nfproto": (
        nat([meta("nfproto", "ipv4"), MASQ]), {MasqueradeRule("0.0.0.0/0")}),
    "any IPv6 source, from meta nfproto": (
        nat([meta("nfproto", "ipv6"), MASQ]), {MasqueradeRule("::/0")}),
    "meta nfproto and an address of one family": (
        nat([meta("nfproto", "ipv4"), saddr(POD), MASQ]), {MasqueradeRule(POD)}),
    "meta nfproto against an address of the other family": (
        nat([saddr(POD), meta("nfproto", "ipv6"), MASQ],
            [meta("nfproto", "ipv6"), saddr(POD), MASQ]), set()),
    "a negated meta nfproto is not modelled": (
        nat([meta("nfproto", "ipv6", "!="), saddr(POD), MASQ]), set()),
    "an IPv4 family return does not spare IPv6 traffic": (
        nat([meta("nfproto", "ipv4"), RETURN], [saddr("fd42::/56"), MASQ],
            [saddr(POD), MASQ]),
        {MasqueradeRule("fd42::/56")}),
    "an IPv6 family return does not spare IPv4 traffic": (
        nat([meta("nfproto", "ipv6"), RETURN], [saddr("fd42::/56"), MASQ],
            [saddr(POD), MASQ]),
        {MasqueradeRule(POD)}),
    "a negated out interface is not modelled": (
        nat([saddr(POD), meta("oifname", "eth1", "!="), MASQ]), set()),
    "an in interface is not modelled for NAT": (
        nat([meta("iifname", "cni0"), saddr(POD), MASQ]), set()),
    "another meta match is not modelled": (
        nat([saddr(POD), meta("l4proto", "tcp"), MASQ]), set()),
    "a negated family test alone is not modelled": (
        nat([meta("nfproto", "ipv6", "!="), MASQ]), set()),
    "a return on a conntrack mark hides the rule": (
        nat([{"match": {"op": "==", "left": {"&": [{"ct": {"key": "mark"}}, 0x4000]},
                        "right": 0x4000}}, RETURN], [saddr(POD), MASQ]), set()),
    "a port match is not modelled": (
        nat([saddr(POD), {"match": {"op": "==", "left": {"payload": {"protocol": "tcp",
                                                                     "field": "dport"}},
                                    "right": 80}}, MASQ]), set()),
    "a wildcard interface is not modelled": (
        nat([saddr(POD), meta("oifname", "eth*"), MASQ]), set()),
    "kube-proxy's mark return spares nothing": (
        nat([meta("mark", 0x4000), RETURN], [saddr(POD), MASQ]), {MasqueradeRule(POD)}),
    "kube-proxy's mark return as a string": (
        nat([meta("mark", "0x4000"), RETURN], [saddr(POD), MASQ]), {MasqueradeRule(POD)}),
    "a masked mark return spares nothing": (
        nat([{"match": {"op": "==", "left": {"&": [{"meta": {"key": "mark"}}, 0x4000]},
                        "right": 0x4000}}, RETURN], [saddr(POD), MASQ]),
        {MasqueradeRule(POD)}),
    "a return on a clear mark hides the rule": (
        nat([meta("mark", 0), RETURN], [saddr(POD), MASQ]), set()),
    "a return on an unset mark hides the rule": (
        nat([meta("mark", 0x4000, "!="), RETURN], [saddr(POD), MASQ]), set()),
    "a masquerade testing a mark is not modelled": (
        nat([meta("mark", 0x4000), saddr(POD), MASQ]), set()),
    "flannel's returns are exclusions": (
        nat([jump("fl")], fl=[[saddr(POD), daddr(POD), RETURN],
                              [saddr(POD), daddr("224.0.0.0/4"), RETURN],
                              [{"counter": None}, saddr(POD), MASQ]]),
        {MasqueradeRule(POD, exclude=[POD, "224.0.0.0/4"])}),
    "a return for other sources spares nothing": (
        nat([saddr("10.43.0.0/16"), RETURN], [saddr(POD), MASQ]), {MasqueradeRule(POD)}),
    "an unconditional return ends the chain": (
        nat([RETURN], [saddr(POD), MASQ]), set()),
    "a return behind an unknown match hides the rule": (
        nat([{"match": {"op": "==", "left": {"tcp": "dport"}, "right": 22}}, RETURN],
            [saddr(POD), MASQ]), set()),
    "a rejecting rule before ends nothing it does not match": (
        nat([saddr("10.43.0.0/16"), {"reject": None}], [saddr(POD), MASQ]),
        {MasqueradeRule(POD)}),
    "an iptables-nft masquerade": (
        nat([saddr(POD), {"xt": {"type": "match", "name": "comment"}},
             {"xt": {"type": "target", "name": "MASQUERADE"}}], family="ip"),
        {MasqueradeRule(POD)}),
    "an ip table's rule without addresses is IPv4": (
        nat([MASQ], family="ip"), {MasqueradeRule("0.0.0.0/0")}),
    "an ip6 table's rule without addresses is IPv6": (
        nat([MASQ], family="ip6"), {MasqueradeRule("::/0")}),
    "logging and setting a mark change nothing": (
        nat([saddr(POD), {"log": {"prefix": "x"}},
             {"mangle": {"key": {"meta": {"key": "mark"}}, "value": 1}}, MASQ]),
        {MasqueradeRule(POD)}),
    "a rule in a chain gone to": (
        nat([{"goto": {"target": "fl"}}], fl=[[saddr(POD), MASQ]]), {MasqueradeRule(POD)}),
    "an iptables-nft match k3snet cannot see into": (
        nat([saddr(POD), {"xt": {"type": "match", "name": "mark"}},
             {"xt": {"type": "target", "name": "MASQUERADE"}}], family="ip"), set()),
    "an iptables-nft snat is not modelled": (
        nat([saddr(POD), {"xt": {"type": "target", "name": "SNAT"}}], family="ip"), set()),
    "a return for all but other destinations hides the rule": (
        nat([daddr("192.168.0.0/16", neg=True), RETURN], [saddr(POD), daddr("10.1.0.0/16"), MASQ]),
        set()),
    "a return for all but our destination spares nothing": (
        nat([daddr("10.0.0.0/8", neg=True), RETURN], [saddr(POD), daddr("10.1.0.0/16"), MASQ]),
        {MasqueradeRule(POD, destination="10.1.0.0/16")}),
    "a return to another interface spares nothing": (
        nat([meta("oifname", "eth2"), RETURN], [saddr(POD), meta("oifname", "eth1"), MASQ]),
        {MasqueradeRule(POD, out_interface="eth1")}),
    "a return to all but our interface spares nothing": (
        nat([meta("oifname", "eth1", "!="), RETURN], [saddr(POD), meta("oifname", "eth1"), MASQ]),
        {MasqueradeRule(POD, out_interface="eth1")}),
    "a return to our interface hides the rule": (
        nat([meta("oifname", "eth1"), RETURN], [saddr(POD), meta("oifname", "eth1"), MASQ]),
        set()),
    "an unconditional return ends only the chain jumped to": (
        nat([jump("c")], [saddr(POD), MASQ], c=[[RETURN], [saddr("10.43.0.0/16"), MASQ]]),
        {MasqueradeRule(POD)}),
    "a goto in a chain jumped to": (
        nat([jump("a")], a=[[{"goto": {"target": "b"}}]], b=[[saddr(POD), MASQ]]),
        {MasqueradeRule(POD)}),
    "eight jumps down is read": (
        nat([jump("c1")], **_jumps(1, 8), c8=[[saddr(POD), MASQ]]),
        {MasqueradeRule(POD)}),
    "nine jumps down is not": (
        nat([jump("c1")], **_jumps(1, 9), c9=[[saddr(POD), MASQ]]),
        set()),
    "a statement that is not one key is not modelled": (
        nat([saddr(POD), {"counter": None, "log": None}, MASQ], [{"limit": {}}, MASQ]), set()),
    "a narrower snat before a masquerade is its own rule and spares its destination": (
        nat([saddr(POD), daddr("192.168.2.0/24"), snat(addr="192.0.2.1")], [saddr(POD), MASQ]),
        {SnatRule(POD, destination="192.168.2.0/24", to_address="192.0.2.1"),
         MasqueradeRule(POD, exclude=["192.168.2.0/24"])}),
    "a narrower masquerade before a masquerade takes nothing from it": (
        nat([saddr(POD), daddr("192.168.2.0/24"), MASQ], [saddr(POD), MASQ]),
        {MasqueradeRule(POD, destination="192.168.2.0/24"), MasqueradeRule(POD)}),
    "a masquerade of every IPv4 packet ends the chain for them": (
        nat([meta("nfproto", "ipv4"), MASQ], [saddr(POD), snat(addr="192.0.2.1")]),
        {MasqueradeRule("0.0.0.0/0")}),
    "a masquerade without any condition ends the chain": (
        nat([MASQ], [saddr(POD), snat(addr="192.0.2.1")]), set()),
    "kube-proxy's return of unmarked packets ends the chain for k3snet's": (
        nat([{"match": {"op": "==", "left": {"&": [{"meta": {"key": "mark"}}, 16384]},
                        "right": 0}}, RETURN], [saddr(POD), MASQ]), set()),
    "a return before a jump still spares what it matches": (
        nat([saddr(POD), daddr("192.168.2.0/24"), RETURN], [jump("c")], [saddr(POD), MASQ],
            c=[]),
        {MasqueradeRule(POD, exclude=["192.168.2.0/24"])}),
    "an accept two jumps down spares what it matches": (
        nat([jump("a")], [saddr(POD), MASQ],
            a=[[saddr(POD), daddr("192.168.2.0/24"), ACCEPT], [jump("b")]], b=[]),
        {MasqueradeRule(POD, exclude=["192.168.2.0/24"])}),
    "an accept of everything two jumps down ends the base chain": (
        nat([jump("a")], [saddr(POD), MASQ], a=[[jump("b")]], b=[[ACCEPT]]), set()),
    "an inet table's masquerade of both families is not modelled": (nat([MASQ]), set()),
    "two sources are not modelled": (
        nat([saddr(POD), saddr("10.42.1.0/24"), MASQ]), set()),
    "two destinations are not modelled": (
        nat([saddr(POD), daddr("192.168.0.0/16"), daddr("192.168.2.0/24"), MASQ]), set()),
    "two out interfaces are not modelled": (
        nat([saddr(POD), meta("oifname", "eth0"), meta("oifname", "eth1"), MASQ]), set()),
    "exits after one for other sources still count": (
        nat([saddr("10.43.0.0/16"), RETURN], [saddr(POD), daddr("192.168.2.0/24"), RETURN],
            [saddr(POD), MASQ]),
        {MasqueradeRule(POD, exclude=["192.168.2.0/24"])}),
    "exits after kube-proxy's mark return still count": (
        nat([meta("mark", 0x4000), RETURN], [saddr(POD), daddr("192.168.2.0/24"), RETURN],
            [saddr(POD), MASQ]),
        {MasqueradeRule(POD, exclude=["192.168.2.0/24"])}),
    "a set of exclusions": (
        nat([saddr(POD), {"match": {"op": "!=", "left": daddr(POD)["match"]["left"],
                                    "right": {"set": [_right("10.0.0.0/8"), "192.0.2.1"]}}},
             MASQ]),
        {MasqueradeRule(POD, exclude=["10.0.0.0/8", "192.0.2.1/32"])}),
    "a set of destinations is not modelled": (
        nat([saddr(POD), {"match": {"op": "==", "left": daddr(POD)["match"]["left"],
                                    "right": {"set": [_right("10.0.0.0/8"), "192.0.2.1"]}}},
             MASQ]), set()),
    "a return for a set of sources hides the rule (a set is not one prefix)": (
        nat([{"match": {"op": "==", "left": saddr(POD)["match"]["left"],
                        "right": {"set": [_right("10.50.0.0/16"), _right("10.51.0.0/16")]}}},
             RETURN], [saddr(POD), MASQ]), set()),
    "one address is a /32": (nat([saddr("10.42.0.7"), MASQ]), {MasqueradeRule("10.42.0.7/32")}),
    "a return on a clear mark written as text hides the rule": (
        nat([meta("mark", "0x0"), RETURN], [saddr(POD), MASQ]), set()),
    "a return on a mark that is not a number hides the rule": (
        nat([meta("mark", "set"), RETURN], [saddr(POD), MASQ]), set()),
    "a masquerade of one transport protocol is not modelled": (
        nat([meta("l4proto", "tcp"), MASQ]), set()),
    "meta nfproto and an address of the IPv6 family": (
        nat([meta("nfproto", "ipv6"), saddr("fd42::/56"), MASQ]), {MasqueradeRule("fd42::/56")}),
    "a match without an operator is an equality": (
        nat([{"match": {"left": saddr(POD)["match"]["left"], "right": _right(POD)}}, MASQ]),
        {MasqueradeRule(POD)}),
    "a comparison that is not an equality is not modelled": (
        nat([{"match": {"op": "<", "left": saddr(POD)["match"]["left"], "right": "10.42.0.0"}},
             MASQ], [{"match": {"op": ">=", "left": {"meta": {"key": "nfproto"}},
                                "right": "ipv4"}}, MASQ]), set()),

    # Which earlier NAT rules translate the same way (and take nothing), which spare.
    "a masquerade to ports is not the same translation": (
        nat([saddr(POD), daddr(B), {"masquerade": {"port": {"range": [1024, 2047]}}}],
            [saddr(POD), MASQ]),
        {MasqueradeRule(POD, exclude=[B])}),
    "an snat to another address spares its destination": (
        nat([saddr(POD), daddr(B), snat(addr="192.0.2.1")], [saddr(POD), snat(addr="192.0.2.2")]),
        {SnatRule(POD, destination=B, to_address="192.0.2.1"),
         SnatRule(POD, exclude=[B], to_address="192.0.2.2")}),
    "an snat to the same address takes nothing, the next exit spares": (
        nat([saddr(POD), daddr(B), snat(addr="192.0.2.1")], [daddr("10.1.0.0/16"), RETURN],
            [saddr(POD), snat(addr="192.0.2.1")]),
        {SnatRule(POD, destination=B, to_address="192.0.2.1"),
         SnatRule(POD, exclude=["10.1.0.0/16"], to_address="192.0.2.1")}),
    "an accept of unmarked packets hides the rule": (
        nat([UNMARKED, ACCEPT], [saddr(POD), MASQ]), set()),
    "a rule without a verdict is passed": (
        nat([saddr("10.99.0.0/16"), {"counter": None}], [saddr(POD), MASQ]),
        {MasqueradeRule(POD)}),
    # An unconditional NAT ends its chain: what follows is never met, even the same.
    "an unconditional masquerade ends the chain": (
        nat([MASQ], [saddr(POD), daddr(B), MASQ], family="ip"), {MasqueradeRule("0.0.0.0/0")}),
    "an unconditional snat ends the chain": (
        nat([snat(addr="192.0.2.1")], [saddr(POD), daddr(B), snat(addr="192.0.2.1")],
            family="ip"),
        {SnatRule("0.0.0.0/0", to_address="192.0.2.1")}),
    "an unconditional masquerade in a chain jumped to ends its caller too": (
        nat([jump("c")], [saddr(POD), daddr(B), snat(addr="192.0.2.1")], c=[[MASQ]],
            family="ip"),
        {MasqueradeRule("0.0.0.0/0")}),
    "an iptables-nft MARK target before the rule is passed": (
        nat([saddr("10.99.0.0/16"), {"xt": {"type": "target", "name": "MARK"}}],
            [{"xt": {"type": "target", "name": "LOG"}}], [saddr(POD), MASQ], family="ip"),
        {MasqueradeRule(POD)}),
    "a conditional NAT in a chain jumped to spares its destination after the jump": (
        nat([jump("c")], [saddr(POD), snat(addr="192.0.2.2")], c=[[daddr(B), MASQ]]),
        {MasqueradeRule("0.0.0.0/0", destination=B),
         SnatRule(POD, exclude=[B], to_address="192.0.2.2")}),
    # A conditional jump or goto: what the chain it leads to does applies to the
    # packets the jump matches (the tests of both hold).
    "a masquerade behind a conditional jump": (
        nat([saddr(POD), jump("q")], q=[[MASQ]]), {MasqueradeRule(POD)}),
    "an snat behind a conditional goto": (
        nat([saddr(POD), {"goto": {"target": "q"}}], q=[[snat(addr="192.0.2.1")]]),
        {SnatRule(POD, to_address="192.0.2.1")}),
    "the tests of a conditional jump and of the rule it leads to both hold": (
        nat([saddr(POD), jump("q")], q=[[daddr(B), MASQ]]),
        {MasqueradeRule(POD, destination=B)}),
    "a narrower source after a conditional jump is kept": (
        nat([saddr(POD), jump("q")], q=[[saddr("10.42.1.0/24"), MASQ]]),
        {MasqueradeRule("10.42.1.0/24")}),
    "a rule no packet of the conditional jump matches is never met": (
        nat([saddr("10.43.0.0/16"), jump("q")], q=[[saddr(POD), MASQ]]), set()),
    "an IPv6 conditional jump in an inet table": (
        nat([saddr("fd42::/64"), jump("q")], q=[[MASQ]]), {MasqueradeRule("fd42::/64")}),
    "an IPv6 conditional jump to an IPv4 rule": (
        nat([saddr("fd42::/64"), jump("q")], q=[[saddr(POD), MASQ]]), set()),
    "two conditional jumps down": (
        nat([saddr(POD), jump("a")], a=[[daddr(B), jump("b")]], b=[[MASQ]]),
        {MasqueradeRule(POD, destination=B)}),
    "a conditional jump back up a chain is not followed": (
        nat([saddr(POD), jump("a")], a=[[daddr(B), jump("b")]], b=[[jump("a")], [MASQ]]),
        set()),
    # nft's "eth*" is every interface whose name starts with eth: an earlier return
    # through it takes what leaves through eth0 (it was compared with "eth0" as a string).
    "an earlier return through a wildcard holding the rule's interface hides it": (
        nat([meta("oifname", "eth*"), RETURN], [saddr(POD), meta("oifname", "eth0"), MASQ]),
        set()),
    "an earlier return through a wildcard not holding the rule's interface": (
        nat([meta("oifname", "veth*"), RETURN], [saddr(POD), meta("oifname", "eth0"), MASQ]),
        {MasqueradeRule(POD, out_interface="eth0")}),
    "an earlier return of all but a wildcard holding the rule's interface": (
        nat([meta("oifname", "eth*", "!="), RETURN],
            [saddr(POD), meta("oifname", "eth0"), MASQ]),
        {MasqueradeRule(POD, out_interface="eth0")}),
}


@pytest.mark.parametrize("case", sorted(NAT_CASES))
def test_foreign_nat_reads_exactly_what_the_ruleset_says(case: str) -> None:
    kernel, expected = NAT_CASES[case]
    assert read(kernel) == expected


def forward(*bases: tuple[str, list[list[Expr]]], **chains: list[list[Expr]]) -> Kernel:
    table: dict[tuple[str, str, str], tuple[str | None, str, list[list[Expr]]]] = {
        ("inet", f"fw{i}", "forward"): ("forward", policy, rules)
        for i, (policy, rules) in enumerate(bases)}
    # the other chains are in every table (each table's jumps stay in their table)
    table |= {("inet", f"fw{i}", name): (None, "", body) for name, body in chains.items()
              for i in range(len(bases))}
    return Kernel(table)


PAIR = [[saddr(POD), ACCEPT], [CT_REPLY, ACCEPT]]
FWD = ForwardRule(POD, "0.0.0.0/0")
FORWARD_CASES: dict[str, tuple[Kernel, set[NetObject]]] = {
    "an accept whose replies are accepted": (forward(("drop", PAIR)), {FWD}),
    "an accept whose replies are not": (forward(("drop", PAIR[:1])), set()),
    # What comes back accepted by its direction (the reply direction: every reply and the
    # errors about the connection's packets), alone or beside its state; not the original
    # direction (a connection's from outside to the pods).
    "an accept whose replies are accepted by their direction": (
        forward(("drop", [PAIR[0], [ct_direction("reply"), ACCEPT]])), {FWD}),
    "an accept whose replies are accepted by their direction and state": (
        forward(("drop", [PAIR[0], [ct_direction("reply"), CT_REPLY, ACCEPT]])), {FWD}),
    "an accept whose replies are accepted by a direction not the original": (
        forward(("drop", [PAIR[0], [ct_direction("original", "!="), ACCEPT]])), {FWD}),
    "an accept of the original direction takes no reply": (
        forward(("drop", [PAIR[0], [CT_REPLY, ct_direction("original"), ACCEPT]])), set()),
    "an accept of the original direction alone takes no reply": (
        forward(("drop", [PAIR[0], [ct_direction("original"), ACCEPT]])), set()),
    "an accept pair": (
        forward(("drop", [[saddr(POD), daddr(B), ACCEPT], [saddr(B), daddr(POD), ACCEPT]])),
        {ForwardRule(POD, B), ForwardRule(B, POD)}),
    "interfaces": (
        forward(("drop", [[meta("iifname", "cni0"), meta("oifname", "eth1"), saddr(POD), ACCEPT],
                          [CT_REPLY, ACCEPT]])),
        {ForwardRule(POD, "0.0.0.0/0", in_interface="cni0", out_interface="eth1")}),
    "another base chain accepting all by policy": (
        forward(("drop", PAIR), ("accept", [[saddr("10.43.0.0/16"), DROP]])), {FWD}),
    "another base chain dropping by policy": (
        forward(("drop", PAIR), ("drop", [[saddr("10.43.0.0/16"), ACCEPT]])), set()),
    "another base chain accepting the traffic": (
        forward(("drop", PAIR), ("drop", [[saddr("10.0.0.0/8"), ACCEPT]])), {FWD}),
    "another base chain accepting part of the traffic": (
        # (what it accepts is read too: the first chain accepts all of that)
        forward(("drop", PAIR), ("drop", [[saddr("10.42.0.0/24"), ACCEPT]])),
        {ForwardRule("10.42.0.0/24", "0.0.0.0/0")}),
    "another base chain accepting other traffic first": (
        forward(("drop", PAIR), ("drop", [[saddr("10.43.0.0/16"), ACCEPT],
                                          [saddr(POD), ACCEPT]])), {FWD}),
    "another base chain dropping a part": (
        forward(("drop", PAIR), ("accept", [[daddr(B), DROP]])), set()),
    "another base chain dropping an unknown part": (
        forward(("drop", PAIR), ("accept", [[{"match": {"op": "==", "left": {"tcp": "dport"},
                                                         "right": 22}}, DROP]])), set()),
    "another base chain dropping what is excluded": (
        forward(("drop", PAIR), ("accept", [[saddr(POD, neg=True), DROP]])), {FWD}),
    "another base chain dropping on an unrelated in interface": (
        forward(("drop", [[meta("iifname", "cni0"), saddr(POD), ACCEPT], [CT_REPLY, ACCEPT]]),
                ("accept", [[meta("iifname", "eth9"), DROP]])),
        {ForwardRule(POD, "0.0.0.0/0", in_interface="cni0")}),
    "another base chain dropping on our in interface": (
        forward(("drop", [[meta("iifname", "cni0"), saddr(POD), ACCEPT], [CT_REPLY, ACCEPT]]),
                ("accept", [[meta("iifname", "cni0"), DROP]])), set()),
    "another base chain dropping all but our in interface": (
        forward(("drop", [[meta("iifname", "cni0"), saddr(POD), ACCEPT], [CT_REPLY, ACCEPT]]),
                ("accept", [[meta("iifname", "cni0", "!="), DROP]])),
        {ForwardRule(POD, "0.0.0.0/0", in_interface="cni0")}),
    "another base chain testing an interface the rule does not name": (
        forward(("drop", PAIR), ("drop", [[meta("oifname", "eth1"), ACCEPT]])), set()),
    "another base chain of the other family": (
        forward(("drop", PAIR), ("accept", [[saddr("fd00::/8"), DROP]])), {FWD}),
    "another base chain returning our traffic to an accept policy": (
        forward(("drop", PAIR), ("accept", [[saddr(POD), RETURN], [DROP]])), {FWD}),
    "another base chain returning part of it": (
        forward(("drop", PAIR), ("accept", [[saddr("10.42.0.0/24"), RETURN], [DROP]])), set()),
    "another base chain jumping to an accept": (
        forward(("drop", PAIR), ("drop", [[jump("ok")]])), set()),
    "another base chain accepting by a mark": (
        forward(("drop", PAIR), ("drop", [[meta("mark", 1), ACCEPT]])), set()),
    "another base chain accepting replies only": (
        forward(("drop", PAIR), ("drop", [[CT_REPLY, ACCEPT]])), set()),
    "another base chain jumping to a chain that accepts": (
        forward(("drop", PAIR), ("drop", [[jump("ok")]]), ok=[[saddr("10.0.0.0/8"), ACCEPT]]),
        {FWD}),
    "another base chain jumping to a chain that drops": (
        forward(("drop", PAIR), ("accept", [[jump("bad")]]), bad=[[daddr("0.0.0.0/0"), DROP]]),
        set()),
    "another base chain jumping to a chain that decides nothing": (
        forward(("drop", PAIR), ("drop", [[jump("none")], [saddr(POD), ACCEPT]]), none=[]),
        {FWD}),
    "another base chain going to a chain that decides nothing": (
        forward(("drop", PAIR), ("drop", [[{"goto": {"target": "none"}}], [saddr(POD), ACCEPT]]),
                none=[]), set()),
    "another base chain dropping other traffic, then ours": (
        forward(("drop", PAIR), ("accept", [[saddr("10.43.0.0/16"), DROP], [saddr(POD), DROP]])),
        set()),
    "a NAT statement in a filter chain decides nothing": (
        forward(("drop", PAIR), ("accept", [[saddr(POD), MASQ],
                                            [saddr(POD), snat(addr="192.0.2.1")]])), {FWD}),
    "too many chains: the ones not read may drop anything": (
        forward(("drop", [*([jump(f"c{i}")] for i in range(63)), [jump("guard")], *PAIR]),
                guard=[[saddr("10.43.0.0/16"), DROP]], **{f"c{i}": [] for i in range(63)}),
        set()),
    "as many chains as are read": (
        forward(("drop", [*([jump(f"c{i}")] for i in range(62)), [jump("guard")], *PAIR]),
                guard=[[saddr("10.43.0.0/16"), DROP]], **{f"c{i}": [] for i in range(62)}),
        {FWD}),
    "an accept of everything in a chain jumped to ends the base chain": (
        forward(("drop", [[jump("all")], *PAIR]), all=[[ACCEPT]]), set()),
    "an accept of everything two jumps down ends the base chain": (
        forward(("drop", [[jump("a")], *PAIR]), a=[[jump("b")]], b=[[ACCEPT]]), set()),
    "a jump to a chain that drops first": (
        forward(("drop", [[jump("guard")], *PAIR]), guard=[[daddr(B), DROP]]), set()),
    "a jump to a chain that drops other traffic": (
        forward(("drop", [[jump("guard")], *PAIR]), guard=[[saddr("10.43.0.0/16"), DROP]]),
        {FWD}),
    "a negated accept is not modelled": (
        forward(("drop", [[saddr(POD, neg=True), ACCEPT], [CT_REPLY, ACCEPT]])), set()),
    "a NAT statement behind a mark in a filter chain decides nothing": (
        forward(("drop", PAIR), ("accept", [[meta("mark", 1), saddr(POD), MASQ],
                                            [meta("mark", 1), saddr(POD),
                                             snat(addr="192.0.2.1")]])), {FWD}),
    "another base chain jumping to an accept only for some packets": (
        forward(("drop", PAIR), ("drop", [[meta("iifname", "cni0"), jump("ok")]]),
                ok=[[saddr("10.0.0.0/8"), ACCEPT]]), set()),
    # (those packets end where the goto's chain ends: at the base chain's policy)
    "another base chain going for some packets to a chain that decides nothing": (
        forward(("drop", PAIR), ("drop", [[meta("iifname", "cni0"), {"goto": {"target": "none"}}],
                                          [saddr(POD), ACCEPT]]), none=[]), set()),
    "another base chain going for some packets to a chain that accepts them": (
        forward(("drop", PAIR), ("drop", [[meta("iifname", "cni0"), {"goto": {"target": "ok"}}],
                                          [saddr(POD), ACCEPT]]), ok=[[ACCEPT]]), {FWD}),
    "another base chain jumping for some packets to a chain that decides nothing": (
        forward(("drop", PAIR), ("drop", [[meta("iifname", "cni0"), jump("none")],
                                          [saddr(POD), ACCEPT]]), none=[]), {FWD}),
    "another base chain dropping other destinations": (
        forward(("drop", [[saddr(POD), daddr(B), ACCEPT], [CT_REPLY, ACCEPT]]),
                ("accept", [[daddr("192.168.9.0/24"), DROP]])), {ForwardRule(POD, B)}),
    "another base chain dropping to other out interfaces": (
        forward(("drop", [[saddr(POD), meta("oifname", "eth1"), ACCEPT], [CT_REPLY, ACCEPT]]),
                ("accept", [[meta("oifname", "eth2"), DROP]])),
        {ForwardRule(POD, "0.0.0.0/0", out_interface="eth1")}),
    "another base chain accepting all but part of the traffic": (
        forward(("drop", PAIR), ("drop", [[saddr("10.42.1.0/24", neg=True), ACCEPT]])), set()),
    "another base chain accepting our in interface": (
        forward(("drop", [[meta("iifname", "cni0"), saddr(POD), ACCEPT], [CT_REPLY, ACCEPT]]),
                ("drop", [[meta("iifname", "cni0"), ACCEPT]])),
        {ForwardRule(POD, "0.0.0.0/0", in_interface="cni0")}),
    "another base chain accepting our out interface": (
        forward(("drop", [[meta("oifname", "eth1"), saddr(POD), ACCEPT], [CT_REPLY, ACCEPT]]),
                ("drop", [[meta("oifname", "eth1"), ACCEPT]])),
        {ForwardRule(POD, "0.0.0.0/0", out_interface="eth1")}),
    "another base chain accepting all but one in interface": (
        forward(("drop", PAIR), ("drop", [[meta("iifname", "eth9", "!="), ACCEPT]])), set()),
    "another base chain going to a chain that accepts": (
        forward(("drop", PAIR), ("drop", [[{"goto": {"target": "ok"}}]]),
                ok=[[saddr("10.0.0.0/8"), ACCEPT]]), {FWD}),
    "another base chain accepting eight jumps down": (
        forward(("drop", PAIR), ("drop", [[jump("c1")]]),
                **{f"c{i}": [[jump(f"c{i + 1}")]] for i in range(1, 8)},
                c8=[[saddr("10.0.0.0/8"), ACCEPT]]), {FWD}),
    "another base chain accepting nine jumps down may drop": (
        forward(("drop", PAIR), ("drop", [[jump("c1")]]),
                **{f"c{i}": [[jump(f"c{i + 1}")]] for i in range(1, 9)},
                c9=[[saddr("10.0.0.0/8"), ACCEPT]]), set()),
    "a reply accept after a drop of everything is never reached": (
        forward(("drop", [[saddr(POD), ACCEPT], [DROP], [CT_REPLY, ACCEPT]])), set()),
    "an accept of two sources is not modelled": (
        forward(("drop", [[saddr(POD), saddr("10.42.1.0/24"), ACCEPT], [CT_REPLY, ACCEPT]])),
        set()),
    "an IPv6 accept behind a drop of its traffic": (
        forward(("drop", [[daddr("fd01::/64"), DROP], [saddr("fd42::/56"), ACCEPT],
                          [CT_REPLY, ACCEPT]])), set()),
    "an IPv6 accept behind a drop of other traffic": (
        forward(("drop", [[daddr("10.1.0.0/16"), DROP], [saddr("fd42::/56"), ACCEPT],
                          [CT_REPLY, ACCEPT]])), {ForwardRule("fd42::/56", "::/0")}),
    "an accept behind a drop to another out interface": (
        forward(("drop", [[meta("oifname", "eth2"), DROP],
                          [saddr(POD), meta("oifname", "eth1"), ACCEPT], [CT_REPLY, ACCEPT]])),
        {ForwardRule(POD, "0.0.0.0/0", out_interface="eth1")}),
    "an accept behind a drop to its out interface": (
        forward(("drop", [[meta("oifname", "eth1"), DROP],
                          [saddr(POD), meta("oifname", "eth1"), ACCEPT], [CT_REPLY, ACCEPT]])),
        set()),
    "an accept of all but replies does not accept the replies": (
        forward(("drop", [[saddr(POD), ACCEPT],
                          [{"match": {"op": "!=", "left": {"ct": {"key": "state"}},
                                      "right": ["established", "related"]}}, ACCEPT]])), set()),
    "an accept of one state only does not accept the replies": (
        forward(("drop", [[saddr(POD), ACCEPT],
                          [{"match": {"op": "==", "left": {"ct": {"key": "state"}},
                                      "right": "established"}}, ACCEPT]])), set()),
    "an accept of a marked packet is not modelled": (
        forward(("drop", [[meta("mark", 1), saddr(POD), ACCEPT], [CT_REPLY, ACCEPT]])), set()),
    # nft's "eth*" is every interface whose name starts with eth: a drop through it
    # drops what leaves through eth1 (it was compared with "eth1" as a string).
    "another base chain dropping to a wildcard holding our out interface": (
        forward(("drop", [[saddr(POD), meta("oifname", "eth1"), ACCEPT], [CT_REPLY, ACCEPT]]),
                ("accept", [[meta("oifname", "eth*"), DROP]])), set()),
    "another base chain dropping from a wildcard holding our in interface": (
        forward(("drop", [[meta("iifname", "cni0"), saddr(POD), ACCEPT], [CT_REPLY, ACCEPT]]),
                ("accept", [[meta("iifname", "cni*"), DROP]])), set()),
    "an earlier drop of the same chain through a wildcard holding our out interface": (
        forward(("drop", [[meta("oifname", "eth*"), DROP],
                          [saddr(POD), meta("oifname", "eth1"), ACCEPT], [CT_REPLY, ACCEPT]])),
        set()),
    "another base chain dropping to a wildcard not holding our out interface": (
        forward(("drop", [[saddr(POD), meta("oifname", "eth1"), ACCEPT], [CT_REPLY, ACCEPT]]),
                ("accept", [[meta("oifname", "veth*"), DROP]])),
        {ForwardRule(POD, "0.0.0.0/0", out_interface="eth1")}),
    "another base chain dropping all but a wildcard holding our out interface": (
        forward(("drop", [[saddr(POD), meta("oifname", "eth1"), ACCEPT], [CT_REPLY, ACCEPT]]),
                ("accept", [[meta("oifname", "eth*", "!="), DROP]])),
        {ForwardRule(POD, "0.0.0.0/0", out_interface="eth1")}),
}


@pytest.mark.parametrize("case", sorted(FORWARD_CASES))
def test_foreign_forward_reads_exactly_what_the_ruleset_says(case: str) -> None:
    kernel, expected = FORWARD_CASES[case]
    assert read(kernel) == expected
