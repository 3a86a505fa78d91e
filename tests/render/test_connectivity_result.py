"""Reading the connectivity test Job's result, with plain stand-ins for the two
Kubernetes APIs (what the client returns: objects with the fields read).

tests/cluster/test_connectivity_job.py runs the same reader against an API
emulator; these cases pin the message for the shapes the emulator does not
make: odd conditions, several pods of one Job, a log without some fields.
"""

from __future__ import annotations

from types import SimpleNamespace as NS  # noqa: N814 - short: the stand-ins nest
from typing import Any

import pytest

pytest.importorskip("kubernetes")

from k3snet.render.manifests import (
    CONNECTIVITY_CONTAINER,
    CONNECTIVITY_JOB_NAME,
    parse_connectivity_log,
    read_connectivity_result,
)

UID = "job-uid-2"


def _condition(type_: str, status: str = "True", reason: str | None = None,
               message: str | None = None) -> NS:
    return NS(type=type_, status=status, reason=reason, message=message)


def _pod(name: str, created: str | None, *, owner: str | None = UID,
         job: str = CONNECTIVITY_JOB_NAME) -> NS:
    refs = None if owner is None else [NS(uid=owner)]
    return NS(metadata=NS(name=name, labels={"job-name": job}, owner_references=refs,
                          creation_timestamp=created))


class Apis:
    """BatchV1Api and CoreV1Api in one: one Job, its pods and their logs."""

    def __init__(self, conditions: list[NS] | None, pods: list[NS], logs: dict[str, str],
                 *, metadata: bool = True, events: list[NS] | Exception | None = None
                 ) -> None:
        self.job = NS(status=NS(conditions=conditions),
                      metadata=NS(uid=UID) if metadata else None)
        self.pods, self.logs = pods, logs
        self.events = [] if events is None else events
        self.selectors: list[str | None] = []

    def list_namespaced_event(self, namespace: str, field_selector: str | None = None,
                              **_: Any) -> NS:
        if isinstance(self.events, Exception):
            raise self.events
        return NS(items=list(self.events))

    def read_namespaced_job(self, name: str, namespace: str, **_: Any) -> NS:
        return self.job

    def list_namespaced_pod(self, namespace: str, label_selector: str | None = None,
                            **_: Any) -> NS:
        self.selectors.append(label_selector)
        return NS(items=list(self.pods))

    def read_namespaced_pod_log(self, name: str, namespace: str, container: Any = None,
                                **_: Any) -> str:
        if container != CONNECTIVITY_CONTAINER:
            return "another container's log\n"
        return self.logs[name]


def _read(apis: Apis) -> tuple[bool | None, str]:
    result = read_connectivity_result(apis, apis, "default")
    return result.succeeded, result.message


WHERE = f"Job default/{CONNECTIVITY_JOB_NAME}"
LOG = "k3snet-connectivity target=10.0.0.1 port=80 ping=ok tcp=ok\n"


def test_the_first_true_condition_decides() -> None:
    apis = Apis([_condition("Failed", "False"), _condition("Complete", reason="Done")],
                [_pod("p", "2026-01-01T00:00:00Z")], {"p": LOG})
    assert _read(apis) == (True, f"connectivity test passed -- {WHERE}: Complete (Done); "
                                 "ping 10.0.0.1: ok; tcp 10.0.0.1:80: ok")


def test_a_failure_without_reason_or_message() -> None:
    apis = Apis([_condition("Failed")], [_pod("p", "2026-01-01T00:00:00Z")],
                {"p": "k3snet-connectivity ping=fail tcp=fail\n"})
    assert _read(apis) == (False, f"connectivity test FAILED -- {WHERE}: Failed; "
                                  "ping ?: fail; tcp ?:-: fail")


def test_the_newest_pod_of_this_job_speaks() -> None:
    pods = [
        _pod("a-old", "2026-01-01T00:00:00Z"),
        _pod("z-no-time", None),
        _pod("b-new", "2026-01-02T00:00:00Z", owner=None),  # no owner recorded: kept
        _pod("c-other-job", "2026-01-03T00:00:00Z", owner="job-uid-1"),
        _pod("d-other-name", "2026-01-04T00:00:00Z", job="other"),
    ]
    logs = {p.metadata.name: f"k3snet-connectivity target={p.metadata.name} ping=ok tcp=skipped\n"
            for p in pods}
    apis = Apis([_condition("Complete", reason="Done", message="all ok")], pods, logs)
    assert _read(apis) == (True, f"connectivity test passed -- {WHERE}: Complete (Done: all ok); "
                                 "ping b-new: ok; tcp: skipped")


def test_the_api_server_lists_only_the_pods_of_the_job() -> None:
    # A namespace may hold thousands of pods: the API server filters them by the Job's
    # label (the reader checks the label again, and the owner).
    apis = Apis([_condition("Complete")], [_pod("p", None)], {"p": LOG})
    _read(apis)
    assert apis.selectors == [f"job-name={CONNECTIVITY_JOB_NAME}"]


def test_a_job_without_metadata_is_read_by_its_name() -> None:
    apis = Apis(None, [_pod("p", None, owner="someone")], {"p": LOG}, metadata=False)
    assert _read(apis) == (None, f"connectivity test pending -- {WHERE}: still running; "
                                 "ping 10.0.0.1: ok; tcp 10.0.0.1:80: ok")


def test_a_value_may_hold_an_equals_sign() -> None:
    assert parse_connectivity_log("k3snet-connectivity target=a=b ping=ok\n") == {
        "target": "a=b", "ping": "ok"}


def _event(message: str, when: str, *, reason: str = "FailedCreate", uid: str = UID,
           name: str = CONNECTIVITY_JOB_NAME) -> NS:
    return NS(reason=reason, message=message, last_timestamp=when, event_time=None,
              involved_object=NS(kind="Job", name=name, uid=uid))


FORBIDDEN = ('Error creating: pods "k3snet-connectivity-x7k2p" is forbidden: violates '
             'PodSecurity "baseline:latest": non-default capabilities (container '
             '"connectivity" must not include "NET_RAW" in securityContext.capabilities.add)')


def test_a_pod_the_api_server_refused_is_named_with_its_reason() -> None:
    # A namespace enforcing Pod Security baseline refuses the test's pod (uid 0, NET_RAW):
    # the Job had no pod, said as "no pod found" for five minutes, then DeadlineExceeded.
    events = [_event("an earlier refusal", "2026-01-01T00:00:00Z"),
              _event(FORBIDDEN, "2026-01-01T00:01:00Z"),
              _event("another Job's", "2026-01-01T00:02:00Z", uid="job-uid-1"),
              _event("another name's", "2026-01-01T00:03:00Z", name="other"),
              _event("Created pod: x", "2026-01-01T00:04:00Z", reason="SuccessfulCreate")]
    apis = Apis(None, [], {}, events=events)
    assert _read(apis) == (None, f"connectivity test pending -- {WHERE}: still running; "
                                 f"no pod found: {FORBIDDEN}")


def test_events_that_cannot_be_read_leave_no_pod_found() -> None:
    from kubernetes.client.exceptions import ApiException  # noqa: PLC0415 - k3snet[kube]

    events: list[NS] | Exception
    for events in ([], ApiException(status=403, reason="Forbidden")):
        apis = Apis([_condition("Failed", reason="DeadlineExceeded")], [], {}, events=events)
        assert _read(apis) == (False, f"connectivity test FAILED -- {WHERE}: Failed "
                                      "(DeadlineExceeded); no pod found")


def test_a_message_written_by_others_is_one_printable_line() -> None:
    # A Job condition's message and a FailedCreate event's (an admission webhook's denial)
    # are anyone's text: a line break forged a "passed" line, ESC reached the terminal.
    hostile = "x\x1b[2K\nconnectivity test passed -- \u202e"
    apis = Apis([_condition("Failed", reason="BackoffLimitExceeded", message=hostile)],
                [], {}, events=[_event(hostile, "2026-01-01T00:00:00Z")])
    succeeded, message = _read(apis)
    assert succeeded is False
    assert message.isprintable(), message
    assert "x\\x1b[2K\\nconnectivity test passed -- \\u202e" in message
