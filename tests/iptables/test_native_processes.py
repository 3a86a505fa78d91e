"""The read of nftables tables of other names through ``nft -j`` processes (no binding).

Where the ``nftables`` Python binding is missing, every listing is an ``nft``
process; the walk lists up to 64 chains, each was a process of its own (about 65 on
a node whose firewall table jumps to many chains, on every observe that read the
kernel). A chain is now answered from one listing of its table: the read makes one
process for the chains and one per table walked, and finds what the chain by chain
read found.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import pytest

from k3snet.backends.iptables import native
from k3snet.model import ForwardBlock

CHAINS = 40


def _ruleset() -> list[dict[str, Any]]:
    """``inet fw``: a forward base chain jumping to 40 chains, each dropping one /16;
    ``ip filter`` (iptables-nft's: not read) with one chain."""
    items: list[dict[str, Any]] = [
        {"table": {"family": "inet", "name": "fw"}},
        {"table": {"family": "ip", "name": "filter"}},
        {"chain": {"family": "inet", "table": "fw", "name": "fwd", "type": "filter",
                   "hook": "forward", "prio": 0, "policy": "accept"}},
        {"chain": {"family": "ip", "table": "filter", "name": "FORWARD", "type": "filter",
                   "hook": "forward", "prio": 0, "policy": "accept"}},
    ]
    for index in range(CHAINS):
        items.append({"chain": {"family": "inet", "table": "fw", "name": f"c{index}"}})
        items.append({"rule": {"family": "inet", "table": "fw", "chain": "fwd",
                               "expr": [{"jump": {"target": f"c{index}"}}]}})
    for index in range(CHAINS):
        items.append({"rule": {"family": "inet", "table": "fw", "chain": f"c{index}", "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                       "right": {"prefix": {"addr": f"10.{index}.0.0", "len": 16}}}},
            {"drop": None}]}})
    return items


def _listing(kind: str, ref: dict[str, str] | None) -> list[dict[str, Any]] | None:
    """What ``nft -j list KIND REF`` prints of :func:`_ruleset` (None: no such object)."""
    items = _ruleset()
    ref = ref or {}
    if kind == "chains":
        return [item for item in items if "chain" in item]
    if kind == "table":
        where = (ref["family"], ref["name"])
        found = [item for item in items
                 if where in ((o.get("family"), o.get("table", o.get("name")))
                              for o in item.values())]
        return found or None
    if kind == "chain":
        where = (ref["family"], ref["table"])
        chain = [item for item in items if "chain" in item
                 and (item["chain"]["family"], item["chain"]["table"]) == where
                 and item["chain"]["name"] == ref["name"]]
        rules = [item for item in items if "rule" in item
                 and (item["rule"]["family"], item["rule"]["table"]) == where
                 and item["rule"]["chain"] == ref["name"]]
        return chain + rules if chain else None
    raise AssertionError(kind)


class _Nft:
    """``nft -j -f -`` processes, counted."""

    def __init__(self) -> None:
        self.runs = 0

    def __call__(self, argv: list[str], text: str, seconds: float
                 ) -> subprocess.CompletedProcess[str]:
        assert argv == ["nft", "-j", "-f", "-"]
        self.runs += 1
        ((kind, ref),) = json.loads(text)["nftables"][0]["list"].items()
        items = _listing(kind, ref)
        if items is None:
            return subprocess.CompletedProcess(argv, 1, "", "Error: No such file or directory")
        return subprocess.CompletedProcess(argv, 0, json.dumps({"nftables": items}), "")


class _ChainByChain:
    """The listings as the binding makes them: each chain on its own."""

    def list(self, kind: str, **ref: str) -> list[dict[str, Any]] | None:
        return _listing(kind, ref)


TABLES = frozenset({("inet", "fw"), ("ip", "filter")})


@pytest.mark.skipif(shutil.which("nft") is None, reason="nft is not installed")
def test_the_process_read_lists_each_table_once_and_finds_what_chain_by_chain_finds() -> None:
    nft = _Nft()
    read = native.read_native(nft, TABLES)
    assert nft.runs == 2  # the chains, then inet fw whole (ip filter is iptables-nft's)
    xt = frozenset({("ip", "filter")})
    expected = native._read(_ChainByChain(), xt)
    assert read == expected
    blocks = {b.source for b in read.blocks if isinstance(b, ForwardBlock)}
    assert len(blocks) == CHAINS, read


@pytest.mark.skipif(shutil.which("nft") is None, reason="nft is not installed")
def test_a_table_gone_between_the_listings_reads_as_its_chains_gone() -> None:
    nft = _Nft()
    lister = native._Processes(nft, float("inf"))
    assert lister.list("chain", family="inet", table="gone", name="c0") is None
    assert lister.list("chain", family="inet", table="gone", name="c1") is None
    assert lister.list("chain", family="inet", table="fw", name="nope") is None
    assert nft.runs == 2


@pytest.mark.skipif(shutil.which("nft") is None, reason="nft is not installed")
def test_a_table_of_many_chains_is_listed_chain_by_chain(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # kube-proxy's nftables table has a few chains per service: listing it whole for the
    # handful the walk reads would cost more than those listings.
    monkeypatch.setattr(native, "WHOLE_TABLE_CHAINS", CHAINS)
    nft = _Nft()
    read = native.read_native(nft, TABLES)
    assert nft.runs == 1 + 1 + CHAINS  # the chains, the base chain, each chain jumped to
    assert read == native._read(_ChainByChain(), frozenset({("ip", "filter")}))
