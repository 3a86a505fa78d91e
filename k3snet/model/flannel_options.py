"""The values flannel's backends take for their ``Backend`` options, as flannel reads them.

Each backend decodes ``Backend`` into its Go config struct when it starts
(``json.Unmarshal``, keys matched case-insensitively) and stops on a value of another Go
type or one it cannot use ("error decoding VXLAN backend config", "no valid Mode
configured", "password is too short"). One table says what each option takes: spec
loading judges ``cni.flannel.backend.options`` by it, and the flannel backend judges
the ``Backend`` it would write and the one it reads by it (``k3snet.backends.flannel_read``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from k3snet._gojson import fold
from k3snet.model.cni import (
    flannel_backend_type,
    is_flannel_secret,
    shown_flannel_secret,
    wireguard_key_problem,
)

__all__ = ["FLANNEL_OPTION_CHECKS", "GO_INT_MAX", "GO_INT_MIN", "IFNAME_MAX", "VXLAN_IDS",
           "go_bool", "go_folded", "go_int", "option_problems", "second_spelling"]

Check = Callable[[Any], "str | None"]
"""What a value must be when flannel would refuse or misread it (``None``: it takes it)."""

GO_INT_MIN, GO_INT_MAX = -(1 << 31), (1 << 31) - 1
"""The range of a Go ``int`` on every node: 32 bits on a 32-bit one (armhf, 386), where
Go's decoder refuses a number outside it ("cannot unmarshal number ... into Go struct
field ... of type int", ``reflect.Value.OverflowInt``) and flannel's backend stops
("error decoding VXLAN backend config"). One config serves every node of a cluster,
whose architectures may differ; no ``int`` option of flannel's means anything beyond it
(an MTU, a port, a VNI of 24 bits)."""

VXLAN_IDS = 1 << 24
"""The kernel's VXLAN IDs are 24 bits (``VXLAN_N_VID``); flannel hands VNI over as a
uint32 (a negative one wraps beyond them)."""

IFNAME_MAX = 15
"""The longest interface name the kernel takes (``IFNAMSIZ`` - 1; a longer one: "Attribute
failed policy validation")."""


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def go_bool(value: Any) -> str | None:
    """A Go ``bool``: JSON's ``true`` or ``false`` alone (never ``"true"`` or ``1``)."""
    return None if isinstance(value, bool) else "true or false"


def go_int(value: Any) -> str | None:
    """A Go ``int`` (vxlan's ``MTU``; wireguard's ``MTU``), as every node decodes it: a
    JSON number without a fraction (``4.0`` too is refused), within 32 bits."""
    ok = isinstance(value, int) and not isinstance(value, bool) and (
        GO_INT_MIN <= value <= GO_INT_MAX)
    return None if ok else (f"an integer {GO_INT_MIN}..{GO_INT_MAX} (Go's int on a 32-bit "
                            "node, which refuses any other)")


def _go_string(value: Any) -> str | None:
    return None if isinstance(value, str) else "a string"


def _go_int_in(low: int, high: int, why: str = "") -> Check:
    """A Go int that flannel uses only within ``low..high`` (``why``: what it does with
    one outside)."""
    def check(value: Any) -> str | None:
        ok = go_int(value) is None and low <= value <= high
        return None if ok else f"an integer {low}..{high}{why}"
    return check


def _vxlan_port(value: Any) -> str | None:
    """vxlan's ``Port``: a Go int; vishvananda/netlink sends it as ``htons(uint16(Port))``,
    dropping the high bits without a word (0 or below: the kernel's default, 8472)."""
    problem = go_int(value)
    if problem is not None or value <= 0xFFFF:
        return problem
    sent = value & 0xFFFF or 8472
    return (f"at most 65535 (flannel hands it to the kernel as 16 bits: {value} would be "
            f"port {sent})")


_VXLAN_ID = _go_int_in(0, VXLAN_IDS - 1, " (a VXLAN ID: the kernel's are 24 bits)")


def _vxlan_vni(value: Any) -> str | None:
    """vxlan's ``VNI``: a VXLAN ID that names flannel's device ``flannel.VNI`` within the
    kernel's 15 characters, whichever families flannel runs (it names its IPv6 device
    ``flannel-v6.VNI``, longer still; that one's limit, 9999, holds only with IPv6 on,
    and the flannel backend judges it against the families of its config)."""
    problem = _VXLAN_ID(value)
    name = f"flannel.{value}"
    if problem is not None or len(name) <= IFNAME_MAX:
        return problem
    most = 10 ** (IFNAME_MAX - len("flannel.")) - 1
    return (f"at most {most} (flannel names its vxlan device flannel.VNI, and {name} is "
            f"longer than the kernel's {IFNAME_MAX} characters; flannel-v6.VNI, with IPv6 "
            "on, is longer still)")


def _one_of(*words: str) -> Check:
    def check(value: Any) -> str | None:
        return None if value in words else "one of " + ", ".join(map(_dump, words))
    return check


_NULL_KEPT: Mapping[tuple[str, str], Any] = {("ipsec", "PSK"): ""}
"""What Go's decoder keeps for an option given as ``null`` (its default) where flannel
refuses that: ipsec's ``PSK`` has no default, and "" is too short. Every other option's
default is one its backend takes (wireguard's ``PSK`` "": no pre-shared key)."""

_IPSEC_PSK_MIN = 96
"""pkg/backend/ipsec ``minPasswordLength``: "password is too short" below it (Go's
``len`` of a string: its bytes)."""


def _ipsec_psk(value: Any) -> str | None:
    ok = isinstance(value, str) and len(value.encode("utf-8", "surrogatepass")) >= _IPSEC_PSK_MIN
    return None if ok else f"a string of at least {_IPSEC_PSK_MIN} bytes"


FLANNEL_OPTION_CHECKS: Mapping[str, Mapping[str, Check]] = {
    # pkg/backend/vxlan/vxlan.go VXLANConfig (VNI: a VXLAN ID, handed over as a uint32,
    # that names the device flannel.VNI)
    "vxlan": {"VNI": _vxlan_vni, "Port": _vxlan_port, "MTU": go_int, "GBP": go_bool,
              "Learning": go_bool, "DirectRouting": go_bool},
    # pkg/backend/wireguard/wireguard.go RegisterNetwork's cfg (a Duration is an int64)
    # (ports and the keepalive reach the kernel as 16 bits; a ListenPort of 0 is advertised
    # to the peers as port 0; Mode outside its four words: "no valid Mode configured")
    "wireguard": {"ListenPort": _go_int_in(1, 0xFFFF), "ListenPortV6": _go_int_in(1, 0xFFFF),
                  "MTU": go_int, "PSK": wireguard_key_problem,
                  "PersistentKeepaliveInterval": _go_int_in(0, 0xFFFF),
                  "Mode": _one_of("separate", "auto", "ipv4", "ipv6")},
    # pkg/backend/ipsec, ipip, udp and extension: their RegisterNetwork's cfg
    "ipsec": {"UDPEncap": go_bool, "ESPProposal": _go_string, "PSK": _ipsec_psk},
    "ipip": {"DirectRouting": go_bool},
    # (udp, on amd64 alone, binds its Port and sends every node's traffic to it: Go's
    # socket calls refuse a port outside 0..65535, and the kernel sending to port 0)
    "udp": {"Port": _go_int_in(1, 0xFFFF)},
    "extension": dict.fromkeys(("PreStartupCommand", "PostStartupCommand",
                                "SubnetAddCommand", "SubnetRemoveCommand"), _go_string),
    # pkg/backend/tencentvpc; pkg/backend/hostgw and alloc decode no options
    "tencent-vpc": dict.fromkeys(("AccessKeyID", "AccessKeySecret"), _go_string),
    "host-gw": {},
    "alloc": {},
}
"""The options of flannel's backends and what each takes: the backend decodes ``Backend``
into them and stops on anything else; a key no option matches it drops without a word.
Their names are :data:`~k3snet.model.cni.FLANNEL_BACKEND_OPTIONS`' (a test holds the two
equal)."""


def go_folded(values: Iterable[tuple[str, Any]], names: Mapping[str, str]
              ) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    """``values`` with each key Go's decoder matches to a field of ``names`` (folded name:
    field name) under the field's name, and its second spellings as ``(first key, key,
    field name)``: Go matches keys case-insensitively and the later one wins; the first
    is kept here (a second spelling is refused wherever it is found).

    >>> go_folded([("VNI", 1), ("vni", 2), ("x", 3)], {"vni": "VNI"})
    ({'VNI': 1, 'x': 3}, [('VNI', 'vni', 'VNI')])
    """
    out: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    again: list[tuple[str, str, str]] = []
    for key, value in values:
        name = names.get(fold(key), key)
        if name in spelled:
            again.append((spelled[name], key, name))
            continue
        spelled[name] = key
        out[name] = value
    return out, again


def second_spelling(first: str, key: str, name: str) -> str:
    """Why a second spelling (:func:`go_folded`) is refused, naming both keys as given."""
    return (f"{first!r} and {key!r} are both flannel's {name} (Go's JSON decoding matches "
            "keys case-insensitively and the later one wins); keep one")


def option_problems(backend_type: Any, options: Iterable[tuple[str, Any]]
                    ) -> list[tuple[str, str, str]]:
    """Why flannel's ``backend_type`` backend would refuse or misread ``options`` (its
    ``Backend`` members but ``Type``) when it starts: ``(key as spelled, option, why)``,
    ``why`` reading after the option's name (``must be ...``): a value of another Go type
    or outside what the backend takes. A ``null`` is no problem (Go's decoder keeps the
    default) but where flannel refuses that default (ipsec's ``PSK``); a secret is shown
    as :func:`~k3snet.model.cni.shown_flannel_secret` shows it. A key no option matches
    is :func:`~k3snet.model.cni.flannel_unread_options`' to judge, a second spelling of
    one :func:`~k3snet.model.cni.flannel_option_spellings`' (or :func:`go_folded`'s): the
    first spelling is judged here.

    >>> [(key, why[:21]) for key, _, why in option_problems("vxlan", [("gbp", "true")])]
    [('gbp', 'must be true or false')]
    """
    checks = (FLANNEL_OPTION_CHECKS.get(flannel_backend_type(backend_type))
              if isinstance(backend_type, str) else None)
    if not checks:
        return []
    names = {fold(name): name for name in checks}
    options = list(options)
    folded, _ = go_folded(options, names)
    keys: dict[str, str] = {}  # option: its first spelling
    for key, _ in options:
        keys.setdefault(names.get(fold(key), key), key)
    found: list[tuple[str, str, str]] = []
    kind = flannel_backend_type(backend_type)
    for name, check in checks.items():
        value = folded.get(name)
        if value is None:  # absent, or null: Go keeps the default
            if name not in folded or (kind, name) not in _NULL_KEPT:
                continue
            expected = check(_NULL_KEPT[kind, name])
            if expected is not None:  # (a null is no secret)
                found.append((keys[name], name, f"must be {expected} (flannel's "
                              f"{backend_type} backend reads it as its {name}; Go keeps "
                              f"{_dump(_NULL_KEPT[kind, name])} for a null), got null"))
            continue
        expected = check(value)
        if expected is not None:  # a malformed pre-shared key is a key all the same
            shown = shown_flannel_secret(value) if is_flannel_secret(name) else _dump(value)
            found.append((keys[name], name, f"must be {expected} (flannel's {backend_type} "
                                            f"backend reads it as its {name}), got {shown}"))
    return found
