"""iptables targets the kernel goes on after (``XT_CONTINUE``), ``NETMAP`` and
``NFQUEUE`` in the doctor, against the kernel; from ``iptables-nft-save`` and from nft's
own view (which names a compat target and nothing more).

The doctor had its own, shorter list of the targets that go on (no ``RATEEST``,
``CONNMARK``, ``SET``, ``TEE``, ``ECN`` ... and, from nft's view, none at all): a rule
of one of them met by the pods' flow made the verdict unknown while the kernel
connected. It now takes the backends' list
(:data:`k3snet.render.iptables.rules.XT_CONTINUE`); a target that sets the mark makes
it unknown. ``NETMAP`` in nat POSTROUTING translates the source to its prefix (the host
part kept); a queue nothing reads drops.
"""

from __future__ import annotations

import ipaddress

import pytest

from k3snet.doctor import Flow, NodeCapture, NodeState, Trace, Verdict, trace
from k3snet.lab.netns import run_in

from .conftest import DoctorLab, Topology

pytestmark = [pytest.mark.kernel]


def _without_iptables_save(capture: NodeCapture) -> NodeCapture:
    gone = ("iptables-nft-v4.save", "iptables-nft-v6.save")
    return NodeCapture({k: v for k, v in capture.texts.items() if k not in gone},
                       {**capture.missing,
                        **dict.fromkeys(gone, "iptables-nft-save: not installed")})


#: The pods' flow, masqueraded by nftables.
_TOPOLOGY = Topology(nat="masq-nft")


def _kernel_and_trace(lab: DoctorLab, rule: list[str], view: str = "iptables-save"
                      ) -> tuple[dict[str, object], Trace]:
    """With ``rule`` (iptables-nft's arguments) on the node: the kernel's answer to the
    pods' flow (one probe) and the doctor's trace of it, read with ``iptables-nft-save``'s
    listing or (``view`` "nft") from nft's own alone."""
    lab.configure(_TOPOLOGY)
    run_in(lab.node, ["iptables-nft", *rule])
    probe = lab.start_probe(_TOPOLOGY.destination, 1.5, _TOPOLOGY.port)
    capture = lab.capture()
    state = NodeState.from_capture(capture if view == "iptables-save"
                                   else _without_iptables_save(capture))
    answer = probe.answer()
    return answer, trace(state, Flow(_TOPOLOGY.pod, _TOPOLOGY.destination, port=_TOPOLOGY.port))


_GOES_ON = {
    "rateest": ["-t", "mangle", "-I", "FORWARD", "-j", "RATEEST", "--rateest-name", "r",
                "--rateest-interval", "1s", "--rateest-ewmalog", "2s"],
    "audit-before-masquerade": ["-t", "nat", "-I", "POSTROUTING", "-s", "10.42.0.0/16",
                                "-j", "AUDIT", "--type", "accept"],
    "connmark-restore": ["-t", "mangle", "-I", "FORWARD", "-j", "CONNMARK",
                         "--restore-mark"],
}


@pytest.mark.parametrize("view", ["iptables-save", "nft"])
@pytest.mark.parametrize("case", list(_GOES_ON))
def test_a_target_the_kernel_goes_on_after_leaves_the_verdict_as_in_the_kernel(
        doctor_lab: DoctorLab, case: str, view: str) -> None:
    answer, found = _kernel_and_trace(doctor_lab, _GOES_ON[case], view)
    assert answer["ok"] is True, answer
    assert found.verdict is Verdict.REACHES, found.render()
    assert str(found.source_seen) == answer["seen"], found.render()


def test_netmap_before_the_masquerade_translates_the_source_to_its_prefix(
        doctor_lab: DoctorLab) -> None:
    """The kernel keeps the host part: the pod 10.42.0.10 leaves as 10.99.0.10 (and,
    nothing routing it back, its connection fails)."""
    answer, found = _kernel_and_trace(doctor_lab, ["-t", "nat", "-I", "POSTROUTING", "-s",
                                                   "10.42.0.0/16", "-j", "NETMAP", "--to",
                                                   "10.99.0.0/16"])
    conntrack = run_in(doctor_lab.node, ["conntrack", "-L", "-p", "tcp", "--dport",
                                         str(_TOPOLOGY.port)], check=False).stdout
    seen = ipaddress.ip_address(int(ipaddress.ip_address("10.99.0.0"))
                                | (int(ipaddress.ip_address(_TOPOLOGY.pod)) & 0xFFFF))
    assert answer["ok"] is False, answer
    assert not conntrack or f"dst={seen}" in conntrack, conntrack
    assert found.source_seen == seen, found.render()
    assert found.verdict is not Verdict.REACHES, found.render()


_EXPIRING = {
    "prerouting-ttl-set-1": ["-t", "mangle", "-I", "PREROUTING", "-s", "10.42.0.0/16", "-j",
                             "TTL", "--ttl-set", "1"],
    "forward-ttl-set-1": ["-t", "mangle", "-I", "FORWARD", "-s", "10.42.0.0/16", "-j", "TTL",
                          "--ttl-set", "1"],
}


@pytest.mark.parametrize("view", ["iptables-save", "nft"])
@pytest.mark.parametrize("case", list(_EXPIRING))
def test_a_ttl_set_to_1_on_the_pods_flow_is_not_read_as_reaching(
        doctor_lab: DoctorLab, case: str, view: str) -> None:
    """``-j TTL --ttl-set 1`` goes on (XT_CONTINUE) but the forwarded packet expires: in
    PREROUTING at this node (ip_forward drops a TTL of 1), in FORWARD at the next router.
    The doctor said "reaches"; it is unknown now (nft's view does not list the TTL)."""
    answer, found = _kernel_and_trace(doctor_lab, _EXPIRING[case], view)
    assert answer["ok"] is False, answer
    assert found.verdict is Verdict.UNKNOWN, found.render()


def test_a_ttl_set_high_read_from_iptables_save_leaves_the_flow_reaching(
        doctor_lab: DoctorLab) -> None:
    answer, found = _kernel_and_trace(doctor_lab, ["-t", "mangle", "-I", "FORWARD", "-j", "TTL",
                                                   "--ttl-set", "64"])
    assert answer["ok"] is True, answer
    assert found.verdict is Verdict.REACHES, found.render()
