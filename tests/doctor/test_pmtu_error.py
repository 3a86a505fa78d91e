"""``pmtu-error-dropped`` from captures: the ICMP error of path MTU discovery a router
beyond the node sends back (fragmentation needed), traced to the pod through the node's
iptables rules. The kernel's side is tests/doctor/test_pmtu_error_kernel.py."""

from __future__ import annotations

import json

import pytest

from k3snet.doctor import Finding, Flow, NodeCapture, NodeState, Verdict, diagnose

_NAT = "*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -s 10.42.0.0/24 -j MASQUERADE\nCOMMIT\n"


def _findings(*forward: str, policy: str = "ACCEPT") -> tuple[Verdict, list[Finding]]:
    """Pods on cni0, every MTU 1500, the filter table's FORWARD chain of ``forward``."""
    addresses = [{"ifname": name, "mtu": 1500, "flags": ["UP"],
                  "addr_info": [{"local": local, "prefixlen": 24}]}
                 for name, local in (("cni0", "10.42.0.1"), ("eth0", "192.168.1.5"))]
    routes = [{"dst": "10.42.0.0/24", "dev": "cni0", "scope": "link"},
              {"dst": "192.168.1.0/24", "dev": "eth0", "scope": "link"},
              {"dst": "default", "gateway": "192.168.1.1", "dev": "eth0"}]
    saves = (f"*filter\n:FORWARD {policy} [0:0]\n" + "".join(f"-A FORWARD {r}\n" for r in forward)
             + "COMMIT\n" + _NAT)
    state = NodeState.from_capture(NodeCapture.from_texts({
        "addr.json": json.dumps(addresses), "routes-v4.json": json.dumps(routes),
        "iptables-nft-v4.save": saves, "sysctl.txt": "net.ipv4.ip_forward = 1\n"}))
    d = diagnose(state, Flow("10.42.0.10", "192.168.2.10", port=5432))
    return d.verdict, [f for f in d.findings if f.code == "pmtu-error-dropped"]


@pytest.mark.parametrize("rule", [
    "-p icmp -m icmp --icmp-type 3/4 -j DROP",
    "-p icmp -m icmp --icmp-type 3 -j DROP",  # every code of the type
    "-p icmp -m icmp --icmp-type any -j REJECT",
    "-p icmp -m icmp ! --icmp-type 8 -j DROP",
    "-p icmp -j DROP",
])
def test_a_forward_rule_matching_fragmentation_needed_drops_the_pmtu_error(rule: str) -> None:
    verdict, found = _findings(rule)
    assert verdict is Verdict.REACHES  # the flow's own packets are not ICMP
    (finding,) = found
    assert finding.severity == "warning"
    assert rule.partition(" -j ")[0] in finding.where


@pytest.mark.parametrize("rule", [
    "-p icmp -m icmp --icmp-type 3/3 -j DROP",  # port unreachable
    "-p icmp -m icmp --icmp-type 11 -j DROP",
    "-p icmp -m icmp --icmp-type 8 -j DROP",
    "-p tcp -j DROP",  # the flow's packets are TCP, but this one is blocked: no finding
])
def test_a_rule_on_other_icmp_types_leaves_the_pmtu_error_be(rule: str) -> None:
    _, found = _findings(rule)
    assert found == []


def test_a_policy_drop_accepting_established_but_not_related_drops_the_pmtu_error() -> None:
    accept_pods = "-s 10.42.0.0/24 -j ACCEPT"
    _, found = _findings(accept_pods, "-m conntrack --ctstate ESTABLISHED -j ACCEPT",
                         policy="DROP")
    (finding,) = found
    assert "policy DROP" in finding.where
    _, found = _findings(accept_pods, "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                         policy="DROP")
    assert found == []


def test_a_rule_the_doctor_cannot_evaluate_is_said_not_judged() -> None:
    """An ipset the capture does not hold: the error may match it, the flow cannot."""
    verdict, found = _findings("-p icmp -m set --match-set blocked src -j DROP")
    assert verdict is Verdict.REACHES
    (finding,) = found
    assert finding.severity == "info"
    assert "cannot be judged" in finding.what
    assert "--match-set blocked" in finding.where
