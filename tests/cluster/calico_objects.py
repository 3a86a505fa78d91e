"""A spec through Calico and the pod pool of a Calico install, shared by the tests of the
calico backend's one-shot commands (plan files, a switch of backends, throttled answers)."""

from __future__ import annotations

SPEC = """\
apiVersion: k3snet.io/v1alpha1
kind: EgressSpec
cluster: {podCIDRs: [10.42.0.0/16]}
destinations:
  - cidr: 192.168.2.0/24
    masquerade: false
cni:
  calico: {}
"""
CRD = "crd.projectcalico.org/v1/ippools"
POD_POOL = {"apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
            "metadata": {"name": "default-ipv4-ippool"},
            "spec": {"cidr": "10.42.0.0/16", "natOutgoing": True, "blockSize": 26}}
