"""NAT through one interface before NAT through a wildcard holding it (iptables backend).

NAT is first match. A SNAT through ``eth0`` and a masquerade through ``eth+`` with the
same prefixes were one bucket group (``-o-``), jumped to in hash order, so the
masquerade could come first and the SNAT never translate a packet (as the nftables
backend did before its fix). The groups now go one name, then wildcards by longer
prefix, then any interface. Checked against the kernel: ``iptables-save`` order,
rule counters, and the address a server behind the node sees.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from k3snet.backends.iptables import IptablesBackend
from k3snet.lab.netns import run_in
from k3snet.lab.seed import NODE_ADDRESSES, POD_CIDRS, Family, SeedLab
from k3snet.model import Drift, MasqueradeRule, NetObject, SnatRule, State, interfaces_may_meet
from k3snet.planner import plan
from k3snet.render.iptables import render_iptables_save
from k3snet.render.iptables.rules import (
    bucket_order,
    main_lines,
    render_new,
    render_unit,
)
from k3snet.render.tag import TAG_PREFIX

CONFIGS = [
    pytest.param(("nft", "restore"), id="nft-restore"),
    pytest.param(("legacy", "restore"), id="legacy-restore"),
    pytest.param(("legacy", "libiptc"), id="legacy-libiptc"),
]

SOURCES = POD_CIDRS
# The address SNAT gives. With these, the old layout's hash order met the masquerade
# through eth+ first in both families (IPv6: bucket f after e), so the old code
# fails every test here in both, not by the luck of a hash.
SNAT_TO: dict[Family, str] = {4: "192.168.1.6", 6: "fd01:1::12"}


def rules(family: Family) -> tuple[NetObject, NetObject, NetObject, NetObject]:
    """(one name, a narrow wildcard, a wide wildcard, any interface): most specific first."""
    src = SOURCES[family]
    return (SnatRule(src, out_interface="eth0", to_address=SNAT_TO[family]),
            MasqueradeRule(src, out_interface="eth1+"),
            MasqueradeRule(src, out_interface="eth+"),
            MasqueradeRule(src))


def tool(mode: str, family: int, kind: str) -> str:
    return f"{'ip' if family == 4 else 'ip6'}tables-{mode}-{kind}"


def backend_for(ns: str, config: tuple[str, str]) -> IptablesBackend:
    mode, driver = config
    if driver == "libiptc":
        pytest.importorskip("iptc")
    return IptablesBackend(ns, mode=mode, driver=driver)  # type: ignore[arg-type]


_RULE = re.compile(r"^(?:\[(\d+):\d+\] )?-A (\S+) (.*)$")
_TAG = re.compile(re.escape(TAG_PREFIX) + r"([0-9a-f]+)")


def traversal(save_text: str) -> Iterator[tuple[str, int]]:
    """(tag digest, packets) of k3snet's NAT rules in the order a packet meets them:
    K3SNET-POSTROUTING's jumps in the kernel's order, each bucket's rules in order."""
    chains: dict[str, list[tuple[str, int]]] = {}
    for line in save_text.splitlines():
        if match := _RULE.match(line):
            packets, chain, body = match.groups()
            chains.setdefault(chain, []).append((body, int(packets or 0)))
    for body, _ in chains.get("K3SNET-POSTROUTING", []):
        for rule, packets in chains.get(body.split()[-1], []):
            if tag := _TAG.search(rule):
                yield tag.group(1), packets


def nat_save(ns: str, mode: str, family: int, *extra: str) -> str:
    return run_in(ns, [tool(mode, family, "save"), *extra, "-t", "nat"]).stdout


def digests(objects: tuple[NetObject, ...]) -> list[str]:
    return [render_unit(o).digest for o in objects]


# -- pure ---------------------------------------------------------------------------


@pytest.mark.parametrize("family", [4, 6])
def test_a_name_goes_before_a_wildcard_holding_it_and_a_longer_wildcard_first(
        family: Family) -> None:
    ordered = rules(family)
    chains = [render_unit(o).chain for o in reversed(ordered)]
    jumps = [line[-1] for line in main_lines(chains)]
    assert jumps == [render_unit(o).chain for o in ordered]
    assert [bucket_order(c) is not None for c in chains] == [True] * 4


@pytest.mark.parametrize("family", [4, 6])
def test_the_fast_path_puts_a_wildcard_in_the_same_chain_as_the_general_one(
        family: Family) -> None:
    for out in ("eth+", "eth1+", "e+", "abcdefghijklmn+", "eth0", None):
        obj = MasqueradeRule(SOURCES[family], out_interface=out)
        general = render_unit(SnatRule(SOURCES[family], out_interface=out,
                                       to_address=SNAT_TO[family])).chain
        assert render_new(obj).chain[:-1] == general[:-1]  # same group, maybe another digit
        assert bucket_order(render_new(obj).chain) is not None


_NAMES = st.text("e0t1", min_size=1, max_size=5)
_MATCHES = st.one_of(st.none(), _NAMES, _NAMES.map(lambda name: name + "+"))


def _holds(wide: str | None, narrow: str | None) -> bool:
    """Every interface ``narrow`` matches, ``wide`` matches too."""
    if wide is None:
        return True
    if narrow is None:
        return False
    if not wide.endswith("+"):
        return narrow == wide
    return narrow.startswith(wide[:-1]) and len(narrow) >= len(wide) - (
        0 if narrow.endswith("+") else 1)


@given(_MATCHES, _MATCHES)
def test_of_two_nat_rules_whose_interfaces_meet_the_narrower_is_met_first(
        a: str | None, b: str | None) -> None:
    """Same prefixes, interface matches one device may pass both: when one match holds
    the other and they differ, the narrower one's bucket is jumped to first; when both
    are names or wildcards of one length, they are the same match (one group)."""
    if not interfaces_may_meet(a, b) or a == b:
        return
    first, second = (render_unit(MasqueradeRule("10.42.0.0/16", out_interface=m)).chain
                     for m in (a, b))
    if _holds(b, a):
        assert (bucket_order(first) or ()) < (bucket_order(second) or ())
    elif _holds(a, b):
        assert (bucket_order(second) or ()) < (bucket_order(first) or ())
    else:
        raise AssertionError(f"{a!r} and {b!r} meet, yet neither holds the other")


def test_a_plain_name_keeps_its_group_name() -> None:
    """Rules through one name or any interface keep their chains: no rewrite on upgrade."""
    assert render_unit(MasqueradeRule("10.42.0.0/16", out_interface="eth0")).chain.startswith(
        "K3SNET-N-d0-s16-o-")
    assert render_unit(MasqueradeRule("10.42.0.0/16")).chain.startswith("K3SNET-N-d0-s16-a-")


# -- the kernel ---------------------------------------------------------------------


@pytest.mark.kernel
@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("family", [4, 6])
def test_a_rule_through_one_interface_added_after_a_wildcard_holding_it_goes_first(
        ns: str, config: tuple[str, str], family: Family) -> None:
    one, narrow, wide, anywhere = rules(family)
    backend = backend_for(ns, config)
    try:
        backend.apply(plan(backend.observe(), State(owned=[wide, anywhere])))
        backend.apply(plan(backend.observe(), State(owned=[wide, anywhere, one])))
        everything = State(owned=[wide, anywhere, one, narrow])
        backend.apply(plan(backend.observe(), everything))
        found = [digest for digest, _ in traversal(nat_save(ns, config[0], family))]
        assert found == digests((one, narrow, wide, anywhere))
        assert plan(backend.observe(), everything).empty
    finally:
        backend.close()


@pytest.mark.kernel
@pytest.mark.parametrize("mode", ["nft", "legacy"])
@pytest.mark.parametrize("family", [4, 6])
def test_the_boot_file_puts_a_name_before_the_wildcard_holding_it(
        ns: str, mode: str, family: Family) -> None:
    one, _, wide, _ = rules(family)
    text = render_iptables_save(State(owned=[wide, one]), family, mode=mode)
    run_in(ns, [tool(mode, family, "restore"), "-w"], input_text=text)
    assert [d for d, _ in traversal(nat_save(ns, mode, family))] == digests((one, wide))


@pytest.mark.kernel
@pytest.mark.parametrize("mode", ["nft", "legacy"])
@pytest.mark.parametrize("family", [4, 6])
def test_a_wildcard_rule_an_earlier_version_grouped_with_names_is_drift_and_moved(
        ns: str, mode: str, family: Family) -> None:
    """Before, ``-o eth+`` went in the ``-o-`` group of names: read back there, it is
    in the wrong chain (drift), and the apply moves it behind the rule through eth0."""
    one, _, wide, _ = rules(family)
    wanted = State(owned=[wide, one])
    old = render_iptables_save(wanted, family, mode=mode)
    wide_chain = render_unit(wide).chain
    old_chain = wide_chain.replace("-w3-", "-o-")
    assert old_chain != wide_chain
    run_in(ns, [tool(mode, family, "restore"), "-w"], input_text=old.replace(wide_chain,
                                                                            old_chain))
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        changes = plan(backend.observe(), wanted)
        assert any(isinstance(c.before, Drift) for c in changes.changes)
        backend.apply(changes)
        assert plan(backend.observe(), wanted).empty
    assert [d for d, _ in traversal(nat_save(ns, mode, family))] == digests((one, wide))


@pytest.mark.kernel
@pytest.mark.parametrize("mode", ["nft", "legacy"])
@pytest.mark.parametrize("family", [4, 6])
def test_a_pod_leaving_through_eth0_is_snatted_not_masqueraded_by_the_eth_wildcard(
        require_root: None, mode: str, family: Family) -> None:
    """The seed lab's pod connects to the database through the node's eth0: with a
    masquerade through eth+ and, added later, a SNAT through eth0 to a second address,
    the database sees that address (it saw the node's first one, masqueraded), and
    the SNAT rule's counter is the one that counted the connection."""
    one, _, wide, _ = rules(family)
    with SeedLab.create() as lab:
        run_in(lab.node, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1",
                          "net.ipv6.conf.all.forwarding=1"])
        # A deprecated IPv6 address is never picked as a source, so only the SNAT
        # gives it; a second IPv4 address is never the masquerade's either.
        extra = (["ip", "-4", "addr", "add", f"{SNAT_TO[4]}/24", "dev", "eth0"] if family == 4
                 else ["ip", "-6", "addr", "add", f"{SNAT_TO[6]}/64", "dev", "eth0", "nodad",
                       "preferred_lft", "0"])
        run_in(lab.node, extra)
        with IptablesBackend(lab.node, mode=mode) as backend:  # type: ignore[arg-type]
            backend.apply(plan(backend.observe(), State(owned=[wide])))
            backend.apply(plan(backend.observe(), State(owned=[wide, one])))
        probe = lab.tcp_probe(family)
        assert probe.ok, probe.error
        assert probe.source_seen == SNAT_TO[family] != NODE_ADDRESSES[family]
        counted = dict(traversal(nat_save(lab.node, mode, family, "-c")))
        assert counted[render_unit(one).digest] >= 1
        assert counted[render_unit(wide).digest] == 0
