"""What a test waits for before it takes a route listing to compare with a later one.

After a link comes up, the kernel gives it a link-local address and, once duplicate
address detection (DAD) is over, that address's ``local`` route, on its own time. A
listing taken meanwhile lacked routes that a later one showed: a safety test comparing
the two (k3snet changed nothing) failed once, seen as a link-local route out of order.
"""

from __future__ import annotations

import json

import pytest

from k3snet.lab.netns import run_in, temporary_netns
from tests.netlink.links import ip, wait_for_link_local

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]


def test_after_the_wait_no_address_is_tentative_and_each_link_local_one_is_routed() -> None:
    # The kernel's default DAD (about a second or two): a listing right after the links
    # came up has none of the routes below.
    with temporary_netns("llwait") as ns:
        run_in(ns, ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"])
        run_in(ns, ["ip", "link", "set", "eth0", "up"])
        run_in(ns, ["ip", "link", "set", "eth1", "up"])
        wait_for_link_local(ns, "eth0", "eth1")
        assert ip(ns, "-6", "addr", "show", "tentative") == ""
        link_local = {(a["local"], link["ifname"])
                      for link in json.loads(ip(ns, "-j", "-6", "addr", "show"))
                      for a in link.get("addr_info", []) if a["scope"] == "link"}
        assert {name for _, name in link_local} == {"eth0", "eth1"}
        routes = json.loads(ip(ns, "-j", "-6", "route", "show", "table", "all"))
        routed = {(r["dst"], r["dev"]) for r in routes
                  if r.get("type") == "local" and r.get("table") == "local"}
        assert link_local <= routed, routes
