"""An untracked reply or ICMP error of a flow a DNAT translated, the pod not
masqueraded, from a capture: not translated back from the endpoint to the Service's
address, the pod takes neither. The kernel's side is
tests/doctor/test_untracked_dnat_kernel.py."""

from __future__ import annotations

import json
from typing import Any

import pytest

from k3snet.doctor import Diagnosis, Flow, NodeCapture, NodeState, Verdict, diagnose

_DNAT = ("*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -d 10.43.0.100/32 -p tcp -m tcp "
         "--dport 80 -j DNAT --to-destination {to}\nCOMMIT\n")


def _diagnosis(raw: str, to: str = "192.168.2.10:5432") -> Diagnosis:
    links = (("cni0", "10.42.0.1"), ("eth0", "192.168.1.5"))
    addresses: list[dict[str, Any]] = [{"ifname": name, "mtu": 1500, "flags": ["UP"],
                                        "addr_info": [{"local": local, "prefixlen": 24}]}
                                       for name, local in links]
    routes = [{"dst": "10.42.0.0/24", "dev": "cni0", "scope": "link"},
              {"dst": "192.168.1.0/24", "dev": "eth0", "scope": "link"},
              {"dst": "default", "gateway": "192.168.1.1", "dev": "eth0"}]
    saves = (f"*raw\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING {raw}\nCOMMIT\n"
             "*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n" + _DNAT.format(to=to))
    state = NodeState.from_capture(NodeCapture.from_texts({
        "addr.json": json.dumps(addresses), "routes-v4.json": json.dumps(routes),
        "iptables-nft-v4.save": saves, "sysctl.txt": "net.ipv4.ip_forward = 1\n"}))
    return diagnose(state, Flow("10.42.0.10", "10.43.0.100", port=80),
                    upstream_routes_pods=True)


@pytest.mark.parametrize("to", ["192.168.2.10:5432", "192.168.2.10:80", "192.168.2.10"])
def test_an_untracked_reply_of_a_dnat_flow_blocks_it_though_the_pod_is_not_masqueraded(
        to: str) -> None:
    d = _diagnosis("-s 192.168.2.10/32 -j NOTRACK", to)
    assert d.verdict is Verdict.BLOCKED, d.render()
    (step,) = [s for s in d.trace.steps if s.code == "reply-untracked"]
    assert "not translated back to come from 10.43.0.100:80" in step.detail, d.render()
    assert "untracked" in [f.code for f in d.findings], d.render()


def test_an_untracked_pmtu_error_of_a_dnat_flow_is_named_though_the_pod_is_not_masqueraded(
        ) -> None:
    d = _diagnosis("-p icmp -j NOTRACK")
    assert d.verdict is Verdict.REACHES, d.render()
    (finding,) = [f for f in d.findings if f.code == "pmtu-error-dropped"]
    assert finding.severity == "warning", d.render()
    assert "quotes stays addressed to 192.168.2.10:5432" in finding.where, d.render()


def test_a_dnat_to_the_destination_itself_leaves_an_untracked_reply_reaching() -> None:
    """A DNAT that changes neither address nor port: nothing to translate back."""
    d = _diagnosis("-s 10.43.0.100/32 -j NOTRACK", "10.43.0.100:80")
    assert "reply-untracked" not in d.trace.codes, d.render()
    d = _diagnosis("-p icmp -j NOTRACK", "10.43.0.100:80")
    assert "pmtu-error-dropped" not in [f.code for f in d.findings], d.render()
