"""The user-facing spec, its loading, and ``compile(spec, facts) -> State``.

A spec says what the operator wants for pod egress; :func:`compile` turns it
into the desired :class:`~k3snet.model.State` of one node, given that node's
:class:`NodeFacts`. The YAML form (keys in camelCase, like Kubernetes objects)::

    apiVersion: k3snet.io/v1alpha1
    kind: EgressSpec
    cluster:
      podCIDRs: [10.42.0.0/16]        # K3s defaults
      serviceCIDRs: [10.43.0.0/16]
    destinations:
      - cidr: 192.168.2.0/24
        gateway: 192.168.1.1
        device: eth0
    masquerade:
      mode: destinations              # or "all" (ip-masq-agent style) or "off"
    forward:
      accept: true
    sysctls:
      net.ipv4.conf.all.rp_filter: 2

Every problem of a spec is reported at once in one :class:`~k3snet.errors.SpecError`,
each with its path (``destinations[1].gateway``).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import attrs

from k3snet.errors import K3snetError, ModelError, Problem, SpecError
from k3snet.model._base import NetObject, validate_interface_name
from k3snet.model.cidr import Address, Network, contains, overlaps, parse_address, parse_network
from k3snet.model.forward import ForwardRule
from k3snet.model.nat import MasqueradeRule, SnatRule
from k3snet.model.route import MAIN_TABLE, Route
from k3snet.model.state import State
from k3snet.model.sysctl import Sysctl

__all__ = [
    "API_VERSION",
    "IP_MASQ_AGENT_DEFAULT_NON_MASQUERADE",
    "AgentSettings",
    "CalicoSettings",
    "Cluster",
    "CniSettings",
    "ConnectivityTest",
    "Destination",
    "DnsZone",
    "EgressPolicy",
    "FlannelSettings",
    "ForwardPolicy",
    "MasqueradePolicy",
    "NodeFacts",
    "Spec",
    "compile",
    "load_ip_masq_agent_config",
    "load_spec",
    "seed_spec",
]

API_VERSION = "k3snet.io/v1alpha1"
KIND = "EgressSpec"

K3S_POD_CIDR = "10.42.0.0/16"
K3S_SERVICE_CIDR = "10.43.0.0/16"

IP_MASQ_AGENT_DEFAULT_NON_MASQUERADE: tuple[str, ...] = (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "192.0.0.0/24",
    "192.0.2.0/24", "192.88.99.0/24", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24",
    "240.0.0.0/4",
)
"""ip-masq-agent's ``nonMasqueradeCIDRs`` when its config does not set the key."""

LINK_LOCAL = {4: parse_network("169.254.0.0/16"), 6: parse_network("fe80::/10")}
FORWARDING_SYSCTL = {4: "net.ipv4.ip_forward", 6: "net.ipv6.conf.all.forwarding"}

T = TypeVar("T")

_FLANNEL_TYPES = ("vxlan", "host-gw", "wireguard", "ipip", "udp", "alivpc", "alloc", "tencentvpc",
                  "extension", "ipsec", "gce", "aws-vpc")

MasqueradeMode = Literal["destinations", "all", "off"]


def _destinations(values: Iterable[Destination]) -> tuple[Destination, ...]:
    return tuple(values)


def _sysctls(values: Iterable[Sysctl]) -> tuple[Sysctl, ...]:
    return tuple(values)


def _strings(values: Iterable[str]) -> tuple[str, ...]:
    if isinstance(values, str):
        raise ModelError(f"expected a list of names, got the string {values!r}")
    return tuple(values)


def _networks(values: Iterable[str | Network]) -> tuple[Network, ...]:
    if isinstance(values, str):
        raise ModelError(f"expected a list of CIDRs, got the string {values!r}")
    return tuple(parse_network(v) for v in values)


def _addresses(values: Iterable[str | Address]) -> tuple[Address, ...]:
    if isinstance(values, str):
        raise ModelError(f"expected a list of addresses, got the string {values!r}")
    return tuple(parse_address(v) for v in values)


def _opt_address(value: str | Address | None) -> Address | None:
    return None if value is None else parse_address(value)


def _opt_ifname(value: str | None) -> str | None:
    return None if value is None else validate_interface_name(value)


@attrs.frozen
class Cluster:
    """The cluster's own address space: pod and service CIDRs (K3s defaults)."""

    pod_cidrs: tuple[Network, ...] = attrs.field(
        default=(parse_network(K3S_POD_CIDR),), converter=_networks
    )
    service_cidrs: tuple[Network, ...] = attrs.field(
        default=(parse_network(K3S_SERVICE_CIDR),), converter=_networks
    )

    def pods(self, family: int) -> tuple[Network, ...]:
        """Pod CIDRs of one family."""
        return tuple(n for n in self.pod_cidrs if n.version == family)

    def own(self, family: int) -> tuple[Network, ...]:
        """Pod and service CIDRs of one family."""
        return tuple(n for n in (*self.pod_cidrs, *self.service_cidrs) if n.version == family)


@attrs.frozen
class Destination:
    """A subnet pods must reach: how the node routes to it, and whether to NAT and forward.

    ``gateway``/``device`` make k3snet own a route (unless one exists already,
    in which case the plan says the need is met). ``exclude`` lists prefixes
    inside ``cidr`` that must keep the pod source address.
    """

    cidr: Network = attrs.field(converter=parse_network)
    gateway: Address | None = attrs.field(default=None, converter=_opt_address, kw_only=True)
    device: str | None = attrs.field(default=None, converter=_opt_ifname, kw_only=True)
    table: int = attrs.field(default=MAIN_TABLE, kw_only=True)
    metric: int | None = attrs.field(default=None, kw_only=True)
    masquerade: bool = attrs.field(default=True, kw_only=True)
    forward: bool = attrs.field(default=True, kw_only=True)
    exclude: tuple[Network, ...] = attrs.field(default=(), converter=_networks, kw_only=True)

    @property
    def family(self) -> int:
        """4 or 6."""
        return self.cidr.version

    @property
    def routed(self) -> bool:
        """True when the spec asks for a route to it."""
        return self.gateway is not None or self.device is not None


@attrs.frozen
class MasqueradePolicy:
    """Which pod traffic leaves the node with the node's address.

    * ``destinations`` (default): only traffic to the spec's destinations;
    * ``all``: everything but ``non_masquerade_cidrs`` (ip-masq-agent's semantics;
      the cluster's own CIDRs and link-local are always kept, link-local unless
      ``masq_link_local``), restricted to pod sources;
    * ``off``: no NAT (the CNI or the network handles it).

    ``snat_addresses`` (at most one per family) use SNAT to that address instead
    of masquerade.
    """

    mode: MasqueradeMode = attrs.field(default="destinations")
    non_masquerade_cidrs: tuple[Network, ...] = attrs.field(
        default=(), converter=_networks, kw_only=True
    )
    masq_link_local: bool = attrs.field(default=False, kw_only=True)
    masq_link_local_ipv6: bool = attrs.field(default=False, kw_only=True)
    out_interface: str | None = attrs.field(default=None, converter=_opt_ifname, kw_only=True)
    random_fully: bool = attrs.field(default=False, kw_only=True)
    snat_addresses: tuple[Address, ...] = attrs.field(
        default=(), converter=_addresses, kw_only=True
    )

    def snat_address(self, family: int) -> Address | None:
        """The SNAT address for one family, if any."""
        return next((a for a in self.snat_addresses if a.version == family), None)


@attrs.frozen
class ForwardPolicy:
    """Whether to open the FORWARD path for pod traffic to the destinations (and replies)."""

    accept: bool = True
    in_interface: str | None = attrs.field(default=None, converter=_opt_ifname, kw_only=True)


def _labels(value: Mapping[str, str] | Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    items = value.items() if isinstance(value, Mapping) else value
    return tuple(sorted((str(k), v) for k, v in items))


@attrs.frozen
class DnsZone:
    """Forward one DNS zone to resolvers outside the cluster (CoreDNS ``coredns-custom``)."""

    zone: str
    resolvers: tuple[Address, ...] = attrs.field(converter=_addresses)


def _zones(values: Iterable[DnsZone]) -> tuple[DnsZone, ...]:
    return tuple(values)


@attrs.frozen
class EgressPolicy:
    """Limit the selected pods' egress to the spec's destinations and cluster DNS.

    Rendered as Kubernetes NetworkPolicies: an ``ipBlock`` per destination, with
    ``except`` for the ``deny`` prefixes inside it. (A destination's ``exclude``
    is about NAT, not reachability: pods still reach those prefixes, with their
    own address.) ``restrict=False`` renders nothing.
    """

    restrict: bool = False
    namespace: str = "default"
    pod_selector: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_labels)
    """Label pairs (a mapping is accepted), sorted so equal selectors compare equal."""
    allow_dns: bool = True
    deny: tuple[Network, ...] = attrs.field(default=(), converter=_networks)
    """Prefixes inside destinations that the selected pods must not reach."""


@attrs.frozen
class ConnectivityTest:
    """A Job that proves pods reach a destination: ping, and a TCP connect to ``port``."""

    target: Address = attrs.field(converter=parse_address)
    port: int | None = None
    namespace: str = "default"
    image: str = "busybox:1.36"


@attrs.frozen
class AgentSettings:
    """How the k3snet agent DaemonSet runs on every node."""

    image: str = "ghcr.io/k3snet/k3snet:0.1.0"
    namespace: str = "kube-system"
    interval_seconds: int = 30


def _options(value: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> tuple[tuple[str, Any], ...]:
    items = value.items() if isinstance(value, Mapping) else value
    return tuple(sorted((str(k), v) for k, v in items))


@attrs.frozen
class FlannelSettings:
    """What k3snet sets in flannel's net-conf.json besides the pod CIDRs (``None``: leave it)."""

    backend_type: str | None = None
    backend_options: tuple[tuple[str, Any], ...] = attrs.field(default=(), converter=_options)
    """``Backend`` options such as ``VNI`` or ``Port`` (a mapping is accepted)."""
    enable_nftables: bool | None = None


@attrs.frozen
class CalicoSettings:
    """How the spec's pod CIDRs become Calico IPPools."""

    ipip_mode: Literal["Never", "Always", "CrossSubnet"] = "Never"
    vxlan_mode: Literal["Never", "Always", "CrossSubnet"] = "Never"
    block_size: int | None = None
    node_selector: str = "all()"
    allow_disruptive: bool = False
    """Let ``apply`` delete and re-create a pool whose ``cidr``/``blockSize`` changes."""


@attrs.frozen
class CniSettings:
    """CNI configuration k3snet manages (cluster level): flannel and/or Calico."""

    flannel: FlannelSettings | None = None
    calico: CalicoSettings | None = None


@attrs.frozen
class Spec:
    """Everything the operator wants for pod egress on a node."""

    cluster: Cluster = attrs.field(factory=Cluster)
    destinations: tuple[Destination, ...] = attrs.field(default=(), converter=_destinations)
    masquerade: MasqueradePolicy = attrs.field(factory=MasqueradePolicy)
    forward: ForwardPolicy = attrs.field(factory=ForwardPolicy)
    sysctls: tuple[Sysctl, ...] = attrs.field(default=(), converter=_sysctls)
    manage_forwarding: bool = True
    """Turn on ``ip_forward`` / ``conf.all.forwarding`` for every family in use."""
    backends: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    dns: tuple[DnsZone, ...] = attrs.field(default=(), converter=_zones)
    egress_policy: EgressPolicy = attrs.field(factory=EgressPolicy)
    connectivity_test: ConnectivityTest | None = None
    agent: AgentSettings = attrs.field(factory=AgentSettings)
    cni: CniSettings = attrs.field(factory=CniSettings)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str | None = None) -> Spec:
        """Parse the YAML/JSON form; every problem is reported in one SpecError."""
        reader = _Reader()
        spec = reader.spec(data)
        problems = list(reader.problems)
        # Cross-field checks run on the parts that parsed, so one pass reports
        # everything; a path that already has a parse problem is not reported twice.
        bad = {p.path for p in problems}
        problems += [p for p in validate(spec) if not any(_related(p.path, b) for b in bad if b)]
        if problems:
            raise SpecError(problems, source=source)
        return spec

    @classmethod
    def from_yaml(cls, text: str, *, source: str | None = None) -> Spec:
        """Parse YAML (or JSON) text."""
        return cls.from_dict(_load_mapping(text, source), source=source)

    def to_dict(self) -> dict[str, Any]:
        """The YAML/JSON form (inverse of :meth:`from_dict`)."""
        m = self.masquerade
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "cluster": {
                "podCIDRs": [str(n) for n in self.cluster.pod_cidrs],
                "serviceCIDRs": [str(n) for n in self.cluster.service_cidrs],
            },
            "destinations": [_destination_dict(d) for d in self.destinations],
            "masquerade": {
                "mode": m.mode,
                "nonMasqueradeCIDRs": [str(n) for n in m.non_masquerade_cidrs],
                "masqLinkLocal": m.masq_link_local,
                "masqLinkLocalIPv6": m.masq_link_local_ipv6,
                "outInterface": m.out_interface,
                "randomFully": m.random_fully,
                "snatAddresses": [str(a) for a in m.snat_addresses],
            },
            "forward": {"accept": self.forward.accept, "inInterface": self.forward.in_interface},
            "sysctls": {s.name: s.value for s in self.sysctls},
            "manageForwarding": self.manage_forwarding,
            "backends": list(self.backends),
            "dns": {"zones": [{"zone": z.zone, "resolvers": [str(r) for r in z.resolvers]}
                              for z in self.dns]},
            "egressPolicy": {
                "restrict": self.egress_policy.restrict,
                "namespace": self.egress_policy.namespace,
                "podSelector": dict(self.egress_policy.pod_selector),
                "allowDNS": self.egress_policy.allow_dns,
                "except": [str(n) for n in self.egress_policy.deny],
            },
            "connectivityTest": None if self.connectivity_test is None else {
                "target": str(self.connectivity_test.target),
                "port": self.connectivity_test.port,
                "namespace": self.connectivity_test.namespace,
                "image": self.connectivity_test.image,
            },
            "agent": {
                "image": self.agent.image,
                "namespace": self.agent.namespace,
                "intervalSeconds": self.agent.interval_seconds,
            },
            "cni": _cni_dict(self.cni),
        }


def _cni_dict(cni: CniSettings) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if cni.flannel is not None:
        data["flannel"] = {
            "backend": {"type": cni.flannel.backend_type,
                        "options": dict(cni.flannel.backend_options)},
            "enableNFTables": cni.flannel.enable_nftables,
        }
    if cni.calico is not None:
        c = cni.calico
        data["calico"] = {"ipipMode": c.ipip_mode, "vxlanMode": c.vxlan_mode,
                          "blockSize": c.block_size, "nodeSelector": c.node_selector,
                          "allowDisruptive": c.allow_disruptive}
    return data


def _related(path: str, other: str) -> bool:
    return path.startswith(other) or other.startswith(path)


def _destination_dict(d: Destination) -> dict[str, Any]:
    return {
        "cidr": str(d.cidr),
        "gateway": None if d.gateway is None else str(d.gateway),
        "device": d.device,
        "table": d.table,
        "metric": d.metric,
        "masquerade": d.masquerade,
        "forward": d.forward,
        "exclude": [str(n) for n in d.exclude],
    }


def _interfaces(
    value: Mapping[str, Iterable[str | ipaddress.IPv4Interface | ipaddress.IPv6Interface]],
) -> dict[str, tuple[ipaddress.IPv4Interface | ipaddress.IPv6Interface, ...]]:
    result = {}
    for name, addresses in value.items():
        validate_interface_name(name)
        try:
            result[name] = tuple(ipaddress.ip_interface(a) for a in addresses)
        except ValueError as exc:
            raise ModelError(f"interface {name}: {exc}") from exc
    return result


@attrs.frozen
class NodeFacts:
    """What compile needs to know about one node.

    ``interfaces`` maps interface names to their addresses *with* prefix
    (``"192.168.1.5/24"``): they give the connected prefixes a gateway must lie
    in. ``routes`` are other prefixes the node already reaches (a gateway may lie
    in one of them). Empty facts skip the checks that need them.
    """

    interfaces: Mapping[str, tuple[ipaddress.IPv4Interface | ipaddress.IPv6Interface, ...]] = (
        attrs.field(factory=dict, converter=_interfaces)
    )
    routes: tuple[Network, ...] = attrs.field(default=(), converter=_networks)
    hostname: str | None = None

    def connected(self) -> tuple[Network, ...]:
        """Prefixes of the node's own interface addresses."""
        return tuple(i.network for addrs in self.interfaces.values() for i in addrs)

    def reaches(self, address: Address) -> bool:
        """True when ``address`` is in a connected or routed prefix."""
        return any(contains(n, address) for n in (*self.connected(), *self.routes))




# ---------------------------------------------------------------- validation


def validate(spec: Spec) -> list[Problem]:
    """Cross-field problems of a spec (each with its path); empty when it is sound."""
    problems: list[Problem] = []
    add = problems.append
    cluster = spec.cluster
    if not cluster.pod_cidrs:
        add(Problem("cluster.podCIDRs", "at least one pod CIDR is needed"))
    _duplicates(problems, "cluster.podCIDRs", cluster.pod_cidrs)
    _duplicates(problems, "cluster.serviceCIDRs", cluster.service_cidrs)
    for i, pod in enumerate(cluster.pod_cidrs):
        for svc in cluster.service_cidrs:
            if overlaps(pod, svc):
                add(Problem(f"cluster.podCIDRs[{i}]",
                            f"{pod} overlaps service CIDR {svc}; pods and services need "
                            "separate ranges"))
    families: set[int] = {n.version for n in cluster.pod_cidrs}
    seen: dict[Network, int] = {}
    for i, dest in enumerate(spec.destinations):
        path = f"destinations[{i}]"
        if dest.cidr in seen:
            add(Problem(f"{path}.cidr", f"duplicate destination {dest.cidr} "
                                        f"(also destinations[{seen[dest.cidr]}])"))
        seen.setdefault(dest.cidr, i)
        problems += _destination_problems(path, dest, cluster, families)
    problems += _masquerade_problems(spec.masquerade, cluster)
    problems += _cluster_object_problems(spec)
    names: set[str] = set()
    for s in spec.sysctls:
        if s.name in names:
            add(Problem(f"sysctls.{s.name}", "duplicate sysctl"))
        names.add(s.name)
    return problems


def _destination_problems(
    path: str, dest: Destination, cluster: Cluster, families: set[int]
) -> list[Problem]:
    problems: list[Problem] = []
    add = problems.append
    if dest.gateway is not None and dest.gateway.version != dest.family:
        add(Problem(f"{path}.gateway", f"gateway {dest.gateway} is IPv{dest.gateway.version} "
                                       f"but destination {dest.cidr} is IPv{dest.family}"))
    for kind, nets in (("pod", cluster.pod_cidrs), ("service", cluster.service_cidrs)):
        for net in nets:
            if overlaps(dest.cidr, net):
                add(Problem(f"{path}.cidr",
                            f"{dest.cidr} overlaps the cluster {kind} CIDR {net}: traffic to it "
                            f"is routed inside the cluster and never leaves the node, a common "
                            f"cause of 'pods cannot reach the subnet'; renumber one of them"))
    if dest.family not in families and cluster.pod_cidrs:
        add(Problem(f"{path}.cidr", f"{dest.cidr} is IPv{dest.family} but the cluster has no "
                                    f"IPv{dest.family} pod CIDR"))
    for j, ex in enumerate(dest.exclude):
        if ex.version != dest.family:
            add(Problem(f"{path}.exclude[{j}]", f"{ex} is not IPv{dest.family} like {dest.cidr}"))
        elif not contains(dest.cidr, ex):
            add(Problem(f"{path}.exclude[{j}]", f"{ex} is not inside destination {dest.cidr}"))
        elif ex == dest.cidr:
            add(Problem(f"{path}.exclude[{j}]", "excludes the whole destination; set "
                                                "masquerade: false instead"))
    _duplicates(problems, f"{path}.exclude", dest.exclude)
    if isinstance(dest.table, bool) or not isinstance(dest.table, int) or not (
        1 <= dest.table < 2**32 and dest.table != 255
    ):
        add(Problem(f"{path}.table",
                    f"table must be 1..4294967295 and not 255, got {dest.table!r}"))
    if dest.metric is not None and (
        isinstance(dest.metric, bool) or not isinstance(dest.metric, int)
        or not 0 <= dest.metric < 2**32
    ):
        add(Problem(f"{path}.metric", f"metric must be 0..4294967295, got {dest.metric!r}"))
    return problems


def _masquerade_problems(policy: MasqueradePolicy, cluster: Cluster) -> list[Problem]:
    problems: list[Problem] = []
    if policy.mode not in ("destinations", "all", "off"):
        problems.append(Problem("masquerade.mode",
                                f"must be destinations, all or off, got {policy.mode!r}"))
    if policy.non_masquerade_cidrs and policy.mode != "all":
        problems.append(Problem("masquerade.nonMasqueradeCIDRs",
                                "only meaningful with mode: all (ip-masq-agent semantics)"))
    _duplicates(problems, "masquerade.nonMasqueradeCIDRs", policy.non_masquerade_cidrs)
    by_family: dict[int, Address] = {}
    for i, address in enumerate(policy.snat_addresses):
        if address.version in by_family:
            problems.append(Problem(f"masquerade.snatAddresses[{i}]",
                                    f"a second IPv{address.version} SNAT address "
                                    f"({by_family[address.version]} is already given)"))
        by_family.setdefault(address.version, address)
        if any(contains(n, address) for n in cluster.pod_cidrs):
            problems.append(Problem(f"masquerade.snatAddresses[{i}]",
                                    f"{address} is a pod address; SNAT needs a node address"))
    return problems


_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?")
_LABEL_NAME = re.compile(r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                         r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")


def _cluster_object_problems(spec: Spec) -> list[Problem]:
    """Fields that end up in Kubernetes objects: names, labels, zones, ports."""
    problems: list[Problem] = []
    add = problems.append
    zones: set[str] = set()
    for i, zone in enumerate(spec.dns):
        path = f"dns.zones[{i}]"
        name = zone.zone.rstrip(".").lower()
        if not name or any(not _DNS_LABEL.fullmatch(label) for label in name.split(".")):
            add(Problem(f"{path}.zone", f"{zone.zone!r} is not a DNS zone name"))
        if name in zones:
            add(Problem(f"{path}.zone", f"duplicate zone {zone.zone!r}"))
        zones.add(name)
        if not zone.resolvers:
            add(Problem(f"{path}.resolvers", "at least one resolver is needed"))
    return problems + _policy_problems(spec)


def _policy_problems(spec: Spec) -> list[Problem]:
    """Names, labels and prefixes of the egress policy, the agent and the test Job."""
    problems: list[Problem] = []
    add = problems.append
    for path, namespace in (("egressPolicy.namespace", spec.egress_policy.namespace),
                            ("agent.namespace", spec.agent.namespace),
                            ("connectivityTest.namespace",
                             spec.connectivity_test.namespace if spec.connectivity_test else "ok")):
        if not _DNS_LABEL.fullmatch(namespace):
            add(Problem(path, f"{namespace!r} is not a valid namespace name"))
    for i, denied in enumerate(spec.egress_policy.deny):
        holders = [d.cidr for d in spec.destinations if contains(d.cidr, denied)]
        if not holders:
            add(Problem(f"egressPolicy.except[{i}]",
                        f"{denied} is not inside any destination (only a destination's "
                        "ipBlock can have exceptions)"))
        elif denied in holders:
            add(Problem(f"egressPolicy.except[{i}]",
                        f"{denied} is a whole destination; remove the destination instead"))
    _duplicates(problems, "egressPolicy.except", spec.egress_policy.deny)
    for key, value in spec.egress_policy.pod_selector:
        if not isinstance(key, str) or not _LABEL_NAME.fullmatch(key) or len(key) > 317:
            add(Problem(f"egressPolicy.podSelector.{key}", "not a valid label key"))
        if not isinstance(value, str) or not _LABEL_VALUE.fullmatch(value):
            add(Problem(f"egressPolicy.podSelector.{key}",
                        f"{value!r} is not a valid label value"))
    test = spec.connectivity_test
    if test is not None and test.port is not None and (
        isinstance(test.port, bool) or not isinstance(test.port, int) or not 1 <= test.port <= 65535
    ):
        add(Problem("connectivityTest.port", f"must be 1..65535, got {test.port!r}"))
    interval = spec.agent.interval_seconds
    if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
        add(Problem("agent.intervalSeconds", f"must be a positive integer, got {interval!r}"))
    if not spec.agent.image or any(c.isspace() for c in spec.agent.image):
        add(Problem("agent.image", f"{spec.agent.image!r} is not an image reference"))
    return problems


def _duplicates(problems: list[Problem], path: str, values: Sequence[object]) -> None:
    seen: set[object] = set()
    for i, value in enumerate(values):
        if value in seen:
            problems.append(Problem(f"{path}[{i}]", f"duplicate entry {value}"))
        seen.add(value)


# ---------------------------------------------------------------- compile


def compile(spec: Spec, facts: NodeFacts | None = None) -> State:  # noqa: A001 - the name is the concept
    """The desired state of one node: routes, sysctls, forward and NAT rules it must own.

    ``facts`` (optional) lets compile check that devices exist and gateways are
    reachable; problems raise one :class:`~k3snet.errors.SpecError`.

    >>> state = compile(seed_spec())
    >>> for obj in state: print(obj)
    sysctl net.ipv4.ip_forward = 1
    route 192.168.2.0/24 via 192.168.1.1 dev eth0 table main metric 0 proto k3snet
    forward accept 10.42.0.0/16 -> 192.168.2.0/24 oif eth0 (+ replies)
    masquerade 10.42.0.0/16 -> 192.168.2.0/24 oif eth0
    """
    problems = validate(spec)
    if facts is not None:
        problems += _fact_problems(spec, facts)
    if problems:
        raise SpecError(problems)
    owned: list[NetObject] = []
    families_in_use: set[int] = set()
    for dest in spec.destinations:
        pods = spec.cluster.pods(dest.family)
        if dest.routed:
            owned.append(Route(dest.cidr, gateway=dest.gateway, device=dest.device,
                               table=dest.table, metric=dest.metric))
        if spec.forward.accept and dest.forward:
            owned += [ForwardRule(pod, dest.cidr, in_interface=spec.forward.in_interface,
                                  out_interface=dest.device) for pod in pods]
        if spec.masquerade.mode == "destinations" and dest.masquerade:
            out = dest.device or spec.masquerade.out_interface
            owned += [_nat_rule(spec.masquerade, pod, dest.cidr, dest.exclude, out) for pod in pods]
        if pods:
            families_in_use.add(dest.family)
    if spec.masquerade.mode == "all":
        for pod in spec.cluster.pod_cidrs:
            owned.append(_nat_all_rule(spec, pod))
            families_in_use.add(pod.version)
    explicit = {s.name for s in spec.sysctls}
    if spec.manage_forwarding:
        owned += [Sysctl(FORWARDING_SYSCTL[f], "1") for f in sorted(families_in_use)
                  if FORWARDING_SYSCTL[f] not in explicit]
    owned += spec.sysctls
    return State(owned=owned)


def _nat_rule(
    policy: MasqueradePolicy,
    source: Network,
    destination: Network | None,
    exclude: Iterable[Network],
    out: str | None,
) -> MasqueradeRule | SnatRule:
    snat = policy.snat_address(source.version)
    if snat is not None:
        return SnatRule(source, destination=destination, exclude=exclude, out_interface=out,
                        random_fully=policy.random_fully, to_address=snat)
    return MasqueradeRule(source, destination=destination, exclude=exclude, out_interface=out,
                          random_fully=policy.random_fully)


def _nat_all_rule(spec: Spec, pod: Network) -> MasqueradeRule | SnatRule:
    family = pod.version
    policy = spec.masquerade
    keep = [n for n in policy.non_masquerade_cidrs if n.version == family]
    keep += spec.cluster.own(family)
    keep += [d.cidr for d in spec.destinations if d.family == family and not d.masquerade]
    keep += [e for d in spec.destinations if d.family == family for e in d.exclude]
    link_local = policy.masq_link_local if family == 4 else policy.masq_link_local_ipv6
    if not link_local:
        keep.append(LINK_LOCAL[family])
    return _nat_rule(policy, pod, None, keep, policy.out_interface)


def _fact_problems(spec: Spec, facts: NodeFacts) -> list[Problem]:
    problems: list[Problem] = []
    known = set(facts.interfaces)
    for i, dest in enumerate(spec.destinations):
        path = f"destinations[{i}]"
        if known and dest.device is not None and dest.device not in known:
            problems.append(Problem(f"{path}.device", f"no interface {dest.device!r} on "
                                    f"{facts.hostname or 'the node'} "
                                    f"(has: {', '.join(sorted(known))})"))
        if (dest.gateway is not None and (facts.interfaces or facts.routes)
                and not facts.reaches(dest.gateway)):
            problems.append(Problem(f"{path}.gateway",
                                    f"gateway {dest.gateway} is not inside any connected or "
                                    f"routed prefix of {facts.hostname or 'the node'} "
                                    f"({', '.join(map(str, facts.connected() + facts.routes))})"))
        elif (dest.gateway is not None and dest.device is not None
                and dest.device in facts.interfaces
                and not any(contains(a.network, dest.gateway)
                            for a in facts.interfaces[dest.device])
                and not any(contains(n, dest.gateway) for n in facts.routes)):
            problems.append(Problem(f"{path}.gateway",
                                    f"gateway {dest.gateway} is not on {dest.device}'s networks"))
    out = spec.masquerade.out_interface
    if known and out is not None and out not in known:
        problems.append(Problem("masquerade.outInterface", f"no interface {out!r} on the node"))
    return problems


# ---------------------------------------------------------------- loading

class _Reader:
    """Reads the YAML/JSON form, collecting every problem with its path."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def mapping(self, value: Any, path: str, allowed: Iterable[str]) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.problem(path, f"expected a mapping, got {type(value).__name__}")
            return {}
        allowed = tuple(allowed)
        for key in value:
            if key not in allowed:
                self.problem(f"{path}.{key}" if path else str(key),
                             f"unknown key (known: {', '.join(allowed)})")
        return value

    def convert(self, value: Any, path: str, convert: Callable[[Any], T]) -> T | None:
        try:
            return convert(value)
        except (K3snetError, ValueError, TypeError) as exc:
            self.problem(path, str(exc))
            return None

    def sequence(self, value: Any, path: str) -> Sequence[Any]:
        if value is None:
            return ()
        if isinstance(value, str) or not isinstance(value, Sequence):
            self.problem(path, f"expected a list, got {type(value).__name__}")
            return ()
        return value

    def networks(self, value: Any, path: str) -> tuple[Network, ...]:
        result = [self.convert(v, f"{path}[{i}]", parse_network)
                  for i, v in enumerate(self.sequence(value, path))]
        return tuple(n for n in result if n is not None)

    def boolean(self, value: Any, path: str, default: bool) -> bool:
        if value is None:
            return default
        if not isinstance(value, bool):
            self.problem(path, f"expected true or false, got {value!r}")
            return default
        return value

    def spec(self, data: Any) -> Spec:
        top = self.mapping(data, "", ("apiVersion", "kind", "cluster", "destinations",
                                      "masquerade", "forward", "sysctls", "manageForwarding",
                                      "backends", "dns", "egressPolicy", "connectivityTest",
                                      "agent", "cni"))
        if "apiVersion" in top and top["apiVersion"] != API_VERSION:
            self.problem("apiVersion", f"expected {API_VERSION}, got {top['apiVersion']!r}")
        if "kind" in top and top["kind"] != KIND:
            self.problem("kind", f"expected {KIND}, got {top['kind']!r}")
        cluster = self.cluster(top.get("cluster"))
        destinations = [self.destination(d, f"destinations[{i}]")
                        for i, d in enumerate(self.sequence(top.get("destinations"),
                                                            "destinations"))]
        masquerade = self.masquerade(top.get("masquerade"))
        forward = self.forward(top.get("forward"))
        sysctls = self.sysctls(top.get("sysctls"))
        backends = [self.convert(b, f"backends[{i}]", _backend_name)
                    for i, b in enumerate(self.sequence(top.get("backends"), "backends"))]
        manage = self.boolean(top.get("manageForwarding"), "manageForwarding", True)
        return Spec(
            dns=self.dns(top.get("dns")),
            egress_policy=self.egress_policy(top.get("egressPolicy")),
            connectivity_test=self.connectivity_test(top.get("connectivityTest")),
            agent=self.agent(top.get("agent")),
            cni=self.cni(top.get("cni")),
            cluster=cluster,
            destinations=[d for d in destinations if d is not None],
            masquerade=masquerade,
            forward=forward,
            sysctls=sysctls,
            manage_forwarding=manage,
            backends=[b for b in backends if b is not None],
        )

    def cluster(self, value: Any) -> Cluster:
        data = self.mapping(value, "cluster", ("podCIDRs", "serviceCIDRs"))
        pods = self.networks(data["podCIDRs"], "cluster.podCIDRs") if "podCIDRs" in data else None
        services = (self.networks(data["serviceCIDRs"], "cluster.serviceCIDRs")
                    if "serviceCIDRs" in data else None)
        return Cluster(
            pod_cidrs=pods if pods is not None else (parse_network(K3S_POD_CIDR),),
            service_cidrs=services if services is not None else (parse_network(K3S_SERVICE_CIDR),),
        )

    def destination(self, value: Any, path: str) -> Destination | None:
        data = self.mapping(value, path, ("cidr", "gateway", "device", "table", "metric",
                                          "masquerade", "forward", "exclude"))
        if "cidr" not in data:
            self.problem(f"{path}.cidr", "required")
            return None
        cidr = self.convert(data["cidr"], f"{path}.cidr", parse_network)
        gateway = self.convert(data.get("gateway"), f"{path}.gateway", _opt_address)
        device = self.convert(data.get("device"), f"{path}.device", _opt_ifname)
        exclude = self.networks(data.get("exclude"), f"{path}.exclude")
        masq = self.boolean(data.get("masquerade"), f"{path}.masquerade", True)
        fwd = self.boolean(data.get("forward"), f"{path}.forward", True)
        table = data.get("table", MAIN_TABLE)
        metric = data.get("metric")
        if cidr is None:
            return None
        return Destination(cidr, gateway=gateway, device=device, table=table, metric=metric,
                           masquerade=masq, forward=fwd, exclude=exclude)

    def masquerade(self, value: Any) -> MasqueradePolicy:
        data = self.mapping(value, "masquerade", (
            "mode", "nonMasqueradeCIDRs", "masqLinkLocal", "masqLinkLocalIPv6", "outInterface",
            "randomFully", "snatAddresses", "ipMasqAgentConfig"))
        if "ipMasqAgentConfig" in data:
            imported = self.convert(data["ipMasqAgentConfig"], "masquerade.ipMasqAgentConfig",
                                    load_ip_masq_agent_config)
            if imported is not None:
                data = {**_ip_masq_agent_keys(imported), **data}
        non_masq = self.networks(data.get("nonMasqueradeCIDRs"), "masquerade.nonMasqueradeCIDRs")
        snat = [self.convert(a, f"masquerade.snatAddresses[{i}]", parse_address)
                for i, a in enumerate(self.sequence(data.get("snatAddresses"),
                                                    "masquerade.snatAddresses"))]
        out = self.convert(data.get("outInterface"), "masquerade.outInterface", _opt_ifname)
        mode = data.get("mode", "all" if "ipMasqAgentConfig" in data else "destinations")
        return MasqueradePolicy(
            mode=mode,
            non_masquerade_cidrs=non_masq,
            masq_link_local=self.boolean(data.get("masqLinkLocal"), "masquerade.masqLinkLocal",
                                         False),
            masq_link_local_ipv6=self.boolean(data.get("masqLinkLocalIPv6"),
                                              "masquerade.masqLinkLocalIPv6", False),
            out_interface=out,
            random_fully=self.boolean(data.get("randomFully"), "masquerade.randomFully", False),
            snat_addresses=[a for a in snat if a is not None],
        )

    def forward(self, value: Any) -> ForwardPolicy:
        data = self.mapping(value, "forward", ("accept", "inInterface"))
        return ForwardPolicy(
            accept=self.boolean(data.get("accept"), "forward.accept", True),
            in_interface=self.convert(data.get("inInterface"), "forward.inInterface",
                                      _opt_ifname),
        )

    def dns(self, value: Any) -> list[DnsZone]:
        data = self.mapping(value, "dns", ("zones",))
        zones = []
        for i, item in enumerate(self.sequence(data.get("zones"), "dns.zones")):
            path = f"dns.zones[{i}]"
            entry = self.mapping(item, path, ("zone", "resolvers"))
            zone = entry.get("zone")
            if not isinstance(zone, str):
                self.problem(f"{path}.zone", "required, a zone name such as corp.example")
                continue
            resolvers = [self.convert(r, f"{path}.resolvers[{j}]", parse_address)
                         for j, r in enumerate(self.sequence(entry.get("resolvers"),
                                                             f"{path}.resolvers"))]
            zones.append(DnsZone(zone, [r for r in resolvers if r is not None]))
        return zones

    def string(self, value: Any, path: str, default: str) -> str:
        if value is None:
            return default
        if not isinstance(value, str):
            self.problem(path, f"expected a string, got {value!r}")
            return default
        return value

    def egress_policy(self, value: Any) -> EgressPolicy:
        data = self.mapping(value, "egressPolicy", ("restrict", "namespace", "podSelector",
                                                    "allowDNS", "except"))
        raw_selector = data.get("podSelector")
        selector: Mapping[Any, Any] = {}
        if isinstance(raw_selector, Mapping):
            selector = raw_selector
        elif raw_selector is not None:
            self.problem("egressPolicy.podSelector", "expected a mapping of labels")
        return EgressPolicy(
            restrict=self.boolean(data.get("restrict"), "egressPolicy.restrict", False),
            namespace=self.string(data.get("namespace"), "egressPolicy.namespace", "default"),
            pod_selector={str(k): v for k, v in selector.items()},
            allow_dns=self.boolean(data.get("allowDNS"), "egressPolicy.allowDNS", True),
            deny=self.networks(data.get("except"), "egressPolicy.except"),
        )

    def connectivity_test(self, value: Any) -> ConnectivityTest | None:
        if value is None:
            return None
        data = self.mapping(value, "connectivityTest", ("target", "port", "namespace", "image"))
        target = self.convert(data.get("target"), "connectivityTest.target", parse_address)
        if target is None:
            return None
        return ConnectivityTest(
            target,
            port=data.get("port"),
            namespace=self.string(data.get("namespace"), "connectivityTest.namespace", "default"),
            image=self.string(data.get("image"), "connectivityTest.image", "busybox:1.36"),
        )

    def agent(self, value: Any) -> AgentSettings:
        data = self.mapping(value, "agent", ("image", "namespace", "intervalSeconds"))
        defaults = AgentSettings()
        return AgentSettings(
            image=self.string(data.get("image"), "agent.image", defaults.image),
            namespace=self.string(data.get("namespace"), "agent.namespace", defaults.namespace),
            interval_seconds=data.get("intervalSeconds", defaults.interval_seconds),
        )

    def cni(self, value: Any) -> CniSettings:
        data = self.mapping(value, "cni", ("flannel", "calico"))
        flannel = calico = None
        if data.get("flannel") is not None:
            raw = self.mapping(data["flannel"], "cni.flannel", ("backend", "enableNFTables"))
            backend = self.mapping(raw.get("backend"), "cni.flannel.backend", ("type", "options"))
            options = backend.get("options")
            if options is not None and not isinstance(options, Mapping):
                self.problem("cni.flannel.backend.options", "expected a mapping")
                options = None
            kind = backend.get("type")
            if kind is not None and kind not in _FLANNEL_TYPES:
                self.problem("cni.flannel.backend.type",
                             f"expected one of {', '.join(_FLANNEL_TYPES)}, got {kind!r}")
                kind = None
            nft = raw.get("enableNFTables")
            flannel = FlannelSettings(
                backend_type=kind,
                backend_options=options or {},
                enable_nftables=None if nft is None else self.boolean(
                    nft, "cni.flannel.enableNFTables", False),
            )
        if data.get("calico") is not None:
            raw = self.mapping(data["calico"], "cni.calico", (
                "ipipMode", "vxlanMode", "blockSize", "nodeSelector", "allowDisruptive"))
            modes = ("Never", "Always", "CrossSubnet")
            for key in ("ipipMode", "vxlanMode"):
                if raw.get(key, "Never") not in modes:
                    self.problem(f"cni.calico.{key}",
                                 f"expected one of {', '.join(modes)}, got {raw[key]!r}")
            block = raw.get("blockSize")
            if block is not None and (isinstance(block, bool) or not isinstance(block, int)):
                self.problem("cni.calico.blockSize", f"expected an integer, got {block!r}")
                block = None
            calico = CalicoSettings(
                ipip_mode=raw.get("ipipMode", "Never") if raw.get("ipipMode", "Never") in modes
                else "Never",
                vxlan_mode=raw.get("vxlanMode", "Never") if raw.get("vxlanMode", "Never") in modes
                else "Never",
                block_size=block,
                node_selector=self.string(raw.get("nodeSelector"), "cni.calico.nodeSelector",
                                          "all()"),
                allow_disruptive=self.boolean(raw.get("allowDisruptive"),
                                              "cni.calico.allowDisruptive", False),
            )
        return CniSettings(flannel=flannel, calico=calico)

    def sysctls(self, value: Any) -> list[Sysctl]:
        data = self.mapping(value, "sysctls", ()) if not isinstance(value, Mapping) else value
        result = []
        for name, setting in (data or {}).items():
            sysctl = self.convert((name, setting), f"sysctls.{name}", lambda p: Sysctl(*p))
            if sysctl is not None:
                result.append(sysctl)
        return result


def _backend_name(value: Any) -> str:
    if not isinstance(value, str) or not value.replace("-", "").replace("_", "").isalnum():
        raise ModelError(f"backend names are plain words, got {value!r}")
    return value


def _load_mapping(text: str, source: str | None) -> Any:
    try:
        import yaml  # noqa: PLC0415 - optional dependency (k3snet[spec])
    except ImportError:
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError([Problem("", f"not JSON, and PyYAML is not installed for YAML "
                                         f"(pip install 'k3snet[spec]'): {exc}")],
                            source=source) from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError([Problem("", f"not valid YAML: {exc}")], source=source) from exc


def load_spec(path: str | Path) -> Spec:
    """Read a spec from a YAML or JSON file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError([Problem("", f"cannot read {path}: {exc.strerror}")],
                        source=str(path)) from exc
    return Spec.from_yaml(text, source=str(path))


@attrs.frozen
class IpMasqAgentConfig:
    """ip-masq-agent's config file, as that agent reads it."""

    non_masquerade_cidrs: tuple[Network, ...]
    masq_link_local: bool = False
    masq_link_local_ipv6: bool = False
    resync_interval: str | None = None


def load_ip_masq_agent_config(source: str | Path | Mapping[str, Any]) -> IpMasqAgentConfig:
    """Read an ip-masq-agent config (a path, YAML/JSON text, or the parsed mapping).

    Missing ``nonMasqueradeCIDRs`` means ip-masq-agent's defaults
    (:data:`IP_MASQ_AGENT_DEFAULT_NON_MASQUERADE`), as in the agent itself; an
    empty list means none.
    """
    if isinstance(source, Mapping):
        data: Any = source
        where = "ip-masq-agent config"
    else:
        text = str(source)
        where = "ip-masq-agent config"
        if "\n" not in text and ":" not in text and Path(text).exists():
            where = text
            text = Path(text).read_text()
        data = _load_mapping(text, where)
    reader = _Reader()
    body = reader.mapping(data, "", ("nonMasqueradeCIDRs", "masqLinkLocal", "masqLinkLocalIPv6",
                                     "resyncInterval"))
    cidrs = (reader.networks(body["nonMasqueradeCIDRs"], "nonMasqueradeCIDRs")
             if "nonMasqueradeCIDRs" in body
             else tuple(parse_network(c) for c in IP_MASQ_AGENT_DEFAULT_NON_MASQUERADE))
    config = IpMasqAgentConfig(
        cidrs,
        masq_link_local=reader.boolean(body.get("masqLinkLocal"), "masqLinkLocal", False),
        masq_link_local_ipv6=reader.boolean(body.get("masqLinkLocalIPv6"), "masqLinkLocalIPv6",
                                            False),
        resync_interval=None if body.get("resyncInterval") is None
        else str(body["resyncInterval"]),
    )
    if reader.problems:
        raise SpecError(reader.problems, source=where)
    return config


def _ip_masq_agent_keys(config: IpMasqAgentConfig) -> dict[str, Any]:
    return {
        "mode": "all",
        "nonMasqueradeCIDRs": [str(n) for n in config.non_masquerade_cidrs],
        "masqLinkLocal": config.masq_link_local,
        "masqLinkLocalIPv6": config.masq_link_local_ipv6,
    }


def seed_spec() -> Spec:
    """The seed scenario: K3s pods on 192.168.1.0/24 nodes must reach 192.168.2.0/24."""
    return Spec(destinations=[Destination("192.168.2.0/24", gateway="192.168.1.1",
                                          device="eth0")])
