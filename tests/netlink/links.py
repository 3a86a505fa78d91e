"""Helpers of the netlink kernel tests."""

from __future__ import annotations

import json
import subprocess
import time
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
def d0_namespace(prefix: str, *addresses: str, device: str = "d0") -> Iterator[str]:
    """A namespace with veth ``device`` (its peer ``device``p inside too, both up) holding
    ``addresses``, IPv6 ones usable at once (no duplicate address detection)."""
    with temporary_netns(prefix) as name:
        run_in(name, ["sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0",
                      "net.ipv6.conf.default.accept_dad=0"])
        ip(name, "link", "add", device, "type", "veth", "peer", "name", f"{device}p")
        ip(name, "link", "set", f"{device}p", "up")
        ip(name, "link", "set", device, "up")
        for address in addresses:
            ip(name, "addr", "add", address, "dev", device,
               *(["nodad"] if ":" in address else []))
        yield name


def wait_for_link_local(ns: str, *links: str, bound: float = 30.0) -> None:
    """Return once the kernel has configured IPv6 on ``links`` (up, with carrier): each
    holds its link-local address past duplicate address detection, and every one of its
    IPv6 addresses so past has its ``local`` route in table local.

    The kernel does this after a link comes up, on its own time: DAD alone lasts a second
    or more unless turned off, and even without it the work is queued. A route listing
    taken before it ends lacks ``local fe80::...`` routes that a later listing shows, so a
    test comparing two listings saw a change nobody made. ``bound`` only keeps a kernel
    that never gets there from hanging the test (it fails, naming what is missing).
    """
    end = time.monotonic() + bound
    while True:
        missing = _link_local_missing(ns, links)
        if not missing:
            return
        if time.monotonic() > end:
            msg = f"IPv6 on {', '.join(links)} in {ns} not configured: {'; '.join(missing)}"
            raise AssertionError(msg)
        time.sleep(0.01)


def _link_local_missing(ns: str, links: tuple[str, ...]) -> list[str]:
    """What the kernel has yet to do for ``links`` (see :func:`wait_for_link_local`)."""
    listed = {link["ifname"]: link for link in json.loads(ip(ns, "-j", "-6", "addr", "show"))}
    local = {(route["dst"], route.get("dev")) for route in json.loads(
        ip(ns, "-j", "-6", "route", "show", "table", "local", "type", "local"))}
    missing = []
    for name in links:
        addresses = listed.get(name, {}).get("addr_info", [])
        if not any(a["scope"] == "link" and not a.get("tentative") for a in addresses):
            missing.append(f"{name}: no link-local address past DAD")
        missing += [f"{name}: no local route for {a['local']}" for a in addresses
                    if not a.get("tentative") and (a["local"], name) not in local]
    return missing


def count_switch_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The netlink backend's reads of the forwarding switches from now on, one entry each
    (the sysctl whose spread was read)."""
    reads: list[str] = []

    def counted(root: Path, name: str) -> dict[str, str]:
        reads.append(name)
        return spread_values(root, name)

    monkeypatch.setattr("k3snet.backends.netlink.backend.spread_values", counted)
    return reads
