"""Chains of different nftables tables at one priority, against the kernel's order.

The kernel runs the chain registered last first. nftables counts handles per table,
so a chain added to an older table after a newer table was made runs before the
newer table's chains while its table's handle says otherwise; the doctor ordered
them by table handle and stated the outcome as certain (a drop the kernel never
made, another source than the one the destination saw). It now traces the other
order too and says what it changes.
"""

from __future__ import annotations

import pytest

from k3snet.lab.netns import run_in

from .conftest import DoctorLab, Topology

pytestmark = [pytest.mark.kernel]

# lab_a is made first (an unrelated chain), then lab_b; the chain added to lab_a last
# is the one the kernel runs first at their priority.
_OLDER = """table ip lab_a {
 chain idle {
  type filter hook output priority filter; policy accept;
 }
}
"""


def _load(doctor_lab: DoctorLab, *scripts: str) -> None:
    for script in (_OLDER, *scripts):
        run_in(doctor_lab.node, ["nft", "-f", "-"], input_text=script)


def test_a_mark_set_by_the_chain_registered_last_is_seen_by_the_other_table_first(
        doctor_lab: DoctorLab) -> None:
    topology = Topology()
    doctor_lab.configure(topology)
    _load(doctor_lab,
          "table ip lab_b {\n chain judge {\n"
          "  type filter hook forward priority filter; policy accept;\n"
          "  meta mark != 0x1 drop\n }\n}\n",
          "table ip lab_a {\n chain tag {\n"
          "  type filter hook forward priority filter; policy accept;\n"
          "  meta mark set 0x1\n }\n}\n")
    answer, result = doctor_lab.kernel_and_trace(topology, timeout=3)
    assert answer["ok"], answer  # lab_a's tag ran first: lab_b let every packet through
    # lab_b's handle is the higher: traced first, it drops, but that order is not known.
    assert result.verdict.value == "unknown", result.render()
    order = [s for s in result.steps if s.code == "chain-order"]
    assert order, result.render()
    assert not order[0].certain
    assert "the other way round the verdict is reaches" in order[0].detail


def test_the_source_the_chain_registered_last_gives_is_named(doctor_lab: DoctorLab) -> None:
    topology = Topology(nat="none")
    doctor_lab.configure(topology)
    _load(doctor_lab,
          "table ip lab_b {\n chain post {\n"
          "  type nat hook postrouting priority srcnat; policy accept;\n"
          f"  ip daddr {topology.destination} snat to 192.168.4.5\n }}\n}}\n",
          "table ip lab_a {\n chain post {\n"
          "  type nat hook postrouting priority srcnat; policy accept;\n"
          f"  ip daddr {topology.destination} snat to 192.168.1.5\n }}\n}}\n")
    answer, result = doctor_lab.kernel_and_trace(topology, timeout=3)
    assert answer["ok"], answer
    assert answer["seen"] == "192.168.1.5", answer  # lab_a's chain, registered last
    assert result.verdict.value == "reaches", result.render()
    # Either order reaches; the trace follows the table handles and names the other source.
    sources = {str(result.source_seen)} | {
        s.detail.rsplit(" ", 1)[-1] for s in result.steps if s.code == "chain-order"}
    assert sources == {"192.168.1.5", "192.168.4.5"}, result.render()


def test_chains_of_one_table_at_one_priority_are_in_a_known_order(
        doctor_lab: DoctorLab) -> None:
    topology = Topology()
    doctor_lab.configure(topology)
    _load(doctor_lab, "table ip lab_a {\n chain judge {\n"
                      "  type filter hook forward priority filter; policy accept;\n"
                      "  meta mark != 0x1 drop\n }\n"
                      " chain tag {\n"
                      "  type filter hook forward priority filter; policy accept;\n"
                      "  meta mark set 0x1\n }\n}\n")
    answer, result = doctor_lab.kernel_and_trace(topology, timeout=3)
    assert answer["ok"], answer
    assert result.verdict.value == "reaches", result.render()
    assert not any(s.code == "chain-order" for s in result.steps), result.render()
