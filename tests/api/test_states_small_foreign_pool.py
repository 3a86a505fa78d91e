"""``states(min_foreign=N)`` of a foreign pool of few distinct objects."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

import k3snet.testing.strategies as ks
from k3snet import Route, State
from tests.examples import examples

_ONE_FOREIGN = Route("10.99.0.0/16", device="eth0", protocol=4)


@settings(deadline=None, max_examples=examples(50))
@given(ks.states(ks.routes(4, devices=("eth0",), destinations=st.just(
    ks.EDGE_DESTINATIONS[4][0])), foreign=st.sampled_from([_ONE_FOREIGN]), min_owned=1,
    min_foreign=1, max_foreign=1))
def test_states_of_a_foreign_pool_of_exactly_min_foreign_objects_draw_them(
        state: State) -> None:
    """A foreign pool of one object, min_foreign=1, owned objects beside it: the foreign
    list was drawn as long as the owned objects took keys (two), which hypothesis refuses
    for a pool of one (InvalidArgument) where the one object fits."""
    assert state.owned
    assert state.foreign == frozenset({_ONE_FOREIGN})
