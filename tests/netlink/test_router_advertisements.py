"""IPv6 forwarding and router advertisements: writing a non-zero IPv6 ``forwarding``
(``all`` or an interface's) makes the kernel drop every default route learned from
router advertisements on an interface whose ``accept_ra`` is not 2
(``rt6_purge_dflt_routers``), and ignore the next ones: the node loses its IPv6
default route. The netlink backend refuses such a change, naming the route and the
way out, and changes nothing.

A second namespace plays the router and sends one router advertisement (a raw
ICMPv6 socket); the kernel's own view is read with ``ip -j -6 route``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from k3snet.backends.netlink import NetlinkBackend
from k3snet.errors import PlanError
from k3snet.lab.netns import run_in, temporary_netns
from k3snet.model import State, Sysctl
from k3snet.planner import plan
from tests.shown import BOTH_WAYS, as_k3snet_ran, shown

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]

_ADVERTISE = """
import socket, struct
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
index = socket.if_nametoindex("r0")
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
# type 134 (router advertisement), code 0, checksum (the kernel's), hop limit 64,
# no flags, router lifetime 1800 s, reachable time and retransmission timer unset
s.sendto(struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0), ("ff02::1", 0, 0, index))
"""


def _wait(what: str, ready: object) -> None:
    """Wait for the lab to settle (the kernel does it asynchronously); not an assertion."""
    deadline = time.monotonic() + 30
    while not ready():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError(f"the lab did not settle: {what}")
        time.sleep(0.05)


def defaults(ns: str) -> list[dict[str, object]]:
    """The IPv6 default routes of ``ns``, as the kernel lists them."""
    listed: list[dict[str, object]] = json.loads(
        run_in(ns, ["ip", "-j", "-6", "route", "show", "default"]).stdout or "[]")
    return listed


def _link_local_ready(ns: str, dev: str) -> bool:
    listed = json.loads(run_in(ns, ["ip", "-j", "-6", "addr", "show", "dev", dev]).stdout)
    return any(a.get("scope") == "link" and not a.get("tentative")
               for entry in listed for a in entry.get("addr_info", ()))


@pytest.fixture
def node() -> Iterator[str]:
    """A node whose IPv6 default route came from a router advertisement on d0."""
    with temporary_netns("ranode") as name, temporary_netns("rarouter") as router:
        run_in(name, ["sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0",
                      "net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.default.accept_ra=1"])
        run_in(router, ["sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0",
                        "net.ipv6.conf.default.accept_dad=0"])
        run_in(name, ["ip", "link", "add", "d0", "type", "veth", "peer", "name", "r0",
                      "netns", router])
        run_in(name, ["ip", "link", "set", "d0", "up"])
        run_in(router, ["ip", "link", "set", "r0", "up"])
        _wait("link-local addresses", lambda: _link_local_ready(name, "d0")
              and _link_local_ready(router, "r0"))
        run_in(router, [sys.executable, "-c", _ADVERTISE])
        _wait("the advertised default route", lambda: defaults(name))
        yield name


_FORWARDING = State(owned=[Sysctl("net.ipv6.conf.all.forwarding", 1)])


def test_turning_ipv6_forwarding_on_is_refused_while_it_would_drop_a_learned_default_route(
        node: str, tmp_path: Path) -> None:
    before = defaults(node)
    assert [route.get("protocol") for route in before] == ["ra"]
    with NetlinkBackend(node, state_dir=tmp_path) as backend:
        wanted = plan(backend.observe(), _FORWARDING)
        problems = backend.check(wanted)
        assert any("net.ipv6.conf.d0.accept_ra" in p for p in problems), problems
        with pytest.raises(PlanError, match="router advertisements") as caught:
            backend.apply(wanted)
        assert "dev d0" in str(caught.value)
        assert "nothing was changed" in str(caught.value)
    assert defaults(node) == before
    forwarding = run_in(node, ["cat", "/proc/sys/net/ipv6/conf/all/forwarding"]).stdout
    assert forwarding.strip() == "0"


@BOTH_WAYS
def test_the_accept_ra_write_a_refusal_names_runs_in_the_namespace_k3snet_read(
        node: str, tmp_path: Path, given: bool) -> None:
    """The refusal named ``sysctl -w net.ipv6.conf.d0.accept_ra=2`` alone, under ``--netns
    NS`` and ``ip netns exec NS k3snet ...``: pasted into the shell that ran k3snet, it set
    the node's own sysctl (or failed on a device the node does not have). Only its text
    is checked: a write, never run here."""
    def refused(netns: str | None) -> str:
        with NetlinkBackend(netns, state_dir=tmp_path) as backend, \
                pytest.raises(PlanError, match="router advertisements") as caught:
            backend.apply(plan(backend.observe(), _FORWARDING))
        return str(caught.value)

    message = as_k3snet_ran(node, given, refused)
    assert shown(node, "sysctl -w net.ipv6.conf.d0.accept_ra=2") in message, message
    assert [r.get("protocol") for r in defaults(node)] == ["ra"]


def test_with_accept_ra_2_the_learned_default_route_survives_ipv6_forwarding(
        node: str, tmp_path: Path) -> None:
    run_in(node, ["sysctl", "-qw", "net.ipv6.conf.d0.accept_ra=2"])
    before = defaults(node)
    with NetlinkBackend(node, state_dir=tmp_path) as backend:
        wanted = plan(backend.observe(), _FORWARDING)
        assert backend.check(wanted) == ()
        backend.apply(wanted)
    assert [r.get("dst") for r in defaults(node)] == [r.get("dst") for r in before]
    forwarding = run_in(node, ["cat", "/proc/sys/net/ipv6/conf/all/forwarding"]).stdout
    assert forwarding.strip() == "1"


def test_an_accept_ra_the_same_plan_writes_after_the_forwarding_switch_does_not_count(
        node: str, tmp_path: Path) -> None:
    # Sysctls are applied in name order: all.forwarding comes before d0.accept_ra.
    both = State(owned=[*_FORWARDING.owned, Sysctl("net.ipv6.conf.d0.accept_ra", 2)])
    with NetlinkBackend(node, state_dir=tmp_path) as backend:
        wanted = plan(backend.observe(), both)
        with pytest.raises(PlanError, match="this plan sets it only after this change"):
            backend.apply(wanted)
    assert [r.get("protocol") for r in defaults(node)] == ["ra"]
    accept_ra = run_in(node, ["cat", "/proc/sys/net/ipv6/conf/d0/accept_ra"]).stdout
    assert accept_ra.strip() == "1"


def _advertise(router: str, lifetime: int) -> None:
    run_in(router, [sys.executable, "-c", _ADVERTISE.replace("1800", str(lifetime))])


def test_an_accept_ra_turned_to_1_under_ipv6_forwarding_is_a_warning_as_the_kernel_ignores_them(
        tmp_path: Path) -> None:
    """``accept_ra`` changes with no notification: set from 2 to 1 after k3snet turned
    IPv6 forwarding on, the kernel ignores the next advertisements (an advertised
    lifetime of 600 s leaves the route's expiry as the 1800 s one set it), and the
    learned default route expires unrenewed. ``warnings`` names it."""
    with temporary_netns("ranode") as name, temporary_netns("rarouter") as router:
        run_in(name, ["sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0",
                      "net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.default.accept_ra=2"])
        run_in(router, ["sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0",
                        "net.ipv6.conf.default.accept_dad=0"])
        run_in(name, ["ip", "link", "add", "d0", "type", "veth", "peer", "name", "r0",
                      "netns", router])
        run_in(name, ["ip", "link", "set", "d0", "up"])
        run_in(router, ["ip", "link", "set", "r0", "up"])
        _wait("link-local addresses", lambda: _link_local_ready(name, "d0")
              and _link_local_ready(router, "r0"))
        _advertise(router, 1800)
        _wait("the advertised default route", lambda: defaults(name))
        with NetlinkBackend(name, state_dir=tmp_path) as backend:
            backend.apply(plan(backend.observe(), _FORWARDING))
            backend.observe()
            assert backend.warnings == ()
            run_in(name, ["sysctl", "-qw", "net.ipv6.conf.d0.accept_ra=1"])
            backend.observe()
            said: tuple[str, ...] = backend.warnings  # not narrowed by the == () above
            [warning] = said
            assert "net.ipv6.conf.d0.accept_ra is 1" in warning
            assert "default route" in warning
            assert "dev d0" in warning
            _advertise(router, 600)  # ignored: the expiry stays the 1800 s one's
            [route] = defaults(name)
            assert int(str(route["expires"]).rstrip("sec")) > 600
            run_in(name, ["sysctl", "-qw", "net.ipv6.conf.d0.accept_ra=2"])
            assert backend.warnings == ()
            _advertise(router, 600)  # taken now: the same advertisement sets the expiry
            _wait("the advertisement taken", lambda: int(str(
                defaults(name)[0]["expires"]).rstrip("sec")) <= 600)
