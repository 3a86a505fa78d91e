"""Items filed by network, found by the networks they share an address with.

The readers of other programs' rules (the iptables backend's and the nftables
backend's) ask, for each rule, which earlier rules may take some of its packets:
asking every earlier rule is quadratic in the rules (N drops before N accepts, N
returns before N NAT rules). :class:`Prefixes` files each earlier rule under one of its
positive address matches, and gives only those whose network shares an address with
the rule's: one look-up per prefix length in use, and a range of the networks sorted
by address. The caller still puts its own question to each rule given.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import Generic, TypeVar

from k3snet.model.cidr import Network

__all__ = ["Prefixes"]

_T = TypeVar("_T")


class Prefixes(Generic[_T]):
    """Items each under a network (of either family), found by the networks they share an
    address with: those whose network holds the one asked for (one look-up per prefix
    length in use) and those within it (a range of the networks sorted by address)."""

    def __init__(self) -> None:
        self._holding: dict[tuple[int, int], dict[int, list[_T]]] = {}  # (version, length)
        self._within: dict[int, list[tuple[int, int, int]]] = {}  # version: (start, len, n)
        self._items: list[_T] = []

    def add(self, net: Network, item: _T) -> None:
        number = len(self._items)
        self._items.append(item)
        shift = net.max_prefixlen - net.prefixlen
        start = int(net.network_address)
        self._holding.setdefault((net.version, net.prefixlen), {}).setdefault(
            start >> shift, []).append(item)
        bisect.insort(self._within.setdefault(net.version, []), (start, net.prefixlen, number))

    def everything(self) -> list[_T]:
        return self._items

    def overlapping(self, net: Network) -> list[_T]:
        """The items whose network shares an address with ``net`` (:func:`overlaps`)."""
        return list(self.each_overlapping(net))

    def each_overlapping(self, net: Network) -> Iterator[_T]:
        """:meth:`overlapping`, lazily (a caller asking whether one does stops at the
        first): first those whose network holds ``net``, then those within it."""
        start = int(net.network_address)
        for (version, length), by_start in self._holding.items():
            if version == net.version and length <= net.prefixlen:
                yield from by_start.get(start >> (net.max_prefixlen - length), ())
        within = self._within.get(net.version, ())
        end = start | ((1 << (net.max_prefixlen - net.prefixlen)) - 1)
        at = bisect.bisect_left(within, (start, -1, -1))
        while at < len(within) and within[at][0] <= end:
            if within[at][1] > net.prefixlen:
                yield self._items[within[at][2]]
            at += 1
