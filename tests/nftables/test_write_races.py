"""Another program's commit between the backend's read and its write (kernel tests).

The backend reads k3snet's table, plans one transaction from that read, and sends
it; any program may commit in between (nftables.service at boot, an administrator,
firewalld). What the read found missing is made with ``create``, which the kernel
refuses when it is there, not with ``add``, which takes what is there as it is: a
table of k3snet's name made meanwhile (an administrator's, under the name k3snet was
given) had its forward chain's policy drop set to accept and k3snet's rules added to
it, the apply reporting success; the next read took it for an older k3snet's table
(its marker chain and tagged rules, no mark) and its repair deleted it whole. Now the
transaction is refused, nothing changed, and the next read refuses the table as
another program's. Each test checks the kernel's own view (``nft -j list ruleset``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from k3snet.backends.nftables import NftablesBackend
from k3snet.backends.nftables.kernel import Libnftables
from k3snet.errors import ApplyError, BackendError
from k3snet.lab.netns import run_in
from k3snet.model import ForwardRule, MasqueradeRule, State
from k3snet.planner import plan
from k3snet.render.nftables import MARKER_CHAIN
from k3snet.render.nftables_batch import Syntax

WANTED = State(owned=[MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24"),
                      ForwardRule("10.42.0.0/16", "192.168.2.0/24")])
ADMIN = """\
table inet {table} {{
\tchain forward {{
\t\ttype filter hook forward priority filter; policy drop;
\t\tct state established,related accept
\t}}
}}
"""


@pytest.fixture
def before_write(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str, str], None]]:
    """``before_write(ns, script)``: ``nft -f script`` run in ``ns`` once, right before the
    backend's next transaction (not a dry run) reaches the kernel."""
    pending: list[tuple[str, str]] = []
    real = Libnftables.run

    def run(self: Libnftables, batch: str, *, json_input: bool,
            dry_run: bool = False) -> tuple[int, str]:
        if pending and not dry_run:
            ns, script = pending.pop()
            run_in(ns, ["nft", "-f", "-"], input_text=script)
        return real(self, batch, json_input=json_input, dry_run=dry_run)

    monkeypatch.setattr(Libnftables, "run", run)
    yield lambda ns, script: pending.append((ns, script))
    assert not pending, "no transaction was sent"


def _ruleset(ns: str) -> list[dict[str, Any]]:
    listed = json.loads(run_in(ns, ["nft", "-j", "list", "ruleset"]).stdout)["nftables"]
    return [item for item in listed if "metainfo" not in item]


def _chains(ns: str, table: str) -> dict[str, dict[str, Any]]:
    return {item["chain"]["name"]: item["chain"] for item in _ruleset(ns)
            if "chain" in item and item["chain"]["table"] == table}


@pytest.mark.parametrize("syntax", ["nft", "json"])
def test_a_table_of_its_name_made_between_read_and_write_is_left_as_made(
        ns: str, syntax: Syntax, before_write: Callable[[str, str], None]) -> None:
    with NftablesBackend(ns, table="fw", syntax=syntax, keep_read=False) as backend:
        p = plan(backend.observe(), WANTED)  # no table fw yet
        before_write(ns, ADMIN.format(table="fw"))
        with pytest.raises(ApplyError, match="nothing was changed"):
            backend.apply(p)
        before = _ruleset(ns)
        chains = _chains(ns, "fw")
        assert set(chains) == {"forward"}  # no postrouting, no marker chain
        assert chains["forward"]["policy"] == "drop"
        rules = [item["rule"] for item in before if "rule" in item]
        assert len(rules) == 1
        assert "comment" not in rules[0]
        # The next read refuses it as another program's, before anything is planned.
        with pytest.raises(BackendError, match="is not k3snet's"):
            backend.observe()
    assert _ruleset(ns) == before


def test_a_chain_of_its_name_made_in_its_table_between_read_and_write_aborts_the_write(
        ns: str, before_write: Callable[[str, str], None]) -> None:
    with NftablesBackend(ns, keep_read=False) as backend:
        backend.apply(plan(backend.observe(), State(owned=WANTED.owned - {
            next(o for o in WANTED.owned if isinstance(o, ForwardRule))})))
        run_in(ns, ["nft", "delete", "chain", "inet", "k3snet", "forward"])
        p = plan(backend.observe(), WANTED)  # no forward chain: the apply makes it
        before_write(ns, "add chain inet k3snet forward { type filter hook forward "
                         "priority filter; policy drop; }\n")
        with pytest.raises(ApplyError, match="nothing was changed"):
            backend.apply(p)
        chains = _chains(ns, "k3snet")
        assert chains["forward"]["policy"] == "drop"
        assert not [item for item in _ruleset(ns)
                    if "rule" in item and item["rule"]["chain"] == "forward"]
        # Read again, the chain is what it is: drift k3snet's next plan repairs.
        p = plan(backend.observe(), WANTED)
        backend.apply(p)
    chains = _chains(ns, "k3snet")
    assert chains["forward"]["policy"] == "accept"
    assert set(chains) == {"postrouting", "forward", MARKER_CHAIN}
    assert len([item for item in _ruleset(ns)
                if "rule" in item and item["rule"]["chain"] == "forward"]) == 2
