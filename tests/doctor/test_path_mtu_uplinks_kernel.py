"""``path-mtu`` on a node with two uplinks of different MTUs, against the kernel.

A jumbo private network (``eth1`` at 9000, the database's network behind it) beside a
1500 uplink to everything else (``eth0``): the check judges the route each flow really
takes (the node's route lookup per destination, as ``ip route get`` gives it), not the
smallest MTU of the node's devices. Pods at 1500 are warned of nothing either way; pods
at 9000 only for the flow that leaves by the 1500 uplink, a real mismatch.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Literal

import pytest

from k3snet.doctor import Flow, NodeState, diagnose
from k3snet.lab.netns import run_in

from .conftest import DESTINATIONS, UPLINKS, V6, DoctorLab, Topology, to_v6

pytestmark = [pytest.mark.kernel]

#: The destination behind the 1500 uplink (the router answers it by the database).
_OTHER, _OTHER_NET = DESTINATIONS["service-overlap"], "10.43.0.0/24"


@pytest.fixture
def jumbo(doctor_lab: DoctorLab) -> Iterator[DoctorLab]:
    """``eth1`` and the router's end of it at 9000; put back afterwards (the lab is
    shared by the module)."""
    node, router, pod = (doctor_lab.names[n] for n in ("node", "router", "pod"))
    run_in(node, ["ip", "link", "set", "eth1", "mtu", "9000"])
    run_in(router, ["ip", "link", "set", "eth2", "mtu", "9000"])
    try:
        yield doctor_lab
    finally:
        for ns, dev in ((node, "eth1"), (router, "eth2"), (node, "cni0"), (pod, "eth0")):
            run_in(ns, ["ip", "link", "set", dev, "mtu", "1500"], check=False)
        doctor_lab.reset()


def _path_mtu(lab: DoctorLab, family: int, destination: str) -> list[str]:
    pod = V6["10.42.0.10"] if family == 6 else "10.42.0.10"
    d = diagnose(NodeState.from_capture(lab.capture()), Flow(pod, destination, port=5432))
    return [f"{f.severity}: {f.what} ({f.where})" for f in d.findings if f.code == "path-mtu"]


@pytest.mark.parametrize("family", [4, 6])
def test_two_uplinks_of_different_mtus_warn_only_the_flow_whose_route_is_smaller(
        jumbo: DoctorLab, family: Literal[4, 6]) -> None:
    topology = Topology(family=family, uplink="eth1")
    jumbo.configure(topology)
    node = jumbo.node
    convert = to_v6 if family == 6 else str
    private, other = topology.destination, convert(_OTHER)
    run_in(node, ["ip", f"-{family}", "route", "add", convert(_OTHER_NET), "via",
                  convert(UPLINKS["eth0"][1]), "dev", "eth0", "proto", "static"])

    def leaves_by(destination: str) -> str:
        (route,) = json.loads(run_in(node, ["ip", f"-{family}", "-j", "route", "get",
                                            destination]).stdout)
        return str(route["dev"])
    # The kernel: one destination by each uplink.
    assert (leaves_by(private), leaves_by(other)) == ("eth1", "eth0")
    # Pods at 1500: every way out takes their packets.
    assert _path_mtu(jumbo, family, private) == []
    assert _path_mtu(jumbo, family, other) == []
    # Pods at 9000: the private network takes them, the 1500 uplink does not.
    run_in(node, ["ip", "link", "set", "cni0", "mtu", "9000"])
    run_in(jumbo.names["pod"], ["ip", "link", "set", "eth0", "mtu", "9000"])
    assert _path_mtu(jumbo, family, private) == []
    (warning,) = _path_mtu(jumbo, family, other)
    assert warning.startswith("warning: packets over 1500 bytes cannot leave by eth0"), warning
    assert "takes 9000" in warning, warning
