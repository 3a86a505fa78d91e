"""A TTL (hop limit) set to 1 on the forward path expires the pods' forwarded packets.

``-t mangle -A PREROUTING -j TTL --ttl-set 1`` (``-j HL --hl-set 1``; ``ip ttl set 1``,
``ip6 hoplimit set 1`` in an nftables table): the kernel's forwarding drops a packet
whose TTL is 1 or less, and one set in FORWARD or POSTROUTING leaves with it and dies
at the next router. Both backends read such a rule as a target the packet goes on
after (``-j LOG``'s kind): the plan said every rule was in place while no connection
went through. Now it is a drop's :class:`~k3snet.model.ForwardBlock`, a ``!`` conflict
naming the rule; a TTL set higher, or raised, is none. The kernel tests send a real
connection through the seed lab's node.
"""

from __future__ import annotations

import pytest

from k3snet.backends.iptables import IptablesBackend
from k3snet.backends.iptables.foreign import path_blocks
from k3snet.backends.iptables.save import parse_save
from k3snet.backends.nftables.parse import ForeignReader
from k3snet.lab import SeedLab
from k3snet.lab.netns import run_in
from k3snet.model import ForwardBlock, ForwardRule, MasqueradeRule, State
from k3snet.planner import plan
from tests.dropped import dropped, snmp_count
from tests.nftables.test_foreign_cases import ACCEPT, Expr, Kernel, saddr
from tests.shared_lab import lab_fixture, made_lab_fixture  # noqa: F401 - one lab for the module

POD = "10.42.0.0/16"
DB = "192.168.2.0/24"
WANTED = ForwardRule(POD, DB, in_interface="cni0", out_interface="eth0")
DESIRED = State(owned=[WANTED, MasqueradeRule(POD, destination=DB, out_interface="eth0")])


def _mangle(rule: str, family: int = 4) -> set[str]:
    chains = "".join(f":{c} ACCEPT [0:0]\n" for c in ("PREROUTING", "FORWARD", "POSTROUTING"))
    dump = parse_save(f"*mangle\n{chains}{rule}\nCOMMIT\n")["mangle"]
    return {b.describe() for b in path_blocks(dump, family) if isinstance(b, ForwardBlock)}


@pytest.mark.parametrize("rule", [
    f"-A PREROUTING -s {POD} -j TTL --ttl-set 1",
    "-A FORWARD -j TTL --ttl-set 0",
    f"-A POSTROUTING -d {DB} -j TTL --ttl-dec 64",
])
def test_a_ttl_set_to_one_or_less_on_the_forward_path_is_a_drop(rule: str) -> None:
    assert _mangle(rule) == {f"drop by iptables IPv4 mangle: {rule}"}


def test_an_hl_set_to_one_is_a_drop_of_ipv6() -> None:
    rule = "-A FORWARD -s fd42:42::/56 -j HL --hl-set 1"
    assert _mangle(rule, 6) == {f"drop by iptables IPv6 mangle: {rule}"}


@pytest.mark.parametrize("rule", [
    "-A PREROUTING -j TTL --ttl-set 64",
    "-A POSTROUTING -j TTL --ttl-inc 1",
    "-A FORWARD -j TTL --ttl-dec 1",
])
def test_a_ttl_left_high_enough_or_raised_is_no_block(rule: str) -> None:
    assert _mangle(rule) == set()


def _ttl(value: object, proto: str = "ip", field: str = "ttl") -> Expr:
    return {"mangle": {"key": {"payload": {"protocol": proto, "field": field}},
                       "value": value}}


def _nft_blocks(*rule: Expr) -> set[str]:
    kernel = Kernel({("inet", "admin", "pre"): ("prerouting", "accept", [list(rule)])})
    found = ForeignReader(kernel, frozenset()).read()
    return {b.describe() for b in found if isinstance(b, ForwardBlock)}


def test_an_nft_ttl_set_to_one_is_a_drop_even_when_the_rule_accepts() -> None:
    assert _nft_blocks(saddr(POD), _ttl(1)) == {
        "drop by nftables inet admin pre: ip saddr 10.42.0.0/16 ip ttl set 1"}
    assert _nft_blocks(saddr(POD), _ttl(1), ACCEPT) == {
        "drop by nftables inet admin pre: ip saddr 10.42.0.0/16 ip ttl set 1"}
    assert _nft_blocks(saddr("fd42:42::/56"), _ttl(0, "ip6", "hoplimit")) == {
        "drop by nftables inet admin pre: ip6 saddr fd42:42::/56 ip6 hoplimit set 0"}


@pytest.mark.parametrize("verdict", ["jump", "goto"])
def test_an_nft_ttl_set_to_one_before_a_jump_is_a_drop(verdict: str) -> None:
    """The packet leaves the rule with a TTL of 1 whatever the chain it jumps to does
    (read as the jump alone, the chain's accept: no block)."""
    kernel = Kernel({("inet", "admin", "pre"): ("prerouting", "accept", [
        [saddr(POD), _ttl(1), {verdict: {"target": "mark"}}]]),
        ("inet", "admin", "mark"): (None, "", [[ACCEPT]])})
    found = ForeignReader(kernel, frozenset()).read()
    assert {b.describe() for b in found if isinstance(b, ForwardBlock)} == {
        "drop by nftables inet admin pre: ip saddr 10.42.0.0/16 ip ttl set 1"}


def test_an_nft_ttl_set_high_enough_is_no_block() -> None:
    assert _nft_blocks(saddr(POD), _ttl(64)) == set()
    assert _nft_blocks(saddr(POD), {"mangle": {"key": {"meta": {"key": "mark"}},
                                               "value": 1}}) == set()


_IPT_TTL = ["-t", "mangle", "-A", "PREROUTING", "-s", POD, "-j", "TTL", "--ttl-set", "1"]


@pytest.mark.kernel
@pytest.mark.lab
@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_a_ttl_set_to_one_expires_the_pods_connection_and_is_a_conflict_iptables(
        lab: SeedLab, mode: str) -> None:

    run_in(lab.node, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
    lab.block_forward("iptables-nft" if mode == "nft" else "iptables-legacy")
    with IptablesBackend(lab.node, mode=mode) as backend:  # type: ignore[arg-type]
        backend.apply(plan(backend.observe(), DESIRED))
        assert lab.tcp_probe(4).ok
        run_in(lab.node, [f"iptables-{mode}", "-w", *_IPT_TTL])
        assert dropped(lab, 4, snmp_count(  # a real packet: expired (on the node)
            lab.node, "Icmp", "OutTimeExcds"))
        p = plan(backend.observe(), DESIRED)
        (note,) = p.conflicts
        assert note.wanted == WANTED, p.render()
        assert isinstance(note.foreign, ForwardBlock)
        assert note.foreign.rule == " ".join(_IPT_TTL[2:])
        assert not p.changes, p.render()


_NFT_TTL = ("table inet admin {\n  chain pre {\n"
            "    type filter hook prerouting priority mangle; policy accept;\n"
            f"    ip saddr {POD} ip ttl set 1\n  }}\n}}\n")


@pytest.mark.kernel
@pytest.mark.lab
@pytest.mark.parametrize("written", ["nft", "iptables-nft"])
def test_a_ttl_set_to_one_expires_the_pods_connection_and_is_a_conflict_nftables(
        lab: SeedLab, written: str) -> None:
    """An ``ip ttl set 1`` of another table, and iptables-nft's ``-j TTL --ttl-set 1``,
    whose value libnftables does not list (read from the kernel's target data: a
    ``--ttl-set 64`` beside it is none)."""
    from k3snet.backends.nftables import NftablesBackend  # noqa: PLC0415

    run_in(lab.node, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
    with NftablesBackend(lab.node) as backend:
        backend.apply(plan(backend.observe(), DESIRED))
        assert lab.tcp_probe(4).ok
        if written == "nft":
            run_in(lab.node, ["nft", "-f", "-"], input_text=_NFT_TTL)
        else:
            run_in(lab.node, ["iptables-nft", "-w", "-t", "mangle", "-A", "PREROUTING",
                              "-s", POD, "-j", "TTL", "--ttl-set", "64"])
            run_in(lab.node, ["iptables-nft", "-w", *_IPT_TTL])
        assert dropped(lab, 4, snmp_count(  # a real packet: expired (on the node)
            lab.node, "Icmp", "OutTimeExcds"))
        observed = backend.observe()
        ttl = [b.rule for b in observed.foreign if isinstance(b, ForwardBlock)]
        assert len(ttl) == 1, ttl  # not the --ttl-set 64
        p = plan(observed, DESIRED)
        (note,) = p.conflicts
        assert note.wanted == WANTED, p.render()
        assert isinstance(note.foreign, ForwardBlock)
        text = "ip ttl set 1" if written == "nft" else "xt target TTL --ttl-set 1"
        assert note.foreign.rule == f"ip saddr {POD} {text}", note.foreign.rule
        assert not p.changes, p.render()
