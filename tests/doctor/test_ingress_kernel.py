"""An nftables ``netdev`` ingress chain against the kernel: it runs before prerouting
on its device, so its drop of the pod's packets on ``cni0`` is final."""

from __future__ import annotations

import pytest

from k3snet.doctor import Verdict
from k3snet.lab.netns import run_in

from .conftest import DoctorLab, Topology, counted

pytestmark = [pytest.mark.kernel]

RULESET = """table netdev edge {
  chain in {
    type filter hook ingress device cni0 priority 0; policy accept;
    ip saddr 10.42.0.0/16 tcp dport 5432 drop
  }
}
"""


def test_a_netdev_ingress_drop_on_the_pods_interface_blocks_the_flow(
        doctor_lab: DoctorLab) -> None:
    topology = Topology()
    doctor_lab.configure(topology)
    run_in(doctor_lab.node, ["nft", "-f", "-"], input_text=counted(RULESET))
    answer, result = doctor_lab.kernel_and_trace(topology, until_dropped=True)
    assert not answer["ok"], answer
    assert result.verdict is Verdict.BLOCKED, result.render()
    assert "nft netdev edge in" in (result.blocked_at.where if result.blocked_at else "")
