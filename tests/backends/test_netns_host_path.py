"""The node's own namespace finds its records without listing ``/run/netns``.

Where a namespace's records are kept (:func:`~k3snet.backends.netns.record_netns`,
:func:`~k3snet.backends.netns.earlier_records`) is found by listing ``/run/netns`` and
a ``stat`` of each name there: on a node, containerd's ``cni-*`` handle of every pod.
The agent and a cron job run in the node's own namespace, whose records are ``host``'s
whatever names it has: that path reads two nsfs files and lists nothing, whatever the
number of pods (docs/performance.md, 2026-12-05, "Today's merges").
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from k3snet.backends import netns


def test_the_node_s_own_namespace_finds_its_records_without_listing_run_netns(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # PID 1's namespace as the node's: this process's (PID 1's nsfs file may be
    # unreadable here, a sandbox without ptrace rights over it).
    monkeypatch.setattr(netns, "INIT_NETNS", Path("/proc/self/ns/net"))
    if not netns.THREAD_NETNS.exists():
        pytest.skip("no /proc/thread-self/ns/net")
    listed: list[str] = []
    real = os.listdir

    def listdir(path: str | Path = ".") -> list[str]:
        listed.append(str(path))
        return real(path)

    monkeypatch.setattr(os, "listdir", listdir)
    kept = netns.record_netns(None)
    assert kept is None
    assert netns.earlier_records(None, kept) == []
    netns.namespace_instance(None, host=True)
    assert listed == []
