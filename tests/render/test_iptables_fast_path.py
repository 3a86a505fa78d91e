"""The iptables renderer's fast path for plain masquerades, against the general path.

:func:`~k3snet.render.iptables.rules.render_new` renders a masquerade without
exclusions through an unrolled path that keeps texts and chain names in caches
keyed by integers (address bits, prefix lengths). Whatever was rendered before,
a unit must be exactly what the general path makes of the object, and its
addresses exactly what :mod:`ipaddress` prints. The objects below are chosen so
that cache keys built by shifting collide if they are built wrong: addresses that
are shifts of each other, every pair of prefix lengths, with and without an
interface or ``--random-fully``, sources of 128 bits next to destinations of one.
"""

from __future__ import annotations

import ipaddress
import itertools

import pytest

from k3snet.model import MasqueradeRule
from k3snet.render.iptables import rules as iptables_rules
from k3snet.render.iptables.rules import bucket_order, render_new, render_unit

_V4_LENGTHS = (0, 1, 2, 7, 8, 15, 16, 17, 23, 24, 25, 31, 32)
# one bit each (addresses that are shifts of each other), and ordinary ones
_V4_ADDRESSES = (0, *(1 << k for k in range(32)), 0x0A2A0000, 0x0A2A0105, 0xC0A80280,
                 0xFFFFFFFF, 0x01010101, 0x7F000001)


def _v4(address: int, length: int) -> ipaddress.IPv4Network:
    mask = (0xFFFFFFFF << (32 - length)) & 0xFFFFFFFF
    return ipaddress.IPv4Network((address & mask, length))


def _v4_networks() -> list[ipaddress.IPv4Network]:
    return list(dict.fromkeys(_v4(a, n) for a in _V4_ADDRESSES for n in _V4_LENGTHS))


def _masquerades() -> list[MasqueradeRule]:
    nets = _v4_networks()
    found: list[MasqueradeRule] = []
    # every network as a source and as a destination, against a rotating partner
    for i, net in enumerate(nets):
        partner = nets[(i * 7 + 3) % len(nets)]
        found.append(MasqueradeRule(net))
        found.append(MasqueradeRule(net, destination=partner))
        found.append(MasqueradeRule(partner, destination=net))
    # every pair of prefix lengths, with and without an interface or random-fully
    for s_len, d_len in itertools.product(_V4_LENGTHS, (None, *_V4_LENGTHS)):
        source = _v4(0x0A2A0105, s_len)
        destination = None if d_len is None else _v4(0xC0A80280, d_len)
        for oif, rnd in itertools.product((None, "eth0"), (False, True)):
            found.append(MasqueradeRule(source, destination=destination, out_interface=oif,
                                        random_fully=rnd))
    # IPv6: a source of up to 128 bits beside a destination a bit longer
    v6 = ipaddress.IPv6Network
    for s_len, d_len in itertools.product((0, 1, 56, 64, 127, 128), (None, 0, 1, 2, 64, 65, 128)):
        source6 = v6((0xFD42 << 112 | 5, 128)).supernet(new_prefix=s_len)
        destination6 = None if d_len is None else v6((0xFD01 << 112, 128)).supernet(
            new_prefix=d_len)
        for oif in (None, "eth0"):
            found.append(MasqueradeRule(source6, destination=destination6, out_interface=oif))
    return list(dict.fromkeys(found))


def _expected_line(obj: MasqueradeRule, digest: str) -> tuple[str, ...]:
    """The rule from the object's fields alone (the layout in the module docstring)."""
    line: tuple[str, ...] = ()
    if obj.source.prefixlen:
        line += ("-s", str(obj.source))
    if obj.destination is not None and obj.destination.prefixlen:
        line += ("-d", str(obj.destination))
    if obj.out_interface:
        line += ("-o", obj.out_interface)
    line += ("-m", "comment", "--comment", f"k3snet:{digest}", "-j", "MASQUERADE")
    return (*line, "--random-fully") if obj.random_fully else line


def _expected_chain(obj: MasqueradeRule, digest: str) -> str:
    d_len = 0 if obj.destination is None else obj.destination.prefixlen
    oif = "o" if obj.out_interface else "a"
    return f"K3SNET-N-d{d_len}-s{obj.source.prefixlen}-{oif}-{digest[0]}"


@pytest.mark.parametrize("order", ["as listed", "reversed"])
def test_plain_masquerades_render_as_the_general_path_whatever_came_before(order: str) -> None:
    objects = _masquerades()
    if order == "reversed":
        objects.reverse()
    for obj in objects:
        fast = render_new(obj)
        assert fast == iptables_rules._build_general(obj), obj
        assert fast == render_unit(obj), obj
        (line,) = fast.lines
        assert line == _expected_line(obj, fast.digest), obj
        assert fast.chain == _expected_chain(obj, fast.digest), obj
        assert bucket_order(fast.chain) is not None
        assert fast.sub_chain is None
        assert fast.sub_lines == ()


def test_a_128_bit_source_and_a_one_bit_longer_destination_have_chains_of_their_own() -> None:
    # The two groups' chain names once shared a cache slot: whichever was rendered
    # second took the first one's bucket chains.
    for first, second, chains in [
        (MasqueradeRule("fd00::1/128"), MasqueradeRule("::/0", destination="8000::/1"),
         ("K3SNET-N-d0-s128-a-", "K3SNET-N-d1-s0-a-")),
        (MasqueradeRule("fd00::5/128", destination="fd01::/64"),
         MasqueradeRule("::/0", destination="fd01::/65"),
         ("K3SNET-N-d64-s128-a-", "K3SNET-N-d65-s0-a-")),
    ]:
        units = render_new(first), render_new(second)
        assert tuple(u.chain[:-1] for u in units) == chains
