"""A bucket chain losing more than 16 rules is written again: what stays around it.

One ``-D`` of each rule, which iptables-nft-restore looks for through the chain, ran
past the restore run's timeout at 10 000; the chain is declared again (with
``--noflush``, a flush of that chain alone) and its rules appended, in the table's one
transaction. An administrator's rule of another chain jumping to it stays, and an apply
failing after that table was committed takes it back to the rules it held. Fresh
``k3snet-ipt-*`` namespaces; iptables-nft, iptables-legacy and the libiptc driver.
"""

from __future__ import annotations

import pytest

from k3snet.backends.iptables import IptablesBackend
from k3snet.errors import ApplyError
from k3snet.lab.netns import run_in
from k3snet.model import ForwardRule, MasqueradeRule, State
from k3snet.planner import plan
from k3snet.render.iptables.rules import clear_caches, render_unit

CONFIGS = [("nft", "restore"), ("legacy", "restore"), ("legacy", "libiptc")]
RULES = [ForwardRule("10.42.0.0/16", f"100.64.{n // 256}.{n % 256}/32", out_interface="eth0")
         for n in range(400)]
KEPT = State(owned=RULES[:100])  # each of the 16 bucket chains loses more than 16 rules


def _rules(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith("#")]


@pytest.mark.kernel
@pytest.mark.parametrize(("mode", "driver"), CONFIGS)
def test_a_chain_written_again_keeps_a_foreign_jump_and_a_failed_apply_puts_it_back(
        ns: str, mode: str, driver: str) -> None:
    if driver == "libiptc":
        pytest.importorskip("iptc")
    tool = f"iptables-{mode}"
    chain = render_unit(RULES[0]).chain
    with IptablesBackend(ns, mode=mode, driver=driver) as backend:  # type: ignore[arg-type]
        backend.apply(plan(backend.observe(), State(owned=RULES)))
    run_in(ns, [tool, "-w", "-N", "ADMIN"])
    run_in(ns, [tool, "-w", "-A", "ADMIN", "-s", "192.0.2.1/32", "-j", chain])
    run_in(ns, [tool, "-w", "-I", "FORWARD", "1", "-j", "ADMIN"])
    run_in(ns, [tool, "-w", "-t", "nat", "-S"])  # the nat table there before (legacy)
    before = run_in(ns, [f"{tool}-save"]).stdout
    clear_caches()
    with IptablesBackend(ns, mode=mode, driver=driver) as backend:  # type: ignore[arg-type]
        # filter (the chains written again) is committed, then nat is refused
        p = plan(backend.observe(), State(owned=[
            *KEPT.owned, MasqueradeRule("10.42.0.0/16", out_interface="eth0")]))
        assert len([c for c in p.changes if c.action == "delete"]) == 300, p.render()
        backend.faults.fail_at(next(i for i, c in enumerate(p.changes)
                                    if isinstance(c.subject, MasqueradeRule)))
        with pytest.raises(ApplyError):
            backend.apply(p)
    assert _rules(run_in(ns, [f"{tool}-save"]).stdout) == _rules(before)
    clear_caches()
    with IptablesBackend(ns, mode=mode, driver=driver) as backend:  # type: ignore[arg-type]
        backend.apply(plan(backend.observe(), KEPT))
        assert plan(backend.observe(), KEPT).empty
    after = run_in(ns, [f"{tool}-save", "-t", "filter"]).stdout
    assert f"-A ADMIN -s 192.0.2.1/32 -j {chain}" in after, after
    assert "-A FORWARD -j ADMIN" in after, after
    prefix = f"-A {chain} "
    assert sorted(line for line in after.splitlines() if line.startswith(prefix)) == sorted(
        prefix + " ".join(f'"{t}"' if t.startswith("k3snet:") else t for t in line)
        for unit in map(render_unit, KEPT.owned) if unit.chain == chain
        for line in unit.lines), after
