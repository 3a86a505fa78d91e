"""A one-shot command's request answered 429 or 503 is sent again by k3snet's own request
wrapper (k3snet.kube.ThrottleWaits), bounded; the agent's loops wait themselves.

urllib3 sends no answer again (k3snet.kube.retry_policy): it slept a Retry-After of up to
6 hours outside every timeout. Without a wait of k3snet's own, `k3snet plan` against an
API server under Priority and Fairness load (429, Retry-After: 1, routine) failed at once
where it had waited a second and succeeded. Every sleep here is a recorder's: nothing is
timed.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import kubernetes
import pytest
import urllib3
from kubernetes import client

from k3snet import cli
from k3snet.agent import RETRY_AFTER_LIMIT, LeaderElector, LeaseSettings, NodeReport, NodeReporter
from k3snet.backends.calico import CalicoBackend
from k3snet.backends.cilium import CiliumBackend
from k3snet.backends.group import BackendGroup
from k3snet.backends.kit import translate_errors
from k3snet.cli import main
from k3snet.errors import ApplyError, RollbackError
from k3snet.kube import (
    THROTTLE_WAITS,
    Deadline,
    KubeApiError,
    KubeErrors,
    ThrottleWaits,
    make_api_client,
    requests_within,
    safe_to_send_again,
    throttle_waits,
)
from k3snet.model.cilium import CILIUM_DEFAULT_TARGET, CiliumConfig
from k3snet.model.cni import IPPool
from k3snet.model.state import State
from k3snet.planner import plan
from k3snet.testing.kube import EmulatedApiServer
from tests.cluster.calico_objects import CRD, POD_POOL, SPEC
from tests.cluster.test_cilium_backend import HELM_K3S_DATA, _cilium_config
from tests.kubeclient import write_kubeconfig

pytestmark = pytest.mark.cluster



@pytest.fixture
def slept() -> Iterator[list[float]]:
    """The waits of :data:`THROTTLE_WAITS` as they would be, recorded, not slept."""
    waits: list[float] = []
    with throttle_waits(attrs.evolve(THROTTLE_WAITS, sleep=waits.append)):
        yield waits


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatedApiServer]:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with EmulatedApiServer() as running:
        running.put(CRD, POD_POOL)
        running.put("v1/configmaps", {"metadata": {"name": "x", "namespace": "kube-system"},
                                      "data": {"a": "b"}})
        yield running


def _kubeconfig(tmp_path: Path, server: EmulatedApiServer) -> Path:
    return write_kubeconfig(tmp_path / "kubeconfig", server.url)


@contextlib.contextmanager
def _api_client(tmp_path: Path, server: EmulatedApiServer) -> Iterator[Any]:
    """An API client k3snet makes (:func:`make_api_client`: its waits, its retry policy)
    for ``server``, closed when the block ends."""
    api, _ = make_api_client(kubeconfig=str(_kubeconfig(tmp_path, server)))
    try:
        yield api
    finally:
        api.close()


def _calico(api: Any, *, allow_disruptive: bool = False) -> Any:
    """Calico's backend through ``api``, the CRDs (its requests: a 10 s timeout)."""

    return CalicoBackend(api_client=api, api="crd", timeout=10.0,
                         allow_disruptive=allow_disruptive)


def _plan(tmp_path: Path, server: EmulatedApiServer, *more: str) -> int:

    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    return main(["plan", "-f", str(spec), "--no-facts", "--backend", "calico",
                 "--backend-opt", "calico.api=crd", "--backend-opt",
                 f"calico.kubeconfig={_kubeconfig(tmp_path, server)}", *more])


def _lists(server: EmulatedApiServer) -> list[str]:
    return [m for m, path, _ in server.requests() if path.endswith("/ippools")]


# ------------------------------------------------------------------ the commands


def test_plan_throttled_with_a_retry_after_waits_it_and_succeeds(
        tmp_path: Path, server: EmulatedApiServer, slept: list[float],
        capsys: pytest.CaptureFixture[str]) -> None:
    # The API server under APF load: two 429s naming Retry-After: 1, then the list. It
    # failed at once with "throttled (429)" (exit 1) since urllib3 retries no answer.
    server.fail(429, method="GET", plural="ippools", times=2, retry_after=1)
    capsys.readouterr()
    assert _plan(tmp_path, server) == 2  # changes to make: the plan was read
    captured = capsys.readouterr()
    assert "+ " in captured.out, captured.out
    assert slept == [1.0, 1.0]
    assert _lists(server) == ["GET"] * 3
    said = [line for line in captured.err.splitlines() if "sending it again" in line]
    assert len(said) == 2, captured.err
    assert "/apis/crd.projectcalico.org/v1/ippools with 429 (Retry-After: 1)" in said[0]
    assert "1 of at most 5 more tries" in said[0]


def test_plan_throttled_without_a_retry_after_backs_off_and_gives_up_within_its_bounds(
        tmp_path: Path, server: EmulatedApiServer, slept: list[float],
        capsys: pytest.CaptureFixture[str]) -> None:
    # A 503 for ever, naming no Retry-After (a proxy, an aggregated API down): waits of
    # 1, 2, 4, 5, 5 s (doubled, none over 5 s, 17 s in all), then the 503 is the error.
    server.fail(503, method="GET", plural="ippools", times=None)
    capsys.readouterr()
    assert _plan(tmp_path, server) == 1
    err = capsys.readouterr().err
    assert slept == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert _lists(server) == ["GET"] * 6
    assert "the API server failed (503" in err, err
    assert "sent 6 times, 17 s waited in all" in err, err


def test_plan_asked_to_wait_longer_than_k3snet_waits_fails_at_once_saying_so(
        tmp_path: Path, server: EmulatedApiServer, slept: list[float],
        capsys: pytest.CaptureFixture[str]) -> None:
    # Sent again before the time the API server asked, the request would add to its load:
    # the answer is the command's at once, and the message names the wait asked.
    server.fail(429, method="GET", plural="ippools", times=None, retry_after=120)
    capsys.readouterr()
    assert _plan(tmp_path, server) == 1
    err = capsys.readouterr().err
    assert slept == []
    assert _lists(server) == ["GET"]
    assert "throttled (429)" in err, err
    assert "it asked to wait 120 s, more than the 5 s k3snet waits at once" in err, err


def test_all_the_waits_of_a_request_stay_within_the_total(
        server: EmulatedApiServer, tmp_path: Path) -> None:
    waits: list[float] = []
    server.fail(429, method="GET", plural="configmaps", times=None, retry_after=4)
    with _api_client(tmp_path, server) as api, \
            throttle_waits(ThrottleWaits(total=10.0, sleep=waits.append)), \
            pytest.raises(KubeApiError) as info, \
            translate_errors("read ConfigMap kube-system/x", classifier=KubeErrors()):
        _core(api).read_namespaced_config_map("x", "kube-system")
    assert waits == [4.0, 4.0]  # a third wait of 4 s would make 12 s
    assert (info.value.status, info.value.retry_after) == (429, 4.0)
    assert "sent 3 times, 8 s waited in all" in str(info.value)


def test_no_wait_outlasts_a_deadline_the_requests_are_within(
        server: EmulatedApiServer, tmp_path: Path) -> None:
    waits: list[float] = []
    now = [0.0]
    server.fail(429, method="GET", plural="configmaps", times=None, retry_after=2)

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    deadline = Deadline(5.0, lambda: now[0])
    with _api_client(tmp_path, server) as api, throttle_waits(ThrottleWaits(sleep=sleep)), \
            requests_within(lambda: deadline), pytest.raises(KubeApiError), \
            translate_errors("read", classifier=KubeErrors()):
        _core(api).read_namespaced_config_map("x", "kube-system")
    assert waits == [2.0, 2.0]  # 1 s left: no third wait of 2 s


# ------------------------------------------------------------------ which writes


def _core(api: Any) -> Any:

    return client.CoreV1Api(api)


def _writes(core: Any, version: Callable[[], str]) -> dict[str, Callable[[], Any]]:

    body = {"metadata": {"name": "y", "namespace": "kube-system"}, "data": {"a": "b"}}
    return {
        "create named": lambda: core.create_namespaced_config_map("kube-system", body),
        "merge patch": lambda: core.patch_namespaced_config_map(
            "x", "kube-system", {"data": {"a": "c"}},
            _content_type="application/merge-patch+json"),
        "delete of the version read": lambda: core.delete_namespaced_config_map(
            "x", "kube-system", body=client.V1DeleteOptions(
                preconditions=client.V1Preconditions(resource_version=version()))),
        "create named by the server": lambda: core.create_namespaced_config_map(
            "kube-system", {"metadata": {"generateName": "y-", "namespace": "kube-system"}}),
        "delete unconditioned": lambda: core.delete_namespaced_config_map("x", "kube-system"),
        "JSON Patch": lambda: core.patch_namespaced_config_map(
            "x", "kube-system", [{"op": "add", "path": "/data/c", "value": "d"}],
            _content_type="application/json-patch+json"),
    }


@pytest.mark.parametrize(("write", "method", "sent"), [
    ("create named", "POST", 2), ("merge patch", "PATCH", 2),
    ("delete of the version read", "DELETE", 2), ("create named by the server", "POST", 1),
    ("delete unconditioned", "DELETE", 1), ("JSON Patch", "PATCH", 1)])
def test_a_write_is_sent_again_only_when_a_second_send_changes_nothing_the_first_did_not(
        server: EmulatedApiServer, tmp_path: Path, slept: list[float], *, write: str,
        method: str, sent: int) -> None:
    # A 503 may follow the API server's work: only a write whose second send is refused
    # (a name taken, a version gone) or changes nothing more is sent again.
    with _api_client(tmp_path, server) as api:
        core = _core(api)
        stored = server.get("v1/configmaps", "x", "kube-system")
        assert stored is not None
        before = len(server.requests())
        server.fail(503, method=method, plural="configmaps", times=1, retry_after=1)
        call = _writes(core, lambda: stored["metadata"]["resourceVersion"])[write]
        if sent == 2:
            call()
        else:
            with pytest.raises(KubeApiError) as info, \
                    translate_errors(write, classifier=KubeErrors()):
                call()
            assert info.value.status == 503
    assert [m for m, _, _ in server.requests()[before:]] == [method] * sent
    assert slept == [1.0] * (sent - 1)


@pytest.mark.parametrize(("method", "content_type", "body", "safe"), [
    ("GET", None, None, True), ("put", None, {}, True),
    ("PATCH", "application/merge-patch+json", {}, True),
    ("PATCH", "application/apply-patch+yaml; charset=utf-8", {}, True),
    ("PATCH", "application/strategic-merge-patch+json",
     {"metadata": {"resourceVersion": "7"}}, True),
    ("PATCH", "application/strategic-merge-patch+json", {"metadata": {}}, False),
    ("PATCH", "application/json-patch+json", [{"op": "add"}], False),
    ("DELETE", None, {"preconditions": {"uid": "u"}}, True),
    ("DELETE", None, {"preconditions": {}}, False), ("DELETE", None, None, False),
    ("POST", None, {"metadata": {"name": "a"}}, True),
    ("POST", None, {"metadata": {"generateName": "a-"}}, False),
    ("POST", None, {"metadata": {"name": "a", "generateName": "a-"}}, False),
    ("OPTIONS", None, None, False)])
def test_safe_to_send_again_of_each_kind_of_request(
        method: str, content_type: str | None, body: Any, safe: bool) -> None:
    assert safe_to_send_again(method, content_type, body) is safe


# ------------------------------------------------------------------ the agent waits itself


def test_the_agents_lease_step_waits_nothing_inside_its_request_whatever_the_caller_set(
        server: EmulatedApiServer, tmp_path: Path, slept: list[float]) -> None:
    # Within a block of waits (as a library caller's, or a command's, default is), the
    # elector's request still fails at once: its own bounded wait is the one taken.

    with _api_client(tmp_path, server) as api:
        elector = LeaderElector(api, "node-a", LeaseSettings("kube-system", "k3snet"))
        server.fail(429, method="GET", plural="leases", times=None, retry_after=1)
        assert elector.step() is False
        assert elector.next_wait() <= RETRY_AFTER_LIMIT
    assert slept == []
    assert [m for m, p, _ in server.requests() if "/leases" in p] == ["GET"]


def test_the_agents_node_report_waits_nothing_inside_its_request(
        server: EmulatedApiServer, tmp_path: Path, slept: list[float],
        caplog: pytest.LogCaptureFixture) -> None:

    server.put("v1/nodes", {"metadata": {"name": "node-a"}})
    with _api_client(tmp_path, server) as api:
        reporter = NodeReporter(api, "node-a")
        server.fail(429, method="PATCH", plural="nodes", times=None, retry_after=1)
        with caplog.at_level(logging.WARNING):
            reporter.report(NodeReport("ok", "converged", None, 0, leader=False))
    assert slept == []
    assert [m for m, p, _ in server.requests() if "/nodes" in p] == ["PATCH"]
    assert any("next try in" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("field", ["tries", "longest", "total", "backoff"])
def test_throttle_waits_refuses_a_negative_bound(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ThrottleWaits(**dict[str, Any]({field: -1}))


def _acted_then_unavailable(api: Any, method: str, *, skip: int = 0) -> list[int]:
    """Make the first ``method`` request (after ``skip`` of them) act, then answer 503 as
    a proxy before the API server may (its connection to the server cut after the server
    acted); returns the statuses the server answered behind it."""

    pool = api.rest_client.pool_manager
    real = pool.request
    behind: list[int] = []

    def request(verb: str, url: str, **kwargs: Any) -> Any:
        nonlocal skip
        answer = real(verb, url, **kwargs)
        if verb != method or behind:
            return answer
        if skip:
            skip -= 1
            return answer
        behind.append(answer.status)
        answer.read()
        answer.release_conn()
        return urllib3.HTTPResponse(
            body=io.BytesIO(b"upstream connect error or disconnect/reset before headers"),
            status=503, reason="Service Unavailable", headers={"Content-Type": "text/plain"},
            preload_content=False)

    pool.request = request
    return behind


@pytest.mark.parametrize(("write", "method", "status"), [
    ("create named", "POST", 409), ("patch of the version read", "PATCH", 409),
    ("delete of the version read", "DELETE", 404)])
def test_a_write_sent_again_after_a_503_that_followed_its_effect_is_refused_saying_so(
        server: EmulatedApiServer, tmp_path: Path, slept: list[float], *, write: str,
        method: str, status: int) -> None:
    # A proxy's 503 after the API server acted: the write sent again is refused (the name
    # taken, the version gone). Its error said "nothing was written, observe and plan
    # again" (409): the first send wrote it, and the command said it wrote nothing.

    stored = server.get("v1/configmaps", "x", "kube-system")
    assert stored is not None
    version = stored["metadata"]["resourceVersion"]
    with _api_client(tmp_path, server) as api:
        core = _core(api)
        calls: dict[str, Callable[[], Any]] = {
            "create named": lambda: core.create_namespaced_config_map(
                "kube-system", {"metadata": {"name": "y", "namespace": "kube-system"}}),
            "patch of the version read": lambda: core.patch_namespaced_config_map(
                "x", "kube-system", {"metadata": {"resourceVersion": version},
                                     "data": {"a": "c"}},
                _content_type="application/merge-patch+json"),
            "delete of the version read": lambda: core.delete_namespaced_config_map(
                "x", "kube-system", body=client.V1DeleteOptions(
                    preconditions=client.V1Preconditions(resource_version=version))),
        }
        behind = _acted_then_unavailable(api, method)
        with pytest.raises(KubeApiError) as info, \
                translate_errors(write, classifier=KubeErrors()):
            calls[write]()
    assert behind[0] < 300  # the first send acted
    assert slept == [1.0]
    assert info.value.status == status
    assert ("sent again after a 503 answer, which may come after the API server acted: "
            "this send changed nothing, an earlier one may have made the change it "
            "refuses") in str(info.value), info.value


def test_a_read_sent_again_after_a_503_says_nothing_of_an_earlier_send(
        server: EmulatedApiServer, tmp_path: Path, slept: list[float]) -> None:
    # (a read changes nothing: its 404 is the object's absence, whatever came before)
    with _api_client(tmp_path, server) as api:
        server.fail(503, method="GET", plural="configmaps", times=1)
        with pytest.raises(KubeApiError) as info, \
                translate_errors("read", classifier=KubeErrors()):
            _core(api).read_namespaced_config_map("gone", "kube-system")
    assert slept == [1.0]
    assert info.value.status == 404
    assert "503" not in str(info.value)


def test_a_write_sent_again_after_a_429_says_nothing_of_an_earlier_send(
        server: EmulatedApiServer, tmp_path: Path, slept: list[float]) -> None:
    # A 429 is Priority and Fairness refusing the request before it is served: the
    # create sent again and refused (AlreadyExists: the ConfigMap was there before) is
    # the whole story, no earlier send of it made anything.
    with _api_client(tmp_path, server) as api:
        server.fail(429, method="POST", plural="configmaps", times=1, retry_after=1)
        with pytest.raises(KubeApiError) as info, \
                translate_errors("create", classifier=KubeErrors()):
            _core(api).create_namespaced_config_map(
                "kube-system", {"metadata": {"name": "x", "namespace": "kube-system"}})
    assert slept == [1.0]
    assert info.value.status == 409
    assert "an earlier one may have made the change" not in str(info.value), info.value


def test_a_callers_own_client_is_left_as_it_sends_outside_a_block_of_waits(
        server: EmulatedApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A library caller's client handed to k3snet (api_client=) is the caller's: its own
    # requests (an operator's, answering 429 its own way) were sent again by k3snet's
    # wrapper after sleeps of up to 30 s, from the first time k3snet saw the client.

    kube: Any = kubernetes  # (untyped)

    waits: list[float] = []
    monkeypatch.setattr("k3snet.kube.THROTTLE_WAITS", ThrottleWaits(sleep=waits.append))
    configuration = kube.client.Configuration()
    kube.config.load_kube_config(config_file=str(_kubeconfig(tmp_path, server)),
                            client_configuration=configuration)
    own = kube.client.ApiClient(configuration)
    try:
        assert make_api_client(own) == (own, False)
        # (a 503 naming no Retry-After: urllib3 itself, as the caller configured it, sends
        # a GET answered with one again)
        server.fail(503, method="GET", plural="configmaps", times=1)
        with pytest.raises(kube.client.ApiException) as info:
            _core(own).read_namespaced_config_map("x", "kube-system")
        assert info.value.status == 503
        # ... unless the caller asks k3snet's waits for a block
        server.fail(503, method="GET", plural="configmaps", times=1)
        with throttle_waits(ThrottleWaits(sleep=waits.append)):
            _core(own).read_namespaced_config_map("x", "kube-system")
    finally:
        own.close()
    assert waits == [1.0]


def test_a_client_k3snet_makes_waits_outside_any_block(
        server: EmulatedApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    monkeypatch.setattr("k3snet.kube.THROTTLE_WAITS", ThrottleWaits(sleep=waits.append))
    api, owned = make_api_client(kubeconfig=str(_kubeconfig(tmp_path, server)))
    try:
        assert owned
        server.fail(429, method="GET", plural="configmaps", times=1, retry_after=1)
        _core(api).read_namespaced_config_map("x", "kube-system")
    finally:
        api.close()
    assert waits == [1.0]


# ------------------------------------------------------------------ Retry-After's forms


def _throttled_first(api: Any, headers: dict[str, str], times: int = 1) -> list[str]:
    """Answer the first ``times`` requests 429 with ``headers`` (as a proxy or load
    balancer in front of the API server may), before the server sees them; returns
    the methods that reached the server."""

    pool = api.rest_client.pool_manager
    real = pool.request
    reached: list[str] = []
    left = [times]

    def request(verb: str, url: str, **kwargs: Any) -> Any:
        if left[0] > 0:
            left[0] -= 1
            return urllib3.HTTPResponse(
                body=io.BytesIO(b"too many requests"), status=429,
                reason="Too Many Requests",
                headers={"Content-Type": "text/plain", **headers}, preload_content=False)
        reached.append(verb)
        return real(verb, url, **kwargs)

    pool.request = request
    return reached


@pytest.mark.parametrize(("retry_after", "seconds"), [
    ("Sun, 06 Dec 2026 01:30:03 GMT", 3.0),   # RFC 9110's IMF-fixdate
    ("Sunday, 06-Dec-26 01:30:04 GMT", 4.0),  # the obsolete RFC 850 form
    ("Sun Dec  6 01:30:02 2026", 2.0)])       # asctime()
def test_a_retry_after_as_an_http_date_is_waited_until_that_date(
        server: EmulatedApiServer, tmp_path: Path, slept: list[float], *, retry_after: str,
        seconds: float) -> None:
    # RFC 9110 allows a date; a proxy or load balancer in front of the API server may send
    # one. It counted as none: the request was sent again after 1 s, before the time asked.
    with _api_client(tmp_path, server) as api:
        reached = _throttled_first(api, {"Retry-After": retry_after,
                                         "Date": "Sun, 06 Dec 2026 01:30:00 GMT"})
        _core(api).read_namespaced_config_map("x", "kube-system")
    assert slept == [seconds]  # from the answer's own Date: the clocks are the same
    assert reached == ["GET"]


def test_a_retry_after_date_further_than_k3snet_waits_is_not_sent_before_it(
        server: EmulatedApiServer, tmp_path: Path, slept: list[float]) -> None:
    with _api_client(tmp_path, server) as api:
        reached = _throttled_first(api, {"Retry-After": "Sun, 06 Dec 2026 01:32:00 GMT",
                                         "Date": "Sun, 06 Dec 2026 01:30:00 GMT"})
        with pytest.raises(KubeApiError) as info, \
                translate_errors("read", classifier=KubeErrors()):
            _core(api).read_namespaced_config_map("x", "kube-system")
    assert slept == []
    assert reached == []
    assert (info.value.status, info.value.retry_after) == (429, 120.0)
    assert "it asked to wait 120 s, more than the 5 s k3snet waits at once" in str(info.value)


def test_a_retry_after_of_ten_digits_or_more_asks_a_long_wait_not_a_quick_try(
        tmp_path: Path, server: EmulatedApiServer, slept: list[float],
        capsys: pytest.CaptureFixture[str]) -> None:
    # It counted as none: waits of 1, 2, 4, 5, 5 s and 5 more sends to a server that asked
    # not to be sent anything for 300 years.
    server.fail(429, method="GET", plural="ippools", times=None, retry_after=10**10)
    capsys.readouterr()
    assert _plan(tmp_path, server) == 1
    err = capsys.readouterr().err
    assert slept == []
    assert _lists(server) == ["GET"]
    assert "more than the 5 s k3snet waits at once; not sent again" in err, err
    assert "it asked to wait 999999999 s or more, more than" in err, err  # not "1e+09 s"


def test_a_retry_after_date_an_hour_further_says_its_seconds_whole(
        server: EmulatedApiServer, tmp_path: Path, slept: list[float]) -> None:
    # (a server clock an hour ahead of the node's, and no Date: the same answer)
    with _api_client(tmp_path, server) as api:
        _throttled_first(api, {"Retry-After": "Sun, 06 Dec 2026 02:30:03 GMT",
                               "Date": "Sun, 06 Dec 2026 01:30:00 GMT"})
        with pytest.raises(KubeApiError) as info, \
                translate_errors("read", classifier=KubeErrors()):
            _core(api).read_namespaced_config_map("x", "kube-system")
    assert slept == []
    assert "it asked to wait 3603 s, more than the 5 s" in str(info.value), info.value


@pytest.mark.parametrize(("retry_after", "seconds"), [("0000000003", 3.0),
                                                       ("00000000000000000002", 2.0)])
def test_a_retry_after_s_leading_zeros_are_no_digits_of_a_long_wait(
        server: EmulatedApiServer, tmp_path: Path, slept: list[float], *, retry_after: str,
        seconds: float) -> None:
    # RFC 9110's delay-seconds is 1*DIGIT: "0000000003" is 3 s. Its 10 characters were
    # taken for a wait of 10 digits or more, and the request given up at once.
    with _api_client(tmp_path, server) as api:
        reached = _throttled_first(api, {"Retry-After": retry_after})
        _core(api).read_namespaced_config_map("x", "kube-system")
    assert slept == [seconds]
    assert reached == ["GET"]


@pytest.mark.parametrize("value", ["soon", "-1", "1.5", "Sun, 06 Dec 2026 01:29:00 GMT",
                                   "Sun, 06 Dec 99999 01:30:00 GMT", ""])
def test_a_retry_after_of_no_seconds_and_no_future_date_counts_as_none(
        server: EmulatedApiServer, tmp_path: Path, slept: list[float], value: str) -> None:
    with _api_client(tmp_path, server) as api:
        _throttled_first(api, {"Retry-After": value, "Date": "Sun, 06 Dec 2026 01:30:00 GMT"})
        _core(api).read_namespaced_config_map("x", "kube-system")
    assert slept == [1.0]  # the backoff's first wait


# ------------------------------------------------------------------ a write given up


@pytest.mark.parametrize(("write", "method", "sent", "said"), [
    ("merge patch", "PATCH", 6, "any send answered 503 may have made the change"),
    ("JSON Patch", "PATCH", 1, "not sent again, a second send could act twice; a 503 may "
     "come after the API server acted: this send may have made the change"),
    ("create named by the server", "POST", 1, "this send may have made the change")])
def test_a_write_given_up_after_503s_says_a_send_may_have_made_the_change(
        server: EmulatedApiServer, tmp_path: Path, slept: list[float], *, write: str,
        method: str, sent: int, said: str) -> None:
    # The error said "the API server failed (503 ...) (sent 6 times, 17 s waited in all)"
    # alone: as though nothing were changed, while a 503 may come after the API server
    # acted (a proxy's, an aggregated API's), for any of the sends.
    with _api_client(tmp_path, server) as api:
        stored = server.get("v1/configmaps", "x", "kube-system")
        assert stored is not None
        before = len(server.requests())
        server.fail(503, method=method, plural="configmaps", times=None)
        with pytest.raises(KubeApiError) as info, \
                translate_errors(write, classifier=KubeErrors()):
            _writes(_core(api), lambda: stored["metadata"]["resourceVersion"])[write]()
    assert [m for m, _, _ in server.requests()[before:]] == [method] * sent
    assert info.value.status == 503
    assert said in str(info.value), info.value
    assert "the next plan shows what is there" in str(info.value)


def test_a_write_given_up_after_429s_alone_says_nothing_of_a_change(
        server: EmulatedApiServer, tmp_path: Path, slept: list[float]) -> None:
    # (a 429 is a refusal before the request is served)
    with _api_client(tmp_path, server) as api:
        server.fail(429, method="PATCH", plural="configmaps", times=None, retry_after=1)
        with pytest.raises(KubeApiError) as info, \
                translate_errors("patch", classifier=KubeErrors()):
            _writes(_core(api), lambda: "")["merge patch"]()
    assert "sent 6 times, 5 s waited in all" in str(info.value), info.value
    assert "may have made the change" not in str(info.value)


# ------------------------------------------------------------------ Calico's undo of a create


def _calico_apply_failing_after_a_create(server: EmulatedApiServer, tmp_path: Path,
                                         proxy: Callable[[Any], Any]) -> Any:
    """Apply two new pools through a client k3snet made, the second create failing
    (500), so the first pool's create is undone by a delete; ``proxy(api)`` is called
    before. Returns the apply's error."""

    with _api_client(tmp_path, server) as api:
        backend = _calico(api)
        desired = State(owned=[IPPool("k3snet-pods-a", "10.100.0.0/16", nat_outgoing=True),
                               IPPool("k3snet-pods-b", "10.101.0.0/24", nat_outgoing=True)])
        changes = plan(backend.observe(), desired)
        server.fail(500, method="POST", name="k3snet-pods-b")
        proxy(api)
        with pytest.raises(ApplyError) as info:
            backend.apply(changes)
    return info.value


def test_calicos_undo_of_a_create_is_sent_again_after_a_503(
        server: EmulatedApiServer, tmp_path: Path, slept: list[float]) -> None:
    # The delete undoing the pool it created carried no precondition: not safe to send
    # again, its 503 left the pool and made the apply a RollbackError ("may be
    # half-changed"). It names the created pool's uid now, and is sent again.

    error = _calico_apply_failing_after_a_create(
        server, tmp_path, lambda api: server.fail(503, method="DELETE", name="k3snet-pods-a"))
    assert not isinstance(error, RollbackError), error
    assert server.get(CRD, "k3snet-pods-a") is None
    assert slept == [1.0]
    deletes = [(m, body) for m, p, body in server.requests() if m == "DELETE"]
    assert len(deletes) == 2
    assert all(_uid_of(body) for _, body in deletes), deletes


def test_calicos_undo_of_a_create_whose_first_send_acted_before_a_503_is_done(
        server: EmulatedApiServer, tmp_path: Path, slept: list[float]) -> None:
    # A proxy's 503 after the API server deleted the pool: the delete sent again finds
    # none (404), which is the undo done, not a failed undo.
    behind: list[list[int]] = []
    error = _calico_apply_failing_after_a_create(
        server, tmp_path, lambda api: behind.append(_acted_then_unavailable(api, "DELETE")))
    assert behind[0][0] < 300  # the first send acted
    assert server.get(CRD, "k3snet-pods-a") is None
    assert "may be half-changed" not in str(error), error
    assert slept == [1.0]


def test_calicos_undo_of_a_create_leaves_a_pool_made_again_by_someone_else(
        server: EmulatedApiServer, tmp_path: Path, slept: list[float]) -> None:
    # Its uid names the pool k3snet created: one deleted and made again by another writer
    # meanwhile is not k3snet's to delete (409), and the undo says it failed.

    def someone_remakes(api: Any) -> None:
        real = api.rest_client.pool_manager.request

        def request(verb: str, url: str, **kwargs: Any) -> Any:
            if verb == "DELETE":
                server.delete(CRD, "k3snet-pods-a")
                server.put(CRD, {"apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
                                 "metadata": {"name": "k3snet-pods-a"},
                                 "spec": {"cidr": "10.100.0.0/16"}})
                api.rest_client.pool_manager.request = real
            return real(verb, url, **kwargs)

        api.rest_client.pool_manager.request = request

    error = _calico_apply_failing_after_a_create(server, tmp_path, someone_remakes)
    assert isinstance(error, RollbackError), error
    assert server.get(CRD, "k3snet-pods-a") is not None
    assert "conflict (409)" in str(error), error


@pytest.mark.parametrize("then", [signal.SIGHUP, signal.SIGTERM])
def test_sighup_or_sigterm_in_the_undo_of_a_failed_apply_lets_it_run_on(
        server: EmulatedApiServer, tmp_path: Path, slept: list[float],
        then: signal.Signals) -> None:
    # `k3snet apply` fails (the second pool's create refused) and takes the first pool
    # back as the API server answers its delete 429; the terminal is closed (SIGHUP), or
    # systemd stops the unit (SIGTERM), as that undo waits. Either raised in the undo and
    # stopped it: the pool left, ROLLBACK FAILED (interrupted), said to a terminal gone
    # for SIGHUP. As in the undo a signal or Ctrl-C started, SIGHUP now lets it run on,
    # SIGTERM bounds it by its 75 s: the pool is taken back, the apply's own error said.
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("the tests run outside the main thread: the signals would end the run")
    hangup = signal.signal(signal.SIGHUP, signal.SIG_DFL)  # (a runner may ignore it)
    sent: list[int] = []

    def terminal_closes(api: Any) -> None:
        server.fail(429, method="DELETE", times=2, retry_after=1)
        real = api.rest_client.pool_manager.request

        def request(verb: str, url: str, **kwargs: Any) -> Any:
            if verb == "DELETE" and not sent:
                sent.append(then)
                os.kill(os.getpid(), then)  # its handler returns
            return real(verb, url, **kwargs)

        api.rest_client.pool_manager.request = request

    try:
        with cli.sigterm_undoes():
            error = _calico_apply_failing_after_a_create(server, tmp_path, terminal_closes)
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL  # given back
    finally:
        signal.signal(signal.SIGHUP, hangup)
    assert sent == [then]
    assert not isinstance(error, RollbackError), error
    assert server.get(CRD, "k3snet-pods-a") is None
    assert slept == [1.0, 1.0]


def _uid_of(body: Any) -> str | None:
    """The uid precondition of a recorded DELETE's body."""

    data = json.loads(body) if isinstance(body, str | bytes) else body
    return ((data or {}).get("preconditions") or {}).get("uid")


# ------------------------------------------------------------------ Calico's undo of a delete


def _calico_apply_failing_after_a_delete(server: EmulatedApiServer, tmp_path: Path,
                                         proxy: Callable[[Any], Any]) -> Any:
    """Make pool k3snet-pods-a k3snet's, then apply a state without it and with a new
    pool whose create fails (500): the delete of k3snet-pods-a is undone by a re-create;
    ``proxy(api)`` is called before that apply. Returns the apply's error."""

    with _api_client(tmp_path, server) as api:
        backend = _calico(api, allow_disruptive=True)
        backend.apply(plan(backend.observe(), State(owned=[
            IPPool("k3snet-pods-a", "10.100.0.0/16", nat_outgoing=True)])))
        changes = plan(backend.observe(), State(owned=[
            IPPool("k3snet-pods-b", "10.101.0.0/24", nat_outgoing=True)]))
        assert [c.action for c in changes.changes] == ["delete", "add"], changes
        server.fail(500, method="POST", name="k3snet-pods-b")
        proxy(api)
        with pytest.raises(ApplyError) as info:
            backend.apply(changes)
    return info.value


def test_calicos_undo_of_a_delete_whose_first_send_acted_before_a_503_is_done(
        server: EmulatedApiServer, tmp_path: Path, slept: list[float]) -> None:
    # The re-create putting back the pool the apply deleted, a proxy's 503 after the API
    # server made it: sent again, 409 AlreadyExists, and the undo was reported failed
    # (RollbackError, "may be half-changed") with the pool back as it was. The pool
    # found is read: k3snet's own, it is the undo done.

    before: dict[str, Any] = {}

    def proxy(api: Any) -> None:
        stored = server.get(CRD, "k3snet-pods-a")
        assert stored is not None
        before.update(stored)
        behind.append(_acted_then_unavailable(api, "POST", skip=1))

    behind: list[list[int]] = []
    error = _calico_apply_failing_after_a_delete(server, tmp_path, proxy)
    assert behind[0][0] < 300  # the first send of the re-create acted
    assert not isinstance(error, RollbackError), error
    assert "may be half-changed" not in str(error), error
    assert slept == [1.0]
    back = server.get(CRD, "k3snet-pods-a")
    assert back is not None
    assert back["spec"] == before["spec"]
    assert back["metadata"]["labels"] == before["metadata"]["labels"]


def test_calicos_undo_of_a_delete_leaves_a_pool_someone_else_made_meanwhile_failed(
        server: EmulatedApiServer, tmp_path: Path, slept: list[float]) -> None:
    # Another writer's pool of that name, the same spec but not k3snet's labels, made
    # between the delete and its undo: the 409 is not taken for k3snet's pool put back.

    def someone_makes(api: Any) -> None:
        real = api.rest_client.pool_manager.request
        posts = 0

        def request(verb: str, url: str, **kwargs: Any) -> Any:
            nonlocal posts
            if verb == "POST":
                posts += 1
                if posts == 2:  # the re-create: someone made the pool just before
                    server.put(CRD, {"apiVersion": "crd.projectcalico.org/v1",
                                     "kind": "IPPool", "metadata": {"name": "k3snet-pods-a"},
                                     "spec": dict(spec)})
            return real(verb, url, **kwargs)

        stored = server.get(CRD, "k3snet-pods-a")
        assert stored is not None
        spec = stored["spec"]
        api.rest_client.pool_manager.request = request

    error = _calico_apply_failing_after_a_delete(server, tmp_path, someone_makes)
    assert isinstance(error, RollbackError), error
    assert "re-create IPPool k3snet-pods-a" in str(error), error
    theirs = server.get(CRD, "k3snet-pods-a")
    assert theirs is not None
    assert "labels" not in theirs["metadata"], theirs


# ------------------------------------------------------------------ Cilium's undos


def _cilium(server: EmulatedApiServer, api: Any) -> Any:

    server.put("v1/configmaps", _cilium_config())
    return CiliumBackend(api_client=api, timeout=10.0, allow_disruptive=True)


def _cilium_wanted() -> Any:

    # (Cilium's ip-masq-agent runs only with eBPF masquerading.)
    return CiliumConfig(CILIUM_DEFAULT_TARGET, settings={
        "enable-bpf-masquerade": "true", "enable-ip-masq-agent": "true"},
        ip_masq_agent={"nonMasqueradeCIDRs": ["10.0.0.0/8"]})


def test_cilium_deleting_its_ip_masq_agent_configmap_acted_before_a_503_is_done(
        server: EmulatedApiServer, tmp_path: Path, slept: list[float]) -> None:
    # The removal's delete of the ip-masq-agent ConfigMap k3snet created (naming the
    # resourceVersion read), a proxy's 503 after the API server deleted it: sent again,
    # 404, and the apply failed and undid the cilium-config part, k3snet's keys written
    # again beside a ConfigMap gone. None there is the delete done.

    with _api_client(tmp_path, server) as api:
        backend = _cilium(server, api)
        backend.apply(plan(backend.observe(), State(owned=[_cilium_wanted()])))
        assert server.get("v1/configmaps", "ip-masq-agent", "kube-system") is not None
        behind = _acted_then_unavailable(api, "DELETE")
        backend.apply(plan(backend.observe(), State()))
    assert behind[0] < 300  # the first send acted
    assert slept == [1.0]
    assert server.get("v1/configmaps", "ip-masq-agent", "kube-system") is None
    config = server.get("v1/configmaps", "cilium-config", "kube-system")
    assert config is not None
    assert config["data"] == HELM_K3S_DATA


def test_ciliums_undo_of_its_cilium_config_patch_acted_before_a_503_is_done(
        server: EmulatedApiServer, tmp_path: Path, slept: list[float]) -> None:
    # The ip-masq-agent ConfigMap's create fails: the merge patch putting cilium-config's
    # keys back (naming the version k3snet wrote) acted before a proxy's 503; sent again,
    # 409, and the undo was reported failed though cilium-config was as found. Read
    # back, it is the undo done.

    with _api_client(tmp_path, server) as api:
        backend = _cilium(server, api)
        changes = plan(backend.observe(), State(owned=[_cilium_wanted()]))
        server.fail(500, method="POST", plural="configmaps")
        behind = _acted_then_unavailable(api, "PATCH", skip=1)
        with pytest.raises(ApplyError) as info:
            backend.apply(changes)
    assert behind[0] < 300  # the undo's first send acted
    assert not isinstance(info.value, RollbackError), info.value
    assert slept == [1.0]
    config = server.get("v1/configmaps", "cilium-config", "kube-system")
    assert config is not None
    assert config["data"] == HELM_K3S_DATA


def test_ciliums_undo_of_its_cilium_config_patch_leaves_helms_change_meanwhile(
        server: EmulatedApiServer, tmp_path: Path, slept: list[float]) -> None:
    # Helm sets one of k3snet's keys between k3snet's patch and its undo: the undo names
    # the version k3snet wrote (409), and Helm's value stays; the undo says it failed.

    with _api_client(tmp_path, server) as api:
        backend = _cilium(server, api)
        changes = plan(backend.observe(), State(owned=[_cilium_wanted()]))
        server.fail(500, method="POST", plural="configmaps")
        real = api.rest_client.pool_manager.request

        def request(verb: str, url: str, **kwargs: Any) -> Any:
            if verb == "POST":  # the create about to fail: Helm upgrades meanwhile
                config = server.get("v1/configmaps", "cilium-config", "kube-system")
                assert config is not None
                config["data"]["enable-ip-masq-agent"] = "false"
                server.put("v1/configmaps", config)
            return real(verb, url, **kwargs)

        api.rest_client.pool_manager.request = request
        with pytest.raises(ApplyError) as info:
            backend.apply(changes)
    assert isinstance(info.value, RollbackError), info.value
    config = server.get("v1/configmaps", "cilium-config", "kube-system")
    assert config is not None
    assert config["data"]["enable-ip-masq-agent"] == "false"
    assert slept == []


# ------------------------------------------------------------------ an interrupted apply


def _interrupted_at_the_first(api: Any, method: str) -> None:
    """End the command (SIGTERM's ``SystemExit(143)`` in ``k3snet apply``) as the first
    ``method`` request is about to be sent."""
    real = api.rest_client.pool_manager.request

    def request(verb: str, url: str, **kwargs: Any) -> Any:
        if verb == method:
            api.rest_client.pool_manager.request = real
            raise SystemExit(143)
        return real(verb, url, **kwargs)

    api.rest_client.pool_manager.request = request


def test_calico_apply_interrupted_takes_back_the_pools_it_created(
        server: EmulatedApiServer, tmp_path: Path, slept: list[float]) -> None:
    # SIGTERM between two creates: the first pool stayed (only a KubeApiError undid
    # anything), and `k3snet apply` exited 143 saying it had taken back what it made.

    with _api_client(tmp_path, server) as api:
        backend = _calico(api)
        changes = plan(backend.observe(), State(owned=[
            IPPool("k3snet-pods-a", "10.100.0.0/16", nat_outgoing=True),
            IPPool("k3snet-pods-b", "10.101.0.0/24", nat_outgoing=True)]))
        real = api.rest_client.pool_manager.request

        def request(verb: str, url: str, **kwargs: Any) -> Any:
            if verb == "POST" and server.get(CRD, "k3snet-pods-a") is not None:
                api.rest_client.pool_manager.request = real
                raise SystemExit(143)  # the second create about to be sent
            return real(verb, url, **kwargs)

        api.rest_client.pool_manager.request = request
        with pytest.raises(SystemExit):
            backend.apply(changes)
    assert server.get(CRD, "k3snet-pods-a") is None
    assert server.get(CRD, "k3snet-pods-b") is None


def test_cilium_apply_interrupted_at_its_second_write_takes_the_first_back(
        server: EmulatedApiServer, tmp_path: Path, slept: list[float]) -> None:
    # SIGTERM as the ip-masq-agent ConfigMap is created: cilium-config kept k3snet's
    # keys (eBPF masquerading and the ip-masq-agent on, its ConfigMap missing).

    with _api_client(tmp_path, server) as api:
        backend = _cilium(server, api)
        changes = plan(backend.observe(), State(owned=[_cilium_wanted()]))
        _interrupted_at_the_first(api, "POST")
        with pytest.raises(SystemExit):
            backend.apply(changes)
    config = server.get("v1/configmaps", "cilium-config", "kube-system")
    assert config is not None
    assert config["data"] == HELM_K3S_DATA
    assert server.get("v1/configmaps", "ip-masq-agent", "kube-system") is None


def test_the_undo_after_sigterm_stays_within_its_deadline_and_lists_what_is_left(
        server: EmulatedApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `k3snet apply` stopped by systemd as it creates the fifth of five pools, the API
    # server answering every DELETE 429 (Retry-After: 5): each delete of the undo waited
    # 25 s (5 waits of 5 s), 100 s for four, past systemd's 90 s stop timeout whose
    # SIGKILL cut the undo silently. Within UNDO_AFTER_SIGTERM now; the deletes given up
    # are the RollbackError's. The clock is the waits' own: nothing is timed.


    if threading.current_thread() is not threading.main_thread():
        pytest.skip("the tests run outside the main thread: SIGTERM would end the run")
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    monkeypatch.setattr(cli, "_clock", lambda: now[0], raising=False)
    names = [f"k3snet-pods-{n}" for n in "abcde"]
    with _api_client(tmp_path, server) as api:
        backend = _calico(api)
        changes = plan(backend.observe(), State(owned=[
            IPPool(name, f"10.{100 + i}.0.0/16", nat_outgoing=True)
            for i, name in enumerate(names)]))
        server.fail(429, method="DELETE", times=None, retry_after=5)
        real = api.rest_client.pool_manager.request

        def request(verb: str, url: str, **kwargs: Any) -> Any:
            if verb == "POST" and all(server.get(CRD, n) for n in names[:4]):
                api.rest_client.pool_manager.request = real
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(10)  # the handler raises within this; a bound, not a timing
                raise AssertionError("SIGTERM did not interrupt the apply")
            return real(verb, url, **kwargs)

        api.rest_client.pool_manager.request = request
        with pytest.raises(RollbackError) as info, \
                throttle_waits(attrs.evolve(THROTTLE_WAITS, sleep=sleep)), cli.sigterm_undoes():
            backend.apply(changes)
    assert isinstance(info.value.__cause__, SystemExit)
    assert sum(slept) < 90, slept  # systemd's stop timeout (TimeoutStopSec) not reached
    assert slept == [5.0] * 14  # 25 s, 25 s, 20 s: the last delete none
    for name in names[:4]:
        assert f"delete IPPool {name} (created)" in str(info.value), info.value
        assert server.get(CRD, name) is not None  # left undone, and said so


@pytest.mark.parametrize("first", [signal.SIGINT, signal.SIGHUP])
def test_a_sigterm_in_the_undo_after_sighup_or_ctrl_c_bounds_it_by_the_sigterm_deadline(
        server: EmulatedApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        first: signal.Signals) -> None:
    # The SSH session of `k3snet apply` drops (SIGHUP), or Ctrl-C is pressed, as it
    # creates the fifth of five pools, every DELETE answered 429; logind then stops the
    # session's scope (SIGTERM, SIGKILL 90 s later) as the undo's first delete is sent.
    # That SIGTERM was ignored after SIGHUP (it stopped the undo after Ctrl-C): the undo
    # went on bounded per request alone (100 s of waits), and the SIGKILL cut it,
    # nothing said. It bounds the undo from then on, as SIGTERM's own does.
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("the tests run outside the main thread: SIGHUP would end the run")
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    monkeypatch.setattr(cli, "_clock", lambda: now[0], raising=False)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGHUP)}
    signal.signal(signal.SIGINT, signal.default_int_handler)  # (a runner may set its own)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)  # (a runner may ignore it)
    names = [f"k3snet-pods-{n}" for n in "abcde"]
    try:
        with _api_client(tmp_path, server) as api:
            backend = _calico(api)
            changes = plan(backend.observe(), State(owned=[
                IPPool(name, f"10.{100 + i}.0.0/16", nat_outgoing=True)
                for i, name in enumerate(names)]))
            server.fail(429, method="DELETE", times=None, retry_after=5)
            real = api.rest_client.pool_manager.request
            sent: list[int] = []

            def request(verb: str, url: str, **kwargs: Any) -> Any:
                if verb == "POST" and all(server.get(CRD, n) for n in names[:4]):
                    os.kill(os.getpid(), first)
                    time.sleep(10)  # the handler raises within this; a bound, not a timing
                    raise AssertionError(f"{first!r} did not interrupt the apply")
                if verb == "DELETE" and not sent:
                    sent.append(signal.SIGTERM)
                    os.kill(os.getpid(), signal.SIGTERM)  # its handler returns
                return real(verb, url, **kwargs)

            api.rest_client.pool_manager.request = request
            with pytest.raises(RollbackError) as info, \
                    throttle_waits(attrs.evolve(THROTTLE_WAITS, sleep=sleep)), \
                    cli.sigterm_undoes():
                backend.apply(changes)
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    cause = info.value.__cause__
    if first == signal.SIGHUP:
        assert isinstance(cause, SystemExit)
        assert cause.code == cli.EXIT_HANGUP
    else:
        assert isinstance(cause, KeyboardInterrupt)
    assert "may be half-undone" not in str(info.value), info.value  # not stopped
    assert sum(slept) <= cli.UNDO_AFTER_SIGTERM, slept  # systemd's SIGKILL not reached
    left = [n for n in names[:4] if f"delete IPPool {n} (created)" in str(info.value)]
    assert left, info.value
    for name in left:
        assert server.get(CRD, name) is not None  # left undone, and said so


@pytest.mark.parametrize("then", [signal.SIGHUP, signal.SIGTERM])
def test_sighup_or_sigterm_in_the_undo_after_ctrl_c_lets_it_run_on(
        server: EmulatedApiServer, tmp_path: Path, then: signal.Signals) -> None:
    # Ctrl-C as `k3snet apply` creates the fifth of five pools; the terminal is closed
    # (SIGHUP), or systemd stops the scope (SIGTERM), as the undo sends its first delete.
    # Either ended the undo there: four pools left, said to a terminal gone. SIGHUP now
    # lets it run on, SIGTERM bounds it (75 s): every pool is taken back.
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("the tests run outside the main thread: the signals would end the run")
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGHUP)}
    signal.signal(signal.SIGINT, signal.default_int_handler)  # (a runner may set its own)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    names = [f"k3snet-pods-{n}" for n in "abcde"]
    try:
        with _api_client(tmp_path, server) as api:
            backend = _calico(api)
            changes = plan(backend.observe(), State(owned=[
                IPPool(name, f"10.{100 + i}.0.0/16", nat_outgoing=True)
                for i, name in enumerate(names)]))
            real = api.rest_client.pool_manager.request
            sent: list[int] = []

            def request(verb: str, url: str, **kwargs: Any) -> Any:
                if verb == "POST" and all(server.get(CRD, n) for n in names[:4]):
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(10)  # the handler raises within this; a bound, not a timing
                    raise AssertionError("SIGINT did not interrupt the apply")
                if verb == "DELETE" and not sent:
                    sent.append(then)
                    os.kill(os.getpid(), then)  # its handler returns
                return real(verb, url, **kwargs)

            api.rest_client.pool_manager.request = request
            with pytest.raises(KeyboardInterrupt), cli.sigterm_undoes():
                backend.apply(changes)
            assert sent == [then]
            assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # given back
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    for name in names:
        assert server.get(CRD, name) is None, name


def test_calicos_undo_of_a_delete_leaves_the_same_pool_another_manager_made_failed(
        server: EmulatedApiServer, tmp_path: Path, slept: list[float]) -> None:
    # The admin re-created the pool from k3snet's own YAML (its spec, k3snet's labels)
    # between the delete and its undo, with kubectl: only its managedFields tell it from
    # k3snet's put back, and the undo is said failed, the pool theirs.

    def admin_makes(api: Any) -> None:
        real = api.rest_client.pool_manager.request
        posts = 0

        def request(verb: str, url: str, **kwargs: Any) -> Any:
            nonlocal posts
            if verb == "POST":
                posts += 1
                if posts == 2:  # the re-create: the admin sent the same body just before
                    assert "fieldManager=k3snet" in url, url
                    made = real(verb, url.replace("fieldManager=k3snet",
                                                  "fieldManager=kubectl-create"), **kwargs)
                    assert made.status == 201, made.status
            return real(verb, url, **kwargs)

        api.rest_client.pool_manager.request = request

    error = _calico_apply_failing_after_a_delete(server, tmp_path, admin_makes)
    assert isinstance(error, RollbackError), error
    assert "re-create IPPool k3snet-pods-a" in str(error), error
    theirs = server.get(CRD, "k3snet-pods-a")
    assert theirs is not None
    assert [e["manager"] for e in theirs["metadata"]["managedFields"]] == ["kubectl-create"]


def test_calico_apply_interrupted_as_a_create_acted_takes_that_pool_back(
        server: EmulatedApiServer, tmp_path: Path, slept: list[float]) -> None:
    # SIGTERM while the create's answer was awaited (or in the wait after a 503 that
    # followed it): the API server made the pool, the apply never recorded it, and
    # `k3snet apply` exited 143 saying it had taken back what it made, the pool left.

    with _api_client(tmp_path, server) as api:
        backend = _calico(api)
        changes = plan(backend.observe(), State(owned=[
            IPPool("k3snet-pods-a", "10.100.0.0/16", nat_outgoing=True)]))
        real = api.rest_client.pool_manager.request

        def request(verb: str, url: str, **kwargs: Any) -> Any:
            if verb == "POST":
                api.rest_client.pool_manager.request = real
                real(verb, url, **kwargs)
                raise SystemExit(143)  # the answer never read
            return real(verb, url, **kwargs)

        api.rest_client.pool_manager.request = request
        with pytest.raises(SystemExit):
            backend.apply(changes)
    assert server.get(CRD, "k3snet-pods-a") is None


def test_calico_apply_interrupted_as_a_create_acted_leaves_someone_elses_pool(
        server: EmulatedApiServer, tmp_path: Path, slept: list[float]) -> None:
    # The create interrupted did not act (the admin's pool of that name came first): the
    # undo reads the pool, not k3snet's, and leaves it.

    with _api_client(tmp_path, server) as api:
        backend = _calico(api)
        changes = plan(backend.observe(), State(owned=[
            IPPool("k3snet-pods-a", "10.100.0.0/16", nat_outgoing=True)]))
        real = api.rest_client.pool_manager.request

        def request(verb: str, url: str, **kwargs: Any) -> Any:
            if verb == "POST":
                api.rest_client.pool_manager.request = real
                real(verb, url.replace("fieldManager=k3snet", "fieldManager=kubectl-create"),
                     **kwargs)
                raise SystemExit(143)
            return real(verb, url, **kwargs)

        api.rest_client.pool_manager.request = request
        with pytest.raises(SystemExit):
            backend.apply(changes)
    theirs = server.get(CRD, "k3snet-pods-a")
    assert theirs is not None
    assert [e["manager"] for e in theirs["metadata"]["managedFields"]] == ["kubectl-create"]


@pytest.mark.parametrize("acted", [True, False])
def test_calico_apply_interrupted_as_a_delete_was_sent_leaves_the_pool_as_it_was(
        server: EmulatedApiServer, tmp_path: Path, slept: list[float], acted: bool) -> None:
    # SIGTERM while the delete's answer was awaited: when the API server had deleted the
    # pool, nothing put it back (its undo was recorded only with the answer), and
    # `k3snet apply` exited 143 saying it had taken back what it made.

    with _api_client(tmp_path, server) as api:
        backend = _calico(api, allow_disruptive=True)
        backend.apply(plan(backend.observe(), State(owned=[
            IPPool("k3snet-pods-a", "10.100.0.0/16", nat_outgoing=True)])))
        before = server.get(CRD, "k3snet-pods-a")
        assert before is not None
        changes = plan(backend.observe(), State(owned=[]))
        real = api.rest_client.pool_manager.request

        def request(verb: str, url: str, **kwargs: Any) -> Any:
            if verb == "DELETE":
                api.rest_client.pool_manager.request = real
                if acted:
                    real(verb, url, **kwargs)
                raise SystemExit(143)  # the answer never read
            return real(verb, url, **kwargs)

        api.rest_client.pool_manager.request = request
        with pytest.raises(SystemExit):
            backend.apply(changes)
    back = server.get(CRD, "k3snet-pods-a")
    assert back is not None
    assert back["spec"] == before["spec"]
    assert back["metadata"]["labels"] == before["metadata"]["labels"]
    if not acted:
        assert back["metadata"]["uid"] == before["metadata"]["uid"]


@pytest.mark.parametrize("method", ["PATCH", "POST"])
def test_cilium_apply_interrupted_as_a_write_acted_takes_it_back(
        server: EmulatedApiServer, tmp_path: Path, slept: list[float], method: str) -> None:
    # SIGTERM while a write's answer was awaited (or in the wait after a 503 that
    # followed it): cilium-config's keys written (PATCH), or the ip-masq-agent ConfigMap
    # created (POST), stayed, its undo recorded only with the answer, and `k3snet apply`
    # exited 143 saying it had taken back what it made.

    with _api_client(tmp_path, server) as api:
        backend = _cilium(server, api)
        changes = plan(backend.observe(), State(owned=[_cilium_wanted()]))
        real = api.rest_client.pool_manager.request

        def request(verb: str, url: str, **kwargs: Any) -> Any:
            if verb == method:
                api.rest_client.pool_manager.request = real
                answer = real(verb, url, **kwargs)
                assert answer.status < 300, answer.status
                raise SystemExit(143)  # the answer never read
            return real(verb, url, **kwargs)

        api.rest_client.pool_manager.request = request
        with pytest.raises(SystemExit):
            backend.apply(changes)
    config = server.get("v1/configmaps", "cilium-config", "kube-system")
    assert config is not None
    assert config["data"] == HELM_K3S_DATA
    assert server.get("v1/configmaps", "ip-masq-agent", "kube-system") is None


@pytest.mark.parametrize("acted", [True, False])
def test_calico_apply_interrupted_as_an_apply_was_sent_leaves_the_pool_as_it_was(
        server: EmulatedApiServer, tmp_path: Path, slept: list[float], acted: bool) -> None:
    # SIGTERM while a server-side apply's answer was awaited: the pool kept the new
    # spec, its undo recorded only with the answer.

    with _api_client(tmp_path, server) as api:
        backend = _calico(api)
        backend.apply(plan(backend.observe(), State(owned=[
            IPPool("k3snet-pods-a", "10.100.0.0/16", nat_outgoing=True)])))
        before = server.get(CRD, "k3snet-pods-a")
        assert before is not None
        changes = plan(backend.observe(), State(owned=[
            IPPool("k3snet-pods-a", "10.100.0.0/16", nat_outgoing=False)]))
        real = api.rest_client.pool_manager.request

        def request(verb: str, url: str, **kwargs: Any) -> Any:
            if verb == "PATCH":
                api.rest_client.pool_manager.request = real
                if acted:
                    answer = real(verb, url, **kwargs)
                    assert answer.status < 300, answer.status
                raise SystemExit(143)  # the answer never read
            return real(verb, url, **kwargs)

        api.rest_client.pool_manager.request = request
        with pytest.raises(SystemExit):
            backend.apply(changes)
    back = server.get(CRD, "k3snet-pods-a")
    assert back is not None
    assert back["spec"] == before["spec"]


def _as_calicos_api_server_reads(real: Callable[..., Any], verb: str, url: str,
                                 **kwargs: Any) -> Any:
    """The answer to ``verb url`` as Calico's API server (projectcalico.org/v3) gives it:
    a pool's false fields left out (its Go types' ``omitempty``)."""


    answer = real(verb, url, **kwargs)
    if verb != "GET" or answer.status != 200 or "/ippools/" not in url:
        return answer
    found = json.loads(answer.data)
    spec = found.get("spec") or {}
    found["spec"] = {k: v for k, v in spec.items() if v not in (False, "", 0)}
    return urllib3.HTTPResponse(body=json.dumps(found).encode(), status=200,
                                headers={"Content-Type": "application/json"},
                                preload_content=True)


@pytest.mark.parametrize("nat_outgoing", [False, True])
def test_calico_apply_interrupted_as_a_create_acted_takes_back_a_pool_read_without_its_false_fields(
        server: EmulatedApiServer, tmp_path: Path, slept: list[float], nat_outgoing: bool
        ) -> None:
    # Calico's API server leaves natOutgoing: false, disabled: false and
    # disableBGPExport: false out of the pool it answers (omitempty): compared with the
    # body k3snet sent, which holds them, the pool k3snet made was not its own and was
    # left, exit 143 saying it had been taken back.

    with _api_client(tmp_path, server) as api:
        backend = _calico(api)
        changes = plan(backend.observe(), State(owned=[
            IPPool("k3snet-pods-a", "10.100.0.0/16", nat_outgoing=nat_outgoing)]))
        real = api.rest_client.pool_manager.request

        def request(verb: str, url: str, **kwargs: Any) -> Any:
            if verb == "POST":
                real(verb, url, **kwargs)
                raise SystemExit(143)  # the answer never read
            return _as_calicos_api_server_reads(real, verb, url, **kwargs)

        api.rest_client.pool_manager.request = request
        with pytest.raises(SystemExit):
            backend.apply(changes)
    assert server.get(CRD, "k3snet-pods-a") is None


def test_calico_apply_interrupted_as_an_apply_acted_applies_back_a_pool_read_without_false_fields(
        server: EmulatedApiServer, tmp_path: Path, slept: list[float]) -> None:
    # natOutgoing true -> false, the apply's answer unread: Calico's API server answers
    # the pool read without natOutgoing (false, omitempty), which did not hold the
    # natOutgoing: false sent, and the pool kept the new spec, exit 143 saying it was
    # taken back.

    with _api_client(tmp_path, server) as api:
        backend = _calico(api)
        backend.apply(plan(backend.observe(), State(owned=[
            IPPool("k3snet-pods-a", "10.100.0.0/16", nat_outgoing=True)])))
        before = server.get(CRD, "k3snet-pods-a")
        assert before is not None
        changes = plan(backend.observe(), State(owned=[
            IPPool("k3snet-pods-a", "10.100.0.0/16", nat_outgoing=False)]))
        real = api.rest_client.pool_manager.request
        patched: list[str] = []

        def request(verb: str, url: str, **kwargs: Any) -> Any:
            if verb == "PATCH" and not patched:
                patched.append(url)  # the apply back goes through
                answer = real(verb, url, **kwargs)
                assert answer.status < 300, answer.status
                raise SystemExit(143)  # the answer never read
            return _as_calicos_api_server_reads(real, verb, url, **kwargs)

        api.rest_client.pool_manager.request = request
        with pytest.raises(SystemExit):
            backend.apply(changes)
    back = server.get(CRD, "k3snet-pods-a")
    assert back is not None
    assert back["spec"] == before["spec"]


@pytest.mark.parametrize("acted", [True, False])
def test_cilium_removal_interrupted_as_its_delete_was_sent_leaves_both_configmaps_as_they_were(
        server: EmulatedApiServer, tmp_path: Path, slept: list[float], acted: bool) -> None:
    # SIGTERM while the delete of the ip-masq-agent ConfigMap k3snet created awaited its
    # answer: cilium-config's keys were written back (the first write taken back), the
    # ConfigMap left deleted, and `k3snet apply` exited 143 saying it had taken back
    # what it made: Cilium's ip-masq-agent on, its ConfigMap gone.

    with _api_client(tmp_path, server) as api:
        backend = _cilium(server, api)
        backend.apply(plan(backend.observe(), State(owned=[_cilium_wanted()])))
        config_before = server.get("v1/configmaps", "cilium-config", "kube-system")
        agent_before = server.get("v1/configmaps", "ip-masq-agent", "kube-system")
        assert config_before is not None and agent_before is not None  # noqa: PT018
        changes = plan(backend.observe(), State())
        real = api.rest_client.pool_manager.request

        def request(verb: str, url: str, **kwargs: Any) -> Any:
            if verb == "DELETE":
                api.rest_client.pool_manager.request = real
                if acted:
                    answer = real(verb, url, **kwargs)
                    assert answer.status < 300, answer.status
                raise SystemExit(143)  # the answer never read
            return real(verb, url, **kwargs)

        api.rest_client.pool_manager.request = request
        with pytest.raises(SystemExit):
            backend.apply(changes)
    config = server.get("v1/configmaps", "cilium-config", "kube-system")
    agent = server.get("v1/configmaps", "ip-masq-agent", "kube-system")
    assert config is not None and agent is not None  # noqa: PT018
    assert config["data"] == config_before["data"]
    assert agent["data"] == agent_before["data"]
    assert agent["metadata"]["annotations"] == agent_before["metadata"]["annotations"]


def test_calico_apply_interrupted_as_a_create_acted_whose_read_back_is_refused_says_it_may_be_left(
        server: EmulatedApiServer, tmp_path: Path, slept: list[float]) -> None:
    # The undo's read refused (403): nothing can tell whether the create was made; the
    # pool may be there, and a RollbackError (exit 5) says so, not exit 143's "taken back".


    with _api_client(tmp_path, server) as api:
        backend = _calico(api)
        changes = plan(backend.observe(), State(owned=[
            IPPool("k3snet-pods-a", "10.100.0.0/16", nat_outgoing=True)]))
        real = api.rest_client.pool_manager.request
        posted: list[str] = []

        def request(verb: str, url: str, **kwargs: Any) -> Any:
            if verb == "POST":
                posted.append(url)
                real(verb, url, **kwargs)
                raise SystemExit(143)  # the answer never read
            if verb == "GET" and posted:
                return urllib3.HTTPResponse(
                    body=b'{"kind":"Status","apiVersion":"v1","status":"Failure",'
                         b'"reason":"Forbidden","code":403}', status=403,
                    headers={"Content-Type": "application/json"}, preload_content=True)
            return real(verb, url, **kwargs)

        api.rest_client.pool_manager.request = request
        with pytest.raises(RollbackError) as caught:
            backend.apply(changes)
    assert isinstance(caught.value.__cause__, SystemExit)
    assert "delete IPPool k3snet-pods-a (created, its answer unread)" in str(caught.value)
    assert server.get(CRD, "k3snet-pods-a") is not None


def test_calico_apply_interrupted_before_it_acted_never_reads_an_absent_field_as_a_sent_true(
        server: EmulatedApiServer, tmp_path: Path, slept: list[float]) -> None:
    # natOutgoing false -> true, interrupted before the apply reached the server: the pool
    # read back has no natOutgoing (false, omitempty on Calico's API server). An absent
    # field holds only a sent false ("", 0): read as the true sent, the pool was taken
    # for the one the apply made and an apply back sent over what is there (another
    # writer's field a 409, their edit since under k3snet's field manager).

    api, _ = make_api_client(kubeconfig=str(_kubeconfig(tmp_path, server)))
    try:
        backend = CalicoBackend(api_client=api, api="crd", timeout=10.0)
        backend.apply(plan(backend.observe(), State(owned=[
            IPPool("k3snet-pods-a", "10.100.0.0/16", nat_outgoing=False)])))
        before = server.get(CRD, "k3snet-pods-a")
        assert before is not None
        changes = plan(backend.observe(), State(owned=[
            IPPool("k3snet-pods-a", "10.100.0.0/16", nat_outgoing=True)]))
        real = api.rest_client.pool_manager.request
        patches: list[str] = []

        def request(verb: str, url: str, **kwargs: Any) -> Any:
            if verb == "PATCH":
                patches.append(url)
                if len(patches) == 1:
                    raise SystemExit(143)  # interrupted before the request was sent
            return _as_calicos_api_server_reads(real, verb, url, **kwargs)

        api.rest_client.pool_manager.request = request
        with pytest.raises(SystemExit):
            backend.apply(changes)
    finally:
        api.close()
    assert len(patches) == 1, patches  # no apply back: the pool read was not the one sent
    back = server.get(CRD, "k3snet-pods-a")
    assert back is not None
    assert back["spec"] == before["spec"]


def test_cilium_removal_interrupted_as_its_delete_acted_leaves_a_configmap_another_made_since(
        server: EmulatedApiServer, tmp_path: Path, slept: list[float]) -> None:
    # The delete of the ip-masq-agent ConfigMap k3snet created went through, its answer
    # unread, and another writer (Helm, an admin) made one of that name since: theirs is
    # read and left as it is, never created over (a 409 said as a failed take-back).

    labels = {"app.kubernetes.io/managed-by": "Helm"}
    theirs: dict[str, Any] = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "ip-masq-agent", "namespace": "kube-system", "labels": labels},
        "data": {"config": "nonMasqueradeCIDRs:\n- 192.168.0.0/16\n"}}
    api, _ = make_api_client(kubeconfig=str(_kubeconfig(tmp_path, server)))
    sent: list[str] = []
    deleted: list[str] = []
    try:
        backend = _cilium(server, api)
        backend.apply(plan(backend.observe(), State(owned=[_cilium_wanted()])))
        changes = plan(backend.observe(), State())
        real = api.rest_client.pool_manager.request

        def request(verb: str, url: str, **kwargs: Any) -> Any:
            if verb == "DELETE" and "/configmaps/ip-masq-agent" in url and not deleted:
                deleted.append(url)
                answer = real(verb, url, **kwargs)
                assert answer.status < 300, answer.status
                server.put("v1/configmaps", theirs)
                raise SystemExit(143)  # the answer never read
            sent.append(f"{verb} {url.split('?', maxsplit=1)[0].rsplit('/', 1)[-1]}")
            return real(verb, url, **kwargs)

        api.rest_client.pool_manager.request = request
        with pytest.raises(SystemExit) as raised:
            backend.apply(changes)
    finally:
        api.close()
    assert type(raised.value) is SystemExit, raised.value
    assert not [verb for verb in sent if verb.startswith("POST")], sent
    agent = server.get("v1/configmaps", "ip-masq-agent", "kube-system")
    assert agent is not None
    assert agent["data"] == theirs["data"]
    assert agent["metadata"].get("labels") == labels


def test_cilium_removal_interrupted_as_its_delete_acted_says_a_configmap_made_before_its_put_back(
        server: EmulatedApiServer, tmp_path: Path, slept: list[float]) -> None:
    # The read-back found the ip-masq-agent ConfigMap gone, and another writer made one
    # of that name before k3snet's create: the 409 is not written over, and is said (a
    # RollbackError): the undo of a step recorded without a change of its own was one
    # problem line per inverse, none, and the CLI's exit 143 said it was taken back.

    theirs: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap",
              "metadata": {"name": "ip-masq-agent", "namespace": "kube-system"},
              "data": {"config": "nonMasqueradeCIDRs:\n- 192.168.0.0/16\n"}}
    api, _ = make_api_client(kubeconfig=str(_kubeconfig(tmp_path, server)))
    deleted: list[str] = []
    try:
        backend = _cilium(server, api)
        backend.apply(plan(backend.observe(), State(owned=[_cilium_wanted()])))
        changes = plan(backend.observe(), State())
        real = api.rest_client.pool_manager.request

        def request(verb: str, url: str, **kwargs: Any) -> Any:
            if verb == "DELETE" and "/configmaps/ip-masq-agent" in url and not deleted:
                deleted.append(url)
                answer = real(verb, url, **kwargs)
                assert answer.status < 300, answer.status
                raise SystemExit(143)  # the answer never read
            answer = real(verb, url, **kwargs)
            if verb == "GET" and deleted and "/configmaps/ip-masq-agent" in url:
                server.put("v1/configmaps", theirs)  # made right after k3snet's read
            return answer

        api.rest_client.pool_manager.request = request
        with pytest.raises(RollbackError) as raised:
            backend.apply(changes)
    finally:
        api.close()
    assert "ip-masq-agent" in str(raised.value), raised.value
    assert isinstance(raised.value.__cause__, SystemExit)
    agent = server.get("v1/configmaps", "ip-masq-agent", "kube-system")
    assert agent is not None
    assert agent["data"] == theirs["data"]


def test_sigterm_in_a_group_as_cilium_sends_a_write_ends_it_as_sigterm_its_writes_taken_back(
        server: EmulatedApiServer, tmp_path: Path) -> None:
    # `k3snet apply` stopped by SIGTERM once Cilium's POST reached the API server, its
    # answer unread: Cilium records that write's undo as the SystemExit goes by, and
    # the record, seeing the group's block stopped by the signal, raised a
    # KeyboardInterrupt in its place: exit 130 "stopped by SIGINT" for systemd's stop.

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("the tests run outside the main thread: SIGTERM would end the run")
    with _api_client(tmp_path, server) as api:
        backend = _cilium(server, api)
        changes = plan(backend.observe(), State(owned=[_cilium_wanted()]))
        real = api.rest_client.pool_manager.request

        def request(verb: str, url: str, **kwargs: Any) -> Any:
            answer = real(verb, url, **kwargs)
            if verb == "POST":
                api.rest_client.pool_manager.request = real
                signal.raise_signal(signal.SIGTERM)  # the CLI's handler raises here
            return answer

        api.rest_client.pool_manager.request = request
        with pytest.raises(SystemExit) as info, cli.sigterm_undoes(), \
                BackendGroup([backend]) as group:
            group.apply(changes)
    assert info.value.code == cli.EXIT_TERMINATED
    config = server.get("v1/configmaps", "cilium-config", "kube-system")
    assert config is not None
    assert config["data"] == HELM_K3S_DATA
    assert server.get("v1/configmaps", "ip-masq-agent", "kube-system") is None
