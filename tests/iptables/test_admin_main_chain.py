"""An administrator's own chain under the name of k3snet's main chain, hooked with
k3snet's comment, is theirs: observe, plan and destroy leave it as it is.

Every rule k3snet writes in its chains carries its tag. A ``K3SNET-FORWARD`` (or
``K3SNET-POSTROUTING``) holding rules none of which does, jumped to from the built-in
chain by a rule carrying k3snet's comment (``-m comment --comment k3snet``, k3snet's
own hook line, copied), was read as k3snet's main chain in drift ("with no rule of
k3snet behind it"): ``k3snet destroy`` deleted it, the administrator's DROP with it, and
the jump. Now it is a foreign chain (a warning names it and the jump), a destroy
leaves it, and an apply that needs that chain is refused, naming it. iptables-nft and
iptables-legacy, each in a fresh ``k3snet-ipt-*`` namespace; the kernel's view is
``iptables-save``.
"""

from __future__ import annotations

import pytest

from k3snet.backends.iptables import IptablesBackend
from k3snet.converge import destroy
from k3snet.errors import PlanError
from k3snet.lab.netns import run_in
from k3snet.model import ForwardRule, MasqueradeRule, State
from k3snet.planner import plan

WANTED = State(owned=[ForwardRule("10.42.0.0/16", "192.168.2.0/24"),
                      MasqueradeRule("10.42.0.0/16", out_interface="eth0")])
CHAINS = {"filter": ("FORWARD", "K3SNET-FORWARD"), "nat": ("POSTROUTING", "K3SNET-POSTROUTING")}


def _theirs(ns: str, mode: str, table: str) -> None:
    builtin, chain = CHAINS[table]
    tool = [f"iptables-{mode}", "-w", "-t", table]
    run_in(ns, [*tool, "-N", chain])
    verdict = ["-j", "DROP"] if table == "filter" else ["-j", "MASQUERADE"]
    run_in(ns, [*tool, "-A", chain, "-s", "10.9.0.0/16", *verdict])
    run_in(ns, [*tool, "-A", chain, "-d", "10.9.0.0/16", "-m", "comment", "--comment",
                "admin's", "-j", "RETURN"])
    run_in(ns, [*tool, "-I", builtin, "1", "-m", "comment", "--comment", "k3snet",
                "-j", chain])


def _body(ns: str, mode: str) -> list[str]:
    text = run_in(ns, [f"iptables-{mode}-save"]).stdout
    return [line.rsplit(" [", 1)[0] if line.startswith(":") else line
            for line in text.splitlines() if not line.startswith("#")]


@pytest.mark.kernel
@pytest.mark.parametrize("table", sorted(CHAINS))
@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_an_admins_chain_named_as_k3snets_main_chain_and_hooked_with_its_tag_survives_destroy(
        ns: str, mode: str, table: str) -> None:
    _theirs(ns, mode, table)
    before = _body(ns, mode)
    builtin, chain = CHAINS[table]
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        observed = backend.observe()
        assert not observed.owned, observed.owned
        assert backend.drift == ()
        warned = "\n".join(backend.warnings)
        assert f"chain {chain} is not k3snet's" in warned, warned
        assert f"-A {builtin} -m comment --comment k3snet -j {chain}" in warned, warned
        assert plan(observed, State(owned=[])).empty
        destroy(backend)
    assert _body(ns, mode) == before


@pytest.mark.kernel
@pytest.mark.parametrize("table", sorted(CHAINS))
@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_an_apply_needing_k3snets_main_chain_an_admin_holds_is_refused_naming_it(
        ns: str, mode: str, table: str) -> None:
    _theirs(ns, mode, table)
    before = _body(ns, mode)
    _, chain = CHAINS[table]
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        p = plan(backend.observe(), WANTED)
        problems = backend.check(p)
        assert [chain in problem for problem in problems] == [True], problems
        assert "not k3snet's" in problems[0]
        with pytest.raises(PlanError, match=chain):
            backend.apply(p)
    assert _body(ns, mode) == before


@pytest.mark.kernel
@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_k3snets_own_main_chain_emptied_and_left_is_still_its_own(ns: str, mode: str) -> None:
    """An empty ``K3SNET-FORWARD`` (an interrupted run's) stays k3snet's: a destroy
    removes it and its jump."""
    tool = [f"iptables-{mode}", "-w"]
    run_in(ns, [*tool, "-N", "K3SNET-FORWARD"])
    run_in(ns, [*tool, "-A", "FORWARD", "-m", "comment", "--comment", "k3snet",
                "-j", "K3SNET-FORWARD"])
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        assert backend.observe().owned
        destroy(backend)
    assert not [line for line in _body(ns, mode) if "K3SNET" in line]


@pytest.mark.kernel
@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_an_admins_chain_of_a_name_k3snet_does_not_write_is_theirs_even_with_k3snets_tag(
        ns: str, mode: str) -> None:
    """``iptables -N K3SNET-EXTRA`` holding a rule commented ``k3snet: extra egress``
    (k3snet's tag: ``k3snet:...``) was read as a chain of k3snet's that no rule of k3snet
    uses: every plan deleted it as drift, and with the administrator's jump to it every
    apply of the same spec, and every destroy, was refused."""
    tool = [f"iptables-{mode}", "-w"]
    wanted = State(owned=[ForwardRule("10.42.0.0/16", "192.168.2.0/24")])
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        backend.apply(plan(backend.observe(), wanted))
    ours = [line for line in _body(ns, mode) if "K3SNET" in line]
    run_in(ns, [*tool, "-N", "K3SNET-EXTRA"])
    run_in(ns, [*tool, "-A", "K3SNET-EXTRA", "-s", "10.9.0.0/16", "-m", "comment",
                "--comment", "k3snet: extra egress", "-j", "ACCEPT"])
    run_in(ns, [*tool, "-A", "FORWARD", "-j", "K3SNET-EXTRA"])
    theirs = [line for line in _body(ns, mode) if "K3SNET-EXTRA" in line]
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        observed = backend.observe()
        assert backend.drift == ()
        assert plan(observed, wanted).empty
        warned = "\n".join(backend.warnings)
        assert ("chain K3SNET-EXTRA is not k3snet's (k3snet writes no chain of that name; "
                "jumped to by -A FORWARD -j K3SNET-EXTRA)") in warned, warned
        assert sorted(line for line in _body(ns, mode) if "K3SNET" in line) == sorted(
            ours + theirs)
        destroy(backend)
    assert [line for line in _body(ns, mode) if "K3SNET" in line] == theirs


@pytest.mark.kernel
@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_an_admins_main_chain_whose_comments_start_with_k3snet_is_still_theirs(
        ns: str, mode: str) -> None:
    """Their ``K3SNET-FORWARD``'s DROP commented ``k3snet: admin's drop`` (k3snet's tag,
    read loosely, but not as k3snet writes it: ``k3snet`` or ``k3snet:`` and 16 hex
    digits) made it k3snet's main chain in drift, deleted by a destroy."""
    tool = [f"iptables-{mode}", "-w"]
    run_in(ns, [*tool, "-N", "K3SNET-FORWARD"])
    run_in(ns, [*tool, "-A", "K3SNET-FORWARD", "-s", "10.9.0.0/16", "-m", "comment",
                "--comment", "k3snet: admin's drop", "-j", "DROP"])
    run_in(ns, [*tool, "-A", "FORWARD", "-m", "comment", "--comment", "k3snet",
                "-j", "K3SNET-FORWARD"])
    before = _body(ns, mode)
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        assert not backend.observe().owned
        assert backend.drift == ()
        destroy(backend)
    assert _body(ns, mode) == before


@pytest.mark.kernel
@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_an_empty_chain_named_as_a_bucket_of_the_other_table_is_not_k3snets(
        ns: str, mode: str) -> None:
    """k3snet writes ``K3SNET-F-x`` in filter alone and ``K3SNET-N-...`` in nat alone. An
    empty, unreferenced ``K3SNET-F-7`` in nat (or ``K3SNET-N-d24-s16-o-7`` in filter),
    an administrator's, was read as a bucket of k3snet's left empty: drift, deleted by
    the next apply, and by a destroy."""
    tool = [f"iptables-{mode}", "-w"]
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        backend.apply(plan(backend.observe(), WANTED))
    run_in(ns, [*tool, "-t", "nat", "-N", "K3SNET-F-7"])
    run_in(ns, [*tool, "-t", "filter", "-N", "K3SNET-N-d24-s16-o-7"])
    theirs = sorted([":K3SNET-N-d24-s16-o-7 -", ":K3SNET-F-7 -"])
    assert sorted(line for line in _body(ns, mode) if line in theirs) == theirs
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        observed = backend.observe()
        assert backend.drift == ()
        assert plan(observed, WANTED).empty
        warned = "\n".join(backend.warnings)
        for table, chain in (("filter", "K3SNET-N-d24-s16-o-7"), ("nat", "K3SNET-F-7")):
            assert (f"IPv4 {table}: chain {chain} is not k3snet's (k3snet writes no chain "
                    "of that name)") in warned, warned
        backend.apply(plan(observed, State(owned=[ForwardRule("10.42.0.0/16", "192.168.3.0/24")])))
        assert sorted(line for line in _body(ns, mode) if line in theirs) == theirs
        destroy(backend)
    assert sorted(line for line in _body(ns, mode) if "K3SNET" in line) == theirs
