"""The address IPv6 masquerade gives, against the kernel's.

The lab's healthy IPv6 node gets a second global address on its uplink,
``fd01:2:0:1::5/64``, sharing 63 bits with the database ``fd01:2::10`` where the node's
first address ``fd01:1::5`` shares 30 with it and 64 with the router ``fd01:1::1``
the route goes through. The kernel picks the source for the destination
(``ipv6_dev_get_saddr``); the router routes the second prefix back to the node so
the probe's answer says what the database saw.
"""

from __future__ import annotations

import pytest

from k3snet.doctor import Flow, NodeState, Verdict, diagnose
from k3snet.lab.netns import run_in

from .conftest import DoctorLab, Topology

pytestmark = [pytest.mark.kernel]

EXTRA = "fd01:2:0:1::5"


def test_ipv6_masquerade_picks_the_address_nearest_the_destination(
        doctor_lab: DoctorLab) -> None:
    topology = Topology(family=6)
    doctor_lab.configure(topology)
    node, router = doctor_lab.node, doctor_lab.names["router"]
    run_in(node, ["ip", "-6", "addr", "add", f"{EXTRA}/64", "dev", "eth0", "nodad"])
    try:
        run_in(router, ["ip", "-6", "route", "add", "fd01:2:0:1::/64", "via", "fd01:1::5"])
        answer, result = doctor_lab.kernel_and_trace(topology, timeout=8)
        assert answer["ok"], answer
        assert answer["seen"] == EXTRA
        assert str(result.source_seen) == answer["seen"], result.render()
    finally:
        run_in(router, ["ip", "-6", "route", "del", "fd01:2:0:1::/64"], check=False)
        run_in(node, ["ip", "-6", "addr", "del", f"{EXTRA}/64", "dev", "eth0"], check=False)


def test_ipv6_masquerade_avoids_a_deprecated_address_as_the_kernel_does(
        doctor_lab: DoctorLab) -> None:
    """A deprecated address (past its preferred lifetime: an old SLAAC or temporary one)
    added after ``fd01:1::5`` is listed first and shares as long a prefix with the
    database; source selection avoids it (RFC 6724 rule 3, before the longest prefix).
    The doctor said the database saw the deprecated address."""
    topology = Topology(family=6)
    doctor_lab.configure(topology)
    node = doctor_lab.node
    doctor_lab.forget_neighbours()
    run_in(node, ["ip", "-6", "addr", "add", "fd01:1::6/64", "dev", "eth0", "nodad",
                  "preferred_lft", "0"])
    try:
        answer, result = doctor_lab.kernel_and_trace(topology, timeout=8)
        assert answer["ok"], answer
        assert answer["seen"] == "fd01:1::5"
        assert str(result.source_seen) == answer["seen"], result.render()
    finally:
        run_in(node, ["ip", "-6", "addr", "del", "fd01:1::6/64", "dev", "eth0"], check=False)


def test_masquerade_on_an_uplink_without_an_ipv4_address_borrows_the_one_on_lo(
        doctor_lab: DoctorLab) -> None:
    """An unnumbered uplink: the node's address is ``192.168.9.5/32`` on ``lo`` and
    ``eth0`` has none; masquerade takes lo's (``inet_select_addr`` goes on to every
    device), where the doctor said "masquerade finds no address" and "blocked"."""
    topology = Topology()
    doctor_lab.configure(topology)
    with doctor_lab.unnumbered_uplink():
        answer, result = doctor_lab.kernel_and_trace(topology, timeout=8)
        assert answer["ok"], answer
        assert answer["seen"] == "192.168.9.5"
        assert str(result.source_seen) == answer["seen"], result.render()


_NFT_POST = """table {family} lab_post {{
 chain post {{
  type {kind} hook postrouting priority {priority}; policy accept;
  {rules}
 }}
}}
"""


@pytest.mark.parametrize(("setup", "code", "rule"), [
    # A filter chain at postrouting accepts, and nothing masquerades: no masquerade, not
    # "a rule in nat postrouting accepts first" pointing at the filter chain.
    (("nft", _NFT_POST.format(family="inet", kind="filter", priority=0,
                              rules="ip saddr 10.42.0.0/16 accept")),
     "no-masquerade", None),
    # A RETURN ahead of the node's masquerade in nat POSTROUTING: the masquerade is
    # there, and skipped; the doctor said "nothing translates", where "nat postrouting".
    (("iptables-nft", "-t", "nat", "-I", "POSTROUTING", "1", "-s", "10.42.0.0/16",
      "-j", "RETURN"), "masquerade-skipped", "-j RETURN"),
    (("nft", _NFT_POST.format(family="ip", kind="nat", priority="srcnat",
                              rules="ip saddr 10.42.0.0/16 return\n  masquerade")),
     "masquerade-skipped", "return"),
], ids=["filter-accept", "iptables-return", "nft-return"])
def test_the_masquerade_finding_names_the_nat_rule_that_skips_it_and_only_a_nat_rule(
        doctor_lab: DoctorLab, setup: tuple[str, ...], code: str, rule: str | None) -> None:
    topology = Topology(nat="none" if setup[0] == "nft" else "masq-nft")
    doctor_lab.configure(topology)
    if setup[0] == "nft":
        run_in(doctor_lab.node, ["nft", "-f", "-"], input_text=setup[1])
    else:
        run_in(doctor_lab.node, list(setup))
    answer, _ = doctor_lab.kernel_and_trace(topology, timeout=3)
    d = diagnose(NodeState.from_capture(doctor_lab.capture()),
                 Flow(topology.pod, topology.destination, port=topology.port))
    assert not answer["ok"], answer
    finding = d.findings[0]
    assert finding.code == code, d.render()
    if rule is not None:
        assert rule in finding.where, d.render()
    assert d.after.verdict is Verdict.REACHES, d.render()
