"""run_conformance reaches the edge values whatever its random stages draw: a route to
each of ``EDGE_DESTINATIONS``, one in table ``2**32 - 1``, one of metric ``2**32 - 1``."""

from __future__ import annotations

import threading
import warnings
from typing import Any, cast

import pytest
from hypothesis import strategies as st

from k3snet.backends.base import ApplyResult, Backend
from k3snet.backends.memory import MemoryBackend
from k3snet.model import NetObject, Route, State
from k3snet.planner import Change, Plan, plan
from k3snet.testing import conformance, run_conformance
from k3snet.testing import strategies as ks
from tests.edge_examples import edge_routes

# A strategy drawing nothing, for the scan cache's keys alone (never drawn from).
_NOTHING = cast("st.SearchStrategy[NetObject]", st.none())

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


def test_the_default_edges_are_routes_on_eth0_whatever_hypothesis_draws() -> None:
    """The default pool's edges were the first routes a scan of 5000 draws met (about
    four seconds at the first run of each process, each pytest-xdist worker's), other
    routes under another hypothesis version; they are made, the same everywhere."""
    added: list[Route] = []

    class Recording(MemoryBackend):
        def apply(self, plan: Plan) -> ApplyResult:
            added.extend(c.after for c in plan.changes
                         if isinstance(c.after, Route) and c.before is None)
            return super().apply(plan)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        run_conformance(lambda: Recording(capabilities=["route"]), max_examples=1,
                        max_objects=1)
    edges = edge_routes()[:-1]  # the last: in the largest table, of the largest metric
    first = edges[0].destination
    edges += [Route(first, device="eth0", table=_MAX), Route(first, device="eth0", metric=_MAX)]
    assert added[-len(edges):] == edges


def test_an_objects_strategy_is_scanned_for_its_edges_once_per_process(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``objects=`` each run scanned up to 1000 draws of it again (a run of
    ``max_examples=20`` took ten times as long as without the scan); a suite running
    the conformance suite from many tests on one strategy object scans it once, and
    each run is given that scan's edges. (The scan is stood in for: a real one, some
    1000 draws, cost this test five seconds of CPU; that a scan of the same strategy
    gives the same edges is the next test's.)"""
    scans: list[frozenset[str]] = []
    edges = [[Route("192.0.2.0/24", device="eth0")]]

    def scan(kinds: frozenset[str], pool: object) -> list[list[NetObject]]:
        scans.append(kinds)
        return cast("list[list[NetObject]]", edges)

    given: list[list[NetObject]] = []
    round_trips = conformance._edge_round_trips

    def recorded(backend: Backend, baseline: State, edges: list[NetObject],
                 **kwargs: Any) -> None:
        given.append(edges)
        round_trips(backend, baseline, edges, **kwargs)

    monkeypatch.setattr(conformance, "_edge_objects", scan)
    monkeypatch.setattr(conformance, "_edge_round_trips", recorded)
    objects = ks.routes(4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(2):
            run_conformance(lambda: MemoryBackend(capabilities=["route"]), objects=objects,
                            max_examples=1, max_objects=1)
    assert scans == [frozenset({"route"})]
    assert given == [edges[0], edges[0]]


def test_a_scan_of_fixed_seed_gives_the_same_edges_at_each_run() -> None:
    """What makes one scan per strategy object enough: a scan of the same strategy (a
    new object of the same definition here, as each run would make) gives the same
    edges again. Fewer draws than a run's scan, the same seed and draw."""
    kinds = frozenset({"route"})
    first = conformance._edge_objects(kinds, ks.routes(4), scan=200)
    assert first  # edges met within the scan: the comparison is not of two empty ones
    assert conformance._edge_objects(kinds, ks.routes(4), scan=200) == first


def test_two_threads_evicting_the_same_oldest_scan_at_once_both_finish(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache of scans keeps the last 16: a thread inserting the 17th picked the
    oldest to evict while another, inserting too, evicted that same one first, and the
    first thread's ``del`` raised KeyError out of ``run_conformance``. The interleaving
    is forced: the first thread's eviction waits until the second one has run through
    (no lock: it evicts the same entry) or waits for the lock the first holds."""
    monkeypatch.setattr(conformance, "_edge_objects", lambda kinds, pool: [])
    second_waits = threading.Event()
    started: list[threading.Thread] = []
    errors: list[BaseException] = []

    def second() -> None:
        try:
            conformance._scanned_edge_objects(_NOTHING, frozenset({"route"}), _NOTHING)
        except BaseException as exc:  # noqa: BLE001 - said by the assertion below
            errors.append(exc)
        finally:
            second_waits.set()

    class Racing(dict[Any, Any]):
        def __delitem__(self, key: Any) -> None:
            if not started:  # the first thread, its oldest entry chosen
                started.append(threading.Thread(target=second))
                started[0].start()
                second_waits.wait()
            super().__delitem__(key)

    class Told:
        """The cache's lock, telling when the second thread waits for it."""

        def __init__(self) -> None:
            self.lock = threading.Lock()

        def __enter__(self) -> None:
            if started and threading.current_thread() is started[0]:
                second_waits.set()
            self.lock.acquire()

        def __exit__(self, *exc: object) -> None:
            self.lock.release()

    full = Racing({index: (st.none(), frozenset(), []) for index in range(16)})
    monkeypatch.setattr(conformance, "_SCANNED", full)
    monkeypatch.setattr(conformance, "_SCANNED_LOCK", Told(), raising=False)
    conformance._scanned_edge_objects(_NOTHING, frozenset({"route"}), _NOTHING)
    started[0].join()
    assert errors == []
    assert len(full) == 16


def test_the_default_edges_are_added_beside_a_nodes_default_and_link_local_routes() -> None:
    """The default edges were made in the main table, the largest metric to
    ``0.0.0.0/0``: beside a node's own default routes and ``fe80::/64`` (a lab namespace
    or a node with a network) each of those was a conflict the planner left out, and the
    suite passed without ever adding a route to ``fe80::/64`` or one of the largest
    metric."""
    seen: set[str] = set()
    found = State(foreign=[Route("0.0.0.0/0", gateway="192.168.1.1", device="eth0"),
                           Route("::/0", gateway="fe80::1", device="eth0"),
                           Route("fe80::/64", device="eth0", metric=256),
                           Route("169.254.0.0/16", device="eth0", metric=1000)])

    class Recording(MemoryBackend):
        def apply(self, plan: Plan) -> ApplyResult:
            for change in plan.changes:
                route = change.after
                if isinstance(route, Route):
                    seen.add(str(route.destination))
                    seen.update(("table",) if route.table == _MAX else ())
                    seen.update(("metric",) if route.metric == _MAX else ())
            return super().apply(plan)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        run_conformance(lambda: Recording(found, capabilities=["route"]), max_examples=1,
                        max_objects=1)
    assert _edges((4, 6)) - seen == set()



def test_an_objects_strategys_edges_are_those_it_draws_that_are_added_beside_the_state_found(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``objects=`` each edge was the first route the scan met, whatever the system
    holds: the first to ``0.0.0.0/0``, ``::/0`` or ``fe80::/64`` in the main table was a
    conflict beside the system's own route there, left out of the plan (the suite passed
    without it, though the strategy draws such routes in other tables too)."""
    found = State(foreign=[Route("0.0.0.0/0", gateway="192.168.1.1", device="eth0"),
                           Route("::/0", gateway="fe80::1", device="eth0"),
                           Route("fe80::/64", device="eth0", metric=256)])
    objects = ks.routes(devices=("eth0",), tables=(254, 1000, _MAX),
                        metrics=(None, 0, _MAX))
    given: list[list[NetObject]] = []
    round_trips = conformance._edge_round_trips

    def recorded(backend: Backend, baseline: State, edges: list[NetObject],
                 **kwargs: Any) -> None:
        given.append(edges)
        round_trips(backend, baseline, edges, **kwargs)

    monkeypatch.setattr(conformance, "_edge_round_trips", recorded)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        run_conformance(lambda: MemoryBackend(found, capabilities=["route"]),
                        objects=objects, max_examples=1, max_objects=1)
    [edges] = given
    conflicts = [edge for edge in edges
                 if plan(found, State(owned=[edge])).changes != (Change.add(edge),)]
    assert conflicts == []
    reached = {str(e.destination) for e in edges if isinstance(e, Route)}
    reached |= {"table" for e in edges if isinstance(e, Route) and e.table == _MAX}
    reached |= {"metric" for e in edges if isinstance(e, Route) and e.metric == _MAX}
    assert _edges((4, 6)) - reached == set()
