"""IPv6 zone ids: :mod:`ipaddress` accepts any text after ``%``; k3snet does not.

Left in, the text after ``%`` reached nft JSON batches (a ``flush ruleset``
injected through an SNAT address), nftables.conf, route gateways and the
Corefile. A zone is allowed only on a link-local address, and only an
interface name.
"""

from __future__ import annotations

import ipaddress

import pytest

from k3snet.errors import ModelError
from k3snet.model import MasqueradeRule, Route, SnatRule, parse_address, parse_network

INJECTION = 'fd01:1::5%1"}}]}}},{"flush":{"ruleset":null}}'


@pytest.mark.parametrize("text", [
    INJECTION,
    "fd01:1::5%x ; flush ruleset ; #",
    "fd01:1::5%eth0",             # a zone on a global address means nothing
    "fe80::1%a b",                # not an interface name
    "fe80::1%" + "e" * 16,        # longer than IFNAMSIZ - 1
    "fe80::1%eth0/0",
])
def test_addresses_with_a_hostile_or_meaningless_zone_are_refused(text: str) -> None:
    with pytest.raises(ModelError):
        parse_address(text)


def test_a_link_local_address_may_name_its_interface() -> None:
    address = parse_address("fe80::1%eth0")
    assert isinstance(address, ipaddress.IPv6Address)
    assert address.scope_id == "eth0"


@pytest.mark.parametrize("value", ["fd00::%x/64", ipaddress.IPv6Network("fd00::%x/64")])
def test_prefixes_never_have_a_zone(value: str | ipaddress.IPv6Network) -> None:
    with pytest.raises(ModelError, match="no zone id"):
        parse_network(value)


def test_parsed_objects_carrying_a_zone_are_checked_too() -> None:
    with pytest.raises(ModelError, match="link-local"):
        parse_address(ipaddress.IPv6Address("fd01::5%x"))


def test_models_refuse_the_injection_of_the_report() -> None:
    with pytest.raises(ModelError):
        SnatRule("fd42:42::/56", to_address=INJECTION)
    with pytest.raises(ModelError):
        Route("fd01:2::/64", gateway=INJECTION, device="eth0")
    with pytest.raises(ModelError):
        MasqueradeRule("fd42:42::/56", destination="fd01:2::%x/64")


def test_error_messages_cut_huge_values() -> None:
    with pytest.raises(ModelError) as caught:
        parse_address("1" * 100_000)
    assert len(str(caught.value)) < 200
