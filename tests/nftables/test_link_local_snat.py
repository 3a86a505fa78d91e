"""A SNAT to a link-local address is refused (k3snet.model.nat.snat_address_problem).

The kernel takes ``snat ip to 169.254.1.5`` and ``snat ip6 to fe80::1``; no router
forwards a packet from such a source, so every translated connection beyond the link
is lost (the seed lab's pod reached its database through the node's 192.168.1.5 and
fd01:1::5, and through neither its 169.254.1.5 nor its fe80:: address). Such a rule in
k3snet's table, as an earlier version wrote it, is no object k3snet writes now: drift,
deleted by the next apply. Checked in the kernel's own listing.
"""

from __future__ import annotations

import json

import pytest

from k3snet.backends.nftables import NftablesBackend
from k3snet.lab.netns import run_in
from k3snet.model import Drift, MasqueradeRule, State
from k3snet.planner import plan
from k3snet.render.nftables import rule_tag
from k3snet.render.nftables_batch import Syntax

pytestmark = pytest.mark.kernel


def _postrouting_bodies(ns: str) -> list[str]:
    listing = json.loads(run_in(ns, ["nft", "-j", "list", "table", "inet", "k3snet"]).stdout)
    return [item["rule"]["comment"] for item in listing["nftables"]
            if item.get("rule", {}).get("chain") == "postrouting"]


@pytest.mark.parametrize("syntax", ["json", "nft"])
@pytest.mark.parametrize("body", ["ip saddr 10.42.0.0/16 snat ip to 169.254.1.5",
                                  "ip6 saddr fd42::/56 snat ip6 to fe80::1"])
def test_a_link_local_snat_an_earlier_version_wrote_is_drift_and_deleted(
        ns: str, syntax: Syntax, body: str) -> None:
    kept = MasqueradeRule("10.43.0.0/16")
    backend = NftablesBackend(ns, syntax=syntax)
    try:
        backend.apply(plan(backend.observe(), State(owned=[kept])))
    finally:
        backend.close()
    run_in(ns, ["nft", "add", "rule", "inet", "k3snet", "postrouting", *body.split(),
                "comment", f'"{rule_tag(body)}"'])
    assert rule_tag(body) in _postrouting_bodies(ns)
    backend = NftablesBackend(ns, syntax=syntax)
    try:
        repair = plan(backend.observe(), State(owned=[kept]))
        assert [c.action for c in repair.changes] == ["delete"]
        assert all(isinstance(c.subject, Drift) for c in repair.changes)
        backend.apply(repair)
        assert _postrouting_bodies(ns) == [rule_tag("ip saddr 10.43.0.0/16 masquerade")]
        assert plan(backend.observe(), State(owned=[kept])).empty
    finally:
        backend.close()
