"""The spec's field table: every user-facing key, spelled once.

Each :class:`~k3snet.spec.fields.Section` below says, for one mapping of the
YAML form, which keys it holds, the attribute each fills, how it is read and
written, and which checks its value must pass. Reading (:func:`read_spec`),
writing (:meth:`Spec.to_dict`), defaults (the classes' own) and error paths
all come from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from k3snet.model import validate_interface_name
from k3snet.model.cidr import parse_address, parse_network
from k3snet.model.cni import BLOCK_SIZE_RANGE
from k3snet.model.sysctl import Sysctl
from k3snet.spec.fields import (
    INVALID,
    Field,
    Reader,
    Section,
    boolean,
    converted,
    items,
    mapping,
    nested,
    nested_list,
    networks,
    opt_str,
    pairs,
    raw,
    read_section,
    string,
    strs,
    write_section,
)
from k3snet.spec.ipmasq import load_ip_masq_agent_config
from k3snet.spec.model import (
    API_VERSION,
    FLANNEL_TYPES,
    KIND,
    AgentSettings,
    CalicoSettings,
    CiliumSettings,
    Cluster,
    CniSettings,
    ConnectivityTest,
    Destination,
    DnsZone,
    EgressPolicy,
    FlannelSettings,
    ForwardPolicy,
    MasqueradePolicy,
    Spec,
)
from k3snet.spec.validators import Check, int_in, matches, one_of, optional

__all__ = ["DNS_LABEL", "SECTIONS", "SPEC", "read_spec", "write_spec"]

# ---------------------------------------------------------------- shared checks

DNS_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
"""A DNS label (RFC 1123), as Kubernetes names namespaces."""
NAMESPACE = matches(DNS_LABEL, "{value!r} is not a valid namespace name")
"""A Kubernetes namespace name."""
U32 = 2**32 - 1
ENCAPSULATION = one_of("Never", "Always", "CrossSubnet")


def _image(value: Any) -> str | None:
    if isinstance(value, str) and value and not any(c.isspace() for c in value):
        return None
    return f"{value!r} is not an image reference"


def _ifname(value: Any) -> Any:
    return validate_interface_name(value)


def _backend_name(value: Any) -> str:
    if (not isinstance(value, str) or len(value) > 64
            or not value.replace("-", "").replace("_", "").isalnum()):
        raise ValueError(f"backend names are plain words of at most 64 characters, "
                         f"got {value!r}")
    return value


def _block_size(value: Any) -> str | None:
    """Calico's blockSize: 20..32 for IPv4 pools, 116..128 for IPv6 ones."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and any(
            low <= value <= high for low, high in BLOCK_SIZE_RANGE.values())):
        return None
    return f"expected 20..32 (IPv4) or 116..128 (IPv6), got {value!r}"


def _constant(key: str, expected: str) -> Field:
    """A key whose only value is ``expected`` (written as such, checked when read)."""

    def read(reader: Reader, value: Any, path: str) -> Any:
        if value != expected:
            reader.problem(path, f"expected {expected}, got {value!r}")
            return INVALID
        return value

    return Field(key, None, read, lambda _: expected)


def _sysctls(reader: Reader, value: Any, path: str) -> Any:
    if not isinstance(value, Mapping):
        reader.problem(path, f"expected a mapping, got {type(value).__name__}")
        return INVALID
    result = [reader.convert((name, setting), f"{path}.{name}", lambda p: Sysctl(*p))
              for name, setting in value.items()]
    return tuple(s for s in result if s is not INVALID)


def _zone(reader: Reader, value: Any, path: str) -> Any:
    if not isinstance(value, str):
        reader.problem(path, "required, a zone name such as corp.example")
        return INVALID
    return value


# ---------------------------------------------------------------- the table

CLUSTER = Section(Cluster, (
    Field("podCIDRs", "pod_cidrs", networks, strs, example=["10.52.0.0/16"]),
    Field("serviceCIDRs", "service_cidrs", networks, strs, example=["10.53.0.0/16"]),
))

DESTINATION = Section(Destination, (
    Field("cidr", "cidr", converted(parse_network), str, required="required",
          example="192.168.7.0/24"),
    Field("gateway", "gateway", converted(parse_address), opt_str, example="192.168.1.1"),
    Field("device", "device", converted(_ifname), example="eth1"),
    Field("table", "table", raw, checks=(int_in(1, U32, name="table", excluding=(255,)),),
          example=100),
    Field("metric", "metric", raw, checks=(optional(int_in(0, U32, name="metric")),),
          example=50),
    Field("masquerade", "masquerade", boolean, example=False),
    Field("forward", "forward", boolean, example=False),
    Field("exclude", "exclude", networks, strs, example=["192.168.7.8/29"]),
))


def _ip_masq_agent(reader: Reader, data: Mapping[str, Any], path: str) -> Mapping[str, Any]:
    """``ipMasqAgentConfig``: the imported file's keys, under the ones the spec sets."""
    if "ipMasqAgentConfig" not in data:
        return data
    imported = reader.convert(data["ipMasqAgentConfig"], f"{path}.ipMasqAgentConfig",
                              load_ip_masq_agent_config)
    keys = {"mode": "all"}  # ip-masq-agent semantics, even when the file had problems
    if imported is not INVALID:
        keys.update((f.key, f.write(getattr(imported, f.attr)))
                    for f in MASQUERADE.fields if f.attr in _FROM_IP_MASQ_AGENT)
    return {**keys, **data}


_FROM_IP_MASQ_AGENT = ("non_masquerade_cidrs", "masq_link_local", "masq_link_local_ipv6")

MASQUERADE = Section(MasqueradePolicy, (
    Field("mode", "mode", raw, checks=(one_of(
        "destinations", "all", "off", message="must be destinations, all or off, got {value!r}"),),
        example="off"),
    Field("nonMasqueradeCIDRs", "non_masquerade_cidrs", networks, strs,
          example=["192.168.0.0/16"]),
    Field("masqLinkLocal", "masq_link_local", boolean, example=True),
    Field("masqLinkLocalIPv6", "masq_link_local_ipv6", boolean, example=True),
    Field("outInterface", "out_interface", converted(_ifname), example="eth0"),
    Field("randomFully", "random_fully", boolean, example=True),
    Field("snatAddresses", "snat_addresses", items(converted(parse_address)), strs,
          example=["192.168.1.5"]),
), inputs=("ipMasqAgentConfig",), prepare=_ip_masq_agent)

FORWARD = Section(ForwardPolicy, (
    Field("accept", "accept", boolean, example=False),
    Field("inInterface", "in_interface", converted(_ifname), example="cni0"),
))

DNS_ZONE = Section(DnsZone, (
    Field("zone", "zone", _zone, required="required, a zone name such as corp.example",
          example="corp.example"),
    Field("resolvers", "resolvers", items(converted(parse_address)), strs,
          example=["192.168.1.53"]),
))

EGRESS_POLICY = Section(EgressPolicy, (
    Field("restrict", "restrict", boolean, example=True),
    Field("namespace", "namespace", string, checks=(NAMESPACE,), example="apps"),
    Field("podSelector", "pod_selector", mapping("expected a mapping of labels"), pairs,
          example={"app": "web"}),
    Field("allowDNS", "allow_dns", boolean, example=False),
    Field("except", "deny", networks, strs, example=["192.168.7.8/29"]),
))

CONNECTIVITY_TEST = Section(ConnectivityTest, (
    Field("target", "target", converted(parse_address), str, required="required",
          example="192.168.7.1"),
    Field("port", "port", raw, checks=(optional(int_in(1, 65535)),), example=443),
    Field("namespace", "namespace", string, checks=(NAMESPACE,), example="apps"),
    Field("image", "image", string, example="busybox:1.37"),
))

AGENT = Section(AgentSettings, (
    Field("image", "image", string, checks=(_image,), example="registry.local/k3snet:1"),
    Field("namespace", "namespace", string, checks=(NAMESPACE,), example="k3snet"),
    Field("intervalSeconds", "interval_seconds", raw, checks=(int_in(1, 86400),), example=60),
))

FLANNEL = Section(FlannelSettings, (
    Field("backend.type", "backend_type", raw, checks=(optional(one_of(*FLANNEL_TYPES)),),
          example="host-gw"),
    Field("backend.options", "backend_options", mapping("expected a mapping"), pairs,
          example={"VNI": 4}),
    Field("enableNFTables", "enable_nftables", boolean, example=True),
    Field("setNetworks", "set_networks", boolean, example=True),
))

CALICO = Section(CalicoSettings, (
    Field("ipipMode", "ipip_mode", raw, checks=(ENCAPSULATION,), example="Always"),
    Field("vxlanMode", "vxlan_mode", raw, checks=(ENCAPSULATION,), example="CrossSubnet"),
    Field("blockSize", "block_size", raw, checks=(_block_size,), example=24),
    Field("nodeSelector", "node_selector", string, example="has(egress)"),
    Field("allowDisruptive", "allow_disruptive", boolean, example=True, omit_none=True),
))

def _opt_strs(values: Any) -> list[str] | None:
    return None if values is None else strs(values)


def _family(version: int) -> Check:
    def check(value: Any) -> str | None:
        if value is None or value.version == version:
            return None
        return f"expected an IPv{version} CIDR, got {value}"

    return check


CILIUM = Section(CiliumSettings, (
    Field("routingMode", "routing_mode", raw, checks=(optional(one_of("tunnel", "native")),),
          example="native"),
    Field("tunnelProtocol", "tunnel_protocol", raw,
          checks=(optional(one_of("vxlan", "geneve")),), example="geneve"),
    Field("ipv4NativeRoutingCIDR", "ipv4_native_routing_cidr", converted(parse_network),
          opt_str, checks=(_family(4),), example="10.42.0.0/16"),
    Field("ipv6NativeRoutingCIDR", "ipv6_native_routing_cidr", converted(parse_network),
          opt_str, checks=(_family(6),), example="fd42::/48"),
    Field("enableIPv4Masquerade", "enable_ipv4_masquerade", boolean, example=True),
    Field("enableIPv6Masquerade", "enable_ipv6_masquerade", boolean, example=True),
    Field("bpfMasquerade", "bpf_masquerade", boolean, example=True),
    Field("ipMasqAgent", "ip_masq_agent", boolean, example=True),
    Field("egressMasqueradeInterfaces", "egress_masquerade_interfaces", string,
          checks=(optional(matches(r"[A-Za-z0-9_.@+\-]{1,15}([ ,][A-Za-z0-9_.@+\-]{1,15})*",
                                   "{value!r} is not a list of interface names")),),
          example="eth0"),
    Field("nonMasqueradeCIDRs", "non_masquerade_cidrs", networks, _opt_strs,
          example=["10.0.0.0/8"]),
    Field("masqLinkLocal", "masq_link_local", boolean, example=True),
    Field("masqLinkLocalIPv6", "masq_link_local_ipv6", boolean, example=True),
))

CNI = Section(CniSettings, (
    nested("flannel", "flannel", FLANNEL, omit_none=True),
    nested("calico", "calico", CALICO, omit_none=True),
    nested("cilium", "cilium", CILIUM, omit_none=True),
    Field("allowDisruptive", "allow_disruptive", boolean, example=True, omit_none=True),
))

SPEC = Section(Spec, (
    _constant("apiVersion", API_VERSION),
    _constant("kind", KIND),
    nested("cluster", "cluster", CLUSTER),
    nested_list("destinations", "destinations", DESTINATION),
    nested("masquerade", "masquerade", MASQUERADE),
    nested("forward", "forward", FORWARD),
    Field("sysctls", "sysctls", _sysctls, lambda values: {s.name: s.value for s in values},
          example={"net.ipv4.conf.all.rp_filter": "2"}),
    Field("manageForwarding", "manage_forwarding", boolean, example=False),
    Field("backends", "backends", items(converted(_backend_name)), list,
          example=["nftables", "netlink"]),
    nested_list("dns.zones", "dns", DNS_ZONE),
    nested("egressPolicy", "egress_policy", EGRESS_POLICY),
    nested("connectivityTest", "connectivity_test", CONNECTIVITY_TEST),
    nested("agent", "agent", AGENT),
    nested("cni", "cni", CNI),
))
"""The top of the spec: the table every other section hangs from."""

SECTIONS: Mapping[str, Section] = {
    "": SPEC, "cluster": CLUSTER, "destinations[]": DESTINATION, "masquerade": MASQUERADE,
    "forward": FORWARD, "dns.zones[]": DNS_ZONE, "egressPolicy": EGRESS_POLICY,
    "connectivityTest": CONNECTIVITY_TEST, "agent": AGENT, "cni": CNI,
    "cni.flannel": FLANNEL, "cni.calico": CALICO, "cni.cilium": CILIUM,
}
"""Every section by its path (``[]``: each item of a list)."""


def read_spec(reader: Reader, data: Any) -> Spec:
    """Read the YAML/JSON form, reporting problems to ``reader``."""
    spec = read_section(reader, SPEC, data, "")
    assert isinstance(spec, Spec)  # the top section has no required key
    return spec


def write_spec(spec: Spec) -> dict[str, Any]:
    """The YAML/JSON form of ``spec``."""
    return write_section(SPEC, spec)
