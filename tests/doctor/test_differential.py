"""The tracer against the real kernel: same verdict, same source address seen.

Hypothesis draws the node's knobs (:class:`Topology`: the family -- IPv4 or IPv6,
where routes, policy rules, ip6tables and nftables ``ip6`` rules and the masquerade
are IPv6's --, forwarding, routes and a policy rule, a blackhole, a cluster route
shadowing the destination, masquerade in iptables-nft / iptables-legacy / nftables /
SNAT / flannel's chain (or after an accept) / Calico's pool sets / after an accept, its
out interface, the FORWARD policy and accepts in either iptables
flavour, a foreign nftables table with a forward hook, a policy rule sending
replies elsewhere, ``rp_filter`` modes, a destination inside the pod CIDR or the
service CIDR, a Service's ClusterIP or NodePort with kube-proxy's rules in
iptables-nft, iptables-legacy or its nftables mode, two endpoints picked at
random). Each
example configures the node of one lab (reset, not rebuilt), sends a real TCP
probe from the pod, captures the node with the doctor's bundle reader and asserts
that the trace's verdict -- and, when the flow reaches, the source address the
destination saw -- equal what the kernel did.

Examples: ``examples(30, floor=30)`` (``tests/examples.py``): 30 in the ``ci`` profile,
500 in ``thorough``, never fewer than 30.
"""

from __future__ import annotations

import os

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from k3snet.doctor import Verdict
from tests.examples import examples

from .conftest import DoctorLab, Topology

pytestmark = [pytest.mark.kernel]

# At least 30, what the ci profile ran before it went to 100 examples: each topology draws
# 16 knobs, and fewer would leave many of their values undrawn in a run; with a drop ended
# at its kernel counter a topology costs well under a second, so the floor is cheap.
EXAMPLES = examples(30, floor=30)
#: (family, verdict) of the examples run in this session (counted by the last test).
RUNS: list[tuple[int, str]] = []


def _mostly(usual: str, *others: str) -> st.SearchStrategy[str]:
    """``usual`` half of the time: a working node needs many knobs right at once, and
    examples where the flow reaches matter as much as the broken ones."""
    return st.one_of(st.just(usual), st.sampled_from([usual, *others]))


def _consistent(topology: Topology) -> Topology:
    """A Service needs kube-proxy's rules. The ClusterIP overlapping the external
    ``10.43.0.10`` leads to an endpoint on a node the lab lacks (the network beyond
    would not deliver it, against the tracer's stated assumption): the golden case
    ``destination-in-service-cidr`` covers it, here the address is a plain one."""
    if topology.dest in ("service", "nodeport") and topology.kube_proxy == "none":
        return attrs.evolve(topology, kube_proxy="iptables-nft")
    if topology.dest == "service-overlap":
        return attrs.evolve(topology, kube_proxy="none")
    return topology


topologies = st.builds(
    Topology,
    family=st.sampled_from([4, 6]),
    forwarding=st.sampled_from([True, True, True, False]),
    dest=st.sampled_from(["plain", "overlap", "service-overlap", "service", "nodeport"]),
    kube_proxy=_mostly("none", "iptables-nft", "iptables-legacy", "nftables"),
    route=_mostly("specific", "default", "missing", "blackhole", "policy"),
    uplink=st.sampled_from(["eth0", "eth1"]),
    cluster_route=st.booleans(),
    nat=_mostly("masq-nft", "none", "masq-legacy", "masq-nftables", "snat", "snat-other",
                "flannel", "accept-first", "flannel-after-accept", "calico",
                "calico-pool-covers"),
    nat_oif=_mostly("any", "uplink", "wildcard", "wrong"),
    forward_policy=_mostly("accept", "drop-nft", "drop-legacy"),
    forward_accept=st.sampled_from(["none", "both", "both", "original-only"]),
    foreign=_mostly("none", "drop-port", "drop-new-from-pods", "stateful", "drop-other-port"),
    reply_rule=_mostly("none", "misroute", "blackhole"),
    rp_all=st.sampled_from([0, 0, 1, 2]),
    rp_uplink=st.integers(0, 2),
    rp_cni=st.integers(0, 1),
).map(_consistent)


# What a first probe's failure says when the machine, not the flow, was slow; or a drop
# counter moved while a slow probe still ran (the lab's database repeats no SYN-ACK of an
# earlier example's: tests/doctor/test_lab_counters_kernel.py; asked again all the same).
_SLOW_MACHINE = ("Timeout", "No route to host", "dropped:")


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(topology=topologies)
def test_trace_agrees_with_the_kernel(doctor_lab: DoctorLab, topology: Topology) -> None:
    doctor_lab.configure(topology)
    # A drop a counter counts ends the probe at once (the kernel's word, not a timeout).
    answer, result = doctor_lab.kernel_and_trace(topology, until_dropped=True)
    # The kernel picked one endpoint at random: every endpoint must agree for the
    # comparison to be exact (the lab's two are alike).
    assert len({(e.verdict, e.source_seen) for e in result.endpoints}) <= 1, result.render()
    RUNS.append((topology.family, result.verdict.value))
    verdict = result.verdict
    if verdict is Verdict.UNKNOWN and all(s.certain or s.code == "rp-filter-elsewhere"
                                          for s in result.steps):
        # Strict rp_filter would drop the replies on another interface the node routes
        # the destination by (a policy table's): the lab's router sends them to the
        # interface holding the address, as the trace assumed, so the kernel's answer is
        # the trace's without that step (tests/doctor/test_rp_filter_kernel.py has the
        # router answering by the other one).
        verdict = Verdict.REACHES
    if (verdict is Verdict.REACHES and not answer["ok"]
            and any(sign in str(answer.get("error")) for sign in _SLOW_MACHINE)):
        # A loaded machine can make a first probe miss 1.5 s (a fresh neighbour
        # entry, a slow server), or an IPv6 neighbour solicitation go unanswered
        # in time ("No route to host"): ask the kernel once more, with time to
        # spare, its neighbour caches flushed (a FAILED entry answers "No route to
        # host" at once, for a while). A flow the kernel drops, or has no route for,
        # fails again.
        doctor_lab.forget_neighbours()
        answer = doctor_lab.probe(topology.destination, port=topology.port, timeout=8)
    detail = f"{topology}\nkernel: {answer}\n{result.render()}"
    assert verdict is not Verdict.UNKNOWN, detail
    assert (verdict is Verdict.REACHES) == answer["ok"], detail
    if answer["ok"]:
        assert str(result.source_seen) == answer["seen"], detail


def test_example_count_follows_the_profile(capsys: pytest.CaptureFixture[str]) -> None:
    """At least 500 topologies ran in the thorough profile, 30 in the others (this runs
    after the differential test, in file order); the count is printed for docs/doctor.md."""
    if not RUNS:
        pytest.skip("the differential test did not run (not root, or deselected)")
    wanted = 500 if os.environ.get("HYPOTHESIS_PROFILE") == "thorough" else 30
    assert wanted <= EXAMPLES <= len(RUNS)
    counts = {f"IPv{f} {v}": RUNS.count((f, v)) for f, v in sorted(set(RUNS))}
    with capsys.disabled():
        print(f"\ndoctor differential: {len(RUNS)} topologies, {counts}")  # noqa: T201
