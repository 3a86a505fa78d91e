"""A foreign ``quota`` against real packets: a quota counts bytes, it is no rate.

The doctor took the flow to be under every ``limit``/``quota``: ``quota over 100 bytes
used 100 bytes drop``, spent, drops every packet, and ``quota 100 bytes used 100 bytes
accept`` (``until``) accepts none, while the trace said the flow reaches. The bytes a
quota has counted are listed (``used``): spent, it is judged as the kernel does; with
less than a packet left, the rule is unknown. A named quota or limit (``quota name "q"``)
was taken to match whatever its object said: it is judged by that object.
"""

from __future__ import annotations

import subprocess

import pytest

from k3snet.doctor import Trace, Verdict

from .conftest import DoctorLab, Topology

pytestmark = [pytest.mark.kernel]

TABLE = """table ip fw {{
 chain a {{
  type filter hook forward priority 0; policy accept;
  {rules}
 }}
}}
"""


def _kernel_and_trace_beside(doctor_lab: DoctorLab, ruleset: str
                             ) -> tuple[dict[str, object], Trace]:
    """The kernel's answer and the doctor's trace of the lab's flow with ``ruleset`` (a
    table ``ip fw``) loaded in the node, the table deleted after."""
    topology = Topology()
    doctor_lab.configure(topology)
    subprocess.run(["ip", "netns", "exec", doctor_lab.node, "nft", "-f", "-"],
                   input=ruleset, text=True, check=True)
    try:
        return doctor_lab.kernel_and_trace(topology)
    finally:
        subprocess.run(["ip", "netns", "exec", doctor_lab.node, "nft", "delete", "table", "ip",
                        "fw"], check=False)


@pytest.mark.parametrize(("rules", "verdict"), [
    ("tcp dport 5432 quota over 100 bytes used 100 bytes drop", Verdict.BLOCKED),
    ("tcp dport 5432 quota 100 bytes used 100 bytes accept\n  tcp dport 5432 drop",
     Verdict.BLOCKED),
    ("tcp dport 5432 quota over 1000 mbytes drop", Verdict.REACHES),
], ids=["over-spent", "until-spent", "over-with-room"])
def test_a_spent_quota_is_judged_by_the_bytes_it_counted_as_the_kernel_does(
        doctor_lab: DoctorLab, rules: str, verdict: Verdict) -> None:
    answer, traced = _kernel_and_trace_beside(doctor_lab, TABLE.format(rules=rules))
    assert bool(answer["ok"]) == (verdict is Verdict.REACHES), answer  # the kernel's view
    assert traced.verdict is verdict, traced.render()


NAMED = """table ip fw {{
 {objects}
 chain a {{
  type filter hook forward priority 0; policy accept;
  {rules}
 }}
}}
"""


@pytest.mark.parametrize(("objects", "rules", "verdict"), [
    ("quota q { over 1000 mbytes }", 'tcp dport 5432 quota name "q" drop', Verdict.REACHES),
    ("quota q { over 100 bytes used 100 bytes }", 'tcp dport 5432 quota name "q" drop',
     Verdict.BLOCKED),
    ("quota q { 100 bytes used 100 bytes }",
     'tcp dport 5432 quota name "q" accept\n  tcp dport 5432 drop', Verdict.BLOCKED),
    ("quota q { 1000 mbytes }",
     'tcp dport 5432 quota name "q" accept\n  tcp dport 5432 drop', Verdict.REACHES),
    ("limit l { rate over 1000/second }", 'tcp dport 5432 limit name "l" drop',
     Verdict.REACHES),
], ids=["over-with-room", "over-spent", "until-spent", "until-with-room", "limit-over"])
def test_a_named_quota_is_judged_by_its_object_as_the_kernel_does(
        doctor_lab: DoctorLab, objects: str, rules: str, verdict: Verdict) -> None:
    answer, traced = _kernel_and_trace_beside(doctor_lab,
                                              NAMED.format(objects=objects, rules=rules))
    assert bool(answer["ok"]) == (verdict is Verdict.REACHES), answer  # the kernel's view
    assert traced.verdict is verdict, traced.render()


@pytest.mark.parametrize("objects", [
    'limit l { rate over 1000/second }\n map m { type ipv4_addr : limit; '
    'elements = { 10.42.0.10 : "l" } }',
    'quota q { over 100 bytes used 100 bytes }\n map m { type ipv4_addr : quota; '
    'elements = { 10.42.0.10 : "q" } }',
], ids=["limit", "quota"])
def test_a_quota_or_limit_a_map_picks_is_unknown_not_taken_under(
        doctor_lab: DoctorLab, objects: str) -> None:
    """``limit name ip saddr map @m``: the object a map picks for each source, unread, was
    taken to match, a ``rate over`` one blocking what the kernel passes."""
    kind = objects.split(maxsplit=1)[0]
    rule = f"tcp dport 5432 {kind} name ip saddr map @m drop"
    answer, traced = _kernel_and_trace_beside(doctor_lab, NAMED.format(objects=objects, rules=rule))
    # The kernel's view: under the limit (no match), the quota spent (``over`` matches).
    assert bool(answer["ok"]) == (kind == "limit"), answer
    assert traced.verdict is Verdict.UNKNOWN, traced.render()


ELEMENT = """table ip fw {{
 set s {{ type ipv4_addr; {counted}; elements = {{ 10.42.0.10 }} }}
 chain a {{
  type filter hook forward priority 0; policy accept;
  ip saddr @s drop
 }}
}}
"""


@pytest.mark.parametrize("counted", ["quota over 1000 mbytes", "limit rate over 1000/second"])
def test_a_set_element_holding_its_own_quota_or_limit_is_unknown_not_a_plain_hit(
        doctor_lab: DoctorLab, counted: str) -> None:
    """The kernel's lookup counts the packet in the element's own quota or limit, and its
    ``over`` with room left breaks the match: the rule passes the flow over, while the
    doctor took the element's hit for a match and the flow for dropped."""
    answer, traced = _kernel_and_trace_beside(doctor_lab, ELEMENT.format(counted=counted))
    assert answer["ok"], answer  # the kernel's view: the element's ``over`` did not match
    assert traced.verdict is Verdict.UNKNOWN, traced.render()


@pytest.mark.parametrize(("objects", "rules", "verdict"), [
    ("", "tcp dport 5432 limit rate over 10 bytes/second drop", Verdict.UNKNOWN),
    ("limit l { rate over 10 bytes/second }", 'tcp dport 5432 limit name "l" drop',
     Verdict.UNKNOWN),
    ("", "tcp dport 5432 limit rate 10 bytes/second accept\n  tcp dport 5432 drop",
     Verdict.UNKNOWN),
    ("", "tcp dport 5432 limit rate over 64 kbytes/second drop", Verdict.REACHES),
], ids=["over-inline", "over-named", "until-inline", "bucket-of-64k"])
def test_a_byte_limit_whose_bucket_holds_less_than_a_packet_is_unknown_not_taken_under(
        doctor_lab: DoctorLab, objects: str, rules: str, verdict: Verdict) -> None:
    """nft_limit takes a packet's length in bytes, and its bucket holds the rate's and the
    burst's: a packet longer is over it, however idle the limit was (the kernel dropped the
    flow's first SYN, 60 bytes, at ``rate over 10 bytes/second``), while the doctor took the
    flow to be under it. A bucket of 64 KiB holds every packet: judged as before."""
    answer, traced = _kernel_and_trace_beside(doctor_lab,
                                              NAMED.format(objects=objects, rules=rules))
    # The kernel's view: the small bucket's ``over`` drops, its ``until`` accepts nothing.
    assert bool(answer["ok"]) == (verdict is Verdict.REACHES), answer
    assert traced.verdict is verdict, traced.render()
