"""IPv6's per-interface ``force_forwarding`` (Linux 6.17+) against the kernel's.

With ``net.ipv6.conf.all.forwarding = 0``, an interface whose ``force_forwarding`` is 1
forwards what arrives on it all the same (``ip6_forward``). The doctor neither
captured nor read it: it said "blocked" (``forwarding-off``) for a flow the kernel
forwards, and planned to turn forwarding on for every interface.
"""

from __future__ import annotations

import pytest

from k3snet.doctor import Flow, NodeState, Verdict, diagnose
from k3snet.lab.netns import run_in

from .conftest import DoctorLab, Topology

pytestmark = [pytest.mark.kernel]


def _force(doctor_lab: DoctorLab, *interfaces: str) -> None:
    result = run_in(doctor_lab.node, ["sysctl", "-q", "-w", *(
        f"net.ipv6.conf.{name}.force_forwarding=1" for name in interfaces)], check=False)
    if result.returncode != 0:
        pytest.skip(f"this kernel has no IPv6 force_forwarding: {result.stderr.strip()}")


@pytest.mark.parametrize(("interfaces", "reaches"), [
    (("cni0", "eth0"), True),
    (("cni0",), False),  # the replies arrive on eth0, which does not forward
], ids=["both-ways", "pod-side-only"])
def test_force_forwarding_forwards_what_arrives_on_its_interface_as_the_kernel_does(
        doctor_lab: DoctorLab, interfaces: tuple[str, ...], reaches: bool) -> None:
    topology = Topology(family=6, forwarding=False)
    doctor_lab.configure(topology)
    doctor_lab.forget_neighbours()
    try:
        _force(doctor_lab, *interfaces)
        answer, found = doctor_lab.kernel_and_trace(topology, timeout=3,
                                                    until_dropped=not reaches)
        assert answer["ok"] is reaches, answer
        assert found.verdict is (Verdict.REACHES if reaches else Verdict.BLOCKED), (
            found.render())
        if not reaches:
            d = diagnose(NodeState.from_capture(doctor_lab.capture()),
                         Flow(topology.pod, topology.destination, port=topology.port))
            assert d.findings[0].code == "forwarding-off", d.render()
            assert d.after.verdict is Verdict.REACHES, d.render()
    finally:
        run_in(doctor_lab.node, ["sysctl", "-q", "-w", *(
            f"net.ipv6.conf.{name}.force_forwarding=0" for name in ("cni0", "eth0"))],
               check=False)
