"""A ready conformance suite for backends, the memory backend's and yours.

Call it from your own test suite::

    from k3snet.testing import run_conformance

    def test_my_backend_conforms():
        run_conformance(lambda: MyBackend(...))

It checks the contract of :mod:`k3snet.backends.base` with random plans:

1. the backend satisfies the :class:`~k3snet.backends.Backend` protocol and a
   fresh one owns nothing; ``observe`` reports objects of its own kinds only;
2. ``check`` returns a tuple and changes nothing; ``apply`` applies exactly the
   plan's changes and ``observe`` afterwards equals the plan's target (soundness
   on a real system); an ``ApplyResult.undo`` it hands back takes the apply back
   exactly and returns the inverse changes, last first;
3. planning again right after an apply gives an empty plan (idempotence); the
   optional hints change no result: ``expect(state)`` is called before
   observing, as ``converge`` does, and once with a wrong state,
   ``expect_leaving(rules)`` once with forward rules, and ``prefetch()`` is called
   before an ``observe``;
4. a second random desired state is reached from the first (replace and delete
   paths), and removing everything leaves the foreign state as it was found; the
   objects drawn include some beside the foreign ones found (a route to a foreign
   route's destination in another table, rules of a foreign rule's source), and each
   of those is also added alone and removed, so a backend deleting or reading objects
   by fewer fields than they have fails on every run;
5. plans with kinds outside ``capabilities``, deleting or replacing objects the
   backend does not own (the first three foreign ones found of each kind), adding
   a route into the slot a foreign route holds, or stale
   (adding an object already there, deleting or replacing one already gone,
   also as the second change of a plan whose first one fits) are refused by ``check`` and
   ``apply`` and change nothing;
6. all or nothing: for random plans (of two or more changes where the backend can
   hold two objects), a failure injected
   through the backend's :class:`~k3snet.backends.kit.FaultHook` (``backend.faults``)
   at *every* position raises :class:`~k3snet.errors.ApplyError` and leaves
   ``observe()`` exactly as before (the sysctls' recorded ``previous`` values too,
   which ``==`` does not compare), and removing everything afterwards gives back
   the state found. The error says what happened: ``failed`` is the change the
   failure was injected at (or ``None``), ``done`` the plan's changes made before it
   and ``rolled_back`` their inverses, last first (both empty for a transaction).
   A backend without a fault hook, or one that
   ignores it, or one that does not roll back, fails here; one that looks at the
   hook only before its first step (a multi-step backend should fail where the
   system would, at step ``i``) passes without its rollback ever running.

7. lifecycle: ``with backend as b`` gives the backend itself and closes it (its
   ``__exit__`` calls ``close()``), and closing it again is harmless.
8. with ``reopen=``: another backend on the same system (the next process's)
   observes, after every apply, failed or not, what the one that applied does; and
   when that other backend changes the system, the first one observes the change.
9. with ``store=``: the system holds, beside what ``observe()`` reports (each object
   once), exactly what it held beside it when found, after every apply, refused,
   failed or made: a store that gains a second copy of an object, drops or rewrites
   an entry of a kind outside ``capabilities`` or another program's, or an
   ``observe()`` reporting an object the system does not hold, fails.
10. the optional ``change_token()`` (:meth:`k3snet.backends.kit.BackendBase.change_token`)
   moves whenever what ``observe()`` reports changed, by the backend's own apply or
   (with ``reopen=``) another's; ``None`` says it cannot tell.

With no foreign object of its kinds in the system ``factory()``'s backend sees, the
checks of 4 and 5 about other programs' objects have nothing to work on: a
:class:`UserWarning` says so. Whether ``done`` is complete 6 cannot check
(``observe()`` after a rollback reports what it did before, whatever was made and
undone); a backend with a change token that, at a failure after a plan's first change,
says nothing was made while its token moved (twice, the failing apply tried again)
gets a :class:`UserWarning` (a token may move when nothing changed, so it fails
nothing).

By default the objects drawn include the values a backend's own encoding gets
wrong: tables above 255 and the largest, the largest metric, default and host
routes of both families, interface names with capitals, punctuation and 15 bytes.
Drawn at random, a run of a few examples missed some of them; so after the random
stages, a route to each of :data:`k3snet.testing.strategies.EDGE_DESTINATIONS`, one in
table ``2**32 - 1`` and one of metric ``2**32 - 1`` are each added alone and removed:
by default routes on ``eth0`` (in another table where the system's own routes make one
in the main table a conflict); with ``objects``, the first that strategy draws in a scan
of fixed seed that the system's own routes leave room for (one it does not draw is left
out), made once per strategy object and
kinds in a process (a scan costs a second or two: give one strategy object to many
runs).

Failures raise ``AssertionError`` with the example that broke, shrunk by hypothesis
(without its explain phase: docs/custom-backend.md).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import ipaddress
import threading
import warnings
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Flaky
from hypothesis.strategies import SearchStrategy

from k3snet.backends.base import Backend
from k3snet.backends.kit import BackendBase, FaultHook
from k3snet.errors import ApplyError, K3snetError, ModelError, RollbackError
from k3snet.model import Drift, NetObject
from k3snet.model.forward import ForwardRule
from k3snet.model.nat import MasqueradeRule, SnatRule
from k3snet.model.route import Route, RouteBlock
from k3snet.model.state import State, known_kinds
from k3snet.model.sysctl import Sysctl
from k3snet.planner import Change, Plan, plan
from k3snet.testing import strategies

__all__ = ["run_conformance"]

_ONE_OF_EACH: tuple[NetObject, ...] = (
    Sysctl("net.ipv4.ip_forward", "1"),
    Route("198.51.100.0/24", device="eth0"),
    ForwardRule("10.42.0.0/16", "198.51.100.0/24"),
    MasqueradeRule("10.42.0.0/16", destination="198.51.100.0/24"),
)


def run_conformance(
    factory: Callable[[], Backend],
    *,
    objects: SearchStrategy[NetObject] | None = None,
    max_examples: int | None = None,
    max_objects: int = 8,
    reopen: Callable[[Backend], Backend] | None = None,
    store: Callable[[Backend], Iterable[NetObject]] | None = None,
) -> None:
    """Run the backend conformance suite against backends made by ``factory``.

    ``factory()`` must return a backend that owns nothing yet (it may see foreign
    state). ``objects`` draws objects the backend can really hold (for a kernel
    backend: routes on devices that exist); by default, any object of the
    backend's kinds among sysctl, route, forward and nat (a backend of other
    kinds only must pass ``objects``). ``max_examples`` is per stage; by default a tenth of the
    active hypothesis profile's ``max_examples`` (at least 10), so a thorough
    profile runs a thorough conformance suite. The backend is closed at the end.

    ``reopen(backend)`` makes another backend on the same system, as the next process
    would (``lambda b: JsonFileBackend(b.path)``). When given, after every apply, failed
    or not, the other backend must observe what ``backend`` does, the values its sysctls
    recorded too: what a backend owns is read from the system (or a file of its own),
    not remembered by the instance, since each ``k3snet apply`` is a new process. And
    when the other backend changes the system, ``backend`` must observe the change (the
    agent's backend lives from pass to pass, beside ``k3snet apply`` runs).

    ``store(backend)`` gives every object the system under ``backend`` holds, of every
    kind and whoever wrote it, each as many times as it is held (a file's entries, read
    apart from the backend: ``lambda b: [object_from_dict(e["object"]) for e in
    json.loads(b.path.read_text())]``). When given, the suite checks the system beyond
    what ``observe()`` can report: after every apply, made, refused or failed, the store
    holds each object ``observe()`` reports once, and beside them exactly what it held
    beside them when found (other kinds, other programs' and backends' entries, copies).
    """
    if max_examples is None:
        max_examples = max(10, settings().max_examples // 10)
    backend = factory()
    lifecycle_checked = False
    try:
        _check_protocol(backend)
        baseline = backend.observe()
        watch = _store_watch(backend, store, baseline)
        beside = _beside_foreign(backend, baseline, default_pool=objects is None)
        pool = (objects.map(functools.partial(_managed, backend)) if objects is not None
                else _default_objects(backend))
        edges = (list(dict.fromkeys(
                     edge for candidates in _scanned_edge_objects(objects,
                                                                  backend.capabilities, pool)
                     for edge in _first_added(baseline, candidates)))
                 if objects is not None
                 else _default_edge_objects(backend.capabilities, baseline))
        if beside:
            pool = st.one_of(pool, st.sampled_from(beside))
        _check_kinds(backend, baseline)
        assert not baseline.owned, f"a fresh {backend.name} backend owns {sorted(baseline.owned)}"
        _warn_of_unseen_foreign(backend, baseline)
        _check_refusals(backend, baseline, watch)
        converge = functools.partial(_converge, reopen=reopen, watch=watch)
        _beside_round_trips(backend, baseline, beside, converge=converge)
        _random_round_trips(backend, baseline, pool, max_examples, max_objects,
                            converge=converge, reopen=reopen, watch=watch)
        _all_or_nothing(backend, baseline, pool, max_examples, max_objects,
                        converge=converge, reopen=reopen, watch=watch)
        _edge_round_trips(backend, baseline, edges, converge=converge)
        lifecycle_checked = True  # it closes the backend, whatever it finds
        _check_lifecycle(backend)
    finally:
        if not lifecycle_checked:
            backend.close()


Watch = Callable[[State, str], None]
"""``(observed, after) -> None``: the store check of ``store=`` (:func:`_store_watch`)."""


def _no_store(observed: State, after: str) -> None:
    """No ``store=``: nothing beyond ``observe()`` to check."""


def _store_watch(backend: Backend, store: Callable[[Backend], Iterable[NetObject]] | None,
                 baseline: State) -> Watch:
    """The check of ``store=``: the objects the store holds beside what ``observe()``
    reports (each once) stay those found beside it, as many times each.

    ``observe()`` gives a :class:`~k3snet.State`, each object once, of the backend's
    kinds: a store appending a second copy of what it keeps, or rewriting without the
    entries of other kinds (or other programs' and backends'), read back as the plan's
    target and passed; so did an ``observe()`` reporting what the store never held.
    """
    if store is None:
        return _no_store

    def visible(state: State) -> collections.Counter[NetObject]:
        return collections.Counter([*state.owned, *state.foreign])

    found = collections.Counter(store(backend))
    invented = visible(baseline) - found
    assert not invented, (
        f"observe() of {backend.name} reports objects store= does not hold (objects it does "
        "not manage, or a store= that does not read the backend's system):\n"
        + "".join(f"  {o}\n" for o in sorted(invented)))
    hidden = found - visible(baseline)

    def watch(observed: State, after: str) -> None:
        held = collections.Counter(store(backend))
        expected = hidden + visible(observed)
        if held == expected:
            return
        lines = [f"  {o}: held {held[o]} time(s), expected {expected[o]}"
                 for o in sorted(held.keys() | expected.keys()) if held[o] != expected[o]]
        raise AssertionError(
            f"after {after}, the store of {backend.name} (store=) holds otherwise than what "
            "observe() reports, once each, and what it held beside that when found (another "
            "kind's or another program's entries dropped or rewritten, an object held twice, "
            "or one reported that is not held):\n" + "\n".join(lines[:10]))

    return watch


def _warn_of_unseen_foreign(backend: Backend, baseline: State) -> None:
    """A :class:`UserWarning` when ``factory()``'s system holds no foreign object of the
    backend's kinds: the promises about other programs' objects (never changed, deleted
    or replaced; objects beside them told apart) go unchecked, and a suite run on an
    empty system (a new file, an empty namespace) passed without a word of it."""
    if not any(o.kind in backend.capabilities for o in baseline.foreign):
        warnings.warn(
            f"run_conformance: {backend.name} found no foreign object (of kind "
            f"{', '.join(sorted(backend.capabilities))}): that it never changes, deletes "
            "or replaces another program's objects is not checked; give factory() a "
            "system that holds some (docs/custom-backend.md)", UserWarning, stacklevel=3)


def _managed(backend: Backend, obj: NetObject) -> NetObject:
    """``obj``, drawn by the caller's ``objects=``, if ``backend`` manages its kind: else the
    strategy is at fault, not the backend (which rightly refuses such a plan)."""
    if obj.kind not in backend.capabilities:
        raise ModelError(
            f"objects= drew {obj} of kind {obj.kind}, which {backend.name} does not manage "
            f"({', '.join(sorted(backend.capabilities))}); pass a strategy of its kinds only")
    return obj


def _check_lifecycle(backend: Backend) -> None:
    """``with backend as b`` gives the backend and closes it; a second close is harmless."""
    closes: list[None] = []
    close = backend.close

    def counting() -> None:
        closes.append(None)
        close()

    try:
        # An instance attribute: __exit__'s self.close() finds it before the method.
        backend.close = counting  # type: ignore[method-assign]
    except AttributeError:  # __slots__: whether __exit__ closes is not seen
        closes.append(None)
    try:
        with backend as entered:
            assert entered is backend, (
                f"`with backend as b` must give the backend itself, not {entered!r}")
    finally:
        with contextlib.suppress(AttributeError):
            del backend.close
    if not closes:
        backend.close()
        raise AssertionError(f"leaving `with backend:` did not close it ({backend.name}"
                             ".__exit__ never called close())")
    try:
        backend.close()
    except Exception as exc:
        raise AssertionError(f"a second close() of {backend.name} raised {exc!r}: close() "
                             "must be idempotent") from exc


_DRAWN_KINDS = ("sysctl", "route", "forward", "nat")
"""The kinds :func:`k3snet.testing.strategies.objects` draws (the node's)."""


def _default_objects(backend: Backend) -> SearchStrategy[NetObject]:
    """Objects of the backend's kinds that the strategies can draw."""
    kinds = [k for k in _DRAWN_KINDS if k in backend.capabilities]
    if not kinds:
        raise ModelError(
            f"run_conformance has no default objects for kinds "
            f"{', '.join(sorted(backend.capabilities))}; pass objects=, a strategy of "
            f"objects {backend.name} can hold (it draws {', '.join(_DRAWN_KINDS)} by default)")
    return _default_pool(kinds)


def _default_pool(kinds: Iterable[str]) -> SearchStrategy[NetObject]:
    drawn = [k for k in _DRAWN_KINDS if k in kinds]
    return st.one_of(strategies.objects(drawn), *(_EDGES[kind] for kind in drawn))


def _beside_round_trips(backend: Backend, baseline: State, beside: list[NetObject], *,
                        converge: Callable[[Backend, State], None]) -> None:
    """Each object beside a foreign one (:func:`_beside_foreign`) added alone, then
    removed: the foreign state must stay as found at each step.

    The random round trips draw these objects too, but only now and then, and a backend
    deleting "the route to 192.0.2.0/24" by its destination alone passed a run of the
    suite about one time in three (the test of that broken backend failed at random).
    """
    for obj in beside:
        try:
            converge(backend, State(owned=[obj]))
            converge(backend, State())
            final = backend.observe()
            assert final == baseline, (
                f"after adding {obj} beside the foreign objects found and removing it, "
                f"the state differs from the one found:\n{_diff(baseline, final)}")
        finally:
            _reset(backend)


def _edge_round_trips(backend: Backend, baseline: State, edges: list[NetObject], *,
                      converge: Callable[[Backend, State], None]) -> None:
    """Each object of ``edges`` (:func:`_edge_objects`) added alone, then removed,
    whatever the random stages go on to draw."""
    for obj in edges:
        try:
            converge(backend, State(owned=[obj]))
            converge(backend, State())
            final = backend.observe()
            assert final == baseline, (
                f"after adding {obj} (an edge value) and removing it, the state differs "
                f"from the one found:\n{_diff(baseline, final)}")
        finally:
            _reset(backend)


def _is_route_to(destination: object, obj: NetObject) -> bool:
    return isinstance(obj, Route) and obj.destination == destination


class _AllFound(Exception):  # noqa: N818 - a signal to stop the scan, not an error
    pass


def _default_edge_objects(kinds: Iterable[str], baseline: State) -> list[NetObject]:
    """The edges of the default pool of a backend of ``kinds``, made, not drawn: a route
    on ``eth0`` to each of :data:`~k3snet.testing.strategies.EDGE_DESTINATIONS`, one in
    the largest table, one of the largest metric (the default pool draws each).

    Scanned out of the pool (5000 draws for the four kinds, to meet ``::/128``), they cost
    the first ``run_conformance`` of each process (each pytest-xdist worker) about four
    seconds, and were other routes under another hypothesis version.

    Each is one the planner adds beside ``baseline`` (the state found): a route in the
    main table to a destination a foreign route there holds is a conflict, never added,
    so a system's own default routes and ``fe80::/64`` (a lab namespace's, a node's) left
    those edges and the largest metric (made to ``0.0.0.0/0``) out, and the suite passed.
    Such an edge is made in another table, the largest metric to another destination."""
    if "route" not in kinds:
        return []
    destinations = [net for version in (4, 6) for net in strategies.EDGE_DESTINATIONS[version]]
    edges = [edge for net in destinations
             for edge in _first_added(baseline, [Route(net, device="eth0", table=table)
                                                 for table in _EDGE_TABLES])]
    edges += _first_added(baseline, [Route(net, device="eth0", table=2**32 - 1)
                                     for net in destinations])
    edges += _first_added(baseline, [Route(net, device="eth0", table=table, metric=2**32 - 1)
                                     for table in _EDGE_TABLES[:2] for net in destinations])
    return list(dict.fromkeys(edges))


def _first_added(baseline: State, candidates: list[NetObject]) -> list[NetObject]:
    """The first of ``candidates`` (objects meeting one edge) that the planner adds alone
    beside ``baseline``, the state found: one in conflict with a foreign object (a route to
    its destination in its table) is left out of the plan, and its edge was never added
    while the suite passed. The first candidate when none is (planned as before)."""
    for candidate in candidates:
        with contextlib.suppress(K3snetError):
            if plan(baseline, State(owned=[candidate])).changes == (Change.add(candidate),):
                return [candidate]
    return candidates[:1]


_EDGE_TABLES = (254, 1000, 2**32 - 1)
"""The tables a default edge route is made in: the main one, or another where the main
one holds a foreign route to its destination."""


_SCANNED: dict[int, tuple[SearchStrategy[NetObject], frozenset[str],
                          list[list[NetObject]]]] = {}
""":func:`_edge_objects` of each ``objects=`` strategy (by identity, kept alive so its id
is not reused) and backend kinds, the last few."""
_SCANNED_LOCK = threading.Lock()
"""Held while :data:`_SCANNED` is read or changed (not while a scan runs): suites run in
threads each insert and evict, and two evicting the same oldest entry raised KeyError."""


def _scanned_edge_objects(objects: SearchStrategy[NetObject], kinds: frozenset[str],
                          pool: SearchStrategy[NetObject]) -> list[list[NetObject]]:
    """:func:`_edge_objects` of ``pool`` (``objects`` mapped), scanned once per
    ``objects`` strategy and kinds: a scan costs a second or two, and a third-party suite
    runs ``run_conformance`` on one module-level strategy from many tests."""
    with _SCANNED_LOCK:
        kept = _SCANNED.get(id(objects))
    if kept is not None and kept[0] is objects and kept[1] == kinds:
        return kept[2]
    edges = _edge_objects(kinds, pool)  # unlocked: another thread's scan runs meanwhile
    with _SCANNED_LOCK:
        _SCANNED[id(objects)] = (objects, kinds, edges)
        while len(_SCANNED) > 16:
            del _SCANNED[next(iter(_SCANNED))]
    return edges


def _edge_objects(kinds: Iterable[str], pool: SearchStrategy[NetObject], *,
                  scan: int = 1000) -> list[list[NetObject]]:
    """The first objects ``pool`` draws for each edge of the backend's kinds (the route
    edges: :data:`~k3snet.testing.strategies.EDGE_DESTINATIONS`, the largest table and
    metric), up to :data:`_EDGE_CANDIDATES` of other tables or destinations (each run
    adds the first the system's own routes leave room for: :func:`_first_added`), in a
    scan of ``scan`` draws at most, of fixed seed (the same objects at each run); an edge
    ``pool`` does not draw within the scan is left out (``objects=`` narrower than the
    edges: routes of one family, or with a kernel's own bounds)."""
    if "route" not in kinds:
        return []
    wanted: list[Callable[[NetObject], bool]] = [
        functools.partial(_is_route_to, net)
        for version in (4, 6) for net in strategies.EDGE_DESTINATIONS[version]]
    wanted += [lambda o: isinstance(o, Route) and o.table == 2**32 - 1,
               lambda o: isinstance(o, Route) and o.metric == 2**32 - 1]
    found: dict[int, dict[Hashable, NetObject]] = {}

    @seed(0)
    @settings(max_examples=scan, deadline=None, database=None,
              phases=(Phase.generate,), suppress_health_check=list(HealthCheck))
    @given(pool)
    def draw(obj: NetObject) -> None:
        for index, condition in enumerate(wanted):
            held = found.setdefault(index, {})
            if len(held) < _EDGE_CANDIDATES and condition(obj):
                # Another table or destination: one the same foreign route conflicts with
                # would be no other choice.
                held.setdefault(obj.clash_key if isinstance(obj, Route) else obj, obj)
        if all(len(found.get(i, ())) == _EDGE_CANDIDATES for i in range(len(wanted))):
            raise _AllFound

    with contextlib.suppress(_AllFound):
        draw()
    return [list(found[i].values()) for i in sorted(found) if found[i]]


_EDGE_CANDIDATES = 4
"""The objects kept for each edge in the scan of an ``objects=`` strategy."""


# A destination and SNAT address of each family that the objects beside a foreign one use.
_ELSEWHERE = {4: ("203.0.113.0/24", "192.0.2.77"), 6: ("2001:db8:ffff::/48", "2001:db8::77")}


def _beside_foreign(backend: Backend, baseline: State, *, default_pool: bool
                    ) -> list[NetObject]:
    """Objects k3snet may own next to the foreign ones found, sharing what a careless
    backend matches them by: a route to a foreign route's destination in another table,
    NAT and forward rules of a foreign rule's source, a foreign sysctl's parameter with
    another value (taken over, given back when deleted).

    Random objects almost never share a foreign object's destination or source, so a
    backend that deletes "the route to 192.0.2.0/24" (``ip route del`` without table,
    metric and protocol takes the first one it finds), a NAT rule by its source alone, or
    that reads a foreign object over its own one passed. Each is kept only if the planner
    makes it one add, without conflict, beside the foreign state found. A route goes
    through the foreign route's own device and gateway, which the system has (with
    ``objects=``, no route is made beside a route k3snet cannot model: it has no device).
    """
    candidates: list[NetObject] = []
    for found in _first_of_each_kind(baseline.foreign, 3):
        with contextlib.suppress(K3snetError):  # a value a neighbour cannot take
            candidates += _neighbours(found, default_pool=default_pool)
    disruptive = getattr(backend, "disruptive", None)
    if getattr(backend, "allow_disruptive", False):
        disruptive = None
    beside: list[NetObject] = []
    for candidate in candidates:
        if candidate.kind not in backend.capabilities or candidate in beside:
            continue
        if disruptive is not None and disruptive(Change.add(candidate)):
            continue  # refused unless allowed, rightly
        with contextlib.suppress(K3snetError):
            p = plan(baseline, State(owned=[candidate]))
            if p.changes == (Change.add(candidate),) and not p.conflicts:
                beside.append(candidate)
    return beside


def _neighbours(found: NetObject, *, default_pool: bool) -> list[NetObject]:
    """The objects of :func:`_beside_foreign` next to the foreign ``found``."""
    if isinstance(found, Route):
        other_table = 100 if found.table == 254 else 254
        return [Route(found.destination, gateway=found.gateway, device=found.device,
                      table=other_table)]
    if isinstance(found, RouteBlock):
        other_table = 100 if found.table == 254 else 254
        return [Route(found.destination, device="eth0", table=other_table)] if default_pool else []
    if isinstance(found, Sysctl):
        return [Sysctl(found.name, "1" if found.value != "1" else "0")]
    source = getattr(found, "source", None)  # a NatBlock's or ForwardBlock's too
    if found.kind in ("nat", "forward") and isinstance(
            source, ipaddress.IPv4Network | ipaddress.IPv6Network):
        destination, address = _ELSEWHERE[source.version]
        return [SnatRule(source, destination=destination, to_address=address),
                MasqueradeRule(source, out_interface="eth0"), ForwardRule(source, destination)]
    return []


# Values a backend's own encoding gets wrong, which the strategies' small default pools
# (tables 254 and 100, prefixes /8 and longer, devices eth0, eth1, cni0) never draw: a
# table above 255 (rtm_table is one byte, RTA_TABLE holds the rest) and the largest, the
# largest metric, default routes and host routes of both families, interface names with
# capitals (Linux names are case-sensitive), every punctuation k3snet takes, and 15 bytes.
_EDGE_DEVICES: tuple[str, ...] = ("eth0", "WAN.100@bond0", "br-lan_2+x", "abcdefghijklmno")
_EDGE_NETWORKS = st.one_of(strategies.networks(), st.sampled_from([
    ipaddress.ip_network(n) for n in ("0.0.0.0/0", "::/0", "255.255.255.255/32",
                                      "198.51.100.7/32", "2001:db8::1/128",
                                      "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128")]))
_EDGES: dict[str, SearchStrategy[NetObject]] = {
    "route": strategies.routes(destinations=_EDGE_NETWORKS, devices=_EDGE_DEVICES,
                               tables=(254, 256, 1000, 2**32 - 1),
                               metrics=(None, 0, 2**32 - 1)),
    "forward": strategies.forward_rules(sources=_EDGE_NETWORKS, destinations=_EDGE_NETWORKS,
                                        devices=(None, *_EDGE_DEVICES)),
    "nat": strategies.nat_rules(sources=_EDGE_NETWORKS, devices=(None, *_EDGE_DEVICES)),
    "sysctl": strategies.sysctls(names=("net.ipv4.conf.WAN_1.rp_filter",
                                        "net.ipv6.conf.all.forwarding"),
                                 values=("0", "1", "2")),
}


_PROTOCOL = ("name", "capabilities", "observe", "check", "apply", "close", "__enter__",
             "__exit__")
"""The members of :class:`~k3snet.backends.Backend`, named when one is missing."""


def _check_protocol(backend: Any) -> None:
    missing = [f"{member}()" if member not in ("name", "capabilities") else member
               for member in _PROTOCOL if not hasattr(backend, member)]
    assert not missing, (
        f"{backend!r} does not implement the Backend protocol: no {', no '.join(missing)} "
        "(see k3snet.backends.Backend)")
    assert isinstance(backend, Backend), f"{backend!r} does not implement the Backend protocol"
    assert isinstance(backend.name, str), "backend.name must be a str"
    assert backend.name, "backend.name must not be empty"
    caps = backend.capabilities
    assert isinstance(caps, frozenset), "backend.capabilities must be a frozenset"
    assert caps, "backend.capabilities must not be empty"
    unknown = caps - set(known_kinds())
    assert not unknown, f"capabilities name unregistered kinds: {sorted(unknown)}"
    if isinstance(backend, BackendBase) and not hasattr(backend, "faults"):
        raise AssertionError(
            f"{backend.name} has no fault hook: {type(backend).__name__}.__init__ never "
            "called super().__init__(), which gives it (and the rest of BackendBase's state)")
    assert isinstance(getattr(backend, "faults", None), FaultHook), (
        f"{backend.name} has no fault hook: give it a k3snet.backends.kit.FaultHook as "
        "`faults` (BackendBase does) and honour it in apply, so the suite can prove that "
        "a failed apply leaves the system as it was"
    )


def _check_refusals(backend: Backend, baseline: State, watch: Watch) -> None:
    """Plans the backend must refuse without changing anything."""
    strangers = [o for o in _ONE_OF_EACH if o.kind not in backend.capabilities]
    if strangers:
        stranger = strangers[0]
        _expect_refusal(backend, baseline, Plan(changes=[Change.add(stranger)]),
                        f"a plan adding {stranger} (kind {stranger.kind} not in capabilities)",
                        watch)
    # The first three of each kind: of the first three of all, a node's sysctls and
    # routes (which sort first) left its NAT and forward rules untried.
    for foreign in _first_of_each_kind(baseline.foreign, 3):
        if foreign.kind in backend.capabilities:
            _expect_refusal(backend, baseline, Plan(changes=[Change.delete(foreign)]),
                            f"a plan deleting the foreign {foreign}", watch)
            _expect_refusal(backend, baseline, Plan(changes=[Change.replace(foreign, foreign)]),
                            f"a plan replacing the foreign {foreign}", watch)
    # A kernel holds one route a slot (table, destination, metric): an add where a
    # foreign route stands is refused, or (NLM_F_REPLACE) it takes the foreign one's place.
    if "route" in backend.capabilities:
        standing = [o for o in sorted(baseline.foreign) if isinstance(o, Route | RouteBlock)]
        for foreign_route in standing[:3]:
            mine = Route(foreign_route.destination, device="eth0", table=foreign_route.table,
                         metric=foreign_route.metric)
            _expect_refusal(backend, baseline, Plan(changes=[Change.add(mine)]),
                            f"a plan adding {mine} into the slot (table, destination, "
                            f"metric) of the foreign {foreign_route.describe()}", watch)


def _first_of_each_kind(objects: frozenset[NetObject], count: int) -> list[NetObject]:
    """The first ``count`` objects of each kind among ``objects``, in order."""
    kinds: dict[str, int] = {}
    first = []
    for obj in sorted(objects):
        kinds[obj.kind] = kinds.get(obj.kind, 0) + 1
        if kinds[obj.kind] <= count:
            first.append(obj)
    return first


def _expect_refusal(backend: Backend, baseline: State, bad: Plan, what: str,
                    watch: Watch = _no_store) -> None:
    assert _checked(backend, bad), f"check() found no problem with {what}"
    try:
        backend.apply(bad)
    except K3snetError:
        pass
    else:
        raise AssertionError(f"apply() accepted {what}")
    after = backend.observe()
    assert after == baseline, f"refusing {what} changed the state:\n{_diff(baseline, after)}"
    watch(after, f"refusing {what}")


def _stage_settings(max_examples: int) -> settings:
    """One stage's hypothesis settings: kernel backends are slow and keep no example database.

    The active profile's phases but the explain phase: after shrinking a failure, it ran
    the failing stage a few hundred times more on the backend, every line traced (the
    shrinking too), only to comment which drawn values the failure does not depend on;
    most of the time a broken backend took to fail (docs/custom-backend.md). The failure
    and its shrunk example are reported as before."""
    return settings(max_examples=max_examples, deadline=None, database=None,
                    phases=[p for p in settings().phases if p is not Phase.explain],
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                           HealthCheck.data_too_large])


def _run_stage(backend: Backend, stage: Callable[[], None]) -> None:
    """Run one stage; a failure that hypothesis could not replay is reported as itself.

    Every example runs on the one backend: when a failing example leaves objects the
    reset cannot remove (the backend reads back something else than it was given), the
    replay starts elsewhere and fails otherwise, and hypothesis raised ``FlakyFailure:
    Inconsistent results from replaying a test case!``, which blames the test.
    """
    try:
        stage()
    except Flaky as exc:
        inner = getattr(exc, "exceptions", ())
        if not inner:
            raise
        first = inner[0]
        error = AssertionError(
            f"{first}\n\n(replayed, this example failed otherwise: what it left in "
            f"{backend.name} could not be removed, so the examples after it did not start "
            "from the state found. The first failure is the one above.)")
        error.__notes__ = list(getattr(first, "__notes__", []))
        raise error from exc


def _random_round_trips(
    backend: Backend,
    baseline: State,
    pool: SearchStrategy[NetObject],
    max_examples: int,
    max_objects: int,
    *,
    converge: Callable[[Backend, State], None],
    reopen: Callable[[Backend], Backend] | None,
    watch: Watch,
) -> None:
    wanted = st.lists(pool, max_size=max_objects, unique_by=lambda o: o.key)

    @_stage_settings(max_examples)
    @given(first=wanted, second=wanted)
    def round_trip(first: list[NetObject], second: list[NetObject]) -> None:
        try:
            converge(backend, State(owned=first))
            held = backend.observe()
            _check_hints(backend, held, State(owned=second))
            if held.owned:
                there = min(held.owned)
                _expect_refusal(backend, held, Plan(changes=[Change.add(there)]),
                                f"a stale plan adding {there}, which is already there", watch)
                # The stale change after one that fits: a backend must judge every
                # change, and refuse before it makes the first (all or nothing).
                _expect_refusal(backend, held,
                                Plan(changes=[Change.delete(there), Change.delete(there)]),
                                f"a stale plan deleting {there} twice (the second delete "
                                "finds it gone)", watch)
            converge(backend, State(owned=second))
            if reopen is not None:
                _check_changed_elsewhere(backend, reopen, State(owned=first))
            converge(backend, State())
            final = backend.observe()
            assert final == baseline, (
                f"after removing everything, the state differs from the one found:\n"
                f"{_diff(baseline, final)}"
            )
            if held.owned:
                gone = min(held.owned)
                _expect_refusal(backend, final, Plan(changes=[Change.delete(gone)]),
                                f"a stale plan deleting {gone}, which is no longer there", watch)
                _expect_refusal(backend, final,
                                Plan(changes=[Change.add(gone), Change.add(gone)]),
                                f"a stale plan adding {gone} twice (the second add finds "
                                "it there)", watch)
                _expect_refusal(backend, final, Plan(changes=[Change.replace(gone, gone)]),
                                f"a stale plan replacing {gone}, which is no longer there", watch)
        finally:
            _reset(backend)

    _run_stage(backend, round_trip)


def _all_or_nothing(
    backend: Backend,
    baseline: State,
    pool: SearchStrategy[NetObject],
    max_examples: int,
    max_objects: int,
    *,
    converge: Callable[[Backend, State], None],
    reopen: Callable[[Backend], Backend] | None,
    watch: Watch,
) -> None:
    """A failure injected at every position of multi-change plans changes nothing."""
    hook = backend.faults  # type: ignore[attr-defined]  # checked by _check_protocol
    first_states = st.lists(pool, max_size=max_objects, unique_by=lambda o: o.key)
    # At least one object: plans of two or more changes whenever the backend can
    # hold two objects (a flannel target holds one config: its plans have one change).
    second_states = st.lists(pool, min_size=1, max_size=max_objects, unique_by=lambda o: o.key)

    @_stage_settings(max_examples)
    @given(first=first_states, second=second_states)
    def fail_everywhere(first: list[NetObject], second: list[NetObject]) -> None:
        try:
            converge(backend, State(owned=first))
            before = backend.observe()
            p = plan(before, State(owned=second))
            if not p.changes:
                return
            for index in range(len(p.changes)):
                _expect_injected_failure(backend, hook, p, index, before, watch=watch)
                if reopen is not None:
                    _check_reopened(backend, reopen, before)
        finally:
            hook.fail_at(None)
            _reset(backend)
        final = backend.observe()
        assert final == baseline, (
            f"after failed applies and removing everything, the state differs from the one "
            f"found:\n{_diff(baseline, final)}")

    _run_stage(backend, fail_everywhere)


def _expect_injected_failure(backend: Backend, hook: FaultHook, p: Plan, index: int,
                             before: State, *, watch: Watch = _no_store) -> None:
    where = f"a failure injected at change {index} of {len(p.changes)}"
    token = _change_token(backend) if index > 0 else None
    error = _fail_once(backend, hook, p, index, where)
    after = backend.observe()
    assert after == before, (
        f"{where} left the backend changed (no rollback?):\n{_diff(before, after)}\n"
        f"plan:\n{p.render()}"
    )
    recorded, kept = _recorded(before), _recorded(after)
    assert kept == recorded, (
        f"{where}: the rollback lost the values its sysctls recorded before taking over "
        f"(Sysctl.previous, what deleting them gives back; == does not compare it):\n"
        + "".join(f"  {name}: previous {recorded.get(name)!r}, now {kept.get(name)!r}\n"
                  for name in sorted(recorded.keys() | kept.keys())
                  if recorded.get(name) != kept.get(name))
        + f"plan:\n{p.render()}")
    watch(after, where)
    if token is not None and not _made_before(error):
        _warn_of_an_unlisted_rollback(backend, hook, p, index, where, token=token)


def _fail_once(backend: Backend, hook: FaultHook, p: Plan, index: int,
               where: str) -> ApplyError:
    """Apply ``p`` with a failure injected at change ``index``: the error, checked."""
    hook.fail_at(index)
    try:
        backend.apply(p)
    except RollbackError as exc:
        raise AssertionError(f"{where}: the rollback failed: {exc}\nplan:\n{p.render()}") from exc
    except ApplyError as exc:
        _check_apply_error(exc, p, index, where)
        error = exc
    else:
        raise AssertionError(f"{where}: apply succeeded; the backend ignores its fault hook\n"
                             f"plan:\n{p.render()}")
    assert hook.armed is None, f"{where}: apply did not take the fault hook (still armed)"
    return error


def _made_before(exc: ApplyError) -> bool:
    """Whether ``exc`` says changes were made before the failure (``done``)."""
    return any(not isinstance(c.subject, Drift) for c in exc.done)


def _warn_of_an_unlisted_rollback(backend: Backend, hook: FaultHook, p: Plan, index: int,
                                  where: str, *, token: Hashable) -> None:
    """A :class:`UserWarning` when a failure after the plan's first change, reported as a
    transaction refused whole (``done`` empty), moved the change token, and moved it again
    when the same failing apply was tried once more.

    ``observe()`` after a rollback reports what it did before, whatever was made and
    taken back, so the token is the one witness from outside: a backend that made the
    changes before the failure and undid them, saying nothing was made, is told from a
    transaction by it. It is not a failure: a token may move when nothing changed (the
    netlink backend's moves after any failed apply, iptables-legacy's digest at the first
    write of a namespace, which the second try leaves out)."""
    moved = _change_token(backend)
    if moved is None or moved == token:
        return
    again = _change_token(backend)
    if again != moved:
        return  # a token that moves at every read tells nothing
    _fail_once(backend, hook, p, index, where)
    if _change_token(backend) in (None, moved):
        return
    warnings.warn(
        f"run_conformance: at a failure injected after a plan's first change, "
        f"{backend.name}'s ApplyError says nothing was made before it (done empty: a "
        "transaction refused whole), while its change_token() "
        "moved across that failed apply, twice: if it made the changes before the failure "
        "and took them back, say so (ApplyError.done, and their inverses in rolled_back, "
        "as k3snet.backends.kit.Compensation.fail does), or the administrator and a "
        "BackendGroup are told of another rollback than the one made; if nothing was made, "
        "its token moves when nothing changed", UserWarning, stacklevel=2)


def _check_apply_error(exc: ApplyError, p: Plan, index: int, where: str) -> None:
    """The :class:`~k3snet.errors.ApplyError` of a failure injected at change ``index``
    says what happened, as :class:`~k3snet.backends.kit.Compensation` says it: ``failed``
    is that change (or ``None``: the whole transaction refused), ``done`` the plan's
    changes made before the failure, each once, in the order made (empty for a
    transaction), and ``rolled_back`` their inverses, last first.

    A group's error said nothing was done while it rolled back what its earlier members
    had made; a backend's ``rolled_back`` naming changes ``done`` does not (or the other
    way round) tells the admin and a group of another rollback than the one made.
    """
    details = (f"  failed: {exc.failed}\n" + "".join(f"  done: {c}\n" for c in exc.done)
               + "".join(f"  rolled back: {c}\n" for c in exc.rolled_back)
               + f"plan:\n{p.render()}")
    assert exc.failed is None or exc.failed == p.changes[index], (
        f"{where}: ApplyError.failed names another change than the one that failed "
        f"({p.changes[index]}; None when the whole transaction was refused):\n{details}")
    once = f"{where}: ApplyError.done must list changes of the plan made before the failure, "
    assert all(c in p.changes for c in exc.done), f"{once}each once:\n{details}"
    assert len(set(exc.done)) == len(exc.done), f"{once}each once:\n{details}"
    inverses = tuple(c.inverse() for c in reversed(exc.done)
                     if not isinstance(c.subject, Drift))
    rolled_back = tuple(c for c in exc.rolled_back if not isinstance(c.subject, Drift))
    assert rolled_back == inverses, (
        f"{where}: after a rollback, ApplyError.rolled_back must be the inverses of the "
        "changes in ApplyError.done, last first (a transaction refused whole: both empty; "
        "k3snet.backends.kit.Compensation.fail says both):\n" + details)


def _recorded(state: State) -> dict[str, str | None]:
    """Each owned sysctl's recorded previous value (which ``==`` leaves out)."""
    return {o.name: o.previous for o in state.owned if isinstance(o, Sysctl)}


def _converge(backend: Backend, desired: State, *,
              reopen: Callable[[Backend], Backend] | None = None,
              watch: Watch = _no_store) -> None:
    expect = getattr(backend, "expect", None)
    if callable(expect):  # as k3snet.converge does: the hint, then observe()
        expect(desired)
    token = _change_token(backend)
    before = backend.observe()
    p = plan(before, desired)
    problems = _checked(backend, p)
    assert problems == (), f"check() reported {problems} for a valid plan:\n{p.render()}"
    assert backend.observe() == before, "check() changed the state"
    result = backend.apply(p)
    if result.undo is not None:
        _check_exact_undo(backend, p, result.undo, before)
        result = backend.apply(p)
    applied = tuple(result.applied)
    assert applied == p.changes, _applied_mismatch(applied, p)
    after = backend.observe()
    _check_kinds(backend, after)
    watch(after, f"applying\n{p.render()}")
    _check_token_moved(backend, token, before, after, "its own apply")
    if reopen is not None:
        _check_reopened(backend, reopen, after)
    target = _as_held(p.target(desired), after)
    assert after.owned == target, (
        f"after apply, observe() differs from the plan's target:\n"
        f"{_diff(State(owned=target), State(owned=after.owned))}\nplan:\n"
        f"{p.render()}"
    )
    expected = p.apply_to(before)
    assert after.foreign == expected.foreign, (
        f"apply changed foreign state:\n{_diff(expected, after)}"
    )
    again = plan(after, desired)
    assert again.empty, f"planning again right after apply is not empty:\n{again.render()}"


def _check_reopened(backend: Backend, reopen: Callable[[Backend], Backend],
                    held: State) -> None:
    """Another backend on the same system (``reopen``, the next process's) observes what
    ``backend`` holds, down to the values its sysctls recorded."""
    other = reopen(backend)
    try:
        seen = other.observe()
    finally:
        other.close()
    recorded, reread = _recorded(held), _recorded(seen)
    assert (seen, reread) == (held, recorded), (
        f"another {backend.name} backend on the same system (reopen=, as the next process) "
        "observes otherwise than the one that applied: what a backend owns, and the values "
        "its sysctls recorded, must be read from the system, not remembered by the "
        f"instance:\n{_diff(held, seen)}\n"
        + "".join(f"  {name}: previous {value!r}, reopened {reread.get(name)!r}\n"
                  for name, value in sorted(recorded.items()) if reread.get(name) != value))


def _check_changed_elsewhere(backend: Backend, reopen: Callable[[Backend], Backend],
                             desired: State) -> None:
    """Another backend on the same system (``reopen``: a ``k3snet apply`` run beside the
    agent, whose backend lives from pass to pass) converges it to ``desired``; ``backend``
    must then observe what that one does, not what it read or wrote before, and its
    change token must have moved."""
    token = _change_token(backend)
    held = backend.observe()
    other = reopen(backend)
    try:
        _converge(other, desired)
        there = other.observe()
    finally:
        other.close()
    seen = backend.observe()
    recorded, kept = _recorded(there), _recorded(seen)
    assert (seen, kept) == (there, recorded), (
        f"after another {backend.name} backend on the same system (reopen=, another "
        "process) changed it, observe() reports otherwise than that one (a state kept "
        "past a change the backend did not make itself):\n"
        f"{_diff(there, seen)}\n"
        + "".join(f"  {name}: previous {value!r}, observed {kept.get(name)!r}\n"
                  for name, value in sorted(recorded.items()) if kept.get(name) != value))
    _check_token_moved(backend, token, held, seen, "another backend on the same system")


def _change_token(backend: Backend) -> Hashable | None:
    """The backend's optional ``change_token()``, ``None`` when it cannot tell: it has
    none, says ``None``, or (a group's) one of its parts says ``None``."""
    read = getattr(backend, "change_token", None)
    token = read() if callable(read) else None
    if isinstance(token, tuple) and any(part is None for part in token):
        return None
    return token


def _check_token_moved(backend: Backend, token: Hashable | None, before: State,
                       after: State, by: str) -> None:
    """What ``observe()`` reports changed (``by`` changed it): the change token read before
    must have moved, or the agent, which observes again only when it moves, never sees
    the change (nor does an :class:`~k3snet.backends.kit.ObserveCache` stamped with it)."""
    if token is None or after == before:
        return
    now = _change_token(backend)
    assert now is None or now != token, (
        f"{backend.name}.change_token() stayed {token!r} while {by} changed what observe() "
        "reports (a token changes whenever observe() may report otherwise; None: cannot "
        f"tell):\n{_diff(before, after)}")


def _check_hints(backend: Backend, held: State, wrong: State) -> None:
    """The optional hints (``expect(state)``, ``expect_leaving(rules)``, ``prefetch()``)
    change no result: after a wrong ``expect`` (another state than the one held), after
    ``expect_leaving`` given forward rules, and after ``prefetch()``, ``observe()`` still
    reports what is held."""
    expect = getattr(backend, "expect", None)
    if callable(expect):
        expect(wrong)
        seen = backend.observe()
        assert seen == held, (
            f"after expect() was given another state than the one held, observe() "
            f"differs (expect is a hint that must change no result):\n{_diff(held, seen)}")
    leaving = getattr(backend, "expect_leaving", None)
    if callable(leaving):  # a group's hint of the forward rules another member manages
        leaving([o for o in (*wrong.owned, *held.owned) if isinstance(o, ForwardRule)]
                or [ForwardRule("10.42.0.0/16", "198.51.100.0/24")])
        seen = backend.observe()
        leaving([])
        assert seen == held, (
            f"after expect_leaving() was given forward rules, observe() differs (a hint "
            f"that must change no result):\n{_diff(held, seen)}")
    prefetch = getattr(backend, "prefetch", None)
    if callable(prefetch):
        prefetch()
        seen = backend.observe()
        assert seen == held, (
            f"after prefetch(), observe() differs (a hint that must change no result):\n"
            f"{_diff(held, seen)}")


def _checked(backend: Backend, p: Plan) -> tuple[str, ...]:
    """``backend.check(p)``, which must be a tuple (``[]`` is no problem either, but
    ``[] != ()``: callers add tuples of problems together)."""
    problems = backend.check(p)
    assert isinstance(problems, tuple), (
        f"check() must return a tuple of problems (str), got {type(problems).__name__} "
        f"{problems!r}")
    return problems


def _check_kinds(backend: Backend, state: State) -> None:
    """``observe()`` reports objects of the backend's kinds only, owned or foreign (a
    group builds its state from its members' by kind; :meth:`k3snet.State.only`)."""
    strays = sorted(o for o in state.owned | state.foreign
                    if o.kind not in backend.capabilities)
    assert not strays, (
        f"observe() of {backend.name} reports objects of kinds it does not manage "
        f"({', '.join(sorted(backend.capabilities))}):\n"
        + "\n".join(f"  {o.kind}: {o}" for o in strays[:5]))


def _check_exact_undo(backend: Backend, p: Plan, undo: Callable[[], tuple[Change, ...]],
                      before: State) -> None:
    """``ApplyResult.undo`` (what a group calls when a later member fails) takes the apply
    back exactly and returns the inverse changes it made, last change first."""
    try:
        undone = tuple(undo())
    except K3snetError as exc:
        raise AssertionError(f"ApplyResult.undo() of a successful apply failed: {exc}\n"
                             f"plan:\n{p.render()}") from exc
    after = backend.observe()
    assert after == before, (
        f"ApplyResult.undo() left the backend changed:\n{_diff(before, after)}\n"
        f"plan:\n{p.render()}")
    inverses = tuple(c.inverse() for c in reversed(p.changes))
    assert undone == inverses, (
        "ApplyResult.undo() must return the inverse changes it made, last change first:\n"
        + "".join(f"  expected: {c}\n" for c in inverses)
        + "".join(f"  returned: {c}\n" for c in undone) + f"plan:\n{p.render()}")


def _as_held(target: frozenset[NetObject], after: State) -> frozenset[NetObject]:
    """``target`` with each object the system completed as ``after`` holds it: a route
    added without a device is read back with the device the kernel picked
    (:meth:`~k3snet.model.NetObject.held_by`), which is the plan's target too."""
    owned = after.by_key
    return frozenset(
        owned[o.key] if o.key in owned and o.held_by(owned[o.key]) else o for o in target)


def _applied_mismatch(applied: tuple[Change, ...], p: Plan) -> str:
    """Why ``ApplyResult.applied`` is not the plan's changes, in their order."""
    if sorted(applied, key=str) == sorted(p.changes, key=str):
        return ("apply() reports the plan's changes in another order than the plan's "
                "(ApplyResult.applied lists them in the plan's order):\n"
                + "\n".join(f"  {c}" for c in applied) + f"\nplan:\n{p.render()}")
    missing = [c for c in p.changes if c not in applied]
    extra = [c for c in applied if c not in p.changes]
    return (f"apply() reports {len(applied)} change(s) for a plan of {len(p.changes)}:\n"
            + "".join(f"  not reported: {c}\n" for c in missing)
            + "".join(f"  not in the plan: {c}\n" for c in extra) + f"plan:\n{p.render()}")


def _reset(backend: Backend) -> None:
    """Remove what an interrupted example left (best effort, errors shown by the next check)."""
    with contextlib.suppress(K3snetError):
        backend.apply(plan(backend.observe(), State()))


def _diff(expected: State, actual: State) -> str:
    lines = []
    for label, exp, act in (("owned", expected.owned, actual.owned),
                            ("foreign", expected.foreign, actual.foreign)):
        lines += [f"  missing {label}: {o}" for o in sorted(exp - act)]
        lines += [f"  extra {label}: {o}" for o in sorted(act - exp)]
    return "\n".join(lines) or "  (no difference in objects)"
