"""nft's own ``queue`` statement and a compat queue target as nft lists it, in the doctor.

This kernel has no ``nft_queue`` to show the statement with packets
(``test_nfqueue_kernel.py`` shows ``-j NFQUEUE``'s): a queue no program reads drops the
packet, ``bypass`` makes the chain accept it instead, a read queue's program decides;
whether a program reads a queue is in the capture's ``nfqueue.txt``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from k3snet.doctor import Flow, NodeCapture, NodeState, Verdict, trace

_POD, _DESTINATION = "10.42.0.10", "192.168.2.10"


def _capture(statement: dict[str, Any], readers: str | None) -> NodeCapture:
    def link(index: int, name: str, address: str) -> dict[str, Any]:
        return {"ifindex": index, "ifname": name, "flags": ["UP", "LOWER_UP"],
                "operstate": "UP", "addr_info": [
                    {"family": "inet", "local": address, "prefixlen": 24, "scope": "global"}]}
    routes = [{"dst": "default", "gateway": "192.168.1.1", "dev": "eth0", "flags": []},
              {"dst": "192.168.1.0/24", "dev": "eth0", "scope": "link",
               "prefsrc": "192.168.1.5", "flags": []},
              {"dst": "10.42.0.0/24", "dev": "cni0", "scope": "link", "prefsrc": "10.42.0.1",
               "flags": []}]
    saddr = {"payload": {"protocol": "ip", "field": "saddr"}}
    pods = {"prefix": {"addr": "10.42.0.0", "len": 16}}
    ruleset = {"nftables": [
        {"table": {"family": "ip", "name": "lab", "handle": 1}},
        {"chain": {"family": "ip", "table": "lab", "name": "fwd", "handle": 1,
                   "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}},
        {"rule": {"family": "ip", "table": "lab", "chain": "fwd", "handle": 3, "expr": [
            {"match": {"op": "==", "left": saddr, "right": pods}}, statement]}},
        {"chain": {"family": "ip", "table": "lab", "name": "post", "handle": 2,
                   "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}},
        {"rule": {"family": "ip", "table": "lab", "chain": "post", "handle": 4, "expr": [
            {"match": {"op": "==", "left": saddr, "right": pods}}, {"masquerade": None}]}},
    ]}
    texts = {"addr.json": json.dumps([link(2, "eth0", "192.168.1.5"),
                                      link(3, "cni0", "10.42.0.1")]),
             "routes-v4.json": json.dumps(routes),
             "rules-v4.json": json.dumps([{"priority": 0, "src": "all", "table": "local"},
                                          {"priority": 32766, "src": "all", "table": "main"}]),
             "nft-ruleset.json": json.dumps(ruleset),
             "sysctl.txt": "net.ipv4.ip_forward = 1\n"}
    if readers is not None:
        texts["nfqueue.txt"] = readers
    return NodeCapture.from_texts(texts)


_XT = {"xt": {"type": "target", "name": "NFQUEUE"}}
_CASES: dict[str, tuple[dict[str, Any], str | None, Verdict]] = {
    "queue-nobody-reads": ({"queue": {"num": 3}}, "", Verdict.BLOCKED),
    "queue-0-nobody-reads": ({"queue": {}}, "7\n", Verdict.BLOCKED),
    "queue-bypass-nobody-reads": ({"queue": {"num": 3, "flags": "bypass"}}, "",
                                  Verdict.REACHES),
    "queue-range-none-read": ({"queue": {"num": {"range": [2, 4]},
                                         "flags": ["bypass", "fanout"]}}, "5\n1\n",
                              Verdict.REACHES),
    "queue-range-one-read": ({"queue": {"num": {"range": [2, 4]},
                                        "flags": ["bypass", "fanout"]}}, "3\n", Verdict.UNKNOWN),
    "queue-read": ({"queue": {"num": 3}}, "3\n", Verdict.UNKNOWN),
    "queue-by-hash": ({"queue": {"num": {"jhash": {"expr": {"payload": {
        "protocol": "ip", "field": "saddr"}}, "mod": 4}}}}, "", Verdict.UNKNOWN),
    "queue-not-captured": ({"queue": {"num": 3}}, None, Verdict.UNKNOWN),
    "xt-queue-nobody-reads": ({"xt": {"type": "target", "name": "QUEUE"}}, "",
                              Verdict.BLOCKED),
    "xt-queue-0-read": ({"xt": {"type": "target", "name": "QUEUE"}}, "0\n", Verdict.UNKNOWN),
    # Its queue numbers and --queue-bypass are not listed: a program (or bypass) may pass it.
    "xt-nfqueue-nobody-reads": (_XT, "", Verdict.UNKNOWN),
    "xt-nfqueue-some-read": (_XT, "9\n", Verdict.UNKNOWN),
}


@pytest.mark.parametrize("case", list(_CASES))
def test_a_queue_nobody_reads_drops_and_a_read_one_is_unknown(case: str) -> None:
    statement, readers, verdict = _CASES[case]
    found = trace(NodeState.from_capture(_capture(statement, readers)),
                  Flow(_POD, _DESTINATION, port=80))
    assert found.verdict is verdict, found.render()


def test_the_queue_readers_of_a_capture_are_its_lines_first_numbers() -> None:
    """The raw file's lines (a bundle made by hand) read as the capture's."""
    raw = ("    7  13770     0 2 65531     0     0        0  1\n"
           "65535   1234     0 2 65531     0     0        0  1\n    8 12")
    state = NodeState.from_capture(_capture({"queue": {"num": 3}}, raw))
    assert state.queue_readers == frozenset({7, 65535, 8})


def test_a_queue_list_longer_than_a_capture_reads_leaves_the_readers_unknown() -> None:
    """A bundle's ``nfqueue.txt`` past the 4 MiB a capture reads was made by hand: what it
    leaves out could be a reader, so none is taken as known (not "no reader": a drop)."""
    padded = "7\n" + " \n" * (2 * 1024 * 1024 + 1)
    state = NodeState.from_capture(_capture({"queue": {"num": 3}}, padded))
    assert state.queue_readers is None
    found = trace(state, Flow(_POD, _DESTINATION, port=80))
    assert found.verdict is Verdict.UNKNOWN, found.render()
