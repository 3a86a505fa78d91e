"""The memory backend holds ``net.ipv4.ip_forward`` and ``net.ipv4.conf.all.forwarding``
as the kernel does: one value under two names (:data:`k3snet.model.sysctl.ALIASES`),
as the netlink backend reads and judges them (tests/netlink hold the kernel's side)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from k3snet import PlanError, State, Sysctl
from k3snet.backends.memory import MemoryBackend
from k3snet.model.sysctl import contradicting_aliases
from k3snet.planner import plan

IP_FORWARD = "net.ipv4.ip_forward"
ALL_FORWARDING = "net.ipv4.conf.all.forwarding"


def _values(state: State) -> dict[tuple[str, str], tuple[str, str | None]]:
    return {("owned" if o in state.owned else "foreign", o.name): (o.value, o.previous)
            for o in (*state.owned, *state.foreign) if isinstance(o, Sysctl)}


def _converge(backend: MemoryBackend, *wanted: Sysctl) -> None:
    backend.apply(plan(backend.observe(), State(owned=wanted)))


def test_a_write_under_one_name_is_read_under_the_other() -> None:
    # The kernel (and the netlink backend) then reads ip_forward as 1; the memory
    # backend kept the 0 it was given, and a plan tested on it differed from a node's.
    backend = MemoryBackend(State(foreign=[Sysctl(IP_FORWARD, "0")]))
    _converge(backend, Sysctl(ALL_FORWARDING, "1"))
    assert _values(backend.observe()) == {("owned", ALL_FORWARDING): ("1", "0"),
                                          ("foreign", IP_FORWARD): ("1", None)}


def test_renaming_the_owned_name_keeps_what_k3snet_found_and_destroy_gives_it_back() -> None:
    backend = MemoryBackend(State(foreign=[Sysctl(IP_FORWARD, "0")]))
    _converge(backend, Sysctl(ALL_FORWARDING, "1"))
    _converge(backend, Sysctl(IP_FORWARD, "1"))
    # ip_forward read 1 when it was taken over: k3snet's own write under the other name,
    # not what it found (0), which deleting it must give back.
    assert _values(backend.observe()) == {("owned", IP_FORWARD): ("1", "0"),
                                          ("foreign", ALL_FORWARDING): ("1", None)}
    _converge(backend)
    assert _values(backend.observe()) == {("foreign", IP_FORWARD): ("0", None),
                                          ("foreign", ALL_FORWARDING): ("0", None)}


def test_a_plan_owning_both_names_with_different_values_is_refused_as_the_netlink_backend_does(
) -> None:
    backend = MemoryBackend(State(foreign=[Sysctl(IP_FORWARD, "0")]))
    _converge(backend, Sysctl(IP_FORWARD, "1"))
    both = plan(backend.observe(), State(owned=[Sysctl(IP_FORWARD, "1"),
                                                Sysctl(ALL_FORWARDING, "0")]))
    assert any("two names of one kernel value" in p for p in backend.check(both))
    held = backend.observe()
    with pytest.raises(PlanError, match="two names of one kernel value"):
        backend.apply(both)
    assert _values(backend.observe()) == _values(held)


# Both names wanted with different values is no state (the spec refuses it).
_WANTED = st.lists(st.builds(Sysctl, st.sampled_from([IP_FORWARD, ALL_FORWARDING]),
                             st.sampled_from(["0", "1"])),
                   max_size=2, unique_by=lambda s: s.name).filter(
    lambda wanted: not contradicting_aliases({s.name: s.value for s in wanted}))


@given(found=st.sampled_from(["0", "1"]), steps=st.lists(_WANTED, max_size=4))
def test_both_names_always_read_one_value_and_removing_everything_gives_back_the_one_found(
        found: str, steps: list[list[Sysctl]]) -> None:
    backend = MemoryBackend(State(foreign=[Sysctl(IP_FORWARD, found)]))
    for wanted in steps:
        p = plan(backend.observe(), State(owned=wanted))
        assert backend.check(p) == ()
        backend.apply(p)
        values = {o.value for o in (*backend.state.owned, *backend.state.foreign)
                  if isinstance(o, Sysctl)}
        assert len(values) == 1, backend.state
        assert plan(backend.observe(), State(owned=wanted)).empty
    _converge(backend)
    assert {o.value for o in backend.state.foreign if isinstance(o, Sysctl)} == {found}
    assert not backend.state.owned
