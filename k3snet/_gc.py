"""The cyclic garbage collector paused while a big job allocates: one function for it.

Backends pause it while they read or apply thousands of rules
(:mod:`k3snet.backends.kit` re-exports it), the spec while it is read, checked
and compiled (:mod:`k3snet.spec`). Figures: docs/performance.md.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["GC_PAUSE_MIN", "GcPause", "gc_paused"]

GC_PAUSE_MIN = 1000
"""Below this many rules or objects, reads and applies leave the GC alone."""


class GcPause:
    """The cyclic GC paused by :func:`gc_paused` (or not: small jobs leave it alone)."""

    def __init__(self, paused: bool) -> None:
        self._paused = paused

    @property
    def paused(self) -> bool:
        """Whether this pause turned the GC off (and has not ended yet)."""
        return self._paused

    def end(self) -> None:
        """Resume the GC, and make now the collection of what the job allocated.

        Resumed, the GC would walk every object allocated meanwhile (~30k at 10k
        rules, ~3 ms) at the next allocation anyway; done here (for an apply:
        while the kernel commits the table) it costs next to nothing.
        """
        if self._paused:
            self._paused = False
            gc.enable()
            gc.collect(0)


@contextmanager
def gc_paused(size: int) -> Iterator[GcPause]:
    """Pause the cyclic GC while a job of ``size`` rules or objects allocates.

    Parsed rules, models and their tuples never form cycles, yet each
    allocation burst triggers collections that walk every live object, the ones
    just made included: about a third of a 10k-rule iptables apply, and of an
    nftables read of 20k rules (benchmarks/bench_paths.py, docs/performance.md).
    Small jobs (below :data:`GC_PAUSE_MIN`) leave the GC alone; a GC already
    off stays off.
    """
    pause = GcPause(size >= GC_PAUSE_MIN and gc.isenabled())
    if pause.paused:
        gc.disable()
    try:
        yield pause
    finally:
        pause.end()
