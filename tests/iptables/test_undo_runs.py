"""Every run of an undo after a restore killed at its bound counts against the grace.

The agent held one restore run and an undo "as long" against the pod's grace period
(twice the iptables ``timeout`` and the clean-up margin), but the undo takes back each
committed table in a run of its own, after reading back with ``iptables-save`` which
tables the killed run committed: a dual-stack apply whose IPv6 run was killed at its
bound took back IPv4's filter and nat in two more runs (three bounds, 95 s at the
default 30 s, in a 70 s grace period), and nothing warned.
"""

from __future__ import annotations

import pytest

from k3snet import plan
from k3snet.agent import CLEANUP_MARGIN, grace_shortfalls
from k3snet.backends.group import BackendGroup
from k3snet.backends.iptables import IptablesBackend
from k3snet.backends.iptables.driver import WAIT_SECONDS, Flavour, Processes, RestoreProcess
from k3snet.backends.kit import undo_steps
from k3snet.errors import ApplyError, RollbackError
from k3snet.lab.netns import run_in
from k3snet.model import ForwardRule, MasqueradeRule, State

DESIRED = State(owned=[
    ForwardRule("10.42.0.0/16", "192.168.2.0/24"),
    MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24"),
    ForwardRule("fd00:42::/56", "fd00:2::/64"),
    MasqueradeRule("fd00:42::/56", destination="fd00:2::/64"),
])
TIMEOUT = 1.0
"""A short bound: every run from the IPv6 apply on commits, then hangs to it."""


class Hanging(Processes):
    """The tools, each run from the IPv6 apply's on doing its work and then hanging
    until it is killed at its bound (stuck, as on the xtables lock); each run counted."""

    def __init__(self, netns: str) -> None:
        super().__init__(netns, TIMEOUT)
        self.hanging = False
        self.bounded: list[str] = []  # the runs from the IPv6 apply's on

    def restore(self, family: int, mode: Flavour, *, test: bool = False) -> RestoreProcess:
        if family == 6 and not test:
            self.hanging = True
        if test or not self.hanging:
            return super().restore(family, mode, test=test)
        self.bounded.append(f"restore IPv{family}")
        tool = self.tool(family, mode, "restore")
        return RestoreProcess(self, self.argv(["sh", "-c", '"$@"; exec sleep infinity', "sh",
                                               tool, "--noflush", f"--wait={WAIT_SECONDS}"]),
                              tool=tool)

    def save(self, family: int, mode: Flavour) -> str | None:
        if self.hanging:
            self.bounded.append(f"save IPv{family}")
        return super().save(family, mode)


@pytest.mark.kernel
@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_the_grace_the_agent_checks_covers_every_bounded_run_after_a_killed_restore(
        ns: str, mode: Flavour) -> None:
    kernel = Hanging(ns)
    with IptablesBackend(ns, mode=mode, timeout=TIMEOUT, kernel=kernel) as backend:
        p = plan(backend.observe(), DESIRED)
        with pytest.raises(ApplyError) as raised:
            backend.apply(p)
        # The IPv6 run, killed at its bound after its last COMMIT; the read-back of
        # what it committed; then each family's tables taken back in one run (it was
        # one run per table: four after the read-back, six bounds in all).
        assert kernel.bounded == ["restore IPv6", "save IPv6", "restore IPv6",
                                  "restore IPv4"]
        real = len(kernel.bounded) * TIMEOUT + CLEANUP_MARGIN
        # A grace period no longer than those runs and the margin is warned of.
        assert grace_shortfalls(real, BackendGroup([backend])), kernel.bounded
        assert not grace_shortfalls(real + 0.5, BackendGroup([backend]))
    # Each undo run was killed at its bound after it committed: the tables are back
    # as they were, and the report says that the killed runs' tables may stay.
    for tool in (f"iptables-{mode}-save", f"ip6tables-{mode}-save"):
        assert "K3SNET" not in run_in(ns, [tool]).stdout
    said = str(raised.value)
    assert "did not finish within" in said, said


class _RefusedFilter(RestoreProcess):
    """A restore run whose filter table holds a rule the tool refuses."""

    def table(self, name: str) -> None:
        super().table(name)
        if name == "filter":
            self.send(["-A K3SNET-NO-SUCH-CHAIN -j ACCEPT"])


class RefusingUndo(Processes):
    """The tools, the undo's run (after the apply's IPv4 and IPv6 ones) refusing filter."""

    def __init__(self, netns: str) -> None:
        super().__init__(netns)
        self.runs: list[int] = []

    def restore(self, family: int, mode: Flavour, *, test: bool = False) -> RestoreProcess:
        if test:
            return super().restore(family, mode, test=test)
        self.runs.append(family)
        if len(self.runs) <= 2:
            return super().restore(family, mode)
        tool = self.tool(family, mode, "restore")
        return _RefusedFilter(self, self.argv([tool, "--noflush", f"--wait={WAIT_SECONDS}"]),
                              tool=tool)


@pytest.mark.kernel
@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_a_table_refused_in_the_one_undo_run_of_a_family_stays_and_is_said_alone(
        ns: str, mode: Flavour) -> None:
    """IPv4's filter and nat are taken back in one run, nat first: the tool commits nat,
    then refuses filter. nat is rolled back; filter alone is said to stay."""
    kernel = RefusingUndo(ns)
    with IptablesBackend(ns, mode=mode, kernel=kernel) as backend:
        p = plan(backend.observe(), DESIRED)
        # refused in IPv6's first table: nothing of IPv6 committed
        backend.faults.fail_at(next(i for i, c in enumerate(p.changes)
                                    if isinstance(c.subject, ForwardRule)
                                    and c.subject.family == 6))
        with pytest.raises(RollbackError) as raised:
            backend.apply(p)
    assert kernel.runs == [4, 6, 4]  # the undo of IPv4: one run
    error = raised.value
    ipv4 = [c for c in error.done if c.subject.family == 4]
    nat = [c.inverse() for c in reversed(ipv4) if isinstance(c.subject, MasqueradeRule)]
    forward = [c.inverse() for c in reversed(ipv4) if isinstance(c.subject, ForwardRule)]
    assert nat
    assert forward
    assert list(error.rolled_back) == nat
    said = str(error)
    for change in forward:
        assert f"{change}: " in said, said
    for change in nat:
        assert f"{change}: " not in said, said
    saved = run_in(ns, [f"iptables-{mode}-save"]).stdout
    nat_part, _, filter_part = saved.partition("*filter")
    if "*nat" in filter_part:
        filter_part, _, nat_part = filter_part.partition("*nat")
    assert "K3SNET" in filter_part
    assert "K3SNET" not in nat_part


class _Counted(Hanging):
    """:class:`Hanging`, counting every bounded step from the apply's start (``counting``
    set): SIGTERM never cuts the pass in progress, so one landing as the apply begins
    waits for each of them."""

    counting = False

    def restore(self, family: int, mode: Flavour, *, test: bool = False) -> RestoreProcess:
        if self.counting and not (family == 6 and not test) and not self.hanging:
            self.bounded.append(f"restore{' --test' if test else ''} IPv{family}")
        return super().restore(family, mode, test=test)

    def save(self, family: int, mode: Flavour) -> str | None:
        if self.counting and not self.hanging:
            self.bounded.append(f"save IPv{family}")
        return super().save(family, mode)


@pytest.mark.kernel
@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_a_sigterm_as_a_dual_stack_apply_begins_waits_for_seven_bounds_the_check_counts_four(
        ns: str, mode: Flavour) -> None:
    """What the grace check leaves out, as docs/agent.md says it: a SIGTERM as a
    dual-stack apply begins waits for the apply's read of each family and its IPv4 run,
    each bounded, before the IPv6 run killed at its bound and its undo: seven bounds
    (215 s at the 30 s default with the margin), where the check counts the killed run
    and its undo, four (125 s, within the rendered 130 s). A killed IPv4 run is followed
    by no IPv6 one: the apply ends at its first failed run."""
    kernel = _Counted(ns)
    with IptablesBackend(ns, mode=mode, timeout=TIMEOUT, kernel=kernel) as backend:
        p = plan(backend.observe(), DESIRED)
        kernel.counting = True
        with pytest.raises(ApplyError):
            backend.apply(p)
        assert kernel.bounded == ["save IPv4", "save IPv6", "restore IPv4", "restore IPv6",
                                  "save IPv6", "restore IPv6", "restore IPv4"]
        counted = (1 + undo_steps(backend)) * TIMEOUT + CLEANUP_MARGIN
        assert counted == (len(kernel.bounded) - 3) * TIMEOUT + CLEANUP_MARGIN
        assert not grace_shortfalls(counted + 0.5, BackendGroup([backend]))
