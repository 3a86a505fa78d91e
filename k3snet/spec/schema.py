"""The spec's field table: every user-facing key, spelled once.

Each :class:`~k3snet.spec.fields.Section` below says, for one mapping of the
YAML form, which keys it holds, the attribute each fills, how it is read and
written, and which checks its value must pass. Reading (:func:`read_spec`),
writing (:meth:`Spec.to_dict`), defaults (the classes' own) and error paths
all come from here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from k3snet._regex import lazy_pattern
from k3snet.model.cidr import Address, parse_address, parse_network
from k3snet.model.cni import (
    BLOCK_SIZE_RANGE,
    DEFAULT_BLOCK_SIZE,
    canonical_json,
    pool_selector_problem,
)
from k3snet.model.route import parse_gateway
from k3snet.model.sysctl import Sysctl
from k3snet.spec.fields import (
    ADDRESS_SCHEMA,
    INVALID,
    ZONED_ADDRESS_SCHEMA,
    Field,
    Reader,
    Section,
    boolean,
    converted,
    items,
    join,
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
    yaml_type,
)
from k3snet.spec.ipmasq import import_problem, load_ip_masq_agent_config
from k3snet.spec.model import (
    API_VERSION,
    BLOCK_SIZE_KEYS,
    FLANNEL_TYPES,
    KIND,
    NODE_ARCHITECTURES,
    AgentSettings,
    BlockSizes,
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
    node_architecture,
    parse_resolver,
    spec_interface_name,
)
from k3snet.spec.validators import (
    NO_FINAL_NEWLINE,
    Check,
    int_in,
    matches,
    one_of,
    optional,
    schema_of,
    with_schema,
)

__all__ = ["DNS_LABEL", "SECTIONS", "SPEC", "read_spec", "write_spec"]

# ---------------------------------------------------------------- shared checks

DNS_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
"""A DNS label (RFC 1123), as Kubernetes names namespaces."""
NAMESPACE = matches(DNS_LABEL, "{value!r} is not a valid namespace name")
"""A Kubernetes namespace name."""
U32 = 2**32 - 1
ENCAPSULATION = one_of("Never", "Always", "CrossSubnet")


def _calico_selector(value: Any) -> str | None:
    """A selector a pool can have: one Calico's parser takes (its API server refuses any
    other, and a pool holding one, stored through the CRDs, fails every pod's address
    assignment), without global() or a control character, at most 1024 characters
    (:func:`~k3snet.model.cni.pool_selector_problem`)."""
    problem = pool_selector_problem(value) if isinstance(value, str) else None
    # The reason first: a long value is cut short in the message.
    return None if problem is None else f"{problem}: {value!r}"


CALICO_SELECTOR: Check = _calico_selector


# An image reference as the kubelet parses it (github.com/distribution/reference's
# grammar: [DOMAIN[:PORT]/]PATH[:TAG][@DIGEST], the path in lower case). The API server
# takes any text without surrounding spaces; the kubelet refuses the rest
# (InvalidImageName) on every node, so a typo rolled out as a DaemonSet whose pods all
# fail. ASCII classes spelled out: Python's \w is Unicode, Go's is not.
_PATH_COMPONENT = "[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IMAGE_NAME = (f"(?:(?:{_DOMAIN_COMPONENT}(?:[.]{_DOMAIN_COMPONENT})*|\\[[a-fA-F0-9:]+\\])"
               f"(?::[0-9]+)?/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
_IMAGE_TAG = "[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_IMAGE_DIGEST = "[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_IMAGE_REFERENCE = f"({_IMAGE_NAME})(?::{_IMAGE_TAG})?(?:@{_IMAGE_DIGEST})?"
_IMAGE = lazy_pattern(_IMAGE_REFERENCE)
_IMAGE_NAME_MAX = 255  # the reference library's NameTotalLengthMax
_IMAGE_MAX = 1024  # far above any valid one: the match's cost stays small


_IMAGE_ID = lazy_pattern("[a-f0-9]{64}")  # an image ID, not a name: refused as one


def _normalised_name(name: str) -> str:
    """The image name as the kubelet parses it (the reference library's
    ParseNormalizedNamed): a name without a registry is Docker Hub's,
    ``docker.io/library/NAME`` for a name of one component."""
    first, slash, rest = name.partition("/")
    if not slash or (not any(c in first for c in ".:") and first != "localhost"
                     and first.lower() == first):
        domain, rest = "docker.io", name
    else:
        domain = first
    if domain == "index.docker.io":
        domain = "docker.io"
    if domain == "docker.io" and "/" not in rest:
        rest = "library/" + rest
    return f"{domain}/{rest}"


def _image(value: Any) -> str | None:
    found = (_IMAGE.fullmatch(value) if isinstance(value, str) and len(value) <= _IMAGE_MAX
             else None)
    # The name's length is judged once normalised, as the kubelet judges it: `busybox`
    # is 25 characters long there (docker.io/library/busybox).
    if (found is not None and len(_normalised_name(found[1])) <= _IMAGE_NAME_MAX
            and not _IMAGE_ID.fullmatch(value)):
        return None
    return (f"{value!r} is not an image reference: [REGISTRY[:PORT]/]NAME[:TAG][@DIGEST], "
            "NAME in lower case (the kubelet refuses any other on every node)")


with_schema(_image, {"type": "string", "pattern": f"^{_IMAGE_REFERENCE}$",
                     "maxLength": _IMAGE_MAX, "not": NO_FINAL_NEWLINE})
# A gateway is an address, read by the route's own parser (no 0.0.0.0 / ::); a
# link-local one may name its interface (`fe80::1%eth0`, kept as the route's device).
with_schema(parse_gateway, ZONED_ADDRESS_SCHEMA)


def _target(value: str | Address) -> Address:
    """The connectivity test's target: an address, a link-local one with its zone id
    (``fe80::1%eth0``) as the model takes it (a SNAT address takes none)."""
    return parse_address(value)


with_schema(_target, ZONED_ADDRESS_SCHEMA)
# A resolver too (no zone id, loopback, 0.0.0.0, multicast or broadcast).
with_schema(parse_resolver, ADDRESS_SCHEMA)


with_schema(node_architecture, {"type": "string", "enum": list(NODE_ARCHITECTURES)})
_ARCHITECTURES = items(converted(node_architecture))
# An empty list is refused (validate: the DaemonSet would run on no node).
with_schema(_ARCHITECTURES, {**(schema_of(_ARCHITECTURES) or {}), "minItems": 1})

def _ifname(value: Any) -> Any:
    return spec_interface_name(value)


# What spec_interface_name takes: its characters, not "@..." (the pattern), not ".",
# "..", "+", "all", "default" nor a name ending in a newline (Python's "$" matches before
# one: jsonschema took "eth0\n"). No lookahead, which Go's RE2 (kubeconform) cannot compile.
with_schema(_ifname, {"type": "string",
                      "pattern": "^[A-Za-z0-9_.+\\-][A-Za-z0-9_.@+\\-]{0,14}$",
                      "not": {"anyOf": [{"enum": [".", "..", "+", "all", "default"]},
                                        NO_FINAL_NEWLINE]},
                      "description": "an interface name (at most 15 characters)"})


def _backend_name(value: Any) -> str:
    if (not isinstance(value, str) or len(value) > 64
            or not value.replace("-", "").replace("_", "").isalnum()):
        raise ValueError(f"backend names are plain words of at most 64 characters, "
                         f"got {value!r}")
    return value


BACKEND_NAME: Mapping[str, Any] = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$",
                                   "not": NO_FINAL_NEWLINE}
OPTION_PATTERN = "^[A-Za-z_][A-Za-z0-9_]*$"


def _backends(reader: Reader, value: Any, path: str) -> Any:
    """``backends``: a list of names, or a mapping of names to their options."""
    if not isinstance(value, Mapping):
        return items(converted(_backend_name))(reader, value, path), ()
    names: list[str] = []
    options: list[tuple[str, dict[str, Any]]] = []
    for key, given in value.items():
        where = join(path, str(key))
        name = reader.convert(key, where, _backend_name)
        if name is INVALID:
            continue
        if given is not None and not isinstance(given, Mapping):
            reader.problem(where, f"expected a mapping of options, got {yaml_type(given)}")
            continue
        names.append(name)
        good = {}
        for option, setting in (given or {}).items():
            if isinstance(option, str) and re.fullmatch(OPTION_PATTERN, option):
                good[option] = setting
            else:
                reader.problem(join(where, str(option)), "an option name is a Python identifier")
        if good:
            options.append((name, good))
    return tuple(names), tuple(options)


def _write_backends(value: tuple[tuple[str, ...], Any]) -> Any:
    """The list form, unless some backend has options."""
    names, options = value
    if not options:
        return list(names)
    given = {name: dict(settings) for name, settings in options}
    return {name: given.get(name, {}) for name in names}


def _block_size(reader: Reader, value: Any, path: str) -> Any:
    """``blockSize``: one integer, or a mapping of ``ipv4`` / ``ipv6`` to one each.

    Only the shape is read here: the ranges depend on the cluster's families, and
    :func:`~k3snet.spec.validate.block_size_problems` judges them (for specs built in
    code too). An unknown key is reported and the others are still read, so that
    their problems come out in the same pass.
    """
    if not isinstance(value, Mapping):
        return value
    given = reader.mapping(value, path, tuple(BLOCK_SIZE_KEYS))
    known = {key: size for key, size in given.items() if key in BLOCK_SIZE_KEYS}
    if not given:
        reader.problem(path, "expected an integer, or a mapping with ipv4, ipv6 or both")
    if not known:
        return INVALID
    return BlockSizes(**known)  # CalicoSettings takes one without sizes as unset


def _write_block_size(value: int | BlockSizes | None) -> Any:
    return dict(value.given()) if isinstance(value, BlockSizes) else value


_BLOCK_RANGES = {
    f"ipv{version}": {"type": ["integer", "null"], "minimum": low, "maximum": high,
                      "description": f"The blockSize of the IPv{version} pod CIDR's pool "
                                     f"(Calico: {low}..{high}, default "
                                     f"{DEFAULT_BLOCK_SIZE[version]}); unset: any."}
    for version, (low, high) in BLOCK_SIZE_RANGE.items()}
BLOCK_SIZE_SCHEMA: Mapping[str, Any] = {
    # Range keywords apply to numbers only and object keywords to objects only, so one
    # schema holds both forms (and explain lists ipv4 and ipv6 as the object's keys).
    "type": ["integer", "object"],
    "anyOf": [{"minimum": low, "maximum": high} for low, high in BLOCK_SIZE_RANGE.values()],
    "properties": {key: _BLOCK_RANGES[key] for key in BLOCK_SIZE_KEYS},
    "additionalProperties": False,
    "minProperties": 1,
}


def _constant(key: str, expected: str) -> Field:
    """A key whose only value is ``expected`` (written as such, checked when read)."""

    def read(reader: Reader, value: Any, path: str) -> Any:
        if value != expected:
            reader.problem(path, f"expected {expected}, got {value!r}")
            return INVALID
        return value

    return Field(key, None, read, lambda _: expected, schema={"const": expected},
                 doc=f"Always {expected}.")


def _sysctls(reader: Reader, value: Any, path: str) -> Any:
    if not isinstance(value, Mapping):
        reader.problem(path, f"expected a mapping, got {yaml_type(value)}")
        return INVALID
    result = [reader.convert((name, setting), f"{path}.{name}", lambda p: Sysctl(*p))
              for name, setting in value.items()]
    return tuple(s for s in result if s is not INVALID)


with_schema(_sysctls, {"type": "object", "additionalProperties": {
    "type": ["string", "integer", "boolean"]}})


def _zone(reader: Reader, value: Any, path: str) -> Any:
    if not isinstance(value, str):
        reader.problem(path, "required, a zone name such as corp.example")
        return INVALID
    return value


with_schema(_zone, {"type": "string"})


# ---------------------------------------------------------------- the table

CLUSTER = Section(Cluster, (
    Field("podCIDRs", "pod_cidrs", networks, strs, example=["10.52.0.0/16"],
          doc="The cluster's pod CIDRs, one per family (K3s --cluster-cidr): the sources "
              "k3snet translates and forwards."),
    Field("serviceCIDRs", "service_cidrs", networks, strs, example=["10.53.0.0/16"],
          doc="The cluster's service CIDRs (K3s --service-cidr): never masqueraded, never "
              "a destination."),
))

DESTINATION = Section(Destination, (
    Field("cidr", "cidr", converted(parse_network), str, required="required",
          example="192.168.7.0/24",
          doc="The subnet pods must reach (no host bits set)."),
    Field("gateway", "gateway", converted(parse_gateway), opt_str, example="192.168.1.1",
          doc="The next hop: with gateway or device, k3snet owns a route to cidr (unless one "
              "exists already)."),
    Field("device", "device", converted(_ifname), example="eth1",
          doc="The interface the route leaves by, and the masquerade's out interface."),
    Field("table", "table", raw, checks=(int_in(1, U32, name="table", excluding=(255,)),),
          example=100, doc="The routing table of the route (254: main)."),
    Field("metric", "metric", raw, checks=(optional(int_in(0, U32, name="metric")),),
          example=50,
          doc="The route's metric (unset: the kernel's, 0 for IPv4 and 1024 for IPv6)."),
    Field("masquerade", "masquerade", boolean, example=False,
          doc="Translate pod traffic to cidr to the node's address (masquerade.mode "
              "destinations)."),
    Field("forward", "forward", boolean, example=False,
          doc="Open the FORWARD path from the pod CIDRs to cidr (and its replies)."),
    Field("exclude", "exclude", networks, strs, example=["192.168.7.8/29"],
          doc="Prefixes inside cidr that keep the pod source address (no NAT)."),
))


def _ip_masq_agent(reader: Reader, data: Mapping[str, Any], path: str) -> Mapping[str, Any]:
    """``ipMasqAgentConfig``: the imported file's keys, under the ones the spec sets."""
    given = data.get("ipMasqAgentConfig")
    if given is None:  # absent, or null: not set, as everywhere in a spec
        return data
    keys = {"mode": "all"}  # ip-masq-agent semantics, even when the file had problems
    mode = data.get("mode")
    if mode is not None and mode != "all":
        # Its keys are mode all's: merged, the list was refused as "only meaningful with
        # mode: all" at a key the spec does not have, and an empty one passed unnoticed.
        # Any other value is the mode field's own problem (an unquoted off, false).
        if mode in ("destinations", "off"):
            reader.problem(f"{path}.mode", f"ipMasqAgentConfig imports ip-masq-agent's "
                                           f"semantics, mode all, not {mode}: drop one of "
                                           "them")
        return data
    problem = import_problem(given)
    if problem is not None:  # str() of it would name a file: "5", "True"
        reader.problem(f"{path}.ipMasqAgentConfig", problem)
        imported = INVALID
    else:
        imported = reader.convert(given, f"{path}.ipMasqAgentConfig", load_ip_masq_agent_config)
    if imported is not INVALID:
        keys.update((f.key, f.write(getattr(imported, f.attr)))
                    for f in MASQUERADE.fields if f.attr in _FROM_IP_MASQ_AGENT)
    # A key the spec leaves null is not set (as everywhere in a spec): the import's value
    # stands, not the class default.
    return {**keys, **{key: value for key, value in data.items() if value is not None}}


_FROM_IP_MASQ_AGENT = ("non_masquerade_cidrs", "masq_link_local", "masq_link_local_ipv6")

MASQUERADE = Section(MasqueradePolicy, (
    Field("mode", "mode", raw, checks=(one_of(
        "destinations", "all", "off", message="must be destinations, all or off, got {value!r}"),),
        example="off",
        doc="Which pod traffic is masqueraded: destinations (to the spec's destinations), all "
            "(everything but nonMasqueradeCIDRs, ip-masq-agent's semantics) or off."),
    Field("nonMasqueradeCIDRs", "non_masquerade_cidrs", networks, strs,
          example=["192.168.0.0/16"],
          doc="mode all: destinations that keep the pod source address."),
    Field("masqLinkLocal", "masq_link_local", boolean, example=True,
          doc="mode all: masquerade traffic to 169.254.0.0/16 too."),
    Field("masqLinkLocalIPv6", "masq_link_local_ipv6", boolean, example=True,
          doc="mode all: masquerade traffic to fe80::/10 too."),
    Field("outInterface", "out_interface", converted(_ifname), example="eth0",
          doc="Masquerade only traffic leaving by this interface, when a destination names "
              "no device (a trailing + matches a prefix: eth+ is every eth* interface)."),
    Field("randomFully", "random_fully", boolean, example=True,
          doc="Fully randomised source ports (--random-fully), against conntrack races."),
    Field("snatAddresses", "snat_addresses", items(converted(parse_address)), strs,
          example=["192.168.1.5"],
          doc="At most one address per family: SNAT to it instead of masquerading."),
), inputs=("ipMasqAgentConfig",), prepare=_ip_masq_agent, input_schemas={
    "ipMasqAgentConfig": {"type": ["string", "object", "null"], "description": (
        "Import an ip-masq-agent config (a path, or its mapping): its nonMasqueradeCIDRs, "
        "masqLinkLocal and masqLinkLocalIPv6, under the keys this spec sets; implies mode all.")},
})

FORWARD = Section(ForwardPolicy, (
    Field("accept", "accept", boolean, example=False,
          doc="Accept forwarded pod traffic to the destinations, and its replies."),
    Field("inInterface", "in_interface", converted(_ifname), example="cni0",
          doc="Accept it only when it enters by this interface (the CNI bridge; a trailing + "
              "matches a prefix: cni+ is every cni* interface)."),
))

DNS_ZONE = Section(DnsZone, (
    Field("zone", "zone", _zone, required="required, a zone name such as corp.example",
          example="corp.example", doc="The DNS zone CoreDNS forwards (coredns-custom)."),
    Field("resolvers", "resolvers", items(converted(parse_resolver)), strs,
          example=["192.168.1.53"], doc="The resolvers the zone is forwarded to: unicast "
          "addresses the CoreDNS pod reaches (no loopback, link-local IPv6, zone id, port, "
          "multicast, 0.0.0.0, discard-only 100::/64)."),
    Field("port", "port", raw, checks=(optional(int_in(1, 65535)),), example=5353,
          omit_none=True,
          doc="The port the zone's resolvers answer on, each on the same one (unset: 53)."),
))

EGRESS_POLICY = Section(EgressPolicy, (
    Field("restrict", "restrict", boolean, example=True,
          doc="Render NetworkPolicies limiting the selected pods' egress to the destinations "
              "and cluster DNS."),
    Field("namespace", "namespace", string, checks=(NAMESPACE,), example="apps",
          doc="The namespace of the selected pods."),
    Field("podSelector", "pod_selector", mapping("expected a mapping of labels"), pairs,
          example={"app": "web"}, doc="Labels selecting the pods (empty: every pod)."),
    Field("allowDNS", "allow_dns", boolean, example=False,
          doc="Let the selected pods reach the cluster DNS."),
    Field("except", "deny", networks, strs, example=["192.168.7.8/29"],
          doc="Prefixes inside destinations the selected pods must not reach."),
))

CONNECTIVITY_TEST = Section(ConnectivityTest, (
    Field("target", "target", converted(_target), str, required="required",
          example="192.168.7.1", doc="The address the test Job pings."),
    Field("port", "port", raw, checks=(optional(int_in(1, 65535)),), example=443,
          doc="A TCP port the Job connects to (unset: ping only)."),
    Field("namespace", "namespace", string, checks=(NAMESPACE,), example="apps",
          doc="The namespace the Job runs in."),
    Field("image", "image", string, checks=(_image,), example="busybox:1.37",
          doc="The Job's image (needs ping and nc)."),
))

AGENT = Section(AgentSettings, (
    Field("image", "image", string, checks=(_image,), example="registry.local/k3snet:1",
          doc="The agent DaemonSet's image."),
    Field("namespace", "namespace", string, checks=(NAMESPACE,), example="k3snet",
          doc="The namespace of the DaemonSet."),
    Field("intervalSeconds", "interval_seconds", raw, checks=(int_in(1, 86400),), example=60,
          doc="Seconds between two converge passes of the agent."),
    Field("createNamespace", "create_namespace", boolean, example=False,
          doc="Render a Namespace for agent.namespace with Pod Security level privileged "
              "(built-in namespaces never are); false when it exists already, whose pods "
              "would all get that level, and which kubectl delete -f would delete."),
    Field("architectures", "architectures", _ARCHITECTURES, list,
          omit_none=True, example=["arm64"],
          doc="The kubernetes.io/arch values of the nodes the DaemonSet runs on: those its "
              "image is built for (make image: its build machine's alone); unset: every "
              "node, and those of another architecture cannot run the image."),
))

def _json_values(value: Any) -> str | None:
    """Options written into flannel's net-conf.json: JSON values only. YAML's ``.nan`` and
    ``.inf`` passed ``validate``; Python writes them as ``NaN``, which flannel's JSON
    reader refuses (and NaN never equals itself: the plan never settled)."""
    items = value.items() if isinstance(value, Mapping) else value
    try:
        canonical_json(dict(items)).encode()
    except UnicodeEncodeError:
        # A JSON "\ud800" escape read by Python (Spec.from_dict, the Ansible module's
        # arguments): no UTF-8 writes it, and flannel's Go would read U+FFFD.
        return ("holds text with half of a UTF-16 surrogate pair (a lone \\ud800 .. "
                "\\udfff escape), which net-conf.json cannot hold")
    except (TypeError, ValueError):  # ModelError is a ValueError
        return "holds a value JSON has not (.nan, .inf): flannel could not read net-conf.json"
    return None


with_schema(_json_values, {"type": "object"})

_FLANNEL_TYPE = one_of(*FLANNEL_TYPES)
_K3S_FLANNEL_BACKENDS = {
    # K3s's --flannel-backend words that are not flannel's Type words (pkg/agent/flannel)
    "wireguard-native": "K3s's --flannel-backend wireguard-native writes flannel's Type "
                        "\"wireguard\"",
    "none": "K3s's --flannel-backend none runs no flannel: leave cni.flannel out",
    "tailscale": ("K3s's --flannel-backend tailscale writes Type \"extension\" with the "
                  "commands it runs, which k3snet never switches to"),
}


def _flannel_type(value: Any) -> str | None:
    """One of flannel's Type words, with a hint for K3s's flag words and other case."""
    problem = _FLANNEL_TYPE(value)
    if problem is None or not isinstance(value, str):
        return problem
    hint = _K3S_FLANNEL_BACKENDS.get(value.lower())
    if hint is None and value.lower() in FLANNEL_TYPES:
        hint = f"write it as \"{value.lower()}\""
    return problem if hint is None else f"{problem} ({hint})"


with_schema(_flannel_type, schema_of(_FLANNEL_TYPE) or {})

FLANNEL = Section(FlannelSettings, (
    Field("backend.type", "backend_type", raw, checks=(optional(_flannel_type),),
          example="host-gw", doc="Flannel's backend Type in net-conf.json (unset: leave it)."),
    Field("backend.options", "backend_options", mapping("expected a mapping"), pairs,
          checks=(_json_values,), example={"VNI": 4},
          doc="The other keys of flannel's Backend (VNI, Port ...)."),
    Field("enableNFTables", "enable_nftables", boolean, example=True,
          doc="Flannel's EnableNFTables (unset: leave it); K3s ignores it in a node's own "
              "file, where it is refused unless the flannel backend's reader is flanneld."),
    Field("setNetworks", "set_networks", boolean, example=True,
          doc="Write the pod CIDRs as flannel's Network/IPv6Network (a disruptive change "
              "when they differ); unset: only expect them."),
))

CALICO = Section(CalicoSettings, (
    Field("ipipMode", "ipip_mode", raw, checks=(ENCAPSULATION,), example="Always",
          doc="The ipipMode the pod CIDRs' pools must have (a conflict otherwise)."),
    Field("vxlanMode", "vxlan_mode", raw, checks=(ENCAPSULATION,), example="CrossSubnet",
          doc="The vxlanMode the pod CIDRs' pools must have (a conflict otherwise)."),
    Field("blockSize", "block_size", _block_size, _write_block_size, example=24,
          schema=BLOCK_SIZE_SCHEMA,
          doc="The blockSize the pod CIDRs' pools must have (unset: any). One integer on a "
              "single-stack cluster (Calico takes 20..32 for IPv4 pools, 116..128 for IPv6 "
              "ones; its defaults are 26 and 122); on a dual-stack cluster one per family, "
              "{ipv4: 26, ipv6: 122} (a family left out: any)."),
    Field("nodeSelector", "node_selector", string, checks=(CALICO_SELECTOR,),
          example="has(egress)",
          doc="The nodeSelector the pod CIDRs' pools must have, in Calico's selector "
              "syntax, compared as Calico parses it (has( zone ) is has(zone)); one no "
              "pool can have is refused: one Calico cannot parse, global(), a control "
              "character, more than 1024 characters."),
    Field("allowDisruptive", "allow_disruptive", boolean, example=True, omit_none=True,
          doc="Alias of cni.allowDisruptive."),
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
          example="native",
          doc="Cilium's routing-mode (tunnel or native)."),
    Field("tunnelProtocol", "tunnel_protocol", raw,
          checks=(optional(one_of("vxlan", "geneve")),), example="geneve",
          doc="Cilium's tunnel-protocol (vxlan or geneve)."),
    Field("ipv4NativeRoutingCIDR", "ipv4_native_routing_cidr", converted(parse_network),
          opt_str, checks=(_family(4),), example="10.42.0.0/16",
          doc="Cilium's ipv4-native-routing-cidr: Cilium does not masquerade inside it."),
    Field("ipv6NativeRoutingCIDR", "ipv6_native_routing_cidr", converted(parse_network),
          opt_str, checks=(_family(6),), example="fd42::/48",
          doc="Cilium's ipv6-native-routing-cidr: Cilium does not masquerade inside it."),
    Field("enableIPv4Masquerade", "enable_ipv4_masquerade", boolean, example=True,
          doc="Cilium's enable-ipv4-masquerade."),
    Field("enableIPv6Masquerade", "enable_ipv6_masquerade", boolean, example=True,
          doc="Cilium's enable-ipv6-masquerade."),
    Field("bpfMasquerade", "bpf_masquerade", boolean, example=True,
          doc="Cilium's enable-bpf-masquerade."),
    Field("ipMasqAgent", "ip_masq_agent", boolean, example=True,
          doc="Cilium's enable-ip-masq-agent (BPF masquerade only)."),
    Field("egressMasqueradeInterfaces", "egress_masquerade_interfaces", string,
          checks=(optional(matches(r"[A-Za-z0-9_.@+\-]{1,15}([ ,][A-Za-z0-9_.@+\-]{1,15})*",
                                   "{value!r} is not a list of interface names")),),
          example="eth0", doc="Cilium's egress-masquerade-interfaces."),
    Field("nonMasqueradeCIDRs", "non_masquerade_cidrs", networks, _opt_strs,
          example=["10.0.0.0/8"],
          doc="nonMasqueradeCIDRs of the ip-masq-agent ConfigMap Cilium reads."),
    Field("masqLinkLocal", "masq_link_local", boolean, example=True,
          doc="masqLinkLocal of the ip-masq-agent ConfigMap Cilium reads."),
    Field("masqLinkLocalIPv6", "masq_link_local_ipv6", boolean, example=True,
          doc="masqLinkLocalIPv6 of the ip-masq-agent ConfigMap Cilium reads."),
))

CNI = Section(CniSettings, (
    nested("flannel", "flannel", FLANNEL, omit_none=True,
           doc="Flannel's net-conf.json, written by the flannel backend."),
    nested("calico", "calico", CALICO, omit_none=True,
           doc="What the Calico IPPools must be; the calico backend writes only disabled "
               "pools, not exported over BGP, for CIDRs exempt from NAT."),
    nested("cilium", "cilium", CILIUM, omit_none=True,
           doc="Cilium's masquerade settings, written by the cilium backend."),
    # None (not given) is false; the schema says so, as it does for the calico alias.
    Field("allowDisruptive", "allow_disruptive", boolean, example=True, omit_none=True,
          schema={"type": "boolean", "default": False},
          doc="Let the CNI backends make changes that disrupt running pods."),
))

SPEC = Section(Spec, (
    _constant("apiVersion", API_VERSION),
    _constant("kind", KIND),
    nested("cluster", "cluster", CLUSTER, doc="The cluster's own address space."),
    nested_list("destinations", "destinations", DESTINATION,
                doc="The subnets pods must reach from this node."),
    nested("masquerade", "masquerade", MASQUERADE,
           doc="Which pod traffic leaves the node with the node's address."),
    nested("forward", "forward", FORWARD, doc="The FORWARD path of pod traffic."),
    Field("sysctls", "sysctls", _sysctls, lambda values: {s.name: s.value for s in values},
          example={"net.ipv4.conf.all.rp_filter": "2"},
          doc="Kernel parameters k3snet sets (name: value); their previous values come back "
              "on destroy."),
    Field("manageForwarding", "manage_forwarding", boolean, example=False,
          doc="Turn on ip_forward / conf.all.forwarding for every family in use."),
    Field("backends", None, _backends, _write_backends, spread=("backends", "backend_options"),
          example={"nftables": {"family": "split"}, "netlink": {}},
          doc="The backends `k3snet plan/apply` and the agent use (default: netlink and "
              "nftables): a list of names, or a mapping of names to their options (checked "
              "against the options each backend declares; --backend-opt overrides them).",
          schema={"oneOf": [
              {"type": "array", "items": BACKEND_NAME},
              {"type": "object", "propertyNames": BACKEND_NAME, "additionalProperties": {
                  "type": ["object", "null"], "propertyNames": {"pattern": OPTION_PATTERN,
                                                      "not": NO_FINAL_NEWLINE}}},
          ]}),
    nested_list("dns.zones", "dns", DNS_ZONE, doc="DNS zones forwarded outside the cluster."),
    nested("egressPolicy", "egress_policy", EGRESS_POLICY,
           doc="NetworkPolicies limiting some pods' egress to the destinations."),
    nested("connectivityTest", "connectivity_test", CONNECTIVITY_TEST,
           doc="A Job proving pods reach a destination (k3snet connectivity reads it)."),
    nested("agent", "agent", AGENT, doc="How the agent DaemonSet runs."),
    nested("cni", "cni", CNI, doc="CNI configuration k3snet manages (cluster level)."),
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
