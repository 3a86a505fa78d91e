"""Small readers of what k3snet renders, for read-back tests: each turns a rendered
file back into model values, strictly (a line it does not expect is an error), so a
value that leaked into the text as extra syntax shows up as a failed read-back.

ifupdown and route lines are read as ``ip route`` arguments, netplan with a YAML
loader, systemd-networkd as the INI format it is (repeated ``[Route]`` sections, so
not :mod:`configparser`), sysctl.d and Corefile server blocks line by line, and nft
JSON through the nftables backend's own rule parser.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from k3snet.backends.nftables.parse import own_object, parse_rule
from k3snet.model import NetObject, Route, Sysctl
from k3snet.model.route import RouteScope
from k3snet.render.nftables import nft_rules, nft_rules_json


class ReadBackError(AssertionError):
    """A rendered file holds something its reader does not expect."""


# The scope names of ip and systemd-networkd (the model's "universe" is their "global").
_SCOPES: dict[str, RouteScope] = {"global": "universe", "link": "link", "host": "host"}


def route_from_args(args: list[str], *, protocol: int | None = None) -> Route:
    """A route from ``ip route add`` arguments as :func:`k3snet.render.routes.ip_route_args`
    writes them (``DST [via GW] [dev DEV] [table T] [scope S] metric M proto P``)."""
    if not args:
        raise ReadBackError("no route arguments")
    fields: dict[str, Any] = {}
    names = {"via": "gateway", "dev": "device", "table": "table", "scope": "scope",
             "metric": "metric", "proto": "protocol"}
    rest = args[1:]
    if len(rest) % 2:
        raise ReadBackError(f"odd route arguments: {args!r}")
    for key, value in zip(rest[::2], rest[1::2], strict=True):
        if key not in names or names[key] in fields:
            raise ReadBackError(f"unexpected route argument {key!r} in {args!r}")
        if key == "scope" and value not in _SCOPES:
            # ip knows global, link, host, site, nowhere (and numbers): not "universe".
            raise ReadBackError(f"ip refuses scope {value!r}: {args!r}")
        fields[names[key]] = (int(value) if key in ("table", "metric", "proto")
                              else _SCOPES[value] if key == "scope" else value)
    if protocol is not None:
        fields["protocol"] = protocol
    return Route(args[0], **fields)


_IFUPDOWN_LINE = re.compile(
    r"(up|down) error=\$\((ip(?: -6)?) route (add|del) (.*) 2>&1\) \|\| "
    r"\[ (-n|-z) \"\$\(\2 route show exact \4( 2>/dev/null)?\)\" \] \|\| "
    r"\{ echo \"k3snet: \$error\" >&2; false; \}")
_IFUPDOWN_SHAPES = {("up", "add", "-n", None), ("down", "del", "-z", " 2>/dev/null")}


def read_ifupdown(text: str) -> list[Route]:
    """The routes of the ``up`` lines; every line must be a known shape, each ``up``
    and ``down`` line checking the very route it adds or deletes (``show exact``)."""
    import shlex  # noqa: PLC0415 - only the shell readers need it

    routes: list[Route] = []
    downs = 0
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        words = line.split()
        if words[0] == "iface" and len(words) == 4 and words[2] in ("inet", "inet6"):
            continue
        if words[0] == "address" and len(words) == 2:
            continue
        found = _IFUPDOWN_LINE.fullmatch(line.strip())
        if found is None or (found[1], found[3], found[5], found[6]) not in _IFUPDOWN_SHAPES:
            raise ReadBackError(f"unexpected ifupdown line {line!r}")
        if found[1] == "up":
            routes.append(route_from_args(shlex.split(found[4])))
        else:
            downs += 1
    if downs != len(routes):
        raise ReadBackError(f"{len(routes)} up lines but {downs} down lines")
    return routes


_NM_FIXED = frozenset({
    "#!/bin/sh", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", 'case "${2:-}" in',
    "    up|reapply|dhcp4-change|dhcp6-change) ;;", "    *) exit 0 ;;", "esac", "status=0",
    'case "${1:-}" in', "        ;;", 'exit "$status"'})
_NM_ADD = re.compile(r"        error=\$\((ip(?: -6)?) route add (.*) 2>&1\) \|\|")
_NM_DEVICE = re.compile(r"    (\S+)\)")


def read_networkmanager(text: str) -> list[Route]:
    """The routes a NetworkManager dispatcher script adds; every line must be a known
    shape, each ``add`` followed by its ``show exact`` check of the very same route and
    the failure line, under the case branch of the route's own device."""
    import shlex  # noqa: PLC0415 - only this reader reads shell

    routes: list[Route] = []
    lines = iter(text.splitlines())
    device: str | None = None
    for line in lines:
        if not line or line.startswith("# ") or line in _NM_FIXED:
            continue
        if (found := _NM_DEVICE.fullmatch(line)) is not None:
            (device,) = shlex.split(found[1])
            continue
        added = _NM_ADD.fullmatch(line)
        if added is None:
            raise ReadBackError(f"unexpected NetworkManager script line {line!r}")
        ip, args = added[1], added[2]
        route = route_from_args(shlex.split(args))
        if route.device != device:
            raise ReadBackError(f"route through {route.device} under the case of {device}")
        check = f'            [ -n "$({ip} route show exact {args})" ] ||'
        fail = '            { echo "k3snet: $error" >&2; status=1; }'
        if (next(lines, None), next(lines, None)) != (check, fail):
            raise ReadBackError(f"the route added by {line!r} is not checked as added")
        routes.append(route)
    return routes


def read_netplan(text: str, *, protocol: int) -> list[Route]:
    """The routes of a netplan file (netplan has no protocol: ``protocol`` fills it)."""
    data = yaml.safe_load(text)
    network = data["network"]
    if set(network) - {"version", "ethernets", "bonds", "bridges", "vlans", "tunnels", "vrfs",
                       "wifis", "modems", "dummy-devices", "virtual-ethernets"}:
        raise ReadBackError(f"unexpected netplan keys {sorted(network)}")
    routes = []
    for section, devices in network.items():
        if section == "version":
            continue
        for device, config in devices.items():
            if set(config) != {"routes"}:
                raise ReadBackError(f"unexpected keys for {device!r}: {sorted(config)}")
            for entry in config["routes"]:
                if set(entry) - {"to", "via", "scope", "metric", "table"}:
                    raise ReadBackError(f"unexpected route keys {sorted(entry)}")
                if "metric" not in entry:
                    # netplan's NetworkManager renderer gives it the connection's metric
                    # (100 on ethernet), networkd the kernel's: not one value.
                    raise ReadBackError(f"a netplan route without metric: {entry}")
                if "via" not in entry and entry.get("scope", "global") == "global":
                    # netplan: "global unicast route must include both a 'to' and 'via' IP".
                    raise ReadBackError(f"netplan refuses a global route without via: {entry}")
                routes.append(Route(entry["to"], gateway=entry.get("via"), device=device,
                                    table=entry.get("table", 254), protocol=protocol,
                                    metric=entry["metric"],
                                    scope=_SCOPES[entry.get("scope", "global")]))
    return routes


def read_networkd(files: dict[str, str]) -> list[Route]:
    """The routes of systemd-networkd files (``[Match] Name=`` or the drop-in's parent)."""
    routes = []
    for name, text in files.items():
        device: str | None = None
        match = re.fullmatch(r"90-k3snet-(.+)\.network", name)
        if match:
            device = match[1]
        sections: list[tuple[str, dict[str, str]]] = []
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            if line.startswith("[") and line.endswith("]"):
                sections.append((line[1:-1], {}))
                continue
            key, sep, value = line.partition("=")
            if not sep or not sections or key in sections[-1][1]:
                raise ReadBackError(f"unexpected networkd line {line!r} in {name}")
            sections[-1][1][key] = value
        for section, values in sections:
            if section == "Match":
                if values.get("Name") != device or set(values) != {"Name"}:
                    raise ReadBackError(f"[Match] {values} does not name {device!r}")
                continue
            if section != "Route" or set(values) - {"Destination", "Gateway", "Metric",
                                                    "Table", "Scope", "Protocol"}:
                raise ReadBackError(f"unexpected section [{section}] {values}")
            if ("Scope" not in values and "Gateway" not in values
                    and ":" not in values["Destination"]):
                # Without Scope=, systemd before v251 (Ubuntu 22.04's 249) gives an IPv4
                # route without Gateway= scope global, v251 and later scope link: not one
                # value.
                raise ReadBackError(f"a networkd IPv4 route without Gateway= nor Scope=: "
                                    f"{values}")
            routes.append(Route(values["Destination"], gateway=values.get("Gateway"),
                                device=device, metric=int(values["Metric"]),
                                table=int(values.get("Table", 254)),
                                scope=_SCOPES[values.get("Scope", "global")],
                                protocol=int(values["Protocol"])))
    return routes


def read_sysctl_d(text: str) -> list[Sysctl]:
    """``name = value`` lines, with the ``# before k3snet:`` comment as ``previous``."""
    sysctls = []
    previous: str | None = None
    for line in text.splitlines():
        if not line.isascii() or not line.isprintable():
            raise ReadBackError(f"a sysctl.d line with control characters: {line!r}")
        if line.startswith("# before k3snet: "):
            previous = line.removeprefix("# before k3snet: ")
            continue
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition(" = ")
        if not sep:
            raise ReadBackError(f"unexpected sysctl.d line {line!r}")
        sysctls.append(Sysctl(name, value, previous=previous))
        previous = None
    return sysctls


_SERVER = re.compile(r"(?P<zone>[^\s:{}]+):53 \{\n    errors\n    cache 30\n"
                     r"    forward \. (?P<resolvers>[^\n{}]+)\n\}\n")


# A forward target as CoreDNS's parse.HostPortOrFile reads it (net.SplitHostPort):
# IPV4:PORT, [IPV6]:PORT, or an address alone on port 53.
_TARGET = re.compile(r"\[(?P<v6>[^\]]+)\]:(?P<port6>[0-9]+)|(?P<v4>[0-9.]+):(?P<port4>[0-9]+)")


def read_server_block(text: str) -> tuple[str, list[tuple[str, int]]]:
    """A Corefile server block as k3snet writes it: (zone, [(resolver, port)]); nothing else."""
    match = _SERVER.fullmatch(text)
    if match is None:
        raise ReadBackError(f"not one server block of k3snet's shape: {text[:200]!r}")
    targets = []
    for target in match["resolvers"].split(" "):
        hostport = _TARGET.fullmatch(target)
        if hostport is None:
            targets.append((target, 53))
        else:
            targets.append((hostport["v6"] or hostport["v4"],
                            int(hostport["port6"] or hostport["port4"])))
    return match["zone"], targets


def read_nft_json(obj: NetObject) -> list[NetObject]:
    """``obj``'s libnftables JSON statements, read back by the backend's rule parser."""
    back = []
    for rule, statements in zip(nft_rules(obj), nft_rules_json(obj), strict=True):
        expr = json.loads(statements)
        if not isinstance(expr, list) or not all(isinstance(s, dict) for s in expr):
            raise ReadBackError(f"not a statement list: {statements!r}")
        found = own_object(parse_rule(expr), rule.chain)
        if found is None:
            raise ReadBackError(f"the parser does not recognise {statements!r}")
        back.append(found[0])
    return back
