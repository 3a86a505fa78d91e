"""One writer for cluster-wide objects: only the Lease holder writes Calico pools.

Two agents share an emulated API server; each keeps its own node's objects
(a memory backend per node). The Lease clock is a fake the test moves, so the
hand-over "within the lease time" is checked on the elector's own timeline.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from k3snet.agent import (
    CLEANUP_MARGIN,
    EVENT_BURST,
    EVENT_INTERVAL,
    EVENT_TRIES,
    LEASE_JITTER,
    LOG_ITEMS,
    LOG_LINE_LIMIT,
    MESSAGE_LIMIT,
    NOT_READY_AFTER,
    PATCH_RETRY_LIMIT,
    REASSERT_INTERVAL,
    RESULT_ANNOTATION,
    RETRY_AFTER_LIMIT,
    STATUS_ANNOTATION,
    Agent,
    AgentMetrics,
    AgentOptions,
    ConfigMapSpecSource,
    FileSpecSource,
    LeaderElector,
    LeaseSettings,
    NodeReport,
    NodeReporter,
    _main,
)
from k3snet.agent._report import event_name, shortened
from k3snet.agent._spec_source import DENIED_GRACE
from k3snet.backends.calico import CalicoBackend
from k3snet.backends.group import BackendGroup
from k3snet.backends.memory import MemoryBackend
from k3snet.converge import destroy
from k3snet.kube import ThrottleWaits, name_problem, throttle_waits
from k3snet.model.state import State
from k3snet.planner import Plan, plan
from k3snet.spec import Spec
from k3snet.testing.kube import AGENT_RESOURCES, CALICO_RESOURCES, EmulatedApiServer
from tests.agent.clock import FakeClock
from tests.kubeclient import retrying_client, urllib3_sleeps

from .desired import COMPILED

pytestmark = pytest.mark.cluster

POOLS = "crd.projectcalico.org/v1/ippools"
LEASES = "coordination.k8s.io/v1/leases"
SETTINGS = LeaseSettings("kube-system", "k3snet-cluster-writer", duration=15.0,
                         renew_deadline=10.0, retry_period=2.0)
SPEC = """\
apiVersion: k3snet.io/v1alpha1
kind: EgressSpec
destinations:
  - cidr: 192.168.2.0/24
  - cidr: 172.20.0.0/16
    masquerade: false
cni:
  calico: {}
"""
NODE_KINDS = ("route", "sysctl", "nat", "forward")


class _Stepped(LeaderElector):
    """An elector without its thread: the test steps it (and its clock); its waits are
    drawn with no jitter unless the test gives ``random_fraction``."""

    def __init__(self, *args: Any, random_fraction: Callable[[], float] = lambda: 0.0,
                 **kwargs: Any) -> None:
        super().__init__(*args, random_fraction=random_fraction, **kwargs)

    def start(self) -> LeaderElector:
        return self


@pytest.fixture
def server() -> Iterator[EmulatedApiServer]:
    with EmulatedApiServer(resources=CALICO_RESOURCES + AGENT_RESOURCES) as srv:
        for name in ("node-a", "node-b"):
            srv.put("v1/nodes", {"metadata": {"name": name}})
        # Calico's own default pool: the pod CIDR must be a pool (k3snet never creates one).
        srv.put(POOLS, {"apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
                        "metadata": {"name": "default-ipv4-ippool"},
                        "spec": {"cidr": "10.42.0.0/16", "natOutgoing": True}})
        yield srv


def _agent(srv: EmulatedApiServer, name: str, spec_path: Path,
           clock: FakeClock) -> tuple[Agent, MemoryBackend]:
    memory = MemoryBackend(capabilities=NODE_KINDS)
    api = srv.api_client()

    def make_backend(spec: Spec) -> BackendGroup:
        return BackendGroup([memory, CalicoBackend(api_client=api, api="crd")])

    def elector(on_change: Callable[[bool], None]) -> LeaderElector:
        return _Stepped(api, name, SETTINGS, on_change=on_change, clock=clock)

    agent = Agent(FileSpecSource(spec_path), make_backend,
                  COMPILED,
                  # (readiness by failed passes alone, not their time: test_loop has it)
                  AgentOptions(name, interval=1.0, not_ready_for=0.0), metrics=AgentMetrics(),
                  reporter=NodeReporter(api, name), elector_factory=elector, clock=clock)
    return agent, memory


def _pool_writes(srv: EmulatedApiServer) -> list[tuple[str, str]]:
    return [(m, p) for m, p, _ in srv.requests()
            if "/ippools" in p and m in ("POST", "PATCH", "PUT", "DELETE")]



@pytest.fixture
def spec_path(tmp_path: Path) -> Path:
    """The spec file every agent of a test reads (SPEC; a test may rewrite it)."""
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC)
    return path


@pytest.fixture
def clock() -> FakeClock:
    """The time every Lease of a test sees, moved by the test."""
    return FakeClock()

def _holder(srv: EmulatedApiServer) -> Any:
    lease = srv.get(LEASES, SETTINGS.name, SETTINGS.namespace)
    assert lease is not None
    return lease["spec"].get("holderIdentity")


def test_only_the_lease_holder_writes_pools_and_the_other_takes_over(
    server: EmulatedApiServer, spec_path: Path, clock: FakeClock
) -> None:
    a, memory_a = _agent(server, "node-a", spec_path, clock)
    b, memory_b = _agent(server, "node-b", spec_path, clock)

    first = a.run_pass()
    assert (first.status, first.leader) == ("ok", True)
    assert _holder(server) == "node-a"
    pools = sorted(p["metadata"]["name"] for p in server.objects(POOLS))
    assert pools == ["default-ipv4-ippool", "k3snet-nonat-172-20-0-0-16"]
    writes = len(_pool_writes(server))

    second = b.run_pass()
    assert (second.status, second.leader) == ("ok", False)
    assert len(_pool_writes(server)) == writes  # b wrote no pool
    # ... but b keeps its own node's objects, exactly like a
    assert memory_b.state.owned == memory_a.state.owned
    assert len(memory_b.state.owned) == 4

    # a pool deleted by someone: only the leader repairs it
    name = "k3snet-nonat-172-20-0-0-16"
    assert server.delete(POOLS, name)
    assert b.run_pass().applied == ()
    assert a.run_pass().drift == 1
    assert server.get(POOLS, name) is not None

    # node-a dies without releasing (SIGKILL): b may take over once the Lease has not
    # changed for its duration, as b's own clock sees it -- not before
    assert b.elector is not None
    clock.now += SETTINGS.duration - 1
    assert b.elector.step() is False
    clock.now += 2
    assert b.elector.step() is True
    assert _holder(server) == "node-b"
    assert a.elector is not None
    assert a.elector.is_leader is False  # a stopped writing before b could start
    assert server.delete(POOLS, name)
    taken = b.run_pass()
    assert taken.leader is True
    assert [str(c) for c in taken.applied] == [
        "+ ippool k3snet-nonat-172-20-0-0-16 172.20.0.0/16 disabled blockSize=26 "
        "disableBGPExport"]
    assert taken.drift == 0  # written by a new leader: not counted as drift
    assert b.metrics is not None
    assert b.metrics.registry.get_sample_value("k3snet_agent_leader") == 1

    # b shuts down gracefully: the Lease is released, a takes it at its next step
    b.shutdown()
    assert _holder(server) is None
    assert a.elector.step() is True
    a.shutdown()


def test_node_annotation_says_the_last_result(server: EmulatedApiServer, spec_path: Path) -> None:
    agent, _ = _agent(server, "node-a", spec_path, FakeClock())
    agent.run_pass()
    node = server.get("v1/nodes", "node-a")
    assert node is not None
    assert node["metadata"]["annotations"][STATUS_ANNOTATION] == "ok"
    spec_path.write_text("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"
                         "destinations: []\ncni:\n  calico: {}\n")
    agent.run_pass()
    node = server.get("v1/nodes", "node-a")
    assert node is not None
    assert node["metadata"]["annotations"][STATUS_ANNOTATION] == "spec-refused"
    reasons = [e["reason"] for e in server.objects("v1/events")]
    assert sorted(reasons) == ["K3snetConverged", "K3snetSpecRefused"]
    # unchanged result: no further write
    patches = len([r for r in server.requests() if r[0] == "PATCH" and "/nodes/" in r[1]])
    agent.run_pass()
    assert len([r for r in server.requests()
                if r[0] == "PATCH" and "/nodes/" in r[1]]) == patches
    agent.shutdown()


def test_lease_timing_is_checked() -> None:
    with pytest.raises(ValueError, match="retry period < renew deadline < duration"):
        LeaseSettings(duration=5, renew_deadline=10, retry_period=2)


def test_candidates_read_a_live_lease_only_when_it_could_expire(
    server: EmulatedApiServer,
) -> None:
    clock = FakeClock()
    holder = _Stepped(server.api_client(), "node-a", SETTINGS, clock=clock)
    candidate = _Stepped(server.api_client(), "node-b", SETTINGS, clock=clock)
    assert candidate.next_wait() == SETTINGS.retry_period  # nothing seen yet
    assert holder.step() is True
    assert holder.next_wait() == SETTINGS.retry_period  # the holder renews often
    assert candidate.step() is False
    assert candidate.next_wait() == SETTINGS.duration
    clock.now += 10
    assert candidate.next_wait() == 5
    clock.now += 4.5
    assert candidate.next_wait() == SETTINGS.retry_period
    assert holder.step() is True  # renewed: the candidate waits again
    assert candidate.step() is False
    assert candidate.next_wait() == SETTINGS.duration
    holder.release()
    assert candidate.step() is True  # a released Lease is taken at once


@pytest.mark.parametrize("status", [403, 429, 500])
def test_candidates_back_off_while_the_lease_cannot_be_read(
    server: EmulatedApiServer, status: int
) -> None:
    # A candidate that could not read the Lease (RBAC missing, throttled, the API
    # server failing) read it again every retry period: 5,000 candidates sent 2,500
    # requests a second at an API server already in trouble. It now waits twice as
    # long after each failure, up to the Lease duration (the pace of a live holder);
    # the holder keeps its retry period, to renew before its deadline.
    clock = FakeClock()
    holder = _Stepped(server.api_client(), "node-a", SETTINGS, clock=clock)
    candidate = _Stepped(server.api_client(), "node-b", SETTINGS, clock=clock)
    assert holder.step() is True
    server.fail(status, method="GET", plural="leases", times=None)
    waits = []
    for _ in range(5):
        assert candidate.step() is False
        waits.append(candidate.next_wait())
    assert waits == [2 * SETTINGS.retry_period, 4 * SETTINGS.retry_period,
                     SETTINGS.duration, SETTINGS.duration, SETTINGS.duration]
    assert holder.step() is True  # still within its renew deadline
    assert holder.next_wait() == SETTINGS.retry_period
    if status == 500:
        # Hours of failures: still the Lease duration (no overflow). Once, not per status:
        # every failed read counts the same (LeaderElector.step), as the waits above show
        # for each status; 1 100 reads of the API server were 3.5 s of each case.
        for _ in range(1100):
            candidate.step()
        assert candidate.next_wait() == SETTINGS.duration
    server.clear_faults()
    assert candidate.step() is False  # read again: the holder lives
    assert candidate.next_wait() == SETTINGS.duration
    holder.release()
    assert candidate.step() is True
    assert candidate.next_wait() == SETTINGS.retry_period  # the failures are forgotten


def test_candidates_whose_reads_failed_together_read_again_at_times_of_their_own(
    server: EmulatedApiServer,
) -> None:
    # An API server restarting failed every candidate's read at once; their back-off
    # (2, 4, 8, 15 s) had no jitter, so 5 000 candidates read again at one instant at
    # every step after, and once it answered they waited a live holder's Lease out
    # together. Each wait of a candidate is now lengthened at random by up to
    # LEASE_JITTER of it (client-go's JitterFactor); the holder's never is.
    clock = FakeClock()
    draws = iter([0.0, 0.5, 1.0] * 3)
    holder = _Stepped(server.api_client(), "node-a", SETTINGS, clock=clock,
                      random_fraction=lambda: 0.75)
    candidate = _Stepped(server.api_client(), "node-b", SETTINGS, clock=clock,
                         random_fraction=lambda: next(draws))
    assert holder.step() is True
    server.fail(500, method="GET", plural="leases", times=3)
    waits = []
    for _ in range(3):
        assert candidate.step() is False
        waits.append(candidate.next_wait())
    assert waits == pytest.approx([4.0, 8.0 * (1 + LEASE_JITTER / 2), 15.0 * (1 + LEASE_JITTER)])
    assert candidate.step() is False  # the holder lives: waited out, lengthened too
    assert [candidate.next_wait() for _ in range(3)] == pytest.approx(
        [15.0, 15.0 + 2.0 * LEASE_JITTER / 2, 15.0 + 2.0 * LEASE_JITTER])
    assert holder.step() is True
    assert holder.next_wait() == SETTINGS.retry_period  # renews within its deadline
    assert LEASE_JITTER == 1.2


def test_a_dead_holders_lease_is_taken_within_duration_and_a_jittered_retry_period(
    server: EmulatedApiServer,
) -> None:
    # The whole wait for a holder's Lease was lengthened by up to LEASE_JITTER of it: a
    # candidate that had seen the holder renew came back up to 2.2 x duration (33 s)
    # later, when the holder had died just after. Only the retry period's part is
    # jittered now (client-go's candidates read every jittered retry period).
    clock = FakeClock()
    holder = _Stepped(server.api_client(), "node-a", SETTINGS, clock=clock)
    candidate = _Stepped(server.api_client(), "node-b", SETTINGS, clock=clock,
                         random_fraction=lambda: 1.0)
    assert holder.step() is True
    clock.now += SETTINGS.retry_period
    assert holder.step() is True  # the renewal the candidate sees last: then it dies
    assert candidate.step() is False
    wait = candidate.next_wait()
    assert wait == pytest.approx(SETTINGS.duration + LEASE_JITTER * SETTINGS.retry_period)
    clock.now += wait
    assert candidate.step() is True  # taken at its next read
    assert candidate.next_wait() == SETTINGS.retry_period
    # its wait while the holder's Lease is about to expire: the retry period, jittered
    other = _Stepped(server.api_client(), "node-c", SETTINGS, clock=clock,
                     random_fraction=lambda: 0.5)
    assert other.step() is False
    clock.now += SETTINGS.duration - 1.0
    assert other.next_wait() == pytest.approx(SETTINGS.retry_period * (1 + LEASE_JITTER / 2))


def test_a_candidate_throttled_waits_what_the_api_server_asked(
    server: EmulatedApiServer,
) -> None:
    # A 429 names how long to wait (Retry-After); the candidate's back-off after it was
    # 4 s whatever the API server asked. It waits at least that now (jittered from there,
    # so candidates told one time do not come back together), up to RETRY_AFTER_LIMIT.
    clock = FakeClock()
    candidate = _Stepped(server.api_client(), "node-b", SETTINGS, clock=clock)
    server.fail(429, method="GET", plural="leases", times=1, retry_after=40)
    assert candidate.step() is False
    assert candidate.next_wait() == 40.0
    server.fail(429, method="GET", plural="leases", times=1, retry_after=3)
    assert candidate.step() is False
    assert candidate.next_wait() == 8.0  # its own back-off is longer
    server.fail(429, method="GET", plural="leases", times=1, retry_after=86400)
    assert candidate.step() is False
    assert candidate.next_wait() == RETRY_AFTER_LIMIT
    jittered = _Stepped(server.api_client(), "node-c", SETTINGS, clock=clock,
                        random_fraction=lambda: 0.5)
    server.fail(429, method="GET", plural="leases", times=1, retry_after=40)
    assert jittered.step() is False
    assert jittered.next_wait() == pytest.approx(40.0 * (1 + LEASE_JITTER / 2))
    assert candidate.step() is True  # answered: what it asked is forgotten
    assert candidate.next_wait() == SETTINGS.retry_period


def test_a_candidate_throttled_through_the_agents_client_waits_its_own_bounded_wait(
    server: EmulatedApiServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Through the agent's client (k3snet.kube.retry_policy) urllib3 answered a 429 with a
    # Retry-After itself: it slept what it asked (an hour here) inside the Lease read and
    # sent it again, past RETRY_AFTER_LIMIT, and the step succeeded as if nothing had
    # happened. The 429 is the step's now, and its wait the candidate's bounded one.
    slept = urllib3_sleeps(monkeypatch)
    api: Any = retrying_client(server.url)
    try:
        candidate = _Stepped(api, "node-b", SETTINGS, clock=FakeClock())
        server.fail(429, method="GET", plural="leases", times=1, retry_after=3600)
        assert candidate.step() is False
        assert candidate.next_wait() == RETRY_AFTER_LIMIT
    finally:
        api.close()
    assert slept == []
    assert [m for m, p, _ in server.requests() if "/leases" in p] == ["GET"]


def test_a_node_that_is_no_candidate_never_writes_pools(
    server: EmulatedApiServer, spec_path: Path
) -> None:
    memory = MemoryBackend(capabilities=NODE_KINDS)
    api = server.api_client()
    agent = Agent(FileSpecSource(spec_path),
                  lambda spec: BackendGroup([memory, CalicoBackend(api_client=api, api="crd")]),
                  COMPILED, AgentOptions("node-c"),
                  elector_factory=lambda on_change: None)
    result = agent.run_pass()
    assert (result.status, result.leader) == ("ok", False)
    assert len(memory.state.owned) == 4
    assert [p["metadata"]["name"] for p in server.objects(POOLS)] == ["default-ipv4-ippool"]
    assert server.get(LEASES, SETTINGS.name, SETTINGS.namespace) is None
    agent.shutdown()


def test_a_candidacy_that_cannot_be_read_is_read_again_after_a_back_off_not_by_every_pass(
    server: EmulatedApiServer, spec_path: Path, clock: FakeClock
) -> None:
    # --lease-candidates reads the Node's labels; without the RBAC to get Nodes (403) every
    # pass read them again: a GET a second from every node whose kube-proxy commits every
    # second. Each pass still says why the cluster-wide part failed.
    memory = MemoryBackend(capabilities=NODE_KINDS)
    api = server.api_client()
    server.fail(403, method="GET", plural="nodes", times=None)
    agent = Agent(FileSpecSource(spec_path),
                  lambda spec: BackendGroup([memory, CalicoBackend(api_client=api, api="crd")]),
                  COMPILED, AgentOptions("node-a"),
                  elector_factory=lambda on_change: (
                      _Stepped(api, "node-a", SETTINGS, on_change=on_change, clock=clock)
                      if _main._has_label(api, "node-a", "k3snet.io/lease-candidate") else None),
                  monotonic=clock)
    for _ in range(60):  # 60 passes, a second apart
        result = agent.run_pass()
        assert result.status == "failed"
        assert "cluster-wide objects: api: read Node node-a: forbidden (403)" in result.message
        assert agent.readiness()[0] is True  # the node's own part converged
        clock.now += 1
    reads = sum(1 for m, p, _ in server.requests() if m == "GET" and p.endswith("/nodes/node-a"))
    assert reads == 3  # t = 0, 10 and 30 (the interval, 30 s, is the longest wait)
    server.clear_faults()
    clock.now += 30
    assert agent.run_pass().status == "ok"  # no label: no candidate, and no failure
    agent.shutdown()


def test_a_pass_of_thousands_of_changes_is_reported_and_logged_by_its_first_changes(
        server: EmulatedApiServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Its 3 000 changes were on one log line and in the message (megabytes at 10 000
    # destinations: containerd split the line); they are counted, LOG_ITEMS of them named.
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(SPEC.replace("destinations:\n", "destinations:\n" + "".join(
        f"  - cidr: 172.{16 + i // 256}.{i % 256}.0/24\n" for i in range(1500))))
    agent, _ = _agent(server, "node-a", spec_path, FakeClock())
    with caplog.at_level("INFO", logger="k3snet.agent"):
        result = agent.run_pass()
    assert result.status == "ok"
    changes = len(result.applied)
    assert changes > 3000
    assert result.message.startswith(f"applied: {changes} change(s): ")
    named = "; ".join(str(c) for c in result.applied[:LOG_ITEMS])
    assert result.message.endswith(f": {named}; ... and {changes - LOG_ITEMS} more")
    node = server.get("v1/nodes", "node-a")
    assert node is not None
    report = json.loads(node["metadata"]["annotations"][RESULT_ANNOTATION])
    assert report["message"] == shortened(result.message, MESSAGE_LIMIT)
    assert len(report["message"]) <= MESSAGE_LIMIT
    assert max(len(e["message"]) for e in server.objects("v1/events")) <= 1024
    assert result.message in caplog.messages
    assert max(len(m.encode()) for m in caplog.messages) < LOG_LINE_LIMIT
    agent.shutdown()


@given(message=st.text(max_size=300) | st.lists(st.text(min_size=1, max_size=40), max_size=20)
       .map("; ".join), limit=st.integers(min_value=80, max_value=200))
def test_a_shortened_message_fits_its_limit_and_keeps_its_start(message: str,
                                                                limit: int) -> None:
    short = NodeReport("ok", message, None, 1, leader=False).to_dict()["message"]
    assert len(shortened(message, limit)) <= limit
    assert short == shortened(message, MESSAGE_LIMIT) == message  # under 2 048: whole
    if len(message) > limit:
        kept = shortened(message, limit).rpartition("; ... (")[0]
        assert message.startswith(kept)
        assert len(kept) >= (limit - 64) // 2


@pytest.mark.parametrize("node", ["node-a", "a" * 253, ("a" * 62 + ".") * 4 + "b",
                                  "x" * 232 + "-" + "y" * 20])
def test_an_event_name_is_a_valid_name_whatever_the_node_name(node: str) -> None:
    assert name_problem(node) is None
    name = event_name(node, "0123456789ab")
    assert name_problem(name) is None
    assert name.endswith(".k3snet.0123456789ab")
    assert node.startswith(name.removesuffix(".k3snet.0123456789ab"))


def _sample(agent: Agent, name: str, **labels: str) -> float | None:
    assert agent.metrics is not None
    value: float | None = agent.metrics.registry.get_sample_value(name, labels or None)
    return value


def test_a_leader_whose_node_part_fails_still_writes_the_cluster_wide_objects(
    server: EmulatedApiServer, spec_path: Path, clock: FakeClock
) -> None:
    # The Lease holder used to renew the Lease but, its node part failing (an nftables
    # apply refused), never reached the cluster writer: the pools never converged, and
    # the other nodes said ok. The two parts are independent.
    a, memory_a = _agent(server, "node-a", spec_path, clock)
    name = "k3snet-nonat-172-20-0-0-16"
    memory_a.faults.fail_at(0)
    first = a.run_pass()
    assert (first.status, first.leader) == ("failed", True)
    assert first.message.startswith("apply:")
    assert server.get(POOLS, name) is not None  # written although the node part failed
    assert [str(c) for c in first.applied] == [
        "+ ippool k3snet-nonat-172-20-0-0-16 172.20.0.0/16 disabled blockSize=26 "
        "disableBGPExport"]
    assert memory_a.state.owned == frozenset()  # the node's apply was rolled back
    assert _sample(a, "k3snet_agent_sync_failures_total", reason="apply") == 1
    assert _sample(a, "k3snet_agent_cluster_last_success_timestamp_seconds") == clock.now
    assert _sample(a, "k3snet_agent_changes_total", kind="ippool", action="add") == 1
    # Still failing on the node: a deleted pool is written again all the same.
    assert server.delete(POOLS, name)
    memory_a.faults.fail_at(0)
    assert a.run_pass().status == "failed"
    assert server.get(POOLS, name) is not None
    assert _sample(a, "k3snet_agent_cluster_sync_failures_total", reason="api") == 0
    a.shutdown()


def test_a_failing_cluster_sync_is_counted_and_its_last_success_stays(
    server: EmulatedApiServer, spec_path: Path, clock: FakeClock
) -> None:
    a, memory_a = _agent(server, "node-a", spec_path, clock)
    assert a.run_pass().status == "ok"
    synced = clock.now
    assert _sample(a, "k3snet_agent_cluster_last_success_timestamp_seconds") == synced
    server.delete(POOLS, "k3snet-nonat-172-20-0-0-16")
    server.fail(403, plural="ippools", times=None)
    clock.now += 1  # within the renew deadline: still the holder
    failed = a.run_pass()
    assert (failed.status, failed.leader) == ("failed", True)
    assert "cluster-wide objects: api:" in failed.message
    assert _sample(a, "k3snet_agent_cluster_sync_failures_total", reason="api") == 1
    assert _sample(a, "k3snet_agent_cluster_last_success_timestamp_seconds") == synced
    # Both parts failing: the node's failure is the pass's, the cluster's is said too.
    memory_a.apply(Plan(changes=[c.inverse() for c in plan(State(), memory_a.state).changes
                                 if c.kind == "nat"]))  # drift: the node part has work
    memory_a.faults.fail_at(0)
    both = a.run_pass()
    assert both.status == "failed"
    assert both.message.startswith("apply:")
    assert "cluster-wide objects: api:" in both.message
    assert _sample(a, "k3snet_agent_cluster_sync_failures_total", reason="api") == 2
    assert _sample(a, "k3snet_agent_sync_failures_total", reason="apply") == 1
    server.clear_faults()
    clock.now += 1  # within the renew deadline: still the holder
    assert a.run_pass().status == "ok"
    assert _sample(a, "k3snet_agent_cluster_last_success_timestamp_seconds") == clock.now
    a.shutdown()


def test_a_spec_dropping_the_last_pool_is_in_force_on_every_node_and_the_pool_stays(
    server: EmulatedApiServer, spec_path: Path, clock: FakeClock
) -> None:
    # The leader used to refuse the whole spec (TeardownError in its cluster part) while
    # every other node, never planning the pools, put it in force: the fleet split for
    # good. Now the spec is in force everywhere; only the teardown of the pools waits.
    a, memory_a = _agent(server, "node-a", spec_path, clock)
    b, memory_b = _agent(server, "node-b", spec_path, clock)
    assert a.run_pass().leader is True
    assert b.run_pass().status == "ok"
    name = "k3snet-nonat-172-20-0-0-16"
    spec_path.write_text(SPEC.replace("  - cidr: 172.20.0.0/16\n    masquerade: false\n", ""))
    refused = a.run_pass()
    follower = b.run_pass()
    assert (follower.status, follower.leader) == ("ok", False)
    assert (refused.status, refused.leader) == ("spec-refused", True)
    assert "cluster-wide part of spec" in refused.message
    assert "refused (teardown)" in refused.message
    assert a.spec_sha256 == b.spec_sha256  # one spec in force on every node
    assert a.generation == b.generation == 2
    assert memory_a.state.owned == memory_b.state.owned  # the same node objects
    assert server.get(POOLS, name) is not None  # the pool is not torn down
    assert _sample(a, "k3snet_agent_spec_rejected_total", reason="teardown") == 1
    assert _sample(a, "k3snet_agent_spec_last_good_kept") == 1
    assert _sample(a, "k3snet_agent_cluster_sync_failures_total", reason="teardown") == 1
    node = server.get("v1/nodes", "node-a")
    assert node is not None
    assert node["metadata"]["annotations"][STATUS_ANNOTATION] == "spec-refused"
    refusals = [e for e in server.objects("v1/events")
                if e["involvedObject"]["name"] == "node-a" and e["reason"] == "K3snetSpecRefused"]
    assert len(refusals) == 1
    assert "cluster-wide part of spec" in refusals[0]["message"]
    # Refused once: said and counted once, not on every pass.
    clock.now += 1
    assert a.run_pass().status == "spec-refused"
    assert _sample(a, "k3snet_agent_spec_rejected_total", reason="teardown") == 1
    # A new leader, with the spec in force since it was a follower, refuses the same.
    a.shutdown()
    assert b.elector is not None
    assert b.elector.step() is True
    taken = b.run_pass()
    assert (taken.status, taken.leader) == ("spec-refused", True)
    assert b.generation == 2
    assert server.get(POOLS, name) is not None
    # The operator allows the teardown (k3snet destroy --backend calico): in sync again.
    destroy(CalicoBackend(api_client=server.api_client(), api="crd"))
    assert server.get(POOLS, name) is None
    clock.now += 1
    assert b.run_pass().status == "ok"
    assert _sample(b, "k3snet_agent_spec_last_good_kept") == 0
    b.shutdown()


def _report_calls(srv: EmulatedApiServer) -> tuple[int, int]:
    """(Node patches, Event creations tried) so far."""
    requests = srv.requests()
    return (sum(1 for m, p, _ in requests if m == "PATCH" and "/nodes/" in p),
            sum(1 for m, p, _ in requests if m == "POST" and p.endswith("/events")))


def _described_node_events(srv: EmulatedApiServer, node: str) -> list[dict[str, Any]]:
    """The Events ``kubectl describe node NODE`` lists: those whose involvedObject matches
    its field selector (kind, name, no namespace, and a uid: the Node's own or, as the
    kubelet writes it, the Node's name; kubectl's NodeDescriber asks for both)."""
    found = srv.get("v1/nodes", node)
    assert found is not None
    uids = {node, found["metadata"].get("uid")}
    return [e for e in srv.objects("v1/events")
            if e["involvedObject"].get("kind") == "Node"
            and e["involvedObject"].get("name") == node
            and not e["involvedObject"].get("namespace")
            and e["involvedObject"].get("uid") in uids]


def test_events_are_listed_by_kubectl_describe_node(server: EmulatedApiServer) -> None:
    # kubectl describe node selects Events by involvedObject.uid; the agent's had none,
    # so they were never listed there, although docs/agent.md sends operators there.
    reporter = NodeReporter(server.api_client(), "node-a", clock=FakeClock())
    reporter.report(NodeReport("ok", "in sync: no changes", None, 1, leader=False))
    reporter.report(NodeReport("failed", "apply: refused", None, 1, leader=False))
    assert len(server.objects("v1/events")) == 2
    assert sorted(e["reason"] for e in _described_node_events(server, "node-a")) == [
        "K3snetConverged", "K3snetSyncFailed"]


def test_a_flapping_status_creates_a_bounded_number_of_events(
    server: EmulatedApiServer,
) -> None:
    # A status flipping every pass (ok, failed, ok ...) created an Event each pass, on
    # every node of the fleet, for as long as it lasted. Now, as the kubelet's spam
    # filter: a burst of EVENT_BURST, then one per EVENT_INTERVAL seconds; the Node's
    # annotation still follows every change.
    clock = FakeClock()
    reporter = NodeReporter(server.api_client(), "node-a", clock=clock)
    results = [NodeReport("ok", "in sync: no changes", None, 1, leader=False),
               NodeReport("failed", "apply: refused", None, 1, leader=False)]
    for i in range(200):  # a pass a second
        reporter.report(results[i % 2])
        clock.now += 1
    assert _report_calls(server) == (200, EVENT_BURST)
    node = server.get("v1/nodes", "node-a")
    assert node is not None
    assert node["metadata"]["annotations"][STATUS_ANNOTATION] == "failed"  # the 200th
    clock.now += EVENT_INTERVAL  # quiet: one more Event may be created
    reporter.report(results[0])
    reporter.report(results[1])
    assert _report_calls(server) == (202, EVENT_BURST + 1)


def test_a_failed_event_is_retried_without_patching_the_node_again(
    server: EmulatedApiServer,
) -> None:
    # A failed Event (no RBAC for Events: 403) used to undo the record of the Node's
    # successful patch: every unchanged pass patched the Node again, and tried again.
    clock = FakeClock()
    reporter = NodeReporter(server.api_client(), "node-a", clock=clock)
    server.fail(403, method="POST", plural="events", times=None)
    ok = NodeReport("ok", "in sync: no changes", None, 1, leader=False)
    reporter.report(ok)
    assert _report_calls(server) == (1, 1)
    for _ in range(50):  # 50 unchanged passes, a second apart
        clock.now += 1
        reporter.report(ok)
    # Patched once; the Event tried again after 10 s, then 20 s more (t = 0, 10, 30).
    assert _report_calls(server) == (1, 3)
    for _ in range(5):  # however long it lasts: at most EVENT_TRIES tries
        clock.now += 1000
        reporter.report(ok)
    # (The Node is patched again, the same values, once REASSERT_INTERVAL is over.)
    assert _report_calls(server) == (6, EVENT_TRIES)
    assert server.objects("v1/events") == []
    node = server.get("v1/nodes", "node-a")
    assert node is not None
    assert node["metadata"]["annotations"][STATUS_ANNOTATION] == "ok"
    # The next status change is patched once and its Event created (RBAC fixed).
    server.clear_faults()
    reporter.report(NodeReport("failed", "apply: refused", None, 1, leader=False))
    reporter.report(NodeReport("failed", "apply: refused", None, 1, leader=False))
    assert _report_calls(server) == (7, EVENT_TRIES + 1)
    assert [e["reason"] for e in server.objects("v1/events")] == ["K3snetSyncFailed"]


def test_a_failed_node_patch_is_tried_again_after_a_back_off_not_by_every_pass(
    server: EmulatedApiServer, caplog: pytest.LogCaptureFixture,
) -> None:
    # A Node patch refused for good (no RBAC to patch Nodes: 403; a --node-name naming no
    # Node: 404) was sent again, and warned about, by every pass: once a second on a node
    # whose kube-proxy commits every second, from every node of the cluster.
    clock = FakeClock()
    reporter = NodeReporter(server.api_client(), "node-a", clock=clock)
    server.fail(403, method="PATCH", plural="nodes", times=None)
    ok = NodeReport("ok", "in sync: no changes", None, 1, leader=False)
    for _ in range(60):  # 60 passes, a second apart
        reporter.report(ok)
        clock.now += 1
    # Tried at t = 0, then 10 s and 20 s later (t = 10, 30), the next at t = 70.
    assert _report_calls(server) == (3, 0)
    assert len([r for r in caplog.records if "cannot report" in r.message]) == 3
    for _ in range(3600):  # an hour: the back-off stops doubling at PATCH_RETRY_LIMIT
        reporter.report(ok)
        clock.now += 1
    patches = _report_calls(server)[0]
    assert patches <= 3 + 3600 / PATCH_RETRY_LIMIT + 4
    # The RBAC fixed: a pass after the back-off writes the latest result, and its Event.
    server.clear_faults()
    failed = NodeReport("failed", "apply: refused", None, 1, leader=False)
    reporter.report(failed)
    clock.now += PATCH_RETRY_LIMIT
    reporter.report(failed)
    assert _report_calls(server) == (patches + 1, 1)
    node = server.get("v1/nodes", "node-a")
    assert node is not None
    assert node["metadata"]["annotations"][STATUS_ANNOTATION] == "failed"
    reporter.report(ok)  # and a change after a success is written at once
    assert _report_calls(server)[0] == patches + 2


def test_a_throttled_node_patch_is_tried_again_no_sooner_than_the_api_server_asked(
    server: EmulatedApiServer,
) -> None:
    # A 429's Retry-After was ignored: the patch went again 10 s later, whatever the API
    # server had asked. It waits what was asked now, up to PATCH_RETRY_LIMIT.
    clock = FakeClock()
    reporter = NodeReporter(server.api_client(), "node-a", clock=clock)
    server.fail(429, method="PATCH", plural="nodes", times=1, retry_after=45)
    ok = NodeReport("ok", "in sync: no changes", None, 1, leader=False)
    for _ in range(45):  # 45 passes, a second apart
        reporter.report(ok)
        clock.now += 1
    assert _report_calls(server)[0] == 1
    reporter.report(ok)
    assert _report_calls(server)[0] == 2
    server.fail(429, method="PATCH", plural="nodes", times=1, retry_after=86400)
    failed = NodeReport("failed", "apply: refused", None, 1, leader=False)
    reporter.report(failed)
    clock.now += PATCH_RETRY_LIMIT - 1
    reporter.report(failed)
    assert _report_calls(server)[0] == 3
    clock.now += 1
    reporter.report(failed)
    assert _report_calls(server)[0] == 4  # the limit holds


def test_a_throttled_event_is_tried_again_no_sooner_than_the_api_server_asked(
    server: EmulatedApiServer,
) -> None:
    # The Node patch waited for a 429's Retry-After; the Event beside it did not: it went
    # again 10, 20, 40 and 80 s later, every try inside the window the API server had
    # asked to be left alone for, and was given up after EVENT_TRIES of them.
    clock = FakeClock()
    reporter = NodeReporter(server.api_client(), "node-a", clock=clock)
    server.fail(429, method="POST", plural="events", times=1, retry_after=60)
    ok = NodeReport("ok", "in sync: no changes", None, 1, leader=False)
    reporter.report(ok)
    assert _report_calls(server) == (1, 1)
    for _ in range(59):  # 59 unchanged passes, a second apart
        clock.now += 1
        reporter.report(ok)
    assert _report_calls(server) == (1, 1)
    clock.now += 1
    reporter.report(ok)
    assert _report_calls(server) == (1, 2)
    assert [e["reason"] for e in server.objects("v1/events")] == ["K3snetConverged"]
    # What it asks is bounded as the Node patch's is.
    server.fail(429, method="POST", plural="events", times=1, retry_after=86400)
    failed = NodeReport("failed", "apply: refused", None, 1, leader=False)
    reporter.report(failed)
    assert _report_calls(server) == (2, 3)
    clock.now += PATCH_RETRY_LIMIT
    reporter.report(failed)
    assert _report_calls(server) == (2, 4)


def test_an_unchanged_result_is_written_again_once_the_reassert_interval_is_over(
    server: EmulatedApiServer,
) -> None:
    # The report was written on a change only: a Node registered anew, an annotation
    # removed by hand, or one written by `k3snet agent --once` run by hand on the node
    # stayed wrong until the DaemonSet agent's result changed, perhaps never.
    from kubernetes import client  # noqa: PLC0415 - optional dependency (k3snet[kube])

    clock = FakeClock()
    reporter = NodeReporter(server.api_client(), "node-a", clock=clock)
    ok = NodeReport("ok", "in sync: no changes", None, 1, leader=False)
    reporter.report(ok)
    node = server.get("v1/nodes", "node-a")
    assert node is not None
    written = dict(node["metadata"]["annotations"])
    # Another k3snet on the node reports its own result over it.
    client.CoreV1Api(server.api_client()).patch_node("node-a", {"metadata": {"annotations": {
        STATUS_ANNOTATION: "failed", RESULT_ANNOTATION: '{"status": "failed"}'}}})
    for _ in range(int(REASSERT_INTERVAL) - 1):  # unchanged passes, a second apart
        clock.now += 1
        reporter.report(ok)
    assert _report_calls(server) == (2, 1)  # (ours, the other's)
    clock.now += 1
    reporter.report(ok)
    assert _report_calls(server) == (3, 1)  # the same values again; no Event
    node = server.get("v1/nodes", "node-a")
    assert node is not None
    assert {k: node["metadata"]["annotations"][k] for k in written} == written
    clock.now += 1
    reporter.report(ok)
    assert _report_calls(server) == (3, 1)  # then REASSERT_INTERVAL later again


def test_an_event_that_failed_once_is_created_on_a_later_pass(
    server: EmulatedApiServer,
) -> None:
    clock = FakeClock()
    reporter = NodeReporter(server.api_client(), "node-a", clock=clock)
    server.fail(500, method="POST", plural="events")
    ok = NodeReport("ok", "in sync: no changes", None, 1, leader=False)
    reporter.report(ok)
    clock.now += 5
    reporter.report(ok)  # not due yet
    assert _report_calls(server) == (1, 1)
    clock.now += 5
    reporter.report(ok)
    assert _report_calls(server) == (1, 2)
    assert [e["reason"] for e in server.objects("v1/events")] == ["K3snetConverged"]
    for _ in range(20):
        clock.now += 100
        reporter.report(ok)
    assert _report_calls(server)[1] == 2  # created: never again


def test_a_second_process_with_the_node_s_name_never_leads_beside_the_holder(
    server: EmulatedApiServer, clock: FakeClock
) -> None:
    # The identity is the node's name: `k3snet agent --once` by hand on the leader's node
    # reads a Lease naming "node-a". It took it as its own, led beside the DaemonSet's
    # agent, and on exit released it under that agent, so node-b led too.
    api = server.api_client()
    daemonset = _Stepped(api, "node-a", SETTINGS, clock=clock)
    assert daemonset.step()
    by_hand = _Stepped(api, "node-a", SETTINGS, clock=clock)
    clock.now += SETTINGS.retry_period
    assert daemonset.step()
    assert not by_hand.step()
    by_hand.stop(release=True)
    assert _holder(server) == "node-a"
    other = _Stepped(api, "node-b", SETTINGS, clock=clock)
    assert not other.step()
    assert [daemonset.is_leader, by_hand.is_leader, other.is_leader] == [True, False, False]


def test_an_agent_restarted_on_the_holder_s_node_takes_the_lease_once_it_lapses(
    server: EmulatedApiServer, clock: FakeClock
) -> None:
    api = server.api_client()
    crashed = _Stepped(api, "node-a", SETTINGS, clock=clock)
    assert crashed.step()  # then killed: never renews, never releases
    restarted = _Stepped(api, "node-a", SETTINGS, clock=clock)
    assert not restarted.step()  # not its own: it waits the Lease out like anyone
    clock.now += SETTINGS.duration
    assert restarted.step()
    lease = server.get(LEASES, SETTINGS.name, SETTINGS.namespace)
    assert lease is not None
    assert lease["spec"]["leaseTransitions"] == 1  # a new holder, though the same name


def test_a_holder_stalled_past_the_lease_duration_never_renews_what_its_node_took_since(
    server: EmulatedApiServer, clock: FakeClock
) -> None:
    # The holder's thread stalled (a frozen or starved process) past the Lease's duration,
    # and another agent of the same node (the DaemonSet's next pod) took the Lease. Back,
    # the stalled one read a Lease naming its node while it still counted itself holder,
    # and renewed it as its own: the two renewed it in turn, each leading for good, both
    # writing the cluster-wide objects.
    api = server.api_client()
    stalled = _Stepped(api, "node-a", SETTINGS, clock=clock)
    assert stalled.step()
    other = _Stepped(api, "node-a", SETTINGS, clock=clock)
    assert not other.step()
    clock.now += SETTINGS.duration
    assert other.step()
    clock.now += SETTINGS.retry_period
    assert not stalled.step()  # back: the Lease is no more the one it acquired
    assert other.step()
    assert [stalled.is_leader, other.is_leader] == [False, True]
    stalled.stop(release=True)
    assert _holder(server) == "node-a"
    assert other.step()


def test_a_fractional_lease_duration_never_lets_a_candidate_in_before_the_renew_deadline(
    server: EmulatedApiServer, clock: FakeClock
) -> None:
    # 1.5 s was written as 1 s: a candidate took the Lease after 1.1 s while the holder,
    # unable to renew, still led until its 1.2 s renew deadline: two writers.
    settings = LeaseSettings("kube-system", "k3snet-cluster-writer", duration=1.5,
                             renew_deadline=1.2, retry_period=0.5)
    api = server.api_client()
    holder = _Stepped(api, "node-a", settings, clock=clock)
    candidate = _Stepped(api, "node-b", settings, clock=clock)
    assert holder.step()
    assert not candidate.step()
    clock.now += 1.1
    assert not candidate.step()
    assert holder.is_leader
    lease = server.get(LEASES, settings.name, settings.namespace)
    assert lease is not None
    assert lease["spec"]["leaseDurationSeconds"] == 2  # rounded up, never 0
    clock.now += 1.0  # past the renew deadline and the Lease's 2 s
    assert not holder.is_leader
    assert candidate.step()


def test_a_holder_that_cannot_renew_says_it_lost_the_lease_once_the_deadline_passes(
    server: EmulatedApiServer, clock: FakeClock
) -> None:
    # The API server unreachable: the holder's renewals fail, and past the renew deadline
    # it stops writing (is_leader). It never said so: on_change(False) was not called,
    # so k3snet_agent_leader stayed 1 beside the new holder's 1, and no "lost" line.
    api = server.api_client()
    seen: list[bool] = []
    holder = _Stepped(api, "node-a", SETTINGS, on_change=seen.append, clock=clock)
    assert holder.step()
    assert seen == [True]
    server.fail(503, plural="leases", times=None)
    clock.now += SETTINGS.retry_period
    assert holder.step()  # a failed renewal within the deadline: still the holder
    clock.now += SETTINGS.renew_deadline
    assert not holder.step()
    assert seen == [True, False]
    server.clear_faults()
    # Its own Lease (its acquireTime), which no other candidate took: renewed at once,
    # as client-go does, and said so (not waited out for the duration, and taken again
    # as a new holder).
    lease = server.get(LEASES, SETTINGS.name, SETTINGS.namespace)
    assert lease is not None
    assert holder.step()
    assert seen == [True, False, True]
    renewed = server.get(LEASES, SETTINGS.name, SETTINGS.namespace)
    assert renewed is not None
    assert renewed["spec"]["leaseTransitions"] == lease["spec"]["leaseTransitions"]


def test_a_restarted_leader_whose_cluster_wide_part_is_refused_is_ready(
    server: EmulatedApiServer, spec_path: Path, clock: FakeClock
) -> None:
    # /readyz says "the node's rules are installed". A leader started (a rolling update,
    # a crash) with a spec whose cluster-wide part is refused converged its node but
    # never became ready: every pass was "spec-refused", and only "ok" made it ready,
    # so the DaemonSet's rollout stalled on that node.
    a, _ = _agent(server, "node-a", spec_path, clock)
    assert a.run_pass().leader is True
    a.shutdown()  # releases the Lease
    spec_path.write_text(SPEC.replace("  - cidr: 172.20.0.0/16\n    masquerade: false\n", ""))
    restarted, memory = _agent(server, "node-a", spec_path, clock)
    first = restarted.run_pass()
    assert (first.status, first.leader) == ("spec-refused", True)
    assert memory.state.owned  # the node's own objects are in force
    assert restarted.readiness()[0] is True
    assert _sample(restarted, "k3snet_agent_ready") == 1
    restarted.shutdown()


def test_a_leader_whose_cluster_wide_part_fails_from_its_first_pass_is_ready(
    server: EmulatedApiServer, spec_path: Path, clock: FakeClock
) -> None:
    # /readyz says "the node's rules are installed"; the cluster-wide part never counts.
    # A leader whose IPPool writes failed (503, 429, no RBAC for the pools) converged its
    # node on every pass, but each pass ended "failed" and only a pass that did not fail
    # made an agent ready: the leader's pod was never Ready, and the rollout stalled there.
    server.fail(503, plural="ippools", times=None)
    a, memory = _agent(server, "node-a", spec_path, clock)
    for _ in range(NOT_READY_AFTER + 1):
        result = a.run_pass()
        assert (result.status, result.leader) == ("failed", True)
        assert memory.state.owned  # the node's own objects are in force
        assert a.readiness()[0] is True
        assert _sample(a, "k3snet_agent_ready") == 1
    a.shutdown()


def test_a_leaders_pass_waits_no_throttled_answer_inside_its_request(
    server: EmulatedApiServer, spec_path: Path, clock: FakeClock
) -> None:
    # The one-shot commands' waits (k3snet.kube.THROTTLE_WAITS, up to 30 s a request)
    # are off in the pass, whatever its thread set: the pass fails at once, the next
    # one (an interval later) tries again, and SIGTERM's grace period waits no sleep.
    slept: list[float] = []
    a, memory = _agent(server, "node-a", spec_path, clock)
    server.fail(429, method="GET", plural="ippools", times=None, retry_after=1)
    before = len(server.requests())
    with throttle_waits(ThrottleWaits(sleep=slept.append)):
        result = a.run_pass()
    assert (result.status, result.leader) == ("failed", True)
    assert "throttled (429)" in result.message
    assert memory.state.owned  # the node's own objects are in force
    assert slept == []
    assert [m for m, p, _ in server.requests()[before:] if p.endswith("/ippools")] == ["GET"]
    a.shutdown()


def test_an_unready_leader_whose_node_part_converges_again_is_ready_while_its_cluster_part_fails(
    server: EmulatedApiServer, spec_path: Path, clock: FakeClock
) -> None:
    # The node's part failed NOT_READY_AFTER passes in a row (not ready), then converged
    # again while the cluster-wide part failed: the pass "failed", and the agent stayed
    # not ready, naming a node failure long repaired.
    a, memory = _agent(server, "node-a", spec_path, clock)
    assert a.run_pass().status == "ok"
    for _ in range(NOT_READY_AFTER):
        memory._restore(memory.state.with_owned(o for o in memory.state.owned
                                                if o.kind != "nat"))
        memory.faults.fail_at(0)
        assert a.run_pass().status == "failed"
    assert a.readiness()[0] is False
    server.fail(503, plural="ippools", times=None)
    result = a.run_pass()
    assert (result.status, result.leader, result.drift) == ("failed", True, 0)
    assert [o for o in memory.state.owned if o.kind == "nat"]  # the node repaired
    assert a.readiness() == (True, "ready: spec generation 1 in force")
    assert _sample(a, "k3snet_agent_ready") == 1
    a.shutdown()


SPEC_CONFIGMAP = "ConfigMap kube-system/k3snet-spec key spec.yaml"


def _configmap_agent(srv: EmulatedApiServer, text: str = SPEC, clock: FakeClock | None = None,
                     ) -> tuple[Agent, MemoryBackend]:
    """An agent reading its spec through the API (``--spec-configmap``), reporting on
    Node node-a, with metrics; ``clock``: the spec source's."""
    srv.put("v1/configmaps", {"metadata": {"name": "k3snet-spec", "namespace": "kube-system"},
                              "data": {"spec.yaml": text}})
    memory = MemoryBackend(capabilities=NODE_KINDS)
    api = srv.api_client()
    source = ConfigMapSpecSource(api, "kube-system", "k3snet-spec", timeout=0.5,
                                 monotonic=clock or FakeClock())
    agent = Agent(source, lambda spec: BackendGroup([memory]),
                  COMPILED,
                  AgentOptions("node-a", interval=3600), metrics=AgentMetrics(),
                  reporter=NodeReporter(api, "node-a"))
    return agent, memory


def _events(srv: EmulatedApiServer) -> int:
    return len([p for m, p, _ in srv.requests() if m == "POST" and p.endswith("/events")])


def _node_status(srv: EmulatedApiServer) -> str:
    node = srv.get("v1/nodes", "node-a")
    assert node is not None
    return str(node["metadata"]["annotations"][STATUS_ANNOTATION])


@pytest.mark.parametrize(("status", "delay", "reason"),
                         [(500, 0.0, "server"), (503, 0.0, "server"), (429, 0.0, "throttled"),
                          (410, 0.0, "other"), (504, 1.0, "timeout")],
                         ids=["500", "503", "429", "410", "timeout"])
def test_a_spec_configmap_the_api_fails_to_read_keeps_the_last_good_spec_repairing_drift(
        server: EmulatedApiServer, status: int, delay: float, reason: str) -> None:
    """The API server failing the spec's read (an error, throttled, Gone, no answer
    within the request timeout: a control plane restarting) changes nothing of the spec
    in force and refuses nothing: the pass repairs the node's drift with it, its status
    stays ``ok`` (no Event, the node ready), a read error is counted apart from refused
    specs, and the next good read is in sync.

    It was a refusal: "new spec ... refused (unreadable)", ``spec-refused`` on every
    Node with an Event and ``k3snet_agent_spec_rejected_total`` rising on every node
    at once, for a spec nobody had changed."""
    agent, memory = _configmap_agent(server)
    assert agent.run_pass().status == "ok"
    assert _events(server) == 1  # K3snetConverged
    wanted = sorted(map(str, memory.state.owned))
    memory.apply(Plan(changes=[c.inverse() for c in plan(State(), memory.state).changes
                               if c.kind == "nat"]))  # another program deletes the NAT
    sha = agent.spec_sha256
    assert sha is not None
    tries = NOT_READY_AFTER + 1
    # (times=None: a 410 is asked again at once without the version, a second request)
    server.fail(status, method="GET", plural="configmaps", delay=delay, times=None)
    for number in range(tries):
        result = agent.run_pass()
        assert result.status == "ok"
        assert "refused" not in result.message
        assert result.message.endswith(f"; spec not read from {SPEC_CONFIGMAP} ({reason}): "
                                       f"keeping spec generation 1 ({sha[:12]})")
        if number == 0:  # repaired with the spec in force
            assert [c.kind for c in result.applied] == ["nat"]
        assert agent.readiness()[0] is True
    assert sorted(map(str, memory.state.owned)) == wanted
    assert agent.generation == 1
    assert _sample(agent, "k3snet_agent_spec_read_errors_total", reason=reason) == tries
    assert _sample(agent, "k3snet_agent_spec_rejected_total", reason="unreadable") == 0
    assert _sample(agent, "k3snet_agent_spec_last_good_kept") == 0
    assert _sample(agent, "k3snet_agent_ready") == 1
    assert _events(server) == 1  # no Event: the status never changed
    assert _node_status(server) == "ok"
    server.clear_faults()
    again = agent.run_pass()
    assert (again.status, again.message) == ("ok", "in sync: no changes")
    assert _sample(agent, "k3snet_agent_spec_read_errors_total", reason=reason) == tries


def _spec_reads(srv: EmulatedApiServer) -> list[dict[str, str]]:
    """The query of each read of the spec ConfigMap."""
    return [params for (method, path, _), params in zip(srv.requests(), srv.params(), strict=True)
            if method == "GET" and path.endswith("/configmaps/k3snet-spec")]


def _version(srv: EmulatedApiServer) -> str:
    configmap = srv.get("v1/configmaps", "k3snet-spec", "kube-system")
    assert configmap is not None
    return str(configmap["metadata"]["resourceVersion"])


def test_a_spec_configmap_is_read_from_the_watch_cache_never_older_than_the_last_read(
        server: EmulatedApiServer) -> None:
    # Every interval's read of --spec-configmap was a quorum read, served by etcd: 167 a
    # second at 5 000 nodes. After the first, each asks for the ConfigMap not older than
    # the resourceVersion last read, which the API server serves from its watch cache;
    # never resourceVersion=0 (any version: a cache behind gave a spec older than the
    # one in force, and the agent would go back to it).
    agent, memory = _configmap_agent(server)
    assert agent.run_pass().status == "ok"
    first = _version(server)
    assert agent.run_pass().status == "ok"
    assert _spec_reads(server) == [{}, {"resourceVersion": first}]
    server.put("v1/configmaps", {"metadata": {"name": "k3snet-spec", "namespace": "kube-system"},
                                 "data": {"spec.yaml": SPEC.replace("172.20.0.0/16",
                                                                    "172.21.0.0/16")}})
    second = _version(server)
    assert agent.run_pass().status == "ok"
    assert agent.generation == 2  # the new spec, read with the last version asked
    assert agent.run_pass().status == "ok"
    assert _spec_reads(server)[2:] == [{"resourceVersion": first}, {"resourceVersion": second}]
    # A cache that did not reach that version in time (504: an API server just restarted,
    # another one behind): asked again at once as a quorum read, nothing kept nor refused.
    server.fail(504, method="GET", plural="configmaps", param="resourceVersion", times=1)
    result = agent.run_pass()
    assert (result.status, result.message) == ("ok", "in sync: no changes")
    assert _spec_reads(server)[4:] == [{"resourceVersion": second}, {}]
    assert agent.run_pass().status == "ok"
    assert _spec_reads(server)[6:] == [{"resourceVersion": second}]
    # Any other failure keeps the version: the next read asks the cache again.
    server.fail(503, method="GET", plural="configmaps", times=1)
    assert "spec not read" in agent.run_pass().message
    agent.run_pass()
    assert _spec_reads(server)[7:] == [{"resourceVersion": second}] * 2
    assert agent.generation == 2
    assert len(memory.state.owned) == 4


@pytest.mark.parametrize("status", [400, 410])
def test_a_spec_configmap_whose_last_version_is_refused_is_read_again_as_a_quorum_read(
        server: EmulatedApiServer, status: int) -> None:
    # The version last read refused as such (400: not a version this API server, or a
    # proxy before it, takes; 410: gone) kept being asked: every later read failed, the
    # spec never read again until the agent restarted, where a quorum read is served.
    agent, memory = _configmap_agent(server)
    assert agent.run_pass().status == "ok"
    first = _version(server)
    server.fail(status, method="GET", plural="configmaps", param="resourceVersion",
                times=None)
    for _ in range(3):
        result = agent.run_pass()
        assert (result.status, result.message) == ("ok", "in sync: no changes")
    assert _spec_reads(server) == [{}] + [{"resourceVersion": first}, {}] * 3
    assert agent.generation == 1
    assert len(memory.state.owned) == 4


def test_failed_reads_of_the_spec_are_logged_as_warnings_at_the_first_second_fourth_and_eighth(
        server: EmulatedApiServer, caplog: pytest.LogCaptureFixture) -> None:
    # A control plane down for an hour is 120 failed reads at the default interval: a
    # warning each was 120 lines a node saying the same.
    agent, _ = _configmap_agent(server)
    agent.run_pass()
    server.fail(503, method="GET", plural="configmaps", times=9)
    with caplog.at_level("DEBUG", logger="k3snet.agent"):
        for _ in range(9):
            agent.run_pass()
        agent.run_pass()  # read again
    said = [r for r in caplog.records if "cannot read the spec" in r.message]
    assert len(said) == 9
    assert [r.message.split("(")[1].split(" ")[0] for r in said
            if r.levelname == "WARNING"] == ["1", "2", "4", "8"]
    assert any("read again after 9 failed read(s)" in r.message for r in caplog.records)


def test_a_spec_configmap_that_cannot_be_read_before_any_spec_fails_the_pass_refusing_nothing(
        server: EmulatedApiServer) -> None:
    agent, memory = _configmap_agent(server)
    server.fail(503, method="GET", plural="configmaps")
    result = agent.run_pass()
    assert result.status == "failed"
    assert result.message.startswith(f"api: read {SPEC_CONFIGMAP}: the API server failed (503")
    assert _sample(agent, "k3snet_agent_spec_read_errors_total", reason="server") == 1
    assert _sample(agent, "k3snet_agent_spec_rejected_total", reason="unreadable") == 0
    assert not memory.state.owned
    assert agent.run_pass().status == "ok"


@pytest.mark.parametrize("how", ["deleted", "forbidden", "unauthorized"])
def test_a_spec_configmap_deleted_or_forbidden_is_refused_keeping_the_last_good_spec(
        server: EmulatedApiServer, clock: FakeClock, how: str) -> None:
    """404 (the ConfigMap, or its namespace, deleted), 403 (the agent's RBAC for it
    removed) and 401 are answers that stay until someone acts: refused as
    ``unreadable`` (a 401 or 403 once it has lasted DENIED_GRACE), said on the Node
    with an Event and counted, the last good spec in force, the node ready."""
    agent, memory = _configmap_agent(server, clock=clock)
    assert agent.run_pass().status == "ok"
    if how == "deleted":
        server.delete("v1/configmaps", "k3snet-spec", "kube-system")
        said = "not found (404)"
    else:
        status = 403 if how == "forbidden" else 401
        server.fail(status, method="GET", plural="configmaps", times=None)
        said = f"{how} ({status})"
        assert agent.run_pass().status == "ok"  # the API server's caches may be filling
        clock.now += DENIED_GRACE
    for _ in range(NOT_READY_AFTER + 1):
        result = agent.run_pass()
        assert result.status == "spec-refused"
        assert f"new spec from {SPEC_CONFIGMAP} refused (unreadable)" in result.message
        assert said in result.message
        assert "keeping spec generation 1" in result.message
        assert agent.readiness()[0] is True
    assert memory.state.owned
    assert _sample(agent, "k3snet_agent_spec_rejected_total", reason="unreadable") == 1
    assert _sample(agent, "k3snet_agent_spec_read_errors_total", reason="other") == 0
    assert _sample(agent, "k3snet_agent_spec_read_errors_total",
                   reason="denied") == (how != "deleted")
    assert _node_status(server) == "spec-refused"
    assert _events(server) == 2  # K3snetConverged, K3snetSpecRefused
    server.clear_faults()
    server.put("v1/configmaps", {"metadata": {"name": "k3snet-spec", "namespace": "kube-system"},
                                 "data": {"spec.yaml": SPEC}})
    assert (agent.run_pass().status, agent.generation) == ("ok", 1)


@pytest.mark.parametrize("status", [401, 403])
def test_a_spec_configmap_denied_after_a_read_is_a_failed_read_for_a_while_not_a_refusal(
        server: EmulatedApiServer, clock: FakeClock, status: int) -> None:
    """An API server that has just restarted answers 403 while its RBAC caches fill
    (kubernetes/kubernetes#121635: minutes, with many RoleBindings), and may answer
    401 the same way: every node refused the spec at once (``spec-refused``, an Event,
    ``spec_rejected_total``) for a permission nobody had changed. Once a read
    succeeded, such answers are failed reads until they have lasted DENIED_GRACE; a
    success in between starts the count again."""
    agent, memory = _configmap_agent(server, clock=clock)
    assert agent.run_pass().status == "ok"
    sha = agent.spec_sha256
    assert sha is not None
    server.fail(status, method="GET", plural="configmaps", times=None)
    for _ in range(3):
        result = agent.run_pass()
        assert result.status == "ok", result.message
        assert result.message.endswith(f"; spec not read from {SPEC_CONFIGMAP} (denied): "
                                       f"keeping spec generation 1 ({sha[:12]})")
        clock.now += DENIED_GRACE / 3 - 1
    server.clear_faults()
    assert agent.run_pass().message == "in sync: no changes"  # the caches filled
    server.fail(status, method="GET", plural="configmaps", times=None)
    assert agent.run_pass().status == "ok"  # counted from the first in a row again
    server.clear_faults()
    server.fail(503, method="GET", plural="configmaps", times=1)  # down again, a while
    clock.now += DENIED_GRACE
    assert agent.run_pass().status == "ok"
    server.fail(status, method="GET", plural="configmaps", times=None)
    assert agent.run_pass().status == "ok"  # back, filling its caches again
    assert _sample(agent, "k3snet_agent_spec_rejected_total", reason="unreadable") == 0
    assert _sample(agent, "k3snet_agent_spec_read_errors_total", reason="denied") == 5
    assert _events(server) == 1  # K3snetConverged
    clock.now += DENIED_GRACE
    refused = agent.run_pass()
    assert refused.status == "spec-refused"
    assert f"(so at every read for {DENIED_GRACE:g} s)" in refused.message
    assert memory.state.owned
    assert _events(server) == 2


@pytest.mark.parametrize("status", [401, 403])
def test_a_new_agent_denied_its_first_read_fails_at_once_and_refuses_only_after_the_grace(
        server: EmulatedApiServer, clock: FakeClock, status: int) -> None:
    """A new agent (every node's, after a whole-cluster restart) meets an API server
    filling its RBAC caches at its first read: refused at once, every node counted a
    rejected spec (``spec_rejected_total{reason="unreadable"}``) and logged "refused"
    for a permission nobody had changed. The pass fails at once with the API server's
    answer (a Role never granted is said from the first pass: the Node's status, its
    Event, the pod not ready), counted ``denied``; refused once it lasted DENIED_GRACE."""
    said = "forbidden (403)" if status == 403 else "unauthorized (401)"
    agent, memory = _configmap_agent(server, clock=clock)
    server.fail(status, method="GET", plural="configmaps", times=None)
    for _ in range(NOT_READY_AFTER):
        first = agent.run_pass()
        assert first.status == "failed"
        assert first.message.startswith(f"api: read {SPEC_CONFIGMAP}: {said}: ")
        assert "refused (unreadable)" not in first.message
        clock.now += DENIED_GRACE / NOT_READY_AFTER - 1
    assert _node_status(server) == "failed"
    assert _events(server) == 1  # K3snetSyncFailed, with the answer
    assert agent.readiness()[0] is False
    assert _sample(agent, "k3snet_agent_spec_read_errors_total",
                   reason="denied") == NOT_READY_AFTER
    assert _sample(agent, "k3snet_agent_spec_rejected_total", reason="unreadable") == 0
    server.clear_faults()  # the caches filled
    assert agent.run_pass().status == "ok"
    assert memory.state.owned
    assert _sample(agent, "k3snet_agent_spec_rejected_total", reason="unreadable") == 0

    never, _ = _configmap_agent(server, clock=clock)  # a Role never granted
    server.fail(status, method="GET", plural="configmaps", times=None)
    assert never.run_pass().status == "failed"
    clock.now += DENIED_GRACE
    refused = never.run_pass()
    assert refused.status == "failed"
    assert refused.message.startswith(f"spec: 1 problem in {SPEC_CONFIGMAP}: ")
    assert said in refused.message
    assert f"(so at every read for {DENIED_GRACE:g} s)" in refused.message
    assert _sample(never, "k3snet_agent_spec_rejected_total", reason="unreadable") == 1


def test_a_failed_read_leaves_a_refused_newer_spec_refused_for_what_it_is(
        server: EmulatedApiServer) -> None:
    # The failed read replaced the refusal's reason with "unreadable", for good: read
    # again, the same invalid text was not tried again (refused already) and the node
    # said "refused (unreadable)" until the text changed.
    agent, _ = _configmap_agent(server)
    assert agent.run_pass().status == "ok"
    server.put("v1/configmaps", {"metadata": {"name": "k3snet-spec", "namespace": "kube-system"},
                                 "data": {"spec.yaml": SPEC + "bogus: 1\n"}})
    assert "refused (invalid)" in agent.run_pass().message
    server.fail(503, method="GET", plural="configmaps")
    during = agent.run_pass()
    assert during.status == "spec-refused"
    assert "refused (invalid)" in during.message
    assert "spec not read" in during.message
    after = agent.run_pass()
    assert after.status == "spec-refused"
    assert "refused (invalid)" in after.message
    assert "unreadable" not in after.message
    assert _sample(agent, "k3snet_agent_spec_rejected_total", reason="invalid") == 1
    assert _sample(agent, "k3snet_agent_spec_rejected_total", reason="unreadable") == 0


def test_sigterm_during_the_cluster_wide_part_cuts_each_of_its_requests_to_the_grace_period(
        server: EmulatedApiServer, spec_path: Path) -> None:
    """SIGTERM came once the cluster-wide part had started (the check before it had
    passed): its requests (a LIST of every IPPool, then writes), each given the Calico
    backend's own timeout (10 s), went on with an API server answering slowly, past the
    pod's grace period; the kubelet killed the agent before its Lease was released or
    the node cleaned up. Each is now cut to what is left of the grace deadline."""
    api = server.api_client()
    sent: list[Any] = []
    request = api.rest_client.request

    def recorded(*args: Any, **kwargs: Any) -> Any:  # what reaches urllib3
        sent.append((args[0], kwargs.get("_request_timeout")))
        return request(*args, **kwargs)

    api.rest_client.request = recorded
    memory = MemoryBackend(capabilities=NODE_KINDS)
    pools = CalicoBackend(api_client=api, api="crd")
    now = [1000.0]
    left = 0.25  # exact in binary: the cut is compared as is

    class StoppedInClusterPart(Agent):
        def _cluster_writer(self) -> bool:
            self.stop()  # SIGTERM; then all but `left` s of the grace period go by
            now[0] += self.options.termination_grace - CLEANUP_MARGIN - left
            return super()._cluster_writer()

    agent = StoppedInClusterPart(FileSpecSource(spec_path),
                                 lambda spec: BackendGroup([memory, pools]),
                                 COMPILED,
                                 AgentOptions("node-a", interval=3600), monotonic=lambda: now[0])
    server.fail(504, method="GET", plural="ippools", delay=2.0, times=None)  # answers late
    result = agent.run_pass()
    assert result.status == "failed"
    assert "cluster-wide objects: api: " in result.message
    assert "no answer from the API server" in result.message
    assert memory.state.owned  # the node's part converged
    assert sent
    assert all(timeout is not None and timeout <= left for _, timeout in sent), sent
    server.clear_faults()
    agent.shutdown()


def test_an_event_s_message_is_one_printable_line(server: EmulatedApiServer) -> None:
    # kubectl describe node and get events print an Event's message as it is: a pass's
    # failure quoting a foreign table's name sent its escape sequence to the admin's
    # terminal, and its line break forged a line of the listing.
    reporter = NodeReporter(server.api_client(), "node-a", clock=FakeClock())
    reporter.report(NodeReport("failed", "nftables: inet t\x1b[2Kx\nNormal K3snetConverged",
                               None, 1, leader=False))
    (event,) = _described_node_events(server, "node-a")
    assert event["message"] == "nftables: inet t\\x1b[2Kx\\nNormal K3snetConverged"


def test_an_interval_costs_a_candidate_no_list_and_the_holder_its_lists_from_the_cache(
    server: EmulatedApiServer, spec_path: Path, clock: FakeClock
) -> None:
    # What one interval costs each node, counted in the emulator's log (docs/scale.md):
    # with Calico and natOutgoingExclusions: IPPoolsAndHostIPs, only the Lease holder
    # lists the cluster-wide objects and the Nodes (ceil(N / 500) requests, served from
    # the API server's watch cache, resourceVersion=0); a candidate's pass lists nothing
    # (its Lease reads are its elector's, once per lease duration, not the pass's).
    server.put("crd.projectcalico.org/v1/felixconfigurations", {
        "apiVersion": "crd.projectcalico.org/v1", "kind": "FelixConfiguration",
        "metadata": {"name": "default"},
        "spec": {"natOutgoingExclusions": "IPPoolsAndHostIPs"}})
    for i in range(1000):
        server.put("v1/nodes", {"metadata": {"name": f"node-{i:04d}", "annotations": {
            "projectcalico.org/IPv4Address": f"10.7.{i // 250}.{i % 250 + 1}/16"}}})
    a, _ = _agent(server, "node-a", spec_path, clock)
    b, _ = _agent(server, "node-b", spec_path, clock)
    assert (a.run_pass().leader, b.run_pass().leader) == (True, False)

    def one_pass(agent: Agent) -> list[tuple[str, str, dict[str, str]]]:
        assert agent.elector is not None
        agent.elector.step()  # the elector's own requests, apart from the pass's
        before = len(server.requests())
        assert agent.run_pass().status == "ok"
        return [(m, p.rsplit("/", 1)[-1], q) for (m, p, _), q in zip(
            server.requests()[before:], server.params()[before:], strict=True)]

    for _ in range(2):  # the first interval's report says "in sync" (a PATCH each)
        clock.now += 1.0
        holder, candidate = one_pass(a), one_pass(b)
    assert [(m, what) for m, what, _ in candidate] == []
    lists = sorted((what, q.get("resourceVersion", "")) for m, what, q in holder if m == "GET")
    # 1 002 Nodes: 3 pages, 2 continued. No block affinities: Calico's default pool is
    # the one pool serving workloads (k3snet's own for 172.20.0.0/16 is disabled), and a
    # block decides a verdict only in a second one of its family.
    assert lists == [("felixconfigurations", ""), ("ippools", ""),
                     ("nodes", ""), ("nodes", ""), ("nodes", "0")]
    assert [m for m, what, _ in holder if m != "GET"] == []


def test_the_leader_gauge_says_0_once_the_renew_deadline_passed_while_a_renewal_hangs(
    server: EmulatedApiServer, spec_path: Path, clock: FakeClock
) -> None:
    # The holder stops writing the cluster-wide objects at its renew deadline by time
    # alone (is_leader); the gauge followed only the end of a step (on_change): a step
    # whose request the API server never answered kept k3snet_agent_leader at 1 for up
    # to the request's timeout past the deadline, beside the next holder's 1 if its
    # candidate had taken the Lease meanwhile.
    a, _ = _agent(server, "node-a", spec_path, clock)
    assert a.run_pass().leader is True
    assert _sample(a, "k3snet_agent_leader") == 1
    clock.now += SETTINGS.renew_deadline  # no renewal got through: its step still waits
    assert a.elector is not None
    assert a.elector.is_leader is False
    assert _sample(a, "k3snet_agent_leader") == 0
    a.shutdown()
    assert _sample(a, "k3snet_agent_leader") == 0
