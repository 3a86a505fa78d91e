"""Parsing CIDRs and addresses: every message, recorded in ``tests/data/model/cidr.json``.

Messages name the bad input, cut to 80 characters (input may be huge); see
``tests/model/recorded.py`` for how the outcomes are recorded and regenerated.
"""

from __future__ import annotations

import ipaddress

import pytest

from k3snet.errors import ModelError
from k3snet.model.cidr import aggregate, contains, parse_address, parse_network, subtract
from tests.model.recorded import Case, check

CASES: dict[str, Case] = {
    "network": lambda: str(parse_network(" 10.42.0.0/16\n")),
    "network v6": lambda: str(parse_network("FD00:0::/64")),
    "network not a string": lambda: parse_network(5),  # type: ignore[arg-type]
    "network bytes": lambda: parse_network(b"10.0.0.0/8"),  # type: ignore[arg-type]
    "network bad": lambda: parse_network("10.0.0.0/33"),
    "network host bits": lambda: parse_network("10.42.0.1/16"),
    "network host bits v6": lambda: parse_network("fd00::1/64"),
    "network host bits allowed": lambda: str(parse_network("10.42.0.1/16", strict=False)),
    "network 78": lambda: parse_network("x" * 78),
    "network 79": lambda: parse_network("x" * 79),
    "network long host bits": lambda: parse_network("10.42.0.1/16" + " " * 100),
    "network long not a string": lambda: parse_network(list(range(40))),  # type: ignore[arg-type]
    "network zone": lambda: parse_network("fd00::%eth0/64"),
    "network zone object": lambda: parse_network(ipaddress.IPv6Network("fd00::%7/64")),
    "network object": lambda: str(parse_network(ipaddress.IPv4Network("10.0.0.0/8"))),
    "address": lambda: [str(parse_address(" 10.0.0.1 ")), str(parse_address("fe80::1%eth0"))],
    "address not a string": lambda: parse_address(None),  # type: ignore[arg-type]
    "address long not a string": lambda: parse_address(tuple(range(40))),  # type: ignore[arg-type]
    "address bad": lambda: parse_address("10.0.0.256"),
    "address long": lambda: parse_address("1" * 100),
    "address prefix": lambda: parse_address("10.0.0.1/32"),
    "address zone not link-local": lambda: parse_address("fd00::1%eth0"),
    "address zone object": lambda: parse_address(ipaddress.IPv6Address("fd00::1%eth0")),
    "address zone not an interface": lambda: parse_address("fe80::1%eth/0"),
    "address zone plus": lambda: parse_address("fe80::1%+"),
    "address zone long": lambda: parse_address("fe80::1%" + "e" * 90),
    "contains": lambda: [
        contains(parse_network("10.0.0.0/8"), parse_address("10.1.2.3")),
        contains(parse_network("10.0.0.0/8"), parse_address("11.1.2.3")),
        contains(parse_network("10.0.0.0/8"), parse_address("::a00:1")),
        contains(parse_network("::/0"), parse_network("10.0.0.0/8")),
        contains(parse_network("10.0.0.0/8"), parse_network("10.0.0.0/8")),
        contains(parse_network("10.0.0.0/9"), parse_network("10.0.0.0/8"))],
    "subtract": lambda: [str(n) for n in subtract(parse_network("10.0.0.0/8"), [
        parse_network("10.0.0.0/9"), parse_network("10.192.0.0/10")])],
    "subtract v6": lambda: [str(n) for n in subtract(parse_network("fd00::/62"), [
        parse_network("fd00:0:0:1::/64")])],
    "aggregate": lambda: [str(n) for n in aggregate(["10.0.0.1/25", "10.0.0.128/25",
                                                     "fd00::1/64"])],
}


def test_cidr_texts() -> None:
    check("cidr", CASES)


@pytest.mark.parametrize("text", ["has host bits set", "10.0.0.0/8 has host bits set",
                                  "fd00::1/64 has host bits set"])
def test_a_text_quoting_the_host_bits_message_is_not_a_valid_cidr(text: str) -> None:
    # ipaddress echoes the text in its error: the text itself once looked like the
    # host-bits case, and the second parse raised a bare ValueError (the hostile render
    # test found "has host bits set").
    with pytest.raises(ModelError, match="is not a valid CIDR"):
        parse_network(text)
