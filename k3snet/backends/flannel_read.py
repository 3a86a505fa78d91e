"""flannel's net-conf.json as flannel reads it: which keys it knows, how it matches
them, which values it refuses, which changes disrupt pods, and which file K3s
writes anew on every start.

Flannel decodes net-conf.json with Go's ``encoding/json`` into its
``subnet.Config``: a key matches a field case-insensitively (an exact match
first; of two spellings, the later one wins), ``EnableIPv4`` defaults to true
and ``EnableIPv6`` to false, and a CIDR's host bits are masked off without a word.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from k3snet._gojson import fold
from k3snet._logline import printable
from k3snet.errors import BackendError
from k3snet.model.cni import (
    FLANNEL_BACKEND_OPTIONS,
    FLANNEL_FIELDS,
    FLANNEL_SUBNET_KEYS,
    FLANNEL_UNREAD_KEYS,
    FLANNEL_WINDOWS_OPTIONS,
    canonical_json,
    flannel_backend_type,
    flannel_unread_options,
)
from k3snet.model.flannel_options import (
    FLANNEL_OPTION_CHECKS,
    IFNAME_MAX,
    VXLAN_IDS,
    go_bool,
    go_folded,
    option_problems,
    second_spelling,
)

__all__ = [
    "DISRUPTIVE_KEYS",
    "FLANNEL_FIELDS",
    "K3S_GENERATED_SUFFIX",
    "command_refusals",
    "disruptions",
    "flannel_values",
    "fold",
    "is_k3s_generated",
    "option_value_problems",
    "start_refusals",
    "unread_keys",
    "unread_options",
]

K3S_GENERATED_SUFFIX: tuple[str, ...] = ("agent", "etc", "flannel", "net-conf.json")
"""The end of the path of the net-conf.json K3s writes on every start (under its data dir)."""

_NETWORK_WHY = ("changes the network flannel routes, accepts and exempts from masquerade, and "
                "flannel stops on every node whose podCIDR it does not contain (its kube "
                "subnet manager gives each node its Node's podCIDR, never one of its own)")

DISRUPTIVE_KEYS: Mapping[str, str] = {
    # The kube subnet manager, the only one that reads net-conf.json, takes each node's
    # subnet from its Node's podCIDR and only checks that Network contains it.
    "Network": _NETWORK_WHY,
    "IPv6Network": _NETWORK_WHY,
    "EnableIPv4": "adds or removes the pods' IPv4 network on every node",
    "EnableIPv6": "adds or removes the pods' IPv6 network on every node",
    "Backend.Type": ("rebuilds the network between nodes: pods on nodes that restarted flannel "
                     "cannot reach pods on nodes that did not"),
    "Backend.VNI": ("gives the vxlan device another VXLAN ID (and name, flannel.VNI): nodes "
                    "that restarted flannel and nodes that did not drop each other's pod "
                    "traffic"),
    "Backend.Port": ("sends vxlan to another UDP port: nodes that restarted flannel and nodes "
                     "that did not drop each other's pod traffic"),
}
"""The keys whose change is disruptive, with why (``Backend.Type``: the backend's type;
``Backend.VNI`` and ``Backend.Port``: the vxlan backend's, judged only when it stays vxlan).

``SubnetLen``, ``SubnetMin`` and ``SubnetMax`` (and their IPv6 twins) are not here:
flanneld reads net-conf.json only with ``--kube-subnet-mgr`` (its etcd subnet manager
reads its config from etcd), and the kube subnet manager takes each node's subnet from
its Node's podCIDR without reading them (k3snet never writes them: :func:`unread_keys`)."""

_UNREAD_KEYS: Mapping[str, str] = {
    **dict.fromkeys(FLANNEL_SUBNET_KEYS, (
        "flannel's kube subnet manager, the one reader of net-conf.json (K3s; flanneld with "
        "--kube-subnet-mgr, as kube-flannel runs it), never reads {keys}: a node's pod "
        "subnet is its Node's spec.podCIDR, which the controller-manager allocates from "
        "--cluster-cidr in blocks of its --node-cidr-mask-size (-ipv4 and -ipv6 on dual "
        "stack; on K3s --kube-controller-manager-arg=node-cidr-mask-size=N), and never "
        "changes once given; only flanneld's etcd subnet manager reads these keys, from "
        "etcd")),
    **dict.fromkeys(FLANNEL_UNREAD_KEYS[len(FLANNEL_SUBNET_KEYS):], (
        "flannel never reads {keys} from net-conf.json: no field of its config since "
        "v0.25.0, and v0.21 to v0.24 replaced what the file held with the "
        "MultiClusterCIDR API's networks")),
}
"""Top-level keys flannel reads nothing from in net-conf.json, with why (``{keys}``: the
ones named)."""

_UNREAD_BY_FOLD = {fold(key): key for key in _UNREAD_KEYS}


def unread_keys(members: Mapping[str, Any]) -> list[str]:
    """Why k3snet will not write the top-level keys ``members`` (those a config sets):
    the ones flannel reads nothing from, one reason per group, matched as Go matches keys.

    Written, they would be reported applied and change nothing: the pod CIDR of a node
    is its Node's, whatever ``SubnetLen`` says.

    >>> [reason[:54] for reason in unread_keys({"Network": "10.42.0.0/16", "SubnetLen": 25})]
    ["flannel's kube subnet manager, the one reader of net-c"]
    >>> unread_keys({"networks": []})[0][:38]
    'flannel never reads networks from net-'
    """
    found: dict[str, list[str]] = {}
    for key in members:
        name = _UNREAD_BY_FOLD.get(fold(key))
        if name is not None:
            found.setdefault(_UNREAD_KEYS[name], []).append(printable(key))
    return [why.format(keys=", ".join(keys)) for why, keys in found.items()]


_VXLAN_DEFAULTS: Mapping[str, int] = {"VNI": 1, "Port": 8472}
"""flannel's vxlan defaults (``pkg/backend/vxlan`` ``defaultVNI``; a ``Port`` of 0 or
below leaves the kernel's vxlan port, 8472)."""


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _go_prefix_length(bits: str) -> bool:
    """``bits`` is prefix bits as Go's ``net.ParseCIDR`` reads them: ASCII decimal digits."""
    return bits.isascii() and bits.isdigit()


def _go_cidr(value: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """``value`` as Go's ``net.ParseCIDR`` reads it (host bits masked off), or ``None``:
    it takes decimal prefix bits only (no netmask) and no zone."""
    if not isinstance(value, str) or "/" not in value:
        return None
    address, _, bits = value.partition("/")
    if not _go_prefix_length(bits) or "%" in address:
        return None
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        return None


def _cidr(version: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        expected = f"an IPv{version} CIDR string"
        net = _go_cidr(value)
        if net is None or net.version != version:
            return expected
        if ipaddress.ip_interface(value).ip != net.network_address:
            # Go's net.ParseCIDR masks them off without a word.
            return f"a network without host bits (flannel would silently use {net})"
        return None
    return check


def _address(version: int) -> Callable[[Any], str | None]:
    """What flannel's ``pkg/ip`` reads as an address of ``version``: ``IP4`` an address
    Go's ``net.ParseIP`` reads with an IPv4 form (IPv4, or IPv4 mapped into IPv6,
    ``::ffff:10.42.1.0``), ``IP6`` any address ``net.ParseIP`` reads."""
    def check(value: Any) -> str | None:
        try:
            # Go's net.ParseIP takes no zone ("fe80::1%eth0"); ipaddress does.
            address = (ipaddress.ip_address(value)
                       if isinstance(value, str) and "%" not in value else None)
        except ValueError:
            address = None
        ok = address is not None and (version == 6 or address.version == 4
                                      or getattr(address, "ipv4_mapped", None) is not None)
        return None if ok else f"an IPv{version} address string"
    return check


def _decoded_networks(version: int) -> Callable[[Any], str | None]:
    """``Networks`` (``version`` 4) or ``IPv6Networks`` as flannel v0.21.0 to v0.24.x
    decode them (a field then, ``[]ip.IP4Net``/``[]ip.IP6Net``, emptied only after
    decoding): ``null`` or a list of CIDRs Go's ``net.ParseCIDR`` reads (host bits
    masked off), IPv4 ones for ``Networks`` (``ip.FromIPNet`` of an IPv6 one panics).
    Anything else is a decoding error there and flanneld stops; v0.25.0 and later ignore
    the key."""
    expected = f"null or a list of IPv{version} CIDR strings"

    def item(value: Any) -> bool:
        net = _go_cidr(value)
        return net is not None and (version == 6 or net.version == 4)

    def check(value: Any) -> str | None:
        ok = value is None or (isinstance(value, list) and all(map(item, value)))
        return None if ok else expected
    return check


_DECODED_NETWORKS = {fold("Networks"): _decoded_networks(4),
                     fold("IPv6Networks"): _decoded_networks(6)}


def _networks_problems(values: Mapping[str, Any], raw: Mapping[str, str]) -> list[str]:
    """Why flannel v0.21.0 to v0.24.x would stop on a ``Networks`` or ``IPv6Networks`` of
    ``values`` (each spelling: Go decodes every one)."""
    found = []
    for key, value in values.items():
        check = _DECODED_NETWORKS.get(fold(key))
        if check is None:
            continue
        expected = check(value)
        if expected is None and "\\" in raw.get(key, ""):
            expected = "written without JSON escapes"  # ip.IP4Net parses the raw text
        if expected is not None:
            found.append(f"{printable(key)} must be {expected} (flannel v0.21 to v0.24 "
                         f"decode it and stop on anything else), got {_dump(value)}")
    return found


_GO_UINT_MAX = (1 << 32) - 1
"""The largest Go ``uint`` on every node: 32 bits on a 32-bit one (armhf), where Go's
decoder refuses a larger number ("cannot unmarshal number ... into Go struct field")."""


def _go_uint(value: Any) -> str | None:
    """A Go ``uint`` (``SubnetLen``, ``IPv6SubnetLen``): any unsigned number fits. The kube
    subnet manager, the one reader of net-conf.json, never reads these; the etcd one's
    limits (``SubnetLen`` at most 30) are not net-conf.json's."""
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _GO_UINT_MAX
    return None if ok else f"an integer 0..{_GO_UINT_MAX} (Go's uint on every node)"


def _backend_options(backend: Mapping[str, Any], where: str
                     ) -> tuple[dict[str, Any], list[str]]:
    """``backend`` with the options its Type's backend knows under their names, and why
    that backend would refuse or misread them (:func:`option_problems` of the model: a
    wrong Go type, a value it cannot use, two spellings of one)."""
    kind = backend.get("Type")
    checks = (FLANNEL_OPTION_CHECKS.get(flannel_backend_type(kind))
              if isinstance(kind, str) else None)
    if not checks:
        return dict(backend), []
    names = {fold(name): name for name in checks}
    names[fold("Type")] = "Type"
    options, problems = _folded(backend, names, where, "Backend.")
    problems += [f"Backend.{name} {why}" for _, name, why in option_problems(
        kind, ((key, value) for key, value in options.items() if key != "Type"))]
    return options, problems


def _vxlan_device_problems(values: Mapping[str, Any]) -> list[str]:
    """Why flannel's vxlan backend could not name its devices from ``values`` (read and
    typed; a VNI that is no VXLAN ID or makes ``flannel.VNI`` too long whatever the
    families is :data:`FLANNEL_OPTION_CHECKS`' to refuse): a VNI that makes the IPv6
    device's name (``flannel-v6.VNI``) too long with IPv6 on."""
    backend = values.get("Backend")
    if not isinstance(backend, dict) or _effective_value(values, "Backend.Type") != "vxlan":
        return []
    found = []
    vni = backend.get("VNI")
    if (isinstance(vni, int) and not isinstance(vni, bool) and 0 <= vni < VXLAN_IDS
            and len(f"flannel.{vni}") <= IFNAME_MAX and _effective_value(values, "EnableIPv6")
            and len(name := f"flannel-v6.{vni}") > IFNAME_MAX):
        found.append(f"Backend.VNI {vni} names flannel's vxlan device {name}, "
                     f"longer than the kernel's {IFNAME_MAX} characters")
    return found


def _backend(value: Any) -> str | None:
    if not isinstance(value, dict):
        return "an object with a Type"
    kind = value.get("Type")
    if kind is not None and not isinstance(kind, str):
        return "an object whose Type is a string"
    return None


_CHECKS: Mapping[str, Callable[[Any], str | None]] = {
    "EnableIPv4": go_bool, "EnableIPv6": go_bool, "EnableNFTables": go_bool,
    "Network": _cidr(4), "IPv6Network": _cidr(6),
    "SubnetMin": _address(4), "SubnetMax": _address(4),
    "IPv6SubnetMin": _address(6), "IPv6SubnetMax": _address(6),
    "SubnetLen": _go_uint, "IPv6SubnetLen": _go_uint,
    "Backend": _backend,
}
_FIELD_BY_FOLD = {fold(name): name for name in FLANNEL_FIELDS}

_NULL_IS_DEFAULT = frozenset({"EnableIPv4", "EnableIPv6", "EnableNFTables", "SubnetLen",
                              "IPv6SubnetLen", "IPv6SubnetMin", "IPv6SubnetMax"})
"""Fields Go's decoder leaves at their default for ``null``: a bool or an unsigned integer
keeps its value (``EnableIPv4`` stays true), a pointer is set to nil. (A
``null`` ``Network`` or ``SubnetMin`` reaches flannel's ``UnmarshalJSON``, which refuses
it.)"""

_RAW_TEXT_FIELDS = frozenset({"Network", "IPv6Network", "SubnetMin", "SubnetMax",
                              "IPv6SubnetMin", "IPv6SubnetMax"})
"""Fields whose Go type (flannel's ``pkg/ip`` ``IP4Net``, ``IP6Net``, ``IP4``, ``IP6``)
decodes itself from the raw JSON text: its ``UnmarshalJSON`` trims the quotes and parses
what is between them as it is, so a JSON escape (``\\/``, ``\\u002e``) is not decoded
and the value is refused."""


def _folded(values: Mapping[str, Any], names: Mapping[str, str], where: str, inside: str
            ) -> tuple[dict[str, Any], list[str]]:
    """``values`` with each key flannel matches case-insensitively under its field name
    (:func:`~k3snet.model.flannel_options.go_folded`), and its second spellings refused."""
    out, again = go_folded(values.items(), names)
    return out, [second_spelling(inside + first, inside + key, name)
                 for first, key, name in again]


def flannel_values(values: Mapping[str, Any], where: str = "net-conf.json", *,
                   raw: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The top-level keys of a parsed net-conf.json as flannel reads them, validated.

    Keys flannel matches case-insensitively are renamed to its field names
    (``network`` is ``Network``, ``Backend.type`` is ``Backend.Type``); unknown
    keys are kept as they are (flannel ignores them). Raises
    :class:`~k3snet.errors.BackendError` naming every value flannel would refuse or
    read differently (a wrong type or family, host bits, two spellings of one key).
    A ``null`` that Go's decoder skips (``"EnableIPv6": null``) is read as absent.
    ``raw``, the exact JSON text of each top-level value, lets it also refuse an
    address or network written with a JSON escape, which flannel does not decode.

    >>> flannel_values({"network": "10.244.0.0/16", "Backend": {"type": "vxlan", "VNI": 1}})
    {'Network': '10.244.0.0/16', 'Backend': {'Type': 'vxlan', 'VNI': 1}}
    """
    out, problems = _folded(values, _FIELD_BY_FOLD, where, "")
    for key in [k for k in _NULL_IS_DEFAULT if k in out and out[k] is None]:
        del out[key]  # as if absent: flannel uses its default
    for key, text in (raw or {}).items():
        name = _FIELD_BY_FOLD.get(fold(key))
        if name in _RAW_TEXT_FIELDS and "\\" in text:
            problems.append(f"{name} must be written without JSON escapes (flannel parses "
                            f"the text between the quotes as it is), got {text}")
        if name in ("SubnetLen", "IPv6SubnetLen") and text.startswith("-"):
            # Go decodes a uint with strconv.ParseUint, which refuses a sign even on -0.
            problems.append(f"{name} must be written without a sign, got {text}")
    problems += _networks_problems(values, raw or {})
    for key, check in _CHECKS.items():
        if key in out:
            expected = check(out[key])
            if expected is not None:
                problems.append(f"{key} must be {expected}, got {_dump(out[key])}")
    backend = out.get("Backend")
    if isinstance(backend, dict):
        inner, more = _folded(backend, {"type": "Type"}, where, "Backend.")
        problems += more
        if "Type" in inner and not isinstance(inner["Type"], str):
            problems.append(f"Backend.Type must be a string, got {_dump(inner['Type'])}")
        inner, more = _backend_options(inner, where)
        problems += more
        out["Backend"] = inner
        problems += _vxlan_device_problems(out)
    if problems:
        raise BackendError(f"{where}: flannel would not read net-conf.json as written: "
                           + "; ".join(problems))
    return out


def _effective_value(values: Mapping[str, Any], key: str) -> Any:
    """What flannel uses for ``key`` (its defaults where the key is absent)."""
    if key == "EnableIPv4":
        return values.get(key, True)
    if key == "EnableIPv6":
        return values.get(key, False)
    if key == "Backend.Type":
        backend = values.get("Backend")
        kind = backend.get("Type", "") if isinstance(backend, dict) else "udp"
        return flannel_backend_type(kind) if isinstance(kind, str) else kind
    if key in ("Backend.VNI", "Backend.Port"):
        return _vxlan_value(values, key.partition(".")[2])
    return values.get(key)


def _vxlan_value(values: Mapping[str, Any], name: str) -> Any:
    """The vxlan backend's option ``name`` as flannel uses it; ``None`` if not vxlan."""
    if _effective_value(values, "Backend.Type") != "vxlan":
        return None  # not vxlan: the Type's change says it all
    found = next((v for k, v in values["Backend"].items() if fold(k) == fold(name)), None)
    # flannel's defaults; netlink sends a Port only when it is above 0 (else the kernel's 8472)
    if found is None or (name == "Port" and isinstance(found, int) and found <= 0):
        return _VXLAN_DEFAULTS[name]
    return found


def disruptions(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """Why going from config ``before`` to ``after`` disrupts pods (one line per key)."""
    found = []
    enabled = {4: "EnableIPv4", 6: "EnableIPv6"}
    for key, why in DISRUPTIVE_KEYS.items():
        family = 6 if key == "IPv6Network" else 4 if key == "Network" else 0
        if family and not (_effective_value(before, enabled[family])
                           and _effective_value(after, enabled[family])):
            continue  # the family is off on one side: its Enable key says it all
        old, new = _effective_value(before, key), _effective_value(after, key)
        if key in ("Backend.VNI", "Backend.Port") and (old is None or new is None):
            continue
        if canonical_json(old) != canonical_json(new):
            shown = "unset" if old is None else _dump(old)
            found.append(f"changing flannel's {key} ({shown} -> "
                         f"{'unset' if new is None else _dump(new)}) {why}")
    return found


def command_refusals(before: Mapping[str, Any], backend: Any) -> list[str]:
    """Why k3snet will not write ``backend`` (the ``Backend`` members it sets, merged into
    the object there) over config ``before``.

    flannel's extension backend runs the commands in ``Backend`` (``PreStartupCommand``,
    ``PostStartupCommand``, ``SubnetAddCommand`` ...) as root on every node, and a spec
    (which anyone who may edit its ConfigMap writes) must not reach them. No option named
    ``...Command`` is written, whatever the type (a later switch would run it), and the
    type is never switched to ``extension`` (the commands already in ``Backend`` would
    start to run); an extension config keeps its commands.
    """
    if not isinstance(backend, Mapping):
        return []
    found = [f"k3snet never writes Backend.{name}" for name in backend
             if fold(name).endswith("command")]
    kind = next((v for k, v in backend.items() if fold(k) == "type"), None)
    if (isinstance(kind, str) and flannel_backend_type(kind) == "extension"
            and _effective_value(before, "Backend.Type") != "extension"):
        found.append("k3snet never switches Backend.Type to extension")
    return found


_UNREAD_SHOWN = 5
"""The unread option names a refusal names at most (the rest counted)."""


def unread_options(backend: Any, *, windows: bool = False) -> list[str]:
    """Why k3snet will not write ``backend`` (the ``Backend`` members it sets, its ``Type``
    among them): the options the Type's backend does not read, in one reason.
    ``windows``: the config is read by flanneld on Windows nodes too (a ConfigMap), whose
    backends read options of their own
    (:data:`~k3snet.model.cni.FLANNEL_WINDOWS_OPTIONS`).

    Flannel's backend decodes ``Backend`` into a struct of its options (matched as Go
    matches keys: case-insensitively), and Go's JSON decoding drops a key no option
    matches without a word: written, a typo (``DirectRoute``) or another backend's option
    (``VNI`` for ``host-gw``) would be reported applied and change nothing. A name is
    shown escaped (a line break, a terminal escape) and at most five are named.

    >>> unread_options({"Type": "host-gw", "VNI": 3})
    ["flannel's host-gw backend reads no option, so it would ignore Backend.VNI"]
    >>> unread_options({"Type": "vxlan", "directRouting": True, "MacPrefix": "0E-2A"},
    ...                windows=True)
    []
    """
    if not isinstance(backend, Mapping):
        return []
    kind = next((v for k, v in backend.items() if fold(k) == "type"), None)
    if not isinstance(kind, str):
        return []
    unread = flannel_unread_options(kind, backend, windows=windows)
    if not unread:
        return []  # (None: a Type k3snet does not know the options of, not judged)
    key = flannel_backend_type(kind)
    options = FLANNEL_BACKEND_OPTIONS[key]
    extra = FLANNEL_WINDOWS_OPTIONS.get(key, ()) if windows else ()
    reads = f"reads only {', '.join(options)}" if options else "reads no option"
    if extra:
        reads += f" (on Windows nodes also {', '.join(extra)})"
    shown = ", ".join(f"Backend.{printable(name)}" for name in unread[:_UNREAD_SHOWN])
    more = len(unread) - _UNREAD_SHOWN
    if more > 0:
        shown += f" and {more} more"
    return [f"flannel's {printable(kind)} backend {reads}, so it would ignore {shown}"]


def option_value_problems(backend: Any) -> list[str]:
    """Why flannel's backend would refuse or misread the options of ``backend`` (the
    ``Backend`` members k3snet sets, its ``Type`` among them) when it starts: a value of
    another Go type (``"VNI": "4"``), one outside what it takes (a wireguard ``PSK`` that is
    no WireGuard key), two spellings of one option. A secret is shown as
    :func:`~k3snet.model.cni.shown_flannel_secret` shows it.

    >>> [p[:40] for p in option_value_problems({"Type": "vxlan", "VNI": 4, "GBP": "true"})]
    ['Backend.GBP must be true or false (flann']
    """
    if not isinstance(backend, Mapping):
        return []
    inner, problems = _folded(backend, {"type": "Type"}, "net-conf.json", "Backend.")
    if problems:
        return problems
    return _backend_options(inner, "net-conf.json")[1]


_FAMILY_NETWORKS: Mapping[str, str] = {"EnableIPv4": "Network", "EnableIPv6": "IPv6Network"}


def start_refusals(values: Mapping[str, Any]) -> list[str]:
    """Why flannel would not start on config ``values``: no family on, or an enabled family
    without a network.

    flannel's ``ip.IP4Net``/``IP6Net`` read a ``/0`` (K3s writes ``"IPv6Network": "::/0"``
    beside ``"EnableIPv6": false``) as ``Empty()``, as they read an absent key; with the
    family on, the kube subnet manager refuses every node's lease ("subnet ... doesn't
    contain ... PodCIDR", ``pkg/subnet/kube``) and K3s stops on "ipv4 mode requested but
    no ipv4 network provided".
    """
    found = []
    if not any(_effective_value(values, enable) for enable in _FAMILY_NETWORKS):
        found.append("EnableIPv4 and EnableIPv6 would both be false (flanneld stops: "
                     "\"none defined stack\")")
    for enable, key in _FAMILY_NETWORKS.items():
        if not _effective_value(values, enable):
            continue
        network = values.get(key)
        if network is None:
            found.append(f"{enable} would be true with no {key}")
        elif ipaddress.ip_network(network, strict=False).prefixlen == 0:
            found.append(f"{enable} would be true with {key} {network}, which flannel reads "
                         "as no network")
    return found


def is_k3s_generated(path: str | Path) -> bool:
    """``path`` is the net-conf.json K3s writes anew on every start (``K3S_GENERATED_SUFFIX``).

    >>> is_k3s_generated("/var/lib/rancher/k3s/agent/etc/flannel/net-conf.json")
    True
    >>> is_k3s_generated("/etc/rancher/k3s/flannel-net-conf.json")
    False
    """
    parts = Path(path).parts
    return tuple(parts[-len(K3S_GENERATED_SUFFIX):]) == K3S_GENERATED_SUFFIX
