"""Helpers of the netlink kernel tests."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from k3snet.backends.netlink.sysctls import spread_values
from k3snet.lab.netns import run_in, temporary_netns


def ip(ns: str, *args: str) -> str:
    """``ip -n NS ARGS``'s output (a failure raises)."""
    return subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True,
                          text=True).stdout


@contextmanager
def d0_namespace(prefix: str, *addresses: str) -> Iterator[str]:
    """A namespace with veth d0 (its peer d0p inside too, both up) holding ``addresses``,
    IPv6 ones usable at once (no duplicate address detection)."""
    with temporary_netns(prefix) as name:
        run_in(name, ["sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0",
                      "net.ipv6.conf.default.accept_dad=0"])
        ip(name, "link", "add", "d0", "type", "veth", "peer", "name", "d0p")
        ip(name, "link", "set", "d0p", "up")
        ip(name, "link", "set", "d0", "up")
        for address in addresses:
            ip(name, "addr", "add", address, "dev", "d0",
               *(["nodad"] if ":" in address else []))
        yield name


def count_switch_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The netlink backend's reads of the forwarding switches from now on, one entry each
    (the sysctl whose spread was read)."""
    reads: list[str] = []

    def counted(root: Path, name: str) -> dict[str, str]:
        reads.append(name)
        return spread_values(root, name)

    monkeypatch.setattr("k3snet.backends.netlink.backend.spread_values", counted)
    return reads
