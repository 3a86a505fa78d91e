"""Golden cases: captured states of each failure mode, the expected finding and fix.

Each directory under ``tests/doctor/golden/`` holds a bundle recorded from the
doctor lab (``conftest.py``) with the node set up for one failure mode, plus
``expected.json``: the flow, the verdict, the source the destination saw, the
finding codes, the fix plan as rendered, the verdict once the fix is applied, and
what the kernel's own probe did when the state was recorded.

Re-record (root, network namespaces) with::

    K3SNET_RECORD_GOLDEN=1 .venv/bin/python -m pytest tests/doctor/test_golden.py -k record

(``K3SNET_RECORD_GOLDEN=case,case`` re-records only those cases.) A case whose
``expected.json`` lists ``service_cidrs`` is diagnosed with them, as
``k3snet doctor --service-cidr`` does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from k3snet.doctor import Flow, NodeCapture, NodeState, Verdict, diagnose, trace

from .conftest import DEST_NETS, POD, SERVICE_CIDR, DoctorLab, Topology, calico_pools

GOLDEN = Path(__file__).parent / "golden"
FLANNEL_ENV = ("FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET=10.42.0.1/24\nFLANNEL_MTU=1450\n"
               "FLANNEL_IPMASQ=true\n")

#: case name -> (what it shows, the node's knobs)
CASES: dict[str, tuple[str, Topology]] = {
    "healthy": ("masquerade and forwarding in place: the flow reaches", Topology()),
    "seed": ("the seed: forwarding off and no masquerade",
             Topology(forwarding=False, nat="none")),
    "no-masquerade": ("forwarding on, nothing translates pod addresses", Topology(nat="none")),
    "forwarding-off": ("masquerade in place, forwarding off", Topology(forwarding=False)),
    "forward-drop-nft": ("Docker/firewalld-style FORWARD policy DROP, iptables-nft",
                         Topology(forward_policy="drop-nft")),
    "forward-drop-legacy": ("FORWARD policy DROP in iptables-legacy",
                            Topology(forward_policy="drop-legacy")),
    "forward-drops-replies": ("FORWARD DROP with an accept for pods but none for replies",
                              Topology(forward_policy="drop-nft",
                                       forward_accept="original-only")),
    "destination-in-pod-cidr": ("the destination inside the pod CIDR: flannel does not NAT it",
                                Topology(dest="overlap", nat="flannel")),
    "route-shadowed-by-pod-route": ("a pod CIDR route shadows the default route",
                                    Topology(dest="overlap", route="default",
                                             cluster_route=True)),
    "missing-route": ("no route to the destination", Topology(route="missing")),
    "blackhole-route": ("a blackhole host route shadows the route",
                        Topology(route="blackhole")),
    "reply-policy-rule": ("a policy rule sends the replies elsewhere",
                          Topology(reply_rule="misroute")),
    "rp-filter-strict": ("strict rp_filter drops replies that come back on another uplink",
                         Topology(nat="snat-other", rp_all=1)),
    "foreign-nftables-drop": ("another program's nftables table drops the flow",
                              Topology(foreign="drop-port")),
    "masquerade-after-accept": ("masquerade placed after a rule that accepts first",
                                Topology(nat="accept-first")),
    "legacy-masquerade-nft-drop": ("masquerade in iptables-legacy, FORWARD DROP in iptables-nft",
                                   Topology(nat="masq-legacy", forward_policy="drop-nft",
                                            forward_accept="both")),
    "flannel-masquerade-after-accept": (
        "flannel's masquerade chain placed after a rule that accepts first",
        Topology(nat="flannel-after-accept")),
    "destination-in-calico-pool": (
        "a Calico pool covers the destination: Calico's nat-outgoing leaves it untranslated",
        Topology(nat="calico-pool-covers")),
    "destination-in-service-cidr": (
        "the destination is a ClusterIP too: kube-proxy sends it to another Service's pod",
        Topology(dest="service-overlap", kube_proxy="iptables-nft")),
    "destination-in-service-cidr-unallocated": (
        "the destination lies inside the service CIDR, no Service uses it (yet)",
        Topology(dest="service-overlap")),
    "service-clusterip": ("a ClusterIP with two endpoints, kube-proxy in iptables-nft",
                          Topology(dest="service", kube_proxy="iptables-nft")),
    "service-clusterip-legacy": ("a ClusterIP, kube-proxy and masquerade in iptables-legacy",
                                 Topology(dest="service", kube_proxy="iptables-legacy",
                                          nat="masq-legacy")),
    "service-nodeport-nftables": ("a NodePort, kube-proxy's nftables mode masquerades it",
                                  Topology(dest="nodeport", kube_proxy="nftables", nat="none")),
    "service-nat-equal-priority": (
        "two nat chains at the same priority (kube-proxy's table, iptables-nft's SNAT): the "
        "later registered runs first", Topology(dest="nodeport", kube_proxy="nftables",
                                                 nat="snat-other")),
    "service-nat-legacy-order": (
        "kube-proxy's masquerade in iptables-legacy, an iptables-nft SNAT at the same priority: "
        "the nftables chain runs first", Topology(dest="nodeport", kube_proxy="iptables-legacy",
                                                   nat="snat-other")),
    "service-forward-drop": ("a ClusterIP (kube-proxy nftables mode) behind FORWARD DROP",
                             Topology(dest="service", kube_proxy="nftables",
                                      forward_policy="drop-nft")),
}
#: Cases diagnosed with the cluster's service CIDR (``k3snet doctor --service-cidr``).
WITH_SERVICE_CIDR = frozenset({"destination-in-service-cidr",
                               "destination-in-service-cidr-unallocated"})


def _flow(topology: Topology) -> Flow:
    return Flow(POD, topology.destination, port=topology.port)


def _expected(capture: NodeCapture, flow: Flow,
              service_cidrs: list[str] | None = None) -> dict[str, object]:
    state = NodeState.from_capture(capture).with_cluster(service_cidrs=service_cidrs or ())
    d = diagnose(state, flow)
    return {
        "flow": flow.to_dict(),
        "verdict": d.verdict.value,
        "source_seen": str(d.trace.source_seen) if d.trace.source_seen else None,
        "findings": [f.code for f in d.findings],
        "plan": d.plan.render(),
        "after": d.after.verdict.value,
        "after_source_seen": str(d.after.source_seen) if d.after.source_seen else None,
        **({"endpoints": [e.describe_target() + " " + e.verdict.value for e in d.trace.endpoints]}
           if d.trace.endpoints else {}),
    }


#: IPv6 cases, recorded from the seed lab (k3snet.lab.SeedLab): name -> (what, fixed by hand?)
V6_CASES = {"seed-v6": ("the seed over IPv6: forwarding off, no masquerade", False),
            "healthy-v6": ("the seed over IPv6, forwarding on and masqueraded", True)}
ALL_CASES = sorted([*CASES, *V6_CASES])


@pytest.mark.parametrize("case", ALL_CASES)
def test_golden_case(case: str) -> None:
    directory = GOLDEN / case
    expected = json.loads((directory / "expected.json").read_text())
    capture = NodeCapture.read_dir(directory)
    data = expected["flow"]
    flow = Flow(data["source"], data["destination"], port=data["port"])
    got = _expected(capture, flow, expected.get("service_cidrs"))
    assert got == {k: expected.get(k) for k in got}
    assert set(expected) - set(got) <= {"case", "kernel", "destination_network",
                                        "service_cidrs"}
    # What the kernel did when the state was recorded agrees with the verdict.
    assert expected["kernel"]["ok"] == (got["verdict"] == "reaches")
    if expected["kernel"]["ok"]:
        assert expected["kernel"]["seen"] == got["source_seen"]


@pytest.mark.parametrize("case", ALL_CASES)
def test_golden_trace_is_stable_json(case: str) -> None:
    """Every step serialises; a blocked trace names the step that blocked it."""
    directory = GOLDEN / case
    expected = json.loads((directory / "expected.json").read_text())
    data = expected["flow"]
    result = trace(NodeState.from_capture(NodeCapture.read_dir(directory)),
                   Flow(data["source"], data["destination"], port=data["port"]))
    json.dumps(result.to_dict())
    if result.verdict is Verdict.BLOCKED:
        assert result.blocked_at is not None


def _wanted(case: str) -> bool:
    chosen = os.environ.get("K3SNET_RECORD_GOLDEN", "")
    return chosen == "1" or case in chosen.split(",")


@pytest.mark.kernel
@pytest.mark.skipif(not os.environ.get("K3SNET_RECORD_GOLDEN"),
                    reason="set K3SNET_RECORD_GOLDEN=1 to re-record the golden cases")
def test_record(doctor_lab: DoctorLab) -> None:
    for case, (what, topology) in CASES.items():
        if not _wanted(case):
            continue
        doctor_lab.configure(topology)
        answer = doctor_lab.probe(topology.destination, port=topology.port)
        capture = doctor_lab.capture()
        if topology.nat == "flannel" or topology.cluster_route:
            # What K3s' flannel writes on a node: the cluster CIDR and this node's subnet.
            capture = NodeCapture({**capture.texts, "flannel-subnet.env": FLANNEL_ENV},
                                  capture.missing)
        if calico_pools(topology):
            # What `kubectl get ippools -o json` says on a Calico cluster.
            pools = {"items": [{"kind": "IPPool", "metadata": {"name": f"pool-{i}"},
                                "spec": {"cidr": cidr, "natOutgoing": nat}}
                               for i, (cidr, nat) in enumerate(calico_pools(topology))]}
            capture = NodeCapture({**capture.texts, "calico-ippools.json": json.dumps(pools)},
                                  capture.missing)
        directory = GOLDEN / case
        if directory.exists():
            for old in directory.iterdir():
                old.unlink()
        capture.write_dir(directory)
        cidrs = [SERVICE_CIDR] if case in WITH_SERVICE_CIDR else None
        expected = _expected(capture, _flow(topology), cidrs)
        if cidrs:
            expected["service_cidrs"] = cidrs
        expected["case"] = what
        expected["kernel"] = {"ok": answer["ok"], "seen": answer["seen"]}
        expected["destination_network"] = DEST_NETS[topology.dest]
        (directory / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")
        assert (expected["verdict"] == "reaches") == answer["ok"], case


_V6_FIX = """table inet golden_fix {
    chain post {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "eth0" ip6 saddr fd42:42::/56 masquerade
    }
}
"""


@pytest.mark.kernel
@pytest.mark.skipif(not os.environ.get("K3SNET_RECORD_GOLDEN"),
                    reason="set K3SNET_RECORD_GOLDEN=1 to re-record the golden cases")
def test_record_ipv6() -> None:
    from k3snet.lab import DB_ADDRESSES, DB_PORT, POD_ADDRESSES, SeedLab  # noqa: PLC0415
    from k3snet.lab.netns import run_in  # noqa: PLC0415

    with SeedLab.create() as lab:
        for case, (what, fixed) in V6_CASES.items():
            if not _wanted(case):
                continue
            if fixed:
                run_in(lab.node, ["sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1"])
                run_in(lab.node, ["nft", "-f", "-"], input_text=_V6_FIX)
            probe = lab.tcp_probe(family=6, timeout=1.0)
            capture = NodeCapture.read_live(lab.node)
            directory = GOLDEN / case
            if directory.exists():
                for old in directory.iterdir():
                    old.unlink()
            capture.write_dir(directory)
            expected = _expected(capture, Flow(POD_ADDRESSES[6], DB_ADDRESSES[6], port=DB_PORT))
            expected["case"] = what
            expected["kernel"] = {"ok": probe.ok, "seen": probe.source_seen}
            (directory / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")
            assert (expected["verdict"] == "reaches") == probe.ok, case
