"""Chains of iptables-nft's tables that iptables-nft-save does not show are read from
nft's own view: for a table written with ``nft`` it prints only ``# Table `filter' is
incompatible``, and a base chain an admin added to ``ip filter`` it leaves out. The
doctor skipped every chain of those tables in nft's view whenever an iptables-nft save
was captured, so a drop there was evaluated nowhere and a blocked flow read "reaches".
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from k3snet.doctor import Flow, NodeCapture, NodeState, Verdict, trace

HEALTHY = Path(__file__).parent / "golden" / "healthy"
FLOW = Flow("10.42.0.10", "192.168.2.10", port=5432)

# An admin's base chain in iptables-nft's own table, as `nft add chain ip filter admin
# '{ type filter hook forward priority 10; }'` and `nft add rule ip filter admin ip
# saddr 10.42.0.0/16 drop` leave it in `nft -j list ruleset`.
ADMIN_CHAIN = [
    {"chain": {"family": "ip", "table": "filter", "name": "admin", "handle": 90,
               "type": "filter", "hook": "forward", "prio": 10, "policy": "accept"}},
    {"rule": {"family": "ip", "table": "filter", "chain": "admin", "handle": 91,
              "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip",
                                                                    "field": "saddr"}},
                                  "right": {"prefix": {"addr": "10.42.0.0", "len": 16}}}},
                       {"drop": None}]}},
]


def _filter_incompatible(save: str) -> str:
    """``save`` with its ``*filter`` table as iptables-nft-save prints one nft wrote."""
    before, _, rest = save.partition("*filter\n")
    _, _, after = rest.partition("COMMIT\n")
    return before + "# Table `filter' is incompatible, use 'nft' tool.\n" + after


@pytest.mark.parametrize("incompatible", [False, True],
                         ids=["a chain the save leaves out", "a table the save cannot show"])
def test_a_drop_in_iptables_nfts_table_that_its_save_does_not_show_blocks_the_flow(
        incompatible: bool) -> None:
    capture = NodeCapture.read_dir(HEALTHY)
    assert trace(NodeState.from_capture(capture), FLOW).verdict is Verdict.REACHES
    ruleset = json.loads(capture.text("nft-ruleset.json"))
    ruleset["nftables"] += ADMIN_CHAIN
    texts = {**capture.texts, "nft-ruleset.json": json.dumps(ruleset)}
    if incompatible:
        save = capture.text("iptables-nft-v4.save")
        assert "*filter\n" in save
        texts["iptables-nft-v4.save"] = _filter_incompatible(save)
    result = trace(NodeState.from_capture(NodeCapture(texts, capture.missing)), FLOW)
    assert result.verdict is Verdict.BLOCKED, result.render()
    assert "nft ip filter admin" in result.render()
