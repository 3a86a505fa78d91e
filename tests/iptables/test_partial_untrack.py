"""A notrack of one protocol's packets (a DNS server's ``-p udp --dport 53 -j NOTRACK``).

raw's rules leaving packets untracked take them out of NAT and, under a FORWARD that
drops what k3snet does not accept, their replies out of k3snet's accept of
established connections: read as conflicts of the masquerade and forward rules they may
match. Their protocol and ports were matches k3snet does not read, so "any": a DNS-only
notrack was a conflict of every rule of the pods, set aside and never written, and
their TCP egress stayed dropped while the plan blamed the notrack. Now a notrack
of one protocol is no block (the rest of the pods' traffic is tracked, k3snet's rules
serve it); a warning names it when it meets a rule of k3snet's. The same for the
nftables backend's read of another table (``udp dport 53 notrack``). The kernel tests
make a real TCP connection through the seed lab's node.
"""

from __future__ import annotations

import pytest

from k3snet.backends.iptables import IptablesBackend
from k3snet.backends.iptables.foreign import path_blocks
from k3snet.backends.iptables.save import parse_save
from k3snet.backends.nftables.parse import ForeignReader
from k3snet.backends.untracked import partial_untracks
from k3snet.lab import SeedLab
from k3snet.lab.netns import run_in
from k3snet.model import ForwardBlock, ForwardRule, MasqueradeRule, NatBlock, NetObject, State
from k3snet.planner import plan
from tests.dropped import dropped, snmp_count
from tests.nftables.test_foreign_cases import saddr
from tests.nftables.test_untracked import NOTRACK, raw
from tests.shared_lab import lab_fixture, made_lab_fixture  # noqa: F401 - one lab for the module

POD = "10.42.0.0/16"
DB = "192.168.2.0/24"
WANTED = ForwardRule(POD, DB, in_interface="cni0", out_interface="eth0")
MASQ = MasqueradeRule(POD, destination=DB, out_interface="eth0")
DESIRED = State(owned=[WANTED, MASQ])
DNS = ["-s", POD, "-p", "udp", "--dport", "53", "-j", "NOTRACK"]


def _raw(rules: str) -> tuple[set[NetObject], list[NetObject]]:
    dump = parse_save(f"*raw\n:PREROUTING ACCEPT [0:0]\n:DNS - [0:0]\n{rules}\nCOMMIT\n")
    partial: list[NetObject] = []
    return path_blocks(dump["raw"], 4, forward_drops=True, partial=partial), partial


@pytest.mark.parametrize("rules", [
    "-A PREROUTING -p udp --dport 53 -j NOTRACK",
    f"-A PREROUTING -s {POD} -p udp -m udp --dport 53 -j CT --notrack",
    "-A PREROUTING -p udp -j DNS\n-A DNS --dport 53 -j NOTRACK",
])
def test_a_notrack_of_one_protocol_is_no_block_but_kept_for_the_warning(rules: str) -> None:
    found, partial = _raw(rules)
    assert found == set()
    assert {type(b) for b in partial} == {ForwardBlock, NatBlock}
    assert all(b.decides(WANTED if isinstance(b, ForwardBlock) else MASQ) for b in partial)


@pytest.mark.parametrize("rules", [
    "-A PREROUTING -j NOTRACK",
    "-A PREROUTING ! -p udp -j NOTRACK",
    "-A PREROUTING -p all -j NOTRACK",
])
def test_a_notrack_of_every_protocol_is_still_a_block(rules: str) -> None:
    found, partial = _raw(rules)
    assert {type(b) for b in found} == {ForwardBlock, NatBlock}
    assert partial == []


@pytest.mark.parametrize("rules", [
    "-A PREROUTING -p tcp -j NOTRACK",
    f"-A PREROUTING -s {POD} -p tcp -m tcp -j CT --notrack",
    "-A PREROUTING -p udp -j NOTRACK",
    "-A PREROUTING -p 6 -j NOTRACK",
    "-A PREROUTING -p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -j NOTRACK",
    "-A PREROUTING -p tcp -m tcp ! --dport 22 -j NOTRACK",
    "-A PREROUTING -p tcp -j DNS\n-A DNS -j NOTRACK",
])
def test_a_notrack_of_every_tcp_or_udp_packet_is_still_a_block(rules: str) -> None:
    """No port named: the pods' connections of that protocol, most of their egress,
    leave untranslated; a plan saying k3snet's rules met would be false for them."""
    found, partial = _raw(rules)
    assert {type(b) for b in found} == {ForwardBlock, NatBlock}
    assert partial == []


@pytest.mark.parametrize("rules", [
    "-A PREROUTING -p icmp -j NOTRACK",
    "-A PREROUTING -p tcp -m multiport --dports 80,443 -j NOTRACK",
    "-A PREROUTING -p udp -j DNS\n-A DNS -p udp -m udp --sport 123 -j NOTRACK",
])
def test_a_notrack_of_one_port_or_another_protocol_is_no_block(rules: str) -> None:
    found, partial = _raw(rules)
    assert found == set()
    assert {type(b) for b in partial} == {ForwardBlock, NatBlock}


def test_the_warning_names_the_rule_once_only_when_it_meets_a_wanted_rule() -> None:
    _, partial = _raw(f"-A PREROUTING -s {POD} -p udp --dport 53 -j NOTRACK")
    (said,) = partial_untracks(partial, [WANTED, MASQ], lambda _: "iptables-save -t raw")
    assert said.startswith(f"iptables IPv4 raw: -A PREROUTING -s {POD} -p udp --dport 53 "
                           "-j NOTRACK leaves the packets it matches, of one protocol, "
                           "untracked"), said
    assert "they leave untranslated and their replies are no established" in said, said
    assert WANTED.describe() in said or MASQ.describe() in said
    other = [MasqueradeRule("10.99.0.0/16", destination=DB),
             ForwardRule("10.99.0.0/16", DB)]
    assert partial_untracks(partial, other, lambda _: "iptables-save -t raw") == []


def test_an_nft_notrack_of_one_protocol_is_no_block_of_another_table() -> None:
    udp = {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}},
                     "right": 53}}
    reader = ForeignReader(raw([saddr(POD), udp, NOTRACK]), frozenset())
    assert not any(isinstance(o, NatBlock) for o in reader.read())
    (block,) = reader.partial
    assert isinstance(block, NatBlock)
    assert block.rule == "ip saddr 10.42.0.0/16 (and 1 more match, of udp) notrack"
    assert block.decides(MASQ)
    # the same without the protocol: a block, as before
    every = ForeignReader(raw([saddr(POD), NOTRACK]), frozenset())
    assert any(isinstance(o, NatBlock) for o in every.read())
    assert every.partial == []


def _l4proto(name: str) -> dict[str, object]:
    return {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": name}}


@pytest.mark.parametrize("tests", [
    [_l4proto("tcp")],
    [_l4proto("udp")],
    [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "protocol"}},
                "right": "tcp"}}],
    [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "flags"}},
                "right": "syn"}}],
    [_l4proto("tcp"), {"match": {"op": "!=", "left": {"payload": {
        "protocol": "tcp", "field": "dport"}}, "right": 22}}],
])
def test_an_nft_notrack_of_every_tcp_or_udp_packet_is_still_a_block(
        tests: list[dict[str, object]]) -> None:
    reader = ForeignReader(raw([saddr(POD), *tests, NOTRACK]), frozenset())
    found = reader.read()
    assert any(isinstance(o, NatBlock) and o.decides(MASQ) for o in found)
    assert reader.partial == []


@pytest.mark.parametrize("tests", [
    [_l4proto("icmp")],
    [_l4proto("udp"), {"match": {"op": "==", "left": {"payload": {
        "protocol": "th", "field": "dport"}}, "right": 53}}],
])
def test_an_nft_notrack_of_one_port_or_another_protocol_is_no_block(
        tests: list[dict[str, object]]) -> None:
    reader = ForeignReader(raw([saddr(POD), *tests, NOTRACK]), frozenset())
    assert not any(isinstance(o, NatBlock) for o in reader.read())
    assert reader.partial


@pytest.mark.kernel
@pytest.mark.lab
@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_a_dns_only_notrack_leaves_the_pods_tcp_egress_to_k3snets_rules_iptables(
        lab: SeedLab, mode: str) -> None:

    run_in(lab.node, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
    lab.block_forward("iptables-nft" if mode == "nft" else "iptables-legacy")
    run_in(lab.node, [f"iptables-{mode}", "-w", "-t", "raw", "-A", "PREROUTING", *DNS])
    with IptablesBackend(lab.node, mode=mode) as backend:  # type: ignore[arg-type]
        backend.expect(DESIRED)
        p = plan(backend.observe(), DESIRED)
        assert not p.conflicts, p.render()
        (said,) = [w for w in backend.warnings if "NOTRACK" in w]
        assert f"-A PREROUTING -s {POD} -p udp -m udp --dport 53 -j NOTRACK" in said, said
        backend.apply(p)
        assert lab.tcp_probe(4).ok  # a real TCP connection: tracked, masqueraded
        assert plan(backend.observe(), DESIRED).changes == ()


@pytest.mark.kernel
@pytest.mark.lab
def test_a_notrack_of_all_tcp_is_a_conflict_of_the_pods_rules_iptables(
        lab: SeedLab) -> None:
    """``-p tcp -j NOTRACK``, no port: the plan does not say met what no TCP connection
    of the pods gets through (a real connection, with k3snet's rules written anyway)."""

    run_in(lab.node, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
    lab.block_forward("iptables-nft")
    run_in(lab.node, ["iptables-nft", "-w", "-t", "raw", "-A", "PREROUTING", "-s", POD,
                      "-p", "tcp", "-j", "NOTRACK"])
    with IptablesBackend(lab.node, mode="nft") as backend:
        backend.expect(DESIRED)
        p = plan(backend.observe(), DESIRED)
        assert {c.wanted for c in p.conflicts} == {WANTED, MASQ}, p.render()
        assert all("-p tcp -j NOTRACK" in c.foreign.describe() for c in p.conflicts), \
            p.render()
        # what the plan would have said met: written, the connection still fails
        backend.apply(plan(State(), DESIRED))
        # unmasqueraded: its replies have no way back to the pod
        assert dropped(lab, 4, snmp_count(lab.router, "IpExt", "InNoRoutes"))


_NFT_DNS = ("table ip raw {\n  chain pre {\n"
            "    type filter hook prerouting priority raw; policy accept;\n"
            f"    ip saddr {POD} udp dport 53 notrack\n  }}\n}}\n")


@pytest.mark.kernel
@pytest.mark.lab
def test_a_dns_only_notrack_leaves_the_pods_tcp_egress_to_k3snets_rules_nftables(
        lab: SeedLab) -> None:
    from k3snet.backends.nftables import NftablesBackend  # noqa: PLC0415

    run_in(lab.node, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
    run_in(lab.node, ["nft", "-f", "-"], input_text=_NFT_DNS)
    with NftablesBackend(lab.node) as backend:
        backend.expect(DESIRED)
        p = plan(backend.observe(), DESIRED)
        assert not p.conflicts, p.render()
        (said,) = [w for w in backend.warnings if "notrack" in w]
        assert "nftables ip raw pre: ip saddr 10.42.0.0/16 (and 1 more match, of udp) " \
               "notrack" in said, said
        assert f"`ip netns exec {lab.node} nft list chain ip raw pre`" in said, said
        backend.apply(p)
        assert lab.tcp_probe(4).ok  # a real TCP connection: tracked, masqueraded
        assert plan(backend.observe(), DESIRED).changes == ()


@pytest.mark.kernel
@pytest.mark.lab
@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_another_nftables_tables_dns_only_notrack_is_named_by_the_iptables_backend(
        lab: SeedLab, mode: str) -> None:
    """An nftables table of another name beside iptables (``udp dport 53 notrack``): no
    block, and, as for raw's own, a warning naming it (the iptables backend said nothing:
    it named raw's notracks alone)."""

    run_in(lab.node, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
    # (a table of another name than iptables-nft's: ip raw is one of its own)
    run_in(lab.node, ["nft", "-f", "-"], input_text=_NFT_DNS.replace("ip raw", "ip dns"))
    with IptablesBackend(lab.node, mode=mode) as backend:  # type: ignore[arg-type]
        backend.expect(DESIRED)
        p = plan(backend.observe(), DESIRED)
        assert not p.conflicts, p.render()
        (said,) = [w for w in backend.warnings if "notrack" in w]
        assert said.startswith("nftables ip dns pre: ip saddr 10.42.0.0/16 (and 1 more "
                               "match, of udp) notrack leaves the packets"), said
        assert f"`ip netns exec {lab.node} nft list chain ip dns pre`" in said, said
