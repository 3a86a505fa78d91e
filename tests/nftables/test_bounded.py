"""Listings that never end: bounded by the deadline, without root (recorded listings).

A libnftables listing under a foreign writer can list again forever
(docs/reliability.md, "Progress under load"); here a fake kernel's listing of
one chain blocks until released, as such a dump would. The reads must come
back anyway: the foreign read without that chain (named as unread), k3snet's
own table read with a BackendError naming the bound. The kernel-level proof is
tests/safety/test_load.py.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any

import pytest

from k3snet.backends.nftables import NftablesBackend
from k3snet.backends.nftables.kernel import (
    HANDOVER_INTERVAL,
    BoundedLister,
    ListingTimeoutError,
    OwnTableLister,
    TextUnlistedError,
    beside_listings,
    list_in_child,
)
from k3snet.backends.nftables.parse import ForeignReader, read_foreign_within, read_own
from k3snet.errors import BackendError, ModelError
from k3snet.model import ForwardRule, MasqueradeRule, State
from tests.nftables.test_recorded import RecordedKernel


class _Hanging(RecordedKernel):
    """A recorded kernel whose listing of ``stuck`` does not end until ``release`` is set."""

    def __init__(self, stuck: str) -> None:
        super().__init__("k3s-node")
        self.stuck = stuck
        self.release = threading.Event()

    def list(self, kind: str, **ref: str) -> list[dict[str, Any]] | None:
        if " ".join(["list", kind, *ref.values()]) == self.stuck:
            self.release.wait()
        return super().list(kind, **ref)


def test_a_foreign_listing_that_never_ends_leaves_its_chain_unread() -> None:
    hanging = _Hanging("list chain ip filter FLANNEL-FWD")
    lister = BoundedLister(lambda: hanging)
    try:
        whole = ForeignReader(RecordedKernel("k3s-node"), frozenset({("inet", "k3snet")})).read()
        found, unread, _ = read_foreign_within(lister, frozenset({("inet", "k3snet")}),
                                            time.monotonic() + 0.5)
    finally:
        hanging.release.set()
        lister.close()
    assert any("FLANNEL-FWD" in text for text in unread)
    # flannel's accepts were in the chain not read: left out, not guessed
    assert ForwardRule("10.42.0.0/16", "0.0.0.0/0") in whole
    assert not any(isinstance(obj, ForwardRule) for obj in found)
    assert found < whole


def test_k3snet_table_not_read_within_the_bound_is_an_error_naming_it() -> None:
    hanging = _Hanging("list table inet k3snet")
    lister = BoundedLister(lambda: hanging)
    own = OwnTableLister(RecordedKernel("k3s-node"), lister, 0.2)
    try:
        with pytest.raises(BackendError, match=r"within 0.2 s \(read_timeout") as raised:
            own.list("table", family="inet", name="k3snet")
        lister.close()  # returns although its helper thread is still in the listing
    finally:
        hanging.release.set()
    # a slow listing is not always a changing ruleset: a table of 50 000 rules on a
    # loaded machine outlasts 10 s by itself, so the error says what to do and does not
    # assert one cause
    assert "raise it for a table this large or a machine this busy" in str(raised.value)
    assert "a large ruleset, a busy machine, or a ruleset that kept changing" in str(raised.value)


def test_a_listing_within_the_bound_is_the_kernel_s() -> None:
    kernel = RecordedKernel("k3s-node")
    lister = BoundedLister(lambda: kernel)
    try:
        own = OwnTableLister(RecordedKernel("k3s-node"), lister, 60)
        assert own.list("table", family="inet", name="k3snet") == kernel.list(
            "table", family="inet", name="k3snet")
        masquerade = MasqueradeRule("10.42.0.0/16", exclude=["10.42.0.0/16", "224.0.0.0/4"])
        found, unread, _ = read_foreign_within(lister, frozenset({("inet", "k3snet")}),
                                            time.monotonic() + 60)
        assert masquerade in found
        assert unread == ()
    finally:
        lister.close()


class _HangingText(RecordedKernel):
    """A recorded kernel that also lists text, whose text listing does not end until
    ``release`` is set."""

    def __init__(self) -> None:
        super().__init__("k3s-node")
        self.release = threading.Event()

    def list_text(self, kind: str, **ref: str) -> str | None:
        self.release.wait()
        return None


def test_a_helper_without_text_listings_reads_k3snet_table_as_json() -> None:
    lister = BoundedLister(lambda: RecordedKernel("k3s-node"))
    try:
        own = OwnTableLister(RecordedKernel("k3s-node"), lister, 60)
        with pytest.raises(TextUnlistedError, match="lists no text"):
            own.list_text("table", family="inet", name="k3snet")
        via_lister = read_own(own, "k3snet", ("inet",), 1)
        direct = read_own(RecordedKernel("k3s-node"), "k3snet", ("inet",), 1)
        assert via_lister.objects == direct.objects
        assert via_lister.objects
        assert via_lister.handles == direct.handles
    finally:
        lister.close()


def test_a_text_listing_past_the_bound_is_the_same_error_and_a_busy_helper_lists_none() -> None:
    hanging = _HangingText()
    lister = BoundedLister(lambda: hanging)
    own = OwnTableLister(RecordedKernel("k3s-node"), lister, 0.2)
    try:
        with pytest.raises(BackendError, match=r"within 0.2 s \(read_timeout"):
            own.list_text("table", family="inet", name="k3snet")
        # the helper is still in that listing: no text now (the JSON listing, in a child,
        # serves), refused before any wait (a wait would end in the read_timeout error)
        with pytest.raises(TextUnlistedError, match="still in an earlier listing"):
            own.list_text("table", family="inet", name="k3snet")
        lister.close()
    finally:
        hanging.release.set()


@pytest.mark.parametrize("value", [0, -1, "2", True, float("nan")])
@pytest.mark.parametrize("option", ["foreign_timeout", "read_timeout"])
def test_a_bound_is_a_positive_number_of_seconds(option: str, value: object) -> None:
    with pytest.raises(ModelError, match=f"{option} must be a number of seconds"):
        NftablesBackend(kernel=lambda: RecordedKernel("k3s-node"), **{option: value})  # type: ignore[arg-type]


def test_a_child_listing_past_its_deadline_is_not_run() -> None:
    with pytest.raises(ListingTimeoutError, match="did not finish within its bound"):
        list_in_child(time.monotonic() - 1, "chains")


def _warnings(backend: NftablesBackend) -> tuple[str, ...]:
    """``backend.warnings`` read again (mypy holds a property to what an assert compared it to)."""
    return backend.warnings


def test_an_incomplete_foreign_read_is_a_warning_of_the_plan() -> None:
    hanging = _Hanging("list chain ip filter FLANNEL-FWD")
    nft = NftablesBackend(kernel=lambda: RecordedKernel("k3s-node"), foreign_timeout=0.3)
    nft._foreign_bounded = BoundedLister(lambda: hanging)  # recorded, one listing hangs
    try:
        with nft:
            assert nft.warnings == ()
            nft.expect(State())  # no forward rule wanted: no default judged
            state = nft.observe()
            (warning,) = _warnings(nft)
    finally:
        hanging.release.set()
    assert "within 0.3 s (foreign_timeout)" in warning
    assert "list chain ip filter FLANNEL-FWD" in warning
    assert not any(isinstance(obj, ForwardRule) for obj in state.foreign)
    assert state.owned  # k3snet's own table was read all the same


def test_an_incomplete_foreign_read_is_logged_once_while_it_stays_the_same(
        caplog: pytest.LogCaptureFixture) -> None:
    # Only `k3snet plan`/`apply` showed the warning: the agent, which prints no plan,
    # said nowhere that its foreign state was read in part (iptables' warnings were
    # logged). Once per change, not once per agent pass.
    hanging = _Hanging("list chain ip filter FLANNEL-FWD")
    nft = NftablesBackend(kernel=lambda: RecordedKernel("k3s-node"), foreign_timeout=0.2)
    nft._foreign_bounded = BoundedLister(lambda: hanging)
    try:
        with nft, caplog.at_level(logging.WARNING, logger="k3snet.backends.nftables"):
            nft.expect(State())  # no forward rule wanted: no default judged
            nft.observe()
            (warning,) = nft.warnings
            assert _logged(caplog) == [(logging.WARNING, warning)]
            nft.log_warnings()  # what the next read finding the same gap does
            assert _logged(caplog) == [(logging.WARNING, warning)]
    finally:
        hanging.release.set()


def _logged(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records
            if r.name.startswith("k3snet.backends.nftables")]


def test_close_does_not_wait_for_a_listing_nobody_waits_for() -> None:
    # A prefetch's listing that is never taken (the command failed before its observe)
    # may never end under a foreign writer: closing must not wait for it.
    hanging = _Hanging("list table inet k3snet")
    lister = BoundedLister(lambda: hanging)
    try:
        future = lister.submit(lambda kernel: kernel.list("table", family="inet", name="k3snet"))
        closing = threading.Thread(target=lister.close, daemon=True)
        closing.start()
        closing.join(5)
        assert not closing.is_alive(), "close() waits for the listing"
        assert not future.done()
    finally:
        hanging.release.set()
    assert future.result(timeout=10)  # released, the helper ends the job and itself


class _SlowToFree(RecordedKernel):
    """A kernel whose object takes its time to go (as libnftables frees a big cache)."""

    def __init__(self, closed: threading.Event, freed: threading.Event,
                 release: threading.Event) -> None:
        super().__init__("k3s-node")
        self.closed, self.freed, self.release = closed, freed, release

    def close(self) -> None:
        self.closed.set()

    def __del__(self) -> None:
        self.release.wait(10)
        self.freed.set()


def test_close_returns_with_the_helpers_kernel_closed_and_leaves_the_freeing_to_it() -> None:
    # Freeing libnftables' context after a 10 000-rule listing takes 20-30 ms: close()
    # waits until the helper's kernel is closed, not for the context to be freed.
    closed, freed, release = threading.Event(), threading.Event(), threading.Event()
    lister = BoundedLister(lambda: _SlowToFree(closed, freed, release))  # the helper's only
    future = lister.submit(lambda k: k.list("table", family="inet", name="k3snet"))
    future.result(timeout=10)
    thread = lister._thread
    assert thread is not None
    try:
        lister.close()
        assert closed.is_set(), "close() returned before the helper closed its kernel"
        assert thread.is_alive(), "close() waited for the freeing"
        assert not freed.is_set()
    finally:
        release.set()
    thread.join(10)
    assert not thread.is_alive(), "the helper does not end by itself"
    assert freed.is_set()


def test_beside_listings_the_gil_is_handed_over_quickly_and_the_interval_set_back() -> None:
    before = sys.getswitchinterval()
    try:
        with beside_listings():
            assert sys.getswitchinterval() == pytest.approx(HANDOVER_INTERVAL, rel=0.05)
        assert sys.getswitchinterval() == before
        sys.setswitchinterval(HANDOVER_INTERVAL / 2)  # a shorter one stays
        seen = []

        def fails() -> None:
            with beside_listings():
                seen.append(sys.getswitchinterval())
                raise RuntimeError

        with pytest.raises(RuntimeError):
            fails()
        assert seen == [pytest.approx(HANDOVER_INTERVAL / 2, rel=0.05)]
        assert sys.getswitchinterval() == pytest.approx(HANDOVER_INTERVAL / 2, rel=0.05)
    finally:
        sys.setswitchinterval(before)


def test_overlapping_blocks_beside_listings_set_back_what_the_first_found() -> None:
    before = sys.getswitchinterval()
    try:
        first, second = beside_listings(), beside_listings()
        first.__enter__()
        second.__enter__()
        first.__exit__(None, None, None)  # the first ends first: the second still runs
        assert sys.getswitchinterval() == pytest.approx(HANDOVER_INTERVAL, rel=0.05)
        second.__exit__(None, None, None)
        assert sys.getswitchinterval() == before
        entered = threading.Barrier(4)
        leave = threading.Event()

        def block() -> None:
            with beside_listings():
                entered.wait()
                leave.wait()

        threads = [threading.Thread(target=block) for _ in range(3)]
        for thread in threads:
            thread.start()
        entered.wait()
        assert sys.getswitchinterval() == pytest.approx(HANDOVER_INTERVAL, rel=0.05)
        leave.set()
        for thread in threads:
            thread.join(10)
        assert sys.getswitchinterval() == before
    finally:
        sys.setswitchinterval(before)
