"""A ``notrack`` before conntrack, read by the nftables backend as the iptables backend reads
raw's ``-j CT --notrack``: an exempt :class:`~k3snet.model.NatBlock` ("no NAT"), since the
nat hooks see tracked connections only. Not read, the plan said the masquerade was in
place while the pods' traffic left untranslated (``tests/iptables/test_path_tables.py``
for the iptables backend's cases).
"""

from __future__ import annotations

from typing import Any

import pytest

from k3snet.backends.nftables.parse import ForeignReader
from k3snet.lab.netns import run_in
from k3snet.model import MasqueradeRule, NatBlock, NetObject, State
from k3snet.planner import plan
from tests.nftables.test_foreign_cases import ACCEPT, DROP, Expr, Kernel, daddr, jump, meta, saddr

POD = "10.42.0.0/16"
DB = "192.168.2.0/24"
NOTRACK: Expr = {"notrack": None}


class _Raw(Kernel):
    """Its prerouting chains at ``prio`` (raw's -300 by default)."""

    def __init__(self, chains: Any, prio: int) -> None:
        super().__init__(chains)
        self.prio = prio

    def _chain(self, key: tuple[str, str, str]) -> dict[str, Any]:
        found = super()._chain(key)
        if found["chain"].get("hook") == "prerouting":
            found["chain"]["prio"] = self.prio
        return found


def raw(*rules: list[Expr], prio: int = -300, family: str = "ip",
        **chains: list[list[Expr]]) -> _Raw:
    table: dict[tuple[str, str, str], tuple[str | None, str, list[list[Expr]]]] = {
        (family, "raw", "PREROUTING"): ("prerouting", "accept", list(rules))}
    table |= {(family, "raw", name): (None, "", body) for name, body in chains.items()}
    return _Raw(table, prio)


def untracked(kernel: Kernel) -> set[NetObject]:
    found = ForeignReader(kernel, frozenset()).read()
    return {o for o in found if isinstance(o, NatBlock)}


def exempt(text: str, where: str = "nftables ip raw PREROUTING", family: int = 4,
           **fields: Any) -> NatBlock:
    return NatBlock(family, "exempt", text, where, **fields)


def test_a_notrack_of_the_pods_is_no_nat_and_a_conflict_of_their_masquerade() -> None:
    found = untracked(raw([saddr(POD), {"counter": None}, NOTRACK]))
    assert found == {exempt(f"ip saddr {POD} notrack", source=POD)}
    wanted = State(owned=[MasqueradeRule(POD, destination=DB, out_interface="eth0")])
    assert plan(State(foreign=list(found)), wanted).conflicts


def test_a_notrack_in_a_chain_jumped_to_is_read_there() -> None:
    found = untracked(raw([jump("ADMIN")], ADMIN=[[daddr(DB), NOTRACK]]))
    assert found == {exempt(f"ip daddr {DB} notrack", "nftables ip raw ADMIN",
                            destination=DB)}


def test_an_inet_notrack_naming_no_family_is_one_of_each() -> None:
    found = untracked(raw([meta("iifname", "cni0"), NOTRACK], family="inet"))
    assert found == {exempt("iifname cni0 notrack", "nftables inet raw PREROUTING", family=f)
                     for f in (4, 6)}


@pytest.mark.parametrize("prio", [-200, -150, 0])
def test_a_notrack_at_or_after_conntrack_changes_nothing(prio: int) -> None:
    # The packet is tracked already: notrack there has no effect on NAT.
    assert untracked(raw([saddr(POD), NOTRACK], prio=prio)) == set()


@pytest.mark.parametrize("first", [ACCEPT, DROP])
def test_a_notrack_after_a_rule_ending_the_chain_for_every_packet_is_unreached(
        first: Expr) -> None:
    assert untracked(raw([first], [saddr(POD), NOTRACK])) == set()


def test_a_notrack_testing_a_mark_is_none_as_in_the_iptables_backend() -> None:
    assert untracked(raw([meta("mark", 1), NOTRACK])) == set()


@pytest.mark.kernel
def test_iptables_nfts_raw_notrack_is_a_conflict_of_the_masquerade(ns: str) -> None:
    """``iptables-nft -t raw -A PREROUTING -s POD -j CT --notrack``, read through nft."""
    from k3snet.backends.nftables import NftablesBackend  # noqa: PLC0415

    run_in(ns, ["iptables-nft", "-t", "raw", "-A", "PREROUTING", "-s", POD, "-j", "CT",
                "--notrack"])
    wanted = State(owned=[MasqueradeRule(POD, destination=DB, out_interface="eth0")])
    with NftablesBackend(ns) as backend:
        observed = backend.observe()
        (block,) = [b for b in observed.foreign if isinstance(b, NatBlock)]
        assert (block.action, str(block.source)) == ("exempt", POD)
        assert plan(observed, wanted).conflicts


_NATIVE = ["nft", "add table ip raw; add chain ip raw pre { type filter hook prerouting "
           f"priority raw; }}; add rule ip raw pre ip saddr {POD} notrack"]
_IPTABLES_NFT = ["iptables-nft", "-w", "-t", "raw", "-A", "PREROUTING", "-s", POD, "-j", "CT",
                 "--notrack"]


@pytest.mark.kernel
@pytest.mark.lab
@pytest.mark.parametrize("command", [_NATIVE, _IPTABLES_NFT], ids=["nft", "iptables-nft"])
def test_untracked_pod_traffic_leaves_unmasqueraded_and_is_a_conflict(
        require_root: None, command: list[str]) -> None:
    """The nftables backend's masquerade is in place, the connection fails all the same
    (no NAT: no way back to the pod), and the plan says why."""
    from k3snet.backends.nftables import NftablesBackend  # noqa: PLC0415
    from k3snet.lab import SeedLab  # noqa: PLC0415
    from k3snet.model import ForwardRule  # noqa: PLC0415

    masquerade = MasqueradeRule(POD, destination=DB, out_interface="eth0")
    wanted = State(owned=[ForwardRule(POD, DB, in_interface="cni0", out_interface="eth0"),
                          masquerade])
    with SeedLab.create() as lab:
        run_in(lab.node, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
        with NftablesBackend(lab.node) as backend:
            backend.apply(plan(backend.observe(), wanted))
            assert lab.tcp_probe(4).ok
            run_in(lab.node, command)
            assert not lab.tcp_probe(4, timeout=1.0).ok  # no NAT: no way back to the pod
            p = plan(backend.observe(), wanted)
            (note,) = p.conflicts
            assert note.wanted == masquerade, p.render()
            assert isinstance(note.foreign, NatBlock), p.render()
            assert note.foreign.action == "exempt"
