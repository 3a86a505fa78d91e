"""Whether the CNI's pods restarted since k3snet changed a ConfigMap they read at start.

Cilium reads ``cilium-config`` and flannel ``net-conf.json`` once, when the agent
starts: a change k3snet writes is in force on a node only once the pod there has
restarted. The cilium and flannel backends stamp each ConfigMap change they make
with :data:`CHANGED_ANNOTATION` (UTC, seconds, the API server's clock:
:class:`ServerClock`; moved to the write's answer where it landed later: :func:`restamp`);
:func:`pending`
compares it with the creation of each pod of the DaemonSets using that ConfigMap.
A pod counts as restarted when it was created after the stamp's second (a container
restarted in its pod runs the config of the pod's start: see :func:`_created`; one made
in that second may predate the write); each DaemonSet's pods are listed by its selector,
not the namespace's all; the DaemonSets
using it are those whose pod template names the ConfigMap (a volume, ``envFrom``, a
key reference) and the CNI's well-known one (Cilium's ``config`` init container reads
``cilium-config`` through the API, naming it in no volume). Nothing here restarts anything.
"""

from __future__ import annotations

import datetime
import json
import logging
import shlex
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from k3snet.backends.base import PendingRestart, restart_command
from k3snet.backends.kit import translate_errors
from k3snet.kube import KubeApiError, KubeErrors, list_pages, selector_matches, server_time

__all__ = ["CHANGED_ANNOTATION", "RestampError", "ServerClock", "Settled", "WriteLanded",
           "changed_stamp", "label_selector", "pending", "readers", "restamp", "stamp_undone",
           "take_back", "taking_back"]

_T = TypeVar("_T")
_F = TypeVar("_F")

log = logging.getLogger(__name__)

CHANGED_ANNOTATION = "k3snet.io/changed-at"
"""The annotation, on a ConfigMap k3snet changed, holding when it last changed data the
CNI reads only at start (RFC 3339, UTC, seconds, the API server's clock)."""

_ROOM = datetime.timedelta(days=1)
"""How long after a ``Date`` header's read its gap may still make a stamp."""

_BACK = datetime.timedelta(minutes=1)
"""How far a stamp may be after the API server's time now before it is taken for a
clock gone back since the write (a stamp is late by up to a second and a read's time)."""

_REFERENCES = frozenset({"configMap", "configMapRef", "configMapKeyRef"})

# Whether a DaemonSet (JSON) reads the CNI's ConfigMap where its pod template names it not.
_Reads = Callable[[dict[str, Any]], bool] | None


def changed_stamp(now: datetime.datetime | None = None) -> str:
    """``now`` (default: the current time) as :data:`CHANGED_ANNOTATION` holds it."""
    now = now or datetime.datetime.now(tz=datetime.UTC)
    # isoformat, not strftime's %Y: the year keeps its four digits before year 1000
    # (``100-01-01T...``, from an API server's clock that far off, was read as no time).
    stamp = now.astimezone(datetime.UTC).replace(microsecond=0, tzinfo=None).isoformat()
    return stamp + "Z"


class ServerClock:
    """The API server's clock, as k3snet's plus the gap the last answer's ``Date`` showed.

    The stamp is compared with the pods' ``creationTimestamp``, which the API server
    writes: a stamp of k3snet's clock ahead of it named pods made after the change
    pending (a rollout restart made at once, until the clock's gap had passed); behind
    it, pods made before the change as restarted. Take :meth:`asked` before each
    ConfigMap read and :meth:`note` its answer's headers; :meth:`stamp` gives the stamp
    of a write."""

    def __init__(self) -> None:
        self.offset = 0.0
        """Seconds to add to k3snet's clock: the latest gap the last answer allows."""
        self.least = 0.0
        """Seconds to add to k3snet's clock: the earliest gap the last answer allows."""
        self.dated = False
        """Whether an answer's ``Date`` gave the gap (else it is 0: k3snet's own clock)."""
        self._warned = False

    @staticmethod
    def asked() -> float:
        """k3snet's clock (POSIX seconds) now: taken just before a request whose answer
        :meth:`note` reads."""
        return datetime.datetime.now(tz=datetime.UTC).timestamp()

    def note(self, headers: Any, asked: float) -> None:
        """Take the gap from an answer's ``headers`` to a request sent at ``asked`` (by
        :meth:`asked`; none readable, or a time no stamp holds: kept as it was).

        The server wrote ``Date`` (its clock, whole seconds down) at some time between
        ``asked`` and now, k3snet's: the gap is somewhere in ``[Date - now, Date + 1 -
        asked]``, however slow the answer (a slow link, a paused process). Its upper end
        is taken, the stamp late rather than early: a stamp early makes a pod created
        before the write count as restarted, the change said in force on a node still
        running the old config, and nothing shown; a stamp late names a pod made just
        after the write pending, which is seen and a restart ends. (The lower end, or the
        middle, made the stamp early by up to the answer's time: taken at the answer, the
        gap of a 10 s answer was a clock 10 s behind. 0 where the interval holds it made
        it early by up to a second and the answer's time: a server clock 0.9 s ahead put
        the write in the second after the stamp's, and a pod made just before the write
        counted as restarted.)"""
        server = server_time(headers)
        if server is None:
            return
        now = datetime.datetime.now(tz=datetime.UTC)
        gap = server + 1 - asked
        try:
            # A stamp of it is written a while after this read: a day's room either side
            # (each raises OverflowError past year 9999 or before year 1).
            at = now + datetime.timedelta(seconds=gap)
            holds = at - _ROOM < at + _ROOM
        except OverflowError:
            holds = False
        if not holds:
            return  # no clock a stamp can hold: a stamp's write failed with a traceback
        self.offset = gap
        self.least = server - now.timestamp()
        self.dated = True

    def now(self) -> datetime.datetime:
        """The API server's time now, as the last answer allows (its latest)."""
        return datetime.datetime.now(tz=datetime.UTC) + datetime.timedelta(seconds=self.offset)

    def stamp(self) -> str:
        """:func:`changed_stamp` of the API server's time now. No answer's ``Date`` read
        (a proxy dropping them all), it is k3snet's own clock, whatever its gap to the
        server's: said once (a warning), as a clock behind counts a pod made before the
        write as restarted, which nothing else would show."""
        if not self.dated and not self._warned:
            self._warned = True
            log.warning(
                "no answer of the API server carried a usable Date header (a proxy "
                "dropping it?): the restart stamp (%s) is k3snet's own clock, not the "
                "API server's; a pod made shortly before the write counts as restarted "
                "where k3snet's clock is behind it", CHANGED_ANNOTATION)
        return changed_stamp(self.now())

    def earliest(self) -> str:
        """:func:`changed_stamp` of the API server's time now at its earliest (the lower
        end of the gap :meth:`note` took): taken before a write, its second is never
        after the write's landing's. :meth:`stamp`, late by up to a second and the
        answer's time, is the safe side for a pod made before the write; this one is for
        a pod made after it (:func:`stamp_undone`)."""
        now = datetime.datetime.now(tz=datetime.UTC)
        return changed_stamp(now + datetime.timedelta(seconds=self.least))


_BLIND_FIRST = datetime.timedelta(minutes=1)
"""How long a stamp whose DaemonSets could not be found (or listed) is said so again
unlisted, the first time; doubled each time they are still not found."""

_BLIND_MOST = datetime.timedelta(hours=1)
"""The longest such wait: a DaemonSet made or named again is found within it."""


_RESTAMP_TRIES = 3
"""Writes of a landed stamp tried, each after another write came in between (409)."""


def _stamp_read(core: Any, namespace: str, name: str, timeout: float
                ) -> tuple[str | None, str | None]:
    """The :data:`CHANGED_ANNOTATION` and resourceVersion ConfigMap ``namespace/name``
    holds (raises :class:`~k3snet.kube.KubeApiError`)."""
    with translate_errors(f"read ConfigMap {namespace}/{name}",
                          classifier=KubeErrors(timeout=timeout)):
        found = core.read_namespaced_config_map(name, namespace, _request_timeout=timeout)
    meta = found.metadata
    annotations = (meta.annotations if meta is not None else None) or {}
    return (annotations.get(CHANGED_ANNOTATION),
            meta.resource_version if meta is not None else None)


class RestampError(KubeApiError):
    """:func:`restamp`'s patch refused (not a conflict), or a conflict at each try: the
    write it follows landed (its resourceVersion :attr:`version`) under a stamp before
    its landing, which counts a pod made in between as restarted, not the safe side.
    The backend takes that write back before failing the apply (all or nothing:
    :func:`taking_back`): it failed saying nothing was changed, the write left."""

    def __init__(self, message: str, *, status: int | None, reason: str | None,
                 version: str | None) -> None:
        super().__init__(message, status=status, reason=reason)
        self.version = version
        """The resourceVersion the landed write left."""


class WriteLanded(Exception):  # noqa: N818 - a carrier, caught by the backend's apply
    """A backend's write landed and what followed it failed (:class:`RestampError`):
    the apply records :attr:`undo` (taking that write back) then fails with
    :attr:`error`, as for a later write refused. Raised ``from`` :attr:`error`."""

    def __init__(self, error: RestampError, undo: Callable[[], object]) -> None:
        super().__init__(str(error))
        self.error = error
        self.undo = undo


def taking_back(write: Callable[[], _T], take_back: Callable[[str | None], object]) -> _T:
    """``write()``, whose :func:`restamp` refused raises :class:`WriteLanded` carrying
    ``take_back`` of the landed write's resourceVersion."""
    try:
        return write()
    except RestampError as exc:
        landed = exc.version  # (exc is unbound once the except block ends)
        raise WriteLanded(exc, lambda: take_back(landed)) from exc


_UNDO_TRIES = 5
"""Sends of an undo's patch (:func:`take_back`), each after a 409 for another key's change."""


def take_back(where: str, version: str | None, send: Callable[[str | None], str | None],
              read: Callable[[], _F | None], version_of: Callable[[_F], str | None], *,
              undone: Callable[[_F], list[str]], left: Callable[[_F], list[str]]
              ) -> str | None:
    """Take back k3snet's write of ``where`` (``ConfigMap NS/NAME``): ``send(version)``,
    its undo's patch conditional on ``version`` (the write's), returns the
    resourceVersion it leaves; the one the undo left is returned.

    A 409 reads the ConfigMap again (``read``; ``None``: gone, the 409 raised): where
    ``undone`` of it names nothing, it holds what the undo writes (sent again after a
    503 that followed the first's effect, the version is the undo's own), the undo done;
    where ``left`` names nothing, every key (and record, stamp) the write set is still as
    it left it, another key changed since (Cilium's operator, a Helm upgrade of other
    keys, ``kubectl annotate``): sent again on the version read, :data:`_UNDO_TRIES` sends
    at most, their change kept. One of k3snet's changed since (Helm's edit, another
    k3snet's write) is refused naming what ``left`` names, not overwritten, the write
    left whole (:class:`~k3snet.kube.KubeApiError`, 409). Both backends' undo: flannel's
    failed at any 409 before, though only another key changed."""
    conflict: KubeApiError | None = None
    for _ in range(_UNDO_TRIES):
        try:
            return send(version)
        except KubeApiError as exc:
            if exc.status != 409:
                raise
            conflict = exc
        found = read()
        if found is None:
            raise conflict
        if not undone(found):
            return version_of(found)
        changed = left(found)
        if changed:
            raise KubeApiError(
                f"take back k3snet's write of {where}: conflict (409): changed by someone "
                f"else since: {', '.join(changed)}; not overwritten, the write is left whole",
                status=409, reason=conflict.reason) from conflict
        version = version_of(found)
    assert conflict is not None
    raise KubeApiError(
        f"take back k3snet's write of {where}: conflict (409): its other keys changed "
        f"again at each of {_UNDO_TRIES} tries; the write is left whole",
        status=409, reason=conflict.reason) from conflict


def restamp(core: Any, namespace: str, name: str, sent: str, headers: Any, *,
            version: str | None, timeout: float,
            answered: str | None = None) -> tuple[str, str | None]:
    """The stamp ConfigMap ``namespace/name`` holds after k3snet's write that stamped it
    ``sent``, answered with ``headers`` and leaving resourceVersion ``version``, and the
    resourceVersion k3snet's writes left (``version``, or its own write's after it).

    ``sent`` is taken before the write is sent (the API server's time by the last
    read's ``Date``): a write landing in a later second (a slow PATCH: a server busy,
    a link slow) made a pod created between the two count as restarted, though it may
    have read the config from before the write. The answer's ``Date`` is written after
    the write landed, in its second or later: where it is after ``sent`` the annotation
    is set to it, one merge patch conditional on ``version`` (a write in between: read
    again, and set while the stamp is still ``sent``; another stamp left as it is, a
    later write's; its answer lost, read: the stamp found moved is the move made, and
    the resourceVersion before it is the one given). ``answered``:
    :meth:`ServerClock.stamp` taken once the answer was read, after the landing too:
    the time moved to where the answer has no readable ``Date`` (a proxy dropping it),
    else the stamp stayed before a slow write's landing.
    ``core``: a ``CoreV1Api``. A write refused otherwise raises
    :class:`RestampError`, saying the command setting it: the caller takes its write
    back (a stamp before the landing counts a pod made in between as restarted)."""
    try:
        return _restamp(core, namespace, name, sent, headers, version=version,
                        timeout=timeout, answered=answered)
    except KubeApiError as exc:
        raise RestampError(str(exc), status=exc.status, reason=exc.reason,
                            version=version) from exc


def _restamp(core: Any, namespace: str, name: str, sent: str, headers: Any, *,
             version: str | None, timeout: float,
             answered: str | None) -> tuple[str, str | None]:
    """:func:`restamp`, raising :class:`~k3snet.kube.KubeApiError`."""
    at = _time(sent)
    landed = _landing(headers, answered)
    moment = None if landed is None else _time(landed)
    if at is None or landed is None or moment is None or moment <= at:
        return sent, version
    stamp, left = _move(core, namespace, name, sent, landed, version=version,
                        timeout=timeout, of="the write")
    return sent if stamp is None else stamp, left


def _move(core: Any, namespace: str, name: str, sent: str | None, landed: str, *,
          version: str | None, timeout: float, of: str) -> tuple[str | None, str | None]:
    """Set ConfigMap ``namespace/name``'s stamp, ``sent`` (``None``: none) when ``of``
    (the write, the undo) left resourceVersion ``version``, to ``landed``:
    :func:`restamp`'s patch (its answer lost, read; a write in between, read again and
    set while the stamp is still ``sent``). Returns the stamp and resourceVersion left."""
    where = f"ConfigMap {namespace}/{name}"
    for _ in range(_RESTAMP_TRIES):
        metadata: dict[str, Any] = {"annotations": {CHANGED_ANNOTATION: landed}}
        if version is not None:
            metadata["resourceVersion"] = version
        body = {"metadata": metadata}
        try:
            with translate_errors(f"patch {where} (its {CHANGED_ANNOTATION} to {of}'s "
                                  f"landing, {landed}; where {of} is left: "
                                  f"{_setting(namespace, name, sent, landed)})",
                                  classifier=KubeErrors(timeout=timeout)):
                result = core.patch_namespaced_config_map(
                    name, namespace, body, field_manager="k3snet",
                    _content_type="application/merge-patch+json", _request_timeout=timeout)
            return landed, getattr(getattr(result, "metadata", None), "resource_version", None)
        except KubeApiError as exc:
            if exc.status != 409:
                # Its answer lost (a 504, a timeout) after the move was made: read, the
                # stamp moved is the move made (an undo of the write refused it as
                # "changed by someone else", the apply said maybe half-changed). The
                # resourceVersion read may be a later writer's (Helm's upgrade): the one
                # before the move is given, so an undo made on it meets a 409 and compares
                # what it finds (made on the one read, it overwrote that writer's keys).
                try:
                    stamp, _ = _stamp_read(core, namespace, name, timeout)
                except KubeApiError:
                    raise exc from None
                if stamp == landed:
                    return landed, version
                if stamp != sent:
                    # Stamped again since (a later write's, at or after this landing), or
                    # taken away: left, as after a 409. Its move said to be made by hand
                    # set a later writer's stamp earlier.
                    return sent, version
                raise
        stamp, found = _stamp_read(core, namespace, name, timeout)
        if stamp != sent:
            return sent, version  # stamped again since: a later write's, or taken away
        version = found
    raise KubeApiError(f"patch {where}: written again at each of {_RESTAMP_TRIES} tries; "
                       f"its {CHANGED_ANNOTATION} is before {of} landed; where {of} "
                       f"is left: {_setting(namespace, name, sent, landed)}", status=409)


def _setting(namespace: str, name: str, held: str | None, stamp: str) -> str:
    """The command setting ConfigMap ``namespace/name``'s stamp to ``stamp`` only where it
    still holds ``held`` (``None``: none), the stamp k3snet's write or undo left there.

    Given in a failure's message, it is run later, by hand: a later writer's stamp found
    by then (another k3snet's apply, after the landing) is left. ``kubectl annotate
    --overwrite`` set it whatever it found, moving that stamp earlier, and a pod made
    between the two counted as restarted. A JSON patch's ``test`` makes the API server
    refuse it (422) where the stamp is another; ``kubectl annotate`` without
    ``--overwrite`` refuses where there is one at all."""
    if held is None:
        return (f"kubectl -n {shlex.quote(namespace)} annotate configmap {shlex.quote(name)} "
                f"{CHANGED_ANNOTATION}={stamp}")
    return _patching(namespace, name, held, {"op": "replace", "path": _STAMP_PATH,
                                             "value": stamp})


def _removing(namespace: str, name: str, held: str) -> str:
    """The command removing ConfigMap ``namespace/name``'s stamp only where it still holds
    ``held``, the stamp a restart pending was said of.

    Run by hand once the pods restarted, maybe long after: a later write's stamp found
    by then (the agent's next apply, another k3snet's) is left, the API server refusing
    it (422). ``kubectl annotate configmap NAME k3snet.io/changed-at-`` removed whatever
    stamp it found, and the restart that later write awaits was said of no pod."""
    return _patching(namespace, name, held, {"op": "remove", "path": _STAMP_PATH})


_STAMP_PATH = "/metadata/annotations/" + CHANGED_ANNOTATION.replace("~", "~0").replace("/", "~1")
""":data:`CHANGED_ANNOTATION` as a JSON pointer (RFC 6901: ``/`` as ``~1``)."""


def _patching(namespace: str, name: str, held: str, op: dict[str, str]) -> str:
    """The ``kubectl patch --type=json`` of ConfigMap ``namespace/name`` making ``op`` of
    its stamp where it holds ``held`` (a ``test`` first), quoted for a shell."""
    patch = json.dumps([{"op": "test", "path": _STAMP_PATH, "value": held}, op],
                       separators=(",", ":"))
    return (f"kubectl -n {shlex.quote(namespace)} patch configmap {shlex.quote(name)} "
            f"--type=json -p {shlex.quote(patch)}")


def stamp_undone(api_client: Any, namespace: str, name: str, *, since: str | None,
                 back: str | None, version: str | None, known: Iterable[str],
                 clock: ServerClock, timeout: float, reads: _Reads = None) -> None:
    """After an undo gave ConfigMap ``namespace/name`` back, its stamp ``back`` (the one
    from before; ``None``: none), and resourceVersion ``version``: stamp the undo where
    a pod of the DaemonSets reading it (:func:`readers`) was created since ``since``'s
    second (:meth:`ServerClock.earliest` taken before the undone write was sent: never
    after its landing; ``None``: not known, stamped); ``reads``, as for :func:`pending`.
    The stamp the write left is no
    such bound: taken at the server's latest time, or moved to the answer's ``Date``, it
    may be in a second after the landing's, and a pod made in between was missed.

    Such a pod may have read the written config, no longer in force once undone: under
    ``back`` it counted as restarted, nothing said pending. The undo's stamp (``clock``,
    taken once the undo was answered: after it landed) names it, and every pod made
    before it, pending (the safe side, as after a destroy). No such pod: ``back`` stays,
    no restart named for an apply undone. DaemonSets none found or not to be listed:
    stamped (k3snet cannot tell). Raises :class:`~k3snet.kube.KubeApiError` (its
    ``kubectl annotate`` command in the message) where the stamp is not written."""
    at = _time(since)
    try:
        found = _reading(api_client, namespace, name, frozenset(known), timeout, reads=reads)
        listed = _pods(api_client, namespace, found, timeout)
    except KubeApiError:
        found = []
    if at is not None and found and not any(
            created is None or created >= at
            for daemonset in found
            for _, created in _theirs(listed[str(daemonset["metadata"].get("name"))],
                                      daemonset)):
        return
    from kubernetes import client  # noqa: PLC0415 - optional dependency (k3snet[kube])

    _move(client.CoreV1Api(api_client), namespace, name, back, clock.stamp(),
          version=version, timeout=timeout, of="the undo")


def _landing(headers: Any, answered: str | None) -> str | None:
    """The stamp of a write's landing by its answer's ``headers``: their ``Date``; none
    readable, ``answered`` (the server's time once answered is after the landing too);
    ``None`` for a ``Date`` no stamp holds (as :meth:`ServerClock.note` leaves it)."""
    server = server_time(headers)
    if server is None:
        return answered
    try:
        return changed_stamp(datetime.datetime.fromtimestamp(server, tz=datetime.UTC))
    except (OverflowError, ValueError, OSError):
        return None


class Settled:
    """The stamp whose restarts were all found made: not listed for again; and the one
    whose DaemonSets could not be found, listed again only after a growing wait.

    A pod counts as restarted by its creation, which never moves: once every pod of the
    DaemonSets was made since a stamp, every pod made later is too. Without it, the
    agent's Lease holder listed every DaemonSet and every Pod of the CNI's namespace
    (``kube-system``: a few per node) from etcd on each pass, for as long as the stamp
    stayed, long after the restart. A stamp whose DaemonSets were not found (deleted,
    renamed) or not to be listed (403) stays pending until the annotation is removed:
    that answer is given again without listing, the DaemonSets listed again after
    :data:`_BLIND_FIRST`, then twice as long each time up to :data:`_BLIND_MOST` (the
    API server's clock). A backend keeps one, forgotten on its own writes."""

    def __init__(self) -> None:
        self.stamp: str | None = None
        self.blind: tuple[str, tuple[PendingRestart, ...]] | None = None
        """The stamp whose DaemonSets were not found, and what was said of it."""
        self.wait = datetime.timedelta(0)
        self.until: datetime.datetime | None = None
        """When the DaemonSets of :attr:`blind` are listed again."""

    def forget(self) -> None:
        """Forget both: a stamp written in the same second is another one."""
        self.stamp = self.blind = self.until = None
        self.wait = datetime.timedelta(0)

    def unseen(self, stamp: str, now: datetime.datetime) -> tuple[PendingRestart, ...] | None:
        """What was said of ``stamp`` whose DaemonSets were not found, while its wait lasts
        at ``now`` (else ``None``: list them)."""
        if self.blind is None or self.blind[0] != stamp or self.until is None:
            return None
        return self.blind[1] if now < self.until else None

    def not_found(self, stamp: str, said: tuple[PendingRestart, ...],
                  now: datetime.datetime) -> None:
        """``stamp``'s DaemonSets were not found at ``now``, ``said`` of it: wait longer."""
        if self.blind is None or self.blind[0] != stamp:
            self.wait = datetime.timedelta(0)
        self.wait = min(max(self.wait * 2, _BLIND_FIRST), _BLIND_MOST)
        self.blind, self.until = (stamp, said), now + self.wait

    def found(self) -> None:
        """The DaemonSets were found: listed at each call again."""
        self.blind = self.until = None
        self.wait = datetime.timedelta(0)


def _time(value: Any) -> datetime.datetime | None:
    """A Kubernetes timestamp (text or a client's datetime) as an aware datetime."""
    if isinstance(value, datetime.datetime):
        return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def _names(value: Any, name: str) -> bool:
    """Whether the pod template (JSON data) ``value`` names ConfigMap ``name`` anywhere."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in _REFERENCES and isinstance(item, dict) and item.get("name") == name:
                return True
            if _names(item, name):
                return True
    elif isinstance(value, list):
        return any(_names(item, name) for item in value)
    return False


def _created(pod: dict[str, Any]) -> datetime.datetime | None:
    """When ``pod`` was created: the CNI's config is read in a pod's start, not in a
    container's. Cilium's ``config`` init container writes ``cilium-config`` into the
    pod's ``/tmp`` (an emptyDir) once, and init containers do not run again when the
    ``cilium-agent`` container restarts (a crash, its liveness probe): that one starts
    again with the config of the pod's start. Flannel's restarted container reads the
    kubelet's copy of the ConfigMap, up to a minute or more behind. The creation is
    also the API server's clock, not the pod's node's."""
    return _time((pod.get("metadata") or {}).get("creationTimestamp"))


def _owned_by(pod: dict[str, Any], daemonset: str) -> bool:
    owners = (pod.get("metadata") or {}).get("ownerReferences") or []
    return any(isinstance(o, dict) and o.get("kind") == "DaemonSet"
               and o.get("name") == daemonset for o in owners)


def _made_before(pods: list[Any], daemonset: dict[str, Any],
                 changed: datetime.datetime) -> list[str]:
    """The names of ``daemonset``'s ``pods`` created before ``changed`` or in its second.

    The stamp and ``creationTimestamp`` both hold whole seconds: a pod made in the
    stamp's own second may have been made before the write, and counts as not restarted
    (pending is the safe answer: a pod made after the write is seen pending and a
    restart ends it; one counted as restarted hides a node running the old config).
    A selector k3snet cannot read (none, or one apimachinery refuses) leaves the owner
    alone to tell the DaemonSet's pods, rather than counting none of them."""
    return [name for name, created in _theirs(pods, daemonset)
            if created is None or created <= changed]


def _theirs(pods: list[Any], daemonset: dict[str, Any]
            ) -> list[tuple[str, datetime.datetime | None]]:
    """The name and creation of each of ``pods`` ``daemonset`` selects and owns."""
    name = str(daemonset["metadata"].get("name"))
    selector = (daemonset.get("spec") or {}).get("selector")
    usable = label_selector(selector) is not None
    found = []
    for pod in pods:
        if not isinstance(pod, dict):
            continue
        metadata = pod.get("metadata") or {}
        selected = not usable or selector_matches(selector, metadata.get("labels") or {})
        if selected and _owned_by(pod, name):
            found.append((str(metadata.get("name")), _created(pod)))
    return found


def label_selector(selector: Any) -> str | None:
    """``selector`` (a DaemonSet's ``spec.selector``, JSON data) as the list request's
    ``labelSelector`` (``matchLabels`` and ``matchExpressions``), or ``None`` where it is
    none or one apimachinery refuses (:func:`~k3snet.kube.selector_matches` raises).

    >>> label_selector({"matchLabels": {"k8s-app": "cilium"}, "matchExpressions": [
    ...     {"key": "tier", "operator": "NotIn", "values": ["a", "b"]},
    ...     {"key": "canary", "operator": "DoesNotExist"}]})
    'k8s-app=cilium,tier notin (a,b),!canary'
    """
    if selector is None:
        return None
    try:
        selector_matches(selector, {})  # raises for what apimachinery refuses
    except ValueError:
        return None
    terms = [f"{key}={value}" for key, value in (selector.get("matchLabels") or {}).items()]
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = ",".join(expression.get("values") or [])
        terms.append({"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})",
                      "Exists": key, "DoesNotExist": f"!{key}"}[operator])
    return ",".join(terms)


def _list(api_client: Any, namespace: str, timeout: float, what: str,
          label_selector: str | None = None) -> list[Any]:
    """Every DaemonSet (``what="daemonsets"``) or Pod of ``namespace``, as JSON data; the
    Pods ``label_selector`` selects, where given."""
    from kubernetes import client  # noqa: PLC0415 - optional dependency (k3snet[kube])

    serialize = api_client.sanitize_for_serialization
    call: Callable[..., Any]
    selected: dict[str, Any] = {}
    if what == "daemonsets":
        call, where = (client.AppsV1Api(api_client).list_namespaced_daemon_set,
                       f"list DaemonSets in {namespace}")
    else:
        call, where = client.CoreV1Api(api_client).list_namespaced_pod, f"list Pods in {namespace}"
        if label_selector is not None:
            selected = {"label_selector": label_selector}
            where = f"{where} selected by {label_selector}"

    def fetch(page: dict[str, Any]) -> Any:
        with translate_errors(where, classifier=KubeErrors(timeout=timeout)):
            return serialize(call(namespace, _request_timeout=timeout, **selected, **page))

    return list_pages(fetch, where)


def _pods(api_client: Any, namespace: str, daemonsets: list[dict[str, Any]],
          timeout: float) -> dict[str, list[Any]]:
    """The Pods of each of ``daemonsets`` (by name) its selector selects, one list a
    selector: not every Pod of ``namespace`` (``kube-system``: every add-on's, a few a
    node). A DaemonSet without a selector k3snet can read has the namespace's Pods."""
    by_selector: dict[str | None, list[Any]] = {}
    found: dict[str, list[Any]] = {}
    for daemonset in daemonsets:
        selector = label_selector((daemonset.get("spec") or {}).get("selector"))
        if selector not in by_selector:
            by_selector[selector] = _list(api_client, namespace, timeout, "pods", selector)
        found[str(daemonset["metadata"].get("name"))] = by_selector[selector]
    return found


def _reading(api_client: Any, namespace: str, configmap: str, known: frozenset[str],
             timeout: float, *, reads: _Reads = None) -> list[dict[str, Any]]:
    """The DaemonSets of ``namespace`` named in ``known``, whose pod template names
    ``configmap``, or that ``reads`` takes (JSON), sorted by name (raises
    :class:`~k3snet.kube.KubeApiError`)."""
    found = [d for d in _list(api_client, namespace, timeout, "daemonsets")
             if isinstance(d, dict)
             and ((d.get("metadata") or {}).get("name") in known
                  or _names((d.get("spec") or {}).get("template"), configmap)
                  or (reads is not None and reads(d)))]
    return sorted(found, key=lambda d: str(d["metadata"].get("name")))


def readers(api_client: Any, namespace: str, configmap: str, *, known: Iterable[str],
            timeout: float, reads: _Reads = None) -> tuple[str, ...]:
    """The names of the DaemonSets :func:`pending` follows for ``configmap``: those of
    ``namespace`` in ``known``, whose pod template names it, or that ``reads`` takes,
    sorted (none found: empty). Raises :class:`~k3snet.kube.KubeApiError` where they
    cannot be listed."""
    return tuple(str(d["metadata"].get("name"))
                 for d in _reading(api_client, namespace, configmap, frozenset(known),
                                   timeout, reads=reads))


def _listed(api_client: Any, namespace: str, configmap: str, known: frozenset[str],
            timeout: float, *, what: str, hint: str | None, stamp: str, reads: _Reads = None
            ) -> tuple[list[dict[str, Any]], dict[str, list[Any]], tuple[PendingRestart, ...]]:
    """The DaemonSets reading ``configmap`` (:func:`_reading`) and their pods
    (:func:`_pods`); where none is found or they cannot be listed (403, 404), none and
    what to say instead: the restart pending, k3snet unable to tell, and what ends it
    (removing ``stamp``, the one read, where it is still there: :func:`_removing`)."""
    where = f"ConfigMap {namespace}/{configmap}"
    removal = (f"once each pod reading it restarted: "
               f"{_removing(namespace, configmap, stamp)}")
    try:
        found = _reading(api_client, namespace, configmap, known, timeout, reads=reads)
        listed = _pods(api_client, namespace, found, timeout)
    except KubeApiError as exc:
        if exc.status not in (403, 404):
            raise
        return [], {}, (_unlisted(where, f"{what} ({exc}; {removal})", known),)
    if not found:
        ending = f"{hint}, or {removal}" if hint else removal
        return [], {}, (PendingRestart(
            f"the pods reading {where}",
            f"{what} (no DaemonSet in {namespace} uses it: {ending})"),)
    return found, listed, ()


def _unlisted(where: str, reason: str, known: Iterable[str]) -> PendingRestart:
    """The restart pending for the pods reading ``where`` (``ConfigMap NS/NAME``) where
    its DaemonSets were not listed: its command restarts the CNI's DaemonSets ``known``
    by name, the one command k3snet can give (``None`` without them)."""
    workload = f"the pods reading {where}"
    return PendingRestart(workload, reason,
                          command=restart_command(workload, sorted(set(known))))


def pending(api_client: Any, namespace: str, configmap: str, annotations: dict[str, str],
            *, reason: str, known: Iterable[str], timeout: float,
            settled: Settled | None = None, changed: str | None = None,
            now: datetime.datetime | None = None,
            hint: str | None = None, reads: _Reads = None) -> tuple[PendingRestart, ...]:
    """The restarts still to make for k3snet's last change of ``configmap`` (whose
    ``annotations`` were read), none if it holds no :data:`CHANGED_ANNOTATION`.

    ``known``: the CNI's DaemonSets by name (in ``namespace``), counted whether or not
    their template names the ConfigMap; ``reads``: whether a DaemonSet (JSON) is one of
    the CNI's all the same (Cilium's agents of every node pool, whatever their names,
    read ``cilium-config`` through the API, naming it in no volume). Where no DaemonSet
    is found, or they or their pods cannot be listed (403), the restart stays pending
    with ``stale`` ``None``, the reason ending with the command removing the stamp once
    the pods restarted (``hint``, where given: the other way out, where no DaemonSet is
    found, such as naming it);
    listed again only after a wait growing to an hour (:class:`Settled`, where given).
    ``settled``: the stamp found done before (nothing listed), and where it is kept.
    ``changed``: what the stamp says changed, where not the ConfigMap alone.
    ``now``: the API server's time now (:meth:`ServerClock.now`): a stamp over a minute
    after it was written before the server's clock went back (a clock hours or years
    ahead, set right since), and every pod made since, restarted or not, is created
    before it; no pod is named (``stale`` ``None``), the restart said pending with how to
    end it, rather than each pod named at every restart until the clock passes it.
    """
    stamp = annotations.get(CHANGED_ANNOTATION)
    if stamp is None or (settled is not None and settled.stamp == stamp):
        return ()
    where = f"ConfigMap {namespace}/{configmap}"
    what = f"{changed or where} changed at {stamp}; {reason}"
    at = _time(stamp)
    if at is None:
        return (_unlisted(where, f"{what} (annotation {CHANGED_ANNOTATION} unreadable)",
                          known),)
    if now is not None and at > now + _BACK:
        return (_unlisted(where, (
            f"{what} (after the API server's time now, {changed_stamp(now)}: its clock "
            "went back since the write, and a pod made since may be created before the "
            "stamp; once each pod restarted: "
            f"{_removing(namespace, configmap, stamp)})"), known),)
    at_now = now or datetime.datetime.now(tz=datetime.UTC)
    if settled is not None and (said := settled.unseen(stamp, at_now)) is not None:
        return said
    found, listed, said = _listed(api_client, namespace, configmap, frozenset(known),
                                  timeout, what=what, hint=hint, stamp=stamp, reads=reads)
    if settled is not None:
        if said:
            settled.not_found(stamp, said, at_now)
        else:
            settled.found()
    if said:
        return said
    restarts = []
    for daemonset in found:
        name = str(daemonset["metadata"].get("name"))
        stale = _made_before(listed[name], daemonset, at)
        if stale:
            restarts.append(PendingRestart(f"DaemonSet {namespace}/{name}", what,
                                           tuple(sorted(stale))))
    if not restarts and settled is not None:
        settled.stamp = stamp
    return tuple(restarts)
