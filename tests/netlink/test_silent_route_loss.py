"""IPv6 routes the kernel deletes without a word: with
``net.ipv6.route.skip_notify_on_dev_down = 1`` (FRR's and Cumulus' advice for nodes of
many routes), turning ``disable_ipv6`` on for an interface holding no IPv6 address (a
WireGuard tunnel, ``addrgenmode none``) deletes the IPv6 routes through it with no
notification at all (no route, address, link nor netconf one: ``ip monitor all`` shows
nothing). The route view kept from notifications still held k3snet's route there:
``observe`` reported it, plans said nothing to do, and the agent never put it back.
The kernel's view is ``ip -j -6 route``.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from k3snet.backends.netlink import NetlinkBackend
from k3snet.facts import FactsWatch, gather_facts
from k3snet.lab.netns import run_in
from k3snet.model import Route, State
from k3snet.planner import plan
from tests.netlink.links import d0_namespace, ip

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]


def _ours(ns: str) -> list[str]:
    return [r["dst"] for r in json.loads(ip(ns, "-j", "-6", "route", "show"))
            if r.get("protocol") == "211"]


def test_ipv6_routes_deleted_unannounced_are_seen_gone_and_put_back(tmp_path: Path) -> None:
    with d0_namespace("v6sil") as ns:
        ip(ns, "link", "set", "d0", "down")
        ip(ns, "link", "set", "d0", "addrgenmode", "none")  # no link-local address
        ip(ns, "link", "set", "d0", "up")
        run_in(ns, ["sysctl", "-qw", "net.ipv6.route.skip_notify_on_dev_down=1"])
        wanted = State(owned=[Route("fd07::/64", device="d0")])
        with NetlinkBackend(ns, state_dir=tmp_path) as backend:
            backend.apply(plan(backend.observe(), wanted))
            assert _ours(ns) == ["fd07::/64"]
            assert backend.observe().owned == wanted.owned
            run_in(ns, ["sysctl", "-qw", "net.ipv6.conf.d0.disable_ipv6=1"])
            assert _ours(ns) == []
            assert backend.observe().owned == frozenset()
            # The agent cannot tell from notifications: it observes at every pass.
            assert backend.change_token() is None
            run_in(ns, ["sysctl", "-qw", "net.ipv6.conf.d0.disable_ipv6=0"])
            p = plan(backend.observe(), wanted)
            assert len(p.changes) == 1
            backend.apply(p)
            assert _ours(ns) == ["fd07::/64"]
            # Notifications tell again once the kernel sends them.
            run_in(ns, ["sysctl", "-qw", "net.ipv6.route.skip_notify_on_dev_down=0"])
            assert backend.change_token() is not None


def test_the_facts_watch_moves_while_the_kernel_may_delete_ipv6_routes_unannounced() -> None:
    """The agent keeps the node facts while FactsWatch's token stands still: with the
    switch at 1 a route through a WireGuard-like interface deleted without a notification
    left the facts holding its prefix, for good (gateways judged reachable, destinations
    routed, by a route that was gone). While the switch is 1 the token moves at each call,
    so the facts are read at every pass, as the backend's own view is dumped."""
    with d0_namespace("v6facts") as ns:
        ip(ns, "link", "set", "d0", "down")
        ip(ns, "link", "set", "d0", "addrgenmode", "none")
        ip(ns, "link", "set", "d0", "up")
        ip(ns, "-6", "route", "add", "fd08::/64", "dev", "d0")
        watch = FactsWatch(ns)
        try:
            watch.token()
            quiet = watch.token()
            assert watch.token() == quiet  # nothing changed, nothing to read
            run_in(ns, ["sysctl", "-qw", "net.ipv6.route.skip_notify_on_dev_down=1"])
            token = watch.token()
            facts = gather_facts(ns)
            assert ipaddress.ip_network("fd08::/64") in facts.routes
            run_in(ns, ["sysctl", "-qw", "net.ipv6.conf.d0.disable_ipv6=1"])
            assert "fd08::/64" not in ip(ns, "-6", "route", "show")  # the kernel's view
            assert watch.token() != token
            assert ipaddress.ip_network("fd08::/64") not in gather_facts(ns).routes
            # Once the kernel announces every deletion again, a token standing still is
            # nothing changed again.
            run_in(ns, ["sysctl", "-qw", "net.ipv6.route.skip_notify_on_dev_down=0"])
            watch.token()
            quiet = watch.token()
            assert watch.token() == quiet
        finally:
            watch.close()
