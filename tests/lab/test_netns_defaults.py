"""A lab namespace starts from the kernel's defaults, whatever the machine's values.

A new namespace copies IPv4's ``conf/all`` and ``conf/default`` from the machine's own
(``net.core.devconf_inherit_init_net`` 0, the default; IPv6's too under 1): on a Docker
host ``ip_forward = 1``, on Ubuntu ``rp_filter = 2``. Tests that read a fresh
namespace's forwarding or ``rp_filter`` as the kernel's defaults failed there (20 of
tests/netlink's kernel tests), while the root namespace may not be changed to show it:
the machine's values are written here right after ``ip netns add``, as the copy would
have left them.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from typing import Any

import pytest

from k3snet.lab import netns
from k3snet.lab.netns import run_in, temporary_netns

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]

_HOST = ("net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=2",
         "net.ipv4.conf.default.rp_filter=2", "net.ipv6.conf.all.forwarding=1",
         "net.ipv6.conf.default.forwarding=1")


def test_a_lab_namespace_has_the_kernels_forwarding_and_rp_filter_whatever_the_hosts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    real = netns._run

    def copied_from_the_host(argv: Sequence[str], **options: Any,
                             ) -> subprocess.CompletedProcess[str]:
        done = real(argv, **options)
        if list(argv[:3]) == ["ip", "netns", "add"] and done.returncode == 0:
            real(["ip", "netns", "exec", argv[3], "sysctl", "-q", "-w", *_HOST], check=True,
                 timeout=netns.DEFAULT_TIMEOUT)
        return done

    monkeypatch.setattr(netns, "_run", copied_from_the_host)
    with temporary_netns("dflt") as ns:
        read = run_in(ns, ["sysctl", "-n", *(value.split("=")[0] for value in _HOST)])
        assert read.stdout.split() == ["0"] * len(_HOST)
