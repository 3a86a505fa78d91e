"""NFQUEUE against the kernel: whether a program reads the queue decides.

A queue nothing reads drops what it is given (``--queue-bypass``: the chain accepts it
instead); a read queue's program decides. The capture did not say whether a program
reads a queue, so every ``-j NFQUEUE`` of the pods' flow read unknown. It now takes the
queues a program has bound (``nfqueue.txt``, from ``/proc/net/netfilter/nfnetlink_queue``):
a queue no program reads is a certain drop (an accept under bypass), a read one unknown.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from k3snet.doctor import Flow, NodeCapture, NodeState, Verdict, trace
from k3snet.lab.netns import run_in

from .conftest import DoctorLab, Topology

pytestmark = [pytest.mark.kernel]

_READER = Path(__file__).with_name("nfqueue_reader.py")


@pytest.fixture
def reader(doctor_lab: DoctorLab) -> Iterator[object]:
    """Starts a program reading a queue in the node (``start(queue)``); stopped afterwards."""
    started: list[subprocess.Popen[str]] = []

    def start(queue: int) -> None:
        process = subprocess.Popen(
            ["ip", "netns", "exec", doctor_lab.node, sys.executable, "-I", "-S", str(_READER),
             str(queue)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append(process)
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "bound", process.stderr
    yield start
    for process in started:
        process.kill()
        process.communicate()


#: name -> (the rule's target options, the queue a program reads (None: none), the kernel
#: connects, the doctor's verdict)
_CASES = {
    "no-reader": (["--queue-num", "3"], None, False, Verdict.BLOCKED),
    "no-reader-bypass": (["--queue-num", "3", "--queue-bypass"], None, True, Verdict.REACHES),
    "reader-elsewhere": (["--queue-num", "3"], 4, False, Verdict.BLOCKED),
    "reader-elsewhere-balance": (["--queue-balance", "5:6"], 4, False, Verdict.BLOCKED),
    "reader-accepts": (["--queue-num", "3"], 3, True, Verdict.UNKNOWN),
    "reader-of-the-balance": (["--queue-balance", "2:3"], 3, None, Verdict.UNKNOWN),
}


@pytest.mark.parametrize("case", list(_CASES))
def test_a_queue_drops_unless_a_program_reads_it(
        doctor_lab: DoctorLab, reader: object, case: str) -> None:
    options, queue, connects, verdict = _CASES[case]
    topology = Topology(nat="masq-nft")
    doctor_lab.configure(topology)
    if queue is not None:
        reader(queue)  # type: ignore[operator]
    run_in(doctor_lab.node, ["iptables-nft", "-I", "FORWARD", "-s", "10.42.0.0/16", "-j",
                             "NFQUEUE", *options])
    probe = doctor_lab.start_probe(topology.destination, 1.5, topology.port)
    capture = doctor_lab.capture()
    answer = probe.answer()
    found = trace(NodeState.from_capture(capture),
                  Flow(topology.pod, topology.destination, port=topology.port))
    if connects is not None:  # a balance hashes the flow onto a queue read or not
        assert answer["ok"] is connects, answer
    assert found.verdict is verdict, found.render()


def test_a_capture_says_which_queues_a_program_reads(
        doctor_lab: DoctorLab, reader: object) -> None:
    doctor_lab.configure(Topology())
    assert doctor_lab.capture().texts["nfqueue.txt"] == ""
    reader(7)  # type: ignore[operator]
    reader(65535)  # type: ignore[operator]
    capture = doctor_lab.capture()
    assert NodeState.from_capture(capture).queue_readers == frozenset({7, 65535})
    assert NodeState.from_capture(NodeCapture.from_texts(
        {k: v for k, v in capture.texts.items() if k != "nfqueue.txt"})).queue_readers is None
