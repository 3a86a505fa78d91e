"""The route lookup against the kernel's: ``ip route get DST from SRC iif in0``.

Each case configures one policy-routing shape in a fresh namespace (veth pairs
``in0``, ``d1``, ``d2``, ``d3`` with both ends inside it, forwarding on,
``rp_filter`` off), asks the kernel for the input route of a forwarded packet and
:func:`k3snet.doctor.routing.lookup` for the same, from the namespace's own
``ip -j route show table all`` and ``ip -j rule``. The two must name the same
outcome: the output device of a unicast route, or no route (the kernel's error for
a blackhole, unreachable or prohibit outcome, the doctor's failing type).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from ipaddress import ip_address

import pytest

from k3snet.doctor.routing import lookup, parse_routes, parse_rules
from k3snet.lab.netns import run_in, temporary_netns

pytestmark = [pytest.mark.kernel]

#: name -> (family, ip commands, destination, source, mark)
CASES: dict[str, tuple[int, list[str], str, str, int]] = {
    "goto-unresolved-is-skipped": (4, [
        "ip rule add pref 100 goto 500", "ip rule add pref 200 blackhole",
        "ip route add 198.51.100.0/24 dev d1"], "198.51.100.7", "192.0.2.2", 0),
    "goto-jumps-over-rules": (4, [
        "ip rule add pref 100 goto 300", "ip rule add pref 200 blackhole",
        "ip rule add pref 300 lookup 100",
        "ip route add 198.51.100.0/24 dev d1 table 100"], "198.51.100.7", "192.0.2.2", 0),
    "nop-rule": (4, [
        "ip rule add pref 100 nop", "ip route add 198.51.100.0/24 dev d1"],
        "198.51.100.7", "192.0.2.2", 0),
    "route-with-tos-does-not-match-tos-0": (4, [
        "ip route add 198.51.100.0/24 tos 0x10 dev d1",
        "ip route add 198.51.100.0/24 dev d2 metric 100"], "198.51.100.7", "192.0.2.2", 0),
    "route-with-tos-falls-back-to-shorter": (4, [
        "ip route add 198.51.100.0/24 tos 0x10 dev d1",
        "ip route add default dev d2"], "198.51.100.7", "192.0.2.2", 0),
    "suppress-prefixlength-keeps-an-unreachable-route": (4, [
        "ip route add unreachable default table 100",
        "ip rule add pref 100 lookup 100 suppress_prefixlength 0",
        "ip route add 198.51.100.0/24 dev d1"], "198.51.100.7", "192.0.2.2", 0),
    "suppress-prefixlength-skips-a-default": (6, [
        "ip -6 rule add pref 100 lookup main suppress_prefixlength 0",
        "ip -6 rule add pref 200 lookup 100",
        "ip -6 route add default dev d1", "ip -6 route add default dev d2 table 100"],
        "2001:db8:99::7", "2001:db8::2", 0),
    "v6-source-specific-route-other-source": (6, [
        "ip -6 route add 2001:db8:99::/64 from 2001:db8:42::/64 dev d1",
        "ip -6 route add 2001:db8:99::/64 dev d2 metric 2048"], "2001:db8:99::7",
        "2001:db8::2", 0),
    "v6-source-specific-route-beats-a-lower-metric": (6, [
        "ip -6 route add 2001:db8:99::/64 from 2001:db8:42::/64 dev d1 metric 2048",
        "ip -6 route add 2001:db8:99::/64 dev d2"], "2001:db8:99::7", "2001:db8:42::2", 0),
    "v6-source-specific-route-only": (6, [
        "ip -6 route add 2001:db8:99::/64 from 2001:db8:42::/64 dev d1",
        "ip -6 route add 2001:db8:98::/47 dev d3"], "2001:db8:99::7", "2001:db8::2", 0),
    "v6-source-specific-default-other-source": (6, [
        "ip -6 route add default from 2001:db8:42::/64 dev d1",
        "ip -6 route add default dev d2 metric 2000"], "2001:db8:99::7", "2001:db8::2", 0),
    "v6-source-specific-default": (6, [
        "ip -6 route add default from 2001:db8:42::/64 dev d1",
        "ip -6 route add default dev d2 metric 2000"], "2001:db8:99::7", "2001:db8:42::2", 0),
    "tos-rule-does-not-match-tos-0": (4, [
        "ip rule add pref 100 tos 0x10 lookup 100",
        "ip route add 198.51.100.0/24 dev d1 table 100",
        "ip route add 198.51.100.0/24 dev d2"], "198.51.100.7", "192.0.2.2", 0),
    "fwmark-with-mask": (4, [
        "ip rule add pref 100 fwmark 0x10/0xf0 lookup 100",
        "ip route add 198.51.100.0/24 dev d1 table 100",
        "ip route add 198.51.100.0/24 dev d2"], "198.51.100.7", "192.0.2.2", 0x13),
    "not-from": (4, [
        "ip rule add pref 100 not from 192.0.2.0/30 lookup 100",
        "ip route add 198.51.100.0/24 dev d1 table 100",
        "ip route add 198.51.100.0/24 dev d2"], "198.51.100.7", "192.0.2.2", 0),
    "throw-falls-through": (4, [
        "ip rule add pref 100 lookup 100",
        "ip route add throw 198.51.100.0/24 table 100", "ip route add default dev d3 table 100",
        "ip route add 198.51.100.0/24 dev d1"], "198.51.100.7", "192.0.2.2", 0),
    "v6-prohibit-rule": (6, [
        "ip -6 rule add pref 100 to 2001:db8:99::/48 prohibit",
        "ip -6 route add 2001:db8:99::/64 dev d1"], "2001:db8:99::7", "2001:db8::2", 0),
    "v6-lower-metric": (6, [
        "ip -6 route add 2001:db8:99::/64 dev d1 metric 500",
        "ip -6 route add 2001:db8:99::/64 dev d2 metric 100"], "2001:db8:99::7", "2001:db8::2",
        0),
    "iif-rule": (4, [
        "ip rule add pref 100 iif in0 lookup 100",
        "ip route add 198.51.100.0/24 dev d1 table 100",
        "ip route add 198.51.100.0/24 dev d2"], "198.51.100.7", "192.0.2.2", 0),
}


@pytest.fixture
def namespace() -> Iterator[str]:
    """A namespace with ``in0``, ``d1``, ``d2``, ``d3`` up and addressed, forwarding on."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    with temporary_netns("route") as ns:
        run_in(ns, ["ip", "link", "set", "lo", "up"])
        for index, device in enumerate(("in0", "d1", "d2", "d3")):
            run_in(ns, ["ip", "link", "add", device, "type", "veth", "peer", "name",
                        f"{device}p"])
            run_in(ns, ["ip", "addr", "add", f"192.0.2.{1 + 4 * index}/30", "dev", device])
            run_in(ns, ["ip", "-6", "addr", "add", f"2001:db8:{index}::1/64", "dev",
                        device, "nodad"])
            for name in (device, f"{device}p"):
                run_in(ns, ["ip", "link", "set", name, "up"])
        run_in(ns, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1",
                    "net.ipv6.conf.all.forwarding=1", "net.ipv4.conf.all.rp_filter=0",
                    "net.ipv4.conf.in0.rp_filter=0"])
        yield ns


def _kernel(ns: str, family: int, dst: str, src: str, mark: int) -> str:
    argv = ["ip", f"-{family}", "-j", "route", "get", dst, "from", src, "iif", "in0"]
    result = run_in(ns, [*argv, *(["mark", str(mark)] if mark else [])], check=False)
    if result.returncode != 0:
        return "no route"
    route = json.loads(result.stdout)[0]
    return f"{route.get('type', 'unicast')} dev {route.get('dev')}"


def _doctor(ns: str, family: int, dst: str, src: str, mark: int) -> str:
    routes = parse_routes(json.loads(run_in(
        ns, ["ip", f"-{family}", "-j", "route", "show", "table", "all"]).stdout), family)
    rules = parse_rules(json.loads(run_in(ns, ["ip", f"-{family}", "-j", "rule"]).stdout),
                        family)
    found = lookup(routes, rules, ip_address(dst), src=ip_address(src), iif="in0", mark=mark)
    if found.type in ("blackhole", "unreachable", "prohibit", "none"):
        return "no route"
    if found.route is None:
        return f"{found.type}: {found.describe()}"
    return f"{found.type} dev {found.route.device}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_lookup_picks_the_route_the_kernel_picks(namespace: str, case: str) -> None:
    family, commands, dst, src, mark = CASES[case]
    for command in commands:
        run_in(namespace, command.split())
    assert _doctor(namespace, family, dst, src, mark) == _kernel(namespace, family, dst, src,
                                                                  mark)
