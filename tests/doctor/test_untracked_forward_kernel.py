"""Untracked flows under a forward chain that accepts replies by conntrack alone,
against the kernel's.

The router here routes the pod network back to the node, so the flow needs no NAT and
a ``NOTRACK`` (or nftables ``notrack``) before conntrack changes only what ``ct state``
reads: ``untracked``. A forward chain whose default drops, accepting the pods' packets
by address and the replies by ``--ctstate RELATED,ESTABLISHED`` (``ct state
established``), then drops every reply: the connection dies.
"""

from __future__ import annotations

import pytest

from k3snet.doctor import Flow, NodeState, Verdict, trace
from k3snet.lab.netns import run_in

from .conftest import DoctorLab, Topology

pytestmark = [pytest.mark.kernel]

_NFT = """table inet lab_fw {
 chain pre {
  type filter hook prerouting priority raw; policy accept;
  ip saddr 10.42.0.0/16 notrack
  ip daddr 10.42.0.0/16 notrack
 }
 chain fw {
  type filter hook forward priority filter; policy drop;
  ip saddr 10.42.0.0/16 accept
  ct state established,related accept
 }
}
"""


@pytest.mark.parametrize("how", ["iptables-nft", "nft"])
@pytest.mark.parametrize("replies_by_address", [False, True],
                         ids=["replies-by-ctstate", "replies-by-address"])
def test_an_untracked_flow_whose_replies_only_ctstate_accepts_dies_as_in_the_kernel(
        doctor_lab: DoctorLab, how: str, replies_by_address: bool) -> None:
    topology = (Topology(nat="none", forward_policy="drop-nft", forward_accept="both")
                if how == "iptables-nft" else Topology(nat="none"))
    doctor_lab.configure(topology)
    router = doctor_lab.names["router"]
    run_in(router, ["ip", "route", "replace", "10.42.0.0/16", "via", "192.168.1.5"])
    try:
        if how == "iptables-nft":
            for source in ("-s", "-d"):
                run_in(doctor_lab.node, ["iptables-nft", "-t", "raw", "-A", "PREROUTING",
                                         source, "10.42.0.0/16", "-j", "NOTRACK"])
            if replies_by_address:
                run_in(doctor_lab.node, ["iptables-nft", "-A", "FORWARD", "-d",
                                         "10.42.0.0/16", "-j", "ACCEPT"])
        else:
            ruleset = _NFT.replace("  ct state", "  ip daddr 10.42.0.0/16 accept\n  ct state"
                                   ) if replies_by_address else _NFT
            run_in(doctor_lab.node, ["nft", "-f", "-"], input_text=ruleset)
        probe = doctor_lab.start_probe(topology.destination, 3, topology.port)
        state = NodeState.from_capture(doctor_lab.capture())
        answer = probe.answer()
        found = trace(state, Flow(topology.pod, topology.destination, port=topology.port),
                      upstream_routes_pods=True)
        assert answer["ok"] is replies_by_address, answer
        assert found.verdict is (Verdict.REACHES if replies_by_address
                                 else Verdict.BLOCKED), found.render()
    finally:
        run_in(router, ["ip", "route", "del", "10.42.0.0/16"], check=False)
        run_in(doctor_lab.node, ["nft", "delete", "table", "inet", "lab_fw"], check=False)
