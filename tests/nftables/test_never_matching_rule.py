"""A NAT rule that can never match, as an earlier k3snet wrote for ``nonMasqueradeCIDRs:
[0.0.0.0/0]`` in mode ``all``, is drift now: shown by plan, removed by apply (the
kernel's own listing checks it)."""

from __future__ import annotations

import json

import pytest

from k3snet import State, plan
from k3snet.backends.nftables import NftablesBackend
from k3snet.lab.netns import run_in, temporary_netns
from k3snet.model import Drift

pytestmark = pytest.mark.kernel

WRITTEN_BEFORE = """table inet k3snet {
\tchain postrouting {
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\tip saddr 10.42.0.0/16 ip daddr != 0.0.0.0/0 masquerade comment "k3snet:c305dc898aad67b8"
\t}
\tchain forward {
\t\ttype filter hook forward priority filter; policy accept;
\t}
}
"""


def test_a_rule_excluding_every_destination_is_drift_and_goes(require_root: None) -> None:
    with temporary_netns("never") as ns:
        run_in(ns, ["nft", "-f", "-"], input_text=WRITTEN_BEFORE)
        with NftablesBackend(ns) as backend:
            seen = backend.observe()
            # the rule, and the table an earlier k3snet wrote without its mark
            assert [isinstance(o, Drift) for o in seen.owned] == [True, True], seen.owned
            wanted = plan(seen, State())
            assert [c.action for c in wanted.changes] == ["delete", "delete"]
            backend.apply(wanted)
        listed = json.loads(run_in(ns, ["nft", "-j", "list", "ruleset"]).stdout)["nftables"]
        assert not [item for item in listed if "rule" in item]
