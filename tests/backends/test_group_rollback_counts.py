"""What a backend group's error says it took back when an undo of its own fails halfway.

The group undoes an earlier member's part by applying the inverse plan through it. When
that undo fails and the member's own rollback of the undo fails too, the member raises a
:class:`~k3snet.errors.RollbackError` whose ``done`` are the inverses it made and whose
``rolled_back`` the original changes it made again (the inverses of those inverses). The
group added that ``rolled_back`` to its own as if it were what it had taken back: the
error listed adds as rolled back (an ``ApplyError``'s ``rolled_back`` are the inverses of
its ``done``), counted them in its message, and left out the inverse that did stay made.
"""

from __future__ import annotations

from collections import Counter

import pytest

from k3snet import MasqueradeRule, Plan, State, Sysctl, plan
from k3snet.backends.base import ApplyResult
from k3snet.backends.group import BackendGroup
from k3snet.backends.memory import MemoryBackend
from k3snet.errors import ApplyError, RollbackError
from k3snet.planner import Change

SYSCTLS = [Sysctl("net.ipv4.ip_forward", "1"), Sysctl("net.ipv4.conf.all.rp_filter", "2"),
           Sysctl("net.ipv4.conf.eth0.rp_filter", "2")]


class _UndoFailsHalfway(MemoryBackend):
    """Applies its part; its undo (the group's inverse plan) makes two inverses, fails at
    the third, makes the second's original again and fails to take the first back, as
    :class:`~k3snet.backends.kit.Compensation` reports it."""

    def __init__(self, *, again: bool) -> None:
        super().__init__(capabilities=["sysctl"])
        self.again = again
        self.applies = 0

    def apply(self, plan: Plan) -> ApplyResult:
        self.applies += 1
        if self.applies == 1:
            return super().apply(plan)
        first, second, _third = plan.changes
        super().apply(Plan(changes=[first, second]))
        if not self.again:  # its rollback failed at once: both inverses stay made
            raise RollbackError("undo failed; rollback failed", failed=_third,
                                done=[first, second])
        super().apply(Plan(changes=[second.inverse()]))
        raise RollbackError("undo failed; rollback failed halfway", failed=_third,
                            done=[first, second], rolled_back=[second.inverse()])


def _what_may_still_be_there(error: ApplyError) -> Counter[Change]:
    """``done`` less what ``rolled_back`` undoes (as ApplyError documents them)."""
    left = Counter(error.done)
    for change in error.rolled_back:
        left[change.inverse()] -= 1
    return +left


@pytest.mark.parametrize("again", [False, True])
def test_a_group_s_failed_undo_of_a_member_reports_only_inverses_of_what_was_done(
        again: bool) -> None:
    sysctls = _UndoFailsHalfway(again=again)
    nat = MemoryBackend(capabilities=["nat"])
    group = BackendGroup([sysctls, nat])
    p = plan(group.observe(), State(owned=[*SYSCTLS, MasqueradeRule("10.42.0.0/16")]))
    nat.faults.fail_at(0)
    with pytest.raises(RollbackError) as caught:
        group.apply(p)
    error = caught.value
    done = set(error.done)
    assert all(c.inverse() in done for c in error.rolled_back), error.rolled_back
    # What the group says may still be there holds what is there.
    there = {c for c in _what_may_still_be_there(error) if c.after is not None}
    assert {c.after for c in there} >= set(sysctls.observe().owned)
    # Exactly: the last sysctl's inverse stayed made (and the second's when the
    # member's rollback made nothing again), last first.
    third, second, _ = [c.inverse() for c in reversed(p.only("sysctl").changes)]
    assert list(error.rolled_back) == ([third] if again else [third, second])
    assert f"rolled back {len(error.rolled_back)} change(s)" in str(error)
