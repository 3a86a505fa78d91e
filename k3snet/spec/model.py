"""The spec's values: what the operator wants for pod egress, as frozen attrs classes.

Their YAML spelling lives in :mod:`k3snet.spec.schema` (the field table), not here:
these classes hold the defaults, the table holds the keys.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import attrs

from k3snet._regex import lazy_pattern
from k3snet._version import __version__
from k3snet.errors import ModelError
from k3snet.model import validate_interface_name
from k3snet.model.cidr import Address, Network, parse_address, parse_network
from k3snet.model.cni import FLANNEL_BACKEND_TYPES
from k3snet.model.route import MAIN_TABLE, parse_gateway
from k3snet.model.sysctl import Sysctl

__all__ = [
    "API_VERSION",
    "BLOCK_SIZE_KEYS",
    "FLANNEL_TYPES",
    "KIND",
    "NODE_ARCHITECTURES",
    "AgentSettings",
    "BlockSizes",
    "CalicoSettings",
    "CiliumSettings",
    "Cluster",
    "CniSettings",
    "ConnectivityTest",
    "Destination",
    "DnsZone",
    "EgressPolicy",
    "FlannelSettings",
    "ForwardPolicy",
    "MasqueradeMode",
    "MasqueradePolicy",
    "Spec",
    "node_architecture",
    "parse_resolver",
    "seed_spec",
    "spec_interface_name",
]

API_VERSION = "k3snet.io/v1alpha1"
KIND = "EgressSpec"

K3S_POD_CIDR = "10.42.0.0/16"
K3S_SERVICE_CIDR = "10.43.0.0/16"

FLANNEL_TYPES: tuple[str, ...] = FLANNEL_BACKEND_TYPES
"""Flannel backend types the spec accepts for ``cni.flannel.backend.type`` (flannel's names,
spelled once in :data:`k3snet.model.cni.FLANNEL_BACKEND_TYPES`)."""

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
    if type(values) is tuple and not values:  # most destinations' exclude: the default
        return ()
    if isinstance(values, str):
        raise ModelError(f"expected a list of CIDRs, got the string {values!r}")
    return tuple(parse_network(v) for v in values)


def _addresses(values: Iterable[str | Address]) -> tuple[Address, ...]:
    if isinstance(values, str):
        raise ModelError(f"expected a list of addresses, got the string {values!r}")
    return tuple(parse_address(v) for v in values)


_DISCARD_ONLY = ipaddress.IPv6Network("100::/64")


def parse_resolver(value: str | Address) -> Address:
    """``value`` as the address of a DNS resolver CoreDNS forwards a zone to (``forward
    . ADDRESS``): a unicast address the CoreDNS pod can reach, else a
    :class:`~k3snet.errors.ModelError` saying why.

    Refused: an IPv6 zone id (``fe80::1%eth0``: CoreDNS dials it through the interface of
    that name in its own pod, not the node's); IPv6 link-local (``fe80::/10``: without a
    zone id the kernel refuses to send to it, EINVAL; with one it reaches only the pod's
    own link); loopback (``127.0.0.53``, ``::1``, ``::ffff:127.0.0.1``: in the CoreDNS
    pod, CoreDNS itself); IPv4-compatible IPv6 (``::127.0.0.1``: deprecated, dialled over
    IPv6 as ``::7f00:1``, not as the IPv4 address); the unspecified address, multicast
    and the broadcast address, which no resolver has; an address with a port or a scheme
    (``192.168.1.53:5353``, ``dns://...``), named as such: a zone's ``port`` gives the
    port; IPv6 discard-only ``100::/64`` (RFC 6666: routed to be dropped, no host has
    one). Taken, as Linux routes them as unicast: IPv4 link-local (``169.254.20.10``:
    NodeLocal DNSCache's, a cloud's metadata resolver), ``240.0.0.0/4``, ``0.0.0.0/8``
    but ``0.0.0.0``, the documentation prefixes (``192.0.2.0/24``, ``198.51.100.0/24``,
    ``203.0.113.0/24``, ``2001:db8::/32``, ``3fff::/20``: labs address hosts from them)
    and the deprecated site-local ``fec0::/10`` (RFC 3879 has it treated as global
    unicast, and older sites still number hosts from it).
    """
    if isinstance(value, str) and (problem := _address_form_problem(value.strip())):
        raise ModelError(f"{value.strip()!r} {problem}")
    address = parse_address(value)
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        raise ModelError(f"{str(address)!r} has a zone id ('%{address.scope_id}'): CoreDNS "
                         "dials through the interface of that name in its own pod, not "
                         "the node's; give the resolver's global or unique local address")
    plain = (address.ipv4_mapped or address) if isinstance(address, ipaddress.IPv6Address) \
        else address
    why = ("a loopback address: in the CoreDNS pod it is CoreDNS itself, not the node's "
           "resolver; give the resolver's address on the network" if plain.is_loopback
           else "the unspecified address: no resolver has it" if plain.is_unspecified
           else "a multicast address: a resolver has a unicast address" if plain.is_multicast
           else "the broadcast address: a resolver has a unicast address"
           if plain == ipaddress.IPv4Address("255.255.255.255")
           else "in the discard-only prefix 100::/64 (RFC 6666): routed to be dropped, no "
           "resolver has it" if plain in _DISCARD_ONLY
           else "an IPv6 link-local address: the CoreDNS pod's kernel refuses to send to it "
           "without a zone id, and with one it reaches only the pod's own link; give the "
           "resolver's global or unique local address" if plain.is_link_local
           and isinstance(plain, ipaddress.IPv6Address)
           else "an IPv4-compatible IPv6 address (deprecated, RFC 4291): CoreDNS sends to it "
           f"over IPv6, not to {ipaddress.IPv4Address(int(plain))}; give the IPv4 address"
           if isinstance(plain, ipaddress.IPv6Address) and int(plain) >> 32 == 0 else None)
    if why is not None:
        raise ModelError(f"{str(address)!r} is {why}")
    return address


# CoreDNS's forward takes [SCHEME://]ADDRESS[:PORT]; the spec takes the address alone.
_SCHEME = lazy_pattern(r"[a-z0-9+.-]+://", re.IGNORECASE)
_WITH_PORT = lazy_pattern(r"(?:\[(?P<v6>[^\]]*)\]|(?P<v4>[0-9.]+)):(?P<port>[0-9]*)")


def _address_form_problem(text: str) -> str | None:
    """Why ``text`` is CoreDNS's ``SCHEME://ADDRESS`` or ``ADDRESS:PORT`` form, else ``None``."""
    if scheme := _SCHEME.match(text):
        return (f"gives a scheme ({scheme.group()!r}): a resolver is an address, sent plain "
                "DNS on the zone's port (tls://, https:// are not rendered)")
    if _WITH_PORT.fullmatch(text):
        return ("gives a port (ADDRESS:PORT, [IPv6]:PORT): a resolver is an address; set the "
                "zone's port (dns.zones[].port) for a resolver not on 53")
    return None


def _resolvers(values: Iterable[str | Address]) -> tuple[Address, ...]:
    if isinstance(values, str):
        raise ModelError(f"expected a list of addresses, got the string {values!r}")
    return tuple(parse_resolver(v) for v in values)


def _opt_gateway(value: str | Address | None) -> Address | None:
    return None if value is None else parse_gateway(value)


# Names of /proc/sys/net/ipv{4,6}/conf/ entries, which the kernel refuses as interface
# names (EINVAL): written in a spec they meant "every interface", and matched none.
_NOT_INTERFACES = frozenset({"all", "default"})


def spec_interface_name(value: str) -> str:
    """An interface name a spec may give: one the model takes, and not ``all`` or
    ``default``, which no interface can be named (the kernel refuses them), so that a
    rule through one would match nothing."""
    name = validate_interface_name(value)
    if name in _NOT_INTERFACES:
        raise ModelError(f"no interface can be named {name!r} (the kernel refuses it: it is "
                         "the name of a sysctl directory); to match every interface, leave "
                         "the interface out")
    return name


def _opt_ifname(value: str | None) -> str | None:
    return None if value is None else spec_interface_name(value)


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
    gateway: Address | None = attrs.field(default=None, converter=_opt_gateway, kw_only=True)
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
    resolvers: tuple[Address, ...] = attrs.field(default=(), converter=_resolvers)
    port: int | None = None
    """The port the resolvers answer on, each on the same one (``forward . ADDRESS:PORT``);
    ``None``: 53."""


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


def _release(version: str) -> str:
    """The release a version names, its leading dotted numbers (PEP 440): ``0.1.0`` for
    ``0.1.0.dev0``, ``1.2`` for ``1.2rc1``."""
    numbers = []
    for part in version.split("."):
        digits = len(part) - len(part.lstrip("0123456789"))
        if digits:
            numbers.append(part[:digits])
        if digits < len(part) or not digits:
            break
    return ".".join(numbers) or version


DEFAULT_AGENT_IMAGE = f"ghcr.io/k3snet/k3snet:{_release(__version__)}"
"""The agent image of this release: the manifests of one k3snet run its agent (a
constant here stayed 0.1.0 through a version bump, and a newer release's DaemonSet
would have started an older agent, without the flags it passes)."""


NODE_ARCHITECTURES = ("386", "amd64", "arm", "arm64", "loong64", "mips", "mips64",
                      "mips64le", "mipsle", "ppc64", "ppc64le", "riscv64", "s390x")
"""The values of the ``kubernetes.io/arch`` node label (Go's GOARCH for Linux)."""

# Other names of them (uname -m, Debian's): a node label is never one of these, so a
# DaemonSet asking for it would run on no node.
_ARCHITECTURE_NAMES = {"x86_64": "amd64", "x86-64": "amd64", "x64": "amd64",
                       "aarch64": "arm64", "armv8": "arm64", "i386": "386", "i686": "386",
                       "x86": "386", "armhf": "arm", "armel": "arm", "armv7l": "arm",
                       "armv6l": "arm", "ppc64el": "ppc64le", "mips64el": "mips64le",
                       "mipsel": "mipsle", "loongarch64": "loong64"}


def node_architecture(value: Any) -> str:
    """``value`` if it is a ``kubernetes.io/arch`` label value (``amd64``, ``arm64`` ...)."""
    if isinstance(value, str) and value in NODE_ARCHITECTURES:
        return value
    lower = value.lower() if isinstance(value, str) else None
    known = (lower if lower in NODE_ARCHITECTURES else _ARCHITECTURE_NAMES.get(lower or ""))
    hint = f" ({value} is {known} there)" if known else ""
    raise ModelError(f"{str(value)[:40]!r} is not a kubernetes.io/arch value{hint}; one of "
                     f"{', '.join(NODE_ARCHITECTURES)}")


def _architectures(values: Iterable[str] | None) -> tuple[str, ...] | None:
    if values is None:
        return None
    if isinstance(values, str):
        raise ModelError(f"expected a list of architectures, got the string {values!r}")
    return tuple(sorted({node_architecture(value) for value in values}))


@attrs.frozen
class AgentSettings:
    """How the k3snet agent DaemonSet runs on every node."""

    image: str = DEFAULT_AGENT_IMAGE
    namespace: str = "kube-system"
    interval_seconds: int = 30
    create_namespace: bool = True
    """Render a ``Namespace`` for ``namespace`` (a built-in one never is). Off when the
    namespace exists already: ``kubectl apply`` would set its Pod Security level to
    ``privileged`` for every pod in it, and ``kubectl delete -f`` would delete it with
    everything it holds."""
    architectures: tuple[str, ...] | None = attrs.field(default=None, converter=_architectures)
    """The ``kubernetes.io/arch`` values of the nodes the DaemonSet runs on: those the
    image is built for (``make image`` builds for its machine's alone). ``None``: every
    node, and one of another architecture cannot run the image."""


def _options(value: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> tuple[tuple[str, Any], ...]:
    items = value.items() if isinstance(value, Mapping) else value
    return tuple(sorted((str(k), v) for k, v in items))


def _backend_options(value: Mapping[str, Mapping[str, Any]] | Iterable[tuple[str, Any]],
                     ) -> tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]:
    items = value.items() if isinstance(value, Mapping) else value
    return tuple(sorted((str(name), _options(options)) for name, options in items if options))


@attrs.frozen
class FlannelSettings:
    """What k3snet sets in flannel's net-conf.json besides the pod CIDRs (``None``: leave it)."""

    backend_type: str | None = None
    backend_options: tuple[tuple[str, Any], ...] = attrs.field(default=(), converter=_options)
    """``Backend`` options such as ``VNI`` or ``Port`` (a mapping is accepted)."""
    enable_nftables: bool | None = None
    set_networks: bool = False
    """Write the pod CIDRs as flannel's ``Network`` / ``IPv6Network`` (and ``EnableIPv6``;
    ``EnableIPv4: false`` without an IPv4 one, which flannel would otherwise refuse).

    Off by default: k3snet then only checks that flannel's networks are the pod
    CIDRs (a ``!`` conflict when they are not), since changing them on a running
    cluster changes what flannel routes and masquerades and stops it on nodes whose
    podCIDR they do not contain (a disruptive change, refused unless allowed).
    """


BLOCK_SIZE_KEYS: Mapping[str, int] = {"ipv4": 4, "ipv6": 6}
"""The keys of ``cni.calico.blockSize``'s per-family form, and their families."""


@attrs.frozen
class BlockSizes:
    """``cni.calico.blockSize`` per family (``{ipv4: 26, ipv6: 122}``), for dual-stack clusters.

    Calico takes 20..32 for an IPv4 pool and 116..128 for an IPv6 one, so one
    integer never fits both. ``None``: no requirement on that family's pool (as an
    unset ``blockSize``). The values are kept as given; :func:`~k3snet.spec.validate.validate`
    judges them, with their paths (``cni.calico.blockSize.ipv6``).

    >>> BlockSizes(ipv4=24).for_family(4), BlockSizes(ipv4=24).for_family(6)
    (24, None)
    """

    ipv4: int | None = attrs.field(default=None, kw_only=True)
    ipv6: int | None = attrs.field(default=None, kw_only=True)

    def for_family(self, version: int) -> int | None:
        """The size wanted of the pools of one family (4 or 6)."""
        return self.ipv4 if version == 4 else self.ipv6

    def given(self) -> tuple[tuple[str, int], ...]:
        """The keys set, with their values, in key order (``ipv4`` first)."""
        return tuple((key, value) for key in BLOCK_SIZE_KEYS
                     if (value := getattr(self, key)) is not None)


def _block_size(value: int | BlockSizes | Mapping[str, int] | None) -> int | BlockSizes | None:
    """A mapping (``{"ipv4": 26}``) as :class:`BlockSizes`, one setting no family as
    ``None`` (unset, as written back); anything else as given."""
    if isinstance(value, Mapping):
        unknown = sorted(map(str, set(value) - set(BLOCK_SIZE_KEYS)))
        if unknown:
            raise ModelError(f"blockSize per family takes ipv4 and ipv6, not "
                             f"{', '.join(unknown)}")
        value = BlockSizes(**value)
    if isinstance(value, BlockSizes) and not value.given():
        return None
    return value


@attrs.frozen
class CalicoSettings:
    """How the spec's pod CIDRs become Calico IPPools."""

    ipip_mode: Literal["Never", "Always", "CrossSubnet"] = "Never"
    vxlan_mode: Literal["Never", "Always", "CrossSubnet"] = "Never"
    block_size: int | BlockSizes | None = attrs.field(default=None, converter=_block_size)
    """The blockSize the pod CIDRs' pools must have: one integer for a single-stack
    cluster, :class:`BlockSizes` (a mapping is accepted) for a dual-stack one."""
    node_selector: str = "all()"
    allow_disruptive: bool = False
    """The old spelling of :attr:`CniSettings.allow_disruptive` (still honoured, for every
    backend)."""


def _opt_network(value: str | Network | None) -> Network | None:
    return None if value is None else parse_network(value)


def _opt_networks(values: Iterable[str | Network] | None) -> tuple[Network, ...] | None:
    return None if values is None else _networks(values)


@attrs.frozen
class CiliumSettings:
    """The Cilium settings k3snet sets (``None``: the key stays Cilium's and its admin's)."""

    routing_mode: Literal["tunnel", "native"] | None = None
    tunnel_protocol: Literal["vxlan", "geneve"] | None = None
    ipv4_native_routing_cidr: Network | None = attrs.field(default=None, converter=_opt_network)
    ipv6_native_routing_cidr: Network | None = attrs.field(default=None, converter=_opt_network)
    enable_ipv4_masquerade: bool | None = None
    enable_ipv6_masquerade: bool | None = None
    bpf_masquerade: bool | None = None
    ip_masq_agent: bool | None = None
    egress_masquerade_interfaces: str | None = None
    non_masquerade_cidrs: tuple[Network, ...] | None = attrs.field(default=None,
                                                                   converter=_opt_networks)
    """The ip-masq-agent's list (k3snet then owns the whole list)."""
    masq_link_local: bool | None = None
    masq_link_local_ipv6: bool | None = None


@attrs.frozen
class CniSettings:
    """CNI configuration k3snet manages (cluster level): flannel, Calico and/or Cilium."""

    flannel: FlannelSettings | None = None
    calico: CalicoSettings | None = None
    cilium: CiliumSettings | None = None
    allow_disruptive: bool | None = None
    """Let the CNI backends make changes that disrupt running pods (each backend's
    ``disruptive(change)`` says which and why); refused otherwise. ``None``: not given
    (the same as false; left out of the written spec)."""

    @property
    def disruptive_allowed(self) -> bool:
        """``allowDisruptive``, or its alias ``calico.allowDisruptive``."""
        return bool(self.allow_disruptive) or (self.calico is not None
                                               and self.calico.allow_disruptive)


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
    backend_options: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = attrs.field(
        default=(), converter=_backend_options, kw_only=True)
    """Options of backends by name (a mapping of mappings is accepted): the keyword
    options of their constructors, under ``backends:`` in the YAML form."""
    dns: tuple[DnsZone, ...] = attrs.field(default=(), converter=_zones)
    egress_policy: EgressPolicy = attrs.field(factory=EgressPolicy)
    connectivity_test: ConnectivityTest | None = None
    agent: AgentSettings = attrs.field(factory=AgentSettings)
    cni: CniSettings = attrs.field(factory=CniSettings)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str | None = None) -> Spec:
        """Parse the YAML/JSON form; every problem is reported in one SpecError."""
        from k3snet.spec.load import spec_from_dict  # noqa: PLC0415 - load imports this module

        return spec_from_dict(data, source=source)

    @classmethod
    def from_yaml(cls, text: str, *, source: str | None = None) -> Spec:
        """Parse a YAML (or JSON) spec document; ``apiVersion`` and ``kind`` are required."""
        from k3snet.spec.load import load_mapping, spec_from_document  # noqa: PLC0415

        return spec_from_document(load_mapping(text, source), source=source)

    def to_dict(self) -> dict[str, Any]:
        """The YAML/JSON form (inverse of :meth:`from_dict`), written by the field table."""
        from k3snet.spec.schema import write_spec  # noqa: PLC0415 - schema imports this module

        return write_spec(self)


def seed_spec() -> Spec:
    """The seed scenario: K3s pods on 192.168.1.0/24 nodes must reach 192.168.2.0/24."""
    return Spec(destinations=[Destination("192.168.2.0/24", gateway="192.168.1.1",
                                          device="eth0")])
