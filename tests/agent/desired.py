"""The desired-state function most agent tests hand the agent: the spec compiled for the
group, of two arguments (no ``hold``)."""

from __future__ import annotations

from collections.abc import Callable

from k3snet.agent._loop import DesiredState
from k3snet.backends.group import BackendGroup
from k3snet.converge import compile_for
from k3snet.model.state import State
from k3snet.spec import Spec


def unheld(desired: Callable[[Spec, BackendGroup], State]) -> DesiredState:
    """``desired`` itself, typed as the protocol. A function of two arguments, written
    before ``hold``: the agent reads its signature and never hands it one."""
    # The protocol's type names ``hold``; the agent takes the two-argument form as well.
    return desired  # type: ignore[return-value]


def _compiled(spec: Spec, group: BackendGroup) -> State:
    return compile_for(group, spec)


COMPILED = unheld(_compiled)
