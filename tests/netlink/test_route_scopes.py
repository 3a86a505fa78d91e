"""What the kernel does with a route via a gateway of scope ``link`` (the model refuses it
for IPv4): ``ip route add`` in a namespace is the kernel's own answer."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from k3snet.backends.netlink import NetlinkBackend
from k3snet.model import Route, RouteBlock
from tests.netlink.links import d0_namespace, ip

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]


def _refusal(ns: str, *route: str) -> str:
    done = subprocess.run(["ip", "-n", ns, "route", "add", *route], capture_output=True,
                          text=True, check=False)
    return done.stderr.strip() if done.returncode else ""


def test_the_kernel_refuses_an_ipv4_gateway_of_link_scope_with_or_without_onlink(
        tmp_path: Path) -> None:
    with d0_namespace("scopel", "192.168.5.2/24", "2001:db8::2/64") as ns:
        via = ["via", "192.168.5.1", "dev", "d0", "scope", "link"]
        assert "Nexthop has invalid gateway" in _refusal(ns, "10.1.0.0/24", *via)
        assert "Nexthop has invalid scope" in _refusal(ns, "10.1.1.0/24", *via, "onlink")
        with pytest.raises(Exception, match="scope link has no gateway"):
            Route("10.1.0.0/24", gateway="192.168.5.1", device="d0", scope="link")
        # IPv6 routes have no scope: taken, and read back as any other (the model's
        # universe), with or without onlink.
        via6 = ["via", "2001:db8::1", "dev", "d0", "scope", "link"]
        assert _refusal(ns, "2001:db8:1::/64", *via6) == ""
        assert _refusal(ns, "2001:db8:2::/64", *via6, "onlink") == ""
        [shown] = json.loads(ip(ns, "-6", "-j", "-d", "route", "show", "2001:db8:1::/64"))
        assert shown["scope"] == "global"
        # The one the kernel takes: a gateway that is the node's own address. Read, it is
        # a foreign block where it stands, not a route the model refuses.
        assert _refusal(ns, "10.1.5.0/24", "via", "192.168.5.2", "dev", "d0",
                        "scope", "link") == ""
        with NetlinkBackend(ns, state_dir=tmp_path) as backend:
            foreign = backend.observe().foreign
        assert [b for b in foreign if isinstance(b, RouteBlock)
                and str(b.destination) == "10.1.5.0/24"]
        assert Route("2001:db8:1::/64", gateway="2001:db8::1", device="d0",
                     protocol="boot") in foreign
