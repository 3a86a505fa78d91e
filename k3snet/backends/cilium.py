"""The ``cilium`` backend: Cilium's masquerade settings in its two ConfigMaps.

* ``cilium-config`` (``CiliumBackend(configmap=("kube-system", "cilium-config"))``,
  the default, where Cilium's Helm chart puts it on K3s): k3snet sets only the
  keys of :data:`~k3snet.model.cilium.CILIUM_KEYS` that the spec asks for;
* the ``ip-masq-agent`` ConfigMap in the same namespace (key ``config``, the
  file Cilium's eBPF ip-masq-agent reads): ``nonMasqueradeCIDRs``,
  ``masqLinkLocal``, ``masqLinkLocalIPv6``, again only those asked for.

**Ownership.** When k3snet first sets a key it records the previous value
(``null``: absent) in the annotation ``k3snet.io/cilium-owned`` of the
ConfigMap it changed, in the same merge patch. ``observe`` reports ``owned``
(the keys k3snet set, as they are now) and ``foreign`` (everything as it would
be without k3snet, which stays the same while k3snet changes its keys); removing
k3snet's settings puts the recorded values back. A key k3snet did not set is
never rewritten unless the spec names it.

**Minimal edits.** ``cilium-config`` is changed by one JSON merge patch holding
only the owned keys, so every other key keeps its bytes. The ip-masq-agent
``config`` value is one YAML/JSON document: k3snet changes only its owned keys
but writes the document again (JSON stays JSON, YAML stays YAML; other keys
kept), and when its last key goes, the document's exact previous text comes
back if nobody changed it meanwhile. If the ip-masq-agent ConfigMap is missing
k3snet creates it, and deletes it again when its keys go. Every write carries
the ``resourceVersion`` read: a concurrent change makes the API server answer
409 and the apply is undone (:class:`~k3snet.backends.kit.Compensation`). So the
``check`` or ``apply`` right after ``observe`` takes the two ConfigMaps it read
(:class:`~k3snet.backends.kit.FreshRead`) rather than reading them again.

**When changes take effect.** The agent reads ``cilium-config`` when it starts
(restart the ``cilium`` DaemonSet: each change, a destroy's too, is stamped for
:mod:`~k3snet.backends.cni_restart` to follow, and so is an ip-masq-agent change where
the agents mount its file through ``subPath``, a copy never updated); the ip-masq-agent
file is re-read when the kubelet updates the mounted ConfigMap, *if* the DaemonSet mounts it (Helm
``ipMasqAgent.enabled=true``; k3snet does not edit the DaemonSet). Where Cilium's
ip-masq-agent is on (``cilium-config``, a CiliumNodeConfig, k3snet's keys) ``observe``
judges the DaemonSet's mount (``daemonset``, in Cilium's namespace; never written;
``check`` and ``apply`` where the plan turns it on): where its
``cilium-agent`` container does not have the ConfigMap's ``config`` key at
``/etc/config/ip-masq-agent`` (or the ``ip-masq-agent-config-path`` the agent reads:
its argument, a CiliumNodeConfig's, ``cilium-config``'s), the foreign config
says so (``CiliumConfig.ip_masq_agent_unmounted``), and Cilium's ip-masq-agent is
judged with its default list; with nothing mounted at ``/etc/config`` at all, the agent
does not start with ``enable-ip-masq-agent`` (``ip_masq_agent_no_directory``), so a
change setting it is refused. A DaemonSet not found (404) or not to be read (403) is
a warning in the log where the ip-masq-agent is on, and the ConfigMap is judged as if
mounted.

**Per-node overrides.** ``observe`` also lists the CiliumNodeConfigs of Cilium's
namespace (``cilium.io/v2``, else ``v2alpha1``; none where neither is served): the
keys they set over ``cilium-config`` on the nodes they select go with the foreign
config (:class:`~k3snet.model.cilium.CiliumNodeOverride`), so a spec's destinations are
judged on those nodes too; where one selects some nodes, the Nodes' labels say which of
them each node's agent lays together (``CiliumConfig.node_groups``). Where some node
runs Cilium's egress gateway (``enable-ipv4-egress-gateway``), the
CiliumEgressGatewayPolicies (cluster-wide, ``cilium.io/v2``) go with it too
(:class:`~k3snet.model.cilium.CiliumEgressGateway`): a destination the spec exempts that
one SNATs on its gateway is a conflict. k3snet never writes either.

**The agent container's flags and variables.** ``observe`` reads the DaemonSet once
a pass (a failed read is a warning where the ip-masq-agent is on nowhere): the keys its
``cilium-agent`` container sets by flag or ``CILIUM_...`` variable
(:func:`~k3snet.backends.cilium_mount.agent_options`), which the agent takes over
``cilium-config`` and the CiliumNodeConfigs, go with the foreign config
(:class:`~k3snet.model.cilium.CiliumAgentOption`); a key k3snet writes that one sets
otherwise is a conflict: the write has no effect. Those of another DaemonSet running a
``cilium-agent`` there (a copy for a node pool) are read too, and a key they set otherwise
is a warning, left to ``cilium-config``; its mount of the ip-masq-agent ConfigMap is judged
as the named one's (but where its nodes run the ip-masq-agent off), and its pods are
followed for a restart where it reads ``cilium-config``; a command running a shell's
script, or a config file replacing the config directory, leaves them unknown (a warning).
The named DaemonSet's ``config`` init container (``cilium-dbg build-config``) says which
sources fill that directory and which keys of those after the first it keeps: a
CiliumNodeConfig's key it drops is left out (a warning), and a key k3snet would write into
``cilium-config`` that it does not take from there is refused: the write has no effect.

**Disruptive changes** (:meth:`CiliumBackend.disruptive`): changing
``routing-mode``, ``tunnel-protocol``, a native-routing CIDR or
``enable-bpf-masquerade`` from what Cilium runs with is refused unless the
backend is built with ``allow_disruptive=True``.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, TypeVar

import attrs

from k3snet._gojson import (
    GO_SPACE,
    MAX_NESTING,
    JsonTextError,
    excessive_aliasing,
    fold,
    load_json,
    nests_deeper,
)
from k3snet._yamltext import yaml_problem
from k3snet.backends.base import ApplyResult, PendingRestart, ensure_capable
from k3snet.backends.cilium_mount import (
    AGENT_CONTAINER,
    BUILD_CONFIG,
    CONFIG_PATH_FLAG,
    DEFAULT_AGENT_FILE,
    DEFAULT_DAEMONSET,
    AgentOption,
    ConfigSources,
    agent_config_dir_missing,
    agent_config_path,
    agent_directory_missing,
    agent_env_reads,
    agent_file_copied,
    agent_file_mounted,
    agent_file_unreadable,
    agent_options,
    config_sources,
    option_variable,
    pod_as_daemonset,
    pod_node,
    pods_lag,
    runs_agent,
    runs_nowhere,
    variable_configmap_ref,
)
from k3snet.backends.cni_restart import (
    CHANGED_ANNOTATION,
    ServerClock,
    Settled,
    WriteLanded,
    label_selector,
    restamp,
    stamp_undone,
    take_back,
    taking_back,
)
from k3snet.backends.cni_restart import pending as pending_restarts
from k3snet.backends.kit import (
    ALLOW_DISRUPTIVE,
    BackendBase,
    Compensation,
    FreshRead,
    OptionChecks,
    option_flag,
    option_seconds,
    option_text,
    run_option_checks,
    translate_errors,
)
from k3snet.errors import ApplyError, BackendError, K3snetError, ModelError, PlanError
from k3snet.kube import (
    API_OPTION_CHECKS,
    DEFAULT_TIMEOUT,
    KUBECONFIG_DEFAULT,
    METADATA_ONLY,
    KubeApiError,
    KubeErrors,
    configmap_ref,
    list_node_metadata,
    list_pages,
    make_api_client,
    selector_matches,
)
from k3snet.model import printable
from k3snet.model.cilium import (
    AGENT_OPTION_KEYS,
    CILIUM_BOOL_KEYS,
    CILIUM_CONTEXT_KEYS,
    CILIUM_DEFAULTS,
    CILIUM_DISRUPTIVE_KEYS,
    CILIUM_KEYS,
    IP_MASQ_AGENT_KEYS,
    CiliumAgentOption,
    CiliumConfig,
    CiliumEgressGateway,
    CiliumNodeOverride,
    cilium_target,
    parse_go_bool,
    read_go_flag,
    same_setting,
    setting_problem,
    startup_problems,
)
from k3snet.model.cni import object_name_problem
from k3snet.model.state import State
from k3snet.planner import Change, Plan

__all__ = [
    "AGENT_CONFIG_KEY",
    "ALLOW_DISRUPTIVE_HINT",
    "DEFAULT_CONFIGMAP",
    "DEFAULT_IP_MASQ_AGENT",
    "NODE_CONFIG_API",
    "OWNED_ANNOTATION",
    "WRITTEN_ANNOTATION",
    "CiliumBackend",
]

DEFAULT_CONFIGMAP: tuple[str, str] = ("kube-system", "cilium-config")
"""Cilium's ConfigMap (namespace, name) as its Helm chart installs it on K3s."""

DEFAULT_IP_MASQ_AGENT = "ip-masq-agent"
"""The ConfigMap (in Cilium's namespace) Cilium's DaemonSet mounts as the ip-masq-agent file."""

AGENT_CONFIG_KEY = "config"
"""The key of the ip-masq-agent ConfigMap that becomes ``/etc/config/ip-masq-agent``."""

OWNED_ANNOTATION = "k3snet.io/cilium-owned"
"""The annotation holding k3snet's ownership record on each ConfigMap it changed."""

WRITTEN_ANNOTATION = "k3snet.io/cilium-written"
"""The annotation holding what k3snet last wrote for each key it owns (JSON: key -> value;
on the ip-masq-agent ConfigMap the value is the field's JSON text), on each ConfigMap it
changed. A key whose value differs from it was set by someone else since (``helm
upgrade``, K3s' helm-controller, ``kubectl apply``): it is theirs again, and their value
is the one removing k3snet's settings gives back."""

NODE_CONFIG_API: tuple[tuple[str, str], ...] = (("cilium.io", "v2"), ("cilium.io", "v2alpha1"))
"""Where CiliumNodeConfigs are listed, in order: ``v2`` (Cilium 1.16 and later), else
``v2alpha1`` (1.13 to 1.15, and served later too); plural ``ciliumnodeconfigs``."""

_NODE_CONFIG_PLURAL = "ciliumnodeconfigs"
_EGRESS_GATEWAY_PLURAL = "ciliumegressgatewaypolicies"
_CILIUM_NODE_PLURAL = "ciliumnodes"  # cilium.io/v2, cluster-scoped: one per agent's Node

ALLOW_DISRUPTIVE_HINT = ALLOW_DISRUPTIVE
"""The three ways to allow a disruptive change (:data:`k3snet.backends.kit.ALLOW_DISRUPTIVE`)."""


T = TypeVar("T")

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- the ip-masq-agent document


def _canonical_agent_key(key: str) -> str | None:
    """The field Cilium fills from ``key`` (Go's encoding/json matches names case-insensitively)."""
    folded = fold(key)
    for name in IP_MASQ_AGENT_KEYS:
        if folded == name.lower():
            return name
    return None


def _last_occurrence(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object's members, each in the place of its last occurrence, with its last value."""
    members: dict[str, Any] = {}
    for key, value in pairs:
        kept = (value is None and members.get(key) is not None
                and _canonical_agent_key(key) not in (None, "nonMasqueradeCIDRs"))
        last = members.pop(key) if kept else value  # Go: null leaves a bool as it was
        members.pop(key, None)
        members[key] = last
    return members


def _parse_agent(text: str | None, where: str) -> dict[str, Any] | None:
    """The document's members (``None``: no key or an empty text, Cilium's defaults).

    Cilium reads the file as k8s.io/apimachinery's ``yaml.ToJSON`` and Go's
    ``json.Unmarshal`` do: a text whose first non-space character is ``{`` is JSON
    as it is (a flow-style YAML mapping there is an error to Cilium), any other
    text YAML. Nesting deeper than :data:`~k3snet._gojson.MAX_NESTING` is refused.
    """
    if text is None or text == "":
        return None
    if text.lstrip(GO_SPACE).startswith("{"):
        try:
            value = load_json(text, object_pairs_hook=_last_occurrence)
        except JsonTextError as exc:
            raise BackendError(f"{where}: the ip-masq-agent config starts with '{{', so Cilium "
                               f"reads it as JSON, and it is not JSON Cilium can read: {exc}"
                               ) from None
    else:
        value = _parse_agent_yaml(text, where)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise BackendError(f"{where}: the ip-masq-agent config must be a mapping, not "
                           f"{type(value).__name__}")
    return value


def _parse_agent_yaml(text: str, where: str) -> Any:
    import yaml  # noqa: PLC0415 - optional dependency (k3snet[kube])

    too_deep = (f"{where}: the ip-masq-agent config nests deeper than {MAX_NESTING} levels; "
                "k3snet does not read it")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BackendError(f"{where}: the ip-masq-agent config is not valid YAML or JSON "
                           f"({yaml_problem(exc, text)[:300]}); Cilium cannot read it either"
                           ) from exc
    except RecursionError:
        raise BackendError(too_deep) from None
    if nests_deeper(value, MAX_NESTING, shared=True):  # aliases share containers
        raise BackendError(too_deep)
    expanded = excessive_aliasing(value)
    if expanded is not None:
        # Read as a tree (every check and write below does), it would take time and
        # memory in its expanded size: a hang, then the liveness probe's kill, for ever.
        raise BackendError(f"{where}: the ip-masq-agent config's YAML aliases expand it to "
                           f"{expanded:.3g} nodes, almost all through aliases: Go's YAML "
                           "decoder refuses such excessive aliasing, so Cilium cannot read it "
                           "either; k3snet does not read it")
    if isinstance(value, dict):
        # Cilium turns YAML into a JSON object with sorted keys before decoding it; which of
        # two spellings of a field wins there is not worth a reader to guess.
        seen: dict[str, str] = {}
        for key in value:
            name = _canonical_agent_key(key) if isinstance(key, str) else None
            if name is not None and seen.setdefault(name, key) != key:
                raise BackendError(f"{where}: the ip-masq-agent config sets {name} twice "
                                   "(keys differing only in case); remove one")
    return value


def _agent_fields(members: dict[str, Any] | None, where: str) -> dict[str, Any] | None:
    """The keys Cilium reads from the document, under their exact names.

    As Go's ``json.Unmarshal`` fills its struct: the last spelling of a field wins,
    ``null`` empties ``nonMasqueradeCIDRs`` and leaves a bool as it was.
    """
    if members is None:
        return None
    fields: dict[str, Any] = {}
    for key, value in members.items():
        name = _canonical_agent_key(key)
        if name is None:
            continue
        if value is None:
            if name == "nonMasqueradeCIDRs":
                fields[name] = []
            continue
        fields[name] = value
    try:
        CiliumConfig("configmap:k3snet/check", ip_masq_agent=fields)
    except ModelError as exc:
        raise BackendError(f"{where}: {exc}; Cilium refuses this file too") from exc
    return fields


def _effective(members: dict[str, Any] | None) -> tuple[Any, ...]:
    """What Cilium reads from ``members``, and the members it does not read."""
    if members is None:
        return (None,)
    return (_agent_fields(members, ""),
            {k: v for k, v in members.items() if _canonical_agent_key(k) is None})


def _set_member(members: dict[str, Any], name: str, value: Any) -> None:
    """Set field ``name`` in its last spelling (where Cilium reads it), dropping the others."""
    spellings = [k for k in members if _canonical_agent_key(k) == name]
    for key in spellings[:-1]:
        del members[key]
    members[spellings[-1] if spellings else name] = value


def _dump_agent(members: dict[str, Any], like: str | None) -> str:
    """The document as text, in the family of ``like`` (JSON stays JSON, YAML stays YAML)."""
    if like is not None and like.strip():
        try:
            json.loads(like)
        except ValueError:
            import yaml  # noqa: PLC0415 - optional dependency (k3snet[kube])

            return str(yaml.safe_dump(members, sort_keys=False, default_flow_style=False))
        if "\n" in like.strip():
            return json.dumps(members, indent=2) + ("\n" if like.endswith("\n") else "")
    return json.dumps(members, separators=(",", ":"))  # as Cilium's Helm chart writes it


# ---------------------------------------------------------------- ownership records


def _load_record(raw: str | None, where: str) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # (nested deeper than Python's parser goes)
        raise BackendError(f"{where}: k3snet's ownership record ({OWNED_ANNOTATION}) is not "
                           "valid JSON; restore it or remove it by hand") from exc
    if not isinstance(data, dict):
        raise BackendError(f"{where}: k3snet's ownership record must be a JSON object")
    return data


def _config_record(raw: str | None, where: str) -> dict[str, str | None] | None:
    data = _load_record(raw, where)
    if data is None:
        return None
    for key, previous in data.items():
        if key not in CILIUM_KEYS or not (previous is None or isinstance(previous, str)):
            raise BackendError(f"{where}: ownership record entry {key!r} is not valid")
    return data


def _still_written(record: dict[str, T], raw: str | None, data: Mapping[str, str],
                   where: str) -> dict[str, T]:
    """``record`` less the keys whose value is no longer what k3snet wrote (``raw``, the
    WRITTEN_ANNOTATION): someone else set them since, so they are theirs. Without the
    annotation (an earlier k3snet), or for a key it does not name, nothing is dropped."""
    if raw is None:
        return record
    written = _load_record(raw, where)
    assert written is not None
    if not all(v is None or isinstance(v, str) for v in written.values()):
        raise BackendError(f"{where}: k3snet's annotation {WRITTEN_ANNOTATION} is not valid; "
                           f"remove it (k3snet then keeps every key {OWNED_ANNOTATION} names)")
    return {key: previous for key, previous in record.items()
            if key not in written or data.get(key) == written[key]}


def _field_texts(fields: Mapping[str, Any] | None) -> dict[str, str]:
    """Each ip-masq-agent field as one canonical JSON text (what WRITTEN_ANNOTATION holds)."""
    return {k: json.dumps(v, sort_keys=True) for k, v in (fields or {}).items()}


@attrs.frozen
class _AgentRecord:
    """What k3snet changed in the ip-masq-agent ConfigMap, and what was there before."""

    keys: dict[str, Any]  # field -> previous JSON value, or None when absent
    text: str | None  # the whole `config` text before k3snet's first change
    created: bool  # k3snet created the ConfigMap

    def dump(self) -> str:
        return json.dumps({"keys": {k: None if v is None else json.dumps(v)
                                    for k, v in self.keys.items()},
                           "text": self.text, "created": self.created}, sort_keys=True)


def _agent_record(raw: str | None, where: str) -> _AgentRecord | None:
    data = _load_record(raw, where)
    if data is None:
        return None
    try:
        keys = {k: None if v is None else json.loads(v) for k, v in data["keys"].items()}
        text, created = data["text"], data["created"]
    except (KeyError, TypeError, AttributeError, ValueError, RecursionError) as exc:
        raise BackendError(f"{where}: k3snet's ownership record is not valid") from exc
    if (any(k not in IP_MASQ_AGENT_KEYS for k in keys) or not isinstance(created, bool)
            or not (text is None or isinstance(text, str))):
        raise BackendError(f"{where}: k3snet's ownership record is not valid")
    return _AgentRecord(keys, text, created)


# ---------------------------------------------------------------- one read of both ConfigMaps


@attrs.frozen
class _ConfigMap:
    """One ConfigMap as read: its data, k3snet's annotation, its resourceVersion."""

    data: dict[str, str]
    owned: str | None
    version: str | None
    written: str | None = None  # WRITTEN_ANNOTATION
    changed_at: str | None = None  # CHANGED_ANNOTATION


@attrs.frozen
class _Mount:
    """What Cilium's DaemonSet gives its agent of the ip-masq-agent ConfigMap:
    ``unmounted``, why the agent does not read it (``None``: it does, or not known);
    ``no_directory``, its container has no directory for the file at all; ``unknown``,
    why neither is known (a warning, given only where the ip-masq-agent is on);
    ``copied``, mounted through ``subPath`` only: a copy the kubelet does not update, read
    again only when the agents restart."""

    unmounted: str | None = None
    no_directory: bool = False
    unknown: str | None = None
    copied: bool = False
    # The files asked about (CiliumBackend._mount's paths, an argument of the agent's
    # aside): a check or apply takes a mount observe could not read (its warning given)
    # only where it asked of theirs; one it read, it judges again for theirs.
    asked: frozenset[str] = frozenset()
    # The DaemonSet read (JSON; None: not read, or not found), for another judgement of
    # the same pass with no second GET; and its pods, where they were listed (None: not).
    daemonset: Mapping[str, Any] | None = attrs.field(default=None, eq=False, repr=False)
    pods: tuple[dict[str, Any], ...] | None = attrs.field(default=None, eq=False, repr=False)

    def warn_if(self, on: bool, warn: Callable[[str], None]) -> None:
        """Warn that the mount is not known, where the ip-masq-agent is ``on``: elsewhere
        it does not matter (a spec without it, a Role of an earlier k3snet without get
        on the DaemonSet, warned on every start, was noise)."""
        if on and self.unknown is not None:
            warn(self.unknown)


@attrs.frozen
class _Nodes:
    """The CiliumNodeConfigs as listed, each with its ``nodeSelector``, and the labels of
    the Nodes, by name (``None``: not listed, as where no CiliumNodeConfig selects some
    nodes: every node's agent reads the same keys); ``agents``, the names of those a
    Cilium agent registered (a CiliumNode; ``None``: every Node counts)."""

    overrides: tuple[tuple[CiliumNodeOverride, Any], ...] = ()
    labels: Mapping[str, Mapping[str, str]] | None = None
    agents: frozenset[str] | None = None

    @property
    def agent_labels(self) -> Mapping[str, Mapping[str, str]] | None:
        """:attr:`labels` of the Nodes a Cilium agent runs on (:attr:`agents`): the others
        read no CiliumNodeConfig, and form no group of them."""
        if self.labels is None or self.agents is None:
            return self.labels
        return {name: labels for name, labels in self.labels.items() if name in self.agents}

    def files(self, config: CiliumConfig) -> dict[str, tuple[str | None, ...]] | None:
        """By Node name, the ``ip-masq-agent-config-path`` its agent reads (``None``:
        unset) where Cilium's ip-masq-agent is on there (``()``: off), with ``config``'s
        settings and the CiliumNodeConfigs selecting it laid over them in name order, as
        the agent lays them (``pkg/option/resolver``). ``None``: not known (the Nodes not
        listed, or a selector apimachinery refuses, as :func:`_node_groups` says). Every
        Node listed, a CiliumNode or not: a pod of the DaemonSet on one is its agent there,
        not registered yet (starting, or restarting)."""
        if self.labels is None:
            return None
        found: dict[str, tuple[str | None, ...]] = {}
        try:
            for name, labels in self.labels.items():
                view = config.on_nodes_of(sorted(
                    (o for o, selector in self.overrides if selector_matches(selector, labels)),
                    key=lambda o: o.name))
                found[name] = ((view.value(CONFIG_PATH_KEY),)
                               if view.flag("enable-ip-masq-agent") else ())
        except ValueError:
            return None
        return found


@attrs.frozen
class _Read:
    config: _ConfigMap | None
    agent: _ConfigMap | None
    mount: _Mount | None = None  # read by observe (None: not read)
    # Read by observe for the file the hinted plan turns the ip-masq-agent on with,
    # where observe's mount did not judge it (None: not read).
    ahead: _Mount | None = None
    # Read by observe (or a check or apply reading again): the CiliumNodeConfigs its
    # sources take and the Nodes, for the file of each node (None: not read).
    nodes: _Nodes | None = None
    # Read by observe (or by a check or apply reading again, as observe does: _judged):
    # the cilium-agent container's flags and variables.
    options: tuple[CiliumAgentOption, ...] = ()
    # Read by observe: the DaemonSet those come from (None: not read, or not found).
    daemonset: Mapping[str, Any] | None = attrs.field(default=None, eq=False, repr=False)
    # Read by observe: how the named DaemonSet's config init container builds the agent's
    # config directory (None: not read, or no build-config: all of cilium-config taken).
    sources: ConfigSources | None = attrs.field(default=None, eq=False, repr=False)
    # Listed by observe: the other DaemonSets running a cilium-agent, by name (None: not
    # listed; a check or apply reading the DaemonSet again lists them again).
    others: tuple[tuple[str, Mapping[str, Any]], ...] | None = attrs.field(
        default=None, eq=False, repr=False)


@attrs.frozen
class _Keys:
    """Data keys of one ConfigMap and k3snet's two records (its annotations), as one
    write of k3snet's leaves them or its undo puts them back (``None``: absent); and the
    restart stamp where that write sets it (a 1-tuple; ``None``: not compared)."""

    data: Mapping[str, str | None]
    owned: str | None
    written: str | None
    changed_at: tuple[str | None] | None = None

    def differing(self, found: _ConfigMap) -> list[str]:
        """The keys (and records and stamp, by annotation) ``found`` holds otherwise."""
        names = [k for k in sorted(self.data) if found.data.get(k) != self.data[k]]
        names += [f"annotation {annotation}" for annotation, mine, now in (
            (OWNED_ANNOTATION, self.owned, found.owned),
            (WRITTEN_ANNOTATION, self.written, found.written)) if mine != now]
        if self.changed_at is not None and self.changed_at[0] != found.changed_at:
            names.append(f"annotation {CHANGED_ANNOTATION}")
        return names


class _Api:
    """The two ConfigMaps through the Kubernetes API."""

    def __init__(self, api_client: Any, namespace: str, names: tuple[str, str],
                 timeout: float, daemonset: str) -> None:
        from kubernetes import client  # noqa: PLC0415 - optional dependency (k3snet[kube])

        self.client = client
        self.core = client.CoreV1Api(api_client)
        self.namespace = namespace
        self.config_name, self.agent_name = names
        self.timeout = timeout
        # The warnings of this pass and of the one before (a warning said then is not said
        # again while it lasts: as the kit's WarningLog); _now, this pass's alone. Two
        # passes' at most: a text that changes every pass (a value or name from the
        # cluster) is not kept for ever.
        self.warned: set[str] = set()
        self._now: set[str] = set()
        self.clock = ServerClock()  # the restart stamp's, by each read's Date header
        self.landed: str | None = None  # the stamp the last patch left (its changed_at)
        self.agent_daemonset = daemonset  # Cilium's DaemonSet, whose pods read cilium-config
        # The ConfigMaps read for a value this pass (foreign_data), by (namespace, name):
        # their data, or the read's error (404 too); forgotten by forget().
        self.foreign: dict[tuple[str, str], dict[str, str] | BackendError] = {}

    def forget(self, *, pass_: bool = True) -> None:
        """Each ConfigMap :meth:`foreign_data` read is read again; ``pass_`` (an observe):
        a pass starts, the warnings of the pass before the last one forgotten
        (:meth:`warn`). A check or apply reading again after observe is the same pass:
        starting one there forgot observe's warnings, logged again by the next."""
        self.foreign.clear()
        if pass_:
            self.warned, self._now = self._now, set()

    def where(self, name: str) -> str:
        return f"ConfigMap {self.namespace}/{name}"

    def read(self, name: str) -> _ConfigMap | None:
        try:
            with translate_errors(f"read {self.where(name)}",
                                  classifier=KubeErrors(timeout=self.timeout)):
                asked = self.clock.asked()
                found, _, headers = self.core.read_namespaced_config_map_with_http_info(
                    name, self.namespace, _request_timeout=self.timeout)
        except KubeApiError as exc:
            if exc.status == 404:
                return None
            raise
        self.clock.note(headers, asked)
        metadata = found.metadata
        annotations = (metadata.annotations if metadata is not None else None) or {}
        return _ConfigMap(dict(found.data or {}), annotations.get(OWNED_ANNOTATION),
                          metadata.resource_version if metadata is not None else None,
                          annotations.get(WRITTEN_ANNOTATION),
                          annotations.get(CHANGED_ANNOTATION))

    def foreign_data(self, namespace: str, name: str, why: str) -> dict[str, str] | str | None:
        """The data of the ConfigMap ``namespace/name`` that is not k3snet's, read only for
        ``why`` (what k3snet learns from it): None where there is none (404); why it is not
        known, a text, where it is not to be read (403: an earlier Role of k3snet's, or
        another namespace; the text names the rule to add, :meth:`_forbidden`) or its read
        fails. Each is read once a pass (:meth:`forget`), however many DaemonSets name it:
        its answer (a failed read's too: a timeout is not waited for again) serves them
        all."""
        doing = f"read ConfigMap {namespace}/{name}"
        known = self.foreign.get((namespace, name))
        if known is None:
            try:
                with translate_errors(doing, classifier=KubeErrors(timeout=self.timeout)):
                    found = self.core.read_namespaced_config_map(
                        name, namespace, _request_timeout=self.timeout)
            except BackendError as exc:
                known = exc
            else:
                known = {k: v for k, v in (found.data or {}).items() if isinstance(v, str)}
            self.foreign[namespace, name] = known
        if not isinstance(known, BackendError):
            return known
        if isinstance(known, KubeApiError) and known.status == 404:
            return None
        if isinstance(known, KubeApiError) and known.status == 403:
            return self._forbidden(namespace, name, why)
        text = str(known)
        return (f"{doing} ({why}){text[len(doing):]}" if text.startswith(doing)
                else f"{text} ({why})")

    def _forbidden(self, namespace: str, name: str, why: str) -> str:
        """Why the ConfigMap ``namespace/name`` is not known where its read was refused
        (403), and the one RBAC rule that has it read. k3snet's rendered Role grants get
        on every ConfigMap of Cilium's namespace (an earlier one: Cilium's two alone),
        not of another (a ``config-map:NAMESPACE/NAME`` source)."""
        rule = json.dumps({"apiGroups": [""], "resources": ["configmaps"],
                           "resourceNames": [name], "verbs": ["get"]})
        granted = (f"the Role k3snet render manifests makes in {namespace} grants get on "
                   "every ConfigMap there (an earlier one on Cilium's two alone: apply the "
                   "manifests again)" if namespace == self.namespace else
                   f"the Role k3snet render manifests makes grants get on the ConfigMaps of "
                   f"{self.namespace} alone")
        return (f"ConfigMap {namespace}/{name} ({why}) is not to be read (forbidden, 403): "
                f"{granted}; to have it read, add the rule {rule} to a Role in {namespace} "
                "bound to the account k3snet runs as (the agent's ServiceAccount)")

    def patch(self, name: str, version: str | None, data: dict[str, str | None],
              owned: str | None, owned_changes: bool, *,
              written: tuple[str | None] | None = None,
              changed_at: tuple[str | None] | None = None, landing: bool = False) -> str | None:
        """One merge patch; returns the new resourceVersion. ``written``: a 1-tuple with
        the new WRITTEN_ANNOTATION (``(None,)`` removes it), sent with the record.
        ``changed_at``: so with :data:`~k3snet.backends.cni_restart.CHANGED_ANNOTATION`
        (data the agents read at start changes; it stays after k3snet's last key).
        ``landing``: a stamp ``changed_at`` sets is moved to the answer's time where the
        write landed in a later second (:func:`~k3snet.backends.cni_restart.restamp`);
        :attr:`landed` the stamp left."""
        metadata: dict[str, Any] = {}
        if version is not None:
            metadata["resourceVersion"] = version
        annotations: dict[str, str | None] = {}
        if owned_changes:
            annotations[OWNED_ANNOTATION] = owned
            if written is not None:
                annotations[WRITTEN_ANNOTATION] = written[0]
        if changed_at is not None:
            annotations[CHANGED_ANNOTATION] = changed_at[0]
        if annotations:
            metadata["annotations"] = annotations
        body: dict[str, Any] = {"metadata": metadata}
        if data:
            body["data"] = data
        with translate_errors(f"patch {self.where(name)}",
                              classifier=KubeErrors(timeout=self.timeout)):
            result, _, headers = self.core.patch_namespaced_config_map_with_http_info(
                name, self.namespace, body, field_manager="k3snet",
                _content_type="application/merge-patch+json", _request_timeout=self.timeout)
        version = _version_of(result)
        self.landed = None if changed_at is None else changed_at[0]
        if landing and self.landed is not None:
            self.landed, version = restamp(self.core, self.namespace, name, self.landed,
                                           headers, version=version, timeout=self.timeout,
                                           answered=self.clock.stamp())
        return version

    def create(self, name: str, data: dict[str, str], owned: str,
               written: str | None = None) -> str | None:
        annotations = {OWNED_ANNOTATION: owned}
        if written is not None:
            annotations[WRITTEN_ANNOTATION] = written
        body: Any = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": self.namespace,
                             "annotations": annotations},
                "data": data}
        with translate_errors(f"create {self.where(name)}",
                              classifier=KubeErrors(timeout=self.timeout)):
            result = self.core.create_namespaced_config_map(
                self.namespace, body, field_manager="k3snet", _request_timeout=self.timeout)
        return _version_of(result)

    def node_configs(self) -> list[Any]:
        """The CiliumNodeConfigs of the namespace as listed (none where no API serves them;
        :data:`~k3snet.kube.LIST_PAGE` a request)."""
        objects = self.client.CustomObjectsApi(self.core.api_client)
        for group, version in NODE_CONFIG_API:
            what = f"list CiliumNodeConfigs ({group}/{version}) in {self.namespace}"

            def fetch(page: dict[str, Any], group: str = group, version: str = version,
                      what: str = what) -> Any:
                with translate_errors(what, classifier=KubeErrors(timeout=self.timeout)):
                    return objects.list_namespaced_custom_object(
                        group, version, self.namespace, _NODE_CONFIG_PLURAL,
                        _request_timeout=self.timeout, **page)

            try:
                return list_pages(fetch, what)
            except KubeApiError as exc:
                if exc.status == 404:  # this version is not served (or no Cilium CRD)
                    continue
                raise
        return []

    def node_labels(self) -> tuple[dict[str, dict[str, str]], frozenset[str] | None] | None:
        """The labels of every Node, by the Node's name, and the names of those a Cilium
        agent runs on (:meth:`cilium_nodes`), listed
        :data:`~k3snet.kube.LIST_PAGE` at a time from the API server's watch cache
        (:func:`~k3snet.kube.list_node_metadata`; ``None``: the Nodes cannot be listed,
        403, or are not served; a warning says so)."""
        doing = "list Nodes (the labels CiliumNodeConfigs select)"
        try:  # only the labels are read
            items = list_node_metadata(self.core, doing, timeout=self.timeout)
        except KubeApiError as exc:
            if exc.status in (403, 404):
                self.warn(f"{exc}: the CiliumNodeConfigs selecting some nodes are judged "
                          "one at a time, not as they are laid together on a node")
                return None
            raise
        cilium = self.cilium_nodes()
        found = {}
        for index, item in enumerate(items):
            metadata = item.get("metadata") if isinstance(item, dict) else None
            if not isinstance(metadata, dict):
                metadata = {}
            name = metadata.get("name")
            labels = metadata.get("labels")
            # A Node without a name (not from an API server) still counts in the groups.
            found[name if isinstance(name, str) else f"#{index}"] = (
                {k: v for k, v in labels.items() if isinstance(k, str) and isinstance(v, str)}
                if isinstance(labels, dict) else {})
        return found, cilium

    def cilium_nodes(self) -> frozenset[str] | None:
        """The names of the CiliumNodes (``cilium.io/v2``, their metadata alone, from the
        API server's watch cache as the Nodes: ``cached``): each
        Cilium agent registers its own Node's, which goes with that Node, so they name
        the Nodes whose agent picks CiliumNodeConfigs (``pkg/option/resolver`` runs in
        the agent's pod). ``None`` (every Node counts): none listed (no agent registered
        yet), not served, or not to be listed (403: a warning says so)."""
        objects = self.client.CustomObjectsApi(self.core.api_client)
        what = "list CiliumNodes (cilium.io/v2)"

        def fetch(page: dict[str, Any]) -> Any:
            with translate_errors(what, classifier=KubeErrors(timeout=self.timeout)):
                return objects.list_cluster_custom_object(
                    "cilium.io", "v2", _CILIUM_NODE_PLURAL, _request_timeout=self.timeout,
                    _headers=dict(METADATA_ONLY), **page)

        try:  # from the watch cache: names judged, never written back
            items = list_pages(fetch, what, cached=True)
        except KubeApiError as exc:
            if exc.status == 403:
                self.warn(f"{exc}: Nodes running no Cilium agent count in the "
                          "CiliumNodeConfigs' sets too")
                return None
            if exc.status == 404:
                return None
            raise
        names = frozenset(
            item["metadata"]["name"] for item in items
            if isinstance(item, dict) and isinstance(item.get("metadata"), dict)
            and isinstance(item["metadata"].get("name"), str))
        return names or None

    def daemonset(self, name: str) -> dict[str, Any] | str:
        """The DaemonSet ``name`` of the namespace, as JSON, or why it is not known (not
        found, 404, or not to be read, 403): a warning to give where it matters."""
        apps = self.client.AppsV1Api(self.core.api_client)
        what = f"read DaemonSet {self.namespace}/{name}"
        try:
            with translate_errors(what, classifier=KubeErrors(timeout=self.timeout)):
                answer: Any = apps.read_namespaced_daemon_set(
                    name, self.namespace, _request_timeout=self.timeout,
                    _preload_content=False)
        except KubeApiError as exc:
            if exc.status not in (403, 404):
                raise
            hint = ("name Cilium's agent DaemonSet with the backend's daemonset option"
                    if exc.status == 404 else "grant get on it (k3snet render manifests does)")
            return (f"{exc}: whether Cilium's agents mount the ConfigMap {self.agent_name} "
                    f"(Helm ipMasqAgent.enabled=true) is not checked; {hint}")
        try:
            found = json.loads(answer.data)
        except ValueError as exc:
            raise BackendError(f"{what}: the answer is not JSON ({exc})") from exc
        if not isinstance(found, dict):
            raise BackendError(f"{what}: the answer is not an object")
        return found

    def agent_daemonsets(self, known: str) -> list[tuple[str, dict[str, Any]]]:
        """The DaemonSets of the namespace but ``known`` whose pod template runs a
        ``cilium-agent`` container (JSON), but those running on no node now or being
        deleted (``metadata.deletionTimestamp``: its controller starts no pod of it
        again, and the garbage collector deletes those it has), by name,
        listed from the API server's watch cache (:data:`~k3snet.kube.LIST_PAGE` a
        request); none where they are not to be listed
        (403, an earlier Role) or the list fails (a warning), or not served (404)."""
        apps = self.client.AppsV1Api(self.core.api_client)
        what = f"list DaemonSets in {self.namespace} (other Cilium agents)"

        def fetch(page: dict[str, Any]) -> Any:
            with translate_errors(what, classifier=KubeErrors(timeout=self.timeout)):
                answer: Any = apps.list_namespaced_daemon_set(
                    self.namespace, _request_timeout=self.timeout, _preload_content=False,
                    **page)
            try:  # as JSON, as the named one is read: the client's model is not needed
                return json.loads(answer.data)
            except ValueError as exc:
                raise BackendError(f"{what}: the answer is not JSON ({exc})") from exc

        try:  # each pass: from the API server's watch cache, as the Nodes are
            items = list_pages(fetch, what, cached=True)
        except BackendError as exc:
            # Not to be listed (403: an earlier Role), not served (404), or a failed list
            # (a 500, a timeout): the named DaemonSet's flags count, as before.
            if not isinstance(exc, KubeApiError) or exc.status != 404:
                self.warn(f"{exc}: only DaemonSet {self.namespace}/{known}'s "
                          f"{AGENT_CONTAINER} container is read (list on daemonsets: "
                          "k3snet render manifests grants it)")
            return []
        found = []
        for item in items:
            metadata = item.get("metadata") if isinstance(item, dict) else None
            name = metadata.get("name") if isinstance(metadata, dict) else None
            # One running on no node now (a pool scaled to zero), or being deleted, sets
            # no agent's options.
            if isinstance(name, str) and name != known and runs_agent(item) and not (
                    runs_nowhere(item) or (metadata or {}).get("deletionTimestamp")):
                found.append((name, item))
        return sorted(found, key=lambda pair: pair[0])

    def daemonset_pods(self, daemonset: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
        """The pods of DaemonSet ``name`` (JSON ``daemonset``) not yet ended nor being
        deleted, as JSON, listed by its selector
        (:func:`~k3snet.backends.cni_restart.label_selector`,
        :data:`~k3snet.kube.LIST_PAGE` a request) and kept where it matches and the
        DaemonSet owns them; a selector k3snet cannot read leaves the owner alone to tell
        them, as the restart follow-up does. A pod being deleted
        (``metadata.deletionTimestamp``) is left out: the kubelet restarts no container
        of it, and the pod the DaemonSet makes in its place runs the DaemonSet's pod
        template (judged before its pods)."""
        selector = (daemonset.get("spec") or {}).get("selector")
        text = label_selector(selector)
        what = f"list Pods of DaemonSet {self.namespace}/{name}"
        serialize = self.core.api_client.sanitize_for_serialization

        def fetch(page: dict[str, Any]) -> Any:
            with translate_errors(what, classifier=KubeErrors(timeout=self.timeout)):
                return serialize(self.core.list_namespaced_pod(
                    self.namespace, label_selector=text or "", _request_timeout=self.timeout,
                    **page))

        found = []
        for pod in list_pages(fetch, what):
            metadata = pod.get("metadata") if isinstance(pod, dict) else None
            if not isinstance(metadata, dict) or (pod.get("status") or {}).get("phase") in (
                    "Succeeded", "Failed") or metadata.get("deletionTimestamp"):
                continue
            owners = metadata.get("ownerReferences") or []
            selected = text is None or selector_matches(selector, metadata.get("labels") or {})
            if selected and any(isinstance(o, dict) and o.get("kind") == "DaemonSet"
                                and o.get("name") == name for o in owners):
                found.append(pod)
        return found

    def warn(self, warning: str) -> None:
        """Log ``warning`` once while it lasts, not on every agent pass that finds it
        again: again only after a pass (:meth:`forget`) that did not find it."""
        warning = printable(warning)[:1000]  # a selector's text is the cluster's
        if warning in self._now:
            return
        self._now.add(warning)
        if warning not in self.warned:
            self.warned.add(warning)
            log.warning("cilium: %s", warning)

    def egress_gateway_policies(self) -> list[Any]:
        """The CiliumEgressGatewayPolicies as listed (``cilium.io/v2``; none where it is
        not served; :data:`~k3snet.kube.LIST_PAGE` a request)."""
        objects = self.client.CustomObjectsApi(self.core.api_client)
        what = "list CiliumEgressGatewayPolicies (cilium.io/v2)"

        def fetch(page: dict[str, Any]) -> Any:
            with translate_errors(what, classifier=KubeErrors(timeout=self.timeout)):
                return objects.list_cluster_custom_object(
                    "cilium.io", "v2", _EGRESS_GATEWAY_PLURAL, _request_timeout=self.timeout,
                    **page)

        try:
            return list_pages(fetch, what)
        except KubeApiError as exc:
            if exc.status == 404:
                return []
            raise

    def patch_back(self, name: str, version: str | None, data: dict[str, str | None],
                   owned: str | None, written: str | None, *, left: _Keys,
                   changed_at: tuple[str | None] | None = None,
                   since: str | None = None) -> None:
        """The merge patch taking k3snet's write of ``name`` back (``data`` and the
        records as they were; its ``version``). A 409 reads the ConfigMap again: holding
        ``data`` and the records is the undo done (sent again after a 503 that followed
        its effect, the version is the undo's own now); holding in every key of ``left``
        (the keys k3snet's write set or removed, and its records) what that write left is
        only another key changed since (Cilium's operator, a Helm upgrade, ``kubectl
        annotate``): sent again naming the version read, five sends at most. One of
        k3snet's keys changed since (Helm's edit) is refused, naming it, and not
        overwritten (:func:`~k3snet.backends.cni_restart.take_back`, flannel's too).
        ``changed_at``: the restart stamp as it was, put back too (and compared: a write
        of the stamp alone, a ``subPath`` ip-masq-agent change's, was found "undone" with
        its stamp still there; ``left`` holds the stamp written), then the undo stamped
        where a pod was made since ``since`` (the server's earliest time before the
        write: :meth:`_undone`)."""
        undone = take_back(
            self.where(name), version,
            lambda at: self.patch(name, at, data, owned, True, written=(written,),
                                  changed_at=changed_at),
            lambda: self.read(name), lambda found: found.version,
            undone=_Keys(data, owned, written, changed_at).differing, left=left.differing)
        self._undone(name, undone, left, changed_at, since)

    def _undone(self, name: str, version: str | None, left: _Keys,
                changed_at: tuple[str | None] | None, since: str | None) -> None:
        """After :meth:`patch_back` put ``changed_at`` back over the stamp ``left`` holds
        (leaving ``version``): the undo stamped where an agent's pod was made since
        ``since`` (``None``: stamped), which may have read the config undone
        (:func:`~k3snet.backends.cni_restart.stamp_undone`)."""
        if changed_at is None or left.changed_at is None:
            return
        stamp_undone(self.core.api_client, self.namespace, name, since=since,
                     back=changed_at[0], version=version, known=(self.agent_daemonset,),
                     clock=self.clock, timeout=self.timeout, reads=runs_agent)

    def take_back_unanswered(self, name: str, data: dict[str, str | None],
                             owned: str | None, written: str | None,
                             undo: Callable[[str | None], object]) -> None:
        """Take back a write of ``name`` an interruption cut with its answer unread
        (SIGTERM, Ctrl-C, also in the wait after a 503): read, the ConfigMap holding
        ``data`` and the records as that write makes them is the write made, taken back
        by ``undo(its resourceVersion)``; none there, or another content, is the write
        never made (or changed since by someone else: left as it is)."""
        found = self.read(name)
        if (found is None or found.owned != owned or found.written != written
                or any(found.data.get(k) != v for k, v in data.items())):
            return
        undo(found.version)

    def put_back_unanswered(self, name: str, was: _ConfigMap) -> None:
        """Put back ``name`` (``was``, as read before) when a delete an interruption cut
        with its answer unread deleted it: read, none there is created again as it was
        (data and records); one there, the delete never made or another made since, is
        left. Without it, the write before it was taken back and this one left: the
        ip-masq-agent ConfigMap gone under a ``cilium-config`` that uses it again, exit
        143 saying it was taken back."""
        if self.read(name) is None:
            self.create(name, dict(was.data), was.owned or "", was.written)

    def delete(self, name: str, version: str | None) -> None:
        """Delete ``name`` as read (its ``version``: one edited since, by Helm or an
        admin, is a 409 and stays, their edit with it). None there (404) is the delete
        done: a send after a 503 that followed the first's effect finds it gone, which
        was a failed delete, and a failed undo (``may be half-changed``), before."""
        options = self.client.V1DeleteOptions(
            preconditions=self.client.V1Preconditions(resource_version=version))
        try:
            with translate_errors(f"delete {self.where(name)}",
                                  classifier=KubeErrors(timeout=self.timeout)):
                self.core.delete_namespaced_config_map(
                    name, self.namespace, body=options, _request_timeout=self.timeout)
        except KubeApiError as exc:
            if exc.status != 404:
                raise


CONFIG_PATH_KEY = "ip-masq-agent-config-path"

# The agent's bool flags among the keys read from its container (pflag: `--KEY` alone is
# true), and its string-slice ones (each `--KEY` adds to the list).
_BOOL_OPTIONS = frozenset(AGENT_OPTION_KEYS) & CILIUM_BOOL_KEYS
_LIST_OPTIONS = frozenset({"devices"})

# The ip-masq-agent-config-path values of each Node, by name (_Nodes.files; None: not known).
_ByNode = Mapping[str, tuple[str | None, ...]] | None


def _template_nodes(daemonset: Mapping[str, Any], labels: Mapping[str, Mapping[str, str]]
                    ) -> frozenset[str] | None:
    """The Nodes of ``labels`` (by name) the pod template of ``daemonset`` (JSON) may run
    on, as its controller picks them: its ``nodeSelector`` and the terms of its required
    node affinity (any one term, each of its expressions) select them; taints are not
    read (a node not tolerated is kept: it may be). None where that is not known: a
    ``matchFields`` term, or an operator or a selector apimachinery reads otherwise
    (``Gt``, ``Lt``)."""
    spec = daemonset.get("spec")
    template = spec.get("template") if isinstance(spec, dict) else None
    pod = template.get("spec") if isinstance(template, dict) else None
    pod = pod if isinstance(pod, dict) else {}
    selector = pod.get("nodeSelector") or {}
    affinity = pod.get("affinity")
    node = affinity.get("nodeAffinity") if isinstance(affinity, dict) else None
    required = (node.get("requiredDuringSchedulingIgnoredDuringExecution")
                if isinstance(node, dict) else None)
    terms = required.get("nodeSelectorTerms") if isinstance(required, dict) else None
    if not isinstance(selector, dict) or not (terms is None or isinstance(terms, list)):
        return None
    selectors = []
    for term in terms or ():
        if not isinstance(term, dict) or term.get("matchFields"):
            return None
        expressions = term.get("matchExpressions") or []
        if not isinstance(expressions, list) or any(
                not isinstance(e, dict) or e.get("operator") in ("Gt", "Lt") for e in expressions):
            return None
        if expressions:  # a term without expressions selects no node
            selectors.append({"matchExpressions": expressions})
    try:
        return frozenset(
            name for name, found in labels.items()
            if selector_matches({"matchLabels": selector}, found)
            and (terms is None or any(selector_matches(s, found) for s in selectors)))
    except ValueError:
        return None


def _agent_file(path: str | None) -> str:
    """The file the agent reads for an ``ip-masq-agent-config-path`` value (None: unset,
    Cilium's default), as Cilium takes it: as given, spaces and all (pflag keeps an
    argument's, and the agent's config struct the value; a ``cilium-config`` value comes
    trimmed, :meth:`~k3snet.model.cilium.CiliumConfig.value`); empty: no file, its
    ip-masq-agent watches ``filepath.Dir("")``, the working directory, and reads ``""``,
    not found, so its default list."""
    return DEFAULT_AGENT_FILE if path is None else path


def _laid(foreign: CiliumConfig, owned: CiliumConfig | None) -> CiliumConfig:
    """``foreign`` with k3snet's keys in ``cilium-config`` (``owned``) over its own."""
    if owned is None:
        return foreign
    return attrs.evolve(foreign, settings={**foreign.settings.to_dict(),
                                           **owned.settings.to_dict()})


def _read_alike(key: str, one: str | None, other: str) -> bool:
    """Whether the agent reads the config directory values ``one`` and ``other`` of
    ``key`` alike: one text (trimmed), a boolean as :func:`read_go_flag` reads it, else
    :func:`same_setting` (a CIDR masked). ``one`` None, not set where the key has no
    default k3snet knows (:meth:`CiliumConfig.value`), is the agent's empty default
    (false for a boolean), but for ``ip-masq-agent-config-path``, whose empty value
    reads no file."""
    if one is None:
        if key == CONFIG_PATH_KEY:
            return False
        one = ""
    if one.strip() == other.strip():
        return True
    if key in CILIUM_BOOL_KEYS:
        return read_go_flag(one) == read_go_flag(other)
    return (same_setting(key, one.strip(), other.strip())
            or same_setting(key, other.strip(), one.strip()))


def _agent_paths(config: CiliumConfig) -> set[str | None]:
    """The ``ip-masq-agent-config-path`` of each group of nodes where Cilium's
    ip-masq-agent is on, a CiliumNodeConfig's over ``cilium-config``'s (k3snet's keys in
    it laid over the others: :func:`_laid`), as the agent lays them; empty where it is on
    nowhere. k3snet's key too is laid under each CiliumNodeConfig's: the nodes of one
    turning it off read no file, and their ``ip-masq-agent-config-path`` is not counted."""
    return {view.value(CONFIG_PATH_KEY) for _, view in config.on_nodes()
            if view.flag("enable-ip-masq-agent")}


def _nothing_changed(exc: BackendError) -> ApplyError:
    """``exc``, a failed read before any write, as the ApplyError a check or apply gives."""
    return exc if isinstance(exc, ApplyError) else ApplyError(f"{exc}; nothing was changed")


def _answered(write: Callable[[], T], unanswered: list[Callable[[], object]],
              take_back: Callable[[], object]) -> T:
    """``write()``; interrupted with its answer unread (SIGTERM's SystemExit, Ctrl-C: in
    the request, or the wait after a 503 that may follow its effect), ``take_back`` (which
    reads what is there: :meth:`_Api.take_back_unanswered`) is appended to
    ``unanswered`` first. The write's undo came only with its answer: an apply
    interrupted so left it made, and `k3snet apply` exited 143 saying it was taken back.
    ``take_back`` stays there once answered too, until the apply keeps the write's own
    undo (and clears ``unanswered``): a signal's handler runs at any call, also in the
    answer's bookkeeping, and the write was kept by nothing."""
    unanswered.append(take_back)  # also answered: until the apply keeps the write's undo
    try:
        return write()
    except Exception:
        unanswered.remove(take_back)
        raise


def _version_of(result: Any) -> str | None:
    metadata = getattr(result, "metadata", None)
    return getattr(metadata, "resource_version", None)


# ---------------------------------------------------------------- CiliumNodeConfigs


_MAX_SELECTOR = 1024  # characters of a selector as described; longer ones are cut


def _builder(where: str, sources: ConfigSources | None) -> str:
    """Who builds the config directory of the agents of ``where`` (a DaemonSet), as
    ``sources`` says, for messages."""
    if sources is not None and sources.mounted:
        return f"the {AGENT_CONTAINER} container of {where} (its config directory)"
    return f"the config init container of {where} (cilium-dbg {BUILD_CONFIG})"


def _node_overrides(items: list[Any], where: str, named: frozenset[str] | None = None
                    ) -> list[tuple[CiliumNodeOverride, Any]]:
    """The CiliumNodeConfigs that may change what Cilium does with pods' traffic on some
    node, as the agent reads them (``pkg/option/resolver``): one with no ``defaults`` or
    no ``nodeSelector`` (a list selects nothing without one) is left out, but for one of
    ``named``, which the agents get by name and lay on every node, a ``nodeSelector`` or
    none (its selector then empty); and so is one setting no key k3snet models. A value
    that is not a string is an error: the API server's schema for the CRD refuses it, so
    something else answered. Each with its ``nodeSelector`` as listed."""
    found = []
    for item in items:
        if not isinstance(item, dict):
            raise BackendError(f"{where}: an item is not an object")
        metadata = item.get("metadata")
        name = metadata.get("name") if isinstance(metadata, dict) else None
        spec = item.get("spec")
        if not isinstance(name, str) or not name or not isinstance(spec, dict):
            raise BackendError(f"{where}: an item has no name or no spec")
        defaults, selector = spec.get("defaults"), spec.get("nodeSelector")
        if selector is None and named is not None and name in named:
            selector = {}  # got by name: on every node, no selector matched
        if not defaults or selector is None:
            continue
        label = f"{where}: CiliumNodeConfig {printable(name[:253])}"
        if not isinstance(defaults, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in defaults.items()):
            raise BackendError(f"{label}: defaults is not a map of strings")
        known = (*CILIUM_KEYS, *CILIUM_CONTEXT_KEYS)
        settings = {k: v for k, v in defaults.items() if k in known}
        if settings:
            found.append((CiliumNodeOverride(name, _selector_text(selector, label), settings),
                          selector))
    return found


def _node_groups(overrides: list[tuple[CiliumNodeOverride, Any]],
                 labels: Mapping[str, Mapping[str, str]] | None, warn: Callable[[str], None]
                 ) -> tuple[tuple[str, ...], ...] | None:
    """For each set of ``overrides`` that select some node (by its ``labels``) together,
    their names, as the agent on it picks them (``pkg/option/resolver``: each
    ``nodeSelector`` matched against its Node's labels). ``None`` when not known: no
    Node listed, or a selector apimachinery refuses (the API server's schema does, so
    something else answered)."""
    if not labels:
        return None
    try:
        return tuple({tuple(o.name for o, selector in overrides
                            if selector_matches(selector, node)) for node in labels.values()})
    except ValueError as exc:
        warn(f"a CiliumNodeConfig's nodeSelector cannot be read ({exc}): those selecting "
             "some nodes are judged one at a time")
        return None


def _selector_text(selector: Any, where: str) -> str:
    """A label selector as ``kubectl`` writes one (``""``: empty, every node)."""
    if not isinstance(selector, dict):
        raise BackendError(f"{where}: nodeSelector is not a label selector")
    labels, expressions = selector.get("matchLabels"), selector.get("matchExpressions")
    labels = {} if labels is None else labels  # null is none; an empty list is no map
    expressions = [] if expressions is None else expressions
    if not isinstance(labels, dict) or not isinstance(expressions, list):
        raise BackendError(f"{where}: nodeSelector is not a label selector")
    parts = [f"{k}={v}" for k, v in sorted(labels.items(), key=lambda kv: str(kv[0]))]
    for expression in expressions:
        if not isinstance(expression, dict):
            raise BackendError(f"{where}: a nodeSelector expression is not an object")
        key, operator = expression.get("key"), expression.get("operator")
        values = ",".join(map(str, expression.get("values") or ()))
        parts.append({"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})",
                      "Exists": f"{key}", "DoesNotExist": f"!{key}"}.get(
                          str(operator), f"{key} {operator} ({values})"))
    return printable(",".join(parts))[:_MAX_SELECTOR]


def _egress_gateways(items: list[Any], where: str) -> list[CiliumEgressGateway]:
    """The CiliumEgressGatewayPolicies as values: a policy's ``destinationCIDRs`` and
    ``excludedCIDRs`` (a CIDR Cilium's schema refuses is an error), its gateway's
    ``nodeSelector`` and ``egressIP`` / ``interface`` as text."""
    found = []
    for item in items:
        metadata = item.get("metadata") if isinstance(item, dict) else None
        name = metadata.get("name") if isinstance(metadata, dict) else None
        spec = item.get("spec") if isinstance(item, dict) else None
        if not isinstance(name, str) or not name or not isinstance(spec, dict):
            raise BackendError(f"{where}: an item has no name or no spec")
        label = f"{where}: {printable(name[:253])}"
        destinations = spec.get("destinationCIDRs") or []
        excluded = spec.get("excludedCIDRs") or []
        gateway = spec.get("egressGateway")
        if gateway is None:  # egressGateways (a list) from Cilium 1.18
            gateways = spec.get("egressGateways")
            gateway = gateways[0] if isinstance(gateways, list) and gateways else {}
        if (not isinstance(destinations, list) or not isinstance(excluded, list)
                or not isinstance(gateway, dict)):
            raise BackendError(f"{label}: destinationCIDRs, excludedCIDRs or egressGateway "
                               "is not of the policy's shape")
        where_to = gateway.get("egressIP") or gateway.get("interface") or ""
        selector = gateway.get("nodeSelector")
        text = _selector_text(selector, label) if isinstance(selector, dict) else ""
        described = f"{text or 'any node'}" + (f" as {where_to}" if where_to else "")
        try:
            found.append(CiliumEgressGateway(name, destinations, excluded,
                                             printable(str(described))[:_MAX_SELECTOR]))
        except (ModelError, TypeError) as exc:
            raise BackendError(f"{label}: {exc}") from exc
    return found


# ---------------------------------------------------------------- the backend


_OptionsNow = tuple[tuple[CiliumAgentOption, ...], str | None]
"""The agent's flags and variables as the DaemonSets hold them now, and why they could
not be read (None: they were): :meth:`CiliumBackend._options_now`."""


@attrs.frozen
class _Edit:
    """What an apply writes: cilium-config keys, and the ip-masq-agent ConfigMap."""

    config_data: dict[str, str | None]
    config_record: dict[str, str | None] | None
    agent_text: str | None  # new `config` text (None: unchanged)
    agent_record: _AgentRecord | None
    agent_action: str  # "", "patch", "create" or "delete"
    # The agent's flags and variables as the DaemonSets hold them now, read at most once
    # for the whole check or apply (:meth:`CiliumBackend._options_now`).
    options_now: Callable[[], _OptionsNow] = attrs.field(eq=False)


def _configmap(configmap: Any) -> tuple[str, str]:
    return configmap_ref(configmap) if configmap is not None else DEFAULT_CONFIGMAP


def _ip_masq_agent(name: Any, namespace: str = DEFAULT_CONFIGMAP[0]) -> None:
    cilium_target(namespace, option_text("ip_masq_agent", name))


def _daemonset(name: Any) -> None:
    """Refuse a ``daemonset`` no DaemonSet can be named: a DNS-1123 subdomain."""
    problem = object_name_problem(option_text("daemonset", name), "DaemonSet")
    if problem is not None:
        raise ModelError(f"daemonset {problem}")


def _apart(configmap: Any, ip_masq_agent: Any) -> None:
    """Refuse an ``ip_masq_agent`` naming Cilium's configuration ``configmap``: in one
    ConfigMap for both, the two records k3snet keeps in it (what it set of
    cilium-config, of the ip-masq-agent config) would overwrite each other."""
    namespace, cm_name = _configmap(configmap)
    if ip_masq_agent == cm_name:
        raise ModelError(f"ip_masq_agent {ip_masq_agent!r} is the name of Cilium's "
                         f"configuration ({namespace}/{cm_name}); the ip-masq-agent "
                         "ConfigMap is another one")


class CiliumBackend(BackendBase):
    """Cilium's masquerade settings: ``cilium-config`` and the ip-masq-agent ConfigMap.

    ``configmap`` is ``(namespace, name)`` of ``cilium-config``
    (:data:`DEFAULT_CONFIGMAP`); ``ip_masq_agent`` the name of the ip-masq-agent
    ConfigMap in the same namespace. ``api_client`` is a
    ``kubernetes.client.ApiClient`` (else one is built from ``kubeconfig`` /
    ``context`` or the in-cluster account); ``timeout`` bounds each request.
    ``allow_disruptive`` lets ``apply`` make the changes :meth:`disruptive` names.
    ``daemonset`` is the name of Cilium's agent DaemonSet in that namespace, read to
    know whether it mounts the ip-masq-agent ConfigMap.

    A missing ``cilium-config`` is observed as empty; applying to it is refused.
    """

    name = "cilium"
    option_defaults: ClassVar[Mapping[str, str]] = {
        "configmap": "kube-system/cilium-config",
        "daemonset": DEFAULT_DAEMONSET,
        "kubeconfig": KUBECONFIG_DEFAULT,
    }
    """What an option left out means (``k3snet explain backends.cilium``)."""

    option_checks: ClassVar[OptionChecks] = {
        "configmap": lambda v: cilium_target(*_configmap(v)),
        "ip_masq_agent": _ip_masq_agent,
        "daemonset": _daemonset,
        "timeout": lambda v: option_seconds("timeout", v),
        "allow_disruptive": lambda v: option_flag("allow_disruptive", v),
        **API_OPTION_CHECKS}
    """The constructor's checks of option values."""

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[tuple[str, str]]:
        """The option checks, and ``ip_masq_agent`` naming Cilium's own ConfigMap."""
        problems = super().check_options(options)
        if not problems:
            problems = run_option_checks({"ip_masq_agent": functools.partial(
                _apart, options.get("configmap"))}, options)
        return problems

    def __init__(
        self,
        *,
        configmap: tuple[str, str] | str | None = None,
        ip_masq_agent: str = DEFAULT_IP_MASQ_AGENT,
        daemonset: str = DEFAULT_DAEMONSET,
        api_client: Any = None,
        kubeconfig: str | None = None,
        context: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        allow_disruptive: bool = False,
    ) -> None:
        super().__init__()
        namespace, cm_name = _configmap(configmap)
        self._target = cilium_target(namespace, cm_name)  # validates before connecting
        _ip_masq_agent(ip_masq_agent, namespace)
        _daemonset(daemonset)
        _apart(configmap, ip_masq_agent)
        self._daemonset = daemonset
        timeout = option_seconds("timeout", timeout)
        self.allow_disruptive = option_flag("allow_disruptive", allow_disruptive)
        self._client, self._owns_client = make_api_client(
            api_client, kubeconfig=kubeconfig, context=context)
        self._api = _Api(self._client, namespace, (cm_name, ip_masq_agent), timeout,
                         daemonset)
        self._observed: FreshRead[_Read] = FreshRead()  # for the check or apply after it
        # The agent container's flags and variables the last observe read, for
        # disruptive() (which reads the ConfigMap again, not the DaemonSet).
        self._options: tuple[CiliumAgentOption, ...] = ()
        # The other DaemonSets running a cilium-agent the last observe found, by name;
        # those of them whose agents read cilium-config (_reads_config).
        self._agents: tuple[str, ...] = ()
        self._readers: tuple[str, ...] = ()
        # The owned config the last expect() hinted at (None: no hint, or none wanted).
        self._expected: CiliumConfig | None = None
        self.warnings: tuple[str, ...] = ()
        """What the last :meth:`observe` found worth saying: a refusal ahead (see
        :meth:`expect`)."""
        # CHANGED_ANNOTATION as the last observe read it or the last apply left it
        # unwritten (a 1-tuple; None: not known, read), for the pending_restarts() right after.
        self._stamp: tuple[str | None] | None = None
        self._next_stamp: tuple[str | None] | None = None  # what the apply's writes leave
        # Whether the last observe found the ip-masq-agent file a subPath copy: a change
        # of it needs the agents restarted too (restart_needed).
        self._file_copied = False
        self._settled = Settled()  # the stamp whose pods all restarted: not listed again

    @property
    def capabilities(self) -> frozenset[str]:
        """``{"cilium"}``."""
        return frozenset({"cilium"})

    @classmethod
    def declared_kinds(cls, options: Mapping[str, Any]) -> frozenset[str] | None:
        """``{"cilium"}``, whatever the options (``k3snet validate``: a memory backend of
        every kind beside it manages it too)."""
        return frozenset({"cilium"})

    @property
    def api_client(self) -> Any:
        """The Kubernetes ``ApiClient`` this backend talks to (a plan file records
        which cluster it is, :mod:`k3snet.planfile`)."""
        return self._client

    @property
    def target(self) -> str:
        """``configmap:NAMESPACE/NAME`` of the managed ``cilium-config``."""
        return self._target

    # ------------------------------------------------------------ reading

    def _read(self) -> _Read:
        config = self._api.read(self._api.config_name)
        agent = self._api.read(self._api.agent_name) if config is not None else None
        return _Read(config, agent)

    def _where(self, agent: bool = False) -> str:
        return self._api.where(self._api.agent_name if agent else self._api.config_name)

    def _records(self, read: _Read) -> tuple[dict[str, str | None] | None, _AgentRecord | None]:
        config_record = (None if read.config is None
                         else _config_record(read.config.owned, self._where()))
        if config_record is not None:
            assert read.config is not None
            config_record = _still_written(config_record, read.config.written,
                                           read.config.data, self._where())
        agent_record = (None if read.agent is None
                        else _agent_record(read.agent.owned, self._where(agent=True)))
        if agent_record is not None:
            assert read.agent is not None
            where = self._where(agent=True)
            now = _field_texts(_agent_fields(self._agent_members(read), where))
            agent_record = attrs.evolve(agent_record, keys=_still_written(
                agent_record.keys, read.agent.written, now, where))
        return config_record, agent_record

    def _agent_members(self, read: _Read) -> dict[str, Any] | None:
        text = None if read.agent is None else read.agent.data.get(AGENT_CONFIG_KEY)
        return _parse_agent(text, self._where(agent=True))

    def _owned(self, read: _Read) -> CiliumConfig | None:
        config_record, agent_record = self._records(read)
        if config_record is None and agent_record is None:
            return None
        assert read.config is not None  # a record implies the ConfigMap was read
        settings = {k: read.config.data[k] for k in config_record or {} if k in read.config.data}
        agent = None
        if agent_record is not None:
            fields = _agent_fields(self._agent_members(read), self._where(agent=True)) or {}
            agent = {k: fields[k] for k in agent_record.keys if k in fields}
        return CiliumConfig(self.target, settings=settings, ip_masq_agent=agent)

    def _foreign(self, read: _Read) -> CiliumConfig:
        assert read.config is not None
        config_record, agent_record = self._records(read)
        data = dict(read.config.data)
        for key, previous in (config_record or {}).items():
            if previous is None:
                data.pop(key, None)
            else:
                data[key] = previous
        settings = {k: v for k, v in data.items() if k in (*CILIUM_KEYS, *CILIUM_CONTEXT_KEYS)}
        fields = _agent_fields(self._agent_members(read), self._where(agent=True))
        if agent_record is not None:
            if agent_record.text is None or agent_record.text == "":
                previous_fields = None
            else:
                previous_fields = _agent_fields(_parse_agent(agent_record.text, ""), "") or {}
            fields = dict(fields or {})
            for key, previous in agent_record.keys.items():
                if previous is None:
                    fields.pop(key, None)
                else:
                    fields[key] = previous
            if previous_fields is None and not fields:
                fields = None
        return CiliumConfig(self.target, settings=settings, ip_masq_agent=fields)

    def observe(self) -> State:
        """The keys k3snet set (owned) and the settings as they would be without them
        (foreign), with the CiliumNodeConfigs that set keys of them on some nodes."""
        self._observed.drop()
        self._api.forget()
        self.warnings = ()
        self._options = ()
        self._agents = self._readers = ()
        read = self._read()
        self._stamp = (None if read.config is None else read.config.changed_at,)
        if read.config is None:
            self._observed.put(read)
            return State()
        owned = self._owned(read)
        read, foreign, daemonset = self._judged(read, owned)
        others = read.others
        nodes = read.nodes
        assert nodes is not None
        self._agents = tuple(name for name, _ in others or ())
        self._readers = tuple(name for name, found in others or () if self._reads_config(found))
        self._options = read.options
        # The mount matters only where Cilium's ip-masq-agent is on (some node, or
        # k3snet's keys). A plan turning it on has the mount judged by check and apply
        # (_edit).
        mount = None
        paths = _agent_paths(_laid(foreign, owned))
        if paths:
            assert not isinstance(daemonset, BackendError)
            mount = self._mount(paths, daemonset, by_node=nodes.files(_laid(foreign, owned)),
                                others=others, labels=nodes.labels)
            mount.warn_if(True, self._api.warn)
            foreign = attrs.evolve(foreign, ip_masq_agent_unmounted=mount.unmounted,
                                   ip_masq_agent_no_directory=mount.no_directory)
        self._file_copied = mount is not None and mount.copied
        # A failed read is not tried again ahead: the check says it.
        ahead = (None if isinstance(daemonset, BackendError)
                 else self._mount_ahead(read, mount, nodes, daemonset))
        self._observed.put(attrs.evolve(read, mount=mount, ahead=ahead))
        # The policies count only where some node runs the egress gateway (a key k3snet
        # never writes): otherwise they are not listed.
        if any(view.egress_gateway_on(family) for _, view in foreign.on_nodes()
               for family in (4, 6)):
            foreign = attrs.evolve(foreign, egress_gateways=_egress_gateways(
                self._api.egress_gateway_policies(), "CiliumEgressGatewayPolicies"))
        return State(owned=[] if owned is None else [owned], foreign=[foreign])

    def _judged(self, read: _Read, owned: CiliumConfig | None
                ) -> tuple[_Read, CiliumConfig, Mapping[str, Any] | str | BackendError | None]:
        """``read`` (``cilium-config`` found) with what every judgement of it takes beside
        the two ConfigMaps: the named DaemonSet's agent container's flags and variables
        and its ``config`` init container's sources, the other agent DaemonSets, the
        CiliumNodeConfigs its sources take (and the Nodes); the foreign config with them;
        and the DaemonSet as read (JSON, why it is not known: a text, or the error of a
        failed read). :meth:`observe` and a :meth:`check` or :meth:`apply` reading again
        (observe's read expired, or a plan file's) judge alike by it. A failed read of
        the DaemonSet (a 500, a timeout) is raised where the ip-masq-agent is on (some
        node, or k3snet's keys: its mount is judged), elsewhere a warning: the flags are
        not read, ``cilium-config`` is judged alone."""
        assert read.config is not None
        daemonset, failed = self._read_daemonset()
        others = (tuple(self._api.agent_daemonsets(self._daemonset))
                  if isinstance(daemonset, Mapping) else None)
        sources = self._config_sources(daemonset, others or (), owned)
        holds = {*read.config.data, *(owned.settings if owned is not None else ()),
                 *(self._expected.settings if self._expected is not None else ())}
        nodes = self._taken_overrides(self._nodes(sources), sources, frozenset(holds),
                                      daemonset if isinstance(daemonset, Mapping) else None)
        found = list(nodes.overrides)
        if found:
            self._node_configs_otherwise(sources, others or ())
        groups = _node_groups(found, nodes.agent_labels, self._api.warn)
        options = self._agent_options(daemonset, others or ())
        read = attrs.evolve(read, options=options, daemonset=(
            daemonset if isinstance(daemonset, dict) else None), others=others,
            sources=sources, nodes=nodes)
        foreign = attrs.evolve(self._foreign(read), node_overrides=[o for o, _ in found],
                               node_groups=groups, agent_options=options)
        view = _laid(foreign, owned)
        if sources is not None:
            self._configmaps_laid_over(sources, view)
        for name, other in others or ():  # a copy's agents read its own list
            theirs = config_sources(other, self._api.namespace)
            if isinstance(theirs, ConfigSources):  # (not a key its container sets)
                self._configmaps_laid_over(theirs, view, name, frozenset(agent_options(
                    other, AGENT_OPTION_KEYS, booleans=_BOOL_OPTIONS, lists=_LIST_OPTIONS)))
        if failed is not None:
            if _agent_paths(_laid(foreign, owned)):
                raise failed
            self._api.warn(f"{failed}: the {AGENT_CONTAINER} container's flags and "
                           "variables are not read, cilium-config is judged alone")
            return read, foreign, failed
        return read, foreign, daemonset

    def expect(self, state: State) -> None:
        """A hint: ``state``'s owned config is what the plan will want (``k3snet plan`` and
        :func:`~k3snet.converge.converge` give it before :meth:`observe`).

        Changes no result. Where it turns Cilium's ip-masq-agent on, off until then
        (nothing read the DaemonSet), :meth:`observe` reads the DaemonSet all the same,
        and :attr:`warnings` says ahead what ``check`` and ``apply`` refuse (nothing
        mounted at ``/etc/config``): ``plan`` said nothing of it. Its answer serves the
        ``check`` or ``apply`` right after; a failed read is theirs to say."""
        self._expected = next((o for o in state.owned if isinstance(o, CiliumConfig)
                               and o.target == self.target), None)

    def _read_daemonset(self) -> tuple[dict[str, Any] | str | None, BackendError | None]:
        """The DaemonSet (JSON, or why it is not known: 404, 403), or the error reading
        it (a 500, a timeout: ``(None, error)``), for its agent container's flags and,
        where the ip-masq-agent is on, its mount."""
        try:
            return self._api.daemonset(self._daemonset), None
        except BackendError as exc:
            return None, exc

    def _config_sources(self, daemonset: Mapping[str, Any] | str | None,
                        others: Iterable[tuple[str, Mapping[str, Any]]],
                        owned: CiliumConfig | None) -> ConfigSources | None:
        """How the ``config`` init container of ``daemonset`` builds its agents' config
        directory (:func:`~k3snet.backends.cilium_mount.config_sources`; None: not known,
        a warning, or no ``build-config``: all of ``cilium-config`` taken). Each other
        agent DaemonSet's (``others``) not taking from ``cilium-config`` a key k3snet
        writes (``owned``'s, or the hinted plan's: :meth:`expect`) is a warning: the agents
        of its nodes keep their own value (the named one's is refused by check and apply:
        :meth:`_edit`)."""
        if not isinstance(daemonset, Mapping):
            return None
        namespace, configmap = self._api.namespace, self._api.config_name
        writes = sorted({*(owned.settings if owned is not None else ()),
                         *(self._expected.settings if self._expected is not None else ())})
        named: ConfigSources | None = None
        for name, found in ((self._daemonset, daemonset), *others):
            sources = config_sources(found, namespace)
            where = f"DaemonSet {namespace}/{name}"
            if isinstance(sources, str):
                self._api.warn(f"the config init container of {where} (cilium-dbg "
                               f"{BUILD_CONFIG}): {sources}")
                continue
            if sources is not None and any(kind == "node" for kind, _, _ in sources.sources):
                # pkg/option/resolver: each Node's config.cilium.io/KEY labels and
                # annotations, laid over the sources before (filtered as they are).
                self._api.warn(printable(
                    f"{_builder(where, sources)} reads the node: source ({sources.given}): "
                    "each Node's config.cilium.io/KEY labels and annotations, which k3snet "
                    "does not read, are laid over cilium-config there; a key set so is "
                    "judged by cilium-config all the same")[:1000])
            if name == self._daemonset:
                named = sources
                continue
            follows = self._follows_config(found, writes) if sources is not None else ()
            dropped = {k: why for k in writes if sources is not None and k not in follows
                       and (why := sources.dropped(namespace, configmap, k)) is not None}
            if dropped:
                self._api.warn(printable(
                    f"{_builder(where, sources)} does "
                    f"not take {', '.join(dropped)} from {self._where()}, which k3snet "
                    f"writes ({next(iter(dropped.values()))}): the agents of its nodes keep "
                    "their own value")[:1000])
        return named

    def _configmaps_laid_over(self, sources: ConfigSources, view: CiliumConfig,
                              daemonset: str | None = None,
                              flagged: frozenset[str] = frozenset()) -> None:
        """A warning for each key k3snet judges that a ``config-map:`` source after
        ``cilium-config`` in the list of the named DaemonSet (or of another agent
        DaemonSet, ``daemonset``: the agents of its nodes, whose container's flags and
        variables set the keys ``flagged``; ``sources``) lays over it, its
        filter keeping it, with another value than ``cilium-config`` gives in ``view`` (k3snet's
        keys laid in; as the agent reads them), where the agent container's flag or
        variable does not set it: the agents run with that value, and k3snet judges the
        key by ``cilium-config``'s (such a ConfigMap's keys are not laid in the foreign
        config), a key met there planning no write for :meth:`_laid_over` to refuse. One
        not to be read is a warning. Each is read once a pass (:meth:`_Api.foreign_data`):
        none where no such source is listed (Helm's default)."""
        namespace, configmap = self._api.namespace, self._api.config_name
        where = f"DaemonSet {namespace}/{daemonset or self._daemonset}"
        unknown: set[tuple[str, str]] = set()
        for key in (*CILIUM_KEYS, *CILIUM_CONTEXT_KEYS):
            if view.agent_option(key) is not None or key in flagged:
                continue
            for at, other in sources.configmaps_after(namespace, configmap, key):
                if (at, other) in unknown:
                    break
                data = self._api.foreign_data(at, other, f"a --source of {where}'s config "
                                              "init container, after cilium-config")
                if isinstance(data, str):
                    unknown.add((at, other))
                    self._api.warn(printable(
                        f"{data}: whether it sets keys k3snet judges over {self._where()} "
                        "is not known")[:1000])
                    break
                if data is None or key not in data:
                    continue
                laid, given = data[key].strip(), view.value(key)
                if not _read_alike(key, given, laid):
                    self._api.warn(printable(
                        f"{_builder(where, sources)} lays the ConfigMap {at}/{other} over "
                        f"{self._where()} (after it in --source: {sources.given}), holding "
                        f"{key}={laid} where cilium-config gives "
                        f"{'none' if given is None else given}: the agents run with {laid} "
                        "(where no CiliumNodeConfig after it sets it), k3snet judges "
                        f"{key} by cilium-config's")[:1000])
                break

    def _node_configs_otherwise(self, sources: ConfigSources | None,
                                others: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
        """A warning for each other agent DaemonSet whose ``config`` init container takes
        the CiliumNodeConfigs otherwise than the named one's (``sources``): other
        ``cilium-node-config:`` sources, another place among its sources, or other key
        filters. k3snet judges the CiliumNodeConfigs by the named one's on every node,
        the nodes of such a copy too (whose agents may lay other keys, or none)."""
        def taking(found: ConfigSources | None) -> tuple[Any, ...] | None:
            if found is None:
                return None
            return (tuple((i, s) for i, s in enumerate(found.sources)
                          if s[0] == "cilium-node-config" or s[0] == "config-map"),
                    found.allow, found.deny, found.mounted)

        namespace = self._api.namespace
        named = taking(sources)
        for name, other in others:
            theirs = config_sources(other, namespace)
            if isinstance(theirs, str) or taking(theirs) == named:
                continue  # not known (its own warning), or taken alike
            self._api.warn(printable(
                f"the config init container of DaemonSet {namespace}/{name} takes the "
                f"CiliumNodeConfigs otherwise than DaemonSet {namespace}/{self._daemonset}'s "
                f"({theirs.given if theirs is not None else 'no build-config'}): k3snet "
                "judges them by the latter's on every node, its agents' nodes too")[:1000])

    def _taken_overrides(self, nodes: _Nodes, sources: ConfigSources | None,
                         holds: frozenset[str] = frozenset(),
                         daemonset: Mapping[str, Any] | None = None) -> _Nodes:
        """``nodes`` with the CiliumNodeConfigs' keys the named DaemonSet's ``config`` init
        container (``sources``) takes, each one it drops a warning: a key its
        ``--allow-config-keys`` does not allow or its ``--deny-config-keys`` denies (the
        CiliumNodeConfigs are a source after ``cilium-config``), or every key where its
        ``--source`` reads no CiliumNodeConfig of the namespace. Where each of its
        CiliumNodeConfig sources names one (``cilium-node-config:NAMESPACE/NAME``), the
        others are not read (a warning), and those named are laid on every node. A key
        ``cilium-config`` ``holds`` (its keys, and those k3snet writes) where it is a
        source after the CiliumNodeConfigs is its own there (a warning): the resolver
        lays each source over the ones before. A key the agent container of the named
        ``daemonset`` takes by a variable from that key of ``cilium-config``
        (:meth:`_follows_config`) is dropped too (a warning): viper lays the variable over
        the config directory."""
        nodes = self._followed_overrides(nodes, daemonset, holds)
        if sources is None or not nodes.overrides:
            return nodes
        where = f"DaemonSet {self._api.namespace}/{self._daemonset}"
        named = sources.node_configs_named(self._api.namespace)
        kept = []
        for listed, as_listed in nodes.overrides:
            if named is not None and listed.name not in named:
                self._api.warn(printable(
                    f"{_builder(where, sources)} "
                    f"reads the CiliumNodeConfig {', '.join(sorted(named))} alone "
                    f"({sources.given}): CiliumNodeConfig {listed.name} is not read, nor "
                    "judged")[:1000])
                continue
            # Got by name, the resolver lays it on every node, whatever its nodeSelector.
            override, selector = ((listed, as_listed) if named is None
                                  else (attrs.evolve(listed, selector=""), {}))
            dropped = {k: why for k in override.settings
                       if (why := sources.node_config_dropped(
                           self._api.namespace, k, (self._api.config_name, holds)))}
            if dropped:
                self._api.warn(printable(
                    f"{_builder(where, sources)} "
                    f"drops {', '.join(dropped)} of CiliumNodeConfig {override.name} "
                    f"({next(iter(dropped.values()))}): cilium-config judges them")[:1000])
            settings = {k: v for k, v in override.settings.items() if k not in dropped}
            if settings:
                kept.append((attrs.evolve(override, settings=settings), selector))
        return attrs.evolve(nodes, overrides=tuple(kept))

    def _followed_overrides(self, nodes: _Nodes, daemonset: Mapping[str, Any] | None,
                            holds: frozenset[str]) -> _Nodes:
        """``nodes`` without the CiliumNodeConfigs' keys the agent container of
        ``daemonset`` (JSON) takes by a variable from that key of ``cilium-config``, which
        ``holds`` them (:meth:`_follows_config`), each one dropped a warning."""
        if daemonset is None or not nodes.overrides:
            return nodes
        follows = self._follows_config(
            daemonset, sorted({k for o, _ in nodes.overrides for k in o.settings}), holds)
        if not follows:
            return nodes
        kept = []
        for override, selector in nodes.overrides:
            dropped = sorted(k for k in override.settings if k in follows)
            if dropped:
                self._api.warn(printable(
                    f"the {AGENT_CONTAINER} container of DaemonSet {self._api.namespace}/"
                    f"{self._daemonset} takes {', '.join(dropped)} by its variable "
                    f"({', '.join(option_variable(k) for k in dropped)}) from that key of "
                    f"{self._where()}, laid over its config directory: CiliumNodeConfig "
                    f"{override.name}'s value is not taken, and cilium-config judges "
                    "them")[:1000])
            settings = {k: v for k, v in override.settings.items() if k not in follows}
            if settings:
                kept.append((attrs.evolve(override, settings=settings), selector))
        return attrs.evolve(nodes, overrides=tuple(kept))

    def _agent_options(self, daemonset: Mapping[str, Any] | str | None,
                       others: Iterable[tuple[str, Mapping[str, Any]]] = ()
                       ) -> tuple[CiliumAgentOption, ...]:
        """The keys the ``cilium-agent`` container of ``daemonset`` sets by flag or
        variable, over ``cilium-config`` (none where it is not read); one whose value is
        known only where the pod runs is left out, with a warning: ``cilium-config``'s
        judges it. Where another DaemonSet of Cilium's namespace runs a ``cilium-agent``
        container too (``others``, by name: one for some nodes; Helm makes one,
        ``cilium``, but a copy with a ``nodeSelector`` runs as well), its container's are
        read too: a key they do not all set alike is left out, with a warning naming them
        (their nodes are not told apart), and ``cilium-config`` judges it."""
        if not isinstance(daemonset, Mapping):
            return ()
        found, unknown = self._options_of(daemonset, self._daemonset)
        others = tuple(others)
        if not others:
            return found
        views = {self._daemonset: {o.key: o for o in found}}
        unknowns = {self._daemonset: unknown}  # the keys each leaves not known
        for name, other in others:
            options, unknowns[name] = self._options_of(other, name)
            views[name] = {o.key: o for o in options}
        kept, differing = [], []
        for option in found:
            theirs = [view.get(option.key) for view in views.values()]
            if all(o is not None and (o.value, o.positional) == (option.value, option.positional)
                   for o in theirs):
                kept.append(option)
        for key in sorted({k for view in views.values() for k in view} - {o.key for o in kept}):
            differing.append(f"{key} (" + ", ".join(
                f"{name}: {view[key].given}={view[key].value}" if key in view
                else f"{name}: not known" if key in unknowns[name]
                else f"{name}: not set" for name, view in views.items()) + ")")
        if differing:
            self._api.warn(printable(
                f"the DaemonSets {', '.join(views)} of {self._api.namespace} each run a "
                f"{AGENT_CONTAINER} container, and set otherwise {'; '.join(differing)}: the "
                "agents of each one's nodes run with its own, which k3snet does not tell "
                "apart, and cilium-config judges these keys")[:1000])
        return tuple(kept)

    def _options_of(self, daemonset: Mapping[str, Any], name: str
                    ) -> tuple[tuple[CiliumAgentOption, ...], frozenset[str]]:
        """:meth:`_agent_options` of the one DaemonSet ``name`` (JSON ``daemonset``), and
        the keys whose value is not known (each said in a warning)."""
        where = f"DaemonSet {self._api.namespace}/{name}"
        if agent_config_dir_missing(daemonset):
            self._api.warn(
                f"the {AGENT_CONTAINER} container of {where} is given no config directory "
                "(--config-dir, CILIUM_CONFIG_DIR; Helm gives /tmp/cilium/config-map): its "
                "agents read neither cilium-config nor the CiliumNodeConfigs, only their "
                "flags, variables and defaults, and k3snet judges cilium-config all the same")
        found, unknown = [], []
        for key, option in agent_options(daemonset, AGENT_OPTION_KEYS, booleans=_BOOL_OPTIONS,
                                         lists=_LIST_OPTIONS).items():
            if option.value is None and option.given.startswith("$"):
                # A variable from a ConfigMap k3snet can read: as the kubelet sets it.
                read = self._variable_from_configmap(name, daemonset, key, option)
                if read is None:
                    continue  # not set: the config directory's value
                given = (option._replace(unknown=read) if isinstance(read, str) else read)
            else:
                given = option
            if given.value is None:
                unknown.append((key, given))
                continue
            found.append(CiliumAgentOption(key, given.value, given.given,
                                           positional=given.stray))
        not_known = frozenset(key for key, _ in unknown)
        # A reason several share (a shell's script, a config file) is said once, first.
        by_reason: dict[str | None, list[tuple[str, Any]]] = {}
        for key, option in unknown:
            by_reason.setdefault(option.unknown, []).append((key, option))
        for reason, group in by_reason.items():
            if len(group) > 1:
                self._api.warn(printable(
                    f"the {AGENT_CONTAINER} container of {where}: {reason}: {len(group)} "
                    f"options k3snet judges by are not known ({', '.join(k for k, _ in group)})"
                    ", and cilium-config judges them all the same")[:1000])
        unknown = [(k, o) for k, o in unknown if len(by_reason[o.unknown]) == 1]
        if len(unknown) == 1:
            ((key, option),) = unknown
            self._api.warn(printable(
                f"{option.given} of the {AGENT_CONTAINER} container of {where}: "
                f"{option.unknown}: Cilium takes it over cilium-config, which judges "
                f"{key} all the same")[:1000])
        elif unknown:
            # One warning, not one a key: an envFrom without a prefix may set every
            # CILIUM_... variable, which made one line for each key k3snet judges by.
            self._api.warn(printable(
                f"{len(unknown)} options of the {AGENT_CONTAINER} container of {where} are "
                "set only where the pod runs (a valueFrom, an envFrom that may set them, "
                f"a service's variable: {', '.join(o.given for _, o in unknown)}): Cilium "
                "takes them over cilium-config, which judges them all the same")[:1000])
        return tuple(found), not_known

    def _nodes(self, sources: ConfigSources | None = None) -> _Nodes:
        """The CiliumNodeConfigs, and the labels of the Nodes where some of them select
        some nodes: several selecting one node are laid together there, the Nodes' labels
        say which do (listed only then). ``sources``: the named DaemonSet's config init
        container's, whose CiliumNodeConfigs got by name count without a nodeSelector."""
        named = None if sources is None else sources.node_configs_named(self._api.namespace)
        found = _node_overrides(self._api.node_configs(),
                                f"CiliumNodeConfigs in {self._api.namespace}", named)
        listed = (self._api.node_labels() if any(not o.every_node for o, _ in found)
                  else None)
        if listed is None:
            return _Nodes(tuple(found))
        return _Nodes(tuple(found), *listed)

    def _mount_ahead(self, read: _Read, observed: _Mount | None, nodes: _Nodes,
                     daemonset: Mapping[str, Any] | str | None = None) -> _Mount | None:
        """The mount of the file the hint (:meth:`expect`) turns the ip-masq-agent on
        with in ``cilium-config``, off there until then (None: not judged, or its read
        failed); the DaemonSet ``observed`` holds (observe's mount where a CiliumNodeConfig
        has it on; None: not read) serves, and so do the pods it listed; each older pod is
        judged by what its node reads then (``nodes``); :attr:`warnings` says the refusal
        ahead."""
        expected, config = self._expected, read.config
        if (expected is None or config is None or not expected.flag("enable-ip-masq-agent")
                or read_go_flag(str(config.data.get("enable-ip-masq-agent") or "false"))):
            return None
        after = {**config.data, **{k: str(v) for k, v in expected.settings.to_dict().items()}}
        if observed is not None and observed.daemonset is None:
            return None  # the DaemonSet not read (its warning given)
        paths = self._paths_after(after, nodes, read.options)
        if not paths:
            return None  # a CiliumNodeConfig turns it off on every node: no file is read
        try:
            mount = self._mount(paths, daemonset if observed is None else observed.daemonset,
                                by_node=nodes.files(self._settings(after, read.options)),
                                pods=None if observed is None else observed.pods,
                                others=read.others, labels=nodes.labels)
        except BackendError:  # check and apply read it again, and fail
            return None
        if mount.unknown is not None:
            mount.warn_if(True, self._api.warn)
            return mount
        known = set(self._startup_problems(config.data, after, _Mount(), read.options))
        self.warnings = tuple(
            f"the plan turns Cilium's ip-masq-agent on, which check and apply refuse: {p}"
            for p in self._startup_problems(config.data, after, mount, read.options)
            if p not in known)
        return mount

    def _mount(self, paths: Iterable[str | None],
               found: Mapping[str, Any] | str | None = None, *, by_node: _ByNode = None,
               pods: tuple[dict[str, Any], ...] | None = None,
               others: tuple[tuple[str, Mapping[str, Any]], ...] | None = None,
               labels: Mapping[str, Mapping[str, str]] | None = None) -> _Mount:
        """Why Cilium's agents do not read the ip-masq-agent ConfigMap (``unmounted``
        ``None``: they do, or it is not known: the DaemonSet not found or not to be read,
        a warning), and whether their container has no directory for its file at all.

        ``paths``: the ``ip-masq-agent-config-path`` values where the ip-masq-agent is on
        (``None``: unset, Cilium's default); an agent started with
        ``--ip-masq-agent-config-path`` reads that file instead, on every node. Of
        several, the one worst off is said (no directory, then not mounted). ``by_node``:
        those of each node (:meth:`_Nodes.files`), for the pods on an older template.
        ``found``: the DaemonSet as read already (None: read it); ``pods``: its pods as
        listed already (None: list them where they matter).

        Each other DaemonSet running a ``cilium-agent`` (``others``, by name, as listed
        already; None: list them) is judged too, its own pods with it: the agents of its
        nodes read the file through its own mount; of all, the one worst off is said (a
        mount not known there is a warning of its own). One whose agents
        ``cilium-config``'s ``enable-ip-masq-agent`` does not reach is not
        (:meth:`_keeps_ip_masq_agent_off`); where the Nodes' ``labels`` are known (with
        ``by_node``) and its config init container builds the config directory as the
        named one's does, one is judged by the files of the nodes its template selects
        (:func:`_template_nodes`), and not where the ip-masq-agent is off on all of them
        (a CiliumNodeConfig of its node pool turning it off)."""
        paths = list(paths)
        asked = frozenset(_agent_file(p) for p in paths) or frozenset({DEFAULT_AGENT_FILE})
        daemonset = self._api.daemonset(self._daemonset) if found is None else found
        if isinstance(daemonset, str):
            return _Mount(unknown=daemonset, asked=asked)
        if others is None:
            others = tuple(self._api.agent_daemonsets(self._daemonset))
        mount = self._mount_of(self._daemonset, paths, daemonset, by_node, pods)
        named_sources = config_sources(daemonset, self._api.namespace)
        for name, other in others:
            off = self._keeps_ip_masq_agent_off(name, other)
            if isinstance(off, str):  # not known: a warning, never a refusal
                self._api.warn(off)
                continue
            if off:
                continue
            # Each node's file (by_node) is the one the named DaemonSet's config init
            # container builds: the copy's nodes read it where the copy's builds the same.
            sources = config_sources(other, self._api.namespace)
            selected = (None if by_node is None or labels is None or isinstance(sources, str)
                        or sources != named_sources else _template_nodes(other, labels))
            theirs_paths = paths if selected is None or by_node is None else list(
                dict.fromkeys(p for node in sorted(selected) for p in by_node.get(node, ())))
            if not theirs_paths:
                continue  # off on every node it runs on: its agents read no file
            theirs = self._mount_of(name, theirs_paths, other, by_node, None)
            if theirs.unknown is not None:
                self._api.warn(theirs.unknown)
                continue
            copied = mount.copied or theirs.copied
            if (not theirs.no_directory, theirs.unmounted is None) < (
                    not mount.no_directory, mount.unmounted is None):
                mount = attrs.evolve(theirs, pods=mount.pods)
            mount = attrs.evolve(mount, copied=copied)
        return attrs.evolve(mount, asked=asked, daemonset=daemonset)

    def _keeps_ip_masq_agent_off(self, name: str, other: Mapping[str, Any]) -> bool | str:
        """Whether ``cilium-config``'s ``enable-ip-masq-agent`` does not reach the agents of
        ``other``, another agent DaemonSet ``name`` (JSON): their ``cilium-agent``
        container's flag or variable turns it off (pflag's and viper's reading of it; a
        variable from a ``configMapKeyRef`` read from that ConfigMap, as the kubelet sets
        it), or, given neither, their ``config`` init container does not take the key from
        ``cilium-config`` (``ConfigSources.dropped``), or takes it from a ConfigMap it
        lays over it, its value turning it off (``ConfigSources.configmaps_after``; one
        turning it on is judged; what they take instead is not). Its mount does not
        matter to k3snet's write then: the agents keep the ip-masq-agent as they run it.
        A variable from ``enable-ip-masq-agent`` of ``cilium-config`` itself
        (:meth:`_follows_config`) is ``cilium-config``'s value whatever its sources take:
        judged.
        Why it is not known, a text (a value set where the pod runs, a ConfigMap k3snet
        may not read, a shell's script, a config file): a warning, not judged, since their
        agents may run no ip-masq-agent and a refusal would block a valid write."""
        key = "enable-ip-masq-agent"
        given = agent_options(other, (key,), booleans=(key,)).get(key)
        option: AgentOption | str | None = given
        if given is not None and given.value is None:
            option = (self._variable_from_configmap(name, other, key, given)
                      if given.given.startswith("$") else str(given.unknown))
        if isinstance(option, str):
            assert given is not None
            return printable(
                f"{given.given} of the {AGENT_CONTAINER} container of DaemonSet "
                f"{self._api.namespace}/{name}: {option}: whether its agents run the "
                "ip-masq-agent is not known, so their mount of the ConfigMap "
                f"{self._api.agent_name} is not judged")[:1000]
        if option is not None and option.value is not None:
            if option.given.startswith("--"):  # pflag: ParseBool, or the agent exits
                return parse_go_bool(option.value) is False
            # viper: GetBool's ParseBool of the variable as set, untrimmed (only the config
            # directory's files are trimmed); one it cannot read is false.
            return parse_go_bool(option.value) is not True
        if self._follows_config(other, (key,)):
            return False  # its variable takes cilium-config's value over the config directory
        return self._sources_keep_ip_masq_agent_off(name, other)

    def _sources_keep_ip_masq_agent_off(self, name: str, other: Mapping[str, Any]
                                        ) -> bool | str:
        """:meth:`_keeps_ip_masq_agent_off` by the ``config`` init container of ``other``
        (the DaemonSet ``name``) alone, its agent container setting no value."""
        key = "enable-ip-masq-agent"
        namespace = self._api.namespace
        sources = config_sources(other, namespace)
        if isinstance(sources, str):  # a shell's script, a value set where the pod runs
            return printable(
                f"DaemonSet {namespace}/{name}: {sources}: whether its agents take "
                f"{key} from {self._where()} is not known, so their mount of the ConfigMap "
                f"{self._api.agent_name} is not judged")[:1000]
        if sources is None:
            return False
        if sources.dropped(namespace, self._api.config_name, key) is not None:
            return True
        for at, configmap in sources.configmaps_after(namespace, self._api.config_name, key):
            data = self._api.foreign_data(at, configmap, f"a --source of DaemonSet "
                                          f"{namespace}/{name}'s config init container")
            if isinstance(data, str):
                return printable(
                    f"{data}: whether it sets {key} over {self._where()} for the agents "
                    f"of DaemonSet {namespace}/{name} is not known, so their mount of the "
                    f"ConfigMap {self._api.agent_name} is not judged")[:1000]
            if data is not None and key in data:
                # The resolver lays it over cilium-config's: its value decides, read as
                # the agent reads the file (trimmed); one turning it on is judged as a
                # variable turning it on is.
                return not read_go_flag(data[key])
        return False

    def _variable_from_configmap(self, name: str, other: Mapping[str, Any], key: str,
                                 option: AgentOption) -> AgentOption | str | None:
        """``option``, the variable of ``key`` of the agents of DaemonSet ``name`` (JSON
        ``other``) not known from its template, as the kubelet sets it from a
        ``configMapKeyRef`` (:func:`variable_configmap_ref`; a ConfigMap of the pod's
        namespace): its value, None where the ConfigMap or key is missing and the ref
        ``optional`` or the value is empty (no variable to viper: the config directory's
        value), or why it is not known, a text (another source, a ConfigMap not to be
        read, a required one missing: the container does not start), to follow
        ``option.given`` and where. One from ``cilium-config`` follows what k3snet writes
        there (the kubelet reads it at each start of the container): from ``key`` itself,
        None (``cilium-config``'s value, judged as such); from another key k3snet writes,
        not known."""
        namespace = self._api.namespace
        where = (f"{option.given} of the {AGENT_CONTAINER} container of DaemonSet "
                 f"{namespace}/{name}")
        ref = variable_configmap_ref(other, option.given[1:])
        if not option.given.startswith("$") or ref is None:
            return str(option.unknown)
        if ref.name == self._api.config_name and (ref.key == key or ref.key in CILIUM_KEYS):
            # What k3snet leaves there, at the container's next start: from key itself,
            # cilium-config's own value (judged as the config directory's).
            return None if ref.key == key else (
                f"taken from the key {ref.key} of {self._where()}, which k3snet writes: its "
                "value at the agents' next start is not judged")
        data = self._api.foreign_data(namespace, ref.name, f"{where}'s configMapKeyRef")
        if isinstance(data, str):
            return data
        if data is None or ref.key not in data:
            if ref.optional and not ref.shadowed:
                return None  # the kubelet sets no variable
            return (f"the key {ref.key} of ConfigMap {namespace}/{ref.name} it is taken "
                    "from is missing " + (
                        "(the variable is then an envFrom's or an earlier env entry's)"
                        if ref.optional else "(its container does not start)"))
        value = data[ref.key]
        return option._replace(value=value, unknown=None) if value else None

    def _mount_of(self, name: str, paths: list[str | None], found: Mapping[str, Any],
                  by_node: _ByNode, pods: tuple[dict[str, Any], ...] | None) -> _Mount:
        """:meth:`_mount` of the one DaemonSet ``name`` (JSON ``found``), but for
        :attr:`_Mount.asked`."""
        try:
            given = agent_config_path(found)
        except ValueError as exc:
            # Which file is not known, but with no volume of the ConfigMap's key the agents
            # read it at no path: not mounted (whether a directory is there is not known).
            unreadable = agent_file_unreadable(
                found, f"DaemonSet {self._api.namespace}/{name}",
                self._api.agent_name, key=AGENT_CONFIG_KEY)
            if unreadable is not None:
                return _Mount(printable(unreadable)[:1000])
            return _Mount(unknown=printable(
                f"the argument {CONFIG_PATH_FLAG} of DaemonSet {self._api.namespace}/"
                f"{name}'s {AGENT_CONTAINER} container: {exc}: "
                "which file Cilium's agents read of the ip-masq-agent ConfigMap "
                f"{self._api.agent_name} is not checked")[:1000])
        files = {_agent_file(p) for p in ([given] if given is not None else paths)}
        mounts = [self._mount_at(name, found, path)
                  for path in sorted(files or {DEFAULT_AGENT_FILE})]
        worst = min(mounts, key=lambda m: (m.unknown is None, not m.no_directory,
                                            m.unmounted is None))
        if worst.unknown is None and worst.unmounted is None:
            return attrs.evolve(self._pods_lagging(name, found, paths, by_node, pods),
                                copied=any(m.copied for m in mounts))
        return worst

    def _pods_lagging(self, name: str, found: Mapping[str, Any], paths: list[str | None],
                      by_node: _ByNode, pods: tuple[dict[str, Any], ...] | None) -> _Mount:
        """Why the pods of the DaemonSet ``name`` (JSON ``found``) that run an older
        template than its own, where its status says there are some (:func:`pods_lag`), do
        not read the file (``unmounted`` None: they do, or none lag), and whether one of them has no
        directory for it (its container, restarted, reads ``cilium-config`` again with
        the pod's own spec: with the ip-masq-agent on, its agent exits). The template
        alone is judged otherwise: a pod still running one without the mount keeps
        Cilium's default list until it is replaced, whatever the template says. A pod's
        own spec is what its agent runs with (a restarted container too), its own
        ``--ip-masq-agent-config-path`` argument included, else the path of its own
        node (``by_node``, by its ``spec.nodeName``: :func:`pod_node`; the ip-masq-agent
        off there, it is not judged); ``paths``, every node's, where its node is not
        known (``by_node`` None, a node not listed, a pod not yet scheduled whose
        affinity names no one node): it may run on any of them. Listed only then (and
        carried in the result, for another judgement of the pass: ``pods``, listed
        already)."""
        if not pods_lag(found):
            return _Mount()
        where = f"DaemonSet {self._api.namespace}/{name}"
        pods = self._listed_pods(name, found, where) if pods is None else pods
        if pods is None:
            return _Mount()
        lagging, why, no_directory = [], "", False
        for pod in pods:
            name = str((pod.get("metadata") or {}).get("name"))
            node = pod_node(pod)
            here = (by_node[node] if by_node is not None and node is not None
                    and node in by_node else paths)
            if not here:
                continue  # the ip-masq-agent off on its node: its file is not read
            own = pod_as_daemonset(pod)  # its own spec, as the helpers read a DaemonSet's
            try:
                given = agent_config_path(own)
            except ValueError as exc:
                # Which file is not known: judged only where no path would be read (no
                # volume of the ConfigMap's key), else said, as the template's is.
                unreadable = agent_file_unreadable(
                    own, f"pod {self._api.namespace}/{name}",
                    self._api.agent_name, key=AGENT_CONFIG_KEY)
                if unreadable is not None:
                    lagging.append(name)
                    why = why or unreadable
                else:
                    self._api.warn(
                        f"the argument {CONFIG_PATH_FLAG} of pod {self._api.namespace}/{name}'s "
                        f"{AGENT_CONTAINER} container: {exc}: whether it reads the "
                        "ip-masq-agent file is not checked")
                continue
            files = {_agent_file(p) for p in ([given] if given is not None else here)}
            if "" in files:
                lagging.append(name)
                why = why or (f"pod {self._api.namespace}/{name} is given an empty "
                              f"{CONFIG_PATH_KEY}: its agent reads no file")
                continue
            for path in sorted(files or {DEFAULT_AGENT_FILE}):
                mounted, reason = agent_file_mounted(
                    own, f"pod {self._api.namespace}/{name}",
                    self._api.agent_name, key=AGENT_CONFIG_KEY, path=path)
                if mounted is False:
                    lagging.append(name)
                    why = why or reason
                    no_directory = no_directory or agent_directory_missing(
                        own, path)
                    break
        if not lagging:
            return _Mount(pods=pods)
        shown = ", ".join(sorted(lagging)[:5]) + (", ..." if len(lagging) > 5 else "")
        return _Mount(printable(
            f"{len(lagging)} pod(s) of {where} still run an older pod template than its own, "
            f"without the file ({shown}; they read it once replaced): {why}")[:1000],
            no_directory, pods=pods)

    def _listed_pods(self, name: str, found: Mapping[str, Any], where: str
                     ) -> tuple[dict[str, Any], ...] | None:
        """The pods of the DaemonSet ``name`` (JSON ``found``; ``where``), as listed (None:
        not to be listed, 403, or not found, 404: a warning)."""
        try:
            return tuple(self._api.daemonset_pods(found, name))
        except KubeApiError as exc:
            if exc.status not in (403, 404):
                raise
            self._api.warn(f"{exc}: whether the pods of {where} that run an older pod "
                           "template have the ip-masq-agent file is not checked")
            return None

    def _mount_at(self, name: str, found: Mapping[str, Any], path: str) -> _Mount:
        """:meth:`_mount` of the DaemonSet ``name`` (JSON ``found``) for the agent's file
        at ``path``."""
        if not path:  # no file: nothing mounted is read, and the agent starts
            return _Mount(
                f"Cilium's agents are given an empty {CONFIG_PATH_KEY} (DaemonSet "
                f"{self._api.namespace}/{name}'s {CONFIG_PATH_FLAG} argument, "
                f"a CiliumNodeConfig's or {self._where()}'s key): they read no file, "
                f"whatever the ConfigMap {self._api.agent_name} says")
        mounted, why = agent_file_mounted(
            found, f"DaemonSet {self._api.namespace}/{name}", self._api.agent_name,
            key=AGENT_CONFIG_KEY, path=path)
        if mounted is None:
            return _Mount(unknown=why)
        if mounted is not False:
            return _Mount(copied=agent_file_copied(found, self._api.agent_name,
                                                   key=AGENT_CONFIG_KEY, path=path))
        # Mount paths are the cluster's text: one printable line in the plan's reasons.
        return _Mount(printable(why)[:1000], agent_directory_missing(found, path))

    def restart_needed(self, change: Change) -> str | tuple[str, ...] | None:
        """What must restart for ``change`` to take effect: Cilium's agent DaemonSet (and
        each other one running a ``cilium-agent`` the last :meth:`observe` found)
        when it changes keys of ``cilium-config`` (read when an agent starts); ``None``
        for the ip-masq-agent file alone, which the agent reads again when the kubelet
        updates it (``pkg/ipmasq`` watches its directory), unless the last
        :meth:`observe` found it mounted through ``subPath`` only: a copy the kubelet does
        not update, read again only when the agents restart. A key the ``cilium-agent``
        container sets by flag or variable (as the last :meth:`observe` read them) is not
        counted: the agent takes that over ``cilium-config``, before and after, so no
        restart changes what it runs with. Where those flags spare a key the change
        gives another value, they are read again (:meth:`_options_now`): a flag dropped
        since leaves the agents to read ``cilium-config`` at their next start."""
        before, after = (c.settings if isinstance(c, CiliumConfig) else {}
                         for c in (change.before, change.after))
        overridden = self._overridden_now(
            {k for k in {*before, *after} if before.get(k) != after.get(k)}, self._options)

        def settings(obj: object) -> dict[str, Any]:
            return ({k: v for k, v in obj.settings.items() if k not in overridden}
                    if isinstance(obj, CiliumConfig) else {})

        def agent(obj: object) -> Any:
            return obj.ip_masq_agent if isinstance(obj, CiliumConfig) else None
        if settings(change.before) == settings(change.after) and not (
                self._file_copied and agent(change.before) != agent(change.after)):
            return None
        # Every DaemonSet running a cilium-agent the observe found whose agents read
        # cilium-config; each one's where the ip-masq-agent file's subPath copy changes.
        others = (self._agents if self._file_copied and agent(change.before) != agent(
            change.after) else self._readers)
        if others:
            return tuple(f"DaemonSet {self._api.namespace}/{name}"
                         for name in (self._daemonset, *others))
        return f"DaemonSet {self._api.namespace}/{self._daemonset}"

    def _reads_config(self, daemonset: dict[str, Any] | Mapping[str, Any]) -> bool:
        """Whether the pods of ``daemonset`` (JSON) run Cilium's agent
        (:func:`~k3snet.backends.cilium_mount.runs_agent`) reading ``cilium-config``: its
        config init container's ``--source`` names it, or it has none (Helm's before
        ``build-config``: the ConfigMap's volume), or which is not known, or its agent
        container takes a variable from it (read at the container's start). A copy for a
        node pool reading its own ConfigMap alone awaits no restart for a change of
        ``cilium-config``."""
        if not runs_agent(daemonset):
            return False
        sources = config_sources(daemonset, self._api.namespace)
        return not isinstance(sources, ConfigSources) or (
            "config-map", self._api.namespace, self._api.config_name) in sources.sources or (
            agent_env_reads(daemonset, self._api.config_name))

    # ------------------------------------------------------------ disruptive changes

    def disruptive(self, change: Change) -> str | None:
        """Why ``change`` disturbs running pods (one line), or ``None``.

        A change is disruptive when it gives ``routing-mode``, ``tunnel-protocol``,
        a native-routing CIDR or ``enable-bpf-masquerade`` a value other than the
        one Cilium runs with now (reads the ConfigMap). A key the ``cilium-agent``
        container sets by flag or variable (as the DaemonSets hold them now: read again,
        not as the last :meth:`observe` read them) is not: the agent reads that over
        ``cilium-config``, before and after.
        """
        read = self._read()
        if read.config is None:
            return None
        options, unread = self._options_now()
        return self._disruptive(change, attrs.evolve(read, options=options), unread=unread)

    def _overridden_now(self, changed: Iterable[str], options: Iterable[CiliumAgentOption],
                        now: Callable[[], _OptionsNow] | None = None) -> set[str]:
        """The keys the ``cilium-agent`` container sets by flag or variable, by
        ``options`` (an observe's, maybe seconds old), unless they spare one of the keys
        ``changed``: then as the DaemonSets hold them now (:meth:`_options_now`; none where
        the named one is not to be read, every key then awaiting a restart; ``now``: that
        read, made once for a whole check or apply)."""
        given = {o.key for o in options}
        if given.isdisjoint(changed):
            return given
        return {o.key for o in (now or self._options_now)()[0]}

    def _options_now(self) -> _OptionsNow:
        """The keys the ``cilium-agent`` container sets by flag or variable, as the
        DaemonSets hold them now (:meth:`_agent_options`; none where the named one is not
        to be read: ``cilium-config`` judges every key, as :meth:`_judged` does), and why
        the named one was not read (None: it was), which a refusal judged so says."""
        daemonset, failed = self._read_daemonset()
        if failed is not None or not isinstance(daemonset, Mapping):
            # daemonset's text goes on to say what it means for the mount: cut there.
            why = str(failed) if failed is not None else str(daemonset).partition(
                ": whether")[0]
            return (), printable(f"{why}: the cilium-agent container's flags and variables "
                                 "could not be read again, so cilium-config's value is "
                                 "judged")[:1000]
        return self._agent_options(daemonset, self._api.agent_daemonsets(self._daemonset)), None

    def _disruptive(self, change: Change, read: _Read, *,
                    options_now: Callable[[], _OptionsNow] | None = None,
                    unread: str | None = None) -> str | None:
        """:meth:`disruptive` judged by ``read`` (its ConfigMap and its agent options).
        ``options_now`` (the DaemonSets' options as they are now: :meth:`_options_now`): a
        disruptive key the options (observe's, maybe seconds old) exempt is judged by
        them: a flag dropped since leaves the agents to read ``cilium-config`` at their
        next start. ``unread`` (or that read's failure): why the options are not known
        now, said with the reason."""
        assert read.config is not None
        current = read.config.data
        record, _ = self._records(read)
        wanted: dict[str, str | None] = {}
        before, after = change.before, change.after
        if isinstance(before, CiliumConfig):  # keys given back get their previous values
            for key in before.settings:
                wanted[key] = (record or {}).get(key)
        if isinstance(after, CiliumConfig):
            wanted.update({k: str(after.settings[k]) for k in after.settings})
        # A key the agent container sets itself: cilium-config's value changes nothing
        # the agent runs with (a write giving it another value is a conflict of the plan).
        given = {o.key for o in read.options}
        if options_now is not None and any(k in wanted and k in given
                                           for k in CILIUM_DISRUPTIVE_KEYS):
            options, unread = options_now()
            given = {o.key for o in options}
        for key in [k for k in CILIUM_DISRUPTIVE_KEYS if k in wanted and k not in given]:
            value = wanted[key]
            now = current.get(key, CILIUM_DEFAULTS.get(key, ""))
            new = value if value is not None else CILIUM_DEFAULTS.get(key, "")
            probe = CiliumConfig(self.target, settings={key: new} if new else {})
            if not probe.met_by(CiliumConfig(self.target, settings={key: now} if now else {})):
                return f"{CILIUM_DISRUPTIVE_KEYS[key]} ({key}: {now or '(unset)'} -> " \
                       f"{new or '(unset)'})" + (f" ({unread})" if unread else "")
        return None

    # ------------------------------------------------------------ check and apply

    def check(self, plan: Plan) -> tuple[str, ...]:
        """Problems applying ``plan`` would hit; nothing is written."""
        try:
            ensure_capable(self, plan)
            if plan.changes:
                self._edit(self._read_for_apply(), plan)
        except (PlanError, BackendError) as exc:
            return (str(exc),)
        return ()

    def apply(self, plan: Plan) -> ApplyResult:
        """Apply every change (at most two writes, the second undone-with the first), or nothing."""
        ensure_capable(self, plan)
        if not plan.changes:
            return ApplyResult(self.name, (), operations=0)
        self._stamp = self._next_stamp = None  # known again once the writes are made
        self._settled.forget()  # a stamp written in the same second is another one
        read = self._read_for_apply()
        edit = self._edit(read, plan)
        fail_at = self.faults.take(plan)
        undo = Compensation(self.name, where=self._where())
        unanswered: list[Callable[[], object]] = []
        steps = self._steps(read, edit, unanswered)
        operations = 2
        if fail_at is not None and not steps:
            undo.fail(plan.changes[fail_at], "injected failure (fault hook)")
        # An interruption (SIGTERM's SystemExit in `k3snet apply`, Ctrl-C) during the
        # second write takes the first back too.
        with undo.guarding():
            for index, step in enumerate(steps):
                if fail_at is not None and index == len(steps) - 1:
                    # Fail as the API server would refuse the last write: the first is undone.
                    undo.fail(plan.changes[fail_at], "injected failure (fault hook)")
                recorded = False
                try:
                    reverse = step()
                    undo.record(plan.changes if index == 0 else (), reverse)
                    recorded = True
                except WriteLanded as landed:
                    unanswered.clear()
                    undo.record(plan.changes if index == 0 else (), landed.undo)
                    undo.fail(plan.changes[-1], str(landed.error), landed.error)
                except K3snetError as exc:
                    unanswered.clear()
                    undo.fail(plan.changes[-1], str(exc), exc)
                except BaseException:
                    # Interrupted with the write sent and its answer unread, or answered
                    # and its own undo not kept yet: its undo reads what is there (it
                    # was left, exit 143 saying it was taken back).
                    if not recorded:  # (its own kept: no second undo)
                        for number, take_back in enumerate(unanswered):
                            undo.record(plan.changes if index == number == 0 else (),
                                        take_back)
                    unanswered.clear()
                    raise
                unanswered.clear()
                operations += 1
        self._stamp = self._next_stamp
        return ApplyResult(self.name, plan.changes, operations=operations)

    def _read_for_apply(self) -> _Read:
        """The two ConfigMaps as :meth:`observe` read them right before (every write
        carries the resourceVersion read: a change since gives 409), else read again,
        with the DaemonSets, sources and CiliumNodeConfigs as observe reads them
        (:meth:`_judged`): check and apply judge alike on either path."""
        try:
            read = self._observed.take()
            if read is None:
                self._api.forget(pass_=False)
                read = self._read()
                if read.config is not None:  # judged as observe judges it (_judged)
                    read = self._judged(read, self._owned(read))[0]
        except BackendError as exc:
            raise _nothing_changed(exc) from exc
        if read.config is None:
            raise ApplyError(f"{self._where()} does not exist; k3snet changes keys of an "
                             "existing Cilium config, it does not create one")
        return read

    def _edit(self, read: _Read, plan: Plan) -> _Edit:
        """What to write for every change (PlanError if one does not fit)."""
        assert read.config is not None
        owned = self._owned(read)
        config_record, agent_record = self._records(read)
        data = dict(read.config.data)
        agent_text = None if read.agent is None else read.agent.data.get(AGENT_CONFIG_KEY)
        members = _parse_agent(agent_text, self._where(agent=True))
        new_members = None if members is None else dict(members)
        problems: list[str] = []
        # The DaemonSets read again at most once for every change and the stamp (apply).
        now = functools.cache(self._options_now)
        for change in plan.changes:
            subject = change.subject
            if not isinstance(subject, CiliumConfig):
                raise PlanError(f"cilium backend: cannot apply {change}: not a Cilium config")
            if subject.target != self.target:
                raise PlanError(f"cilium backend manages {self.target}; the plan changes "
                                f"{subject.target}")
            if change.action == "add" and owned is not None:
                raise PlanError(f"cannot add {subject}: k3snet already owns settings of "
                                f"{self.target} ({owned}); observe and plan again")
            if change.action != "add" and (owned is None or owned != change.before):
                found = "no settings owned by k3snet" if owned is None else str(owned)
                raise PlanError(f"cannot {change.action} {change.before}: k3snet does not own "
                                f"it, found {found}; k3snet never changes keys it did not set")
            after = change.after
            if isinstance(after, CiliumConfig):
                problems += [p for k in after.settings
                             if (p := setting_problem(k, after.settings[k])) is not None]
            problems += self._not_taken(after, read.sources, read.daemonset)
            reason = (self._disruptive(change, read, options_now=now)
                      if not self.allow_disruptive else None)
            if reason is not None:
                problems.append(f"{reason}; k3snet refuses a disruptive change unless it is "
                                f"allowed: {ALLOW_DISRUPTIVE_HINT}")
            config_record = self._edit_config(data, config_record, change)
            new_members, agent_record = self._edit_agent(new_members, agent_record, change,
                                                         agent_text, read.agent is not None)
            owned = after if isinstance(after, CiliumConfig) else None
        problems += self._startup_problems(read.config.data, data, self._mount_after(read, data),
                                           read.options)
        if problems:
            raise PlanError("cilium backend refuses the plan, nothing was changed:\n  "
                            + "\n  ".join(problems))
        changed = {k: data.get(k) for k in {*data, *read.config.data}
                   if data.get(k) != read.config.data.get(k)}
        return _Edit(changed, config_record, *self._agent_outcome(
            read, agent_text, members, new_members, agent_record), options_now=now)

    def _not_taken(self, after: object, sources: ConfigSources | None,
                   daemonset: Mapping[str, Any] | None = None) -> list[str]:
        """The keys ``after`` has k3snet write into ``cilium-config`` that the named
        DaemonSet's ``config`` init container (``sources``, as observe read it) does not
        take from there: the write would have no effect. One its agent container's
        variable takes from that very key (:meth:`_follows_config`) is taken all the same:
        the variable is laid over the config directory."""
        if sources is None or not isinstance(after, CiliumConfig):
            return []
        namespace, configmap = self._api.namespace, self._api.config_name
        follows = (self._follows_config(daemonset, after.settings) if daemonset is not None
                   else frozenset())
        # why quotes the DaemonSet's flags, the cluster's text: one printable line, cut.
        where = f"DaemonSet {namespace}/{self._daemonset}"
        problems = [f"{key}: k3snet writes it into {self._where()}, which "
                    f"{_builder(where, sources)} does not take from there "
                    f"({printable(why)[:500]}): the write would have no effect"
                    for key in after.settings if key not in follows
                    and (why := sources.dropped(namespace, configmap, key)) is not None]
        for key in after.settings:
            if key not in follows and sources.dropped(namespace, configmap, key) is None:
                problems += self._laid_over(key, str(after.settings[key]), sources, where)
        return problems

    def _laid_over(self, key: str, value: str, sources: ConfigSources, where: str
                   ) -> list[str]:
        """Why writing ``key`` = ``value`` into ``cilium-config`` has no effect where the
        named DaemonSet's ``config`` init container (``sources``; ``where``) lays a
        ``config-map:`` source after it over it, that ConfigMap holding the key (its
        filter keeping it) with another value as the agent reads it (trimmed, as it reads
        its files; a boolean as Go's ParseBool, a CIDR masked: :func:`same_setting`):
        the resolver lays each source over the ones before, the last holding a key
        deciding (:meth:`ConfigSources.configmaps_after`). One not to be read is a
        warning: its value is not known."""
        namespace, configmap = self._api.namespace, self._api.config_name
        for at, other in sources.configmaps_after(namespace, configmap, key):
            data = self._api.foreign_data(at, other, f"a --source of {where}'s config init "
                                          "container, after cilium-config")
            if isinstance(data, str):
                self._api.warn(printable(
                    f"{data}: whether it sets {key} over {self._where()}, where k3snet "
                    "writes it, is not known")[:1000])
                return []
            if data is not None and key in data:
                if same_setting(key, value.strip(), data[key].strip()):
                    return []  # the agents run with the value asked for all the same
                return [printable(
                    f"{key}: k3snet writes it into {self._where()}, over which "
                    f"{_builder(where, sources)} lays the ConfigMap {at}/{other} (after it "
                    f"in --source: {sources.given}), holding {key}={data[key].strip()}: the "
                    "write would have no effect")[:1000]]
        return []

    def _follows_config(self, daemonset: Mapping[str, Any], keys: Iterable[str],
                        holds: frozenset[str] | None = None) -> frozenset[str]:
        """The keys of ``keys`` the ``cilium-agent`` container of ``daemonset`` (JSON) takes
        by its variable (no flag) from a ``configMapKeyRef`` to that same key of
        ``cilium-config``: the kubelet sets it to the value there at each start of the
        container, and viper lays a variable over the config directory, so the agents
        take ``cilium-config``'s value whatever their ``config`` init container takes
        (:func:`~k3snet.backends.cilium_mount.config_sources`) and whatever
        CiliumNodeConfig selects their node. ``holds``: the keys ``cilium-config`` holds
        (its own and those k3snet writes), where known: an ``optional`` ref to a key not
        among them sets no variable, and the config directory decides."""
        follows = set()
        for key, option in agent_options(daemonset, tuple(keys)).items():
            ref = (variable_configmap_ref(daemonset, option.given[1:])
                   if option.value is None and option.given.startswith("$") else None)
            if ref is not None and (ref.name, ref.key) == (self._api.config_name, key) and (
                    holds is None or not ref.optional or key in holds):
                follows.add(key)
        return frozenset(follows)

    def _mount_after(self, read: _Read, after: Mapping[str, str]) -> _Mount:
        """The DaemonSet's mount as far as an edit leaving ``after`` in ``cilium-config``
        needs it: read (unless :meth:`observe` did) only where the edit turns the
        ip-masq-agent on, whose refusal with nothing at ``/etc/config`` depends on it
        (:meth:`_startup_problems`); one already on was judged before."""
        assert read.config is not None

        def on(data: Mapping[str, str]) -> bool:
            return read_go_flag(str(data.get("enable-ip-masq-agent") or "false"))
        if not on(after) or on(read.config.data):
            return read.mount or _Mount()
        # The edit turns it on where cilium-config's switch is read, at cilium-config's
        # file or a CiliumNodeConfig's (one setting the file alone): the template is judged
        # by every file a group of nodes reads then, each node's older pods by its own, and
        # a pod whose node is not known by every one, as it may run on any. The DaemonSet
        # (and its pods, the CiliumNodeConfigs and Nodes) observe read serves; read again,
        # the CiliumNodeConfigs and Nodes are listed again too (else every older pod would
        # be judged by cilium-config's file, whatever its node reads).
        read_already = next((m for m in (read.ahead, read.mount)
                             if m is not None and m.daemonset is not None), None)
        try:  # a failed read (500, a timeout) is raised: it cannot tell, nothing is written
            nodes = self._nodes(read.sources) if read.nodes is None else read.nodes
            paths = self._paths_after(after, nodes, read.options)
            if not paths:  # a CiliumNodeConfig turns it off on every node: no file is read
                return read.mount or _Mount()
            asked = {_agent_file(p) for p in paths}
            for mount in (read.mount, read.ahead):
                if mount is not None and mount.daemonset is None and asked <= mount.asked:
                    return mount  # not found, or not to be read: its warning given
            mount = self._mount(paths, read.daemonset if read_already is None
                                else read_already.daemonset,
                                by_node=nodes.files(self._settings(after, read.options)),
                                pods=None if read_already is None else read_already.pods,
                                others=read.others, labels=nodes.labels)
        except BackendError as exc:
            raise _nothing_changed(exc) from exc
        mount.warn_if(True, self._api.warn)
        return mount

    def _paths_after(self, after: Mapping[str, str], nodes: _Nodes,
                     options: Iterable[CiliumAgentOption] = ()) -> set[str | None]:
        """:func:`_agent_paths` with ``after`` in ``cilium-config`` and the CiliumNodeConfigs
        of ``nodes`` laid over it, the groups of nodes as observe forms them: every file an
        agent reads once an edit leaving ``after`` is made."""
        found = list(nodes.overrides)
        return _agent_paths(attrs.evolve(
            self._settings(after, options), node_overrides=[o for o, _ in found],
            node_groups=_node_groups(found, nodes.agent_labels, self._api.warn)))

    def _settings(self, data: Mapping[str, str],
                  options: Iterable[CiliumAgentOption] = ()) -> CiliumConfig:
        """``cilium-config`` holding ``data``: the keys k3snet models (``options``: the
        agent container's flags and variables over them)."""
        known = (*CILIUM_KEYS, *CILIUM_CONTEXT_KEYS)
        return CiliumConfig(self.target, settings={
            k: v for k, v in data.items() if k in known and isinstance(v, str)},
            agent_options=options)

    def _startup_problems(self, before: dict[str, str], after: dict[str, str],
                          mount: _Mount, options: Iterable[CiliumAgentOption] = ()
                          ) -> list[str]:
        """The combinations of ``after`` the Cilium agent refuses to start with that
        ``before`` did not have (a config already refused is not k3snet's to judge), the
        DaemonSet's ``mount`` of the ip-masq-agent ConfigMap with them."""
        def problems(data: dict[str, str]) -> list[str]:
            return startup_problems(attrs.evolve(
                self._settings(data, options), ip_masq_agent_unmounted=mount.unmounted,
                ip_masq_agent_no_directory=mount.no_directory))

        had = problems(before)
        return [f"{problem}: every Cilium agent would refuse to start with it (and restart "
                f"for ever, pods without network on its node); {self._where()} is left as "
                "it is" for problem in problems(after) if problem not in had]

    @staticmethod
    def _edit_config(data: dict[str, str], record: dict[str, str | None] | None,
                     change: Change) -> dict[str, str | None] | None:
        after = change.after
        wanted = after.settings.to_dict() if isinstance(after, CiliumConfig) else {}
        record = dict(record or {})
        for key in [k for k in record if k not in wanted]:  # keys given back
            previous = record.pop(key)
            if previous is None:
                data.pop(key, None)
            else:
                data[key] = previous
        for key, value in wanted.items():
            if key not in record:
                record[key] = data.get(key)
            data[key] = value
        # An owned config without keys is still k3snet's (an empty record), until deleted.
        return record if isinstance(after, CiliumConfig) else None

    def _edit_agent(self, members: dict[str, Any] | None, record: _AgentRecord | None,
                    change: Change, text: str | None, exists: bool
                    ) -> tuple[dict[str, Any] | None, _AgentRecord | None]:
        after = change.after
        wanted = (after.ip_masq_agent.to_dict()
                  if isinstance(after, CiliumConfig) and after.ip_masq_agent is not None else {})
        if record is None and not wanted:
            return members, None
        if record is None:
            record = _AgentRecord({}, text, created=not exists)
        keys = dict(record.keys)
        doc = dict(members or {})
        if wanted and members is None and "nonMasqueradeCIDRs" not in wanted:
            raise PlanError(f"cannot set {', '.join(wanted)} in {self._where(agent=True)}: "
                            "its config is empty, so Cilium uses its default non-masquerade "
                            "CIDRs, and a file without nonMasqueradeCIDRs has none; give "
                            "cni.cilium.nonMasqueradeCIDRs too")
        fields = _agent_fields(doc, self._where(agent=True)) or {}
        for key in [k for k in keys if k not in wanted]:
            previous = keys.pop(key)
            if previous is None:
                for spelled in [k for k in doc if _canonical_agent_key(k) == key]:
                    del doc[spelled]
            else:
                _set_member(doc, key, previous)
        for key, value in wanted.items():
            if key not in keys:
                keys[key] = fields.get(key)
            _set_member(doc, key, value)
        if (keys and "nonMasqueradeCIDRs" not in keys
                and "nonMasqueradeCIDRs" not in (_agent_fields(doc, self._where(True)) or {})
                and not _parse_agent(record.text, self._where(agent=True))):
            raise PlanError(f"cannot leave {', '.join(keys)} alone in "
                            f"{self._where(agent=True)}: its config was empty, so Cilium used "
                            "its default non-masquerade CIDRs, and a file without "
                            "nonMasqueradeCIDRs has none; keep cni.cilium.nonMasqueradeCIDRs")
        return doc, attrs.evolve(record, keys=keys)

    def _agent_outcome(self, read: _Read, text: str | None, members: dict[str, Any] | None,
                       doc: dict[str, Any] | None, record: _AgentRecord | None
                       ) -> tuple[str | None, _AgentRecord | None, str]:
        before = None if read.agent is None else _agent_record(read.agent.owned,
                                                                self._where(agent=True))
        if record is None or (not record.keys and before is None):
            return None, None, ""
        if not record.keys:  # k3snet gives its last key back
            previous = _parse_agent(record.text, self._where(agent=True))
            if doc == members:
                # Nothing of k3snet's left in it (every key it wrote was set by someone
                # else since): their text stays as it is, only the records go.
                return text, None, "patch"
            if record.created and not doc:
                return None, None, "delete"
            if _effective(previous or {}) == _effective(doc or {}):
                # The exact text found (None: the key was absent), byte for byte.
                return record.text, None, "patch"
            return _dump_agent(doc or {}, text), None, "patch"
        new_text = text if doc == members else _dump_agent(doc or {}, text)
        return new_text, record, "create" if read.agent is None else "patch"

    def _steps(self, read: _Read, edit: _Edit,
               unanswered: list[Callable[[], object]]) -> list[Any]:
        """The writes, in order, each returning the callable that takes it back; one
        interrupted with its answer unread appends to ``unanswered`` the callable that
        reads what is there and takes the write back when it was made
        (:func:`_answered`)."""
        assert read.config is not None
        config = read.config
        api = self._api
        steps = []
        old_record = config.owned
        new_record = None if edit.config_record is None else json.dumps(edit.config_record,
                                                                        sort_keys=True)
        after = {k: v for k, v in {**config.data, **edit.config_data}.items() if v is not None}
        new_written = None if edit.config_record is None else json.dumps(
            {k: after.get(k) for k in edit.config_record}, sort_keys=True)
        # Data the agents read only when they start: its change awaits their restart,
        # stamped on cilium-config (the agents' ConfigMap) whatever wrote it: its keys,
        # given back too (a destroy), or the ip-masq-agent file where the agents have a
        # subPath copy of it, which the kubelet never updates. The stamp stays after
        # k3snet's last key: the restart a destroy needs is followed too.
        agent = read.agent
        agent_text = None if agent is None else agent.data.get(AGENT_CONFIG_KEY)
        agent_changes = edit.agent_action in ("create", "delete") or (
            edit.agent_action == "patch" and edit.agent_text != agent_text)
        # A key the agent container sets by flag or variable is not read from
        # cilium-config: its change awaits no restart (the flags the observe before read,
        # read again where they spare a key written: a flag dropped since).
        overridden = self._overridden_now(
            [k for k, v in edit.config_data.items() if config.data.get(k) != v], read.options,
            edit.options_now)
        # With the stamp, the server's time before the write at its earliest: an undo
        # stamps itself where a pod was made since (the stamp may be after the landing).
        changed_at, since = ((self._api.clock.stamp(),), self._api.clock.earliest()) if (
            any(config.data.get(k) != v for k, v in edit.config_data.items()
                if k not in overridden)
            or (self._file_copied and agent_changes)) else (None, None)
        self._next_stamp = changed_at if changed_at is not None else (config.changed_at,)
        stamp_back = None if changed_at is None else (config.changed_at,)  # for an undo
        if (edit.config_data or new_record != old_record or new_written != config.written
                or changed_at is not None):
            def write_config() -> Any:
                back = {k: config.data.get(k) for k in edit.config_data}
                left = _Keys(edit.config_data, new_record, new_written, changed_at)
                # Landed, its stamp's move refused: taken back, as after a later write
                # refused (the stamp before the landing is not the safe side).
                version = taking_back(lambda: _answered(
                    lambda: api.patch(api.config_name, config.version, edit.config_data,
                                      new_record, True, written=(new_written,),
                                      changed_at=changed_at, landing=True),
                    unanswered, lambda: api.take_back_unanswered(
                        api.config_name, edit.config_data, new_record, new_written,
                        lambda found: api.patch_back(api.config_name, found, back,
                                                     old_record, config.written, left=left,
                                                     changed_at=stamp_back, since=since))),
                    lambda landed: api.patch_back(api.config_name, landed, back, old_record,
                                                  config.written, left=left,
                                                  changed_at=stamp_back, since=since))
                left = self._landed(left)
                return lambda: api.patch_back(api.config_name, version, back, old_record,
                                              config.written, left=left,
                                              changed_at=stamp_back, since=since)
            steps.append(write_config)
        agent_written = self._agent_written(edit)
        if edit.agent_action == "create":
            text = edit.agent_text if edit.agent_text is not None else ""
            assert edit.agent_record is not None

            def create_agent() -> Any:
                owned = edit.agent_record.dump()  # type: ignore[union-attr]
                version = _answered(
                    lambda: api.create(api.agent_name, {AGENT_CONFIG_KEY: text}, owned,
                                       agent_written),
                    unanswered, lambda: api.take_back_unanswered(
                        api.agent_name, {AGENT_CONFIG_KEY: text}, owned, agent_written,
                        lambda found: api.delete(api.agent_name, found)))
                return lambda: api.delete(api.agent_name, version)
            steps.append(create_agent)
        elif edit.agent_action == "delete":
            assert agent is not None

            def delete_agent() -> Any:
                _answered(lambda: api.delete(api.agent_name, agent.version), unanswered,
                          lambda: api.put_back_unanswered(api.agent_name, agent))
                return None  # the last step: never undone
            steps.append(delete_agent)
        elif edit.agent_action == "patch":
            assert agent is not None
            agent_owned = None if edit.agent_record is None else edit.agent_record.dump()
            data: dict[str, str | None] = {}
            if edit.agent_text != agent.data.get(AGENT_CONFIG_KEY):
                data[AGENT_CONFIG_KEY] = edit.agent_text
            records = agent_owned != agent.owned or agent_written != agent.written
            if data or records:
                def patch_agent() -> Any:
                    back = {AGENT_CONFIG_KEY: agent.data.get(AGENT_CONFIG_KEY)}
                    # (Records unchanged are the ones read: agent_owned, agent_written.)
                    left = _Keys({**back, **data}, agent_owned, agent_written)
                    version = _answered(
                        lambda: api.patch(api.agent_name, agent.version, data,
                                          agent_owned, records, written=(agent_written,)),
                        unanswered, lambda: api.take_back_unanswered(
                            api.agent_name, data, agent_owned, agent_written,
                            lambda found: api.patch_back(api.agent_name, found, back,
                                                         agent.owned, agent.written, left=left)))
                    return lambda: api.patch_back(api.agent_name, version, back,
                                                  agent.owned, agent.written, left=left)
                steps.append(patch_agent)
        return steps

    def _landed(self, left: _Keys) -> _Keys:
        """``left`` (what the ``cilium-config`` write left) with the stamp it left: moved
        to the write's landing where that was in a later second (:attr:`_Api.landed`).
        :meth:`pending_restarts` after the apply reads the stamp the ConfigMap holds: a
        later writer's stamp found before the move is left (not moved over), and the
        stamp k3snet sent, before its write's landing, counted a pod made in between as
        restarted in the apply's own answer."""
        if left.changed_at is None:
            return left
        self._next_stamp = None  # read again: the stamp the ConfigMap holds
        return attrs.evolve(left, changed_at=(self._api.landed,))

    def _agent_written(self, edit: _Edit) -> str | None:
        """The ip-masq-agent ConfigMap's WRITTEN_ANNOTATION after ``edit``: each key of
        its record with the value the new text gives it (None: no record)."""
        if edit.agent_record is None:
            return None
        where = self._where(agent=True)
        now = _field_texts(_agent_fields(_parse_agent(edit.agent_text or "", where), where))
        return json.dumps({k: now.get(k) for k in edit.agent_record.keys}, sort_keys=True)

    def pending_restarts(self) -> tuple[PendingRestart, ...]:
        """The Cilium agents still running since before k3snet last changed
        ``cilium-config`` (read once, when an agent starts): one
        :class:`~k3snet.backends.PendingRestart` per DaemonSet with such pods, none
        once all restarted; the stamp stays after k3snet's last key (a destroy gives
        settings back, read at start too). The ip-masq-agent ConfigMap needs no restart
        where the agent watches its file, which the kubelet updates within about a
        minute; mounted through ``subPath`` (a copy never updated) its change is stamped
        on ``cilium-config`` too."""
        # What the observe read or the apply wrote just before, once; read otherwise.
        known, self._stamp = self._stamp, None
        if known is None:
            config = self._api.read(self._api.config_name)
            known = (None if config is None else config.changed_at,)
        if known[0] is None:
            return ()
        changed = None
        if self._file_copied:  # the stamp may be the ip-masq-agent file's change
            changed = (f"{self._where()} (or {self._where(agent=True)}, which the agents "
                       "mount through subPath)")
        return pending_restarts(
            self._api.core.api_client, self._api.namespace, self._api.config_name,
            {CHANGED_ANNOTATION: known[0]},
            reason="Cilium's agents read it when they start",
            known=(self._daemonset, *(self._agents if self._file_copied else self._readers)),
            timeout=self._api.timeout, settled=self._settled, changed=changed,
            now=self._api.clock.now(), reads=runs_agent if self._file_copied
            else self._reads_config,
            hint=(f"name Cilium's DaemonSet with the backend's daemonset option "
                  f"(--backend-opt cilium.daemonset=NAME; now {self._daemonset!r})"))

    def close(self) -> None:
        """Release the API client if this backend built it (idempotent)."""
        if self._owns_client and self._client is not None:
            self._client.close()
            self._client = None
        super().close()
