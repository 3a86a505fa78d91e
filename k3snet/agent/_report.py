"""The node's last result where ``kubectl`` shows it: Node annotations and Events.

``k3snet.io/agent-status`` (``ok``, ``failed``, ``spec-refused``) is short enough
for a column (``kubectl get nodes -L`` takes labels only, so use
``-o custom-columns``); ``k3snet.io/agent-result`` holds the details as JSON.
Both are written when the result *changes* (not every pass), and the same values
again every :data:`REASSERT_INTERVAL` seconds while it does not: a Node registered
anew (its annotations gone), an annotation removed by hand or written by another
k3snet on the node (``k3snet agent --once`` run by hand) is then set right within
that time. The same patch again changes nothing in a Node that still holds it (the
API server writes nothing and tells no watcher). Each
change of status also creates an Event on the Node (``kubectl describe node``
lists it; Events expire after an hour, the annotation stays). An Event that
cannot be created (no RBAC for Events: 403) is tried again on later passes
without patching the Node again, after 10, 20, 40 and 80 s (not before the
``Retry-After`` a 429 named, up to :data:`PATCH_RETRY_LIMIT`), then given up
(:data:`EVENT_TRIES`). A Node patch that fails is tried again by a later pass, 10 s
later, then twice as long after each further failure, up to :data:`PATCH_RETRY_LIMIT`,
and not before the ``Retry-After`` its answer named (a 429; up to that limit too) (the
latest result is the one tried). Like the kubelet's own, Events are rate-limited:
a status that flips every pass creates :data:`EVENT_BURST` Events, then one per
:data:`EVENT_INTERVAL` seconds (the annotation follows every change).

The result's message is cut to :data:`MESSAGE_LIMIT` characters (an Event's to
1 024): a first pass at 10 000 destinations applies 20 000 changes, and a Node
annotation listing them all would be megabytes, refused by the API server (256 KiB
for all of a Node's annotations) or sent to every watcher of Nodes. The agent's
log line has the whole message (which names a pass's first
:data:`~k3snet.agent.LOG_ITEMS` changes and counts the rest).
"""

from __future__ import annotations

import datetime
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import attrs

from k3snet._logline import printable_line
from k3snet.backends.kit import translate_errors
from k3snet.kube import (
    DEFAULT_TIMEOUT,
    Deadline,
    KubeApiError,
    KubeErrors,
    requests_within,
    throttle_waits,
)

__all__ = ["EVENT_BURST", "EVENT_INTERVAL", "EVENT_TRIES", "MESSAGE_LIMIT", "PATCH_RETRY_LIMIT",
           "REASSERT_INTERVAL", "RESULT_ANNOTATION", "STATUS_ANNOTATION", "NodeReport",
           "NodeReporter"]

MESSAGE_LIMIT = 2048
"""Characters of a pass's message that the Node annotation carries."""

EVENT_TRIES = 5
"""Tries to create one Event (a status change) before it is given up."""

EVENT_BURST = 25
"""Events (status changes) created in a row before :data:`EVENT_INTERVAL` applies."""

EVENT_INTERVAL = 300.0
"""Seconds per further Event once the burst is spent (client-go's spam filter: 25, 5 min)."""

PATCH_RETRY_LIMIT = 300.0
"""Seconds at most between two tries of a Node patch that keeps failing (10 s after the
first failure, doubled for each next one)."""

REASSERT_INTERVAL = 600.0
"""Seconds after which an unchanged result is written to the Node again (the same values:
a Node that still holds them is not changed)."""

_EVENT_LIMIT = 1024
_EVENT_RETRY = 10.0  # seconds before the second try; doubled for each next one
STATUS_ANNOTATION = "k3snet.io/agent-status"
"""The Node annotation holding the agent's last pass in one word (``ok``, ``failed``,
``spec-refused``; docs/agent.md)."""
RESULT_ANNOTATION = "k3snet.io/agent-result"
"""The Node annotation holding the agent's last pass as a JSON object (docs/agent.md)."""
_EVENT_NAMESPACE = "default"  # where the kubelet puts a Node's events too
_REASONS = {"ok": ("Normal", "K3snetConverged"), "failed": ("Warning", "K3snetSyncFailed"),
            "spec-refused": ("Warning", "K3snetSpecRefused")}

_log = logging.getLogger("k3snet.agent.report")


@attrs.frozen
class NodeReport:
    """What one pass ended with, as the node annotation carries it."""

    status: str
    message: str
    spec_sha256: str | None
    generation: int
    leader: bool
    restart_pending: tuple[str, ...] = ()
    """The CNI workloads (``DaemonSet kube-system/cilium``) whose pods must still restart
    for k3snet's config changes to be in force."""

    def to_dict(self) -> dict[str, Any]:
        """The annotation's JSON fields (plus ``time``, added when written);
        ``restart_pending`` only while some restart is."""
        fields: dict[str, Any] = {
            "status": self.status, "message": shortened(self.message, MESSAGE_LIMIT),
            "spec": self.spec_sha256[:12] if self.spec_sha256 else None,
            "generation": self.generation, "leader": self.leader}
        if self.restart_pending:
            fields["restart_pending"] = list(self.restart_pending)
        return fields


def shortened(message: str, limit: int) -> str:
    """``message`` cut to at most ``limit`` characters (at a ``; `` when one is near).

    What is cut is counted at its end: ``...; ... (N more characters in the agent's log)``.
    """
    if len(message) <= limit:
        return message
    cut = max(0, limit - 64)
    boundary = message.rfind("; ", 0, cut)
    if boundary > cut // 2:
        cut = boundary
    return f"{message[:cut]}; ... ({len(message) - cut} more characters in the agent's log)"


def event_name(node: str, suffix: str) -> str:
    """``NODE.k3snet.SUFFIX``, the node's part cut so that the name stays a valid one
    (at most 253 characters: a node's name may be 253 on its own)."""
    room = 253 - len(f".k3snet.{suffix}")
    return f"{node[:room].rstrip('.-')}.k3snet.{suffix}"


def _now() -> datetime.datetime:
    return datetime.datetime.now(tz=datetime.UTC)


class NodeReporter:
    """Patches the Node's annotations and records Events on change (the annotations again
    every :data:`REASSERT_INTERVAL` seconds while nothing changes).

    Failures to report are logged and never fail the pass: a node whose
    rules are right must not be reported broken because the API is slow.
    """

    def __init__(self, api_client: Any, node: str, *, component: str = "k3snet-agent",
                 timeout: float = DEFAULT_TIMEOUT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        from kubernetes import client  # noqa: PLC0415 - optional dependency (k3snet[kube])

        self._core: Any = client.CoreV1Api(api_client)
        self.node = node
        self.component = component
        self.timeout = timeout
        self._clock = clock
        self._last: NodeReport | None = None
        # The annotations last written, and when they are written again (unchanged).
        self._written: dict[str, str] | None = None
        self._reassert_due = 0.0
        # Node patches failed in a row, and when the next may be tried (see report).
        self._patch_failures = 0
        self._patch_due = 0.0
        # The Event of the last status change, not created yet: (the result, its time
        # stamp, tries made, when the next one is due).
        self._pending: tuple[NodeReport, str, int, float] | None = None
        # A token bucket: EVENT_BURST Events, refilled by one every EVENT_INTERVAL s.
        self._tokens = float(EVENT_BURST)
        self._refilled = clock()
        self._dropped = 0
        self.started = _now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        """When this agent started: a restart shows as a new value in the annotation."""
        self.writes = 0
        """API writes made so far (annotation patches and Events)."""
        self._deadline: Deadline | None = None

    def finish_by(self, deadline: Deadline) -> None:
        """From now on, each request waits at most what is left of ``deadline``, and none
        is sent once nothing is (the agent's last report, within SIGTERM's grace period)."""
        self._deadline = deadline

    def _request_timeout(self) -> tuple[float, KubeErrors]:
        """The next request's timeout (0: no time left to send it), and its errors'
        classifier (a timeout cut to the deadline is said so: the reporter's own, 10 s,
        was quoted for a last report given 2 s)."""
        return KubeErrors.within(self._deadline, self.timeout)

    def report(self, result: NodeReport) -> None:
        """Write ``result`` if it differs from the last one written (else the last one
        again once :data:`REASSERT_INTERVAL` is over); retry the Event of the last status
        change if it failed and is due.

        A throttled answer is not waited inside the request (``throttle_waits(None)``):
        its ``Retry-After`` delays this reporter's next try, up to
        :data:`PATCH_RETRY_LIMIT`. After :meth:`finish_by`, each request is sent once
        (:func:`~k3snet.kube.requests_within`): the report is written by its own thread,
        outside the pass's deadline, and urllib3 tried a refused connection 3 times more,
        each try given the whole timeout cut when the request began."""
        with throttle_waits(None), requests_within(lambda: self._deadline):
            self._report(result)

    def _report(self, result: NodeReport) -> None:
        if result == self._last:
            if self._written is not None and self._clock() >= self._reassert_due:
                self._patch(self._written, result.status)
            self._retry_event()
            return
        stamp = _now().strftime("%Y-%m-%dT%H:%M:%SZ")
        annotations = {
            STATUS_ANNOTATION: result.status,
            RESULT_ANNOTATION: json.dumps({**result.to_dict(), "time": stamp,
                                           "started": self.started}, sort_keys=True),
        }
        if not self._patch(annotations, result.status):
            return
        previous, self._last = self._last, result
        if previous is None or previous.status != result.status:
            if not self._may_create_event():
                return
            # A newer transition's Event replaces one still waiting to be created.
            self._pending = (result, stamp, 0, self._clock())
            self._retry_event()

    def _patch(self, annotations: dict[str, str], status: str) -> bool:
        """Patch the Node's annotations unless a failed patch's back-off is not over;
        whether they were written."""
        timeout, errors = self._request_timeout()
        if timeout <= 0:
            _log.warning("no time left to report the result %r on the node", status)
            return False
        if self._clock() < self._patch_due:
            # The last patch failed: tried again after a back-off, not on every pass. A
            # Node patch refused for good (no RBAC: 403; a --node-name naming no Node: 404)
            # was sent, and warned about, by every pass: once a second on a node whose
            # kube-proxy commits every second, from every node of the cluster.
            return False
        body = {"metadata": {"annotations": annotations}}
        try:
            with translate_errors(f"annotate Node {self.node}", classifier=errors):
                self._core.patch_node(self.node, body,
                                      _content_type="application/merge-patch+json",
                                      _request_timeout=timeout)
        except KubeApiError as exc:
            self._patch_failures += 1
            wait = min(PATCH_RETRY_LIMIT, max(
                _EVENT_RETRY * 2.0 ** min(self._patch_failures - 1, 30), exc.retry_after or 0.0))
            self._patch_due = self._clock() + wait
            _log.warning("cannot report the result on the node (next try in %.0f s): %s",
                         wait, exc)
            return False
        self._patch_failures = 0
        self._written = annotations
        self._reassert_due = self._clock() + REASSERT_INTERVAL
        self.writes += 1
        return True

    def _may_create_event(self) -> bool:
        """Take a token for one more Event; without one, count it dropped (said once)."""
        now = self._clock()
        self._tokens = min(float(EVENT_BURST),
                           self._tokens + (now - self._refilled) / EVENT_INTERVAL)
        self._refilled = now
        if self._tokens >= 1:
            self._tokens -= 1
            if self._dropped:
                _log.info("%d status changes had no Event (at most %d, then one per %.0f s); "
                          "the Node's annotation had each", self._dropped, EVENT_BURST,
                          EVENT_INTERVAL)
                self._dropped = 0
            return True
        if not self._dropped:
            _log.warning("the node's status keeps changing: no Event for each change until "
                         "it settles (one per %.0f s); the Node's annotation has the latest",
                         EVENT_INTERVAL)
        self._dropped += 1
        return False

    def _retry_event(self) -> None:
        """Create the pending Event if it is due; on failure, schedule the next try
        (the Node's annotation is written already: it is not patched again)."""
        if self._pending is None:
            return
        result, stamp, tries, due = self._pending
        if self._clock() < due or self._request_timeout()[0] <= 0:
            return
        try:
            self._event(result, stamp)
        except KubeApiError as exc:
            tries += 1
            if tries >= EVENT_TRIES:
                self._pending = None
                _log.warning("cannot create the Event for the node's status %r (%d tries, "
                             "given up; the Node's annotation says it): %s",
                             result.status, tries, exc)
                return
            # Not before the Retry-After a 429 named (bounded as the Node patch's is).
            wait = min(PATCH_RETRY_LIMIT, max(_EVENT_RETRY * 2.0 ** (tries - 1),
                                              exc.retry_after or 0.0))
            self._pending = (result, stamp, tries, self._clock() + wait)
            _log.warning("cannot create the Event for the node's status %r (try %d of %d, "
                         "next in %.0f s): %s", result.status, tries, EVENT_TRIES, wait, exc)
            return
        self._pending = None

    def _event(self, result: NodeReport, stamp: str) -> None:
        kind, reason = _REASONS.get(result.status, ("Warning", "K3snetUnknown"))
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": event_name(self.node, uuid.uuid4().hex[:12]),
                         "namespace": _EVENT_NAMESPACE},
            # The uid is the Node's name, as the kubelet writes it: `kubectl describe
            # node` selects Events by involvedObject.uid, and lists none without one.
            "involvedObject": {"apiVersion": "v1", "kind": "Node", "name": self.node,
                               "uid": self.node},
            # One printable line: `kubectl describe node` and `get events` print it as it
            # is, and a pass's failure quotes others' text (a foreign table's name).
            "reason": reason, "message": shortened(printable_line(result.message), _EVENT_LIMIT),
            "type": kind,
            "source": {"component": self.component, "host": self.node},
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
            "reportingComponent": self.component, "reportingInstance": self.node,
        }
        timeout, errors = self._request_timeout()
        with translate_errors(f"create Event for Node {self.node}", classifier=errors):
            self._core.create_namespaced_event(_EVENT_NAMESPACE, body,
                                               _request_timeout=timeout)
        self.writes += 1
