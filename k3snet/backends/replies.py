"""Accepts found by the addresses they take: which of an administrator's accepts may take
the replies of another (the iptables and nftables backends' reading of foreign accepts).

An accept of the pods' traffic to a destination is only the pods' way out when the
replies are accepted too: some accept whose source holds the destination and whose
destination holds the pods' source. Asking every accept of a ruleset about every other
is quadratic (a node with 10 000 ``-s 10.x.y.0/24 -j ACCEPT`` rules asked 100 million
questions: 160 s for one observe). :class:`ByAddresses` files each accept under its two
prefixes and answers "which hold this pair" with one look-up per source prefix length
present in the ruleset, and one per destination prefix length present under each source
prefix met (one or a few of each on real nodes, at most 33 and 33 times 33 for IPv4),
whatever the number of accepts, and under those by their interface matches (``-i veth7
-o eth0``: one look-up for the device itself, ``+``, none, and each wildcard filed that
holds it). The caller still puts its own question to each accept given.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from k3snet.model.cidr import Network

T = TypeVar("T")

# a prefix as the index files it: its length and its leading bits as an integer
_Prefix = tuple[int, int]


def _prefix(net: Network, length: int) -> _Prefix:
    """``net``'s first ``length`` bits (``length`` at most ``net``'s own)."""
    return length, int(net.network_address) >> (net.max_prefixlen - length)


# an item's two interface matches as filed ("eth0", a wildcard "eth+", "+", None: any)
_Devices = tuple[str | None, str | None]


class ByAddresses(Generic[T]):
    """Items each filed under a pair of networks (a source and a destination) and a pair of
    interface matches (in and out), asked for those whose networks hold a given pair and
    whose matches hold a given pair of devices (:meth:`holding`). The two families are
    apart: an IPv4 pair never holds an IPv6 one. A match holds a device as
    :func:`~k3snet.model.interface_holds` says: ``None`` and ``+`` any, ``eth+`` every
    name starting ``eth`` (and the wildcards ``eth0+``, ``eth+``), ``eth0`` only itself."""

    def __init__(self) -> None:
        # by family, then by the first network's prefix, then by the second's: the items
        # filed there, by their interface matches
        self._first: dict[int, dict[_Prefix, dict[_Prefix, dict[_Devices, list[T]]]]] = {}
        # by family, the first prefix lengths present (shortest first), and by first
        # prefix, the second prefix lengths present under it
        self._first_lengths: dict[int, list[int]] = {}
        self._second_lengths: dict[tuple[int, _Prefix], list[int]] = {}
        # the wildcard matches filed (``eth+``), in and out: a device is looked for under
        # each that holds it, besides its own name, ``+`` and ``None``
        self._wildcards: tuple[set[str], set[str]] = (set(), set())

    def add(self, source: Network, destination: Network, item: T,
            devices: _Devices = (None, None)) -> None:
        """File ``item`` under ``source`` and ``destination`` (of one family) and the
        interface matches ``devices`` (in, out)."""
        family = source.version
        if destination.version != family:
            raise ValueError(f"{source} and {destination} are of two families")
        first = _prefix(source, source.prefixlen)
        second = _prefix(destination, destination.prefixlen)
        by_first = self._first.setdefault(family, {})
        if first not in by_first:
            by_first[first] = {}
            lengths = self._first_lengths.setdefault(family, [])
            if source.prefixlen not in lengths:
                lengths.append(source.prefixlen)
                lengths.sort()
        by_second = by_first[first]
        if second not in by_second:
            by_second[second] = {}
            lengths = self._second_lengths.setdefault((family, first), [])
            if destination.prefixlen not in lengths:
                lengths.append(destination.prefixlen)
                lengths.sort()
        by_second[second].setdefault(devices, []).append(item)
        for match, wildcards in zip(devices, self._wildcards, strict=True):
            if match is not None and match.endswith("+") and match != "+":
                wildcards.add(match)

    def _holders(self, device: str | None, wildcards: set[str]) -> list[str | None]:
        """The matches that may hold ``device`` (a name, a wildcard, ``None``: any)."""
        if device is None or device == "+":
            return [None, "+"]
        holders: list[str | None] = [None, "+", device]
        holders += [w for w in wildcards if w != device and device.startswith(w[:-1])]
        return holders

    def holding(self, source: Network, destination: Network,
                devices: _Devices = (None, None)) -> Iterator[T]:
        """The items filed under a source holding ``source``, a destination holding
        ``destination`` and interface matches holding ``devices`` (lazily: a caller asking
        whether one does stops at the first)."""
        family = source.version
        by_first = self._first.get(family)
        if by_first is None or destination.version != family:
            return
        pairs: list[_Devices] | None = None
        for first_length in self._first_lengths[family]:
            if first_length > source.prefixlen:
                break
            first = _prefix(source, first_length)
            by_second = by_first.get(first)
            if by_second is None:
                continue
            for second_length in self._second_lengths[(family, first)]:
                if second_length > destination.prefixlen:
                    break
                by_devices = by_second.get(_prefix(destination, second_length))
                if by_devices is None:
                    continue
                if pairs is None:
                    pairs = [(i, o) for i in self._holders(devices[0], self._wildcards[0])
                             for o in self._holders(devices[1], self._wildcards[1])]
                for pair in pairs:
                    yield from by_devices.get(pair, ())
