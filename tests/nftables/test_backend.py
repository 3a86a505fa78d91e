"""The nftables backend against the real kernel, in namespaces these tests create.

Every kernel test runs in a fresh ``k3snet-nft-*`` namespace, deleted afterwards
(also on failure). What is checked is the kernel's own view (``nft list`` /
``nft -j list`` in the namespace), not only what ``observe`` says. Foreign
state is seeded the way a K3s node has it: flannel and kube-proxy rules through
iptables-nft (tables ``ip nat`` and ``ip filter``), kube-proxy's nftables mode
(``table ip kube-proxy``) and an administrator's own ``inet edge`` table.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from k3snet.backends.nftables import MARKER_CHAIN, NftablesBackend
from k3snet.backends.nftables.kernel import BoundedLister, Libnftables
from k3snet.cli import main
from k3snet.errors import ApplyError, BackendError, ModelError, PlanError
from k3snet.lab.netns import run_in, temporary_netns, unique_name
from k3snet.model import (
    Drift,
    ForwardRule,
    MasqueradeRule,
    NatBlock,
    NetObject,
    SnatRule,
    State,
)
from k3snet.planner import Change, Plan, plan
from k3snet.render.nftables import (
    chain_order_key,
    nft_rules,
    nft_rules_json,
    object_tag,
    render_nftables_conf,
)
from k3snet.testing import run_conformance, strategies
from k3snet.testing.k3s import FLANNEL_FORWARD_V4, FLANNEL_NAT_V4, KUBE_PROXY_NAT_V4
from tests.nftables.scenario import K3SNET_RULES, NFT_FOREIGN

SYNTAXES = ["json", "nft"]

# flannel (vxlan, K3s defaults) and kube-proxy (iptables mode) through iptables-nft.
IPTABLES_V4 = "\n".join([
    "*nat",
    ":PREROUTING ACCEPT [0:0]",
    ":INPUT ACCEPT [0:0]",
    ":OUTPUT ACCEPT [0:0]",
    ":POSTROUTING ACCEPT [0:0]",
    ":FLANNEL-POSTRTG - [0:0]",
    ":KUBE-POSTROUTING - [0:0]",
    ":KUBE-SERVICES - [0:0]",
    *KUBE_PROXY_NAT_V4[:3],
    *FLANNEL_NAT_V4,
    *KUBE_PROXY_NAT_V4[3:],
    "COMMIT",
    "*filter",
    ":INPUT ACCEPT [0:0]",
    ":FORWARD DROP [0:0]",
    ":OUTPUT ACCEPT [0:0]",
    ":FLANNEL-FWD - [0:0]",
    *FLANNEL_FORWARD_V4,
    "COMMIT",
    "",
])


# What flannel, kube-proxy and the edge table mean, as k3snet models them.
FOREIGN_MODELLED = {
    MasqueradeRule("10.42.0.0/16", exclude=["10.42.0.0/16", "224.0.0.0/4"]),
    # the edge table's SNAT, but for the cluster CIDR, which flannel's masquerade of any
    # source to 10.42.0.0/16 may translate first
    SnatRule("10.50.0.0/16", exclude=["10.42.0.0/16"], out_interface="eth0",
             to_address="192.168.1.5"),
    MasqueradeRule("fd42:50::/56", exclude=["fd00::/8"]),
    ForwardRule("10.42.0.0/16", "0.0.0.0/0"),
    ForwardRule("0.0.0.0/0", "10.42.0.0/16"),
    # flannel's masquerades (iptables-nft's ip nat, at srcnat like k3snet's chain: which
    # runs first is not to be relied on, so they may decide first). kube-proxy's sees
    # marked packets only, the edge table's runs after k3snet's (srcnat + 10).
    NatBlock(4, "masquerade", "ip saddr 10.42.0.0/16 ip daddr != 224.0.0.0/4 masquerade",
             "nftables ip nat FLANNEL-POSTRTG", source="10.42.0.0/16"),
    NatBlock(4, "masquerade", "ip saddr != 10.42.0.0/16 ip daddr 10.42.0.0/16 masquerade",
             "nftables ip nat FLANNEL-POSTRTG", destination="10.42.0.0/16"),
}

WANTED = K3SNET_RULES


# -- fixtures and helpers -------------------------------------------------------------


@pytest.fixture
def seeded(ns: str) -> str:
    """A namespace holding a K3s node's foreign NAT and forward rules."""
    if shutil.which("iptables-nft-restore") is None:
        pytest.skip("iptables-nft-restore is not installed")
    run_in(ns, ["iptables-nft-restore"], input_text=IPTABLES_V4)
    run_in(ns, ["nft", "-f", "-"], input_text=NFT_FOREIGN)
    return ns


def tables(ns: str) -> list[tuple[str, str]]:
    listing = json.loads(run_in(ns, ["nft", "-j", "list", "tables"]).stdout)["nftables"]
    return [(t["table"]["family"], t["table"]["name"]) for t in listing if "table" in t]


def foreign_text(ns: str) -> dict[str, str]:
    """``nft list table`` of every table but k3snet's: the bytes that must not change."""
    return {
        f"{family} {name}": run_in(ns, ["nft", "list", "table", family, name]).stdout
        for family, name in tables(ns)
        if name != "k3snet"
    }


def kernel_rules(ns: str, family: str = "inet") -> dict[str, list[str]]:
    """chain -> comments of k3snet's rules in kernel order (the kernel's own view)."""
    result = run_in(ns, ["nft", "-j", "list", "table", family, "k3snet"], check=False)
    if result.returncode != 0:
        return {}
    chains: dict[str, list[str]] = {}
    for item in json.loads(result.stdout)["nftables"]:
        if "chain" in item:
            chains.setdefault(item["chain"]["name"], [])
        elif "rule" in item:
            chains[item["rule"]["chain"]].append(item["rule"].get("comment", ""))
    return chains


def expected_rules(objects: frozenset[NetObject] | set[NetObject]) -> dict[str, list[str]]:
    """chain -> comments, in the order a fresh apply writes them."""
    chains: dict[str, list[str]] = {"postrouting": [], "forward": []}
    for obj in sorted(objects, key=chain_order_key):
        for rule in nft_rules(obj):
            chains[rule.chain].append(rule.comment)
    return chains


def listing(ns: str, family: str = "inet") -> dict[str, Any]:
    """``nft -j list table FAMILY k3snet`` as the kernel prints it, without handles.

    Chains by name, each with its specification and its rules' JSON; rules are
    sorted (forward rules' order is free, and NAT order is checked by other
    tests); the marker chain, which a rendered file does not hold, is left out.
    """
    result = run_in(ns, ["nft", "-j", "list", "table", family, "k3snet"], check=False)
    if result.returncode != 0:
        return {}
    chains: dict[str, Any] = {}
    for item in json.loads(result.stdout)["nftables"]:
        if "chain" in item and item["chain"]["name"] != MARKER_CHAIN:
            spec = {k: v for k, v in item["chain"].items() if k != "handle"}
            chains[spec["name"]] = {"chain": spec, "rules": []}
        elif "rule" in item and item["rule"]["chain"] != MARKER_CHAIN:
            rule = {k: v for k, v in item["rule"].items() if k != "handle"}
            chains[rule["chain"]]["rules"].append(json.dumps(rule, sort_keys=True))
    for chain in chains.values():
        chain["rules"].sort()
    return chains


@functools.cache
def _rendered(text: str) -> str:
    with temporary_netns("nftr") as fresh:
        run_in(fresh, ["nft", "-f", "-"], input_text=text)
        return json.dumps(listing(fresh))


def rendered_listing(state: State) -> dict[str, Any]:
    """:func:`listing` of k3snet's table as :func:`render_nftables_conf` writes it."""
    return dict(json.loads(_rendered(render_nftables_conf(state))))


def genid_text(ns: str) -> str:
    """The whole ruleset with handles: equal texts mean nothing changed."""
    return run_in(ns, ["nft", "-a", "list", "ruleset"]).stdout


def make(ns: str, syntax: str = "json", **options: object) -> NftablesBackend:
    return NftablesBackend(ns, syntax=syntax, **options)  # type: ignore[arg-type]


def spy_lists(backend: NftablesBackend) -> list[str]:
    """Record every ``list ...`` command the backend sends to libnftables from now on."""
    commands: list[str] = []
    kernel = backend._kernel
    assert kernel is not None
    real_list = kernel.list

    def spy(kind: str, **ref: str) -> list[dict[str, Any]] | None:
        commands.append(" ".join(["list", kind, *ref.values()]))
        return real_list(kind, **ref)

    kernel.list = spy  # type: ignore[method-assign]

    def foreign_kernel() -> Libnftables:
        # The listings' own libnftables context (in the BoundedLister's thread); a text
        # listing of k3snet's table is recorded as the same command.
        made = Libnftables()
        real, real_text = made.list, made.list_text

        def spy_foreign(kind: str, **ref: str) -> list[dict[str, Any]] | None:
            commands.append(" ".join(["list", kind, *ref.values()]))
            return real(kind, **ref)

        def spy_text(kind: str, **ref: str) -> str | None:
            commands.append(" ".join(["list", kind, *ref.values()]))
            return real_text(kind, **ref)

        made.list = spy_foreign  # type: ignore[method-assign]
        made.list_text = spy_text  # type: ignore[method-assign]
        return made

    backend._bounded = BoundedLister(foreign_kernel)  # k3snet's table
    backend._foreign_bounded = BoundedLister(foreign_kernel)  # the other tables
    return commands


# -- rendering and reading back, without a kernel ---------------------------------------


def test_rule_text_for_each_shape() -> None:
    bodies = {
        obj.describe(): [r.body for r in nft_rules(obj)] for obj in sorted(WANTED.owned)
    }
    assert bodies["masquerade 10.43.0.0/16 -> any except 10.0.0.0/8,224.0.0.0/4"] == [
        "ip saddr 10.43.0.0/16 ip daddr != 10.0.0.0/8 ip daddr != 224.0.0.0/4 masquerade"
    ]
    assert bodies["snat fd42:43::/56 -> any random-fully to fd01:1::5"] == [
        "ip6 saddr fd42:43::/56 snat ip6 to fd01:1::5 fully-random"
    ]
    assert bodies["forward accept 10.52.0.0/16 -> 192.168.2.0/24 iif cni0 oif eth0 (+ replies)"] \
        == [
        'ip saddr 10.52.0.0/16 ip daddr 192.168.2.0/24 iifname "cni0" oifname "eth0" accept',
        'ip saddr 192.168.2.0/24 ip daddr 10.52.0.0/16 iifname "eth0" oifname "cni0" '
        "ct state established,related accept",
    ]
    snat = SnatRule("10.44.0.0/16", to_address="192.168.1.5")
    assert nft_rules(snat, inet=False)[0].body == "ip saddr 10.44.0.0/16 snat to 192.168.1.5"
    assert nft_rules(snat, inet=False)[0].comment == object_tag(snat)


@given(st.one_of(strategies.nat_rules(), strategies.forward_rules()))
def test_rendered_json_reads_back_as_the_object(obj: NetObject) -> None:
    from k3snet.backends.nftables.parse import own_object, parse_rule  # noqa: PLC0415

    for slot, expr in enumerate(nft_rules_json(obj)):
        found = own_object(parse_rule(json.loads(expr)), nft_rules(obj)[slot].chain)
        assert found == (obj, slot == 1)


def test_more_specific_nat_rules_sort_first() -> None:
    broad = MasqueradeRule("10.42.0.0/16")
    narrow_dst = MasqueradeRule("10.42.0.0/16", destination="192.168.0.0/16")
    with_oif = MasqueradeRule("10.42.0.0/16", out_interface="eth0")
    narrow_src = SnatRule("10.42.1.0/24", to_address="192.168.1.5")
    ordered = sorted([broad, with_oif, narrow_dst, narrow_src], key=chain_order_key)
    assert ordered == [narrow_src, narrow_dst, with_oif, broad]


def test_a_refused_nft_command_names_its_change() -> None:
    from k3snet.backends.nftables.batch import Batch  # noqa: PLC0415

    batch = Batch("k3snet", "nft")
    batch.ensure_table("inet", None)
    batch.add_object("inet", MasqueradeRule("10.52.0.0/16"), 0)
    batch.delete_rule("inet", "postrouting", 7, 1)
    error = ("Error: Could not process rule: No such file or directory\n"
             "delete rule inet k3snet postrouting handle 7\n"
             "                                          ^^^^^^^^\n")
    assert batch.owner_in(error) == 1
    assert Batch("k3snet", "json").owner_in(error) is None


def test_bad_options_are_refused() -> None:
    with pytest.raises(ModelError, match="table name"):
        NftablesBackend(table="k3snet; flush ruleset")
    with pytest.raises(ModelError, match="family"):
        NftablesBackend(family="ip")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fail_at"):
        NftablesBackend().faults.fail_at(-1)
    with pytest.raises(ModelError, match="syntax"):
        NftablesBackend(syntax="xml")  # type: ignore[arg-type]
    for option in ("keep_read", "observe_foreign"):  # a spec's "no" is no false
        for value in ("no", "false", 0, None):
            with pytest.raises(ModelError, match=f"{option} must be true or false"):
                NftablesBackend(**{option: value})  # type: ignore[arg-type]


# -- the kernel ---------------------------------------------------------------------------


@pytest.mark.kernel
def test_a_missing_namespace_is_a_clear_error(require_root: None) -> None:
    name = unique_name("gone")
    with pytest.raises(BackendError, match=f"network namespace '{name}' does not exist"):
        NftablesBackend(name)


@pytest.mark.kernel
def test_without_cap_net_admin_the_error_names_it(ns: str) -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv is not installed")
    code = ("from k3snet.backends.nftables import NftablesBackend\n"
            "with NftablesBackend() as backend:\n"
            "    backend.observe()\n")
    # root without CAP_NET_ADMIN: the bounding set decides what the new program gets
    result = run_in(ns, ["setpriv", "--bounding-set=-net_admin", "--inh-caps=-net_admin",
                         sys.executable, "-c", code], check=False)
    assert result.returncode == 1
    assert ("k3snet.errors.BackendError: cannot read the nftables generation id: [Errno 1] "
            "Operation not permitted (not permitted: this needs CAP_NET_ADMIN") in result.stderr


@pytest.mark.kernel
def test_foreign_rules_are_modelled(seeded: str) -> None:
    with make(seeded) as backend:
        commands = spy_lists(backend)
        state = backend.observe()
        assert not state.owned
        assert state.foreign == FOREIGN_MODELLED
        # names and hooks of all chains, then only the egress path's chains (of a nat
        # prerouting chain, its own rules: a drop there drops a connection's first packet)
        assert sorted(commands) == sorted([
            "list table inet k3snet", "list chains", "list chain ip nat PREROUTING",
            "list chain ip nat POSTROUTING", "list chain ip nat KUBE-POSTROUTING",
            "list chain ip nat FLANNEL-POSTRTG", "list chain ip filter FORWARD",
            "list chain ip filter FLANNEL-FWD", "list chain ip kube-proxy nat-postrouting",
            "list chain ip kube-proxy masquerading", "list chain inet edge post",
        ])
        commands.clear()
        assert backend.observe() is state  # nothing committed since: no listing at all
        assert commands == []
        # flannel already masquerades pod traffic leaving the cluster CIDR
        wanted = MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24")
        p = plan(state, State(owned=[wanted]))
        assert p.empty
        assert [n.status for n in p.notes] == ["met"]
    with make(seeded, observe_foreign=False) as backend:
        assert backend.observe() == State()


@pytest.mark.kernel
@pytest.mark.parametrize("syntax", SYNTAXES)
@pytest.mark.parametrize("family", ["inet", "split"])
def test_apply_observe_and_remove_leave_foreign_tables_alone(
    seeded: str, syntax: str, family: str
) -> None:
    before = foreign_text(seeded)
    with make(seeded, syntax, family=family) as backend:
        observed = backend.observe()
        p = plan(observed, WANTED)
        assert len(p) == len(WANTED.owned)
        assert backend.check(p) == ()
        assert foreign_text(seeded) == before
        assert ("inet", "k3snet") not in tables(seeded)
        result = backend.apply(p)
        assert result.applied == p.changes

        # the kernel's own view: k3snet's table(s) hold exactly the wanted rules, in order
        if family == "inet":
            assert kernel_rules(seeded) == {**expected_rules(WANTED.owned), MARKER_CHAIN: []}
            text = run_in(seeded, ["nft", "list", "table", "inet", "k3snet"]).stdout
            for obj in WANTED.owned:  # no /32 here, so nft prints the rules as written
                for rule in nft_rules(obj):
                    assert f'{rule.body} comment "{rule.comment}"' in text
        else:
            for nft_family, version in (("ip", 4), ("ip6", 6)):
                mine = {o for o in WANTED.owned if o.family == version}
                assert kernel_rules(seeded, nft_family) == {**expected_rules(mine),
                                                            MARKER_CHAIN: []}
            assert ("inet", "k3snet") not in tables(seeded)
        assert foreign_text(seeded) == before

        # what observe says, from the cache and from a fresh read
        assert backend.observe().owned == WANTED.owned
        fresh = backend.observe(refresh=True)
        assert fresh.owned == WANTED.owned
        assert fresh.foreign == FOREIGN_MODELLED
        assert backend.drift == ()
        assert plan(fresh, WANTED).empty

        # applying the empty plan changes nothing at all
        ruleset = genid_text(seeded)
        assert backend.apply(plan(fresh, WANTED)).operations == 1  # the generation check
        assert genid_text(seeded) == ruleset

        # a new backend (another process, after a restart) sees the same
        with make(seeded, syntax, family=family) as other:
            assert other.observe().owned == WANTED.owned

        backend.apply(plan(backend.observe(), State()))
        assert [t for t in tables(seeded) if t[1] == "k3snet"] == []
        assert foreign_text(seeded) == before
        assert backend.observe(refresh=True) == State(foreign=FOREIGN_MODELLED)


@pytest.mark.kernel
@pytest.mark.parametrize("syntax", SYNTAXES)
def test_changes_among_many_need_no_table_read(ns: str, syntax: str) -> None:
    base = [MasqueradeRule(f"10.0.{i // 250}.{i % 250}/32", destination="192.168.0.0/16")
            for i in range(500)]
    with make(ns, syntax) as backend:
        backend.apply(plan(backend.observe(), State(owned=base)))
        lists = spy_lists(backend)
        current = set(base)
        added = MasqueradeRule("10.9.0.1/32", destination="192.168.0.0/16")
        for step in range(3):
            # add a rule, then replace it, then delete it: the last two need the handle
            # learned from the marker chain after the first apply.
            if step == 0:
                wanted = current | {added}
            elif step == 1:
                replaced = MasqueradeRule(added.source, destination=added.destination,
                                          random_fully=True)
                wanted = (current - {added}) | {replaced}
            else:
                wanted = set(base)
            p = plan(backend.observe(), State(owned=wanted))
            assert len(p) == 1
            result = backend.apply(p)
            # generation check, transaction, marker listing, generation check
            assert result.operations <= 4
            current = wanted
        assert not any(c.startswith("list table") for c in lists), lists
        assert kernel_rules(ns)["postrouting"] == expected_rules(set(base))["postrouting"]
        assert backend.observe(refresh=True).owned == frozenset(base)


@pytest.mark.kernel
@pytest.mark.parametrize("syntax", SYNTAXES)
def test_an_outside_change_is_seen_through_the_generation_id(ns: str, syntax: str) -> None:
    with make(ns, syntax) as backend:
        backend.apply(plan(backend.observe(), WANTED))
        victim = MasqueradeRule("10.43.0.0/16", exclude=["10.0.0.0/8", "224.0.0.0/4"])
        comment = object_tag(victim)
        listing = json.loads(run_in(ns, ["nft", "-j", "list", "table", "inet", "k3snet"]).stdout)
        handle = next(i["rule"]["handle"] for i in listing["nftables"]
                      if i.get("rule", {}).get("comment") == comment)
        run_in(ns, ["nft", "delete", "rule", "inet", "k3snet", "postrouting", "handle",
                    str(handle)])
        assert backend.observe().owned == WANTED.owned - {victim}
        backend.apply(plan(backend.observe(), WANTED))
        assert backend.observe(refresh=True).owned == WANTED.owned


@pytest.mark.kernel
@pytest.mark.parametrize("syntax", SYNTAXES)
@pytest.mark.parametrize("fail_after", [0, 2, 4])
def test_a_refused_transaction_leaves_the_kernel_as_it_was(
    seeded: str, syntax: str, fail_after: int
) -> None:
    first = State(owned=sorted(WANTED.owned)[:4])
    with make(seeded, syntax) as backend:
        backend.apply(plan(backend.observe(), first))
        observed = backend.observe()
        p = plan(observed, WANTED.with_owned(sorted(WANTED.owned)[2:]))
        assert p.counts()["add"]
        assert p.counts()["delete"]
        ruleset = genid_text(seeded)
        failing = make(seeded, syntax)
        failing.faults.fail_at(fail_after)
        with failing, pytest.raises(ApplyError, match="refused the transaction") as caught:
            failing.apply(p)
        assert failing.faults.armed is None  # one shot
        assert caught.value.done == ()
        assert caught.value.rolled_back == ()
        assert caught.value.failed == p.changes[fail_after]
        assert genid_text(seeded) == ruleset  # handles included: nothing happened at all
        assert backend.observe() == observed
        backend.apply(p)
        assert backend.observe().owned == frozenset(sorted(WANTED.owned)[2:])


@pytest.mark.kernel
def test_plans_naming_what_k3snet_does_not_own_are_refused(seeded: str) -> None:
    before = foreign_text(seeded)
    with make(seeded) as backend:
        state = backend.observe()
        flannel = MasqueradeRule("10.42.0.0/16", exclude=["10.42.0.0/16", "224.0.0.0/4"])
        assert flannel in state.foreign
        bad = Plan(changes=[Change.delete(flannel)])
        ruleset = genid_text(seeded)
        assert backend.check(bad) == (
            f"cannot delete {flannel}: it is not k3snet's (foreign); k3snet never changes it",)
        with pytest.raises(PlanError, match=r"refuses the plan(.|\n)*not k3snet's \(foreign\)"):
            backend.apply(bad)
        assert genid_text(seeded) == ruleset
        backend.apply(plan(state, WANTED))
        twice = Plan(changes=[Change.add(sorted(WANTED.owned)[0])])
        with pytest.raises(PlanError, match="is already there"):
            backend.apply(twice)
        assert foreign_text(seeded) == before


@pytest.mark.kernel
@pytest.mark.parametrize("syntax", SYNTAXES)
def test_check_is_a_dry_run_the_kernel_validates(ns: str, syntax: str) -> None:
    with make(ns, syntax) as backend:
        p = plan(backend.observe(), WANTED)
        ruleset = genid_text(ns)
        assert backend.check(p) == ()
        assert genid_text(ns) == ruleset
        with make(ns, syntax) as failing:
            failing.faults.fail_at(1)
            # check() never injects failures: it validates the real batch
            assert failing.check(p) == ()
            assert failing.faults.armed == 1


@pytest.mark.kernel
@pytest.mark.parametrize("syntax", SYNTAXES)
def test_drift_is_found_and_repaired(ns: str, syntax: str) -> None:
    with make(ns, syntax) as backend:
        backend.apply(plan(backend.observe(), WANTED))
        current = json.loads(run_in(ns, ["nft", "-j", "list", "table", "inet", "k3snet"]).stdout)
        rules = {i["rule"]["comment"]: i["rule"]["handle"] for i in current["nftables"]
                 if "rule" in i}
        edited = MasqueradeRule("10.52.0.0/16", destination="192.168.2.0/24",
                                out_interface="eth0", random_fully=True)
        forward = ForwardRule("fd42:42::/56", "fd01:2::/64")
        script = "\n".join([
            # a hand edit keeping the tag: now NATs another destination
            f"replace rule inet k3snet postrouting handle {rules[object_tag(edited)]} "
            'ip saddr 10.52.0.0/16 ip daddr 192.168.9.0/24 oifname "eth0" masquerade '
            f'fully-random comment "{object_tag(edited)}"',
            # the reply half of a forward rule disappears
            f"delete rule inet k3snet forward handle {rules[object_tag(forward) + ':reply']}",
            # rules and a chain k3snet never writes
            "add rule inet k3snet postrouting counter",
            "add rule inet k3snet forward ip saddr 10.0.0.0/8 drop",
            # and someone closes k3snet's forward chain
            "add chain inet k3snet forward { type filter hook forward priority filter; "
            "policy drop; }",
        ]) + "\n"
        run_in(ns, ["nft", "-f", "-"], input_text=script)
        # a chain named like an nft keyword, which only JSON can name
        chain = {"family": "inet", "table": "k3snet", "name": "counter"}
        run_in(ns, ["nft", "-j", "-f", "-"], input_text=json.dumps({"nftables": [
            {"add": {"chain": chain}},
            {"add": {"rule": {**{k: v for k, v in chain.items() if k != "name"},
                              "chain": "counter", "expr": [{"accept": None}]}}},
        ]}))

        state = backend.observe()
        now = MasqueradeRule("10.52.0.0/16", destination="192.168.9.0/24",
                             out_interface="eth0", random_fully=True)
        drift = {d for d in state.owned if isinstance(d, Drift)}
        assert state.owned - drift == (WANTED.owned - {edited, forward}) | {now}
        found = "\n".join(sorted(d.describe() for d in drift))
        assert backend.drift == tuple(sorted(d.describe() for d in drift))
        assert f"tag {object_tag(edited)} is not its content's ({object_tag(now)})" in found
        assert "a forward rule without its reply rule" in found
        assert "drift in nftables inet k3snet: chain counter: not a chain k3snet writes" in found
        assert found.count(": not a rule k3snet writes") == 2  # the counter and the drop
        assert "inet k3snet forward: policy drop (k3snet's: accept)" in found
        assert len(drift) == 6

        p = plan(state, WANTED)
        # the edited rule has another key: delete + add; the lost half: add again
        assert p.counts() == {"add": 2, "replace": 0, "delete": 1 + len(drift)}
        result = backend.apply(p)
        assert result.operations == 4  # one transaction
        assert backend.drift == ()
        assert listing(ns) == rendered_listing(WANTED)
        fresh = backend.observe(refresh=True)
        assert fresh.owned == WANTED.owned
        assert backend.drift == ()


# One kind of drift each, made by hand in a table k3snet wrote from the seed spec:
# (what to do, the plan lines it must show).
SEED = Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"
SEED_NAT = MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24", out_interface="eth0")
SEED_FORWARD = ForwardRule("10.42.0.0/16", "192.168.2.0/24", out_interface="eth0")
FORGED = "k3snet:0123456789abcdef"


def add_rules(ns: str, obj: NetObject, comment: str | None = None) -> None:
    run_in(ns, ["nft", "-f", "-"], input_text="".join(
        f'add rule inet k3snet {r.chain} {r.body} comment "{comment or r.comment}"\n'
        for r in nft_rules(obj)))


def add_keyword_chain(ns: str) -> None:
    ref = {"family": "inet", "table": "k3snet"}
    run_in(ns, ["nft", "-j", "-f", "-"], input_text=json.dumps({"nftables": [
        {"add": {"chain": {**ref, "name": "counter"}}},
        {"add": {"rule": {**ref, "chain": "counter", "expr": [{"accept": None}]}}},
    ]}))


def _add_each(ns: str, *objects: NetObject) -> None:
    for obj in objects:
        add_rules(ns, obj)


DRIFT_KINDS: dict[str, tuple[Any, list[str]]] = {
    "policy": (
        lambda ns, conf: run_in(ns, ["nft", "add", "chain", "inet", "k3snet", "forward",
                                     "{ policy drop; }"]),
        ["- drift in nftables inet k3snet forward: policy drop (k3snet's: accept)"]),
    "priority": (
        lambda ns, conf: run_in(ns, ["nft", "-f", "-"], input_text=conf.replace(
            "priority srcnat;", "priority srcnat + 5;")),
        ["- drift in nftables inet k3snet postrouting: type nat hook postrouting priority 105 "
         "(k3snet's: type nat hook postrouting priority 100)"]),
    "extra rule": (
        lambda ns, conf: run_in(ns, ["nft", "add", "rule", "inet", "k3snet", "postrouting",
                                     "counter"]),
        [": not a rule k3snet writes"]),
    "extra chain": (
        lambda ns, conf: add_keyword_chain(ns),
        ["- drift in nftables inet k3snet: chain counter: not a chain k3snet writes"]),
    "forged tag": (
        lambda ns, conf: add_rules(ns, MasqueradeRule("10.77.0.0/16"), FORGED),
        [f"tag {FORGED} is not its content's ({object_tag(MasqueradeRule('10.77.0.0/16'))})",
         "- masquerade 10.77.0.0/16 -> any"]),
    "duplicates": (
        lambda ns, conf: _add_each(ns, SEED_NAT, SEED_FORWARD),
        [f": a duplicate of {SEED_NAT.describe()}", f": a duplicate of {SEED_FORWARD.describe()}"]),
}


@pytest.mark.kernel
@pytest.mark.parametrize("kind", list(DRIFT_KINDS))
def test_each_kind_of_drift_is_planned_and_repaired(
    ns: str, kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["render", "nftables", "-f", str(SEED), "-o", str(tmp_path)]) == 0
    conf = (tmp_path / "k3snet.nft").read_text()
    run_in(ns, ["nft", "-f", "-"], input_text=conf)
    expected = listing(ns)
    cli = ["-f", str(SEED), "--backend", "nftables", "--netns", ns, "--no-facts"]
    assert main(["plan", *cli]) == 0
    make_drift, lines = DRIFT_KINDS[kind]
    make_drift(ns, conf)
    assert listing(ns) != expected
    capsys.readouterr()

    assert main(["plan", *cli]) == 2
    shown = capsys.readouterr().out
    for line in lines:
        assert line in shown, shown
    assert "to add" in shown.splitlines()[0]
    assert main(["apply", *cli]) == 0
    applied = capsys.readouterr().out
    assert re.search(r"applied in [34] operation\(s\)", applied), applied  # one transaction
    assert main(["plan", *cli]) == 0
    assert listing(ns) == expected


@pytest.mark.kernel
@pytest.mark.parametrize("syntax", SYNTAXES)
def test_a_more_specific_rule_goes_before_an_overlapping_one(ns: str, syntax: str) -> None:
    broad = MasqueradeRule("10.42.0.0/16", out_interface="eth0")
    other = MasqueradeRule("10.99.0.0/16")
    narrow = SnatRule("10.42.7.0/24", destination="192.168.2.0/24", to_address="192.168.1.5")
    with make(ns, syntax) as backend:
        backend.apply(plan(backend.observe(), State(owned=[broad, other])))
        assert kernel_rules(ns)["postrouting"] == [object_tag(broad), object_tag(other)]
        backend.apply(plan(backend.observe(), State(owned=[broad, other, narrow])))
        # the broad rule was re-added after the narrow one; the unrelated one stayed put
        assert kernel_rules(ns)["postrouting"] == [
            object_tag(other), object_tag(narrow), object_tag(broad)]
        assert backend.observe(refresh=True).owned == {broad, other, narrow}
        assert plan(backend.observe(), State(owned=[broad, other, narrow])).empty


@pytest.mark.kernel
@pytest.mark.parametrize("family", ["inet", "split"])
def test_persistence_file_checks_loads_and_is_recognised(ns: str, family: str) -> None:
    text = render_nftables_conf(WANTED, family=family)  # type: ignore[arg-type]
    path = Path(f"/tmp/{unique_name('conf')}.nft")
    path.write_text(text)
    try:
        with temporary_netns("nftc") as fresh:
            run_in(fresh, ["nft", "-c", "-f", str(path)])
            assert tables(fresh) == []  # -c changes nothing
        run_in(ns, ["nft", "-f", str(path)])
        run_in(ns, ["nft", "-f", str(path)])  # loading twice replaces, never duplicates
        with make(ns, family=family) as backend:
            assert backend.observe().owned == WANTED.owned
            assert backend.drift == ()
            assert plan(backend.observe(), WANTED).empty
        path.write_text(render_nftables_conf(State(), family=family))  # type: ignore[arg-type]
        run_in(ns, ["nft", "-f", str(path)])
        assert tables(ns) == []
    finally:
        path.unlink()


@pytest.mark.kernel
@pytest.mark.parametrize("syntax", SYNTAXES)
def test_conformance(seeded: str, syntax: str) -> None:
    run_conformance(
        lambda: make(seeded, syntax),
        objects=st.one_of(strategies.nat_rules(), strategies.forward_rules()),
        max_examples=int(os.environ.get("K3SNET_NFTABLES_EXAMPLES", "10")),
        reopen=lambda _: make(seeded, syntax),  # the next process's, reading the kernel
    )
