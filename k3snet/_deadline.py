"""The deadline a command's or the agent's API requests are bounded by after SIGTERM.

Apart from :mod:`k3snet.kube`, which re-exports each name: the CLI sets the deadline
around every command, and a cold one that names no cluster backend (a script's, a cron
job's ``k3snet apply``) then imports no Kubernetes module (issue 9).
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Callable, Iterator

import attrs

__all__ = ["ASSUMED_TERMINATION_GRACE", "WITHIN", "Deadline", "requests_within"]

ASSUMED_TERMINATION_GRACE = 30
"""The grace period an agent not told its own (``--termination-grace``,
``$K3SNET_TERMINATION_GRACE``) plans its shutdown for: Kubernetes' default, and what
DaemonSets rendered before :data:`~k3snet.kube.TERMINATION_GRACE` was 70 s say. Assuming
70 s there, an agent whose image alone was updated planned 65 s of clean-up and was
killed at 30 s, its Lease still held."""


@attrs.frozen
class Deadline:
    """A time by which several API requests must all be done (after SIGTERM, what is
    left of :data:`~k3snet.kube.TERMINATION_GRACE`): each request's timeout is cut to
    what is left, so together they never outlast it."""

    at: float
    """When it is over, on ``clock``."""
    clock: Callable[[], float] = time.monotonic

    def left(self) -> float:
        """Seconds left (0 once it is over)."""
        return max(0.0, self.at - self.clock())

    def timeout(self, limit: float) -> float:
        """One request's timeout: ``limit``, cut to what is left (0: send none)."""
        return min(limit, self.left())


WITHIN: contextvars.ContextVar[Callable[[], Deadline | None] | None] = contextvars.ContextVar(
    "k3snet_kube_within", default=None)
"""The deadline :func:`requests_within` set in this thread (``k3snet.kube`` reads it)."""


@contextlib.contextmanager
def requests_within(deadline: Callable[[], Deadline | None]) -> Iterator[None]:
    """Within the block, in this thread, each request of a client
    :func:`~k3snet.kube.make_api_client` returned waits at most what is left of
    ``deadline()`` (asked at each request: ``None`` bounds nothing), whatever timeout its
    caller gave.

    The agent's pass runs within its grace deadline (``None`` until SIGTERM): the
    cluster-wide part's requests (a list of every IPPool, then writes), made by
    backends with their own timeout each (10 s), went on past the pod's grace period
    when the API server answered slowly, and the kubelet killed the agent before it
    released the Lease or cleaned up.
    """
    token = WITHIN.set(deadline)
    try:
        yield
    finally:
        WITHIN.reset(token)
