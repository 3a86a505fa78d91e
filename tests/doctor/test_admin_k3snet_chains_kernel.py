"""The doctor reads an administrator's ``K3SNET-*`` chains in filter as k3snet's
iptables backend does.

The backend leaves only its own chains unread (``ours``: those
:func:`~k3snet.backends.iptables.table.load_table` tells from an administrator's
``K3SNET-*`` chains, untagged or of a name k3snet does not write); the doctor's
:meth:`~k3snet.doctor.NodeState.forward_blocks`, which says what k3snet's plan names a
conflict of a fix's forward accept, called the same functions with their default and
skipped every ``K3SNET-`` chain: a drop of the pods in an administrator's
``K3SNET-ADMIN`` jumped to ahead of k3snet's hook, or a reject of every packet there
under raw's notrack of the pods, was no conflict for the doctor (its fix planned, the
backend's plan refusing it), and the pods' flow accepted both ways by address there
under FORWARD's policy DROP was a conflict the backend does not name; a tagged jump to
an administrator's ``K3SNET-FORWARD`` was k3snet's hook, and their drop in it unread.
iptables-nft and iptables-legacy, IPv4 and IPv6, each in a fresh namespace; the doctor
reads the kernel's ``-save`` text.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from k3snet.backends.iptables import IptablesBackend
from k3snet.doctor import NodeCapture, NodeState
from k3snet.lab.netns import run_in, temporary_netns
from k3snet.model import ForwardRule, State
from k3snet.planner import plan

pytestmark = [pytest.mark.kernel]

ADDRESSES = {4: ("10.42.0.0/16", "192.168.2.0/24"), 6: ("fd42::/48", "fd01:2::/64")}


@pytest.fixture
def ns(require_root: None) -> Iterator[str]:
    for tool in ("iptables-nft", "iptables-legacy", "ip6tables-nft", "ip6tables-legacy"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    with temporary_netns("crossk") as name:
        yield name


def _admin(ns: str, tool: list[str], case: str, pod: str, db: str) -> None:
    if case == "admins-main-chain":  # theirs: no rule tagged, hooked with k3snet's comment
        run_in(ns, [*tool, "-N", "K3SNET-FORWARD"])
        run_in(ns, [*tool, "-A", "K3SNET-FORWARD", "-s", pod, "-j", "DROP"])
        run_in(ns, [*tool, "-I", "FORWARD", "1", "-m", "comment", "--comment", "k3snet",
                    "-j", "K3SNET-FORWARD"])
        return
    run_in(ns, [*tool, "-N", "K3SNET-ADMIN"])
    if case == "drop-before-hook":
        run_in(ns, [*tool, "-A", "K3SNET-ADMIN", "-s", pod, "-j", "DROP"])
        run_in(ns, [*tool, "-I", "FORWARD", "1", "-j", "K3SNET-ADMIN"])
        return
    if case == "reject-every-packet":
        run_in(ns, [*tool, "-A", "K3SNET-ADMIN", "-j", "REJECT"])
    else:  # "both-ways-accepted": under FORWARD's policy DROP
        run_in(ns, [*tool, "-P", "FORWARD", "DROP"])
        run_in(ns, [*tool, "-A", "K3SNET-ADMIN", "-s", pod, "-d", db, "-j", "ACCEPT"])
        run_in(ns, [*tool, "-A", "K3SNET-ADMIN", "-s", db, "-d", pod, "-j", "ACCEPT"])
    run_in(ns, [*tool, "-A", "FORWARD", "-j", "K3SNET-ADMIN"])
    run_in(ns, [*tool, "-t", "raw", "-A", "PREROUTING", "-s", pod, "-j", "CT", "--notrack"])


@pytest.mark.parametrize("case", ["drop-before-hook", "admins-main-chain",
                                  "reject-every-packet", "both-ways-accepted"])
@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_the_doctor_names_the_conflicts_of_an_admins_k3snet_named_chain_the_plan_names(
        ns: str, mode: str, family: int, case: str) -> None:
    """A forward accept of the pods judged by the doctor from the kernel's ``-save`` text
    and by the backend's plan (in place behind k3snet's hook, or not yet): the same
    conflicts (none when the administrator's chain accepts the untracked flow both
    ways)."""
    pod, db = ADDRESSES[family]
    wanted = ForwardRule(pod, db, in_interface="cni0", out_interface="eth0")
    tool = [f"{'ip6' if family == 6 else 'ip'}tables-{mode}", "-w"]
    if case in ("drop-before-hook", "reject-every-packet"):  # k3snet's hook first
        with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
            backend.apply(plan(backend.observe(), State(owned=[wanted])))
    _admin(ns, tool, case, pod, db)
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        p = plan(backend.observe(), State(owned=[wanted]))
    planned = sorted(note.foreign.describe() for note in p.conflicts if note.wanted == wanted)
    assert bool(planned) is (case != "both-ways-accepted"), p.render()
    save = run_in(ns, [f"{tool[0]}-save"]).stdout
    state = NodeState.from_capture(NodeCapture({f"iptables-{mode}-v{family}.save": save}))
    blocks = state.forward_blocks(mode, family)
    assert blocks is not None
    assert sorted(b.describe() for b in blocks if wanted.conflicts_with(b)) == planned, save
