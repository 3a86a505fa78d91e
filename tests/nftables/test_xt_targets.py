"""iptables-nft's compat targets k3snet cannot see into (libnftables lists ``xt target
NAME`` and hides the options), each read as what it may do and never as something else:
``-j NFQUEUE`` is a queue (a program decides: an unheard packet is dropped), ``-j NETMAP``
(or any other opaque target) in a nat chain on the postrouting hook may translate the
connection, as ``-j SNAT``; an opaque target in a forward chain accepts nothing. Read as
a target that does nothing, each was no block while the pods' connections failed (the
iptables backend reported both). A target the kernel goes on after (``XT_CONTINUE``:
``-j AUDIT``) is read as nothing, and ``-j SNAT --to-source ADDR`` as ``snat to ADDR``
from the kernel's target data (both were false conflicts). Real connections through the
seed lab.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from k3snet.backends.nftables.kernel import SNAT_TO, TTL_ARGS
from k3snet.backends.nftables.parse import ForeignReader
from k3snet.lab import SeedLab
from k3snet.lab.netns import run_in
from k3snet.model import (
    ForwardBlock,
    ForwardRule,
    MasqueradeRule,
    NatBlock,
    SnatRule,
    State,
)
from k3snet.planner import plan
from tests.dropped import dropped, iptables_count
from tests.nftables.test_foreign_cases import ACCEPT, CT_REPLY, Expr, daddr, forward, nat, saddr
from tests.shared_lab import lab_fixture, made_lab_fixture  # noqa: F401 - one lab for the module

POD = "10.42.0.0/16"
DB = "192.168.2.0/24"


def _xt(name: str) -> Expr:
    return {"xt": {"type": "target", "name": name}}


@pytest.mark.parametrize("name", ["NFQUEUE", "QUEUE"])
def test_an_xt_queue_target_is_a_queue_block(name: str) -> None:
    found = ForeignReader(forward(("accept", [[daddr(DB), _xt(name)]])), frozenset()).read()
    assert {b.describe() for b in found if isinstance(b, ForwardBlock)} == {
        f"queue by nftables inet fw0 forward: ip daddr {DB} queue"}


@pytest.mark.parametrize("name", ["NETMAP", "SOMETHING"])
def test_an_opaque_xt_target_in_a_nat_chain_may_translate(name: str) -> None:
    kernel = nat([saddr(POD), _xt(name)], [saddr(POD), {"masquerade": None}], family="ip")
    kernel.nat_prio = 100
    found = ForeignReader(kernel, frozenset()).read()
    (block,) = [b for b in found if isinstance(b, NatBlock) and "xt target" in b.rule]
    assert (block.action, str(block.source), block.to_address) == ("snat", POD, None)
    assert block.rule == (f"ip saddr {POD} xt target {name} (a target k3snet cannot see "
                          "into: it may translate, to an address k3snet does not model)")
    # the masquerade after it is not read as meeting k3snet's: the target may take all
    assert not any(isinstance(o, MasqueradeRule) for o in found)
    wanted = State(owned=[MasqueradeRule(POD, destination=DB, out_interface="eth0")])
    assert plan(State(foreign=list(found)), wanted).conflicts


@pytest.mark.parametrize("name", ["AUDIT", "SET", "TEE", "TTL", "HL", "IDLETIMER", "SECMARK"])
def test_an_xt_target_the_kernel_continues_after_translates_nothing(name: str) -> None:
    """The kernel's xt module returns ``XT_CONTINUE``: the packet goes on to the next
    rule, untranslated (read as a target that may translate, a false conflict). A TTL or
    HL one sets a value that does not expire the packet (the kernel's data, TTL_ARGS)."""
    xt = _xt(name)
    if name in ("TTL", "HL"):
        xt["xt"][TTL_ARGS] = [f"--{name.lower()}-set", "64"]
    kernel = nat([saddr(POD), xt], [saddr(POD), {"masquerade": None}], family="ip")
    kernel.nat_prio = 100
    found = ForeignReader(kernel, frozenset()).read()
    assert not any(isinstance(b, NatBlock) and "xt target" in b.rule for b in found)
    assert MasqueradeRule(POD) in found  # the masquerade after it is met
    wanted = State(owned=[MasqueradeRule(POD, destination=DB, out_interface="eth0")])
    assert not plan(State(foreign=list(found)), wanted).conflicts


@pytest.mark.parametrize(("args", "block"), [
    (["--ttl-set", "1"], True), (["--ttl-dec", "1"], False), (["--ttl-inc", "1"], False),
    (None, True),  # not read: a doubt counts against the flow
])
def test_an_xt_ttl_target_that_expires_the_packet_is_a_drop(args: list[str] | None,
                                                            block: bool) -> None:
    xt = _xt("TTL")
    if args is not None:
        xt["xt"][TTL_ARGS] = args
    found = ForeignReader(forward(("accept", [[saddr(POD), xt]])), frozenset()).read()
    described = {b.describe() for b in found if isinstance(b, ForwardBlock)}
    text = " ".join(["xt target TTL", *(args or ())])
    assert described == ({f"drop by nftables inet fw0 forward: ip saddr {POD} {text}"}
                         if block else set())


def _xt_snat(to: Mapping[str, object] | None) -> Expr:
    """iptables-nft's ``-j SNAT`` as listed, with what the kernel's data gave (SNAT_TO)."""
    body: dict[str, object] = {"type": "target", "name": "SNAT"}
    if to is not None:
        body[SNAT_TO] = to
    return {"xt": body}


def _nat_blocks_of(*rules: list[Expr]) -> set[tuple[str, str, str | None]]:
    kernel = nat(*rules, family="ip")
    kernel.nat_prio = 100
    return {(b.action, b.rule, str(b.to_address) if b.to_address else None)
            for b in ForeignReader(kernel, frozenset()).read() if isinstance(b, NatBlock)}


def test_an_xt_snat_whose_kernel_data_names_one_address_is_that_snat() -> None:
    to = {"addr": "192.0.2.7", "flags": ["fully-random"]}
    kernel = nat([saddr(POD), _xt_snat(to)], family="ip")
    kernel.nat_prio = 100
    found = ForeignReader(kernel, frozenset()).read()
    assert {(b.action, b.rule, str(b.to_address)) for b in found if isinstance(b, NatBlock)} == {
        ("snat", f"ip saddr {POD} snat to 192.0.2.7", "192.0.2.7")}
    assert SnatRule(POD, to_address="192.0.2.7", random_fully=True) in found
    snat = SnatRule(POD, destination=DB, out_interface="eth0", to_address="192.0.2.7")
    assert not plan(State(foreign=list(found)), State(owned=[snat])).conflicts
    other = SnatRule(POD, destination=DB, out_interface="eth0", to_address="192.0.2.8")
    assert plan(State(foreign=list(found)), State(owned=[other])).conflicts


@pytest.mark.parametrize("to", [None, {"addr": "192.0.2.7", "flags": ["persistent"]},
                                {"addr": 7, "flags": []}, {"addr": "192.0.2.7"}],
                         ids=["not-read", "persistent", "no-text", "no-flags"])
def test_an_xt_snat_not_read_as_one_address_stays_one_k3snet_does_not_model(
        to: Mapping[str, object] | None) -> None:
    assert _nat_blocks_of([saddr(POD), _xt_snat(to)]) == {
        ("snat", f"ip saddr {POD} snat (to an address or range k3snet does not model)", None)}


def test_an_opaque_xt_target_in_a_forward_chain_accepts_nothing() -> None:
    kernel = forward(("drop", [[saddr(POD), daddr(DB), _xt("SOMETHING")],
                               [saddr(DB), daddr(POD), _xt("SOMETHING")], [CT_REPLY, ACCEPT]]))
    found = ForeignReader(kernel, frozenset()).read()
    assert not any(isinstance(o, ForwardRule) for o in found)


@pytest.mark.kernel
def test_iptables_nfts_snat_to_one_address_is_read_from_the_kernels_data(ns: str) -> None:
    """``-j SNAT --to-source ADDR`` through iptables-nft and ip6tables-nft: libnftables
    lists ``xt target SNAT``; the address is in the kernel's target data (IPv4: revision
    0, ip6tables: revision 1). A range or ports stay an address k3snet does not model."""
    from k3snet.backends.nftables import NftablesBackend  # noqa: PLC0415

    for tool, rule in (
            ("iptables-nft", ["-s", POD, "-d", DB, "-j", "SNAT", "--to-source", "192.0.2.7",
                              "--random-fully"]),
            ("iptables-nft", ["-s", POD, "-j", "SNAT", "--to-source", "192.0.2.8-192.0.2.9"]),
            ("iptables-nft", ["-s", POD, "-p", "tcp", "-j", "SNAT", "--to-source",
                              "192.0.2.10:1000-2000"]),
            ("ip6tables-nft", ["-s", "fd42::/64", "-j", "SNAT", "--to-source", "2001:db8::7"])):
        run_in(ns, [tool, "-w", "-t", "nat", "-A", "POSTROUTING", *rule])
    with NftablesBackend(ns) as backend:
        found = backend.observe().foreign
    assert {(b.rule, b.to_address and str(b.to_address))
            for b in found if isinstance(b, NatBlock)} == {
        (f"ip saddr {POD} ip daddr {DB} snat to 192.0.2.7", "192.0.2.7"),
        (f"ip saddr {POD} snat (to an address or range k3snet does not model)", None),
        (f"ip saddr {POD} (and 1 more match) snat (to an address or range k3snet does not "
         "model)", None),
        ("ip6 saddr fd42::/64 snat to 2001:db8::7", "2001:db8::7")}
    assert {o for o in found if isinstance(o, SnatRule)} == {
        SnatRule(POD, destination=DB, to_address="192.0.2.7", random_fully=True),
        SnatRule("fd42::/64", to_address="2001:db8::7")}




@pytest.mark.kernel
@pytest.mark.lab
def test_iptables_nfts_nfqueue_drops_the_pods_and_is_a_conflict(lab: SeedLab) -> None:
    """``-j NFQUEUE`` with no program reading the queue: every packet it takes is
    dropped."""
    from k3snet.backends.nftables import NftablesBackend  # noqa: PLC0415

    rule = ForwardRule(POD, DB, in_interface="cni0", out_interface="eth0")
    wanted = State(owned=[rule, MasqueradeRule(POD, destination=DB, out_interface="eth0")])
    run_in(lab.node, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
    with NftablesBackend(lab.node) as backend:
        backend.apply(plan(backend.observe(), wanted))
        assert lab.tcp_probe(4).ok
        run_in(lab.node, ["iptables-nft", "-w", "-I", "FORWARD", "-d", DB, "-j", "NFQUEUE",
                          "--queue-num", "7"])
        assert dropped(lab, 4, iptables_count(  # a real connection: queued away
            lab.node, "iptables-nft-save", "filter",
            f"-A FORWARD -d {DB} -j NFQUEUE --queue-num 7"))
        p = plan(backend.observe(), wanted)
        (note,) = p.conflicts
        assert note.wanted == rule, p.render()
        assert note.foreign.describe() == (
            f"queue by nftables ip filter FORWARD: ip daddr {DB} queue")


@pytest.mark.kernel
@pytest.mark.lab
def test_iptables_nfts_netmap_translates_the_pods_and_is_a_conflict(
        lab: SeedLab) -> None:
    """``-t nat -I POSTROUTING -s POD -j NETMAP --to 10.99.0.0/16``, run before k3snet's
    masquerade: the database answers addresses nobody routes back, and the plan said the
    masquerade was in place."""
    from k3snet.backends.nftables import NftablesBackend  # noqa: PLC0415

    masquerade = MasqueradeRule(POD, destination=DB, out_interface="eth0")
    wanted = State(owned=[masquerade])
    run_in(lab.node, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
    with NftablesBackend(lab.node) as backend:
        backend.apply(plan(backend.observe(), wanted))
        assert lab.tcp_probe(4).ok
        run_in(lab.node, ["iptables-nft", "-w", "-t", "nat", "-I", "POSTROUTING", "-s",
                          POD, "-j", "NETMAP", "--to", "10.99.0.0/16"])
        assert not lab.tcp_probe(4, timeout=1.0).ok  # translated elsewhere
        p = plan(backend.observe(), wanted)
        (note,) = p.conflicts
        assert note.wanted == masquerade, p.render()
        assert isinstance(note.foreign, NatBlock), p.render()
        assert "xt target NETMAP" in note.foreign.rule


@pytest.mark.kernel
@pytest.mark.lab
@pytest.mark.parametrize("backend_name", ["nftables", "iptables-nft", "iptables-legacy"])
def test_an_audit_before_the_masquerade_lets_it_translate_and_is_no_conflict(
        lab: SeedLab, backend_name: str) -> None:
    """``-t nat -I POSTROUTING -s POD -j AUDIT --type accept`` before k3snet's masquerade:
    xt_AUDIT logs and returns ``XT_CONTINUE``, the masquerade still translates (the
    database answers, a real connection), and the plan says so in both backends (read as
    a target that may translate, it was a false conflict)."""
    from k3snet.backends.iptables import IptablesBackend  # noqa: PLC0415
    from k3snet.backends.nftables import NftablesBackend  # noqa: PLC0415

    masquerade = MasqueradeRule(POD, destination=DB, out_interface="eth0")
    wanted = State(owned=[masquerade])
    tool = "iptables-legacy" if backend_name == "iptables-legacy" else "iptables-nft"
    run_in(lab.node, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
    backend = (NftablesBackend(lab.node) if backend_name == "nftables" else
               IptablesBackend(lab.node, mode=backend_name.split("-")[1]))  # type: ignore[arg-type]
    with backend:
        backend.apply(plan(backend.observe(), wanted))
        run_in(lab.node, [tool, "-w", "-t", "nat", "-I", "POSTROUTING", "-s", POD, "-j",
                          "AUDIT", "--type", "accept"])
        assert lab.tcp_probe(4).ok  # translated: the database routes no pod address
        p = plan(backend.observe(), wanted)
        assert not p.conflicts, p.render()
        assert p.changes == (), p.render()


@pytest.mark.kernel
@pytest.mark.lab
def test_iptables_nfts_snat_to_the_wanted_address_translates_and_is_no_conflict(
        lab: SeedLab) -> None:
    """An admin's ``-t nat -I POSTROUTING -s POD -j SNAT --to-source 192.168.1.5`` (the
    node's uplink address) beside k3snet's wanted SNAT to the same address: the pods'
    connections leave as the node (the database answers, a real connection), and the plan
    says so. Read as an SNAT to an address k3snet does not model, it was a conflict."""
    from k3snet.backends.nftables import NftablesBackend  # noqa: PLC0415

    snat = SnatRule(POD, destination=DB, out_interface="eth0", to_address="192.168.1.5")
    wanted = State(owned=[snat])
    run_in(lab.node, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
    run_in(lab.node, ["iptables-nft", "-w", "-t", "nat", "-I", "POSTROUTING", "-s", POD,
                      "-j", "SNAT", "--to-source", "192.168.1.5"])
    assert lab.tcp_probe(4).ok  # translated: the database routes no pod address
    with NftablesBackend(lab.node) as backend:
        p = plan(backend.observe(), wanted)
        assert not p.conflicts, p.render()
        backend.apply(p)
        assert lab.tcp_probe(4).ok
        p = plan(backend.observe(), wanted)
        assert not p.conflicts, p.render()
        assert p.changes == (), p.render()
