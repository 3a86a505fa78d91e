"""The Kubernetes classifier of the kit's one error mapper (k3snet.kube.KubeErrors).

Each failure the module documents becomes a ``KubeApiError`` with the documented
message, ``status`` and ``reason``, raised ``from`` the client's exception: first
from the client's own exception values, then end to end against the emulated API
server (the real client's answers).
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from k3snet.backends.kit import translate_errors
from k3snet.errors import ApplyError, BackendError
from k3snet.kube import (
    Deadline,
    KubeApiError,
    KubeErrors,
    list_pages,
    make_api_client,
    requests_within,
    retry_policy,
    selector_matches,
)
from k3snet.testing.kube import EmulatedApiServer
from tests.closing_server import closing_server
from tests.kubeclient import urllib3_sleeps, write_kubeconfig

pytestmark = pytest.mark.cluster

WHERE = "read ConfigMap kube-system/x"


def _api_exception(status: int, reason: str, body: dict[str, Any] | None = None) -> Exception:
    from kubernetes.client.exceptions import ApiException  # noqa: PLC0415 - optional dependency

    exc = ApiException(status=status, reason=reason)
    # bytes, though typed str: k3snet reads a body of either type (kube._status_body)
    exc.body = json.dumps(body).encode() if body is not None else None  # type: ignore[assignment]
    return exc


def _status_body(reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
            "message": message}


def _mapped(exc: BaseException, *, timeout: float | None = 10.0) -> KubeApiError:
    with pytest.raises(KubeApiError) as info, \
            translate_errors(WHERE, classifier=KubeErrors(timeout=timeout)):
        raise exc
    assert info.value.__cause__ is exc
    return info.value


@pytest.mark.parametrize(
    ("status", "http_reason", "body", "message", "reason"),
    [
        (401, "Unauthorized", None,
         "unauthorized (401): the credentials in the kubeconfig or service account token were "
         "refused", "Unauthorized"),
        (403, "Forbidden", _status_body("Forbidden", 'configmaps "x" is forbidden'),
         "forbidden (403): k3snet's account lacks the RBAC permission for this; grant it (see "
         "the ClusterRoles and Roles that k3snet render manifests makes: docs/manifests.md, RBAC): "
         'configmaps "x" is forbidden', "Forbidden"),
        (404, "Not Found", _status_body("NotFound", 'configmaps "x" not found'),
         'not found (404): configmaps "x" not found', "NotFound"),
        (404, "Not Found", None, "not found (404)", "NotFound"),
        (409, "Conflict", _status_body("Conflict", "the object has been modified"),
         "conflict (409): the object was changed by someone else since k3snet read it, or "
         "already exists; nothing was written, observe and plan again: the object has been "
         "modified", "Conflict"),
        (409, "Conflict", _status_body("AlreadyExists", 'configmaps "x" already exists'),
         "conflict (409): the object was changed by someone else since k3snet read it, or "
         "already exists; nothing was written, observe and plan again: configmaps \"x\" "
         "already exists", "AlreadyExists"),
        (422, "Unprocessable Entity", _status_body("Invalid", "data: Invalid value"),
         "rejected as invalid (422): data: Invalid value", "Invalid"),
        (429, "Too Many Requests", None,
         "throttled (429): the API server asks to retry later", "TooManyRequests"),
        (500, "Internal Server Error", _status_body("InternalError", "etcd is down"),
         "the API server failed (500 Internal Server Error): etcd is down", "InternalError"),
        (504, "Gateway Timeout", None, "the API server failed (504 Gateway Timeout)",
         "Timeout"),
        (418, "I'm a teapot", None, "refused (418 I'm a teapot)", None),
    ],
)
def test_each_status_maps_to_the_documented_error(
    status: int, http_reason: str, body: dict[str, Any] | None, message: str,
    reason: str | None,
) -> None:
    error = _mapped(_api_exception(status, http_reason, body))
    assert type(error) is KubeApiError
    assert (str(error), error.status, error.reason) == (f"{WHERE}: {message}", status, reason)


def test_a_reason_that_is_no_status_reason_gives_way_to_the_statuss_own() -> None:
    error = _mapped(_api_exception(404, "Not Found", _status_body("Object Not Found", "gone")))
    assert (str(error), error.reason) == (f"{WHERE}: not found (404): gone", "NotFound")


def test_a_long_server_message_is_shortened_and_unparsable_bodies_quoted() -> None:
    long = _mapped(_api_exception(422, "Unprocessable Entity",
                                  _status_body("Invalid", "x " * 400)))
    assert str(long).endswith("x x...")
    assert len(str(long)) == len(f"{WHERE}: rejected as invalid (422): ") + 300
    exc: Any = _api_exception(403, "Forbidden")
    exc.body = b"<html>no</html>"
    plain = _mapped(exc)
    assert str(plain).endswith("docs/manifests.md, RBAC): <html>no</html>")
    # A body nested deeper than Python's JSON parser goes (a proxy's, in front of the
    # API server) raised a RecursionError out of the error's own translation.
    proxied: Any = _api_exception(502, "Bad Gateway")
    proxied.body = b"[" * 100000 + b"]" * 100000
    deep = _mapped(proxied)
    assert str(deep).startswith(f"{WHERE}: the API server failed (502 Bad Gateway): [[[")
    assert len(str(deep)) < 400
    assert plain.reason == "Forbidden"


def test_no_answer_in_time_is_a_timeout_without_status() -> None:
    import urllib3  # noqa: PLC0415 - a dependency of the kubernetes client

    # No pool (typed ConnectionPool): only the error's class and message are read.
    read = urllib3.exceptions.ReadTimeoutError(
        None, "/api", "Read timed out.")  # type: ignore[arg-type]
    error = _mapped(read, timeout=2.5)
    assert (str(error), error.status, error.reason) == (
        f"{WHERE}: no answer from the API server within 2.5s (timed out; it may or may not "
        "have acted on the request)", None, "Timeout")
    connect = urllib3.exceptions.MaxRetryError(
        None, "/api",  # type: ignore[arg-type]
        urllib3.exceptions.ConnectTimeoutError("connect timed out"))
    error = _mapped(connect, timeout=None)
    assert (str(error), error.status, error.reason) == (
        f"{WHERE}: no answer from the API server (timed out; it may or may not have acted "
        "on the request)", None, "Timeout")


def test_an_unreachable_server_has_neither_status_nor_reason() -> None:
    import urllib3  # noqa: PLC0415 - a dependency of the kubernetes client

    refused = urllib3.exceptions.MaxRetryError(
        None, "/api",  # type: ignore[arg-type]
        urllib3.exceptions.NewConnectionError(None, "Connection refused"))  # type: ignore[arg-type]
    error = _mapped(refused)
    # urllib3 prints the connection (None here) before its message.
    assert str(error) == (f"{WHERE}: cannot reach the API server: NewConnectionError: "
                          "None: Connection refused")
    assert (error.status, error.reason) == (None, None)
    error = _mapped(ConnectionResetError(104, "Connection reset by peer"))
    assert str(error).startswith(f"{WHERE}: cannot reach the API server: ConnectionResetError")
    no_status = _mapped(_api_exception(0, "certificate verify failed"))
    assert str(no_status) == (f"{WHERE}: the request failed before reaching the API server: "
                              "certificate verify failed")
    assert (no_status.status, no_status.reason) == (None, None)


def test_the_error_type_is_the_callers_and_other_exceptions_pass() -> None:
    class WriteError(KubeApiError, ApplyError):
        def __init__(self, message: str, *, status: int | None = None,
                     reason: str | None = None) -> None:
            ApplyError.__init__(self, f"{message}; nothing was changed")
            self.status, self.reason = status, reason

    with pytest.raises(WriteError, match=r"conflict \(409\).*; nothing was changed$") as info, \
            translate_errors("patch x", classifier=KubeErrors(error=WriteError)):
        raise _api_exception(409, "Conflict", _status_body("Conflict", "modified"))
    assert (info.value.status, info.value.reason) == (409, "Conflict")
    with pytest.raises(KeyError), translate_errors("x", classifier=KubeErrors()):
        raise KeyError("not the client's")
    with pytest.raises(BackendError, match=r"^mine$"), \
            translate_errors("x", classifier=KubeErrors()):
        raise BackendError("mine")


# ---------------------------------------------------------------- the real client, end to end


def _read(api_server: EmulatedApiServer, name: str, timeout: float = 10.0) -> Any:
    from kubernetes import client  # noqa: PLC0415 - optional dependency

    core = client.CoreV1Api(api_server.api_client())
    with translate_errors(f"read ConfigMap kube-system/{name}",
                          classifier=KubeErrors(timeout=timeout)):
        return core.read_namespaced_config_map(name, "kube-system", _request_timeout=timeout)


@pytest.mark.parametrize(
    ("status", "reason", "words"),
    [(403, "Forbidden", "forbidden (403)"), (404, "NotFound", "not found (404)"),
     (409, "Conflict", "conflict (409)"), (422, "Invalid", "rejected as invalid (422)")],
)
def test_the_emulated_api_servers_answers_map_to_the_documented_error(
    api_server: EmulatedApiServer, status: int, reason: str, words: str,
) -> None:
    api_server.fail(status, method="GET", plural="configmaps", message="as the server said")
    with pytest.raises(KubeApiError) as info:
        _read(api_server, "x")
    assert (info.value.status, info.value.reason) == (status, reason)
    assert str(info.value).startswith(f"read ConfigMap kube-system/x: {words}")
    assert str(info.value).endswith(": as the server said")


def test_a_missing_object_is_not_found_from_the_server_itself(
    api_server: EmulatedApiServer,
) -> None:
    with pytest.raises(KubeApiError, match=r"^read ConfigMap kube-system/absent: not found "
                                           r"\(404\)") as info:
        _read(api_server, "absent")
    assert (info.value.status, info.value.reason) == (404, "NotFound")


def test_a_request_left_unanswered_is_a_timeout(api_server: EmulatedApiServer) -> None:
    api_server.fail(504, method="GET", plural="configmaps", delay=1.5)
    with pytest.raises(KubeApiError, match=r"no answer from the API server within 0.3s "
                                           r"\(timed out") as info:
        _read(api_server, "x", timeout=0.3)
    assert (info.value.status, info.value.reason) == (None, "Timeout")


def _kubeconfig(tmp_path: Path, port: int) -> Path:
    return write_kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{port}")


def test_a_client_k3snet_makes_sends_a_request_that_timed_out_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An API server that accepts connections and never answers: urllib3's default retries
    # sent the read 4 times, each waiting the whole timeout, so the agent's "10 s" request
    # took 40 s (the spec ConfigMap before each interval's node pass, the Lease's release
    # on SIGTERM, past the pod's grace period). The kernel completes each connection into
    # the listening socket's backlog: counting them needs no accept thread and no timing.
    from kubernetes import client  # noqa: PLC0415 - optional dependency

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        api, owned = make_api_client(kubeconfig=str(_kubeconfig(tmp_path,
                                                                silent.getsockname()[1])))
        assert owned
        try:
            with pytest.raises(KubeApiError, match=r"no answer from the API server within 0\.2s"), \
                    translate_errors("read ConfigMap kube-system/x",
                                     classifier=KubeErrors(timeout=0.2)):
                client.CoreV1Api(api).read_namespaced_config_map(
                    "x", "kube-system", _request_timeout=0.2)
        finally:
            api.close()
        silent.setblocking(False)
        connections = []
        with contextlib.suppress(BlockingIOError):
            while True:
                connections.append(silent.accept()[0])
        for each in connections:
            each.close()
    assert len(connections) == 1


def test_the_retry_policy_retries_a_refused_connection_but_no_timeout() -> None:
    import urllib3  # noqa: PLC0415 - a dependency of the kubernetes client

    policy = retry_policy()
    refused = urllib3.exceptions.NewConnectionError(None, "Connection refused")  # type: ignore[arg-type]
    assert policy.increment("PATCH", "/x", error=refused).total == 2
    for timeout in (urllib3.exceptions.ConnectTimeoutError("connect timed out"),
                    urllib3.exceptions.ReadTimeoutError(None, "/x", "read timed out")):  # type: ignore[arg-type]
        with pytest.raises(urllib3.exceptions.MaxRetryError) as info:
            policy.increment("GET", "/x", error=timeout)
        assert info.value.reason is timeout


def test_the_retry_policy_retries_nothing_within_a_deadline() -> None:
    # After SIGTERM (requests_within) each try of a GET whose connection was closed or
    # reset before its answer waited what was left when the request began, 4 tries in
    # all: past the grace deadline. Outside a deadline a reset is still tried again.
    import urllib3  # noqa: PLC0415 - a dependency of the kubernetes client

    policy = retry_policy()
    errors = (urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError()),
              urllib3.exceptions.NewConnectionError(None, "Connection refused"))  # type: ignore[arg-type]
    for error in errors:
        assert policy.increment("GET", "/x", error=error).total == 2
        with requests_within(lambda: None):  # no deadline yet: as outside
            assert policy.increment("GET", "/x", error=error).total == 2
        with requests_within(lambda: Deadline(1e9, lambda: 0.0)), \
                pytest.raises(urllib3.exceptions.MaxRetryError) as info:
            policy.increment("GET", "/x", error=error)
        assert info.value.reason is error


def test_a_request_within_a_deadline_whose_connection_closes_unanswered_is_sent_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A server (a load balancer with no backend left) that reads the request and closes
    # the connection without an answer: the GET was sent 4 times, each try waiting what
    # was left of the deadline when the request began. Within a deadline: once.
    from kubernetes import client  # noqa: PLC0415 - optional dependency

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with closing_server() as (port, accepted):
        api, _ = make_api_client(kubeconfig=str(_kubeconfig(tmp_path, port)))
        core: Any = client.CoreV1Api(api)
        try:
            for deadline, sent in ((None, 4), (Deadline(1e9, lambda: 0.0), 1)):
                del accepted[:]
                def within(d: Deadline | None = deadline) -> Deadline | None:
                    return d

                with requests_within(within), pytest.raises(KubeApiError), \
                        translate_errors(WHERE, classifier=KubeErrors(timeout=10.0)):
                    core.read_namespaced_config_map("x", "kube-system", _request_timeout=10)
                assert len(accepted) == sent, deadline
        finally:
            api.close()


class _Rest:
    """A client's REST layer recording the timeout each request reaches it with."""

    def __init__(self) -> None:
        self.timeouts: list[Any] = []

    def request(self, method: str, url: str, **kwargs: Any) -> None:
        self.timeouts.append(kwargs.get("_request_timeout"))


class _Client:
    def __init__(self) -> None:
        self.rest_client = _Rest()


@pytest.mark.parametrize(("given", "cut"), [(10, 2.0), (1.5, 1.5), (None, 2.0),
                                            ((3, 30), (2.0, 2.0)), ((1, None), (1, 2.0))])
def test_requests_within_a_deadline_wait_at_most_what_is_left_and_others_as_given(
        given: Any, cut: Any) -> None:
    client = _Client()
    rest = client.rest_client
    assert make_api_client(client) == (client, False)
    assert make_api_client(client) == (client, False)  # bound once, not twice
    now = [100.0]
    deadline: list[Deadline | None] = [None]
    rest.request("GET", "/x", _request_timeout=given)
    with requests_within(lambda: deadline[0]):
        rest.request("GET", "/x", _request_timeout=given)  # no deadline yet (no SIGTERM)
        deadline[0] = Deadline(110.0, lambda: now[0])
        now[0] = 108.0
        rest.request("GET", "/x", _request_timeout=given)
        now[0] = 111.0  # over: the least timeout, never none (0 is none to the client)
        rest.request("GET", "/x", _request_timeout=given)
    rest.request("GET", "/x", _request_timeout=given)
    assert rest.timeouts[:2] == [given, given]
    assert rest.timeouts[2] == cut
    assert rest.timeouts[3] == (0.001 if not isinstance(given, tuple) else (0.001, 0.001))
    assert rest.timeouts[4] == given


class _SlowRest(_Rest):
    """A REST layer whose every request times out."""

    def request(self, method: str, url: str, **kwargs: Any) -> None:
        import urllib3  # noqa: PLC0415 - a dependency of the kubernetes client

        super().request(method, url, **kwargs)
        raise urllib3.exceptions.ReadTimeoutError(None, url, "Read timed out.")  # type: ignore[arg-type]


def test_a_request_timing_out_after_its_timeout_was_cut_to_the_grace_period_says_so() -> None:
    client = _Client()
    client.rest_client = _SlowRest()
    make_api_client(client)
    deadline = Deadline(110.0, lambda: 108.5)

    def read(timeout: Any) -> KubeApiError:
        with pytest.raises(KubeApiError) as info, \
                translate_errors(WHERE, classifier=KubeErrors(timeout=10.0)):
            client.rest_client.request("GET", "/x", _request_timeout=timeout)
        return info.value

    with requests_within(lambda: deadline):
        cut = read(10)
    after = read(10)
    assert str(cut) == (f"{WHERE}: no answer from the API server within 1.5s, its timeout "
                        "cut to what was left of the grace period (timed out; it may or may "
                        "not have acted on the request)")
    assert "within 10s (timed out" in str(after)
    assert client.rest_client.timeouts == [1.5, 10]


# ---------------------------------------------------------------- lists in pages


def _pages(*answers: Any) -> Callable[[dict[str, Any]], Any]:
    asked: list[dict[str, Any]] = []

    def fetch(page: dict[str, Any]) -> Any:
        asked.append(page)
        answer = answers[min(len(asked), len(answers)) - 1]
        if isinstance(answer, BaseException):
            raise answer
        return answer

    fetch.asked = asked  # type: ignore[attr-defined]
    return fetch


def test_list_pages_follows_continue_tokens_until_the_last_page() -> None:
    fetch = _pages({"metadata": {"continue": "a"}, "items": [1, 2]},
                   {"metadata": {"continue": "b"}, "items": [3]},
                   {"metadata": {}, "items": None})
    assert list_pages(fetch, "list X", page=2) == [1, 2, 3]
    assert fetch.asked == [{"limit": 2}, {"limit": 2, "_continue": "a"},  # type: ignore[attr-defined]
                           {"limit": 2, "_continue": "b"}]


def test_list_pages_lists_whole_once_a_continue_token_expired() -> None:
    gone = KubeApiError("list X: gone", status=410, reason="Expired")
    fetch = _pages({"metadata": {"continue": "a"}, "items": [1]}, gone,
                   {"metadata": {}, "items": [1, 2, 3]})
    assert list_pages(fetch, "list X") == [1, 2, 3]
    assert fetch.asked[-1] == {}  # type: ignore[attr-defined]
    # A 410 of the first request is no expired token: it is the caller's to see.
    with pytest.raises(KubeApiError):
        list_pages(_pages(gone), "list X")


def test_list_pages_cached_names_version_0_first_and_again_whole_never_beside_a_token() -> None:
    # resourceVersion=0: from the API server's watch cache; beside a continue token the
    # API server refuses a version other than 0 (400), and the token carries the list's own.
    gone = KubeApiError("list X: gone", status=410, reason="Expired")
    fetch = _pages({"metadata": {"continue": "a"}, "items": [1]}, gone,
                   {"metadata": {}, "items": [1, 2, 3]})
    assert list_pages(fetch, "list X", page=1, cached=True) == [1, 2, 3]
    assert fetch.asked == [{"limit": 1, "resource_version": "0"},  # type: ignore[attr-defined]
                           {"limit": 1, "_continue": "a"}, {"resource_version": "0"}]


@pytest.mark.parametrize("answers", [
    ([1, 2],),
    ({"items": "x"},),
    ({"metadata": {"continue": "a"}, "items": [1]}, {"metadata": {"continue": "a"}, "items": [1]}),
    # A token that is no text: the list goes on, and its first page was taken for all.
    ({"metadata": {"continue": 7}, "items": [1]}, {"metadata": {}, "items": [2]}),
    ({"metadata": {"continue": ["a"]}, "items": [1]}, {"metadata": {}, "items": [2]}),
])
def test_list_pages_refuses_an_answer_that_is_no_list_or_never_ends(
    answers: tuple[Any, ...],
) -> None:
    # A server answering the same token again would be followed for ever.
    with pytest.raises(BackendError, match="list X: "):
        list_pages(_pages(*answers), "list X")


# ---------------------------------------------------------------- label selectors

@pytest.mark.parametrize(("selector", "labels", "selected"), [
    (None, {"a": "b"}, False),  # a nil selector selects nothing
    ({}, {}, True),  # an empty one everything
    ({"matchLabels": {}, "matchExpressions": []}, {"a": "b"}, True),
    ({"matchLabels": {"zone": "edge"}}, {"zone": "edge"}, True),
    ({"matchLabels": {"zone": "edge"}}, {"zone": "core"}, False),
    ({"matchLabels": {"zone": ""}}, {}, False),
    ({"matchLabels": {"zone": ""}}, {"zone": ""}, True),
    ({"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]},
     {"zone": "b"}, True),
    ({"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]}, {}, True),
    ({"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]},
     {"zone": "a"}, False),
    ({"matchExpressions": [{"key": "zone", "operator": "Exists"}]}, {"zone": ""}, True),
    ({"matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]}, {"zone": "a"}, False),
    ({"matchLabels": {"zone": "edge"},
      "matchExpressions": [{"key": "gpu", "operator": "Exists"}]}, {"zone": "edge"}, False),
])
def test_selector_matches_as_apimachinery_matches(
    selector: Any, labels: dict[str, str], selected: bool,
) -> None:
    assert selector_matches(selector, labels) is selected


@pytest.mark.parametrize("selector", [
    "zone=edge",
    {"matchLabels": ["zone"]},
    {"matchLabels": {"zone": 5}},
    {"matchLabels": {"bad key!": "x"}},
    {"matchExpressions": [{"key": "zone", "operator": "Equals", "values": ["a"]}]},
    {"matchExpressions": [{"key": "zone", "operator": "In", "values": []}]},
    {"matchExpressions": [{"key": "zone", "operator": "Exists", "values": ["a"]}]},
    {"matchExpressions": ["zone"]},
    # What JSON cannot decode into a LabelSelector: refused, not read as an empty part
    # (an empty list or text was "no matchLabels", and the selector selected every node)
    # nor a TypeError (an operator that is a list or an object is unhashable).
    {"matchLabels": []},
    {"matchLabels": ""},
    {"matchExpressions": {}},
    {"matchExpressions": [{"key": "zone", "operator": ["In"], "values": ["a"]}]},
    {"matchExpressions": [{"key": "zone", "operator": {"In": 1}, "values": ["a"]}]},
    {"matchExpressions": [{"key": "zone", "operator": None}]},
    {"matchExpressions": [{"key": "zone", "operator": "Exists", "values": ""}]},
    {"matchExpressions": [{"key": "zone", "operator": "Exists", "values": {}}]},
])
def test_selector_matches_refuses_what_apimachinery_refuses(selector: Any) -> None:
    with pytest.raises(ValueError, match="not a label selector"):
        selector_matches(selector, {"zone": "a"})


@pytest.mark.parametrize(("status", "method", "times"), [
    (429, "GET", 1), (429, "GET", None), (503, "GET", None), (429, "PUT", 1),
    (503, "DELETE", 1), (413, "PUT", 1)])
def test_a_client_k3snet_makes_answers_a_request_asked_to_wait_at_once_and_sends_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, status: int, method: str,
    times: int | None,
) -> None:
    # urllib3's Retry (total=3) sent a GET, PUT or DELETE answered 413, 429 or 503 with a
    # Retry-After again after sleeping what it asked (up to 6 hours a try, 3 tries),
    # outside every timeout k3snet set and outside the agent's grace deadline: a node's
    # agent told to stop slept on. Four such answers in a row were "cannot reach the API
    # server: ResponseError" with no status. The answer is the caller's now, with its
    # status and Retry-After; the agent's own loops wait it, bounded. (An hour is more
    # than k3snet's own wait takes, THROTTLE_WAITS: tests/cluster/test_throttled_commands.py.)
    from kubernetes import client  # noqa: PLC0415 - optional dependency (k3snet[kube])

    slept = urllib3_sleeps(monkeypatch)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with EmulatedApiServer() as server:
        server.put("v1/configmaps", {"metadata": {"name": "x", "namespace": "kube-system"},
                                     "data": {"a": "b"}})
        api, owned = make_api_client(kubeconfig=str(_kubeconfig(tmp_path, server.port)))
        assert owned
        core: Any = client.CoreV1Api(api)
        calls: dict[str, Callable[[], Any]] = {
            "GET": lambda: core.read_namespaced_config_map("x", "kube-system"),
            "PUT": lambda: core.replace_namespaced_config_map(
                "x", "kube-system", {"metadata": {"name": "x"}, "data": {"a": "c"}}),
            "DELETE": lambda: core.delete_namespaced_config_map("x", "kube-system")}
        server.fail(status, method=method, plural="configmaps", times=times,
                    retry_after=3600)
        try:
            with pytest.raises(KubeApiError) as info, \
                    translate_errors(WHERE, classifier=KubeErrors(timeout=10.0)):
                calls[method]()
        finally:
            api.close()
        sent = [m for m, path, _ in server.requests() if path.endswith("/configmaps/x")]
    assert (info.value.status, info.value.retry_after) == (status, 3600.0)
    assert slept == []
    assert sent == [method]
