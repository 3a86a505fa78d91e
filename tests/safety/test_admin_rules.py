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
from k3snet.model import ForwardBlock, ForwardRule, MasqueradeRule, SnatRule, State
from k3snet.planner import plan
from tests.netlink.links import wait_for_link_local

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
        assert FLOW in observed.owned  # in place, noted: a destroy deletes it
        assert OTHER in observed.owned
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


@pytest.mark.parametrize(("hook", "priority"), [("prerouting", "raw"), ("prerouting", "filter"),
                                               ("postrouting", "filter")])
def test_nftables_a_drop_of_our_flow_at_prerouting_or_postrouting_is_a_conflict(
        ns: str, hook: str, priority: str) -> None:
    """A forwarded packet passes the filter chains at prerouting and postrouting too: a
    drop there wins over k3snet's accept at the forward hook. Those chains were not read,
    and the plan wrote the accept and said nothing."""
    pytest.importorskip("nftables")
    run_in(ns, ["nft", "-f", "-"], input_text=ADMIN_NFT.replace(
        "hook forward priority filter - 10", f"hook {hook} priority {priority}"))
    before = _nft_rules(ns, "admin")
    with NftablesBackend(ns) as backend:
        p = plan(backend.observe(), DESIRED)
        assert_conflict_names_the_rule(p, "ip saddr 10.42.0.0/16 ip daddr 192.168.2.0/24 drop")
        assert "nftables inet admin screen" in p.render()
    assert _nft_rules(ns, "admin") == before


# -- foreign rules after k3snet's hooks, and foreign NAT before them --------------------

MASQ = MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24")
NAT_JUMP = "-A POSTROUTING -m comment --comment k3snet -j K3SNET-POSTROUTING"
MORE = ForwardRule("10.42.0.0/16", "203.0.113.0/24")
AFTER_OURS = {
    "accept": ("filter", "FORWARD", "-s 10.42.0.0/16 -d 192.168.2.0/24 -j ACCEPT"),
    "drop": ("filter", "FORWARD", "-s 10.42.0.0/16 -d 192.168.2.0/24 -j DROP"),
    "masquerade": ("nat", "POSTROUTING", "-s 10.42.0.0/16 -d 192.168.2.0/24 -j MASQUERADE"),
    "snat": ("nat", "POSTROUTING",
             "-s 10.42.0.0/16 -d 192.168.2.0/24 -j SNAT --to-source 192.168.1.99"),
}
SNAT_FIRST = "-s 10.42.0.0/16 -d 192.168.2.0/24 -j SNAT --to-source 192.168.1.99"


def builtin_rules(ns: str, mode: str, table: str, chain: str) -> list[str]:
    text = run_in(ns, [f"iptables-{mode}-save", "-t", table]).stdout
    return [line for line in text.splitlines() if line.startswith(f"-A {chain} ")]


@pytest.mark.parametrize("mode", ["nft", "legacy"])
@pytest.mark.parametrize("rule", sorted(AFTER_OURS))
def test_a_foreign_rule_after_our_jump_changes_nothing_and_is_never_touched(
    ns: str, mode: str, rule: str
) -> None:
    table, chain, spec = AFTER_OURS[rule]
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        backend.apply(plan(backend.observe(), DESIRED))
        run_in(ns, [f"iptables-{mode}", "-w", "-t", table, "-A", chain, *spec.split()])
        placed = builtin_rules(ns, mode, table, chain)
        assert placed == [JUMP if table == "filter" else NAT_JUMP, f"-A {chain} {spec}"]
        observed = backend.observe()
        assert observed.owned == DESIRED.owned  # k3snet's rules decide first: still its own
        assert backend.drift == ()
        p = plan(observed, DESIRED)
        assert p.empty, p.render()
        assert p.conflicts == ()
        # An apply of another change leaves the foreign rule where it is.
        more = State(owned=[*DESIRED.owned, MORE])
        backend.apply(plan(backend.observe(), more))
        assert builtin_rules(ns, mode, table, chain) == placed
        assert plan(backend.observe(), more).empty


# An admin's NAT rule placed first, and the reason the plan gives for it.
ADMIN_NAT = {
    "snat to another address": (SNAT_FIRST, "the first NAT rule met decides"),
    "return": ("-s 10.42.0.0/16 -d 192.168.2.0/24 -j RETURN", "leave untranslated"),
    "accept": ("-d 192.168.2.0/24 -j ACCEPT", "leave untranslated"),
}


@pytest.mark.parametrize("mode", ["nft", "legacy"])
@pytest.mark.parametrize("kind", sorted(ADMIN_NAT))
def test_an_admin_nat_rule_inserted_before_our_masquerade_is_a_conflict_naming_it(
    ns: str, mode: str, kind: str
) -> None:
    rule, reason = ADMIN_NAT[kind]
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        backend.apply(plan(backend.observe(), DESIRED))
        assert builtin_rules(ns, mode, "nat", "POSTROUTING") == [NAT_JUMP]
        run_in(ns, [f"iptables-{mode}", "-w", "-t", "nat", "-I", "POSTROUTING", "1",
                    *rule.split()])
        observed = backend.observe()
        assert MASQ in observed.owned  # in place, noted: a destroy deletes it
        p = plan(observed, DESIRED)
        notes = [n for n in p.conflicts if n.wanted == MASQ]
        assert len(notes) == 1, p.render()
        assert f"-A POSTROUTING {rule}" in notes[0].foreign.describe()
        rendered = p.render()
        assert f"! {MASQ.describe()}" in rendered
        assert f"+ {MASQ.describe()}" not in rendered
        assert reason in rendered
        backend.apply(p)
        # The kernel's view: the admin's rule still first, k3snet's jump not moved.
        assert builtin_rules(ns, mode, "nat", "POSTROUTING") == [f"-A POSTROUTING {rule}", NAT_JUMP]
        again = plan(backend.observe(), DESIRED)
        assert again.empty
        assert [n.wanted for n in again.conflicts] == [MASQ]


@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_flannels_and_kube_proxys_returns_before_our_jump_are_no_conflict(
    ns: str, mode: str
) -> None:
    from k3snet.testing.k3s import NODE_V4  # noqa: PLC0415

    run_in(ns, [f"iptables-{mode}-restore", "--noflush"], input_text=NODE_V4)
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        p = plan(backend.observe(), DESIRED)
        # flannel masquerades the pods' traffic first: met, not a conflict
        assert [n.status for n in p.notes if n.wanted == MASQ] == ["met"], p.render()
        assert not [n for n in p.conflicts if isinstance(n.wanted, MasqueradeRule)]


@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_a_first_apply_after_a_foreign_snat_of_the_flow_adds_no_masquerade(
    ns: str, mode: str
) -> None:
    run_in(ns, [f"iptables-{mode}", "-w", "-t", "nat", "-A", "POSTROUTING",
                *SNAT_FIRST.split()])
    # The same translation first is no conflict: an SNAT wanted to that address is met.
    same = State(owned=[FLOW, SnatRule("10.42.0.0/16", destination="192.168.2.0/24",
                                       to_address="192.168.1.99")])
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        assert plan(backend.observe(), same).conflicts == ()
        p = plan(backend.observe(), DESIRED)
        assert [n.wanted for n in p.conflicts] == [MASQ], p.render()
        assert all(c.subject != MASQ for c in p.changes)
        backend.apply(p)
        assert builtin_rules(ns, mode, "nat", "POSTROUTING")[0] == f"-A POSTROUTING {SNAT_FIRST}"
        assert plan(backend.observe(), DESIRED).empty


AFTER_NFT = """\
table inet aftr {
\tchain screen {
\t\ttype filter hook forward priority filter + 10; policy accept;
\t\tip saddr 10.42.0.0/16 ip daddr 192.168.2.0/24 accept
\t}
\tchain natafter {
\t\ttype nat hook postrouting priority srcnat + 10; policy accept;
\t\tip saddr 10.42.0.0/16 ip daddr 192.168.2.0/24 masquerade
\t\tip saddr 10.42.0.0/16 ip daddr 192.168.2.0/24 snat ip to 192.168.1.99
\t}
}
"""


def test_nftables_foreign_chains_after_ours_change_nothing_and_are_never_touched(
    ns: str,
) -> None:
    pytest.importorskip("nftables")
    with NftablesBackend(ns) as backend:
        backend.apply(plan(backend.observe(), DESIRED))
        run_in(ns, ["nft", "-f", "-"], input_text=AFTER_NFT)
        before = _nft_rules(ns, "aftr")
        assert len(before) == 3
        observed = backend.observe()
        assert observed.owned == DESIRED.owned
        p = plan(observed, DESIRED)
        assert p.empty, p.render()
        assert p.conflicts == ()
        more = State(owned=[*DESIRED.owned, MORE])
        backend.apply(plan(backend.observe(), more))
        assert plan(backend.observe(), more).empty
    assert _nft_rules(ns, "aftr") == before


# An admin's route that k3snet cannot model, at the destination a spec wants routed.
UNMODELLED_ROUTES = {
    "multipath": (["route", "add", "10.9.1.0/24", "nexthop", "via", "192.168.1.1", "dev",
                   "eth0", "nexthop", "via", "192.168.1.2", "dev", "eth0"],
                  "multipath, nexthop-object, encap or via"),
    "nexthop object": (["route", "add", "10.9.1.0/24", "nhid", "7"],
                       "multipath, nexthop-object, encap or via"),
    "blackhole": (["route", "add", "blackhole", "10.9.1.0/24"], "blackhole"),
    "unreachable, k3snet's protocol": (["route", "add", "unreachable", "10.9.1.0/24", "proto",
                                        "211"], "unreachable"),
}


@pytest.mark.parametrize("driver", ["socket", "pyroute2"])
@pytest.mark.parametrize("case", list(UNMODELLED_ROUTES))
def test_an_admin_route_k3snet_cannot_model_is_a_conflict_naming_it(
        ns: str, case: str, driver: str) -> None:
    from k3snet.backends.netlink import NetlinkBackend  # noqa: PLC0415 - this test only
    from k3snet.model import Route, RouteBlock  # noqa: PLC0415

    for argv in (["sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0",
                  "net.ipv6.conf.default.accept_dad=0"],
                 ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"],
                 ["ip", "link", "set", "eth0", "up"], ["ip", "link", "set", "eth1", "up"],
                 ["ip", "addr", "add", "192.168.1.5/24", "dev", "eth0"],
                 ["ip", "nexthop", "add", "id", "7", "via", "192.168.1.1", "dev", "eth0"]):
        run_in(ns, argv)
    argv, what = UNMODELLED_ROUTES[case]
    run_in(ns, ["ip", *argv])
    # The listing below is compared with one taken after k3snet ran: the kernel must be
    # done adding the links' link-local routes first (it added them meanwhile, once).
    wait_for_link_local(ns, "eth0", "eth1")
    before = json.loads(run_in(ns, ["ip", "-j", "route", "show", "table", "all"]).stdout)
    route = Route("10.9.1.0/24", gateway="192.168.1.1", device="eth0")
    wanted = State(owned=[route])
    with NetlinkBackend(ns, driver=driver) as backend:  # type: ignore[arg-type]
        observed = backend.observe()
        assert not any(isinstance(o, RouteBlock) for o in observed.owned)
        p = plan(observed, wanted)
        assert p.empty, p.render()
        [note] = p.conflicts
        assert isinstance(note.foreign, RouteBlock)
        assert note.foreign.what == what
        assert f"! {route.describe()}" in p.render()
        backend.apply(p)  # nothing to do: the admin's route stays
    after = json.loads(run_in(ns, ["ip", "-j", "route", "show", "table", "all"]).stdout)
    assert after == before
