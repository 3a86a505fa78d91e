"""``-m conntrack --ctdir``, which k3snet's own reply accept carries, is read by the doctor:
a rule with it was unknown, so every trace of the pods' replies through k3snet's iptables
rules ended in an unknown verdict."""

from __future__ import annotations

import pytest

from k3snet.doctor.iptables import parse_save
from k3snet.doctor.packet import Packet

SAVED = ("*filter\n:FORWARD DROP [0:0]\n"
         "-A FORWARD -d 10.42.0.0/16 -i eth0 -o cni0 -m conntrack --ctstate "
         "RELATED,ESTABLISHED --ctdir REPLY -m comment --comment "
         '"k3snet:7d052c43265ec5b7" -j ACCEPT\nCOMMIT\n')


@pytest.mark.parametrize(("ctstate", "direction", "matched"), [
    ("established", "reply", True),  # a pod's connection's reply
    ("established", "original", False),  # a connection from outside, its later packets
    ("new", "original", False),
    ("untracked", "reply", False),  # no connection: no direction
])
def test_ctdir_matches_the_packets_direction_in_its_connection(
        ctstate: str, direction: str, matched: bool) -> None:
    (rule,) = parse_save(SAVED)["filter"].chains["FORWARD"].rules
    assert rule.problem is None
    packet = Packet(4, "192.168.2.10", "10.42.0.10", "tcp", 5432, 40000, "eth0", "cni0",
                    ctstate=ctstate, direction=direction)  # type: ignore[arg-type]
    assert rule.match(packet) == (matched, "")


@pytest.mark.parametrize(("rule", "ctstate", "matched"), [
    # xt_conntrack gives a packet of no connection no direction, and answers for the whole
    # match with its --ctstate test alone when there is one (conntrack_mt: ct == NULL).
    ("-m conntrack --ctstate INVALID --ctdir ORIGINAL", "invalid", True),
    ("-m conntrack --ctstate UNTRACKED --ctdir REPLY", "untracked", True),
    ("-m conntrack --ctstate INVALID --ctdir ORIGINAL", "untracked", False),
    ("-m conntrack --ctdir REPLY", "untracked", False),
    ("-m conntrack --ctdir ORIGINAL -m conntrack --ctstate INVALID", "invalid", False),
])
def test_ctdir_of_a_packet_of_no_connection_is_the_state_tests_answer(
        rule: str, ctstate: str, matched: bool) -> None:
    saved = f"*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD {rule} -j DROP\nCOMMIT\n"
    (parsed,) = parse_save(saved)["filter"].chains["FORWARD"].rules
    assert parsed.problem is None
    packet = Packet(4, "192.168.2.10", "10.42.0.10", "tcp", 5432, 40000, "eth0", "cni0",
                    ctstate=ctstate, direction="original")  # type: ignore[arg-type]
    assert parsed.match(packet) == (matched, "")
