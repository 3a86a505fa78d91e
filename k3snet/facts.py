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

__all__ = ["gather_facts"]


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
    """Interfaces with their global addresses, and the prefixes the node routes."""
    interfaces: dict[str, list[str]] = {}
    for link in _ip_json(["addr", "show"], netns):
        name = link.get("ifname")
        if not name or name == "lo":
            continue
        interfaces[name] = [
            f"{a['local']}/{a['prefixlen']}"
            for a in link.get("addr_info", ())
            if a.get("scope") == "global" and "local" in a
        ]
    routes = []
    for family in ("-4", "-6"):
        for route in _ip_json([family, "route", "show", "table", "all"], netns):
            dst = route.get("dst")
            if route.get("type", "unicast") != "unicast" or not dst or dst == "default":
                continue
            try:
                routes.append(ipaddress.ip_network(dst, strict=False))
            except ValueError:
                continue
    return NodeFacts(interfaces=interfaces, routes=routes, hostname=hostname or netns)
