"""``ignore_routes_with_linkdown`` in a diagnosis: the failover of a node with two uplinks.

The healthy golden capture, with ``eth0`` (the uplink to the destination) without
carrier and a default route through ``eth1``. The kernel keeps using the ``linkdown``
route unless ``ignore_routes_with_linkdown`` is set; then the default route serves
(``test_linkdown_ignored_kernel.py`` checks the lookup against the kernel's).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from k3snet.doctor import Flow, NodeCapture, NodeState, Verdict, diagnose

HEALTHY = Path(__file__).parent / "golden" / "healthy"
FLOW = Flow("10.42.0.10", "192.168.2.10", port=5432)


def _failover_state(sysctls: str = "") -> NodeState:
    texts = dict(NodeCapture.read_dir(HEALTHY).texts)
    routes = json.loads(texts["routes-v4.json"])
    for route in routes:
        if route.get("dev") == "eth0" and "table" not in route:
            route["flags"] = ["linkdown"]
    routes.append({"dst": "default", "gateway": "192.168.4.1", "dev": "eth1", "flags": []})
    links = json.loads(texts["addr.json"])
    for link in links:
        if link["ifname"] == "eth0":
            link["flags"] = [*link["flags"], "NO-CARRIER"]
    texts.update({"routes-v4.json": json.dumps(routes), "addr.json": json.dumps(links),
                  "sysctl.txt": texts["sysctl.txt"] + sysctls})
    return NodeState.from_capture(NodeCapture(texts))


def test_a_linkdown_route_still_used_is_blocked_and_the_advice_names_the_failover() -> None:
    d = diagnose(_failover_state(), FLOW)
    assert d.verdict is Verdict.BLOCKED, d.render()
    finding = d.findings[0]
    assert finding.code == "link-down", d.render()
    assert finding.advice is not None
    assert "net.ipv4.conf.eth0.ignore_routes_with_linkdown = 1" in finding.advice
    assert "default via 192.168.4.1 dev eth1" in finding.advice


@pytest.mark.parametrize("sysctl", ["net.ipv4.conf.eth0.ignore_routes_with_linkdown = 1",
                                    "net.ipv4.conf.all.ignore_routes_with_linkdown = 1"])
def test_with_ignore_routes_with_linkdown_the_flow_fails_over_and_reaches(sysctl: str) -> None:
    """IPv4 reads the device's setting or ``all``'s (either one set is enough)."""
    d = diagnose(_failover_state(sysctl + "\n"), FLOW)
    assert d.verdict is Verdict.REACHES, d.render()
    assert not d.findings, d.render()
    assert str(d.trace.source_seen) == "192.168.4.5", d.render()


def test_linkdown_ignored_reads_each_family_as_the_kernel_does() -> None:
    """IPv6 reads only the device's setting (writing ``all`` there sets every device's);
    a dotted interface name is spelt with ``/`` by sysctl."""
    state = _failover_state("net.ipv6.conf.all.ignore_routes_with_linkdown = 1\n"
                            "net.ipv6.conf.eth0/100.ignore_routes_with_linkdown = 1\n"
                            "net.ipv4.conf.eth0/100.ignore_routes_with_linkdown = 0\n")
    assert state.linkdown_ignored(6) == {"eth0.100"}
    assert state.linkdown_ignored(4) == frozenset()
    every = _failover_state("net.ipv4.conf.all.ignore_routes_with_linkdown = 1\n")
    assert every.linkdown_ignored(4) == {"eth0"}  # the device with linkdown routes


def test_a_capture_without_the_sysctl_is_read_as_the_kernel_default() -> None:
    """Bundles from before the sysctl was captured: nothing is passed over."""
    assert "ignore_routes_with_linkdown" not in (HEALTHY / "sysctl.txt").read_text()
    assert _failover_state().linkdown_ignored(4) == frozenset()
