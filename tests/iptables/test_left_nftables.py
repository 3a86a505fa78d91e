"""k3snet's nftables table, left behind when a node moves to the iptables backend.

The iptables backend reads nftables tables of other names (their drops and NAT run
on the same hooks) but passes by the nftables backend's own (by its marker chain:
in the split ``--backend nftables:nat --backend iptables:forward`` its masquerade
rules are no foreign NAT). A node switched from ``--backend nftables`` to
``--backend iptables`` kept that table's masquerade translating the pods'
connections, and nothing said so; now a warning names the table and the
``destroy`` command that removes it, unless an nftables backend beside this one
manages it.
"""

from __future__ import annotations

import pytest

from k3snet.backends.group import BackendGroup, Member
from k3snet.backends.iptables import IptablesBackend
from k3snet.model import ForwardRule, MasqueradeRule, State
from k3snet.planner import plan

pytestmark = pytest.mark.kernel

WANTED = State(owned=[MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24"),
                      ForwardRule("10.42.0.0/16", "192.168.2.0/24")])


def _nftables(ns: str, **options: str) -> object:
    pytest.importorskip("nftables")
    from k3snet.backends.nftables import NftablesBackend  # noqa: PLC0415

    return NftablesBackend(ns, **options)  # type: ignore[arg-type]


def _left(warnings: tuple[str, ...]) -> list[str]:
    return [w for w in warnings if "k3snet's nftables backend wrote" in w]


@pytest.mark.parametrize(("options", "listed", "command"), [
    ({}, "inet k3snet", "k3snet destroy --backend nftables`"),
    ({"table": "egress", "family": "split"}, "ip egress",
     "k3snet destroy --backend nftables --backend-opt nftables.table=egress "
     "--backend-opt nftables.family=split`"),
], ids=["default", "split-egress"])
def test_the_nftables_backends_table_left_behind_is_a_warning_naming_destroy(
        ns: str, options: dict[str, str], listed: str, command: str) -> None:
    with _nftables(ns, **options) as old:  # type: ignore[attr-defined]
        old.apply(plan(old.observe(), WANTED))
    with IptablesBackend(ns, mode="nft") as backend:
        backend.apply(plan(backend.observe(), WANTED))
        assert plan(backend.observe(), WANTED).changes == ()
        left = _left(backend.warnings)
        assert left, backend.warnings
        assert any(w.startswith(f"nftables table {listed} ") for w in left), left
        # run where k3snet read: the bare destroy, from the shell that ran k3snet
        # --netns NS, removed the node's table (a command that writes: never run here)
        assert all(f"`ip netns exec {ns} {command}" in w for w in left), left
    with _nftables(ns, **options) as old:  # type: ignore[attr-defined]
        old.apply(plan(old.observe(), State()))  # what destroy does
    with IptablesBackend(ns, mode="nft") as backend:
        backend.observe()
        assert _left(backend.warnings) == []


def test_the_split_group_names_no_table_its_nftables_member_manages(ns: str) -> None:
    with BackendGroup([Member(_nftables(ns), ["nat"]),  # type: ignore[arg-type]
                       Member(IptablesBackend(ns, mode="nft"), ["forward"])]) as group:
        group.apply(plan(group.observe(), WANTED))
        assert plan(group.observe(), WANTED).changes == ()
        assert _left(group.warnings) == []
