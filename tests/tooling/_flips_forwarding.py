"""Run by tests/tooling/test_root_guard.py inside a lab namespace only: a test that
changes the namespace its session runs in, as a test that forgot ``--netns`` would."""

from __future__ import annotations

import os

import pytest


def test_changes_the_namespace_it_runs_in() -> None:
    # Only inside the lab namespace named by the outer test, identified by its inode
    # (never by the absence of a match: a wrong value must not let it run elsewhere).
    name = os.environ.get("K3SNET_FLIP_NETNS", "")
    try:
        inside = (name.startswith("k3snet-") and "/" not in name and
                  os.stat(f"/run/netns/{name}").st_ino == os.stat("/proc/self/ns/net").st_ino)
    except OSError:
        inside = False
    if not inside:
        pytest.fail("refused: this runs only inside the lab namespace K3SNET_FLIP_NETNS names")
    with open("/proc/sys/net/ipv4/ip_forward", "w") as handle:
        handle.write("1")
