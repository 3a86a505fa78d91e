"""A NAT rule whose exclusions would not fit in one kernel rule, written with one set.

Each exclusion of a NAT rule is a ``daddr !=`` match of two or three expressions, and
the kernel takes at most 128 in one rule (``NFT_RULE_MAXEXPRS``): a rule with more than
about forty exclusions (ip-masq-agent's ``nonMasqueradeCIDRs`` grow so) was refused
before sending. Such a rule, and only such a rule, is now written with one anonymous
interval set (``daddr != { a, b-c }``: a load and one lookup), as nft lists it back
(adjacent prefixes merged into a range, hosts bare); every rule that fits keeps its
shape, and the tag is the one of the per-match text either way.
"""

from __future__ import annotations

import ipaddress
import json
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from k3snet.backends.nftables import NftablesBackend
from k3snet.lab.netns import run_in, temporary_netns
from k3snet.model import MasqueradeRule, SnatRule, State
from k3snet.model.cidr import aggregate
from k3snet.planner import plan
from k3snet.render.nftables import (
    NFT_RULE_EXPRESSIONS,
    excluded_elements,
    exclusion_set,
    nft_expressions,
    nft_rules,
    nft_rules_json,
    render_nftables_conf,
    rule_tag,
)
from k3snet.render.nftables_batch import Syntax
from k3snet.testing import strategies
from tests.examples import examples
from tests.nftables.test_text_listing import both_reads


def _excluded(count: int) -> list[str]:
    """``count`` /17 exclusions in 10.0.0.0/8 that aggregate to nothing (one a /16)."""
    return [str(ipaddress.ip_network((0x0A000000 + i * (1 << 16), 17))) for i in range(count)]


# 200 exclusions, two of them adjacent (nft lists them as one range), and a host.
MANY = MasqueradeRule("10.200.0.0/16", exclude=[*_excluded(200), "172.16.0.0/24",
                                                 "172.16.1.0/25", "192.0.2.7/32"])
MANY6 = SnatRule("fd42::/48", to_address="fd01::5", random_fully=True, out_interface="eth0",
                 exclude=[f"fd00:{i:x}::/33" for i in range(0, 120, 2)]
                 + ["::ffff:0:0/96", "fd01::1/128", "fd02::/64", "fd02:0:0:1::/65"])


def _masquerade(count: int) -> MasqueradeRule:
    # /24 exclusions (a load and a compare each), far from the kernel's room for one rule
    return MasqueradeRule("192.168.0.0/17", exclude=[
        str(ipaddress.ip_network((0x0A000000 + i * (1 << 9), 24))) for i in range(count)])


def test_only_a_rule_whose_matches_would_not_fit_is_written_with_a_set() -> None:
    # inet: meta nfproto (2), saddr /17 (3), 2 per /24 exclusion, masquerade (1): 61 fit.
    fits, over = _masquerade(61), _masquerade(62)
    assert not exclusion_set(fits)
    assert "{" not in nft_rules(fits)[0].body
    assert nft_expressions(fits) == NFT_RULE_EXPRESSIONS
    assert exclusion_set(over)
    assert "ip daddr != { 10.0.0.0/24, 10.0.2.0/24," in nft_rules(over)[0].body
    assert nft_expressions(over) == 2 + 3 + 2 + 1
    # An ip table's rule has no meta nfproto test (3 + 2 * 62 + 1): its own count.
    assert not exclusion_set(over, inet=False)
    assert "{" not in nft_rules(over, inet=False)[0].body
    assert exclusion_set(_masquerade(63), inet=False)


def test_the_tag_of_a_rule_written_with_a_set_is_the_one_of_its_per_match_text() -> None:
    body = nft_rules(MANY)[0].body
    per_match = body.split(" ip daddr != {")[0] + "".join(
        f" ip daddr != {e}" for e in map(str, MANY.exclude)) + " masquerade"
    assert nft_rules(MANY)[0].comment == rule_tag(per_match)
    assert nft_rules(MANY, inet=False)[0].comment == rule_tag(per_match)


def test_the_set_elements_are_spelled_as_nft_lists_them() -> None:
    assert excluded_elements(MANY.exclude)[-2:] == ["172.16.0.0-172.16.1.127", "192.0.2.7"]
    assert excluded_elements(MANY6.exclude)[0] == "::ffff:0.0.0.0/96"
    assert excluded_elements(MANY6.exclude)[-2:] == [
        "fd01::1", "fd02::-fd02::1:7fff:ffff:ffff:ffff"]


@given(family=st.sampled_from((4, 6)), data=st.data())
@settings(max_examples=examples(60))
def test_the_set_elements_cover_exactly_the_aggregated_exclusions_property(
        family: int, data: st.DataObject) -> None:
    nets = data.draw(st.lists(strategies.networks(family, min_prefix=1), min_size=1,
                              max_size=12))
    exclude = aggregate(nets)
    covered: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for element in excluded_elements(exclude):
        first, dash, last = element.partition("-")
        if dash:
            covered += ipaddress.summarize_address_range(ipaddress.ip_address(first),
                                                         ipaddress.ip_address(last))
        else:
            covered.append(ipaddress.ip_network(first))
    assert tuple(covered) == exclude


def _ruleset(ns: str) -> list[dict[str, Any]]:
    listed = json.loads(run_in(ns, ["nft", "-j", "list", "ruleset"]).stdout)["nftables"]
    return [item for item in listed if "metainfo" not in item]


@pytest.mark.kernel
@pytest.mark.parametrize("syntax", ["nft", "json"])
def test_a_rule_with_200_exclusions_is_applied_as_one_set_and_read_back_as_met(
        ns: str, syntax: Syntax, parsed: list[str]) -> None:
    fits = _masquerade(61)
    desired = State(owned=[MANY, MANY6, fits])
    with NftablesBackend(ns, syntax=syntax, keep_read=False) as backend:
        assert backend.check(plan(backend.observe(), desired)) == ()
        backend.apply(plan(backend.observe(), desired))
        rules = {r["rule"]["comment"]: r["rule"]["expr"] for r in _ruleset(ns) if "rule" in r}
        many = rules[nft_rules(MANY)[0].comment]
        (excluded,) = [m["match"] for m in many if "match" in m and m["match"]["op"] == "!="]
        assert len(excluded["right"]["set"]) == 202  # the two adjacent ones: one range
        assert {"range": ["172.16.0.0", "172.16.1.127"]} in excluded["right"]["set"]
        assert json.loads(nft_rules_json(MANY)[0])[1] == {"match": excluded}
        many6 = rules[nft_rules(MANY6)[0].comment]
        assert any("set" in str(m) for m in many6)
        # The rule that fits keeps its one match per exclusion.
        assert sum(1 for m in rules[nft_rules(fits)[0].comment]
                   if m.get("match", {}).get("op") == "!=") == 61
        assert set(backend.observe(refresh=True).owned) == {MANY, MANY6, fits}
        assert not plan(backend.observe(refresh=True), desired).changes
        if syntax == "nft":  # (a JSON batch writes no table mark: a drift of its own)
            # The text listing reads the set back as the JSON listing does, without it.
            parsed.clear()
            via_text, via_json, listed = both_reads(backend, "inet")
            assert via_text == via_json
            assert all(listed)
            assert len({line for line in parsed if " != { " in line}) == 2
    with NftablesBackend(ns, syntax=syntax) as backend:  # the text reader, then kept reads
        assert not plan(backend.observe(), desired).changes
        assert not plan(backend.observe(refresh=True), desired).changes


def test_the_boot_file_writes_a_rule_with_many_exclusions_with_a_set() -> None:
    conf = render_nftables_conf(State(owned=[MANY]))
    assert "ip daddr != { 10.0.0.0/17," in conf
    assert "172.16.0.0-172.16.1.127, 192.0.2.7 } masquerade" in conf


_SEND = ("import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
         "s.bind(('10.200.0.1',0))\nfor d in sys.argv[1:]: s.sendto(b'x',(d,9))\n")


@pytest.mark.kernel
def test_a_packet_to_an_excluded_address_keeps_its_source_and_another_is_masqueraded(
        ns: str) -> None:
    with temporary_netns("peer") as peer:
        run_in(ns, ["ip", "link", "add", "pods0", "type", "veth", "peer", "name", "pods1"])
        run_in(ns, ["ip", "addr", "add", "10.200.0.1/16", "dev", "pods0"])
        run_in(ns, ["ip", "link", "set", "pods0", "up"])
        run_in(ns, ["ip", "link", "add", "a0", "type", "veth", "peer", "name", "b0",
                    "netns", peer])
        run_in(ns, ["ip", "addr", "add", "192.168.50.1/24", "dev", "a0"])
        run_in(ns, ["ip", "link", "set", "a0", "up"])
        run_in(peer, ["ip", "addr", "add", "192.168.50.2/24", "dev", "b0"])
        run_in(peer, ["ip", "link", "set", "b0", "up"])
        run_in(ns, ["ip", "route", "add", "default", "via", "192.168.50.2"])
        run_in(peer, ["nft", "-f", "-"], input_text=(
            "table ip seen {\n\tchain pre {\n\t\ttype filter hook prerouting priority 0;\n"
            "\t\tip saddr 10.200.0.1 ip daddr 10.5.0.9 counter\n"
            "\t\tip saddr 192.168.50.1 ip daddr 10.5.0.9 counter\n"
            "\t\tip saddr 10.200.0.1 ip daddr 198.51.100.9 counter\n"
            "\t\tip saddr 192.168.50.1 ip daddr 198.51.100.9 counter\n\t}\n}\n"))
        with NftablesBackend(ns, keep_read=False) as backend:
            backend.apply(plan(backend.observe(), State(owned=[MANY])))
        # 10.5.0.0/17 is excluded; 198.51.100.9 is not.
        run_in(ns, [sys.executable, "-c", _SEND, "10.5.0.9", "198.51.100.9"])
        listed = json.loads(run_in(peer, ["nft", "-j", "list", "table", "ip", "seen"]).stdout)
        counts = [next(e["counter"]["packets"] for e in item["rule"]["expr"] if "counter" in e)
                  for item in listed["nftables"] if "rule" in item]
        assert counts == [1, 0, 0, 1]


def _one_range(first: str, last: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return list(ipaddress.summarize_address_range(ipaddress.ip_address(first),
                                                  ipaddress.ip_address(last)))


# Exclusions that aggregate to 46 (IPv4) and 250 (IPv6) prefixes of one range: their set
# has one element, which nft writes, and lists, as a plain test of that range.
ONE_RANGE = MasqueradeRule("192.168.0.0/16", exclude=_one_range("10.0.0.1", "10.255.255.254"))
ONE_RANGE6 = SnatRule("fd42::/48", to_address="fd01::5",
                      exclude=_one_range("fd00::1", "fd00:ffff:ffff:ffff:ffff:ffff:ffff:fffe"))


def test_a_set_of_one_range_is_written_as_nft_lists_it_a_plain_range_test() -> None:
    assert exclusion_set(ONE_RANGE)
    assert exclusion_set(ONE_RANGE6)
    assert nft_rules(ONE_RANGE)[0].body == (
        "ip saddr 192.168.0.0/16 ip daddr != 10.0.0.1-10.255.255.254 masquerade")
    assert " ip6 daddr != fd00::1-fd00:ffff:ffff:ffff:ffff:ffff:ffff:fffe snat " in (
        nft_rules(ONE_RANGE6)[0].body)
    assert json.loads(nft_rules_json(ONE_RANGE)[0])[1]["match"]["right"] == {
        "range": ["10.0.0.1", "10.255.255.254"]}
    assert nft_expressions(ONE_RANGE) == 2 + 2 + 2 + 1


@pytest.mark.kernel
@pytest.mark.parametrize("syntax", ["nft", "json"])
def test_a_rule_whose_exclusions_make_one_range_is_read_back_as_met(
        ns: str, syntax: Syntax) -> None:
    desired = State(owned=[ONE_RANGE, ONE_RANGE6])
    with NftablesBackend(ns, syntax=syntax, keep_read=False) as backend:
        backend.apply(plan(backend.observe(), desired))
        # the kernel's own view: one range test, no set
        rules = {r["rule"]["comment"]: r["rule"]["expr"] for r in _ruleset(ns) if "rule" in r}
        excluded = [m["match"]["right"] for m in rules[nft_rules(ONE_RANGE)[0].comment]
                    if "match" in m and m["match"]["op"] == "!="]
        assert excluded == [{"range": ["10.0.0.1", "10.255.255.254"]}]
        assert set(backend.observe(refresh=True).owned) == {ONE_RANGE, ONE_RANGE6}
        assert not plan(backend.observe(refresh=True), desired).changes
        if syntax == "nft":  # the text listing takes the line as the JSON one does
            via_text, via_json, listed = both_reads(backend, "inet")
            assert via_text == via_json
            assert all(listed)
    with NftablesBackend(ns, syntax=syntax) as backend:  # the text reader, then kept reads
        assert not plan(backend.observe(), desired).changes
        assert not plan(backend.observe(refresh=True), desired).changes
