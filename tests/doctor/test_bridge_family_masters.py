"""Bridge-family chains run for a bridge's ports only.

The doctor ran a ``bridge`` table's chains for packets on any interface other links name
as their master: a pod's veth enslaved to a bond read as crossing them, and ``ip saddr
POD drop`` there read blocked. The kernel runs the bridge family from the bridge's
receive handler (``br_handle_frame``) and its transmit path alone: a bond's or a VRF's
port never meets those hooks (nor br_netfilter's calls into iptables). The master's kind
(``info_slave_kind``, captured with ``ip -d``) now says which masters are bridges; a
capture made without ``-d`` keeps taking a master as a bridge.

This kernel has no bond or VRF driver to show it with packets: the capture is the
bridge lab's (``test_bridge_kernel.py``, where the kernel drops the flow) with the
master's kind rewritten.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from k3snet.doctor import Flow, NodeCapture, NodeState, Verdict, trace

_POD = "10.42.5.10"
_DESTINATION = "192.168.2.10"


def _addr(kind: str | None) -> str:
    """``ip -j -d addr`` of a node whose pod port ``vethbr`` has the master ``cnibr`` of
    ``kind`` (None: captured without ``-d``)."""
    def link(index: int, name: str, address: str | None, prefix: int = 24,
             **extra: Any) -> dict[str, Any]:
        info = [{"family": "inet", "local": address, "prefixlen": prefix, "scope": "global"}]
        return {"ifindex": index, "ifname": name, "flags": ["BROADCAST", "UP", "LOWER_UP"],
                "operstate": "UP", "addr_info": info if address else [], **extra}
    port: dict[str, Any] = {"master": "cnibr"}
    master: dict[str, Any] = {}
    if kind is not None:
        port["linkinfo"] = {"info_kind": "veth", "info_slave_kind": kind}
        master["linkinfo"] = {"info_kind": kind}
    return json.dumps([link(2, "eth0", "192.168.1.5"), link(3, "cnibr", "10.42.5.1", **master),
                       link(4, "vethbr", None, **port)])


def _capture(kind: str | None) -> NodeCapture:
    routes = [{"dst": "default", "gateway": "192.168.1.1", "dev": "eth0", "flags": []},
              {"dst": "192.168.1.0/24", "dev": "eth0", "protocol": "kernel",
               "scope": "link", "prefsrc": "192.168.1.5", "flags": []},
              {"dst": "10.42.5.0/24", "dev": "cnibr", "protocol": "kernel", "scope": "link",
               "prefsrc": "10.42.5.1", "flags": []}]
    ruleset = {"nftables": [
        {"table": {"family": "bridge", "name": "lab_br", "handle": 1}},
        {"chain": {"family": "bridge", "table": "lab_br", "name": "c", "handle": 1,
                   "type": "filter", "hook": "prerouting", "prio": 0, "policy": "accept"}},
        {"rule": {"family": "bridge", "table": "lab_br", "chain": "c", "handle": 2, "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                       "right": _POD}},
            {"drop": None}]}},
        {"table": {"family": "ip", "name": "lab_nat", "handle": 2}},
        {"chain": {"family": "ip", "table": "lab_nat", "name": "post", "handle": 1,
                   "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}},
        {"rule": {"family": "ip", "table": "lab_nat", "chain": "post", "handle": 2, "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                       "right": {"prefix": {"addr": "10.42.0.0", "len": 16}}}},
            {"masquerade": None}]}},
    ]}
    return NodeCapture.from_texts({
        "addr.json": _addr(kind),
        "routes-v4.json": json.dumps(routes),
        "rules-v4.json": json.dumps([{"priority": 0, "src": "all", "table": "local"},
                                     {"priority": 32766, "src": "all", "table": "main"}]),
        "nft-ruleset.json": json.dumps(ruleset),
        "sysctl.txt": "net.ipv4.ip_forward = 1\n",
    })


@pytest.mark.parametrize("kind", ["bond", "team", "vrf"])
def test_a_bridge_family_chain_does_not_see_what_a_non_bridge_master_receives(
        kind: str) -> None:
    found = trace(NodeState.from_capture(_capture(kind)), Flow(_POD, _DESTINATION, port=80))
    assert found.verdict is Verdict.REACHES, found.render()
    assert all(step.outcome == "pass" for step in found.steps if "lab_br" in step.where)


@pytest.mark.parametrize("kind", ["bridge", None])
def test_a_bridge_family_chain_sees_what_a_bridge_receives(kind: str | None) -> None:
    """A bridge's port (or a master whose kind a capture without ``ip -d`` does not say)."""
    found = trace(NodeState.from_capture(_capture(kind)), Flow(_POD, _DESTINATION, port=80))
    assert found.verdict is Verdict.BLOCKED, found.render()
    assert any(step.outcome == "drop" for step in found.steps if "lab_br" in step.where)
