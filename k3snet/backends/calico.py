"""The ``calico`` backend: Calico ``IPPool`` resources through the Kubernetes API.

Two APIs serve IP pools:

* ``projectcalico.org/v3`` (``api="v3"``): the Calico API server, which adds
  defaulting and validation;
* ``crd.projectcalico.org/v1`` (``api="crd"``): the CRDs Calico stores its data
  in, served by every cluster running Calico in Kubernetes datastore mode, even
  without the Calico API server.

``api="auto"`` (the default) asks the API server's discovery whether it serves
``ippools`` in ``projectcalico.org/v3`` and uses it when it does, else the CRDs.

**Calico as Felix behaves.** What k3snet reads is judged by what Calico will
do, not by field names (see :mod:`k3snet.model.cni`):

* Felix never NATs traffic to an address inside *any* IP pool, enabled or
  disabled: a spec destination inside a pool is a conflict
  (:class:`~k3snet.model.cni.CalicoNatDestination`);
* pods get addresses from pools, so a pod CIDR must be a pool that serves every
  pod (enabled, ``allowedUses`` with ``Workload``, ``assignmentMode: Automatic``,
  a ``namespaceSelector`` selecting everything) with the right ``natOutgoing``;
  otherwise it is a conflict (:class:`~k3snet.model.cni.CalicoPodCIDR`), never an
  implicit new enabled pool;
* a pool k3snet cannot read (a CIDR with host bits, ``natOutgoing: "true"``) is
  a conflict naming it (:class:`~k3snet.model.cni.CalicoPoolsReadable`), and no
  new pool is created while it is there;
* a field the API does not know, or knows in another case (``blocksize``,
  ``vxlanmode``), is dropped as the structural schema drops it (the default
  applies) and reported in :attr:`CalicoBackend.warnings` and the log.

The observed foreign state holds each readable foreign pool, and one
:class:`~k3snet.model.cni.CalicoPools` with all of them (and the unreadable
ones) for those pool-wide judgements.

**Felix's NAT settings.** Calico's ``FelixConfiguration`` resources (same API group)
decide how Felix translates what ``natOutgoing`` sends out: k3snet lists them and
observes one :class:`~k3snet.model.cni.CalicoFelixNat` for ``default`` and one per
``node.NAME`` (and per selector-scoped one) with Felix's effective
``iptablesNATOutgoingInterfaceFilter``, ``natOutgoingAddress``,
``natOutgoingExclusions``, ``natPortRange`` and ``externalNodesList`` there
(:func:`read_felix_nat`). A destination the spec masquerades through an interface
the filter does not match, SNATs to an address other than ``natOutgoingAddress``,
or (with ``IPPoolsAndHostIPs``) that overlaps ``externalNodesList``, is a conflict
naming the resource (:class:`~k3snet.model.cni.CalicoNatDestination`). Without the CRD Felix
runs on its defaults; without the right to list them (403) the settings are
unreadable, a conflict for every destination the spec masquerades.

**Ownership.** Pools k3snet creates carry the label
``app.kubernetes.io/managed-by: k3snet``; every other pool is foreign: observed,
never changed.

**Writes.** A pool is created with ``POST`` (which fails if the name was taken
meanwhile); a change is a server-side apply of the pool's whole spec with the
field manager ``k3snet`` and the ``resourceVersion`` read (a concurrent edit
gives 409, nothing is written; a field another manager owns gives a 409
conflict too, never forced). The API server keys managers by name and
operation, so the ``POST`` that created a pool is a second "k3snet" holding
its fields; the apply is forced when that create is the only other holder of
a field it changes (kubernetes/kubernetes#107417). Each request goes to one object, so ``apply``
undoes what it did when a later request fails (a kit
:class:`~k3snet.backends.kit.Compensation`: deletes what it created, applies
back what it changed, re-creates what it deleted).

**Reads.** ``observe`` lists the pools, the FelixConfigurations and (for
``IPPoolsAndHostIPs``, or a block a node holds in a pool with a ``nodeSelector``: once
for both) the Nodes' metadata, and (for a block in a pool that gives its node no address
automatically) the Namespaces' and Pods' metadata, whose
``cni.projectcalico.org/ipv4pools`` and ``ipv6pools`` annotations may name the pool
(:func:`read_named_pools`); the ``check`` or ``apply`` right after it
(within :data:`~k3snet.backends.kit.FRESH_READ_AGE` seconds, once: the agent's pass,
``converge``; :class:`~k3snet.backends.kit.FreshRead`) takes that
listing rather than asking for all of it again, which every write's precondition above
keeps safe: what changed since was read by nobody and gives 409.

**Disruptive changes.** Calico forbids changing a pool's ``cidr`` or
``blockSize`` in place; the only way is delete and re-create, which takes the
addresses of running pods out of IPAM; deleting an enabled pool does that too.
:meth:`CalicoBackend.disruptive` says why; ``check`` and ``apply`` refuse such a
plan unless the backend was built with ``allow_disruptive=True``
(``cni.allowDisruptive: true`` in the spec, ``--allow-disruptive`` on the CLI).

**Masquerade policy.** :func:`k3snet.spec.compile_ippools` turns a spec into
the expectations above and, for each CIDR exempt from NAT, a disabled pool
covering it (Calico's documented way to exclude a destination from outgoing NAT),
with ``disableBGPExport``: BIRD exports routes inside any pool's CIDR to Calico's BGP
peers otherwise, disabled pools too. An API whose IPPool schema lacks that field
(Calico before v3.21) drops it: such a pool is left as it is and a warning says it is
exported (:attr:`CalicoBackend.warnings`).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Literal

import attrs

from k3snet.backends.base import ApplyResult
from k3snet.backends.kit import (
    BackendBase,
    Compensation,
    FreshRead,
    OptionChecks,
    UndoFailure,
    disruptive_problems,
    fit_problems,
    option_flag,
    option_seconds,
    option_text,
    translate_errors,
)
from k3snet.errors import ApplyError, BackendError, ModelError, PlanError
from k3snet.kube import (
    API_OPTION_CHECKS,
    DEFAULT_TIMEOUT,
    KUBECONFIG_DEFAULT,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    WATCH_SECONDS,
    KubeApiError,
    KubeErrors,
    label_key_problem,
    label_value_problem,
    list_metadata,
    list_node_metadata,
    list_pages,
    make_api_client,
    watch_metadata,
)
from k3snet.model.calico_selector import (
    selector_problem,
    selects_everything,
    selects_labels,
    selects_nothing,
)
from k3snet.model.cidr import Network, go_cidr_text, parse_network
from k3snet.model.cni import NAT_OUTGOING_EXCLUSIONS, CalicoFelixNat, CalicoPools, IPPool
from k3snet.model.state import State
from k3snet.planner import Change, Plan

__all__ = [
    "APIS",
    "CALICO_HOST_ANNOTATIONS",
    "DISRUPTIVE_FIELDS",
    "FELIX_NAT_FIELDS",
    "KNOWN_SPEC_FIELDS",
    "NODE_LABELS_ANNOTATION",
    "V1_SPEC_FIELDS",
    "CalicoBackend",
    "block_in_use",
    "calico_metadata",
    "calico_node_labels",
    "disruptive_changes",
    "disruptive_fields",
    "disruptive_reason",
    "pool_from_resource",
    "read_block_affinities",
    "read_calico_hosts",
    "read_felix_nat",
    "read_pool",
]

log = logging.getLogger(__name__)

ApiChoice = Literal["crd", "v3", "auto"]
APIS: Mapping[str, tuple[str, str]] = {
    "crd": ("crd.projectcalico.org", "v1"),
    "v3": ("projectcalico.org", "v3"),
}
"""API name -> (group, version) serving IP pools."""

PLURAL = "ippools"
FELIX_PLURAL = "felixconfigurations"
AFFINITY_PLURAL = "blockaffinities"
AFFINITY_APIS = (("projectcalico.org", "v3"), ("crd.projectcalico.org", "v1"))
"""Where Calico (Kubernetes datastore mode) keeps its block affinities: with pools in
``crd.projectcalico.org``, there alone; with pools in ``projectcalico.org/v3``, asked
in this order: there first (its own CRDs where Calico keeps its data in v3 CRDs,
libcalico-go ``UsingV3CRDs``; else Calico's API server, which serves those of its
``crd.projectcalico.org`` CRDs), then in ``crd.projectcalico.org`` (an API server
that serves none). Never ``crd.projectcalico.org`` first there: Calico's migration to
v3 CRDs leaves those CRDs, no longer written, until its ``DatastoreMigration`` is
deleted."""
# The IPPool CRD's name. Where Calico keeps its data in projectcalico.org/v3 CRDs (no
# crd.projectcalico.org served) it is none (a 404, "not known"): the pools are then
# projectcalico.org/v3, so _bgp_export_dropped asks a dry run of the write whatever the
# CRD says, no verdict taken from a CRD unread (and v3 CRDs came long after v3.21, the
# first with disableBGPExport: theirs keeps it).
POOL_CRD = "ippools.crd.projectcalico.org"
_CRD_UNREAD = object()  # in CalicoBackend._bgp_export_lost: the write's listing read no CRD
CALICO_METADATA_ANNOTATION = "projectcalico.org/metadata"
BGP_EXPORT_RETRY = 600.0
"""Seconds a pool of k3snet's is left without ``disableBGPExport`` after a write of it came
back without it while the IPPool CRD did not tell that it drops the field (the CRD keeps
it, or is not readable; or a dry run of the write was answered without it): then it is
written again (or, where the CRD does not tell, tried by a dry run again), which changes
nothing where the API still drops it and sets it once Calico's API server (or,
unreadable, its CRD) is upgraded, which changes neither the pool nor what k3snet can
read of the CRD. A dry run refused (403, a webhook refusing dry runs) is not sent again for
as long."""
# A dry run's failures that are no refusal of dry runs (_dry_run_drops): the pool gone,
# changed meanwhile (its resourceVersion), a timeout, a busy server.
_DRY_RUN_NOT_REFUSED = frozenset({404, 408, 409, 429})
# The value of the managed-by label on the pools the tigera-operator writes back from its
# Installation (tigera/operator pkg/controller/ippool/pool_controller.go).
_OPERATOR_MANAGER = "tigera-operator"
KIND = "IPPool"
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"

DISRUPTIVE_FIELDS: tuple[str, ...] = ("cidr", "blockSize")
"""IPPool fields Calico forbids changing in place."""

KNOWN_SPEC_FIELDS: tuple[str, ...] = (
    "cidr", "vxlanMode", "ipipMode", "natOutgoing", "disabled", "disableBGPExport",
    "blockSize", "nodeSelector", "namespaceSelector", "allowedUses", "assignmentMode",
    "awsSubnetID",
)
"""Every ``IPPoolSpec`` field of Calico's v3 API; anything else is pruned by the API
server, or (the deprecated v1 fields of :data:`V1_SPEC_FIELDS`) ignored by Calico.
(``awsSubnetID``, for pools backed by an AWS subnet, is kept but not modelled: it
changes neither which pods get the pool's addresses nor what Felix NATs.)"""

V1_SPEC_FIELDS: Mapping[str, str] = {"nat-outgoing": "natOutgoing (false when unset)",
                                     "ipip": "ipipMode (Never when unset)"}
"""Calico's deprecated v1 IPPool fields -> the v3 field Calico reads instead. Older CRD
schemas keep them, but Calico ignores them: Felix's pool conversion reads only the v3
fields (``IPPoolV3ToV1``) and the v3 API refuses them ("Setting this field is not
allowed, this field is for internal use only")."""


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


def disruptive_reason(change: Change) -> str | None:
    """Why ``change`` disrupts running pods (one line), or None when it does not."""
    fields = disruptive_fields(change)
    before, after = change.before, change.after
    if fields:
        assert isinstance(before, IPPool) and isinstance(after, IPPool)  # noqa: PT018
        return (f"changing IPPool {before.name}'s {', '.join(fields)} ({before.cidr} blockSize "
                f"{before.block_size} -> {after.cidr} blockSize {after.block_size}) means "
                "deleting and re-creating it (Calico forbids the change in place), which "
                "takes the addresses of running pods out of IPAM")
    if change.action == "delete" and isinstance(before, IPPool) and not before.disabled:
        return (f"deleting enabled IPPool {before.name} ({before.cidr}) takes the addresses "
                "of pods running on it out of IPAM (disable it first, or remove its "
                f"{MANAGED_BY_LABEL} label to keep it as your own pool)")
    return None


def disruptive_changes(plan: Plan) -> tuple[Change, ...]:
    """The changes of ``plan`` that disrupt running pods (mark them in plan output)."""
    return tuple(c for c in plan.changes if disruptive_reason(c) is not None)


# ---------------------------------------------------------------- resources <-> pools

_DEFAULT_SPELLINGS = {"ipipMode": "Never", "vxlanMode": "Never", "nodeSelector": "all()"}


def _dropped_fields(name: str, spec: Mapping[str, Any]) -> list[str]:
    """Warnings for spec keys the API server does not know (it prunes them: the default applies)."""
    known = {k.lower(): k for k in KNOWN_SPEC_FIELDS}
    warnings = []
    for key in spec:
        if key in KNOWN_SPEC_FIELDS:
            continue
        if key in V1_SPEC_FIELDS:
            warnings.append(f"IPPool {name}: field spec.{key} is Calico's deprecated v1 field, "
                            f"which Calico ignores: Felix reads only "
                            f"spec.{V1_SPEC_FIELDS[key]}")
            continue
        meant = known.get(str(key).lower())
        hint = (f" (Calico spells it {meant}; the pool has Calico's default for {meant})"
                if meant else "")
        warnings.append(f"IPPool {name}: field spec.{key} is not part of Calico's IPPool API "
                        f"and is dropped by the API server{hint}")
    return warnings


def _typed(name: str, spec: Mapping[str, Any], key: str, kind: type, default: Any) -> Any:
    value = spec.get(key)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ModelError(f"IPPool {name}: spec.{key} must be a {kind.__name__}, got {value!r}")
    return value


def read_pool(item: Mapping[str, Any]) -> tuple[IPPool, tuple[str, ...]]:
    """Model an IPPool resource, as Calico reads it, and the warnings reading it gave.

    Unset (or empty, as Go's ``omitempty`` writes them) fields take Calico's
    defaults; the deprecated v1 fields ``nat-outgoing`` and ``ipip`` are ignored, as
    Calico ignores them (:data:`V1_SPEC_FIELDS`), and reported in the warnings. Values
    of the wrong type raise :class:`~k3snet.errors.ModelError`, and so does a
    ``cidr`` Go's ``net.ParseCIDR`` refuses (blanks around it, no prefix length), which
    Calico cannot read whatever Python makes of it; unknown or
    mis-cased fields are dropped (as the structural schema prunes them) and
    reported in the warnings.
    """
    try:
        name = item["metadata"]["name"]
        spec = item.get("spec") or {}
        if not isinstance(spec, Mapping):
            raise ModelError(f"IPPool {name}: spec is not an object")
        if "cidr" not in spec:
            raise ModelError(f"IPPool {name}: spec.cidr is missing")
        warnings = _dropped_fields(name, spec)
        modes = {key: _typed(name, spec, key, str, "") or _DEFAULT_SPELLINGS[key]
                 for key in _DEFAULT_SPELLINGS}
        if not modes["nodeSelector"].strip(" \t"):
            # Calico parses a blank selector (spaces and tabs) as all(): every node.
            modes["nodeSelector"] = "all()"
        uses = _typed(name, spec, "allowedUses", list, None)
        cidr = _typed(name, spec, "cidr", str, None)
        if not go_cidr_text(cidr):
            raise ModelError(f"IPPool {name}: spec.cidr {json.dumps(cidr)[:100]} is no CIDR "
                             "Calico can parse (Go's net.ParseCIDR: an address, '/' and a "
                             "prefix length, nothing around them; the CRDs store any "
                             "string)")
        pool = IPPool(
            name,
            cidr,
            nat_outgoing=_typed(name, spec, "natOutgoing", bool, False),
            disabled=_typed(name, spec, "disabled", bool, False),
            ipip_mode=modes["ipipMode"],
            vxlan_mode=modes["vxlanMode"],
            block_size=_typed(name, spec, "blockSize", int, 0) or None,
            node_selector=modes["nodeSelector"],
            disable_bgp_export=_typed(name, spec, "disableBGPExport", bool, False),
            allowed_uses=uses,
            assignment_mode=_typed(name, spec, "assignmentMode", str, "") or "Automatic",
            namespace_selector=_typed(name, spec, "namespaceSelector", str, ""),
            operator=calico_metadata(item)[0].get(MANAGED_BY_LABEL) == _OPERATOR_MANAGER,
        )
        mapped = pool.cidr.network_address.ipv4_mapped if pool.cidr.version == 6 else None
        if mapped is not None:
            # Go's IPNet.String() of such a prefix is the IPv4 one, which libcalico-go
            # keys the pool by; its development branch (netip) drops the pool instead.
            ipv4 = ipaddress.IPv4Network((mapped, pool.cidr.prefixlen - 96))
            raise ModelError(f"IPPool {name}: spec.cidr {pool.cidr} is an IPv4-mapped IPv6 "
                             f"CIDR, which Felix takes for the IPv4 CIDR {ipv4} (Calico "
                             "v3.32 and before; Calico's development branch drops the "
                             "pool)")
        return pool, (*warnings, *_unparseable_selectors(pool))
    except ModelError as exc:
        name = (item.get("metadata") or {}).get("name", "?")
        message = str(exc)
        prefix = f"IPPool {name}"
        raise ModelError(message if message.startswith(prefix) else f"{prefix}: {message}") \
            from exc
    except (KeyError, TypeError, AttributeError) as exc:
        raise ModelError(f"IPPool resource without a name or spec: {exc}") from exc


def _unparseable_selectors(pool: IPPool) -> list[str]:
    """A warning for each selector of ``pool`` Calico cannot parse (what IPAM does then:
    :attr:`~k3snet.model.cni.IPPool.unparseable_selector`)."""
    warnings = []
    for field, text in (("nodeSelector", pool.node_selector),
                        ("namespaceSelector", pool.namespace_selector)):
        problem = selector_problem(text)
        if problem is not None:
            # IPAM parses a namespaceSelector only once the nodeSelector selects the node.
            where = "" if field == "nodeSelector" else " on the nodes its nodeSelector selects"
            warnings.append(
                f"IPPool {pool.name}: spec.{field} {json.dumps(text)} is no selector Calico "
                f"can parse ({problem}): while the pool is enabled, allocatable and "
                "Automatic, Calico IPAM fails every automatic "
                f"IPv{pool.cidr.version} address assignment{where}, so pods get no address "
                "(Calico's API server refuses such a selector; the CRDs store it)")
    return warnings


def _unallocatable(item: Mapping[str, Any]) -> str:
    """Why Calico IPAM skips the pool ``item`` whatever its spec says, or "": libcalico-go's
    ``filterIPPool`` skips a pool being deleted (Calico v3.31 and later; from v3.32 a
    finalizer of kube-controllers keeps an active pool until its blocks are released)
    and one whose condition ``Allocatable`` is false (v3.32 and later: kube-controllers
    set it on a pool overlapping an older active one)."""
    metadata = item.get("metadata")
    if isinstance(metadata, Mapping) and metadata.get("deletionTimestamp"):
        return ("it is being deleted (Calico IPAM skips a pool with a deletionTimestamp, "
                "Calico v3.31 and later)")
    status = item.get("status")
    conditions = status.get("conditions") if isinstance(status, Mapping) else None
    for condition in conditions if isinstance(conditions, list) else ():
        if (isinstance(condition, Mapping) and condition.get("type") == "Allocatable"
                and condition.get("status") == "False"):
            why = ": ".join(str(condition[k]) for k in ("reason", "message")
                            if condition.get(k))
            return ("its status says Allocatable: False" + (f" ({why})" if why else "")
                    + " (Calico IPAM skips it, Calico v3.32 and later)")
    return ""


def _mark_lb_twins(owned: dict[str, IPPool], foreign: dict[str, IPPool | None]) -> None:
    """Mark each pool, k3snet's or foreign, whose CIDR Felix takes from a LoadBalancer-only
    pool sorting first (:attr:`IPPool.lb_twin`): libcalico-go's ``conflictResolvingCache``
    passes on the pool of each CIDR whose name sorts first (Go's byte order, Python's for
    these names), whatever ``allowedUses`` say; Felix v3.31.6, v3.32.1 and later leave a
    LoadBalancer-only pool out of its pool set and NAT traffic to its CIDR."""
    readable = {**{n: p for n, p in foreign.items() if p is not None}, **owned}
    first: dict[Network, IPPool] = {}
    for name in sorted(readable):
        first.setdefault(readable[name].cidr, readable[name])
    for name, pool in readable.items():
        twin = first[pool.cidr]
        if twin is not pool and twin.load_balancer_only:
            marked = attrs.evolve(pool, lb_twin=twin.name)
            if name in owned:
                owned[name] = marked
            else:
                foreign[name] = marked


def pool_from_resource(item: Mapping[str, Any]) -> IPPool:
    """Model an IPPool resource (a dict as the API returns it); raises ModelError if invalid.

    See :func:`read_pool` (this drops its warnings).
    """
    return read_pool(item)[0]


def calico_metadata(item: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The labels and annotations of a Calico resource (an IPPool, a
    FelixConfiguration), as Calico reads them.

    A pool written through Calico's v3 API (its API server, ``calicoctl``) is stored
    in the CRD with its labels and annotations in the ``projectcalico.org/metadata``
    annotation and none in ``metadata.labels``; Calico reads the CRD's own ones with
    that annotation's merged over them (libcalico-go
    ``ConvertK8sResourceToCalicoResource``). An annotation that is not JSON, and
    entries that are not strings, add nothing (nor does one nested deeper than Python's
    parser goes: its RecursionError failed every observe of the pools).
    """
    metadata = item.get("metadata") or {}
    labels = dict(metadata.get("labels") or {})
    annotations = dict(metadata.get("annotations") or {})
    stored = annotations.pop(CALICO_METADATA_ANNOTATION, None)
    try:
        inner = json.loads(stored) if isinstance(stored, str) else {}
    except (ValueError, RecursionError):
        inner = {}
    if isinstance(inner, Mapping):
        for into, key in ((labels, "labels"), (annotations, "annotations")):
            found = inner.get(key)
            if isinstance(found, Mapping):  # strings only, as ObjectMeta holds them
                into.update((k, v) for k, v in found.items()
                            if isinstance(k, str) and isinstance(v, str))
    return labels, annotations


def _owned_label(item: Mapping[str, Any]) -> bool:
    labels, _ = calico_metadata(item)
    return bool(labels.get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE)


def _kept_metadata_problems(plan: Plan, listing: _Listing) -> list[str]:
    """Labels and annotations a re-created pool would carry (:func:`calico_metadata`, as
    a disruptive change keeps them) that the API server refuses in ``metadata``: Calico's
    ``projectcalico.org/metadata`` annotation holds them unchecked, and the create
    refused after the delete left the pool deleted until its undo. Refused before any
    write instead."""
    problems: list[str] = []
    for change in plan.changes:
        before = change.before
        if change.action != "replace" or not isinstance(before, IPPool) \
                or not disruptive_fields(change):
            continue
        labels, annotations = calico_metadata(listing.owned_raw.get(before.name) or {})
        bad = [f"label {json.dumps(k)}: {json.dumps(v)}" for k, v in labels.items()
               if label_key_problem(k) or label_value_problem(v)]
        bad += [f"annotation {json.dumps(k)}" for k in annotations if label_key_problem(k)]
        if bad:
            problems.append(
                f"IPPool {before.name}: its {', '.join(bad)} (from Calico's "
                f"{CALICO_METADATA_ANNOTATION} annotation) is no Kubernetes label or "
                "annotation, which the re-creation of the pool (a delete, then a create "
                "keeping its labels and annotations) would write into its metadata, and "
                "the API server refuses after the delete; fix: remove it from the pool, "
                "then apply again")
    return problems


def _problem(exc: ModelError, name: str) -> str:
    """The reason of a ModelError, without the ``IPPool NAME:`` prefix."""
    text = str(exc)
    prefix = f"IPPool {name}: "
    return text[len(prefix):] if text.startswith(prefix) else text


@attrs.frozen
class _Listing:
    """One read of every pool: owned ones modelled, foreign ones modelled when possible."""

    owned: dict[str, IPPool]
    owned_raw: dict[str, dict[str, Any]]
    foreign: dict[str, IPPool | None]  # None: there, but not readable
    invalid: dict[str, str]  # foreign name -> why it is not readable
    warnings: tuple[str, ...]
    felix: tuple[CalicoFelixNat, ...] = ()
    blocks: tuple[tuple[str, str], ...] = ()  # (node, block CIDR) of the block affinities

    def state(self) -> State:
        """Owned pools; foreign: the readable pools, one :class:`CalicoPools` of all (with
        the blocks the nodes hold), and Felix's NAT settings per scope."""
        readable = [p for p in self.foreign.values() if p is not None]
        pools = CalicoPools(readable, self.invalid, blocks=self.blocks)
        return State(owned=self.owned.values(), foreign=[*readable, pools, *self.felix])


# ---------------------------------------------------------------- block affinities


def read_block_affinities(items: Iterable[Any]) -> tuple[tuple[str, str], ...]:
    """``(node, block CIDR)`` of each block affinity a node holds: ``spec.node`` and
    ``spec.cidr``, its ``state`` ``confirmed`` or ``pending`` (being claimed), not
    ``pendingDeletion``, and not ``deleted`` (Calico writes the string ``"true"``), of a
    node (``type`` ``host`` or none; a ``virtual`` one holds LoadBalancer Services'
    addresses for the virtual node ``load-balancer``, never a pod's). Anything else (no
    node, a CIDR that is no network) is left out.

    >>> read_block_affinities([{"spec": {"node": "n1", "cidr": "10.60.0.0/26",
    ...     "state": "confirmed", "deleted": "false"}},
    ...     {"spec": {"node": "n2", "cidr": "10.60.0.64/26", "state": "pendingDeletion"}}])
    (('n1', '10.60.0.0/26'),)
    """
    found: list[tuple[str, str]] = []
    for item in items:
        spec = item.get("spec") if isinstance(item, Mapping) else None
        if not isinstance(spec, Mapping):
            continue
        node, cidr = spec.get("node"), spec.get("cidr")
        if (not isinstance(node, str) or not node or not isinstance(cidr, str)
                or spec.get("state", "confirmed") not in ("confirmed", "pending")
                or spec.get("type") not in (None, "", "host")
                or str(spec.get("deleted", "")).lower() == "true"):
            continue
        try:
            parse_network(cidr)
        except ModelError:
            continue
        found.append((node, cidr))
    return tuple(found)


def _blocks_may_decide(pools: Iterable[IPPool]) -> bool:
    """Whether the blocks the nodes hold may decide a verdict: some family has two
    pools or more that may give workloads addresses (enabled, allocatable, ``Workload``
    among their ``allowedUses``; ``Manual`` ones and those selecting no node too, which
    give addresses to the pods naming them, :data:`POOLS_ANNOTATIONS`). A block decides
    only where it lies in a pool of this kind outside the spec's pod CIDRs beside a pod
    CIDR's own pool of the family (:meth:`~k3snet.model.cni.CalicoPodCIDR._held`): with
    one such pool a family has none of them, or no pod CIDR pool to serve it (a
    conflict as it is). Every pool read counts, k3snet's own too, and pools of one
    CIDR each: never fewer than the verdict needs. So a cluster with one pool per
    family (the common one) lists no block affinities: one request fewer on each pass,
    a list of every node's blocks (some per node) from the API server."""
    families: dict[int, int] = {}
    for pool in pools:
        if not pool.disabled and not pool.unallocatable and "Workload" in pool.allowed_uses:
            version = pool.cidr.version
            families[version] = families.get(version, 0) + 1
            if families[version] > 1:
                return True
    return False


POOLS_ANNOTATIONS = ("cni.projectcalico.org/ipv4pools", "cni.projectcalico.org/ipv6pools")
"""The annotations of a pod, or of its namespace (the pod's replaces it), naming the pools
(by name or CIDR, a JSON list) Calico IPAM gives the pod its addresses from, whatever the
pools' ``nodeSelector``, ``namespaceSelector`` and ``assignmentMode`` (libcalico-go
``ipam.determinePools`` uses requested pools unconditionally; the cni-plugin reads them)."""


def read_named_pools(items: Iterable[Any]) -> frozenset[str]:
    """The pools the :data:`POOLS_ANNOTATIONS` of ``items`` (Pods, Namespaces) name: each
    entry of their JSON lists of strings, a CIDR as the network it names (host bits
    dropped, as IPAM matches it against the pools' CIDRs), anything else (a bare
    address too: Go's ``net.ParseCIDR`` refuses it) a pool's name, as the CNI plugin
    resolves it; an IPv4-mapped IPv6 CIDR names the IPv4 one too, as Go reads it. An
    annotation that is no JSON list of strings (the CNI plugin fails such a pod) names
    nothing.

    >>> sorted(read_named_pools([{"metadata": {"annotations": {
    ...     "cni.projectcalico.org/ipv4pools": '["vms", "10.60.1.0/16"]'}}}]))
    ['10.60.0.0/16', 'vms']
    """
    named: set[str] = set()
    for item in items:
        metadata = item.get("metadata") if isinstance(item, Mapping) else None
        annotations = metadata.get("annotations") if isinstance(metadata, Mapping) else None
        if not isinstance(annotations, Mapping):
            continue
        for key in POOLS_ANNOTATIONS:
            raw = annotations.get(key)
            try:
                entries = json.loads(raw) if isinstance(raw, str) else None
            except (ValueError, RecursionError):
                entries = None
            if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
                continue
            for entry in entries:
                # A CIDR where Go's net.ParseCIDR takes it ("10.60.0.0", a bare address,
                # is a name to the plugin, and a valid pool name).
                try:
                    if not go_cidr_text(entry):
                        raise ValueError(entry)
                    network = ipaddress.ip_network(entry, strict=False)
                except ValueError:
                    named.add(entry)
                    continue
                named.add(str(network))
                mapped = network.network_address.ipv4_mapped if network.version == 6 else None
                if mapped is not None:
                    # Go keeps an IPv4-mapped address as IPv4: IPAM looks the entry up as
                    # the IPv4 pool (ipv4pools; ipv6pools refuses it).
                    named.add(str(ipaddress.ip_network(
                        (mapped, max(network.prefixlen - 96, 0)), strict=False)))
    return frozenset(named)


NODE_LABELS_ANNOTATION = "projectcalico.org/labels"
"""The annotation of a Kubernetes Node holding its Calico node's own labels (JSON), which
the Node's labels are laid over (libcalico-go ``K8sNodeToCalico``)."""


def calico_node_labels(metadata: Mapping[str, Any]) -> dict[str, str]:
    """The labels of a node as Calico reads them from its Node's ``metadata``: those of
    the ``projectcalico.org/labels`` annotation (an object of strings, a null value read
    as ``""`` as Go reads it; anything else adds nothing, as Calico drops an annotation
    it cannot read), the Node's own labels over them.

    >>> calico_node_labels({"labels": {"zone": "a"},
    ...     "annotations": {"projectcalico.org/labels": '{"zone": "b", "rack": "1"}'}})
    {'zone': 'a', 'rack': '1'}
    """
    labels: dict[str, str] = {}
    annotations = metadata.get("annotations")
    stored = annotations.get(NODE_LABELS_ANNOTATION) if isinstance(annotations, Mapping) \
        else None
    try:
        inner = json.loads(stored) if isinstance(stored, str) else None
    except (ValueError, RecursionError):
        inner = None
    if isinstance(inner, Mapping) and all(v is None or isinstance(v, str)
                                          for v in inner.values()):
        # Go's encoding/json reads a null value into a map of strings as "".
        labels.update((k, v or "") for k, v in inner.items())
    own = metadata.get("labels")
    if isinstance(own, Mapping):
        labels.update((k, v) for k, v in own.items() if isinstance(k, str) and isinstance(v, str))
    return labels


def block_in_use(block: str, pools: Iterable[IPPool], labels: Mapping[str, str] | None,
                 named: frozenset[str] | None = frozenset()) -> bool | None:
    """Whether Calico IPAM may still assign addresses from ``block``, a block its node
    holds, for the node's ``labels`` (None: not known, and then None where they decide)
    and the pools pods' or namespaces' annotations name (``named``,
    :func:`read_named_pools`; None: not known, and then None where they decide): a pool
    holding the block's first address is named (IPAM uses a pool a pod names whatever
    its selectors and ``assignmentMode``, from the blocks the node holds there first),
    or assigns ``Automatic``-ally and selects the node (libcalico-go
    ``prepareAffinityBlocksForHost``: the node's blocks in the pools that select it now;
    the others are released once empty). A pool whose nodeSelector Calico cannot parse,
    or no pool holding the block (judged elsewhere), keeps it: never fewer blocks than
    Calico may use.

    >>> pools = [IPPool("old", "10.60.0.0/16", node_selector="zone == 'old'")]
    >>> [block_in_use("10.60.3.0/26", pools, labels)
    ...  for labels in ({"zone": "old"}, {"zone": "new"}, None)]
    [True, False, None]
    >>> block_in_use("10.60.3.0/26", pools, {"zone": "new"}, frozenset({"old"}))
    True
    """
    address = parse_network(block).network_address
    holding = [p for p in pools if address in p.cidr]
    if not holding or any(p.name in (named or ()) or str(p.cidr) in (named or ())
                          for p in holding):
        return True
    automatic = [p for p in holding if p.assignment_mode == "Automatic"
                 and not selects_nothing(p.node_selector)]
    if any(selects_everything(p.node_selector) for p in automatic):
        return True
    if automatic:
        if labels is None:
            return None
        if any(selects_labels(p.node_selector, labels) is not False for p in automatic):
            return True
    return None if named is None else False


def _note_pod(pods: dict[tuple[str, str], frozenset[str]], kind: str, item: Any) -> None:
    """Keep in ``pods`` the pools ``item`` (a Pod's ``kind`` event: ``ADDED``,
    ``MODIFIED``, ``DELETED``) names, by namespace and name; a pod naming none (or
    deleted) is left out."""
    metadata = item.get("metadata") if isinstance(item, Mapping) else None
    if not isinstance(metadata, Mapping):
        return
    key = (str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))
    named = read_named_pools([item]) if kind != "DELETED" else frozenset()
    if named:
        pods[key] = named
    else:
        pods.pop(key, None)


# ---------------------------------------------------------------- FelixConfiguration

FELIX_NAT_FIELDS: Mapping[str, str] = {
    "iptablesNATOutgoingInterfaceFilter": "IptablesNATOutgoingInterfaceFilter",
    "natOutgoingAddress": "NATOutgoingAddress",
    "natOutgoingExclusions": "NATOutgoingExclusions",
    "natPortRange": "NATPortRange",
    "externalNodesList": "ExternalNodesCIDRList",
}
"""The ``FelixConfiguration`` fields k3snet reads -> Felix's parameter name (which a
``config.projectcalico.org/NAME`` annotation on the resource overrides the field with)."""

_FELIX_FILTER = re.compile(r"[a-zA-Z0-9:._+-]{1,15}")  # Felix's IfaceParamRegexp
_PORT_RANGE = re.compile(r"(\d+):(\d+)")
_FELIX_DEFAULTS: Mapping[str, Any] = {"interface_filter": None, "nat_outgoing_address": None,
                                      "exclusions": "IPPoolsOnly", "port_range": None,
                                      "external_nodes": ()}
_FELIX_DIE_ON_FAIL = frozenset({"externalNodesList"})
"""Fields Felix declares ``die-on-fail``: a value it cannot parse stops Felix (its
config gets an error and it exits) instead of being replaced with the default."""


def _filter(raw: str) -> str:
    if not _FELIX_FILTER.fullmatch(raw):
        raise ValueError("not an interface match of 1..15 letters, digits or :._+-")
    return raw


def _ipv4(raw: str) -> ipaddress.IPv4Address:
    # Go's net.ParseIP, then To4: an IPv4-mapped IPv6 address is IPv4 there too.
    address = ipaddress.ip_address(raw)
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is None:
            raise ValueError("not an IPv4 address")
        return address.ipv4_mapped
    return address


def _exclusion(raw: str) -> str:
    for name in NAT_OUTGOING_EXCLUSIONS:  # Felix's oneof: any case
        if raw.lower() == name.lower():
            return name
    raise ValueError(f"not one of {', '.join(NAT_OUTGOING_EXCLUSIONS)}")


def _ports(raw: str) -> tuple[int, int] | None:
    match = _PORT_RANGE.fullmatch(raw)
    low, high = (match[1], match[2]) if match else (raw, raw)
    if not (low.isdigit() and high.isdigit()):  # Go's PortFromString: else a port name
        raise ValueError("a port name, not a port or MIN:MAX range")
    if int(high) > 65535 or int(low) > int(high):
        raise ValueError("not a port range MIN:MAX with MIN <= MAX <= 65535")
    return None if int(high) == 0 else (int(low), int(high))  # Felix: MaxPort 0 is unset


def _cidr_list(raw: str) -> tuple[ipaddress.IPv4Network, ...]:
    # Felix's CIDRListParam: split at commas, trim spaces, skip empty entries; each an
    # IPv4 address (a /32) or CIDR, host bits dropped; one bad entry fails the whole list.
    networks = []
    for entry in (part.strip(" ") for part in raw.split(",")):
        if not entry:
            continue
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ValueError(f"not a list of IPv4 CIDRs or addresses ({entry!r})") from None
        if not isinstance(network, ipaddress.IPv4Network):
            raise ValueError(f"not a list of IPv4 CIDRs or addresses ({entry!r} is IPv6)")
        networks.append(network)
    return tuple(networks)


_FELIX_PARSERS: Mapping[str, tuple[str, Callable[[str], Any]]] = {
    "iptablesNATOutgoingInterfaceFilter": ("interface_filter", _filter),
    "natOutgoingAddress": ("nat_outgoing_address", _ipv4),
    "natOutgoingExclusions": ("exclusions", _exclusion),
    "natPortRange": ("port_range", _ports),
    "externalNodesList": ("external_nodes", _cidr_list),
}


def _felix_raw(item: Mapping[str, Any], key: str) -> str | None:
    """The text Felix gets for field ``key`` of a FelixConfiguration (None: unset), as
    Calico's config processor makes it: an annotation overrides the field; nil and ""
    are unset; a number is its digits, a port range ``MIN:MAX``. The annotations are
    the resource's as Calico reads them (:func:`calico_metadata`: in the CRD, those
    written through Calico's v3 API are inside ``projectcalico.org/metadata``)."""
    annotations = calico_metadata(item)[1]
    override = annotations.get(f"config.projectcalico.org/{FELIX_NAT_FIELDS[key]}")
    if isinstance(override, str):
        return override
    value = (item.get("spec") or {}).get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | str):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ",".join(value)  # a string list reaches Felix comma-joined
    return json.dumps(value)


def _felix_fields(item: Mapping[str, Any], warnings: list[str]) -> dict[str, Any]:
    """The NAT settings one FelixConfiguration sets, as Felix parses them: ``none`` is
    the zero value, and a value Felix cannot parse is replaced with its default (a
    warning says so), which still overrides a lower scope's value, as in Felix."""
    name = (item.get("metadata") or {}).get("name")
    fields: dict[str, Any] = {}
    for key, (field, parse) in _FELIX_PARSERS.items():
        raw = _felix_raw(item, key)
        if raw is None:
            continue
        if raw.lower() == "none":
            fields[field] = _FELIX_DEFAULTS[field]  # the zero value: the default here
            continue
        try:
            fields[field] = parse(raw)
        except ValueError as exc:
            if key in _FELIX_DIE_ON_FAIL:
                warnings.append(f"FelixConfiguration {name}: {key} {raw!r} is {exc}: "
                                f"Felix refuses it and exits; k3snet judges without it")
            else:
                warnings.append(f"FelixConfiguration {name}: {key} {raw!r} is {exc}: "
                                f"Felix replaces it with its default")
            fields[field] = _FELIX_DEFAULTS[field]
    return fields


def read_felix_nat(items: Iterable[Mapping[str, Any]]
                   ) -> tuple[tuple[CalicoFelixNat, ...], tuple[str, ...]]:
    """Felix's outgoing-NAT settings per scope from ``FelixConfiguration`` resources (as
    the API lists them), and the warnings reading them gave.

    One :class:`~k3snet.model.cni.CalicoFelixNat` for ``default`` (always: no resource
    means Felix's defaults), and one for each ``node.NAME`` and each resource with a
    ``nodeSelector`` (Calico v3.32 and later), its fields over the default's one by one
    as Felix merges them (a node that a selector-scoped resource selects and that has
    its own is judged without the selector-scoped one). Other names Felix ignores.
    """
    warnings: list[str] = []
    default: dict[str, Any] = {}
    scoped: dict[str, dict[str, Any]] = {}
    for item in items:
        if not isinstance(item, Mapping):
            continue
        name = (item.get("metadata") or {}).get("name")
        spec = item.get("spec")
        if not isinstance(name, str) or not isinstance(spec, Mapping | None):
            continue
        if name == "default":
            default = _felix_fields(item, warnings)
        elif (name.startswith("node.") and name != "node.") or (spec or {}).get(
                "nodeSelector"):
            scoped[name] = _felix_fields(item, warnings)
    found = [CalicoFelixNat("default", **default)]
    found += [CalicoFelixNat(name, **{**default, **fields})
              for name, fields in sorted(scoped.items())]
    return tuple(found), tuple(warnings)


CALICO_HOST_ANNOTATIONS: tuple[str, ...] = ("projectcalico.org/IPv4Address",
                                            "projectcalico.org/IPv6Address")
"""The Node annotations calico-node writes its autodetected addresses to (with their
prefix length), which Felix puts in its all-hosts sets."""


def read_calico_hosts(items: Iterable[Any]) -> tuple[tuple[tuple[str, Network], ...],
                                                     tuple[str, ...]]:
    """``(node, address)`` of each Calico host address on the Nodes (as the API lists
    them) and the warnings reading them gave: an annotation that is no address with a
    prefix (``192.168.1.10/24``) is left out, as Felix leaves out what it cannot parse."""
    hosts: list[tuple[str, Network]] = []
    warnings: list[str] = []
    for item in items:
        metadata = item.get("metadata") if isinstance(item, Mapping) else None
        if not isinstance(metadata, Mapping) or not isinstance(metadata.get("name"), str):
            continue
        annotations = metadata.get("annotations")
        if not isinstance(annotations, Mapping):
            continue
        name = metadata["name"]
        for key in CALICO_HOST_ANNOTATIONS:
            value = annotations.get(key)
            if not isinstance(value, str) or not value:
                continue
            try:
                address = ipaddress.ip_interface(value.strip()).ip
            except ValueError:
                warnings.append(f"Node {name[:253]}: {key} {value[:80]!r} is not an address; "
                                "left out of Calico's hosts")
                continue
            if (address.version == 4) == key.endswith("IPv4Address"):
                hosts.append((name, ipaddress.ip_network(address)))
    return tuple(hosts), tuple(warnings)


# ---------------------------------------------------------------- the backend


def _api_choice(api: object) -> None:
    if not isinstance(api, str) or api not in (*APIS, "auto"):
        raise ModelError(f"calico backend: api must be crd, v3 or auto, got {api!r}")


def _field_manager(field_manager: object) -> None:
    # The API server takes a fieldManager of at most 128 characters.
    if not option_text("field_manager", field_manager) or len(str(field_manager)) > 128:
        raise ModelError(f"calico backend: field_manager must be 1..128 characters, got "
                         f"{field_manager!r}")


class CalicoBackend(BackendBase):
    """Calico IP pools through the Kubernetes API (``projectcalico.org/v3`` or the CRDs).

    ``api_client`` is a ``kubernetes.client.ApiClient`` (else one is built from
    ``kubeconfig``/``context`` or the in-cluster service account). ``api`` picks
    the API (see the module docs; ``auto`` by discovery). ``allow_disruptive``
    lets ``apply`` make the changes :meth:`disruptive` names. ``timeout`` bounds
    each request. :attr:`warnings` holds what the last read of the pools found
    worth saying (fields the API server drops).
    """

    name = "calico"
    option_defaults: ClassVar[Mapping[str, str]] = {"kubeconfig": KUBECONFIG_DEFAULT}
    """What an option left out means (``k3snet explain backends.calico``)."""

    option_checks: ClassVar[OptionChecks] = {
        "api": _api_choice, "field_manager": _field_manager,
        "timeout": lambda v: option_seconds("timeout", v),
        "allow_disruptive": lambda v: option_flag("allow_disruptive", v),
        **API_OPTION_CHECKS}
    """The constructor's checks of option values."""

    def __init__(
        self,
        *,
        api_client: Any = None,
        api: ApiChoice = "auto",
        allow_disruptive: bool = False,
        field_manager: str = "k3snet",
        kubeconfig: str | None = None,
        context: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__()
        _api_choice(api)
        timeout = option_seconds("timeout", timeout)
        allow_disruptive = option_flag("allow_disruptive", allow_disruptive)
        _field_manager(field_manager)
        self._client, self._owns_client = make_api_client(
            api_client, kubeconfig=kubeconfig, context=context)
        from kubernetes import client  # noqa: PLC0415 - optional dependency (k3snet[kube])

        self._objects = client.CustomObjectsApi(self._client)
        self._api_choice = api
        self._api: tuple[str, str] | None = APIS.get(api)
        self.allow_disruptive = allow_disruptive
        self.field_manager = field_manager
        self.timeout = timeout
        self.warnings: tuple[str, ...] = ()
        self._observed: FreshRead[_Listing] = FreshRead()  # for the check or apply after it
        # pool name -> (resourceVersion, the IPPool CRD's, when): a write of
        # disableBGPExport true answered without it (_saw_written), while nothing changed
        # since, for BGP_EXPORT_RETRY seconds.
        self._bgp_export_lost: dict[str, tuple[object, object, float]] = {}
        # _read_pool_crd's answer in this listing; None: not read.
        self._pool_crd: tuple[bool | None, object] | None = None
        # The last answer of the IPPool CRD's read and when it came, kept for
        # BGP_EXPORT_RETRY seconds (_read_pool_crd).
        self._pool_crd_read: tuple[tuple[bool | None, object], float] | None = None
        # When a dry run of a pool's write was last refused (_dry_run_drops), kept for
        # BGP_EXPORT_RETRY seconds; None: not refused.
        self._dry_run_refused: float | None = None
        self._monotonic = time.monotonic  # the holds' clock (a test moves it)
        # Every Node's metadata, or the error listing it, in this listing of the pools
        # (_nodes); None: not listed.
        self._node_list: list[Any] | KubeApiError | None = None
        # (namespace, name) -> the pools each pod naming some names (read_named_pools),
        # and the resourceVersion to watch the pods' changes from (_pods_named); None:
        # not listed, or to list again.
        self._pod_pools: dict[tuple[str, str], frozenset[str]] | None = None
        self._pods_version: str | None = None
        self._pods_watched = True  # False once a watch was refused (403): list each pass

    @property
    def capabilities(self) -> frozenset[str]:
        """``{"ippool"}``."""
        return frozenset({"ippool"})

    @classmethod
    def declared_kinds(cls, options: Mapping[str, Any]) -> frozenset[str] | None:
        """``{"ippool"}``, whatever the options (``k3snet validate``: a memory backend of
        every kind beside it manages it too)."""
        return frozenset({"ippool"})

    @property
    def api_client(self) -> Any:
        """The Kubernetes ``ApiClient`` this backend talks to (a plan file records
        which cluster it is, :mod:`k3snet.planfile`)."""
        return self._client

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
            with translate_errors(f"discover {group}/{version}",
                                  classifier=KubeErrors(timeout=self.timeout)):
                served = self._objects.get_api_resources(group, version,
                                                         _request_timeout=self.timeout)
        except KubeApiError as exc:
            if exc.status == 404:
                return APIS["crd"]
            raise
        names = {r.name for r in (served.resources or ())}
        return APIS["v3"] if PLURAL in names else APIS["crd"]

    def disruptive(self, change: Change) -> str | None:
        """Why ``change`` disrupts running pods (see :func:`disruptive_reason`), or None."""
        return disruptive_reason(change)

    # ------------------------------------------------------------ reading

    def _list(self) -> _Listing:
        group, version = self.api
        try:
            items = self._list_all(PLURAL, "IPPools")
        except KubeApiError as exc:
            if exc.status == 404:
                server = " with its API server" if (group, version) == APIS["v3"] else ""
                raise KubeApiError(f"{exc}; the API {group}/{version} is not served: is Calico "
                                   f"installed{server}?", status=404, reason=exc.reason) from exc
            raise
        owned: dict[str, IPPool] = {}
        owned_raw: dict[str, dict[str, Any]] = {}
        foreign: dict[str, IPPool | None] = {}
        invalid: dict[str, str] = {}
        warnings: list[str] = []
        # The IPPool CRD is read only where it decides something: a pool of k3snet's
        # without disableBGPExport, which k3snet always writes.
        self._pool_crd = None
        self._node_list = None
        if any(_owned_label(i) and _lacks_bgp_export(i) for i in items if isinstance(i, dict)):
            self._pool_crd = self._read_pool_crd()
        for item in items:
            metadata = item.get("metadata") if isinstance(item, dict) else None
            name = metadata.get("name") if isinstance(metadata, dict) else None
            if not isinstance(name, str):
                continue
            try:
                pool, found = read_pool(item)
            except ModelError as exc:
                if _owned_label(item):
                    raise BackendError(
                        f"{exc} (the pool is labelled as k3snet's: fix it or delete it, k3snet "
                        "does not guess what it should be)") from exc
                foreign[name] = None  # never raise on foreign things: a conflict says it
                invalid[name] = _problem(exc, name)
                continue
            warnings += found
            if _owned_label(item):
                if self._bgp_export_dropped(item):
                    pool = attrs.evolve(pool, disable_bgp_export_dropped=True)
                    warnings.append(_bgp_export_warning(pool.name, pool.cidr))
                owned[name] = pool
                owned_raw[name] = item
            else:
                foreign[name] = attrs.evolve(pool, unallocatable=_unallocatable(item))
        _mark_lb_twins(owned, foreign)
        felix, blocks, found = self._felix_and_blocks(
            [*owned.values(), *(p for p in foreign.values() if p)])
        warnings += found
        self.warnings = tuple(warnings)
        self.log_warnings()  # each once while it lasts, not on every agent pass
        return _Listing(owned, owned_raw, foreign, invalid, self.warnings, felix, blocks)

    def _felix_and_blocks(self, readable: list[IPPool]) -> tuple[
            tuple[CalicoFelixNat, ...], tuple[tuple[str, str], ...], tuple[str, ...]]:
        """The FelixConfigurations' NAT (:meth:`_felix`), the blocks IPAM still assigns
        from where they may decide (:meth:`_blocks`, :meth:`_blocks_in_use`) and the
        warnings reading them gave; the Nodes listed for them are dropped after."""
        blocks: tuple[tuple[str, str], ...] = ()
        try:
            felix, warnings = self._felix()
            if _blocks_may_decide(readable):
                blocks, found = self._blocks()
                warnings += found
                blocks, found = self._blocks_in_use(blocks, readable)
                warnings += found
        finally:
            # Shared within this listing alone: every Node's metadata (megabytes in a
            # large cluster) is not kept between passes.
            self._node_list = None
        return felix, blocks, warnings

    def _blocks(self) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
        """The IPAM blocks the nodes hold (:func:`read_block_affinities`), from Calico's
        ``blockaffinities`` through the pools' API (:data:`AFFINITY_APIS`: where the
        pools are ``projectcalico.org/v3``, then in ``crd.projectcalico.org``).
        Served in neither (an etcd datastore), none; without the right to list them
        (403, where none answers), none and a warning: pods' addresses in blocks of
        pools outside the pod CIDRs are then not judged."""
        refused: KubeApiError | None = None
        # Pools served by crd.projectcalico.org: Calico keeps its data there, not in v3
        # CRDs (one request a pass).
        apis = AFFINITY_APIS if self.api[0] == "projectcalico.org" else AFFINITY_APIS[1:]
        for group, version in apis:
            try:
                items = self._list_affinities(group, version)
            except KubeApiError as exc:
                if exc.status not in (403, 404):
                    raise
                # Not served there, or not allowed (the API server authorizes a
                # request before it looks for the resource): the next.
                refused = exc if exc.status == 403 else refused
                continue
            return read_block_affinities(items), ()
        if refused is None:
            return (), ()
        return (), (f"{refused}: the IPAM blocks nodes hold are not read, so addresses "
                    "pods get from blocks their nodes hold in a pool outside the pod "
                    "CIDRs (Calico IPAM uses those before the pod CIDR's pool) are not "
                    "judged",)

    def _blocks_in_use(self, blocks: tuple[tuple[str, str], ...], pools: list[IPPool]
                       ) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
        """The ``blocks`` Calico IPAM still assigns from (:func:`block_in_use`): a node's
        block counts where a pool holding it assigns automatically and selects the node
        (by the node's labels as Calico reads them, :func:`calico_node_labels`), or where
        a pod's or namespace's annotation names such a pool (:func:`read_named_pools`).
        The Nodes are listed only where a block lies in automatic pools none of which
        selects every node, the Pods and Namespaces only where a block is left that no
        pool gives its node automatically; a node not listed (gone, or the list
        refused: a warning) keeps its blocks, and so does every block when the
        annotations cannot be read (a warning), judged as before."""
        if all(block_in_use(block, pools, None, None) is True for _, block in blocks):
            return blocks, ()
        warnings: list[str] = []
        labels: dict[str, dict[str, str]] | None = {}
        # The labels decide only for a block in an automatic pool with a nodeSelector
        # (with no pool named, None is the labels' "not known" alone): a block in a
        # Manual or "!all()" pool lists the Namespaces and Pods, not the Nodes.
        if any(block_in_use(block, pools, None, frozenset()) is None for _, block in blocks):
            try:
                items = self._nodes()
            except KubeApiError as exc:
                if exc.status not in (403, 404):
                    raise
                labels = None
                if exc.status == 403:
                    warnings.append(
                        f"{exc}: the labels of the nodes holding IPAM blocks in a pool with "
                        "a nodeSelector are not read, so each such block is judged as one "
                        "Calico IPAM still assigns from, though the pool may select its "
                        "node no more")
            else:
                labels = {metadata["name"]: calico_node_labels(metadata)
                          for metadata in (item.get("metadata") if isinstance(item, Mapping)
                                           else None for item in items)
                          if isinstance(metadata, Mapping)
                          and isinstance(metadata.get("name"), str)}

        def node_labels(node: str) -> Mapping[str, str] | None:
            return None if labels is None else labels.get(node)

        # The annotations decide only for a block no pool gives its node automatically.
        if all(block_in_use(block, pools, node_labels(node)) is not False
               for node, block in blocks):
            return blocks, tuple(warnings)
        try:
            named: frozenset[str] | None = self._named_pools(
                lambda found: all(block_in_use(block, pools, node_labels(node), found)
                                  is not False for node, block in blocks))
        except KubeApiError as exc:
            if exc.status not in (403, 404):
                raise
            # Not served (no such API: no pod names a pool), or not allowed: a warning.
            named = None if exc.status == 403 else frozenset()
            if named is None:
                warnings.append(
                    f"{exc}: the pools pods and namespaces name in their "
                    "cni.projectcalico.org/ipv4pools and ipv6pools annotations are not "
                    "read, so each block a node holds in a pool that does not give it "
                    "addresses automatically is judged as one Calico IPAM still assigns "
                    "from")
        return tuple((node, block) for node, block in blocks
                     if block_in_use(block, pools, node_labels(node), named) is not False
                     ), tuple(warnings)

    def _named_pools(self, enough: Callable[[frozenset[str]], bool]) -> frozenset[str]:
        """The pools every Namespace's and Pod's :data:`POOLS_ANNOTATIONS` name
        (:func:`read_named_pools`), from their metadata alone
        (:func:`~k3snet.kube.list_metadata`), the pods' over their namespaces' taken
        together: never fewer pools than some pod may name. The Namespaces are listed
        first, and the Pods (many more, and larger) only where the pools the
        namespaces name are not ``enough``: the pods' can only add to them."""
        from kubernetes import client  # noqa: PLC0415 - optional dependency (k3snet[kube])

        core = client.CoreV1Api(self._client)
        named = read_named_pools(list_metadata(core.list_namespace,
                                               "list Namespaces (metadata)",
                                               timeout=self.timeout))
        if enough(named):
            return named
        return named | self._pods_named(core)

    @property
    def _watches_pods(self) -> bool:
        """Whether the Pods' changes are watched (:meth:`_pods_named`): not once a watch
        was refused (403), nor where each request's ``timeout`` is not above the
        :data:`~k3snet.kube.WATCH_SECONDS` the API server holds a watch open."""
        return self._pods_watched and self.timeout > WATCH_SECONDS

    def _pods_named(self, core: Any) -> frozenset[str]:
        """The pools the Pods' annotations name (:func:`read_named_pools`): every Pod's
        metadata listed once (:func:`~k3snet.kube.list_metadata`), then, on each pass
        after, the changes since that list alone, from a watch at its resourceVersion
        (:func:`~k3snet.kube.watch_metadata`: a pod created, changed or deleted since
        is seen in the very next pass). Listed again, in the same pass, wherever the
        watch fails: the version is older than the API server keeps (410), newer than
        the watch cache of the API server answering (504 "Too large resource version",
        behind another's), any other failure; where watching is not allowed (403),
        listed on every pass from then on, as without the watch (and so where the
        ``timeout`` is too short to wait for a watch, :attr:`_watches_pods`)."""
        pods = self._pod_pools
        if pods is not None and self._pods_version is not None and self._watches_pods:
            try:
                events, self._pods_version = watch_metadata(
                    core.list_pod_for_all_namespaces, "watch Pods (metadata)",
                    since=self._pods_version, timeout=self.timeout)
            except KubeApiError as exc:
                # Listed again in this pass, whatever the watch's failure: 410 (too
                # old), 504 "Too large resource version" (another API server's watch
                # cache behind the list's), a timeout; the list raises where the API
                # server cannot answer it either.
                self._pod_pools = pods = None
                self._pods_watched = exc.status != 403
            else:
                for kind, item in events:
                    _note_pod(pods, kind, item)
        if pods is None:
            versions: list[str] = []
            items = list_metadata(core.list_pod_for_all_namespaces, "list Pods (metadata)",
                                  timeout=self.timeout, on_version=versions.append)
            pods = {}
            for item in items:
                _note_pod(pods, "ADDED", item)
            # Kept only where a watch follows it: every pod naming a pool, not every pod.
            if self._watches_pods and versions:
                self._pod_pools, self._pods_version = pods, versions[-1]
        return frozenset().union(*pods.values())

    def _nodes(self) -> list[Any]:
        """Every Node's metadata (:func:`~k3snet.kube.list_node_metadata`), listed once in a
        listing of the pools however many ask (the Calico hosts' addresses, the labels
        of the nodes holding blocks); a failed list raises its error to each."""
        if self._node_list is None:
            from kubernetes import client  # noqa: PLC0415 - optional dependency (k3snet[kube])

            try:  # only the labels and annotations are read
                self._node_list = list_node_metadata(client.CoreV1Api(self._client),
                                                     "list Nodes (metadata)",
                                                     timeout=self.timeout)
            except KubeApiError as exc:
                self._node_list = exc
        if isinstance(self._node_list, KubeApiError):
            raise self._node_list
        return self._node_list

    def _list_affinities(self, group: str, version: str) -> list[Any]:
        doing = f"list BlockAffinities ({group}/{version})"

        def fetch(page: dict[str, Any]) -> Any:
            with translate_errors(doing, classifier=KubeErrors(timeout=self.timeout)):
                return self._objects.list_cluster_custom_object(
                    group, version, AFFINITY_PLURAL, _request_timeout=self.timeout, **page)

        # Read only, never written back: from the API server's watch cache.
        return list_pages(fetch, doing, cached=True)

    def _bgp_export_dropped(self, item: Mapping[str, Any]) -> bool:
        """Whether k3snet's pool ``item`` was read without ``disableBGPExport`` because the
        API drops it (its IPPool schema predates Calico v3.21, the field's first version).

        The field's absence alone does not tell: a pool written while the CRD lacked it
        keeps lacking it after Calico and its CRDs are upgraded, and only a write sets it
        then; Calico's API server answers a false by leaving it out. So: dropped when the
        IPPool CRD's schema prunes it (:meth:`_read_pool_crd`), or when this process's
        write of ``true`` was answered without it (:meth:`_saw_written`) and neither the
        pool nor the CRD changed since, for :data:`BGP_EXPORT_RETRY` seconds (an upgrade
        of Calico's API server changes neither). Otherwise the pool is one to write (a
        replace)."""
        if not _lacks_bgp_export(item):
            return False
        prunes, crd_version = self._pool_crd or (None, None)
        metadata = item.get("metadata") or {}
        name = str(metadata.get("name"))
        lost = self._bgp_export_lost.get(name)
        if lost is not None and lost[1] is _CRD_UNREAD:  # the CRD the write met, read now
            lost = self._bgp_export_lost[name] = (lost[0], crd_version, lost[2])
        if prunes:
            return True
        if (lost is not None and lost[:2] == (metadata.get("resourceVersion"), crd_version)
                and self._monotonic() - lost[2] < BGP_EXPORT_RETRY):
            return True
        # The CRD does not tell (not readable), or Calico's API server may drop the field
        # whatever the CRD says: a dry run of the write does, with nothing written.
        if (prunes is None or self.api == APIS["v3"]) and self._dry_run_drops(item):
            self._bgp_export_lost[name] = (metadata.get("resourceVersion"), crd_version,
                                           self._monotonic())
            return True
        return False

    def _dry_run_drops(self, item: Mapping[str, Any]) -> bool:
        """Whether a write of ``disableBGPExport: true`` into k3snet's pool ``item`` would
        be answered without it: a server-side apply of its spec with the field, as a dry
        run (``dryRun=All``: the API server prunes, converts and validates it as it would
        the write, and stores nothing). Its answer is the pool as the write would leave
        it, so without the field it is one no write sets, and the pool is held as after
        such a write (:meth:`_saw_written`), with nothing written: each new process (a
        CLI run) wrote the pool once to learn it where the CRD could not be read. Any
        failure (403 without ``patch``, a webhook refusing dry runs) is not known: the
        write tells then, as before. A refusal (a 4xx other than those of a pool
        changed or gone meanwhile, or of a busy server) is kept, as the CRD's answer is,
        for :data:`BGP_EXPORT_RETRY` seconds: no dry run is sent meanwhile (sent on each
        of the agent's passes, the same refused request every few seconds)."""
        now = self._monotonic()
        refused = self._dry_run_refused
        if refused is not None and now - refused < BGP_EXPORT_RETRY:
            return False
        group, version = self.api
        metadata, spec = item.get("metadata") or {}, item.get("spec") or {}
        name = str(metadata.get("name"))
        body = {"apiVersion": f"{group}/{version}", "kind": KIND,
                "metadata": {"name": name, "resourceVersion": metadata.get("resourceVersion")},
                "spec": {**spec, "disableBGPExport": True}}
        try:
            with translate_errors(f"apply IPPool {name} (disableBGPExport, a dry run)",
                                  classifier=KubeErrors(timeout=self.timeout)):
                answer = self._objects.patch_cluster_custom_object(
                    group, version, PLURAL, name, body, field_manager=self.field_manager,
                    force=True, dry_run="All", _content_type=APPLY_CONTENT_TYPE,
                    _request_timeout=self.timeout)
        except KubeApiError as exc:
            log.debug("calico: %s", exc)
            if exc.status is not None and 400 <= exc.status < 500 and (
                    exc.status not in _DRY_RUN_NOT_REFUSED):
                self._dry_run_refused = now
            return False
        found = answer.get("spec") if isinstance(answer, Mapping) else None
        return isinstance(found, Mapping) and "disableBGPExport" not in found

    def _read_pool_crd(self) -> tuple[bool | None, object]:
        """Whether the IPPool CRD's schema prunes ``spec.disableBGPExport`` (None: not
        known: the CRD unreadable, 403 without the right to get it, or its schema not
        understood), and the CRD's resourceVersion (an upgrade changes it).

        An answer (the CRD, or 403/404) is kept for :data:`BGP_EXPORT_RETRY` seconds:
        before Calico v3.21 every listing of the agent's passes needs it (k3snet's pools
        lack the field for good), and read on each it was one more GET of a CRD of some
        kilobytes a pass. An upgrade of the CRD meanwhile is seen when it runs out, as a
        hold learned from a write's answer is tried again then. Another failure (a 500, a
        timeout) is not kept."""
        now = self._monotonic()
        kept = self._pool_crd_read
        if kept is not None and now - kept[1] < BGP_EXPORT_RETRY:
            return kept[0]
        try:
            with translate_errors(f"read CustomResourceDefinition {POOL_CRD}",
                                  classifier=KubeErrors(timeout=self.timeout)):
                crd = self._objects.get_cluster_custom_object(
                    "apiextensions.k8s.io", "v1", "customresourcedefinitions", POOL_CRD,
                    _request_timeout=self.timeout)
        except KubeApiError as exc:
            log.debug("calico: %s", exc)
            if exc.status in (403, 404):
                self._pool_crd_read = ((None, None), now)
            return None, None
        verdict: tuple[bool | None, object] = (None, None)
        if isinstance(crd, Mapping):
            verdict = (_prunes_bgp_export(crd),
                       (crd.get("metadata") or {}).get("resourceVersion"))
        self._pool_crd_read = (verdict, now)
        return verdict

    def _saw_written(self, sent: Mapping[str, Any], answer: object) -> None:
        """Learn from a write's answer that the API drops ``disableBGPExport``: sent true,
        answered without it (held for that pool while it and the CRD stay as they were,
        :data:`BGP_EXPORT_RETRY` seconds at most). Where the listing before the write did
        not read the CRD (a new pool), the next one's reading of it is taken as the CRD
        the write met. The warning is said at once: the apply that wrote the pool (a
        CLI's run, which lists it no more) tells what the next listing would."""
        spec = answer.get("spec") if isinstance(answer, Mapping) else None
        if (isinstance(answer, Mapping) and isinstance(spec, Mapping)
                and (sent.get("spec") or {}).get("disableBGPExport")
                and "disableBGPExport" not in spec):
            metadata = answer.get("metadata") or {}
            name = str(metadata.get("name"))
            crd_version = self._pool_crd[1] if self._pool_crd is not None else _CRD_UNREAD
            self._bgp_export_lost[name] = (
                metadata.get("resourceVersion"), crd_version, self._monotonic())
            warning = _bgp_export_warning(name, spec.get("cidr"))
            if warning not in self.warnings:
                self.warnings = (*self.warnings, warning)

    def pool_objects(self) -> list[Any]:
        """Every IPPool as the API in use serves it (JSON data, not modelled): for readers
        judging them otherwise than :meth:`observe` (the doctor reads them as Felix reads
        them into its sets). A failed list raises :class:`~k3snet.kube.KubeApiError`
        (404: the API is not served)."""
        return self._list_all(PLURAL, "IPPools")

    def _list_all(self, plural: str, what: str) -> list[Any]:
        """Every object of ``plural`` in the pools' API, as the API server lists them
        (:data:`~k3snet.kube.LIST_PAGE` a request); its errors as :class:`KubeApiError`
        naming ``what`` and the API."""
        group, version = self.api
        doing = f"list {what} ({group}/{version})"

        def fetch(page: dict[str, Any]) -> Any:
            with translate_errors(doing, classifier=KubeErrors(timeout=self.timeout)):
                return self._objects.list_cluster_custom_object(
                    group, version, plural, _request_timeout=self.timeout, **page)

        return list_pages(fetch, doing)

    def _felix(self) -> tuple[tuple[CalicoFelixNat, ...], tuple[str, ...]]:
        """Felix's NAT settings (:func:`read_felix_nat`) from the FelixConfigurations of
        the pools' API. Without the CRD, Felix's defaults; without the right to list
        them, one unreadable ``default`` (a conflict for the NAT expectations)."""
        try:
            items = self._list_all(FELIX_PLURAL, "FelixConfigurations")
        except KubeApiError as exc:
            if exc.status == 404:
                return read_felix_nat(())
            if exc.status == 403:
                return (CalicoFelixNat("default", unreadable=f"{exc}"),), ()
            raise
        found, warnings = read_felix_nat(items)
        if not any(f.exclusions == "IPPoolsAndHostIPs" and f.unreadable is None for f in found):
            return found, warnings
        hosts, more = self._hosts()
        return (tuple(attrs.evolve(f, hosts=hosts) if f.exclusions == "IPPoolsAndHostIPs"
                      else f for f in found), (*warnings, *more))

    def _hosts(self) -> tuple[tuple[tuple[str, Network], ...], tuple[str, ...]]:
        """The Calico nodes' own addresses (Felix's all-hosts set, ``ipset_hosts_mgr.go``),
        from the ``projectcalico.org/IPv4Address`` / ``IPv6Address`` annotations calico-node
        writes on its Node (the Calico Node's ``spec.bgp`` addresses, with their prefix):
        listed only for ``natOutgoingExclusions: IPPoolsAndHostIPs``. Nodes that cannot be
        listed (403) are a warning: those addresses are then not judged."""
        try:
            items = self._nodes()
        except KubeApiError as exc:
            if exc.status == 404:  # no Node resource served (an emulated server): none
                return (), ()
            if exc.status == 403:
                return (), (f"{exc}: the Calico nodes' own addresses, which "
                            "natOutgoingExclusions: IPPoolsAndHostIPs leaves untranslated, "
                            "are not judged",)
            raise
        return read_calico_hosts(items)

    def observe(self) -> State:
        """Owned pools (k3snet's label), the readable foreign pools, and all of them at once
        (:class:`~k3snet.model.cni.CalicoPools`)."""
        self._observed.drop()
        listing = self._list()
        self._observed.put(listing)
        return listing.state()

    def _listing(self) -> _Listing:
        """What :meth:`observe` listed right before (:class:`~k3snet.backends.kit.FreshRead`),
        else a new listing."""
        listing = self._observed.take()
        return self._list() if listing is None else listing

    # ------------------------------------------------------------ checking

    def _problems(self, plan: Plan, listing: _Listing) -> list[str]:
        """Why ``plan`` does not fit the pools listed (empty when it does)."""
        problems: list[str] = []
        for change in plan.changes:
            subject = change.subject
            if isinstance(subject, IPPool) and subject.name in listing.foreign:
                problems.append(f"IPPool {subject.name} exists and is not k3snet's (no "
                                f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE} label); k3snet never "
                                f"changes it: {change}")
            elif not isinstance(subject, IPPool):
                problems.append(f"calico backend: cannot apply {change}: not an IPPool")
        if problems:
            return problems
        problems += fit_problems(self, plan, listing.state())
        problems += disruptive_problems(self, plan)
        problems += _kept_metadata_problems(plan, listing)
        return problems

    def check(self, plan: Plan) -> tuple[str, ...]:
        """Problems applying ``plan`` would hit; nothing is written.

        (No server-side dry run of its writes: the emulated API server used in tests
        emulates one for an apply alone.)
        """
        if not plan.changes:
            return tuple(fit_problems(self, plan, State()))
        try:
            return tuple(self._problems(plan, self._listing()))
        except (PlanError, BackendError) as exc:
            return (str(exc),)

    # ------------------------------------------------------------ applying

    def apply(self, plan: Plan) -> ApplyResult:
        """Apply every change, or undo what was done and raise ApplyError."""
        self.ensure_capable(plan)
        fail_at = self.faults.take(plan)
        if not plan.changes:
            return ApplyResult(self.name, (), operations=0)
        try:
            listing = self._listing()
        except BackendError as exc:
            raise ApplyError(f"{exc}; nothing was changed") from exc
        problems = self._problems(plan, listing)
        if problems:
            raise PlanError("the plan does not fit the cluster; nothing was changed:\n  "
                            + "\n  ".join(problems))
        run = _Run(self, listing)
        # An interruption (SIGTERM's SystemExit in `k3snet apply`, Ctrl-C) takes back
        # what was made too: it left the pools created before it, exit 143 saying
        # they were taken back.
        with run.undo.guarding():
            for index, change in enumerate(plan.changes):
                try:
                    if index == fail_at:
                        raise KubeApiError(f"injected failure (fault hook) at change {index}")
                    run.change(change)
                except KubeApiError as exc:
                    # The requests this change made before failing (a replace's delete)
                    # are taken back first; then every change done before it, in reverse.
                    run.undo.fail(change, str(exc), exc,
                                  extra_problems=run.take_back_pending())
                except BaseException:
                    if run.pending:  # a replace's delete made, its create interrupted
                        run.undo.record(change, run.undo_of_pending())
                    raise
                run.undo.record(change, run.undo_of_pending())
        return ApplyResult(self.name, run.undo.done, operations=run.operations)

    def close(self) -> None:
        """Release the API client if this backend built it (idempotent)."""
        if self._owns_client and self._client is not None:
            self._client.close()
            self._client = None
        super().close()


def _lacks_bgp_export(item: Mapping[str, Any]) -> bool:
    """Whether the pool resource ``item`` has a spec without ``disableBGPExport``."""
    spec = item.get("spec")
    return isinstance(spec, Mapping) and "disableBGPExport" not in spec


def _mapping(value: object, key: str) -> Mapping[str, Any]:
    """``value[key]`` where both are mappings, else an empty one."""
    found = value.get(key) if isinstance(value, Mapping) else None
    return found if isinstance(found, Mapping) else {}


def _prunes_bgp_export(crd: Mapping[str, Any]) -> bool | None:
    """Whether the IPPool CRD ``crd`` (apiextensions.k8s.io/v1) drops ``disableBGPExport``
    from what is written: its ``v1`` schema declares a ``spec`` without that field and
    keeps no unknown field there. None: not known (no such version or schema)."""
    spec = _mapping(crd, "spec")
    versions = spec.get("versions")
    found = [v for v in versions if isinstance(v, Mapping) and v.get("name") == "v1"] \
        if isinstance(versions, list) else []
    schema = _mapping(_mapping(found[0] if found else {}, "schema"), "openAPIV3Schema")
    pool_spec = _mapping(_mapping(schema, "properties"), "spec")
    properties = pool_spec.get("properties")
    kept = (spec.get("preserveUnknownFields") is True  # a v1beta1 CRD's: nothing pruned
            or (schema.get("x-kubernetes-preserve-unknown-fields") is True and not pool_spec)
            or pool_spec.get("x-kubernetes-preserve-unknown-fields") is True
            or (isinstance(properties, Mapping) and "disableBGPExport" in properties))
    if kept:
        return False
    return True if isinstance(properties, Mapping) else None


def _bgp_export_warning(name: str, cidr: object) -> str:
    """What to tell the admin about k3snet's pool ``name`` (of ``cidr``) whose
    ``disableBGPExport`` the API drops."""
    return (f"IPPool {name}: the API server drops disableBGPExport (Calico's IPPool "
            "schema predates v3.21), so where Calico runs BGP (BIRD) every node exports "
            f"{cidr} over BGP: the routes it has there, its LAN's too, go to its BGP "
            "peers; k3snet leaves the pool as it is: upgrade Calico (and its CRDs) to "
            "v3.21 or later, or filter the routes at the peers")


def _holds_sent(spec: object, sent: Mapping[str, Any]) -> bool:
    """Whether a pool's ``spec`` as read holds every field of ``sent`` (what k3snet
    wrote): the fields the API server added (its defaults, ``allowedUses``) aside, and
    a field absent read as its Go zero value: Calico's API server (``projectcalico.org/v3``)
    answers ``natOutgoing: false``, ``disabled: false``, ``disableBGPExport: false`` by
    leaving them out (``omitempty``), and a pool k3snet wrote with them was not its own."""
    if not isinstance(spec, Mapping):
        return False
    for key, value in sent.items():
        if key in spec:
            if spec[key] != value:
                return False
        elif value not in (False, "", 0, [], {}, None):
            return False
    return True


class _Run:
    """One apply: the requests made, and how to undo each of them (a kit Compensation)."""

    def __init__(self, backend: CalicoBackend, listing: _Listing) -> None:
        self.backend = backend
        self.group, self.version = backend.api
        self.raw = dict(listing.owned_raw)  # name -> the resource as last seen or written
        self.undo = Compensation(backend.name)
        from kubernetes import client  # noqa: PLC0415 - optional dependency (k3snet[kube])

        self.client = client
        self.operations = 2  # the listings (pools, FelixConfigurations)
        self.pending: list[tuple[str, Callable[[], object]]] = []  # this change's undos

    def _will_undo(self, what: str, undo: Callable[[], object]) -> None:
        self.pending.append((what, undo))

    def undo_of_pending(self) -> Callable[[], object]:
        """The undo of the change just made (its requests' undos, in reverse)."""
        steps, self.pending = self.pending, []

        def undo() -> None:
            problems = []
            for what, step in reversed(steps):
                try:
                    step()
                except KubeApiError as exc:
                    problems.append(f"{what}: {exc}")
            if problems:
                raise UndoFailure(problems)

        return undo

    def take_back_pending(self) -> list[str]:
        """Undo the requests of a change that failed half-way; the undos that failed."""
        try:
            self.undo_of_pending()()
        except UndoFailure as exc:
            return list(exc.problems)
        return []

    def _call(self, what: str, call: Callable[[], Any]) -> Any:
        self.operations += 1
        with translate_errors(what, classifier=KubeErrors(timeout=self.backend.timeout)):
            return call()

    def _read_pool(self, name: str, why: str) -> Any:
        """Read pool ``name`` (errors translated, the request counted); ``why`` ends the
        request's label: ``read IPPool NAME (WHY)``."""
        return self._call(
            f"read IPPool {name} ({why})",
            lambda: self.backend._objects.get_cluster_custom_object(
                self.group, self.version, PLURAL, name,
                _request_timeout=self.backend.timeout),
        )

    def _body(self, pool: IPPool, resource_version: str | None = None, *,
              reset: IPPool | None = None, keep: Mapping[str, Any] | None = None
              ) -> dict[str, Any]:
        """The resource to write; ``keep``: the labels and annotations of the pool it
        replaces (a disruptive change re-creates it: what others added stays)."""
        keep = keep or {}
        metadata: dict[str, Any] = {"name": pool.name, "labels": {
            **(keep.get("labels") or {}), MANAGED_BY_LABEL: MANAGED_BY_VALUE}}
        if keep.get("annotations"):
            metadata["annotations"] = dict(keep["annotations"])
        if resource_version:
            metadata["resourceVersion"] = resource_version
        # A newer field going back to its default is sent explicitly: left out, an apply
        # would leave a value another writer set in place.
        explicit = (reset.extra_spec() if reset is not None else {}).keys()
        return {"apiVersion": f"{self.group}/{self.version}", "kind": KIND,
                "metadata": metadata, "spec": pool.to_spec(explicit=explicit)}

    def change(self, change: Change) -> None:
        """Make one change; each request's undo is recorded as soon as it is done."""
        before, after = change.before, change.after
        if change.action == "add":
            assert isinstance(after, IPPool)
            self.create(after.name, self._body(after))
        elif change.action == "delete":
            assert isinstance(before, IPPool)
            self.delete(before.name)
        elif disruptive_fields(change):
            assert isinstance(before, IPPool) and isinstance(after, IPPool)  # noqa: PT018
            kept = self._kept_metadata(before.name)
            self.delete(before.name)
            self.create(after.name, self._body(after, keep=kept))
        else:
            assert isinstance(before, IPPool) and isinstance(after, IPPool)  # noqa: PT018
            self.server_side_apply(before, after)

    def _kept_metadata(self, name: str) -> dict[str, Any]:
        """The labels and annotations of pool ``name`` as Calico read them, for its
        re-creation (:func:`calico_metadata`: Calico's ``projectcalico.org/metadata``
        annotation, which also holds the deleted pool's uid and creation time, is
        not carried over)."""
        labels, annotations = calico_metadata(self.raw.get(name) or {})
        return {"labels": labels, "annotations": annotations}

    def create(self, name: str, body: dict[str, Any], *, record: bool = True) -> None:
        # POST, not apply: a create must fail if the name was taken since the listing.
        kept = len(self.pending)
        try:
            created = self._call(
                f"{'create' if record else 're-create'} IPPool {name}",
                lambda: self.backend._objects.create_cluster_custom_object(
                    self.group, self.version, PLURAL, body,
                    field_manager=self.backend.field_manager,
                    _request_timeout=self.backend.timeout),
            )
            self.backend._saw_written(body, created)
            if record:
                self.raw[name] = created if isinstance(created, dict) else body
                made = (created.get("metadata") or {}) if isinstance(created, dict) else {}
                uid = made.get("uid") if isinstance(made, dict) else None
                self._will_undo(f"delete IPPool {name} (created)",
                                lambda: self.take_back_create(name, uid))
        except Exception:
            raise
        except BaseException:
            # Interrupted with the create sent and its answer unread (SIGTERM's
            # SystemExit, Ctrl-C: in the request, or in the wait after a 503 that may
            # have followed its effect), or answered and its undo not kept yet (a
            # signal's handler runs at any call): the pool may be there, its uid
            # unknown. It was left, and `k3snet apply` said it had taken back what it made.
            if record and len(self.pending) == kept:
                self._will_undo(f"delete IPPool {name} (created, its answer unread)",
                                lambda: self.take_back_unanswered(name, body))
            raise

    def take_back_create(self, name: str, uid: object) -> None:
        """Delete the pool this apply created, exactly it: its ``uid`` is the delete's
        precondition (a pool of that name made again by someone else since is a 409, and
        stays), which makes the delete safe to send again after a 503
        (:func:`~k3snet.kube.safe_to_send_again`): without one, a 503 left the pool
        and the apply half-done. A pool already gone (404: deleted by someone else, or
        by an earlier send of this delete that the 503 followed) is taken back."""
        body = None
        if isinstance(uid, str) and uid:
            body = self.client.V1DeleteOptions(
                preconditions=self.client.V1Preconditions(uid=uid))
        try:
            self._call(
                f"delete IPPool {name}",
                lambda: self.backend._objects.delete_cluster_custom_object(
                    self.group, self.version, PLURAL, name, body=body,
                    _request_timeout=self.backend.timeout),
            )
        except KubeApiError as exc:
            if exc.status != 404:
                raise

    def apply_back_unanswered(self, before: IPPool, after: IPPool,
                              new: Mapping[str, Any]) -> None:
        """Apply ``before`` back over an apply an interruption cut with its answer unread,
        when the pool read holds the ``new`` spec it sent (else it was not made: left)."""
        found = self._read_pool(before.name, "applied?")
        spec = found.get("spec") if isinstance(found, dict) else None
        if _holds_sent(spec, new):
            self._apply(f"apply back IPPool {before.name}", before.name,
                        self._body(before, reset=after))

    def take_back_unanswered(self, name: str, body: dict[str, Any]) -> None:
        """Delete the pool an interrupted create may have made: read, and deleted by its
        ``uid`` when it is the one ``body`` makes, written by k3snet alone
        (:meth:`_found_as_written`); none there, or another writer's (the name taken
        before the create), is nothing to take back."""
        found = self._found_as_written(name, body, created=True)
        if found is not None:
            self.take_back_create(name, (found.get("metadata") or {}).get("uid"))

    def delete(self, name: str) -> None:
        seen = self.raw.get(name) or {}
        metadata = seen.get("metadata") or {}
        body = None
        if metadata.get("resourceVersion") or metadata.get("uid"):
            # Delete exactly the pool that was read: a re-created or edited one gives 409.
            body = self.client.V1DeleteOptions(preconditions=self.client.V1Preconditions(
                resource_version=metadata.get("resourceVersion"), uid=metadata.get("uid")))
        recreate = {
            "apiVersion": seen.get("apiVersion", f"{self.group}/{self.version}"),
            "kind": seen.get("kind", KIND),
            "metadata": {k: v for k, v in metadata.items()
                         if k in ("name", "labels", "annotations")},
            "spec": seen.get("spec") or {},
        }
        kept = len(self.pending)
        try:
            self._call(
                f"delete IPPool {name}",
                lambda: self.backend._objects.delete_cluster_custom_object(
                    self.group, self.version, PLURAL, name, body=body,
                    _request_timeout=self.backend.timeout),
            )
            self._will_undo(f"re-create IPPool {name} (deleted)",
                            lambda: self.put_back(name, recreate))
        except Exception:
            raise
        except BaseException:
            # Interrupted with the delete sent and its answer unread (SIGTERM, Ctrl-C),
            # or answered and its undo not kept yet: the pool may be gone, and nothing
            # put it back.
            if len(self.pending) == kept:
                self._will_undo(f"re-create IPPool {name} (deleted, its answer unread)",
                                lambda: self.put_back_unanswered(name, metadata.get("uid"),
                                                                 recreate))
            raise
        self.raw.pop(name, None)

    def put_back_unanswered(self, name: str, uid: object, body: dict[str, Any]) -> None:
        """Put back the pool an interrupted delete may have deleted: read, the pool read
        before (its ``uid``) still there is the delete never made; else :meth:`put_back`."""
        try:
            found = self._read_pool(name, "deleted?")
        except KubeApiError as exc:
            if exc.status != 404:
                raise
        else:
            metadata = found.get("metadata") if isinstance(found, dict) else None
            if (isinstance(uid, str) and uid and isinstance(metadata, dict)
                    and metadata.get("uid") == uid):
                return
        self.put_back(name, body)

    def put_back(self, name: str, body: dict[str, Any]) -> None:
        """Re-create the pool this apply deleted. Sent again after a 503 that followed its
        effect, the create is refused (409 AlreadyExists) though the pool is back: the
        pool found then is read, and the undo is done when it is the one k3snet put back
        (:meth:`_put_back_found`); another pool of that name (someone else's, another
        spec) is the 409, a failed undo."""
        try:
            self.create(name, body, record=False)
        except KubeApiError as exc:
            if exc.status != 409 or not self._put_back_found(name, body):
                raise

    def _put_back_found(self, name: str, body: dict[str, Any]) -> bool:
        """Whether pool ``name`` is the one ``body`` re-created (:meth:`_found_as_written`)."""
        try:
            return self._found_as_written(name, body) is not None
        except KubeApiError:
            return False

    def _found_as_written(self, name: str, body: dict[str, Any], *, created: bool = False
                          ) -> dict[str, Any] | None:
        """Pool ``name`` when it is the one ``body`` makes: the same spec, labels and
        annotations (Calico's own ``projectcalico.org/metadata`` aside), and written by
        k3snet's field manager alone (a pool someone else made has their manager in its
        ``managedFields``); else None. A failed read is raised. ``created``: ``body`` is
        k3snet's own create, whose spec the API server may have completed with its
        defaults (Calico's v3 API: ``allowedUses``): its fields are compared alone, and
        a pool not there (404) is None."""
        try:
            found = self._read_pool(name, "made by k3snet?")
        except KubeApiError as exc:
            if created and exc.status == 404:
                return None
            raise
        if not isinstance(found, dict):
            return None
        metadata = found.get("metadata") or {}
        sent = body.get("metadata") or {}
        spec, wanted = found.get("spec"), body.get("spec") or {}
        if not isinstance(metadata, dict) or not (
                _holds_sent(spec, wanted) if created else spec == wanted):
            return None
        annotations = {k: v for k, v in (metadata.get("annotations") or {}).items()
                       if k != CALICO_METADATA_ANNOTATION}
        if ((metadata.get("labels") or {}) != (sent.get("labels") or {})
                or annotations != {k: v for k, v in (sent.get("annotations") or {}).items()
                                   if k != CALICO_METADATA_ANNOTATION}):
            return None
        managers = [entry.get("manager") for entry in metadata.get("managedFields") or ()
                    if isinstance(entry, Mapping)]
        if not all(manager == self.backend.field_manager for manager in managers):
            return None
        return found

    def _apply(self, what: str, name: str, body: dict[str, Any], *, force: bool = False
               ) -> Any:
        # Server-side apply: the whole spec k3snet manages, under its field manager. Not
        # forced unless only k3snet's own create holds the fields (see _own_create_holds):
        # a field another manager owns is a 409 conflict, never taken over.
        return self._call(
            what,
            lambda: self.backend._objects.patch_cluster_custom_object(
                self.group, self.version, PLURAL, name, body,
                field_manager=self.backend.field_manager, force=force,
                _content_type=APPLY_CONTENT_TYPE, _request_timeout=self.backend.timeout),
        )

    def _own_create_holds(self, name: str, changed: list[str]) -> bool:
        """Whether an apply of ``changed`` (top-level spec fields) must be forced to take
        them from k3snet's own create, and may be.

        The API server tells managers apart by name *and* operation: the ``POST`` that
        created the pool recorded an ``Update`` entry for ``k3snet``, and a non-forced
        apply by ``k3snet`` conflicts with it (kubernetes/kubernetes#107417). Forced is
        right only when no other manager holds a changed field; the ``resourceVersion``
        the apply carries guarantees the ownership is still what was read.
        """
        metadata = (self.raw.get(name) or {}).get("metadata") or {}
        mine = others = False
        for entry in metadata.get("managedFields") or ():
            if not isinstance(entry, Mapping):
                continue
            fields = ((entry.get("fieldsV1") or {}).get("f:spec")) or {}
            if not isinstance(fields, Mapping) or not any(f"f:{k}" in fields for k in changed):
                continue
            manager, operation = entry.get("manager"), entry.get("operation")
            if manager == self.backend.field_manager and operation == "Update":
                mine = True
            elif not (manager == self.backend.field_manager and operation == "Apply"):
                others = True
        return mine and not others

    def server_side_apply(self, before: IPPool, after: IPPool) -> None:
        old, new = before.to_spec(explicit=after.extra_spec()), after.to_spec(
            explicit=before.extra_spec())
        changed = [k for k in new if old.get(k) != new.get(k)]
        metadata = (self.raw.get(before.name) or {}).get("metadata") or {}
        body = self._body(after, metadata.get("resourceVersion"), reset=before)
        kept = len(self.pending)
        try:
            applied = self._apply(f"apply IPPool {before.name} ({', '.join(changed)})",
                                  before.name, body,
                                  force=self._own_create_holds(before.name, changed))
            self.backend._saw_written(body, applied)
            if isinstance(applied, dict):
                self.raw[before.name] = applied
            self._will_undo(f"apply back IPPool {before.name}",
                            lambda: self._apply(f"apply back IPPool {before.name}",
                                                before.name, self._body(before, reset=after)))
        except Exception:
            raise
        except BaseException:
            # Interrupted with the apply sent and its answer unread (SIGTERM, Ctrl-C), or
            # answered and its undo not kept yet: the pool may hold the new spec, and
            # nothing applied the old one back.
            if len(self.pending) == kept:
                self._will_undo(f"apply back IPPool {before.name} (its answer unread)",
                                lambda: self.apply_back_unanswered(before, after, new))
            raise
