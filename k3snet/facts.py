"""Facts about a node (interfaces, addresses, routed prefixes), read with ``ip -j``.

Compile uses them to check a spec against the node it runs on: devices exist,
gateways are reachable. Reading them needs only iproute2, not pyroute2.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from typing import Any

from k3snet.backends.netns import validate_netns
from k3snet.errors import BackendError, ModelError
from k3snet.model import validate_interface_name
from k3snet.model.cidr import parse_network
from k3snet.spec import NodeFacts

__all__ = ["facts_from_ip_json", "gather_facts"]


def _ip_json(args: list[str], netns: str | None) -> Any:
    argv = ["ip", "-j"]
    if netns is not None:
        argv += ["-n", validate_netns(netns)]
    argv += args
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30)
    except FileNotFoundError as exc:
        raise BackendError("iproute2's `ip` is not installed") from exc
    except subprocess.CalledProcessError as exc:
        raise BackendError(f"`{' '.join(argv)}` failed: {exc.stderr.strip()}") from exc
    return json.loads(done.stdout or "[]")


def gather_facts(netns: str | None = None, *, hostname: str | None = None) -> NodeFacts:
    """Interfaces with their global addresses, and the prefixes the node routes (read live)."""
    routes = [*_ip_json(["-4", "route", "show", "table", "all"], netns),
              *_ip_json(["-6", "route", "show", "table", "all"], netns)]
    return facts_from_ip_json(_ip_json(["addr", "show"], netns), routes,
                              hostname=hostname or netns)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _is_interface_name(name: str) -> bool:
    try:
        validate_interface_name(name)
    except ModelError:
        return False
    return True


def _interface(entry: dict[str, Any]) -> str | None:
    """``local/prefixlen`` of one ``addr_info`` entry; ``None`` when it is not one."""
    text = f"{entry.get('local')}/{entry.get('prefixlen')}"
    try:
        ipaddress.ip_interface(text)
    except ValueError:
        return None
    return text


def facts_from_ip_json(addresses: Any, routes: Any, *, hostname: str | None = None) -> NodeFacts:
    """:class:`NodeFacts` from captured ``ip -j addr show`` and ``ip -j route show table all``.

    For central planning of many nodes: capture on each node (IPv4 and IPv6 route
    listings concatenated, or one each) and check every node's spec where the plan
    is made. Malformed entries are skipped; a listing that is not a list is an error.

    >>> facts = facts_from_ip_json(
    ...     [{"ifname": "eth0", "addr_info": [{"local": "192.168.1.5", "prefixlen": 24,
    ...                                        "scope": "global"}]}],
    ...     [{"dst": "192.168.2.0/24", "gateway": "192.168.1.1", "dev": "eth0"}])
    >>> facts.interfaces["eth0"]
    (IPv4Interface('192.168.1.5/24'),)
    """
    if not isinstance(addresses, list) or not isinstance(routes, list):
        raise BackendError("facts: expected the JSON lists of `ip -j addr show` and "
                           "`ip -j route show table all`")
    interfaces: dict[str, list[str]] = {}
    for link in addresses:
        name = link.get("ifname") if isinstance(link, dict) else None
        if not isinstance(name, str) or name == "lo" or not _is_interface_name(name):
            continue
        interfaces[name] = [
            address for a in _list(link.get("addr_info"))
            if isinstance(a, dict) and a.get("scope") == "global"
            and (address := _interface(a)) is not None
        ]
    prefixes = []
    for route in routes:
        if not isinstance(route, dict):
            continue
        dst = route.get("dst")
        if route.get("type", "unicast") != "unicast" or not isinstance(dst, str) or \
                dst == "default":
            continue
        try:
            prefixes.append(parse_network(dst, strict=False))
        except ValueError:  # ModelError too: a zone id ("fd00::%x/64") is refused
            continue
    return NodeFacts(interfaces=interfaces, routes=prefixes, hostname=hostname)
