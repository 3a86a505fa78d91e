"""Leader election on a ``coordination.k8s.io/v1`` Lease: one writer of cluster-wide objects.

The algorithm is client-go's ``leaderelection`` package, written for the
synchronous ``kubernetes`` client:

* a candidate reads the Lease every ``retry_period``; it takes it when it does
  not exist (create), has no holder, or has not changed for ``duration`` seconds
  *as seen by this candidate's own clock* (so clock skew between nodes does not
  matter: only the holder's renewals, observed locally, count). A Lease naming
  this candidate's identity is its own only if this elector acquired it and it
  still holds that acquisition's ``acquireTime``: the identity is the node's name,
  shared by every process on the node (``agent --once`` by hand beside the
  DaemonSet's agent, an agent restarted after a crash, the node's next agent that
  took the Lease while this one's steps stalled), so any other holder waits it out
  like a foreign one. A Lease holding that ``acquireTime`` is its own whether it leads
  or not (a write whose answer was lost once the server applied it, a holder past its
  renew deadline): renewed at once, as client-go renews a Lease naming it;
* every write is a merge patch carrying the ``resourceVersion`` read, so of two
  candidates racing for an expired Lease exactly one wins (the other gets 409);
* the holder renews every ``retry_period`` and considers itself leader only
  while its last successful renewal is younger than ``renew_deadline``
  (< ``duration``), so it stops writing before anyone else may start;
* :meth:`LeaderElector.release` (on SIGTERM) empties ``holderIdentity``, so the
  next candidate takes over at its next read instead of after ``duration``; it does
  so while the Lease may still be this elector's (its last renewal younger than
  ``duration``, or a write whose answer was lost), also past ``renew_deadline``: a
  clean-up on exit that outlasted that left the Lease to expire by itself. It frees
  only the Lease of its own acquisition
  (the ``acquireTime`` it wrote): another agent of the node, its identity the same,
  may have waited this one's out and taken it by the time the release's read is
  answered.

Two changes from client-go, for a DaemonSet where every node is a candidate: a
candidate that sees a live holder reads again only when that holder's Lease could
have expired (after ``duration``), not every ``retry_period``; 5,000 candidates
then cost 5,000 / 15 s reads instead of 5,000 / 2 s (docs/scale.md). And a
candidate whose step failed (403, 429, 5xx, no answer) waits ``retry_period``
doubled for each failure in a row, up to ``duration``: the same pace while the API
server is in trouble, or longer when its answer asked so (``Retry-After``, up to
:data:`RETRY_AFTER_LIMIT`). Every wait of a candidate is lengthened at random
(:data:`LEASE_JITTER`, client-go's ``JitterFactor``, which it applies to its candidates'
retry period): a back-off by up to 120 % of it, a wait for a holder's Lease by up to
120 % of ``retry_period`` (a dead holder's Lease is still taken within ``duration`` and
a jittered retry period); candidates whose reads failed together (an API server
restarting) otherwise read again together, to the millisecond, at every step after.
"""

from __future__ import annotations

import datetime
import logging
import math
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import attrs

from k3snet.backends.kit import translate_errors
from k3snet.errors import ModelError
from k3snet.kube import (
    DEFAULT_TIMEOUT,
    Deadline,
    KubeApiError,
    KubeErrors,
    requests_within,
    throttle_waits,
)

__all__ = ["LEASE_JITTER", "RETRY_AFTER_LIMIT", "LeaderElector", "LeaseSettings"]

_log = logging.getLogger("k3snet.agent.lease")

LEASE_JITTER = 1.2
"""The part by which a candidate's wait is lengthened at random (0 to 120 %, client-go's
``JitterFactor``): of its back-off after failures, and of ``retry_period`` alone when it
waits for a holder's Lease, so a Lease whose holder is gone is taken within
``duration`` and 1.2 x ``retry_period`` of the last change of it seen (client-go's
candidates poll every jittered ``retry_period``: within 2.2 x it). Never the holder's
wait: it renews every ``retry_period`` to stay within its renew deadline."""

_INT32_MAX = 2**31 - 1

RETRY_AFTER_LIMIT = 300.0
"""The longest wait a candidate takes from an answer's ``Retry-After`` (seconds)."""


@attrs.frozen
class LeaseSettings:
    """Where the Lease lives and its timing (client-go's defaults: 15 s, 10 s, 2 s)."""

    namespace: str = "kube-system"
    name: str = "k3snet-cluster-writer"
    duration: float = 15.0
    """Seconds a Lease not renewed stays with its holder."""
    renew_deadline: float = 10.0
    """The holder stops writing when it could not renew for this long."""
    retry_period: float = 2.0
    """Seconds between two reads (candidates) or renewals (the holder)."""

    @property
    def duration_seconds(self) -> int:
        """``duration`` as the Lease's whole ``leaseDurationSeconds``: rounded up, so that
        candidates reading it never wait less than the holder's ``renew_deadline`` (and
        never 0, which the API server refuses)."""
        return math.ceil(self.duration)

    def __attrs_post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.duration:
            raise ModelError("lease timing must satisfy 0 < retry period < renew deadline < "
                             f"duration, got {self.retry_period}, {self.renew_deadline}, "
                             f"{self.duration}")


def _now() -> datetime.datetime:
    return datetime.datetime.now(tz=datetime.UTC)


def _wall() -> datetime.datetime:
    """Now, for a MicroTime k3snet writes: never on a whole second. The client (kubernetes
    >= 37) sends a create's body through its model, a MicroTime as ``isoformat()``, which
    leaves the fraction out at microsecond 0: ``2026-12-06T02:00:00+00:00``, which the API
    server refuses (400: apimachinery reads a MicroTime with
    ``time.Parse(RFC3339Micro)``, six fractional digits required)."""
    when = _now()
    return when if when.microsecond else when.replace(microsecond=1)


def _micro_time(when: datetime.datetime) -> str:
    """A Kubernetes MicroTime (RFC 3339 with microseconds)."""
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_micro_time(value: Any) -> datetime.datetime | None:
    """A MicroTime as read (the client's ``datetime``, or its text) as an aware datetime;
    ``None`` when absent or not one."""
    if isinstance(value, str):
        try:
            value = datetime.datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime.datetime):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=datetime.UTC)


class LeaderElector:
    """Holds or waits for the Lease as ``identity``; :attr:`is_leader` says which.

    :meth:`step` is one read-and-maybe-write (tests call it directly);
    :meth:`start` runs it every ``retry_period`` in a daemon thread, calling
    ``on_change(leader)`` whenever leadership is gained or lost.
    """

    def __init__(self, api_client: Any, identity: str, settings: LeaseSettings | None = None,
                 *, on_change: Callable[[bool], None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 timeout: float = DEFAULT_TIMEOUT,
                 random_fraction: Callable[[], float] = random.random) -> None:
        from kubernetes import client  # noqa: PLC0415 - optional dependency (k3snet[kube])

        if not identity:
            raise ModelError("a leader election identity must not be empty")
        self._api: Any = client.CoordinationV1Api(api_client)
        self.identity = identity
        self.settings = settings or LeaseSettings()
        self._on_change = on_change
        self._clock = clock
        self._random = random_fraction
        self._timeout = timeout
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._renewed_at: float | None = None
        # The acquireTime this elector wrote when it took the Lease (renewals keep it):
        # it renews and releases the Lease only while it still holds that, the identity
        # (the node's name) being shared by every agent of the node.
        self._acquired: datetime.datetime | None = None
        # When (this clock) the last write that took or renewed the Lease was sent, none
        # refused since: its answer lost, the Lease may be this elector's all the same
        # (release frees it then, the read telling whether it is).
        self._wrote_at: float | None = None
        self._leader = False
        # The leadership last said (logged, on_change): a lapse past the renew deadline
        # happens by time alone, so what changed is told against this, not against
        # _holds just before a write (already false then).
        self._said = False
        # Steps in a row that failed (API errors): a candidate then reads less often, and
        # not before the last failure's Retry-After (seconds, None: it named none).
        self._failures = 0
        self._retry_after: float | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # What bounds the requests of the thread's step once halted (SIGTERM's grace).
        self._halted_by: Deadline | None = None
        self._thread: threading.Thread | None = None
        self.where = f"Lease {self.settings.namespace}/{self.settings.name}"

    # ------------------------------------------------------------ state

    @property
    def is_leader(self) -> bool:
        """True while this candidate holds the Lease and renewed it within the deadline."""
        with self._lock:
            return self._holds(self._clock())

    def _holds(self, now: float) -> bool:
        return (self._leader and self._renewed_at is not None
                and now - self._renewed_at < self.settings.renew_deadline)

    def _set_leader(self, leader: bool, renewed_at: float | None) -> None:
        with self._lock:
            before = self._said
            self._leader = leader
            self._renewed_at = renewed_at if leader else None
            after = self._said = self._holds(self._clock())
        if before != after:
            _log.info("%s %s", "acquired" if after else "lost", self.where,
                      extra={"lease": self.where, "identity": self.identity})
            if self._on_change is not None:
                self._on_change(after)

    # ------------------------------------------------------------ one step

    def step(self) -> bool:
        """Read the Lease and acquire or renew it when allowed; returns :attr:`is_leader`.

        A throttled answer is not waited inside the request (``throttle_waits(None)``):
        its ``Retry-After`` is this elector's next wait, up to :data:`RETRY_AFTER_LIMIT`.
        """
        try:
            with throttle_waits(None):
                acquired = self._try_acquire_or_renew()
            self._set_leader(*acquired)
        except _HaltedError:
            return self.is_leader  # (what it was: a holder's release is still to come)
        except KubeApiError as exc:
            _log.warning("leader election: %s", exc, extra={"lease": self.where})
            # Keep what we had: is_leader turns false on its own after renew_deadline.
            with self._lock:
                self._failures += 1
                self._retry_after = exc.retry_after
                leader = self._holds(self._clock())
            if not leader:
                self._set_leader(False, None)
        else:
            with self._lock:
                self._failures, self._retry_after = 0, None
        return self.is_leader

    def _try_acquire_or_renew(self) -> tuple[bool, float | None]:
        s = self.settings
        now = self._clock()
        wall = _micro_time(_wall())
        try:
            with translate_errors(f"read {self.where}",
                                  classifier=KubeErrors(timeout=self._timeout)):
                lease = self._api.read_namespaced_lease(s.name, s.namespace,
                                                        _request_timeout=self._timeout)
        except KubeApiError as exc:
            if exc.status != 404:
                raise
            return self._create(wall, now)
        spec = lease.spec
        holder = spec.holder_identity if spec is not None else None
        # The election record: the spec's fields a renewal or a take writes, as
        # client-go's candidate compares the spec, not the resourceVersion. A write of
        # the metadata (a label, a tool's annotation) renews nothing: counted as a change,
        # a dead holder's Lease labelled more often than the duration was never taken.
        # Nor do strategy and preferredHolder (coordinated leader election), which no
        # renewal writes; client-go's record holds them too, and a writer of them alone
        # held a dead holder's Lease there (tests/agent/test_lease_wire.py).
        record = (holder, *((str(spec.renew_time), str(spec.acquire_time),
                             spec.lease_duration_seconds, spec.lease_transitions)
                            if spec is not None else ()))
        if record != self._observed:
            # When the read was answered, not sent: the change it shows (the holder's
            # renewal) may have landed at any moment until then. Counted from the send,
            # a read the API server queued 9 s (its Priority and Fairness, overloaded)
            # had a candidate take the Lease 6 s after the renewal it showed, the holder
            # still leading for its renew deadline: two writers (client-go's candidate
            # takes the clock after its read too). The holder's own deadline counts from
            # before its read (``now``), its renewal landing after.
            self._observed, self._observed_at = record, self._clock()
        duration = (spec.lease_duration_seconds if spec is not None
                    and spec.lease_duration_seconds else s.duration)
        # Ours only if this elector acquired or renewed it: the identity is the node's
        # name, and another process on the node (`agent --once` by hand, a restarted
        # agent) reads the same name while the first still renews it. And only while it
        # holds this elector's acquisition (its acquireTime): a holder whose steps
        # stalled past the duration read the Lease the node's next agent took since as
        # its own, renewed it, and both led.
        # Not only while it leads: a write the API server applied and whose answer was
        # lost (a timeout, a proxy's 504) is this elector's all the same, as client-go
        # takes a Lease naming its identity. Its renewal's answer lost took the holder
        # past its renew deadline (the 10 s timeout), and a lost answer to the write
        # that took the Lease left it unknown: either was waited out for the duration
        # and taken again (a transition, no writer meanwhile). The acquireTime is one
        # this elector wrote, to the microsecond: no other's write holds it.
        mine = holder == self.identity and self._acquired is not None \
            and spec is not None and _parse_micro_time(spec.acquire_time) == self._acquired
        if holder and not mine and now - self._observed_at < duration:
            return False, None  # held by someone else, and alive as far as we can tell
        self._not_halted()
        transitions = (spec.lease_transitions or 0) if spec is not None else 0
        body: dict[str, Any] = {
            "metadata": {"resourceVersion": lease.metadata.resource_version},
            "spec": {"holderIdentity": self.identity,
                     "leaseDurationSeconds": s.duration_seconds,
                     "renewTime": wall},
        }
        if not mine:
            body["spec"]["acquireTime"] = wall
            # (an int32: one more than its largest is refused, and every candidate failed
            # every step for good on a Lease set to it)
            body["spec"]["leaseTransitions"] = min(transitions + 1, _INT32_MAX)
            # Before the write: its answer may be lost once the server applied it.
            self._acquired = _parse_micro_time(wall)
        self._wrote_at = now
        try:
            with translate_errors(f"update {self.where}",
                                  classifier=KubeErrors(timeout=self._timeout)):
                self._api.patch_namespaced_lease(
                    s.name, s.namespace, body, _content_type="application/merge-patch+json",
                    _request_timeout=self._timeout)
        except KubeApiError as exc:
            if exc.status != 409:
                raise
            self._wrote_at = None  # (refused: not made)
            if mine:
                # A renewal refused: the Lease was written since its read (a label or
                # annotation added, a tool's edit), not taken: no candidate takes a
                # Lease renewed within its duration, and past the renew deadline this
                # holder leads no more by time alone. It tries again at the next retry
                # period, leading meanwhile, as client-go's holder does until its renew
                # deadline; it gave the Lease up at once and read it again a lease
                # duration later, no writer of the cluster-wide objects in between.
                _log.debug("renewal of %s refused (409: written since it was read): "
                           "tried again at the next retry period", self.where)
                with self._lock:
                    return self._leader, self._renewed_at
            return False, None  # another candidate wrote first
        return True, now

    def _not_halted(self) -> None:
        """Raise :class:`_HaltedError` once :meth:`halt` was asked: a step in flight then
        writes no Lease. A candidate that read a free Lease (or a holder whose read came
        after its own release) took it on its way out, and no other candidate took it
        before it expired."""
        if self._stop.is_set():
            raise _HaltedError

    def _create(self, wall: str, now: float) -> tuple[bool, float | None]:
        self._not_halted()
        self._acquired = _parse_micro_time(wall)  # before: its answer may be lost
        self._wrote_at = now
        s = self.settings
        body = {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": s.name, "namespace": s.namespace,
                         "labels": {"app.kubernetes.io/managed-by": "k3snet"}},
            "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": s.duration_seconds,
                     "acquireTime": wall, "renewTime": wall, "leaseTransitions": 0},
        }
        try:
            with translate_errors(f"create {self.where}",
                                  classifier=KubeErrors(timeout=self._timeout)):
                self._api.create_namespaced_lease(s.namespace, body,
                                                  _request_timeout=self._timeout)
        except KubeApiError as exc:
            if exc.status == 409:
                self._wrote_at = None
                return False, None
            raise
        return True, now

    # ------------------------------------------------------------ release and the thread

    def release(self, deadline: Deadline | None = None) -> None:
        """Give the Lease up at once (if held): the next candidate need not wait it out.

        ``deadline``: each of its two requests waits at most what is left of it (none is
        sent once nothing is), and is sent once (:func:`~k3snet.kube.requests_within`: a
        GET whose connection closed unanswered was tried 3 times more, each waiting what
        was left when it began); the Lease then expires by itself, as it does after a
        throttled answer (not waited: ``throttle_waits(None)``).
        """
        with self._lock:
            # Not is_leader (renewed within renew_deadline): halted at SIGTERM, nothing
            # renews the Lease, and a clean-up on exit outlasting that gave nothing up,
            # though no other candidate may take the Lease before ``duration``. The
            # read and the resourceVersion of the write keep another holder's.
            # Nor only while it leads: a write whose answer was lost (a timeout) may
            # have taken or renewed it (the read below tells), and the next candidate
            # waited it out for the duration.
            now = self._clock()
            mine = (self._leader and self._renewed_at is not None
                    and now - self._renewed_at < self.settings.duration) or (
                self._acquired is not None and self._wrote_at is not None
                and now - self._wrote_at < self.settings.duration)
        if not mine:
            return
        self._set_leader(False, None)
        try:
            with requests_within(lambda: deadline), throttle_waits(None):
                self._release(deadline)
        except (KubeApiError, _NoTimeLeftError) as exc:
            _log.warning("could not release %s (it expires by itself): %s", self.where, exc)
        else:
            _log.info("released %s", self.where, extra={"lease": self.where})

    def _release(self, deadline: Deadline | None) -> None:
        """The release's read of the Lease, and its write if this node still holds it."""
        s = self.settings
        timeout, errors = self._within(deadline)
        with translate_errors(f"read {self.where}", classifier=errors):
            lease = self._api.read_namespaced_lease(s.name, s.namespace,
                                                    _request_timeout=timeout)
        if (lease.spec is None or lease.spec.holder_identity != self.identity
                or self._acquired is None
                or _parse_micro_time(lease.spec.acquire_time) != self._acquired):
            # Another's: the identity is the node's name, and another agent of the node
            # (the DaemonSet's next pod, `agent --once`) took it after waiting out this
            # one's last renewal (the release may come up to --lease-duration after it,
            # its read answered later still): freeing it let a third candidate take it
            # while that one still wrote as the holder.
            return
        body = {"metadata": {"resourceVersion": lease.metadata.resource_version},
                "spec": {"holderIdentity": None, "leaseDurationSeconds": 1,
                         "renewTime": _micro_time(_wall())}}
        timeout, errors = self._within(deadline)
        with translate_errors(f"release {self.where}", classifier=errors):
            self._api.patch_namespaced_lease(
                s.name, s.namespace, body, _content_type="application/merge-patch+json",
                _request_timeout=timeout)

    def _within(self, deadline: Deadline | None) -> tuple[float, KubeErrors]:
        """The timeout of the next request, cut to what is left of ``deadline``, and its
        errors' classifier (a timeout so cut is said so: the Lease's own, 10 s, was
        quoted for a request given 2 s)."""
        timeout, errors = KubeErrors.within(deadline, self._timeout)
        if timeout <= 0:
            raise _NoTimeLeftError("no time left of the grace period")
        return timeout, errors

    def start(self) -> LeaderElector:
        """Run :meth:`step` every ``retry_period`` in a daemon thread (the first after one
        period: call :meth:`step` first to try at once)."""
        self._thread = threading.Thread(target=self._run, name="k3snet-agent-lease",
                                        daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.next_wait()):
            try:
                # Once halted, the step in flight sends each request once, within the
                # deadline halt() was given: only the wait for this thread was bounded,
                # and its GET whose connection closed unanswered was sent 3 times more.
                with requests_within(lambda: self._halted_by):
                    self.step()
            except Exception:  # noqa: BLE001 - a bug must not end leader election silently
                _log.exception("leader election step failed")

    def next_wait(self) -> float:
        """Seconds until the next step: ``retry_period`` for the holder and while the
        Lease is free or expiring, else until the holder's Lease could expire; after
        failed steps a candidate waits ``retry_period`` doubled for each, up to
        ``duration`` (thousands of candidates must not poll a failing API server), and at
        least the ``Retry-After`` of the last failure's answer (up to
        :data:`RETRY_AFTER_LIMIT`). A candidate's back-off is lengthened at random by up
        to :data:`LEASE_JITTER` of it, its wait for a holder's Lease by up to
        :data:`LEASE_JITTER` of ``retry_period`` (a dead holder is replaced within
        ``duration`` and a jittered retry period, as client-go's candidates do)."""
        s = self.settings
        with self._lock:
            if self._leader:
                return s.retry_period
            if self._failures:
                # (the exponent capped: hours of failures must not overflow a float)
                wait = min(s.duration, s.retry_period * 2.0 ** min(self._failures, 30))
                asked = min(self._retry_after or 0.0, RETRY_AFTER_LIMIT)
                return self._jittered(max(wait, asked))
            if self._observed is None or not self._observed[0]:
                return self._jittered(s.retry_period)
            # (only the retry period's part jittered: the whole wait lengthened by up to
            # 120 % kept a candidate up to 2.2 x duration from a dead holder's Lease)
            expires = self._observed_at + s.duration - self._clock()
            wait = min(s.duration, max(s.retry_period, expires))
            return wait + LEASE_JITTER * self._random() * s.retry_period

    def _jittered(self, wait: float) -> float:
        """``wait`` lengthened at random by up to :data:`LEASE_JITTER` of it."""
        return wait * (1.0 + LEASE_JITTER * self._random())

    def halt(self, deadline: Deadline | None = None) -> None:
        """Take no further step (the thread ends after a step in flight, if any);
        :meth:`stop` then waits for it and releases the Lease.

        A step in flight writes no Lease from now on (neither takes nor renews it), and
        each request it still sends is sent once, within ``deadline`` (SIGTERM's grace
        period; its timeout cut to what is left for a client
        :func:`~k3snet.kube.make_api_client` made).
        """
        if deadline is not None:
            self._halted_by = deadline
        self._stop.set()

    def stop(self, *, release: bool = True, deadline: Deadline | None = None) -> None:
        """Stop the thread, then release the Lease (unless ``release`` is false).

        ``deadline`` (SIGTERM's grace period): the wait for a step in flight and the
        release's requests all end by then; a step that an API server never answers
        held the caller 17 s, and the release 20 s more.
        """
        self.halt(deadline)
        if self._thread is not None:
            wait = self._timeout + self.settings.retry_period + 5
            self._thread.join(timeout=wait if deadline is None else min(wait, deadline.left()))
        if release:
            self.release(deadline)


class _HaltedError(Exception):
    """The elector was halted before its step's write: none is made."""


class _NoTimeLeftError(Exception):
    """The deadline is over before a request could be sent."""
