"""A bundle of a node whose libnftables is older than 1.0.6 (Debian 11, Ubuntu 22.04, RHEL
9 before 9.4): every iptables-nft compat match and target in ``nft-ruleset.json`` is
``{"xt": null}``. Without iptables-nft-save's text (not captured: iptables-nft-save
1.8.9+ stops at a rule written with nft it cannot decode), such a rule is evaluated from
the JSON, where nothing says what it does: the verdict is unknown, and the trace says
why (it said "cannot evaluate xt")."""

from __future__ import annotations

import json

from k3snet.doctor import NodeState, Verdict, trace

from .test_readers import FLOW, _capture


def _ruleset() -> str:
    return json.dumps({"nftables": [
        {"metainfo": {"version": "1.0.5", "json_schema_version": 1}},
        {"table": {"family": "ip", "name": "filter", "handle": 1}},
        {"chain": {"family": "ip", "table": "filter", "name": "FORWARD", "handle": 2,
                   "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}},
        # iptables-nft's -d 192.168.2.0/24 -m comment --comment no-db -j REJECT
        {"rule": {"family": "ip", "table": "filter", "chain": "FORWARD", "handle": 3,
                  "expr": [{"match": {"op": "==", "left": {"payload": {
                      "protocol": "ip", "field": "daddr"}}, "right": {"prefix": {
                          "addr": "192.168.2.0", "len": 24}}}},
                      {"xt": None}, {"counter": {"packets": 0, "bytes": 0}}, {"xt": None}]}},
    ]})


def test_an_unnamed_xt_in_the_forward_path_is_an_unknown_verdict_saying_why() -> None:
    found = trace(NodeState.from_capture(_capture(**{"nft-ruleset.json": _ruleset()})), FLOW)
    assert found.verdict is Verdict.UNKNOWN, found.render()
    unknown = [s for s in found.steps if s.outcome == "unknown" and "FORWARD" in s.detail]
    assert len(unknown) == 1, found.render()
    assert "without its name (libnftables before 1.0.6)" in unknown[0].detail
    assert "iptables-nft-save shows the rule" in unknown[0].detail
