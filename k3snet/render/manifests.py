"""Kubernetes manifests rendered from a spec (``k3snet render manifests -f SPEC``).

:func:`render_manifests` turns a :class:`~k3snet.spec.Spec` into plain dicts,
one per Kubernetes object, and :func:`dump_manifests` writes them as one
multi-document YAML stream for ``kubectl apply -f -``::

    from k3snet import seed_spec
    from k3snet.render.manifests import dump_manifests, render_manifests

    print(dump_manifests(render_manifests(seed_spec())))

What is rendered, each object labelled ``app.kubernetes.io/name: k3snet`` and
``app.kubernetes.io/managed-by: k3snet``:

* always: the agent -- a ServiceAccount, the ``k3snet-spec`` ConfigMap holding the
  spec, and a DaemonSet running ``k3snet agent`` on every node (host network,
  ``NET_ADMIN`` for the node backends and ``NET_RAW`` for iptables only, not
  privileged, read-only root filesystem);
  RBAC only for what the spec's backends reach through the API (Calico IPPools,
  the flannel ConfigMap), and a Namespace when the agent's is not a built-in one
  (and ``agent.createNamespace`` is not false); with ``node_restriction``, a
  ValidatingAdmissionPolicy limiting the agent to its own node's objects;
* ``egressPolicy.restrict``: a NetworkPolicy allowing the selected pods egress to
  exactly the spec's destinations, and to cluster DNS when ``allowDNS``;
* ``dns``: K3s's ``coredns-custom`` ConfigMap forwarding each zone to its resolvers;
* ``connectivityTest``: a Job pinging the target and connecting to its TCP port,
  whose outcome :func:`read_connectivity_result` reads back.

Everything is deterministic: the same spec gives byte-identical YAML. Every
manifest validates with ``kubernetes-validate --strict`` for
:data:`OLDEST_KUBERNETES_VERSION`, :data:`NEWEST_KUBERNETES_VERSION` and every minor
version between (``tests/cluster/test_manifests.py``).
"""

from __future__ import annotations

import hashlib
import math
import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import attrs

from k3snet._yamltext import yaml_missing
from k3snet.errors import BackendError, Problem, SpecError
from k3snet.kube import DEFAULT_TIMEOUT, TERMINATION_GRACE, KubeErrors, label_selector_problem
from k3snet.model import printable
from k3snet.model.cidr import contains
from k3snet.model.cni import flannel_nftables_refusal, namespace_problem, object_name_problem
from k3snet.spec import ConnectivityTest, DnsZone, Spec, spec_backend_options, validate
from k3snet.spec.blockstyle import YAML12_NUMBER

__all__ = [
    "AGENT_NAME",
    "AGENT_PORT",
    "CONFIGMAP_MAX_BYTES",
    "CONNECTIVITY_CONTAINER",
    "CONNECTIVITY_JOB_NAME",
    "COREDNS_CUSTOM_NAME",
    "EGRESS_POLICY_NAME",
    "FLANNEL_CONFIGMAP_NAME",
    "LEASE_NAME",
    "MANAGED_BY_LABELS",
    "NEWEST_KUBERNETES_VERSION",
    "NODE_NAME_EXTRA",
    "NODE_RESTRICTION_NAME",
    "OLDEST_KUBERNETES_VERSION",
    "PROFILE_LABEL",
    "SPEC_CONFIGMAP_NAME",
    "SPEC_PATH",
    "ConnectivityResult",
    "agent_cpu_request",
    "agent_memory_limit",
    "agent_memory_request",
    "dump_manifests",
    "parse_connectivity_log",
    "read_connectivity_result",
    "render_manifests",
    "spec_excludes",
]

OLDEST_KUBERNETES_VERSION: Final = "1.25"
"""The oldest Kubernetes minor version the manifests are validated against.

The oldest schema set ``kubernetes-validate`` 1.37 still ships.
"""

NEWEST_KUBERNETES_VERSION: Final = "1.37"
"""The newest Kubernetes minor version the manifests are validated against."""

MANAGED_BY_LABELS: Final[Mapping[str, str]] = {
    "app.kubernetes.io/name": "k3snet",
    "app.kubernetes.io/managed-by": "k3snet",
}
"""Labels on every rendered object (select them with ``-l app.kubernetes.io/managed-by=k3snet``)."""

AGENT_NAME: Final = "k3snet-agent"
"""Name of the DaemonSet, its ServiceAccount and its RBAC objects."""

SPEC_CONFIGMAP_NAME: Final = "k3snet-spec"
"""The ConfigMap holding the spec YAML the agent reads."""

SPEC_PATH: Final = "/etc/k3snet/spec.yaml"
"""Where the agent container finds the spec (the ConfigMap, mounted read-only)."""

EGRESS_POLICY_NAME: Final = "k3snet-egress"
COREDNS_CUSTOM_NAME: Final = "coredns-custom"
"""K3s's CoreDNS imports ``*.server`` and ``*.override`` keys of this kube-system ConfigMap."""

CONNECTIVITY_JOB_NAME: Final = "k3snet-connectivity"
CONNECTIVITY_CONTAINER: Final = "connectivity"
FLANNEL_CONFIGMAP_NAME: Final = "kube-flannel-cfg"
"""Upstream flannel's ConfigMap (net-conf.json); K3s's embedded flannel reads a file instead."""

SPEC_HASH_ANNOTATION: Final = "k3snet.io/spec-sha256"
CONFIGMAP_MAX_BYTES: Final = 1024 * 1024
"""The most a ConfigMap may hold (its keys and values, in bytes): the API server refuses more."""

AGENT_PORT: Final = 9743
"""The agent's /healthz, /readyz and /metrics port (on the node: host network)."""
PROFILE_LABEL: Final = "k3snet.io/profile"
"""The node label choosing a per-node override (a profile); unlabelled nodes run the base spec."""
DEFAULT_PROFILE: Final = "default"
_ARCH_LABEL: Final = "kubernetes.io/arch"
"""The node label of its architecture: the DaemonSet runs where ``agent.architectures`` says."""
LEASE_NAME: Final = "k3snet-cluster-writer"
"""The Lease whose holder alone writes cluster-wide objects (Calico pools, flannel's ConfigMap)."""
LEASE_ROLE_NAME: Final = "k3snet-agent-lease"
REPORT_ROLE_NAME: Final = "k3snet-agent-node-report"
CANDIDATES_ROLE_NAME: Final = "k3snet-agent-lease-candidates"
NODE_RESTRICTION_NAME: Final = "k3snet-agent-node-restriction"
"""The ValidatingAdmissionPolicy (and its binding) of ``node_restriction=True``."""
NODE_NAME_EXTRA: Final = "authentication.kubernetes.io/node-name"
"""Where the API server puts the node of a pod-bound ServiceAccount token's pod
(``request.userInfo.extra``; Kubernetes 1.30+, KEP-4193)."""
# The agent's own Node annotations (k3snet.agent._report; render/ imports no agent code).
_REPORT_ANNOTATIONS: Final = ("k3snet.io/agent-status", "k3snet.io/agent-result")
_EVENT_NAMESPACE: Final = "default"
# Measured: see docs/agent.md ("Memory") for the figures and the command.
AGENT_MEMORY_REQUEST: Final = "128Mi"
"""The agent's memory request for a spec of up to 3,394 destinations (the least it gets:
:func:`agent_memory_request`)."""
AGENT_MEMORY_LIMIT: Final = "384Mi"
"""The agent's memory limit for a spec of up to 10,000 destinations (the least it gets:
:func:`agent_memory_limit`)."""
# A first pass with netlink and nftables (the heaviest backends measured) peaks linearly
# in the destinations: 57 MiB with none, 269 / 490 / 708 MiB at 10,000 / 20,000 / 30,000
# (docs/agent.md, "Memory"). The line through the two largest, with 40 % headroom as
# the 384 Mi has at 10,000, rounded up to 64 Mi.
_AGENT_PEAK_MIB: Final = 54.0
_AGENT_PEAK_MIB_PER_DESTINATION: Final = 0.0218
# Each exclusion from NAT (spec_excludes) adds 1.7 to 1.9 KiB to that peak (1,000 / 2,000
# / 4,000 destinations with 16 / 10 / 10 excludes each: +28 / +34 / +74 MiB; docs/agent.md).
_AGENT_PEAK_MIB_PER_EXCLUDE: Final = 0.0019
_AGENT_MEMORY_HEADROOM: Final = 1.4
_AGENT_MEMORY_STEP_MIB: Final = 64
AGENT_CPU_REQUEST: Final = "10m"
"""The agent's CPU request for a small spec (the least it gets: :func:`agent_cpu_request`)."""
# CPU seconds of a first pass with netlink and nftables onto an empty node, the
# interpreter's start included: 1.0 with no destination, 1.7 / 6.1 / 10.2 at 2,000 /
# 10,000 / 20,000 (docs/agent.md, "Memory"); the line through none and 10,000, above
# the other two. Excludes (a NAT rule's exclusions) cost apart: 1,000 destinations took
# 1.4 s more with 10 excludes each than with none (netlink and iptables, the heavier
# backend there; nftables 0.7 to 1.0 s), the line through none and 10,000 again.
_AGENT_FIRST_PASS_CPU_S: Final = 1.03
_AGENT_FIRST_PASS_CPU_S_PER_DESTINATION: Final = 0.000502
_AGENT_FIRST_PASS_CPU_S_PER_EXCLUDE: Final = 0.000142
_AGENT_CPU_STEP_M: Final = 10

_BUILTIN_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})
# Agents of the node backends: when the spec names no backend the agent may pick
# any of them, so the manifests must allow for all.
_NODE_BACKENDS = frozenset({"netlink", "nftables", "iptables"})
_PROC_SYS_MOUNT = "/host/proc/sys"
_HOST_PREFIX = "/host"
# Backends writing objects shared by the whole cluster (by the Lease holder only).
_CLUSTER_BACKENDS = ("calico", "cilium", "flannel")
# The cilium backend's defaults (k3snet.backends.cilium; render/ imports no backend).
_CILIUM_CONFIGMAP = ("kube-system", "cilium-config")
_CILIUM_IP_MASQ_AGENT = "ip-masq-agent"
_CILIUM_DAEMONSET = "cilium"
_RUN_DIR = "/run/k3snet"
_XTABLES_LOCK = "/run/xtables.lock"
_RESULT_PREFIX = "k3snet-connectivity"
_JOB_TTL_SECONDS = 3600  # long enough to read the result back, short enough to clean up
_JOB_DEADLINE_SECONDS = 300  # 4 pings and a 5 s connect, after pulling busybox (slow links)
_DNS_PORT = 53
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
# The flannel file's directory is mounted writable into the agent (a file replaced by
# rename cannot be bind-mounted alone). Directories holding other files: the file may
# not sit directly in one (a directory of its own below it is fine).
_SHARED_DIRECTORIES = frozenset({
    "/etc", "/etc/rancher", "/etc/rancher/k3s", "/var/lib", "/var/lib/rancher",
    "/var/lib/rancher/k3s", "/run", "/var/run", "/opt", "/srv", "/var",
    "/tmp",  # noqa: S108 - a path refused, not used
})
# Trees holding credentials or what runs as root: neither they nor any directory below
# them may be mounted (K3s's TLS keys and tokens, kubeadm's PKI, the kubelet's and
# K3s agent's client keys, containerd's config and socket, static pods, binaries).
_SENSITIVE_TREES = (
    "/var/lib/rancher/k3s/server", "/var/lib/rancher/k3s/agent", "/var/lib/rancher/k3s/data",
    "/etc/rancher/k3s/config.yaml.d", "/etc/rancher/node", "/etc/kubernetes",
    "/var/lib/kubelet", "/var/lib/etcd", "/var/lib/containerd", "/var/lib/docker",
    "/run/k3s", "/run/containerd", "/run/secrets", "/var/run/k3s", "/var/run/containerd",
    "/var/run/secrets", "/etc/cni", "/opt/cni", "/etc/ssh", "/etc/ssl", "/etc/pki",
    "/etc/systemd", "/etc/sudoers.d", "/root", "/home", "/usr", "/bin", "/sbin", "/lib",
    "/lib64", "/boot", "/proc", "/sys", "/dev",
)
# K3s's own net-conf.json directory, inside the agent tree but holding nothing else
# (the flannel backend reads that file and refuses to apply to it).
_K3S_FLANNEL_DIRECTORY = "/var/lib/rancher/k3s/agent/etc/flannel"


def _labels(component: str) -> dict[str, str]:
    # A fresh dict each time: YAML must never see a shared object (no &anchors).
    return {**MANAGED_BY_LABELS, "app.kubernetes.io/component": component}


def _meta(name: str, component: str, namespace: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    meta["labels"] = _labels(component)
    return meta


def _uses(spec: Spec, backend: str) -> bool:
    """Whether the agent may run ``backend``: named, or any node backend when none is."""
    if not spec.backends:
        return backend in _NODE_BACKENDS
    return backend in spec.backends


# ---------------------------------------------------------------- the agent


_GRACE_SPARE = 5
"""Seconds of the grace period beyond the longest bounded step, its undo and
``CLEANUP_MARGIN``."""

_IPTABLES_TIMEOUT = 30.0
"""The iptables backend's default ``timeout``: the bound of one restore run."""

_GRACE_LONGEST = 86399
"""The longest grace period the agent takes (less than a day: a longer
``$K3SNET_TERMINATION_GRACE`` is a usage error, exit 64). A ``timeout`` from 21 599 s
on needs more: the agent then warns that the grace period does not hold it."""

_IPTABLES_UNDO_STEPS = 3
"""The iptables backend's ``undo_steps``: the read-back of what a killed restore run
committed, then one restore run per family taken back. Render imports no backend; the
agent's tests hold these two to the backend's own (tests/agent/test_termination_grace.py)."""


def _termination_grace(spec: Spec) -> int:
    """The agent pod's ``terminationGracePeriodSeconds``: :data:`~k3snet.kube.TERMINATION_GRACE`,
    or longer when the iptables backend may run: a restore run killed at the spec's
    ``timeout`` (30 s unless ``backends.iptables.timeout`` says), the bounded steps of
    its undo after it, each as long (the read-back, one run per family taken back),
    ``CLEANUP_MARGIN`` and 5 s to spare, what the agent's warning
    (``k3snet.agent.grace_shortfalls``) holds against the grace period it is told.
    At 70 s, a dual-stack apply whose IPv6 run was killed undid in more runs than the
    grace period held, the kubelet's SIGKILL in the undo and nothing said. A ``timeout``
    the backend refuses (text, NaN: the spec's checks name it) counts as 30 s: read with
    ``float()``, it was an internal error. Never more than :data:`_GRACE_LONGEST`: a
    ``timeout`` the backend took rendered a grace period the agent refused on every
    node."""
    if not _uses(spec, "iptables"):
        return TERMINATION_GRACE
    from k3snet.agent import CLEANUP_MARGIN  # noqa: PLC0415 - lazy: render alone

    timeout = spec_backend_options(spec, "iptables").get("timeout", _IPTABLES_TIMEOUT)
    if (isinstance(timeout, bool) or not isinstance(timeout, int | float)
            or not 0 < timeout < 86400):  # (NaN too) refused by the backend, and so the spec
        timeout = _IPTABLES_TIMEOUT
    needed = (1 + _IPTABLES_UNDO_STEPS) * float(timeout) + CLEANUP_MARGIN
    return min(max(TERMINATION_GRACE, math.ceil(needed) + _GRACE_SPARE), _GRACE_LONGEST)


@attrs.frozen
class _AgentNeeds:
    """What the agent touches, derived from the spec and the flannel options."""

    sysctls: bool
    iptables: bool
    node_lock: bool
    """Whether a node backend may run: it converges under the namespace lock in /run/k3snet."""
    calico: bool
    flannel_conf: str | None
    flannel_configmap: tuple[str, str] | None
    """(namespace, name) of flannel's ConfigMap."""
    node_report: bool = True
    cilium: tuple[str, tuple[str, str]] | None = None
    """(namespace, (cilium-config's name, the ip-masq-agent ConfigMap's name))."""
    cilium_daemonset: str = _CILIUM_DAEMONSET
    """Cilium's agent DaemonSet in its namespace (read: does it mount the ip-masq-agent one?)."""
    node_restriction: bool = False
    """Whether an admission policy limits the agent's writes to its own node's objects."""
    lease_candidates: str | None = None
    """``--lease-candidates``: the label of the nodes competing for the Lease."""

    @property
    def cluster_wide(self) -> bool:
        """Whether the agent writes objects shared by the cluster (then: one writer, by Lease)."""
        return (self.calico or self.flannel_configmap is not None
                or self.cilium is not None)

    @property
    def api(self) -> bool:
        """Whether the agent talks to the API server at all (else: no token mounted)."""
        return self.cluster_wide or self.node_report


def _agent_needs(
    spec: Spec, flannel_conf: str | None, flannel_configmap_namespace: str | None,
    node_report: bool = True, node_restriction: bool = False,
    *, lease_candidates: str | None = None,
) -> _AgentNeeds:
    problems: list[Problem] = []
    flannel: tuple[str | None, tuple[str, str] | None] = (None, None)
    if "flannel" in spec.backends:
        flannel = _flannel_target(spec, flannel_conf, flannel_configmap_namespace, problems)
    elif flannel_conf is not None or flannel_configmap_namespace is not None:
        problems.append(Problem("backends", "flannel options given but the spec's backends "
                                            "do not include flannel"))
    cilium = _cilium_configmaps(spec, problems) if "cilium" in spec.backends else None
    daemonset = _CILIUM_DAEMONSET
    if "cilium" in spec.backends:
        daemonset = spec_backend_options(spec, "cilium").get("daemonset", _CILIUM_DAEMONSET)
        problem = object_name_problem(daemonset, "DaemonSet")
        if problem is not None:
            problems.append(Problem("backends.cilium.daemonset", problem))
    if lease_candidates is not None:
        problem = label_selector_problem(lease_candidates)
        if problem is not None:
            problems.append(Problem("", f"lease_candidates {problem}"))
        elif not ("calico" in spec.backends or flannel[1] is not None or cilium is not None):
            # flannel's file (flannel_conf) is each node's own: no Lease, as without flannel
            problems.append(Problem("backends", (
                "lease_candidates given, but no backend of the spec writes objects shared by "
                f"the cluster ({', '.join(_CLUSTER_BACKENDS)}; flannel through its ConfigMap, "
                "not a node's file): there is no Lease to hold")))
    if problems:
        raise SpecError(problems)
    return _AgentNeeds(
        # Sysctls are the netlink backend's. It needs the host's /proc/sys/net and
        # its state directory even when the spec sets no sysctl any more: that is
        # when it restores the values it recorded.
        sysctls=_uses(spec, "netlink"),
        iptables=_uses(spec, "iptables"),
        node_lock=any(_uses(spec, backend) for backend in _NODE_BACKENDS),
        calico="calico" in spec.backends,
        flannel_conf=flannel[0],
        flannel_configmap=flannel[1],
        node_report=node_report,
        cilium=cilium,
        cilium_daemonset=daemonset,
        node_restriction=node_restriction,
        lease_candidates=lease_candidates,
    )


def _flannel_target(
    spec: Spec, flannel_conf: str | None, flannel_configmap_namespace: str | None,
    problems: list[Problem],
) -> tuple[str | None, tuple[str, str] | None]:
    """The flannel file or ConfigMap the agent edits: render's options, or the spec's
    ``backends.flannel`` options (``path``, ``configmap``), which the agent reads too."""
    options = spec_backend_options(spec, "flannel")
    conf_path = "backends"
    if "path" in options:
        conf_path = "backends.flannel.path"
        given = options["path"]
        if not isinstance(given, str):
            problems.append(Problem(conf_path, f"must be a path (text), got {given!r}"))
            return None, None
        if flannel_conf is not None and flannel_conf != given:
            problems.append(Problem(conf_path, f"{given!r} differs from flannel_conf "
                                               f"{flannel_conf!r}; give one of them"))
            return None, None
        flannel_conf = given
    configmap = None
    if "configmap" in options:
        configmap = _configmap_option(options["configmap"], "backends.flannel.configmap",
                                      problems)
        if configmap is None:
            return None, None
        if flannel_configmap_namespace not in (None, configmap[0]):
            problems.append(Problem("backends.flannel.configmap", (
                f"{'/'.join(configmap)!r} is in namespace {configmap[0]}, but "
                f"flannel_configmap_namespace is {flannel_configmap_namespace!r}; give one "
                "of them")))
            return None, None
    elif flannel_configmap_namespace is not None:
        configmap = (flannel_configmap_namespace, FLANNEL_CONFIGMAP_NAME)
    if (flannel_conf is None) == (configmap is None):
        problems.append(Problem("backends", (
            "the flannel backend needs exactly one of flannel_conf (the net-conf.json "
            "K3s reads with --flannel-conf) or flannel_configmap_namespace (upstream "
            f"flannel's {FLANNEL_CONFIGMAP_NAME} ConfigMap), or the spec's "
            "backends.flannel.path or backends.flannel.configmap")))
    if "configmap" not in options and flannel_configmap_namespace is not None:
        problem = namespace_problem(flannel_configmap_namespace)
        if problem is not None:
            problems.append(Problem("backends", problem))
    if flannel_conf is not None:
        problems += _flannel_file_problems(spec, flannel_conf, conf_path)
    return flannel_conf, configmap


def _flannel_file_problems(spec: Spec, flannel_conf: str, conf_path: str) -> list[Problem]:
    """Why the agent must not mount ``flannel_conf``, and what of the spec its flannel
    backend, built with the spec's options, would refuse to write into that file."""
    problems = []
    problem = _flannel_conf_problem(flannel_conf)
    if problem is not None:
        problems.append(Problem(conf_path, problem))
    settings = spec.cni.flannel
    if settings is not None and settings.enable_nftables is not None:
        reader = spec_backend_options(spec, "flannel").get("reader")
        refusal = flannel_nftables_refusal(file=True,
                                           reader="k3s" if reader is None else str(reader))
        if refusal is not None:
            problems.append(Problem("cni.flannel.enableNFTables", refusal))
    return problems


def _flannel_conf_problem(flannel_conf: str) -> str | None:
    """Why the agent must not mount ``flannel_conf``'s directory (``None``: it may)."""
    directory = posixpath.dirname(flannel_conf)
    if (not flannel_conf.startswith("/") or posixpath.normpath(flannel_conf) != flannel_conf
            or directory == "/"):  # never mount the host's root
        return ("flannel_conf must be an absolute, normalised path of a file below a "
                f"directory, got {flannel_conf!r}")
    advice = ("the agent mounts the file's directory writable, so give flannel's config a "
              "directory of its own, e.g. /etc/rancher/k3s/flannel/net-conf.json")
    tree = next((t for t in _SENSITIVE_TREES
                 if directory == t or directory.startswith(t + "/")), None)
    if tree is not None and directory != _K3S_FLANNEL_DIRECTORY:
        return (f"flannel_conf {flannel_conf!r} is below {tree}, which holds credentials or "
                f"what runs as root; {advice}")
    if directory in _SHARED_DIRECTORIES:
        return (f"flannel_conf {flannel_conf!r} is in {directory}, which holds other files "
                f"(K3s's kubeconfig, tokens, config); {advice}")
    return None


def _configmap_option(value: Any, path: str, problems: list[Problem]) -> tuple[str, str] | None:
    """``(namespace, name)`` of a ConfigMap option (``"NAMESPACE/NAME"`` or a pair), as the
    backend reads it (:func:`k3snet.kube.configmap_ref`) and the API server accepts it."""
    parts = value.split("/") if isinstance(value, str) else value
    if (not isinstance(parts, list | tuple) or len(parts) != 2
            or not all(isinstance(part, str) and part for part in parts)):
        problems.append(Problem(path, f"{value!r} is not NAMESPACE/NAME (or a [namespace, "
                                      "name] pair)"))
        return None
    namespace, name = parts
    found = [p for p in (namespace_problem(namespace), object_name_problem(name)) if p]
    problems += [Problem(path, problem) for problem in found]
    return None if found else (namespace, name)


def _cilium_configmaps(spec: Spec, problems: list[Problem]) -> tuple[str, tuple[str, str]] | None:
    """Where the cilium backend writes: its ``configmap`` and ``ip_masq_agent`` options,
    checked as the backend and the API server check them.

    The defaults are the backend's (Cilium's Helm chart on K3s); render/ does not
    import backends, so they are repeated here.
    """
    options = spec_backend_options(spec, "cilium")
    configmap = _configmap_option(options.get("configmap", _CILIUM_CONFIGMAP),
                                  "backends.cilium.configmap", problems)
    agent = options.get("ip_masq_agent", _CILIUM_IP_MASQ_AGENT)
    problem = object_name_problem(agent)
    if problem is None and configmap is not None and agent == configmap[1]:
        # One ConfigMap for both: k3snet's records of the two would overwrite each other,
        # and the Role would grant delete on Cilium's whole configuration.
        problem = (f"{agent!r} is the name of Cilium's configuration ({'/'.join(configmap)}); "
                   "the ip-masq-agent ConfigMap is another one (ip-masq-agent by default)")
    if problem is not None:
        problems.append(Problem("backends.cilium.ip_masq_agent", problem))
    if configmap is None or problem is not None:
        return None
    return configmap[0], (configmap[1], agent)


def _spec_text(spec: Spec) -> str:
    return _dump(spec.to_dict())


def _agent_objects(spec: Spec, needs: _AgentNeeds, spec_text: str,
                   profiles: Sequence[_Profile] = ()) -> list[dict[str, Any]]:
    ns = spec.agent.namespace
    objs: list[dict[str, Any]] = []
    if ns not in _BUILTIN_NAMESPACES and spec.agent.create_namespace:
        metadata = _meta(ns, "agent")
        # hostNetwork and hostPath are beyond the "baseline" Pod Security level: a
        # cluster enforcing it by default would refuse the agent's pods.
        metadata["labels"]["pod-security.kubernetes.io/enforce"] = "privileged"
        objs.append({"apiVersion": "v1", "kind": "Namespace", "metadata": metadata})
    objs.append({
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(AGENT_NAME, "agent", ns),
        # No token unless the agent talks to the API server (least privilege).
        "automountServiceAccountToken": needs.api,
    })
    default = _Profile(DEFAULT_PROFILE, spec, spec_text)
    for profile in (default, *profiles):
        objs.append({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _meta(profile.configmap, "agent", ns),
            "data": {posixpath.basename(SPEC_PATH): profile.text},
        })
    objs += _rbac_objects(ns, needs)
    if needs.node_restriction:
        objs += _node_restriction(ns, needs)
    others = [p.name for p in profiles]
    objs.append(_daemonset(default, needs, others))
    objs += [_daemonset(p, needs, []) for p in profiles]
    return objs


@attrs.frozen
class _Profile:
    """A node group with a spec of its own (nodes labelled ``k3snet.io/profile=NAME``)."""

    name: str
    spec: Spec
    text: str
    # A bound on its ConfigMap's bytes when its text was not given; over the limit, its
    # text is not written ("").
    least: int = 0

    @property
    def configmap(self) -> str:
        return (SPEC_CONFIGMAP_NAME if self.name == DEFAULT_PROFILE
                else f"{SPEC_CONFIGMAP_NAME}-{self.name}")

    @property
    def daemonset(self) -> str:
        return AGENT_NAME if self.name == DEFAULT_PROFILE else f"{AGENT_NAME}-{self.name}"


def _profiles(spec: Spec, given: Mapping[str, Spec | tuple[Spec, str]]) -> list[_Profile]:
    """Check the per-node overrides: valid names and specs that agree on what is shared."""
    problems: list[Problem] = []
    found: list[_Profile] = []
    for name in sorted(given):
        value = given[name]
        other, text = value if isinstance(value, tuple) else (value, "")
        least = 0 if isinstance(value, tuple) else _spec_size_at_least(other)
        if not isinstance(value, tuple) and least <= CONFIGMAP_MAX_BYTES:
            text = _spec_text(other)
        where = f"profiles.{name}"
        if name == DEFAULT_PROFILE or not _DNS_LABEL.fullmatch(name) or len(name) > 40:
            problems.append(Problem(where, f"a profile name is a DNS label of at most 40 "
                                           f"characters other than {DEFAULT_PROFILE!r}"))
        problems += [attrs.evolve(p, path=f"{where}.{p.path}") for p in validate(other)]
        # What one agent writes for the whole cluster, or what all pods share, must be
        # the same in every profile: the Lease holder's spec decides cluster objects.
        for field in ("backends", "cni", "agent", "cluster"):
            if getattr(other, field) != getattr(spec, field):
                problems.append(Problem(f"{where}.{field}", f"must equal the base spec's "
                                        f"{field} (shared by every node or written once for "
                                        "the cluster)"))
        # The options of the backends writing cluster-wide objects too: the RBAC is
        # rendered from the base spec, and the Lease holder may run any profile.
        for backend in _CLUSTER_BACKENDS:
            if spec_backend_options(other, backend) != spec_backend_options(spec, backend):
                problems.append(Problem(f"{where}.backends.{backend}", (
                    "must equal the base spec's options of this backend (it writes objects "
                    "shared by the cluster)")))
        found.append(_Profile(name, other, text, least))
    if problems:
        raise SpecError(problems)
    return found


def _subject(namespace: str) -> list[dict[str, Any]]:
    return [{"kind": "ServiceAccount", "name": AGENT_NAME, "namespace": namespace}]


def _rbac_objects(namespace: str, needs: _AgentNeeds) -> list[dict[str, Any]]:
    """The least RBAC: nothing for the spec (a mounted ConfigMap needs none)."""
    objs: list[dict[str, Any]] = []
    if needs.node_report:
        # The last result as an annotation of the agent's Node, and an Event when it
        # changes (Node events live in "default", as the kubelet's do). RBAC cannot
        # limit a DaemonSet's pods to their own Node: every agent may patch any Node.
        objs.append({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": _meta(REPORT_ROLE_NAME, "agent"),
            "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["patch"]}],
        })
        objs.append({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": _meta(REPORT_ROLE_NAME, "agent"),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": REPORT_ROLE_NAME},
            "subjects": _subject(namespace),
        })
        objs += _role(AGENT_NAME, "default", namespace, [
            {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}])
    if needs.cluster_wide:
        # One writer of cluster-wide objects: the holder of this Lease. Creating
        # cannot be limited to a name; reading and renewing can. Only the verbs the
        # agent sends (k3snet.agent._lease: read, patch, create): no update.
        objs += _role(LEASE_ROLE_NAME, namespace, namespace, [
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
             "verbs": ["create"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
             "resourceNames": [LEASE_NAME], "verbs": ["get", "patch"]}])
    if needs.lease_candidates is not None:
        # --lease-candidates: each agent reads its own Node's labels once, to know whether
        # it competes (RBAC cannot limit the read to the reader's own Node).
        objs += [{
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": _meta(CANDIDATES_ROLE_NAME, "agent"),
            "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}],
        }, {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": _meta(CANDIDATES_ROLE_NAME, "agent"),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": CANDIDATES_ROLE_NAME},
            "subjects": _subject(namespace),
        }]
    if needs.calico:
        # IPPools are cluster-scoped; the calico backend uses projectcalico.org (v3) where
        # the Calico API server runs, else crd.projectcalico.org (found by discovery).
        # The verbs it sends: it lists the pools, applies (server-side: patch, and
        # create for a new one), creates and deletes; it never gets one, watches or updates.
        # It lists the FelixConfigurations too (Felix's NAT settings) and the block
        # affinities (the IPAM blocks the nodes hold), never writes them,
        # and the Nodes where one leaves the Calico hosts' addresses untranslated (and
        # the Namespaces and Pods where their annotations decide), and gets the IPPool
        # CRD (below).
        objs.append({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": _meta(AGENT_NAME, "agent"),
            "rules": [{
                "apiGroups": ["crd.projectcalico.org", "projectcalico.org"],
                "resources": ["ippools"],
                "verbs": ["list", "create", "patch", "delete"],
            }, {
                "apiGroups": ["crd.projectcalico.org", "projectcalico.org"],
                "resources": ["felixconfigurations"],
                "verbs": ["list"],
            }, {
                # The IPAM blocks the nodes hold (Calico's block affinities, kept in
                # the CRDs whichever API serves the pools: crd.projectcalico.org, or
                # projectcalico.org where Calico keeps its data in v3 CRDs): read only.
                "apiGroups": ["crd.projectcalico.org", "projectcalico.org"],
                "resources": ["blockaffinities"],
                "verbs": ["list"],
            }, {
                # The Calico nodes' addresses (their annotations), which Felix leaves
                # untranslated with natOutgoingExclusions: IPPoolsAndHostIPs, and their
                # labels, for a block a node holds in a pool with a nodeSelector.
                "apiGroups": [""],
                "resources": ["nodes"],
                "verbs": ["list"],
            }, {
                # The pools pods and namespaces name in their cni.projectcalico.org/
                # ipv4pools and ipv6pools annotations (metadata alone), for a block a
                # node holds in a pool that gives it no address automatically.
                "apiGroups": [""],
                "resources": ["namespaces"],
                "verbs": ["list"],
            }, {
                # The pods' too: listed once, then their changes watched each pass
                # (without watch, listed each pass).
                "apiGroups": [""],
                "resources": ["pods"],
                "verbs": ["list", "watch"],
            }, {
                # The IPPool CRD, read where a pool of k3snet's lacks disableBGPExport:
                # whether its schema drops the field (Calico before v3.21) or the pool
                # is one to write it in (written before Calico's upgrade).
                "apiGroups": ["apiextensions.k8s.io"],
                "resources": ["customresourcedefinitions"],
                "resourceNames": ["ippools.crd.projectcalico.org"],
                "verbs": ["get"],
            }],
        })
        objs.append({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": _meta(AGENT_NAME, "agent"),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": AGENT_NAME},
            "subjects": _subject(namespace),
        })
    if needs.cilium is not None:
        # Two named ConfigMaps in Cilium's namespace (cilium-config patched, the
        # ip-masq-agent one created and deleted with k3snet's last key); creating
        # cannot be limited to a name. Patched, never updated; deleted: the
        # ip-masq-agent one only (delete on cilium-config let any node's agent take
        # Cilium's whole configuration away). Every ConfigMap there may be read (get
        # alone: none listed nor watched): a variable of Cilium's agent container from
        # one (configMapKeyRef), or a copy's config init container's config-map: source,
        # is judged by its value; Cilium's chart grants its own agent get, list and
        # watch on them all (Role cilium-config-agent, since 1.13: its config init
        # container's build-config; earlier ones none), on every node. The
        # CiliumNodeConfigs there are listed
        # (never written): the keys they set over cilium-config on some nodes are judged too.
        # Cilium's agent DaemonSet is read (never written): its agent container's flags
        # and variables, which Cilium takes over cilium-config, and whether it mounts the
        # ip-masq-agent ConfigMap, without which Cilium does not read it.
        cilium_ns, (config_name, agent_name) = needs.cilium
        objs += _role(AGENT_NAME + "-cilium", cilium_ns, namespace, [
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["configmaps"],
             "resourceNames": sorted({config_name, agent_name}), "verbs": ["patch"]},
            {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [agent_name],
             "verbs": ["delete"]},
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]},
            {"apiGroups": ["cilium.io"], "resources": ["ciliumnodeconfigs"], "verbs": ["list"]},
            {"apiGroups": ["apps"], "resources": ["daemonsets"],
             "resourceNames": [needs.cilium_daemonset], "verbs": ["get"]},
            *_RESTART_RULES])
        # CiliumEgressGatewayPolicies are cluster-scoped: listed (where some node runs
        # the egress gateway), never written; so are the Nodes (their labels, which the
        # CiliumNodeConfigs selecting some nodes select by) and the CiliumNodes (which
        # Nodes run a Cilium agent, the only ones reading CiliumNodeConfigs).
        objs += [{
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": _meta(AGENT_NAME + "-cilium", "agent"),
            "rules": [{"apiGroups": ["cilium.io"],
                       "resources": ["ciliumegressgatewaypolicies", "ciliumnodes"],
                       "verbs": ["list"]},
                      {"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]}],
        }, {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": _meta(AGENT_NAME + "-cilium", "agent"),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": AGENT_NAME + "-cilium"},
            "subjects": _subject(namespace),
        }]
    if needs.flannel_configmap is not None:
        flannel_ns, flannel_name = needs.flannel_configmap
        # One named ConfigMap, read and patched (never updated): resourceNames limits
        # get/patch to it (list and watch cannot be limited that way, so they are not
        # granted). A Role of its own name: in "default" it replaced the node report's.
        objs += _role(AGENT_NAME + "-flannel", flannel_ns, namespace, [{
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": [flannel_name],
            "verbs": ["get", "patch"],
        }, *_RESTART_RULES])
    return objs


# The DaemonSets and their pods of the CNI's namespace, listed (never written) to tell
# whether the pods restarted since k3snet changed the config they read at start (and, for
# Cilium, which other DaemonSets run a cilium-agent, whose flags are read too).
_RESTART_RULES: tuple[dict[str, Any], ...] = (
    {"apiGroups": ["apps"], "resources": ["daemonsets"], "verbs": ["list"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
)


def _cel_text(value: str) -> str:
    """A CEL string literal (single-quoted; the values are names and keys)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _cel_unchanged(field: str) -> str:
    """CEL: ``object.FIELD`` is what it was (both absent, or equal)."""
    return (f"(has(object.{field}) == has(oldObject.{field}) && "
            f"(!has(object.{field}) || object.{field} == oldObject.{field}))")


def _node_restriction_validations(needs: _AgentNeeds) -> list[dict[str, str]]:
    """The CEL checks of the agent's admission policy, one per kind of object it writes
    that is its node's own (or that RBAC cannot limit to a name)."""
    mine = "variables.nodeName"
    ours = "[" + ", ".join(_cel_text(key) for key in _REPORT_ANNOTATIONS) + "]"
    checks = [{
        "expression": f"{mine} != ''",
        "message": ("the k3snet agent's token names no node: a pod-bound ServiceAccount "
                    f"token carries {NODE_NAME_EXTRA} from Kubernetes 1.30 "
                    "(ServiceAccountTokenPodNodeInfo)"),
    }]
    if needs.node_report:
        checks.append({
            # Its own Node, and only the report's annotations: no label (a profile's,
            # a node role), no taint, no spec field, no other annotation changes.
            "expression": (
                "request.resource.resource != 'nodes' || ("
                f"object.metadata.name == {mine} && "
                + " && ".join(_cel_unchanged(f) for f in (
                    "spec", "metadata.labels", "metadata.ownerReferences",
                    "metadata.finalizers")) + " && "
                "(!has(object.metadata.annotations) || object.metadata.annotations.all(k, "
                f"k in {ours} || (has(oldObject.metadata.annotations) && "
                "k in oldObject.metadata.annotations && "
                "oldObject.metadata.annotations[k] == object.metadata.annotations[k]))) && "
                "(!has(oldObject.metadata.annotations) || "
                f"oldObject.metadata.annotations.all(k, k in {ours} || "
                "(has(object.metadata.annotations) && k in object.metadata.annotations))))"),
            "message": ("the k3snet agent may change only its own Node, and there only the "
                        + " and ".join(_REPORT_ANNOTATIONS) + " annotations"),
        })
        checks.append({
            "expression": (
                "request.resource.resource != 'events' || ("
                "has(object.involvedObject.kind) && object.involvedObject.kind == 'Node' && "
                f"has(object.involvedObject.name) && object.involvedObject.name == {mine})"),
            "message": "the k3snet agent may record Events about its own Node only",
        })
    if needs.cluster_wide:
        # RBAC cannot limit create to a name; the holder must be the agent's node, and
        # only the holder may give the Lease up.
        holder = "holderIdentity"
        checks.append({
            "expression": (
                "request.resource.resource != 'leases' || ("
                f"object.metadata.name == {_cel_text(LEASE_NAME)} && "
                f"(!has(object.spec.{holder}) || object.spec.{holder} in ['', {mine}]) && "
                f"(request.operation == 'CREATE' || (has(object.spec.{holder}) && "
                f"object.spec.{holder} != '') || !has(oldObject.spec.{holder}) || "
                f"oldObject.spec.{holder} in ['', {mine}]))"),
            "message": (f"the k3snet agent may write only the Lease {LEASE_NAME}, as its own "
                        "node, and give it up only when its node holds it"),
        })
    if needs.cilium is not None:
        # RBAC grants create on every ConfigMap of Cilium's namespace (a create names no
        # object): kube-system's coredns-custom, say, which CoreDNS imports.
        checks.append({
            "expression": ("request.resource.resource != 'configmaps' || "
                           f"object.metadata.name == {_cel_text(needs.cilium[1][1])}"),
            "message": (f"the k3snet agent may create the ConfigMap {needs.cilium[1][1]} "
                        "only"),
        })
    return checks


def _node_restriction(namespace: str, needs: _AgentNeeds) -> list[dict[str, Any]]:
    """A ValidatingAdmissionPolicy and its binding: what RBAC cannot say (a DaemonSet's
    pod may patch any Node, create any Lease or ConfigMap) for the agent's
    ServiceAccount, from the node name in its pod-bound token."""
    rules: list[dict[str, Any]] = []

    def rule(group: str, version: str, resource: str, *operations: str) -> None:
        rules.append({"apiGroups": [group], "apiVersions": [version],
                      "operations": list(operations), "resources": [resource]})

    if needs.node_report:
        rule("", "v1", "nodes", "UPDATE")  # a patch is an UPDATE in admission
        rule("", "v1", "events", "CREATE")
    if needs.cluster_wide:
        rule("coordination.k8s.io", "v1", "leases", "CREATE", "UPDATE")
    if needs.cilium is not None:
        rule("", "v1", "configmaps", "CREATE")
    if not rules:
        return []
    user = f"system:serviceaccount:{namespace}:{AGENT_NAME}"
    extra = f"request.userInfo.extra[{_cel_text(NODE_NAME_EXTRA)}]"
    return [{
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": _meta(NODE_RESTRICTION_NAME, "agent"),
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": rules},
            "matchConditions": [{"name": "k3snet-agent",
                                 "expression": f"request.userInfo.username == {_cel_text(user)}"}],
            "variables": [{"name": "nodeName", "expression": (
                f"has(request.userInfo.extra) && {_cel_text(NODE_NAME_EXTRA)} in "
                f"request.userInfo.extra && size({extra}) == 1 ? {extra}[0] : ''")}],
            "validations": _node_restriction_validations(needs),
        },
    }, {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": _meta(NODE_RESTRICTION_NAME, "agent"),
        "spec": {"policyName": NODE_RESTRICTION_NAME, "validationActions": ["Deny"]},
    }]


def _role(name: str, namespace: str, subject_namespace: str,
          rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A Role and its RoleBinding to the agent's ServiceAccount."""
    return [{
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _meta(name, "agent", namespace),
        "rules": rules,
    }, {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _meta(name, "agent", namespace),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": _subject(subject_namespace),
    }]


def _host_path(name: str, path: str, kind: str) -> dict[str, Any]:
    return {"name": name, "hostPath": {"path": path, "type": kind}}


def _agent_volumes(
    needs: _AgentNeeds, configmap: str = SPEC_CONFIGMAP_NAME
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, volumeMounts): the spec read-only, writable paths only where needed."""
    volumes: list[dict[str, Any]] = [
        {"name": "spec", "configMap": {
            "name": configmap,
            "items": [{"key": posixpath.basename(SPEC_PATH),
                       "path": posixpath.basename(SPEC_PATH)}],
            "defaultMode": 0o444,
        }},
        # The root filesystem is read-only; libraries that need a scratch file
        # (tempfile) get a small memory-backed /tmp.
        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "spec", "mountPath": posixpath.dirname(SPEC_PATH), "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - a private emptyDir
    ]
    # No /lib/modules: the kernel loads the netfilter modules a rule needs (nf_nat,
    # nft_masq, xt_comment ...) itself, with the host's modprobe and modules; a modprobe
    # run in the container (iptables-legacy's, for ip_tables) would need CAP_SYS_MODULE,
    # which the agent is never given, so the mount served nothing.
    if needs.node_lock:
        # The node backends converge under the namespace lock (/run/k3snet/locks):
        # the host's directory, so that the agent and a host `k3snet apply` exclude
        # each other (the root is read-only: without it no pass could converge).
        # netlink also records here the previous value of every sysctl it sets, so
        # that removal restores it: kept across agent restarts, cleared at boot like
        # the sysctls themselves (/run is a tmpfs).
        volumes.append(_host_path("run-k3snet", _RUN_DIR, "DirectoryOrCreate"))
        mounts.append({"name": "run-k3snet", "mountPath": _RUN_DIR})
    if needs.sysctls:
        # /proc/sys is read-only in a container that is not privileged; the host's
        # net subtree, mounted elsewhere, is writable with uid 0 (Cilium does the same).
        volumes.append(_host_path("proc-sys-net", "/proc/sys/net", "Directory"))
        mounts.append({"name": "proc-sys-net", "mountPath": f"{_PROC_SYS_MOUNT}/net"})
    if needs.iptables:
        # iptables-restore -w serialises with every other iptables user of the
        # node (kube-proxy, flannel, kube-router) through this lock file.
        volumes.append(_host_path("xtables-lock", _XTABLES_LOCK, "FileOrCreate"))
        mounts.append({"name": "xtables-lock", "mountPath": _XTABLES_LOCK})
    if needs.flannel_conf is not None:
        # The directory, not the file: a file written by rename cannot replace a
        # bind-mounted file.
        directory = posixpath.dirname(needs.flannel_conf)
        volumes.append(_host_path("flannel-conf", directory, "Directory"))
        mounts.append({"name": "flannel-conf", "mountPath": _HOST_PREFIX + directory})
    return volumes, mounts


def _agent_env(needs: _AgentNeeds, grace: int) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "K3SNET_NODE_NAME",
         "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        # The pod's terminationGracePeriodSeconds, which the agent's shutdown plans for
        # (not told, it assumes the 30 s of DaemonSets rendered before). A variable, not
        # an option: an agent image older than the manifest ignores it.
        {"name": "K3SNET_TERMINATION_GRACE", "value": str(grace)},
    ]
    if needs.cluster_wide:
        # The Lease lives in the agent's own namespace.
        env.append({"name": "K3SNET_NAMESPACE",
                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}})
    if needs.sysctls:
        env.append({"name": "K3SNET_PROC_SYS", "value": _PROC_SYS_MOUNT})
    if needs.flannel_conf is not None:
        env.append({"name": "K3SNET_FLANNEL_CONF", "value": _HOST_PREFIX + needs.flannel_conf})
    if needs.flannel_configmap is not None:
        env.append({"name": "K3SNET_FLANNEL_CONFIGMAP",
                    "value": "/".join(needs.flannel_configmap)})
    return env


def _agent_command(spec: Spec, needs: _AgentNeeds) -> list[str]:
    command = ["k3snet", "agent", "-f", SPEC_PATH,
               "--interval", str(spec.agent.interval_seconds), "--listen", f":{AGENT_PORT}"]
    if not needs.api:
        command.append("--no-kube")
    elif not needs.node_report:
        command.append("--no-node-report")
    if needs.lease_candidates is not None:
        command += ["--lease-candidates", needs.lease_candidates]
    return command


def _agent_peak_mib(destinations: int, excludes: int) -> float:
    """The measured peak RSS of a first pass: linear in the destinations and excludes."""
    return (_AGENT_PEAK_MIB + _AGENT_PEAK_MIB_PER_DESTINATION * destinations
            + _AGENT_PEAK_MIB_PER_EXCLUDE * excludes)


def agent_memory_limit(destinations: int, *, excludes: int = 0) -> str:
    """The agent container's memory limit for a spec of ``destinations`` destinations
    and ``excludes`` exclusions from NAT (:func:`spec_excludes`).

    :data:`AGENT_MEMORY_LIMIT` up to 10,000 destinations; above, the measured peak
    of a first pass (linear in the destinations and in the excludes) with 40 % headroom,
    so that a large spec is not OOM-killed on every node in every first pass.

    >>> agent_memory_limit(2000), agent_memory_limit(20000)
    ('384Mi', '704Mi')
    >>> agent_memory_limit(10000, excludes=100000)
    '704Mi'
    """
    peak = _agent_peak_mib(destinations, excludes)
    step = _AGENT_MEMORY_STEP_MIB
    mib = math.ceil(peak * _AGENT_MEMORY_HEADROOM / step) * step
    return f"{max(mib, int(AGENT_MEMORY_LIMIT.removesuffix('Mi')))}Mi"


def agent_cpu_request(destinations: int, interval: int = 30, *, excludes: int = 0) -> str:
    """The agent container's CPU request for a spec of ``destinations`` destinations
    and ``excludes`` exclusions from NAT (every destination's ``exclude`` and
    ``masquerade.nonMasqueradeCIDRs``: :func:`spec_excludes`) whose agent passes every
    ``interval`` seconds.

    The request is the CPU the agent is sure of on a node whose every core is busy (its
    share of CPU time then); the liveness probe restarts an agent none of whose passes
    ended for ``2 x interval + 180`` s, 120 s of it for lock waits. So the request is
    the measured CPU time of a first pass (linear in the destinations and in the
    excludes) over the rest, ``2 x interval + 60`` s, rounded up to 10m, and
    :data:`AGENT_CPU_REQUEST` at least. A fixed 10m left a first pass at 10,000
    destinations (6 CPU seconds) needing some 600 s on a busy node: restarted by the
    probe, and every restart's pass again; counting the destinations alone left one of
    1,000 destinations with 10 excludes each (3 CPU seconds) at 20m, 150 s there.

    >>> agent_cpu_request(2000), agent_cpu_request(10000), agent_cpu_request(20000)
    ('20m', '60m', '100m')
    >>> agent_cpu_request(1000), agent_cpu_request(1000, excludes=10000)
    ('20m', '30m')
    """
    cpu = (_AGENT_FIRST_PASS_CPU_S + _AGENT_FIRST_PASS_CPU_S_PER_DESTINATION * destinations
           + _AGENT_FIRST_PASS_CPU_S_PER_EXCLUDE * excludes)
    step = _AGENT_CPU_STEP_M
    millis = math.ceil(cpu / (2 * interval + 60) * 1000 / step) * step
    return f"{max(millis, int(AGENT_CPU_REQUEST.removesuffix('m')))}m"


def spec_excludes(spec: Spec) -> int:
    """How many exclusions from NAT ``spec`` lists: every destination's ``exclude`` and
    ``masquerade.nonMasqueradeCIDRs`` (each one a NAT rule's exclusion alike), what
    :func:`agent_cpu_request`, :func:`agent_memory_request` and :func:`agent_memory_limit`
    count besides the destinations."""
    return (sum(len(dest.exclude) for dest in spec.destinations)
            + len(spec.masquerade.non_masquerade_cidrs))


def agent_memory_request(destinations: int, *, excludes: int = 0) -> str:
    """The agent container's memory request for a spec of ``destinations`` destinations
    and ``excludes`` exclusions from NAT (:func:`spec_excludes`).

    What an agent holds while it runs: the RSS an agent reaches in its first pass onto a
    node stays with it (275 MiB at 10,000 destinations, measured through the passes
    after it), so the request is that measured peak (linear in the destinations and in
    the excludes), rounded up to 64 Mi, and :data:`AGENT_MEMORY_REQUEST` at least. A fixed
    128 Mi left the scheduler counting less than half of what the agent of a large spec
    holds on every node; counting the destinations alone, 4,000 of them with 10 excludes
    each (218 MiB measured) got 192 Mi.

    >>> agent_memory_request(2000), agent_memory_request(10000), agent_memory_request(20000)
    ('128Mi', '320Mi', '512Mi')
    >>> agent_memory_request(4000), agent_memory_request(4000, excludes=40000)
    ('192Mi', '256Mi')
    """
    peak = _agent_peak_mib(destinations, excludes)
    step = _AGENT_MEMORY_STEP_MIB
    mib = math.ceil(peak / step) * step
    return f"{max(mib, int(AGENT_MEMORY_REQUEST.removesuffix('Mi')))}Mi"


def _agent_capabilities(needs: _AgentNeeds) -> dict[str, list[str]]:
    """Only what the backends the agent may run use: ``NET_ADMIN`` for the node backends
    (routes, sysctls, rules), ``NET_RAW`` for the iptables one alone (iptables-legacy
    reads its tables through a raw socket; nftables and netlink speak netlink). An agent
    that only writes through the API server (or flannel's file) gets none."""
    added = (["NET_ADMIN"] if needs.node_lock else []) + (["NET_RAW"] if needs.iptables else [])
    return {"add": added, "drop": ["ALL"]} if added else {"drop": ["ALL"]}


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": AGENT_PORT},
            "periodSeconds": period, "timeoutSeconds": 5, "failureThreshold": failures}


def _daemonset(profile: _Profile, needs: _AgentNeeds, others: Sequence[str]) -> dict[str, Any]:
    spec = profile.spec
    grace = _termination_grace(spec)  # each profile's backends and options its own
    excludes = spec_excludes(spec)  # (the resources follow them too)
    volumes, mounts = _agent_volumes(needs, profile.configmap)
    selector = {"app.kubernetes.io/name": "k3snet", "app.kubernetes.io/component": "agent",
                PROFILE_LABEL: profile.name}
    container = {
        "name": "agent",
        "image": spec.agent.image,
        "imagePullPolicy": "IfNotPresent",
        "command": _agent_command(spec, needs),
        "env": _agent_env(needs, grace),
        # hostNetwork: the port is the node's; declared so that it is visible (and
        # scheduling knows it is taken).
        "ports": [{"name": "metrics", "containerPort": AGENT_PORT, "protocol": "TCP"}],
        # Live while passes keep finishing (/healthz fails when none has for 2 x
        # the interval + 180 s); ready once rules are installed (flannel's rule).
        "livenessProbe": _probe("/healthz", 20, 3),
        # (failureThreshold 1: /readyz is settled by the agent itself, NOT_READY_AFTER
        # failed passes over NOT_READY_FOR s; a threshold more would only delay it)
        "readinessProbe": _probe("/readyz", 5, 1),
        # Up to 10 minutes until the agent serves /healthz (Python's imports and the API
        # client on a node starting every pod at once). /healthz is fine from then on
        # until no pass has finished for its own limit: the first pass is judged as
        # every other (lock waits are counted in that limit), not by this probe.
        "startupProbe": _probe("/healthz", 5, 120),
        "resources": {
            "requests": {"cpu": agent_cpu_request(len(spec.destinations),
                                                  spec.agent.interval_seconds,
                                                  excludes=excludes),
                         "memory": agent_memory_request(len(spec.destinations),
                                                        excludes=excludes)},
            # Each DaemonSet's own spec: a profile may hold many more destinations.
            "limits": {"memory": agent_memory_limit(len(spec.destinations),
                                                    excludes=excludes)},
        },
        "securityContext": {
            "privileged": False,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            # Capabilities are effective only for uid 0 (Kubernetes sets no ambient
            # capabilities), whatever user the image declares.
            "runAsUser": 0,
            "capabilities": _agent_capabilities(needs),
        },
        "volumeMounts": mounts,
    }
    pod: dict[str, Any] = {
        "serviceAccountName": AGENT_NAME,
        "automountServiceAccountToken": needs.api,
        # No variables of the namespace's Services: a Service named "kubernetes" there
        # (kube-system by default) would take the place of the API server's own
        # KUBERNETES_SERVICE_HOST and _PORT, which the agent's client connects to (the
        # kubelet adds default's "kubernetes" Service whatever this says).
        "enableServiceLinks": False,
        "hostNetwork": True,
        "dnsPolicy": "ClusterFirstWithHostNet",
        "priorityClassName": "system-node-critical",
        "nodeSelector": {"kubernetes.io/os": "linux"},
        # Every node, tainted or not (control plane, NoExecute, ...).
        "tolerations": [{"operator": "Exists"}],
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        # SIGTERM: the pass in progress ends, the Lease is released, the rules stay.
        "terminationGracePeriodSeconds": grace,
        "containers": [container],
        "volumes": volumes,
    }
    # Every expression in one term: the terms of nodeSelectorTerms are ORed, the
    # expressions of a term ANDed.
    required = []
    if spec.agent.architectures is not None:
        # Only the nodes the image is built for: on another, the agent never starts
        # (exec format error, or ImagePullBackOff for an image of one platform).
        required.append({"key": _ARCH_LABEL, "operator": "In",
                         "values": list(spec.agent.architectures)})
    if profile.name != DEFAULT_PROFILE:
        pod["nodeSelector"][PROFILE_LABEL] = profile.name
    elif others:
        # Nodes of a profile run that profile's DaemonSet instead.
        required.append({"key": PROFILE_LABEL, "operator": "NotIn", "values": sorted(others)})
    if required:
        pod["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": required}]}}}
    labels = _labels("agent")
    labels[PROFILE_LABEL] = profile.name
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": _meta(profile.daemonset, "agent", spec.agent.namespace),
        "spec": {
            "selector": {"matchLabels": selector},
            # The rules stay while an agent restarts, so a tenth of the nodes at a time
            # is safe, and 5,000 nodes do not roll one by one for hours (docs/scale.md).
            "updateStrategy": {"type": "RollingUpdate",
                               "rollingUpdate": {"maxUnavailable": "10%"}},
            "template": {
                "metadata": {
                    "labels": labels,
                    # A changed spec rolls the pods, so every node runs the new one.
                    "annotations": {SPEC_HASH_ANNOTATION: hashlib.sha256(
                        profile.text.encode()).hexdigest()},
                },
                "spec": pod,
            },
        },
    }


# ---------------------------------------------------------------- egress policy


# The labels of the cluster DNS pods (CoreDNS in K3s and kubeadm), and their namespace.
_CLUSTER_DNS_LABELS: Final = {"k8s-app": "kube-dns"}


def _egress_policy_problems(spec: Spec) -> list[Problem]:
    """A policy selecting the cluster DNS pods: CoreDNS could reach neither its upstream
    resolvers nor the API server, and names would stop resolving in every namespace."""
    policy = spec.egress_policy
    selector = dict(policy.pod_selector)
    if (not policy.restrict or policy.namespace != "kube-system"
            or any(_CLUSTER_DNS_LABELS.get(key) != value for key, value in selector.items())):
        return []
    which = ("every pod of kube-system, CoreDNS among them" if not selector else
             "the pods labelled " + ", ".join(f"{k}={v}" for k, v in selector.items())
             + ", which are CoreDNS")
    return [Problem("egressPolicy.podSelector", (
        f"the egress policy would select {which}: "
        "it could reach neither its upstream resolvers nor the API server, and names would "
        "stop resolving in every namespace; select the pods to restrict by their labels"))]


def _egress_policy(spec: Spec) -> dict[str, Any]:
    policy = spec.egress_policy
    rules: list[dict[str, Any]] = []
    if spec.destinations:
        # Never an empty "to": a rule without peers would allow every destination.
        peers = []
        for dest in spec.destinations:
            block: dict[str, Any] = {"cidr": str(dest.cidr)}
            denied = [str(n) for n in policy.deny if contains(dest.cidr, n)]
            if denied:
                block["except"] = denied
            peers.append({"ipBlock": block})
        rules.append({"to": peers})
    if policy.allow_dns:
        rules.append({
            "to": [{
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
            }],
            "ports": [{"protocol": "UDP", "port": _DNS_PORT},
                      {"protocol": "TCP", "port": _DNS_PORT}],
        })
    selector: dict[str, Any] = (
        {"matchLabels": dict(policy.pod_selector)} if policy.pod_selector else {}
    )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(EGRESS_POLICY_NAME, "egress-policy", policy.namespace),
        "spec": {
            "podSelector": selector,
            "policyTypes": ["Egress"],
            "egress": rules,
        },
    }


# ---------------------------------------------------------------- DNS


def _zone_name(zone: DnsZone) -> str:
    return zone.zone.rstrip(".").lower()


def _server_block(zone: DnsZone) -> str:
    # CoreDNS's forward takes ADDRESS (port 53), IPV4:PORT and [IPV6]:PORT
    # (plugin/pkg/parse/host.go: net.SplitHostPort).
    resolvers = " ".join(str(r) if zone.port in (None, _DNS_PORT)
                         else f"[{r}]:{zone.port}" if r.version == 6 else f"{r}:{zone.port}"
                         for r in zone.resolvers)
    return (f"{_zone_name(zone)}:{_DNS_PORT} {{\n"
            "    errors\n"
            "    cache 30\n"
            f"    forward . {resolvers}\n"
            "}\n")


def _coredns_custom(zones: Sequence[DnsZone]) -> dict[str, Any]:
    # Sorted by zone: the key order the API server returns, whatever the spec's order.
    ordered = sorted(zones, key=_zone_name)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(COREDNS_CUSTOM_NAME, "dns", "kube-system"),
        "data": {f"{_zone_name(z)}.server": _server_block(z) for z in ordered},
    }


# ---------------------------------------------------------------- connectivity test

# Run by busybox sh with the target and port as positional arguments: nothing
# is interpolated into the script. The summary line is what k3snet reads back.
_CONNECTIVITY_SCRIPT = """\
target="$1"
port="$2"
if ping -c 4 "$target"; then ping=ok; else ping=fail; fi
if [ -z "$port" ]; then tcp=skipped
elif nc -z -w 5 "$target" "$port"; then tcp=ok
else tcp=fail
fi
echo "k3snet-connectivity target=$target port=${port:--} ping=$ping tcp=$tcp"
[ "$ping" = ok ] && [ "$tcp" != fail ]
"""


def _connectivity_job(spec: Spec, test: ConnectivityTest) -> dict[str, Any]:
    pod_labels = _labels("connectivity-test")
    policy = spec.egress_policy
    if policy.restrict and policy.namespace == test.namespace:
        # The test pod is selected by the egress policy too, so it proves that the
        # restricted pods (not just any pod) reach the destination.
        pod_labels.update(dict(policy.pod_selector))
    args = [str(test.target), "" if test.port is None else str(test.port)]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _meta(CONNECTIVITY_JOB_NAME, "connectivity-test", test.namespace),
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": _JOB_DEADLINE_SECONDS,
            "ttlSecondsAfterFinished": _JOB_TTL_SECONDS,
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": CONNECTIVITY_CONTAINER,
                        "image": test.image,
                        "command": ["sh", "-c", _CONNECTIVITY_SCRIPT, _RESULT_PREFIX, *args],
                        "resources": {
                            "requests": {"cpu": "10m", "memory": "16Mi"},
                            "limits": {"cpu": "100m", "memory": "32Mi"},
                        },
                        "securityContext": {
                            "privileged": False,
                            "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True,
                            # busybox ping opens a raw ICMP socket: uid 0 with NET_RAW.
                            "runAsUser": 0,
                            "capabilities": {"add": ["NET_RAW"], "drop": ["ALL"]},
                        },
                    }],
                },
            },
        },
    }


# ---------------------------------------------------------------- public API


def render_manifests(
    spec: Spec,
    *,
    spec_text: str | None = None,
    flannel_conf: str | None = None,
    flannel_configmap_namespace: str | None = None,
    profiles: Mapping[str, Spec | tuple[Spec, str]] | None = None,
    node_report: bool = True,
    node_restriction: bool = False,
    lease_candidates: str | None = None,
) -> list[dict[str, Any]]:
    """The Kubernetes objects for ``spec``, in apply order.

    ``spec_text`` is the YAML the agent's ConfigMap carries (the spec file as
    written, comments included); by default the YAML form of ``spec``.

    When the spec's backends include ``flannel``, say where the agent finds
    flannel's config: ``flannel_conf``, the node file K3s reads with
    ``--flannel-conf`` (mounted from the host), or ``flannel_configmap_namespace``,
    the namespace of upstream flannel's ``kube-flannel-cfg`` ConfigMap (a Role
    allows the agent to read and patch that one ConfigMap); or leave both out when
    the spec's ``backends.flannel`` options give ``path`` or ``configmap``
    (``NAMESPACE/NAME``), which are then used (an option disagreeing with them is refused).

    ``profiles`` are per-node overrides: ``{name: spec}`` (or ``(spec, text)``)
    renders one more ConfigMap and DaemonSet per name, for the nodes labelled
    ``k3snet.io/profile=<name>``; the base DaemonSet skips those nodes. A
    profile may change what is the node's own (destinations, masquerade,
    sysctls ...), not what is shared (``backends``, ``cni``, ``agent``, ``cluster``).

    ``node_report`` (default on): the agent annotates its Node with its last
    result and records Events (RBAC: patch Nodes, create Events).

    ``node_restriction`` (default off; Kubernetes 1.30+): a ValidatingAdmissionPolicy
    and its binding that let the agent's ServiceAccount patch only its own Node (the
    report's annotations alone), record Events about it alone, hold the Lease only as
    its own node and create no ConfigMap but Cilium's ip-masq-agent one: what RBAC
    cannot limit, judged from the node name the API server puts in a pod-bound token
    (:data:`NODE_NAME_EXTRA`).

    ``lease_candidates`` (``LABEL`` or ``LABEL=VALUE``; a spec with a ``calico`` or
    ``cilium`` backend, or ``flannel`` through its ConfigMap, not a node's file): only the
    nodes with this label compete for the Lease (the agent's ``--lease-candidates``), and
    the agent may read Nodes (``get``), which it needs for that alone.

    Raises :class:`~k3snet.errors.SpecError` for an invalid spec, flannel options,
    profile or ``lease_candidates``.

    >>> from k3snet import seed_spec
    >>> print(" ".join(obj["kind"] for obj in render_manifests(seed_spec(), node_report=False)))
    ServiceAccount ConfigMap DaemonSet
    """
    problems = validate(spec) or _egress_policy_problems(spec)
    if problems:
        raise SpecError(problems)
    needs = _agent_needs(spec, flannel_conf, flannel_configmap_namespace, node_report,
                         node_restriction, lease_candidates=lease_candidates)
    others = _profiles(spec, profiles or {})
    # A spec's own text is 1.4 MB at 10,000 destinations, over a second to write: one
    # sure to be over the limit is refused from a cheap bound on its size, not written
    # (a profile's too: _profiles).
    least = _spec_size_at_least(spec) if spec_text is None else 0
    default = _Profile(DEFAULT_PROFILE, spec, "", least)
    too_big = [_too_big(spec.agent.namespace, profile.configmap, profile.least, at_least=True)
               for profile in (default, *others) if profile.least > CONFIGMAP_MAX_BYTES]
    text = ("" if default.least > CONFIGMAP_MAX_BYTES
            else _spec_text(spec) if spec_text is None else spec_text)
    objs = _agent_objects(spec, needs, text, others)
    if spec.dns:
        objs.append(_coredns_custom(spec.dns))
    too_big += _oversized_configmaps(objs)
    if too_big:
        raise SpecError(too_big)
    if spec.egress_policy.restrict:
        objs.append(_egress_policy(spec))
    if spec.connectivity_test is not None:
        objs.append(_connectivity_job(spec, spec.connectivity_test))
    return objs


def _oversized_configmaps(objs: Iterable[Mapping[str, Any]]) -> list[Problem]:
    """ConfigMaps the API server would refuse as too large, counted as it counts them.

    Caught here rather than by ``kubectl apply``: a spec of 10,000 destinations is well
    over 1 MiB as YAML, and the API server's refusal would leave every node without it.
    """
    problems = []
    for obj in objs:
        if obj["kind"] != "ConfigMap":
            continue
        size = sum(len(key.encode()) + len(value.encode()) for key, value in obj["data"].items())
        if size > CONFIGMAP_MAX_BYTES:
            problems.append(_too_big(obj["metadata"]["namespace"], obj["metadata"]["name"], size))
    return problems


def _too_big(namespace: str, name: str, size: int, *, at_least: bool = False) -> Problem:
    """ConfigMap ``namespace/name`` would hold ``size`` bytes (``at_least``: or more)."""
    where = ""
    if name.startswith(SPEC_CONFIGMAP_NAME + "-"):
        where = f"profiles.{name.removeprefix(SPEC_CONFIGMAP_NAME + '-')}"
    elif name == COREDNS_CUSTOM_NAME:
        where = "dns.zones"
    advice = ("fewer zones" if name == COREDNS_CUSTOM_NAME else
              "a shorter spec text (comments, values left at their defaults, "
              "destinations merged into wider prefixes)")
    return Problem(where, (
        f"ConfigMap {namespace}/{name} would hold {size} bytes{' or more' if at_least else ''}, "
        f"more than the {CONFIGMAP_MAX_BYTES} (1 MiB) the API server accepts; give {advice}"))


def _spec_size_at_least(spec: Spec) -> int:
    """A bound the ConfigMap holding ``spec``'s text (its key and that text) holds no
    fewer bytes than, without writing that text."""
    return _yaml_size_at_least(spec.to_dict()) + len(posixpath.basename(SPEC_PATH))


def _yaml_size_at_least(value: Any) -> int:
    """A bound :func:`_dump` writes ``value`` (a spec's dict) in no fewer bytes than: each
    key with its ``:`` and a space or line break, each list item's ``- ``, each scalar's
    text (quoting and escapes only add, and the output is ASCII) and its line break;
    indentation left out."""
    if isinstance(value, Mapping):
        return sum(len(str(key)) + 2 + _yaml_size_at_least(item) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return sum(2 + _yaml_size_at_least(item) for item in value)
    if value is None or value is True:
        return 5  # null, true
    if value is False:
        return 6
    return len(value if isinstance(value, str) else str(value)) + 1


def dump_manifests(objs: Iterable[Mapping[str, Any]]) -> str:
    """One multi-document YAML stream (``---`` between objects), for ``kubectl apply -f -``.

    Keys keep the order the objects were built in (``apiVersion``, ``kind``,
    ``metadata`` first); multi-line strings are written as ``|`` blocks; the same
    objects always give the same bytes.
    """
    return _dump(*(dict(obj) for obj in objs), explicit_start=True, width=100)


# Plain scalars some reader takes for no string: YAML 1.1's (PyYAML's resolvers, which
# the dumper already consults, leave out y and n), Go's YAML (kubectl: y, n, 0o17, 1e3 ...)
# and YAML 1.2's (editors: 09, 1e3, .inf). Quoting more than needed costs nothing.
_NOT_TEXT_WORDS: Final = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false",
                                    "null", "~", "", "<<", "=", ".inf", "-.inf", "+.inf",
                                    ".nan"})
_NUMBER_LIKE: Final = re.compile(
    r"[-+]?(?:[0-9][0-9_]*(?:[.:][0-9_]*)*(?:[eE][-+]?[0-9_]*)?|\.[0-9][0-9_]*"
    r"(?:[eE][-+]?[0-9_]*)?|0[bBoOxX][0-9a-fA-F_]*)")
_TIMESTAMP_LIKE: Final = re.compile(r"[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}(?:[Tt \t].*)?")


def _taken_for_no_text(value: str) -> bool:
    """Whether a reader of YAML 1.1, 1.2 or Go's YAML may read plain ``value`` as no
    string (a bool, a number, null, a timestamp, a merge key)."""
    return (value.lower() in _NOT_TEXT_WORDS or _NUMBER_LIKE.fullmatch(value) is not None
            or YAML12_NUMBER.fullmatch(value) is not None
            or _TIMESTAMP_LIKE.fullmatch(value) is not None)


def _dump(*documents: Any, **options: Any) -> str:
    """``documents`` as YAML (one document, or a ``---`` stream with ``explicit_start``),
    keys in their order, every string read back as that string by any reader: one that
    a reader may take for a bool or a number (``y``, ``09``, ``1e3``, ``0o17``: kubectl's
    Go YAML read a label ``y`` as true, ``09`` as 9) is quoted, keys too; multi-line
    strings are ``|`` blocks.

    Written by libyaml's emitter when PyYAML has it and it writes these documents
    byte for byte as PyYAML's own does (:func:`_libyaml_writes_alike`), else by PyYAML's
    own: the same bytes either way, libyaml's many times faster on a big spec."""
    try:
        import yaml  # noqa: PLC0415 - optional dependency (k3snet[cli] / k3snet[kube])
    except ImportError as exc:
        raise yaml_missing("writing Kubernetes manifests", exc) from exc

    def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        style = "|" if "\n" in value else "'" if _taken_for_no_text(value) else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    base: Any = yaml.SafeDumper
    if hasattr(yaml, "CSafeDumper") and _libyaml_writes_alike(documents):
        base = yaml.CSafeDumper
    # No &anchors / *aliases: every manifest reads on its own.
    dumper: Any = type("_Dumper", (base,), {"ignore_aliases": lambda self, data: True})
    dumper.add_representer(str, _str)
    return str(yaml.dump_all(list(documents), Dumper=dumper, sort_keys=False,
                             default_flow_style=False, **options))


# What libyaml's emitter (0.2.5, 0.2.6) writes otherwise than PyYAML's, found by
# tests/render/test_yaml_emitters.py: a double-quoted string folded at the width (after
# an escape, or a multi-line string with a space ending a line: no | block), a key that
# is empty, holds a line break or is over ~120 characters (a "? " key in one only), a
# |+ block (a string ending in two line breaks) before more of its document (a "..."
# at the stream's end in libyaml only), a document that is a scalar alone (PyYAML's
# "..." after a plain one).
_ALIKE_KEY: Final = re.compile(r"[ -~]{1,100}")
_ALIKE_TEXT: Final = re.compile(r"(?:[\n -~]*[ -~]\n?)?")


def _libyaml_writes_alike(documents: Iterable[Any]) -> bool:
    """Whether libyaml's emitter writes ``documents`` as PyYAML's own does: every string
    printable ASCII (no escapes), multi-line ones without a space ending a line and
    without a trailing blank line, keys of one short line; every document a mapping or
    a list."""
    stack = list(documents)
    if not all(isinstance(document, (Mapping, list, tuple)) for document in stack):
        return False
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            if _ALIKE_TEXT.fullmatch(value) is None or (
                    "\n" in value and (" \n" in value or value.endswith(" "))):
                return False
        elif isinstance(value, Mapping):
            if any(isinstance(key, str) and _ALIKE_KEY.fullmatch(key) is None
                   for key in value):
                return False
            stack.extend(value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend(value)
    return True


# ---------------------------------------------------------------- reading a result back


@attrs.frozen
class ConnectivityResult:
    """The outcome of the connectivity test Job.

    ``succeeded`` is ``True`` or ``False`` once the Job has finished and ``None``
    while it runs. ``ping`` and ``tcp`` are what its pod reported (``"ok"``,
    ``"fail"``; ``tcp`` is ``"skipped"`` without a port), or ``None`` when the log
    could not be read. ``message`` says it all in one line.
    """

    succeeded: bool | None
    message: str
    ping: str | None = None
    tcp: str | None = None


_RESULT_LINE = re.compile(rf"^{_RESULT_PREFIX}((?: [a-z]+=\S*)+)\s*$", re.MULTILINE)


def parse_connectivity_log(log: str) -> dict[str, str] | None:
    """The ``key=value`` pairs of the last ``k3snet-connectivity ...`` line of a log.

    >>> parse_connectivity_log("PING ...\\nk3snet-connectivity target=10.0.0.1 ping=ok tcp=ok\\n")
    {'target': '10.0.0.1', 'ping': 'ok', 'tcp': 'ok'}
    """
    matches = _RESULT_LINE.findall(log)
    if not matches:
        return None
    return dict(pair.split("=", 1) for pair in matches[-1].split())


_SUCCESS_CONDITIONS = ("Complete", "SuccessCriteriaMet")
# FailureTarget (Kubernetes 1.31+) comes before Failed, once the outcome is decided.
_FAILURE_CONDITIONS = ("Failed", "FailureTarget")


def _job_outcome(job: Any) -> tuple[bool | None, str]:
    for condition in (job.status.conditions or []) if job.status else []:
        if condition.status != "True":
            continue
        detail = ": ".join(p for p in (condition.reason, condition.message) if p)
        if condition.type in _SUCCESS_CONDITIONS:
            return True, condition.type + (f" ({detail})" if detail else "")
        if condition.type in _FAILURE_CONDITIONS:
            return False, condition.type + (f" ({detail})" if detail else "")
    return None, "still running"


def _job_pod(core_api: Any, namespace: str, name: str, uid: str | None,
             timeout: float | None) -> Any:
    """The newest pod of the Job (``backoffLimit: 0``: normally its only one)."""
    pods = core_api.list_namespaced_pod(namespace, label_selector=f"job-name={name}",
                                        _request_timeout=timeout).items
    # The selector again, client-side, and the owner: a pod of an earlier Job of the
    # same name must not speak for this one.
    mine = [
        pod for pod in pods
        if (pod.metadata.labels or {}).get("job-name") == name
        and (uid is None or not pod.metadata.owner_references
             or any(ref.uid == uid for ref in pod.metadata.owner_references))
    ]
    if not mine:
        return None
    return max(mine, key=lambda pod: (str(pod.metadata.creation_timestamp or ""),
                                      pod.metadata.name))


def _refused_pod(core_api: Any, namespace: str, name: str, uid: str | None,
                 timeout: float | None) -> str | None:
    """Why the Job's controller could not create its pod (its newest ``FailedCreate``
    event's message), or ``None``: no such event, or the events cannot be read."""
    from kubernetes.client.exceptions import ApiException  # noqa: PLC0415 - k3snet[kube]

    errors = KubeErrors(timeout=timeout)
    try:
        events = core_api.list_namespaced_event(
            namespace, field_selector=f"involvedObject.kind=Job,involvedObject.name={name}",
            _request_timeout=timeout).items
    except ApiException:
        return None
    except errors.catches():
        return None
    # The selector again, client-side, and the Job's uid: an earlier Job of the same
    # name must not speak for this one.
    mine = [event for event in events or []
            if event.reason == "FailedCreate" and event.involved_object is not None
            and event.involved_object.kind == "Job" and event.involved_object.name == name
            and (uid is None or event.involved_object.uid in (None, uid))]
    if not mine:
        return None
    newest = max(mine, key=lambda event: str(getattr(event, "last_timestamp", None)
                                             or getattr(event, "event_time", None) or ""))
    return " ".join(str(newest.message or "refused").split())


def read_connectivity_result(
    batch_api: Any, core_api: Any, namespace: str, name: str = CONNECTIVITY_JOB_NAME,
    *, timeout: float | None = DEFAULT_TIMEOUT,
) -> ConnectivityResult:
    """Read the connectivity test Job's status and, when possible, its pod's log.

    ``batch_api`` and ``core_api`` are ``kubernetes.client.BatchV1Api`` and
    ``CoreV1Api`` instances. The Job's conditions decide ``succeeded``; the pod
    log (the ``k3snet-connectivity ping=... tcp=...`` line) says which check
    failed. A log that cannot be read is mentioned in the message, not raised.
    Each request gives up after ``timeout`` seconds (``None``: never).

    Raises :class:`~k3snet.errors.BackendError` when the Job cannot be read (the
    API server refused, did not answer in time, or could not be reached).
    """
    from kubernetes.client.exceptions import ApiException  # noqa: PLC0415 - k3snet[kube]

    where = f"Job {namespace}/{name}"
    # Not only ApiException: an API server that is down or does not answer raises
    # urllib3's errors, which were reported as an internal error.
    errors = KubeErrors(timeout=timeout)
    try:
        job = batch_api.read_namespaced_job(name, namespace, _request_timeout=timeout)
    except ApiException as exc:
        raise BackendError(f"cannot read {where}: {exc.status} {exc.reason}") from exc
    except errors.catches() as exc:
        raise errors.classify(f"cannot read {where}", exc) from exc
    succeeded, state = _job_outcome(job)
    uid = job.metadata.uid if job.metadata else None
    fields: dict[str, str] | None = None
    note = ""
    try:
        pod = _job_pod(core_api, namespace, name, uid, timeout)
        if pod is None:
            # A pod the API server refused (the namespace's Pod Security level: the
            # test runs as uid 0 with NET_RAW) is only in the Job's events.
            refused = _refused_pod(core_api, namespace, name, uid, timeout)
            note = "no pod found" + (f": {refused}" if refused else "")
        else:
            log = core_api.read_namespaced_pod_log(pod.metadata.name, namespace,
                                                   container=CONNECTIVITY_CONTAINER,
                                                   _request_timeout=timeout)
            fields = parse_connectivity_log(log or "")
            if fields is None:
                note = f"pod {pod.metadata.name} has not reported yet"
    except ApiException as exc:
        note = f"log unavailable: {exc.status} {exc.reason}"
    except errors.catches() as exc:
        note = f"log unavailable: {errors.classify('read the log', exc)}"
    ping = fields.get("ping") if fields else None
    tcp = fields.get("tcp") if fields else None
    parts = [f"{where}: {state}"]
    if fields:
        target = fields.get("target", "?")
        port = fields.get("port", "-")
        parts.append(f"ping {target}: {ping}")
        parts.append(f"tcp {target}:{port}: {tcp}" if tcp != "skipped" else "tcp: skipped")
    if note:
        parts.append(note)
    verdict = {True: "passed", False: "FAILED", None: "pending"}[succeeded]
    # One printable line: a condition's or an event's message (an admission webhook's
    # denial), a pod's log, are written by others and must not forge a verdict line.
    return ConnectivityResult(
        succeeded, printable(f"connectivity test {verdict} -- " + "; ".join(parts)),
        ping=ping, tcp=tcp)
