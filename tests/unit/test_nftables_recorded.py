"""The nftables backend's parser and foreign-rule reader, without root, on recorded listings.

The listings under ``tests/data/nftables/`` were recorded from lab namespaces by
``tests/data/nftables/record.py`` (its docstring says what each scenario holds).
:class:`RecordedKernel` implements the backend's kernel seam
(:class:`~k3snet.backends.nftables.kernel.NftKernel`) by serving one recorded
``nft -j list ruleset``, the way libnftables would answer each ``list``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from k3snet.backends.nftables import NftablesBackend
from k3snet.backends.nftables.kernel import NftKernel
from k3snet.backends.nftables.parse import ForeignReader
from k3snet.model import ForwardRule, MasqueradeRule, SnatRule

DATA = Path(__file__).resolve().parents[1] / "data" / "nftables"

# What record.py put in k3snet's table (one rule of each shape).
K3SNET = {
    MasqueradeRule("10.52.0.0/16", destination="192.168.2.0/24", out_interface="eth0",
                   random_fully=True),
    MasqueradeRule("10.43.0.0/16", exclude=["10.0.0.0/8", "224.0.0.0/4"]),
    SnatRule("10.44.0.0/16", destination="192.168.3.0/24", to_address="192.168.1.5"),
    MasqueradeRule("fd42:42::/56", destination="fd01:2::/64", out_interface="eth0"),
    SnatRule("fd42:43::/56", to_address="fd01:1::5", random_fully=True),
    ForwardRule("10.52.0.0/16", "192.168.2.0/24", in_interface="cni0", out_interface="eth0"),
    ForwardRule("fd42:42::/56", "fd01:2::/64"),
}


def listing(name: str) -> list[dict[str, Any]]:
    """A recorded ``nft -j list ...`` output, without its metainfo."""
    items = json.loads((DATA / name).read_text())["nftables"]
    return [item for item in items if "metainfo" not in item]


class RecordedKernel:
    """The nftables kernel seam, answering from one recorded ``nft -j list ruleset``.

    Batches are recorded in ``batches`` and accepted (rc 0) without changing
    what is listed; every run bumps the generation id, as a commit would.
    """

    def __init__(self, scenario: str) -> None:
        self.items = listing(f"{scenario}.ruleset.json")
        self.calls = 0
        self.generation = 1
        self.listed: list[str] = []
        self.batches: list[str] = []

    def genid(self) -> int:
        self.calls += 1
        return self.generation

    def list(self, kind: str, **ref: str) -> list[dict[str, Any]] | None:
        self.calls += 1
        self.listed.append(" ".join(["list", kind, *ref.values()]))
        if kind == "chains":
            return [item for item in self.items if "chain" in item]
        if kind == "table":
            where = (ref["family"], ref["name"])
            found = [item for item in self.items if _where(item) == where]
            return found or None
        if kind == "chain":
            where = (ref["family"], ref["table"])
            chain = [item for item in self.items
                     if "chain" in item and _where(item) == where
                     and item["chain"]["name"] == ref["name"]]
            rules = [item for item in self.items
                     if "rule" in item and _where(item) == where
                     and item["rule"]["chain"] == ref["name"]]
            return [*chain, *rules] if chain else None
        raise AssertionError(f"the backend listed {kind!r}, which no recording answers")

    def run(self, batch: str, *, json_input: bool, dry_run: bool = False) -> tuple[int, str]:
        self.calls += 1
        self.batches.append(batch)
        if not dry_run:
            self.generation += 1
        return 0, ""

    def close(self) -> None:
        pass


def _where(item: dict[str, Any]) -> tuple[str, str] | None:
    ((kind, body),) = item.items()
    if kind == "table":
        return (body["family"], body["name"])
    if kind in ("chain", "rule"):
        return (body["family"], body["table"])
    return None


def backend(scenario: str, **options: Any) -> tuple[NftablesBackend, RecordedKernel]:
    kernel = RecordedKernel(scenario)
    return NftablesBackend(kernel=lambda: kernel, **options), kernel


def test_the_recorded_kernel_is_a_kernel_seam() -> None:
    kernel: NftKernel = RecordedKernel("k3s-node")
    assert kernel.genid() == 1


def test_the_recorded_kernel_lists_a_table_as_the_kernel_did() -> None:
    kernel = RecordedKernel("k3s-node")
    assert kernel.list("table", family="inet", name="k3snet") == listing("k3s-node.table.json")
    assert kernel.list("table", family="ip", name="k3snet") is None


def test_k3snet_rules_read_back_as_the_objects_written() -> None:
    nft, _ = backend("k3s-node", observe_foreign=False)
    with nft:
        assert nft.observe().owned == K3SNET
        assert nft.drift == ()


def test_a_k3s_node_foreign_rules_are_modelled_from_the_egress_chains_only() -> None:
    nft, kernel = backend("k3s-node")
    with nft:
        state = nft.observe()
    assert state.foreign == {
        # flannel's FLANNEL-POSTRTG: its returns become exclusions; kube-proxy's
        # "masquerade me" mark return is ignored (those packets are NATed anyway)
        MasqueradeRule("10.42.0.0/16", exclude=["10.42.0.0/16", "224.0.0.0/4"]),
        SnatRule("10.50.0.0/16", out_interface="eth0", to_address="192.168.1.5"),
        MasqueradeRule("fd42:50::/56", exclude=["fd00::/8"]),
        # flannel's FLANNEL-FWD accepts both ways, so each answers the other
        ForwardRule("10.42.0.0/16", "0.0.0.0/0"),
        ForwardRule("0.0.0.0/0", "10.42.0.0/16"),
    }
    # names and hooks of all chains, then only the egress path's chains
    assert sorted(kernel.listed) == sorted([
        "list table inet k3snet", "list chains",
        "list chain ip nat POSTROUTING", "list chain ip nat KUBE-POSTROUTING",
        "list chain ip nat FLANNEL-POSTRTG", "list chain ip filter FORWARD",
        "list chain ip filter FLANNEL-FWD", "list chain ip kube-proxy nat-postrouting",
        "list chain ip kube-proxy masquerading", "list chain inet edge post",
    ])


def test_a_conditional_drop_before_an_accept_is_not_read_as_a_plain_accept() -> None:
    reader = ForeignReader(RecordedKernel("forward-drops"), frozenset())
    assert reader.read() == {
        # fw1: the drop of 192.168.2.0/24 cannot hit packets to 10.42.0.0/16 ...
        ForwardRule("0.0.0.0/0", "10.42.0.0/16"),
        # fw3: ... and the drop of 10.99.0.0/16 cannot hit packets from 10.70.0.0/16
        ForwardRule("10.70.0.0/16", "0.0.0.0/0"),
        # not: fw1's 10.42.0.0/16 -> any (the drop before it may take its packets),
        # fw2's 10.60.0.0/16 -> any (a drop in the chain jumped to first), nor
        # fw4's 10.80.0.0/16 -> any (a reject before it)
    }


@pytest.mark.parametrize("scenario", ["k3s-node", "forward-drops"])
def test_the_foreign_reader_never_reads_k3snet_own_table(scenario: str) -> None:
    kernel = RecordedKernel(scenario)
    ForeignReader(kernel, frozenset({("inet", "k3snet")})).read()
    assert not any(" k3snet " in f"{command} " for command in kernel.listed)
