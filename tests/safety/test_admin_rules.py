"""An admin's rule is never overridden: it stays first, decides, and the plan says so.

Lab namespaces, iptables (nft and legacy) and nftables; asserted with the
kernel's own listings (``iptables-save``, ``nft -j list ruleset``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator

import pytest

from k3snet.backends.iptables import IptablesBackend
from k3snet.backends.nftables import NftablesBackend
from k3snet.lab.netns import run_in, temporary_netns
from k3snet.model import ForwardBlock, ForwardRule, MasqueradeRule, State
from k3snet.planner import plan

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]

FLOW = ForwardRule("10.42.0.0/16", "192.168.2.0/24")
OTHER = ForwardRule("10.42.0.0/16", "198.51.100.0/24")
DESIRED = State(owned=[FLOW, OTHER, MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24")])
ADMIN = ["-s", "10.42.0.0/16", "-d", "192.168.2.0/24", "-j", "DROP"]
ADMIN_LINE = "-A FORWARD -s 10.42.0.0/16 -d 192.168.2.0/24 -j DROP"
JUMP = "-A FORWARD -m comment --comment k3snet -j K3SNET-FORWARD"
DOCKER = ("*filter\n:DOCKER-USER - [0:0]\n-A FORWARD -j DOCKER-USER\n-A DOCKER-USER -j RETURN\n"
          "COMMIT\n")


@pytest.fixture
def ns(require_root: None) -> Iterator[str]:
    """A fresh, empty network namespace."""
    for tool in ("iptables-nft-restore", "iptables-legacy-restore", "nft"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    with temporary_netns("adm") as name:
        yield name


def forward_rules(ns: str, mode: str) -> list[str]:
    text = run_in(ns, [f"iptables-{mode}-save", "-t", "filter"]).stdout
    return [line for line in text.splitlines() if line.startswith("-A FORWARD ")]


def assert_conflict_names_the_rule(p: object, text: str) -> None:
    from k3snet.planner import Plan  # noqa: PLC0415 - typing only

    assert isinstance(p, Plan)
    notes = [n for n in p.conflicts if n.wanted == FLOW]
    assert len(notes) == 1, p.render()
    assert isinstance(notes[0].foreign, ForwardBlock)
    assert text in notes[0].foreign.rule
    rendered = p.render()
    assert f"! {FLOW.describe()}" in rendered
    assert text in rendered
    assert f"+ {FLOW.describe()}" not in rendered
    assert all(c.subject != FLOW for c in p.changes)


@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_an_admin_drop_inserted_above_the_jump_stays_first_and_is_a_conflict(
    ns: str, mode: str
) -> None:
    run_in(ns, [f"iptables-{mode}-restore", "--noflush", "-w"], input_text=DOCKER)
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        backend.apply(plan(backend.observe(), DESIRED))
        assert forward_rules(ns, mode) == ["-A FORWARD -j DOCKER-USER", JUMP]
        # The admin's rule, first in FORWARD, above k3snet's jump.
        run_in(ns, [f"iptables-{mode}", "-w", "-I", "FORWARD", "1", *ADMIN])
        observed = backend.observe()
        assert FLOW not in observed.owned  # what the admin decides is not k3snet's
        assert OTHER in observed.owned  # what it does not touch still is
        p = plan(observed, DESIRED)
        assert_conflict_names_the_rule(p, ADMIN_LINE)
        assert backend.drift == ()  # the jump below the admin's rule is not drift
        backend.apply(p)
        # The kernel's view: the admin's rule is still first, k3snet's jump not moved.
        assert forward_rules(ns, mode) == [ADMIN_LINE, "-A FORWARD -j DOCKER-USER", JUMP]
        again = plan(backend.observe(), DESIRED)
        assert again.empty
        assert_conflict_names_the_rule(again, ADMIN_LINE)


@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_a_first_apply_goes_after_the_admins_rules_and_before_a_final_reject(
    ns: str, mode: str
) -> None:
    run_in(ns, [f"iptables-{mode}-restore", "--noflush", "-w"], input_text=(
        f"*filter\n{ADMIN_LINE}\n-A FORWARD -s 203.0.113.0/24 -j ACCEPT\n"
        "-A FORWARD -j REJECT --reject-with icmp-host-prohibited\nCOMMIT\n"))
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        p = plan(backend.observe(), DESIRED)
        assert_conflict_names_the_rule(p, ADMIN_LINE)
        backend.apply(p)
        assert forward_rules(ns, mode) == [
            ADMIN_LINE, "-A FORWARD -s 203.0.113.0/24 -j ACCEPT", JUMP,
            "-A FORWARD -j REJECT --reject-with icmp-host-prohibited"]
        assert plan(backend.observe(), DESIRED).empty


ADMIN_NFT = """\
table inet admin {
\tchain screen {
\t\ttype filter hook forward priority filter - 10; policy accept;
\t\tip saddr 10.42.0.0/16 ip daddr 192.168.2.0/24 drop
\t}
}
"""


def _nft_rules(ns: str, table: str) -> list[dict[str, object]]:
    listing = json.loads(run_in(ns, ["nft", "-j", "list", "ruleset"]).stdout)["nftables"]
    return [item["rule"] for item in listing
            if "rule" in item and item["rule"]["table"] == table]


def test_nftables_a_foreign_base_chain_that_drops_our_flow_is_a_conflict(ns: str) -> None:
    pytest.importorskip("nftables")
    run_in(ns, ["nft", "-f", "-"], input_text=ADMIN_NFT)
    before = _nft_rules(ns, "admin")
    with NftablesBackend(ns) as backend:
        p = plan(backend.observe(), DESIRED)
        assert_conflict_names_the_rule(p, "ip saddr 10.42.0.0/16 ip daddr 192.168.2.0/24 drop")
        assert "nftables inet admin screen" in p.render()
        backend.apply(p)
        assert plan(backend.observe(), DESIRED).empty
    assert _nft_rules(ns, "admin") == before  # the admin's rule: as it was
    ours = json.dumps(_nft_rules(ns, "k3snet"))
    assert "198.51.100.0" in ours  # the flow the admin does not decide is written
    forward = [r for r in _nft_rules(ns, "k3snet") if r["chain"] == "forward"]
    assert not any("192.168.2.0" in json.dumps(r) for r in forward), forward
