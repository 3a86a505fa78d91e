"""``RoutedBy.cover``: exactly the destinations routed by the devices a match may name.

A drop by interface alone meets what the node routes by that interface; the cover was
the one smallest prefix holding those routes, so a node with Docker's ``172.17.0.0/16``
beside the pods' ``10.42.0.0/24`` covered every address for ``! -o eth0`` and a drop of
what leaves by another device than the uplink was a false conflict. Now it is the fewest
prefixes holding exactly those addresses (up to ``MOST_PREFIXES``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from k3snet.backends import routed as routed_module
from k3snet.backends.iptables.foreign import foreign_blocks
from k3snet.backends.iptables.save import parse_save
from k3snet.backends.routed import MOST_PREFIXES, RoutedBy
from k3snet.model import ForwardBlock, ForwardRule
from tests.examples import examples

_DEVICES = ("cni0", "docker0", "eth0", "flannel.1", None)
# Small IPv4 prefixes inside 10.0.0.0/8 and 172.16.0.0/12, lengths 8 to 30: many
# adjacent, nested and overlapping ones.
_ROUTES = st.lists(st.tuples(
    st.builds(lambda top, low, length: ipaddress.ip_network(
        ((top << 24) | (low << 8), length), strict=False),
        st.sampled_from([10, 172]), st.integers(0, 0xFFFF), st.integers(8, 30)),
    st.sampled_from(_DEVICES)), min_size=1, max_size=12)


def _passes(match: str | None, device: str) -> bool:
    if match is None:
        return True
    return device.startswith(match[:-1]) if match.endswith("+") else device == match


@settings(max_examples=examples(300))
@given(_ROUTES, st.sampled_from(["cni0", "docker0", "flannel+", None]),
       st.lists(st.sampled_from(["eth0", "cni0", "docker+"]), max_size=2))
def test_the_cover_holds_exactly_the_addresses_routed_by_the_devices_the_matches_let_through(
        routes: list[tuple[ipaddress.IPv4Network, str | None]], interface: str | None,
        negated: list[str]) -> None:
    cover = RoutedBy(routes).cover(4, interface, negated)
    meeting = [(net, dev) for net, dev in routes if dev is None or (
        _passes(interface, dev) and not any(_passes(m, dev) for m in negated))]
    if not any(dev is not None for _, dev in meeting):
        assert cover is None  # no route names such a device: it may get any one later
        return
    assert cover == _expected([net for net, _ in meeting])


def _expected(nets: list[ipaddress.IPv4Network]) -> tuple[ipaddress.IPv4Network, ...] | None:
    """The routes collapsed; more than ``MOST_PREFIXES``: each widened to the longest
    length at which at most that many networks remain, then collapsed (``None``: every
    address)."""
    found = _widened_oracle(list(nets), MOST_PREFIXES)
    return None if found is None else tuple(ipaddress.IPv4Network(net) for net in found)


# Many routes of a few devices, inside two /16s: more than MOST_PREFIXES once collapsed.
_MANY = st.lists(st.tuples(
    st.builds(lambda top, low, length: ipaddress.ip_network(
        ((top << 16) | low, length), strict=False),
        st.sampled_from([(10 << 8) | 244, (172 << 8) | 17]), st.integers(0, 0xFFFF),
        st.integers(20, 32)),
    st.sampled_from(["cali1", "cali2", "tunl0", "docker0"])), min_size=17, max_size=60)


@settings(max_examples=examples(100))
@given(_MANY)
def test_more_routes_than_most_prefixes_are_widened_to_the_longest_length_that_fits(
        routes: list[tuple[ipaddress.IPv4Network, str]]) -> None:
    """Past ``MOST_PREFIXES`` the cover holds more than the routes, never less, and no
    more than widening each to the longest length at which so few remain: a node with
    Calico's routes beside Docker's ``172.17.0.0/16`` keeps them apart (the one network
    holding both was every address)."""
    cover = RoutedBy([*routes, ("0.0.0.0/0", "eth0")]).cover(4, None, ["eth0"])
    assert cover == _expected([net for net, _ in routes])
    assert cover is not None
    assert len(cover) <= MOST_PREFIXES
    assert all(any(isinstance(wide, ipaddress.IPv4Network) and net.subnet_of(wide)
                   for wide in cover) for net, _ in routes)


def test_routes_of_two_devices_no_one_prefix_holds_but_every_address_stay_two() -> None:
    routed = RoutedBy([("10.42.0.0/24", "cni0"), ("172.17.0.0/16", "docker0"),
                       ("0.0.0.0/0", "eth0"), ("10.42.1.0/24", "flannel.1")])
    assert [str(n) for n in routed.cover(4, None, ["eth0"]) or ()] == [
        "10.42.0.0/23", "172.17.0.0/16"]
    assert routed.cover(4, None, ["cni0"]) is None  # the default route's: any address
    many = RoutedBy([(f"10.{i}.0.0/16", "cni0") for i in range(0, 2 * MOST_PREFIXES + 2, 2)])
    # 10.0 to 10.32 by twos, widened to /14: 10.0.0.0/11 holds the first 16, 10.32 its own
    assert [str(n) for n in many.cover(4, "cni0") or ()] == ["10.0.0.0/11", "10.32.0.0/14"]


# A Calico node (IPIP): a /32 per local pod by its cali device, a /26 block per other
# node by tunl0, beside Docker's docker0 and the uplink's default route.
CALICO = [("0.0.0.0/0", "eth0"), ("192.168.1.0/24", "eth0"), ("172.17.0.0/16", "docker0"),
          *((f"10.244.{i}.0/26", "tunl0") for i in range(1, 9)),
          *((f"10.244.0.{3 * i + 1}/32", f"cali{i:04x}") for i in range(20))]


def test_a_drop_of_what_leaves_by_another_device_on_a_calico_node_beside_docker_is_no_conflict(
        ) -> None:
    """``-i cali+ ! -o eth0 -j DROP`` (the pods leave by the uplink only): more than
    MOST_PREFIXES routes by the other devices were summed up as the one network holding
    them all, every address, and the pods' connection out by eth0 was a conflict."""
    routed = RoutedBy(CALICO)
    cover = routed.cover(4, None, ["eth0"])
    assert cover is not None
    assert ipaddress.ip_network("172.17.0.0/16") in cover
    assert all(not net.overlaps(ipaddress.ip_network("192.168.2.0/24")) for net in cover)
    text = ("*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -i cali+ ! -o eth0 -j DROP\n"
            "COMMIT\n")
    dump = parse_save(text).get("filter")
    assert dump is not None
    blocks = [b for b in foreign_blocks(dump, 4, 1, routed=routed) if isinstance(b, ForwardBlock)]
    assert blocks
    assert not any(b.decides(ForwardRule("10.244.0.0/16", "192.168.2.0/24",
                                         out_interface="eth0")) for b in blocks)
    # What leaves by another device is still met: a pod's packet to another node's pod.
    assert any(b.decides(ForwardRule("10.244.0.4/32", "10.244.1.0/26")) for b in blocks)


# Sixteen bridges beside the uplink's default route.
BRIDGES = [("0.0.0.0/0", "eth0"), *((f"10.{8 * i}.0.0/16", f"br{i}") for i in range(16))]


def _between_bridges_blocks(backend: str) -> list[ForwardBlock]:
    """The blocks of a drop of what neither comes in nor leaves by the uplink."""
    routed = RoutedBy(BRIDGES)
    if backend == "iptables":
        text = "*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD ! -i eth0 ! -o eth0 -j DROP\nCOMMIT\n"
        dump = parse_save(text).get("filter")
        assert dump is not None
        return [b for b in foreign_blocks(dump, 4, 1, routed=routed)
                if isinstance(b, ForwardBlock)]
    from k3snet.backends.nftables.parse import ForeignReader  # noqa: PLC0415
    from tests.nftables.test_foreign_cases import DROP, Kernel, meta  # noqa: PLC0415

    rule = [meta("iifname", "eth0", "!="), meta("oifname", "eth0", "!="), DROP]
    kernel = Kernel({("ip", "filter", "FORWARD"): ("forward", "accept", [rule])})
    return [o for o in ForeignReader(kernel, frozenset(), routed=routed).read()
            if isinstance(o, ForwardBlock)]


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_a_drop_by_both_interfaces_makes_at_most_most_prefixes_blocks(backend: str) -> None:
    """``! -i eth0 ! -o eth0 -j DROP`` on a node with 16 bridges: the source's and the
    destination's covers, 16 prefixes each, made 256 blocks of one rule, each judged
    against every wanted rule by the planner (20 such rules and 200 wanted rules: 2.7 s
    to plan, 0.3 s now). The source's cover is widened to keep the pairs at most
    MOST_PREFIXES; the destination's stays exact."""
    blocks = _between_bridges_blocks(backend)
    assert 0 < len(blocks) <= MOST_PREFIXES
    assert {str(b.destination) for b in blocks} == {net for net, _ in BRIDGES[1:]}
    # the pods' connection out by the uplink is not met, one between two bridges is
    assert not any(b.decides(ForwardRule("10.0.0.0/16", "192.168.2.0/24",
                                         out_interface="eth0")) for b in blocks)
    assert any(b.decides(ForwardRule("10.0.0.0/16", "10.8.0.0/16")) for b in blocks)


def _whole_space(bits: int) -> st.SearchStrategy[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Prefixes anywhere in the family's space: host routes spread over all of it, the
    edges of the two halves next to ``/0`` (``0.0.0.0/1`` and ``128.0.0.0/1``), short ones
    and any length."""
    top = (1 << bits) - 1
    kind = ipaddress.IPv4Network if bits == 32 else ipaddress.IPv6Network
    addresses = st.one_of(st.integers(0, top),
                          st.sampled_from([0, top, 1 << (bits - 1), (1 << (bits - 1)) - 1]))
    lengths = st.one_of(st.just(bits), st.integers(0, 3), st.integers(0, bits))
    return st.builds(lambda address, length: kind((address, length), strict=False),
                     addresses, lengths)


_ANYWHERE = st.sampled_from([32, 128]).flatmap(lambda bits: st.lists(
    st.tuples(_whole_space(bits), st.sampled_from(["br0", "br1", "eth0"])),
    min_size=1, max_size=40))


def _widened_oracle(nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
                    most: int) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] | None:
    """:func:`_expected` of either family and any ``most``."""
    exact: list[Any] = list(ipaddress.collapse_addresses(nets))  # type: ignore[type-var]
    for length in range(exact[0].max_prefixlen, -1, -1):
        widened = {net.supernet(new_prefix=length) if net.prefixlen > length else net
                   for net in exact}
        if len(widened) <= most:
            found = tuple(ipaddress.collapse_addresses(widened))
            return None if found[0].prefixlen == 0 else found
    raise AssertionError("unreachable: at length 0 one network remains")


@settings(max_examples=examples(150))
@given(_ANYWHERE, st.sampled_from(["br0", "br+", None]), st.integers(-2, 2 * MOST_PREFIXES))
def test_a_cover_widened_past_most_holds_every_route_it_replaces_in_either_family(
        routes: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]],
        interface: str | None, most: int) -> None:
    """Widened, a cover is the safe side: every network holds whole routes it replaces
    (a narrower one would leave some destinations of the drop unmet, a wrong "no
    conflict"), at most ``most`` of them (1 to MOST_PREFIXES), disjoint, and no wider
    than the longest length at which so few remain. IPv4 and IPv6, routes anywhere:
    host routes spread over the whole space, the halves next to ``/0``."""
    family = 4 if routes[0][0].version == 4 else 6
    link_local = ipaddress.IPv6Network("fe80::/10")
    routes = [(net, dev) for net, dev in routes if not net.is_multicast  # left out, and
              and not (net.version == 6 and net.subnet_of(link_local))]  # for want of others
    cover = RoutedBy(routes).cover(family, interface, ["eth0"], most=most)
    meeting = [net for net, dev in routes if _passes(interface, dev) and dev != "eth0"]
    if not meeting:
        assert cover is None
        return
    fits = max(1, min(most, MOST_PREFIXES))
    assert cover == _widened_oracle(meeting, fits)
    if cover is not None:  # None: every address, which holds them all
        assert len(cover) <= fits
        wides: list[Any] = list(cover)  # one family: the routes'
        assert list(ipaddress.collapse_addresses(wides)) == wides
        assert all(any(net.subnet_of(wide) for wide in wides) for net in meeting)


def test_the_same_cover_asked_again_is_worked_out_once_and_another_gets_its_own(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The routes are read once and never change: every drop by interface alone of an
    observe asks the same cover (at 10 000 routes tens of ms each), given again; a
    different question (family, interface, negated names, most) gets its own answer,
    the one a fresh read gives."""
    worked: list[int] = []
    collapsed = routed_module._collapsed

    def counted(found: Iterable[tuple[int, int]], bits: int) -> list[tuple[int, int]]:
        worked.append(bits)
        return collapsed(found, bits)

    monkeypatch.setattr(routed_module, "_collapsed", counted)
    routed = RoutedBy(CALICO)
    first = routed.cover(4, None, ["eth0"])
    assert routed.cover(4, None, ("eth0",)) == first
    assert len(worked) == 1
    questions: list[tuple[int, str | None, list[str], int]] = [
        (4, None, ["eth0"], 4), (4, None, ["eth0", "docker0"], 16), (4, "docker0", [], 16),
        (4, "tunl0", [], 1), (6, None, ["eth0"], 16)]
    for family, interface, negated, most in questions:
        answer = routed.cover(family, interface, negated, most=most)
        assert answer == RoutedBy(CALICO).cover(family, interface, negated, most=most)
        assert routed.cover(family, interface, negated, most=most) == answer
    assert routed.cover(4, None, ["eth0"], most=4) != first


def test_a_route_holding_more_than_link_local_addresses_counts_as_any_other() -> None:
    """``fe80::/9`` starts with the link-local bits but holds ``fec0::/10`` too: it was
    left out beside a global route, a cover narrower than the routes."""
    cover = RoutedBy([("fe80::/9", "br0"), ("2001:db8::/32", "br0")]).cover(6, "br0")
    assert cover is not None
    assert any(ipaddress.ip_network("fec0::/10").subnet_of(net)  # type: ignore[arg-type]
               for net in cover)
    assert RoutedBy([("fe80::/64", "br0"), ("2001:db8::/32", "br0")]).cover(6, "br0") == (
        ipaddress.ip_network("2001:db8::/32"),)
