"""Bridge-family nftables chains, against the kernel.

A pod behind a bridge (flannel's ``cni0``) sends frames through a port of it: they meet
the bridge's prerouting and input hooks before the IP stack routes them, and the
replies leave through its output and postrouting hooks. The doctor evaluated no
bridge-family table, so a drop there read "reaches". Such chains now run for packets
on a bridge (an interface other links name as their master); a match on the port
(``iifname``) or on ``ct`` there is unknown.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from k3snet.doctor import Flow, NodeState, Verdict, trace
from k3snet.lab import _probe
from k3snet.lab.netns import run_in, temporary_netns

from .conftest import DESTINATIONS, PORT, DoctorLab, Probe, Topology, counted

pytestmark = [pytest.mark.kernel]

_POD = "10.42.5.10"


@pytest.fixture(scope="module")
def bridge_pod_netns(doctor_lab: DoctorLab) -> Iterator[str]:
    """A pod ``10.42.5.10`` on the node's bridge ``cnibr`` (``10.42.5.1/24``), made once
    for the module (a test's reset of the node keeps links and addresses); removed
    afterwards. Yields the pod's namespace."""
    node = doctor_lab.node
    with temporary_netns("podbr") as pod:
        run_in(node, ["ip", "link", "add", "cnibr", "type", "bridge"])
        try:
            run_in(node, ["ip", "link", "add", "vethbr", "type", "veth", "peer", "name", "eth0",
                          "netns", pod])
            run_in(node, ["ip", "link", "set", "vethbr", "master", "cnibr"])
            run_in(node, ["ip", "addr", "add", "10.42.5.1/24", "dev", "cnibr"])
            for device in ("cnibr", "vethbr"):
                run_in(node, ["ip", "link", "set", device, "up"])
            run_in(pod, ["ip", "link", "set", "lo", "up"])
            run_in(pod, ["ip", "addr", "add", f"{_POD}/24", "dev", "eth0"])
            run_in(pod, ["ip", "link", "set", "eth0", "up"])
            run_in(pod, ["ip", "route", "add", "default", "via", "10.42.5.1"])
            yield pod
        finally:
            run_in(node, ["ip", "link", "del", "cnibr"], check=False)
            run_in(node, ["ip", "link", "del", "vethbr"], check=False)


@pytest.fixture
def bridged_pod(doctor_lab: DoctorLab, bridge_pod_netns: str) -> tuple[DoctorLab, str]:
    """The lab's node reset to a healthy one, with the bridged pod (:func:`bridge_pod_netns`).
    Yields the lab and the pod's namespace."""
    doctor_lab.configure(Topology())
    return doctor_lab, bridge_pod_netns


def _bridge_table(hook: str, rule: str) -> str:
    return (f"table bridge lab_br {{\n chain c {{\n  type filter hook {hook} priority 0; "
            f"policy accept;\n  {rule}\n }}\n}}\n")


#: name -> (hook, rule, the kernel lets the flow through, the doctor's verdict)
_CASES = {
    "input-drops-the-pod": ("input", f"ip saddr {_POD} drop", False, Verdict.BLOCKED),
    "prerouting-drops-the-pod": ("prerouting", f"ip saddr {_POD} drop", False,
                                 Verdict.BLOCKED),
    "output-drops-the-replies": ("output", f"ip daddr {_POD} drop", False, Verdict.BLOCKED),
    "postrouting-drops-the-replies": ("postrouting", f"ip daddr {_POD} drop", False,
                                      Verdict.BLOCKED),
    "prerouting-drops-others": ("prerouting", "ip saddr 10.99.0.0/16 drop", True,
                                Verdict.REACHES),
    # The port's name is not in the capture: unknown, not "reaches".
    "prerouting-drops-the-port": ("prerouting", f'iifname "vethbr" ip saddr {_POD} drop',
                                  False, Verdict.UNKNOWN),
}


@pytest.mark.parametrize("case", list(_CASES))
def test_a_bridge_family_chain_on_the_pods_bridge_decides_as_in_the_kernel(
        bridged_pod: tuple[DoctorLab, str], case: str) -> None:
    lab, pod = bridged_pod
    hook, rule, reaches, verdict = _CASES[case]
    # A counter on the drop ends a dropped probe as soon as it counts (the timeout stays
    # the backstop); the capture and the trace run while the probe does.
    run_in(lab.node, ["nft", "-f", "-"], input_text=counted(_bridge_table(hook, rule)))
    destination = DESTINATIONS["plain"]
    before = (lab.kernel_drops(4), lab.rule_drops(4))
    probe = Probe(subprocess.Popen(
        ["ip", "netns", "exec", pod, sys.executable, "-I", "-S", _probe.__file__, "tcp",
         "--host", destination, "--port", str(PORT), "--timeout", "2"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
        20)
    found = trace(NodeState.from_capture(lab.capture()), Flow(_POD, destination, port=PORT))
    answer = probe.answer() if reaches else lab.answer_or_drop(probe, 4, before)
    assert answer["ok"] is reaches, answer
    assert found.verdict is verdict, found.render()
