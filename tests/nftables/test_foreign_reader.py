"""The nftables foreign reader's walk over whole listings: what it lists, skips and gives up on.

The cases in ``test_foreign_cases.py`` are one rule list each; these are about
the listings around them: the ``metainfo`` item libnftables puts first, tables
of other families and k3snet's own, base chains without a policy, listings that
fail or time out, the jump depth, and which accepts are read.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from k3snet.backends.nftables.kernel import SLOW_LISTING, BoundedLister, ListingTimeoutError
from k3snet.backends.nftables.parse import ForeignReader, read_foreign_within
from k3snet.errors import BackendError
from k3snet.model import ForwardRule, MasqueradeRule, NetObject
from tests.nftables.test_foreign_cases import (
    ACCEPT,
    CT_REPLY,
    MASQ,
    Chains,
    Kernel,
    daddr,
    forward,
    jump,
    nat,
    saddr,
)

POD = "10.42.0.0/16"
B = "192.168.2.0/24"
METAINFO = {"metainfo": {"version": "1.0.9", "release_name": "Old Doc Yak #3",
                         "json_schema_version": 1}}


class WithMetainfo(Kernel):
    """Answers as libnftables does: a ``metainfo`` object first, then the listing."""

    def list(self, kind: str, **ref: str) -> list[dict[str, Any]] | None:
        items = super().list(kind, **ref)
        return None if items is None else [METAINFO, *items]


class Failing(Kernel):
    """Raises ``error`` for the listings in ``failing`` (``("chains",)`` or a chain name)."""

    def __init__(self, chains: Any, failing: set[str], error: Exception) -> None:
        super().__init__(chains)
        self.failing, self.error = failing, error

    def list(self, kind: str, **ref: str) -> list[dict[str, Any]] | None:
        if (kind == "chains" and "chains" in self.failing) or ref.get("name") in self.failing:
            raise self.error
        return super().list(kind, **ref)


def read(kernel: Kernel, own: frozenset[tuple[str, str]] = frozenset()) -> frozenset[NetObject]:
    return ForeignReader(kernel, own).read()


def test_the_metainfo_object_of_a_listing_is_skipped() -> None:
    kernel = WithMetainfo(nat([saddr(POD), MASQ], fl=[]).chains)
    assert read(kernel) == {MasqueradeRule(POD)}


def test_chains_of_other_families_and_of_k3snet_come_first_and_are_skipped() -> None:
    chains: Chains = {
        ("bridge", "br", "post"): ("postrouting", "accept", [[MASQ]]),
        ("inet", "k3snet", "postrouting"): ("postrouting", "accept", [[saddr("10.9.0.0/16"),
                                                                        MASQ]]),
        ("ip", "t", "post"): ("postrouting", "accept", [[saddr(POD), MASQ]]),
    }
    assert read(Kernel(chains), frozenset({("inet", "k3snet")})) == {MasqueradeRule(POD)}


def test_chains_not_hooked_where_egress_goes_are_not_read() -> None:
    chains = {
        ("ip", "t", "pre"): ("prerouting", "accept", [[saddr(POD), MASQ]]),
        ("ip", "t", "fwd-nat"): ("forward", "accept", [[saddr(POD), MASQ]]),
        ("ip", "t", "regular"): (None, "", [[saddr(POD), MASQ]]),
        ("ip", "t", "post"): ("postrouting", "accept", [[saddr("10.43.0.0/16"), MASQ]]),
    }
    kernel = Kernel(chains)
    # a forward hook of type nat is not a filter chain, a postrouting one of type filter
    # is not a nat chain
    kernel._chain = _typed(kernel._chain, {"fwd-nat": "nat"})  # type: ignore[method-assign]
    assert read(kernel) == {MasqueradeRule("10.43.0.0/16")}


def _typed(make: Callable[[tuple[str, str, str]], dict[str, Any]],
           types: dict[str, str]) -> Any:  # a stand-in for Kernel._chain
    def chain(key: tuple[str, str, str]) -> dict[str, Any]:
        item = make(key)
        if key[2] in types:
            item["chain"]["type"] = types[key[2]]
        return item
    return chain


def test_a_forward_base_chain_without_a_policy_accepts() -> None:
    kernel = forward(("drop", [[saddr(POD), ACCEPT], [CT_REPLY, ACCEPT]]),
                     ("accept", [[saddr("10.43.0.0/16"), {"drop": None}]]))
    make = kernel._chain

    def chain(key: tuple[str, str, str]) -> dict[str, Any]:
        item = make(key)
        if key[1] == "fw1":
            del item["chain"]["policy"]
        return item

    kernel._chain = chain  # type: ignore[method-assign]
    assert {o for o in read(kernel) if isinstance(o, ForwardRule)} == {
        ForwardRule(POD, "0.0.0.0/0")}


def test_a_chains_listing_that_times_out_is_named_as_unread() -> None:
    kernel = Failing(nat([saddr(POD), MASQ]).chains, {"chains"},
                     ListingTimeoutError("nft 'list chains' did not finish"))
    reader = ForeignReader(kernel, frozenset())
    assert reader.read() == frozenset()
    assert reader.unread == ["nft 'list chains' did not finish"]


def test_a_chains_listing_that_fails_is_no_foreign_state() -> None:
    kernel = Failing(nat([saddr(POD), MASQ]).chains, {"chains"}, BackendError("no"))
    reader = ForeignReader(kernel, frozenset())
    assert reader.read() == frozenset()
    assert reader.unread == []


def test_a_chain_listing_that_times_out_may_drop_anything_and_is_named() -> None:
    kernel = Failing(forward(("drop", [[jump("slow")], [saddr(POD), ACCEPT], [CT_REPLY, ACCEPT]]),
                             slow=[]).chains, {"slow"},
                     ListingTimeoutError("nft 'list chain inet fw0 slow' did not finish"))
    reader = ForeignReader(kernel, frozenset())
    assert reader.read() == frozenset()
    assert reader.unread == ["nft 'list chain inet fw0 slow' did not finish"]


def test_a_chain_listing_that_fails_may_drop_anything() -> None:
    kernel = Failing(forward(("drop", [[jump("bad")], [saddr(POD), ACCEPT], [CT_REPLY, ACCEPT]]),
                             bad=[]).chains, {"bad"}, BackendError("no"))
    reader = ForeignReader(kernel, frozenset())
    assert reader.read() == frozenset()
    assert reader.unread == []


def test_a_chain_that_is_gone_decides_nothing() -> None:
    # listed in "list chains", gone when listed itself (None): no rules
    kernel = forward(("drop", [[jump("gone")], [saddr(POD), ACCEPT], [CT_REPLY, ACCEPT]]))
    assert read(kernel) == {ForwardRule(POD, "0.0.0.0/0")}


def test_rules_without_statements_are_skipped() -> None:
    kernel = nat([saddr(POD), MASQ])
    listing = kernel.list

    def with_odd_rules(kind: str, **ref: str) -> list[dict[str, Any]] | None:
        items = listing(kind, **ref)
        if kind == "chain" and items is not None:
            odd: list[dict[str, Any]] = [
                {"rule": {"family": "inet", "table": "t", "chain": "post", "handle": 9}},
                   {"rule": {"expr": {"drop": None}}}, {"rule": "drop"}]
            items = [items[0], *odd, *items[1:]]
        return items

    kernel.list = with_odd_rules  # type: ignore[method-assign]
    assert read(kernel) == {MasqueradeRule(POD)}


def test_forward_accepts_eight_jumps_down_are_read_and_nine_are_not() -> None:
    pair = [[saddr(POD), ACCEPT], [CT_REPLY, ACCEPT]]
    eight = forward(("drop", [[jump("c1")]]),
                    **{f"c{i}": [[jump(f"c{i + 1}")]] for i in range(1, 8)}, c8=pair)
    assert read(eight) == {ForwardRule(POD, "0.0.0.0/0")}
    nine = forward(("drop", [[jump("c1")]]),
                   **{f"c{i}": [[jump(f"c{i + 1}")]] for i in range(1, 9)}, c9=pair)
    assert read(nine) == frozenset()


def test_an_accept_whose_replies_are_not_accepted_does_not_hide_the_next() -> None:
    kernel = forward(("drop", [[saddr("10.9.0.0/16"), daddr("10.8.0.0/16"), ACCEPT],
                               [saddr(POD), daddr(B), ACCEPT], [saddr(B), daddr(POD), ACCEPT]]))
    assert read(kernel) == {ForwardRule(POD, B), ForwardRule(B, POD)}


def test_an_iptables_nft_snat_ends_the_chain_for_what_it_matches() -> None:
    xt_snat = {"xt": {"type": "target", "name": "SNAT"}}
    assert read(nat([saddr(POD), xt_snat], [saddr(POD), MASQ],
                    family="ip")) == frozenset()
    assert read(nat([saddr("10.43.0.0/16"), xt_snat], [saddr(POD), MASQ],
                    family="ip")) == {MasqueradeRule(POD)}


def test_a_forward_base_chain_of_the_other_family_never_sees_the_packets() -> None:
    pair = [[saddr(POD), ACCEPT], [CT_REPLY, ACCEPT]]
    chains: Chains = {("ip6", "v6", "fwd"): ("forward", "drop", []),
              ("ip", "v4", "fwd"): ("forward", "drop", pair)}
    assert read(Kernel(chains)) == {ForwardRule(POD, "0.0.0.0/0")}
    chains[("ip", "v4b", "fwd")] = ("forward", "drop", [])
    assert read(Kernel(chains)) == frozenset()


class _StuckAfterAnError(Kernel):
    """Fails listing ``bad``; blocks listing ``slow`` until ``release`` is set."""

    calls = 0

    def __init__(self, chains: Any) -> None:
        super().__init__(chains)
        self.release = threading.Event()

    def list(self, kind: str, **ref: str) -> list[dict[str, Any]] | None:
        if ref.get("name") == "bad":
            raise BackendError("nft said no")
        if ref.get("name") == "slow":
            self.release.wait()
        return super().list(kind, **ref)

    def close(self) -> None:
        """The bounded lister's helper closes its kernel when it ends."""

    def run(self, batch: str, *, json_input: bool, dry_run: bool = False) -> tuple[int, str]:
        raise AssertionError("a foreign read runs no batch")


def test_a_read_given_up_on_replays_the_errors_it_met_and_names_what_it_did_not_list() -> None:
    chains = forward(("drop", [[jump("bad")], [saddr(POD), ACCEPT], [CT_REPLY, ACCEPT]]),
                     bad=[]).chains
    chains |= nat([jump("slow")], [saddr(POD), MASQ], family="ip", slow=[]).chains
    kernel = _StuckAfterAnError(chains)
    lister = BoundedLister(lambda: kernel)
    try:
        found, unread, _ = read_foreign_within(lister, frozenset(), time.monotonic() + 0.5)
    finally:
        kernel.release.set()
        lister.close()
    # the chain that failed may still drop anything (as in a read that finished), and
    # the one never listed hides the masquerade after the jump to it
    assert found == frozenset()
    assert unread == ("nft 'list chain ip t slow' did not finish within the foreign read's "
                      f"bound ({SLOW_LISTING})",)
