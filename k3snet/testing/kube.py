"""An emulated Kubernetes API server for cluster tests, and strategies for CNI objects.

No real API server runs in k3snet's tests. :class:`EmulatedApiServer` serves
kmock's ``KubernetesEmulator`` (PyPI ``kmock``) over HTTP on 127.0.0.1 from a
background thread, so the real, synchronous ``kubernetes`` client talks to it
exactly as it would to a cluster. It needs no pytest::

    with EmulatedApiServer() as server:
        server.put("v1/configmaps", {"metadata": {"name": "x", "namespace": "ns"},
                                     "data": {"net-conf.json": "{}"}})
        backend = FlannelBackend(configmap=("ns", "x"), api_client=server.api_client())

kmock's emulator keeps objects and merges patches into them; this module adds
the smallest extension the backends' contract needs (``_Emulator``):

* ``metadata.resourceVersion`` (a counter) and ``uid`` on every object, and the
  optimistic-concurrency checks of the real server: a merge patch carrying a
  ``resourceVersion`` other than the stored one, or a delete whose
  ``preconditions`` do not match, is refused with 409 and changes nothing;
* ``201 Created`` for a create (the client only decodes a created object then);
* fault injection: :meth:`EmulatedApiServer.fail` makes matching requests
  answer an error status (403, 409, 500 ...) or hang past the client's timeout,
  *before* the emulator touches its objects. (kmock's own reactions cannot do
  that: the emulator applies every write even when a reaction answers an error.)
  With ``served=True``, after: the write is made and its answer lost (a timeout, a
  proxy's 504, of a write the server applied);

* watches from a ``resourceVersion`` (every list names the server's): the last state of
  each object changed or deleted since, then the stream ends (as the real server ends
  it at ``timeoutSeconds``, here at once); :meth:`EmulatedApiServer.compact` makes an
  older version 410 Expired, as etcd's compaction does;

* lists in pages (``limit`` and ``continue``, as the real server serves them: in the
  order of namespace and name, the next page's token in ``metadata.continue``); a
  token this server did not make is refused with 400;

* kmock's request history is trimmed to the request being served (its matching
  walks the whole history for every request: quadratic over a long test), so a kmock
  reaction of your own limited by position (``emulator["get"][:1]``) matches every
  request; use
  :meth:`EmulatedApiServer.requests` for the full log.

* server-side apply (``PATCH`` with ``application/apply-patch+yaml``): the
  ``fieldManager`` is required (400 without it); a missing object is created;
  ``metadata.resourceVersion`` in the body is a precondition (409); the
  top-level ``spec`` fields each manager applied are recorded in
  ``metadata.managedFields`` (``fieldsV1``, as the real server writes them); a
  field another manager owns with a different value is a 409 conflict unless
  ``force=true``; a field the manager applied before and leaves out now is
  removed (unless another manager owns it too). As on the real server, a
  manager is its name *and* its operation: a create or merge patch records an
  ``Update`` entry for its ``fieldManager`` (else the User-Agent's product), and
  an apply by the same name conflicts with it (kubernetes/kubernetes#107417).
  Ownership is tracked per top-level ``spec`` field only.

* a schema older than the client (``EmulatedApiServer(pruned=...)``): the ``spec``
  fields named for a resource are dropped from every create, patch and apply before
  it is served, as a structural CRD schema prunes fields it does not declare (Calico's
  IPPool CRD before v3.21 has no ``disableBGPExport``).

``dryRun`` is emulated for a server-side apply alone (answered as made, nothing stored,
no resourceVersion spent); on another write kmock would act on the request.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime
import ipaddress
import json
import re
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import attrs
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from k3snet.errors import ModelError
from k3snet.model.cidr import Network
from k3snet.model.cni import (
    BLOCK_SIZE_RANGE,
    DEFAULT_BLOCK_SIZE,
    ENCAPSULATION_MODES,
    FLANNEL_BACKEND_TYPES,
    FlannelConfig,
    IPPool,
)
from k3snet.testing._once import maybe, pick

__all__ = [
    "AGENT_RESOURCES",
    "CALICO_RESOURCES",
    "EmulatedApiServer",
    "Fault",
    "flannel_configs",
    "ippools",
]

T = TypeVar("T")

CALICO_RESOURCES: tuple[str, ...] = (
    "crd.projectcalico.org/v1/ippools",
    "projectcalico.org/v3/ippools",
    "crd.projectcalico.org/v1/felixconfigurations",
    "projectcalico.org/v3/felixconfigurations",
)
"""The IPPool and FelixConfiguration resources an emulated Calico cluster serves (both
APIs by default)."""

AGENT_RESOURCES: tuple[str, ...] = (
    "coordination.k8s.io/v1/leases",
    "v1/nodes",
    "v1/events",
    "v1/configmaps",
)
"""What the agent reaches besides the CNI objects: its Lease, its Node (annotations),
Events, and the spec ConfigMap (``EmulatedApiServer(resources=CALICO_RESOURCES +
AGENT_RESOURCES)``)."""

_KINDS = {"ippools": "IPPool", "configmaps": "ConfigMap", "leases": "Lease", "nodes": "Node",
          "daemonsets": "DaemonSet", "pods": "Pod", "namespaces": "Namespace",
          "events": "Event", "felixconfigurations": "FelixConfiguration",
          "customresourcedefinitions": "CustomResourceDefinition",
          "blockaffinities": "BlockAffinity"}
_CLUSTER_SCOPED = frozenset({"ippools", "nodes", "felixconfigurations",
                             "customresourcedefinitions", "blockaffinities", "namespaces"})
_NAMESPACES_PATH = re.compile(r"/api/v1/namespaces(/[^/]+)?/?")
_NAMESPACES_ALIAS = "k3snet-namespace-objects"
"""kmock reads ``/api/v1/namespaces/X`` as the namespace X, never as the Namespace object
X: the emulator serves the Namespaces (``v1/namespaces``) under this plural instead, and
a request for a Namespace or their list is sent there."""


def _plural(plural: str) -> str:
    """The plural kmock keeps ``plural``'s objects under (:data:`_NAMESPACES_ALIAS`)."""
    return _NAMESPACES_ALIAS if plural == "namespaces" else plural
_KEPT_REQUESTS = 1


def _resource_parts(resource: str) -> tuple[str, str, str]:
    """``group/version/plural`` (or ``v1/plural`` for the core group) -> the three parts."""
    parts = resource.strip("/").split("/")
    if len(parts) == 2:
        return "", parts[0], parts[1]
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    raise ModelError(f"resource {resource!r} is not group/version/plural or v1/plural")


@attrs.frozen
class Fault:
    """Requests to answer with an error instead of serving them.

    Matches on the HTTP ``method`` (``None``: any), the resource ``plural`` and the
    object ``name`` (``None``: any). ``status`` is the error answered; ``delay``
    seconds are waited first (longer than the client's timeout: a timeout).
    ``times`` is how many requests it hits (``None``: all). ``param``: only requests
    carrying that query parameter (``"continue"``: the pages of a list after the first).
    ``retry_after``: the answer's ``Retry-After`` header, in seconds (an API server's
    429 names one: its Priority and Fairness, its max-in-flight limit). ``served``: the
    request is served first (its write made), and its answer lost: the error (after
    ``delay``: a timeout) is what the client gets of a write the server applied.
    """

    status: int = 500
    method: str | None = None
    plural: str | None = None
    name: str | None = None
    delay: float = 0.0
    times: int | None = 1
    message: str | None = None
    param: str | None = None
    retry_after: int | None = None
    served: bool = False

    def matches(self, method: str, plural: str | None, name: str | None,
                params: Mapping[str, str] | None = None) -> bool:
        """True when a request is one this fault is for."""
        return ((self.method is None or self.method.upper() == method.upper())
                and (self.plural is None or self.plural == plural)
                and (self.name is None or self.name == name)
                and (self.param is None or self.param in (params or {})))


_REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
            409: "Conflict", 422: "Invalid", 429: "TooManyRequests",
            500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}


def _applied_spec_fields(entry: Mapping[str, Any]) -> list[str]:
    """The top-level ``spec`` fields one ``managedFields`` entry owns (Apply or Update)."""
    spec = ((entry.get("fieldsV1") or {}).get("f:spec")) or {}
    return [name[2:] for name in spec if name.startswith("f:")]


def _manager_key(entry: Mapping[str, Any]) -> tuple[str, str]:
    """A manager as the real server tells them apart: its name and its operation."""
    return str(entry.get("manager")), str(entry.get("operation"))


def _spec_entry(manager: str, operation: str, api_version: str,
                fields: Iterable[str]) -> dict[str, Any]:
    return {"manager": manager, "operation": operation, "apiVersion": api_version,
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": {f"f:{f}": {} for f in sorted(fields)}}}


def _updated_managed_fields(managed: list[dict[str, Any]], manager: str, api_version: str,
                            changed: Iterable[str]) -> list[dict[str, Any]]:
    """``managed`` after an Update by ``manager`` that set the top-level spec fields
    ``changed``: they become its own, and no longer anyone else's."""
    changed = set(changed)
    if not changed:
        return managed
    out = []
    mine: set[str] = set()
    for entry in managed:
        fields = set(_applied_spec_fields(entry))
        if _manager_key(entry) == (manager, "Update"):
            mine |= fields
            continue
        out.append({**entry, "fieldsV1": {"f:spec": {f"f:{f}": {}
                                                     for f in sorted(fields - changed)}}})
    out.append(_spec_entry(manager, "Update", api_version, mine | changed))
    return out


def _list_key(item: Mapping[str, Any]) -> tuple[str, str]:
    """Where an object sorts in a list: by namespace, then name (the storage's order)."""
    metadata = item.get("metadata") or {}
    return str(metadata.get("namespace") or ""), str(metadata.get("name") or "")


def _update_manager(request: Any) -> str:
    """The manager of a create or update: ``fieldManager``, else the User-Agent's product
    (as the real server names it)."""
    given = request.params.get("fieldManager")
    if given:
        return str(given)
    agent = str(request.headers.get("User-Agent", "") or "unknown")
    return agent.split("/", 1)[0] or "unknown"


def _emulator_class() -> type[Any]:
    """The extended emulator class (built lazily: kmock is a test-only dependency)."""
    import kmock  # noqa: PLC0415 - test-only dependency
    from kmock import KubernetesError  # noqa: PLC0415

    @attrs.define(kw_only=True)
    class _Emulator(kmock.KubernetesEmulator):
        """kmock's emulator with resourceVersions, preconditions, 201s and faults."""

        _faults: list[Fault] = attrs.field(factory=list, init=False)
        _fault_lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)
        _version: int = attrs.field(default=0, init=False)
        # The oldest resourceVersion a watch may start from (EmulatedApiServer.compact).
        compacted: int = attrs.field(default=0, init=False)
        # resource -> (version, last state) of each object deleted (a watch's DELETED).
        tombstones: dict[Any, list[tuple[int, dict[str, Any]]]] = attrs.field(
            factory=dict, init=False)

        def bury(self, resource: Any, raw: Mapping[str, Any]) -> None:
            """Keep ``raw``, an object being deleted, at a new version for the watches."""
            gone = copy.deepcopy(dict(raw))
            version = self.next_version()
            gone.setdefault("metadata", {})["resourceVersion"] = version
            self.tombstones.setdefault(resource, []).append((int(version), gone))
        # (METHOD, path, body as sent): the checks below add metadata to request bodies.
        log: list[tuple[str, str, Any]] = attrs.field(factory=list, init=False)
        accepts: list[str] = attrs.field(factory=list, init=False)  # each Accept header
        queries: list[dict[str, str]] = attrs.field(factory=list, init=False)  # each query
        # resource -> the spec fields its schema does not declare (pruned on every write).
        pruned: dict[Any, frozenset[str]] = attrs.field(factory=dict, init=False)

        def add_fault(self, fault: Fault) -> None:
            with self._fault_lock:
                self._faults.append(fault)

        def clear_faults(self) -> None:
            with self._fault_lock:
                self._faults.clear()

        async def __call__(self, raw_request: Any) -> Any:
            # A Namespace or their list: the alias kmock keeps them under.
            found = _NAMESPACES_PATH.fullmatch(raw_request.rel_url.path)
            if found is not None:
                url = raw_request.rel_url
                raw_request = raw_request.clone(rel_url=url.with_path(
                    f"/api/v1/{_NAMESPACES_ALIAS}{found.group(1) or ''}").with_query(url.query))
            return await super().__call__(raw_request)

        def _take_fault(self, request: Any) -> Fault | None:
            plural = request.resource.plural if request.resource is not None else None
            name = request.name
            if name is None and isinstance(request.data, dict):  # a create names it in the body
                name = (request.data.get("metadata") or {}).get("name")
            with self._fault_lock:
                for index, fault in enumerate(self._faults):
                    if fault.matches(str(request.method.value), plural, name,
                                     request.params):
                        if fault.times is not None:
                            left = fault.times - 1
                            if left <= 0:
                                del self._faults[index]
                            else:
                                self._faults[index] = attrs.evolve(fault, times=left)
                        return fault
            return None

        async def _serve_watch(self, request: Any) -> Any:
            """A watch from ``resourceVersion``: the last state of each object of the
            resource changed or deleted since, in the order of their versions
            (``MODIFIED``, ``DELETED``), a ``BOOKMARK`` at the server's version when
            asked (``allowWatchBookmarks``) and the watch is held more than two seconds
            (the real server schedules it two seconds before the watch's
            ``timeoutSeconds`` ends, none where that moment is already past), and the
            end of the stream, as the real server ends it at
            ``timeoutSeconds`` (here at once: nothing waits).
            A version before :attr:`compacted` (or none) is answered as the real server
            answers one it no longer keeps: an ``ERROR`` event of 410 Expired."""
            yield b""  # the headers, as kmock's own watch sends them first
            since = request.params.get("resourceVersion")
            if not (since and since.isdigit()) or int(since) < self.compacted:
                yield {"type": "ERROR", "object": {
                    "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410,
                    "reason": "Expired", "message": f"too old resource version: {since}"}}
                return
            async with self._lock:
                changed: list[tuple[int, str, dict[str, Any]]] = []
                for (resource, _, _), obj in self._objects.items():
                    if resource == request.resource and not obj.deleted:
                        raw = obj.raw
                        version = int(raw["metadata"]["resourceVersion"])
                        if version > int(since):
                            changed.append((version, "MODIFIED", copy.deepcopy(raw)))
                changed += [(version, "DELETED", raw) for version, raw
                            in self.tombstones.get(request.resource, ())
                            if version > int(since)]
                now = str(self._version)
            for _, kind, raw in sorted(changed, key=lambda entry: entry[0]):
                yield {"type": kind, "object": raw}
            held = request.params.get("timeoutSeconds")
            if request.params.get("allowWatchBookmarks") == "true" and not (
                    held and held.isdigit() and int(held) <= 2):
                yield {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": now}}}

        def next_version(self) -> str:
            self._version += 1
            return str(self._version)

        def _stored(self, request: Any) -> Any:
            key = (request.resource, request.namespace, request.name)
            if key not in self._objects or self._objects[key].deleted:
                return None
            return self._objects[key]

        def _dry_run_apply(self, request: Any) -> tuple[dict[str, Any], bool]:
            """An apply with ``dryRun``: answered as made, nothing kept."""
            key = (request.resource, request.namespace, request.name)
            stored = self._stored(request)
            had = None if stored is None else copy.deepcopy(stored.raw)
            version = self._version
            try:
                return self._server_side_apply(request)
            finally:
                self._version = version
                if had is not None:
                    self.objects[key] = had
                elif key in self._objects and not self._objects[key].deleted:
                    self._objects[key].delete()

        def _server_side_apply(self, request: Any) -> tuple[dict[str, Any], bool]:
            """Serve one apply request (see the module docs); returns the stored object."""
            manager = request.params.get("fieldManager")
            if not manager:
                raise KubernetesError(status=400, reason="BadRequest",
                                      message="PATCH /apply: fieldManager is required for apply "
                                              "requests", details={"name": request.name or ""})
            force = str(request.params.get("force", "")).lower() == "true"
            data = copy.deepcopy(request.data) if isinstance(request.data, dict) else {}
            key = (request.resource, request.namespace, request.name)
            stored = self._stored(request)
            body_meta = data.get("metadata") or {}
            given = data.get("spec")
            spec: dict[str, Any] = given if isinstance(given, dict) else {}
            applied_fields = sorted(spec)
            if stored is None:
                raw: dict[str, Any] = data
                metadata = raw.setdefault("metadata", {})
                metadata["uid"] = str(uuid.uuid4())
                metadata.setdefault("creationTimestamp", datetime.datetime.now(
                    tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
                managed: list[dict[str, Any]] = []
                taken: set[str] = set()
            else:
                raw = copy.deepcopy(stored.raw)
                metadata = raw.setdefault("metadata", {})
                wanted = body_meta.get("resourceVersion")
                if wanted is not None and str(wanted) != str(metadata.get("resourceVersion")):
                    raise KubernetesError(
                        status=409, reason="Conflict",
                        message=f'Operation cannot be fulfilled on {request.resource.plural} '
                                f'"{request.name}": the object has been modified; please apply '
                                "your changes to the latest version and try again",
                        details={"name": request.name or ""})
                managed = list(metadata.get("managedFields") or [])
                current = raw.setdefault("spec", {})
                me = (manager, "Apply")
                owners = {_manager_key(e): _applied_spec_fields(e) for e in managed}
                clashes = sorted(
                    (field, owner[0]) for owner, fields in owners.items() if owner != me
                    for field in fields if field in spec and current.get(field) != spec[field])
                taken = {field for field, _ in clashes}  # forced: only these change hands
                if clashes and not force:
                    listed = ", ".join(f'conflict with "{o}": .spec.{f}' for f, o in clashes)
                    raise KubernetesError(status=409, reason="Conflict",
                                          message=f"Apply failed with {len(clashes)} "
                                                  f"conflict(s): {listed}",
                                          details={"name": request.name or ""})
                others = {f for owner, fields in owners.items() if owner != me
                          for f in fields}
                for field in owners.get(me, ()):
                    if field not in spec and field not in others:
                        current.pop(field, None)
                current.update(spec)
                for part in ("labels", "annotations"):
                    if isinstance(body_meta.get(part), dict):
                        metadata.setdefault(part, {}).update(body_meta[part])
            managed = [e for e in managed if _manager_key(e) != (manager, "Apply")]
            if force:  # forced: the fields taken over are no longer the others'; fields
                # applied with the value they had stay shared, as on the real server
                for entry in managed:
                    fields = [f for f in _applied_spec_fields(entry) if f not in taken]
                    entry["fieldsV1"] = {"f:spec": {f"f:{f}": {} for f in fields}}
            managed.append(_spec_entry(manager, "Apply", raw.get("apiVersion", ""),
                                       applied_fields))
            metadata["managedFields"] = managed
            metadata["resourceVersion"] = self.next_version()
            self.objects[key] = raw
            return copy.deepcopy(raw), stored is None

        async def _render_error(self, exc: Exception) -> Any:
            """A Kubernetes error as the API server's Status; kmock's own puts its
            formatted traceback in the details of one that has none (each 404 of a
            missing object), which cost a 404 half its time here."""
            if not isinstance(exc, KubernetesError) or exc.details:
                return await super()._render_error(exc)
            import aiohttp.web  # noqa: PLC0415 - test-only dependency (via kmock)

            return aiohttp.web.json_response({
                "apiVersion": "v1", "kind": "Status", "metadata": {}, "code": exc.status,
                "status": "Failure", "reason": exc.reason or type(exc).__name__,
                "message": exc.message or repr(exc), "details": {}}, status=exc.status)

        async def _handle(self, request: Any) -> Any:
            path = request.url.path  # as the client sent it (see __call__)
            if path.startswith(f"/api/v1/{_NAMESPACES_ALIAS}"):
                path = "/api/v1/namespaces" + path[len(f"/api/v1/{_NAMESPACES_ALIAS}"):]
            self.log.append((str(request.method.value), path,
                             copy.deepcopy(request.data)))
            self.accepts.append(str(request.headers.get("Accept", "")))
            self.queries.append({str(k): str(v) for k, v in request.params.items()})
            # kmock matches each request against views over *all* past requests (O(n)
            # each, quadratic over a test); only the current one matters for matching,
            # which runs before this request's first await (kept: it alone; a third of
            # a Cilium conformance run's server time went to 8).
            del self._requests[:-_KEPT_REQUESTS]
            fault = self._take_fault(request)
            if fault is not None:
                if fault.served:
                    await self._serve(request)  # made; its answer is lost
                if fault.delay:
                    await asyncio.sleep(fault.delay)
                error = KubernetesError(
                    status=fault.status, reason=_REASONS.get(fault.status, "Failure"),
                    message=fault.message or f"injected {fault.status} for {request.method.value}"
                                             f" {request.url.path}",
                    details={"name": request.name or ""})
                if fault.retry_after is None:
                    raise error
                answer = await self._render_error(error)
                answer.headers["Retry-After"] = str(fault.retry_after)
                return answer
            return await self._serve(request)

        def _prune(self, request: Any) -> None:
            """Drop the spec fields the resource's schema does not declare from a write."""
            fields = self.pruned.get(request.resource) if request.resource is not None else None
            spec = request.data.get("spec") if isinstance(request.data, dict) else None
            if fields and isinstance(spec, dict):
                for field in fields:
                    spec.pop(field, None)

        async def _serve(self, request: Any) -> Any:
            """Serve ``request`` (no fault): its answer."""
            if str(request.method.value) in ("POST", "PUT", "PATCH"):
                self._prune(request)
            action = request.action
            content_type = str(request.headers.get("Content-Type", ""))
            if (request.resource is not None and str(request.method.value) == "PATCH"
                    and content_type.startswith("application/apply-patch")):
                import aiohttp.web  # noqa: PLC0415 - test-only dependency (via kmock)

                async with self._lock:
                    stored, created = (self._dry_run_apply(request)
                                       if request.params.get("dryRun")
                                       else self._server_side_apply(request))
                return aiohttp.web.json_response(stored, status=201 if created else 200)
            data = request.data if isinstance(request.data, dict) else None
            if request.resource is not None and action is not None:
                self._precondition(request, str(action.value), data)
            response = await super()._handle(request)
            if (action is not None and str(action.value) == "CREATE"
                    and response.status == 200 and not response.prepared):
                response.set_status(201)
            return response

        async def _serve_list(self, request: Any) -> Any:
            """kmock's list, in pages when ``limit`` is asked (see the module docs), at the
            server's resourceVersion (a watch from it sees every change after)."""
            answer: Any = await super()._serve_list(request)
            answer = {**answer, "metadata": {**(answer.get("metadata") or {}),
                                             "resourceVersion": str(self._version)}}
            params = request.params
            if "limit" not in params and "continue" not in params:
                return answer
            items = sorted(answer["items"], key=_list_key)
            token = params.get("continue")
            if token:
                try:
                    after = json.loads(base64.b64decode(token, validate=True))
                except ValueError:
                    after = None
                # Its own tokens only: [namespace, name] (another value was a TypeError
                # below, which kmock answered as a 500, a server error).
                if not (isinstance(after, list) and len(after) == 2
                        and all(isinstance(part, str) for part in after)):
                    raise KubernetesError(status=400, reason="BadRequest",
                                          message="continue key is not valid")
                after = tuple(after)
                items = [item for item in items if _list_key(item) > after]
            limit = int(params.get("limit") or 0)
            metadata = dict(answer.get("metadata") or {})
            if 0 < limit < len(items):
                items = items[:limit]
                metadata["continue"] = base64.b64encode(
                    json.dumps(list(_list_key(items[-1]))).encode()).decode()
            return {**answer, "metadata": metadata, "items": items}

        def _precondition(self, request: Any, action: str, data: dict[str, Any] | None) -> None:
            plural = request.resource.plural
            conflict = KubernetesError(
                status=409, reason="Conflict",
                message=f'Operation cannot be fulfilled on {plural} "{request.name}": the '
                        f"object has been modified; please apply your changes to the latest "
                        f"version and try again", details={"name": request.name or ""})
            manager = _update_manager(request)
            if action == "CREATE" and data is not None:
                metadata = data.setdefault("metadata", {})
                spec = data.get("spec")
                if isinstance(spec, dict) and spec:
                    metadata["managedFields"] = [_spec_entry(
                        manager, "Update", str(data.get("apiVersion", "")), spec)]
                metadata["resourceVersion"] = self.next_version()
                metadata["uid"] = str(uuid.uuid4())
                metadata.setdefault("creationTimestamp", datetime.datetime.now(
                    tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
            elif action == "UPDATE" and data is not None:
                stored = self._stored(request)
                metadata = data.get("metadata")
                if not isinstance(metadata, dict):
                    metadata = data["metadata"] = {}
                wanted = metadata.get("resourceVersion")
                if stored is not None and wanted is not None:
                    have = (stored.get("metadata") or {}).get("resourceVersion")
                    if str(wanted) != str(have):
                        raise conflict
                spec = data.get("spec")
                if stored is not None and isinstance(spec, dict):
                    now = stored.get("spec") or {}
                    changed = [f for f, v in spec.items() if now.get(f) != v]
                    managed = list((stored.get("metadata") or {}).get("managedFields") or [])
                    updated = _updated_managed_fields(
                        managed, manager, str(stored.get("apiVersion", "")), changed)
                    if updated is not managed:  # a merge patch replaces the list whole
                        metadata["managedFields"] = updated
                # The merge patch itself carries the new version into the stored object.
                metadata["resourceVersion"] = self.next_version()
            elif action == "DELETE":
                self._delete_precondition(request, data, conflict)

        def _delete_precondition(self, request: Any, data: dict[str, Any] | None,
                                 conflict: Exception) -> None:
            """A delete's ``preconditions`` (409 where they do not hold); the object
            deleted kept for the watches (:meth:`bury`)."""
            stored = self._stored(request)
            if stored is None:
                return
            preconditions = (data or {}).get("preconditions") or {}
            meta = stored.get("metadata") or {}
            for field in ("resourceVersion", "uid"):
                wanted = preconditions.get(field)
                if wanted is not None and str(wanted) != str(meta.get(field)):
                    raise conflict
            self.bury(request.resource, stored.raw)

    return _Emulator


class EmulatedApiServer:
    """kmock's Kubernetes emulator on ``127.0.0.1:<random port>``, in a background thread.

    ``resources`` are declared so that listing them works while they hold no
    object (like CRDs installed in a cluster). ``pruned`` maps a resource to the
    ``spec`` fields its schema lacks: every write drops them, as an older CRD's
    structural schema does (``{"crd.projectcalico.org/v1/ippools": ["disableBGPExport"]}``
    is Calico's IPPool CRD before v3.21). Use as a context manager, or
    :meth:`start` / :meth:`stop`.
    """

    def __init__(self, *, resources: Iterable[str] = CALICO_RESOURCES,
                 pruned: Mapping[str, Iterable[str]] | None = None) -> None:
        self._resources = tuple(resources)
        for resource in self._resources:
            _resource_parts(resource)
        self._pruned = {resource: frozenset(fields)
                        for resource, fields in (pruned or {}).items()}
        for resource in self._pruned:
            _resource_parts(resource)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._startup_error: BaseException | None = None
        self._clients: list[Any] = []
        self.emulator: Any = None
        self.port = 0

    # ------------------------------------------------------------ life cycle

    def start(self) -> EmulatedApiServer:
        """Start serving; returns self."""
        if self._thread is not None:
            raise RuntimeError("the emulated API server is already running")
        self._thread = threading.Thread(target=self._run, name="k3snet-kube-emulator",
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout=30):
            raise RuntimeError("the emulated API server did not start within 30 s")
        if self._startup_error is not None:
            raise RuntimeError(f"the emulated API server failed to start: "
                               f"{self._startup_error}") from self._startup_error
        return self

    def stop(self) -> None:
        """Stop serving and close the API clients handed out."""
        for client in self._clients:
            client.close()
        self._clients.clear()
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._thread = None

    def __enter__(self) -> EmulatedApiServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # noqa: BLE001 - reported to start(), which re-raises
            self._startup_error = exc
            self._ready.set()
        finally:
            loop.close()

    async def _serve(self) -> None:
        import aiohttp.test_utils  # noqa: PLC0415 - test-only dependency (via kmock)
        import kmock  # noqa: PLC0415

        self._stopping = asyncio.Event()
        emulator = _emulator_class()()
        for resource in self._resources:
            group, version, plural = _resource_parts(resource)
            key = kmock.resource(group, version, _plural(plural))
            emulator.resources[key] = kmock.ResourceInfo(
                kind=_KINDS.get(plural, plural.capitalize()),
                namespaced=plural not in _CLUSTER_SCOPED,
                verbs={"get", "list", "create", "patch", "delete"})
        for resource, fields in self._pruned.items():
            emulator.pruned[kmock.resource(*_resource_parts(resource))] = fields
        self.emulator = emulator
        async with emulator:
            # aiohttp's raw server, not kmock.Server: that one also patches aiohttp's
            # resolver process-wide, which a thread-hosted server must not do.
            server = aiohttp.test_utils.RawTestServer(emulator, host="127.0.0.1", port=0)
            await server.start_server()
            try:
                self.port = int(server.port or 0)
                self._ready.set()
                await self._stopping.wait()
            finally:
                await server.close()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def api_client(self, *, retries: bool = False) -> Any:
        """A ``kubernetes.client.ApiClient`` for this server (closed by :meth:`stop`).

        Retries are off by default, so a test of a timeout waits one timeout, not four.
        """
        from kubernetes import client  # noqa: PLC0415 - optional dependency (k3snet[kube])

        configuration = client.Configuration()
        configuration.host = self.url
        configuration.retries = None if retries else False
        api = client.ApiClient(configuration)
        self._clients.append(api)
        return api

    # ------------------------------------------------------------ objects and faults

    def _call(self, function: Callable[[], T]) -> T:
        """Run ``function`` on the server's loop (between requests, never inside one)."""
        assert self._loop is not None, "the emulated API server is not running"

        async def run() -> T:
            return function()

        coroutine: Coroutine[Any, Any, T] = run()
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)

    def _key(self, resource: str, namespace: str | None, name: str) -> tuple[Any, ...]:
        import kmock  # noqa: PLC0415

        group, version, plural = _resource_parts(resource)
        return (kmock.resource(group, version, _plural(plural)), namespace, name)

    def put(self, resource: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Store ``obj`` as is (a seed: no validation), with a fresh resourceVersion and uid."""
        data = copy.deepcopy(dict(obj))
        metadata = data.setdefault("metadata", {})
        name, namespace = metadata["name"], metadata.get("namespace")

        def store() -> dict[str, Any]:
            metadata["resourceVersion"] = self.emulator.next_version()
            metadata.setdefault("uid", str(uuid.uuid4()))
            self.emulator.objects[self._key(resource, namespace, name)] = data
            return copy.deepcopy(data)

        return self._call(store)

    def get(self, resource: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """A copy of the stored object, or None."""
        key = self._key(resource, namespace, name)

        def read() -> dict[str, Any] | None:
            objects = self.emulator.objects
            if key not in objects or objects[key].deleted:
                return None
            found: dict[str, Any] = copy.deepcopy(objects[key].raw)
            return found

        return self._call(read)

    def delete(self, resource: str, name: str, namespace: str | None = None) -> bool:
        """Delete a stored object behind every client's back (drift); False if absent."""
        key = self._key(resource, namespace, name)

        def remove() -> bool:
            objects = self.emulator.objects
            if key not in objects or objects[key].deleted:
                return False
            # A deletion is a change a watch sees, at a version of its own.
            self.emulator.bury(key[0], objects[key].raw)
            objects[key].delete()
            return True

        return self._call(remove)

    def compact(self) -> None:
        """Forget the history before now, as etcd's compaction does: a watch from an
        earlier resourceVersion is answered 410 Expired (the client lists again)."""
        def forget() -> None:
            self.emulator.compacted = self.emulator._version

        self._call(forget)

    def objects(self, resource: str) -> list[dict[str, Any]]:
        """Copies of every stored object of ``resource``, sorted by namespace and name."""
        wanted = self._key(resource, None, "")[0]

        def read() -> list[dict[str, Any]]:
            found = []
            for (res, namespace, name), obj in self.emulator.objects.items():
                if res == wanted and not obj.deleted:
                    found.append(((namespace or "", name), copy.deepcopy(obj.raw)))
            return [obj for _, obj in sorted(found, key=lambda pair: pair[0])]

        return self._call(read)

    def fail(self, status: int = 500, *, method: str | None = None, plural: str | None = None,
             name: str | None = None, delay: float = 0.0, times: int | None = 1,
             message: str | None = None, param: str | None = None,
             retry_after: int | None = None, served: bool = False) -> Fault:
        """Make matching requests fail (see :class:`Fault`); returns the fault."""
        fault = Fault(status=status, method=method,
                      plural=None if plural is None else _plural(plural), name=name, delay=delay,
                      times=times, message=message, param=param, retry_after=retry_after,
                      served=served)
        self.emulator.add_fault(fault)
        return fault

    def clear_faults(self) -> None:
        """Remove every pending fault."""
        self.emulator.clear_faults()

    def params(self) -> list[dict[str, str]]:
        """The query parameters of every request served so far, in the order of
        :meth:`requests` (kmock serves a read whatever ``resourceVersion`` it names)."""
        def read() -> list[dict[str, str]]:
            return [dict(p) for p in self.emulator.queries]

        return self._call(read)

    def accepts(self) -> list[str]:
        """The ``Accept`` header of every request served so far, in the order of
        :meth:`requests` (kmock answers JSON whatever it asks for)."""
        def read() -> list[str]:
            return list(self.emulator.accepts)

        return self._call(read)

    def requests(self) -> list[tuple[str, str, Any]]:
        """``(METHOD, path, body)`` of every request served so far, in order (body parsed
        from JSON, or None)."""
        def read() -> list[tuple[str, str, Any]]:
            log: list[tuple[str, str, Any]] = copy.deepcopy(self.emulator.log)
            return log

        return self._call(read)


# ---------------------------------------------------------------- strategies

_POOL_NAMES = ("k3snet-pods-a", "k3snet-pods-b", "k3snet-nonat-c", "k3snet-nonat-d",
               "k3snet-e")
_POOL_CIDRS = ("10.100.0.0/16", "10.101.0.0/24", "10.102.0.0/26", "192.168.2.0/24",
               "192.168.2.8/29", "fd00:100::/64", "fd00:101::/120")


def ippools(
    names: Sequence[str] = _POOL_NAMES,
    cidrs: Sequence[str | Network] = _POOL_CIDRS,
) -> SearchStrategy[IPPool]:
    """Valid IP pools: names and CIDRs from small pools (so states share keys), other
    fields random within what Calico accepts."""
    if isinstance(names, str) or not names:
        raise ModelError("names must be a non-empty sequence of pool names")
    if isinstance(cidrs, str) or not cidrs:
        raise ModelError("cidrs must be a non-empty sequence of CIDRs")
    networks = [ipaddress.ip_network(c) for c in cidrs]

    @st.composite
    def build(draw: st.DrawFn) -> IPPool:
        cidr = draw(pick(networks))
        family = cidr.version
        low, high = BLOCK_SIZE_RANGE[family]
        block = draw(pick(sorted({max(cidr.prefixlen, low),
                                   max(cidr.prefixlen, DEFAULT_BLOCK_SIZE[family]), high})))
        encapsulation = draw(pick(("none", "ipip", "vxlan") if family == 4
                                   else ("none", "vxlan")))
        mode = draw(pick(ENCAPSULATION_MODES[1:]))
        return IPPool(
            draw(pick(names)),
            cidr,
            nat_outgoing=draw(st.booleans()),
            disabled=draw(st.booleans()),
            ipip_mode=mode if encapsulation == "ipip" else "Never",
            vxlan_mode=mode if encapsulation == "vxlan" else "Never",
            block_size=block,
            node_selector=draw(pick(("all()", "!all()", "kubernetes.io/os == 'linux'"))),
            disable_bgp_export=draw(st.booleans()),
        )

    return build()


def flannel_configs(target: str) -> SearchStrategy[FlannelConfig]:
    """Flannel configs of ``target``: a random subset of keys, with valid values
    (``EnableNFTables`` only in a ConfigMap's: K3s ignores it in a node's file)."""
    nftables = FlannelConfig(target).target.startswith("configmap:")  # validated up front

    # Options of the type's backend, each of the Go type it decodes it into (the backend
    # refuses to write an option flannel would ignore: host-gw reads none).
    options: dict[str, SearchStrategy[dict[str, Any]]] = {
        "vxlan": st.fixed_dictionaries({}, optional={
            "VNI": st.integers(1, 9000), "Port": st.integers(1, 9000),
            "DirectRouting": st.booleans(), "MTU": st.integers(1, 9000),
        }),
        "host-gw": st.just({}),
        "wireguard": st.fixed_dictionaries({}, optional={
            "ListenPort": st.integers(1, 9000), "MTU": st.integers(1, 9000),
            "PersistentKeepaliveInterval": st.integers(0, 60),
        }),
    }
    # Keys flannel does not know, as a newer flannel's would be (the backend refuses to
    # write SubnetLen, SubnetMin ...: flannel's kube subnet manager never reads them).
    extra = st.fixed_dictionaries({}, optional={
        "k3snet-test": st.integers(0, 9) | st.text("abc", max_size=3),
        "x-site": st.sampled_from(("rack-1", "rack-2")),
    })

    @st.composite
    def build(draw: st.DrawFn) -> FlannelConfig:
        backend_type = draw(maybe(pick(FLANNEL_BACKEND_TYPES[:3])))
        ipv6_network = draw(maybe(pick(("fd00:42::/56",))))
        # IPv6 on only with its network: flannel does not start on an enabled family
        # without one (a K3s file's "::/0" reads as none), and the backend refuses that.
        enable_ipv6 = draw(maybe(st.booleans()) if ipv6_network else maybe(st.just(False)))
        # and IPv4 off only with IPv6 on: with no family on flanneld stops
        enable_ipv4 = draw(maybe(st.booleans()) if enable_ipv6 else maybe(st.just(True)))
        return FlannelConfig(
            target,
            network=draw(maybe(pick(("10.42.0.0/16", "10.244.0.0/16")))),
            ipv6_network=ipv6_network,
            enable_ipv4=enable_ipv4,
            enable_ipv6=enable_ipv6,
            # K3s' embedded flannel, the reader of a node's file, ignores EnableNFTables:
            # the backend refuses to write it there.
            enable_nftables=draw(maybe(st.booleans())) if nftables else None,
            backend_type=backend_type,
            backend_options=draw(options[backend_type]) if backend_type is not None else {},
            extra=draw(extra),
        )

    return build()
