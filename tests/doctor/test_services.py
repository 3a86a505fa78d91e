"""Kubernetes Services: kube-proxy's DNAT followed to each endpoint; the service CIDR.

No root needed: the captures are the golden bundles recorded from the doctor lab with
kube-proxy's rules (iptables-nft, iptables-legacy, nftables mode; see conftest.py),
edited where a test needs another ruleset.
"""

from __future__ import annotations

import json
from ipaddress import ip_address
from pathlib import Path
from typing import Literal

import pytest

from k3snet.cli import main
from k3snet.doctor import Flow, NodeCapture, NodeState, Verdict, diagnose, trace
from k3snet.doctor.iptables import base_chains, parse_save
from k3snet.doctor.packet import NatAction, Packet

from .conftest import POD

GOLDEN = Path(__file__).parent / "golden"
CLUSTER_IP = Flow(POD, "10.43.0.100", port=80)


def _state(case: str, **replace: str) -> NodeState:
    capture = NodeCapture.read_dir(GOLDEN / case)
    return NodeState.from_capture(NodeCapture({**capture.texts, **replace}, capture.missing))


@pytest.mark.parametrize("case", ["service-clusterip", "service-clusterip-legacy",
                                  "service-forward-drop"])
def test_each_endpoint_is_traced(case: str) -> None:
    result = trace(_state(case), CLUSTER_IP)
    assert [e.describe_target() for e in result.endpoints] == [
        "192.168.2.10:5432", "192.168.2.11:5432"]
    assert [e.branch for e in result.endpoints] == [0, 1]
    assert result.dnat == NatAction("dnat", ip_address("192.168.2.10"), 5432)
    rendered = result.render()
    assert "verdict: " + result.verdict.value + " (to 192.168.2.10:5432)" in rendered
    tail = rendered.splitlines()[-3:]
    assert tail[0] == "endpoints (kube-proxy picks one at random for each connection):"
    assert tail[1].startswith(f"  192.168.2.10:5432: {result.endpoints[0].verdict.value}")
    assert tail[2].startswith(f"  192.168.2.11:5432: {result.endpoints[1].verdict.value}")
    assert result.to_dict()["endpoints"][1]["endpoint"] == "192.168.2.11:5432"


def test_one_blocked_endpoint_makes_the_flow_blocked_and_is_the_one_shown() -> None:
    capture = NodeCapture.read_dir(GOLDEN / "service-clusterip")
    text = capture.text("iptables-nft-v4.save").replace(
        ":OUTPUT ACCEPT [0:0]\nCOMMIT",
        ":OUTPUT ACCEPT [0:0]\n-A FORWARD -d 192.168.2.11/32 -j DROP\nCOMMIT", 1)
    assert text != capture.text("iptables-nft-v4.save")
    state = _state("service-clusterip", **{"iptables-nft-v4.save": text})
    result = trace(state, CLUSTER_IP)
    assert result.verdict is Verdict.BLOCKED
    assert result.describe_target() == "192.168.2.11:5432"
    assert [e.verdict for e in result.endpoints] == [Verdict.REACHES, Verdict.BLOCKED]
    d = diagnose(state, CLUSTER_IP)
    assert [f.code for f in d.findings] == ["forward-drop", "service-dnat"]


def test_three_endpoints_follow_kube_proxys_probabilities_in_order() -> None:
    nat = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SVC-X - [0:0]
-A PREROUTING -d 10.43.0.100/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-X
-A KUBE-SVC-X -m statistic --mode random --probability 0.33333333349 -j DNAT --to-destination 10.42.0.21:8080
-A KUBE-SVC-X -m statistic --mode random --probability 0.50000000000 -j DNAT --to-destination 10.42.0.22:8080
-A KUBE-SVC-X -j DNAT --to-destination 10.42.0.23
COMMIT
"""  # noqa: E501 - as iptables-save prints it
    chain, = base_chains(parse_save(nat), "iptables-nft", 4)
    seen = []
    for pick in range(4):
        result = chain.evaluate(Packet(4, POD, "10.43.0.100", "tcp", None, 80, "cni0", None,
                                       pick=pick))
        assert result.nat is not None
        seen.append((str(result.nat.address), result.nat.port, result.randoms,
                     result.random_taken))
    assert seen == [("10.42.0.21", 8080, 1, True), ("10.42.0.22", 8080, 2, True),
                    ("10.42.0.23", None, 2, False), ("10.42.0.23", None, 2, False)]
    # A pod on this node as the endpoint: delivered on cni0, no translation needed back.
    state = _state("service-clusterip", **{"iptables-nft-v4.save": nat})
    traced = trace(state, CLUSTER_IP)
    assert [e.describe_target() for e in traced.endpoints] == [
        "10.42.0.21:8080", "10.42.0.22:8080", "10.42.0.23:80"]
    assert traced.verdict is Verdict.REACHES, traced.render()


@pytest.mark.parametrize(("target", "expected"), [
    ("192.168.2.10:5432", NatAction("dnat", ip_address("192.168.2.10"), 5432)),
    ("192.168.2.10", NatAction("dnat", ip_address("192.168.2.10"))),
    ("192.168.2.10-192.168.2.12:80-81", NatAction("dnat", ip_address("192.168.2.10"), 80)),
    ("[fd00::5]:443", NatAction("dnat", ip_address("fd00::5"), 443)),
])
def test_dnat_targets(target: str, expected: NatAction) -> None:
    family: Literal[4, 6] = 6 if target.startswith("[") else 4
    nat = f"*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j DNAT --to-destination {target}\n"
    chain, = base_chains(parse_save(nat), "iptables-nft", family)
    src, dst = ("fd42::10", "fd43::1") if family == 6 else (POD, "10.43.0.100")
    result = chain.evaluate(Packet(family, src, dst, "tcp", None, 80, "cni0", None))
    assert result.nat == expected


def test_nftables_mode_numgen_concat_maps_and_mark_arithmetic() -> None:
    """kube-proxy's nftables mode: the Service found through ``daddr . l4proto . dport``,
    the endpoint through ``numgen``, the masquerade through ``mark or`` / ``mark and``."""
    state = _state("service-nodeport-nftables")
    result = trace(state, Flow(POD, "192.168.1.5", port=30432))
    assert result.verdict is Verdict.REACHES
    assert str(result.source_seen) == "192.168.1.5"
    nat = [s for s in result.steps if s.outcome == "nat"]
    assert "dnat to 192.168.2.10:5432" in nat[0].detail
    assert "masquerade" in nat[1].detail
    assert "kube-proxy" in nat[1].where
    assert not [s for s in result.steps if s.outcome == "unknown"]
    # Another port is not a Service: nothing translates it, nothing masquerades it.
    other = trace(state, Flow(POD, "192.168.2.10", port=5432))
    assert other.dnat is None
    assert other.verdict is Verdict.BLOCKED


def test_destination_in_the_service_cidr_is_reported() -> None:
    flow = Flow(POD, "10.43.0.10", port=5432)
    plain = _state("destination-in-service-cidr-unallocated")
    assert "destination-in-service-cidr" not in [f.code for f in diagnose(plain, flow).findings]
    d = diagnose(plain.with_cluster(service_cidrs=["10.43.0.0/16"]), flow)
    assert d.verdict is Verdict.REACHES
    finding, = (f for f in d.findings if f.code == "destination-in-service-cidr")
    assert finding.severity == "warning"
    assert "no Service uses" in finding.why
    # With kube-proxy's ClusterIP for it, the finding names the endpoint it goes to instead.
    captured = diagnose(_state("destination-in-service-cidr").with_cluster(
        service_cidrs=["10.43.0.0/16"]), flow)
    finding, = (f for f in captured.findings if f.code == "destination-in-service-cidr")
    assert "sends it to 10.42.1.5:5432" in finding.why


def test_with_cluster_keeps_cni_cidrs_and_skips_duplicates() -> None:
    state = _state("destination-in-pod-cidr")
    more = state.with_cluster(pod_cidrs=["10.42.0.0/16", "10.52.0.0/16"],
                              service_cidrs=["10.43.0.0/16", "10.43.0.0/16"])
    assert [str(c) for c in more.cluster_cidrs] == ["10.42.0.0/16", "10.52.0.0/16"]
    assert [str(c) for c in more.service_cidrs] == ["10.43.0.0/16"]


def test_cli_service_cidr_and_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["doctor", "--from", POD, "--to", "10.43.0.10:5432", "--state",
            str(GOLDEN / "destination-in-service-cidr-unallocated"), "-o", "json"]
    assert main(base) == 0
    assert "destination-in-service-cidr" not in capsys.readouterr().out
    assert main([*base, "--service-cidr", "10.43.0.0/16"]) == 0
    codes = [f["code"] for f in json.loads(capsys.readouterr().out)["findings"]]
    assert "destination-in-service-cidr" in codes
    spec = tmp_path / "spec.yaml"
    spec.write_text("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"
                    "cluster:\n  serviceCIDRs: [10.43.0.0/24]\n")
    assert main([*base, "--spec", str(spec)]) == 0
    codes = [f["code"] for f in json.loads(capsys.readouterr().out)["findings"]]
    assert "destination-in-service-cidr" in codes
    assert main([*base, "--service-cidr", "10.43.0.0/33"]) == 1
    assert "Traceback" not in capsys.readouterr().err


def test_a_random_drop_is_a_branch_too() -> None:
    """A random rule outside any DNAT (a sampled drop): both branches are traced, the
    dropping one is the verdict."""
    capture = NodeCapture.read_dir(GOLDEN / "healthy")
    text = capture.text("iptables-nft-v4.save").replace(
        ":OUTPUT ACCEPT [0:0]\nCOMMIT",
        ":OUTPUT ACCEPT [0:0]\n-A FORWARD -m statistic --mode random --probability 0.01 "
        "-j DROP\nCOMMIT", 1)
    state = _state("healthy", **{"iptables-nft-v4.save": text})
    result = trace(state, Flow(POD, "192.168.2.10", port=5432))
    assert result.verdict is Verdict.BLOCKED
    assert [e.verdict for e in result.endpoints] == [Verdict.BLOCKED, Verdict.REACHES]
    assert "branches (a rule or a multipath route picks one for each connection):" \
        in result.render()
    assert "(branch 0: one of 2 ways a rule or a multipath route sends" in result.render()


def test_chains_at_the_same_priority_run_later_registered_first() -> None:
    """kube-proxy's nat chain and iptables-nft's both at srcnat: the kernel runs the chain
    registered last first (recorded: the destination saw kube-proxy's masquerade). With
    the tables' handles swapped, iptables-nft's SNAT would win."""
    flow = Flow(POD, "192.168.1.5", port=30432)
    recorded = trace(_state("service-nat-equal-priority"), flow)
    assert str(recorded.source_seen) == "192.168.1.5"
    capture = NodeCapture.read_dir(GOLDEN / "service-nat-equal-priority")
    data = json.loads(capture.text("nft-ruleset.json"))
    for item in data["nftables"]:
        if "table" in item and item["table"]["name"] == "kube-proxy":
            item["table"]["handle"] = 0  # as if created before iptables-nft's tables
    swapped = trace(_state("service-nat-equal-priority",
                           **{"nft-ruleset.json": json.dumps(data)}), flow)
    assert str(swapped.source_seen) == "192.168.4.5"
