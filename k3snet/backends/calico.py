"""The ``calico`` backend: Calico ``IPPool`` resources through the Kubernetes API.

Two APIs serve IP pools:

* ``crd.projectcalico.org/v1`` (``api="crd"``, the default): the CRDs Calico
  stores its data in, served by every cluster running Calico in Kubernetes
  datastore mode, even without the Calico API server;
* ``projectcalico.org/v3`` (``api="v3"``): the Calico API server, which adds
  defaulting and validation. ``api="auto"`` uses v3 when the server offers it.

**Ownership.** Pools k3snet creates carry the label
``app.kubernetes.io/managed-by: k3snet``; every other pool is foreign: observed
(so a wanted pool can be *met* by the cluster's default pool, or reported as a
*conflict* with one that overlaps it), never changed.

**Minimal writes.** A pool is created with ``POST``; a change of mutable fields
is one JSON merge patch holding only the fields that differ and the
``resourceVersion`` read (a concurrent edit gives 409, nothing is written); the
field manager ``k3snet`` is sent with every write. A merge patch rather than
server-side apply: the patch is exactly the fields that differ, it works the
same on the CRD and v3 APIs, and kmock's emulator (the test API server) serves
it. Each request goes to one object, so ``apply`` undoes what it did when a
later request fails (deletes what it created, patches back what it patched,
re-creates what it deleted) and reports it in the :class:`~k3snet.errors.ApplyError`.

**Disruptive changes.** Calico forbids changing a pool's ``cidr`` or
``blockSize`` in place; the only way is delete and re-create, which takes the
addresses of running pods out of IPAM. Such a *replace* is marked by
:func:`disruptive_changes` and refused by ``apply`` and ``check`` unless the
backend was built with ``allow_disruptive=True``.

**Masquerade policy.** :func:`k3snet.spec.compile_ippools` turns a spec into pools: the pod
CIDRs with ``natOutgoing`` (unless the mode is ``off``), and for each CIDR
exempt from NAT a disabled pool covering it, since Felix never masquerades
traffic to an address inside any pool (Calico's documented way to exclude a
destination from outgoing NAT).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import attrs

from k3snet.backends.base import ApplyResult, ensure_capable
from k3snet.backends.kit import BackendBase
from k3snet.errors import (
    ApplyError,
    BackendError,
    ModelError,
    PlanError,
    RollbackError,
)
from k3snet.kube import (
    DEFAULT_TIMEOUT,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    KubeApiError,
    kube_call,
    make_api_client,
)
from k3snet.model.cni import (
    IPPool,
)
from k3snet.model.state import State
from k3snet.planner import Change, Plan

__all__ = [
    "APIS",
    "DISRUPTIVE_FIELDS",
    "CalicoBackend",
    "disruptive_changes",
    "disruptive_fields",
    "pool_from_resource",
]

ApiChoice = Literal["crd", "v3", "auto"]
APIS: Mapping[str, tuple[str, str]] = {
    "crd": ("crd.projectcalico.org", "v1"),
    "v3": ("projectcalico.org", "v3"),
}
"""API name -> (group, version) serving IP pools."""

PLURAL = "ippools"
KIND = "IPPool"

DISRUPTIVE_FIELDS: tuple[str, ...] = ("cidr", "blockSize")
"""IPPool fields Calico forbids changing in place."""

_SPEC_FIELDS = ("cidr", "natOutgoing", "disabled", "ipipMode", "vxlanMode", "blockSize",
                "nodeSelector", "disableBGPExport")


# ---------------------------------------------------------------- disruptive changes


def disruptive_fields(change: Change) -> tuple[str, ...]:
    """The fields of an IPPool replace that Calico cannot change in place (Calico spelling)."""
    before, after = change.before, change.after
    if change.action != "replace" or not isinstance(before, IPPool) or not isinstance(
        after, IPPool
    ):
        return ()
    fields = []
    if before.cidr != after.cidr:
        fields.append("cidr")
    if before.block_size != after.block_size:
        fields.append("blockSize")
    return tuple(fields)


def disruptive_changes(plan: Plan) -> tuple[Change, ...]:
    """The changes of ``plan`` that delete and re-create a pool (mark them in plan output)."""
    return tuple(c for c in plan.changes if disruptive_fields(c))


def _disruptive_message(change: Change) -> str:
    fields = ", ".join(disruptive_fields(change))
    before, after = change.before, change.after
    assert isinstance(before, IPPool) and isinstance(after, IPPool)  # noqa: PT018
    return (f"IPPool {before.name}: changing {fields} ({before.cidr} blockSize "
            f"{before.block_size} -> {after.cidr} blockSize {after.block_size}) means deleting "
            f"and re-creating the pool, which Calico forbids doing in place and which disrupts "
            f"pods with addresses from it; allow it explicitly (allow_disruptive=True, "
            f"--allow-disruptive) or give the new pool another name")


# ---------------------------------------------------------------- resources <-> pools


def pool_from_resource(item: Mapping[str, Any]) -> IPPool:
    """Model an IPPool resource (a dict as the API returns it); raises ModelError if invalid.

    Unset fields take Calico's defaults; the deprecated ``nat-outgoing`` spelling
    of the v1 CRD is read when ``natOutgoing`` is absent.
    """
    try:
        name = item["metadata"]["name"]
        spec = item.get("spec") or {}
        if not isinstance(spec, Mapping):
            raise ModelError(f"IPPool {name}: spec is not an object")
        if "cidr" not in spec:
            raise ModelError(f"IPPool {name}: spec.cidr is missing")
        nat = spec.get("natOutgoing", spec.get("nat-outgoing", False))
        return IPPool(
            name,
            spec["cidr"],
            nat_outgoing=nat,
            disabled=spec.get("disabled", False),
            ipip_mode=spec.get("ipipMode") or "Never",
            vxlan_mode=spec.get("vxlanMode") or "Never",
            block_size=spec.get("blockSize") or None,
            node_selector=spec.get("nodeSelector") or "all()",
            disable_bgp_export=spec.get("disableBGPExport", False),
        )
    except ModelError as exc:
        name = (item.get("metadata") or {}).get("name", "?")
        message = str(exc)
        prefix = f"IPPool {name}"
        raise ModelError(message if message.startswith(prefix) else f"{prefix}: {message}") \
            from exc
    except (KeyError, TypeError, AttributeError) as exc:
        raise ModelError(f"IPPool resource without a name or spec: {exc}") from exc


def _owned_label(item: Mapping[str, Any]) -> bool:
    labels = (item.get("metadata") or {}).get("labels") or {}
    return bool(labels.get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE)


@attrs.frozen
class _Listing:
    """One read of every pool: owned ones modelled, foreign ones modelled when possible."""

    owned: dict[str, IPPool]
    owned_raw: dict[str, dict[str, Any]]
    foreign: dict[str, IPPool | None]  # None: there, but not modelled (invalid)


# ---------------------------------------------------------------- the backend


class CalicoBackend(BackendBase):
    """Calico IP pools through the Kubernetes API (``crd.projectcalico.org/v1`` or v3).

    ``api_client`` is a ``kubernetes.client.ApiClient`` (else one is built from
    ``kubeconfig``/``context`` or the in-cluster service account). ``api`` picks
    the API (see the module docs). ``allow_disruptive`` lets ``apply`` delete and
    re-create pools whose ``cidr``/``blockSize`` change. ``timeout`` bounds each request.
    """

    name = "calico"

    def __init__(
        self,
        *,
        api_client: Any = None,
        api: ApiChoice = "crd",
        allow_disruptive: bool = False,
        field_manager: str = "k3snet",
        kubeconfig: str | None = None,
        context: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__()
        if api not in (*APIS, "auto"):
            raise ModelError(f"calico backend: api must be crd, v3 or auto, got {api!r}")
        if not field_manager or len(field_manager) > 128:
            raise ModelError(f"calico backend: field manager must be 1..128 characters, got "
                             f"{field_manager!r}")
        self._client, self._owns_client = make_api_client(
            api_client, kubeconfig=kubeconfig, context=context)
        from kubernetes import client  # noqa: PLC0415 - optional dependency (k3snet[kube])

        self._objects = client.CustomObjectsApi(self._client)
        self._api_choice = api
        self._api: tuple[str, str] | None = APIS.get(api)
        self.allow_disruptive = allow_disruptive
        self.field_manager = field_manager
        self.timeout = timeout

    @property
    def capabilities(self) -> frozenset[str]:
        """``{"ippool"}``."""
        return frozenset({"ippool"})

    @property
    def api(self) -> tuple[str, str]:
        """(group, version) in use; with ``api="auto"``, found on first use."""
        if self._api is None:
            self._api = self._discover()
        return self._api

    def _discover(self) -> tuple[str, str]:
        """v3 when the Calico API server serves ``ippools`` there, else the CRD API."""
        group, version = APIS["v3"]
        try:
            served = kube_call(
                f"discover {group}/{version}",
                lambda: self._objects.get_api_resources(group, version,
                                                        _request_timeout=self.timeout),
                timeout=self.timeout,
            )
        except KubeApiError as exc:
            if exc.status == 404:
                return APIS["crd"]
            raise
        names = {r.name for r in (served.resources or ())}
        return APIS["v3"] if PLURAL in names else APIS["crd"]

    # ------------------------------------------------------------ reading

    def _list(self) -> _Listing:
        group, version = self.api
        try:
            result = kube_call(
                f"list IPPools ({group}/{version})",
                lambda: self._objects.list_cluster_custom_object(
                    group, version, PLURAL, _request_timeout=self.timeout),
                timeout=self.timeout,
            )
        except KubeApiError as exc:
            if exc.status == 404:
                server = " with its API server" if (group, version) == APIS["v3"] else ""
                raise KubeApiError(f"{exc}; the API {group}/{version} is not served: is Calico "
                                   f"installed{server}?", status=404) from exc
            raise
        owned: dict[str, IPPool] = {}
        owned_raw: dict[str, dict[str, Any]] = {}
        foreign: dict[str, IPPool | None] = {}
        items = result.get("items") if isinstance(result, dict) else None
        for item in items or ():
            name = (item.get("metadata") or {}).get("name")
            if not isinstance(name, str):
                continue
            if _owned_label(item):
                try:
                    owned[name] = pool_from_resource(item)
                except ModelError as exc:
                    raise BackendError(
                        f"{exc} (the pool is labelled as k3snet's: fix it or delete it, k3snet "
                        "does not guess what it should be)") from exc
                owned_raw[name] = item
            else:
                try:
                    foreign[name] = pool_from_resource(item)
                except ModelError:
                    foreign[name] = None  # not modelled: never raise on foreign things
        return _Listing(owned, owned_raw, foreign)

    def observe(self) -> State:
        """Owned pools (k3snet's label) and the foreign pools k3snet can model."""
        listing = self._list()
        return State(owned=listing.owned.values(),
                     foreign=[p for p in listing.foreign.values() if p is not None])

    # ------------------------------------------------------------ checking

    def _problems(self, plan: Plan, listing: _Listing) -> list[str]:
        """Why ``plan`` does not fit the pools listed (empty when it does)."""
        problems: list[str] = []
        owned: dict[str, IPPool] = dict(listing.owned)
        for change in plan.changes:
            subject = change.subject
            if not isinstance(subject, IPPool):
                problems.append(f"calico backend: cannot apply {change}: not an IPPool")
                continue
            name = subject.name
            if name in listing.foreign:
                problems.append(f"IPPool {name} exists and is not k3snet's (no "
                                f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE} label); k3snet never "
                                f"changes it: {change}")
                continue
            current = owned.get(name)
            if change.action == "add":
                if current is not None:
                    problems.append(f"cannot add {subject}: k3snet's IPPool {name} already "
                                    f"exists ({current}); observe and plan again")
                    continue
            elif current is None or current != change.before:
                found = "no such k3snet pool" if current is None else str(current)
                problems.append(f"cannot {change.action} {change.before}: found {found}; "
                                "observe and plan again")
                continue
            if disruptive_fields(change) and not self.allow_disruptive:
                problems.append(_disruptive_message(change))
            if change.after is None:
                owned.pop(name, None)
            else:
                owned[name] = subject
        return problems

    def check(self, plan: Plan) -> tuple[str, ...]:
        """Problems applying ``plan`` would hit; nothing is written.

        (No server-side dry run: the emulated API server used in tests would act on it.)
        """
        try:
            ensure_capable(self, plan)
            if not plan.changes:
                return ()
            return tuple(self._problems(plan, self._list()))
        except (PlanError, BackendError) as exc:
            return (str(exc),)

    # ------------------------------------------------------------ applying

    def apply(self, plan: Plan) -> ApplyResult:
        """Apply every change, or undo what was done and raise ApplyError."""
        ensure_capable(self, plan)
        if not plan.changes:
            return ApplyResult(self.name, (), operations=0)
        try:
            listing = self._list()
        except BackendError as exc:
            raise ApplyError(f"{exc}; nothing was changed") from exc
        problems = self._problems(plan, listing)
        if problems:
            raise PlanError("the plan does not fit the cluster; nothing was changed:\n  "
                            + "\n  ".join(problems))
        run = _Run(self, listing)
        done: list[Change] = []
        fail_at = self.faults.take(plan)
        for index, change in enumerate(plan.changes):
            try:
                if index == fail_at:
                    raise KubeApiError(f"injected failure (fault hook) at change {index}")
                run.change(change)
            except KubeApiError as exc:
                rolled_back = [c.inverse() for c in reversed(done)]
                try:
                    run.undo_all()
                except KubeApiError as undo_exc:
                    raise RollbackError(
                        f"{exc}; undoing the {len(done)} change(s) applied before it failed too "
                        f"({undo_exc}): the IP pools may be half-changed, observe them",
                        failed=change, done=done,
                    ) from exc
                raise ApplyError(f"{exc}; the IP pools are as they were", failed=change,
                                 done=done, rolled_back=rolled_back) from exc
            done.append(change)
        return ApplyResult(self.name, tuple(done), operations=run.operations)

    def close(self) -> None:
        """Release the API client if this backend built it (idempotent)."""
        if self._owns_client and self._client is not None:
            self._client.close()
            self._client = None
        super().close()


class _Run:
    """One apply: the requests made, and how to undo each of them."""

    def __init__(self, backend: CalicoBackend, listing: _Listing) -> None:
        self.backend = backend
        self.group, self.version = backend.api
        self.raw = dict(listing.owned_raw)  # name -> the resource as last seen or written
        self.undo: list[Callable[[], None]] = []
        from kubernetes import client  # noqa: PLC0415 - optional dependency (k3snet[kube])

        self.client = client
        self.operations = 1  # the listing

    def _call(self, what: str, call: Callable[[], Any]) -> Any:
        self.operations += 1
        return kube_call(what, call, timeout=self.backend.timeout)

    def _body(self, pool: IPPool) -> dict[str, Any]:
        return {
            "apiVersion": f"{self.group}/{self.version}",
            "kind": KIND,
            "metadata": {"name": pool.name, "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE}},
            "spec": pool.to_spec(),
        }

    def change(self, change: Change) -> None:
        before, after = change.before, change.after
        if change.action == "add":
            assert isinstance(after, IPPool)
            self.create(after, self._body(after))
        elif change.action == "delete":
            assert isinstance(before, IPPool)
            self.delete(before.name)
        elif disruptive_fields(change):
            assert isinstance(before, IPPool) and isinstance(after, IPPool)  # noqa: PT018
            self.delete(before.name)
            self.create(after, self._body(after))
        else:
            assert isinstance(before, IPPool) and isinstance(after, IPPool)  # noqa: PT018
            self.patch(before, after)

    def create(self, pool: IPPool, body: dict[str, Any]) -> None:
        created = self._call(
            f"create IPPool {pool.name}",
            lambda: self.backend._objects.create_cluster_custom_object(
                self.group, self.version, PLURAL, body, field_manager=self.backend.field_manager,
                _request_timeout=self.backend.timeout),
        )
        self.raw[pool.name] = created if isinstance(created, dict) else body
        self.undo.append(lambda: self.delete(pool.name, record=False))

    def delete(self, name: str, *, record: bool = True) -> None:
        seen = self.raw.get(name) or {}
        metadata = seen.get("metadata") or {}
        body = None
        if record and (metadata.get("resourceVersion") or metadata.get("uid")):
            # Delete exactly the pool that was read: a re-created or edited one gives 409.
            body = self.client.V1DeleteOptions(preconditions=self.client.V1Preconditions(
                resource_version=metadata.get("resourceVersion"), uid=metadata.get("uid")))
        self._call(
            f"delete IPPool {name}",
            lambda: self.backend._objects.delete_cluster_custom_object(
                self.group, self.version, PLURAL, name, body=body,
                _request_timeout=self.backend.timeout),
        )
        if record:
            recreate = {
                "apiVersion": seen.get("apiVersion", f"{self.group}/{self.version}"),
                "kind": seen.get("kind", KIND),
                "metadata": {k: v for k, v in metadata.items()
                             if k in ("name", "labels", "annotations")},
                "spec": seen.get("spec") or {},
            }
            self.undo.append(lambda: self._recreate(name, recreate))
        self.raw.pop(name, None)

    def _recreate(self, name: str, body: dict[str, Any]) -> None:
        self._call(
            f"re-create IPPool {name}",
            lambda: self.backend._objects.create_cluster_custom_object(
                self.group, self.version, PLURAL, body, field_manager=self.backend.field_manager,
                _request_timeout=self.backend.timeout),
        )

    def patch(self, before: IPPool, after: IPPool) -> None:
        old, new = before.to_spec(), after.to_spec()
        changed = {k: new[k] for k in _SPEC_FIELDS if old[k] != new[k]}
        metadata = (self.raw.get(before.name) or {}).get("metadata") or {}
        body: dict[str, Any] = {"spec": changed}
        if metadata.get("resourceVersion"):
            body["metadata"] = {"resourceVersion": metadata["resourceVersion"]}
        patched = self._call(
            f"patch IPPool {before.name} ({', '.join(changed)})",
            lambda: self.backend._objects.patch_cluster_custom_object(
                self.group, self.version, PLURAL, before.name, body,
                field_manager=self.backend.field_manager, _request_timeout=self.backend.timeout),
        )
        if isinstance(patched, dict):
            self.raw[before.name] = patched
        restore = {k: old[k] for k in changed}
        self.undo.append(lambda: self._patch_back(before.name, restore))

    def _patch_back(self, name: str, spec: dict[str, Any]) -> None:
        self._call(
            f"patch back IPPool {name}",
            lambda: self.backend._objects.patch_cluster_custom_object(
                self.group, self.version, PLURAL, name, {"spec": spec},
                field_manager=self.backend.field_manager, _request_timeout=self.backend.timeout),
        )

    def undo_all(self) -> None:
        while self.undo:
            self.undo.pop()()
