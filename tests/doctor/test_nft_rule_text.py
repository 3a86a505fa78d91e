"""nftables rules as the doctor shows them: each as ``nft list ruleset`` prints it, from
recorded outputs of nft 1.0.6 (``rulesets/nft-text.json``, ``nft -j list ruleset``, and
``rulesets/nft-text.nft``, ``nft -a list ruleset``, of tests/doctor/
test_nft_rule_text_kernel.py's ruleset). Concatenations, verdict maps, marks, rejects and
counters were raw JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from k3snet.doctor.nftables import parse_ruleset, rule_text

_RECORDED = Path(__file__).parent / "rulesets"


def listed_lines(text: str) -> dict[tuple[str, int], str]:
    """Each rule's line of ``nft -a list ruleset``, by table and handle."""
    lines, table = {}, ""
    for line in text.splitlines():
        shown = line.strip()
        if shown.startswith("table "):
            table = shown.split()[2]
        elif " # handle " in shown:
            body, _, handle = shown.rpartition(" # handle ")
            if not body.endswith("{"):  # a chain's, a set's, a named object's block
                lines[table, int(handle)] = body
    return lines


def differences(data: Any, text: str) -> list[tuple[str, str]]:
    """(the doctor's, nft's) text of each rule of ``nft -j`` ``data`` the two write apart."""
    ruleset, listed = parse_ruleset(data), listed_lines(text)
    rules = [item["rule"] for item in data["nftables"] if "rule" in item]
    assert len(rules) == len(listed)
    differ = []
    for rule in rules:
        chain = ruleset.chains[rule["family"], rule["table"], rule["chain"]]
        mine = rule_text(chain, rule["expr"]).partition(": ")[2]
        if mine != listed[rule["table"], rule["handle"]]:
            differ.append((mine, listed[rule["table"], rule["handle"]]))
    return differ


def test_every_recorded_rule_is_written_as_nft_list_ruleset_prints_it() -> None:
    data = json.loads((_RECORDED / "nft-text.json").read_text())
    assert differences(data, (_RECORDED / "nft-text.nft").read_text()) == []


def test_every_recorded_rule_of_the_odd_shapes_is_written_as_nft_list_ruleset_prints_it(
        ) -> None:
    """Of tests/doctor/test_nft_rule_text_kernel.py's ``_ODD_RULESET``: masks printed as
    prefixes, raw payloads, log flags, quoted names, default rejects, times, NAT maps."""
    data = json.loads((_RECORDED / "nft-text-odd.json").read_text())
    assert differences(data, (_RECORDED / "nft-text-odd.nft").read_text()) == []


def test_every_recorded_stateful_rule_is_written_as_nft_list_ruleset_prints_it() -> None:
    """Of tests/doctor/test_nft_rule_text_kernel.py's ``_STATEFUL_RULESET``: byte rates,
    quotas, ``ct count``, named counters and quotas, meters, a set's ``add`` / ``update``,
    ``synproxy`` (JSON before)."""
    data = json.loads((_RECORDED / "nft-text-stateful.json").read_text())
    assert differences(data, (_RECORDED / "nft-text-stateful.nft").read_text()) == []


def test_a_log_flag_of_another_nft_stays_json() -> None:
    data = {"nftables": [
        {"table": {"family": "inet", "name": "t", "handle": 1}},
        {"chain": {"family": "inet", "table": "t", "name": "c", "handle": 1}}]}
    chain = parse_ruleset(data).chains["inet", "t", "c"]
    assert rule_text(chain, [{"log": {"flags": ["tcp sequence", "new flag"]}}]) == (
        'nft inet t c: {"log":{"flags":["tcp sequence","new flag"]}}')


def test_a_statement_of_an_unknown_shape_stays_json() -> None:
    data = {"nftables": [
        {"table": {"family": "inet", "name": "t", "handle": 1}},
        {"chain": {"family": "inet", "table": "t", "name": "c", "handle": 1}}]}
    chain = parse_ruleset(data).chains["inet", "t", "c"]
    assert rule_text(chain, [{"new statement": {"mss": 1460}}, {"drop": None}]) == (
        'nft inet t c: {"new statement":{"mss":1460}} drop')


def test_every_recorded_rule_of_edge_values_is_written_as_nft_list_ruleset_prints_it() -> None:
    """Of tests/doctor/test_nft_rule_text_kernel.py's ``_EDGE_RULESET``: quotas of 0,
    ``limit rate over 1 bytes/second``, bursts in other units than the rate, ``ct count``
    over 2 ** 31, which ``nft -j`` prints signed (``ct count over -2147483648``, -1 for
    4294967295): that text is in no ruleset."""
    data = json.loads((_RECORDED / "nft-text-edge.json").read_text())
    assert differences(data, (_RECORDED / "nft-text-edge.nft").read_text()) == []
