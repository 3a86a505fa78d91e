"""The nftables backend's parser and foreign-rule reader, without root, on recorded listings.

The listings under ``tests/data/nftables/`` were recorded from lab namespaces by
``tests/data/nftables/record.py`` (its docstring says what each scenario holds).
:class:`RecordedKernel` implements the backend's kernel seam
(:class:`~k3snet.backends.nftables.kernel.NftKernel`) by serving one recorded
``nft -j list ruleset``, the way libnftables would answer each ``list``.
"""

from __future__ import annotations

import errno
import json
import os
import struct
from pathlib import Path
from typing import Any

import pytest

from k3snet.backends.nfgen import GenerationReader
from k3snet.backends.nftables import NftablesBackend
from k3snet.backends.nftables.kernel import Libnftables, NftKernel
from k3snet.backends.nftables.parse import ForeignReader
from k3snet.errors import BackendError, PlanError
from k3snet.model import (
    Drift,
    ForwardBlock,
    ForwardRule,
    MasqueradeRule,
    NatBlock,
    NetObject,
    SnatRule,
    State,
)
from k3snet.planner import Change, Plan, plan
from k3snet.render.nftables import TABLE_COMMENT, object_tag
from tests.nftables.scenario import K3SNET_RULES

DATA = Path(__file__).resolve().parents[1] / "data" / "nftables"

# What record.py put in k3snet's table (one rule of each shape).
K3SNET = set(K3SNET_RULES.owned)


def listing(name: str) -> list[dict[str, Any]]:
    """A recorded ``nft -j list ...`` output, without its metainfo."""
    items = json.loads((DATA / name).read_text())["nftables"]
    return [item for item in items if "metainfo" not in item]


class RecordedKernel:
    """The nftables kernel seam, answering from one recorded ``nft -j list ruleset``.

    Batches are recorded in ``batches`` and accepted (rc 0) without changing
    what is listed; every run bumps the generation id, as a commit would.
    """

    def __init__(self, scenario: str, tables: set[str] | None = None) -> None:
        self.items = [item for item in listing(f"{scenario}.ruleset.json")
                      if tables is None or (_where(item) or ("", ""))[1] in tables]
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
        # the edge table's SNAT, but for the cluster CIDR, which flannel's masquerade of
        # any source to 10.42.0.0/16 may translate first
        SnatRule("10.50.0.0/16", exclude=["10.42.0.0/16"], out_interface="eth0",
                 to_address="192.168.1.5"),
        MasqueradeRule("fd42:50::/56", exclude=["fd00::/8"]),
        # flannel's FLANNEL-FWD accepts both ways, so each answers the other
        ForwardRule("10.42.0.0/16", "0.0.0.0/0"),
        ForwardRule("0.0.0.0/0", "10.42.0.0/16"),
        # flannel's masquerades sit in iptables-nft's ip nat at srcnat, k3snet's priority:
        # they may decide first (kube-proxy's sees marked packets only; the edge table's
        # chain runs after k3snet's, at srcnat + 10)
        NatBlock(4, "masquerade", "ip saddr 10.42.0.0/16 ip daddr != 224.0.0.0/4 masquerade",
                 "nftables ip nat FLANNEL-POSTRTG", source="10.42.0.0/16"),
        NatBlock(4, "masquerade", "ip saddr != 10.42.0.0/16 ip daddr 10.42.0.0/16 masquerade",
                 "nftables ip nat FLANNEL-POSTRTG", destination="10.42.0.0/16"),
    }
    # names and hooks of all chains, then only the egress path's chains (a nat prerouting
    # chain's own rules: a drop there drops a connection's first packet)
    assert sorted(kernel.listed) == sorted([
        "list table inet k3snet", "list chains", "list chain ip nat PREROUTING",
        "list chain ip nat POSTROUTING", "list chain ip nat KUBE-POSTROUTING",
        "list chain ip nat FLANNEL-POSTRTG", "list chain ip filter FORWARD",
        "list chain ip filter FLANNEL-FWD", "list chain ip kube-proxy nat-postrouting",
        "list chain ip kube-proxy masquerading", "list chain inet edge post",
    ])


@pytest.mark.parametrize(("tables", "accepted"), [
    # the drop of 192.168.2.0/24 cannot hit packets to 10.42.0.0/16, but may hit
    # packets from 10.42.0.0/16: only the second accept is met
    ({"fw1"}, {ForwardRule("0.0.0.0/0", "10.42.0.0/16")}),
    # a drop in the chain jumped to first
    ({"fw2"}, set()),
    # a drop that cannot hit packets from 10.70.0.0/16
    ({"fw3"}, {ForwardRule("10.70.0.0/16", "0.0.0.0/0")}),
    # a reject
    ({"fw4"}, set()),
    # all of them: each chain's accepts must get through every other chain's drops
    (None, set()),
])
def test_a_conditional_drop_before_an_accept_is_not_read_as_a_plain_accept(
    tables: set[str] | None, accepted: set[ForwardRule]
) -> None:
    found = ForeignReader(RecordedKernel("forward-drops", tables), frozenset()).read()
    assert {o for o in found if isinstance(o, ForwardRule)} == accepted


def _blocks(found: frozenset[NetObject]) -> set[str]:
    return {o.describe() for o in found if isinstance(o, ForwardBlock)}


def test_a_drop_in_another_forward_base_chain_is_not_overridden_by_an_accept() -> None:
    # fw1 accepts 10.42.0.0/16 -> any, but fw2 (another base chain on the forward hook)
    # drops what goes to 192.168.2.0/24 (firewalld#527): not met for all of it
    assert ForeignReader(RecordedKernel("forward-two-chains", {"fw1"}), frozenset()).read() == {
        ForwardRule("10.42.0.0/16", "0.0.0.0/0")}
    found = ForeignReader(RecordedKernel("forward-two-chains"), frozenset()).read()
    assert not any(isinstance(o, ForwardRule) for o in found)
    # ... and that drop is a block: a forward rule to 192.168.2.0/24 is a conflict
    assert _blocks(found) == {"drop by nftables inet fw2 forward: ip daddr 192.168.2.0/24 drop"}
    wanted = ForwardRule("10.42.0.0/16", "192.168.2.0/24")
    assert any(wanted.conflicts_with(o) for o in found)
    assert not any(ForwardRule("10.42.0.0/16", "192.168.9.0/24").conflicts_with(o)
                   for o in found)


def test_foreign_drops_naming_addresses_are_blocks_one_jump_down() -> None:
    found = ForeignReader(RecordedKernel("forward-drops"), frozenset()).read()
    assert _blocks(found) == {
        "drop by nftables inet fw1 forward: ip daddr 192.168.2.0/24 drop",
        "drop by nftables ip fw2 guard: ip daddr 192.168.3.0/24 drop",
        "drop by nftables ip fw3 forward: ip saddr 10.99.0.0/16 drop",
        # the parser reads a reject as a drop: both end the packet
        "drop by nftables ip fw4 forward: ip daddr 192.168.4.0/24 drop",
    }


@pytest.mark.parametrize("scenario", ["k3s-node", "forward-drops", "forward-two-chains"])
def test_the_foreign_reader_never_reads_k3snet_own_table(scenario: str) -> None:
    kernel = RecordedKernel(scenario)
    ForeignReader(kernel, frozenset({("inet", "k3snet")})).read()
    assert not any(" k3snet " in f"{command} " for command in kernel.listed)


# -- drift in k3snet's own table -----------------------------------------------------------

# made again with create: refused if another program made a table of the name meanwhile
ADD_TABLE = f'create table inet k3snet {{ comment "{TABLE_COMMENT}"; }}'
# recording -> (the drift observe reports, the commands of the repairing transaction)
DRIFT = {
    "drift-policy": (
        ["drift in nftables inet k3snet forward: policy drop (k3snet's: accept)"],
        ["add chain inet k3snet forward { type filter hook forward priority filter; "
         "policy accept; }"]),
    "drift-hook": (
        ["drift in nftables inet k3snet postrouting: type nat hook postrouting priority 105 "
         "(k3snet's: type nat hook postrouting priority 100)"],
        ["delete table inet k3snet", ADD_TABLE]),
    "drift-extra-rule": (
        ["drift in nftables inet k3snet forward: rule handle 14: not a rule k3snet writes",
         "drift in nftables inet k3snet postrouting: rule handle 13: not a rule k3snet writes"],
        ["delete rule inet k3snet forward handle 14",
         "delete rule inet k3snet postrouting handle 13"]),
    "drift-extra-chain": (
        ["drift in nftables inet k3snet: chain counter: not a chain k3snet writes"],
        ["delete table inet k3snet", ADD_TABLE]),
    "drift-duplicate": (
        ["drift in nftables inet k3snet forward: rules handle 14, 15: a duplicate of forward "
         "accept fd42:42::/56 -> fd01:2::/64 (+ replies)",
         "drift in nftables inet k3snet postrouting: rule handle 13: a duplicate of masquerade "
         "10.43.0.0/16 -> any except 10.0.0.0/8,224.0.0.0/4"],
        ["delete rule inet k3snet forward handle 14", "delete rule inet k3snet forward handle 15",
         "delete rule inet k3snet postrouting handle 13"]),
}


@pytest.mark.parametrize("scenario", list(DRIFT))
def test_drift_is_observed_as_owned_drift_objects_and_repaired_in_one_transaction(
    scenario: str,
) -> None:
    descriptions, repair = DRIFT[scenario]
    nft, kernel = backend(scenario, observe_foreign=False)
    with nft:
        state = nft.observe()
        drift = {o for o in state.owned if isinstance(o, Drift)}
        assert sorted(d.describe() for d in drift) == descriptions
        assert nft.drift == tuple(descriptions)
        assert state.owned - drift == K3SNET  # the rules themselves are still read
        p = plan(state, State(owned=K3SNET))
        assert [(c.action, c.subject) for c in p.changes] == [("delete", d) for d in
                                                              sorted(drift)]
        assert nft.check(p) == ()
        nft.apply(p)
    commands = [c for c in kernel.batches[-1].splitlines() if c]
    assert len(kernel.batches) == 2  # the dry run, then one transaction
    assert commands[: len(repair)] == repair
    if "delete table inet k3snet" in repair:  # a rebuild writes every rule again
        assert sum(c.startswith("add rule") for c in commands) == 5 + 2 * 2


def test_a_forged_tag_is_read_as_what_the_rule_does_and_as_drift() -> None:
    forged = MasqueradeRule("10.77.0.0/16")
    nft, kernel = backend("drift-forged-tag", observe_foreign=False)
    with nft:
        state = nft.observe()
        (drift,) = (o for o in state.owned if isinstance(o, Drift))
        assert drift.describe() == (
            "drift in nftables inet k3snet postrouting: rule handle 13: tag "
            f"k3snet:0123456789abcdef is not its content's ({object_tag(forged)})")
        assert state.owned - {drift} == K3SNET | {forged}
        # wanted as it is: the repair writes it again with its own tag
        p = plan(state, State(owned=K3SNET | {forged}))
        assert p.changes == (Change.delete(drift),)
        nft.apply(p)
    assert kernel.batches[-1].splitlines()[:2] == [
        "delete rule inet k3snet postrouting handle 13",
        f'add rule inet k3snet postrouting ip saddr 10.77.0.0/16 masquerade comment '
        f'"{object_tag(forged)}"',
    ]


def test_a_forged_rule_not_wanted_is_deleted_once() -> None:
    nft, kernel = backend("drift-forged-tag", observe_foreign=False)
    with nft:
        p = plan(nft.observe(), State(owned=K3SNET))
        assert p.counts()["delete"] == 2  # the rule, and the drift
        nft.apply(p)
    assert kernel.batches[-1].splitlines() == ["delete rule inet k3snet postrouting handle 13"]


def test_a_plan_that_does_not_delete_drift_leaves_it() -> None:
    nft, kernel = backend("drift-policy", observe_foreign=False)
    with nft:
        added = MasqueradeRule("10.78.0.0/16")
        p = Plan(changes=[Change.add(added)])
        nft.apply(p)
        assert not any("policy" in line for line in kernel.batches[-1].splitlines())
        assert nft.drift  # still there: observe reports it until a plan deletes it


def test_drift_that_is_not_there_is_refused_in_the_kit_words() -> None:
    nft, kernel = backend("drift-policy", observe_foreign=False)
    with nft:
        stale = Drift.of("nat", backend="nftables", where="inet k3snet postrouting",
                         what="policy drop (k3snet's: accept)")
        p = Plan(changes=[Change.delete(stale)])
        assert nft.check(p) == (f"cannot delete {stale}: not in the state (found None)",)
        with pytest.raises(PlanError, match="nftables backend refuses the plan"):
            nft.apply(p)
    assert kernel.batches == []


# -- the libnftables seam's error mapping ------------------------------------------------


class _RefusingSocket:
    """A netfilter netlink socket that answers every request with an error."""

    def __init__(self, errno: int) -> None:
        self.errno = errno
        self.seq = 0

    def send(self, data: bytes) -> int:
        self.seq = struct.unpack_from("=IHHII", data)[3]
        return len(data)

    def recv(self, size: int) -> bytes:
        # nlmsghdr (NLMSG_ERROR), then the negative errno and the request's header
        body = struct.pack("=i", -self.errno) + bytes(16)
        return struct.pack("=IHHII", 16 + len(body), 2, 0, self.seq, 0) + body


@pytest.mark.parametrize(("code", "capability"), [(errno.EPERM, True), (errno.EINVAL, False)])
def test_a_refused_generation_id_read_names_the_missing_capability(
    code: int, capability: bool
) -> None:
    reader = GenerationReader.__new__(GenerationReader)  # with a socket that refuses
    reader._sock = _RefusingSocket(code)  # type: ignore[assignment]
    reader._seq = 0
    kernel = Libnftables.__new__(Libnftables)  # no libnftables context: only genid is used
    kernel._generation = reader
    kernel.calls = 0
    with pytest.raises(BackendError, match="cannot read the nftables generation id") as caught:
        kernel.genid()
    assert ("this needs CAP_NET_ADMIN" in str(caught.value)) is capability
    assert os.strerror(code) in str(caught.value)
