"""The hand-moved monotonic clock the agent's tests give the agent, the Lease elector and
the reporter (none of them sleeps on it: a test moves ``now`` itself)."""

from __future__ import annotations

import threading


class FakeClock:
    """A monotonic clock that stands still until moved (``now``, or :meth:`advance`
    from another thread)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds
