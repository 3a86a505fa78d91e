"""The Lease elector against the API server's own wire format and foreign writers.

A real API server answers every MicroTime (``acquireTime``, ``renewTime``) as
apimachinery's ``MicroTime.MarshalJSON`` writes it: ``t.UTC().Format(RFC3339Micro)``,
``2006-01-02T15:04:05.000000Z07:00``, six fractional digits always (zeros kept), ``Z``;
and it refuses one that ``time.Parse(RFC3339Micro, ...)`` does not read (fewer or more
fractional digits, none). The emulator stores what it is sent: these tests write the
Lease back as the real server would, and check what k3snet sends is what it accepts.
The holder renews only the Lease of its own acquisition (its acquireTime compared after
that round trip): a mismatch for a value it wrote itself would have it wait its own
Lease out and take it again every --lease-duration, leaderless in between.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterator
from typing import Any

import pytest

from k3snet.agent import LeaderElector, LeaseSettings
from k3snet.agent import _lease as lease_module
from k3snet.testing.kube import EmulatedApiServer
from tests.agent.clock import FakeClock

LEASES = "coordination.k8s.io/v1/leases"
SETTINGS = LeaseSettings("kube-system", "k3snet-cluster-writer", duration=15.0,
                         renew_deadline=10.0, retry_period=2.0)
# Go's RFC3339Micro as MarshalJSON writes it (UTC): what a real API server answers.
WIRE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
# What time.Parse(RFC3339Micro, ...) reads: six fractional digits, Z or an offset.
GO_MICRO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)")


class _Stepped(LeaderElector):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, random_fraction=lambda: 0.0, **kwargs)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _lease(srv: EmulatedApiServer) -> dict[str, Any]:
    lease = srv.get(LEASES, SETTINGS.name, SETTINGS.namespace)
    assert lease is not None
    return lease


def _as_the_api_server_writes_it(value: str) -> str:
    """``MicroTime.MarshalJSON`` of the instant ``value`` names (UTC, 6 digits, Z)."""
    when = datetime.datetime.fromisoformat(value).astimezone(datetime.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond:06d}Z"


def _stored_as_the_api_server_answers(srv: EmulatedApiServer) -> None:
    """Write the Lease back with its MicroTimes in the API server's own form (a new
    resourceVersion, as the server's write gave it)."""
    lease = _lease(srv)
    for field in ("acquireTime", "renewTime"):
        if lease["spec"].get(field):
            lease["spec"][field] = _as_the_api_server_writes_it(lease["spec"][field])
    srv.put(LEASES, lease)


def _wall_times(start: datetime.datetime) -> Iterator[datetime.datetime]:
    """Wall times with whole seconds (microsecond 0), trailing zeros, and an NTP step
    back between them: only equality of the acquireTime read back may count."""
    when = start
    steps = [datetime.timedelta(seconds=2), datetime.timedelta(microseconds=100_000),
             datetime.timedelta(seconds=-3, microseconds=7),
             datetime.timedelta(seconds=1, microseconds=-107)]
    while True:
        for step in steps:
            yield when
            when += step


def test_every_micro_time_the_elector_sends_is_one_the_api_server_reads(
    server: EmulatedApiServer, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The client (kubernetes >= 37) sends a create's body through its model: a MicroTime
    # as isoformat(), with no fraction at microsecond 0, which time.Parse(RFC3339Micro)
    # refuses (400). The emulator stored it: a Lease created on a whole second failed.
    times = _wall_times(datetime.datetime(2026, 12, 6, 2, 0, 0, tzinfo=datetime.UTC))
    monkeypatch.setattr(lease_module, "_now", lambda: next(times))
    api = server.api_client()
    holder = _Stepped(api, "node-a", SETTINGS, clock=clock)
    assert holder.step()  # create
    clock.now += SETTINGS.retry_period
    assert holder.step()  # renew
    holder.stop(release=True)  # release
    other = _Stepped(api, "node-b", SETTINGS, clock=clock)
    assert other.step()  # acquire by patch
    sent = [body["spec"][field] for method, path, body in server.requests()
            if "/leases" in path and method in ("POST", "PATCH")
            for field in ("acquireTime", "renewTime") if field in body["spec"]]
    assert len(sent) == 6
    assert all(GO_MICRO.fullmatch(value) for value in sent), sent
    assert all(WIRE.fullmatch(value) for value in sent[2:]), sent  # (patches: as written)


def test_a_holder_renewing_a_lease_the_api_server_writes_back_holds_it_with_no_transition(
    server: EmulatedApiServer, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 40 renewals (80 s at 2 s: over five --lease-duration of 15 s, and ten rounds of
    # _wall_times' four steps), the Lease answered in the server's own form after every
    # write, a candidate reading it throughout: the holder leads at every step, the
    # candidate never, and the Lease keeps its first acquisition. A holder not knowing
    # its own acquireTime read back waits its Lease out within one duration (8 renewals).
    times = _wall_times(datetime.datetime(2026, 12, 6, 2, 0, 0, 500_000, tzinfo=datetime.UTC))
    monkeypatch.setattr(lease_module, "_now", lambda: next(times))
    api = server.api_client()
    changes: list[bool] = []
    holder = _Stepped(api, "node-a", SETTINGS, clock=clock, on_change=changes.append)
    candidate = _Stepped(api, "node-b", SETTINGS, clock=clock)
    assert holder.step()
    _stored_as_the_api_server_answers(server)
    acquired = _lease(server)["spec"]["acquireTime"]
    for _ in range(40):
        clock.now += SETTINGS.retry_period
        assert holder.step()
        _stored_as_the_api_server_answers(server)
        assert not candidate.step()
        assert holder.is_leader
    spec = _lease(server)["spec"]
    assert (spec["holderIdentity"], spec["leaseTransitions"], spec["acquireTime"]) == (
        "node-a", 0, acquired)
    assert changes == [True]


@pytest.mark.parametrize("acquire_time", [None, "2026-12-06T01:00:00Z",
                                          "2026-12-06T01:00:00.000000Z"],
                         ids=["null", "whole-seconds", "micro"])
def test_a_lease_an_earlier_agent_of_the_node_left_is_taken_once_then_held_for_good(
    server: EmulatedApiServer, clock: FakeClock, acquire_time: str | None
) -> None:
    # An upgrade: the node's previous agent (an older k3snet, or a client-go-style
    # holder writing no acquireTime) was killed holding the Lease under the node's name.
    # The new agent waits it out once and takes it; it must not then wait out its own
    # Lease again and again (a transition every --lease-duration).
    spec: dict[str, Any] = {"holderIdentity": "node-a", "leaseDurationSeconds": 15,
                            "renewTime": "2026-12-06T01:00:05.000000Z",
                            "leaseTransitions": 4}
    if acquire_time is not None:
        spec["acquireTime"] = acquire_time
    server.put(LEASES, {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": {"name": SETTINGS.name, "namespace": SETTINGS.namespace},
                        "spec": spec})
    api = server.api_client()
    agent = _Stepped(api, "node-a", SETTINGS, clock=clock)
    assert not agent.step()
    clock.now += SETTINGS.duration
    assert agent.step()
    for _ in range(50):
        clock.now += SETTINGS.retry_period
        assert agent.step()
        _stored_as_the_api_server_answers(server)
    assert _lease(server)["spec"]["leaseTransitions"] == 5


def test_a_foreign_holder_renewing_a_lease_of_the_same_name_is_never_taken(
    server: EmulatedApiServer, clock: FakeClock
) -> None:
    # Another program (kube-vip style) elects itself on a Lease of the same name: while
    # it renews, k3snet only waits, whatever the acquireTime it wrote (none here).
    api = server.api_client()
    agent = _Stepped(api, "node-a", SETTINGS, clock=clock)
    lease: dict[str, Any] = {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": SETTINGS.name, "namespace": SETTINGS.namespace},
        "spec": {"holderIdentity": "kube-vip-node-b", "leaseDurationSeconds": 15}}
    for second in range(0, 120, 2):
        lease["spec"]["renewTime"] = f"2026-12-06T01:{second // 60:02d}:{second % 60:02d}.000000Z"
        server.put(LEASES, lease)
        assert not agent.step()
        clock.now += SETTINGS.retry_period
    assert _lease(server)["spec"]["holderIdentity"] == "kube-vip-node-b"


def test_an_admin_editing_the_holders_lease_moves_leadership_only_with_its_holder(
    server: EmulatedApiServer, clock: FakeClock
) -> None:
    # kubectl edit: a renewTime changed keeps the holder leading on its own Lease; the
    # holderIdentity changed to another node hands the Lease over at the next step.
    api = server.api_client()
    holder = _Stepped(api, "node-a", SETTINGS, clock=clock)
    assert holder.step()
    lease = _lease(server)
    lease["spec"]["renewTime"] = "2026-12-06T01:00:00.000000Z"
    server.put(LEASES, lease)
    clock.now += SETTINGS.retry_period
    assert holder.step()
    assert _lease(server)["spec"]["leaseTransitions"] == 0
    lease = _lease(server)
    lease["spec"]["holderIdentity"] = "node-b"
    server.put(LEASES, lease)
    clock.now += SETTINGS.retry_period
    assert not holder.step()
    clock.now += SETTINGS.retry_period
    assert not holder.step()  # node-b's now, as far as node-a can tell, until it expires
    assert _lease(server)["spec"]["holderIdentity"] == "node-b"


def test_a_lease_at_the_largest_transition_count_is_still_taken(
    server: EmulatedApiServer, clock: FakeClock
) -> None:
    # leaseTransitions is an int32: one more than 2147483647 is refused (400), so on a
    # Lease left at it (an admin's edit, a foreign writer) every candidate failed every
    # step for good, and nobody wrote the cluster-wide objects.
    server.put(LEASES, {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": {"name": SETTINGS.name, "namespace": SETTINGS.namespace},
                        "spec": {"leaseDurationSeconds": 15, "leaseTransitions": 2**31 - 1}})
    agent = _Stepped(server.api_client(), "node-a", SETTINGS, clock=clock)
    assert agent.step()
    assert _lease(server)["spec"]["leaseTransitions"] <= 2**31 - 1


def test_a_holder_whose_renewal_meets_another_write_of_its_lease_keeps_leading_and_retries(
    server: EmulatedApiServer, clock: FakeClock
) -> None:
    # Another write of the Lease between the holder's read and its renewal (`kubectl
    # label lease`, a tool's annotation) makes that renewal a 409. client-go's holder
    # tries again every retry period until its renew deadline (renew(): PollImmediateUntil
    # of tryAcquireOrRenew). k3snet's gave the Lease up at once ("lost", leader 0) and
    # read it again only a lease duration later: 15 s with no writer of the cluster-wide
    # objects, then a new tenure listing them all again.
    changes: list[bool] = []
    holder = _Stepped(server.api_client(), "node-a", SETTINGS, clock=clock,
                      on_change=changes.append)
    assert holder.step()
    api: Any = holder._api
    renew = api.patch_namespaced_lease

    def written_meanwhile(*args: Any, **kwargs: Any) -> Any:
        lease = _lease(server)
        lease["metadata"].setdefault("labels", {})["team"] = "network"
        server.put(LEASES, lease)  # a new resourceVersion: the renewal's is stale
        api.patch_namespaced_lease = renew
        return renew(*args, **kwargs)

    api.patch_namespaced_lease = written_meanwhile
    clock.now += SETTINGS.retry_period
    versions = _lease(server)["metadata"]["resourceVersion"]
    assert holder.step()  # within its renew deadline: still the leader
    assert _lease(server)["metadata"]["resourceVersion"] != versions  # (the label's write)
    assert holder.next_wait() == SETTINGS.retry_period
    clock.now += holder.next_wait()
    assert holder.step()
    lease = _lease(server)
    assert (lease["spec"]["holderIdentity"], lease["spec"]["leaseTransitions"]) == ("node-a", 0)
    assert lease["metadata"]["labels"]["team"] == "network"  # (the other write kept)
    assert changes == [True]


def test_a_dead_holders_lease_is_taken_though_a_tool_keeps_labelling_it(
    server: EmulatedApiServer, clock: FakeClock
) -> None:
    # A write of the Lease's metadata alone (`kubectl label`, a tool annotating what it
    # sees every few seconds) is no renewal: client-go's candidate compares the election
    # record (the spec: holder, times, duration, transitions), not the resourceVersion.
    # k3snet's counted every such write as a change of the Lease: a dead holder's Lease,
    # labelled more often than --lease-duration, was never taken, and no node wrote the
    # cluster-wide objects for as long as the tool ran.
    assert _Stepped(server.api_client(), "node-a", SETTINGS, clock=clock).step()
    died = clock.now  # its last renewal: the holder's node is gone from here on
    candidate = _Stepped(server.api_client(), "node-b", SETTINGS, clock=clock)
    labelled = clock.now
    while not candidate.step():
        assert clock.now - died < 2 * SETTINGS.duration, "a dead holder's Lease never taken"
        clock.now += candidate.next_wait()
        while labelled + 5.0 <= clock.now:  # the tool's writes since the last step
            labelled += 5.0
            lease = _lease(server)
            lease["metadata"].setdefault("annotations", {})["tool/seen"] = str(labelled)
            server.put(LEASES, lease)
    assert clock.now - died >= SETTINGS.duration
    assert _lease(server)["spec"]["holderIdentity"] == "node-b"


@pytest.mark.parametrize(("field", "values"), [
    ("preferredHolder", ["node-b", "node-c"]),
    ("strategy", ["OldestEmulationVersion", "ThirdPartyStrategy"]),
])
def test_a_dead_holders_lease_is_taken_though_its_coordination_fields_keep_changing(
    server: EmulatedApiServer, clock: FakeClock, field: str, values: list[str]
) -> None:
    # strategy and preferredHolder (coordinated leader election) are no renewal either: no
    # holder's renewal writes them. client-go's candidate compares them too (they are in
    # its election record), so a writer of either alone held a dead holder's Lease; k3snet
    # compares the fields a renewal or a take writes, and takes it after the duration.
    assert _Stepped(server.api_client(), "node-a", SETTINGS, clock=clock).step()
    died = clock.now
    candidate = _Stepped(server.api_client(), "node-b", SETTINGS, clock=clock)
    written, turn = clock.now, 0
    while not candidate.step():
        assert clock.now - died < 2 * SETTINGS.duration, "a dead holder's Lease never taken"
        clock.now += candidate.next_wait()
        while written + 5.0 <= clock.now:
            written, turn = written + 5.0, turn + 1
            lease = _lease(server)
            lease["spec"][field] = values[turn % 2]
            server.put(LEASES, lease)
    assert clock.now - died >= SETTINGS.duration
    assert _lease(server)["spec"]["holderIdentity"] == "node-b"
