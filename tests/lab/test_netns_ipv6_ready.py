"""``await_ipv6_ready`` returns once the kernel lists every given link's IPv6 local routes.

The kernel gives a link that came up (with carrier) its ``multicast ff00::/8`` route and,
past duplicate address detection, its link-local ``local`` route in table local, in a work
item: a neighbour solicitation arriving before finds no route and is dropped
(``Ip6InNoRoutes``), and the first IPv6 connection waits out the one-second retransmit.
"""

from __future__ import annotations

import json

import pytest

from k3snet.lab.netns import Ipv6NotReadyError, await_ipv6_ready, run_in, temporary_netns

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]


def _routed(ns: str) -> tuple[set[str], set[str]]:
    """The links of ``ns`` with a ``multicast`` route, and with a link-local ``local`` one,
    in the kernel's table local."""
    local = json.loads(run_in(ns, ["ip", "-6", "-j", "route", "show", "table", "local"]).stdout)
    return ({r["dev"] for r in local if r.get("type") == "multicast"},
            {r["dev"] for r in local
             if r.get("type") == "local" and r["dst"].startswith("fe80:")})


def test_once_it_returns_the_kernel_lists_each_links_multicast_and_link_local_routes() -> None:
    with temporary_netns("v6a") as a, temporary_netns("v6b") as b:
        for ns in (a, b):
            run_in(ns, ["sysctl", "-q", "-w", "net.ipv6.conf.all.accept_dad=0",
                        "net.ipv6.conf.default.accept_dad=0"])
        run_in(a, ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
                   "netns", b])
        run_in(a, ["ip", "-6", "addr", "add", "fd00::1/64", "dev", "eth0", "nodad"])
        run_in(b, ["ip", "-6", "addr", "add", "fd00::2/64", "dev", "eth1", "nodad"])
        run_in(a, ["ip", "link", "set", "eth0", "up"])
        run_in(b, ["ip", "link", "set", "eth1", "up"])
        await_ipv6_ready(a, ["eth0"])
        await_ipv6_ready(b, ("eth1",))
        assert all("eth0" in routed for routed in _routed(a))
        assert all("eth1" in routed for routed in _routed(b))


def test_a_link_the_kernel_never_configures_fails_naming_it_and_what_it_lacks() -> None:
    # A veth whose peer is down has no carrier: the kernel configures no IPv6 on it.
    with temporary_netns("v6c") as ns:
        run_in(ns, ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"])
        run_in(ns, ["ip", "link", "set", "eth0", "up"])
        with pytest.raises(Ipv6NotReadyError) as raised:
            await_ipv6_ready(ns, ["eth0"], timeout=0.2)
        assert isinstance(raised.value, TimeoutError)
        assert str(raised.value) == (f"IPv6 not configured in {ns} after 0.2 s: "
                                     "eth0: no multicast ff00::/8 and no link-local route")


def test_a_link_whose_ipv6_is_disabled_fails_saying_so_not_what_routes_it_lacks() -> None:
    # With disable_ipv6=1 the kernel never gives the link a route of table local: the
    # wait went on to its timeout (10 s), then said "no multicast ff00::/8 and no
    # link-local route", never why. It says so as soon as it looks.
    with temporary_netns("v6d") as a, temporary_netns("v6e") as b:
        run_in(a, ["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
                   "net.ipv6.conf.default.disable_ipv6=1"])
        run_in(a, ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
                   "netns", b])
        run_in(a, ["ip", "link", "set", "eth0", "up"])
        run_in(b, ["ip", "link", "set", "eth1", "up"])
        await_ipv6_ready(b, ["eth1"])  # the peer's end has its carrier: eth0 has too
        with pytest.raises(Ipv6NotReadyError) as raised:
            await_ipv6_ready(a, ["eth0"])
        assert str(raised.value) == (
            f"IPv6 cannot be configured in {a}: eth0: IPv6 is disabled on it "
            "(net.ipv6.conf.eth0.disable_ipv6 = 1)")
        assert _routed(a) == (set(), set())  # the kernel's own view: none at all


def test_a_link_that_does_not_exist_fails_naming_it() -> None:
    with temporary_netns("v6f") as ns:
        with pytest.raises(Ipv6NotReadyError) as raised:
            await_ipv6_ready(ns, ["lo", "eth9"])
        assert str(raised.value) == (f"IPv6 cannot be configured in {ns}: lo: the link is "
                                     "down (ip link set lo up); eth9: no such link")


@pytest.mark.parametrize("name", ["", ".", "..", "a" * 16, "eth0\n", " eth0", "a/b", "a:b",
                                  "\u00e9" * 8])
def test_a_name_no_link_can_have_is_refused_before_any_wait(name: str) -> None:
    # The kernel refuses such a name to every link (dev_valid_name): waited for, it was
    # looked up 10 s long, then said lacking its routes.
    with pytest.raises(ValueError, match="no link can have"):
        await_ipv6_ready("k3snet-none-000000", ["eth0", name])
