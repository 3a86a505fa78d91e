"""Route lookups in rules, against the kernel: nftables ``fib`` (firewalld's IPv6
reverse-path check ``fib saddr . mark . iif oif missing drop``, ``fib daddr type
local``) and iptables ``-m rpfilter`` (Calico's raw table drops what fails it from its
workloads). The doctor reported every such rule unknown, so the verdict of any flow
through them was ``unknown``; it now looks the route up as the kernel does.

``snat-other`` translates the pod to the other uplink's address: the replies come back
on that uplink while the route to the database leaves by the first, so a strict
reverse-path check drops them (a loose one, any route back, lets them through).
"""

from __future__ import annotations

import pytest

from k3snet.doctor import Verdict
from k3snet.lab.netns import run_in

from .conftest import DoctorLab, Topology, counted

pytestmark = [pytest.mark.kernel]

_FIB = ("table inet lab_fib {{\n chain p {{\n  type filter hook prerouting priority -290; "
        "policy accept;\n  {}\n }}\n}}\n")
_FIREWALLD = "meta nfproto ipv6 fib saddr . mark . iif oif missing drop"
_RPFILTER = ["-t", "raw", "-A", "PREROUTING", "-m", "rpfilter", "--invert", "-j", "DROP"]
_LOOSE = ["-t", "raw", "-A", "PREROUTING", "-m", "rpfilter", "--loose", "--invert", "-j",
          "DROP"]
_ASYMMETRIC = Topology(nat="snat-other")

#: name -> (topology, nft rule or iptables arguments, the kernel lets the flow through)
_CASES: dict[str, tuple[Topology, str | list[str], bool]] = {
    "nft-fib-saddr-iif": (Topology(), "fib saddr . iif oif missing drop", True),
    "nft-fib-saddr-iif-asymmetric": (_ASYMMETRIC, "fib saddr . iif oif missing drop", False),
    "nft-fib-firewalld-v6": (Topology(family=6), _FIREWALLD, True),
    "nft-fib-firewalld-v6-asymmetric": (Topology(family=6, nat="snat-other"), _FIREWALLD,
                                        False),
    # The reply, before it is translated back, is addressed to the node itself.
    "nft-fib-daddr-type-local": (Topology(), "fib daddr type local drop", False),
    "nft-fib-daddr-type-local-v6-reply": (Topology(family=6), "fib daddr type local drop",
                                          False),
    "nft-fib-saddr-oifname": (Topology(), 'fib saddr oifname "eth9" drop', True),
    "iptables-rpfilter": (Topology(), _RPFILTER, True),
    "iptables-rpfilter-asymmetric": (_ASYMMETRIC, _RPFILTER, False),
    "iptables-rpfilter-loose-asymmetric": (_ASYMMETRIC, _LOOSE, True),
    "ip6tables-rpfilter-asymmetric": (Topology(family=6, nat="snat-other"), _RPFILTER, False),
}


@pytest.mark.parametrize("case", list(_CASES))
def test_a_rule_looking_a_route_up_decides_as_in_the_kernel(
        doctor_lab: DoctorLab, case: str) -> None:
    topology, rule, reaches = _CASES[case]
    doctor_lab.configure(topology)
    if isinstance(rule, str):
        run_in(doctor_lab.node, ["nft", "-f", "-"], input_text=counted(_FIB.format(rule)))
    else:
        tool = "ip6tables-nft" if topology.family == 6 else "iptables-nft"
        run_in(doctor_lab.node, [tool, *rule])
    doctor_lab.forget_neighbours()
    answer, found = doctor_lab.kernel_and_trace(topology, timeout=2,
                                                   until_dropped=not reaches)
    assert answer["ok"] is reaches, answer
    assert found.verdict is (Verdict.REACHES if reaches else Verdict.BLOCKED), found.render()
