"""k3snet's hook jump edited by an admin into text that does not read back.

iptables-save quotes comments only: a jump edited to carry ``-m hashlimit
--hashlimit-name "a b"`` is printed ``--hashlimit-name a b``, and ``-D FORWARD``
with that text is refused ("Bad argument `b'"). Such a jump is drift, and its
repair (and ``destroy``) deleted it by that text: every apply of the table was
refused, so k3snet could neither repair nor remove its rules there.
"""

from __future__ import annotations

import pytest

from k3snet.backends.iptables import IptablesBackend
from k3snet.errors import ApplyError, RollbackError
from k3snet.lab.netns import run_in
from k3snet.model import ForwardRule, MasqueradeRule, State
from k3snet.planner import plan

DESIRED = State(
    owned=[
        ForwardRule("10.42.0.0/16", "192.168.2.0/24"),
        MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24"),
    ]
)
EDITED = [
    "-m",
    "comment",
    "--comment",
    "k3snet",
    "-m",
    "hashlimit",
    "--hashlimit-upto",
    "10/sec",
    "--hashlimit-name",
    "a b",
    "-j",
    "K3SNET-FORWARD",
]


CONFIGS = [("nft", "restore"), ("legacy", "restore"), ("legacy", "libiptc")]


def _edit_jump(ns: str, mode: str) -> None:
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        backend.apply(plan(backend.observe(), DESIRED))
    listed = run_in(ns, [f"iptables-{mode}", "-S", "FORWARD"]).stdout.splitlines()[1:]
    number = next(i for i, rule in enumerate(listed, 1) if "K3SNET-FORWARD" in rule)
    run_in(ns, [f"iptables-{mode}", "-R", "FORWARD", str(number), *EDITED])
    assert "--hashlimit-name a b" in run_in(ns, [f"iptables-{mode}-save"]).stdout


@pytest.mark.kernel
@pytest.mark.parametrize(("mode", "driver"), CONFIGS)
def test_destroy_removes_a_hook_jump_edited_into_text_that_does_not_read_back(
    ns: str, mode: str, driver: str
) -> None:
    if driver == "libiptc":
        pytest.importorskip("iptc")
    run_in(ns, [f"iptables-{mode}", "-A", "FORWARD", "-s", "10.9.0.0/16", "-j", "ACCEPT"])
    _edit_jump(ns, mode)
    run_in(ns, [f"iptables-{mode}", "-A", "FORWARD", "-s", "10.8.0.0/16", "-j", "ACCEPT"])
    with IptablesBackend(ns, mode=mode, driver=driver) as backend:  # type: ignore[arg-type]
        observed = backend.observe()
        assert any("did not write" in d for d in backend.drift), backend.drift
        backend.apply(plan(observed, State()))
        assert backend.observe().owned == frozenset()
    saved = run_in(ns, [f"iptables-{mode}-save"]).stdout
    assert "K3SNET" not in saved, saved
    assert "-A FORWARD -s 10.9.0.0/16 -j ACCEPT" in saved, saved  # foreign rules stay
    assert "-A FORWARD -s 10.8.0.0/16 -j ACCEPT" in saved, saved


@pytest.mark.kernel
@pytest.mark.parametrize(("mode", "driver"), CONFIGS)
def test_a_hook_jump_edited_into_text_that_does_not_read_back_is_repaired_in_place(
    ns: str, mode: str, driver: str
) -> None:
    if driver == "libiptc":
        pytest.importorskip("iptc")
    run_in(ns, [f"iptables-{mode}", "-A", "FORWARD", "-s", "10.9.0.0/16", "-j", "ACCEPT"])
    _edit_jump(ns, mode)
    with IptablesBackend(ns, mode=mode, driver=driver) as backend:  # type: ignore[arg-type]
        backend.apply(plan(backend.observe(), DESIRED))
        assert backend.drift == ()
        assert plan(backend.observe(), DESIRED).changes == ()
    forward = run_in(ns, [f"iptables-{mode}-save", "-t", "filter"]).stdout
    assert "hashlimit" not in forward, forward
    rules = [line for line in forward.splitlines() if line.startswith("-A FORWARD")]
    assert rules == [
        "-A FORWARD -s 10.9.0.0/16 -j ACCEPT",
        "-A FORWARD -m comment --comment k3snet -j K3SNET-FORWARD",
    ], forward


@pytest.mark.kernel
@pytest.mark.parametrize("want", [False, True])
def test_a_stale_number_for_an_edited_hook_jump_refuses_the_table_not_a_foreign_rule(
    ns: str, want: bool
) -> None:
    """Deleted by number: a foreign rule inserted above it since the read would take the
    number; the main chain's delete (which the kernel refuses while a rule jumps to
    it) makes that a refusal of the whole table, nothing changed."""
    _edit_jump(ns, "nft")
    with IptablesBackend(ns, mode="nft") as backend:
        observed = backend.observe()
        backend._refresh_hooks = lambda pending: None  # type: ignore[method-assign]  # the read goes stale
        run_in(ns, ["iptables-nft", "-I", "FORWARD", "1", "-s", "10.7.0.0/16", "-j", "DROP"])
        before = run_in(ns, ["iptables-nft-save", "-t", "filter"]).stdout
        with pytest.raises(ApplyError):
            backend.apply(plan(observed, DESIRED if want else State()))
    after = run_in(ns, ["iptables-nft-save", "-t", "filter"]).stdout
    strip = [ln for ln in before.splitlines() if not ln.startswith("#")]
    assert [ln for ln in after.splitlines() if not ln.startswith("#")] == strip


@pytest.mark.kernel
@pytest.mark.parametrize(("mode", "driver"), CONFIGS)
@pytest.mark.parametrize("added", ["192.168.3.0/24", "192.168.33.0/24"])
def test_a_failed_apply_after_the_edited_jumps_table_was_committed_takes_that_table_back(
    ns: str, mode: str, driver: str, added: str
) -> None:
    """The filter edit (the edited jump deleted by number, k3snet's put in its place) is
    committed, then nat's is refused: the rollback of filter put the edited jump back by
    its text, which iptables refuses as the delete was ('Bad argument'), so the whole
    rollback of that table failed (a RollbackError, the table left half-changed). Now
    k3snet's jump goes back in the edited one's place (the rule's text cannot be
    written), and the rest of the table as it was. ``192.168.33.0/24``'s forward rule
    goes to the bucket chain of ``192.168.2.0/24``'s, which the rollback writes again:
    its reply accept (``--ctdir REPLY``, a match k3snet's reader of foreign rules leaves
    alone) was taken for a rule whose text does not read back and left out."""
    if driver == "libiptc":
        pytest.importorskip("iptc")
    run_in(ns, [f"iptables-{mode}", "-A", "FORWARD", "-s", "10.9.0.0/16", "-j", "ACCEPT"])
    _edit_jump(ns, mode)
    run_in(ns, [f"iptables-{mode}", "-A", "FORWARD", "-s", "10.8.0.0/16", "-j", "ACCEPT"])
    before = run_in(ns, [f"iptables-{mode}-save", "-t", "filter"]).stdout
    more = State(owned=[*DESIRED.owned, ForwardRule("10.42.0.0/16", added),
                        MasqueradeRule("10.42.0.0/16", destination=added)])
    with IptablesBackend(ns, mode=mode, driver=driver) as backend:  # type: ignore[arg-type]
        p = plan(backend.observe(), more)
        last = max(i for i, c in enumerate(p.changes) if isinstance(c.subject, MasqueradeRule))
        backend.faults.fail_at(last)
        with pytest.raises(ApplyError) as caught:
            backend.apply(p)
        assert not isinstance(caught.value, RollbackError), caught.value
        assert caught.value.rolled_back, caught.value
    after = run_in(ns, [f"iptables-{mode}-save", "-t", "filter"]).stdout
    jump = "-A FORWARD -m comment --comment k3snet -j K3SNET-FORWARD"
    edited = next(ln for ln in before.splitlines() if "hashlimit" in ln)
    expected = [jump if ln == edited else ln for ln in before.splitlines()
                if not ln.startswith("#")]
    assert [ln for ln in after.splitlines() if not ln.startswith("#")] == expected, after
