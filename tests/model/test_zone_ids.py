"""IPv6 zone ids: :mod:`ipaddress` accepts any text after ``%``; k3snet does not.

Left in, the text after ``%`` reached nft JSON batches (a ``flush ruleset``
injected through an SNAT address), nftables.conf, route gateways and the
Corefile. A zone is allowed only on a link-local address, and only an
interface name.
"""

from __future__ import annotations

import ipaddress

import pytest

from k3snet.errors import ModelError, SpecError
from k3snet.model import MasqueradeRule, Route, SnatRule, parse_address, parse_network
from k3snet.spec import Spec

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


@pytest.mark.parametrize("text", ["fe80::2%eth0\n", "fe80::2%eth0 ", "fe80::2%eth0\t",
                                  "fe80::2%eth0\u3000", " fe80::2%eth0\r\n"])
def test_white_space_after_a_zone_is_part_of_it_and_refused_as_a_device_s_is(text: str) -> None:
    # Stripped with the address's, `fe80::2%eth0\n` (a YAML block's newline) was read as
    # device eth0, where a device `eth0\n` is refused: the zone is an interface name.
    with pytest.raises(ModelError, match="must be an interface name: interface name 'eth0"):
        parse_address(text)
    with pytest.raises(ModelError, match="must be an interface name"):
        Route.from_dict({"destination": "fd01:2::/64", "gateway": text})  # a plan file's
    with pytest.raises(ModelError, match="not valid"):
        Route("fd01:2::/64", gateway="fe80::2", device=text.partition("%")[2])


def test_white_space_around_an_address_without_a_zone_or_before_one_is_no_part_of_it() -> None:
    assert parse_address(" fe80::2%eth0") == parse_address("fe80::2%eth0")
    assert str(parse_address("fd00::2\n")) == "fd00::2"
    assert str(parse_address(" 10.0.0.1 ")) == "10.0.0.1"


def test_a_spec_s_gateway_with_white_space_after_its_zone_is_refused_at_its_path() -> None:
    document = ("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"
                "cluster: {podCIDRs: ['fd42::/56']}\n"
                "destinations:\n  - cidr: 'fd01:2::/64'\n    gateway: |\n      fe80::2%eth0\n")
    with pytest.raises(SpecError) as caught:
        Spec.from_yaml(document)
    [problem] = caught.value.problems
    assert problem.path == "destinations[0].gateway"
    assert "interface name 'eth0\\n' is not valid" in problem.message


@pytest.mark.parametrize("text", ["fe80::1%2", "fe80::1%02", ipaddress.IPv6Address("fe80::1%7")])
def test_a_numeric_zone_an_interface_index_is_refused_never_read_as_a_device_name(
        text: str | ipaddress.IPv6Address) -> None:
    # RFC 4007's numeric zone is an interface index (`ping fe80::1%2`): read as the name
    # of a device `2`, it named some other device or none; an index changes when the
    # device is recreated, so the model takes no index (a device named `2` is still one).
    with pytest.raises(ModelError, match="interface index"):
        parse_address(text)
    with pytest.raises(ModelError, match="interface index"):
        Route.from_dict({"destination": "fd01:2::/64", "gateway": str(text)})  # a plan file's
    assert Route("fd01:2::/64", gateway="fe80::1", device="2").device == "2"


def test_a_spec_s_numeric_zone_is_refused_at_its_path() -> None:
    with pytest.raises(SpecError) as caught:
        Spec.from_dict({"cluster": {"podCIDRs": ["fd42::/56"]},
                        "destinations": [{"cidr": "fd01:2::/64", "gateway": "fe80::1%2"}]})
    [problem] = caught.value.problems
    assert problem.path == "destinations[0].gateway"
    assert "interface index" in problem.message


def test_a_spec_s_gateway_zone_naming_another_device_than_its_device_is_refused_at_its_path(
        ) -> None:
    # Taken by the spec, it failed compile with the route model's error, at no path
    # (`k3snet validate`: "error: route fd01::/64: ...").
    with pytest.raises(SpecError) as caught:
        Spec.from_dict({"cluster": {"podCIDRs": ["fd42::/56"]},
                        "destinations": [{"cidr": "fd01:2::/64", "gateway": "fe80::1%eth0",
                                          "device": "eth1"}]})
    [problem] = caught.value.problems
    assert problem.path == "destinations[0].gateway"
    assert "names interface eth0, but the device is eth1" in problem.message
    same = Spec.from_dict({"cluster": {"podCIDRs": ["fd42::/56"]},
                           "destinations": [{"cidr": "fd01:2::/64", "gateway": "fe80::1%eth0",
                                             "device": "eth0"}]})
    assert same.destinations[0].device == "eth0"
