"""CIDR helpers against the standard library."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from k3snet.errors import ModelError
from k3snet.model import aggregate, contains, overlaps, subtract
from k3snet.model.cidr import Network, network_sort_key, parse_network
from k3snet.testing import strategies as ks

_v4 = ks.networks(4, min_prefix=0)
_v6 = ks.networks(6, min_prefix=0)


@given(st.lists(_v4, max_size=12))
def test_aggregate_agrees_with_collapse_addresses_for_ipv4(
    nets: list[ipaddress.IPv4Network],
) -> None:
    assert list(aggregate(nets)) == list(ipaddress.collapse_addresses(nets))


@given(st.lists(_v6, max_size=12))
def test_aggregate_agrees_with_collapse_addresses_for_ipv6(
    nets: list[ipaddress.IPv6Network],
) -> None:
    assert list(aggregate(nets)) == list(ipaddress.collapse_addresses(nets))


@given(st.lists(_v4, max_size=8), st.lists(_v6, max_size=8))
def test_aggregate_of_mixed_families_is_each_family_collapsed(
    v4: list[ipaddress.IPv4Network], v6: list[ipaddress.IPv6Network]
) -> None:
    mixed: list[Network] = [*v6, *v4]
    expected = [*ipaddress.collapse_addresses(v4), *ipaddress.collapse_addresses(v6)]
    assert list(aggregate(mixed)) == expected


@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 32)), max_size=10))
def test_aggregate_masks_host_bits_like_the_kernel(pairs: list[tuple[int, int]]) -> None:
    raw = [f"{ipaddress.IPv4Address(a)}/{p}" for a, p in pairs]
    masked = [ipaddress.IPv4Network(r, strict=False) for r in raw]
    assert list(aggregate(raw)) == list(ipaddress.collapse_addresses(masked))


@given(_v4, _v4)
def test_overlap_and_containment_agree_with_ipaddress(
    a: ipaddress.IPv4Network, b: ipaddress.IPv4Network
) -> None:
    assert overlaps(a, b) == a.overlaps(b)
    assert contains(a, b) == b.subnet_of(a)


@given(_v4, _v6)
def test_no_overlap_or_containment_across_families(
    a: ipaddress.IPv4Network, b: ipaddress.IPv6Network
) -> None:
    assert not overlaps(a, b)
    assert not contains(a, b)
    assert not contains(b, a)


@given(ks.networks(4, min_prefix=8, max_prefix=28), st.lists(ks.networks(4), max_size=5))
def test_subtract_covers_exactly_the_addresses_left(
    base: ipaddress.IPv4Network, holes: list[ipaddress.IPv4Network]
) -> None:
    pieces = subtract(base, holes)
    assert all(contains(base, p) for p in pieces)
    assert not any(overlaps(p, h) for p in pieces for h in holes)
    covered = sum(p.num_addresses for p in pieces)
    # Addresses of base inside some hole (holes aggregated first, so none is counted twice).
    hole_addresses = sum(
        min(int(base.broadcast_address), int(h.broadcast_address))
        - max(int(base.network_address), int(h.network_address)) + 1
        for h in aggregate(h for h in holes if overlaps(base, h))
    )
    assert covered + hole_addresses == base.num_addresses


def test_network_sort_key_orders_ipv4_first_then_address_then_prefix() -> None:
    nets = [parse_network(n) for n in ("fd00::/8", "10.0.0.0/16", "10.0.0.0/8", "9.0.0.0/8")]
    assert [str(n) for n in sorted(nets, key=network_sort_key)] == [
        "9.0.0.0/8", "10.0.0.0/8", "10.0.0.0/16", "fd00::/8"]
    assert network_sort_key(parse_network("10.0.0.0/8")) == (4, 167772160, 8)


@given(st.one_of(_v4, _v6), st.one_of(_v4, _v6), st.lists(st.one_of(_v4, _v6), max_size=3))
def test_the_public_helpers_give_text_the_answer_of_its_parsed_networks(
    a: ipaddress.IPv4Network | ipaddress.IPv6Network,
    b: ipaddress.IPv4Network | ipaddress.IPv6Network,
    holes: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
) -> None:
    # k3snet.model.contains("10.0.0.0/8", "10.1.0.0/16") raised AttributeError ('str'
    # object has no attribute 'version'): the helpers took only parsed networks.
    assert overlaps(str(a), str(b)) == overlaps(a, b)
    assert contains(str(a), str(b)) == contains(a, b)
    assert contains(str(a), str(b.network_address)) == contains(a, b.network_address)
    same = [h for h in holes if h.version == a.version]
    assert subtract(str(a), [str(h) for h in same]) == subtract(a, same)


def test_text_with_host_bits_is_a_model_error_not_a_wrong_answer() -> None:
    with pytest.raises(ModelError, match="host bits"):
        overlaps("10.0.0.1/8", "10.1.0.0/16")
