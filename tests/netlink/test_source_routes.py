"""IPv6 source-specific routes beside a route of k3snet's.

``ip -6 route add fd01:2::/64 from fd42:42::/56 via fd01:9::1 dev eth1`` beside k3snet's
``fd01:2::/64 via fd01:1::1 dev eth0``: the kernel keeps the first in a subtree of the
destination's node, looked up by the packet's source, so the pods' packets (from the pod
CIDR) take the foreign route; and a packet from a source outside that ``from`` passes
k3snet's route by for a shorter prefix. The backend's decoder left such routes out and
said nothing. Now its warnings name them, with either driver, as the kernel forwards real
packets (counted on each gateway's link) and as ``ip -6 -j route show table all`` lists
them; a shorter destination, or a ``from`` no pod's packet comes from inside k3snet's
destination, leave it unnamed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from k3snet.backends.netlink import NetlinkBackend
from k3snet.backends.netlink.codec import (
    RTA_DST,
    RTA_GATEWAY,
    RTA_OIF,
    RTA_PRIORITY,
    RTA_SRC,
    RTA_TABLE,
    RTM_NEWROUTE,
    RTMSG,
    SourceRoute,
    attr,
    attr_u32,
    decode_source_route,
    message,
)
from k3snet.lab.netns import run_in, temporary_netns
from k3snet.model import Route, State
from k3snet.planner import plan
from tests.netlink.links import ip
from tests.netlink.test_backend import DRIVERS, Driver
from tests.netlink.test_pyroute2_table_dumps import _count_route_dumps

_POD = "fd42:42::5"
_SEND = ("import socket, sys\n"
         "s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n"
         "s.bind((sys.argv[1], 0))\n"
         "for _ in range(20):\n"
         "    s.sendto(b'x', (sys.argv[2], 9))\n")


def test_a_source_specific_route_message_decodes_in_the_ip_route_show_form() -> None:
    body = (RTMSG.pack(10, 64, 56, 0, 254, 3, 0, 1, 0)
            + attr(RTA_DST, bytes.fromhex("fd010002" + "00" * 12))
            + attr(RTA_SRC, bytes.fromhex("fd420042" + "00" * 12))
            + attr_u32(RTA_TABLE, 254) + attr_u32(RTA_PRIORITY, 1024)
            + attr(RTA_GATEWAY, bytes.fromhex("fd010009" + "00" * 11 + "01"))
            + attr_u32(RTA_OIF, 3))
    found = decode_source_route(message(RTM_NEWROUTE, 0, 0, body), {3: "eth1"})
    assert isinstance(found, SourceRoute)
    assert found.text == "fd01:2::/64 from fd42:42::/56 via fd01:9::1 dev eth1 metric 1024"
    assert (str(found.destination), str(found.source), found.table) == (
        "fd01:2::/64", "fd42:42::/56", 254)
    plain = RTMSG.pack(10, 64, 0, 0, 254, 3, 0, 1, 0) + body[RTMSG.size:]
    assert decode_source_route(message(RTM_NEWROUTE, 0, 0, plain), {}) is None
    local = body.replace(attr_u32(RTA_TABLE, 254), attr_u32(RTA_TABLE, 255))
    assert decode_source_route(message(RTM_NEWROUTE, 0, 0, local), {}) is None


@contextmanager
def _lab() -> Iterator[tuple[str, list[str]]]:
    """A node namespace: eth0 to a peer namespace holding fd01:1::1 (k3snet's gateway),
    eth1 to another holding fd01:9::1 (the foreign one), a pod's address on lo."""
    with ExitStack() as stack:
        node = stack.enter_context(temporary_netns("srcrtn"))
        peers = [stack.enter_context(temporary_netns(f"srcrt{p}")) for p in "ab"]
        for name in (node, *peers):
            run_in(name, ["sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0",
                          "net.ipv6.conf.default.accept_dad=0"])
            ip(name, "link", "set", "lo", "up")
        for index, (peer, net) in enumerate(zip(peers, ("fd01:1::", "fd01:9::"), strict=True)):
            ip(node, "link", "add", f"eth{index}", "type", "veth", "peer", "name", "p0",
               "netns", peer)
            ip(node, "addr", "add", f"{net}2/64", "dev", f"eth{index}", "nodad")
            ip(peer, "addr", "add", f"{net}1/64", "dev", "p0", "nodad")
            ip(node, "link", "set", f"eth{index}", "up")
            ip(peer, "link", "set", "p0", "up")
        ip(node, "addr", "add", f"{_POD}/128", "dev", "lo", "nodad")
        yield node, peers


def _received(ns: str) -> int:
    [link] = json.loads(subprocess.run(
        ["ip", "-n", ns, "-j", "-s", "link", "show", "p0"], check=True,
        capture_output=True, text=True).stdout)
    return int(link["stats64"]["rx"]["packets"])


def _sent_through(lab: tuple[str, list[str]], source: str, target: str) -> tuple[int, int]:
    """How many of 20 datagrams from ``source`` to ``target`` k3snet's gateway and the
    foreign one received (ND's few packets aside)."""
    node, peers = lab
    before = [_received(p) for p in peers]
    subprocess.run(["ip", "netns", "exec", node, sys.executable, "-c", _SEND, source, target],
                   check=True, capture_output=True)
    time.sleep(0.2)  # the peers' counters: the veth delivers at once, softirq aside
    ours, foreign = (_received(p) - b for p, b in zip(peers, before, strict=True))
    return ours, foreign


def _warnings(backend: NetlinkBackend) -> tuple[str, ...]:
    """The warnings of a pass: its observe, then the warnings (as plan and the agent do:
    the pyroute2 driver follows no change, and reads the routes the observe dumped)."""
    backend.observe()
    return backend.warnings


def _only_warning(backend: NetlinkBackend) -> str:
    warnings = _warnings(backend)
    assert len(warnings) == 1, warnings
    return warnings[0]


@pytest.mark.kernel
@pytest.mark.usefixtures("require_root")
@pytest.mark.parametrize("driver", DRIVERS)
def test_a_source_specific_route_taking_the_pods_packets_is_named_in_the_warnings(
        tmp_path: Path, driver: Driver) -> None:
    with _lab() as lab, NetlinkBackend(lab[0], state_dir=tmp_path, driver=driver,
                                        pod_cidrs=["fd42:42::/56", "10.42.0.0/16"]) as backend:
        wanted = State(owned=[Route("fd01:2::/64", gateway="fd01:1::1", device="eth0")])
        node = lab[0]
        backend.expect(wanted)
        backend.apply(plan(backend.observe(), wanted))
        assert backend.warnings == ()
        assert _sent_through(lab, _POD, "fd01:2::7")[0] >= 20
        foreign = ("fd01:2::/64", "from", "fd42:42::/56", "via", "fd01:9::1", "dev", "eth1")
        ip(node, "-6", "route", "add", *foreign)
        listed = json.loads(ip(node, "-6", "-j", "route", "show", "table", "all"))
        assert {"dst": "fd01:2::/64", "from": "fd42:42::/56"}.items() <= next(
            r for r in listed if "from" in r).items()
        ours, taken = _sent_through(lab, _POD, "fd01:2::7")
        assert ours < 20 <= taken  # the kernel's own: the pods' packets take the foreign one
        warning = _only_warning(backend)
        assert ("`fd01:2::/64 from fd42:42::/56 via fd01:9::1 dev eth1 metric 1024`"
                in warning)
        assert "takes the pods' packets from fd42:42::/56 to fd01:2::/64" in warning
        assert "route fd01:2::/64 via fd01:1::1 dev eth0" in warning
        assert "ip -6 route del" in warning
        ip(node, "-6", "route", "del", *foreign)
        # A shorter destination never beats k3snet's longer one: unnamed.
        shorter = ("fd01::/16", "from", "fd42:42::/56", "via", "fd01:9::1", "dev", "eth1")
        ip(node, "-6", "route", "add", *shorter)
        assert _sent_through(lab, _POD, "fd01:2::7")[0] >= 20
        assert _warnings(backend) == ()
        ip(node, "-6", "route", "del", *shorter)
        # Inside k3snet's destination: named when its `from` holds a pod's source.
        inner = ("fd01:2::/80", "from", "fd42:42::/64", "via", "fd01:9::1", "dev", "eth1")
        ip(node, "-6", "route", "add", *inner)
        assert _sent_through(lab, _POD, "fd01:2::7")[1] >= 20
        warning = _only_warning(backend)
        assert "takes the pods' packets from fd42:42::/64 to fd01:2::/80" in warning
        ip(node, "-6", "route", "del", *inner)
        outside = ("fd01:2::/80", "from", "fd43::/56", "via", "fd01:9::1", "dev", "eth1")
        ip(node, "-6", "route", "add", *outside)
        assert _sent_through(lab, _POD, "fd01:2::7")[0] >= 20
        assert _warnings(backend) == ()
        ip(node, "-6", "route", "del", *outside)
        # At k3snet's very destination a `from` no pod's packet comes from still matters:
        # the pods' packets pass k3snet's route by (no shorter prefix here: unreachable).
        ip(node, "-6", "route", "add", "fd01:2::/64", "from", "fd43::/56", "via", "fd01:9::1",
           "dev", "eth1")
        refused = subprocess.run(["ip", "-n", node, "-6", "route", "get", "fd01:2::7", "from",
                                  _POD], capture_output=True, text=True, check=False)
        assert refused.returncode != 0
        assert "unreachable" in refused.stderr
        warning = _only_warning(backend)
        assert ("makes the kernel pass by k3snet's route fd01:2::/64 via fd01:1::1 dev eth0"
                in warning)
        assert "for the pods' packets from fd42:42::/56 (no `from` at" in warning
        ip(node, "-6", "route", "del", "fd01:2::/64", "from", "fd43::/56")
        # A `from` holding part of the pods there: the rest are passed by, and said so.
        ip(node, "-6", "route", "add", "fd01:2::/64", "from", "fd42:42::/64", "via",
           "fd01:9::1", "dev", "eth1")
        refused = subprocess.run(["ip", "-n", node, "-6", "route", "get", "fd01:2::7", "from",
                                  "fd42:42:0:7::5"], capture_output=True, text=True, check=False)
        assert "unreachable" in refused.stderr
        warning = _only_warning(backend)
        assert "takes the pods' packets from fd42:42::/64 to fd01:2::/64" in warning
        assert ("the pods' packets from fd42:42::/56 outside fd42:42::/64 pass that route by"
                in warning)


@pytest.mark.kernel
@pytest.mark.usefixtures("require_root")
def test_the_pyroute2_driver_reads_the_source_routes_from_the_pass_s_observe_without_a_dump(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each look at the warnings dumped every IPv6 route again, pyroute2 decoding each:
    # at 10 000 routes as much CPU as the pass's observe (docs/performance.md).
    pytest.importorskip("pyroute2")
    with _lab() as lab, NetlinkBackend(lab[0], state_dir=tmp_path, driver="pyroute2",
                                        pod_cidrs=["fd42:42::/56"]) as backend:
        wanted = State(owned=[Route("fd01:2::/64", gateway="fd01:1::1", device="eth0")])
        backend.expect(wanted)
        backend.apply(plan(backend.observe(), wanted))
        ip(lab[0], "-6", "route", "add", "fd01:2::/80", "from", "fd42:42::/64", "via",
           "fd01:9::1", "dev", "eth1")
        backend.observe()
        dumped: list[int] = []
        _count_route_dumps(backend, dumped, monkeypatch)
        for _ in range(3):
            [warning] = backend.warnings
            assert "takes the pods' packets from fd42:42::/64 to fd01:2::/80" in warning
        assert dumped == []
        backend.observe()  # the next pass reads them from its own dump
        assert len(dumped) == 2  # IPv4's and IPv6's routes
        ip(lab[0], "-6", "route", "del", "fd01:2::/80", "from", "fd42:42::/64")
        backend.observe()
        assert backend.warnings == ()
        assert len(dumped) == 4
