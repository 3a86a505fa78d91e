"""A ``notrack`` before conntrack, read by the nftables backend as the iptables backend reads
raw's ``-j CT --notrack``: an exempt :class:`~k3snet.model.NatBlock` ("no NAT"), since the
nat hooks see tracked connections only. Not read, the plan said the masquerade was in
place while the pods' traffic left untranslated (``tests/iptables/test_path_tables.py``
for the iptables backend's cases).
"""

from __future__ import annotations

import shlex
import struct
from typing import Any

import pytest

from k3snet.backends.nftables.kernel import CT_FLAGS
from k3snet.backends.nftables.parse import ForeignReader
from k3snet.lab import SeedLab
from k3snet.lab.netns import run_in
from k3snet.model import ForwardBlock, ForwardRule, MasqueradeRule, NatBlock, NetObject, State
from k3snet.planner import plan
from tests.dropped import dropped, snmp_count
from tests.nftables.test_foreign_cases import ACCEPT, DROP, Expr, Kernel, daddr, jump, meta, saddr
from tests.shared_lab import lab_fixture, made_lab_fixture  # noqa: F401 - one lab for the module

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


def _untracked_under(policy: str, forward: list[list[Expr]], *notracks: list[Expr]) -> _Raw:
    """Raw's notracks beside another table's forward chain (``inet fw pass``)."""
    kernel = raw(*notracks)
    kernel.chains[("inet", "fw", "pass")] = ("forward", policy, forward)
    return kernel


def untrack_blocks(kernel: Kernel) -> set[str]:
    return {o.describe() for o in ForeignReader(kernel, frozenset()).read()
            if isinstance(o, ForwardBlock) and o.verdict == "untrack"}


REPLIES: Expr = {"match": {"op": "in", "left": {"ct": {"key": "state"}},
                           "right": ["established", "related"]}}
PODS_OUT = [saddr(POD), daddr(DB), ACCEPT]
WANTED_FORWARD = ForwardRule(POD, DB, in_interface="cni0", out_interface="eth0")


@pytest.mark.parametrize("untracked", [saddr(POD), daddr(POD)], ids=["pods", "replies"])
def test_a_notrack_under_a_forward_policy_drop_accepting_replies_by_conntrack_is_a_conflict(
        untracked: Expr) -> None:
    kernel = _untracked_under("drop", [[REPLIES, ACCEPT], PODS_OUT], [untracked, NOTRACK])
    found = ForeignReader(kernel, frozenset()).read()
    (block,) = [o for o in found if isinstance(o, ForwardBlock)]
    assert block.verdict == "untrack"
    assert block.where == "nftables ip raw PREROUTING"
    assert block.rule.endswith("notrack (then nftables inet fw pass: policy drop)")
    # the chain's accept of the pods is no foreign forward rule meeting the wanted one:
    # its replies are accepted by conntrack alone
    assert not any(isinstance(o, ForwardRule) for o in found)
    p = plan(State(foreign=list(found)), State(owned=[WANTED_FORWARD]))
    (note,) = p.conflicts
    assert note.foreign == block
    assert "untracked" in (note.reason or "")


def test_a_notrack_under_a_forward_chains_last_drop_of_every_packet_is_a_conflict() -> None:
    kernel = _untracked_under("accept", [[REPLIES, ACCEPT], PODS_OUT, [DROP]],
                              [saddr(POD), NOTRACK])
    assert untrack_blocks(kernel) == {
        f"untrack by nftables ip raw PREROUTING: ip saddr {POD} notrack (then nftables inet "
        "fw pass: drop (a rule of every packet))"}


def test_a_notrack_whose_flow_the_forward_chain_accepts_both_ways_by_address_is_none() -> None:
    # Untracked, the packets of both ways are still accepted: the connection works.
    answered = [saddr(DB), daddr(POD), ACCEPT]
    kernel = _untracked_under("drop", [[REPLIES, ACCEPT], PODS_OUT, answered],
                              [saddr(POD), NOTRACK])
    found = ForeignReader(kernel, frozenset()).read()
    assert not plan(State(foreign=list(found)), State(owned=[WANTED_FORWARD])).conflicts


@pytest.mark.parametrize("forward", [
    [[REPLIES, ACCEPT], PODS_OUT],  # policy accept, nothing dropped
    [[REPLIES, ACCEPT], PODS_OUT, [meta("iifname", "eth9"), DROP]],  # not every packet
    [[ACCEPT], [DROP]],  # accepted whole before the drop
], ids=["policy-accept", "conditional-drop", "accepted-whole"])
def test_a_notrack_under_a_forward_chain_that_drops_nothing_untracked_is_none(
        forward: list[list[Expr]]) -> None:
    assert untrack_blocks(_untracked_under("accept", forward, [saddr(POD), NOTRACK])) == set()


def test_a_notrack_after_conntrack_or_testing_a_mark_is_no_untrack_block() -> None:
    forward = [[REPLIES, ACCEPT], PODS_OUT]
    assert untrack_blocks(_untracked_under("drop", forward, [meta("mark", 1), NOTRACK])) == set()
    late = _untracked_under("drop", forward, [saddr(POD), NOTRACK])
    late.prio = -150
    assert untrack_blocks(late) == set()


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


def _ct(flags: int | None) -> Expr:
    """iptables-nft's ``-j CT`` as listed: its name alone, and the kernel's flags when the
    backend's listing read them."""
    body: dict[str, Any] = {"type": "target", "name": "CT"}
    if flags is not None:
        body[CT_FLAGS] = flags
    return {"xt": body}


@pytest.mark.parametrize("flags", [1, 3], ids=["ct-notrack", "NOTRACK"])
def test_an_xt_ct_whose_kernel_flags_say_notrack_is_no_nat(flags: int) -> None:
    assert untracked(raw([saddr(POD), _ct(flags)])) == {
        exempt(f"ip saddr {POD} xt CT --notrack", source=POD)}


def test_an_xt_ct_of_a_zone_or_a_helper_is_tracked_and_no_block() -> None:
    reader = ForeignReader(raw([saddr(POD), _ct(0)]), frozenset())
    assert not any(isinstance(o, NatBlock) for o in reader.read())
    assert reader.defaults().doubts == ()


def test_an_xt_ct_whose_flags_were_not_read_is_a_doubt_said_not_a_conflict() -> None:
    reader = ForeignReader(raw([saddr(POD), _ct(None)]), frozenset())
    found = reader.read()
    assert not any(isinstance(o, NatBlock) for o in found)
    (doubt,) = reader.defaults().doubts
    said = doubt.said()
    assert said.startswith(f"iptables-nft's -j CT in ip raw PREROUTING (ip saddr {POD} xt "
                           "target CT) was listed without its options")
    assert said.endswith("; `iptables-nft-save -t raw` shows them)")
    wanted = State(owned=[MasqueradeRule(POD, destination=DB, out_interface="eth0")])
    assert not plan(State(foreign=list(found)), wanted).conflicts


def test_a_doubt_names_its_familys_save_as_run_where_the_backend_read() -> None:
    """An IPv6 -j CT listed without its options named ``iptables-nft-save -t raw``, IPv4's
    tool, and alone: the doubt names its family's, joined where the backend shows it
    (``ip netns exec NS`` first, :func:`~k3snet.backends.netns.shown_command`)."""
    pods = "fd42:42::/56"
    reader = ForeignReader(raw([saddr(pods), _ct(None)], family="ip6"), frozenset())
    reader.read()
    (doubt,) = reader.defaults().doubts
    assert doubt.command == ("ip6tables-nft-save", "-t", "raw")
    shown = doubt.said(lambda argv: shlex.join(["ip", "netns", "exec", "lab 1", *argv]))
    assert shown.endswith("; `ip netns exec 'lab 1' ip6tables-nft-save -t raw` shows them)")


@pytest.mark.kernel
@pytest.mark.parametrize("options", [["--zone", "1"], ["--helper", "ftp"]],
                         ids=["zone", "helper"])
def test_iptables_nfts_raw_ct_of_a_zone_or_a_helper_is_no_conflict(
        ns: str, options: list[str]) -> None:
    """libnftables lists ``-j CT --zone 1`` as ``-j CT --notrack`` is (``xt target CT``):
    read as a notrack, it was a false "no NAT" conflict. The kernel's own view of the
    target (its flags) tells them apart."""
    from k3snet.backends.nftables import NftablesBackend  # noqa: PLC0415

    proto = ["-p", "tcp", "--dport", "21"] if options[0] == "--helper" else []
    run_in(ns, ["iptables-nft", "-w", "-t", "raw", "-A", "PREROUTING", "-s", POD, *proto,
                "-j", "CT", *options])
    run_in(ns, ["iptables-nft", "-w", "-t", "raw", "-A", "PREROUTING", "-s", "10.99.0.0/16",
                "-j", "NOTRACK"])
    wanted = State(owned=[MasqueradeRule(POD, destination=DB, out_interface="eth0")])
    with NftablesBackend(ns) as backend:
        observed = backend.observe()
        assert {str(b.source) for b in observed.foreign if isinstance(b, NatBlock)} == {
            "10.99.0.0/16"}  # the real notrack beside it still is one
        assert not plan(observed, wanted).conflicts
        assert backend.warnings == ()


class _GetruleCount:
    """A :class:`GenerationReader`'s socket, counting the ``GETRULE`` requests naming a
    chain sent (not the dump of the rules the check of strings before a JSON listing
    makes: :meth:`~k3snet.backends.nfgen.GenerationReader.unprintable_contents`, which
    the ``getrules`` fixture leaves uncounted)."""

    def __init__(self, sock: Any, sent: list[int]) -> None:
        self._sock = sock
        self._sent = sent

    def send(self, data: bytes) -> int:
        if struct.unpack_from("=H", data, 4)[0] == (10 << 8) | 7 and len(data) > 20:  # GETRULE
            self._sent.append(struct.unpack_from("=H", data, 6)[0])
        return int(self._sock.send(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


@pytest.fixture
def getrules(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The flags of every ``GETRULE`` request a :class:`GenerationReader` sends, in order."""
    from k3snet.backends import nfgen  # noqa: PLC0415

    sent: list[int] = []
    made = nfgen.GenerationReader.__init__

    def counting(self: nfgen.GenerationReader) -> None:
        made(self)
        self._sock = _GetruleCount(self._sock, sent)  # type: ignore[assignment]

    checked = nfgen.GenerationReader.unprintable_contents

    def uncounted(self: nfgen.GenerationReader, *args: Any, **kwargs: Any
                  ) -> list[tuple[str, str, str, str, int]]:
        counted = self._sock
        self._sock = counted._sock  # type: ignore[attr-defined]
        try:
            return checked(self, *args, **kwargs)
        finally:
            self._sock = counted

    monkeypatch.setattr(nfgen.GenerationReader, "__init__", counting)
    monkeypatch.setattr(nfgen.GenerationReader, "unprintable_contents", uncounted)
    return sent


@pytest.mark.kernel
def test_iptables_nfts_ct_targets_are_read_with_one_rule_dump_per_chain(
        ns: str, getrules: list[int]) -> None:
    """OpenStack Neutron writes one ``-j CT --zone N`` per port: a ``GETRULE`` round trip
    per rule cost a cold observe ~20 ms of CPU at 2 000. Each chain's targets come from
    one rule dump; what is read of each stays its own (a --notrack among the zones)."""
    from k3snet.backends.nftables import NftablesBackend  # noqa: PLC0415

    lines = ["*raw", *(f"-A PREROUTING -s 10.{100 + n // 250}.{n % 250}.0/24 -j CT --zone {n + 1}"
                       for n in range(40)),
             f"-A PREROUTING -s {POD} -j CT --notrack", "COMMIT", ""]
    run_in(ns, ["iptables-nft-restore", "-w"], input_text="\n".join(lines))
    with NftablesBackend(ns) as backend:
        observed = backend.observe()
        assert {str(b.source) for b in observed.foreign if isinstance(b, NatBlock)} == {POD}
        assert backend.warnings == ()
    assert len(getrules) == 1, getrules  # one request, not one per rule
    assert getrules[0] & 0x300 == 0x300  # NLM_F_DUMP


@pytest.mark.kernel
def test_a_few_ct_targets_in_a_long_chain_are_read_one_request_each_not_by_a_dump(
        ns: str, getrules: list[int]) -> None:
    """A dump of a long chain costs more than a few requests (5 000 rules: ~10 ms, one
    request ~25 µs): two ``-j CT`` among 300 accepts are read one ``GETRULE`` each."""
    from k3snet.backends.nftables import NftablesBackend  # noqa: PLC0415

    lines = ["*raw", *(f"-A PREROUTING -s 10.{100 + n // 250}.{n % 250}.0/24 -j ACCEPT"
                       for n in range(300)),
             f"-A PREROUTING -s {POD} -j CT --notrack", "-A PREROUTING -j CT --zone 4",
             "COMMIT", ""]
    run_in(ns, ["iptables-nft-restore", "-w"], input_text="\n".join(lines))
    with NftablesBackend(ns) as backend:
        observed = backend.observe()
        assert {str(b.source) for b in observed.foreign if isinstance(b, NatBlock)} == {POD}
        assert backend.warnings == ()
    assert len(getrules) == 2, getrules
    assert not any(flags & 0x300 for flags in getrules)  # no dump


_NATIVE = ["nft", "add table ip raw; add chain ip raw pre { type filter hook prerouting "
           f"priority raw; }}; add rule ip raw pre ip saddr {POD} notrack"]
_IPTABLES_NFT = ["iptables-nft", "-w", "-t", "raw", "-A", "PREROUTING", "-s", POD, "-j", "CT",
                 "--notrack"]


@pytest.mark.kernel
@pytest.mark.lab
@pytest.mark.parametrize("command", [_NATIVE, _IPTABLES_NFT], ids=["nft", "iptables-nft"])
def test_untracked_pod_traffic_leaves_unmasqueraded_and_is_a_conflict(
        lab: SeedLab, command: list[str]) -> None:
    """The nftables backend's masquerade is in place, the connection fails all the same
    (no NAT: no way back to the pod), and the plan says why."""
    from k3snet.backends.nftables import NftablesBackend  # noqa: PLC0415

    masquerade = MasqueradeRule(POD, destination=DB, out_interface="eth0")
    wanted = State(owned=[ForwardRule(POD, DB, in_interface="cni0", out_interface="eth0"),
                          masquerade])
    run_in(lab.node, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
    with NftablesBackend(lab.node) as backend:
        backend.apply(plan(backend.observe(), wanted))
        assert lab.tcp_probe(4).ok
        run_in(lab.node, command)
        assert dropped(lab, 4, snmp_count(  # no NAT: no way back to the pod
            lab.router, "IpExt", "InNoRoutes"))
        p = plan(backend.observe(), wanted)
        (note,) = p.conflicts
        assert note.wanted == masquerade, p.render()
        assert isinstance(note.foreign, NatBlock), p.render()
        assert note.foreign.action == "exempt"


def _fw(default: str, *accepts: str) -> str:
    """Another table's forward chain: the pods' connections accepted, their replies by
    conntrack (``ct state established,related accept``), the rest dropped by ``default``
    (``policy drop`` or a last ``reject``)."""
    policy = "drop" if default == "policy drop" else "accept"
    last = "" if default == "policy drop" else f"add rule inet fw pass {default}\n"
    return ("add table inet fw\n"
            f"add chain inet fw pass {{ type filter hook forward priority 0; policy {policy}; }}\n"
            "add rule inet fw pass ct state established,related accept\n"
            f"add rule inet fw pass ip saddr {POD} ip daddr {DB} accept\n"
            + "".join(f"add rule inet fw pass {accept} accept\n" for accept in accepts)
            + last)


_NOTRACK = ("add table ip raw\nadd chain ip raw pre {{ type filter hook prerouting priority "
            "raw; }}\nadd rule ip raw pre ip saddr {} notrack\n")


@pytest.mark.kernel
@pytest.mark.lab
@pytest.mark.parametrize("default", ["policy drop", "reject"])
@pytest.mark.parametrize("untracked", [POD, DB], ids=["pods-packets", "replies"])
def test_untracked_traffic_under_another_tables_forward_default_is_dropped_and_a_conflict(
        lab: SeedLab, default: str, untracked: str) -> None:
    """No NAT here (the router routes the pod CIDR back): the forward path alone decides.
    Another table's forward chain accepts the pods' connections and their replies by
    conntrack; with a notrack before conntrack, an untracked packet's reply is a new
    connection's and an untracked reply none's: the chain's default drops them, as
    iptables' FORWARD policy does (``tests/iptables/test_path_tables.py``)."""
    _untracked_is_dropped_and_a_conflict(
        lab, ForwardRule(POD, DB, in_interface="cni0", out_interface="eth0"), _fw(default),
        untracked)


def _untracked_is_dropped_and_a_conflict(lab: SeedLab, rule: ForwardRule, firewall: str,
                                         untracked: str) -> None:
    """With ``firewall`` (``nft -f`` text) on the node, k3snet's ``rule`` connects the pod
    to the database with no conflict; once a notrack of ``untracked`` is added, a real
    connection is dropped and the plan says so: one conflict of ``rule`` with an
    ``untrack`` block, and no change."""
    from k3snet.backends.nftables import NftablesBackend  # noqa: PLC0415

    wanted = State(owned=[rule])
    run_in(lab.node, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
    run_in(lab.router, ["ip", "route", "add", POD, "via", "192.168.1.5"])
    run_in(lab.node, ["nft", "-f", "-"], input_text=firewall)
    with NftablesBackend(lab.node) as backend:
        backend.apply(plan(backend.observe(), wanted))
        assert lab.tcp_probe(4).ok
        assert not plan(backend.observe(), wanted).conflicts
        run_in(lab.node, ["nft", "-f", "-"], input_text=_NOTRACK.format(untracked))
        assert not lab.tcp_probe(4, timeout=1.0).ok  # a real connection: dropped
        p = plan(backend.observe(), wanted)
        (note,) = p.conflicts
        assert note.wanted == rule, p.render()
        assert isinstance(note.foreign, ForwardBlock), p.render()
        assert note.foreign.verdict == "untrack"
        assert not p.changes, p.render()


@pytest.mark.kernel
@pytest.mark.lab
def test_untracked_traffic_a_forward_chain_accepts_both_ways_by_address_connects_no_conflict(
        lab: SeedLab) -> None:
    """The same chain accepting the replies by their addresses too: the untracked flow
    passes both ways (a real connection), and the plan has no conflict."""
    from k3snet.backends.nftables import NftablesBackend  # noqa: PLC0415

    wanted = State(owned=[WANTED_FORWARD])
    run_in(lab.node, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
    run_in(lab.router, ["ip", "route", "add", POD, "via", "192.168.1.5"])
    run_in(lab.node, ["nft", "-f", "-"],
           input_text=_fw("policy drop", f"ip saddr {DB} ip daddr {POD}"))
    run_in(lab.node, ["nft", "-f", "-"], input_text=_NOTRACK.format(POD))
    with NftablesBackend(lab.node) as backend:
        backend.apply(plan(backend.observe(), wanted))
        assert lab.tcp_probe(4).ok
        p = plan(backend.observe(), wanted)
        assert not p.conflicts, p.render()


class _Path(_Raw):
    """Raw's chains, and another table's filter chain ``inet fw pass`` on ``hook``
    (priority 0: after conntrack)."""

    def __init__(self, chains: Any, prio: int, hook: str) -> None:
        super().__init__(chains, prio)
        self.hook = hook

    def _chain(self, key: tuple[str, str, str]) -> dict[str, Any]:
        if key != ("inet", "fw", "pass"):
            return super()._chain(key)
        return {"chain": {"family": "inet", "table": "fw", "name": "pass", "handle": 1,
                          "type": "filter", "hook": self.hook, "prio": 0,
                          "policy": self.chains[key][1]}}


def _untracked_on(hook: str, policy: str, rules: list[list[Expr]],
                  *notracks: list[Expr]) -> _Path:
    kernel = _Path(raw(*notracks).chains, -300, hook)
    kernel.chains[("inet", "fw", "pass")] = (hook, policy, rules)
    return kernel


@pytest.mark.parametrize("hook", ["prerouting", "postrouting"])
@pytest.mark.parametrize("untracked", [saddr(POD), daddr(POD)], ids=["pods", "replies"])
def test_a_notrack_under_a_path_chains_policy_drop_accepting_replies_by_conntrack_conflicts(
        hook: str, untracked: Expr) -> None:
    """Forwarded packets pass the filter chains on the prerouting and postrouting hooks
    too: one whose policy drops what it does not accept, its replies by conntrack, drops
    an untracked flow's replies as a forward chain's does."""
    kernel = _untracked_on(hook, "drop", [[REPLIES, ACCEPT], PODS_OUT], [untracked, NOTRACK])
    found = ForeignReader(kernel, frozenset()).read()
    (block,) = [o for o in found if isinstance(o, ForwardBlock)]
    assert block.verdict == "untrack"
    assert block.rule.endswith("notrack (then nftables inet fw pass: policy drop)")
    (note,) = plan(State(foreign=list(found)), State(owned=[WANTED_FORWARD])).conflicts
    assert note.foreign == block
    last = _untracked_on(hook, "accept", [[REPLIES, ACCEPT], PODS_OUT, [DROP]],
                         [untracked, NOTRACK])
    assert untrack_blocks(last) == {block.describe().replace(
        "policy drop", "drop (a rule of every packet)")}


@pytest.mark.parametrize("hook", ["prerouting", "postrouting"])
def test_a_notrack_a_prerouting_or_postrouting_chain_accepts_both_ways_by_address_is_none(
        hook: str) -> None:
    answered = [saddr(DB), daddr(POD), ACCEPT]
    kernel = _untracked_on(hook, "drop", [[REPLIES, ACCEPT], PODS_OUT, answered],
                           [saddr(POD), NOTRACK])
    found = ForeignReader(kernel, frozenset()).read()
    assert not plan(State(foreign=list(found)), State(owned=[WANTED_FORWARD])).conflicts
    assert untrack_blocks(_untracked_on(hook, "accept", [[REPLIES, ACCEPT], PODS_OUT],
                                        [saddr(POD), NOTRACK])) == set()


@pytest.mark.kernel
@pytest.mark.lab
@pytest.mark.parametrize("hook", ["prerouting", "postrouting"])
def test_untracked_traffic_under_a_path_chains_policy_drop_is_dropped_and_a_conflict(
        lab: SeedLab, hook: str) -> None:
    """Another table's filter chain on the prerouting (or postrouting) hook, policy drop,
    accepting the pods' connections and their replies by conntrack: with the pods'
    packets untracked, their replies are a new connection's and that chain drops them
    (a real connection). Only forward-hook chains were judged: the plan said nothing."""
    chain = (f"add table inet fw\nadd chain inet fw pass {{ type filter hook {hook} "
             "priority 0; policy drop; }\n"
             "add rule inet fw pass ct state established,related accept\n"
             f"add rule inet fw pass ip saddr {POD} ip daddr {DB} accept\n")
    _untracked_is_dropped_and_a_conflict(lab, WANTED_FORWARD, chain, POD)
