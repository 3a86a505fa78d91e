"""A foreign ``quota`` against real packets: a quota counts bytes, it is no rate.

The doctor took the flow to be under every ``limit``/``quota``: ``quota over 100 bytes
used 100 bytes drop``, spent, drops every packet, and ``quota 100 bytes used 100 bytes
accept`` (``until``) accepts none, while the trace said the flow reaches. The bytes a
quota has counted are listed (``used``): spent, it is judged as the kernel does; with
less than a packet left, the rule is unknown.
"""

from __future__ import annotations

import subprocess

import pytest

from k3snet.doctor import Verdict

from .conftest import DoctorLab, Topology

pytestmark = [pytest.mark.kernel]

TABLE = """table ip fw {{
 chain a {{
  type filter hook forward priority 0; policy accept;
  {rules}
 }}
}}
"""


@pytest.mark.parametrize(("rules", "verdict"), [
    ("tcp dport 5432 quota over 100 bytes used 100 bytes drop", Verdict.BLOCKED),
    ("tcp dport 5432 quota 100 bytes used 100 bytes accept\n  tcp dport 5432 drop",
     Verdict.BLOCKED),
    ("tcp dport 5432 quota over 1000 mbytes drop", Verdict.REACHES),
], ids=["over-spent", "until-spent", "over-with-room"])
def test_a_spent_quota_is_judged_by_the_bytes_it_counted_as_the_kernel_does(
        doctor_lab: DoctorLab, rules: str, verdict: Verdict) -> None:
    topology = Topology()
    doctor_lab.configure(topology)
    subprocess.run(["ip", "netns", "exec", doctor_lab.node, "nft", "-f", "-"],
                   input=TABLE.format(rules=rules), text=True, check=True)
    try:
        answer, traced = doctor_lab.kernel_and_trace(topology)
    finally:
        subprocess.run(["ip", "netns", "exec", doctor_lab.node, "nft", "delete", "table", "ip",
                        "fw"], check=False)
    assert bool(answer["ok"]) == (verdict is Verdict.REACHES), answer  # the kernel's view
    assert traced.verdict is verdict, traced.render()
