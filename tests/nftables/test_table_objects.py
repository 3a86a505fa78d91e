"""Sets, maps and named objects (counters, quotas ...) in k3snet's table are drift.

k3snet writes none: one found in its table was put there by hand or by another
program, and the table's rebuild (the repair of a chain k3snet does not write, of
a dormant table ...) deletes it with the table. So each is drift the plan names
("set s: not an object k3snet writes"), deleted by apply, never lost silently.
"""

from __future__ import annotations

import pytest

from k3snet.backends.nftables import NftablesBackend
from k3snet.backends.nftables.parse import read_own
from k3snet.lab.netns import run_in
from k3snet.model import Drift, ForwardRule, MasqueradeRule, State
from k3snet.planner import plan
from k3snet.render.nftables import TABLE_COMMENT

WANTED = State(owned=[MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24"),
                      MasqueradeRule("fd42::/64", destination="fd00:b::/64"),
                      ForwardRule("10.42.0.0/16", "192.168.2.0/24")])


def objects(table: str, v6: bool) -> str:
    addr = "ipv6_addr" if v6 else "ipv4_addr"
    element = "fd00::1" if v6 else "10.0.0.1"
    return (f"add set {table} k3snet s {{ type {addr}; elements = {{ {element} }}; }}\n"
            f"add map {table} k3snet m {{ type {addr} : verdict; }}\n"
            f"add counter {table} k3snet c\n"
            f"add quota {table} k3snet q {{ 100 mbytes; }}\n")


def found(table: str) -> list[str]:
    return [f"drift in nftables {table} k3snet: {kind} {name}: not an object k3snet writes "
            "(the table's rebuild deletes it)"
            for kind, name in (("counter", "c"), ("map", "m"), ("quota", "q"), ("set", "s"))]


class _Json:
    def list(self, kind: str, **ref: str) -> list[dict[str, object]] | None:
        where = {"family": "inet", "table": "k3snet"}
        return [{"table": {"family": "inet", "name": "k3snet", "handle": 1,
                           "comment": TABLE_COMMENT}},
                {"set": {**where, "name": "s", "type": "ipv4_addr", "handle": 4}},
                {"ct helper": {**where, "name": "ftp", "handle": 5}},
                {"chain": {**where, "name": "handle_marker", "handle": 3}}]


def test_each_object_of_the_json_listing_is_drift_the_rebuild_repairs() -> None:
    cache = read_own(_Json(), "k3snet", ("inet",), 1)
    named = {d.describe(): r for d, r in cache.drift.values() if "not an object" in d.describe()}
    assert sorted(named) == [
        "drift in nftables inet k3snet: ct helper ftp: not an object k3snet writes (the "
        "table's rebuild deletes it)",
        "drift in nftables inet k3snet: set s: not an object k3snet writes (the table's "
        "rebuild deletes it)"]
    assert all(r.rebuild for r in named.values())


@pytest.mark.kernel
@pytest.mark.parametrize(("family", "dormant"), [
    ("inet", False), ("split", False),
    ("inet", True),  # a flagged table is read chain by chain: its objects from its text
])
def test_sets_maps_and_named_objects_are_drift_that_apply_deletes(
        ns: str, family: str, dormant: bool) -> None:
    tables = ("inet",) if family == "inet" else ("ip", "ip6")
    with NftablesBackend(ns, family=family, observe_foreign=False) as backend:  # type: ignore[arg-type]
        backend.apply(plan(backend.observe(), WANTED))
        script = "".join(objects(t, t == "ip6") for t in tables)
        if dormant:
            script += "".join(f"add table {t} k3snet {{ flags dormant; }}\n" for t in tables)
        run_in(ns, ["nft", "-f", "-"], input_text=script)

        observed = backend.observe()
        drift = sorted(d.describe() for d in observed.owned if isinstance(d, Drift))
        assert [d for d in drift if "not an object" in d] == [
            line for t in tables for line in found(t)]
        assert observed.owned - {d for d in observed.owned if isinstance(d, Drift)} == (
            WANTED.owned)
        p = plan(observed, WANTED)
        assert "- drift in nftables " + tables[0] + " k3snet: set s: not an object" in p.render()
        backend.apply(p)
        assert backend.observe(refresh=True).owned == WANTED.owned
    for t in tables:  # the kernel's view: the objects are gone, k3snet's rules are there
        text = run_in(ns, ["nft", "list", "table", t, "k3snet"]).stdout
        for word in ("set s", "map m", "counter c", "quota q", "flags"):
            assert word not in text
        assert "masquerade" in text
