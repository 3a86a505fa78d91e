"""An interface name ending in ``+`` is a prefix wildcard in every backend.

``eth+`` means every interface whose name starts with ``eth`` to iptables (``-o eth+``),
Calico and Cilium, and to k3snet's model (:func:`k3snet.model._base.interface_may_be`).
The nftables backend wrote it as ``oifname "eth+"``, which nft matches as one literal
name: a spec masquerading through ``eth+`` masqueraded nothing with nftables. It is
nft's wildcard ``"eth*"`` now, read back as ``eth+``; checked in the kernel's listing.
"""

from __future__ import annotations

import json
import shutil

import pytest

from k3snet.backends.nftables import NftablesBackend, text
from k3snet.lab.netns import run_in
from k3snet.model import ForwardRule, MasqueradeRule, NetObject, SnatRule, State
from k3snet.model._base import interfaces_may_meet
from k3snet.planner import plan
from k3snet.render.nftables import (
    chain_order_key,
    model_ifname,
    nft_ifname,
    nft_rules,
    render_nftables_conf,
    rule_tag,
)
from k3snet.render.nftables_batch import Syntax

pytestmark = pytest.mark.kernel

WILD: list[NetObject] = [
    MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24", out_interface="veth+"),
    SnatRule("fd42::/56", destination="fd01:2::/64", out_interface="eth+",
             to_address="fd00::5"),
    ForwardRule("10.42.0.0/16", "192.168.2.0/24", in_interface="cni+", out_interface="eth+"),
    MasqueradeRule("10.42.0.0/16", destination="192.168.3.0/24", out_interface="eth0"),
]


def _interface_matches(ns: str) -> set[tuple[str, str]]:
    """(key, name) of every iifname/oifname match in k3snet's table, as nft lists it."""
    listing = json.loads(run_in(ns, ["nft", "-j", "list", "table", "inet", "k3snet"]).stdout)
    found = set()
    for item in listing["nftables"]:
        for expr in item.get("rule", {}).get("expr", []):
            match = expr.get("match", {})
            key = match.get("left", {}).get("meta", {}).get("key")
            if key in ("iifname", "oifname"):
                found.add((key, match["right"]))
    return found


def test_the_names_map_both_ways() -> None:
    for name in ("eth+", "eth0", "a+", "eth++", "cni0.100"):
        assert model_ifname(nft_ifname(name)) == name
    assert model_ifname("eth\\*") == "eth\\*"  # nft's literal star: no k3snet name


@pytest.mark.parametrize("syntax", ["json", "nft"])
def test_a_trailing_plus_is_nft_s_wildcard_and_reads_back(ns: str, syntax: Syntax) -> None:
    backend = NftablesBackend(ns, syntax=syntax)
    try:
        backend.apply(plan(backend.observe(), State(owned=WILD)))
        assert _interface_matches(ns) == {
            ("oifname", "veth*"), ("oifname", "eth*"), ("iifname", "cni*"),
            ("iifname", "eth*"), ("oifname", "cni*"), ("oifname", "eth0")}
        assert plan(backend.observe(), State(owned=WILD)).empty
    finally:
        backend.close()
    fresh = NftablesBackend(ns, syntax=syntax)  # a read of the table, not a cache
    try:
        assert set(fresh.observe().owned) == set(WILD)
    finally:
        fresh.close()


def test_the_text_reader_reads_the_wildcard_back() -> None:
    for obj in WILD:
        body = nft_rules(obj)[0].body
        read = text._forward(body, False) if isinstance(obj, ForwardRule) else text._nat(body)
        assert read == obj


def test_the_boot_file_writes_the_wildcard(ns: str) -> None:
    run_in(ns, ["nft", "-f", "-"], input_text=render_nftables_conf(State(owned=WILD)))
    assert ("oifname", "veth*") in _interface_matches(ns)
    backend = NftablesBackend(ns)
    try:
        assert set(backend.observe().owned) == set(WILD)
    finally:
        backend.close()


def test_a_literal_rule_an_earlier_version_wrote_is_repaired_as_drift(ns: str) -> None:
    """k3snet before this change wrote ``oifname "veth+"`` (a literal name) under the tag
    of that text: read now, its tag is not its content's, and one apply rewrites it."""
    wanted, other = WILD[0], WILD[3]
    body = nft_rules(wanted)[0].body.replace('"veth*"', '"veth+"')
    backend = NftablesBackend(ns)
    try:
        backend.apply(plan(backend.observe(), State(owned=[other])))  # k3snet's table
        run_in(ns, ["nft", "add", "rule", "inet", "k3snet", "postrouting", *body.split(),
                    "comment", f'"{rule_tag(body)}"'])
        assert ("oifname", "veth+") in _interface_matches(ns)
    finally:
        backend.close()
    backend = NftablesBackend(ns)
    try:
        repair = plan(backend.observe(), State(owned=[other, wanted]))
        assert [c.action for c in repair.changes] == ["delete"]  # the drift: repaired
        backend.apply(repair)
        assert _interface_matches(ns) == {("oifname", "veth*"), ("oifname", "eth0")}
        assert plan(backend.observe(), State(owned=[other, wanted])).empty
    finally:
        backend.close()


# Overlapping NAT rules with the same prefixes: NAT is first match, so the rule whose
# interface match holds fewer interfaces must come first, or it never translates.
ONE_NAME = SnatRule("10.42.0.0/16", out_interface="eth0", to_address="192.168.1.5")
NARROW_WILD = MasqueradeRule("10.42.0.0/16", out_interface="eth1+")
WIDE_WILD = MasqueradeRule("10.42.0.0/16", out_interface="eth+")
ANY = MasqueradeRule("10.42.0.0/16")


def _postrouting_tags(ns: str, family: str = "inet") -> list[str]:
    """The tags of k3snet's postrouting rules, in the kernel's order."""
    listing = json.loads(run_in(ns, ["nft", "-j", "list", "table", family, "k3snet"]).stdout)
    return [item["rule"]["comment"] for item in listing["nftables"]
            if item.get("rule", {}).get("chain") == "postrouting"]


def test_a_name_sorts_before_a_wildcard_holding_it_and_a_longer_wildcard_first() -> None:
    ordered = sorted([ANY, WIDE_WILD, ONE_NAME, NARROW_WILD], key=chain_order_key)
    assert ordered == [ONE_NAME, NARROW_WILD, WIDE_WILD, ANY]


@pytest.mark.parametrize("syntax", ["json", "nft"])
def test_a_rule_through_one_interface_added_after_a_wildcard_holding_it_goes_first(
        ns: str, syntax: Syntax) -> None:
    """A SNAT through eth0 added after a masquerade through eth+ (which holds eth0) was
    appended after it and never translated a packet: the wildcard one is moved after it."""
    backend = NftablesBackend(ns, syntax=syntax)
    try:
        backend.apply(plan(backend.observe(), State(owned=[WIDE_WILD, ANY])))
        backend.apply(plan(backend.observe(), State(owned=[WIDE_WILD, ANY, ONE_NAME])))
        backend.apply(plan(backend.observe(),
                           State(owned=[WIDE_WILD, ANY, ONE_NAME, NARROW_WILD])))
        assert _postrouting_tags(ns) == [rule_tag(nft_rules(o)[0].body)
                                         for o in (ONE_NAME, NARROW_WILD, WIDE_WILD, ANY)]
        assert plan(backend.observe(refresh=True),
                    State(owned=[WIDE_WILD, ANY, ONE_NAME, NARROW_WILD])).empty
    finally:
        backend.close()


def test_the_boot_file_puts_a_name_before_the_wildcard_holding_it(ns: str) -> None:
    wanted = State(owned=[WIDE_WILD, ONE_NAME])
    run_in(ns, ["nft", "-f", "-"], input_text=render_nftables_conf(wanted))
    assert _postrouting_tags(ns) == [rule_tag(nft_rules(o)[0].body)
                                     for o in (ONE_NAME, WIDE_WILD)]


@pytest.mark.parametrize(("a", "b", "meet"), [
    ("eth+", "eth0", True), ("eth0", "eth+", True), ("eth+", "eth1+", True),
    ("eth1+", "eth+", True), ("eth+", "veth0", False), ("eth0", "eth1", False),
    ("eth0", "eth0", True), ("eth1+", "eth2+", False), (None, "eth0", True),
    ("eth+", None, True), ("eth0", "eth0+", True), ("eth00", "eth0+", True),
])
def test_two_interface_matches_meet_when_some_device_passes_both(
        a: str | None, b: str | None, meet: bool) -> None:
    assert interfaces_may_meet(a, b) is meet


def test_a_foreign_masquerade_behind_a_return_through_eth_plus_does_not_meet_eth0(
        ns: str) -> None:
    """iptables-nft writes ``-o eth+ -j RETURN`` as ``oifname "eth*" return``: it takes
    every packet leaving through eth0 before the masquerade below it. Compared with
    "eth0" as a string, that return spared nothing, the masquerade read as doing the
    wanted rule's job, and k3snet wrote nothing: eth0's pod traffic was not NATed."""
    if shutil.which("iptables-nft-restore") is None:
        pytest.skip("iptables-nft-restore is not installed")
    run_in(ns, ["iptables-nft-restore"], input_text="\n".join([
        "*nat", ":POSTROUTING ACCEPT [0:0]",
        "-A POSTROUTING -s 10.42.0.0/16 -o eth+ -j RETURN",
        "-A POSTROUTING -s 10.42.0.0/16 -o eth0 -j MASQUERADE", "COMMIT", ""]))
    listed = run_in(ns, ["nft", "list", "chain", "ip", "nat", "POSTROUTING"]).stdout
    assert 'oifname "eth*"' in listed  # the kernel's own view of the return
    wanted = MasqueradeRule("10.42.0.0/16", out_interface="eth0")
    backend = NftablesBackend(ns)
    try:
        observed = backend.observe()
        assert MasqueradeRule("10.42.0.0/16", out_interface="eth0") not in observed.foreign
        change = plan(observed, State(owned=[wanted]))
        assert [c.after for c in change.changes] == [wanted]
        backend.apply(change)
        assert _postrouting_tags(ns) == [rule_tag(nft_rules(wanted)[0].body)]
    finally:
        backend.close()


def test_a_foreign_snat_through_eth0_is_a_conflict_of_a_masquerade_through_eth_plus(
        ns: str) -> None:
    """iptables-nft's nat chain runs at srcnat, as k3snet's: its SNAT of what leaves through
    eth0 may translate that part of a wanted masquerade through eth+ first. Compared with
    "eth+" as a name, the block decided nothing and the plan said no conflict."""
    if shutil.which("iptables-nft-restore") is None:
        pytest.skip("iptables-nft-restore is not installed")
    run_in(ns, ["iptables-nft-restore"], input_text="\n".join([
        "*nat", ":POSTROUTING ACCEPT [0:0]",
        "-A POSTROUTING -s 10.42.0.0/16 -o eth0 -j SNAT --to-source 192.0.2.9",
        "COMMIT", ""]))
    assert 'oifname "eth0"' in run_in(ns, ["nft", "list", "chain", "ip", "nat",
                                            "POSTROUTING"]).stdout
    wanted = MasqueradeRule("10.42.0.0/16", out_interface="eth+")
    with NftablesBackend(ns) as backend:
        notes = plan(backend.observe(), State(owned=[wanted])).notes
    assert [(n.status, n.wanted) for n in notes] == [("conflict", wanted)]


@pytest.mark.parametrize("syntax", ["json", "nft"])
def test_a_wildcard_rule_an_earlier_version_put_before_a_name_it_holds_moves_after_it(
        ns: str, syntax: Syntax) -> None:
    """k3snet before 75c9e31 appended a SNAT through eth0 after the masquerades through
    eth+ and any interface (NAT is first match: the SNAT translated nothing), and nothing
    reordered them while the spec stayed. Read now, both are drift once; apply re-adds
    them after it, and the next plan is empty."""
    wanted = State(owned=[WIDE_WILD, ANY, ONE_NAME])
    backend = NftablesBackend(ns, syntax=syntax)
    try:
        backend.apply(plan(backend.observe(), State(owned=[WIDE_WILD, ANY])))
    finally:
        backend.close()
    body = nft_rules(ONE_NAME)[0].body
    run_in(ns, ["nft", "-f", "-"], input_text=(
        f'add rule inet k3snet postrouting {body} comment "{rule_tag(body)}"\n'))
    old = [rule_tag(nft_rules(o)[0].body) for o in (WIDE_WILD, ANY, ONE_NAME)]
    assert _postrouting_tags(ns) == old
    backend = NftablesBackend(ns, syntax=syntax)
    try:
        repair = plan(backend.observe(), wanted)
        assert [c.action for c in repair.changes] == ["delete", "delete"]  # the two drifts
        backend.apply(repair)
        assert _postrouting_tags(ns) == [old[2], old[0], old[1]]
        assert plan(backend.observe(refresh=True), wanted).empty
    finally:
        backend.close()
    backend = NftablesBackend(ns, syntax=syntax)  # a fresh read (the text reader) agrees
    try:
        assert plan(backend.observe(), wanted).empty
    finally:
        backend.close()


def test_a_wildcard_rule_before_two_names_it_holds_is_re_added_once(ns: str) -> None:
    """``eth+`` before the rules through eth0 and eth1 is two findings of one rule: the
    repair adds it again once, not twice."""
    other = SnatRule("10.42.0.0/16", out_interface="eth1", to_address="192.168.1.6")
    wanted = State(owned=[WIDE_WILD, ONE_NAME, other])
    backend = NftablesBackend(ns)
    try:
        backend.apply(plan(backend.observe(), State(owned=[WIDE_WILD])))
    finally:
        backend.close()
    lines = "".join(f'add rule inet k3snet postrouting {b} comment "{rule_tag(b)}"\n'
                    for b in (nft_rules(o)[0].body for o in (ONE_NAME, other)))
    run_in(ns, ["nft", "-f", "-"], input_text=lines)
    backend = NftablesBackend(ns)
    try:
        backend.apply(plan(backend.observe(), wanted))
        assert _postrouting_tags(ns) == [rule_tag(nft_rules(o)[0].body)
                                         for o in (ONE_NAME, other, WIDE_WILD)]
        assert plan(backend.observe(refresh=True), wanted).empty
    finally:
        backend.close()
