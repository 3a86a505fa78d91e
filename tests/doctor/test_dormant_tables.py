"""A dormant nftables table (``flags dormant``) has its chains unhooked: no packet sees
them. The doctor evaluated them as any other table's, so a dormant table's forward
drop made it say "blocked" for a flow the kernel lets through, and a masquerade in a
dormant table "reaches" for a flow the kernel sends out with the pod's address.

libnftables 1.0.6 prints another string of its memory as a table's JSON ``flags``:
the capture also takes the ruleset's text (``nft-ruleset.txt``), which says them;
without it such a table's decisions are uncertain.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from k3snet.doctor import NodeCapture, NodeState, Verdict, diagnose, trace
from k3snet.lab.netns import run_in

from .conftest import DoctorLab, Topology
from .test_readers import FLOW, _capture

_DROP = ("table inet lab_fw {\n chain f {\n  type filter hook forward priority 0; policy drop;\n"
         " }\n}\n")


@pytest.mark.kernel
@pytest.mark.parametrize("case", ["forward-drop", "masquerade", "iptables-nft-forward-drop"])
def test_a_dormant_tables_chains_decide_nothing_as_in_the_kernel(
        doctor_lab: DoctorLab, case: str) -> None:
    topology = {"forward-drop": Topology(),
                "masquerade": Topology(nat="masq-nftables"),
                "iptables-nft-forward-drop": Topology(forward_policy="drop-nft")}[case]
    doctor_lab.configure(topology)
    if case == "forward-drop":
        run_in(doctor_lab.node, ["nft", "-f", "-"], input_text=_DROP)
        run_in(doctor_lab.node, ["nft", "add", "table", "inet", "lab_fw", "{ flags dormant; }"])
    else:
        table = "lab_nat" if case == "masquerade" else "filter"
        run_in(doctor_lab.node, ["nft", "add", "table", "ip", table, "{ flags dormant; }"])
    reaches = case != "masquerade"
    answer, found = doctor_lab.kernel_and_trace(topology, timeout=2,
                                                until_dropped=not reaches)
    assert answer["ok"] is reaches, answer
    assert found.verdict is (Verdict.REACHES if reaches else Verdict.BLOCKED), found.render()
    if not reaches:
        assert "no-nat" in found.codes, found.render()


def _ruleset(flags: object) -> dict[str, Any]:
    table: dict[str, Any] = {"family": "inet", "name": "lab_fw", "handle": 7}
    if flags is not None:
        table["flags"] = flags
    return {"nftables": [
        {"metainfo": {"json_schema_version": 1}},
        {"table": table},
        {"chain": {"family": "inet", "table": "lab_fw", "name": "f", "handle": 1,
                   "type": "filter", "hook": "forward", "prio": 0, "policy": "drop"}},
        {"table": {"family": "ip", "name": "lab_nat", "handle": 8}},
        {"chain": {"family": "ip", "table": "lab_nat", "name": "post", "handle": 1,
                   "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}},
        {"rule": {"family": "ip", "table": "lab_nat", "chain": "post", "expr": [
            {"masquerade": None}]}},
    ]}


def _text(flags: str | None, *, forged: bool = False) -> str:
    comment = ' comment "\ntable ip lab_nat {\n\tflags dormant\n"' if forged else ""
    return ("table inet lab_fw {\n" + (f"\tflags {flags}\n" if flags else "")
            + "\tchain f {\n\t\ttype filter hook forward priority filter; policy drop;\n\t}\n"
            "}\ntable ip lab_nat {\n\tchain post {\n\t\ttype nat hook postrouting priority "
            f"srcnat; policy accept;\n\t\tmasquerade{comment}\n\t}}\n}}\n")


def _verdict(flags: object, text: str | None = None) -> Verdict:
    texts = {"nft-ruleset.json": json.dumps(_ruleset(flags))}
    if text is not None:
        texts["nft-ruleset.txt"] = text
    return trace(NodeState.from_capture(_capture(**texts)), FLOW).verdict


@pytest.mark.parametrize(("flags", "text", "verdict"), [
    (None, None, Verdict.BLOCKED),  # no flags: hooked
    ("dormant", None, Verdict.REACHES),  # as newer libnftables prints one flag
    (["dormant", "owner"], None, Verdict.REACHES),
    (["owner", "persist"], None, Verdict.BLOCKED),
    # libnftables 1.0.6: another string; the text says what the flags are.
    ("lab_fw", _text("dormant"), Verdict.REACHES),
    ("lab_fw", _text("owner"), Verdict.BLOCKED),
    ("lab_fw", None, Verdict.UNKNOWN),  # no text: the drop may not run
    ("lab_fw", "", Verdict.UNKNOWN),
])
def test_a_table_is_dormant_only_when_its_flags_say_so(
        flags: object, text: str | None, verdict: Verdict) -> None:
    assert _verdict(flags, text) is verdict


def test_a_comment_cannot_make_a_table_dormant() -> None:
    """A rule's comment holding a line break prints lines that look like a table's
    header and flags: the text, whose headers are then not the JSON's tables, is not
    taken, and the misprinted flags stay unknown."""
    assert _verdict("lab_fw", _text("owner", forged=True)) is Verdict.UNKNOWN
    # The other table, without flags in JSON, is never made dormant by text alone.
    ruleset = _ruleset(None)
    texts = {"nft-ruleset.json": json.dumps(ruleset),
             "nft-ruleset.txt": _text(None).replace("table ip lab_nat {\n",
                                                    "table ip lab_nat {\n\tflags dormant\n")}
    found = trace(NodeState.from_capture(_capture(**texts)), FLOW)
    assert found.verdict is Verdict.BLOCKED, found.render()


def test_a_dormant_masquerade_is_no_masquerade_and_the_fix_adds_one() -> None:
    ruleset = _ruleset(None)
    ruleset["nftables"] = [i for i in ruleset["nftables"]
                           if i.get("chain", {}).get("table") != "lab_fw"]
    ruleset["nftables"][2]["table"]["flags"] = ["dormant"]
    state = NodeState.from_capture(_capture(**{"nft-ruleset.json": json.dumps(ruleset)}))
    d = diagnose(state, FLOW)
    assert d.verdict is Verdict.BLOCKED, d.trace.render()
    assert "no-masquerade" in [f.code for f in d.findings]
    assert d.after is not None
    assert d.after.verdict is Verdict.REACHES


def test_the_capture_takes_the_rulesets_text(tmp_path: Path) -> None:
    """``nft-ruleset.txt`` is written to and read from a bundle; a bundle without it is
    no less complete (it is no capture gap)."""
    capture = NodeCapture.from_texts({"nft-ruleset.json": json.dumps(_ruleset("lab_fw")),
                                      "nft-ruleset.txt": _text("dormant")})
    capture.write_dir(tmp_path)
    again = NodeCapture.read_dir(tmp_path)
    assert again.text("nft-ruleset.txt") == _text("dormant")
    assert "nft-ruleset.txt" not in NodeState.from_capture(_capture()).missing
