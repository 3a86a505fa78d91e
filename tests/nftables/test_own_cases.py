"""The nftables own-table reader, one small table per case.

Each case is k3snet's table in ``nft -j list table`` form, its rules rendered by
:func:`~k3snet.render.nftables.nft_rules_json` (what the backend sends, so what the
kernel lists back) and then bent one way: the exact objects, rule handles and
findings (drift, its kind and its repair) :func:`read_own` must report.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from k3snet.backends.nftables.cache import Cache, Repair
from k3snet.backends.nftables.parse import own_object, parse_rule, read_own, table_of
from k3snet.model import ForwardRule, MasqueradeRule, NetObject, SnatRule
from k3snet.render.nftables import (
    CHAIN_HOOKS,
    FORWARD_CHAIN,
    MARKER_CHAIN,
    NAT_CHAIN,
    TABLE_COMMENT,
    nft_rules,
    nft_rules_json,
)

Item = dict[str, Any]
NAME = "k3snet"

MASQ = MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24", out_interface="eth0",
                      random_fully=True)
EXCL = MasqueradeRule("10.43.0.0/16", exclude=["10.0.0.0/8", "224.0.0.0/4"])
SNAT4 = SnatRule("10.44.0.0/16", destination="192.168.3.0/24", to_address="192.168.1.5")
SNAT6 = SnatRule("fd42:43::/56", to_address="fd01:1::5", random_fully=True)
FWD4 = ForwardRule("10.52.0.0/16", "192.168.2.0/24", in_interface="cni0", out_interface="eth0")
FWD6 = ForwardRule("fd42:42::/56", "fd01:2::/64")


def chain(family: str, name: str, **spec: Any) -> Item:
    return {"chain": {"family": family, "table": NAME, "name": name, "handle": 1, **spec}}


def base(family: str, name: str, **changed: Any) -> Item:
    return chain(family, name, **{**CHAIN_HOOKS[name], **changed})


def rule(family: str, chain_name: str, handle: int, expr: Any, comment: str | None) -> Item:
    body: dict[str, Any] = {"family": family, "table": NAME, "chain": chain_name,
                            "handle": handle, "expr": expr}
    if comment is not None:
        body["comment"] = comment
    return {"rule": body}


def rules_of(obj: NetObject, handle: int, family: str = "inet") -> list[Item]:
    """``obj``'s rules as the kernel lists them, from handle ``handle`` on."""
    inet = family == "inet"
    return [rule(family, r.chain, handle + i, json.loads(expr), r.comment)
            for i, (r, expr) in enumerate(zip(nft_rules(obj, inet=inet),
                                              nft_rules_json(obj, inet=inet), strict=True))]


def table(family: str, *rules: Item, chains: list[Item] | None = None) -> list[Item]:
    """A table of ``family`` with k3snet's chains (or ``chains``) and ``rules``."""
    if chains is None:
        chains = [base(family, NAT_CHAIN), base(family, FORWARD_CHAIN),
                  chain(family, MARKER_CHAIN)]
    # marked, as a libnftables that prints a table's comment in JSON lists it (1.0.6 does not)
    return [{"table": {"family": family, "name": NAME, "handle": 1, "comment": TABLE_COMMENT}},
            *chains, *rules]


class Kernel:
    """The listing seam: one listing per nft family (``None``: no such table)."""

    def __init__(self, **tables: list[Item]) -> None:
        self.tables = tables
        self.listed: list[tuple[str, str, str]] = []

    def list(self, kind: str, **ref: str) -> list[Item] | None:
        assert kind == "table"
        self.listed.append((kind, ref["family"], ref["name"]))
        return self.tables.get(ref["family"])


Finding = tuple[str, str, Repair]


def findings(cache: Cache) -> list[Finding]:
    """Every finding: (drift kind, description, repair), in the order found."""
    return [(d.kind, d.describe(), r) for d, r in cache.drift.values()]


def read(families: tuple[str, ...] = ("inet",), **tables: list[Item]) -> Cache:
    kernel = Kernel(**tables)
    cache = read_own(kernel, NAME, families, genid=7)
    assert kernel.listed == [("table", f, NAME) for f in families]
    assert cache.genid == 7
    return cache


def where(chain_name: str | None = None, family: str = "inet") -> str:
    return f"drift in nftables {family} {NAME}" + (f" {chain_name}" if chain_name else "")


# -- a table as k3snet writes it ----------------------------------------------------------


def test_a_table_as_written_reads_back_as_its_objects_with_their_handles() -> None:
    cache = read(inet=table("inet", *rules_of(MASQ, 10), *rules_of(EXCL, 11),
                            *rules_of(SNAT4, 12), *rules_of(SNAT6, 13),
                            *rules_of(FWD4, 20), *rules_of(FWD6, 30)))
    assert cache.objects == {o.key: o for o in (MASQ, EXCL, SNAT4, SNAT6, FWD4, FWD6)}
    assert list(cache.objects) == [o.key for o in (MASQ, EXCL, SNAT4, SNAT6, FWD4, FWD6)]
    assert cache.handles == {MASQ.key: [10], EXCL.key: [11], SNAT4.key: [12],
                             SNAT6.key: [13], FWD4.key: [20, 21], FWD6.key: [30, 31]}
    assert findings(cache) == []
    (family,) = cache.tables
    assert family == "inet"
    assert cache.tables["inet"].marker
    assert sorted(cache.tables["inet"].chains) == sorted([NAT_CHAIN, FORWARD_CHAIN,
                                                          MARKER_CHAIN])
    assert cache.tables["inet"].chains[NAT_CHAIN]["prio"] == 100


def test_split_tables_hold_one_family_each() -> None:
    cache = read(("ip", "ip6"),
                 ip=table("ip", *rules_of(SNAT4, 5, "ip"), *rules_of(FWD4, 6, "ip")),
                 ip6=table("ip6", *rules_of(SNAT6, 5, "ip6"), *rules_of(FWD6, 6, "ip6")))
    assert cache.objects == {o.key: o for o in (SNAT4, FWD4, SNAT6, FWD6)}
    assert cache.handles == {SNAT4.key: [5], FWD4.key: [6, 7], SNAT6.key: [5],
                             FWD6.key: [6, 7]}
    assert findings(cache) == []
    assert sorted(cache.tables) == ["ip", "ip6"]
    assert cache.tables["ip"].marker
    assert cache.tables["ip6"].marker


def test_a_rule_in_the_table_of_the_other_family_is_not_ours() -> None:
    cache = read(("ip", "ip6"), ip=table("ip", *rules_of(SNAT6, 5, "ip")), ip6=table("ip6"))
    assert cache.objects == {}
    assert findings(cache) == [
        ("nat", f"{where(NAT_CHAIN, 'ip')}: rule handle 5: not a rule k3snet writes",
         Repair("ip", rules=((NAT_CHAIN, 5),)))]


def test_a_missing_table_is_no_objects_and_no_drift() -> None:
    cache = read(("ip", "ip6"), ip6=table("ip6", *rules_of(FWD6, 5, "ip6")))
    assert cache.objects == {FWD6.key: FWD6}
    assert list(cache.tables) == ["ip6"]
    assert findings(cache) == []


def test_the_table_of_an_object() -> None:
    assert table_of(SNAT4, ("inet",)) == "inet"
    assert table_of(SNAT6, ("inet",)) == "inet"
    assert table_of(SNAT4, ("ip", "ip6")) == "ip"
    assert table_of(SNAT6, ("ip", "ip6")) == "ip6"


# -- chains ---------------------------------------------------------------------------------


def test_base_chains_with_another_type_hook_or_priority_are_rebuilt() -> None:
    cache = read(inet=table("inet", chains=[
        base("inet", NAT_CHAIN, prio=105), base("inet", FORWARD_CHAIN, type="nat"),
        chain("inet", MARKER_CHAIN)]))
    assert findings(cache) == [
        ("nat", f"{where(NAT_CHAIN)}: type nat hook postrouting priority 105 "
                "(k3snet's: type nat hook postrouting priority 100)",
         Repair("inet", rebuild=True)),
        ("forward", f"{where(FORWARD_CHAIN)}: type nat hook forward priority 0 "
                    "(k3snet's: type filter hook forward priority 0)",
         Repair("inet", rebuild=True)),
    ]


def test_a_base_chain_on_another_hook_is_rebuilt() -> None:
    cache = read(inet=table("inet", chains=[
        base("inet", NAT_CHAIN, hook="prerouting"), base("inet", FORWARD_CHAIN),
        chain("inet", MARKER_CHAIN)]))
    assert findings(cache) == [
        ("nat", f"{where(NAT_CHAIN)}: type nat hook prerouting priority 100 "
                "(k3snet's: type nat hook postrouting priority 100)",
         Repair("inet", rebuild=True))]


def test_a_base_chain_with_another_policy_is_declared_again() -> None:
    cache = read(inet=table("inet", chains=[
        base("inet", NAT_CHAIN, policy="drop"), base("inet", FORWARD_CHAIN, policy="drop"),
        chain("inet", MARKER_CHAIN)]))
    assert findings(cache) == [
        ("nat", f"{where(NAT_CHAIN)}: policy drop (k3snet's: accept)",
         Repair("inet", chain=NAT_CHAIN)),
        ("forward", f"{where(FORWARD_CHAIN)}: policy drop (k3snet's: accept)",
         Repair("inet", chain=FORWARD_CHAIN)),
    ]


def test_missing_base_chains_are_declared_again() -> None:
    cache = read(inet=table("inet", chains=[]))
    assert findings(cache) == [
        ("nat", f"{where()}: base chain postrouting is missing", Repair("inet", chain=NAT_CHAIN)),
        ("nat", f"{where()}: base chain forward is missing",
         Repair("inet", chain=FORWARD_CHAIN)),
    ]
    assert not cache.tables["inet"].marker


def test_a_chain_k3snet_does_not_write_rebuilds_the_table() -> None:
    cache = read(inet=table("inet", rule("inet", "extra", 9, [{"accept": None}], None),
                            chains=[base("inet", NAT_CHAIN), base("inet", FORWARD_CHAIN),
                                    chain("inet", "extra")]))
    # the chain's rule goes with the chain: no finding of its own
    assert findings(cache) == [
        ("nat", f"{where()}: chain extra: not a chain k3snet writes", Repair("inet", rebuild=True))]
    assert not cache.tables["inet"].marker


def test_a_marker_chain_with_a_hook_is_not_the_marker() -> None:
    cache = read(inet=table("inet", chains=[
        base("inet", NAT_CHAIN), base("inet", FORWARD_CHAIN),
        chain("inet", MARKER_CHAIN, type="filter", hook="input", prio=0, policy="accept")]))
    assert not cache.tables["inet"].marker
    assert findings(cache) == [
        ("nat", f"{where()}: chain handle_marker: not a chain k3snet writes",
         Repair("inet", rebuild=True))]


def test_a_set_is_drift_and_malformed_items_are_skipped() -> None:
    # A set (map, named counter ...) is no object of k3snet's: drift the rebuild repairs
    # (tests/nftables/test_table_objects.py); an item nft never prints is skipped.
    items = table("inet", *rules_of(EXCL, 4))
    items += [{"set": {"name": "s"}}, {"chain": "not a dict"}, {"rule": ["not a dict"]}]
    cache = read(inet=items)
    assert cache.objects == {EXCL.key: EXCL}
    assert findings(cache) == [
        ("nat", f"{where()}: set s: not an object k3snet writes (the table's rebuild deletes it)",
         Repair("inet", rebuild=True))]


# -- rules ------------------------------------------------------------------------------


def _with(items: list[Item], **changed: Any) -> list[Item]:
    return [{"rule": {**item["rule"], **changed}} for item in items]


def _extra(chain_name: str, handle: int, kind: str | None = None) -> Finding:
    kind = kind or ("forward" if chain_name == FORWARD_CHAIN else "nat")
    return (kind, f"{where(chain_name)}: rule handle {handle}: not a rule k3snet writes",
            Repair("inet", rules=((chain_name, handle),)))


def test_rules_without_a_handle_or_a_chain_name_are_skipped() -> None:
    cache = read(inet=table("inet", *_with(rules_of(MASQ, 4), handle="4"),
                            *_with(rules_of(EXCL, 5), handle=None),
                            *_with(rules_of(SNAT4, 6), chain=None),
                            *_with(rules_of(SNAT6, 7), chain=1)))
    assert cache.objects == {}
    assert findings(cache) == []


def test_a_rule_in_the_marker_chain_is_not_ours() -> None:
    cache = read(inet=table("inet", *_with(rules_of(MASQ, 4), chain=MARKER_CHAIN)))
    assert cache.objects == {}
    assert findings(cache) == [_extra(MARKER_CHAIN, 4, "nat")]


@pytest.mark.parametrize("comment", [None, 7, "k3snet", "k3snet:" + "z" * 16, "owner:x"])
def test_a_rule_without_a_tag_is_not_ours(comment: Any) -> None:
    items = rules_of(MASQ, 4)
    items[0]["rule"]["comment"] = comment
    cache = read(inet=table("inet", *items))
    assert cache.objects == {}
    assert findings(cache) == [_extra(NAT_CHAIN, 4)]


def test_a_tagged_rule_without_statements_is_not_ours() -> None:
    cache = read(inet=table("inet", *_with(rules_of(MASQ, 4), expr={"masquerade": None}),
                            *_with(rules_of(EXCL, 5), expr=None)))
    assert cache.objects == {}
    assert findings(cache) == [_extra(NAT_CHAIN, 4), _extra(NAT_CHAIN, 5)]


def test_a_nat_rule_in_the_forward_chain_is_not_ours() -> None:
    cache = read(inet=table("inet", *_with(rules_of(MASQ, 4), chain=FORWARD_CHAIN),
                            *_with(rules_of(FWD6, 5), chain=NAT_CHAIN)))
    assert cache.objects == {}
    assert findings(cache) == [_extra(FORWARD_CHAIN, 4), _extra(NAT_CHAIN, 5), _extra(NAT_CHAIN, 6)]


def test_a_rule_k3snet_would_write_with_a_bad_value_is_not_ours() -> None:
    # an interface name the model refuses (the reader catches the model's error)
    items = rules_of(MasqueradeRule("10.42.0.0/16", out_interface="eth0"), 4)
    items[0]["rule"]["expr"][1]["match"]["right"] = "a" * 20
    cache = read(inet=table("inet", *items))
    assert cache.objects == {}
    assert findings(cache) == [_extra(NAT_CHAIN, 4)]


def test_a_forward_rule_without_its_reply_and_a_reply_without_its_rule() -> None:
    lone, reply = rules_of(FWD4, 4)
    other = rules_of(FWD6, 8)[1]
    cache = read(inet=table("inet", lone, other))
    assert cache.objects == {}
    assert findings(cache) == [
        ("forward", f"{where(FORWARD_CHAIN)}: rule handle 4: a forward rule without its "
                    "reply rule", Repair("inet", rules=((FORWARD_CHAIN, 4),))),
        ("forward", f"{where(FORWARD_CHAIN)}: rule handle 9: a reply rule without its "
                    "forward rule", Repair("inet", rules=((FORWARD_CHAIN, 9),))),
    ]
    assert reply["rule"]["handle"] == 5


def test_forward_halves_pair_by_tag_and_content_in_kernel_order() -> None:
    # two copies of the forward half, one reply: the first pairs, the second is extra
    first, reply = rules_of(FWD4, 4)
    second = _with([first], handle=6)[0]
    cache = read(inet=table("inet", reply, first, second))
    assert cache.objects == {FWD4.key: FWD4}
    assert cache.handles == {FWD4.key: [4, 5]}
    assert findings(cache) == [
        ("forward", f"{where(FORWARD_CHAIN)}: rule handle 6: a forward rule without its "
                    "reply rule", Repair("inet", rules=((FORWARD_CHAIN, 6),)))]


def test_a_reply_half_of_another_rule_under_the_same_tag_does_not_pair() -> None:
    there = rules_of(FWD4, 4)[0]
    other = ForwardRule("10.53.0.0/16", "192.168.2.0/24", in_interface="cni0",
                        out_interface="eth0")
    back = _with([rules_of(other, 5)[1]], comment=there["rule"]["comment"] + ":reply")[0]
    cache = read(inet=table("inet", there, back))
    assert cache.objects == {}
    assert [f[1] for f in findings(cache)] == [
        f"{where(FORWARD_CHAIN)}: rule handle 4: a forward rule without its reply rule",
        f"{where(FORWARD_CHAIN)}: rule handle 6: a reply rule without its forward rule"]


def test_forward_halves_under_each_other_s_tag_are_out_of_place() -> None:
    there, back = rules_of(FWD4, 4)
    there["rule"]["comment"], back["rule"]["comment"] = (back["rule"]["comment"],
                                                        there["rule"]["comment"])
    cache = read(inet=table("inet", there, back))
    assert cache.objects == {}
    assert findings(cache) == [
        ("forward", f"{where(FORWARD_CHAIN)}: rule handle {h}: a forward rule half out of "
                    "place", Repair("inet", rules=((FORWARD_CHAIN, h),))) for h in (4, 5)]


def test_a_duplicate_is_drift_and_the_first_copy_is_the_object() -> None:
    cache = read(inet=table("inet", *rules_of(FWD4, 4), *rules_of(MASQ, 6), *rules_of(MASQ, 7),
                            *rules_of(FWD4, 8)))
    assert cache.objects == {MASQ.key: MASQ, FWD4.key: FWD4}
    assert cache.handles == {MASQ.key: [6], FWD4.key: [4, 5]}
    assert findings(cache) == [
        ("nat", f"{where(NAT_CHAIN)}: rule handle 7: a duplicate of {MASQ.describe()}",
         Repair("inet", rules=((NAT_CHAIN, 7),))),
        ("forward", f"{where(FORWARD_CHAIN)}: rules handle 8, 9: a duplicate of "
                    f"{FWD4.describe()}", Repair("inet", rules=((FORWARD_CHAIN, 8),
                                                               (FORWARD_CHAIN, 9)))),
    ]


@pytest.mark.parametrize("obj", [MASQ, FWD4])
def test_a_forged_tag_is_the_rule_as_it_is_and_drift(obj: NetObject) -> None:
    forged = "k3snet:0123456789abcdef"
    items = rules_of(obj, 4)
    items[0]["rule"]["comment"] = forged
    if len(items) == 2:
        items[1]["rule"]["comment"] = forged + ":reply"
    cache = read(inet=table("inet", *items))
    assert cache.objects == {obj.key: obj}
    assert cache.handles == {obj.key: [4, 5][: len(items)]}
    chain_name = nft_rules(obj)[0].chain
    handles = "rules handle 4, 5" if len(items) == 2 else "rule handle 4"
    assert findings(cache) == [
        (obj.kind, f"{where(chain_name)}: {handles}: tag {forged} is not its content's "
                   f"({nft_rules(obj)[0].comment})", Repair("inet", retag=obj.key))]


# -- which rules are k3snet's -------------------------------------------------------------


def _expr(obj: NetObject, slot: int = 0) -> list[Any]:
    expr = json.loads(nft_rules_json(obj)[slot])
    assert isinstance(expr, list)
    return expr


def _match(left: Any, right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


def _addr(fld: str, addr: str, length: int, proto: str = "ip", op: str = "==") -> dict[str, Any]:
    return _match({"payload": {"protocol": proto, "field": fld}},
                  {"prefix": {"addr": addr, "len": length}}, op)


def _meta(key: str, value: Any, op: str = "==") -> dict[str, Any]:
    return _match({"meta": {"key": key}}, value, op)


PLAIN = MasqueradeRule("10.42.0.0/16")
PAIR = ForwardRule("10.42.0.0/16", "192.168.2.0/24")
# one statement added before the verdict (or the verdict replaced), in each chain
NOT_OURS: dict[str, tuple[str, list[Any]]] = {
    "a counter": (NAT_CHAIN, [*_expr(PLAIN)[:-1], {"counter": None}, *_expr(PLAIN)[-1:]]),
    "an unknown match": (NAT_CHAIN, [_match({"tcp": "dport"}, 22), *_expr(PLAIN)]),
    "a mark": (NAT_CHAIN, [_meta("mark", 1), *_expr(PLAIN)]),
    "meta nfproto": (NAT_CHAIN, [_meta("nfproto", "ipv4"), *_expr(PLAIN)]),
    "no address": (NAT_CHAIN, [_meta("oifname", "eth0"), {"masquerade": None}]),
    "two sources": (NAT_CHAIN, [_addr("saddr", "10.43.0.0", 16), *_expr(PLAIN)]),
    "a negated source": (NAT_CHAIN, [_addr("saddr", "10.42.0.0", 16, op="!="),
                                     {"masquerade": None}]),
    "two in interfaces": (FORWARD_CHAIN, [_meta("iifname", "a"), _meta("iifname", "b"),
                                          *_expr(PAIR)]),
    "two out interfaces": (NAT_CHAIN, [_meta("oifname", "a"), _meta("oifname", "b"),
                                       *_expr(PLAIN)]),
    "a negated in interface": (FORWARD_CHAIN, [_meta("iifname", "a", "!="), *_expr(PAIR)]),
    "a negated out interface": (NAT_CHAIN, [_meta("oifname", "a", "!="), *_expr(PLAIN)]),
    "two destinations": (NAT_CHAIN, [_addr("daddr", "192.168.0.0", 16),
                                     _addr("daddr", "192.168.2.0", 24), *_expr(PLAIN)]),
    "a reply test in NAT": (NAT_CHAIN, [*_expr(PAIR, 1)[:-1], {"masquerade": None}]),
    "an in interface in NAT": (NAT_CHAIN, [_meta("iifname", "cni0"), *_expr(PLAIN)]),
    "a NAT port": (NAT_CHAIN, [*_expr(PLAIN)[:-1], {"masquerade": {"port": 80}}]),
    "an accept in NAT": (NAT_CHAIN, [*_expr(PLAIN)[:-1], {"accept": None}]),
    "a snat then an accept": (NAT_CHAIN, [*_expr(PLAIN)[:-1], {"snat": {"addr": "192.0.2.1"}},
                                          {"accept": None}]),
    "a snat without an address": (NAT_CHAIN, [*_expr(PLAIN)[:-1],
                                              {"snat": {"flags": "fully-random"}}]),
    "a drop in forward": (FORWARD_CHAIN, [*_expr(PAIR)[:-1], {"drop": None}]),
    "a masquerade in forward": (FORWARD_CHAIN, [*_expr(PAIR)[:-1], {"masquerade": None}]),
    "a forward rule without a destination": (FORWARD_CHAIN, [*_expr(PAIR)[:1], {"accept": None}]),
    "a forward rule with an exclusion": (FORWARD_CHAIN, [
        *_expr(PAIR)[:1], _addr("daddr", "192.168.2.0", 24, op="!="), {"accept": None}]),
    "a forward rule with a destination and an exclusion": (FORWARD_CHAIN, [
        *_expr(PAIR)[:-1], _addr("daddr", "192.168.2.128", 25, op="!="), {"accept": None}]),
    "the marker chain": (MARKER_CHAIN, _expr(PLAIN)),
    # A reply test the foreign reader takes (`ct direction reply`), which k3snet's own
    # reply half does not hold: beside its state, or instead of it.
    "a reply half with a direction": (FORWARD_CHAIN, [
        *_expr(PAIR, 1)[:-1], _match({"ct": {"key": "direction"}}, "reply"),
        {"accept": None}]),
    "a reply half testing its direction, not its state": (FORWARD_CHAIN, [
        *_expr(PAIR, 1)[:2], _match({"ct": {"key": "direction"}}, "reply"),
        {"accept": None}]),
}


@pytest.mark.parametrize("case", sorted(NOT_OURS))
def test_a_rule_not_shaped_as_k3snet_writes_it_is_no_object(case: str) -> None:
    chain_name, expr = NOT_OURS[case]
    assert own_object(parse_rule(expr), chain_name) is None


def test_the_shapes_k3snet_writes_are_its_objects() -> None:
    # the control of the cases above: the same rules unbent
    assert own_object(parse_rule(_expr(PLAIN)), NAT_CHAIN) == (PLAIN, False)
    assert own_object(parse_rule(_expr(PAIR)), FORWARD_CHAIN) == (PAIR, False)
    assert own_object(parse_rule(_expr(PAIR, 1)), FORWARD_CHAIN) == (PAIR, True)
    snat = SnatRule("10.42.0.0/16", exclude=["10.0.0.0/8"], out_interface="eth0",
                    to_address="192.0.2.1", random_fully=True)
    assert own_object(parse_rule(_expr(snat)), NAT_CHAIN) == (snat, False)
    both = ForwardRule("fd42::/56", "fd01::/64", in_interface="cni0", out_interface="eth0")
    assert own_object(parse_rule(_expr(both)), FORWARD_CHAIN) == (both, False)
    assert own_object(parse_rule(_expr(both, 1)), FORWARD_CHAIN) == (both, True)
