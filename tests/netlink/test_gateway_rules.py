"""``check`` judges a gateway where the kernel looks it up, the administrator's policy
rules included: a gateway on-link only in a table an ``ip rule`` sends the lookup to
(``ip rule add to 10.9.0.0/24 lookup 200``) is taken by the kernel
(``fib_check_nh_v4_gw`` and ``ip6_route_check_nh`` look through the rules), and
``check`` refused it, so ``k3snet apply --dry-run`` failed a plan the apply makes. A
rule the lookup cannot match (a source prefix: the lookup has no source address)
still leaves the gateway refused, by both. The kernel's view is ``ip -j route``.

Both drivers: the pyroute2 one read no rules (``check`` judged by the rules a namespace
starts with), and refused what the kernel takes and the socket driver passes.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from k3snet.backends.netlink import NetlinkBackend
from k3snet.backends.netlink.codec import rule_dump_request
from k3snet.errors import ApplyError
from k3snet.model import Route, State
from k3snet.planner import plan
from tests.netlink.links import d0_namespace, ip
from tests.netlink.test_backend import DRIVERS, Driver

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root"),
              pytest.mark.parametrize("driver", DRIVERS)]


def _listed(ns: str) -> set[tuple[str, str | None, str]]:
    return {(r["dst"], r.get("gateway"), str(r.get("table", "main")))
            for family in ("-4", "-6")
            for r in json.loads(ip(ns, "-j", family, "route", "show", "table", "all"))
            if r.get("protocol") == "211"}


def test_a_gateway_on_link_through_an_administrators_rule_passes_check_as_the_kernel_takes_it(
        tmp_path: Path, driver: Driver) -> None:
    with d0_namespace("gwrule") as ns, \
            NetlinkBackend(ns, state_dir=tmp_path, driver=driver) as backend:
        ip(ns, "route", "add", "10.9.0.0/24", "dev", "d0", "table", "200")
        ip(ns, "rule", "add", "to", "10.9.0.0/24", "lookup", "200", "pref", "100")
        ip(ns, "-6", "route", "add", "fd09::/64", "dev", "d0", "table", "201")
        ip(ns, "-6", "rule", "add", "to", "fd09::/64", "lookup", "201", "pref", "100")
        wanted = State(owned=[
            Route("192.168.7.0/24", gateway="10.9.0.1"),
            Route("192.168.8.0/24", gateway="10.9.0.1", device="d0", table=100),
            Route("fd07::/64", gateway="fd09::1", device="d0"),
        ])
        p = plan(backend.observe(), wanted)
        assert backend.check(p) == ()
        backend.apply(p)
        assert _listed(ns) == {("192.168.7.0/24", "10.9.0.1", "main"),
                               ("192.168.8.0/24", "10.9.0.1", "100"),
                               ("fd07::/64", "fd09::1", "main")}
        backend.apply(plan(backend.observe(), State()))
        assert _listed(ns) == set()


def test_a_rule_the_gateways_lookup_cannot_match_leaves_it_refused_by_check_and_kernel(
        tmp_path: Path, driver: Driver) -> None:
    with d0_namespace("gwrulx") as ns, \
            NetlinkBackend(ns, state_dir=tmp_path, driver=driver) as backend:
        ip(ns, "route", "add", "10.9.0.0/24", "dev", "d0", "table", "200")
        ip(ns, "rule", "add", "from", "10.1.0.0/16", "to", "10.9.0.0/24", "lookup", "200")
        ip(ns, "rule", "add", "fwmark", "7", "lookup", "200")
        ip(ns, "rule", "add", "oif", "d0p", "lookup", "200")
        p = plan(backend.observe(), State(owned=[Route("192.168.7.0/24", gateway="10.9.0.1",
                                                       device="d0")]))
        [problem] = backend.check(p)
        assert "gateway 10.9.0.1 is not on-link" in problem
        with pytest.raises(ApplyError):
            backend.apply(p)
        assert _listed(ns) == set()


def test_a_reject_rule_before_the_table_holding_the_gateway_fails_check_as_the_kernel_refuses(
        tmp_path: Path, driver: Driver) -> None:
    """The kernel walks the rules in priority order: a ``prohibit`` (``unreachable``,
    ``blackhole``) rule matching the gateway before ``main`` ends its lookup there, and
    the route add is refused ("Nexthop has invalid gateway"), while ``check`` took any
    table of any rule, ``main`` too, and said nothing."""
    with d0_namespace("gwrulp", "10.9.0.5/24", "fd09::5/64") as ns, \
            NetlinkBackend(ns, state_dir=tmp_path, driver=driver) as backend:
        ip(ns, "rule", "add", "prohibit", "to", "10.9.0.0/24", "pref", "100")
        ip(ns, "-6", "rule", "add", "unreachable", "to", "fd09::/64", "pref", "100")
        for wanted in (Route("192.168.7.0/24", gateway="10.9.0.1"),
                       # IPv6 looks in the route's own table first (main would answer).
                       Route("fd07::/64", gateway="fd09::1", device="d0", table=100)):
            p = plan(backend.observe(), State(owned=[wanted]))
            [problem] = backend.check(p)
            assert f"gateway {wanted.gateway} is not on-link" in problem
            assert "priority 100" in problem
            with pytest.raises(ApplyError):
                backend.apply(p)
            assert _listed(ns) == set()


def test_a_table_rule_before_a_reject_rule_passes_check_as_the_kernel_takes_it(
        tmp_path: Path, driver: Driver) -> None:
    """The first rule whose table answers decides: a rule to a table holding the gateway
    before the ``prohibit`` one, and a ``prohibit`` rule after ``main`` (which holds it),
    leave it on-link for both; a ``goto`` over the reject rule too (not followed:
    what comes after it is only what may stop the lookup)."""
    with d0_namespace("gwrulq", "10.9.0.5/24") as ns, \
            NetlinkBackend(ns, state_dir=tmp_path, driver=driver) as backend:
        ip(ns, "route", "add", "10.8.0.0/24", "dev", "d0", "table", "200")
        ip(ns, "rule", "add", "to", "10.8.0.0/24", "lookup", "200", "pref", "100")
        ip(ns, "rule", "add", "prohibit", "to", "10.8.0.0/16", "pref", "200")
        ip(ns, "rule", "add", "prohibit", "to", "10.9.0.0/24", "pref", "32800")
        ip(ns, "route", "add", "10.7.0.0/24", "dev", "d0", "table", "201")
        ip(ns, "rule", "add", "to", "10.7.0.0/24", "goto", "300", "pref", "150")
        ip(ns, "rule", "add", "prohibit", "to", "10.7.0.0/24", "pref", "250")
        ip(ns, "rule", "add", "to", "10.7.0.0/24", "lookup", "201", "pref", "300")
        wanted = State(owned=[Route("192.168.7.0/24", gateway="10.8.0.1"),
                              Route("192.168.8.0/24", gateway="10.9.0.1"),
                              Route("192.168.9.0/24", gateway="10.7.0.1")])
        p = plan(backend.observe(), wanted)
        assert backend.check(p) == ()
        backend.apply(p)
        assert _listed(ns) == {("192.168.7.0/24", "10.8.0.1", "main"),
                               ("192.168.8.0/24", "10.9.0.1", "main"),
                               ("192.168.9.0/24", "10.7.0.1", "main")}


# A family the kernel keeps no policy rules of: its rules dump is refused with
# EAFNOSUPPORT, as an IPv6 one is on a kernel booted with ipv6.disable=1 (no IPv6 rules
# registered; the sysctl disable_ipv6 leaves them readable).
_NO_RULES_FAMILY = 28  # AF_MPLS


def _ipv6_rules_refused(monkeypatch: pytest.MonkeyPatch, backend: NetlinkBackend,
                        driver: Driver) -> None:
    """Each driver's IPv6 rules dump asks for a family without rules, as the kernel
    refuses it with IPv6 off at boot."""
    if driver == "socket":
        monkeypatch.setattr(
            "k3snet.backends.netlink.socket_driver.rule_dump_request",
            lambda family: rule_dump_request(
                _NO_RULES_FAMILY if family == socket.AF_INET6 else family))
        return
    driver_object: Any = backend._driver
    real_dump = driver_object._dump

    def dump(ipr: Any, method: Any, **query: Any) -> Any:
        if getattr(method, "__name__", "") == "rule" and query.get("family") == socket.AF_INET6:
            query["family"] = _NO_RULES_FAMILY
        return real_dump(ipr, method, **query)

    monkeypatch.setattr(driver_object, "_dump", dump)


def test_ipv6_off_at_boot_leaves_the_ipv4_rules_judging_gateways_as_the_kernel_does(
        tmp_path: Path, driver: Driver, monkeypatch: pytest.MonkeyPatch) -> None:
    """With IPv6 off at boot the kernel refuses the IPv6 rules dump (``EAFNOSUPPORT``)
    after the IPv4 one answered: the socket driver dropped the IPv4 rules with it, so
    ``check`` judged gateways by the rules a namespace starts with (refusing one an
    administrator's rule makes on-link, which the kernel takes, and passing one a
    ``prohibit`` rule refuses, which the kernel refuses), and every plan warned that
    the rules could not be read. No IPv6 rules is what such a kernel has, as the pyroute2
    driver read it."""
    with d0_namespace("gwrul6", "10.8.0.5/24") as ns, \
            NetlinkBackend(ns, state_dir=tmp_path, driver=driver) as backend:
        ip(ns, "route", "add", "10.9.0.0/24", "dev", "d0", "table", "200")
        ip(ns, "rule", "add", "to", "10.9.0.0/24", "lookup", "200", "pref", "100")
        ip(ns, "rule", "add", "prohibit", "to", "10.8.0.0/24", "pref", "101")
        _ipv6_rules_refused(monkeypatch, backend, driver)
        refused = plan(backend.observe(), State(owned=[Route("192.168.8.0/24",
                                                             gateway="10.8.0.1")]))
        [problem] = backend.check(refused)
        assert "gateway 10.8.0.1 is not on-link" in problem
        assert "priority 101" in problem
        with pytest.raises(ApplyError):
            backend.apply(refused)
        wanted = State(owned=[Route("192.168.7.0/24", gateway="10.9.0.1")])
        backend.expect(wanted)
        taken = plan(backend.observe(), wanted)
        assert backend.check(taken) == ()
        backend.apply(taken)
        assert backend.warnings == ()
        assert _listed(ns) == {("192.168.7.0/24", "10.9.0.1", "main")}
