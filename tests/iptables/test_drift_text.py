"""Drift whose printed text is not its rule: repaired by rewriting the chain, never by -D.

iptables-save quotes comments only: an admin's rule put into one of k3snet's chains
with ``--hashlimit-name "a b"`` prints as ``--hashlimit-name a b``, which
iptables-restore reads as another rule (``Bad argument `b'``). Its repair deleted it
by that text, so every apply was refused and the drift stayed. Fresh
``k3snet-ipt-*`` namespaces, iptables-nft and iptables-legacy.
"""

from __future__ import annotations

import pytest

from k3snet.backends.iptables import IptablesBackend
from k3snet.lab.netns import run_in
from k3snet.model import ForwardRule, State
from k3snet.planner import plan
from k3snet.render.iptables.rules import render_unit, tokenize

RULE = ForwardRule("10.42.0.0/16", "0.0.0.0/0")
WANTED = State(owned=[RULE])
ODD = ["-s", "192.0.2.7", "-m", "hashlimit", "--hashlimit-upto", "1/s", "--hashlimit-name",
       "a b", "-j", "ACCEPT"]


@pytest.mark.kernel
@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_a_rule_whose_saved_text_reads_back_otherwise_is_repaired(ns: str, mode: str) -> None:
    chain = render_unit(RULE).chain
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        backend.apply(plan(backend.observe(), WANTED))
        run_in(ns, [f"iptables-{mode}", "-w", "-A", chain, *ODD])
        saved = run_in(ns, [f"iptables-{mode}-save", "-t", "filter"]).stdout
        assert "--hashlimit-name a b" in saved, saved  # printed unquoted
        repair = plan(backend.observe(), WANTED)
        assert repair.changes, backend.drift
        backend.apply(repair)
        assert plan(backend.observe(), WANTED).changes == ()
    saved = run_in(ns, [f"iptables-{mode}-save", "-t", "filter"]).stdout
    prefix = f"-A {chain} "
    ours = [tokenize(line[len(prefix):]) for line in saved.splitlines()
            if line.startswith(prefix)]
    assert ours == list(render_unit(RULE).lines), saved


@pytest.mark.kernel
@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_a_direction_accept_put_in_k3snets_chain_is_deleted_alone_counters_kept(
        ns: str, mode: str) -> None:
    # -m conntrack --ctdir REPLY reads back as written: the drift is deleted by its text,
    # and the chain's own rules keep their counters (the chain was written again: the
    # reader of rules was asked about the rule without its --ctdir, no rule).
    rules = [ForwardRule("10.42.0.0/16", f"100.64.0.{n}/32") for n in range(20)]
    wanted = State(owned=rules)
    chain = render_unit(rules[0]).chain
    save = [f"iptables-{mode}-save", "-c", "-t", "filter"]
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        backend.apply(plan(backend.observe(), wanted))
    counted = run_in(ns, save).stdout.replace("[0:0] -A K3SNET-F-", "[7:700] -A K3SNET-F-")
    run_in(ns, [f"iptables-{mode}-restore", "-c"], input_text=counted)
    before = run_in(ns, save).stdout
    assert f"[7:700] -A {chain} " in before, before
    run_in(ns, [f"iptables-{mode}", "-w", "-A", chain, "-d", "10.42.0.0/16", "-m",
                "conntrack", "--ctdir", "REPLY", "-j", "ACCEPT"])
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        repair = plan(backend.observe(), wanted)
        assert len(repair.changes) == 1, repair.render()
        backend.apply(repair)
        assert plan(backend.observe(), wanted).empty
    assert run_in(ns, save).stdout.splitlines()[1:-1] == before.splitlines()[1:-1]
