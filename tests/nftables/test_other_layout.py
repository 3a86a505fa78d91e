"""k3snet's table of the other layout (``family="split"`` beside ``"inet"``, or the other way).

Changing the nftables backend's ``family`` left the tables the other setting wrote:
``ip k3snet``/``ip6 k3snet`` beside a new ``inet k3snet``. They were read as another
program's: their masquerades "met" the wanted ones (k3snet wrote none), and a rule no
longer wanted kept translating, unmanaged, for good. Such a table, found by k3snet's
marker chain in the listing of the other tables, is drift now: the plan names it and
the apply deletes it. Checked in the kernel's own listing.
"""

from __future__ import annotations

import json

import pytest

from k3snet.backends.nftables import NftablesBackend
from k3snet.lab.netns import run_in
from k3snet.model import Drift, MasqueradeRule, State
from k3snet.planner import plan

pytestmark = pytest.mark.kernel

KEPT = MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24")
GONE = MasqueradeRule("10.42.0.0/16", destination="192.168.3.0/24")
KEPT6 = MasqueradeRule("fd42::/56", destination="fd01:2::/64")


def tables(ns: str) -> set[tuple[str, str]]:
    listing = json.loads(run_in(ns, ["nft", "-j", "list", "tables"]).stdout)["nftables"]
    return {(t["table"]["family"], t["table"]["name"]) for t in listing if "table" in t}


@pytest.mark.parametrize(("before", "after", "left"), [
    ("split", "inet", {("ip", "k3snet"), ("ip6", "k3snet")}),
    ("inet", "split", {("inet", "k3snet")}),
])
@pytest.mark.parametrize("syntax", ["json", "nft"])
def test_a_table_of_the_other_layout_is_drift_the_apply_deletes(
        ns: str, before: str, after: str, left: set[tuple[str, str]], syntax: str) -> None:
    with NftablesBackend(ns, family=before, syntax=syntax) as backend:  # type: ignore[arg-type]
        backend.apply(plan(backend.observe(), State(owned=[KEPT, GONE, KEPT6])))
    assert tables(ns) == left
    wanted = State(owned=[KEPT, KEPT6])  # GONE is no longer wanted
    with NftablesBackend(ns, family=after, syntax=syntax) as backend:  # type: ignore[arg-type]
        observed = backend.observe()
        assert GONE not in observed.foreign  # not read as another program's masquerade
        p = plan(observed, wanted)
        drift = [c.subject for c in p.changes if isinstance(c.subject, Drift)]
        assert sorted(d.where for d in drift) == sorted(f"{f} {t}" for f, t in left)
        assert all(c.action == "delete" for c in p.changes if c.subject in drift)
        assert {c.after for c in p.changes if c.action == "add"} == {KEPT, KEPT6}
        backend.apply(p)
        assert plan(backend.observe(), wanted).empty
    assert tables(ns) == ({("inet", "k3snet")} if after == "inet"
                          else {("ip", "k3snet"), ("ip6", "k3snet")})
    assert "192.168.3.0" not in run_in(ns, ["nft", "list", "ruleset"]).stdout


def test_a_plan_naming_the_other_layout_applies_from_a_new_process(ns: str) -> None:
    """``k3snet plan --out`` then ``k3snet apply FILE``: the apply's backend reads the
    other tables too, to find the drift the plan deletes."""
    with NftablesBackend(ns, family="split") as backend:
        backend.apply(plan(backend.observe(), State(owned=[GONE])))
    with NftablesBackend(ns) as backend:
        p = plan(backend.observe(), State(owned=[KEPT]))
    with NftablesBackend(ns) as backend:
        backend.apply(p)
    assert tables(ns) == {("inet", "k3snet")}


def test_another_programs_table_of_that_name_and_family_stays_foreign(ns: str) -> None:
    run_in(ns, ["nft", "-f", "-"], input_text=(
        "table ip k3snet {\n\tchain post {\n\t\ttype nat hook postrouting priority srcnat;\n"
        "\t\tip saddr 10.42.0.0/16 ip daddr 192.168.2.0/24 masquerade\n\t}\n}\n"))
    before = run_in(ns, ["nft", "list", "table", "ip", "k3snet"]).stdout
    with NftablesBackend(ns) as backend:
        observed = backend.observe()
        assert backend.drift == ()
        assert KEPT in observed.foreign
        backend.apply(plan(observed, State(owned=[KEPT, GONE])))
    assert run_in(ns, ["nft", "list", "table", "ip", "k3snet"]).stdout == before
