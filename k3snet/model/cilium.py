"""Cilium's masquerade settings, as values, and what Cilium does with them.

Two ConfigMaps in Cilium's namespace decide whether Cilium masquerades traffic
from a pod to a destination:

* ``cilium-config`` (keys in :data:`CILIUM_KEYS`): ``enable-ipv4-masquerade`` /
  ``enable-ipv6-masquerade`` turn masquerading on (default on);
  ``ipv4-native-routing-cidr`` / ``ipv6-native-routing-cidr`` are never
  masqueraded to; ``enable-bpf-masquerade`` picks the eBPF implementation over
  iptables, and only with it does ``enable-ip-masq-agent`` apply;
  ``egress-masquerade-interfaces`` limits iptables masquerading to some
  interfaces, ``devices`` (unless ``force-device-detection``) eBPF masquerading;
  ``routing-mode`` / ``tunnel-protocol`` are how pods reach each other.
  ``enable-ipv4``, ``enable-ipv6``, ``ipam``, the ``cluster-pool-*-cidr`` keys,
  ``devices`` and ``force-device-detection`` (``enforce-device-detection``
  before its rename) are read
  (:data:`CILIUM_CONTEXT_KEYS`), never written.
* ``ip-masq-agent`` (its key ``config``, YAML or JSON, mounted at
  ``/etc/config/ip-masq-agent``): ``nonMasqueradeCIDRs``, ``masqLinkLocal``,
  ``masqLinkLocalIPv6`` (:data:`IP_MASQ_AGENT_KEYS`). A missing or *empty* file
  means Cilium's default list (:data:`IP_MASQ_AGENT_DEFAULTS`); a file that
  sets any key but not ``nonMasqueradeCIDRs`` means no CIDR at all. Link-local
  ranges are added unless ``masqLinkLocal`` / ``masqLinkLocalIPv6`` is true.
  The file exists only where the ``cilium`` DaemonSet mounts the ConfigMap there
  (Helm ``ipMasqAgent.enabled=true``): unmounted, whatever the ConfigMap says, Cilium
  reads no file (:attr:`CiliumConfig.ip_masq_agent_unmounted`); where nothing at all is
  mounted at ``/etc/config``, the agent does not start with ``enable-ip-masq-agent``
  (:attr:`CiliumConfig.ip_masq_agent_no_directory`, :func:`startup_problems`).

Names and defaults were read from Cilium's documentation (docs.cilium.io
``stable``, the 1.18 series, and ``latest``: network/concepts/masquerading) and
Cilium's main-branch source of the same time: the Helm template
``install/kubernetes/cilium/templates/cilium-configmap.yaml`` (key names, Helm
defaults with 1.18 upgrade compatibility, the ``ip-masq-agent`` ConfigMap
written with ``toJson``), ``pkg/ipmasq/ipmasq.go`` (the file's shape, Go's
case-insensitive keys, the empty-file rule), ``pkg/ipmasq/cell/config.go`` (the
path) and ``pkg/defaults`` (the agent's flag defaults).

:class:`CiliumConfig` is the value k3snet owns (the keys it sets) or observes
(the keys as they would be without k3snet); :class:`CiliumMasquerade` is an
expectation: the spec's destinations are masqueraded, or exempt, as it says,
judged against what Cilium will do (:func:`why_not_masqueraded`).

>>> wanted = CiliumConfig(CILIUM_DEFAULT_TARGET, settings={"enable-bpf-masquerade": "true"})
>>> wanted.describe()
'cilium configmap:kube-system/cilium-config enable-bpf-masquerade=true'
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import attrs

from k3snet._regex import lazy_pattern
from k3snet.errors import ModelError
from k3snet.model._base import NetObject, net_tuple, one_line
from k3snet.model.cidr import (
    Network,
    contains,
    go_cidr_text,
    overlaps,
    parse_network,
    subtract,
)
from k3snet.model.cni import JsonMapping, canonical_json
from k3snet.model.state import register_object_type

__all__ = [
    "AGENT_OPTION_KEYS",
    "CILIUM_BOOL_KEYS",
    "CILIUM_CONTEXT_KEYS",
    "CILIUM_DEFAULTS",
    "CILIUM_DEFAULT_TARGET",
    "CILIUM_DISRUPTIVE_KEYS",
    "CILIUM_KEYS",
    "IP_MASQ_AGENT_DEFAULTS",
    "IP_MASQ_AGENT_KEYS",
    "CiliumAgentOption",
    "CiliumConfig",
    "CiliumEgressGateway",
    "CiliumMasquerade",
    "CiliumNodeOverride",
    "cilium_target",
    "parse_go_bool",
    "pool_problems",
    "read_go_flag",
    "same_setting",
    "setting_problem",
    "startup_problems",
    "why_not_masqueraded",
]

CILIUM_KEYS: tuple[str, ...] = (
    "routing-mode", "tunnel-protocol",
    "enable-ipv4-masquerade", "enable-ipv6-masquerade",
    "enable-bpf-masquerade", "enable-ip-masq-agent",
    "ipv4-native-routing-cidr", "ipv6-native-routing-cidr",
    "egress-masquerade-interfaces", "enable-masquerade-to-route-source",
)
"""The ``cilium-config`` keys k3snet may set (each only when the spec asks for it)."""

CILIUM_CONTEXT_KEYS: tuple[str, ...] = (
    "enable-ipv4", "enable-ipv6", "ipam", "cluster-pool-ipv4-cidr", "cluster-pool-ipv6-cidr",
    "devices", "force-device-detection", "enforce-device-detection",
    "enable-ipv4-egress-gateway", "enable-egress-gateway", "ip-masq-agent-config-path",
)
"""``cilium-config`` keys read to judge masquerading, never written
(``ip-masq-agent-config-path``: the file Cilium's ip-masq-agent reads, whose mount
the cilium backend checks)."""

CILIUM_DEFAULTS: Mapping[str, str] = {
    "routing-mode": "tunnel",
    "tunnel-protocol": "vxlan",
    "enable-ipv4-masquerade": "true",
    "enable-ipv6-masquerade": "true",
    "enable-bpf-masquerade": "false",
    "enable-ip-masq-agent": "false",
    "enable-masquerade-to-route-source": "false",
    "enable-ipv4": "true",
    "enable-ipv6": "true",
    "ipam": "cluster-pool",
}
"""What the agent does when a key is absent: its flag defaults (``pkg/defaults``). The Helm
chart writes most of them (``enable-ipv6: "false"`` unless ``ipv6.enabled``)."""

CILIUM_DISRUPTIVE_KEYS: Mapping[str, str] = {
    "routing-mode": "changing Cilium's routing-mode changes how every pod reaches every "
                    "other node; connections break until every agent has restarted",
    "tunnel-protocol": "changing Cilium's tunnel-protocol cuts pod traffic between nodes "
                       "until every agent has restarted with it",
    "ipv4-native-routing-cidr": "changing Cilium's ipv4-native-routing-cidr changes which "
                                "traffic leaves unmasqueraded and how it is routed, on "
                                "every node",
    "ipv6-native-routing-cidr": "changing Cilium's ipv6-native-routing-cidr changes which "
                                "traffic leaves unmasqueraded and how it is routed, on "
                                "every node",
    "enable-bpf-masquerade": "switching between iptables and eBPF masquerading drops the "
                             "NAT state of every open masqueraded connection",
}
"""Keys whose change disturbs running pods, with the one-line reason."""

IP_MASQ_AGENT_KEYS: tuple[str, ...] = ("nonMasqueradeCIDRs", "masqLinkLocal",
                                       "masqLinkLocalIPv6")
"""The keys of the ip-masq-agent config file Cilium reads."""

IP_MASQ_AGENT_DEFAULTS: tuple[str, ...] = (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "192.0.0.0/24",
    "192.0.2.0/24", "192.88.99.0/24", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24",
    "240.0.0.0/4",
)
"""Cilium's non-masquerade CIDRs when the ip-masq-agent file is missing or empty."""

_LINK_LOCAL = {4: parse_network("169.254.0.0/16"), 6: parse_network("fe80::/10")}
CILIUM_BOOL_KEYS: frozenset[str] = frozenset(
    k for k in (*CILIUM_KEYS, *CILIUM_CONTEXT_KEYS)
    if k.startswith("enable-") or k in {"force-device-detection", "enforce-device-detection"})
"""The boolean keys among those k3snet writes or reads (the agent's bool flags: the
``enable-*`` ones and the device detection ones), which it compares as the agent reads
them (:func:`same_setting`), never as text."""
_CIDR_KEYS = frozenset({"ipv4-native-routing-cidr", "ipv6-native-routing-cidr"})
_CHOICES = {"routing-mode": ("tunnel", "native"), "tunnel-protocol": ("vxlan", "geneve")}
_TARGET = lazy_pattern(r"configmap:([a-z0-9]([-a-z0-9]*[a-z0-9])?)/"
                     r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)")
# Go's strconv.ParseBool, which the agent's configuration reader uses.
_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})

# The way out when the cilium DaemonSet does not mount the ip-masq-agent ConfigMap.
_UNMOUNTED_FIX = ("mount the ip-masq-agent ConfigMap into the cilium DaemonSet's agent at "
                  "/etc/config (Helm ipMasqAgent.enabled=true; k3snet does not edit the "
                  "DaemonSet) and restart the agents")

CILIUM_DEFAULT_TARGET = "configmap:kube-system/cilium-config"
"""The ``cilium-config`` ConfigMap of a Helm install in ``kube-system`` (K3s' usual place)."""


def cilium_target(namespace: str, name: str = "cilium-config") -> str:
    """The target string of a ``cilium-config`` ConfigMap."""
    return _target(f"configmap:{namespace}/{name}")


def _target(value: str) -> str:
    if not isinstance(value, str) or not _TARGET.fullmatch(value) or len(value) > 330:
        raise ModelError(f"cilium target {value!r} must be configmap:NAMESPACE/NAME")
    return value


def parse_go_bool(value: str) -> bool | None:
    """The boolean Go's ``strconv.ParseBool`` reads in ``value`` (``None``: not one)."""
    if value in _GO_TRUE:
        return True
    if value in _GO_FALSE:
        return False
    return None


def read_go_flag(value: str) -> bool:
    """A boolean ``cilium-config`` value as the Cilium agent reads it: the text trimmed
    (its ``ReadDirConfig`` trims each file of the mounted ConfigMap), then viper's
    ``GetBool``, which reads a value Go's ``ParseBool`` refuses (``yes``, ``""``) as
    false, not as the key's default."""
    return parse_go_bool(value.strip()) is True


def setting_problem(key: str, value: str) -> str | None:  # noqa: PLR0911 - one check a line
    """Why ``value`` is not one k3snet writes for ``key`` (``None``: it is fine)."""
    if key not in CILIUM_KEYS:
        return f"{key!r} is not a cilium-config key k3snet sets ({', '.join(CILIUM_KEYS)})"
    if not isinstance(value, str):
        return f"{key}: ConfigMap values are strings, got {value!r}"
    if key in CILIUM_BOOL_KEYS and value not in {"true", "false"}:
        return f"{key}: expected \"true\" or \"false\", got {value!r}"
    if key in _CHOICES and value not in _CHOICES[key]:
        return f"{key}: expected one of {', '.join(_CHOICES[key])}, got {value!r}"
    if key in _CIDR_KEYS:
        try:
            net = parse_network(value)
        except ModelError as exc:
            return f"{key}: {exc}"
        if net.version != (4 if key.startswith("ipv4") else 6):
            return f"{key}: {net} is not an IPv{4 if key.startswith('ipv4') else 6} CIDR"
    if key == "egress-masquerade-interfaces" and (
            not value.strip() or any(ord(c) < 0x20 for c in value)):
        return f"{key}: expected interface names, got {value!r}"
    return None


def startup_problems(config: CiliumConfig) -> list[str]:
    """Why the Cilium agent refuses to start with the ``cilium-config`` keys of ``config``
    (empty: it starts).

    The combinations the agent's daemon initialisation returns an error for (Cilium
    1.17 to main, ``daemon/cmd``): the agent exits and restarts for ever, and pods on
    that node get no network. Masquerading is "on" as Cilium's ``MasqueradingEnabled``
    says: ``enable-ipv4-masquerade`` with ``enable-ipv4``, or ``enable-ipv6-masquerade``
    with ``enable-ipv6`` (the agent clears a family's masquerade flag when the family is
    off; Helm writes ``enable-ipv6-masquerade: "true"`` beside ``enable-ipv6: "false"``).
    Native routing with a family's masquerading on and the ip-masq-agent off needs
    that family's native-routing CIDR (except with a cloud IPAM: ``eni``,
    ``alibabacloud``, ``azure``). ``enable-ip-masq-agent`` where the agent's container has
    no ``/etc/config`` (:attr:`CiliumConfig.ip_masq_agent_no_directory`, observed from
    the ``cilium`` DaemonSet): its ip-masq-agent fails to watch that directory.
    (Cilium before 1.19 also refuses eBPF masquerading without BPF NodePort; k3snet does
    not read the kube-proxy replacement keys.)
    """
    masquerading = any(config.flag(f"enable-ipv{family}-masquerade")
                       and config.flag(f"enable-ipv{family}") for family in (4, 6))
    bpf = config.flag("enable-bpf-masquerade")
    found = [p for o in config.agent_options if (p := o.startup_problem()) is not None]
    if masquerading and bpf:
        interfaces = (config.value("egress-masquerade-interfaces") or "").replace(",", " ")
        if interfaces.split():
            found.append("eBPF masquerading (enable-bpf-masquerade: true) refuses "
                         "egress-masquerade-interfaces (Cilium: use --devices instead)")
        if config.flag("enable-masquerade-to-route-source"):
            found.append("eBPF masquerading (enable-bpf-masquerade: true) does not support "
                         "enable-masquerade-to-route-source: true")
    elif config.flag("enable-ip-masq-agent"):
        found.append("enable-ip-masq-agent: true needs enable-bpf-masquerade: true and "
                     "enable-ipv4-masquerade or enable-ipv6-masquerade true")
    elif bpf:
        found.append("enable-bpf-masquerade: true needs enable-ipv4-masquerade or "
                     "enable-ipv6-masquerade true")
    if config.flag("enable-ip-masq-agent") and config.ip_masq_agent_no_directory:
        found.append("enable-ip-masq-agent: true where the cilium-agent container has no "
                     "/etc/config (nothing mounted there: "
                     f"{config.ip_masq_agent_unmounted}): Cilium's ip-masq-agent watches "
                     "that directory and fails to start without it, the agent with it; "
                     "fix: Helm ipMasqAgent.enabled=true mounts the ip-masq-agent ConfigMap "
                     "there")
    found += [p for key in ("ipv4-native-routing-cidr", "ipv6-native-routing-cidr")
              if (p := _cidr_problem(key, config.value(key) or "")) is not None]
    found += _native_routing_problems(config)
    return found


def _cidr_problem(key: str, value: str) -> str | None:
    """Why the agent refuses ``value`` (trimmed) of the native-routing CIDR ``key``
    (:func:`_read_cidr`; ``""``: unset, no problem)."""
    return _read_cidr(key, value)[1] if value else None


@functools.lru_cache(maxsize=16)  # asked once a destination, of one or two values
def _read_cidr(key: str, value: str) -> tuple[Network | None, str | None]:
    """The native-routing CIDR ``key`` as the agent reads ``value`` (trimmed, not empty),
    or why it refuses it.

    Set, it goes through ``cidr.MustParseCIDR`` (Go's ``net.ParseCIDR``, which panics
    on what it refuses: a bare address, a netmask), then the agent exits unless it is of
    the key's family ("ipv4-native-routing-cidr must be an IPv4 CIDR"), whatever
    ``enable-ipv4`` / ``routing-mode`` say.
    """
    family = 4 if key.startswith("ipv4") else 6
    try:
        net = parse_network(value, strict=False) if go_cidr_text(value) else None
    except ModelError:
        net = None
    if net is None:
        return None, (f"{key}: {value[:80]!r} is not a CIDR as Go's net.ParseCIDR reads it "
                      "(an address, '/' and a prefix length): the Cilium agent panics on it "
                      "at start")
    if net.version != family:
        return None, (f"{key}: {value[:80]!r} is not an IPv{family} CIDR: the Cilium agent "
                      "exits at start")
    return net, None


# IPAM modes whose cloud network gives Cilium the native-routing CIDR (it does not ask
# for one with them; azure is left out of the judgement too, to never refuse wrongly).
_CLOUD_IPAM = frozenset({"eni", "alibabacloud", "azure"})


def _native_routing_problems(config: CiliumConfig) -> list[str]:
    """Cilium's ``checkIPv4NativeRoutingCIDR`` / ``checkIPv6NativeRoutingCIDR``: native
    routing with a family's masquerading on and the ip-masq-agent off needs that family's
    native-routing CIDR (the agent exits with "native routing cidr must be configured")."""
    found: list[str] = []
    native = (config.value("routing-mode") or "").strip() == "native"
    cloud = (config.value("ipam") or "").strip() in _CLOUD_IPAM
    if not native or cloud or config.flag("enable-ip-masq-agent"):
        return found
    for family in (4, 6):
        v = f"ipv{family}"
        # A value the agent cannot parse is a problem of its own (_cidr_problem).
        if (config.flag(f"enable-{v}") and config.flag(f"enable-{v}-masquerade")
                and not config.value(f"{v}-native-routing-cidr")):
            found.append(f"routing-mode: native with IPv{family} masquerading needs "
                         f"{v}-native-routing-cidr (or Cilium's ip-masq-agent): set "
                         f"cni.cilium.ipv{family}NativeRoutingCIDR")
    return found


def _settings(value: Mapping[str, str] | Iterable[tuple[str, str]] | None) -> JsonMapping:
    mapping = JsonMapping(value or ())
    known = (*CILIUM_KEYS, *CILIUM_CONTEXT_KEYS)
    for key in mapping:
        if key not in known:
            raise ModelError(f"cilium-config key {key!r} is not one k3snet models")
        if not isinstance(mapping[key], str):
            raise ModelError(f"cilium-config {key}: ConfigMap values are strings, "
                             f"got {mapping[key]!r}")
    return mapping


def _ip_masq_agent(value: Mapping[str, Any] | Iterable[tuple[str, Any]] | None
                   ) -> JsonMapping | None:
    if value is None:
        return None
    mapping = JsonMapping(value)
    for key in mapping:
        if key not in IP_MASQ_AGENT_KEYS:
            raise ModelError(f"ip-masq-agent key {key!r} is not one Cilium reads "
                             f"({', '.join(IP_MASQ_AGENT_KEYS)})")
    cidrs = mapping.get("nonMasqueradeCIDRs")
    if "nonMasqueradeCIDRs" in mapping:
        if not isinstance(cidrs, list) or not all(isinstance(c, str) for c in cidrs):
            raise ModelError("ip-masq-agent nonMasqueradeCIDRs must be a list of CIDRs")
        for cidr in cidrs:
            parse_network(cidr, strict=False)
            # Cilium reads each entry with Go's net.ParseCIDR and refuses the whole file
            # for a bare address, a netmask or spaces (ipaddress reads them as CIDRs).
            if not go_cidr_text(cidr):
                raise ModelError(f"ip-masq-agent nonMasqueradeCIDRs: {cidr[:80]!r} is not a "
                                 "CIDR as Go's net.ParseCIDR reads it (an address, '/' and "
                                 "a prefix length)")
    for key in ("masqLinkLocal", "masqLinkLocalIPv6"):
        if key in mapping and not isinstance(mapping[key], bool):
            raise ModelError(f"ip-masq-agent {key} must be true or false, got {mapping[key]!r}")
    return mapping


@attrs.frozen
class CiliumNodeOverride:
    """A CiliumNodeConfig (Cilium 1.13 and later): ``cilium-config`` keys set over the
    ConfigMap on the nodes its ``nodeSelector`` picks.

    ``name`` is the object's; ``selector`` its label selector as ``kubectl`` writes one
    (``""``: every node, an empty selector); ``settings`` the keys of it k3snet models
    (:data:`CILIUM_KEYS`, :data:`CILIUM_CONTEXT_KEYS`). The agent lays the
    CiliumNodeConfigs that select its node over ``cilium-config`` in the order of their
    names, a later name winning (``pkg/option/resolver``); k3snet only reads them.

    >>> CiliumNodeOverride("edge", "zone=edge", {"enable-ipv4-masquerade": "false"}).describe()
    'CiliumNodeConfig edge (nodes zone=edge): enable-ipv4-masquerade=false'
    """

    name: str = attrs.field(validator=attrs.validators.instance_of(str))
    selector: str = attrs.field(validator=attrs.validators.instance_of(str))
    settings: JsonMapping = attrs.field(factory=JsonMapping, converter=_settings)

    @property
    def every_node(self) -> bool:
        """The selector is empty: it selects every node."""
        return not self.selector

    def describe(self) -> str:
        """``CiliumNodeConfig NAME (nodes SELECTOR): key=value ...``."""
        nodes = "every node" if self.every_node else f"nodes {one_line(self.selector)}"
        keys = " ".join(f"{k}={one_line(str(self.settings[k]))}"
                        for k in _ordered(self.settings))
        return f"CiliumNodeConfig {one_line(self.name)} ({nodes}): {keys or '(no keys)'}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"name": self.name, "selector": self.selector,
                "settings": self.settings.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CiliumNodeOverride:
        """Inverse of :meth:`to_dict`."""
        return cls(data["name"], data.get("selector") or "", data.get("settings") or {})


AGENT_OPTION_KEYS: tuple[str, ...] = tuple(
    k for k in (*CILIUM_KEYS, *CILIUM_CONTEXT_KEYS)
    if not k.startswith("cluster-pool-") and k != "ip-masq-agent-config-path")
"""The keys of :data:`CILIUM_KEYS` and :data:`CILIUM_CONTEXT_KEYS` read from the Cilium
agent container's flags and variables (:class:`CiliumAgentOption`): ``cluster-pool-*``
are the operator's, and the ``ip-masq-agent-config-path`` the container gives is judged
with the mount of its file (:attr:`CiliumConfig.ip_masq_agent_unmounted`)."""


def _given(value: str) -> str:
    if not isinstance(value, str) or not value.startswith(("--", "$CILIUM_")):
        raise ModelError(f"an agent option is given as --KEY or $CILIUM_KEY, got {value!r}")
    return value


@attrs.frozen
class CiliumAgentOption:
    """A ``cilium-config`` key the ``cilium-agent`` container of Cilium's DaemonSet sets
    itself: its flag (``given`` ``--KEY``) or its variable (``$CILIUM_KEY``), which the
    agent takes over ``cilium-config`` and the CiliumNodeConfigs on every node (viper: a
    flag, then the environment, then the config directory). k3snet only reads it.

    >>> CiliumAgentOption("enable-ip-masq-agent", "false", "--enable-ip-masq-agent").describe()
    "the cilium-agent container's --enable-ip-masq-agent=false"
    """

    key: str = attrs.field()
    value: str = attrs.field(validator=attrs.validators.instance_of(str))
    given: str = attrs.field(converter=_given)
    positional: str | None = attrs.field(default=None, kw_only=True, validator=(
        attrs.validators.optional(attrs.validators.instance_of(str))))
    """The argument right after a bool flag given alone (``--KEY false``): pflag leaves
    it positional, and ``cilium-agent`` refuses it at start (``None``: none)."""

    @key.validator
    def _known(self, _: attrs.Attribute[str], key: str) -> None:
        if key not in AGENT_OPTION_KEYS:
            raise ModelError(f"agent option {key!r} is not one k3snet models")

    @property
    def flag(self) -> bool:
        """Given as an argument (``--KEY``), not as a variable."""
        return self.given.startswith("--")

    def startup_problem(self) -> str | None:
        """Why the agent does not start with it: a boolean flag's value pflag refuses
        (Go's ``strconv.ParseBool``, untrimmed; a variable's is read by viper, as false)."""
        if self.flag and self.key in CILIUM_BOOL_KEYS and parse_go_bool(self.value) is None:
            return (f"the cilium-agent container's {self.given}={one_line(self.value)[:80]} "
                    "is not a boolean (pflag refuses it at start: the agent exits)")
        if self.positional is not None:
            # cilium-agent has subcommands (cmdref, shell, hive): cobra takes a positional
            # argument as one, and fails ("unknown command").
            return (f"the cilium-agent container's {self.given} is followed by "
                    f"{one_line(self.positional)[:80]!r}, which is not its value (a bool flag "
                    f"alone is true; give {self.given}=VALUE): cilium-agent takes it as a "
                    "command it does not have and exits at start")
        return None

    def describe(self) -> str:
        """``the cilium-agent container's --KEY=VALUE`` (or ``$CILIUM_KEY=VALUE``)."""
        return f"the cilium-agent container's {self.given}={one_line(self.value)}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        data = {"key": self.key, "value": self.value, "given": self.given}
        if self.positional is not None:  # left out when none: earlier documents
            data["positional"] = self.positional
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CiliumAgentOption:
        """Inverse of :meth:`to_dict`."""
        return cls(data["key"], data["value"], data["given"],
                   positional=data.get("positional"))


def _agent_options(value: Iterable[CiliumAgentOption]) -> tuple[CiliumAgentOption, ...]:
    found = tuple(value)
    if not all(isinstance(o, CiliumAgentOption) for o in found):
        raise ModelError("agent_options must be CiliumAgentOption values")
    if len({o.key for o in found}) != len(found):
        raise ModelError("agent_options set a key twice")
    return tuple(sorted(found, key=lambda o: o.key))


def _networks(value: Iterable[str | Network]) -> tuple[Network, ...]:
    if isinstance(value, str):
        raise ModelError(f"expected a list of CIDRs, got the string {value!r}")
    return tuple(parse_network(v, strict=False) for v in value)


@attrs.frozen
class CiliumEgressGateway:
    """A CiliumEgressGatewayPolicy (``cilium.io/v2``): with Cilium's egress gateway on
    (``enable-ipv4-egress-gateway``), the traffic of the pods it selects to
    ``destinations`` (less ``excluded``) leaves through a gateway node (``gateway``:
    its node selector, and the egress IP or interface), SNATed there to the egress IP.
    k3snet only reads it.

    >>> CiliumEgressGateway("legacy", ["192.168.2.0/24"], gateway="role=egress").describe()
    'CiliumEgressGatewayPolicy legacy: 192.168.2.0/24 through role=egress'
    """

    name: str = attrs.field(validator=attrs.validators.instance_of(str))
    destinations: tuple[Network, ...] = attrs.field(converter=_networks)
    excluded: tuple[Network, ...] = attrs.field(default=(), converter=_networks)
    gateway: str = attrs.field(default="", validator=attrs.validators.instance_of(str))

    def parts_of(self, destination: Network) -> tuple[Network, ...]:
        """Where ``destination`` meets the policy's destinations, less its excluded CIDRs."""
        found: list[Network] = []
        for net in self.destinations:
            if net.version != destination.version or not overlaps(net, destination):
                continue
            inner = net if contains(destination, net) else destination
            found += subtract(inner, [e for e in self.excluded if e.version == net.version])
        return tuple(found)

    def describe(self) -> str:
        """``CiliumEgressGatewayPolicy NAME: CIDRs [except CIDRs] through GATEWAY``."""
        text = (f"CiliumEgressGatewayPolicy {one_line(self.name)}: "
                + ", ".join(map(str, self.destinations)))
        if self.excluded:
            text += " except " + ", ".join(map(str, self.excluded))
        return f"{text} through {one_line(self.gateway) or 'its gateway'}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"name": self.name, "destinations": [str(n) for n in self.destinations],
                "excluded": [str(n) for n in self.excluded], "gateway": self.gateway}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CiliumEgressGateway:
        """Inverse of :meth:`to_dict`."""
        return cls(data["name"], data.get("destinations") or (), data.get("excluded") or (),
                   data.get("gateway") or "")


def _gateways(value: Iterable[CiliumEgressGateway]) -> tuple[CiliumEgressGateway, ...]:
    found = tuple(value)
    if not all(isinstance(g, CiliumEgressGateway) for g in found):
        raise ModelError("egress_gateways must be CiliumEgressGateway values")
    return tuple(sorted(found, key=lambda g: g.name))


def _overrides(value: Iterable[CiliumNodeOverride]) -> tuple[CiliumNodeOverride, ...]:
    found = tuple(value)
    if not all(isinstance(o, CiliumNodeOverride) for o in found):
        raise ModelError("node_overrides must be CiliumNodeOverride values")
    return tuple(sorted(found, key=lambda o: o.name))  # the order the agent lays them in


def _groups(value: Iterable[Iterable[str]] | None) -> tuple[tuple[str, ...], ...] | None:
    if value is None:
        return None
    wrong = ModelError("node_groups must be lists of CiliumNodeConfig names")
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise wrong
    found = set()
    for group in value:
        # A number is no group (not iterable: a TypeError), and text is no list of names.
        if isinstance(group, str | bytes) or not isinstance(group, Iterable):
            raise wrong
        names = tuple(group)
        if not all(isinstance(n, str) for n in names):
            raise wrong
        found.add(tuple(sorted(set(names))))
    return tuple(sorted(found, key=lambda g: (len(g), g)))


def _unmounted(value: str | None) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ModelError(f"ip_masq_agent_unmounted must be a reason or None, got {value!r}")
    return value


@attrs.frozen(eq=False)
class CiliumConfig(NetObject):
    """Cilium's masquerade settings for one ``cilium-config`` ConfigMap (``target``).

    ``settings`` are ``cilium-config`` keys with their string values;
    ``ip_masq_agent`` the keys of the ``ip-masq-agent`` config file in the same
    namespace, as JSON values (``None``: a missing or empty file, when Cilium
    uses its default list). An owned object holds only what k3snet set; the
    observed foreign object is everything as it would be without k3snet, with
    ``node_overrides``: the CiliumNodeConfigs of its namespace that set keys of it on
    some nodes (in name order), which the agent on those nodes reads over
    ``settings``; and ``node_groups``, when the Nodes' labels were read: for each set of
    them that selects some node alone, their names (``()``: the nodes none of them
    selects); ``None``: not known, each is judged on its own
    (:meth:`on_nodes`). ``ip_masq_agent_unmounted``, observed: why Cilium's agents
    do not read the ip-masq-agent ConfigMap (the ``cilium`` DaemonSet does not mount it
    where the agent reads its file), so ``ip_masq_agent`` is not what Cilium uses;
    ``None``: mounted, or not known. ``ip_masq_agent_no_directory``, observed: the
    agent's container has no directory for that file at all (nothing mounted at
    ``/etc/config``, which Cilium's image lacks), where its ip-masq-agent, watching the
    directory, fails to start and the agent with it (:func:`startup_problems`).
    ``agent_options``, observed: the keys the ``cilium-agent`` container sets by flag or
    variable (:class:`CiliumAgentOption`), which the agent reads over ``settings`` and
    the node overrides alike (:meth:`value`).
    """

    kind: ClassVar[str] = "cilium"
    type_name: ClassVar[str] = "cilium"
    rank: ClassVar[int] = 12

    target: str = attrs.field(converter=_target)
    settings: JsonMapping = attrs.field(factory=JsonMapping, converter=_settings,
                                        kw_only=True)
    ip_masq_agent: JsonMapping | None = attrs.field(default=None, converter=_ip_masq_agent,
                                                    kw_only=True)
    node_overrides: tuple[CiliumNodeOverride, ...] = attrs.field(
        default=(), converter=_overrides, kw_only=True)
    egress_gateways: tuple[CiliumEgressGateway, ...] = attrs.field(
        default=(), converter=_gateways, kw_only=True)
    node_groups: tuple[tuple[str, ...], ...] | None = attrs.field(
        default=None, converter=_groups, kw_only=True)
    ip_masq_agent_unmounted: str | None = attrs.field(
        default=None, converter=_unmounted, kw_only=True)
    ip_masq_agent_no_directory: bool = attrs.field(default=False, kw_only=True)
    agent_options: tuple[CiliumAgentOption, ...] = attrs.field(
        default=(), converter=_agent_options, kw_only=True)

    _key: tuple[Any, ...] = attrs.field(init=False, repr=False)
    _sort: tuple[Any, ...] = attrs.field(init=False, repr=False)
    _hash: int = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        agent = (-1,) if self.ip_masq_agent is None else (1, self.ip_masq_agent.canonical_items())
        overrides = tuple((o.name, o.selector, o.settings.canonical_items())
                          for o in self.node_overrides)
        gateways = tuple((g.name, tuple(map(net_tuple, g.destinations)),
                          tuple(map(net_tuple, g.excluded)), g.gateway)
                         for g in self.egress_gateways)
        if self.node_groups is not None:
            names = {o.name for o in self.node_overrides}
            unknown = sorted({n for g in self.node_groups for n in g} - names)
            if unknown:
                raise ModelError(f"node_groups name {', '.join(unknown)}, which are not "
                                 "among the node_overrides")
        groups = () if self.node_groups is None else (("groups", self.node_groups),)
        if not isinstance(self.ip_masq_agent_no_directory, bool):
            raise ModelError("ip_masq_agent_no_directory must be a bool, got "
                             f"{self.ip_masq_agent_no_directory!r}")
        if self.ip_masq_agent_no_directory and self.ip_masq_agent_unmounted is None:
            raise ModelError("ip_masq_agent_no_directory without ip_masq_agent_unmounted: "
                             "no directory for the file is no file there")
        unmounted = (() if self.ip_masq_agent_unmounted is None
                     else (("unmounted", self.ip_masq_agent_unmounted,
                            self.ip_masq_agent_no_directory),))
        options = tuple((o.key, o.value, o.given, o.positional) for o in self.agent_options)
        self._seal(("cilium", self.target), (self.settings.canonical_items(), agent,
                                             *((overrides,) if overrides else ()),
                                             *((gateways,) if gateways else ()),
                                             *groups, *unmounted,
                                             *((("agent", options),) if options else ())))

    @property
    def clash_key(self) -> tuple[Any, ...]:
        """The target: one set of settings per Cilium install."""
        return self._key

    @property
    def namespace(self) -> str:
        """The namespace of the ConfigMaps (Cilium's namespace)."""
        return self.target.split(":", 1)[1].split("/", 1)[0]

    def agent_option(self, key: str) -> CiliumAgentOption | None:
        """The ``cilium-agent`` container's flag or variable setting ``key`` (None: none)."""
        return next((o for o in self.agent_options if o.key == key), None)

    def value(self, key: str) -> str | None:
        """A ``cilium-config`` value as Cilium reads it: the agent container's flag or
        variable (:attr:`agent_options`, as given), else set, else the agent's default.

        Trimmed, as the agent's ``ReadDirConfig`` trims each file of the mounted
        ConfigMap (a YAML block scalar's ``"native\\n"`` is ``native``).
        """
        option = self.agent_option(key)
        if option is not None:
            return option.value
        if key in self.settings:
            return str(self.settings[key]).strip()
        return CILIUM_DEFAULTS.get(key)

    def flag(self, key: str) -> bool:
        """A boolean key as Cilium reads it (:func:`read_go_flag`; unset: the default; the
        agent container's flag or variable as given, untrimmed: Go's ``ParseBool``)."""
        option = self.agent_option(key)
        if option is not None:
            return parse_go_bool(option.value) is True
        value = self.value(key)
        return value is not None and read_go_flag(value)

    def network(self, key: str) -> Network | None:
        """A CIDR key as Cilium reads it (host bits masked; ``None``: unset, or a value
        the agent refuses to start with, which :func:`startup_problems` reports)."""
        value = self.value(key)
        return _read_cidr(key, value)[0] if value else None

    def overlay(self, other: CiliumConfig | None) -> CiliumConfig:
        """This config with ``other``'s keys set over it (what Cilium reads with both)."""
        if other is None:
            return self
        settings = {**self.settings.to_dict(), **other.settings.to_dict()}
        agent = self.ip_masq_agent
        if other.ip_masq_agent is not None:
            agent = JsonMapping({**(agent.to_dict() if agent is not None else {}),
                                 **other.ip_masq_agent.to_dict()})
        # k3snet's keys go into the same ConfigMap: unmounted, Cilium reads them no more
        # than the others.
        return CiliumConfig(self.target, settings=settings, ip_masq_agent=agent,
                            node_overrides=self.node_overrides,
                            egress_gateways=self.egress_gateways,
                            node_groups=self.node_groups,
                            ip_masq_agent_unmounted=self.ip_masq_agent_unmounted,
                            ip_masq_agent_no_directory=self.ip_masq_agent_no_directory,
                            agent_options=self.agent_options)

    def on_nodes(self) -> tuple[tuple[tuple[CiliumNodeOverride, ...], CiliumConfig], ...]:
        """What the agents read, by the node overrides behind it, each laid over
        ``settings`` in name order as the agent lays them (``pkg/option/resolver``).

        With :attr:`node_groups` known (the Nodes' labels read), one for each group: the
        CiliumNodeConfigs selecting some node together. Without, first the config of
        nodes no selective CiliumNodeConfig picks (those of every node laid over), then
        one for each selective one (those of every node and it): several selective ones
        picking one node are not laid together, which nodes they share being unknown."""
        if self.node_groups is not None:
            by_name = {o.name: o for o in self.node_overrides}
            return tuple((laid, self.on_nodes_of(laid)) for laid in (
                tuple(by_name[n] for n in group) for group in self.node_groups))
        every = tuple(o for o in self.node_overrides if o.every_node)
        views = [(every, self.on_nodes_of(every))]
        for override in self.node_overrides:
            if not override.every_node:
                laid = tuple(sorted([*every, override], key=lambda o: o.name))
                views.append((laid, self.on_nodes_of(laid)))
        return tuple(views)

    def on_nodes_of(self, overrides: Iterable[CiliumNodeOverride]) -> CiliumConfig:
        """The config an agent reads with ``overrides`` laid over ``settings`` in their
        order (none: the ConfigMap's alone); without node overrides of its own."""
        settings = self.settings.to_dict()
        for override in overrides:
            settings.update(override.settings.to_dict())
        return CiliumConfig(self.target, settings=settings, ip_masq_agent=self.ip_masq_agent,
                            egress_gateways=self.egress_gateways,
                            ip_masq_agent_unmounted=self.ip_masq_agent_unmounted,
                            ip_masq_agent_no_directory=self.ip_masq_agent_no_directory,
                            agent_options=self.agent_options)

    def egress_gateway_on(self, family: int) -> bool:
        """Cilium's egress gateway runs for ``family`` (IPv4: ``enable-ipv4-egress-gateway``,
        or ``enable-egress-gateway`` as later releases spell it; IPv6 only with the
        latter)."""
        return self.flag("enable-egress-gateway") or (
            family == 4 and self.flag("enable-ipv4-egress-gateway"))

    def ip_masq_agent_runs(self) -> bool:
        """Cilium's eBPF ip-masq-agent decides what is masqueraded: ``enable-ip-masq-agent``
        with eBPF masquerading (:func:`startup_problems` says when the agent refuses it)."""
        return self.flag("enable-bpf-masquerade") and self.flag("enable-ip-masq-agent")

    def non_masquerade_cidrs(self, family: int) -> tuple[tuple[Network, str], ...]:
        """The ip-masq-agent's non-masquerade CIDRs of ``family``, each with where it comes from.

        With the ConfigMap unmounted (:attr:`ip_masq_agent_unmounted`) the agent finds no
        file there: Cilium's default list, whatever the ConfigMap holds."""
        unmounted = self.ip_masq_agent_unmounted
        agent = None if unmounted is not None else self.ip_masq_agent
        if unmounted is not None:
            found = [(parse_network(c), "Cilium's default list (the ip-masq-agent ConfigMap "
                                        f"is not mounted: {unmounted})")
                     for c in IP_MASQ_AGENT_DEFAULTS]
        elif agent is None:
            found = [(parse_network(c), "Cilium's default list (the ip-masq-agent config "
                                        "is empty)") for c in IP_MASQ_AGENT_DEFAULTS]
        else:
            found = [(parse_network(c, strict=False), "nonMasqueradeCIDRs of the ip-masq-agent "
                                                      f"ConfigMap in {self.namespace}")
                     for c in agent.get("nonMasqueradeCIDRs", [])]
        key = "masqLinkLocal" if family == 4 else "masqLinkLocalIPv6"
        if agent is None or not agent.get(key, False):
            found.append((_LINK_LOCAL[family], f"link-local, added because {key} is not true"))
        return tuple((net, why) for net, why in found if net.version == family)

    def met_by(self, other: NetObject) -> bool:
        """The foreign config already holds every key this one sets, with equal values."""
        if not isinstance(other, CiliumConfig) or other.target != self.target:
            return False
        for key in self.settings:
            if not same_setting(key, str(self.settings[key]), other.value(key)):
                return False
        if self.ip_masq_agent is None:
            return True
        theirs = other.ip_masq_agent
        if theirs is None:
            return False
        return all(key in theirs and _same_agent_value(key, self.ip_masq_agent[key], theirs[key])
                   for key in self.ip_masq_agent)

    def conflicts_with(self, other: NetObject) -> bool:
        """Setting ip-masq-agent keys without ``nonMasqueradeCIDRs`` over an empty config."""
        return self._drops_defaults(other) is not None

    def conflict_reason(self, other: NetObject) -> str | None:
        """Why writing these keys would change more than they say."""
        return self._drops_defaults(other)

    def _drops_defaults(self, other: NetObject) -> str | None:
        if (not isinstance(other, CiliumConfig) or other.target != self.target
                or self.ip_masq_agent is None or other.ip_masq_agent is not None
                or "nonMasqueradeCIDRs" in self.ip_masq_agent):
            return None
        return ("the ip-masq-agent config is empty, so Cilium uses its default "
                "non-masquerade CIDRs; a file with only "
                f"{', '.join(self.ip_masq_agent)} has none at all: give "
                "cni.cilium.nonMasqueradeCIDRs too")

    def describe(self) -> str:
        """``cilium TARGET key=value ... ip-masq-agent.key=value ...``."""
        parts = [f"cilium {self.target}"]
        # Values someone else wrote: one printable line each (a line break or a terminal
        # escape in cilium-config must not forge a line of the plan).
        parts += [f"{key}={one_line(str(self.settings[key]))}"
                  for key in _ordered(self.settings)]
        if self.ip_masq_agent is not None:
            agent = self.ip_masq_agent
            parts += [f"ip-masq-agent.{key}={canonical_json(agent[key])}"
                      for key in IP_MASQ_AGENT_KEYS if key in agent]
            if not agent:
                parts.append("ip-masq-agent=(empty)")
        if len(parts) == 1:
            parts.append("(no keys)")
        if self.ip_masq_agent_unmounted is not None:
            nothing = "; nothing at /etc/config" if self.ip_masq_agent_no_directory else ""
            parts.append("[ip-masq-agent ConfigMap not mounted: "
                         f"{one_line(self.ip_masq_agent_unmounted)}{nothing}]")
        parts += [f"[{o.describe()}]" for o in self.node_overrides]
        parts += [f"[{g.describe()}]" for g in self.egress_gateways]
        parts += [f"[{o.describe()}, over cilium-config]" for o in self.agent_options]
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        data: dict[str, Any] = {
            "type": self.type_name,
            "target": self.target,
            "settings": self.settings.to_dict(),
            "ip_masq_agent": None if self.ip_masq_agent is None else self.ip_masq_agent.to_dict(),
        }
        if self.node_overrides:  # left out when empty: the documents of earlier versions
            data["node_overrides"] = [o.to_dict() for o in self.node_overrides]
        if self.egress_gateways:
            data["egress_gateways"] = [g.to_dict() for g in self.egress_gateways]
        if self.node_groups is not None:
            data["node_groups"] = [list(g) for g in self.node_groups]
        if self.ip_masq_agent_unmounted is not None:
            data["ip_masq_agent_unmounted"] = self.ip_masq_agent_unmounted
        if self.ip_masq_agent_no_directory:  # left out when false: earlier documents
            data["ip_masq_agent_no_directory"] = True
        if self.agent_options:
            data["agent_options"] = [o.to_dict() for o in self.agent_options]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CiliumConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(data["target"], settings=data.get("settings") or {},
                   ip_masq_agent=data.get("ip_masq_agent"),
                   node_overrides=[CiliumNodeOverride.from_dict(o)
                                   for o in data.get("node_overrides") or ()],
                   egress_gateways=[CiliumEgressGateway.from_dict(g)
                                    for g in data.get("egress_gateways") or ()],
                   node_groups=data.get("node_groups"),
                   ip_masq_agent_unmounted=data.get("ip_masq_agent_unmounted"),
                   ip_masq_agent_no_directory=data.get("ip_masq_agent_no_directory", False),
                   agent_options=[CiliumAgentOption.from_dict(o)
                                  for o in data.get("agent_options") or ()])


def _ordered(settings: JsonMapping) -> list[str]:
    order = {key: i for i, key in enumerate((*CILIUM_KEYS, *CILIUM_CONTEXT_KEYS))}
    return sorted(settings, key=lambda k: order[k])


def same_setting(key: str, wanted: str, current: str | None) -> bool:
    """Whether the agent reads ``current``, a value of ``key`` in its config directory
    (a ConfigMap's, trimmed as ``ReadDirConfig`` trims it; None: not set), as k3snet's
    ``wanted``: a boolean as :func:`read_go_flag` reads it, a CIDR with its host bits
    masked, any other key as text.

    >>> same_setting("enable-ipv4-masquerade", "false", "False\\n")
    True
    """
    if current is None:
        return False
    if key in CILIUM_BOOL_KEYS:
        return parse_go_bool(wanted) is not None and read_go_flag(wanted) == read_go_flag(
            current)
    if key in _CIDR_KEYS:
        try:
            return parse_network(wanted) == parse_network(current.strip(), strict=False)
        except ModelError:
            return False
    return wanted == current


def _same_agent_setting(key: str, wanted: str, given: str) -> bool:
    """Whether the agent reads ``given``, its container's flag or variable (untrimmed),
    as k3snet's ``wanted`` for ``key``."""
    if key in CILIUM_BOOL_KEYS:
        return parse_go_bool(given) is not None and read_go_flag(wanted) == parse_go_bool(given)
    if key in _CIDR_KEYS:
        try:
            return _read_cidr(key, given)[0] == parse_network(wanted)
        except ModelError:
            return False
    return wanted == given


def _same_agent_value(key: str, wanted: Any, current: Any) -> bool:
    if key == "nonMasqueradeCIDRs":
        try:
            return ({parse_network(c, strict=False) for c in wanted}
                    == {parse_network(c, strict=False) for c in current})
        except (ModelError, TypeError):
            return False
    return bool(wanted == current)


# ---------------------------------------------------------------- what Cilium does


def _interface_matches(device: str, patterns: str) -> bool:
    for pattern in patterns.replace(",", " ").split():
        if pattern.endswith("+") and device.startswith(pattern[:-1]):
            return True
        if device == pattern:
            return True
    return False


def why_not_masqueraded(config: CiliumConfig, destination: Network,
                        device: str | None = None) -> str | None:
    """Why Cilium, configured as ``config``, does not masquerade pods' traffic to
    ``destination`` (reached through ``device``); ``None`` when it does.

    >>> cfg = CiliumConfig(CILIUM_DEFAULT_TARGET, settings={
    ...     "ipv4-native-routing-cidr": "192.168.0.0/16"})
    >>> print(why_not_masqueraded(cfg, parse_network("192.168.2.0/24")))
    192.168.2.0/24 is inside Cilium's ipv4-native-routing-cidr 192.168.0.0/16: Cilium never \
masquerades traffic to it
    """
    family = destination.version
    v = f"ipv{family}"
    if not config.flag(f"enable-{v}"):
        return f"Cilium runs without IPv{family} (enable-{v}: {config.value(f'enable-{v}')!r})"
    if not config.flag(f"enable-{v}-masquerade"):
        return (f"masquerading is off in Cilium (enable-{v}-masquerade: "
                f"{config.value(f'enable-{v}-masquerade')!r}): pods reach {destination} "
                "with their own addresses")
    native = config.network(f"{v}-native-routing-cidr")
    if native is not None and overlaps(native, destination):
        where = "inside" if contains(native, destination) else "partly inside"
        return (f"{destination} is {where} Cilium's {v}-native-routing-cidr {native}: Cilium "
                "never masquerades traffic to it")
    bpf = config.flag("enable-bpf-masquerade")
    if config.ip_masq_agent_runs():
        for net, source in config.non_masquerade_cidrs(family):
            if overlaps(net, destination):
                where = "inside" if contains(net, destination) else "partly inside"
                return (f"{destination} is {where} {net}, from {source}: Cilium's "
                        "ip-masq-agent never masquerades traffic to it")
    return None if device is None else _device_reason(config, destination, device, bpf=bpf)


def _device_reason(config: CiliumConfig, destination: Network, device: str, *,
                   bpf: bool) -> str | None:
    """Why Cilium does not masquerade traffic to ``destination`` leaving ``device``."""
    if bpf:
        devices = config.value("devices") or ""
        # The eBPF program masquerades on the devices it is attached to: the `devices`
        # list when set ("eth+" wildcards as iptables spells them), else detected ones
        # (and those too with force-device-detection, enforce-device-detection before
        # its rename). An entry k3snet does not know ("!...") leaves it to Cilium.
        if (devices.strip() and "!" not in devices
                and not config.flag("force-device-detection")
                and not config.flag("enforce-device-detection")
                and not _interface_matches(device, devices)):
            return (f"Cilium's eBPF masquerading runs only on the devices it attaches to "
                    f"(devices: {one_line(devices)}), and {destination} is reached via "
                    f"{device}")
        return None
    interfaces = config.value("egress-masquerade-interfaces")
    if interfaces and not _interface_matches(device, interfaces):
        return (f"Cilium masquerades only traffic leaving {one_line(interfaces)} "
                f"(egress-masquerade-interfaces), and {destination} is reached via {device}")
    return None


def _fix_for(reason: str, family: int) -> str:  # noqa: PLR0911 - one way out a reason
    """The way out of one reason :func:`why_not_masqueraded` gives."""
    v = f"ipv{family}"
    if "ip-masq-agent ConfigMap is not mounted" in reason:
        return _UNMOUNTED_FIX
    if "masquerading is off" in reason:
        return (f"set cni.cilium.enableIPv{family}Masquerade: true (enable-{v}-masquerade "
                "in cilium-config)")
    if "native-routing-cidr" in reason:
        return (f"narrow {v}-native-routing-cidr so it leaves the destination out "
                f"(cni.cilium.ipv{family}NativeRoutingCIDR; a disruptive change)")
    if "ip-masq-agent" in reason:
        return ("set cni.cilium.nonMasqueradeCIDRs to a list without it (k3snet then owns "
                "the list and keeps the old one to put back)")
    if "egress-masquerade-interfaces" in reason:
        return "add the interface to cni.cilium.egressMasqueradeInterfaces"
    if "devices it attaches to" in reason:
        device = reason.rsplit(" reached via ", 1)[-1]
        return (f"add {device} to Cilium's devices (Helm devices; k3snet does not set it), "
                "or route the destination through one of them")
    return f"enable IPv{family} in Cilium"


def _pairs(values: Iterable[tuple[str | Network, str | None]]) -> tuple[tuple[Network, str], ...]:
    result = []
    for cidr, device in values:
        if device is not None and not isinstance(device, str):
            raise ModelError(f"device must be a string or None, got {device!r}")
        result.append((parse_network(cidr), device or ""))
    return tuple(result)


def _cidrs(values: Iterable[str | Network]) -> tuple[Network, ...]:
    if isinstance(values, str):
        raise ModelError(f"expected a list of CIDRs, got the string {values!r}")
    return tuple(parse_network(v) for v in values)


def _wanted(value: CiliumConfig | None) -> CiliumConfig | None:
    if value is not None and not isinstance(value, CiliumConfig):
        raise ModelError(f"expected a CiliumConfig or None, got {value!r}")
    return value


@attrs.frozen(eq=False)
class CiliumMasquerade(NetObject):
    """An expectation: Cilium masquerades pods' traffic to ``masquerade`` and not to ``exempt``.

    ``masquerade`` holds ``(destination, device)`` pairs (``""``: any device).
    ``wanted`` is the config k3snet is about to set on the target (or ``None``):
    foreign state is judged with it laid over. k3snet never writes this object;
    the plan reports a Cilium setup that contradicts it as a conflict, with
    the reason and the way out.
    """

    kind: ClassVar[str] = "cilium"
    type_name: ClassVar[str] = "cilium-masquerade"
    rank: ClassVar[int] = 12
    expectation: ClassVar[bool] = True

    target: str = attrs.field(converter=_target)
    masquerade: tuple[tuple[Network, str], ...] = attrs.field(default=(), converter=_pairs,
                                                              kw_only=True)
    exempt: tuple[Network, ...] = attrs.field(default=(), converter=_cidrs, kw_only=True)
    exempt_via: tuple[tuple[Network, str], ...] = attrs.field(default=(), converter=_pairs,
                                                              kw_only=True)
    """Exempt ``(destination, device)`` pairs whose traffic is known to leave through
    ``device`` (a spec destination's own): met when Cilium does not masquerade there, also
    because it masquerades on other interfaces only."""
    pod_cidrs: tuple[Network, ...] = attrs.field(default=(), converter=_cidrs, kw_only=True)
    """The spec's pod CIDRs: Cilium's cluster pool must hand out addresses inside them."""
    wanted: CiliumConfig | None = attrs.field(default=None, converter=_wanted, kw_only=True)

    _key: tuple[Any, ...] = attrs.field(init=False, repr=False)
    _sort: tuple[Any, ...] = attrs.field(init=False, repr=False)
    _hash: int = attrs.field(init=False, repr=False)
    # Every exempt CIDR by (family, start): those inside a destination found by bisection
    # (10k destinations against 5k exemptions took minutes compared one by one).
    _exempt_starts: list[tuple[int, int]] = attrs.field(init=False, repr=False, eq=False)
    _exempt_nets: list[Network] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        ordered = sorted({*self.exempt, *(n for n, _ in self.exempt_via)},
                         key=lambda n: (n.version, int(n.network_address), n.prefixlen))
        object.__setattr__(self, "_exempt_starts",
                           [(n.version, int(n.network_address)) for n in ordered])
        object.__setattr__(self, "_exempt_nets", ordered)
        if self.wanted is not None and self.wanted.target != self.target:
            raise ModelError(f"cilium expectation of {self.target} lays over a config of "
                             f"{self.wanted.target}")
        content = (
            tuple((*net_tuple(n), d) for n, d in self.masquerade),
            tuple(net_tuple(n) for n in self.exempt),
            tuple((*net_tuple(n), d) for n, d in self.exempt_via),
            tuple(net_tuple(n) for n in self.pod_cidrs),
            () if self.wanted is None else self.wanted.sort_key,
        )
        self._seal(("cilium-masquerade", self.target), content)

    @property
    def clash_key(self) -> tuple[Any, ...]:
        """The target's slot, the one its :class:`CiliumConfig` takes."""
        return ("cilium", self.target)

    def problems(self, config: CiliumConfig) -> list[str]:
        """Each destination Cilium (``config`` with :attr:`wanted` over it) treats otherwise.

        Judged for every node: with the CiliumNodeConfigs of ``config`` laid over
        (:meth:`CiliumConfig.on_nodes`), a problem only the nodes one of them picks have
        names it and the keys it sets (k3snet writes ``cilium-config``, which it overrides).
        """
        effective = config.overlay(self.wanted)
        overridden = self._overridden_problems(effective)
        if not effective.node_overrides:
            return overridden + self._judged(effective)
        # Cilium reads a key a CiliumNodeConfig sets from it, not from the ConfigMap: a
        # problem the ConfigMap alone does not have is that object's, and says so.
        own = self._judged(effective.on_nodes_of(()))
        # Sets of them giving the agents one config are judged once, named by the first
        # (the fewest): nodes labelled every which way make many sets, few configs.
        views: dict[CiliumConfig, list[tuple[CiliumNodeOverride, ...]]] = {}
        for overrides, view in effective.on_nodes():
            views.setdefault(view, []).append(overrides)
        found: list[str] = overridden
        for view, sets in views.items():
            named = "; ".join(o.describe() for o in sets[0] if o.settings)
            if len(sets) > 1:
                named += f", and those of {len(sets) - 1} more sets of CiliumNodeConfigs " \
                         "laid over it to the same config"
            for problem in self._judged(view):
                text = problem if problem in own else (
                    f"on the nodes of {named} (laid over cilium-config, which k3snet "
                    f"writes; k3snet does not edit CiliumNodeConfigs): {problem}")
                if text not in found:
                    found.append(text)
        return found

    def _judged(self, view: CiliumConfig) -> list[str]:
        """:meth:`_problems_of` ``view``; one its agent container's flags and variables
        (:attr:`CiliumConfig.agent_options`) make, which ``cilium-config`` alone does not
        have, names them (the agent reads them over the ConfigMap k3snet writes)."""
        found = self._problems_of(view)
        if not view.agent_options or not found:
            return found
        own = set(self._problems_of(attrs.evolve(view, agent_options=())))
        named = "; ".join(o.describe() for o in view.agent_options)
        return [problem if problem in own else
                f"with {named} (set over cilium-config, which k3snet writes; k3snet does "
                f"not edit the DaemonSet): {problem}" for problem in found]

    def _problems_of(self, effective: CiliumConfig) -> list[str]:
        # An agent that does not start masquerades nothing and exempts nothing: judging
        # the keys it refuses as their defaults would promise what Cilium does not do.
        found = [f"{problem}: the Cilium agent does not run with this config, so no "
                 "destination is treated as the spec says" for problem in
                 (startup_problems(effective)
                  if self.masquerade or self.exempt or self.exempt_via else ())]
        found += pool_problems(effective, self.pod_cidrs)
        found += self._unmounted_problems(effective)
        for destination, device in self.masquerade:
            if why_not_masqueraded(effective, destination, device or None) is None:
                continue  # nor for any part of it
            for part in self._masqueraded_parts(destination):
                reason = why_not_masqueraded(effective, part, device or None)
                if reason is not None:
                    found.append(f"{reason}; {_fix_for(reason, destination.version)}")
                    break  # one reason a destination: its parts share the way out
        exempt = [(n, None) for n in self.exempt] + [(n, d or None) for n, d in self.exempt_via]
        for destination, via in exempt:
            if why_not_masqueraded(effective, destination, via) is None:
                found.append(_exempt_problem(effective, destination))
            elif effective.egress_gateway_on(destination.version):
                found += _gateway_problems(effective, destination)
        return found

    def _overridden_problems(self, effective: CiliumConfig) -> list[str]:
        """The keys k3snet writes into ``cilium-config`` that the ``cilium-agent``
        container sets otherwise itself (:attr:`CiliumConfig.agent_options`): the agent
        reads its flag or variable over the ConfigMap on every node, so the write has no
        effect. One setting the value the spec asks for is no problem."""
        found = []
        for key in () if self.wanted is None else _ordered(self.wanted.settings):
            option = effective.agent_option(key)
            wanted = str(self.wanted.settings[key]) if self.wanted is not None else ""
            if option is None or _same_agent_setting(key, wanted, option.value):
                continue
            found.append(
                f"k3snet writes {key}={one_line(wanted)} into {self.target}, which has no "
                f"effect: it is set by {option.describe()}, over cilium-config (and the "
                "CiliumNodeConfigs), on every node; fix: drop it from the cilium "
                "DaemonSet's agent container (k3snet does not edit the DaemonSet), or "
                f"{key} from the spec")
        return found

    def _unmounted_problems(self, effective: CiliumConfig) -> list[str]:
        """The ip-masq-agent keys k3snet writes where Cilium's running ip-masq-agent does
        not read them (the ConfigMap not mounted): converged in the API server, not in
        effect. What Cilium does instead with each destination is judged beside it."""
        wanted = None if self.wanted is None else self.wanted.ip_masq_agent
        if (effective.ip_masq_agent_unmounted is None or not wanted
                or not effective.ip_masq_agent_runs()):
            return []
        return [f"k3snet writes {', '.join(k for k in IP_MASQ_AGENT_KEYS if k in wanted)} "
                f"into the ip-masq-agent ConfigMap in {effective.namespace}, which Cilium's "
                f"agents do not read: it is not mounted ({effective.ip_masq_agent_unmounted}), "
                f"so Cilium uses its default non-masquerade list; fix: {_UNMOUNTED_FIX}"]

    def _masqueraded_parts(self, destination: Network) -> tuple[Network, ...]:
        """What of ``destination`` the spec masquerades: less the exempt CIDRs inside it
        (its ``exclude``, a destination with ``masquerade: false`` within it), as k3snet's
        own rules do (the most specific destination decides); an exempt CIDR around it
        does not take it out. Cilium not masquerading an exempt part is what the spec
        wants there, not a conflict."""
        family, start = destination.version, int(destination.network_address)
        low = bisect.bisect_left(self._exempt_starts, (family, start))
        high = bisect.bisect_right(self._exempt_starts,
                                   (family, int(destination.broadcast_address)))
        # Starting inside it, an exempt CIDR is inside it unless it is wider.
        inside = [e for e in self._exempt_nets[low:high]
                  if e.prefixlen >= destination.prefixlen]
        return subtract(destination, inside) if inside else (destination,)

    def conflicts_with(self, other: NetObject) -> bool:
        """The foreign config of the target makes Cilium treat a destination otherwise."""
        return (isinstance(other, CiliumConfig) and other.target == self.target
                and bool(self.problems(other)))

    def conflict_reason(self, other: NetObject) -> str | None:
        """Every destination Cilium treats otherwise, and the way out."""
        if not isinstance(other, CiliumConfig):
            return None
        return "; ".join(self.problems(other)) or None

    def describe(self) -> str:
        """``cilium TARGET expects masquerade to ... and none to ...``."""
        parts = [f"cilium {self.target} expects"]
        if self.masquerade:
            parts.append("masquerade to " + ", ".join(
                f"{n}{f' via {d}' if d else ''}" for n, d in self.masquerade))
        if self.exempt or self.exempt_via:
            parts.append(("and " if self.masquerade else "") + "no masquerade to " + ", ".join(
                [*map(str, self.exempt), *(f"{n}{f' via {d}' if d else ''}"
                                           for n, d in self.exempt_via)]))
        if len(parts) == 1:
            parts.append("nothing")
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        data = {
            "type": self.type_name,
            "target": self.target,
            "masquerade": [[str(n), d] for n, d in self.masquerade],
            "exempt": [str(n) for n in self.exempt],
            "pod_cidrs": [str(n) for n in self.pod_cidrs],
            "wanted": None if self.wanted is None else self.wanted.to_dict(),
        }
        if self.exempt_via:  # left out when empty: the documents of earlier versions
            data["exempt_via"] = [[str(n), d] for n, d in self.exempt_via]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CiliumMasquerade:
        """Inverse of :meth:`to_dict`."""
        wanted = data.get("wanted")
        return cls(data["target"],
                   masquerade=[(n, d or None) for n, d in data.get("masquerade", ())],
                   exempt=data.get("exempt", ()),
                   exempt_via=[(n, d or None) for n, d in data.get("exempt_via", ())],
                   pod_cidrs=data.get("pod_cidrs", ()),
                   wanted=None if wanted is None else CiliumConfig.from_dict(wanted))


def pool_problems(config: CiliumConfig, pod_cidrs: Iterable[Network]) -> list[str]:
    """Where Cilium's cluster pool (IPAM ``cluster-pool``) gives pods addresses outside
    ``pod_cidrs``: rules k3snet writes for the pod CIDRs would miss those pods.

    Other IPAM modes (``kubernetes`` takes each node's ``podCIDR``) are not judged.
    """
    pods = tuple(pod_cidrs)
    if config.value("ipam") != "cluster-pool":
        return []
    found = []
    for family in sorted({p.version for p in pods}):
        key = f"cluster-pool-ipv{family}-cidr"
        for text in (config.value(key) or "").replace(",", " ").split():
            try:
                pool = parse_network(text, strict=False)
            except ModelError:
                continue
            mine = [p for p in pods if p.version == family]
            if pool.version == family and not any(contains(p, pool) for p in mine):
                found.append(
                    f"Cilium gives pods addresses from {pool} ({key}), outside the pod CIDR "
                    f"{', '.join(map(str, mine))}: rules for the pod CIDR miss those pods; make "
                    "them equal (cluster.podCIDRs, or Helm "
                    f"ipam.operator.clusterPoolIPv{family}PodCIDRList)")
    return found


def _gateway_problems(config: CiliumConfig, destination: Network) -> list[str]:
    """The egress gateway policies that SNAT pods' traffic to a destination the spec
    exempts (Cilium's egress gateway translates it on the gateway node, whatever its
    masquerading does)."""
    found = []
    for gateway in config.egress_gateways:
        parts = gateway.parts_of(destination)
        if parts:
            found.append(
                f"Cilium's egress gateway sends the traffic of the pods {gateway.describe()} "
                f"selects to {', '.join(map(str, parts))} through a gateway node and SNATs "
                f"it to the egress IP there, and the spec exempts {destination}: those pods "
                "do not keep their addresses; fix: add it to the policy's excludedCIDRs, or "
                "drop masquerade: false from the spec if the egress IP is what the "
                "destination expects (k3snet does not edit egress gateway policies)")
    return found


def _exempt_problem(config: CiliumConfig, destination: Network) -> str:
    if not config.flag("enable-bpf-masquerade"):
        fix = ("Cilium's iptables masquerading exempts only the native-routing CIDR: turn on "
               "eBPF masquerading with its ip-masq-agent (cni.cilium.bpfMasquerade, "
               "cni.cilium.ipMasqAgent) and list it in cni.cilium.nonMasqueradeCIDRs")
    elif not config.flag("enable-ip-masq-agent"):
        fix = ("Cilium's eBPF masquerading without its ip-masq-agent exempts only the "
               "native-routing CIDR: turn on its ip-masq-agent (cni.cilium.ipMasqAgent) and "
               "list it in cni.cilium.nonMasqueradeCIDRs")
    elif config.ip_masq_agent_unmounted is not None:
        fix = (f"the ip-masq-agent ConfigMap is not mounted "
               f"({config.ip_masq_agent_unmounted}), so Cilium uses its default list: "
               f"{_UNMOUNTED_FIX}, and list it in cni.cilium.nonMasqueradeCIDRs")
    else:
        fix = "add it to cni.cilium.nonMasqueradeCIDRs"
    return f"Cilium masquerades pods' traffic to {destination}, which the spec exempts; {fix}"


register_object_type(CiliumConfig)
register_object_type(CiliumMasquerade)
