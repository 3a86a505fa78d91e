"""The netlink backend's ``change_token()`` (the agent observes between its intervals only
when it moved) moves whenever the sysctls ``observe`` reports changed, and reads none
of them while the kernel announces their changes: the forwarding switches of both
families and IPv4's ``rp_filter`` come with a netconf notification
(``RTNLGRP_IPV4_NETCONF``, ``RTNLGRP_IPV6_NETCONF``), so an agent's no-op pass read the
four watched files and the state file for nothing. ``accept_ra`` is announced by no
notification: a watched one is still read. The kernel's own view is ``sysctl`` in the
namespace.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from k3snet.backends.netlink import NetlinkBackend
from k3snet.backends.netlink.sysctls import read_sysctls
from k3snet.lab.netns import run_in
from k3snet.model import State, Sysctl
from k3snet.planner import plan
from tests.netlink.links import d0_namespace

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]


def _sysctl(ns: str, *assignments: str) -> None:
    run_in(ns, ["sysctl", "-qw", *assignments])


def _value(ns: str, name: str) -> str:
    return run_in(ns, ["sysctl", "-n", name]).stdout.strip()


def _count_reads(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    reads: list[list[str]] = []

    def counted(root: Path, names: list[str]) -> dict[str, str | None]:
        reads.append(list(names))
        return read_sysctls(root, names)

    monkeypatch.setattr("k3snet.backends.netlink.backend.read_sysctls", counted)
    return reads


def test_the_change_token_reads_no_announced_sysctl_and_moves_with_each_change(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with d0_namespace("tokns") as ns, NetlinkBackend(ns, state_dir=tmp_path) as backend:
        backend.apply(plan(backend.observe(), State(owned=[Sysctl("net.ipv4.ip_forward", 1)])))
        reads = _count_reads(monkeypatch)
        token = backend.change_token()
        for _ in range(3):  # an agent's no-op passes
            assert backend.change_token() == token
        assert reads == []
        for assignment, name in (("net.ipv6.conf.all.forwarding=1", "net.ipv6.conf.all.forwarding"),
                                 ("net.ipv4.conf.all.rp_filter=2", "net.ipv4.conf.all.rp_filter"),
                                 ("net.ipv4.conf.default.rp_filter=1",
                                  "net.ipv4.conf.default.rp_filter"),
                                 ("net.ipv4.ip_forward=0", "net.ipv4.ip_forward")):
            _sysctl(ns, assignment)
            assert _value(ns, name) == assignment.split("=")[1]
            moved = backend.change_token()
            assert moved != token, assignment
            assert backend.change_token() == moved
            token = moved
        # Another k3snet gives ip_forward back: it writes the 0 it held before over the
        # 0 there (the kernel announces nothing), and observe reports it foreign now.
        assert Sysctl("net.ipv4.ip_forward", 0) in backend.observe().owned
        other = NetlinkBackend(ns, state_dir=tmp_path)
        try:
            other.apply(plan(other.observe(), State()))
        finally:
            other.close()
        assert _value(ns, "net.ipv4.ip_forward") == "0"
        assert backend.change_token() != token
        assert Sysctl("net.ipv4.ip_forward", 0) in backend.observe().foreign


def test_a_watched_sysctl_the_kernel_does_not_announce_is_still_read(
        tmp_path: Path) -> None:
    with d0_namespace("tokra") as ns, NetlinkBackend(
            ns, state_dir=tmp_path, watch_sysctls=["net.ipv6.conf.d0.accept_ra"]) as backend:
        _sysctl(ns, "net.ipv6.conf.d0.accept_ra=1")
        token = backend.change_token()
        _sysctl(ns, "net.ipv6.conf.d0.accept_ra=2")
        assert _value(ns, "net.ipv6.conf.d0.accept_ra") == "2"
        assert backend.change_token() != token
        assert Sysctl("net.ipv6.conf.d0.accept_ra", 2) in backend.observe().foreign
