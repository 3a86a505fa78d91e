"""A foreign verdict naming its addresses in an anonymous set or a range is one per prefix.

``ip daddr { 192.168.2.0/24, 10.9.0.0/16 } drop`` and ``ip daddr 192.168.2.0-192.168.2.200
drop`` named no address k3snet models: read whole, the rule was a test k3snet did not
model, with no address, so no block at all, and ``k3snet plan`` said the pods' forward
rule was to be added (exit 2) while the kernel dropped their traffic; ``ip saddr {
10.42.0.0/16, 10.50.0.0/16 } accept`` took nothing, and a policy drop after it was
warned of as dropping the pods. A verdict map's elements were read one by one (``ip
daddr vmap { 192.168.2.0/24 : drop }``), the same drop in a set was not. An accept or a
drop ends the chain for a packet one element matches: one rule per prefix the set or
range names decides as the kernel does, and stays as precise as the set (firewalld's
reject of IPv6's special prefixes is no conflict of the pods' IPv6 traffic). Kernel
tests check the kernel's own view (``nft -j list ruleset``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from k3snet.cli import main
from k3snet.lab.netns import run_in
from k3snet.model import ForwardRule
from tests.nftables.test_foreign_blocks import (
    PODS_OUT,
    block,
    blocks,
    typed,
)
from tests.nftables.test_foreign_cases import ACCEPT, DROP, Expr, daddr, forward, saddr

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"
B = "192.168.2.0/24"
DADDR = daddr(B)["match"]["left"]
DADDR6 = daddr("fd01:2::/64")["match"]["left"]


def in_set(left: Expr, *elements: Any, op: str = "==") -> Expr:
    return {"match": {"op": op, "left": left, "right": {"set": list(elements)}}}


def prefix(net: str) -> Any:
    addr, _, length = net.partition("/")
    return {"prefix": {"addr": addr, "len": int(length)}}


def test_a_drop_of_a_set_holding_the_pods_destination_is_a_conflict_of_their_rule() -> None:
    kernel = forward(("accept", [[in_set(DADDR, prefix(B), prefix("10.9.0.0/16")), DROP]]))
    assert blocks(kernel) == {block(f"ip daddr {net} drop", destination=net)
                              for net in (B, "10.9.0.0/16")}
    assert any(b.decides(PODS_OUT) for b in typed(kernel))


def test_a_drop_of_a_range_is_a_block_of_the_prefixes_it_covers_exactly() -> None:
    kernel = forward(("accept", [[{"match": {"op": "==", "left": DADDR, "right": {
        "range": ["192.168.2.0", "192.168.2.200"]}}}, DROP]]))
    found = typed(kernel)
    assert {str(b.destination) for b in found} == {"192.168.2.0/25", "192.168.2.128/26",
                                                  "192.168.2.192/29", "192.168.2.200/32"}
    assert any(b.decides(PODS_OUT) for b in found)
    assert not any(b.decides(ForwardRule("10.42.0.0/16", "192.168.2.240/28")) for b in found)


def test_elements_with_comments_and_ranges_inside_a_set_are_read() -> None:
    kernel = forward(("accept", [[in_set(DADDR, {"elem": {"val": prefix(B), "comment": "db"}},
                                         {"range": ["10.0.0.1", "10.0.0.2"]}), DROP]]))
    assert {str(b.destination) for b in typed(kernel)} == {B, "10.0.0.1/32", "10.0.0.2/32"}


def test_firewalld_s_reject_of_special_ipv6_prefixes_is_no_conflict_of_the_pods() -> None:
    # The set counts as what it names, not as any destination: every firewalld node with
    # IPv6 pods would otherwise have the pods' IPv6 forward rule in conflict.
    special = ["::/96", "::ffff:0.0.0.0/96", "2002::/24", "2002:a00::/24", "2002:7f00::/24",
               "2002:a9fe::/32", "2002:ac10::/28", "2002:c0a8::/32", "2002:e000::/19"]
    kernel = forward(("accept", [[in_set(DADDR6, *map(prefix, special)), {"reject": None}]]))
    found = typed(kernel)
    assert len(found) == len(special)
    assert not any(b.decides(ForwardRule("fd42::/56", "fd01:2::/64")) for b in found)
    assert any(b.decides(ForwardRule("fd42::/56", "2002:a00::/32")) for b in found)


def test_two_sets_are_a_block_of_each_pair() -> None:
    kernel = forward(("accept", [[in_set(saddr("10.0.0.0/8")["match"]["left"],
                                         prefix("10.42.0.0/16"), prefix("10.43.0.0/16")),
                                  in_set(DADDR, prefix(B), prefix("10.9.0.0/16")), DROP]]))
    assert len(typed(kernel)) == 4


@pytest.mark.parametrize(("elements", "why"), [
    (["@blocked"], "a named set"),
    ([prefix(B), "not-an-address"], "an element that is not an address"),
    ([{"range": ["192.168.2.9", "192.168.2.1"]}], "a range upside down"),
    ([{"range": ["10.0.0.1", "fd00::1"]}], "a range of two families"),
    ([f"10.{i // 256}.{i % 256}.1" for i in range(257)], "more elements than are read"),
])
def test_a_set_k3snet_cannot_read_whole_stays_one_rule(elements: list[Any], why: str) -> None:
    # As before: a test k3snet does not model (no address, so no block of its own).
    kernel = forward(("accept", [[in_set(DADDR, *elements), DROP]]))
    assert typed(kernel) == [], why


def test_an_accept_of_a_set_holding_the_pods_takes_them_before_a_drop() -> None:
    # Read whole, the accept took nothing: the drop after it was a conflict of the pods'
    # forward rule while their packets never reached it.
    kernel = forward(("accept", [[in_set(saddr("10.42.0.0/16")["match"]["left"],
                                         prefix("10.42.0.0/16"), prefix("10.50.0.0/16")),
                                  ACCEPT], [daddr(B), DROP]]))
    (found,) = typed(kernel)
    assert found.accepted == (ForwardRule("10.42.0.0/16", "0.0.0.0/0"),
                              ForwardRule("10.50.0.0/16", "0.0.0.0/0"))
    assert not found.decides(ForwardRule("10.42.0.0/16", B))
    assert found.decides(ForwardRule("10.43.0.0/16", B))


def test_a_jump_for_a_set_stays_one_rule() -> None:
    # A jump comes back to the rule after it: only verdicts that end the chain are read
    # element by element.
    kernel = forward(("accept", [[in_set(DADDR, prefix(B), prefix("10.9.0.0/16")),
                                  {"jump": {"target": "sub"}}]]), sub=[[DROP]])
    assert typed(kernel) == []


# A policy drop whose chain accepts the pods through a set: no warning (it was one).
SET_ACCEPT = """
table inet filter {
    chain forward {
        type filter hook forward priority 0; policy drop;
        ct state { established, related } accept
        ip saddr { 10.42.0.0/16, 10.50.0.0/16 } accept
        ip6 saddr fd42:42::/56 accept
    }
}
"""
SET_DROP = """
table inet admin {
    chain forward {
        type filter hook forward priority 0; policy accept;
        ip daddr { 192.168.2.0/24, 10.9.0.0/16 } drop
    }
}
"""
RANGE_DROP = """
table ip admin {
    chain forward {
        type filter hook forward priority 0; policy accept;
        ip daddr 192.168.2.0-192.168.2.200 counter drop
    }
}
"""
FIREWALLD_SPECIAL_IPV6 = """
table inet firewalld {
    chain filter_FORWARD {
        type filter hook forward priority filter + 10; policy accept;
        ct state { established, related } accept
        ip6 daddr { ::/96, ::ffff:0.0.0.0/96, 2002::/24, 2002:a00::/24, 2002:7f00::/24,
                    2002:a9fe::/32, 2002:ac10::/28, 2002:c0a8::/32, 2002:e000::/19 } \
            reject with icmpv6 addr-unreachable
        ip saddr 10.42.0.0/16 accept
        ip6 saddr fd42:42::/56 accept
        reject with icmpx admin-prohibited
    }
}
"""


def _ruleset(ns: str) -> list[str]:
    found = json.loads(run_in(ns, ["nft", "-j", "list", "ruleset"]).stdout)["nftables"]
    return sorted(json.dumps(item, sort_keys=True) for item in found if "metainfo" not in item)


@pytest.mark.kernel
@pytest.mark.parametrize(("rules", "conflict"), [
    (SET_DROP, "drop by nftables inet admin forward: ip daddr 192.168.2.0/24 drop"),
    (RANGE_DROP, "drop by nftables ip admin forward: ip daddr 192.168.2.0/25 "),
    (FIREWALLD_SPECIAL_IPV6, None),
    (SET_ACCEPT, None),
], ids=["set", "range", "firewalld", "set accept"])
def test_the_plan_names_a_set_s_or_a_range_s_drop_of_the_pods_destination(
        ns: str, rules: str, conflict: str | None, capsys: pytest.CaptureFixture[str]) -> None:
    run_in(ns, ["nft", "-f", "-"], input_text=rules)
    before = _ruleset(ns)
    capsys.readouterr()
    code = main(["plan", "-f", str(SEED), "--backend", "nftables", "--netns", ns, "--no-facts"])
    out = capsys.readouterr().out
    assert _ruleset(ns) == before  # the foreign table untouched
    if conflict is None:
        assert code == 2, out
        assert not [line for line in out.splitlines() if line.startswith("! ")], out
        assert not [line for line in out.splitlines() if line.startswith("!! warning: nftables")]
        return
    assert code == 4, out
    assert "! forward accept 10.42.0.0/16 -> 192.168.2.0/24" in out
    assert conflict in out
