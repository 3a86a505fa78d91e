"""Foreign NAT in other tables that may decide a connection before k3snet's chain.

The kernel runs the nat base chains on the postrouting hook in priority order;
the first one that translates a connection decides it, and an ``accept`` or a
``return`` ends only its own chain (no exemption: the next nat chain still
runs). So a ``masquerade`` or ``snat`` in a chain at k3snet's priority
(``srcnat``, 100: equal priorities run in an order nobody should rely on) or
before it is read as a :class:`~k3snet.model.NatBlock`; one after it is not.
Root-free cases over the reader's kernel seam, then one lab namespace where
``nft`` itself holds the foreign table.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from k3snet.backends.nftables.parse import ForeignReader
from k3snet.lab.netns import run_in, temporary_netns
from k3snet.model import MasqueradeRule, NatBlock, SnatRule, State
from k3snet.planner import plan
from tests.nftables.test_foreign_cases import (
    ACCEPT,
    MASQ,
    RETURN,
    Chains,
    Kernel,
    daddr,
    jump,
    meta,
    nat,
    saddr,
    snat,
)

POD = "10.42.0.0/16"
B = "192.168.2.0/24"
UNMARKED_RETURN = [{"match": {"op": "==", "left": {"&": [{"meta": {"key": "mark"}}, 16384]},
                              "right": 0}}, RETURN]
MARKED = {"match": {"op": "==", "left": {"&": [{"meta": {"key": "mark"}}, 16384]},
                    "right": 16384}}


def blocks(kernel: Kernel, prio: int | None) -> set[tuple[Any, ...]]:
    kernel.nat_prio = prio
    found = ForeignReader(kernel, frozenset()).read()
    return {(b.ip_family, b.action, b.rule, b.where, str(b.source), str(b.destination),
             b.out_interface, b.to_address and str(b.to_address))
            for b in found if isinstance(b, NatBlock)}


def one(text: str, source: str | None = None, destination: str | None = None, *,
        family: int = 4, action: str = "masquerade", oif: str | None = None,
        to: str | None = None, where: str = "nftables inet t post") -> tuple[Any, ...]:
    return (family, action, text, where, str(source), str(destination), oif, to)


@pytest.mark.parametrize("prio", [-100, 99, 100, None])
def test_a_nat_rule_at_or_before_k3snets_priority_is_a_block(prio: int | None) -> None:
    kernel = nat([saddr(POD), daddr(B), snat(addr="192.0.2.9")])
    assert blocks(kernel, prio) == {
        one(f"ip saddr {POD} ip daddr {B} snat to 192.0.2.9", POD, B, action="snat",
            to="192.0.2.9")}


@pytest.mark.parametrize("prio", [101, 110, 300])
def test_a_nat_rule_after_k3snets_priority_is_no_block(prio: int) -> None:
    assert blocks(nat([saddr(POD), daddr(B), snat(addr="192.0.2.9")]), prio) == set()


@pytest.mark.parametrize(("rules", "chains", "expected"), [
    # inet without an address: both families may be translated
    ([[MASQ]], {}, {one("masquerade"), one("masquerade", family=6)}),
    # an out interface narrows; a wildcard k3snet cannot hold reads as any
    ([[saddr(POD), meta("oifname", "eth0"), MASQ]], {},
     {one(f"ip saddr {POD} oifname eth0 masquerade", POD, oif="eth0")}),
    ([[saddr(POD), meta("oifname", "eth*"), MASQ]], {},
     {one(f"ip saddr {POD} oifname eth* masquerade", POD)}),
    # negations and unknown matches count as any: a doubt is a conflict
    ([[saddr(POD), daddr("224.0.0.0/4", neg=True), MASQ]], {},
     {one(f"ip saddr {POD} ip daddr != 224.0.0.0/4 masquerade", POD)}),
    ([[saddr(POD), meta("l4proto", "tcp"), MASQ]], {},
     {one(f"ip saddr {POD} (and 1 more match) masquerade", POD)}),
    # an snat k3snet cannot read the address of is never the same as k3snet's
    ([[saddr(POD), snat(addr="192.0.2.9", port=80)]], {},
     {one(f"ip saddr {POD} snat (to an address or range k3snet does not model)", POD,
          action="snat")}),
    ([[saddr(POD), snat(addr={"range": ["192.0.2.1", "192.0.2.9"]})]], {},
     {one(f"ip saddr {POD} snat (to an address or range k3snet does not model)", POD,
          action="snat")}),
    # rules of a chain jumped to (placed at the chain it is in)
    ([[jump("sub")]], {"sub": [[saddr(POD), MASQ]]},
     {one(f"ip saddr {POD} masquerade", POD, where="nftables inet t sub")}),
    # rules of a chain a conditional jump or goto leads to, as testing the jump's matches
    ([[saddr(POD), jump("q")]], {"q": [[snat(addr="192.0.2.9")]]},
     {one(f"ip saddr {POD} snat to 192.0.2.9", POD, action="snat", to="192.0.2.9",
          where="nftables inet t q")}),
    ([[saddr("fd42::/64"), {"goto": {"target": "q"}}]], {"q": [[MASQ]]},
     {one("ip6 saddr fd42::/64 masquerade", "fd42::/64", family=6,
          where="nftables inet t q")}),
    ([[saddr(POD), jump("a")]], {"a": [[daddr(B), jump("b")]], "b": [[MASQ]]},
     {one(f"ip saddr {POD} ip daddr {B} masquerade", POD, B, where="nftables inet t b")}),
    # a jump cycle (the kernel refuses one; a recorded listing may hold it): walked once
    ([[saddr(POD), jump("a")]], {"a": [[daddr(B), jump("b")]], "b": [[jump("a")], [MASQ]]},
     {one(f"ip saddr {POD} ip daddr {B} masquerade", POD, B, where="nftables inet t b")}),
    # a conditional jump no packet of the rule it leads to passes
    ([[saddr("10.43.0.0/16"), jump("q")]], {"q": [[saddr(POD), MASQ]]}, set()),
    ([[saddr("10.0.0.0/8", neg=True), jump("q")]], {"q": [[saddr(POD), MASQ]]}, set()),
    ([[meta("oifname", "eth1", "!="), jump("q")]], {"q": [[meta("oifname", "eth1"), MASQ]]},
     set()),
    ([[meta("oifname", "eth0"), jump("q")]], {"q": [[meta("oifname", "eth1"), MASQ]]}, set()),
    # ... but a wildcard may pass with a name
    ([[meta("oifname", "eth*"), jump("q")]], {"q": [[meta("oifname", "eth1"), MASQ]]},
     {one("oifname eth* oifname eth1 masquerade", where="nftables inet t q"),
      one("oifname eth* oifname eth1 masquerade", family=6, where="nftables inet t q")}),
    # what earlier rules take away is not subtracted (a doubt) ...
    ([[daddr(B), ACCEPT], [saddr(POD), MASQ]], {}, {one(f"ip saddr {POD} masquerade", POD)}),
    ([[daddr(B), RETURN], [saddr(POD), MASQ]], {}, {one(f"ip saddr {POD} masquerade", POD)}),
    # ... but an unconditional exit ends the chain
    ([[RETURN], [saddr(POD), MASQ]], {}, set()),
    ([[ACCEPT], [saddr(POD), MASQ]], {}, set()),
    # kube-proxy's: unmarked packets return, the masquerade sees marked ones only
    ([[jump("masquerading")]],
     {"masquerading": [UNMARKED_RETURN, [{"mangle": {"key": {"meta": {"key": "mark"}},
                                                     "value": 16384}}], [MASQ]]}, set()),
    # a rule testing for a set mark is another program's traffic
    ([[MARKED, MASQ]], {}, set()),
])
def test_the_reader_takes_the_nat_rules_a_connection_may_meet_first(
    rules: list[list[Any]], chains: dict[str, Any], expected: set[tuple[Any, ...]]
) -> None:
    assert blocks(nat(*rules, **chains), 100) == expected


def test_the_walk_through_conditional_jumps_is_bounded() -> None:
    # 40 conditional jumps in each of 9 chains: 40**8 paths, were each walked.
    chains: dict[str, Any] = {f"c{i}": [[saddr(POD), jump(f"c{i + 1}")]] * 40 for i in range(1, 8)}
    kernel = nat(*[[saddr(POD), jump("c1")]] * 40, c8=[[saddr(POD), MASQ]], **chains)
    kernel.nat_prio = 100
    reader = ForeignReader(kernel, frozenset())
    reader.read()
    assert reader.walked == 4096
    assert reader.unread == ["the walk of other tables' chains stopped after 4096 rules "
                             "(at inet t c7)"]


def test_an_ip6_table_makes_ipv6_blocks() -> None:
    assert blocks(nat([saddr("fd42::/64"), MASQ], family="ip6"), 100) == {
        one("ip6 saddr fd42::/64 masquerade", "fd42::/64", family=6,
            where="nftables ip6 t post")}


def test_a_nat_rule_testing_for_unmarked_packets_is_a_block() -> None:
    # k3snet's pod traffic carries no mark: such a rule may translate it.
    unmarked = UNMARKED_RETURN[0]
    assert blocks(nat([unmarked, saddr(POD), MASQ]), 100) == {
        one(f"ip saddr {POD} (and 1 more match) masquerade", POD)}


def test_the_blocks_of_a_chain_take_nothing_from_the_rules_before_them_in_it() -> None:
    # In one chain the first rule met decides: the masquerade after the SNAT never
    # translates what the SNAT takes, though its block (any destination) decides it
    # when it comes from another base chain (the test below).
    kernel = nat([saddr(POD), daddr(B), snat(addr="192.0.2.9")], [saddr(POD), MASQ])
    kernel.nat_prio = 100
    found = ForeignReader(kernel, frozenset()).read()
    assert {o for o in found if isinstance(o, MasqueradeRule | SnatRule)} == {
        SnatRule(POD, destination=B, to_address="192.0.2.9"), MasqueradeRule(POD, exclude=[B])}
    assert {(b.action, str(b.destination)) for b in found if isinstance(b, NatBlock)} == {
        ("snat", B), ("masquerade", "None")}


def test_two_base_chains_of_one_table_may_each_translate_first() -> None:
    chains: Chains = {
        ("ip", "t", "early"): ("postrouting", "accept",
                               [[saddr(POD), daddr(B), snat(addr="192.0.2.9")]]),
        ("ip", "t", "late"): ("postrouting", "accept", [[saddr(POD), MASQ]]),
    }
    kernel = Kernel(chains)
    kernel.nat_prio = 100
    found = ForeignReader(kernel, frozenset()).read()
    assert {o for o in found if isinstance(o, MasqueradeRule | SnatRule)} == {
        MasqueradeRule(POD, exclude=[B])}


def test_an_iptables_nft_snat_is_a_block_to_an_address_k3snet_does_not_model() -> None:
    xt_snat = {"xt": {"type": "target", "name": "SNAT"}}
    assert blocks(nat([saddr(POD), xt_snat], family="ip"), 100) == {
        one(f"ip saddr {POD} snat (to an address or range k3snet does not model)", POD,
            action="snat", where="nftables ip t post")}


# -- a lab namespace -------------------------------------------------------------------

EARLY = """\
table ip early {
\tchain post {
\t\ttype nat hook postrouting priority srcnat - 10; policy accept;
\t\tip saddr 10.42.0.0/16 ip daddr 192.168.2.0/24 snat to 192.168.1.99
\t}
}
"""
WANTED = MasqueradeRule(POD, destination=B)


@pytest.fixture
def ns(require_root: None) -> Iterator[str]:
    if shutil.which("nft") is None:
        pytest.skip("nft is not installed")
    pytest.importorskip("nftables")
    with temporary_netns("natblk") as name:
        yield name


@pytest.mark.kernel
def test_an_earlier_foreign_snat_is_a_conflict_and_stays_as_it_was(ns: str) -> None:
    from k3snet.backends.nftables import NftablesBackend  # noqa: PLC0415 - needs nftables

    run_in(ns, ["nft", "-f", "-"], input_text=EARLY)
    before = run_in(ns, ["nft", "-j", "list", "table", "ip", "early"]).stdout
    with NftablesBackend(ns) as backend:
        observed = backend.observe()
        p = plan(observed, State(owned=[WANTED]))
        assert p.changes == ()
        [note] = p.conflicts
        assert "snat to 192.168.1.99 by nftables ip early post" in note.foreign.describe()
        assert "the first NAT rule met decides" in p.render()
        # The same translation wanted: met, no conflict.
        same = SnatRule(POD, destination=B, to_address="192.168.1.99")
        assert [n.status for n in plan(observed, State(owned=[same])).notes] == ["met"]
        # Another flow: added, into k3snet's own table only.
        other = MasqueradeRule(POD, destination="198.51.100.0/24")
        backend.apply(plan(observed, State(owned=[WANTED, other])))
        assert backend.observe().owned == {other}
    assert run_in(ns, ["nft", "-j", "list", "table", "ip", "early"]).stdout == before
    ours = json.loads(run_in(ns, ["nft", "-j", "list", "table", "inet", "k3snet"]).stdout)
    texts = [json.dumps(i["rule"]["expr"]) for i in ours["nftables"] if "rule" in i]
    assert any("198.51.100.0" in t for t in texts)
    assert not any("192.168.2.0" in t for t in texts)


BEHIND_JUMPS = """\
table inet fw {
\tchain q {
\t\tsnat ip to 192.168.1.99
\t}
\tchain q6 {
\t\tmasquerade
\t}
\tchain post {
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\tip saddr 10.42.0.0/16 jump q
\t\tip6 saddr fd42::/64 goto q6
\t}
}
"""


@pytest.mark.kernel
def test_a_foreign_nat_behind_a_conditional_jump_is_a_conflict(ns: str) -> None:
    from k3snet.backends.nftables import NftablesBackend  # noqa: PLC0415 - needs nftables

    run_in(ns, ["nft", "-f", "-"], input_text=BEHIND_JUMPS)
    before = run_in(ns, ["nft", "-j", "list", "table", "inet", "fw"]).stdout
    wanted6 = MasqueradeRule("fd42::/64", destination="fd00:b::/64")
    with NftablesBackend(ns) as backend:
        observed = backend.observe()
        p = plan(observed, State(owned=[WANTED]))
        [note] = p.conflicts
        assert note.foreign.describe() == (
            "snat to 192.168.1.99 by nftables inet fw q: "
            "ip saddr 10.42.0.0/16 snat to 192.168.1.99")
        # IPv6, through a goto: a masquerade is what is wanted there, so it is met.
        assert [n.status for n in plan(observed, State(owned=[wanted6])).notes] == ["met"]
        snat6 = SnatRule("fd42::/64", destination="fd00:b::/64", to_address="fd00::9")
        [note6] = plan(observed, State(owned=[snat6])).conflicts
        assert note6.foreign.describe() == (
            "masquerade by nftables inet fw q6: ip6 saddr fd42::/64 masquerade")
    # Read only: the foreign table is as it was, and k3snet wrote nothing.
    assert run_in(ns, ["nft", "-j", "list", "table", "inet", "fw"]).stdout == before
    assert "k3snet" not in run_in(ns, ["nft", "list", "tables"]).stdout


def test_what_another_chain_may_translate_first_is_not_met_by_a_later_one() -> None:
    chains: Chains = {
        ("ip", "early", "post"): ("postrouting", "accept",
                                  [[saddr(POD), daddr(B), snat(addr="192.0.2.9")]]),
        ("ip", "late", "post"): ("postrouting", "accept", [[saddr(POD), MASQ]]),
    }
    kernel = Kernel(chains)
    kernel.nat_prio = 100  # both may run first: each block spares the other's rule
    found = ForeignReader(kernel, frozenset()).read()
    met = {o for o in found if isinstance(o, MasqueradeRule | SnatRule)}
    # (the SNAT is not met at all: the masquerade of every destination may come first)
    assert met == {MasqueradeRule(POD, exclude=[B])}
    # A wanted masquerade to B is not met (the SNAT may come first): a conflict.
    p = plan(State(foreign=found), State(owned=[MasqueradeRule(POD, destination=B)]))
    assert [n.status for n in p.notes] == ["conflict"]
    # To another destination, the later masquerade does the job.
    other = MasqueradeRule(POD, destination="198.51.100.0/24")
    assert [n.status for n in plan(State(foreign=found), State(owned=[other])).notes] == ["met"]
