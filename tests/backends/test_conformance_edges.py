"""run_conformance reaches the edge values whatever its random stages draw: a route to
each of ``EDGE_DESTINATIONS``, one in table ``2**32 - 1``, one of metric ``2**32 - 1``."""

from __future__ import annotations

import warnings

import pytest

from k3snet.backends.base import ApplyResult
from k3snet.backends.memory import MemoryBackend
from k3snet.model import Route
from k3snet.planner import Plan
from k3snet.testing import run_conformance
from k3snet.testing import strategies as ks

_MAX = 2**32 - 1


def _edges(families: tuple[int, ...]) -> set[str]:
    return {str(n) for v in families for n in ks.EDGE_DESTINATIONS[v]} | {"table", "metric"}


def _recording(seen: set[str], kinds: list[str]) -> MemoryBackend:
    class Recording(MemoryBackend):
        def apply(self, plan: Plan) -> ApplyResult:
            for change in plan.changes:
                route = change.after
                if isinstance(route, Route):
                    seen.add(str(route.destination))
                    seen.update(("table",) if route.table == _MAX else ())
                    seen.update(("metric",) if route.metric == _MAX else ())
            return super().apply(plan)

    return Recording(capabilities=kinds)


@pytest.mark.parametrize("kinds", [["route"], ["sysctl", "route", "forward", "nat"]],
                         ids=["route", "every-kind"])
def test_the_conformance_suite_adds_a_route_to_every_edge_at_any_number_of_examples(
        kinds: list[str]) -> None:
    """Drawn at random among four kinds, a run of 20 examples per stage (max_examples=
    20, as a third-party backend's tests run it) missed link-local destinations or
    ``::/128`` in five runs of six."""
    seen: set[str] = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # no foreign object: said, not judged
        run_conformance(lambda: _recording(seen, kinds), max_examples=1, max_objects=1)
    assert _edges((4, 6)) - seen == set()


def test_the_conformance_suite_adds_the_edges_its_objects_strategy_draws() -> None:
    """With ``objects=`` the edges that strategy draws are added too: here those of one
    family, and no route of the largest metric (``routes()`` draws none)."""
    seen: set[str] = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        run_conformance(lambda: _recording(seen, ["route"]), objects=ks.routes(4),
                        max_examples=1, max_objects=1)
    assert _edges((4,)) - seen == {"metric"}
