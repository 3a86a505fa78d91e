"""``NftablesBackend.prefetch()``: the table listed in the background, never read stale.

A cold ``k3snet apply`` starts the listing of k3snet's table before it compiles the
spec (tests/cli/test_expect_hint.py), outside the namespace lock. What the next
observe reads must still be the kernel's table at that observe: the listing is
taken only when no transaction was committed since it began (the generation id
read before it), and the table is listed again otherwise. Kernel tests, as root,
each in a namespace of its own; the kernel's own view is ``nft -j list``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from k3snet.backends.nftables import NftablesBackend
from k3snet.backends.nftables.kernel import BoundedLister, Libnftables
from k3snet.cli import main
from k3snet.lab.netns import run_in
from k3snet.model import ForwardRule, MasqueradeRule, SnatRule, State
from k3snet.planner import Plan, plan
from k3snet.spec import cache as spec_cache
from tests.nftables.test_bounded import _Hanging, _HangingText
from tests.nftables.test_recorded import RecordedKernel

WANTED = State(owned=[
    MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24", out_interface="eth0"),
    MasqueradeRule("10.42.0.0/16", destination="192.168.3.0/24", exclude=["192.168.3.0/28"]),
    SnatRule("fd00:42::/56", destination="fd00:2::/64", to_address="fd00:1::5"),
    ForwardRule("10.42.0.0/16", "192.168.2.0/24", out_interface="eth0"),
])


@pytest.fixture
def listings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every text listing libnftables makes in this test (any thread), as its command."""
    made: list[str] = []
    real = Libnftables.list_text

    def counted(self: Libnftables, kind: str, **ref: str) -> str | None:
        made.append(" ".join(["list", kind, *ref.values()]))
        return real(self, kind, **ref)

    monkeypatch.setattr(Libnftables, "list_text", counted)
    return made


def _written(ns: str, state: State = WANTED) -> None:
    with NftablesBackend(ns) as writer:
        writer.apply(plan(writer.observe(), state))


def _listed_now(ns: str) -> State:
    """What a backend that never prefetched reads (no hint, no cache)."""
    with NftablesBackend(ns) as fresh:
        return fresh.observe()


def _prefetched(backend: NftablesBackend) -> None:
    """Wait until the listings :meth:`prefetch` started are done (they are then stale
    for any commit that follows)."""
    started: Any = backend._started  # the listing in flight
    assert started is not None, "prefetch started no listing"
    deadline = time.monotonic() + 30
    futures = [*started.listings.values(), *([started.foreign.future] if started.foreign else [])]
    while not all(f.done() for f in futures):
        assert time.monotonic() < deadline
        time.sleep(0.01)


def _own_rules(ns: str) -> list[dict[str, Any]]:
    listed = json.loads(run_in(ns, ["nft", "-j", "list", "table", "inet", "k3snet"]).stdout)
    return [i["rule"] for i in listed["nftables"] if "rule" in i]


def test_an_observe_after_a_prefetch_reads_the_table_once_and_as_it_is(
        ns: str, listings: list[str]) -> None:
    _written(ns)
    listings.clear()
    with NftablesBackend(ns) as reader:
        # One object of the hint is not in the table and one in the table is not in the
        # hint: the lines are taken from the hint where they can be, parsed otherwise.
        extra = MasqueradeRule("10.42.0.0/16", destination="172.16.0.0/12")
        reader.expect(WANTED.with_owned([*list(WANTED.owned)[1:], extra]))
        reader.prefetch()
        observed = reader.observe()
    assert listings == ["list table inet k3snet"]
    assert observed.owned == WANTED.owned
    assert observed == _listed_now(ns)


@pytest.mark.parametrize("table", ["absent", "holding k3snet's rules"])
def test_a_finished_prefetch_renders_the_hint_only_for_a_table_with_rules(
        ns: str, monkeypatch: pytest.MonkeyPatch, table: str) -> None:
    # Before a first apply the table is absent: rendering 10 000 expected rules to take
    # none of them cost a cold full apply ~55 ms (docs/performance.md).
    from k3snet.backends.nftables import backend as backend_module  # noqa: PLC0415
    from k3snet.backends.nftables import text as text_module  # noqa: PLC0415

    rendered: list[int] = []
    real = text_module.expected_lines

    def counted(objects: Any, inet: bool) -> Any:
        rendered.append(len(objects))
        return real(objects, inet)

    monkeypatch.setattr(backend_module, "expected_lines", counted)
    monkeypatch.setattr(text_module, "expected_lines", counted)
    if table != "absent":
        _written(ns)
    with NftablesBackend(ns) as reader:
        reader.expect(WANTED)
        reader.prefetch()
        _prefetched(reader)
        observed = reader.observe()
    assert observed == _listed_now(ns)
    assert rendered == ([] if table == "absent" else [len(WANTED.owned)])
    assert observed.owned == (frozenset() if table == "absent" else WANTED.owned)


FOREIGN_NAT = ("table ip admin {\n chain post {\n  type nat hook postrouting priority srcnat;\n"
               "  ip saddr 10.42.0.0/16 ip daddr 198.51.100.0/24 masquerade\n }\n}\n")


def _foreign_nat(ns: str, tmp: Path) -> None:
    rules = tmp / "foreign.nft"
    rules.write_text(FOREIGN_NAT)
    run_in(ns, ["nft", "-f", str(rules)])


@pytest.mark.parametrize("commit", ["delete one of k3snet's rules", "add a foreign NAT rule"])
def test_a_commit_after_the_prefetch_is_in_the_next_observe(
        ns: str, listings: list[str], commit: str, tmp_path: Path) -> None:
    _written(ns)
    with NftablesBackend(ns) as reader:
        reader.expect(WANTED)
        reader.prefetch()
        _prefetched(reader)
        # Another writer commits after the listing (another k3snet would, before this
        # one takes the namespace lock): the listing is stale.
        if commit == "add a foreign NAT rule":  # read into the foreign state
            _foreign_nat(ns, tmp_path)
        else:
            victim = next(r for r in _own_rules(ns) if "192.168.3.0" in json.dumps(r["expr"]))
            run_in(ns, ["nft", "delete", "rule", "inet", "k3snet", victim["chain"], "handle",
                        str(victim["handle"])])
        listings.clear()
        observed = reader.observe()
    assert listings[0] == "list table inet k3snet"  # listed again, not taken stale
    assert observed == _listed_now(ns)
    gone = MasqueradeRule("10.42.0.0/16", destination="192.168.3.0/24",
                          exclude=["192.168.3.0/28"])
    assert (gone in observed.owned) == (commit == "add a foreign NAT rule")
    admin = MasqueradeRule("10.42.0.0/16", destination="198.51.100.0/24")
    assert (admin in observed.foreign) == (commit == "add a foreign NAT rule")


def test_a_prefetch_reads_the_other_tables_too(ns: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    _written(ns)
    _foreign_nat(ns, tmp_path)
    json_listings: list[str] = []
    real = Libnftables.list

    def counted(self: Libnftables, kind: str, **ref: str) -> Any:
        json_listings.append(" ".join(["list", kind, *ref.values()]))
        return real(self, kind, **ref)

    monkeypatch.setattr(Libnftables, "list", counted)
    with NftablesBackend(ns) as reader:
        reader.prefetch()
        _prefetched(reader)
        read_ahead = list(json_listings)
        observed = reader.observe()
    assert "list chains" in read_ahead  # the other tables were read before the observe
    assert json_listings == read_ahead  # and the observe listed none again
    assert MasqueradeRule("10.42.0.0/16", destination="198.51.100.0/24") in observed.foreign
    assert observed == _listed_now(ns)


def test_a_prefetch_with_the_cache_current_lists_nothing(
        ns: str, listings: list[str]) -> None:
    _written(ns)
    with NftablesBackend(ns) as reader:
        first = reader.observe()
        listings.clear()
        reader.prefetch()
        assert reader.observe() is first
    assert listings == []


def test_observe_refresh_after_a_prefetch_lists_again(ns: str, listings: list[str]) -> None:
    _written(ns)
    with NftablesBackend(ns) as reader:
        reader.prefetch()
        _prefetched(reader)
        listings.clear()
        assert reader.observe(refresh=True).owned == WANTED.owned
    assert listings == ["list table inet k3snet"]


def test_a_prefetch_never_read_is_closed_with_its_backend(ns: str, listings: list[str]) -> None:
    _written(ns)
    listings.clear()
    reader = NftablesBackend(ns)
    reader.prefetch()
    reader.prefetch()  # one listing in flight at a time
    started: Any = reader._started
    reader.close()  # returns without waiting for the listing (test_bounded.py)
    for future in started.listings.values():
        future.exception(timeout=30)  # the helper still ends it
    assert listings == ["list table inet k3snet"]
    assert reader._bounded is None  # its helper thread was stopped
    # Nothing of it stays behind: the table is as written, and can be read again.
    assert _listed_now(ns).owned == WANTED.owned


def test_a_split_family_backend_takes_both_prefetched_tables(
        ns: str, listings: list[str]) -> None:
    with NftablesBackend(ns, family="split") as writer:
        writer.apply(plan(writer.observe(), WANTED))
    listings.clear()
    with NftablesBackend(ns, family="split") as reader:
        reader.expect(WANTED)
        reader.prefetch()
        observed = reader.observe()
    assert sorted(listings) == ["list table ip k3snet", "list table ip6 k3snet"]
    assert observed.owned == WANTED.owned


def test_a_table_nft_cannot_name_is_listed_as_json_after_a_prefetch(
        ns: str, listings: list[str]) -> None:
    # nft's language cannot name a table "counter": the prefetched text listing fails,
    # and the read falls back to the JSON listing as it does without a prefetch.
    with NftablesBackend(ns, table="counter", syntax="json") as writer:
        writer.apply(plan(writer.observe(), WANTED))
    listings.clear()
    with NftablesBackend(ns, table="counter", syntax="json") as reader:
        reader.prefetch()
        observed = reader.observe()
    assert listings == ["list table inet counter"]
    assert observed.owned == WANTED.owned


def test_the_cli_on_a_warm_spec_cache_applies_each_spec_as_it_is(
        ns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The whole cold path of `k3snet apply` with the cache on (the suite runs with it
    # off): the backends made from the spec's head, their listing started before the
    # destinations are read, then taken. Each spec, applied twice, is what the kernel has.
    monkeypatch.setenv("K3SNET_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("K3SNET_SPEC_CACHE", raising=False)
    heads: list[bool] = []
    head = spec_cache.load_spec_head_cached

    def recorded(path: Path) -> Any:
        found = head(path)
        heads.append(found is not None)
        return found

    monkeypatch.setattr(spec_cache, "load_spec_head_cached", recorded)
    spec = tmp_path / "spec.yaml"
    header = "apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\ndestinations:\n"
    for cidrs in (["192.168.2.0/24", "192.168.3.0/24"], ["192.168.3.0/24"],
                  ["192.168.2.0/24", "192.168.3.0/24"]):
        spec.write_text(header + "".join(f"  - cidr: {c}\n    gateway: 192.168.1.1\n"
                                         for c in cidrs))
        for _ in range(2):  # a miss, then a hit
            assert main(["apply", "-f", str(spec), "--netns", ns, "--backend", "nftables:nat",
                         "--no-facts", "--auto-approve"]) == 0
            listed = {e["match"]["right"]["prefix"]["addr"]
                      for r in _own_rules(ns) for e in r["expr"]
                      if "match" in e and e["match"]["left"].get("payload", {}).get("field")
                      == "daddr"}
            assert listed == {c.split("/")[0] for c in cidrs}
    assert heads == [False, True] * 3  # each spec: a miss, then the early way


@pytest.mark.parametrize("then", ["a commit", "a check, which reads no other table"])
def test_a_prefetched_foreign_read_that_never_ends_does_not_block_k3snet_s_table(
        ns: str, then: str) -> None:
    # A foreign chain whose listing never ends (a writer committing all the time), read
    # by a prefetch that a commit then makes stale, or that a check does not take: had
    # k3snet's own table been listed in the same helper, behind it, it would not list
    # within read_timeout. The foreign read is bounded by foreign_timeout, as any
    # read is; k3snet's own table is listed in a helper of its own all the while.
    hanging = _Hanging("list chain ip filter FLANNEL-FWD")
    backend = NftablesBackend(ns, kernel=lambda: RecordedKernel("k3s-node"),
                              foreign_timeout=0.3, read_timeout=3)
    # The helpers' kernel: recorded, and one foreign chain's listing hangs.
    backend._bounded = BoundedLister(lambda: hanging)
    backend._foreign_bounded = BoundedLister(lambda: hanging)
    try:
        with backend:
            backend.prefetch()
            if then == "a commit":
                backend._kernel.generation += 1  # type: ignore[union-attr]
            else:  # the prefetch is taken, its foreign read is not
                assert backend.check(Plan(())) == ()
            began = time.monotonic()
            observed = backend.observe(refresh=then != "a commit")
            took = time.monotonic() - began
            unread_now = backend.foreign_unread
    finally:
        hanging.release.set()
    assert took < 3
    with NftablesBackend(kernel=lambda: RecordedKernel("k3s-node")) as plain:
        assert observed.owned == plain.observe().owned
    # The stale read was abandoned, not queued behind: the observe's own read of the
    # other tables ran (in child processes, here on the lab's empty ruleset) instead of
    # leaving every table unread.
    assert not any("'list chains'" in unread for unread in unread_now)


def test_a_stale_prefetched_listing_that_never_ends_is_given_up_within_read_timeout(
        ns: str) -> None:
    # The prefetch's listing of k3snet's table never ends and a commit makes it stale.
    # The next listing, queued behind it in the same helper, would time out: the stale
    # one is waited for within read_timeout and given up on, and the table is then
    # listed in a child process (the lab's real ruleset: no k3snet table).
    hanging = _HangingText()
    backend = NftablesBackend(ns, kernel=lambda: RecordedKernel("k3s-node"), read_timeout=1)
    backend._bounded = BoundedLister(lambda: hanging)
    backend._foreign_bounded = BoundedLister(lambda: RecordedKernel("k3s-node"))
    try:
        with backend:
            backend.prefetch()
            backend._kernel.generation += 1  # type: ignore[union-attr]  # a commit
            observed = backend.observe()
    finally:
        hanging.release.set()
    assert observed.owned == frozenset()
    assert observed.foreign  # the other tables, from their own helper
