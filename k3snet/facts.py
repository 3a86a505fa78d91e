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
from k3snet.errors import BackendError
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
        if not isinstance(name, str) or not name or name == "lo":
            continue
        interfaces[name] = [
            f"{a['local']}/{a['prefixlen']}"
            for a in link.get("addr_info", ()) or ()
            if isinstance(a, dict) and a.get("scope") == "global" and "local" in a
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
            prefixes.append(ipaddress.ip_network(dst, strict=False))
        except ValueError:
            continue
    return NodeFacts(interfaces=interfaces, routes=prefixes, hostname=hostname)
