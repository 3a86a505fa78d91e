"""A candidate's read of the Lease that the API server answers late (queued by its
Priority and Fairness while it is overloaded, a slow link): the holder's renewal that
read shows may have landed at any moment up to its answer.

client-go's candidate counts the Lease's last change from when its read returned
(``setObservedRecord`` takes the clock then). k3snet's took the clock before the read,
so a read sent 9 s before the renewal it showed counted that renewal 9 s early: the
candidate took the Lease 6 s after the renewal, while the holder, its later renewals
failing, still led for its renew deadline (10 s after it): two writers of the
cluster-wide objects at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from k3snet.agent import LeaderElector, LeaseSettings
from k3snet.testing.kube import EmulatedApiServer
from tests.agent.clock import FakeClock

LEASES = "coordination.k8s.io/v1/leases"
SETTINGS = LeaseSettings("kube-system", "k3snet-cluster-writer", duration=15.0,
                         renew_deadline=10.0, retry_period=2.0)
QUEUED = 9.0
"""Seconds the candidate's read waits before the API server serves it (under its 10 s
request timeout)."""


def _elector(srv: EmulatedApiServer, identity: str, clock: FakeClock) -> LeaderElector:
    return LeaderElector(srv.api_client(), identity, SETTINGS, clock=clock,
                         random_fraction=lambda: 0.0)


def _served_late(elector: LeaderElector, clock: FakeClock,
                 meanwhile: Callable[[], object]) -> None:
    """The elector's next read is served :data:`QUEUED` seconds after it is sent, once
    ``meanwhile`` ran (the holder's renewal landing while it waited)."""
    api: Any = elector._api
    read = api.read_namespaced_lease

    def queued(*args: Any, **kwargs: Any) -> Any:
        api.read_namespaced_lease = read
        clock.now += QUEUED
        meanwhile()
        return read(*args, **kwargs)

    api.read_namespaced_lease = queued


def test_a_candidate_counts_a_renewal_from_when_its_read_was_answered_never_sent(
        server: EmulatedApiServer) -> None:
    clock = FakeClock()
    holder, candidate = _elector(server, "node-a", clock), _elector(server, "node-b", clock)
    assert holder.step()
    assert not candidate.step()
    clock.now += SETTINGS.retry_period
    renewed: list[float] = []

    def renewal() -> None:
        assert holder.step()  # its last renewal to get through: the others fail
        renewed.append(clock.now)

    _served_late(candidate, clock, renewal)
    assert not candidate.step()  # shows the renewal, answered QUEUED s after it was sent
    # From here on the holder's renewals do not get through: it leads until its renew
    # deadline, counted from (before) that renewal, and stops by time alone.
    while holder.is_leader:
        assert clock.now - renewed[0] < SETTINGS.renew_deadline
        assert not candidate.step(), (
            f"taken {clock.now - renewed[0]:g} s after the holder's last renewal, while "
            "the holder still leads")
        clock.now += 0.5
    assert clock.now - renewed[0] >= SETTINGS.renew_deadline
    clock.now = renewed[0] + SETTINGS.duration
    assert candidate.step()  # the holder's Lease, not renewed for the duration: taken
    lease = server.get(LEASES, SETTINGS.name, SETTINGS.namespace)
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == "node-b"
