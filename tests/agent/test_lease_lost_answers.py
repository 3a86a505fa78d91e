"""The Lease elector when the API server applied a write whose answer was lost (a
timeout, a proxy's 504), against the emulated API server (``served=True`` faults).

client-go's elector reads the Lease at its next try and, finding its own identity
there, renews it at once, keeping its ``acquireTime`` and ``leaseTransitions``
(``tryAcquireOrRenew``: ``IsLeader()`` is the holder of the record just read). k3snet's
candidates share the node's name as identity, so it takes the Lease as its own only
while it holds the ``acquireTime`` it wrote: the renewal's lost answer, taking the
holder past its renew deadline (the request's 10 s timeout equals it), and a lost
answer to the write that took the Lease, each had it wait out its own Lease for
``--lease-duration`` and take it again as a new holder (no cluster-wide writer
meanwhile, a transition counted). It must never hold it past its renew deadline of
the last renewal it saw answered either.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from k3snet.agent import LeaderElector, LeaseSettings
from k3snet.testing.kube import EmulatedApiServer
from tests.agent.clock import FakeClock

LEASES = "coordination.k8s.io/v1/leases"
SETTINGS = LeaseSettings("kube-system", "k3snet-cluster-writer", duration=15.0,
                         renew_deadline=10.0, retry_period=2.0)
TIMEOUT = 0.2
"""The elector's request timeout here (the fault's answer comes after it)."""
TAKEN = 10.0
"""Seconds the lost answer's request took on the elector's clock: the agent's 10 s."""


def _elector(srv: EmulatedApiServer, clock: FakeClock, identity: str = "node-a",
             changes: list[bool] | None = None, taken: float = TAKEN) -> LeaderElector:
    elector = LeaderElector(srv.api_client(), identity, SETTINGS, clock=clock,
                            timeout=TIMEOUT, random_fraction=lambda: 0.0,
                            on_change=None if changes is None else changes.append)
    # The request the fault answers late takes ``taken`` seconds on the elector's clock.
    api: Any = elector._api  # (the client the elector was given)

    def slow(call: Callable[..., Any]) -> Callable[..., Any]:
        def sent(*args: Any, **kwargs: Any) -> Any:
            try:
                return call(*args, **kwargs)
            except Exception:
                clock.now += taken
                raise
        return sent

    api.patch_namespaced_lease = slow(api.patch_namespaced_lease)
    api.create_namespaced_lease = slow(api.create_namespaced_lease)
    return elector


def _spec(srv: EmulatedApiServer) -> dict[str, Any]:
    lease = srv.get(LEASES, SETTINGS.name, SETTINGS.namespace)
    assert lease is not None
    spec: dict[str, Any] = lease["spec"]
    return spec


def _lose_next(srv: EmulatedApiServer, method: str) -> None:
    srv.fail(504, method=method, plural="leases", delay=2 * TIMEOUT, served=True)


def test_a_renewal_whose_answer_was_lost_is_renewed_at_the_next_step_as_the_same_holding(
        server: EmulatedApiServer) -> None:
    clock = FakeClock()
    changes: list[bool] = []
    holder = _elector(server, clock, changes=changes)
    assert holder.step()
    acquired = _spec(server)["acquireTime"]
    clock.now += SETTINGS.retry_period
    assert holder.step()
    renewed = clock.now
    clock.now += SETTINGS.retry_period
    _lose_next(server, "PATCH")
    before = _spec(server)["renewTime"]
    assert not holder.step()  # the answer lost, 10 s later: past the renew deadline
    assert _spec(server)["renewTime"] != before  # (the server applied it)
    assert clock.now - renewed >= SETTINGS.renew_deadline
    assert not holder.is_leader  # never past its renew deadline of the last answer
    clock.now += SETTINGS.retry_period
    assert holder.step()  # its own Lease, renewed: not waited out for the duration
    spec = _spec(server)
    assert (spec["holderIdentity"], spec["acquireTime"], spec["leaseTransitions"]) == (
        "node-a", acquired, 0)
    assert changes == [True, False, True]


def test_a_lost_answer_within_the_renew_deadline_keeps_the_holder_leading(
        server: EmulatedApiServer) -> None:
    clock = FakeClock()
    holder = _elector(server, clock, taken=SETTINGS.retry_period)  # lost 2 s after the send
    assert holder.step()
    clock.now += SETTINGS.retry_period
    _lose_next(server, "PATCH")
    assert holder.step()  # within its renew deadline of the create: still the leader
    clock.now += SETTINGS.retry_period
    assert holder.step()
    assert _spec(server)["leaseTransitions"] == 0


@pytest.mark.parametrize("method", ["POST", "PATCH"], ids=["create", "take-free"])
def test_a_lease_taken_by_a_write_whose_answer_was_lost_is_the_candidates_own(
        server: EmulatedApiServer, method: str) -> None:
    clock = FakeClock()
    if method == "PATCH":  # a Lease released: free, taken by a patch
        first = _elector(server, clock, identity="node-b")
        assert first.step()
        first.stop(release=True)
        assert not _spec(server).get("holderIdentity")
    candidate = _elector(server, clock)
    _lose_next(server, method)
    assert not candidate.step()
    spec = _spec(server)
    assert spec["holderIdentity"] == "node-a"  # (the server applied it)
    taken = (spec["acquireTime"], spec["leaseTransitions"])
    clock.now += SETTINGS.retry_period
    assert candidate.step()  # its own: not waited out for the duration
    spec = _spec(server)
    assert (spec["acquireTime"], spec["leaseTransitions"]) == taken
    # Another candidate still waits the Lease out as a live holder's.
    other = _elector(server, clock, identity="node-c")
    assert not other.step()


def test_a_lease_of_the_same_identity_another_elector_took_is_still_waited_out(
        server: EmulatedApiServer) -> None:
    # The node's next agent, its identity the same, took the Lease whose answer this
    # elector lost: the acquireTime is the other's, so it is not this one's.
    clock = FakeClock()
    candidate = _elector(server, clock)
    _lose_next(server, "POST")
    assert not candidate.step()
    server.delete(LEASES, SETTINGS.name, SETTINGS.namespace)
    other = _elector(server, clock)
    assert other.step()
    clock.now += SETTINGS.retry_period
    assert not candidate.step()
    assert other.step()


@pytest.mark.parametrize("method", ["POST", "PATCH"], ids=["take", "renew"])
def test_a_lease_whose_write_answer_was_lost_is_released_on_exit(
        server: EmulatedApiServer, method: str) -> None:
    # The Lease is this elector's (its acquireTime): freed on exit, as a leader's is,
    # not left to the next candidate to wait out for the lease duration.
    clock = FakeClock()
    elector = _elector(server, clock)
    if method == "PATCH":
        assert elector.step()
        clock.now += SETTINGS.retry_period
    _lose_next(server, method)
    assert not elector.step()  # (10 s later: past the renew deadline)
    assert _spec(server)["holderIdentity"] == "node-a"
    elector.stop(release=True)
    assert not _spec(server).get("holderIdentity")
    other = _elector(server, clock, identity="node-b")
    assert other.step()  # at once


def test_a_lease_another_elector_took_after_a_lost_answer_is_not_released_on_exit(
        server: EmulatedApiServer) -> None:
    clock = FakeClock()
    candidate = _elector(server, clock)
    _lose_next(server, "POST")
    assert not candidate.step()
    server.delete(LEASES, SETTINGS.name, SETTINGS.namespace)
    other = _elector(server, clock)  # the node's next agent, the same identity
    assert other.step()
    candidate.stop(release=True)
    assert _spec(server)["holderIdentity"] == "node-a"
    clock.now += SETTINGS.retry_period
    assert other.step()
