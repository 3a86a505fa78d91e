"""``RoutedBy.cover``: exactly the destinations routed by the devices a match may name.

A drop by interface alone meets what the node routes by that interface; the cover was
the one smallest prefix holding those routes, so a node with Docker's ``172.17.0.0/16``
beside the pods' ``10.42.0.0/24`` covered every address for ``! -o eth0`` and a drop of
what leaves by another device than the uplink was a false conflict. Now it is the fewest
prefixes holding exactly those addresses (up to ``MOST_PREFIXES``).
"""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from k3snet.backends.routed import MOST_PREFIXES, RoutedBy
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
    exact = list(ipaddress.collapse_addresses(net for net, _ in meeting))
    if len(exact) > MOST_PREFIXES:
        (wide,) = cover or (ipaddress.IPv4Network("0.0.0.0/0"),)
        assert isinstance(wide, ipaddress.IPv4Network)
        assert all(net.subnet_of(wide) for net in exact)  # one prefix holding more
        return
    assert cover == tuple(exact)


def test_routes_of_two_devices_no_one_prefix_holds_but_every_address_stay_two() -> None:
    routed = RoutedBy([("10.42.0.0/24", "cni0"), ("172.17.0.0/16", "docker0"),
                       ("0.0.0.0/0", "eth0"), ("10.42.1.0/24", "flannel.1")])
    assert [str(n) for n in routed.cover(4, None, ["eth0"]) or ()] == [
        "10.42.0.0/23", "172.17.0.0/16"]
    assert routed.cover(4, None, ["cni0"]) is None  # the default route's: any address
    many = RoutedBy([(f"10.{i}.0.0/16", "cni0") for i in range(0, 2 * MOST_PREFIXES + 2, 2)])
    assert [str(n) for n in many.cover(4, "cni0") or ()] == ["10.0.0.0/10"]
