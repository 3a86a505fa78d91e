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

import json
from pathlib import Path

import pytest

from k3snet.backends.netlink import NetlinkBackend
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
