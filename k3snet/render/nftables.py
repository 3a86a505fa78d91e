"""nftables text for k3snet's NAT and forward rules, and the boot file ``k3snet.nft``.

This module is pure: it turns model objects into nft rule text and never talks
to the kernel. The :mod:`nftables backend <k3snet.backends.nftables>` writes
exactly these rules, so a ruleset loaded from :func:`render_nftables_conf` is
recognised by the backend as k3snet's own, with the same tags.

Every kernel rule carries a comment ``k3snet:<hash>`` (``k3snet:<hash>:reply``
for the reply half of a forward rule), made by :func:`k3snet.render.tag.ownership_tag`
from the object's rule text (with the layout version ``nft1``). Like Calico Felix's per-rule hashes,
the tag identifies a rule without parsing it; the backend still rebuilds the
object from the kernel's own view, so a hand-edited rule shows up as a tag that
no longer matches its content.

>>> from k3snet.model import MasqueradeRule
>>> rule = MasqueradeRule("10.42.0.0/16", exclude=["224.0.0.0/4"], random_fully=True)
>>> print(nft_rules(rule)[0].body)
ip saddr 10.42.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from typing import Any, Final, Literal, NamedTuple

from k3snet._regex import lazy_pattern
from k3snet.errors import ModelError
from k3snet.model import NetObject, out_interface_rank
from k3snet.model.cidr import Network, address_text, network_text
from k3snet.model.forward import ForwardRule
from k3snet.model.nat import MasqueradeRule, SnatRule
from k3snet.model.state import State
from k3snet.render.tag import TAG_PREFIX, ownership_tag

__all__ = [
    "CHAIN_HOOKS",
    "CHAIN_SPECS",
    "FOREIGN_TABLES",
    "FORWARD_CHAIN",
    "MARKER_CHAIN",
    "NAT_CHAIN",
    "NFT_JSON_IFNAME_WORDS",
    "NFT_RULE_BYTES",
    "NFT_RULE_EXPRESSIONS",
    "NFT_WORDS",
    "REPLY_SUFFIX",
    "TABLE_COMMENT",
    "TAG_PREFIX",
    "NftRule",
    "TableFamily",
    "chain_order_key",
    "excluded_elements",
    "exclusion_set",
    "load_condition",
    "model_ifname",
    "nft_expressions",
    "nft_ifname",
    "nft_rule_bytes",
    "nft_rules",
    "nft_rules_json",
    "object_tag",
    "render_nftables_conf",
    "rule_tag",
    "table_families",
    "too_large",
    "validate_nft_name",
    "validate_own_table",
    "validate_table_name",
]

REPLY_SUFFIX = ":reply"
"""Appended to the tag of the reply half of a forward rule."""
NAT_CHAIN = "postrouting"
FORWARD_CHAIN = "forward"
CHAIN_SPECS: dict[str, str] = {
    NAT_CHAIN: "type nat hook postrouting priority srcnat; policy accept;",
    FORWARD_CHAIN: "type filter hook forward priority filter; policy accept;",
}
"""The base chains of k3snet's table, in nft syntax (both accept by default:
k3snet only adds, it never filters)."""
CHAIN_HOOKS: dict[str, dict[str, Any]] = {
    NAT_CHAIN: {"type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"},
    FORWARD_CHAIN: {"type": "filter", "hook": "forward", "prio": 0, "policy": "accept"},
}
"""The same base chains as libnftables JSON lists them (``srcnat`` is 100, ``filter`` 0)."""
TABLE_COMMENT = "k3snet's own table: k3snet rewrites and deletes it"
"""The comment that marks a table as k3snet's (its backend refuses to write into or
delete a table of the configured name that has neither this mark nor k3snet's
chains or rules: another program's)."""
MARKER_CHAIN = "handle_marker"
"""An empty regular chain of k3snet's table that the backend re-creates at the end
of every transaction that adds rules: its new handle dates the rules added before it."""

_IPTABLES_NFT = "iptables-nft's (kube-proxy's and flannel's iptables rules on an nft host)"
_FIREWALLD = "firewalld's"
FOREIGN_TABLES: Final[dict[tuple[str, str], str]] = {
    **{(family, name): _IPTABLES_NFT for family in ("ip", "ip6")
       for name in ("filter", "nat", "mangle", "raw", "security")},
    ("inet", "filter"): "the stock /etc/nftables.conf's (Debian, Ubuntu, Arch) and "
                        "administrators' own",
    # The name administrators give their own NAT table in nftables.conf (tutorials and
    # router setups alike: masquerade, port forwards), as inet filter is their filter's.
    ("inet", "nat"): "administrators' own NAT table (nftables.conf's masquerade and port "
                     "forwards)",
    **{(family, "firewalld"): _FIREWALLD for family in ("inet", "ip", "ip6")},
    **{(family, "kube-proxy"): "kube-proxy's (its nftables mode)" for family in ("ip", "ip6")},
    **{(family, "calico"): "Calico's (its nftables data plane)" for family in ("ip", "ip6")},
    ("ip", "flannel-ipv4"): "flannel's (EnableNFTables)",
    ("ip6", "flannel-ipv6"): "flannel's (EnableNFTables)",
}
"""``(nft family, table name) -> whose``: tables other programs own, which k3snet
reads and never writes. k3snet's table may not take one of their names: its boot
file (:func:`render_nftables_conf`) deletes the table of its name before writing it."""

TableFamily = Literal["inet", "split"]
"""``inet``: one table for IPv4 and IPv6; ``split``: an ``ip`` and an ``ip6`` table."""

# nft identifiers: keep to a tame subset so a table name never needs quoting.
_TABLE_NAME = lazy_pattern(r"[A-Za-z][A-Za-z0-9_-]{0,31}")
NFT_WORDS: Final = frozenset({
    "accept", "add", "all", "and", "arp", "bridge", "cgroup", "chain", "comment", "constant",
    "continue", "counter", "cpu", "create", "ct", "day", "define", "delete", "describe", "device",
    "devices", "dnat", "drop", "dst", "dup", "dynamic", "ecn", "element", "elements", "ether",
    "exists", "expires", "exthdr", "fib", "flags", "flow", "flowtable", "frag", "fwd", "get",
    "goto", "handle", "hbh", "hook", "hour", "ibrname", "icmp", "icmpv6", "iif", "iifgroup",
    "iifname", "iiftype", "include", "index", "inet", "insert", "interval", "ip", "ip6", "ipsec",
    "jhash", "jump", "limit", "list", "log", "lt", "map", "mark", "masquerade", "meta", "mh",
    "missing", "monitor", "netdev", "nftrace", "not", "notrack", "numgen", "obrname", "offload",
    "oif", "oifgroup", "oifname", "oiftype", "or", "osf", "pkttype", "policy", "position",
    "priority", "queue", "quota", "random", "redefine", "redirect", "reject", "reset", "return",
    "rt", "rtclassid", "rule", "ruleset", "secmark", "set", "size", "skgid", "skuid", "snat",
    "socket", "srh", "symhash", "synproxy", "table", "tcp", "th", "time", "timeout", "tproxy",
    "type", "typeof", "udp", "undefine", "update", "vlan", "vmap", "xt",
})
"""Words nft's own language reads as keywords where a table's name goes: ``add table
inet counter`` is a syntax error, quoted or not. Every word of nft(8) that nft 1.0.6
refuses there (tests/nftables/test_table_names.py checks each against the installed
nft). A table so named can only be written and listed through nft's JSON."""
# Part of every tag's canonical text: a change of how rules are laid out changes every tag.
_LAYOUT = "nft1"


class NftRule(NamedTuple):
    """One kernel rule: the ``ip``/``ip6`` family of its matches, its chain, text and comment."""

    family: str
    chain: str
    body: str
    comment: str


def validate_table_name(name: str) -> str:
    """Return ``name`` if it is a plain nft identifier (letters, digits, ``_``, ``-``)."""
    if not isinstance(name, str) or not _TABLE_NAME.fullmatch(name):
        raise ModelError(
            f"nftables table name {name!r} must be a letter followed by up to 31 "
            "letters, digits, '_' or '-'"
        )
    return name


def validate_nft_name(name: str) -> str:
    """:func:`validate_table_name`, and a name nft's own language can say (not one of
    :data:`NFT_WORDS`): for what is written or listed as nft text."""
    validate_table_name(name)
    if name in NFT_WORDS:
        raise ModelError(
            f"nftables table name {name!r} is a word of nft's language: nft cannot name a "
            "table so (quoted or not), so neither a rules file nor an nft command can; "
            "choose another name (or give the nftables backend syntax='json')"
        )
    return name


def validate_own_table(name: str, family: TableFamily = "inet") -> str:
    """Return ``name`` unless it names, in one of ``family``'s nft families, a table
    another program owns (:data:`FOREIGN_TABLES`): k3snet's table of that name would
    be that program's, which the boot file deletes when loaded (``table: filter``
    deleted Debian's ``inet filter`` firewall, ``nat`` with ``family: split``
    iptables-nft's NAT table, kube-proxy's rules with it). The error gives the way
    out of an install an older k3snet made under such a name, which no command of
    k3snet's reads or deletes any more."""
    for nft_family in table_families(family):
        owner = FOREIGN_TABLES.get((nft_family, name))
        if owner is not None:
            raise ModelError(
                f"nftables table {nft_family} {name} is {owner}, not k3snet's: k3snet "
                "rewrites and deletes its own table (its boot file k3snet.nft deletes the "
                "table before writing it); choose a name no other program uses (the "
                "default is k3snet); an older k3snet's table of this name is left to "
                f"delete by hand ('nft delete table {nft_family} {name}'), its k3snet.nft "
                "to render again")
    return name


def load_condition(table: str = "k3snet", family: TableFamily = "inet") -> list[str]:
    """The shell commands (one per nft family) that succeed when k3snet's table
    ``table`` may be loaded: it is absent, or carries k3snet's mark
    (:data:`TABLE_COMMENT`). A systemd unit loading :func:`render_nftables_conf`'s file
    runs each as ``ExecCondition=/bin/sh -c '...'``: a table of that name another
    program made (nft's language has no "delete only if") makes the unit skip the
    load instead of deleting it. The text holds no ``$``, ``%``, ``\\`` or ``'``, which
    systemd would expand or unquote.

    >>> print(load_condition()[0])  # doctest: +ELLIPSIS
    ! /usr/sbin/nft list table inet k3snet >/dev/null 2>&1 ... | grep -qx "[[:blank:]]comment ..."
    """
    validate_nft_name(table)
    # The mark's quotes and apostrophe matched by ".": no quoting inside the quoting.
    # The whole line, one tab in (-x): the table's own comment, as the backend reads it
    # (text.table_marked); a chain's (two tabs) or a rule's (inline) is no mark.
    mark = re.sub(r"[^A-Za-z0-9 :]", ".", f'comment "{TABLE_COMMENT}"')
    return [f"! /usr/sbin/nft list table {nft_family} {table} >/dev/null 2>&1 || "
            f'/usr/sbin/nft list table {nft_family} {table} | grep -qx "[[:blank:]]{mark}"'
            for nft_family in table_families(family)]


def table_families(family: TableFamily) -> tuple[str, ...]:
    """The nft families of k3snet's tables: ``("inet",)`` or ``("ip", "ip6")``."""
    if family == "inet":
        return ("inet",)
    if family == "split":
        return ("ip", "ip6")
    raise ModelError(f"nftables table family must be 'inet' or 'split', got {family!r}")


def _address(net: Network) -> str:
    """``net``'s address as :mod:`ipaddress` prints it."""
    return address_text(net.network_address)


_prefix = network_text


def _element_address(value: int, version: int) -> str:
    # As nft lists it: IPv6 as inet_ntop(3) prints it (see text.as_listed).
    if version == 4:
        return address_text(ipaddress.IPv4Address(value))
    return socket.inet_ntop(socket.AF_INET6, value.to_bytes(16, "big"))


def excluded_elements(exclude: Iterable[Network]) -> list[str]:
    """The elements of the anonymous interval set of ``exclude`` as nft lists them: in
    address order, adjacent prefixes merged into one range ``first-last`` (nft merges
    them), a range that is one prefix written as the prefix, a host as its bare address.

    >>> excluded_elements(ipaddress.ip_network(n) for n in
    ...                   ["10.0.0.0/24", "10.0.1.0/25", "10.0.3.0/24", "192.0.2.1/32"])
    ['10.0.0.0-10.0.1.127', '10.0.3.0/24', '192.0.2.1']
    """
    spans: list[list[int]] = []
    version = 4
    for net in sorted(exclude, key=lambda n: int(n.network_address)):
        version = net.version
        # the last address from the length: broadcast_address builds an object and caches
        # it on the prefix (1.5 s of 10 000 exclusions' render)
        first = int(net.network_address)
        last = first | ((1 << (net.max_prefixlen - net.prefixlen)) - 1)
        if spans and spans[-1][1] + 1 >= first:
            spans[-1][1] = max(spans[-1][1], last)
        else:
            spans.append([first, last])
    bits = 32 if version == 4 else 128
    elements = []
    for first, last in spans:
        size = last - first + 1
        length = bits - size.bit_length() + 1
        if size & (size - 1) == 0 and first % size == 0:  # one prefix
            text = _element_address(first, version)
            elements.append(text if length == bits else f"{text}/{length}")
        else:
            elements.append(f"{_element_address(first, version)}-"
                            f"{_element_address(last, version)}")
    return elements


def exclusion_set(obj: MasqueradeRule | SnatRule, *, inet: bool = True) -> bool:
    """Whether ``obj``'s exclusions are rendered as one anonymous interval set
    (``daddr != { a, b-c }``: one lookup) instead of one ``daddr !=`` match each: only
    when the matches would not fit in one rule, by their count
    (:data:`NFT_RULE_EXPRESSIONS`) or by their room (:data:`NFT_RULE_BYTES`, as
    :func:`nft_rule_bytes` lays them out), so that every rule that fits keeps its shape.
    The tag is the same either way."""
    return len(obj.exclude) > 1 and (
        _nat_expressions(obj, inet, False) > NFT_RULE_EXPRESSIONS
        or _nat_bytes(obj, inet, False) >= NFT_RULE_BYTES)


def _nat_body(rule: MasqueradeRule | SnatRule, proto: str, as_set: bool = False) -> str:
    parts = [f"{proto} saddr {_prefix(rule.source)}"]
    if rule.destination is not None:
        parts.append(f"{proto} daddr {_prefix(rule.destination)}")
    # One "!=" match per exclusion rather than an anonymous set: an anonymous set
    # is a kernel object of its own (it takes a handle and every later nft
    # command lists it), and ip-masq-agent-sized exclusion lists are short. A rule
    # whose matches would not fit in one rule is written with the set (exclusion_set).
    if as_set:
        elements = excluded_elements(rule.exclude)
        # A set of one element (exclusions that make one range) nft writes, and lists,
        # as a plain test of that range: spelled so, it reads back as written.
        listed = elements[0] if len(elements) == 1 else f"{{ {', '.join(elements)} }}"
        parts.append(f"{proto} daddr != {listed}")
    else:
        parts.extend(f"{proto} daddr != {_prefix(excluded)}" for excluded in rule.exclude)
    if rule.out_interface is not None:
        parts.append(f'oifname "{nft_ifname(rule.out_interface)}"')
    if isinstance(rule, SnatRule):
        # In an inet table the address family of "snat to" must be spelled out.
        parts.append(f"snat {proto} to {rule.to_address}")
    else:
        parts.append("masquerade")
    if rule.random_fully:
        parts.append("fully-random")
    return " ".join(parts)


def _forward_bodies(rule: ForwardRule, proto: str) -> tuple[str, str]:
    src, dst = _prefix(rule.source), _prefix(rule.destination)
    ifaces = ""
    back = ""
    if rule.in_interface is not None:
        ifaces += f' iifname "{nft_ifname(rule.in_interface)}"'
        back += f' oifname "{nft_ifname(rule.in_interface)}"'
    if rule.out_interface is not None:
        ifaces += f' oifname "{nft_ifname(rule.out_interface)}"'
        back = f' iifname "{nft_ifname(rule.out_interface)}"' + back
    return (
        f"{proto} saddr {src} {proto} daddr {dst}{ifaces} accept",
        f"{proto} saddr {dst} {proto} daddr {src}{back} ct state established,related accept",
    )


def _tag(text: str) -> str:
    return ownership_tag(f"{_LAYOUT}\n{text}")


def rule_tag(text: str) -> str:
    """``nft_rules(obj)[0].comment`` for the object ``obj`` whose rules :func:`nft_rules`
    renders in an ``inet`` table as ``text``: a NAT rule's one body, a forward rule's
    two joined by a newline."""
    return _tag(text)


def nft_rules(obj: NetObject, *, inet: bool = True) -> tuple[NftRule, ...]:
    """The kernel rules that implement ``obj``, with their tags.

    A NAT rule is one rule in the ``postrouting`` chain; a forward rule is two
    rules in the ``forward`` chain (the traffic, then its replies). ``inet``
    selects the spelling for an ``inet`` table (the default) or an ``ip``/``ip6``
    table; the tag is the same for both.
    """
    proto = "ip" if obj.family == 4 else "ip6"
    if isinstance(obj, MasqueradeRule | SnatRule):
        body = _nat_body(obj, proto)
        tag = _tag(body)  # of the one-match-per-exclusion text, whichever is written
        if exclusion_set(obj, inet=inet):
            body = _nat_body(obj, proto, True)
        if not inet and isinstance(obj, SnatRule):
            body = body.replace(f"snat {proto} to ", "snat to ", 1)
        return (NftRule(proto, NAT_CHAIN, body, tag),)
    if isinstance(obj, ForwardRule):
        there, back = _forward_bodies(obj, proto)
        tag = _tag(f"{there}\n{back}")
        return (
            NftRule(proto, FORWARD_CHAIN, there, tag),
            NftRule(proto, FORWARD_CHAIN, back, tag + REPLY_SUFFIX),
        )
    raise ModelError(f"the nftables renderer handles NAT and forward rules, not {obj.type_name}")


NFT_RULE_EXPRESSIONS: Final = 128
"""The most expressions the kernel takes in one rule (``NFT_RULE_MAXEXPRS``); a longer
rule is refused with a bare "Invalid argument", and its transaction with it."""


def _prefix_expressions(net: Network) -> int:
    # A payload load, a bitwise mask unless the prefix ends on a byte (a /0 has one
    # too), a cmp: libnftables' linearization of an address match.
    return 2 if net.prefixlen and net.prefixlen % 8 == 0 else 3


def nft_expressions(obj: NetObject, *, inet: bool = True) -> int:
    """How many expressions the longest of :func:`nft_rules`' kernel rules holds, as
    libnftables lays them out for the kernel (nft --debug=netlink's lines): what
    :data:`NFT_RULE_EXPRESSIONS` bounds. Each exclusion of a NAT rule is a
    ``daddr !=`` match of its own: two or three expressions.

    >>> nft_expressions(MasqueradeRule("10.42.0.0/16", exclude=["10.0.0.0/8"]))
    7
    """
    count = 2 if inet else 0  # the meta nfproto test an inet table's address match needs
    if isinstance(obj, MasqueradeRule | SnatRule):
        return _nat_expressions(obj, inet, exclusion_set(obj, inet=inet))
    if isinstance(obj, ForwardRule):
        count += _prefix_expressions(obj.source) + _prefix_expressions(obj.destination)
        count += 2 * ((obj.in_interface is not None) + (obj.out_interface is not None))
        return count + 3 + 1  # the reply half's ct state (load, bitwise, cmp); accept
    raise ModelError(f"the nftables renderer handles NAT and forward rules, not {obj.type_name}")


def _nat_expressions(obj: MasqueradeRule | SnatRule, inet: bool, as_set: bool) -> int:
    count = 2 if inet else 0
    count += _prefix_expressions(obj.source)
    if obj.destination is not None:
        count += _prefix_expressions(obj.destination)
    if as_set:
        count += 2  # a payload load, a lookup
    else:
        count += sum(_prefix_expressions(e) for e in obj.exclude)
    count += 2 if obj.out_interface is not None else 0  # meta load, cmp
    return count + (2 if isinstance(obj, SnatRule) else 1)  # immediate and nat; masq


NFT_RULE_BYTES: Final = 4096
"""The room the expressions of one rule must stay below in the kernel (``size >= 1 << 12``
in ``nf_tables_newrule``: at most 4095 bytes, the sum of each expression's
``ops->size``); a rule taking this much or more is refused with "File too large"
(``EFBIG``), which IPv6 prefixes that do not end on a byte reach before
:data:`NFT_RULE_EXPRESSIONS` (a load, a bitwise and a compare of 16 bytes: 128 bytes)."""

# Each expression's ops->size in the kernel, NFT_EXPR_SIZE(sizeof(its private struct)):
# the 8 bytes of struct nft_expr, then the struct, 8-byte aligned (64-bit; a 32-bit
# kernel's pointers are smaller). Each is the largest of the kernels k3snet supports, not
# one kernel's: Linux 6.18's (checked against its refusals,
# tests/nftables/test_rule_bytes.py) but where an older kernel's is larger. Before 5.10
# a != of up to 4 bytes is no cmp_fast (struct nft_cmp_expr, 32) and a 4-byte mask no
# bitwise_fast (struct nft_bitwise, 48; 64 from 5.6, with its shift data): an IPv4
# exclusion that does not end on a byte takes 112 bytes on 5.6 to 5.9, 64 on 6.18. A
# rule whose sum stays under NFT_RULE_BYTES here is taken by every one of them.
_PAYLOAD: Final = 16  # struct nft_payload: 4 bytes
_META: Final = 16  # struct nft_meta: 3 bytes (the nfproto or interface name load)
_CMP_FAST: Final = 24  # == of up to 4 bytes: struct nft_cmp_fast_expr (16 before 5.10)
_CMP_NEQ: Final = 32  # != of up to 4 bytes: struct nft_cmp_expr before 5.10, 24 since
_CMP: Final = 48  # 5 to 16 bytes: struct nft_cmp16_fast_expr (5.19; nft_cmp_expr, 32, before)
_BITWISE_FAST: Final = 64  # a 4-byte mask: nft_bitwise_fast_expr since 5.10 (24), see above
_BITWISE: Final = 64  # struct nft_bitwise: mask, xor and shift data of 16 bytes each
_LOOKUP: Final = 56  # struct nft_lookup: the set, its registers and its binding
_IMMEDIATE: Final = 32  # struct nft_immediate_expr: one struct nft_data (snat's address)
_NAT: Final = 16  # struct nft_nat, and struct nft_masq
_CT: Final = 16  # struct nft_ct: the ct state load
_NFPROTO: Final = _META + _CMP_FAST  # an inet table's meta nfproto test


def _cmp_bytes(length: int, negated: bool = False) -> int:
    # nft_cmp_select_ops: == (and != since 5.10) of up to 4 bytes is cmp_fast, of 5 to 16
    # bytes in a 16-byte register (libnftables loads into reg 1) cmp16_fast since 5.19
    if length <= 4:
        return _CMP_NEQ if negated else _CMP_FAST
    return _CMP


def _prefix_bytes(net: Network, negated: bool = False) -> int:
    # libnftables (1.0.6) loads a prefix that ends on a byte as its bytes and compares
    # them; another one (a /0 too) it loads whole (4 or 16 bytes), masks and compares.
    if net.prefixlen and net.prefixlen % 8 == 0:
        return _PAYLOAD + _cmp_bytes(net.prefixlen // 8, negated)
    whole = net.max_prefixlen // 8
    return (_PAYLOAD + (_BITWISE_FAST if whole == 4 else _BITWISE)
            + _cmp_bytes(whole, negated))


def _ifname_bytes(name: str) -> int:
    # A name is compared as the kernel's 16 bytes (IFNAMSIZ); a wildcard "eth*" as its
    # prefix alone, "eth" (nft_ifname).
    nft_name = nft_ifname(name)
    if nft_name.endswith("*"):
        return _META + _cmp_bytes(len(nft_name) - 1)
    return _META + _cmp_bytes(16)


def _nat_bytes(obj: MasqueradeRule | SnatRule, inet: bool, as_set: bool) -> int:
    size = _NFPROTO if inet else 0
    size += _prefix_bytes(obj.source)
    if obj.destination is not None:
        size += _prefix_bytes(obj.destination)
    if as_set:
        size += _PAYLOAD + _LOOKUP
    else:
        size += sum(_prefix_bytes(e, negated=True) for e in obj.exclude)
    if obj.out_interface is not None:
        size += _ifname_bytes(obj.out_interface)
    return size + (_IMMEDIATE + _NAT if isinstance(obj, SnatRule) else _NAT)


def nft_rule_bytes(obj: NetObject, *, inet: bool = True) -> int:
    """How much of :data:`NFT_RULE_BYTES` the largest of :func:`nft_rules`' kernel rules
    takes, as the kernel sums it (each expression's ``ops->size``, 64-bit, the largest
    of the kernels k3snet supports: Linux 6.18's but for IPv4 tests, larger before 5.10),
    for the expressions libnftables sends: what :func:`exclusion_set` keeps a rule of matches
    under, and what ranks the rules of a transaction the kernel refused as too large.

    >>> nft_rule_bytes(MasqueradeRule("fd42:42::/56", exclude=["fd00::/33"]))
    248
    """
    if isinstance(obj, MasqueradeRule | SnatRule):
        return _nat_bytes(obj, inet, exclusion_set(obj, inet=inet))
    if isinstance(obj, ForwardRule):
        size = (_NFPROTO if inet else 0) + _prefix_bytes(obj.source)
        size += _prefix_bytes(obj.destination) + _IMMEDIATE  # accept
        for name in (obj.in_interface, obj.out_interface):
            size += _ifname_bytes(name) if name is not None else 0
        return size + _CT + _BITWISE_FAST + _CMP_NEQ  # the reply half's ct state
    raise ModelError(f"the nftables renderer handles NAT and forward rules, not {obj.type_name}")


def too_large(obj: NetObject, *, inet: bool = True) -> str | None:
    """Why the kernel would refuse ``obj``'s rule (:data:`NFT_RULE_EXPRESSIONS`), or
    ``None``. Its room (:data:`NFT_RULE_BYTES`) refuses none: a rule whose matches would
    take too much is written with the set (:func:`exclusion_set`), a few hundred bytes."""
    count = nft_expressions(obj, inet=inet)
    if count <= NFT_RULE_EXPRESSIONS:
        return None
    return (f"{obj.brief()}: its nftables rule would hold {count} expressions, and the "
            f"kernel takes at most {NFT_RULE_EXPRESSIONS} in one rule (each exclusion is a "
            "match of two or three, by whether its prefix length is a multiple of 8); "
            "give it fewer exclusions (split its destinations into several rules)")


def _j_prefix(proto: str, fld: str, net: Network, op: str = "==") -> str:
    return (f'{{"match":{{"op":"{op}","left":{{"payload":{{"protocol":"{proto}",'
            f'"field":"{fld}"}}}},"right":{{"prefix":{{"addr":"{_address(net)}",'
            f'"len":{net.prefixlen}}}}}}}}}')


def _j_set(proto: str, exclude: Iterable[Network]) -> str:
    items = []
    for element in excluded_elements(exclude):
        first, dash, last = element.partition("-")
        address, slash, length = first.partition("/")
        if dash:
            items.append(f'{{"range":["{first}","{last}"]}}')
        elif slash:
            items.append(f'{{"prefix":{{"addr":"{address}","len":{length}}}}}')
        else:
            items.append(f'"{address}"')
    right = items[0] if len(items) == 1 else f'{{"set":[{",".join(items)}]}}'  # as nft lists it
    return (f'{{"match":{{"op":"!=","left":{{"payload":{{"protocol":"{proto}",'
            f'"field":"daddr"}}}},"right":{right}}}}}')


NFT_JSON_IFNAME_WORDS: Final = frozenset({
    "ah", "dccp", "esp", "icmp", "icmpv6", "redirect", "sctp", "tcp", "udp", "udplite",
})
"""Interface names libnftables' JSON parser reads as a protocol, not a name: a JSON rule
matching ``oifname`` ``"sctp"`` is refused ("datatype mismatch, expected network
interface name"), even as nft's own JSON listing of that rule (nft 1.0.6;
tests/nftables/test_table_names.py checks the list against the installed nft). nft's
language quotes the name (``oifname "sctp"``) and takes it."""


def nft_ifname(name: str) -> str:
    """An interface name of k3snet's model as nft matches it: a trailing ``+`` (``eth+``:
    every interface whose name starts with ``eth``, as iptables, Calico and Cilium read
    it) is nft's wildcard ``eth*``; nft would match ``"eth+"`` as one literal name.

    >>> nft_ifname("eth+"), nft_ifname("eth0")
    ('eth*', 'eth0')
    """
    return name[:-1] + "*" if name.endswith("+") else name


def model_ifname(text: str) -> str:
    """:func:`nft_ifname` reversed: nft's wildcard ``eth*`` is ``eth+`` (an escaped
    ``eth\\*``, a literal star, is left as it is: no interface name k3snet takes)."""
    return text[:-1] + "+" if text.endswith("*") and not text.endswith("\\*") else text


def _j_ifname(key: str, name: str) -> str:
    # Interface names are validated ([A-Za-z0-9_.@+-]): nothing to escape.
    if name in NFT_JSON_IFNAME_WORDS:
        raise ModelError(
            f"interface name {name!r} cannot be written through nft's JSON: libnftables "
            "reads it as a protocol; give the nftables backend syntax='nft' (the default)"
        )
    name = nft_ifname(name)
    return f'{{"match":{{"op":"==","left":{{"meta":{{"key":"{key}"}}}},"right":"{name}"}}}}'


_J_CT_REPLY = ('{"match":{"op":"in","left":{"ct":{"key":"state"}},'
               '"right":["established","related"]}}')


def nft_rules_json(obj: NetObject, *, inet: bool = True) -> tuple[str, ...]:
    """The libnftables JSON statement lists (``[...]`` text) of :func:`nft_rules`, in order.

    Built as text rather than through :func:`json.dumps`: a 10k-rule batch is
    rendered several times faster, and every value is a validated address,
    prefix or interface name.
    """
    proto = "ip" if obj.family == 4 else "ip6"
    if isinstance(obj, MasqueradeRule | SnatRule):
        parts = [_j_prefix(proto, "saddr", obj.source)]
        if obj.destination is not None:
            parts.append(_j_prefix(proto, "daddr", obj.destination))
        if exclusion_set(obj, inet=inet):
            parts.append(_j_set(proto, obj.exclude))
        else:
            parts += [_j_prefix(proto, "daddr", e, "!=") for e in obj.exclude]
        if obj.out_interface is not None:
            parts.append(_j_ifname("oifname", obj.out_interface))
        flags = '"flags":["fully-random"]' if obj.random_fully else ""
        if isinstance(obj, SnatRule):
            family = f'"family":"{proto}",' if inet else ""
            comma = "," if flags else ""
            parts.append(f'{{"snat":{{{family}"addr":"{obj.to_address}"{comma}{flags}}}}}')
        else:
            parts.append(f'{{"masquerade":{{{flags}}}}}' if flags else '{"masquerade":null}')
        return ("[" + ",".join(parts) + "]",)
    if isinstance(obj, ForwardRule):
        rules = []
        for reply in (False, True):
            src, dst = (obj.destination, obj.source) if reply else (obj.source, obj.destination)
            iif, oif = ((obj.out_interface, obj.in_interface) if reply
                        else (obj.in_interface, obj.out_interface))
            parts = [_j_prefix(proto, "saddr", src), _j_prefix(proto, "daddr", dst)]
            if iif is not None:
                parts.append(_j_ifname("iifname", iif))
            if oif is not None:
                parts.append(_j_ifname("oifname", oif))
            if reply:
                parts.append(_J_CT_REPLY)
            parts.append('{"accept":null}')
            rules.append("[" + ",".join(parts) + "]")
        return tuple(rules)
    raise ModelError(f"the nftables renderer handles NAT and forward rules, not {obj.type_name}")


def object_tag(obj: NetObject) -> str:
    """The comment (``k3snet:<hash>``) of ``obj``'s first kernel rule."""
    return nft_rules(obj)[0].comment


def chain_order_key(obj: NetObject) -> tuple[Any, ...]:
    """Where ``obj``'s rules go in their chain: more specific NAT rules first.

    NAT statements are terminal, so among overlapping NAT rules the first one
    decides. Ordering by longer source prefix, then longer destination prefix,
    then out interface (one name, then wildcards ``eth+`` by longer prefix, then
    any interface) puts every rule before any rule whose match contains it,
    whatever order the rules were added in: ``oif eth0`` before ``oif eth+``,
    whose match holds eth0 too. The key is computed
    from the object's identity key only, so a replaced rule keeps its place.
    Forward rules only accept, so their order does not matter; they sort by
    :attr:`~k3snet.model.NetObject.sort_key`.
    """
    key = obj.key
    if key[0] != "nat":
        return (1, *obj.sort_key)
    _, version, src, src_len, dst, dst_len, oif = key
    return (0, version, -src_len, -max(dst_len, 0), out_interface_rank(oif), src, dst, dst_len, oif)


def _table_text(family: str, table: str, objects: Iterable[NetObject]) -> list[str]:
    inet = family == "inet"
    chains: dict[str, list[str]] = {NAT_CHAIN: [], FORWARD_CHAIN: []}
    for obj in sorted(objects, key=chain_order_key):
        problem = too_large(obj, inet=inet)
        if problem is not None:
            raise ModelError(problem)
        for rule in nft_rules(obj, inet=inet):
            chains[rule.chain].append(f'\t\t{rule.body} comment "{rule.comment}"')
    lines = [f"table {family} {table} {{", f'\tcomment "{TABLE_COMMENT}"']
    for index, (chain, rules) in enumerate(chains.items()):
        if index:
            lines.append("")
        lines += [f"\tchain {chain} {{", f"\t\t{CHAIN_SPECS[chain]}", *rules, "\t}"]
    lines.append("}")
    return lines


def render_nftables_conf(
    state: State, *, table: str = "k3snet", family: TableFamily = "inet"
) -> str:
    """An ``nft -f`` file holding k3snet's table(s) with ``state``'s owned NAT and forward rules.

    Loaded at boot with ``nft -f`` by a unit of its own (docs/cli.md), so the rules
    survive a reboot; not as an include of ``/etc/nftables.conf``, whose service
    firewalld conflicts with on RHEL and its kin.
    Each table is first declared empty and deleted, then written whole, so
    loading the file again replaces the table atomically instead of appending
    duplicates (the idiom ``nft -f`` users rely on). Other kinds (routes,
    sysctls) and foreign objects are not nftables' business and are left out;
    with no owned rule of a family, the file only deletes that table. A table of
    the same name loaded before this file (another include of the admin's) is
    replaced too, as the running backend would refuse to: give ``table`` a name
    no other file uses: a name another program's table has is refused
    (:func:`validate_own_table`), and the file's header gives the ``ExecCondition=``
    lines (:func:`load_condition`) that keep a unit from loading it over a table of
    its name that is not k3snet's.

    >>> from k3snet.model import MasqueradeRule, State
    >>> state = State(owned=[MasqueradeRule("10.42.0.0/16")])
    >>> print(render_nftables_conf(state))  # doctest: +NORMALIZE_WHITESPACE +ELLIPSIS
    #!/usr/sbin/nft -f
    # k3snet nftables rules: generated, do not edit (k3snet owns this table).
    # Loading it deletes table inet k3snet first: load it only where
    # none is there or it is k3snet's, with these lines in the systemd unit (docs/cli.md):
    # ExecCondition=/bin/sh -c '! /usr/sbin/nft list table inet k3snet ...'
    table inet k3snet {}
    delete table inet k3snet
    table inet k3snet {
        comment "k3snet's own table: k3snet rewrites and deletes it"
        chain postrouting {
            type nat hook postrouting priority srcnat; policy accept;
            ip saddr 10.42.0.0/16 masquerade comment "k3snet:..."
        }
    <BLANKLINE>
        chain forward {
            type filter hook forward priority filter; policy accept;
        }
    }
    <BLANKLINE>
    """
    validate_nft_name(table)
    validate_own_table(table, family)
    families = table_families(family)
    wanted = [o for o in state.owned if o.kind in ("nat", "forward")]
    lines = [
        "#!/usr/sbin/nft -f",
        "# k3snet nftables rules: generated, do not edit (k3snet owns this table).",
        f"# Loading it deletes table {' and '.join(f'{f} {table}' for f in families)} first: "
        "load it only where",
        "# none is there or it is k3snet's, with these lines in the systemd unit (docs/cli.md):",
        *(f"# ExecCondition=/bin/sh -c '{command}'" for command in load_condition(table, family)),
    ]
    for nft_family in families:
        mine = [
            o
            for o in wanted
            if nft_family == "inet" or (o.family == 4) == (nft_family == "ip")
        ]
        lines += [f"table {nft_family} {table} {{}}", f"delete table {nft_family} {table}"]
        if mine:
            lines += _table_text(nft_family, table, mine)
    return "\n".join(lines) + "\n"
