"""The members of the kernel's ipsets, from ``ipset save``: what ``-m set`` matches.

Calico (``cali40all-hosts-net``: every node's address, matched by its nat-outgoing rule
with ``natOutgoingExclusions: IPPoolsAndHostIPs``) and kube-router (K3s' network
policies) keep addresses in ipsets that iptables rules match by name. Only sets whose
membership is an address's alone are read (``hash:ip``, ``hash:net``); a set of
another type, with a ``netmask``, or with ``nomatch`` entries (which take addresses
out of a wider entry) is left out, so rules matching it stay unknown.
"""

from __future__ import annotations

import shlex
from collections.abc import Collection, Iterable, Iterator
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network

import attrs

__all__ = ["MAX_MEMBERS", "IPSetMembers", "parse_save"]

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network
_TYPES = frozenset({"hash:ip", "hash:net"})


def _buckets(networks: tuple[IPNetwork, ...]) -> dict[tuple[int, int], frozenset[int]]:
    found: dict[tuple[int, int], set[int]] = {}
    for network in networks:
        found.setdefault((network.version, network.prefixlen), set()).add(
            int(network.network_address))
    return {key: frozenset(values) for key, values in found.items()}


@attrs.frozen
class IPSetMembers:
    """The networks of one set, and whether an address is in one of them (looked up by
    prefix length: a set of 100 000 members costs a few lookups, not 100 000)."""

    networks: tuple[IPNetwork, ...]
    _by_prefix: dict[tuple[int, int], frozenset[int]] = attrs.field(
        init=False, eq=False, repr=False,
        default=attrs.Factory(lambda self: _buckets(self.networks), takes_self=True))

    @classmethod
    def of(cls, networks: Iterable[IPNetwork]) -> IPSetMembers:
        """The members ``networks``."""
        return cls(tuple(networks))

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, IPv4Address | IPv6Address):
            return False
        value, bits = int(address), address.max_prefixlen
        return any(value >> (bits - length) << (bits - length) in values
                   for (version, length), values in self._by_prefix.items()
                   if version == address.version)

    def __iter__(self) -> Iterator[IPNetwork]:
        return iter(self.networks)

    def __len__(self) -> int:
        return len(self.networks)


MAX_MEMBERS = 1 << 18
"""The most members read from one capture (of the sets rules name): a set past it is
left out, so the rules matching it stay unknown. Calico's host set holds one address a
node, kube-router's a policy's pods; a bundle of 256 MiB of members took a minute and
gigabytes of memory to read whole."""


def _lines(text: str) -> Iterator[str]:
    """The lines of ``text``, one at a time (no list of them all, no copy of it)."""
    start, size = 0, len(text)
    while start < size:
        end = text.find("\n", start)
        end = size if end < 0 else end
        yield text[start:end]
        start = end + 1


def parse_save(text: str, *, wanted: Collection[str] | None = None,
               max_members: int = MAX_MEMBERS) -> dict[str, IPSetMembers]:
    """``ipset save`` -> the members of each set whose membership it can judge (see the
    module docstring); a line it cannot read leaves its set out.

    ``wanted``: the only sets read (those the captured rules name; None: every set);
    the others' lines are passed over unparsed. A set whose members would bring the
    count read past ``max_members`` is left out too."""
    kinds: dict[str, bool] = {}  # name -> readable
    members: dict[str, list[IPNetwork]] = {}
    count = 0
    for line in _lines(text):
        head = line.split(None, 2)
        if len(head) < 2 or (wanted is not None and head[1] not in wanted):
            continue
        if head[0] == "add" and not kinds.get(head[1]):
            continue  # a set not created, left out or past the limit: nothing to read
        try:
            # Only a comment is quoted: most lines split plainly (shlex costs ~30 us each).
            words = shlex.split(line) if '"' in line or "\\" in line else line.split()
        except ValueError:
            words = line.split()
            if len(words) > 1:
                kinds[words[1]] = False
            continue
        if len(words) < 3:
            continue
        command, name = words[0], words[1]
        if command == "create":
            kinds[name] = (words[2] in _TYPES and "netmask" not in words[3:]
                           and name not in kinds)
            members[name] = []
        elif command == "add" and kinds.get(name):
            if "nomatch" in words[3:]:
                kinds[name] = False
                continue
            if count >= max_members:
                kinds[name] = False
                members[name] = []
                continue
            try:
                members[name].append(ip_network(words[2], strict=False))
                count += 1
            except ValueError:
                kinds[name] = False
    return {name: IPSetMembers.of(members[name]) for name, ok in kinds.items() if ok}
