"""iptables-nft's compat targets k3snet cannot see into (libnftables lists ``xt target
NAME`` and hides the options), each read as what it may do and never as something else:
``-j NFQUEUE`` is a queue (a program decides: an unheard packet is dropped), ``-j NETMAP``
(or any other opaque target) in a nat chain on the postrouting hook may translate the
connection, as ``-j SNAT``; an opaque target in a forward chain accepts nothing. Read as
a target that does nothing, each was no block while the pods' connections failed (the
iptables backend reported both). Real connections through the seed lab.
"""

from __future__ import annotations

import pytest

from k3snet.backends.nftables.parse import ForeignReader
from k3snet.lab.netns import run_in
from k3snet.model import ForwardBlock, ForwardRule, MasqueradeRule, NatBlock, State
from k3snet.planner import plan
from tests.nftables.test_foreign_cases import ACCEPT, CT_REPLY, Expr, daddr, forward, nat, saddr

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
    rule, untranslated (read as a target that may translate, a false conflict)."""
    kernel = nat([saddr(POD), _xt(name)], [saddr(POD), {"masquerade": None}], family="ip")
    kernel.nat_prio = 100
    found = ForeignReader(kernel, frozenset()).read()
    assert not any(isinstance(b, NatBlock) and "xt target" in b.rule for b in found)
    assert MasqueradeRule(POD) in found  # the masquerade after it is met
    wanted = State(owned=[MasqueradeRule(POD, destination=DB, out_interface="eth0")])
    assert not plan(State(foreign=list(found)), wanted).conflicts


def test_an_opaque_xt_target_in_a_forward_chain_accepts_nothing() -> None:
    kernel = forward(("drop", [[saddr(POD), daddr(DB), _xt("SOMETHING")],
                               [saddr(DB), daddr(POD), _xt("SOMETHING")], [CT_REPLY, ACCEPT]]))
    found = ForeignReader(kernel, frozenset()).read()
    assert not any(isinstance(o, ForwardRule) for o in found)


@pytest.mark.kernel
@pytest.mark.lab
def test_iptables_nfts_nfqueue_drops_the_pods_and_is_a_conflict(require_root: None) -> None:
    """``-j NFQUEUE`` with no program reading the queue: every packet it takes is
    dropped."""
    from k3snet.backends.nftables import NftablesBackend  # noqa: PLC0415
    from k3snet.lab import SeedLab  # noqa: PLC0415

    rule = ForwardRule(POD, DB, in_interface="cni0", out_interface="eth0")
    wanted = State(owned=[rule, MasqueradeRule(POD, destination=DB, out_interface="eth0")])
    with SeedLab.create() as lab:
        run_in(lab.node, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
        with NftablesBackend(lab.node) as backend:
            backend.apply(plan(backend.observe(), wanted))
            assert lab.tcp_probe(4).ok
            run_in(lab.node, ["iptables-nft", "-w", "-I", "FORWARD", "-d", DB, "-j", "NFQUEUE",
                              "--queue-num", "7"])
            assert not lab.tcp_probe(4, timeout=1.0).ok  # a real connection: queued away
            p = plan(backend.observe(), wanted)
            (note,) = p.conflicts
            assert note.wanted == rule, p.render()
            assert note.foreign.describe() == (
                f"queue by nftables ip filter FORWARD: ip daddr {DB} queue")


@pytest.mark.kernel
@pytest.mark.lab
def test_iptables_nfts_netmap_translates_the_pods_and_is_a_conflict(
        require_root: None) -> None:
    """``-t nat -I POSTROUTING -s POD -j NETMAP --to 10.99.0.0/16``, run before k3snet's
    masquerade: the database answers addresses nobody routes back, and the plan said the
    masquerade was in place."""
    from k3snet.backends.nftables import NftablesBackend  # noqa: PLC0415
    from k3snet.lab import SeedLab  # noqa: PLC0415

    masquerade = MasqueradeRule(POD, destination=DB, out_interface="eth0")
    wanted = State(owned=[masquerade])
    with SeedLab.create() as lab:
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
        require_root: None, backend_name: str) -> None:
    """``-t nat -I POSTROUTING -s POD -j AUDIT --type accept`` before k3snet's masquerade:
    xt_AUDIT logs and returns ``XT_CONTINUE``, the masquerade still translates (the
    database answers, a real connection), and the plan says so in both backends (read as
    a target that may translate, it was a false conflict)."""
    from k3snet.backends.iptables import IptablesBackend  # noqa: PLC0415
    from k3snet.backends.nftables import NftablesBackend  # noqa: PLC0415
    from k3snet.lab import SeedLab  # noqa: PLC0415

    masquerade = MasqueradeRule(POD, destination=DB, out_interface="eth0")
    wanted = State(owned=[masquerade])
    tool = "iptables-legacy" if backend_name == "iptables-legacy" else "iptables-nft"
    with SeedLab.create() as lab:
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
