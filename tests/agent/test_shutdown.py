"""SIGTERM with an API server that never answers: the shutdown fits the pod's grace period.

The API server is the emulated one, made to hang (it accepts every request and never
answers). Time is a fake clock: each request the agent sends is recorded with the
timeout it was given, then sent with that timeout scaled down (so a test waits
fractions of a second, not the 30 s of a grace period), and a request that timed out
moves the fake clock by its whole (unscaled) timeout, as it would have taken. No
assertion is on real time: the order of events, the timeouts given, and the clean-up.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import urllib3

from k3snet.agent import (
    CLEANUP_MARGIN,
    Agent,
    AgentOptions,
    FileSpecSource,
    LeaderElector,
    LeaseSettings,
    NodeReport,
    NodeReporter,
)
from k3snet.agent._main import _stop_on_signals
from k3snet.backends.group import BackendGroup
from k3snet.backends.kit import committing
from k3snet.backends.memory import MemoryBackend
from k3snet.converge import compile_for
from k3snet.kube import Deadline
from k3snet.planner import Plan
from k3snet.spec import Spec
from k3snet.testing.kube import EmulatedApiServer
from tests.agent.clock import FakeClock
from tests.closing_server import closing_server
from tests.kubeclient import retrying_client, urllib3_sleeps

from .desired import COMPILED

pytestmark = pytest.mark.cluster

SPEC = """\
apiVersion: k3snet.io/v1alpha1
kind: EgressSpec
destinations:
  - cidr: 192.168.2.0/24
"""
SETTINGS = LeaseSettings("kube-system", "k3snet-cluster-writer", duration=15.0,
                         renew_deadline=10.0, retry_period=2.0)
SCALE = 50.0
"""Fake seconds per real second of a request's timeout."""
HANG = 2.0
"""Real seconds the hung API server holds a request (more than any scaled timeout)."""
NODE_KINDS = ("route", "sysctl", "nat", "forward")
LEASES = "coordination.k8s.io/v1/leases"


Event = tuple[str, float, float | None]
"""(what: "clean-up" or "METHOD path", the fake time it began, a request's timeout)."""


def recording(api: Any, clock: FakeClock, events: list[Event]) -> Any:
    """``api`` (an ApiClient) recording each request, sent with its timeout scaled down;
    one that timed out took its whole timeout on ``clock``."""
    send = api.call_api

    def call_api(method: str, url: str, *args: Any, _request_timeout: Any = None,
                 **kwargs: Any) -> Any:
        path = url.split("://", 1)[-1].partition("/")[2]
        events.append((f"{method} /{path.split('?')[0]}", clock.now, _request_timeout))
        try:
            return send(method, url, *args, _request_timeout=_request_timeout / SCALE,
                        **kwargs)
        except (urllib3.exceptions.TimeoutError, urllib3.exceptions.MaxRetryError):
            clock.advance(_request_timeout)
            raise

    api.call_api = call_api
    return api


class RecordedMemory(MemoryBackend):
    """The node's objects; the clean-up's apply is recorded as an event."""

    def __init__(self, clock: FakeClock, events: list[Event]) -> None:
        super().__init__(capabilities=NODE_KINDS)
        self._clock, self._events = clock, events

    def apply(self, plan: Plan) -> Any:
        if plan.changes and all(c.action == "delete" for c in plan.changes):
            self._events.append(("clean-up", self._clock.now, None))
        return super().apply(plan)


@pytest.fixture
def server(server: EmulatedApiServer) -> EmulatedApiServer:
    """The agent's API server (tests/agent/conftest.py) with this node's Node."""
    server.put("v1/nodes", {"metadata": {"name": "node-a"}})
    return server


def test_a_hung_api_server_lets_the_clean_up_go_first_and_each_request_end_within_the_grace(
        server: EmulatedApiServer, tmp_path: Path) -> None:
    # With an API server that accepts connections and never answers, the shutdown sent
    # the Lease's release (a read, 10 s) and waited for the last report (10 s) before
    # the clean-up: with the pass in progress at SIGTERM, past the pod's grace period,
    # and the kubelet killed the agent with k3snet's rules on a node being drained.
    clock, events = FakeClock(), list[Event]()
    api = recording(server.api_client(), clock, events)
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC)
    memory = RecordedMemory(clock, events)
    reporter = NodeReporter(api, "node-a", clock=clock)

    class _Stepped(LeaderElector):
        def start(self) -> LeaderElector:  # stepped by the test (no thread)
            return self

    def elector(on_change: Callable[[bool], None]) -> LeaderElector:
        return _Stepped(api, "node-a", SETTINGS, on_change=on_change, clock=clock)

    # A cluster-wide kind makes the agent a Lease candidate (the memory backend's pools).
    pools = MemoryBackend(capabilities=("ippool",))
    agent = Agent(FileSpecSource(path), lambda spec: BackendGroup([memory, pools]),
                  COMPILED,
                  AgentOptions("node-a", interval=3600, cleanup_on_exit=True),
                  reporter=reporter, elector_factory=elector, monotonic=clock)
    first = agent.run_pass()
    assert (first.status, first.leader) == ("ok", True)
    assert memory.state.owned
    assert agent.elector is not None
    # The Lease renewed at 1010 s (the holder still holds it when the shutdown begins;
    # a step after SIGTERM renews nothing), then SIGTERM, then the API server stops
    # answering; the pass in progress waits for it until 1016 s.
    clock.advance(10)
    assert agent.elector.step()
    agent.stop()  # SIGTERM at 1010 s
    stopped_at = clock.now
    deadline = stopped_at + agent.options.termination_grace - CLEANUP_MARGIN
    before = len(events)
    server.fail(504, delay=HANG, times=None)
    clock.advance(6)
    agent.shutdown()

    (cleanup,) = [e for e in events if e[0] == "clean-up"]
    assert cleanup[1] <= deadline
    assert agent.cleaned_up is True
    assert memory.state.owned == frozenset()
    sent = [e for e in events[before:] if e[0] != "clean-up"]
    lease = [e for e in sent if "/leases/" in e[0]]
    assert [(what.split()[0], timeout) for what, _, timeout in lease] == [
        ("GET", min(10.0, deadline - cleanup[1]))]  # the release tried, within what was left
    assert events.index(cleanup) < events.index(lease[0])  # after the clean-up
    for what, at, timeout in sent:
        assert timeout is not None
        assert at + timeout <= deadline, (what, at, timeout)


def test_the_lease_release_gives_each_request_what_is_left_and_sends_none_once_nothing_is(
        server: EmulatedApiServer) -> None:
    clock, events = FakeClock(), list[Event]()
    api = recording(server.api_client(), clock, events)
    holder = LeaderElector(api, "node-a", SETTINGS, clock=clock)
    assert holder.step()
    server.fail(504, method="PATCH", plural="leases", delay=HANG, times=None)
    events.clear()
    holder.stop(release=True, deadline=Deadline(clock.now + 4, clock))
    # The read answered at once (the clock did not move); the patch got the rest.
    assert [(what.split()[0], timeout) for what, _, timeout in events] == [
        ("GET", 4.0), ("PATCH", 4.0)]
    assert holder.is_leader is False

    server.clear_faults()
    again = LeaderElector(api, "node-b", SETTINGS, clock=clock)
    assert not again.step()  # node-a's Lease, unreleased: waited out
    clock.advance(SETTINGS.duration)
    assert again.step()
    events.clear()
    again.stop(release=True, deadline=Deadline(clock.now, clock))
    assert events == []  # nothing left: nothing sent, the Lease expires by itself
    lease = server.get(LEASES, SETTINGS.name, SETTINGS.namespace)
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == "node-b"


def test_a_report_after_sigterm_waits_at_most_what_is_left_of_the_grace_period(
        server: EmulatedApiServer) -> None:
    clock, events = FakeClock(), list[Event]()
    api = recording(server.api_client(), clock, events)
    reporter = NodeReporter(api, "node-a", clock=clock)
    server.fail(504, delay=HANG, times=None)
    reporter.finish_by(Deadline(clock.now + 3, clock))
    reporter.report(NodeReport("ok", "converged", None, 1, False))
    assert [(what.split()[0], timeout) for what, _, timeout in events] == [("PATCH", 3.0)]
    events.clear()
    reporter.report(NodeReport("failed", "later", None, 2, False))
    assert events == []  # nothing left: not sent


def test_the_lease_release_and_the_last_report_timing_out_say_their_timeout_was_cut(
        server: EmulatedApiServer, caplog: pytest.LogCaptureFixture) -> None:
    # After SIGTERM the release's and the last report's requests are given what is left
    # of the grace period; one that timed out quoted it as a plain timeout ("no answer
    # from the API server within 4s"), read as an API server 4 s slow, where a pass's
    # request so cut already said "its timeout cut to what was left of the grace period".
    clock, events = FakeClock(), list[Event]()
    api = recording(server.api_client(), clock, events)
    holder = LeaderElector(api, "node-a", SETTINGS, clock=clock)
    assert holder.step()
    reporter = NodeReporter(api, "node-a", clock=clock)
    server.fail(504, delay=HANG, times=None)
    cut = "its timeout cut to what was left of the grace period"
    with caplog.at_level("WARNING", logger="k3snet.agent"):
        holder.stop(release=True, deadline=Deadline(clock.now + 4, clock))
        reporter.finish_by(Deadline(clock.now + 3, clock))
        reporter.report(NodeReport("ok", "converged", None, 1, False))
        roomy = NodeReporter(api, "node-a", clock=clock)
        roomy.finish_by(Deadline(clock.now + 60, clock))  # more than its own 10 s left
        roomy.report(NodeReport("ok", "converged", None, 1, False))
    said = [r.getMessage() for r in caplog.records if "no answer" in r.getMessage()]
    assert len(said) == 3, said
    assert f"read Lease kube-system/k3snet-cluster-writer: no answer from the API server " \
           f"within 4s, {cut} (timed out" in said[0]
    assert f"annotate Node node-a: no answer from the API server within 3s, {cut} " \
           "(timed out" in said[1]
    assert "within 10s (timed out" in said[2]


def test_the_report_of_the_pass_sigterm_interrupted_waits_only_what_is_left_of_the_grace_period(
        server: EmulatedApiServer, tmp_path: Path) -> None:
    # The pass in progress at SIGTERM ends with its report: a Node patch given the whole
    # request timeout (10 s) however little of the grace period was left.
    clock, events = FakeClock(), list[Event]()
    api = recording(server.api_client(), clock, events)
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC)
    memory = MemoryBackend(capabilities=NODE_KINDS)
    agent = Agent(FileSpecSource(path), lambda spec: BackendGroup([memory]),
                  COMPILED,
                  AgentOptions("node-a", interval=3600),
                  reporter=NodeReporter(api, "node-a", clock=clock), monotonic=clock)
    assert agent.run_pass().status == "ok"
    agent.stop()  # SIGTERM at 1000 s, the pass in progress ...
    clock.advance(agent.options.termination_grace - CLEANUP_MARGIN - 5)
    server.fail(504, delay=HANG, times=None)
    before = len(events)
    path.write_text(SPEC + "  - cidr: 172.20.0.0/16\n")
    assert agent.run_pass().status == "ok"  # ... ends 5 s before the deadline: to report
    assert [(what.split()[0], timeout) for what, _, timeout in events[before:]] == [
        ("PATCH", 5)]


class _CountedPools(MemoryBackend):
    """The cluster-wide objects (Calico's IPPools): each observe is a LIST of them."""

    def __init__(self) -> None:
        super().__init__(capabilities=("ippool",))
        self.lists = 0

    def observe(self) -> Any:
        self.lists += 1
        return super().observe()


class _SigtermDuringApply(MemoryBackend):
    """The node's objects; SIGTERM arrives while they are written."""

    def __init__(self) -> None:
        super().__init__(capabilities=NODE_KINDS)
        self.agent: Agent | None = None

    def apply(self, plan: Plan) -> Any:
        if self.agent is not None:
            self.agent.stop()
        return super().apply(plan)


def test_sigterm_during_the_node_s_part_skips_the_cluster_wide_part_of_that_pass(
        tmp_path: Path) -> None:
    # The pass in progress at SIGTERM went on to the cluster-wide part: a LIST of every
    # IPPool and its writes, 10 s each with an API server that never answers, out of
    # the grace period the clean-up and the Lease's release need.
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC)
    memory, pools = _SigtermDuringApply(), _CountedPools()
    agent = Agent(FileSpecSource(path), lambda spec: BackendGroup([memory, pools]),
                  COMPILED,
                  AgentOptions("node-a", interval=3600))
    memory.agent = agent
    assert agent.run_pass().status == "ok"
    assert memory.state.owned  # the node's part is done
    assert pools.lists == 0


def test_the_wait_for_the_elector_s_step_in_flight_ends_with_the_grace_period(
        server: EmulatedApiServer) -> None:
    # stop() waited up to 17 s (the request timeout, a retry period, 5 s) for the thread's
    # step in flight: with an API server that never answers, past the grace period.
    clock, events = FakeClock(), list[Event]()
    api = recording(server.api_client(), clock, events)
    settings = LeaseSettings("kube-system", "k3snet-cluster-writer", duration=15.0,
                             renew_deadline=10.0, retry_period=0.01)
    holder = LeaderElector(api, "node-a", settings, clock=clock)
    assert holder.step()
    entered, answer = threading.Event(), threading.Event()
    send = api.call_api

    def held(*args: Any, **kwargs: Any) -> Any:  # the thread's step: no answer until told
        entered.set()
        answer.wait(timeout=60)
        return send(*args, **kwargs)

    api.call_api = held
    holder.start()
    try:
        assert entered.wait(timeout=60)  # bounds a hung test only
        api.call_api = send
        events.clear()
        holder.stop(release=True, deadline=Deadline(clock.now, clock))  # nothing left
        assert events == []  # no release sent
        assert holder._thread is not None
        assert holder._thread.is_alive()  # not waited for: its step is still in flight
    finally:
        answer.set()
        if holder._thread is not None:
            holder._thread.join(timeout=60)  # its step ends while the server still serves


class _SignalledRoutes(MemoryBackend):
    """The routes member: the process gets a real signal while its changes are written,
    then writes them once the agent took it as a stop (the handler's thread ran)."""

    def __init__(self, signum: int) -> None:
        super().__init__(capabilities=("route", "sysctl"))
        self.signum = signum
        self.agent: Agent | None = None
        self.stopped_within: bool | None = None

    committed = False  # the signal lands after the member's commit (as nftables marks it)

    def apply(self, plan: Plan) -> Any:
        if self.agent is not None and self.stopped_within is None:
            if self.committed:
                committing()
            os.kill(os.getpid(), self.signum)
            # A generous bound: the stop comes from the signal thread (no timed assertion).
            self.stopped_within = self.agent._stopping.wait(60)
        return super().apply(plan)


@pytest.mark.parametrize("committed", [False, True], ids=["before-commit", "after-commit"])
@pytest.mark.parametrize("cleanup", [False, True], ids=["rules-stay", "cleanup-on-exit"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_during_an_apply_leaves_no_half_change(
        tmp_path: Path, signum: int, cleanup: bool, committed: bool) -> None:
    """The signal's handler only asks the loop to stop: the apply in progress is written
    whole, every member of the group (the routes' member got the signal, the NAT
    member's changes come after), the loop ends after that pass, and the clean-up on
    exit, if asked, removes all of it. Landing after the member's commit, the stop is
    asked at once too: the group's hold called the handler only as the member's apply
    ended (an nftables commit of thousands of rules later), and the grace period the
    agent counts from the stop began that much after the kubelet's."""
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC)
    routes = _SignalledRoutes(signum)
    routes.committed = committed
    rules = MemoryBackend(capabilities=("nat", "forward"))
    agent = Agent(FileSpecSource(path), lambda spec: BackendGroup([routes, rules]),
                  COMPILED,
                  AgentOptions("node-a", interval=3600, watch=None, cleanup_on_exit=cleanup))
    routes.agent = agent
    wanted = compile_for(BackendGroup([routes, rules]), Spec.from_yaml(SPEC))
    with _stop_on_signals(agent):
        status = agent.run()
    assert routes.stopped_within is True
    assert agent.passes == 1
    assert status == 0
    held = sorted(map(str, (*routes.state.owned, *rules.state.owned)))
    if cleanup:
        assert agent.cleaned_up is True
        assert held == []
    else:
        assert held == sorted(map(str, wanted.owned))
        assert rules.state.owned  # the member after the signalled one, written too


def test_the_lease_release_asked_to_wait_gives_up_at_once_through_the_agents_client(
        server: EmulatedApiServer, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    # The agent's client (k3snet.kube.retry_policy) let urllib3 send a GET answered 429
    # or 503 with a Retry-After again after sleeping what it asked (an hour here), outside
    # the grace deadline that cuts each request's timeout: the release after SIGTERM
    # slept on, and the kubelet killed the agent. Now the 429 is the release's failure at
    # once, and the Lease expires by itself.
    slept = urllib3_sleeps(monkeypatch)
    api: Any = retrying_client(server.url)
    clock = FakeClock()
    try:
        holder = LeaderElector(api, "node-a", SETTINGS, clock=clock)
        assert holder.step()
        server.fail(429, method="GET", plural="leases", times=1, retry_after=3600)
        sent = len(server.requests())
        with caplog.at_level("WARNING", logger="k3snet.agent"):
            holder.stop(release=True, deadline=Deadline(clock.now + 4, clock))
    finally:
        api.close()
    assert slept == []
    assert [m for m, _, _ in server.requests()[sent:]] == ["GET"]
    assert any("could not release" in r.getMessage() and "throttled (429)" in r.getMessage()
               for r in caplog.records)
    lease = server.get(LEASES, SETTINGS.name, SETTINGS.namespace)
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == "node-a"  # it expires by itself


def test_the_lease_release_whose_connection_closes_unanswered_reads_once(
        server: EmulatedApiServer, caplog: pytest.LogCaptureFixture) -> None:
    # An API server, or a load balancer with no backend left, that reads the release's
    # GET and closes the connection without an answer: urllib3 (retry_policy) sent it 3
    # times more, each waiting what was left of the grace deadline when it began (4 times
    # the deadline in all). Within the deadline a request is sent once.


    with closing_server() as (port, accepted):
        api: Any = retrying_client(server.url)
        clock = FakeClock()
        try:
            holder = LeaderElector(api, "node-a", SETTINGS, clock=clock)
            assert holder.step()
            api.configuration.host = f"http://127.0.0.1:{port}"
            with caplog.at_level("WARNING", logger="k3snet.agent"):
                holder.stop(release=True, deadline=Deadline(clock.now + 4, clock))
        finally:
            api.close()
    assert len(accepted) == 1
    assert any("could not release" in r.getMessage() for r in caplog.records)


def _refused_port() -> int:
    """A port of 127.0.0.1 that nothing listens on (a connection to it is refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_last_report_on_a_refused_connection_connects_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The node report is written by its own thread, outside the pass's requests_within:
    # after SIGTERM, urllib3 (retry_policy) still tried its PATCH's refused connection 3
    # times more (each try given the whole timeout cut when the request began; an
    # unreachable host's connect can take seconds). Within the grace deadline it is
    # tried once, as every other request after SIGTERM.
    import urllib3.util.connection  # noqa: PLC0415 - a dependency of the kubernetes client

    connects: list[int] = []
    connect = urllib3.util.connection.create_connection

    def counted(*args: Any, **kwargs: Any) -> Any:
        connects.append(1)
        return connect(*args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", counted)
    api: Any = retrying_client(f"http://127.0.0.1:{_refused_port()}")
    clock = FakeClock()
    try:
        reporter = NodeReporter(api, "node-a", clock=clock)
        reporter.finish_by(Deadline(clock.now + 4, clock))
        reporter.report(NodeReport("ok", "converged", None, 1, False))
    finally:
        api.close()
    assert len(connects) == 1
    assert reporter.writes == 0


def _held_from_first(api: Any) -> tuple[threading.Event, threading.Event]:
    """The first request of ``api`` waits (``entered`` set) until told (``answer`` set);
    the next ones are sent at once."""
    entered, answer = threading.Event(), threading.Event()
    send = api.call_api

    def held(*args: Any, **kwargs: Any) -> Any:
        api.call_api = send
        entered.set()
        answer.wait(timeout=60)
        return send(*args, **kwargs)

    api.call_api = held
    return entered, answer


def _step_halted_in_flight(elector: LeaderElector, entered: threading.Event,
                           answer: threading.Event) -> None:
    """Run ``elector``'s step in a thread, halt it (SIGTERM) once its held request is in
    flight (``entered``), then let that request's answer through (``answer``) and wait
    for the step to end."""
    done = threading.Thread(target=elector.step)
    done.start()
    try:
        assert entered.wait(timeout=60)  # bounds a hung test only
        elector.halt()
    finally:
        answer.set()
        done.join(timeout=60)


def test_the_elector_s_step_in_flight_at_sigterm_reads_once_within_the_grace_period(
        server: EmulatedApiServer) -> None:
    # Only the wait for the elector's thread was bounded at SIGTERM: its step in flight
    # went on with its own timeouts, and urllib3 sent its GET, whose connection a load
    # balancer closed unanswered, 3 times more, each waiting the whole request timeout,
    # past the grace period. Halted with the deadline, its requests are within it too.
    with closing_server() as (port, accepted):
        api: Any = retrying_client(server.url)
        clock = FakeClock()
        settings = LeaseSettings("kube-system", "k3snet-cluster-writer", duration=15.0,
                                 renew_deadline=10.0, retry_period=0.01)
        holder = LeaderElector(api, "node-a", settings, clock=clock)
        try:
            assert holder.step()
            api.configuration.host = f"http://127.0.0.1:{port}"
            entered, answer = _held_from_first(api)
            holder.start()
            assert entered.wait(timeout=60)  # bounds a hung test only
            # (a deadline of 0.05 s: the wait for the thread, in real seconds, is short)
            holder.stop(release=False, deadline=Deadline(clock.now + 0.05, clock))
            answer.set()
            assert holder._thread is not None
            holder._thread.join(timeout=60)
            assert not holder._thread.is_alive()
        finally:
            answer.set()
            api.close()
    assert len(accepted) == 1


def test_a_candidate_s_step_in_flight_at_sigterm_takes_no_lease(
        server: EmulatedApiServer) -> None:
    # The step in flight when SIGTERM came, not waited for past the grace period, went
    # on: a candidate that read a free Lease (or none) then took it, and so could a holder
    # whose read came after its own release: a Lease held by an agent on its way out,
    # which no candidate takes before it expires. A halted elector writes no Lease.
    api: Any = server.api_client()
    candidate = LeaderElector(api, "node-b", SETTINGS, clock=FakeClock())
    _step_halted_in_flight(candidate, *_held_from_first(api))
    assert not candidate.is_leader
    assert server.get(LEASES, SETTINGS.name, SETTINGS.namespace) is None


def _lease_record(server: EmulatedApiServer) -> tuple[Any, Any]:
    lease = server.get(LEASES, SETTINGS.name, SETTINGS.namespace)
    assert lease is not None
    return lease["spec"].get("holderIdentity"), lease["metadata"]["resourceVersion"]


def test_a_holder_s_step_in_flight_at_sigterm_renews_nothing_and_its_release_frees_it(
        server: EmulatedApiServer) -> None:
    # A holder whose read was in flight at SIGTERM went on to renew the Lease (after
    # which it is held for a whole lease duration more by an agent on its way out):
    # halted, its step writes nothing, stays the holder it was, and the release
    # that follows still reads the Lease and frees it.
    api: Any = server.api_client()
    holder = LeaderElector(api, "node-a", SETTINGS, clock=FakeClock())
    assert holder.step()
    before = _lease_record(server)
    _step_halted_in_flight(holder, *_held_from_first(api))
    assert _lease_record(server) == before  # no renewal written after SIGTERM
    assert holder.is_leader
    holder.stop()
    assert _lease_record(server)[0] is None
    assert not holder.is_leader


def test_a_candidate_s_step_in_flight_at_sigterm_takes_no_free_lease(
        server: EmulatedApiServer) -> None:
    # The Lease exists and is free (its holder released it): a candidate whose read was
    # in flight at SIGTERM took it on its way out. Halted, it writes nothing.
    first = LeaderElector(server.api_client(), "node-a", SETTINGS, clock=FakeClock())
    assert first.step()
    first.stop()
    before = _lease_record(server)
    assert before[0] is None
    api: Any = server.api_client()
    candidate = LeaderElector(api, "node-b", SETTINGS, clock=FakeClock())
    _step_halted_in_flight(candidate, *_held_from_first(api))
    assert not candidate.is_leader
    assert _lease_record(server) == before


def test_an_elector_made_after_sigterm_by_the_pass_in_progress_takes_no_lease(
        server: EmulatedApiServer, tmp_path: Path) -> None:
    # SIGTERM while the pass in progress made its elector (the factory reads the Node's
    # labels for --lease-candidates, up to 10 s with a slow API server): the halt went to
    # no elector, and the one made next took the free Lease on its way out, its thread
    # started, as if no SIGTERM had come. Made after SIGTERM, it is halted at once.
    clock = FakeClock()
    api: Any = server.api_client()
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC)
    made: list[LeaderElector] = []
    agent: Agent | None = None

    def elector(on_change: Callable[[bool], None]) -> LeaderElector:
        assert agent is not None
        agent.stop()  # SIGTERM, while the factory read the Node's labels
        made.append(LeaderElector(api, "node-a", SETTINGS, on_change=on_change, clock=clock))
        return made[-1]

    pools = MemoryBackend(capabilities=("ippool",))
    agent = Agent(FileSpecSource(path),
                  lambda spec: BackendGroup([MemoryBackend(capabilities=NODE_KINDS), pools]),
                  COMPILED,
                  AgentOptions("node-a", interval=3600), elector_factory=elector,
                  monotonic=clock)
    try:
        result = agent.run_pass()
        assert not result.leader
        assert server.get(LEASES, SETTINGS.name, SETTINGS.namespace) is None
        (elector_made,) = made
        assert not elector_made.is_leader
    finally:
        agent.shutdown()
    assert server.get(LEASES, SETTINGS.name, SETTINGS.namespace) is None


def test_a_holder_s_renewal_sent_before_sigterm_is_still_released(
        server: EmulatedApiServer) -> None:
    # The halt came while the holder's renewal (its PATCH) was already on its way: the
    # write is made, the elector holds the Lease for it, and the release that follows
    # reads the Lease and frees it (not left held for a lease duration by a dead pod).
    api: Any = server.api_client()
    holder = LeaderElector(api, "node-a", SETTINGS, clock=FakeClock())
    assert holder.step()
    entered, answer = threading.Event(), threading.Event()
    send = api.call_api

    def held(method: str, *args: Any, **kwargs: Any) -> Any:
        if method == "PATCH":
            api.call_api = send
            entered.set()
            answer.wait(timeout=60)
        return send(method, *args, **kwargs)

    api.call_api = held
    _step_halted_in_flight(holder, entered, answer)
    assert holder.is_leader
    assert _lease_record(server)[0] == "node-a"
    holder.stop()
    assert _lease_record(server)[0] is None


def test_a_slow_clean_up_past_the_renew_deadline_still_releases_the_lease(
        server: EmulatedApiServer) -> None:
    # Halted at SIGTERM, the holder renews no more; a clean-up of many rules (or the
    # namespace lock waited for) took the shutdown past the renew deadline (10 s), and
    # the release, asking is_leader, gave nothing up: the Lease, still this node's for
    # the rest of its duration (15 s), made every candidate wait it out.
    clock = FakeClock()
    holder = LeaderElector(server.api_client(), "node-a", SETTINGS, clock=clock)
    assert holder.step()
    holder.halt()  # SIGTERM
    clock.advance(SETTINGS.renew_deadline + 2)  # the clean-up
    assert not holder.is_leader  # (it leads no more: nothing renews it)
    holder.stop()
    assert _lease_record(server)[0] is None
    # Once the Lease's whole duration is over, another candidate may hold it (the same
    # node name: a new pod of the agent): it is left alone.
    again = LeaderElector(server.api_client(), "node-a", SETTINGS, clock=clock)
    assert again.step()
    again.halt()
    clock.advance(SETTINGS.duration)
    before = _lease_record(server)
    again.stop()
    assert _lease_record(server) == before


@pytest.mark.parametrize("other", ["node-a", "node-b"])
@pytest.mark.parametrize("taken_before", ["GET", "PATCH"])
def test_a_release_never_frees_a_lease_another_elector_took_after_the_last_renewal(
        server: EmulatedApiServer, other: str, taken_before: str) -> None:
    # The release is allowed up to --lease-duration after the last renewal (a clean-up
    # on exit past the renew deadline), checked before its read: a slow read (or
    # write) is answered after another candidate waited the Lease out and took it. A
    # candidate of another node is told by the holder's name, and one taking it between
    # the read and the write by the resourceVersion; but the identity is the node's
    # name, and another agent of the same node (the DaemonSet's new pod, an `agent
    # --once` by hand) reads as this one: its fresh Lease was freed, a third candidate
    # took it, and both wrote the cluster-wide objects as holders.
    clock = FakeClock()
    api: Any = server.api_client()
    holder = LeaderElector(api, "node-a", SETTINGS, clock=clock)
    assert holder.step()
    candidate = LeaderElector(server.api_client(), other, SETTINGS, clock=clock)
    assert not candidate.step()  # it sees the renewal now, and waits it out
    holder.halt()  # SIGTERM
    clock.advance(SETTINGS.duration - 0.5)  # the clean-up on exit
    send = api.call_api

    def slow(method: str, *args: Any, **kwargs: Any) -> Any:
        if method == taken_before:
            api.call_api = send
            clock.advance(1.0)  # the request's answer comes after...
            assert candidate.step()  # ...the Lease expired for the candidate: it took it
        return send(method, *args, **kwargs)

    api.call_api = slow
    holder.stop()
    assert api.call_api is send  # (the hook ran)
    assert candidate.is_leader
    assert _lease_record(server)[0] == other
