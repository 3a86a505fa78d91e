"""``k3snet doctor``: explain why a pod cannot reach a destination, and plan the fix.

From a node's own state (read live, or from a bundle written by ``k3snet observe
--save``), :func:`trace` follows a flow through routing, policy rules, every
netfilter chain on its way (iptables nft and legacy, every nftables table),
NAT (kube-proxy's DNAT to each of a Service's endpoints included), ``rp_filter``
and the reply's way back, and says which rule or route decided
each step. :func:`diagnose` turns the blocking steps into findings and a k3snet
plan that fixes them::

    from k3snet.doctor import Flow, NodeCapture, NodeState, diagnose

    state = NodeState.from_capture(NodeCapture.read_dir("bundle/"))
    d = diagnose(state, Flow("10.42.0.10", "192.168.2.10", port=5432))
    print(d.render())

Everything here is pure except :meth:`NodeCapture.read_live`.
"""

from k3snet.doctor.bundle import BundleError, NodeCapture
from k3snet.doctor.findings import Diagnosis, Finding, diagnose
from k3snet.doctor.state import NodeState
from k3snet.doctor.trace import Flow, Step, Trace, Verdict, trace

__all__ = [
    "BundleError",
    "Diagnosis",
    "Finding",
    "Flow",
    "NodeCapture",
    "NodeState",
    "Step",
    "Trace",
    "Verdict",
    "diagnose",
    "trace",
]
