"""A route of k3snet's that an administrator's policy rule takes the traffic of: in
place, and carrying nothing. ``ip rule add to 198.51.100.0/24 lookup 100`` (priority
100, before ``main``'s 32766) with a route of table 100 holding the destination sends
every lookup there; plan, apply and the agent said nothing, the route of ``main`` the
spec asked for was reported in place. The backend's warnings (``!! warning:`` under
``k3snet plan`` and ``apply``) now name it, as the kernel's own view
(``ip -j route get``) shows it, with either driver; a rule only *some* packets meet (a
source prefix, an in-interface), a ``throw`` route, a table holding only part of the
destination leave it unnamed.
"""

from __future__ import annotations

import errno
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from k3snet.backends.netlink import NetlinkBackend
from k3snet.backends.netlink import backend as netlink_backend
from k3snet.backends.netlink.codec import NetlinkError
from k3snet.model import Route, State
from k3snet.model.cidr import network_text
from k3snet.planner import plan
from tests.netlink.links import d0_namespace, ip
from tests.netlink.test_backend import DRIVERS, Driver

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root"),
              pytest.mark.parametrize("driver", DRIVERS)]


def _table_of(ns: str, family: str, address: str) -> str:
    [found] = json.loads(ip(ns, "-j", family, "route", "get", address))
    return str(found.get("table", "main"))


def test_a_route_an_administrators_rule_takes_the_lookup_of_is_named_in_the_warnings(
        tmp_path: Path, driver: Driver) -> None:
    with d0_namespace("rshadow", "192.0.2.1/24", "2001:db8::1/64") as ns, \
            NetlinkBackend(ns, state_dir=tmp_path, driver=driver) as backend:
        ip(ns, "route", "add", "198.51.100.0/24", "dev", "d0", "table", "100")
        ip(ns, "rule", "add", "to", "198.51.100.0/24", "lookup", "100", "pref", "100")
        ip(ns, "-6", "route", "add", "2001:db8:5::/48", "dev", "d0", "table", "100")
        ip(ns, "-6", "rule", "add", "to", "2001:db8:5::/48", "lookup", "100", "pref", "100")
        ip(ns, "rule", "add", "prohibit", "to", "203.0.113.0/24", "pref", "200")
        wanted = State(owned=[Route("198.51.100.0/24", gateway="192.0.2.2"),
                              Route("2001:db8:5::/64", gateway="2001:db8::2"),
                              Route("203.0.113.0/25", gateway="192.0.2.2"),
                              Route("192.0.2.128/25", gateway="192.0.2.2", table=100)])
        backend.expect(wanted)
        backend.apply(plan(backend.observe(), wanted))
        # The kernel's view: the lookups end in table 100 (or are refused), not in main.
        assert _table_of(ns, "-4", "198.51.100.7") == "100"
        assert _table_of(ns, "-6", "2001:db8:5::7") == "100"
        refused = subprocess.run(["ip", "-n", ns, "route", "get", "203.0.113.7"],
                                 capture_output=True, text=True, check=False)
        assert refused.returncode != 0
        assert "Permission denied" in refused.stderr  # prohibit: EACCES
        warnings = backend.warnings
        assert len(warnings) == 3, warnings
        v4, prohibit, v6 = warnings  # in the routes' order: IPv4 first
        assert "route 198.51.100.0/24 via 192.0.2.2 table main" in v4
        assert ("priority 100, before table main, sends every lookup of 198.51.100.0/24 "
                "reaching it to table 100") in v4
        assert "route 198.51.100.0/24 dev d0 table 100" in v4
        assert "route 2001:db8:5::/64 via 2001:db8::2 table main" in v6
        assert "route 2001:db8:5::/48 dev d0 table 100" in v6
        assert ("priority 200 (prohibit), before table main, refuses every lookup of "
                "203.0.113.0/25 reaching it") in prohibit
        # Without the rules, nothing to say (and the route of table 100 is reached by none
        # of the administrator's rules: left to the tables' own lookup).
        for family in ("-4", "-6"):
            ip(ns, family, "rule", "del", "pref", "100")
        ip(ns, "rule", "del", "pref", "200")
        assert backend.warnings == ()


def test_a_rule_only_some_lookups_meet_or_a_table_passing_them_on_names_no_route(
        tmp_path: Path, driver: Driver) -> None:
    with d0_namespace("rshadowx", "192.0.2.1/24") as ns, \
            NetlinkBackend(ns, state_dir=tmp_path, driver=driver) as backend:
        ip(ns, "route", "add", "198.51.0.0/16", "dev", "d0", "table", "100")
        ip(ns, "route", "add", "throw", "198.51.101.0/24", "table", "101")
        ip(ns, "route", "add", "198.51.102.128/25", "dev", "d0", "table", "102")
        # Met by some packets alone: a source prefix, an in-interface, an inverted rule.
        ip(ns, "rule", "add", "from", "10.42.0.0/16", "to", "198.51.100.0/24", "lookup",
           "100", "pref", "100")
        ip(ns, "rule", "add", "iif", "d0", "to", "198.51.100.0/24", "lookup", "100",
           "pref", "101")
        ip(ns, "rule", "add", "not", "to", "198.51.0.0/16", "lookup", "100", "pref", "102")
        # Met by every one: table 101 throws it back, table 102 holds only half of it.
        ip(ns, "rule", "add", "to", "198.51.101.0/24", "lookup", "101", "pref", "103")
        ip(ns, "rule", "add", "to", "198.51.102.0/24", "lookup", "102", "pref", "104")
        wanted = State(owned=[Route("198.51.100.0/24", gateway="192.0.2.2"),
                              Route("198.51.101.0/24", gateway="192.0.2.2"),
                              Route("198.51.102.0/24", gateway="192.0.2.2")])
        backend.expect(wanted)
        backend.apply(plan(backend.observe(), wanted))
        assert _table_of(ns, "-4", "198.51.100.7") == "main"
        assert _table_of(ns, "-4", "198.51.101.7") == "main"
        assert _table_of(ns, "-4", "198.51.102.7") == "main"
        assert backend.warnings == ()


def test_a_rule_of_mark_0_under_a_mask_names_no_route_a_marked_packet_still_takes(
        tmp_path: Path, driver: Driver) -> None:
    """``fwmark 0/0x4000`` is met by a packet without that bit alone: one kube-proxy
    marked 0x4000 (what it masquerades) goes on to ``main``, k3snet's route carries it.
    The rule was read as met by every packet (a mark of 0 read as no mark) and the route
    named as carrying no traffic."""
    with d0_namespace("rshadowm", "192.0.2.1/24", "2001:db8::1/64") as ns, \
            NetlinkBackend(ns, state_dir=tmp_path, driver=driver) as backend:
        for family, default in (("-4", "0.0.0.0/0"), ("-6", "::/0")):
            ip(ns, family, "route", "add", default, "dev", "d0", "table", "100")
        ip(ns, "rule", "add", "fwmark", "0/0x4000", "to", "198.51.100.0/24", "lookup",
           "100", "pref", "100")
        ip(ns, "-6", "rule", "add", "fwmark", "0/0x4000", "to", "2001:db8:5::/48", "lookup",
           "100", "pref", "100")
        wanted = State(owned=[Route("198.51.100.0/24", gateway="192.0.2.2"),
                              Route("2001:db8:5::/64", gateway="2001:db8::2")])
        backend.expect(wanted)
        backend.apply(plan(backend.observe(), wanted))
        for family, address in (("-4", "198.51.100.7"), ("-6", "2001:db8:5::7")):
            assert _table_of(ns, family, address) == "100"
            [marked] = json.loads(ip(ns, "-j", family, "route", "get", address, "mark",
                                     "0x4000"))
            assert str(marked.get("table", "main")) == "main"
        assert not backend.warnings
        # Without the mask, a mark of 0 is no selector: every lookup goes to table 100.
        for family in ("-4", "-6"):
            ip(ns, family, "rule", "del", "pref", "100")
        ip(ns, "rule", "add", "fwmark", "0", "to", "198.51.100.0/24", "lookup", "100",
           "pref", "100")
        [named] = backend.warnings
        assert "route 198.51.100.0/24 via 192.0.2.2 table main" in named


def test_the_warnings_judge_the_routes_the_observe_read_dumping_none_again(
        tmp_path: Path, driver: Driver, monkeypatch: pytest.MonkeyPatch) -> None:
    """With an administrator's rule in place, each look at the warnings started a new
    read of the routes: the pyroute2 driver, which follows no change, dumped and decoded
    every route again after the pass's observe (twice its CPU at 10 000 routes)."""
    with d0_namespace("rshadowd", "192.0.2.1/24") as ns, \
            NetlinkBackend(ns, state_dir=tmp_path, driver=driver) as backend:
        ip(ns, "route", "add", "198.18.0.0/15", "dev", "d0", "table", "100")
        ip(ns, "rule", "add", "to", "198.18.0.0/15", "lookup", "100", "pref", "100")
        ip(ns, "route", "add", "198.51.100.0/24", "dev", "d0", "table", "101")
        ip(ns, "rule", "add", "to", "198.51.100.0/24", "lookup", "101", "pref", "101")
        wanted = State(owned=[Route("198.51.100.0/24", gateway="192.0.2.2")])
        backend.expect(wanted)
        backend.apply(plan(backend.observe(), wanted))
        dumps: list[object] = []
        driver_object: Any = backend._driver
        read = driver_object.routes

        def counted(*args: Any, **kwargs: Any) -> Any:
            dumps.append(args)
            return read(*args, **kwargs)

        monkeypatch.setattr(driver_object, "routes", counted)
        for _ in range(2):  # the first: the socket driver's view after the apply's news
            backend.expect(wanted)
            backend.observe()
            dumps.clear()
            [named] = backend.warnings
        assert "lookup of 198.51.100.0/24 reaching it to table 101" in named
        assert dumps == []


def test_a_rules_dump_the_kernel_refuses_is_a_warning_not_the_end_of_plan_and_apply(
        tmp_path: Path, driver: Driver, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rules read the kernel refuses (simulated: the IPv6 one with IPv6 off at boot
    is no IPv6 rules, tests/netlink/test_gateway_rules.py): ``warnings`` raised, and
    ``k3snet plan`` ended after its read; ``check``'s gateway lookup read them too, and
    ended the apply."""
    with d0_namespace("rshadowf", "192.0.2.1/24") as ns, \
            NetlinkBackend(ns, state_dir=tmp_path, driver=driver) as backend:
        ip(ns, "route", "add", "198.51.100.0/24", "dev", "d0", "table", "100")
        ip(ns, "rule", "add", "to", "198.51.100.0/24", "lookup", "100", "pref", "100")
        driver_object: Any = backend._driver

        def refused() -> Any:
            raise NetlinkError(errno.EAFNOSUPPORT)

        monkeypatch.setattr(driver_object, "rules", refused)
        wanted = State(owned=[Route("198.51.100.0/24", gateway="192.0.2.2")])
        backend.expect(wanted)
        planned = plan(backend.observe(), wanted)
        assert backend.check(planned) == ()
        backend.apply(planned)
        [said] = backend.warnings
        assert said.startswith(f"netlink: cannot read the policy rules of network namespace '{ns}'")
        assert "Address family not supported" in said
        assert [(r["dst"], r["gateway"], r["protocol"]) for r in json.loads(
            ip(ns, "-j", "route", "show", "198.51.100.0/24"))] == [
            ("198.51.100.0/24", "192.0.2.2", "211")]


@pytest.mark.parametrize("earlier", ["calico", "anyip"])
def test_a_rule_s_warning_claims_no_lookup_an_earlier_rule_or_the_local_table_takes(
        tmp_path: Path, driver: Driver, earlier: str) -> None:
    """Calico's inverted rule (``not from all fwmark 0x100000/0x100000 lookup 1``, wireguard)
    and an AnyIP route of the ``local`` table take the lookups before the administrator's
    rule at priority 100: the warning said that rule's table took them ("and its route
    ... takes it") where the kernel's own lookup ends in table 1, or ``local``. It now
    says what holds whatever reaches the rule, and names the earlier rule that may take
    some first; an AnyIP route holding the whole destination takes every lookup, and is
    the one named (table ``local``, looked in first: the rule's table is reached by none)."""
    with d0_namespace("rshadowe", "192.0.2.1/24") as ns, \
            NetlinkBackend(ns, state_dir=tmp_path, driver=driver) as backend:
        ip(ns, "route", "add", "198.51.100.0/24", "dev", "d0", "table", "100")
        ip(ns, "rule", "add", "to", "198.51.100.0/24", "lookup", "100", "pref", "100")
        if earlier == "calico":
            ip(ns, "route", "add", "198.51.100.0/24", "dev", "d0p", "table", "1")
            ip(ns, "rule", "add", "not", "fwmark", "0x100000/0x100000", "lookup", "1",
               "pref", "99")
        else:
            ip(ns, "route", "add", "local", "198.51.100.0/24", "dev", "lo", "table", "local")
        wanted = State(owned=[Route("198.51.100.0/24", gateway="192.0.2.2")])
        backend.expect(wanted)
        backend.apply(plan(backend.observe(), wanted))
        assert _table_of(ns, "-4", "198.51.100.7") == ("1" if earlier == "calico" else "local")
        [said] = backend.warnings
        assert "takes it" not in said
        if earlier == "anyip":
            assert ("the policy rule at priority 0, before table main, sends every lookup of "
                    "198.51.100.0/24 reaching it to table local, whose local route "
                    "198.51.100.0/24 dev lo table local holds it") in said
            assert "table 100" not in said
            return
        assert ("the policy rule at priority 100, before table main, sends every lookup of "
                "198.51.100.0/24 reaching it to table 100, whose route 198.51.100.0/24 dev d0 "
                "table 100") in said
        assert ("the rule at priority 99 before it may take some first" in said) == (
            earlier == "calico")


def _local(ns: str, family: str, address: str) -> bool:
    """Whether the kernel's lookup of ``address`` ends at a route of type local."""
    [found] = json.loads(ip(ns, "-j", family, "route", "get", address))
    return bool(found.get("type") == "local")


def test_a_route_an_anyip_route_of_table_local_takes_is_named_as_the_kernel_chooses(
        tmp_path: Path, driver: Driver) -> None:
    """An AnyIP route (``ip route add local 10.9.0.0/16 dev lo table local``) makes the
    node take every packet to its destination as its own: a route of k3snet's inside it
    carries nothing, and the warnings did not read table ``local``. IPv6 looks there
    first always; IPv4 keeps ``local`` and ``main`` merged until a policy rule is first
    added (the longer prefix of the two wins, the same prefix goes to ``local``): a
    warning names the route exactly when the kernel's own lookup (``ip route get``)
    ends in table local."""
    with d0_namespace("ranyip", "192.0.2.1/24", "2001:db8::1/64") as ns, \
            NetlinkBackend(ns, state_dir=tmp_path, driver=driver) as backend:
        wanted = State(owned=[Route("10.9.1.0/24", gateway="192.0.2.2"),
                              Route("10.8.1.0/24", gateway="192.0.2.2"),
                              Route("2001:db8:9:1::/64", gateway="2001:db8::2")])
        backend.expect(wanted)
        backend.apply(plan(backend.observe(), wanted))
        assert backend.warnings == ()
        # Another program's AnyIP routes, after k3snet's apply (the view follows them).
        ip(ns, "link", "set", "lo", "up")
        ip(ns, "route", "add", "local", "10.9.0.0/16", "dev", "lo", "table", "local")
        ip(ns, "route", "add", "local", "10.8.1.0/24", "dev", "lo", "table", "local")
        ip(ns, "-6", "route", "add", "local", "2001:db8:9::/48", "dev", "lo", "table", "local")
        # Merged: main's longer 10.9.1.0/24 wins over local's /16; local's /24 wins.
        assert not _local(ns, "-4", "10.9.1.7")
        assert _local(ns, "-4", "10.8.1.7")
        assert _local(ns, "-6", "2001:db8:9:1::7")
        backend.observe()  # as plan and the agent do (pyroute2 follows no change)
        said: tuple[str, ...] = backend.warnings  # not the () asserted before the change
        v4, v6 = said
        assert "route 10.8.1.0/24 via 192.0.2.2 table main" in v4
        assert ("the policy rule at priority 0, before table main, sends every lookup of "
                "10.8.1.0/24 reaching it to table local, whose local route 10.8.1.0/24 "
                "dev lo table local holds it (the node takes the packets as its own) "
                "(ip route show table local)") in v4
        assert "route 2001:db8:9:1::/64 via 2001:db8::2 table main" in v6
        assert "local route 2001:db8:9::/48 dev lo table local holds it" in v6
        # Any policy rule added, even one of other lookups: the tables are apart for
        # good, table local's /16 takes 10.9.1.0/24 too.
        ip(ns, "rule", "add", "to", "203.0.113.0/24", "lookup", "100", "pref", "100")
        ip(ns, "rule", "del", "pref", "100")
        ip(ns, "rule", "add", "to", "203.0.113.0/24", "lookup", "100", "pref", "100")
        assert _local(ns, "-4", "10.9.1.7")
        backend.observe()
        said = backend.warnings
        assert len(said) == 3, said
        assert "local route 10.9.0.0/16 dev lo table local holds it" in said[1]
        # Without them, nothing to say.
        ip(ns, "route", "del", "local", "10.9.0.0/16", "dev", "lo", "table", "local")
        ip(ns, "route", "del", "local", "10.8.1.0/24", "dev", "lo", "table", "local")
        ip(ns, "-6", "route", "del", "local", "2001:db8:9::/48", "dev", "lo", "table", "local")
        backend.observe()
        assert backend.warnings == ()


def test_table_local_is_read_without_a_dump_of_every_route_and_once_per_change(
        tmp_path: Path, driver: Driver, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading table local for the warnings cost the pyroute2 driver a dump of every
    route (it filters by table after decoding them all: seconds at 10 000 routes) at each
    look; it now keeps table local from the dump of every table it makes anyway. The
    socket driver dumps that table alone, and not again while no route changed."""
    with d0_namespace("rlocalc", "192.0.2.1/24") as ns, \
            NetlinkBackend(ns, state_dir=tmp_path, driver=driver) as backend:
        ip(ns, "link", "set", "lo", "up")
        ip(ns, "route", "add", "local", "198.51.100.0/24", "dev", "lo", "table", "local")
        wanted = State(owned=[Route("198.51.100.0/24", gateway="192.0.2.2"),
                              Route("198.51.101.0/24", gateway="192.0.2.2")])
        backend.expect(wanted)
        backend.apply(plan(backend.observe(), wanted))
        driver_object: Any = backend._driver
        reads: list[str] = []
        if driver == "pyroute2":
            dump = driver_object._dump

            def counted(ipr: Any, method: Any, **query: Any) -> Any:
                # pyroute2 wraps IPRoute.route as partial(run, AsyncIPRoute.route)
                wrapped = method.args[0] if getattr(method, "args", None) else method
                reads.append(wrapped.__name__)
                return dump(ipr, method, **query)

            monkeypatch.setattr(driver_object, "_dump", counted)
        else:
            local_routes = driver_object.local_routes

            def counted_local(*args: Any) -> Any:
                reads.append("local")
                return local_routes(*args)

            monkeypatch.setattr(driver_object, "local_routes", counted_local)
        for _ in range(2):  # the first: the socket driver's view after the apply's news
            backend.expect(wanted)
            backend.observe()
            reads.clear()
            [named] = backend.warnings
            assert "whose local route 198.51.100.0/24 dev lo table local holds it" in named
        assert "route" not in reads  # no dump of every route (pyroute2: rules alone)
        assert "local" not in reads  # the socket driver: nothing changed, not read again


def test_a_table_local_route_the_kernel_may_skip_as_link_down_is_not_named(
        tmp_path: Path, driver: Driver) -> None:
    """A route of table ``local`` whose device has lost its carrier (``linkdown``) is
    skipped by the kernel's lookup where ``ignore_routes_with_linkdown`` is set: the
    lookup goes on to ``main`` and k3snet's route carries the traffic, while the warning
    said table local's route took every lookup of it. A route flagged ``linkdown`` or
    ``dead`` is not sure to take anything: it names none."""
    with d0_namespace("rlinkdn", "192.0.2.1/24", "2001:db8::1/64") as ns, \
            NetlinkBackend(ns, state_dir=tmp_path, driver=driver) as backend:
        wanted = State(owned=[Route("2001:db8:9:1::/64", gateway="2001:db8::2")])
        backend.expect(wanted)
        backend.apply(plan(backend.observe(), wanted))
        ip(ns, "link", "set", "lo", "up")
        ip(ns, "link", "add", "d1", "type", "veth", "peer", "name", "d1p")
        ip(ns, "link", "set", "d1p", "up")
        ip(ns, "link", "set", "d1", "up")
        ip(ns, "-6", "route", "add", "2001:db8:9::/48", "dev", "d1", "table", "local")
        assert _table_of(ns, "-6", "2001:db8:9:1::7") == "local"
        backend.observe()
        [said] = backend.warnings
        assert "whose route 2001:db8:9::/48 dev d1 table local holds it" in said
        ip(ns, "link", "set", "d1p", "down")  # d1 loses its carrier: linkdown
        subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw",
                        "net.ipv6.conf.d1.ignore_routes_with_linkdown=1"], check=True)
        assert _table_of(ns, "-6", "2001:db8:9:1::7") == "main"
        backend.observe()
        assert backend.warnings == ()


def test_table_local_s_host_routes_longer_than_any_route_of_k3snet_s_are_not_decoded(
        tmp_path: Path, driver: Driver, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every address of the node has a host route in table local (kube-proxy's IPVS mode
    binds every service address: thousands): decoding them all tripled a cold plan's
    time at 7000 addresses, though a route longer than every route of k3snet's cannot
    hold one. They are left undecoded, but for a ``throw`` route, which sends some
    lookups on however long: the kernel's answer is kept."""
    with d0_namespace("rlocaln", "192.0.2.1/24") as ns, \
            NetlinkBackend(ns, state_dir=tmp_path, driver=driver) as backend:
        ip(ns, "link", "set", "lo", "up")
        subprocess.run(["ip", "-n", ns, "-b", "-"], check=True, input="".join(
            f"addr add 10.7.{i}.1/32 dev d0\n" for i in range(60)).encode())
        ip(ns, "rule", "add", "to", "203.0.113.0/24", "lookup", "100", "pref", "100")
        ip(ns, "route", "add", "local", "10.9.0.0/16", "dev", "lo", "table", "local")
        ip(ns, "route", "add", "throw", "10.9.1.5/32", "table", "local")
        wanted = State(owned=[Route("10.9.1.0/24", gateway="192.0.2.2")])
        backend.expect(wanted)
        backend.apply(plan(backend.observe(), wanted))
        driver_object: Any = backend._driver
        local_routes = driver_object.local_routes
        read: list[Any] = []

        def spied(*args: Any) -> Any:
            read[:] = local_routes(*args)
            return read

        monkeypatch.setattr(driver_object, "local_routes", spied)
        assert _table_of(ns, "-4", "10.9.1.5") == "main"  # the throw route sends it on
        backend.observe()
        assert backend.warnings == ()
        assert {network_text(r.destination) for r in read if r.destination.version == 4} == {
            "127.0.0.0/8", "10.9.0.0/16", "10.9.1.5/32"}
        ip(ns, "route", "del", "throw", "10.9.1.5/32", "table", "local")
        backend.observe()
        warned: tuple[str, ...] = backend.warnings  # not the () asserted before the change
        [said] = warned
        assert "whose local route 10.9.0.0/16 dev lo table local holds it" in said


def _apply_two_routes_beside_a_rule(ns: str, backend: NetlinkBackend) -> None:
    """k3snet's routes to 10.9.1.0/24 and 2001:db8:9:1::/64, applied; ``lo`` up, and a
    policy rule of other lookups added (IPv4's tables local and main apart)."""
    wanted = State(owned=[Route("10.9.1.0/24", gateway="192.0.2.2"),
                          Route("2001:db8:9:1::/64", gateway="2001:db8::2")])
    backend.expect(wanted)
    backend.apply(plan(backend.observe(), wanted))
    ip(ns, "link", "set", "lo", "up")
    ip(ns, "rule", "add", "to", "203.0.113.0/24", "lookup", "100", "pref", "100")

def test_a_multipath_table_local_route_with_every_nexthop_down_is_not_named(
        tmp_path: Path, driver: Driver) -> None:
    """A multipath route of table ``local`` whose nexthops lost their carrier one by one
    carries ``dead linkdown`` on each nexthop and nothing in its header (IPv4 and IPv6):
    with ``ignore_routes_with_linkdown`` set the kernel passes it by (``ip route get``
    ends in main), while the warning, reading the header's flags alone, said it took
    every lookup of k3snet's route."""
    with d0_namespace("rmpdown", "192.0.2.1/24", "2001:db8::1/64") as ns, \
            NetlinkBackend(ns, state_dir=tmp_path, driver=driver) as backend:
        _apply_two_routes_beside_a_rule(ns, backend)
        for i in (1, 2):
            ip(ns, "link", "add", f"m{i}", "type", "veth", "peer", "name", f"m{i}p")
            ip(ns, "link", "set", f"m{i}p", "up")
            ip(ns, "link", "set", f"m{i}", "up")
            ip(ns, "addr", "add", f"198.51.{i}.1/24", "dev", f"m{i}")
            ip(ns, "-6", "addr", "add", f"2001:db8:{i}::1/64", "dev", f"m{i}", "nodad")
            for family in ("ipv4", "ipv6"):
                subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw",
                                f"net.{family}.conf.m{i}.ignore_routes_with_linkdown=1"],
                               check=True)
        ip(ns, "route", "add", "10.9.0.0/16", "table", "local",
           "nexthop", "via", "198.51.1.3", "dev", "m1",
           "nexthop", "via", "198.51.2.3", "dev", "m2")
        ip(ns, "-6", "route", "add", "2001:db8:9::/48", "table", "local",
           "nexthop", "via", "2001:db8:1::3", "dev", "m1",
           "nexthop", "via", "2001:db8:2::3", "dev", "m2")
        assert _table_of(ns, "-4", "10.9.1.7") == "local"
        assert _table_of(ns, "-6", "2001:db8:9:1::7") == "local"
        backend.observe()
        warned: tuple[str, ...] = backend.warnings
        assert len(warned) == 2
        for i in (1, 2):
            ip(ns, "link", "set", f"m{i}p", "down")  # one by one: no flag in the header
        _wait_for_linkdown(ns, "-4", "10.9.0.0/16")
        _wait_for_linkdown(ns, "-6", "2001:db8:9::/48")
        [hdr4] = json.loads(ip(ns, "-j", "route", "show", "table", "local", "10.9.0.0/16"))
        assert "linkdown" not in hdr4.get("flags", [])
        assert _table_of(ns, "-4", "10.9.1.7") == "main"
        assert _table_of(ns, "-6", "2001:db8:9:1::7") == "main"
        backend.observe()
        assert backend.warnings == ()


def _wait_for_linkdown(ns: str, family: str, dst: str, bound: float = 30.0) -> None:
    """Return once the route of table local to ``dst`` (each nexthop of a multipath one)
    is flagged ``linkdown``: the kernel flags it when it handles the peer's loss of
    carrier, on its own time (the lookup took the route still, now and then, right after
    ``ip link set ... down``). ``bound`` only keeps a kernel that never gets there from
    hanging the test."""
    end = time.monotonic() + bound
    while not all("linkdown" in hop.get("flags", []) for hop in _hops(ns, family, dst)):
        if time.monotonic() > end:
            raise AssertionError(f"route {dst} of table local in {ns} never flagged linkdown")
        time.sleep(0.01)


def _hops(ns: str, family: str, dst: str) -> list[dict[str, Any]]:
    """The route of table local to ``dst`` as ``ip -j`` lists it: its nexthops (a
    multipath one's), else the route itself."""
    [route] = json.loads(ip(ns, "-j", family, "route", "show", "table", "local", dst))
    return list(route.get("nexthops") or [route])


def test_a_down_table_local_route_inside_an_anyip_route_leaves_the_anyip_route_named(
        tmp_path: Path, driver: Driver) -> None:
    """A route of table ``local`` passed by as down (``dead linkdown``) sends the lookup
    back to a shorter prefix of the same table, not to the next rule: an AnyIP route
    around it still takes every lookup (``ip route get`` says ``local``, IPv4 and IPv6),
    while the warnings took the down route as a ``throw`` one and named nothing."""
    with d0_namespace("rdownin", "192.0.2.1/24", "2001:db8::1/64") as ns, \
            NetlinkBackend(ns, state_dir=tmp_path, driver=driver) as backend:
        _apply_two_routes_beside_a_rule(ns, backend)
        ip(ns, "link", "add", "m1", "type", "veth", "peer", "name", "m1p")
        ip(ns, "link", "set", "m1p", "up")
        ip(ns, "link", "set", "m1", "up")
        ip(ns, "addr", "add", "198.51.1.1/24", "dev", "m1")
        ip(ns, "-6", "addr", "add", "2001:db8:1::1/64", "dev", "m1", "nodad")
        for family in ("ipv4", "ipv6"):
            subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw",
                            f"net.{family}.conf.m1.ignore_routes_with_linkdown=1"], check=True)
        ip(ns, "route", "add", "local", "10.9.0.0/16", "dev", "lo", "table", "local")
        ip(ns, "-6", "route", "add", "local", "2001:db8:9::/48", "dev", "lo", "table", "local")
        ip(ns, "route", "add", "10.9.1.0/24", "via", "198.51.1.3", "table", "local")
        ip(ns, "-6", "route", "add", "2001:db8:9:1::/64", "via", "2001:db8:1::3",
           "table", "local")
        ip(ns, "link", "set", "m1p", "down")
        _wait_for_linkdown(ns, "-4", "10.9.1.0/24")
        _wait_for_linkdown(ns, "-6", "2001:db8:9:1::/64")
        assert _local(ns, "-4", "10.9.1.7")
        assert _local(ns, "-6", "2001:db8:9:1::7")
        backend.observe()
        warned: tuple[str, ...] = backend.warnings
        assert len(warned) == 2
        assert any("local route 10.9.0.0/16 dev lo table local" in w for w in warned)
        assert any("local route 2001:db8:9::/48 dev lo table local" in w for w in warned)


def test_a_throw_route_of_table_local_wider_than_an_anyip_route_leaves_the_anyip_route_named(
        tmp_path: Path, driver: Driver) -> None:
    """Within one table the longest prefix wins: a ``throw`` route of table ``local``
    wider than an AnyIP route holding k3snet's destination sends no lookup of it on
    (``ip route get`` says ``local``), while the warnings took any throw route meeting
    the destination as sending it on and named nothing. A throw route inside the
    destination still sends part of it on: not named then."""
    with d0_namespace("rthrowl", "192.0.2.1/24", "2001:db8::1/64") as ns, \
            NetlinkBackend(ns, state_dir=tmp_path, driver=driver) as backend:
        _apply_two_routes_beside_a_rule(ns, backend)
        ip(ns, "route", "add", "throw", "10.0.0.0/8", "table", "local")
        ip(ns, "route", "add", "local", "10.9.0.0/16", "dev", "lo", "table", "local")
        ip(ns, "-6", "route", "add", "throw", "2001:db8::/32", "table", "local")
        ip(ns, "-6", "route", "add", "local", "2001:db8:9::/48", "dev", "lo", "table", "local")
        assert _local(ns, "-4", "10.9.1.7")
        assert _local(ns, "-6", "2001:db8:9:1::7")
        backend.observe()
        warned: tuple[str, ...] = backend.warnings
        assert len(warned) == 2, warned
        assert any("local route 10.9.0.0/16 dev lo table local holds it" in w for w in warned)
        assert any("local route 2001:db8:9::/48 dev lo table local holds it" in w
                   for w in warned)
        ip(ns, "route", "add", "throw", "10.9.1.128/25", "table", "local")
        ip(ns, "-6", "route", "add", "throw", "2001:db8:9:1::/65", "table", "local")
        assert _table_of(ns, "-4", "10.9.1.200") == "main"
        assert _table_of(ns, "-6", "2001:db8:9:1::7") == "main"
        backend.observe()
        assert backend.warnings == ()


def test_a_rule_whose_table_throws_every_lookup_back_is_not_said_to_take_some_first(
        tmp_path: Path, driver: Driver) -> None:
    """A rule to a table whose routes meeting the destination are all ``throw`` routes
    sends every lookup on (the kernel's lookup goes to the next rule): a later rule's
    warning said it "may take some first"."""
    with d0_namespace("rthrowt", "192.0.2.1/24") as ns, \
            NetlinkBackend(ns, state_dir=tmp_path, driver=driver) as backend:
        ip(ns, "route", "add", "throw", "10.9.0.0/16", "table", "200")
        ip(ns, "route", "add", "throw", "10.9.1.128/25", "table", "200")
        ip(ns, "rule", "add", "to", "10.9.0.0/16", "lookup", "200", "pref", "100")
        ip(ns, "rule", "add", "prohibit", "to", "10.9.1.0/24", "pref", "200")
        wanted = State(owned=[Route("10.9.1.0/24", gateway="192.0.2.2")])
        backend.expect(wanted)
        backend.apply(plan(backend.observe(), wanted))
        for address in ("10.9.1.7", "10.9.1.200"):
            refused = subprocess.run(["ip", "-n", ns, "route", "get", address],
                                     capture_output=True, text=True, check=False)
            assert "Permission denied" in refused.stderr  # table 200 threw it to prohibit
        [said] = backend.warnings
        assert "priority 200 (prohibit)" in said
        assert "may take some first" not in said
        # A unicast route of table 200 inside the destination: that rule may take some.
        ip(ns, "route", "add", "10.9.1.0/26", "dev", "d0", "table", "200")
        backend.observe()
        [said] = backend.warnings
        assert "the rule at priority 100 before it may take some first" in said


def test_a_wider_anyip_route_is_named_once_a_deleted_rule_split_tables_local_and_main(
        tmp_path: Path, driver: Driver) -> None:
    """IPv4 keeps tables ``local`` and ``main`` merged (the longer prefix of the two
    wins) until a policy rule is added or deleted; a rule added and deleted again
    leaves the rules a namespace starts with and the tables apart for good: an AnyIP
    route wider than k3snet's then takes every lookup (``ip route get`` ends in table
    local), and the warnings, seeing the default rules alone, took the tables as merged
    and named nothing. The kernel says which (``/proc/net/fib_triestat``: one trie
    shown as both tables while merged)."""
    with d0_namespace("rsplit", "192.0.2.1/24") as ns, \
            NetlinkBackend(ns, state_dir=tmp_path, driver=driver) as backend:
        wanted = State(owned=[Route("10.9.1.0/24", gateway="192.0.2.2")])
        backend.expect(wanted)
        backend.apply(plan(backend.observe(), wanted))
        ip(ns, "link", "set", "lo", "up")
        ip(ns, "route", "add", "local", "10.9.0.0/16", "dev", "lo", "table", "local")
        assert not _local(ns, "-4", "10.9.1.7")  # merged: main's longer prefix wins
        backend.observe()
        assert backend.warnings == ()
        ip(ns, "rule", "add", "to", "203.0.113.0/24", "lookup", "100", "pref", "100")
        ip(ns, "rule", "del", "pref", "100")
        assert _local(ns, "-4", "10.9.1.7")  # apart: table local is looked in first
        backend.observe()
        warned: tuple[str, ...] = backend.warnings  # not the () asserted before the change
        [said] = warned
        assert "route 10.9.1.0/24 via 192.0.2.2 table main" in said
        assert "local route 10.9.0.0/16 dev lo table local holds it" in said


def test_a_throw_route_of_table_local_at_the_very_prefix_is_named_while_the_tables_are_merged(
        tmp_path: Path, driver: Driver) -> None:
    """While IPv4 keeps tables ``local`` and ``main`` merged (no rule ever added or
    deleted) the kernel looks in the merged table and, after a ``throw`` route's answer,
    in table ``default`` alone (``fib_lookup``): one of table ``local`` at the very prefix of
    k3snet's route comes first in the slot (table local's before main's, whatever the
    metric), and every lookup fails (``ip route get``: "Network is unreachable"), which
    nothing named. Once the tables are apart the throw sends the lookup on to ``main``:
    not named then."""
    with d0_namespace("rthrowm", "192.0.2.1/24") as ns, \
            NetlinkBackend(ns, state_dir=tmp_path, driver=driver) as backend:
        wanted = State(owned=[Route("10.9.1.0/24", gateway="192.0.2.2")])
        backend.expect(wanted)
        backend.apply(plan(backend.observe(), wanted))
        ip(ns, "link", "set", "lo", "up")
        ip(ns, "route", "add", "throw", "10.9.1.0/24", "table", "local", "metric", "500")
        refused = subprocess.run(["ip", "-n", ns, "route", "get", "10.9.1.7"],
                                 capture_output=True, text=True, check=False)
        assert "Network is unreachable" in refused.stderr
        backend.observe()
        warned: tuple[str, ...] = backend.warnings
        [said] = warned
        assert "route 10.9.1.0/24 via 192.0.2.2 table main metric 0" in said
        assert ("merged with table main while no policy rule was ever added or deleted "
                "(/proc/net/fib_triestat), holds the throw route 10.9.1.0/24 table local at its "
                "very prefix, looked at first: the kernel ends the lookup of 10.9.1.0/24 there "
                "and looks in table default alone, unreachable without a route there") in said
        ip(ns, "rule", "add", "to", "203.0.113.0/24", "lookup", "100", "pref", "100")
        ip(ns, "rule", "del", "pref", "100")
        assert _table_of(ns, "-4", "10.9.1.7") == "main"
        backend.observe()
        assert backend.warnings == ()


def _count_triestat_reads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """The calls of the backend's ``fib_triestat`` reader from now on (each its
    arguments), the reader itself still answering."""
    reads: list[tuple[int, ...]] = []
    real = netlink_backend._ipv4_tables_merged

    def counted(*args: int) -> bool | None:
        reads.append(args)
        return real(*args)

    monkeypatch.setattr(netlink_backend, "_ipv4_tables_merged", counted)
    return reads


def test_fib_triestat_is_read_only_when_table_local_holds_a_route_the_judgement_hangs_on(
        tmp_path: Path, driver: Driver, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whether IPv4's tables local and main are merged (``/proc/net/fib_triestat``: the
    kernel walks every IPv4 route to write it) was read at every call, three times while
    apart: the agent's idle pass went from 0.4 ms to 1.6-3.1 ms at 18 000 routes. It is
    read now only when the answer hangs on it: table local holds an IPv4 route wider
    than a destination of k3snet's or a ``throw`` route at its very prefix (IPv6 merges
    no tables). An answer that read it is judged anew when one read says otherwise: a
    rule added and deleted between two calls leaves the same rules, the tables apart."""
    reads = _count_triestat_reads(monkeypatch)
    with d0_namespace("rtriest", "192.0.2.1/24", "2001:db8::1/64") as ns, \
            NetlinkBackend(ns, state_dir=tmp_path, driver=driver) as backend:
        wanted = State(owned=[Route("10.9.1.0/24", gateway="192.0.2.2"),
                              Route("2001:db8:5::/64", gateway="2001:db8::2")])
        backend.expect(wanted)
        backend.apply(plan(backend.observe(), wanted))
        ip(ns, "link", "set", "lo", "up")
        # Nothing the judgement hangs on: an AnyIP route inside the destination, an IPv6
        # throw route at the very prefix (the lookup goes on to main: ip route get).
        ip(ns, "route", "add", "local", "10.9.1.128/25", "dev", "lo", "table", "local")
        ip(ns, "-6", "route", "add", "throw", "2001:db8:5::/64", "table", "local")
        assert _table_of(ns, "-6", "2001:db8:5::7") == "main"
        backend.observe()
        assert backend.warnings == ()
        assert backend.warnings == ()
        assert reads == []
        # A throw route of table local at the very prefix while merged: read, named.
        ip(ns, "route", "add", "throw", "10.9.1.0/24", "table", "local")
        backend.observe()
        warned: tuple[str, ...] = backend.warnings  # not the () asserted before
        [said] = warned
        assert "holds the throw route 10.9.1.0/24 table local at its very prefix" in said
        assert reads == [()]
        again: tuple[str, ...] = backend.warnings
        assert again == (said,)  # the same answer: one read says the same
        assert reads == [(), (1,)]
        ip(ns, "rule", "add", "to", "203.0.113.0/24", "lookup", "100", "pref", "100")
        ip(ns, "rule", "del", "pref", "100")
        assert _table_of(ns, "-4", "10.9.1.7") == "main"
        assert backend.warnings == ()  # no observe between: the rules alike, judged anew


def test_a_merged_throw_route_of_table_local_sends_the_lookup_to_table_default_alone(
        tmp_path: Path, driver: Driver) -> None:
    """While IPv4's tables ``local`` and ``main`` are merged, a ``throw`` route's answer
    ends the merged table's lookup and the kernel looks in table ``default`` (253) alone
    (``fib_lookup``): a route of k3snet's there carries every packet (``ip route get``
    ends in table default), and the warnings said it carried none, "unreachable"."""
    with d0_namespace("rthrowd", "192.0.2.1/24") as ns, \
            NetlinkBackend(ns, state_dir=tmp_path, driver=driver, tables=[253]) as backend:
        wanted = State(owned=[Route("10.9.1.0/24", gateway="192.0.2.2", table=253)])
        backend.expect(wanted)
        backend.apply(plan(backend.observe(), wanted))
        ip(ns, "link", "set", "lo", "up")
        ip(ns, "route", "add", "throw", "10.9.1.0/24", "table", "local")
        [found] = json.loads(ip(ns, "-j", "route", "get", "10.9.1.7"))
        assert (found["table"], found["gateway"]) == ("default", "192.0.2.2")
        backend.observe()
        assert backend.warnings == ()


def test_fib_triestat_is_not_read_for_a_route_of_table_default_a_local_throw_sends_on(
        tmp_path: Path, driver: Driver, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``throw`` route of table local at the very prefix of a route of k3snet's in
    table ``default`` (253) leaves it every lookup merged or apart (merged: the lookup
    goes on to table default alone; apart: to the rules after local's), so the answer
    hangs not on whether the tables are merged: ``fib_triestat`` (the kernel walks every
    IPv4 route to write it) was read all the same, and again at every call after."""
    reads = _count_triestat_reads(monkeypatch)
    with d0_namespace("rthrowdr", "192.0.2.1/24") as ns, \
            NetlinkBackend(ns, state_dir=tmp_path, driver=driver, tables=[253]) as backend:
        wanted = State(owned=[Route("10.9.1.0/24", gateway="192.0.2.2", table=253)])
        backend.expect(wanted)
        backend.apply(plan(backend.observe(), wanted))
        ip(ns, "link", "set", "lo", "up")
        ip(ns, "route", "add", "throw", "10.9.1.0/24", "table", "local")
        assert _table_of(ns, "-4", "10.9.1.7") == "default"
        backend.observe()
        assert backend.warnings == ()
        assert backend.warnings == ()
        assert reads == []
