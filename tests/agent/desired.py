"""The desired-state function most agent tests hand the agent: the spec compiled for the
group, of two arguments (no ``hold``: the agent reads its signature and never hands it
one)."""

from __future__ import annotations

from k3snet.agent._loop import DesiredState
from k3snet.backends.group import BackendGroup
from k3snet.converge import compile_for
from k3snet.model.state import State
from k3snet.spec import Spec


def _compiled(spec: Spec, group: BackendGroup) -> State:
    return compile_for(group, spec)


COMPILED: DesiredState = _compiled
