"""Routing as the kernel does it, from ``ip -j rule`` and ``ip -j route show table all``.

:func:`lookup` walks the policy rules in priority order, looks each rule's table
up by longest prefix (for IPv6 then longest ``from`` prefix: source-specific
routes) then lowest metric, and honours ``throw``, ``blackhole``, ``unreachable``,
``prohibit``, ``goto``, ``nop`` and ``suppress_prefixlength``. The packet traced
has TOS 0: a route with a ``tos`` never matches it.
:func:`rp_filter_check` is ``fib_validate_source``: the reverse lookup a packet's
source must pass on its input interface under strict (1) or loose (2) mode.
:func:`masquerade_source` picks the address masquerade gives a packet leaving an
interface (``inet_select_addr``; for IPv6 the longest matching prefix).
"""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Any, Final

import attrs

__all__ = [
    "Address",
    "Fib",
    "Lookup",
    "RouteEntry",
    "RuleEntry",
    "lookup",
    "masquerade_source",
    "nexthop_objects",
    "parse_addresses",
    "parse_link_mtus",
    "parse_link_states",
    "parse_locked_mtus",
    "parse_routes",
    "parse_rules",
    "rp_filter_check",
]

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network
_TABLES: Final = {"local": 255, "main": 254, "default": 253, "unspec": 0}
_FAILING: Final = frozenset({"blackhole", "unreachable", "prohibit"})


def _table(value: object) -> int | str:
    if isinstance(value, int):
        return value
    text = str(value)
    if text.isdigit():
        return int(text)
    return _TABLES.get(text, text)


def table_name(table: int | str) -> str:
    """``main`` for 254, ``local`` for 255 ...; other tables by number."""
    names = {v: k for k, v in _TABLES.items()}
    return names.get(table, str(table)) if isinstance(table, int) else table


@attrs.frozen
class RouteEntry:
    """One route of one table."""

    destination: IPNetwork
    type: str = "unicast"
    table: int | str = 254
    gateway: IPAddress | None = None
    device: str | None = None
    metric: int = 0
    prefsrc: IPAddress | None = None
    protocol: str | None = None
    scope: str | None = None
    nexthops: tuple[tuple[IPAddress | None, str | None], ...] = ()
    """Every (gateway, device) of a multipath route, ``gateway`` and ``device`` being the
    first; empty for a route of one nexthop."""
    source: IPNetwork | None = None
    """An IPv6 source-specific route's ``from`` prefix: only packets from it use the route."""
    tos: int = 0
    """The route's ``tos``: the kernel uses a route with one only for packets of that TOS."""
    linkdown: tuple[str | None, ...] = ()
    """The devices of the nexthops the kernel flags ``linkdown`` (their device has no
    carrier): a lookup passes over them where ``ignore_routes_with_linkdown`` is set."""
    mtu: int | None = None
    """The route's ``mtu`` (``ip route ... mtu 1280``): the largest packet the kernel
    sends, or forwards, through it, below its device's; None: its device's MTU."""
    mtu_locked: bool = False
    """``mtu lock``: IPv6 forwarding honours the route's mtu only when locked; else it
    forwards up to the device's MTU and the packet meets the route's mtu after
    postrouting (``ip6_dst_mtu_maybe_forward``; IPv4 honours it either way)."""

    def via(self, index: int) -> RouteEntry:
        """This route through its nexthop ``index`` alone (itself when it has one)."""
        if not self.nexthops:
            return self
        gateway, device = self.nexthops[index]
        return attrs.evolve(self, gateway=gateway, device=device, nexthops=())

    def describe(self) -> str:
        """The route as ``ip route`` would print it (roughly)."""
        parts = [] if self.type == "unicast" else [self.type]
        default = self.destination.prefixlen == 0
        parts.append("default" if default else str(self.destination))
        if self.source is not None:
            parts += ["from", str(self.source)]
        if self.tos:
            parts += ["tos", f"{self.tos:#x}"]
        if self.nexthops:
            for gateway, device in self.nexthops:
                parts += ["nexthop", *(["via", str(gateway)] if gateway else []),
                          *(["dev", device] if device else [])]
        else:
            if self.gateway is not None:
                parts += ["via", str(self.gateway)]
            if self.device:
                parts += ["dev", self.device]
        if self.table != 254:
            parts += ["table", table_name(self.table)]
        if self.metric:
            parts += ["metric", str(self.metric)]
        if self.mtu is not None:
            parts += ["mtu", *(["lock"] if self.mtu_locked else []), str(self.mtu)]
        return " ".join(parts)


@attrs.frozen
class RuleEntry:
    """One policy rule (``ip rule``): selector, action, target table."""

    priority: int
    action: str = "lookup"
    table: int | str | None = 254
    src: IPNetwork | None = None
    dst: IPNetwork | None = None
    iif: str | None = None
    oif: str | None = None
    fwmark: int | None = None
    fwmask: int = 0xFFFFFFFF
    invert: bool = False
    goto: int | None = None
    suppress_prefixlength: int | None = None
    ipproto: int | None = None
    unknown: tuple[str, ...] = ()
    tos: int = 0
    """The rule's ``tos`` selector: it never matches the traced (TOS 0) packet."""

    def describe(self) -> str:
        """The rule as ``ip rule`` would print it (roughly)."""
        parts = [f"{self.priority}:"]
        if self.invert:
            parts.append("not")
        parts += ["from", str(self.src) if self.src else "all"]
        if self.dst:
            parts += ["to", str(self.dst)]
        if self.iif:
            parts += ["iif", self.iif]
        if self.oif:
            parts += ["oif", self.oif]
        if self.fwmark is not None:
            parts += ["fwmark", f"{self.fwmark:#x}/{self.fwmask:#x}"]
        if self.tos:
            parts += ["tos", f"{self.tos:#x}"]
        parts += list(self.unknown)
        if self.action == "lookup":
            parts += ["lookup", table_name(self.table if self.table is not None else 254)]
        elif self.action == "goto":
            parts += ["goto", str(self.goto)]
        else:
            parts.append(self.action)
        return " ".join(parts)


@attrs.frozen
class Address:
    """An address on an interface (``ip -j addr``)."""

    device: str
    address: IPAddress
    prefixlen: int
    scope: str = "global"
    secondary: bool = False
    deprecated: bool = False
    """An IPv6 address past its preferred lifetime (or optimistic, in duplicate address
    detection yet usable): source selection avoids it."""
    tentative: bool = False
    """An IPv6 address in duplicate address detection (not optimistic), or that failed
    it: never a source."""

    @property
    def network(self) -> IPNetwork:
        """The connected network."""
        return ip_network(f"{self.address}/{self.prefixlen}", strict=False)


def _network(value: object, length: object, family: int) -> IPNetwork | None:
    if value in (None, "all"):
        return None
    text = str(value)
    if text == "default":
        return ip_network("0.0.0.0/0" if family == 4 else "::/0")
    if length is not None and "/" not in text:
        text = f"{text}/{length}"
    return ip_network(text, strict=False)


def nexthop_objects(data: object) -> dict[int, Mapping[str, Any]]:
    """``ip -j nexthop show`` output -> each nexthop object by its id."""
    items = data if isinstance(data, list) else []
    return {item["id"]: item for item in items
            if isinstance(item, Mapping) and isinstance(item.get("id"), int)}


def _resolved(item: Mapping[str, Any], nexthops: Mapping[int, Mapping[str, Any]]
              ) -> Mapping[str, Any]:
    """A route that names its nexthop object by ``nhid`` alone (``nexthop_compat_mode``
    0: the kernel dumps no gateway or device) with that object's, a group's members as
    a multipath route's nexthops; as it is when it names more, or an unknown object."""
    found = nexthops.get(item["nhid"]) if isinstance(item.get("nhid"), int) else None
    if found is None or any(k in item for k in ("gateway", "dev", "nexthops")):
        return item
    if isinstance(found.get("group"), list):
        members = [nexthops.get(m["id"]) if isinstance(m, Mapping)
                   and isinstance(m.get("id"), int) else None for m in found["group"]]
        if not members or any(m is None or "group" in m for m in members):
            return item
        return {**item, "nexthops": [{k: m[k] for k in ("gateway", "dev", "flags") if k in m}
                                     for m in members if m is not None]}
    if "blackhole" in found:
        return item  # the route's type says blackhole already
    return {**item, **{k: found[k] for k in ("gateway", "dev") if k in found},
            "flags": [*item.get("flags", ()), *found.get("flags", ())]}


#: A route's key in both listings of ``ip route``: destination, source prefix (``from``,
#: IPv6's source-specific routes), table, device, metric.
_RouteKey = tuple[str, str | None, str, str | None, int]
_ROUTE_TYPES: Final = frozenset({"unicast", "local", "broadcast", "anycast", "multicast",
                                 "blackhole", "unreachable", "prohibit", "throw", "nat"})


def parse_locked_mtus(text: str) -> frozenset[_RouteKey]:
    """``ip route show table all`` text -> the routes whose ``mtu`` is locked (``mtu lock
    1280``), each by destination, ``from``, table, device and metric as
    :func:`parse_routes` reads them from the JSON listing, which leaves the lock out.

    A line is read keyword by keyword, each one's value skipped (``dev table`` is a device
    named ``table``); one whose metric is not a u32 in ASCII digits is left out (a
    bundle's text may be anyone's: ``int`` refuses ``²`` and 5 000 digits)."""
    locked = set()
    for line in text.splitlines():
        words = line.split()
        if not words or line[0].isspace():
            continue  # a multipath route's nexthop lines carry no metrics
        if words[0] in _ROUTE_TYPES:
            words = words[1:]
        fields: dict[str, str] = {}
        index = 1
        while index < len(words) - 1:
            word, value = words[index], words[index + 1]
            if word in _METRICS and value == "lock":
                fields.setdefault(f"{word} lock", words[index + 2]
                                  if index + 2 < len(words) else "")
                index += 3
            elif word in _VALUED:
                fields.setdefault(word, value)
                index += 2
            else:
                index += 1  # a flag (onlink, linkdown), or a value of a key not known
        metric = fields.get("metric", "0")
        if "mtu lock" in fields and metric.isascii() and metric.isdigit() and (
                len(metric) <= 10 and int(metric) < 2 ** 32):
            locked.add((words[0], fields.get("from"), fields.get("table", "main"),
                        fields.get("dev"), int(metric)))
    return frozenset(locked)


#: ``ip route``'s keywords followed by a value (``via`` by its family too: ``via inet6
#: fe80::1``, the address then skipped as a word not known).
_VALUED: Final = frozenset({"from", "tos", "via", "dev", "table", "proto", "scope", "src",
                            "metric", "nhid", "expires", "pref", "realms", "encap"})
#: A route's metrics, each of which ``ip route`` may print as ``KEY lock VALUE``.
_METRICS: Final = frozenset({"mtu", "advmss", "window", "rtt", "rttvar", "ssthresh", "cwnd",
                             "initcwnd", "initrwnd", "reordering", "hoplimit", "features",
                             "rto_min", "quickack", "congctl", "fastopen_no_cookie"})


def _route_key(item: Mapping[str, Any]) -> _RouteKey:
    metric, device, source = item.get("metric", 0), item.get("dev"), item.get("from")
    return (str(item["dst"]), source if isinstance(source, str) else None,
            str(item.get("table", "main")),
            device if isinstance(device, str) else None,
            metric if isinstance(metric, int) and not isinstance(metric, bool) else 0)


def parse_routes(data: object, family: int,
                 nexthops: Mapping[int, Mapping[str, Any]] | None = None,
                 locked: Container[_RouteKey] = frozenset()) -> list[RouteEntry]:
    """``ip -j route show table all`` output (parsed JSON) -> routes of every table.

    ``nexthops``: the nexthop objects (:func:`nexthop_objects`), for routes that name
    theirs by ``nhid`` alone; ``locked``: the routes whose mtu is locked
    (:func:`parse_locked_mtus`)."""
    routes = []
    for item in data if isinstance(data, list) else []:
        if not isinstance(item, Mapping) or "dst" not in item:
            continue
        key = _route_key(item)
        if nexthops and "nhid" in item:
            item = _resolved(item, nexthops)  # noqa: PLW2901 - the route as if dumped whole
        if "dead" in item.get("flags", ()):
            continue
        destination = _network(item["dst"], None, family)
        if destination is None or destination.version != family:
            continue
        gateway, device = item.get("gateway"), item.get("dev")
        hops: list[tuple[IPAddress | None, str | None]] = []
        down: list[str | None] = [device] if "linkdown" in item.get("flags", ()) else []
        listed = item.get("nexthops")
        if gateway is None and isinstance(listed, list) and listed:
            # Multipath: the kernel's hash picks one nexthop per flow; the trace follows each.
            for hop in listed:
                if "dead" in hop.get("flags", ()):
                    continue  # the kernel hashes no flow onto a dead nexthop
                hop_gateway, hop_device = hop.get("gateway"), hop.get("dev", device)
                if not all(isinstance(v, str) or v is None for v in (hop_gateway, hop_device)):
                    raise ValueError(f"a nexthop of the route to {destination} is not text")
                hops.append((ip_address(hop_gateway) if hop_gateway else None, hop_device))
                if "linkdown" in hop.get("flags", ()):
                    down.append(hop_device)
            if not hops:
                continue
            first, device = hops[0]
            gateway = str(first) if first is not None else None
        metric = item.get("metric", 0)
        if not all(isinstance(v, str) or v is None for v in (
                device, item.get("protocol"), item.get("scope"), item.get("type"),
                item.get("from"), item.get("tos"))):
            raise ValueError(f"a route to {destination} names its device, protocol, scope "
                             "or type with something other than text")
        routes.append(RouteEntry(
            destination,
            str(item.get("type", "unicast")),
            _table(item.get("table", "main")),
            ip_address(gateway) if gateway else None,
            device,
            int(metric) if isinstance(metric, int) else 0,
            ip_address(item["prefsrc"]) if item.get("prefsrc") else None,
            item.get("protocol"),
            item.get("scope"),
            tuple(hops) if len(hops) > 1 else (),
            _source(item.get("from"), family),
            _tos(item.get("tos")),
            tuple(down),
            _route_mtu(item.get("metrics")),
            key in locked,
        ))
    return routes


def _route_mtu(metrics: object) -> int | None:
    """The ``mtu`` among a route's ``metrics`` as ``ip -j`` prints them
    (``[{"mtu": 1280}]``); None without one, or one of another shape."""
    for item in metrics if isinstance(metrics, list) else []:
        value = item.get("mtu") if isinstance(item, Mapping) else None
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _source(value: str | None, family: int) -> IPNetwork | None:
    """An IPv6 route's ``from`` prefix (``ip -6 route add ... from PREFIX``); ``::/0``
    is every source, as no ``from`` is."""
    source = _network(value, None, family)
    return source if source is not None and source.prefixlen else None


def _tos(value: str | None) -> int:
    """A route's ``tos`` as ``ip`` prints it: a number, or a name from
    ``/etc/iproute2/rt_dsfield`` (``AF11``); any name is some TOS other than 0."""
    if value is None or value in ("default", "0"):
        return 0
    try:
        return int(value, 16)
    except ValueError:
        return 0xFF  # a name ``ip`` found for a value: not 0 (0 prints as ``default``)


def _number(value: object, default: int) -> int:
    if value is None:
        return default
    return int(str(value), 0)


def parse_rules(data: object, family: int) -> list[RuleEntry]:
    """``ip -j rule show`` output -> rules in priority order (the kernel's order)."""
    rules = []
    known = {"priority", "not", "src", "srclen", "dst", "dstlen", "iif", "oif", "fwmark",
             "fwmask", "table", "action", "target", "suppress_prefixlen", "ipproto",
             "iif_detached", "oif_detached", "flags", "protocol", "goto", "unresolved",
             "nop", "tos"}
    for item in data if isinstance(data, list) else []:
        if not isinstance(item, Mapping):
            continue
        _check_rule_types(item)
        unknown = tuple(f"{k} {v}" for k, v in sorted(item.items()) if k not in known
                        or (k == "tos" and not isinstance(v, str)))
        action = str(item.get("action", "lookup"))
        if action in ("to_tbl", "lookup"):
            action = "lookup"
        # ``ip -j rule`` prints a goto as ``"goto": N`` (``"unresolved"`` when no rule has
        # priority N) and a nop as ``"nop"``, without any ``action``.
        if "goto" in item:
            action = "goto"
        elif "nop" in item:
            action = "nop"
        target = item.get("goto", item.get("target"))
        ipproto = item.get("ipproto")
        rules.append(RuleEntry(
            int(item.get("priority", 0)),
            action,
            _table(item["table"]) if "table" in item else (254 if action == "lookup" else None),
            _network(item.get("src"), item.get("srclen"), family),
            _network(item.get("dst"), item.get("dstlen"), family),
            item.get("iif"),
            item.get("oif"),
            _number(item.get("fwmark"), 0) if "fwmark" in item else None,
            _number(item.get("fwmask"), 0xFFFFFFFF),
            "not" in item,
            int(target) if action == "goto" and str(target).isdigit()
            and "unresolved" not in item else None,
            int(item["suppress_prefixlen"]) if "suppress_prefixlen" in item else None,
            {"tcp": 6, "udp": 17, "icmp": 1, "ipv6-icmp": 58}.get(str(ipproto), -1)
            if ipproto is not None else None,
            unknown,
            _tos(item["tos"] if isinstance(item.get("tos"), str) else None),
        ))
    return sorted(rules, key=lambda r: r.priority)


def _check_rule_types(item: Mapping[str, Any]) -> None:
    """Refuse a policy rule whose fields are not of the types ``ip -j rule`` prints (a
    number for the priority, text for the rest): an edited bundle's ``"iif": 5`` would
    otherwise be a rule nothing matches, or break the rule's description."""
    priority = item.get("priority", 0)
    texts = ("src", "dst", "iif", "oif", "action", "ipproto")
    if (not isinstance(priority, int) or isinstance(priority, bool)
            or not all(isinstance(item[k], str) for k in texts if k in item)
            or not isinstance(item.get("table", ""), str | int)
            or isinstance(item.get("table"), bool)):
        raise ValueError(f"the policy rule of priority {priority!r} has fields of other "
                         "types than ip -j rule prints (a number for the priority, text for "
                         f"{', '.join(texts)} and the table)")


def parse_addresses(data: object) -> list[Address]:
    """``ip -j addr`` output -> every address with its interface (primaries first)."""
    addresses = []
    for link in data if isinstance(data, list) else []:
        if not isinstance(link, Mapping):
            continue
        for info in link.get("addr_info", ()):
            if "local" not in info:
                continue
            address = Address(link.get("ifname", "?"), ip_address(info["local"]),
                              int(info.get("prefixlen", 0)), info.get("scope", "global"),
                              bool(info.get("secondary")),
                              # Optimistic DAD: usable, but avoided as deprecated is.
                              bool(info.get("deprecated") or info.get("optimistic")),
                              bool((info.get("tentative") and not info.get("optimistic"))
                                   or info.get("dadfailed")))
            if not isinstance(address.device, str) or not isinstance(address.scope, str):
                raise ValueError(f"an address of {address.device!r} is not named with text")
            _ = address.network  # a prefix length out of range is the capture's error
            addresses.append(address)
    return addresses


def parse_link_mtus(data: object) -> dict[str, int]:
    """``ip -j addr`` output -> each interface's MTU (those whose ``mtu`` is a number)."""
    mtus = {}
    for link in data if isinstance(data, list) else []:
        if not isinstance(link, Mapping):
            continue
        name, mtu = link.get("ifname"), link.get("mtu")
        if isinstance(name, str) and isinstance(mtu, int) and not isinstance(mtu, bool) and (
                mtu > 0):
            mtus[name] = mtu
    return mtus


def parse_link_states(data: object) -> dict[str, str]:
    """``ip -j addr`` output -> the interfaces that cannot carry packets: ``down`` (set
    down: the kernel removed the routes through it) or ``no-carrier`` (up, but its link
    is not: the kernel keeps its routes, flagged ``linkdown``, and still sends there)."""
    states = {}
    for link in data if isinstance(data, list) else []:
        if not isinstance(link, Mapping):
            continue
        name, flags = link.get("ifname"), link.get("flags")
        if not isinstance(name, str) or not isinstance(flags, list):
            continue  # not as ip prints it: nothing known of the link, taken as up
        if "UP" not in flags:
            states[name] = "down"
        elif "NO-CARRIER" in flags:
            states[name] = "no-carrier"
    return states


# ---------------------------------------------------------------- lookup


@attrs.frozen
class Lookup:
    """The result of a route lookup.

    ``type`` is the route's type (``unicast``, ``local`` ...), ``blackhole`` /
    ``unreachable`` / ``prohibit`` (from a route or a rule), ``none`` (no route
    matched) or ``unknown`` (a rule could not be evaluated, e.g. a mark set by a
    rule the doctor does not follow). ``rule`` is the rule that chose the table.
    ``candidates`` are the other routes of every consulted table that also
    contain the destination (what a shorter or later route would have done).
    """

    type: str
    route: RouteEntry | None = None
    rule: RuleEntry | None = None
    candidates: tuple[RouteEntry, ...] = ()
    reason: str = ""

    @property
    def ok(self) -> bool:
        """A unicast or local route was found."""
        return self.type in ("unicast", "local")

    def describe(self) -> str:
        """``ROUTE (rule RULE)``, or why no route was found."""
        if self.route is not None:
            via = f" [rule {self.rule.describe()}]" if self.rule and self.rule.priority not in (
                0, 32766) else ""
            return self.route.describe() + via
        if self.rule is not None and self.type in _FAILING:
            return f"rule {self.rule.describe()}"
        return self.reason or "no route"


def _rule_matches(rule: RuleEntry, src: IPAddress | None, dst: IPAddress, *, iif: str,
                  mark: int | None, proto: int | None) -> bool | None:
    checks: list[bool | None] = []
    if rule.src is not None:
        checks.append(src is not None and src.version == rule.src.version and src in rule.src)
    if rule.dst is not None:
        checks.append(dst.version == rule.dst.version and dst in rule.dst)
    if rule.iif is not None:
        checks.append(rule.iif == iif)
    if rule.oif is not None:
        checks.append(False)  # only output routing (sockets bound to a device) sets an oif
    if rule.fwmark is not None:
        checks.append(None if mark is None else (mark & rule.fwmask) == rule.fwmark)
    if rule.ipproto is not None:
        checks.append(proto == rule.ipproto)
    if rule.tos:
        checks.append(False)  # the traced packet's TOS is 0
    if rule.unknown:
        checks.append(None)
    if any(c is False for c in checks):
        matched: bool | None = False
    elif any(c is None for c in checks):
        return None
    else:
        matched = True
    return (not matched) if rule.invert else matched


def _usable(route: RouteEntry, ignore_linkdown: Container[str]) -> RouteEntry | None:
    """``route`` without the nexthops a lookup passes over: those flagged ``linkdown``
    on a device where ``ignore_routes_with_linkdown`` is set (``None``: every one)."""
    if not route.linkdown or not any(d in ignore_linkdown for d in route.linkdown
                                     if d is not None):
        return route
    hops = route.nexthops or ((route.gateway, route.device),)
    kept = [h for h in hops if not (h[1] in route.linkdown and h[1] in ignore_linkdown)]
    if not kept:
        return None
    (gateway, device), *more = kept
    return attrs.evolve(route, gateway=gateway, device=device,
                        nexthops=tuple(kept) if more else (),
                        linkdown=tuple(d for d in route.linkdown if d not in ignore_linkdown))


def _table_lookup(routes: Sequence[RouteEntry], table: int | str, dst: IPAddress,
                  src: IPAddress | None, ignore_linkdown: Container[str] = ()
                  ) -> list[RouteEntry]:
    """The routes of ``table`` containing ``dst``, best first.

    A route with a ``tos`` is left out (the traced packet's TOS is 0), and so is a
    nexthop flagged ``linkdown`` whose device is in ``ignore_linkdown`` (a route left
    without nexthops is passed over: the lookup goes on to the next best, also of a
    shorter prefix, ``fib_table_lookup`` and ``fib6_table_lookup`` alike). IPv6 keeps a
    destination's source-specific routes (``from``) in a subtree that is looked up
    instead of the destination's other routes: when a prefix has any, only those whose
    ``from`` holds ``src`` are candidates there (the longest ``from`` first, whatever
    the metrics), and with none of them matching the lookup goes on to shorter
    prefixes, passing over that prefix's routes without ``from`` (fib6_node_lookup_1),
    except at ``::/0``, where they serve.
    """
    def holds(route: RouteEntry) -> bool:
        if route.table != table or dst not in route.destination or route.tos:
            return False
        if route.type == "broadcast":
            return route.destination.prefixlen == route.destination.max_prefixlen
        return route.type not in ("multicast", "anycast")
    matching = [u for u in (_usable(r, ignore_linkdown) for r in routes if holds(r))
                if u is not None]
    # The table's root (::/0) keeps its own routes when its subtree has no match: the
    # lookup falls back to the root itself, so a default without ``from`` still serves.
    subtrees = {r.destination for r in matching
                if r.source is not None and r.destination.prefixlen}
    matching = [r for r in matching if (
        r.destination not in subtrees if r.source is None
        else src is not None and src.version == r.source.version and src in r.source)]
    return sorted(matching, key=lambda r: (-r.destination.prefixlen,
                                           -(r.source.prefixlen if r.source else 0), r.metric))


def lookup(routes: Sequence[RouteEntry], rules: Sequence[RuleEntry], dst: IPAddress,
           *, src: IPAddress | None = None, iif: str = "lo", mark: int | None = 0,
           proto: int | None = None, ignore_linkdown: Container[str] = ()) -> Lookup:
    """Route ``dst`` as the kernel's FIB would for a packet from ``src`` arriving on ``iif``.

    Without any rule (a capture with no ``ip rule`` output) the kernel's default
    rules are assumed: local, main, default. ``ignore_linkdown``: the devices where
    ``ignore_routes_with_linkdown`` is in force (``NodeState.linkdown_ignored``);
    their ``linkdown`` nexthops are passed over.
    """
    if not rules:
        rules = [RuleEntry(0, table=255), RuleEntry(32766), RuleEntry(32767, table=253)]
    candidates: list[RouteEntry] = []
    index = 0
    while index < len(rules):
        rule = rules[index]
        index += 1
        matched = _rule_matches(rule, src, dst, iif=iif, mark=mark, proto=proto)
        if matched is None:
            return Lookup("unknown", rule=rule, candidates=tuple(candidates),
                          reason=f"rule {rule.describe()} cannot be evaluated")
        if not matched or rule.action == "nop":
            continue
        if rule.action in _FAILING:
            return Lookup(rule.action, rule=rule, candidates=tuple(candidates))
        if rule.action == "goto":
            # The kernel jumps to the first rule of exactly that priority; a goto whose
            # target does not exist ("unresolved") is passed over.
            index = next((i for i, r in enumerate(rules) if r.priority == rule.goto), index)
            continue
        if rule.action != "lookup" or rule.table is None:
            return Lookup("unknown", rule=rule, reason=f"rule action {rule.action}")
        found = _table_lookup(routes, rule.table, dst, src, ignore_linkdown)
        if not found:
            continue
        best = found[0]
        if best.type == "throw":
            candidates += found[1:]
            continue
        # Only a lookup that succeeded is suppressed: a blackhole, unreachable or
        # prohibit route ends the walk whatever its prefix length (fib_rules_lookup).
        if (rule.suppress_prefixlength is not None and best.type not in _FAILING
                and best.destination.prefixlen <= rule.suppress_prefixlength):
            candidates += found
            continue
        return Lookup(best.type, best, rule, (*candidates, *found[1:]))
    return Lookup("none", candidates=tuple(candidates), reason=f"no route to {dst}")


@attrs.frozen
class Fib:
    """One family's routing as netfilter's ``fib`` expression (nftables) and the
    ``rpfilter`` match (iptables) look it up: ``nft_fib``, ``xt_rpfilter``."""

    routes: tuple[RouteEntry, ...]
    rules: tuple[RuleEntry, ...]
    local: frozenset[IPAddress]

    def reverse(self, src: IPAddress, dst: IPAddress, *, mark: int | None) -> Lookup:
        """The route back to ``src`` for a packet ``src -> dst`` (``fib saddr``,
        ``rpfilter``): looked up from ``dst`` as the loopback's (no ``iif`` rule sees the
        packet's interface), with ``mark`` (0 unless the rule asks for the packet's),
        linkdown routes kept (``FIB_LOOKUP_IGNORE_LINKSTATE``)."""
        return lookup(self.routes, self.rules, src, src=dst, iif="lo", mark=mark)

    def address_type(self, address: IPAddress) -> str:
        """``fib daddr type``: ``local``, ``broadcast`` or ``multicast`` as the node's local
        table says (``inet_dev_addr_type``; IPv6: its addresses), else ``unicast``."""
        if address.is_multicast:
            return "multicast"
        if address in self.local:
            return "local"
        if address.version == 4:
            if address == IPv4Address("255.255.255.255"):
                return "broadcast"
            found = _table_lookup(self.routes, 255, address, None)
            if found and found[0].type in ("local", "broadcast"):
                return found[0].type
        return "unicast"


def rp_filter_check(routes: Sequence[RouteEntry], rules: Sequence[RuleEntry],
                    addresses: Sequence[Address], *, src: IPAddress, dst: IPAddress,
                    iif: str, mode: int, oif: str | None = None,
                    mark: int | None = 0, proto: int | None = None,
                    ignore_linkdown: Container[str] = ()) -> tuple[bool | None, Lookup]:
    """Does a packet ``src -> dst`` arriving on ``iif`` pass reverse-path filtering?

    ``mode`` is the effective ``rp_filter`` (the larger of ``all`` and the
    interface's). IPv4 only; mode 0 always passes. ``oif`` is the interface a
    forwarded packet leaves by: the kernel's reverse lookup runs as if the packet
    came in there (``fib_validate_source`` gets the forward route's device), so
    ``ip rule ... iif`` selectors see it; for local delivery it is ``lo``. ``proto``
    (the packet's protocol number) takes part only where a rule of another ``iif`` than
    ``lo`` selects on the protocol or ports: the kernel then dissects the packet for the
    reverse lookup too (``fib4_rules_early_flow_dissect``), else looks up protocol 0.
    """
    dissected = any(r.iif != "lo" and (r.ipproto is not None or any(
        u.startswith(("sport", "dport")) for u in r.unknown)) for r in rules)
    back = lookup(routes, rules, src, src=dst, iif=oif or "lo", mark=mark,
                  proto=proto if dissected else None, ignore_linkdown=ignore_linkdown)
    if mode == 0:
        return True, back
    if back.type == "unknown":
        return None, back
    if back.type != "unicast" or back.route is None:
        return False, back
    # Any nexthop of a multipath route back will do (fib_info_nh_uses_dev), and a
    # match passes even on an interface without an IPv4 address.
    if iif in (back.route.device, *(device for _, device in back.route.nexthops)):
        return True, back
    if not any(a.device == iif and a.address.version == 4 for a in addresses):
        return False, back  # without an address only a matching route back passes
    return mode != 1, back


def masquerade_source(addresses: Sequence[Address], device: str, nexthop: IPAddress,
                      destination: IPAddress | None = None) -> IPAddress | None:
    """The source address masquerade picks on ``device`` for a packet to ``destination``
    through ``nexthop``.

    IPv4: the first primary global address whose subnet holds the next hop, else
    the first primary global one (``inet_select_addr``); a device without one borrows
    another interface's (an unnumbered uplink masquerades to the address on ``lo``).
    IPv6: source address selection for the packet's *destination*
    (``ipv6_dev_get_saddr``, not the next hop, often a link-local router), among the
    global addresses of every device but tentative ones, by RFC 6724's rules in the
    kernel's order: not deprecated (rule 3), on the outgoing device (rule 5), sharing
    the longest prefix with the destination, counted up to the address's own prefix
    length (rule 8). None only when the node has no such address.
    """
    def globals_of(name: str | None) -> list[Address]:
        return [a for a in addresses if a.address.version == nexthop.version
                and a.scope == "global" and name in (None, a.device)]
    mine = globals_of(device) or globals_of(None)
    if nexthop.version == 4:
        primaries = [a for a in mine if not a.secondary]
        for a in primaries:
            if a.device == device and nexthop in a.network:
                return a.address
        return primaries[0].address if primaries else None
    candidates = [a for a in globals_of(None) if not a.tentative]
    if not candidates:
        return None
    target = destination if destination is not None else nexthop
    return max(candidates, key=lambda a: (
        not a.deprecated, a.device == device,
        min(_common_prefix(a.address, target), a.prefixlen))).address


def _common_prefix(a: IPAddress, b: IPAddress) -> int:
    x = int(a) ^ int(b)
    return a.max_prefixlen - x.bit_length()


def as_dict(route: RouteEntry) -> dict[str, Any]:
    """A route as JSON (for traces)."""
    return {"destination": str(route.destination), "type": route.type,
            "table": table_name(route.table), "gateway": str(route.gateway or "") or None,
            "device": route.device, "metric": route.metric}
