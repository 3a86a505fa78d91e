"""``-m set`` rules against the kernel's ipsets.

Felix with ``natOutgoingExclusions: IPPoolsAndHostIPs`` leaves destinations in
``cali40all-hosts-net`` (every Calico node's address) unmasqueraded; the doctor knew
only the pool sets (from the IP pools) and called every flow through that rule
unknown. It now reads the members of the kernel's sets from ``ipset save``.

This machine has no ``ipset`` tool: the sets are made and listed through pyroute2's
netlink socket inside the lab node, listed as ``ipset save`` prints them.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from k3snet.doctor import Flow, NodeCapture, NodeState, Verdict, diagnose
from k3snet.lab.netns import NetnsCommandError, run_in

from .conftest import DoctorLab, Topology

pytestmark = [pytest.mark.kernel]
pytest.importorskip("pyroute2")

# Makes the sets given as JSON ({name: [cidr, ...]}) and prints every set of the
# namespace as ``ipset save`` does (create, then add lines), from the kernel's listing.
_SETS = """
import json, sys
from pyroute2 import IPSet
wanted = json.loads(sys.argv[1])
with IPSet() as s:
    for name, members in wanted.items():
        s.create(name, stype="hash:net")
        for cidr in members:
            s.add(name, cidr, etype="net")
    for m in s.list():
        name = m.get_attr("IPSET_ATTR_SETNAME")
        print(f"create {name} {m.get_attr('IPSET_ATTR_TYPENAME')} family inet")
        adt = m.get_attr("IPSET_ATTR_ADT")
        for e in adt.get_attrs("IPSET_ATTR_DATA") if adt else []:
            ip = e.get_attr("IPSET_ATTR_IP_FROM").get_attr("IPSET_ATTR_IPADDR_IPV4")
            print(f"add {name} {ip}/{e.get_attr('IPSET_ATTR_CIDR')}")
"""

# Felix's nat-outgoing rule (iptables dataplane) with natOutgoingExclusions
# IPPoolsAndHostIPs, as felix/rules/nat.go renders it.
_FELIX_NAT = """*nat
:POSTROUTING ACCEPT [0:0]
:cali-POSTROUTING - [0:0]
:cali-nat-outgoing - [0:0]
-A POSTROUTING -m comment --comment "cali:O3lYWMrLQYEMJtB5" -j cali-POSTROUTING
-A cali-POSTROUTING -m comment --comment "cali:nYKhEzDlr11Jccal" -j cali-nat-outgoing
-A cali-nat-outgoing -m comment --comment "cali:flqWnvo8yq4ULQLa" -m set --match-set \
cali40masq-ipam-pools src -m set ! --match-set cali40all-ipam-pools dst -m set \
! --match-set cali40all-hosts-net dst -j MASQUERADE --random-fully
COMMIT
"""


def _with_sets(doctor_lab: DoctorLab, hosts: list[str]) -> str:
    """Make Felix's sets in the lab node; ``ipset save`` of them, from the kernel."""
    sets = {"cali40masq-ipam-pools": ["10.42.0.0/16"], "cali40all-ipam-pools": ["10.42.0.0/16"],
            "cali40all-hosts-net": hosts}
    done = subprocess.run(["ip", "netns", "exec", doctor_lab.node, sys.executable, "-c", _SETS,
                           json.dumps(sets)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"ipsets cannot be made here: {done.stderr.strip()[-200:]}")
    return done.stdout


@pytest.mark.parametrize(("hosts", "reaches"), [
    (["192.168.1.5/32", "192.168.1.6/32"], True),     # the database is no Calico node
    (["192.168.1.5/32", "192.168.2.10/32"], False),   # it is one: not masqueraded
], ids=["not-a-host", "a-host"])
def test_felix_s_host_exclusion_is_judged_from_the_kernel_s_set(
        doctor_lab: DoctorLab, hosts: list[str], reaches: bool) -> None:
    topology = Topology(nat="none")
    doctor_lab.configure(topology)
    try:
        saved = _with_sets(doctor_lab, hosts)
        try:
            run_in(doctor_lab.node, ["iptables-nft-restore", "--noflush"],
                   input_text=_FELIX_NAT)
        except NetnsCommandError as exc:  # a kernel without xt_set
            pytest.skip(f"-m set is not available here: {exc}")
        answer = doctor_lab.probe(topology.destination, timeout=3)
        capture = doctor_lab.capture()
    finally:  # the sets outlive the lab's reset, and only an unreferenced set can go
        run_in(doctor_lab.node, ["iptables-nft", "-t", "nat", "-F"], check=False)
        run_in(doctor_lab.node, ["iptables-nft", "-t", "nat", "-X"], check=False)
        subprocess.run(["ip", "netns", "exec", doctor_lab.node, sys.executable, "-c",
                        "from pyroute2 import IPSet\nwith IPSet() as s:\n"
                        " [s.destroy(m.get_attr('IPSET_ATTR_SETNAME')) for m in s.list()]"],
                       capture_output=True, check=False)
    assert answer["ok"] is reaches, answer
    texts = {**capture.texts, "ipset.save": capture.texts.get("ipset.save", saved)}
    state = NodeState.from_capture(NodeCapture(texts, capture.missing))
    flow = Flow(topology.pod, topology.destination, port=topology.port)
    d = diagnose(state, flow)
    assert d.verdict is (Verdict.REACHES if reaches else Verdict.BLOCKED), d.render()
    if reaches:
        assert str(d.trace.source_seen) == answer["seen"] == "192.168.1.5"
    else:
        assert d.findings[0].code == "no-masquerade", d.render()
    # Without the kernel's sets the rule cannot be judged: unknown, as before.
    unread = NodeState.from_capture(NodeCapture(
        {k: v for k, v in texts.items() if k != "ipset.save"}, capture.missing))
    assert diagnose(unread, flow).verdict is Verdict.UNKNOWN
