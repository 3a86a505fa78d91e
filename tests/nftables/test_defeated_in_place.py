"""A foreign drop or NAT rule added after k3snet's rules are in place is a conflict.

k3snet's forward accept ends only its own chain: a drop another program adds later,
in another table's base chain on the forward hook (any priority), still drops the
pods' traffic, and a foreign NAT rule met no later than k3snet's chain translates it
first. The plan must say so (a ``!`` conflict naming the foreign rule, exit code 4)
instead of "nothing to do", as the iptables backend does, and must plan nothing
for it: no delete, no re-add (the agent plans every interval), the foreign rule
untouched. Checked against the kernel's own view (``nft -j list ruleset``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from k3snet.backends.nftables import NftablesBackend
from k3snet.cli import main
from k3snet.converge import converge
from k3snet.errors import ConflictError
from k3snet.lab import SeedLab
from k3snet.lab.netns import run_in
from k3snet.model import ForwardRule, MasqueradeRule
from k3snet.model.state import State
from k3snet.planner import plan

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"
ADMIN_CHAIN = {
    "forward": "{ type filter hook forward priority 10; }",
    "postrouting": "{ type nat hook postrouting priority 50; }",
    "prerouting": "{ type filter hook prerouting priority -150; }",
    "nat-prerouting": "{ type nat hook prerouting priority -100; }",
}
# (hook, foreign rules, the k3snet objects each defeats, a line of the plan naming it)
CASES: dict[str, tuple[str, list[str], type, list[str]]] = {
    "a forward drop (IPv4 and IPv6)": (
        "forward", ["ip saddr 10.42.0.0/16 drop", "ip6 saddr fd42:42::/56 drop"], ForwardRule,
        ["drop by nftables inet admin c: ip saddr 10.42.0.0/16 drop",
         "drop by nftables inet admin c: ip6 saddr fd42:42::/56 drop"]),
    "an early screen on the prerouting hook (IPv4 and IPv6)": (
        "prerouting", ["ip saddr 10.42.0.0/16 drop", "ip6 saddr fd42:42::/56 drop"], ForwardRule,
        ["drop by nftables inet admin c: ip saddr 10.42.0.0/16 drop",
         "drop by nftables inet admin c: ip6 saddr fd42:42::/56 drop"]),
    # The kernel runs a nat chain for a new connection's first packet: dropped there, the
    # connection never starts (tests/nftables/test_foreign_defaults.py shows it).
    "a drop in a nat prerouting chain (IPv4 and IPv6)": (
        "nat-prerouting", ["ip saddr 10.42.0.0/16 drop", "ip6 saddr fd42:42::/56 drop"],
        ForwardRule, ["drop by nftables inet admin c: ip saddr 10.42.0.0/16 drop",
                      "drop by nftables inet admin c: ip6 saddr fd42:42::/56 drop"]),
    # A verdict map's element was a statement k3snet did not model, so no drop at all.
    "a verdict map's drop (IPv4 and IPv6)": (
        "forward", ["ip daddr vmap { 192.168.2.0/24 : drop, 10.0.0.0/8 : accept }",
                    "ip6 daddr vmap { fd01:2::/64 : drop }"], ForwardRule,
        ["drop by nftables inet admin c: ip daddr 192.168.2.0/24 drop",
         "drop by nftables inet admin c: ip6 daddr fd01:2::/64 drop"]),
    "a NAT rule met first (IPv4 and IPv6)": (
        "postrouting", ["ip saddr 10.42.0.0/16 snat ip to 192.0.2.1",
                        "ip6 saddr fd42:42::/56 snat ip6 to 2001:db8::1"], MasqueradeRule,
        ["nftables inet admin c", "10.42.0.0/16", "fd42:42::/56"]),
}


def ruleset(ns: str) -> list[str]:
    """Every rule of the namespace, as the kernel lists it, without handles (JSON texts)."""
    found = json.loads(run_in(ns, ["nft", "-j", "list", "ruleset"]).stdout)["nftables"]
    rules = [item["rule"] for item in found if "rule" in item]
    return sorted((json.dumps({k: v for k, v in r.items() if k != "handle"}, sort_keys=True)
                   for r in rules), key=str)


@pytest.mark.kernel
@pytest.mark.parametrize("case", list(CASES))
def test_a_foreign_block_added_after_k3snet_rules_is_a_conflict_without_churn(
    ns: str, case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["render", "nftables", "-f", str(SEED), "-o", str(tmp_path)]) == 0
    run_in(ns, ["nft", "-f", "-"], input_text=(tmp_path / "k3snet.nft").read_text())
    cli = ["-f", str(SEED), "--backend", "nftables", "--netns", ns, "--no-facts"]
    assert main(["plan", *cli]) == 0
    # The agent's backend, warm before the foreign rule comes (its caches must see it).
    backend = NftablesBackend(netns=ns)
    try:
        _check(ns, backend, cli, case, capsys)
    finally:
        backend.close()


def _check(ns: str, backend: NftablesBackend, cli: list[str], case: str,
           capsys: pytest.CaptureFixture[str]) -> None:
    hook, rules, kind, lines = CASES[case]
    desired = State(owned=backend.observe().owned)
    assert len(desired.owned) == 4  # a forward accept and a masquerade per family
    run_in(ns, ["nft", "add", "table", "inet", "admin"])
    run_in(ns, ["nft", "add", "chain", "inet", "admin", "c", ADMIN_CHAIN[hook]])
    for rule in rules:
        run_in(ns, ["nft", "add", "rule", "inet", "admin", "c", *rule.split()])
    before = ruleset(ns)
    assert sum('"table": "admin"' in r for r in before) == 2
    capsys.readouterr()

    assert main(["plan", *cli]) == 4  # conflicts, not "nothing to do"
    shown = capsys.readouterr().out
    assert "0 to add, 0 to replace, 0 to delete" in shown, shown
    assert shown.count("\n! ") + shown.startswith("! ") == 2, shown  # IPv4 and IPv6
    for line in lines:
        assert line in shown, shown
    # Applying changes nothing (k3snet's rules and the foreign ones stay as they are).
    main(["apply", "--allow-conflicts", *cli])
    assert ruleset(ns) == before

    # The agent's loop: one backend, plan after plan, the same conflicts and no change.
    for _ in range(3):
        p = plan(backend.observe(), desired)
        assert not p.changes
        assert sorted(type(n.wanted).__name__ for n in p.conflicts) == [kind.__name__] * 2
        assert all(n.owned == n.wanted for n in p.conflicts)  # in place, left as it is
    # The agent's pass (converge) fails as a conflict naming the rule, applying nothing.
    with pytest.raises(ConflictError, match="admin c"):
        converge(backend, desired)
    assert ruleset(ns) == before
    # The foreign rule goes: k3snet's rules, never touched, do their job again.
    run_in(ns, ["nft", "delete", "table", "inet", "admin"])
    p = plan(backend.observe(), desired)
    assert p.empty
    assert not p.notes
    # It comes back: the conflicts too.
    run_in(ns, ["nft", "add", "table", "inet", "admin"])
    run_in(ns, ["nft", "add", "chain", "inet", "admin", "c", ADMIN_CHAIN[hook]])
    for rule in rules:
        run_in(ns, ["nft", "add", "rule", "inet", "admin", "c", *rule.split()])
    assert len(plan(backend.observe(), desired).conflicts) == 2
    before = ruleset(ns)
    # destroy still removes every rule of k3snet's, the defeated ones too, and only those.
    admin = [r for r in before if '"table": "admin"' in r]
    assert main(["destroy", "--backend", "nftables", "--netns", ns, "--no-facts",
                 "--auto-approve"]) == 0
    assert ruleset(ns) == admin


# iptables-nft's FORWARD accepting the pods (and every reply) before an admin's drop of
# the database's subnet, beside a firewalld-like screen accepting the database's port
# only (a test k3snet does not model: the pods' accept in ip filter is no "met" rule).
ACCEPTED_BEFORE_THE_DROP = """
table ip filter {
    chain FORWARD {
        type filter hook forward priority 0; policy drop;
        ct state established,related accept
        ip saddr 10.42.0.0/16 accept
        ip daddr 192.168.2.0/24 drop
    }
}
table inet fw {
    chain screen {
        type filter hook forward priority 10;
        ct state established,related accept
        ip saddr 10.42.0.0/16 tcp dport 5432 accept
        ip6 saddr fd42:42::/56 tcp dport 5432 accept
        reject
    }
}
"""


@pytest.mark.kernel
@pytest.mark.lab
def test_a_drop_after_an_accept_of_the_pods_traffic_is_no_conflict_and_real_packets_pass(
        require_root: None, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # The accept ends ip filter's FORWARD for the pods' packets: the drop never sees them,
    # and the pod reaches the database. The plan said a conflict of that drop (exit 4).
    with SeedLab.create() as lab:
        monkeypatch.setenv("K3SNET_STATE_DIR", str(lab.state_dir))
        assert main(["apply", "-f", str(SEED), "--netns", lab.node]) == 0
        run_in(lab.node, ["nft", "-f", "-"], input_text=ACCEPTED_BEFORE_THE_DROP)
        before = ruleset(lab.node)
        assert lab.tcp_probe(4).ok
        capsys.readouterr()
        assert main(["plan", "-f", str(SEED), "--netns", lab.node]) == 0
        out = capsys.readouterr().out
        assert "conflict" not in out.replace("0 conflict(s)", "")
        # What may drop other traffic of the pods is the screen's reject: a warning.
        assert "!! warning: nftables: inet fw chain screen, " in out
        assert main(["apply", "-f", str(SEED), "--netns", lab.node]) == 0
        assert ruleset(lab.node) == before  # the kernel's view: nothing changed
        assert lab.tcp_probe(4).ok


@pytest.mark.kernel
@pytest.mark.lab
def test_a_drop_in_a_nat_prerouting_chain_stops_real_packets_and_is_a_conflict(
        require_root: None, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # The kernel runs the chain for the connection's first packet (conntrack is on:
    # k3snet's masquerade), drops it, and the connection never starts; the plan said
    # "No changes" (such a chain was not read for drops).
    with SeedLab.create() as lab:
        monkeypatch.setenv("K3SNET_STATE_DIR", str(lab.state_dir))
        assert main(["apply", "-f", str(SEED), "--netns", lab.node]) == 0
        assert lab.tcp_probe(4).ok
        run_in(lab.node, ["nft", "-f", "-"], input_text=(
            "table ip admin {\n chain c {\n  type nat hook prerouting priority dstnat;\n"
            "  ip saddr 10.42.0.0/16 drop\n }\n}\n"))
        assert not lab.tcp_probe(4, timeout=1.0).ok
        capsys.readouterr()
        assert main(["plan", "-f", str(SEED), "--netns", lab.node]) == 4
        assert "drop by nftables ip admin c: ip saddr 10.42.0.0/16 drop" in capsys.readouterr().out


# The spec moves the pods' forward accept to another out interface while an admin's drop
# comes first: one of the pods' source (k3snet's rule in place defeated too), or one of
# the new interface alone (k3snet's in place is not). (IPv4 and IPv6.)
MOVED = [(ForwardRule("10.42.0.0/16", "192.168.2.0/24", out_interface="eth0"),
          ForwardRule("10.42.0.0/16", "192.168.2.0/24", out_interface="eth1")),
         (ForwardRule("fd42:42::/56", "fd01:2::/64", out_interface="eth0"),
          ForwardRule("fd42:42::/56", "fd01:2::/64", out_interface="eth1"))]
MOVED_DROPS = {
    "of the pods": ["ip saddr 10.42.0.0/16 drop", "ip6 saddr fd42:42::/56 drop"],
    "of the new interface alone": ['oifname "eth1" ip daddr 192.168.2.0/24 drop',
                                   'oifname "eth1" ip6 daddr fd01:2::/64 drop'],
}


@pytest.mark.kernel
@pytest.mark.parametrize("drop", list(MOVED_DROPS))
def test_a_rule_in_place_the_spec_moved_where_a_foreign_drop_comes_first_stays_as_it_is(
        ns: str, drop: str) -> None:
    # The plan replaced k3snet's rule with one the drop defeats, with no "!" (exit 2, an
    # apply said it was done); an add of that rule is a conflict. Now: the "!" of the new
    # rule naming k3snet's in place, which stays, byte for byte, through the agent's passes;
    # once the drop goes, the replace.
    before, after = [old for old, _ in MOVED], [new for _, new in MOVED]
    with NftablesBackend(netns=ns) as backend:
        backend.apply(plan(backend.observe(), State(owned=before)))
    run_in(ns, ["nft", "add", "table", "inet", "admin"])
    run_in(ns, ["nft", "add", "chain", "inet", "admin", "c", ADMIN_CHAIN["forward"]])
    for rule in MOVED_DROPS[drop]:
        run_in(ns, ["nft", "add", "rule", "inet", "admin", "c", *rule.split()])
    kept = ruleset(ns)
    desired = State(owned=after)
    with NftablesBackend(netns=ns) as backend:
        for _ in range(3):  # the agent's passes
            p = plan(backend.observe(), desired)
            assert p.changes == ()
            assert sorted((n.status, n.wanted, n.owned) for n in p.notes) == sorted(
                ("conflict", new, old) for old, new in MOVED)
            assert "admin c" in p.render()
            with pytest.raises(ConflictError, match="admin c"):
                converge(backend, desired)
            converge(backend, desired, allow_conflicts=True)
            assert ruleset(ns) == kept
        run_in(ns, ["nft", "delete", "table", "inet", "admin"])
        p = plan(backend.observe(), desired)
        assert sorted((c.action, c.before, c.after) for c in p.changes) == sorted(
            ("replace", old, new) for old, new in MOVED)
        assert not p.notes
        backend.apply(p)
        assert plan(backend.observe(), desired).empty
    assert any('"eth1"' in r for r in ruleset(ns))
    assert not any('"eth0"' in r for r in ruleset(ns))
