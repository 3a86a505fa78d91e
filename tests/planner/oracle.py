"""An independent packet oracle: what a NAT rule, forward rule or route does to one packet.

Written from the semantics (an iptables/nft match, the kernel's route lookup)
with integer arithmetic on addresses. It shares no code with
:mod:`k3snet.model.cidr` or with ``met_by`` / ``conflicts_with``, so a bug in
containment or in the "met" logic cannot hide in both the code and its judge.

Sampling is exact, not a guess: every predicate here (source in a prefix,
destination in a prefix and in none of the exclusions, interface equal to a
name) is constant between consecutive *edges* (a prefix's first address and
the address after its last). :func:`edge_addresses` returns every edge and the
address before it, so the sampled packets visit every region the objects
involved can tell apart; interfaces are every name involved plus one that none
names.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from k3snet.model import (
    ForwardBlock,
    ForwardRule,
    MasqueradeRule,
    NatBlock,
    NetObject,
    Route,
    SnatRule,
    Sysctl,
)
from k3snet.model.cidr import Address, Network

BITS = {4: 32, 6: 128}
OTHER_INTERFACE = "other0"
"""An interface no object names."""


@dataclass(frozen=True)
class Packet:
    """One packet: family, source and destination as integers, in and out interfaces."""

    family: int
    src: int
    dst: int
    iif: str = OTHER_INTERFACE
    oif: str = OTHER_INTERFACE


def inside(family: int, address: int, net: Network | None) -> bool:
    """``address`` (of ``family``) lies in ``net``; ``None`` is "any address"."""
    if net is None:
        return True
    if net.version != family:
        return False
    host_bits = BITS[family] - net.prefixlen
    return address >> host_bits == int(net.network_address) >> host_bits


def edge_addresses(family: int, nets: Iterable[Network | None]) -> set[int]:
    """Every edge of ``nets`` (of ``family``) and the address before it; also 0 and the last."""
    top = (1 << BITS[family]) - 1
    result = {0, top}
    for net in nets:
        if net is None or net.version != family:
            continue
        first = int(net.network_address)
        after = first + (1 << (BITS[family] - net.prefixlen))
        result |= {first - 1, first, after - 1, after}
    return {a for a in result if 0 <= a <= top}


# ---------------------------------------------------------------- what each object does


def nat_translation(rule: NetObject, packet: Packet) -> str | None:
    """How ``rule`` rewrites the packet's source (``masquerade``, ``snat ADDR``), or None."""
    assert isinstance(rule, MasqueradeRule | SnatRule)
    family = packet.family
    if rule.source.version != family or not inside(family, packet.src, rule.source):
        return None
    if not inside(family, packet.dst, rule.destination):
        return None
    if any(inside(family, packet.dst, excluded) for excluded in rule.exclude):
        return None
    if rule.out_interface is not None and rule.out_interface != packet.oif:
        return None
    if isinstance(rule, SnatRule):
        return f"snat {int(rule.to_address)}"
    return "masquerade"


def block_translation(block: NetObject, packet: Packet) -> str | None:
    """What a foreign NAT rule met first does to the packet's source (``none``: it leaves
    the nat table untranslated), or None when it does not match the packet."""
    assert isinstance(block, NatBlock)
    family = packet.family
    data = block.to_dict()
    if data["family"] != family:
        return None
    for field, address in (("source", packet.src), ("destination", packet.dst)):
        if data[field] is not None and not _inside_text(family, address, data[field]):
            return None
    if data["out_interface"] is not None and data["out_interface"] != packet.oif:
        return None
    if data["action"] == "exempt":
        return "none"
    if data["action"] == "masquerade":
        return "masquerade"
    to = data["to_address"]
    return "snat ?" if to is None else f"snat {int(ipaddress.ip_address(to))}"


def _inside_text(family: int, address: int, prefix: str) -> bool:
    """``inside`` for a prefix read from the serialised form (the block's own fields unused)."""
    return inside(family, address, ipaddress.ip_network(prefix))


def decided_otherwise(wanted: NetObject, block: NetObject) -> bool:
    """Some packet ``wanted`` translates is matched by ``block`` and translated otherwise."""
    return any(
        (mine := nat_translation(wanted, p)) is not None
        and (theirs := block_translation(block, p)) is not None and theirs != mine
        for p in packets(wanted, block))


def block_matches(block: NetObject, packet: Packet) -> bool:
    """A foreign drop (reject, return to a dropping policy) matches the packet."""
    assert isinstance(block, ForwardBlock)
    data = block.to_dict()
    if data["family"] != packet.family:
        return False
    for field, address in (("source", packet.src), ("destination", packet.dst)):
        if data[field] is not None and not _inside_text(packet.family, address, data[field]):
            return False
    return (data["in_interface"] in (None, packet.iif)
            and data["out_interface"] in (None, packet.oif))


def mirror(packet: Packet) -> Packet:
    """The reply to ``packet``: addresses and interfaces swapped."""
    return Packet(packet.family, packet.dst, packet.src, packet.oif, packet.iif)


def dropped_first(wanted: NetObject, block: NetObject) -> bool:
    """Some packet ``wanted`` accepts, or its reply, is matched by ``block``."""
    return any(forward_accepts(wanted, p) and (block_matches(block, p)
                                               or block_matches(block, mirror(p)))
               for p in packets(wanted, block))


def forward_accepts(rule: NetObject, packet: Packet) -> bool:
    """``rule`` accepts the packet as new traffic (the reply match mirrors it)."""
    assert isinstance(rule, ForwardRule)
    family = packet.family
    return (
        rule.source.version == family
        and inside(family, packet.src, rule.source)
        and inside(family, packet.dst, rule.destination)
        and rule.in_interface in (None, packet.iif)
        and rule.out_interface in (None, packet.oif)
    )


def route_slot(route: NetObject) -> tuple[object, ...]:
    """The routing table and exact destination prefix, read from the serialised form."""
    data = route.to_dict()
    return (data["table"], data["destination"])


def next_hop(route: NetObject, packet: Packet) -> tuple[Address | None, str | None] | None:
    """(gateway, device) ``route`` sends the packet to, or None when it does not apply."""
    assert isinstance(route, Route)
    if not inside(packet.family, packet.dst, route.destination):
        return None
    return (route.gateway, route.device)


# ---------------------------------------------------------------- sampled packets


def _nets(obj: NetObject) -> tuple[list[Network | None], list[Network | None]]:
    """(source prefixes, destination prefixes) an object's matches depend on."""
    if isinstance(obj, MasqueradeRule | SnatRule):
        return [obj.source], [obj.destination, *obj.exclude]
    if isinstance(obj, ForwardRule):
        return [obj.source], [obj.destination]
    if isinstance(obj, Route):
        return [], [obj.destination]
    if isinstance(obj, NatBlock):
        return [obj.source], [obj.destination]
    if isinstance(obj, ForwardBlock):
        # both ways: a reply's source is the wanted rule's destination
        return [obj.source, obj.destination], [obj.source, obj.destination]
    return [], []


def _interfaces(obj: NetObject) -> tuple[set[str], set[str]]:
    ins: set[str] = set()
    outs: set[str] = set()
    if isinstance(obj, ForwardRule) and obj.in_interface:
        ins.add(obj.in_interface)
    if isinstance(obj, MasqueradeRule | SnatRule | ForwardRule) and obj.out_interface:
        outs.add(obj.out_interface)
    if isinstance(obj, Route) and obj.device:
        outs.add(obj.device)
    if isinstance(obj, NatBlock) and obj.out_interface:
        outs.add(obj.out_interface)
    if isinstance(obj, ForwardBlock):
        # both ways: a reply comes in where the wanted traffic goes out
        names = {n for n in (obj.in_interface, obj.out_interface) if n}
        ins |= names
        outs |= names
    if isinstance(obj, ForwardRule):
        names = {n for n in (obj.in_interface, obj.out_interface) if n}
        ins |= names
        outs |= names
    return ins, outs


def packets(*objects: NetObject) -> Iterator[Packet]:
    """Packets of both families visiting every region the objects can tell apart."""
    sources: list[Network | None] = []
    destinations: list[Network | None] = []
    ins = {OTHER_INTERFACE}
    outs = {OTHER_INTERFACE}
    for obj in objects:
        src_nets, dst_nets = _nets(obj)
        sources += src_nets
        destinations += dst_nets
        more_in, more_out = _interfaces(obj)
        ins |= more_in
        outs |= more_out
    for family in (4, 6):
        for src, dst, iif, oif in itertools.product(
            sorted(edge_addresses(family, sources)), sorted(edge_addresses(family, destinations)),
            sorted(ins), sorted(outs),
        ):
            yield Packet(family, src, dst, iif, oif)


# ---------------------------------------------------------------- judgements


def does_the_job(wanted: NetObject, foreign: NetObject) -> bool:
    """``foreign`` does for every sampled packet what ``wanted`` asks for.

    NAT: every packet ``wanted`` translates, ``foreign`` translates the same way.
    Forward: every packet ``wanted`` accepts, ``foreign`` accepts. Route: the
    same slot (table and prefix) and the same next hop (any device when ours
    names none). Sysctl: the same name and value.
    """
    if isinstance(wanted, Sysctl):
        return (isinstance(foreign, Sysctl)
                and (wanted.to_dict()["name"], wanted.to_dict()["value"])
                == (foreign.to_dict()["name"], foreign.to_dict()["value"]))
    if isinstance(wanted, Route):
        if not isinstance(foreign, Route) or route_slot(foreign) != route_slot(wanted):
            return False
        return all(_same_hop(next_hop(wanted, p), next_hop(foreign, p))
                   for p in packets(wanted, foreign) if next_hop(wanted, p) is not None)
    if isinstance(wanted, MasqueradeRule | SnatRule):
        if not isinstance(foreign, MasqueradeRule | SnatRule):
            return False
        return all(nat_translation(foreign, p) == mine for p in packets(wanted, foreign)
                   if (mine := nat_translation(wanted, p)) is not None)
    if isinstance(wanted, ForwardRule):
        return isinstance(foreign, ForwardRule) and all(
            forward_accepts(foreign, p) for p in packets(wanted, foreign)
            if forward_accepts(wanted, p))
    raise AssertionError(f"no oracle for {wanted!r}")


def _same_hop(
    mine: tuple[Address | None, str | None] | None,
    theirs: tuple[Address | None, str | None] | None,
) -> bool:
    if mine is None or theirs is None:
        return mine is theirs
    return mine[0] == theirs[0] and (mine[1] is None or mine[1] == theirs[1])


def comes_first(foreign: NetObject, wanted: NetObject) -> bool:
    """The kernel prefers the foreign route to ``wanted``: the same slot (table and
    prefix) and a metric no higher (IPv6 metric 0 is 1024; equal ones share a slot)."""
    if not isinstance(foreign, Route) or not isinstance(wanted, Route):
        return False
    return route_slot(foreign) == route_slot(wanted) and _metric(foreign) <= _metric(wanted)


def _metric(route: NetObject) -> int:
    data = route.to_dict()
    metric = int(data["metric"] or 0)
    return 1024 if metric == 0 and ":" in data["destination"] else metric


def competes(wanted: NetObject, foreign: NetObject) -> bool:
    """``foreign`` holds the one place ``wanted`` needs: a route in its slot, a sysctl's name.

    Rules in k3snet's own chains compete with nothing.
    """
    if isinstance(wanted, Route):
        return isinstance(foreign, Route) and route_slot(foreign) == route_slot(wanted)
    if isinstance(wanted, Sysctl):
        return isinstance(foreign, Sysctl) and foreign.to_dict()["name"] == wanted.to_dict()["name"]
    return False
