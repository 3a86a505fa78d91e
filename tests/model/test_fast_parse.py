"""The fast paths of CIDR and address parsing and printing, and of overlaps/contains, against
the slow ones.

:func:`parse_network` and :func:`parse_address` read the common IPv4 spelling
without :mod:`ipaddress`'s text parser; anything else goes to it. Each fast
answer must be the slow answer: the same value, or the same error message.
The slow references below are the code as it was before the fast paths.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from k3snet.errors import ModelError
from k3snet.model import validate_interface_name
from k3snet.model.cidr import (
    Address,
    Network,
    address_text,
    contains,
    network_text,
    overlaps,
    parse_address,
    parse_network,
)
from k3snet.testing import strategies as ks


def _shown(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def slow_network(value: str, strict: bool = True) -> Network:
    """parse_network of text as it was: ipaddress.ip_network, then the zone check."""
    try:
        net = ipaddress.ip_network(value.strip(), strict=strict)
    except ValueError as exc:
        if "has host bits set" in str(exc):
            fixed = ipaddress.ip_network(value.strip(), strict=False)
            raise ModelError(f"{_shown(value)} has host bits set (did you mean {fixed}?)") from exc
        raise ModelError(f"{_shown(value)} is not a valid CIDR") from exc
    return parse_network(net)  # the object path (zone check) is unchanged


def slow_address(value: str) -> Address:
    """parse_address of text as it was: ipaddress.ip_address, then the zone check, and
    white space after a zone refused as part of it (an interface name has none)."""
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError as exc:
        raise ModelError(f"{_shown(value)} is not a valid IP address") from exc
    checked = parse_address(address)
    if "%" in value and value[-1:].isspace():
        try:
            validate_interface_name(value.partition("%")[2])
        except ModelError as exc:
            raise ModelError(f"the zone id of {_shown(value)} must be an interface name: "
                             f"{exc}") from exc
    return checked


def outcome(parse: Any, *args: Any) -> tuple[str, Any]:
    """("ok", (type, value, text)) or ("error", message)."""
    try:
        value = parse(*args)
    except ModelError as exc:
        return "error", str(exc)
    return "ok", (type(value), value, str(value))


# Text near the fast path's edges: every piece of a dotted quad, prefixes, and noise.
_pieces = st.sampled_from([
    "0", "1", "9", "10", "25", "99", "100", "199", "249", "250", "255", "256", "299", "300",
    "00", "01", "010", "0x1", "1e1", "-1", "+1", "\u0661", "\uff11", " ", "\t", "\n", "",
    ".", "/", "//", ":", "::", "%", "%eth0", "/0", "/8", "/24", "/31", "/32", "/33", "/08",
    "/024", "/-1", "/255.255.255.0", "/0.0.0.255", "fd00", "ffff", "a", "x",
])
_near_ipv4 = st.lists(_pieces, min_size=1, max_size=9).map("".join)


@st.composite
def _quads(draw: st.DrawFn) -> str:
    """Dotted quads of 0..999 with or without leading zeros, and an optional prefix."""
    octets = [draw(st.integers(0, 999)) for _ in range(4)]
    spelled = [draw(st.sampled_from([f"{o}", f"0{o}", f"{o:03d}"])) for o in octets]
    text = ".".join(spelled)
    if draw(st.booleans()):
        text += "/" + draw(st.sampled_from(["", "0", "00"])) + str(draw(st.integers(0, 40)))
    pad = draw(st.sampled_from(["", " ", "\t", "\n "]))
    return pad + text + draw(st.sampled_from(["", " ", "\n"]))


_texts = st.one_of(
    ks.networks(min_prefix=0).map(str),
    ks.addresses().map(str),
    # host bits set: the address after the network's (255.255.255.255 wraps to 0.0.0.0)
    ks.networks(4, min_prefix=0).map(
        lambda n: f"{ipaddress.IPv4Address((int(n.network_address) + 1) % 2**32)}/{n.prefixlen}"),
    _quads(), _quads(), _near_ipv4, ks.hostile_text(max_long=64),
)


@given(_texts, st.booleans())
@example("10.42.0.1/16", True)
@example("10.42.0.1/16", False)
@example("10.0.0.0/08", True)
@example("010.0.0.0/8", True)
@example("1.2.3.4/255.255.0.0", False)
@example("256.1.1.1/8", True)
@example("1.2.3.4/33", True)
@example(" 192.168.2.0/24\n", True)
@example("192.168.2.0/24/", True)
@example("\u0661.2.3.4", True)
def test_parse_network_is_ipaddress(text: str, strict: bool) -> None:
    fast = outcome(lambda t: parse_network(t, strict=strict), text)
    assert fast == outcome(slow_network, text, strict)


@given(_texts)
@example("01.2.3.4")
@example("1.2.3.4/32")
@example("1.2.3")
@example("255.255.255.255")
@example("0.0.0.0")  # noqa: S104 - parsed, never bound
@example("fe80::1%eth0")
@example("fe80::1%eth0\n")
@example("fd00::1%eth0 ")
def test_parse_address_is_ipaddress(text: str) -> None:
    assert outcome(parse_address, text) == outcome(slow_address, text)


@pytest.mark.parametrize("value", [ipaddress.IPv4Network("10.0.0.0/8"),
                                   ipaddress.IPv4Address("10.0.0.1")])
def test_an_ipv4_value_is_returned_as_it_is(value: Network | Address) -> None:
    parse = parse_network if isinstance(value, ipaddress.IPv4Network) else parse_address
    assert parse(value) is value  # type: ignore[arg-type]


_any_net = ks.networks(min_prefix=0)


@given(_any_net, _any_net)
def test_overlaps_is_ipaddress(a: Network, b: Network) -> None:
    assert overlaps(a, b) == (a.version == b.version and a.overlaps(b))


@given(st.sampled_from((4, 6)).flatmap(lambda f: st.tuples(
    ks.networks(f, min_prefix=0), ks.networks(f, min_prefix=0))))
def test_overlaps_and_contains_of_one_family_are_ipaddress(pair: tuple[Network, Network]) -> None:
    # Drawn independently, two prefixes rarely nest: draw the second inside the first too.
    a, b = pair
    for inner in (b, *([b] if b.prefixlen < a.prefixlen else
                       [next(a.subnets(new_prefix=min(a.max_prefixlen, a.prefixlen + 3)))])):
        assert overlaps(a, inner) == a.overlaps(inner)
        assert contains(a, inner) == inner.subnet_of(a)
        assert contains(inner, a) == a.subnet_of(inner)


@given(_any_net, ks.addresses())
def test_contains_an_address_is_ipaddress(net: Network, address: Address) -> None:
    assert contains(net, address) == (net.version == address.version and address in net)


@given(_any_net)
def test_a_network_contains_its_own_edges(net: Network) -> None:
    assert contains(net, net.network_address)
    assert contains(net, net.broadcast_address)
    assert contains(net, net)
    assert overlaps(net, net)


@given(_any_net)
@example(ipaddress.IPv4Network("0.0.0.0/0"))
@example(ipaddress.IPv4Network("255.255.255.255/32"))
@example(ipaddress.IPv6Network("::ffff:10.0.0.0/104"))
def test_network_text_is_what_ipaddress_prints(net: Network) -> None:
    assert network_text(net) == str(net)


@given(ks.addresses())
@example(ipaddress.IPv4Address("0.0.0.0"))  # noqa: S104 - printed, never bound
@example(ipaddress.IPv4Address("255.255.255.255"))
@example(ipaddress.IPv6Address("fe80::1%eth0"))
@example(ipaddress.IPv6Address("::ffff:1.2.3.4"))
def test_address_text_is_what_ipaddress_prints(address: Address) -> None:
    assert address_text(address) == str(address)
