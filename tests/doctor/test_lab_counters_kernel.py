"""The doctor lab's drop counters (:meth:`DoctorLab.answer_or_drop`) count the probed
flow's drops alone: no packet of an earlier example's connection comes later to be
counted while another flow is probed, which would end a reaching flow's probe as
dropped (in the differential test, where the trace said blocked: a false pass)."""

from __future__ import annotations

import time

import pytest

from k3snet.lab.netns import run_in

from .conftest import DoctorLab, Topology

pytestmark = [pytest.mark.kernel]


def test_the_database_repeats_no_reply_the_node_dropped_for_a_later_probe_to_count(
        doctor_lab: DoctorLab) -> None:
    # The pod's connection by eth1, its SYN-ACK dropped by the node's FORWARD policy
    # (nothing answers the database: it keeps the connection half open).
    dropped = Topology(uplink="eth1", forward_policy="drop-nft", forward_accept="original-only")
    doctor_lab.configure(dropped)
    assert not doctor_lab.probe(dropped.destination, until_dropped=True)["ok"]
    db = doctor_lab.names["db"]
    assert run_in(db, ["ss", "-Htn", "state", "syn-recv"]).stdout.strip()
    # Then a reaching flow by eth0 under strict rp_filter: a SYN-ACK of the earlier
    # connection, repeated, arrived by eth1 and was counted (IPReversePathFilter).
    doctor_lab.configure(Topology(rp_uplink=1))
    before = doctor_lab.kernel_drops(4)
    deadline = time.monotonic() + 120  # a backstop: the database forgets in about 1 s
    while run_in(db, ["ss", "-Htn", "state", "syn-recv"]).stdout.strip():
        assert doctor_lab.kernel_drops(4) == before, "a repeated SYN-ACK was counted"
        assert time.monotonic() < deadline, "the database never forgot the connection"
        time.sleep(0.05)
    assert doctor_lab.kernel_drops(4) == before
    # (The counters read are live: a node that does not forward counts the pod's SYN.)
    off = Topology(forwarding=False)
    doctor_lab.configure(off)
    answer = doctor_lab.probe(off.destination, until_dropped=True)
    assert str(answer["error"]).startswith("dropped:"), answer
    assert doctor_lab.kernel_drops(4) > before
