"""Foreign drops read as :class:`~k3snet.model.ForwardBlock`, one small chain per case.

A block's text names the address and interface matches (negated ones too) and
counts the others ("and 2 more matches"): every other kind of test the parser meets
(an unknown match, a mark, ``meta nfproto``, a reply test, a statement it cannot read) is
counted once per occurrence, so the text says how much of the rule k3snet did
not model.
"""

from __future__ import annotations

from typing import Any

import pytest

from k3snet.backends.nftables.parse import ForeignReader
from k3snet.model import ForwardBlock, ForwardRule, NetObject
from tests.nftables.test_foreign_cases import (
    ACCEPT,
    CT_REPLY,
    DROP,
    Expr,
    Kernel,
    ct_direction,
    daddr,
    forward,
    jump,
    meta,
    saddr,
)

B = "192.168.2.0/24"
WHERE = "nftables inet fw0 forward"
UNKNOWN: Expr = {"match": {"op": "==", "left": {"tcp": "dport"}, "right": 22}}
BAD_ADDRESS: Expr = {"match": {"op": "==", "left": {"payload": {"protocol": "ip",
                                                                 "field": "daddr"}},
                               "right": "not-an-address"}}
MASKED_MARK: Expr = {"match": {"op": "==", "left": {"&": [{"meta": {"key": "mark"}}, 0x4000]},
                               "right": 0x4000}}


def blocks(kernel: Kernel) -> set[NetObject]:
    found = ForeignReader(kernel, frozenset()).read()
    return {o for o in found if isinstance(o, ForwardBlock)}


def block(text: str, where: str = WHERE, family: int = 4, verdict: str = "drop",
          **fields: Any) -> ForwardBlock:
    return ForwardBlock(family, verdict, text, where, **fields)


# (rule before the drop verdict) -> the block read
BLOCKS: dict[str, tuple[list[Expr], set[NetObject]]] = {
    "a destination": ([daddr(B)], {block(f"ip daddr {B} drop", destination=B)}),
    "a source and a destination": (
        [saddr("10.42.0.0/16"), daddr(B)],
        {block(f"ip saddr 10.42.0.0/16 ip daddr {B} drop", source="10.42.0.0/16",
               destination=B)}),
    "an IPv6 source": (
        [saddr("fd42::/56")], {block("ip6 saddr fd42::/56 drop", family=6, source="fd42::/56")}),
    "one address, not a prefix": (
        [daddr("192.168.2.7")],
        {block("ip daddr 192.168.2.7/32 drop", destination="192.168.2.7/32")}),
    "interfaces": (
        [meta("iifname", "cni0"), meta("oifname", "eth1"), daddr(B)],
        {block(f"ip daddr {B} iifname cni0 oifname eth1 drop", destination=B,
               in_interface="cni0", out_interface="eth1")}),
    "two destinations are any destination": (
        [daddr("192.168.0.0/16"), daddr(B)],
        {block(f"ip daddr 192.168.0.0/16 ip daddr {B} drop")}),
    "two sources are any source": (
        [saddr("10.42.0.0/16"), saddr("10.42.1.0/24"), daddr(B)],
        {block(f"ip saddr 10.42.0.0/16 ip saddr 10.42.1.0/24 ip daddr {B} drop",
               destination=B)}),
    "two in interfaces are any": (
        [meta("iifname", "a"), meta("iifname", "b"), daddr(B)],
        {block(f"ip daddr {B} iifname a iifname b drop", destination=B)}),
    "two out interfaces are any": (
        [meta("oifname", "a"), meta("oifname", "b"), daddr(B)],
        {block(f"ip daddr {B} oifname a oifname b drop", destination=B)}),
    "a wildcard interface is any": (
        [meta("iifname", "cni*"), meta("oifname", "eth*"), daddr(B)],
        {block(f"ip daddr {B} iifname cni* oifname eth* drop", destination=B)}),
    "a negated source is named, and matches any source": (
        [saddr("10.42.0.0/16", neg=True), daddr(B)],
        {block(f"ip saddr != 10.42.0.0/16 ip daddr {B} drop", destination=B)}),
    "negated interfaces are named, and match any interface": (
        [meta("iifname", "cni0", "!="), meta("oifname", "eth1", "!="), daddr(B)],
        {block(f"ip daddr {B} iifname != cni0 oifname != eth1 drop", destination=B)}),
    "an unknown match": ([UNKNOWN, daddr(B)],
                         {block(f"ip daddr {B} (and 1 more match) drop", destination=B)}),
    "a port match": (
        [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                    "right": 22}}, daddr(B)],
        {block(f"ip daddr {B} (and 1 more match) drop", destination=B)}),
    "two unknown matches": ([UNKNOWN, UNKNOWN, daddr(B)],
                            {block(f"ip daddr {B} (and 2 more matches) drop", destination=B)}),
    "two statements k3snet cannot read": (
        [{"limit": {"rate": 1}}, {"quota": {"val": 1}}, daddr(B)],
        {block(f"ip daddr {B} (and 2 more matches) drop", destination=B)}),
    "two statements of two keys": (
        [{"counter": None, "log": None}, {"counter": None, "limit": None}, daddr(B)],
        {block(f"ip daddr {B} (and 2 more matches) drop", destination=B)}),
    "two statements that are not objects": (
        ["counter", None, daddr(B)],  # type: ignore[list-item]
        {block(f"ip daddr {B} (and 2 more matches) drop", destination=B)}),
    "two addresses that are not addresses": (
        [BAD_ADDRESS, BAD_ADDRESS, daddr(B)],
        {block(f"ip daddr {B} (and 2 more matches) drop", destination=B)}),
    "two iptables-nft matches": (
        [{"xt": {"type": "match", "name": "mark"}}, {"xt": {"type": "match", "name": "tcp"}},
         daddr(B)],
        {block(f"ip daddr {B} (and 2 more matches) drop", destination=B)}),
    "two marks": ([meta("mark", 1), meta("mark", 2), daddr(B)],
                  {block(f"ip daddr {B} (and 2 more matches) drop", destination=B)}),
    "two masked marks": ([MASKED_MARK, MASKED_MARK, daddr(B)],
                         {block(f"ip daddr {B} (and 2 more matches) drop", destination=B)}),
    "two family tests": ([meta("nfproto", "ipv4"), meta("nfproto", "ipv4"), daddr(B)],
                         {block(f"ip daddr {B} (and 2 more matches) drop", destination=B)}),
    "a reply test": ([CT_REPLY, daddr(B)],
                     {block(f"ip daddr {B} (and 1 more match) drop", destination=B)}),
    "a reply test, then an unknown match": (
        [CT_REPLY, UNKNOWN, daddr(B)],
        {block(f"ip daddr {B} (and 2 more matches) drop", destination=B)}),
    "a state test that is not the reply test": (
        [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "invalid"}},
         daddr(B)],
        {block(f"ip daddr {B} (and 1 more match) drop", destination=B)}),
    "harmless statements are not matches": (
        [{"counter": None}, {"log": {"prefix": "x"}}, {"xt": {"type": "match", "name": "comment"}},
         daddr(B)],
        {block(f"ip daddr {B} drop", destination=B)}),
    "an IPv4 family test names the family": (
        [meta("nfproto", "ipv4"), daddr(B)],
        {block(f"ip daddr {B} (and 1 more match) drop", destination=B)}),
    "an address of the other family counts as a match": (
        [saddr("10.42.0.0/16"), daddr("fd00::/8")],
        {block("ip saddr 10.42.0.0/16 (and 1 more match) drop", source="10.42.0.0/16")}),
    # A drop stops a packet any element matches: one block per element, as precise as
    # the set (it counted as any destination, and a set-only drop was no block at all).
    "a set of destinations is a block of each": (
        [saddr("10.42.0.0/16"), {"match": {"op": "==", "left": daddr(B)["match"]["left"],
                                           "right": {"set": ["192.0.2.1", "192.0.2.2"]}}}],
        {block(f"ip saddr 10.42.0.0/16 ip daddr 192.0.2.{n}/32 drop", source="10.42.0.0/16",
               destination=f"192.0.2.{n}/32") for n in (1, 2)}),
    "a set of exclusions is named, and matches any destination": (
        [saddr("10.42.0.0/16"), {"match": {"op": "!=", "left": daddr(B)["match"]["left"],
                                           "right": {"set": ["192.0.2.1", "192.0.2.2"]}}}],
        {block("ip saddr 10.42.0.0/16 ip daddr != 192.0.2.1/32 ip daddr != 192.0.2.2/32 drop",
               source="10.42.0.0/16")}),
    "no address is no block": ([meta("iifname", "cni0")], set()),
    "a negated address only is no block": ([daddr(B, neg=True)], set()),
    "a family test only is no block": ([meta("nfproto", "ipv6")], set()),
}


@pytest.mark.parametrize("case", sorted(BLOCKS))
def test_a_foreign_drop_is_read_as_the_block_it_is(case: str) -> None:
    matches, expected = BLOCKS[case]
    assert blocks(forward(("accept", [[*matches, DROP]]))) == expected


def test_a_reject_is_a_drop_block() -> None:
    assert blocks(forward(("accept", [[daddr(B), {"reject": {"type": "icmp"}}]]))) == {
        block(f"ip daddr {B} drop", destination=B)}


@pytest.mark.parametrize("statement", [{"queue": {"num": 3}},
                                       {"queue": {"num": 3, "flags": ["bypass"]}}])
def test_a_queue_to_a_program_is_a_block(statement: Expr) -> None:
    # A queued packet's verdict is a program's (an IPS such as Suricata), never k3snet's
    # accept: the walk read `queue` as a statement packets pass, so the plan added an
    # accept that is never reached, without a conflict (the iptables backend reads
    # NFQUEUE as a block too).
    assert blocks(forward(("accept", [[daddr(B), statement]]))) == {
        block(f"ip daddr {B} queue", destination=B, verdict="queue")}


@pytest.mark.parametrize("verdict", [ACCEPT, {"return": None}, jump("x"),
                                     {"masquerade": None}, {"counter": None}])
def test_other_verdicts_are_no_blocks(verdict: Expr) -> None:
    assert blocks(forward(("accept", [[daddr(B), verdict]]), x=[])) == set()


def test_iptables_nfts_reject_target_is_a_reject() -> None:
    # -j REJECT through iptables-nft: a compat target that always ends the packet.
    xt_reject = {"xt": {"type": "target", "name": "REJECT"}}
    assert {b.describe() for b in blocks(forward(("accept", [[daddr(B), xt_reject]])))} == {
        f"drop by nftables inet fw0 forward: ip daddr {B} drop"}


def test_blocks_are_read_in_base_chains_and_at_any_depth_below() -> None:
    kernel = forward(
        ("accept", [[daddr("192.168.1.0/24"), DROP], [jump("one")], [jump("one")],
                    [{"goto": {"target": "gone"}}]]),
        one=[[daddr("192.168.2.0/24"), DROP], [jump("two")]],
        two=[[daddr("192.168.3.0/24"), DROP], [jump("three")]],
        three=[[daddr("192.168.4.0/24"), DROP]],
        gone=[[saddr("10.9.0.0/16"), DROP]])
    assert blocks(kernel) == {
        block("ip daddr 192.168.1.0/24 drop", destination="192.168.1.0/24"),
        block("ip daddr 192.168.2.0/24 drop", "nftables inet fw0 one",
              destination="192.168.2.0/24"),
        block("ip daddr 192.168.3.0/24 drop", "nftables inet fw0 two",
              destination="192.168.3.0/24"),
        block("ip daddr 192.168.4.0/24 drop", "nftables inet fw0 three",
              destination="192.168.4.0/24"),
        block("ip saddr 10.9.0.0/16 drop", "nftables inet fw0 gone", source="10.9.0.0/16"),
    }


def test_a_block_below_a_conditional_jump_is_narrowed_by_the_jump() -> None:
    kernel = forward(("accept", [[saddr("10.42.0.0/16"), jump("one")]]),
                     one=[[meta("oifname", "eth1"), jump("two")]],
                     two=[[daddr(B), DROP]])
    # Named, as the NAT blocks are, by every test a packet meets on the way there.
    assert blocks(kernel) == {
        block(f"ip saddr 10.42.0.0/16 ip daddr {B} oifname eth1 drop", "nftables inet fw0 two",
              source="10.42.0.0/16", destination=B, out_interface="eth1")}


def test_a_drop_a_negation_on_the_way_leaves_no_packet_is_no_block() -> None:
    # Docker's isolation: `oifname != docker0` jumps to a chain that drops `oifname docker0`.
    kernel = forward(("accept", [[meta("iifname", "docker0"), meta("oifname", "docker0", "!="),
                                  jump("stage2")]]),
                     stage2=[[meta("oifname", "docker0"), daddr(B), DROP]])
    assert blocks(kernel) == set()
    # Two out interfaces a packet cannot have at once, a source a negation excludes.
    kernel = forward(("accept", [[meta("oifname", "eth0"), jump("sub")],
                                 [saddr("10.0.0.0/8", neg=True), jump("other")]]),
                     sub=[[meta("oifname", "eth1"), daddr(B), DROP]],
                     other=[[saddr("10.42.0.0/16"), daddr(B), DROP]])
    assert blocks(kernel) == set()


def test_a_loop_of_jumps_is_read_once_and_the_walk_is_bounded() -> None:
    kernel = forward(("accept", [[jump("one")]]),
                     one=[[daddr(B), DROP], [jump("two")]], two=[[jump("one")]])
    assert blocks(kernel) == {block(f"ip daddr {B} drop", "nftables inet fw0 one",
                                    destination=B)}
    def fan(target: str) -> list[list[Expr]]:
        return [[saddr(f"10.{i}.0.0/16"), jump(target)] for i in range(80)]

    wide = forward(("accept", fan("c1")), **{f"c{i}": fan(f"c{i + 1}") for i in range(1, 10)})
    reader = ForeignReader(wide, frozenset())
    reader.read()  # 80 ** 8 rules without the bound
    assert [text for text in reader.unread if "forward drops stopped after" in text] == [
        "the read of other tables' forward drops stopped after 4096 rules "
        "(at inet fw0 c6)"]  # said once


def test_blocks_of_every_forward_base_chain_and_no_other() -> None:
    kernel = forward(("accept", [[daddr("192.168.1.0/24"), DROP]]),
                     ("drop", [[daddr("192.168.2.0/24"), DROP]]))
    kernel.chains[("ip", "nat", "post")] = ("postrouting", "accept",
                                           [[daddr("192.168.3.0/24"), DROP]])
    kernel.chains[("ip", "other", "in")] = ("input", "accept", [[daddr("192.168.4.0/24"), DROP]])
    assert blocks(kernel) == {
        block("ip daddr 192.168.1.0/24 drop", destination="192.168.1.0/24"),
        block("ip daddr 192.168.2.0/24 drop", "nftables inet fw1 forward",
              destination="192.168.2.0/24"),
    }


def test_drops_in_filter_chains_at_prerouting_are_blocks_too() -> None:
    # Forwarded packets pass them before the forward hook: a drop there wins.
    kernel = forward(("accept", [[daddr("192.168.1.0/24"), DROP]]))
    kernel.chains[("ip", "raw", "pre")] = ("prerouting", "accept",
                                          [[daddr("192.168.5.0/24"), DROP], [DROP]])
    assert blocks(kernel) == {
        block("ip daddr 192.168.1.0/24 drop", destination="192.168.1.0/24"),
        block("ip daddr 192.168.5.0/24 drop", "nftables ip raw pre",
              destination="192.168.5.0/24"),
    }


def test_an_ip_table_s_drop_without_an_address_family_match_is_ipv4() -> None:
    kernel = Kernel({("ip", "t", "fwd"): ("forward", "accept",
                                          [[meta("iifname", "cni0"), DROP],
                                           [daddr(B), DROP]])})
    assert blocks(kernel) == {block(f"ip daddr {B} drop", "nftables ip t fwd", destination=B)}


POD = "10.42.0.0/16"
PODS_OUT = ForwardRule(POD, B)


def typed(kernel: Kernel) -> list[ForwardBlock]:
    return [b for b in blocks(kernel) if isinstance(b, ForwardBlock)]


def test_a_drop_after_an_accept_of_the_pods_carries_it_and_decides_no_pod_traffic() -> None:
    # `ip filter FORWARD`: the pods' accept ends the base chain for their packets, and
    # `ct state established,related accept` for every reply, before the drop: it was a
    # conflict of the pods' forward rule all the same (exit 4) whenever that accept was
    # not also met (another base chain on the hook that may drop them: a warning of that
    # chain's default is what is true).
    kernel = forward(("drop", [[CT_REPLY, ACCEPT], [saddr(POD), ACCEPT], [daddr(B), DROP]]),
                     ("accept", [[{"reject": None}]]))
    (found,) = [b for b in typed(kernel) if b.where == WHERE]
    assert found.accepted == (ForwardRule(POD, "0.0.0.0/0"),)
    assert found.replies_accepted
    assert not found.decides(PODS_OUT)
    assert found.decides(ForwardRule("10.43.0.0/16", B))  # not the accept's


@pytest.mark.parametrize(("replies", "accepted"), [
    ([ct_direction("reply")], True),
    ([ct_direction("reply"), CT_REPLY], True),
    ([CT_REPLY, ct_direction("original")], False),  # a connection's from outside: no reply
])
def test_a_drop_after_an_accept_of_the_reply_direction_decides_no_reply(
        replies: list[Any], accepted: bool) -> None:
    # `ct direction reply accept` (the narrow form k3snet's warning advises) takes every
    # reply before the drop, as `ct state established,related accept` does: it was read
    # as a test k3snet does not model, and the drop decided the replies too.
    kernel = forward(("drop", [[*replies, ACCEPT], [saddr(POD), ACCEPT], [daddr(B), DROP]]),
                     ("accept", [[{"reject": None}]]))
    (found,) = [b for b in typed(kernel) if b.where == WHERE]
    assert found.replies_accepted == accepted


def test_an_accept_in_a_chain_jumped_to_ends_the_base_chain_too() -> None:
    kernel = forward(("drop", [[jump("pods")], [daddr(B), DROP]]),
                     pods=[[saddr(POD), ACCEPT], [daddr(POD), ACCEPT]])
    (found,) = typed(kernel)
    assert set(found.accepted) == {ForwardRule(POD, "0.0.0.0/0"), ForwardRule("0.0.0.0/0", POD)}
    assert not found.decides(PODS_OUT)


@pytest.mark.parametrize(("accept", "why"), [
    ([saddr(POD), UNKNOWN, ACCEPT], "a test k3snet does not model (a port)"),
    ([saddr(POD), MASKED_MARK, ACCEPT], "a mark"),
    ([saddr(POD, neg=True), ACCEPT], "a negation"),
    ([saddr(POD), meta("iifname", "cni*"), ACCEPT], "a wildcard interface"),
    ([saddr(POD), meta("iifname", "cni0"), ACCEPT], "an interface the pods' rule does not name"),
    ([saddr(POD), daddr(B), DROP], "a drop, not an accept"),
])
def test_an_accept_that_may_not_take_every_pod_packet_leaves_the_drop_a_conflict(
        accept: list[Expr], why: str) -> None:
    kernel = forward(("accept", [accept, [daddr(B), DROP]]))
    assert any(b.decides(PODS_OUT) for b in typed(kernel)), why


def test_a_conditional_jump_s_accepts_take_only_what_the_jump_matches() -> None:
    kernel = forward(("accept", [[saddr("10.42.1.0/24"), jump("pods")], [daddr(B), DROP]]),
                     pods=[[ACCEPT]])
    (found,) = [b for b in typed(kernel) if b.rule == f"ip daddr {B} drop"]
    assert found.accepted == (ForwardRule("10.42.1.0/24", "0.0.0.0/0"),)
    assert found.decides(PODS_OUT)
    assert not found.decides(ForwardRule("10.42.1.0/24", B))


def test_an_accept_of_any_address_in_an_inet_chain_takes_both_families() -> None:
    kernel = forward(("accept", [[meta("oifname", "eth0"), ACCEPT], [daddr(B), DROP],
                                 [daddr("fd01:2::/64"), DROP]]))
    for found in typed(kernel):
        assert len(found.accepted) == 1
        assert found.accepted[0].out_interface == "eth0"
        assert found.accepted[0].family == found.family
    assert not any(b.decides(ForwardRule(POD, B, out_interface="eth0")) for b in typed(kernel))
    assert not any(b.decides(ForwardRule("fd42::/56", "fd01:2::/64", out_interface="eth0"))
                   for b in typed(kernel))


def vmap(key: Expr, *elements: tuple[Any, Expr]) -> Expr:
    return {"vmap": {"key": key, "data": {"set": [[v, verdict] for v, verdict in elements]}}}


DADDR = daddr(B)["match"]["left"]
CT_STATE = {"ct": {"key": "state"}}


def test_a_verdict_map_s_drop_is_a_block_of_its_element() -> None:
    # `ip daddr vmap { 192.168.2.0/24 : drop, 10.0.0.0/8 : accept }` was one statement
    # k3snet did not model, with no verdict: the drop of the pods' destination unseen.
    kernel = forward(("accept", [[vmap(DADDR, ({"prefix": {"addr": "192.168.2.0", "len": 24}},
                                               DROP),
                                       ({"prefix": {"addr": "10.0.0.0", "len": 8}}, ACCEPT))]]))
    assert blocks(kernel) == {block(f"ip daddr {B} drop", destination=B)}


def test_a_state_map_accepting_established_and_related_accepts_every_reply() -> None:
    kernel = forward(("drop", [[vmap(CT_STATE, ("established", ACCEPT), ("related", ACCEPT),
                                     ("invalid", DROP))],
                               [daddr(B), DROP]]))
    (found,) = typed(kernel)
    assert found.replies_accepted


@pytest.mark.parametrize("data", ["@blocked", {"set": [["a", "not-a-verdict"]]}, {"set": []}])
def test_a_named_or_odd_verdict_map_stays_a_statement_k3snet_does_not_model(data: Any) -> None:
    kernel = forward(("accept", [[{"vmap": {"key": DADDR, "data": data}}]]))
    assert blocks(kernel) == set()


class _NatPrerouting(Kernel):
    """Its base chains are nat chains on the prerouting hook."""

    def _chain(self, key: tuple[str, str, str]) -> dict[str, Any]:
        item = super()._chain(key)
        item["chain"] |= {"type": "nat", "hook": "prerouting", "prio": -100}
        return item


def test_a_nat_chain_s_drop_is_a_block_of_new_connections_only() -> None:
    # A nat prerouting chain sees a connection's first packet, never a reply: its drop of
    # the database's subnet as a source ends the database's own connections, not the
    # replies to the pods'; after the pods' accept (the chain ends for them), nothing.
    kernel = _NatPrerouting({("ip", "t", "pre"): ("prerouting", "accept",
                                                  [[saddr(B), DROP], [saddr(POD), ACCEPT],
                                                   [saddr("10.0.0.0/8"), DROP]])})
    found = typed(kernel)
    assert {b.rule for b in found} == {f"ip saddr {B} drop", "ip saddr 10.0.0.0/8 drop"}
    assert all(b.replies_accepted for b in found)
    assert not any(b.decides(PODS_OUT) for b in found)
    assert any(b.decides(ForwardRule("10.43.0.0/16", B)) for b in found)


@pytest.mark.kernel
@pytest.mark.lab
@pytest.mark.parametrize("rule", [["-I", "FORWARD", "-d", "192.168.2.0/24", "-j", "REJECT"],
                                  ["-A", "FORWARD", "-j", "REJECT"]],
                         ids=["pods-destination", "every-packet"])
def test_iptables_nfts_reject_drops_the_pods_and_the_plan_says_so(
        require_root: None, rule: list[str]) -> None:
    """iptables-nft writes ``-j REJECT`` as a compat target (``xt target REJECT``), which
    rejects every packet it matches as ``reject`` does: read as a target k3snet cannot
    see into, it was no block and no default, while the pods' connections were rejected."""
    from k3snet.backends.nftables import NftablesBackend  # noqa: PLC0415
    from k3snet.lab import SeedLab  # noqa: PLC0415
    from k3snet.lab.netns import run_in  # noqa: PLC0415
    from k3snet.model import MasqueradeRule, State  # noqa: PLC0415
    from k3snet.planner import plan  # noqa: PLC0415

    wanted_rule = ForwardRule("10.42.0.0/16", "192.168.2.0/24", in_interface="cni0",
                              out_interface="eth0")
    wanted = State(owned=[wanted_rule, MasqueradeRule("10.42.0.0/16",
                                                      destination="192.168.2.0/24",
                                                      out_interface="eth0")])
    with SeedLab.create() as lab:
        run_in(lab.node, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
        with NftablesBackend(lab.node) as backend:
            backend.apply(plan(backend.observe(), wanted))
            assert lab.tcp_probe(4).ok
            run_in(lab.node, ["iptables-nft", "-w", *rule])
            assert not lab.tcp_probe(4, timeout=1.0).ok  # a real connection: rejected
            backend.expect(wanted)
            p = plan(backend.observe(), wanted)
            if "-d" in rule:  # a block of the pods' destination: a conflict
                (note,) = p.conflicts
                assert note.wanted == wanted_rule, p.render()
                assert note.foreign.describe() == (
                    "drop by nftables ip filter FORWARD: ip daddr 192.168.2.0/24 drop")
            else:  # a reject of every packet: a default of the chain, a warning
                assert not p.conflicts, p.render()
                (warning,) = backend.warnings
                assert warning.startswith("nftables: ip filter chain FORWARD, a filter "
                                          "chain of another table"), warning
