"""What the Pods' annotations cost the calico backend on each pass (docs/performance.md).

Against the emulated API server (``k3snet.testing.kube``, the real ``kubernetes``
client): COUNT pods (metadata as a ReplicaSet's pod has it), a pool giving its node no
address automatically and a block a node holds there, so each pass reads which pools
the pods' ``cni.projectcalico.org/ipv4pools`` annotations name. Prints each pass's
seconds and its requests for the Pods (the first lists them; the ones after watch).

    python benchmarks/bench_calico_pods.py [COUNT] [--passes P]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from k3snet.backends.calico import CalicoBackend
from k3snet.testing.kube import CALICO_RESOURCES, EmulatedApiServer

CRD = "crd.projectcalico.org/v1/ippools"
AFFINITIES = "crd.projectcalico.org/v1/blockaffinities"
PODS = "v1/pods"


def pod(index: int) -> dict[str, Any]:
    """A pod as a ReplicaSet makes it: labels, Calico's annotations, an owner."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": f"app-{index:05d}-7d9f8c6b5-x2k4q", "namespace": f"ns-{index % 50}",
        "labels": {"app": f"app-{index}", "pod-template-hash": "7d9f8c6b5"},
        "annotations": {"cni.projectcalico.org/podIP": f"10.42.{index // 250}.{index % 250}/32",
                        "cni.projectcalico.org/containerID": "f" * 64},
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                             "name": f"app-{index}-7d9f8c6b5", "uid": "u" * 36,
                             "controller": True}]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("count", nargs="?", type=int, default=5000)
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args()
    resources = (*CALICO_RESOURCES, AFFINITIES, "v1/nodes", "v1/namespaces", PODS)
    with EmulatedApiServer(resources=resources) as server:
        server.put(CRD, {"apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
                         "metadata": {"name": "default-ipv4-ippool"},
                         "spec": {"cidr": "10.42.0.0/16", "natOutgoing": True}})
        server.put(CRD, {"apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
                         "metadata": {"name": "vms"},
                         "spec": {"cidr": "10.60.0.0/16", "assignmentMode": "Manual"}})
        server.put(AFFINITIES, {"apiVersion": "crd.projectcalico.org/v1",
                                "kind": "BlockAffinity", "metadata": {"name": "a"},
                                "spec": {"node": "node-a", "cidr": "10.60.3.0/26",
                                         "state": "confirmed"}})
        for index in range(args.count):
            server.put(PODS, pod(index))
        backend = CalicoBackend(api_client=server.api_client(), timeout=60.0, api="crd")
        for number in range(args.passes):
            before = len(server.requests())
            start = time.perf_counter()
            backend.observe()
            seconds = time.perf_counter() - start
            queries = [query for (method, path, _), query
                       in list(zip(server.requests(), server.params(), strict=True))[before:]
                       if method == "GET" and path.endswith("/pods")]
            watches = sum(query.get("watch") == "true" for query in queries)
            print(f"pass {number}: {seconds:.2f} s, Pods: {len(queries) - watches} list "
                  f"request(s), {watches} watch(es)")


if __name__ == "__main__":
    main()
