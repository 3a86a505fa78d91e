"""The netfilter ruleset generation id, and a chain's rule count, read over a netlink socket.

Every committed nftables transaction in a network namespace bumps one counter
(``NFT_MSG_GETGEN``), iptables-nft's commits included. Reading it is one small
netlink round trip, so a backend can keep what it observed until the id moves.
Written once here for the nftables and the iptables backends. The tables a process
owns (``flags owner``) are listed too, and the names of all tables (the iptables
backend's look for tables iptables does not show): the kernel deletes one without moving the id. A
chain's use count
(``NFT_MSG_GETCHAIN``) is, for a base chain (nothing can jump to one), the number
of its rules: what the nftables backend holds its text listing to. A base chain's
policy, a table's use count, and the deletion of an empty chain and table in one
transaction guarded by the generation id, are what the iptables backend removes the
built-in chains iptables-nft made for it with (:mod:`k3snet.backends.iptables.made`).
"""

from __future__ import annotations

import os
import re
import socket
import struct
from collections.abc import Collection, Mapping

from k3snet._regex import lazy_pattern
from k3snet.backends.kit import translate_errors
from k3snet.errors import BackendError

__all__ = ["GenerationReader"]

# Netfilter netlink: NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETGEN, and its answer.
_NETLINK_NETFILTER = 12
_NFT_MSG_GETGEN = (10 << 8) | 16
_NFT_MSG_GETCHAIN = (10 << 8) | 4
_NFT_MSG_GETTABLE = (10 << 8) | 1
_NFT_MSG_GETRULE = (10 << 8) | 7
_NFT_MSG_GETSET = (10 << 8) | 10
_NFT_MSG_GETOBJ = (10 << 8) | 19
_NFT_MSG_GETFLOWTABLE = (10 << 8) | 23
_NFTA_RULE_TABLE = 1
_NFTA_RULE_CHAIN = 2
_NFTA_RULE_HANDLE = 3
_NFTA_RULE_EXPRESSIONS = 4
_NFTA_EXPR_NAME = 1
_NFTA_EXPR_DATA = 2
_NFTA_TARGET_NAME = 1
_NFTA_TARGET_REV = 2
_NFTA_TARGET_INFO = 3
_NFTA_TABLE_NAME = 1
_NFTA_TABLE_FLAGS = 2
_NFTA_TABLE_HANDLE = 4
_NFT_TABLE_F_OWNER = 2
_NFPROTO_NAMES = {1: "inet", 2: "ip", 3: "arp", 5: "netdev", 7: "bridge", 10: "ip6"}
_NLM_F_DUMP = 0x300
_NLMSG_DONE = 3
_NFTA_GEN_ID = 1
_NFTA_CHAIN_TABLE = 1
_NFTA_CHAIN_HANDLE = 2
_NFTA_CHAIN_NAME = 3
_NFTA_CHAIN_USE = 6
_NFPROTO = {"inet": 1, "ip": 2, "ip6": 10, "netdev": 5}
# A base chain's hook (nested): its device, or its devices (a nested list of names).
_NFTA_CHAIN_HOOK = 4
_NFTA_HOOK_DEV = 3
_NFTA_HOOK_DEVS = 4
_FAMILY_NUMBERS = {name: number for number, name in _NFPROTO_NAMES.items()}
# The named objects of a table (each answer's table and name attributes, numbered alike
# for sets, stateful objects and flowtables: NFTA_SET_TABLE/_NAME, NFTA_OBJ_*,
# NFTA_FLOWTABLE_*) and the handle attribute of each kind.
_NAMED = (("chain", _NFT_MSG_GETCHAIN, _NFTA_CHAIN_NAME, _NFTA_CHAIN_HANDLE),
          ("set", _NFT_MSG_GETSET, 2, 16),  # NFTA_SET_HANDLE
          ("object", _NFT_MSG_GETOBJ, 2, 6),  # NFTA_OBJ_HANDLE
          ("flowtable", _NFT_MSG_GETFLOWTABLE, 2, 5))  # NFTA_FLOWTABLE_HANDLE
_NFT_MSG_GETSETELEM = (10 << 8) | 13
_NFTA_SET_KEY_TYPE = 4
_NFTA_SET_DATA_TYPE = 6
_NFTA_SET_ELEM_LIST_TABLE = 1
_NFTA_SET_ELEM_LIST_SET = 2
_NFTA_SET_ELEM_LIST_ELEMENTS = 3
_NFTA_SET_ELEM_KEY = 1
_NFTA_SET_ELEM_DATA = 2
_NFTA_SET_ELEM_KEY_END = 10
_NFTA_DATA_VALUE = 1
_NFT_DATA_VERDICT = 0xFFFFFF00
_NFTA_CMP_SREG = 1
_NFTA_CMP_DATA = 3
# libnftables' datatypes printed as strings (TYPE_STRING, TYPE_IFNAME), and the register
# sizes of the datatypes a concatenation with one often holds (ipv4_addr, ipv6_addr,
# ether_addr, inet_proto, inet_service, mark, ifname: each rounded up to 4 bytes).
_STRING_TYPES = frozenset({5, 41})
_TYPE_SIZES = {5: 16, 41: 16, 7: 4, 8: 16, 9: 8, 12: 4, 13: 4, 19: 4}
# meta's keys loading a string: IIFNAME, OIFNAME, BRI_IIFNAME, BRI_OIFNAME, IIFKIND,
# OIFKIND, SDIFNAME; ct's HELPER.
_META_STRING_KEYS = frozenset({6, 7, 17, 18, 26, 27, 34})
_NFT_CT_HELPER = 6
# fib's result that is an interface name (NFT_FIB_RESULT_OIFNAME: ``fib daddr oifname``).
_NFT_FIB_RESULT_OIFNAME = 2
# The keys (attribute 2) loading a string of each expression that has such keys.
_STRING_KEYS: dict[bytes, Collection[int]] = {
    b"meta": _META_STRING_KEYS, b"ct": (_NFT_CT_HELPER,), b"fib": (_NFT_FIB_RESULT_OIFNAME,)}
# The bytes of a rule loading a string (a meta or ct key attribute of a string key; an
# osf expression's name; a fib expression's register, then its result OIFNAME, as
# nft_fib_dump writes them): only such a rule is decoded (5 000 rules: 0.6 s decoded
# whole). Other expressions' attribute 2 may match too (xfrm's SPI key, numgen's modulus):
# their rule is decoded, and judged by each expression's name (_rule_strings_utf8).
_STRING_LOADS = lazy_pattern(
    re.escape(struct.pack("=HH", 8, 2)) + b"\0\0\0["
    + b"".join(re.escape(bytes([key])) for key in sorted(_META_STRING_KEYS)) + b"]|osf\0|"
    + b"fib\0..\x02[\x00\x80]" + re.escape(struct.pack("=HH", 8, 1)) + b"...."
    + re.escape(struct.pack("=HH", 8, 2) + struct.pack(">I", _NFT_FIB_RESULT_OIFNAME)),
    re.DOTALL)
# A cmp as the kernel dumps it (nft_cmp_dump): its register (group 1), its operator, then
# its data's value attribute: its length, group 2, the bytes after the match (the data's
# own nested length counts the value's padding and would reach into the next expression's
# header).
_CMP = (re.escape(struct.pack("=HH", 8, 1)) + b"cmp\0..\x02[\x00\x80]"
        + re.escape(struct.pack("=HH", 8, 1)) + b"(....)" + re.escape(struct.pack("=HH", 8, 2))
        + b"......\x03[\x00\x80](..)\x01[\x00\x80]")
_CMPS = lazy_pattern(_CMP, re.DOTALL)
# A meta load of a string (its key, then its register: group 1) and the cmp after it
# (groups 2 and 3: _CMP's), as the kernel dumps them (nft_meta_get_dump, nft_cmp_dump).
_META_CMP = lazy_pattern(
    re.escape(struct.pack("=HHH", 1, 9, 1)) + b"meta\0\0\0\0..\x02[\x00\x80]"
    + re.escape(struct.pack("=HH", 8, 2)) + b"\0\0\0["
    + b"".join(re.escape(bytes([key])) for key in sorted(_META_STRING_KEYS)) + b"]"
    + re.escape(struct.pack("=HH", 8, 1)) + b"(....)..\x01[\x00\x80]" + _CMP, re.DOTALL)
# An expression loading a value into a register as nft writes them, as the kernel dumps
# each (its name, then its register first, or after a meta's key): the register, one
# group per kind. A test of a string's register after one of these compares what it
# loaded, not the string (a bitwise or byteorder of the string's register is none of
# them: libnftables prints a test of its result with the string's type, and aborts too).
_WRITES = lazy_pattern(b"|".join(
    re.escape(struct.pack("=HHH", 1, 5 + len(name), 1) + name + b"\0" * (4 - len(name) % 4))
    + b"..\x02[\x00\x80]" + before + re.escape(struct.pack("=HH", 8, attribute)) + b"(....)"
    for name, before, attribute in (
        (b"payload", b"", 1), (b"immediate", b"", 1), (b"exthdr", b"", 1), (b"ct", b"", 1),
        (b"meta", re.escape(struct.pack("=HH", 8, 2)) + b"....", 1))), re.DOTALL)
# The register attribute each expression writes its result to (NFTA_*_DREG), of those
# that write one: a string loaded into a register is compared as one until another
# expression writes that register (libnftables' netlink_delinearize reads registers so).
# An expression not named here is taken as writing none (a string's register stays one:
# conservative).
_DREG: dict[bytes, int] = {
    b"payload": 1, b"meta": 1, b"ct": 1, b"immediate": 1, b"exthdr": 1, b"rt": 1,
    b"numgen": 1, b"fib": 1, b"osf": 1, b"xfrm": 1, b"bitwise": 2, b"byteorder": 2,
    b"hash": 2, b"socket": 2, b"tunnel": 2, b"lookup": 3}
# Of those, the ones whose result is derived from a register they read (NFTA_*_SREG, 1):
# a string's register read so leaves a string's derivative in the one written.
_DERIVED = frozenset({b"bitwise", b"byteorder"})
# A bitwise's mask and xor (NFTA_BITWISE_MASK, NFTA_BITWISE_XOR): libnftables prints
# each of a string's (but a mask of all ones or a zero xor, left out) as that string.
_NFTA_BITWISE_MASK = 4
_NFTA_BITWISE_XOR = 5
# Expressions after a string's test that the fast path of _rule_utf8 does not follow:
# one deriving a register from the string's, and xtables' match and target, whose data
# (kept as written, 256 bytes of -m comment's) may hold the bytes of a load.
_UNFOLLOWED = lazy_pattern(b"bitwise\0|byteorder\0|match\0|target\0")
_NFTA_RANGE_SREG = 1
_NFTA_RANGE_FROM_DATA = 3
_NFTA_RANGE_TO_DATA = 4
_NFT_MSG_DELTABLE = (10 << 8) | 2
_NFT_MSG_DELCHAIN = (10 << 8) | 5
_NFTA_TABLE_USE = 3
_NFTA_CHAIN_POLICY = 5
_NF_ACCEPT = 1
_NFNL_MSG_BATCH_BEGIN = 0x10
_NFNL_MSG_BATCH_END = 0x11
_NFNL_SUBSYS_NFTABLES = 10
_NFNL_BATCH_GENID = 1
_NLM_F_ACK = 4
_NLM_F_NONREC = 0x100  # delete only an empty chain or table (EBUSY), never its contents
_BATCH_SECONDS = 5.0
_ENOENT = 2
_NLMSG_ERROR = 2
_NLM_F_REQUEST = 1
_CAPABILITY = "CAP_NET_ADMIN"
ONE_BY_ONE = 16
"""Up to this many rules' compat targets are read one ``GETRULE`` each, more with one
dump of their chain (:meth:`GenerationReader.xt_targets`)."""


class GenerationReader:
    """Reads the generation id (and chains' use counts) of the network namespace it was
    made in.

    Make it in the namespace (a :class:`~k3snet.backends.netns.NetnsRunner`
    call): the socket stays bound to that namespace, and :meth:`read` may then
    run in any thread (one at a time).
    """

    def __init__(self) -> None:
        with translate_errors("open a netfilter netlink socket", capability=_CAPABILITY):
            self._sock = socket.socket(
                socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, _NETLINK_NETFILTER
            )
            self._sock.bind((0, 0))
        self._seq = 0

    def read(self) -> int:
        """The ruleset generation id now."""
        with translate_errors("read the nftables generation id", capability=_CAPABILITY):
            attributes = self._request(_NFT_MSG_GETGEN, socket.AF_UNSPEC, b"")
        if attributes is None or _NFTA_GEN_ID not in attributes:
            raise BackendError("the kernel's nftables generation answer has no id")
        return int(struct.unpack_from(">I", attributes[_NFTA_GEN_ID])[0])

    def _chain(self, family: str, table: str, chain: str) -> dict[int, bytes] | None:
        """The kernel's attributes of chain ``chain`` of ``family table`` (``None``: no
        such chain)."""
        body = _attribute(_NFTA_CHAIN_TABLE, table.encode() + b"\0") + _attribute(
            _NFTA_CHAIN_NAME, chain.encode() + b"\0")
        with translate_errors(f"read nftables chain {family} {table} {chain}",
                              capability=_CAPABILITY):
            return self._request(_NFT_MSG_GETCHAIN, _NFPROTO[family], body)

    def chain_use(self, family: str, table: str, chain: str) -> int | None:
        """Chain ``chain`` of table ``family table``'s use count (``None``: no such chain):
        its rules, and the rules and map elements that jump to it (none can to a base
        chain)."""
        attributes = self._chain(family, table, chain)
        if attributes is None:
            return None
        if _NFTA_CHAIN_USE not in attributes:
            raise BackendError(f"the kernel's answer for chain {family} {table} {chain} has no "
                               "use count")
        return int(struct.unpack_from(">I", attributes[_NFTA_CHAIN_USE])[0])

    def chain_devices(self, family: str, table: str, chain: str) -> tuple[str, ...] | None:
        """The devices base chain ``chain`` of ``family table`` is hooked on (a netdev or
        inet ``ingress`` chain's: libnftables 1.0.6's JSON leaves them out), empty for a
        chain on no device; ``None``: no such chain."""
        attributes = self._chain(family, table, chain)
        if attributes is None:
            return None
        hook = _attributes(attributes.get(_NFTA_CHAIN_HOOK, b""), 0)
        if _NFTA_HOOK_DEV in hook:
            return (_text(hook[_NFTA_HOOK_DEV]).decode(errors="replace"),)
        return tuple(_text(name).decode(errors="replace")
                     for _, name in _attribute_list(hook.get(_NFTA_HOOK_DEVS, b"")))

    def chain_handle(self, family: str, table: str, chain: str) -> int | None:
        """Chain ``chain`` of ``family table``'s handle (``None``: no such chain)."""
        attributes = self._chain(family, table, chain)
        handle = b"" if attributes is None else attributes.get(_NFTA_CHAIN_HANDLE, b"")
        return _handle(handle) if len(handle) >= 8 else None

    def chain_state(self, family: str, table: str, chain: str) -> tuple[int, bool] | None:
        """Base chain ``chain`` of ``family table``: (its rule count, its policy is
        accept); ``None``: no such chain."""
        attributes = self._chain(family, table, chain)
        if attributes is None:
            return None
        use = attributes.get(_NFTA_CHAIN_USE, b"")
        policy = attributes.get(_NFTA_CHAIN_POLICY, b"")
        if len(use) < 4 or len(policy) < 4:
            raise BackendError(f"the kernel's answer for chain {family} {table} {chain} has no "
                               "use count or policy: not a base chain")
        return (int(struct.unpack_from(">I", use)[0]),
                struct.unpack_from(">I", policy)[0] == _NF_ACCEPT)

    def table_use(self, family: str, table: str) -> int | None:
        """How many chains, sets and objects table ``family table`` holds (``None``: no
        such table)."""
        with translate_errors(f"read nftables table {family} {table}", capability=_CAPABILITY):
            attributes = self._request(_NFT_MSG_GETTABLE, _NFPROTO[family],
                                       _attribute(_NFTA_TABLE_NAME, table.encode() + b"\0"))
        if attributes is None:
            return None
        use = attributes.get(_NFTA_TABLE_USE, b"")
        if len(use) < 4:
            raise BackendError(f"the kernel's answer for table {family} {table} has no use count")
        return int(struct.unpack_from(">I", use)[0])

    def delete_unchanged(self, generation: int, family: str, table: str, chain: str, *,
                         table_too: bool) -> None:
        """Delete chain ``chain`` of ``family table`` (and the table, with ``table_too``)
        in one transaction the kernel refuses unless the ruleset's generation id is still
        ``generation`` (``ERESTART``: something changed since it was read), and unless
        the chain holds no rule and the table nothing else (``NLM_F_NONREC``: ``EBUSY``,
        never their contents deleted with them): what was judged unused goes, or nothing.
        Refusals as :class:`OSError` (through :class:`~k3snet.errors.BackendError`)."""
        begin = self._seq + 1
        messages = [(_NFNL_MSG_BATCH_BEGIN, _NLM_F_REQUEST,
                     struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(_NFNL_SUBSYS_NFTABLES))
                     + _attribute(_NFNL_BATCH_GENID, struct.pack(">I", generation)))]
        head = struct.pack("=BBH", _NFPROTO[family], 0, 0)
        messages.append((_NFT_MSG_DELCHAIN, _NLM_F_REQUEST | _NLM_F_ACK | _NLM_F_NONREC, head
                         + _attribute(_NFTA_CHAIN_TABLE, table.encode() + b"\0")
                         + _attribute(_NFTA_CHAIN_NAME, chain.encode() + b"\0")))
        if table_too:
            messages.append((_NFT_MSG_DELTABLE, _NLM_F_REQUEST | _NLM_F_ACK | _NLM_F_NONREC,
                             head
                             + _attribute(_NFTA_TABLE_NAME, table.encode() + b"\0")))
        messages.append((_NFNL_MSG_BATCH_END, _NLM_F_REQUEST, struct.pack(
            "=BBH", socket.AF_UNSPEC, 0, socket.htons(_NFNL_SUBSYS_NFTABLES))))
        data = b""
        for offset, (kind, flags, body) in enumerate(messages):
            data += struct.pack("=IHHII", 16 + len(body), kind, flags, begin + offset, 0) + body
        self._seq = begin + len(messages) - 1
        waiting = {begin + 1 + i for i in range(len(messages) - 2)}  # the acks asked for
        with translate_errors(f"delete nftables chain {family} {table} {chain}",
                              capability=_CAPABILITY):
            self._sock.settimeout(_BATCH_SECONDS)
            try:
                self._sock.send(data)
                while waiting:
                    answer = self._sock.recv(65536)
                    offset = 0
                    while offset + 16 <= len(answer):
                        length, kind, _flags, seq = struct.unpack_from("=IHHI", answer, offset)
                        if length < 16:
                            break
                        if kind == _NLMSG_ERROR and begin <= seq <= self._seq:
                            (errno,) = struct.unpack_from("=i", answer, offset + 16)
                            if errno:
                                raise OSError(-errno, os.strerror(-errno))
                            waiting.discard(seq)
                        offset += (length + 3) & ~3
            finally:
                self._sock.settimeout(None)

    def owner_tables(self) -> frozenset[tuple[str, str, int]]:
        """(family, name, handle) of every table a process owns (``flags owner``).

        The kernel deletes such a table when its owner's netlink socket closes, outside
        any transaction: the generation id does not move (Linux 6.x), so what was read
        while one existed is stale once it is gone, and nothing else says so.
        """
        return frozenset(table for table, owned in self._tables() if owned)

    def tables(self) -> frozenset[tuple[str, str]]:
        """(family, name) of every table in the namespace: one dump, no rules or chains
        (what the iptables backend looks at before it lists any other table)."""
        return frozenset((family, name) for (family, name, _), _ in self._tables())

    def _tables(self) -> list[tuple[tuple[str, str, int], bool]]:
        """Every table as ((family, name, handle), owned by a process)."""
        with translate_errors("list the nftables tables", capability=_CAPABILITY):
            return [_table(message)
                    for message in self._dump(_NFT_MSG_GETTABLE, socket.AF_UNSPEC, b"")]

    def unprintable_names(self, sets: list[tuple[int, bytes, bytes, int, int, int]] | None
                          = None) -> list[tuple[str, str, str, str, int]]:
        """(family, table, kind, name, handle) of every table, chain, set, stateful
        object and flowtable whose name is not UTF-8 (kind ``table``: the table's own;
        the names read with ``surrogateescape``): five dumps of names, no rules. Each
        set keyed or mapping to an interface name or a string is added to ``sets``
        (family, table, name, handle, key type, data type), for
        :meth:`unprintable_contents`.

        libnftables asserts a name is UTF-8 as it prints JSON, and aborts the whole
        process when one is not (nftables 1.0.6, ``chain_print_json: Assertion
        '__out' failed``); nft's command line writes no such name, raw netlink does.
        """
        found = []
        with translate_errors("list the nftables tables' names", capability=_CAPABILITY):
            for message in self._dump(_NFT_MSG_GETTABLE, socket.AF_UNSPEC, b""):
                if _ascii_names(message, (_NFTA_TABLE_NAME,)):
                    continue
                attributes = _attributes(message, 20)
                name = _text(attributes.get(_NFTA_TABLE_NAME, b""))
                if not _utf8(name):
                    found.append((_family(message), _word(name), "table", _word(name),
                                  _handle(attributes.get(_NFTA_TABLE_HANDLE, b""))))
            for kind, request, name_attribute, handle_attribute in _NAMED:
                for message in self._dump(request, socket.AF_UNSPEC, b""):
                    if kind == "set" and sets is not None:
                        _string_set(message, sets)
                    if _ascii_names(message, (1, name_attribute)):
                        continue
                    attributes = _attributes(message, 20)
                    table = _text(attributes.get(1, b""))  # NFTA_*_TABLE
                    name = _text(attributes.get(name_attribute, b""))
                    if not (_utf8(name) and _utf8(table)):
                        found.append((_family(message), _word(table), kind, _word(name),
                                      _handle(attributes.get(handle_attribute, b""))))
        return found

    def unprintable(self, named: list[tuple[int, bytes, bytes, int, int, int]] | None = None
                    ) -> list[tuple[str, str, str, str, int]]:
        """What :meth:`unprintable_names` finds, and the rules and sets holding a string
        that is not UTF-8 (:meth:`unprintable_contents`): what a JSON listing aborts on.
        Each named set of interface names or strings is added to ``named``, for
        :meth:`unprintable_elements`."""
        sets: list[tuple[int, bytes, bytes, int, int, int]] = []
        found = self.unprintable_names(sets)
        if named is not None:
            named.extend(one for one in sets if not one[2].startswith(b"__"))
        return found + self.unprintable_contents(sets)

    def unprintable_elements(self, sets: list[tuple[int, bytes, bytes, int, int, int]],
                             family: str | None = None, table: str | None = None
                             ) -> list[tuple[str, str, str, str, int]]:
        """(family, table, ``set``, name, handle) of each named set of ``sets`` (of table
        ``family table`` alone when ``table`` is given) holding an element whose string
        is not UTF-8 (one ``GETSETELEM`` dump each). A rule fills a set from packets
        (``update @m { iifname : 1 }``) without moving the generation id: such an element
        is found only by reading the elements again."""
        with translate_errors("list the nftables sets' elements", capability=_CAPABILITY):
            return [(_NFPROTO_NAMES.get(set_family, str(set_family)), _word(set_table), "set",
                     _word(name), handle)
                    for set_family, set_table, name, handle, key_type, data_type
                    in _of_table(sets, family, table)
                    if not name.startswith(b"__")
                    and not self._elements_utf8(set_family, set_table, name, key_type,
                                                data_type)]

    def unprintable_contents(self, sets: list[tuple[int, bytes, bytes, int, int, int]],
                             family: str | None = None, table: str | None = None,
                             chain: str | None = None
                             ) -> list[tuple[str, str, str, str, int]]:
        """(family, table, kind, name, handle) of each rule (kind ``rule``, its chain as
        ``name``) and set or map (kind ``set``) holding a string that is not UTF-8 where
        libnftables prints one: one ``GETRULE`` dump, and one ``GETSETELEM`` dump of each
        set keyed or mapping to an interface name or a string (``sets``:
        :meth:`unprintable_names` gives them, from its dump of the sets; none for most
        rulesets).

        Of table ``family table`` alone when ``table`` is given (its chain ``chain``'s
        rules alone when that is too: the sets stay the table's), what a listing of that
        table or chain prints: the kernel filters the rule dump by the table and chain
        the request names (``nf_tables_dump_rules``), so the rules of the other tables
        are neither sent nor read (10 000 foreign rules cost 0.2-0.75 s a dump of
        them all: docs/performance.md, "Strings that are not UTF-8"). Every table's
        when ``table`` is ``None``.

        libnftables aborts the process printing such a string as JSON (nftables 1.0.6,
        ``relational_expr_json: Assertion '__out' failed``): ``iifname $'bad\\xff'``,
        the other interface-name keys of ``meta`` (``oifname``, ``iifkind``,
        ``sdifname`` ...), ``ct helper``, ``osf name``, ``fib daddr oifname``, and an
        anonymous set or map of
        such names inline in its rule; a named map of them aborts its own listing, and
        a named set of them is listed without the element (read as not there), so
        either is named here. Comments (rules', sets', chains', tables') and ``log
        prefix`` are left out of the listing, no abort: not looked for.
        """
        number = _FAMILY_NUMBERS.get(family or "", socket.AF_UNSPEC)
        place = None if table is None else (
            number, table.encode(), None if chain is None else chain.encode())
        sets = _of_table(sets, family, table)
        found: list[tuple[str, str, str, str, int]] = []
        anonymous: set[tuple[int, bytes, bytes]] = set()
        with translate_errors("list the nftables sets' elements", capability=_CAPABILITY):
            for set_family, set_table, name, handle, key_type, data_type in sets:
                if not self._elements_utf8(set_family, set_table, name, key_type, data_type):
                    if name.startswith(b"__"):  # an anonymous set: its rule is named
                        anonymous.add((set_family, set_table, name + b"\0"))
                    else:
                        found.append((_NFPROTO_NAMES.get(set_family, str(set_family)),
                                      _word(set_table), "set", _word(name), handle))
        body = b"" if place is None else _attribute(_NFTA_RULE_TABLE, place[1] + b"\0") + (
            b"" if place[2] is None else _attribute(_NFTA_RULE_CHAIN, place[2] + b"\0"))
        with translate_errors("list the nftables rules", capability=_CAPABILITY):
            messages = self._dump(_NFT_MSG_GETRULE, number, body)
        for message in messages:
            # An ASCII rule holds no byte a string that is not UTF-8 would (most rules).
            utf8 = message.isascii() or _rule_utf8(message)
            if utf8 and not any(name in message for _, _, name in anonymous):
                continue
            attributes = _attributes(message, 20)
            rule_table = _text(attributes.get(_NFTA_RULE_TABLE, b""))
            rule_chain = _text(attributes.get(_NFTA_RULE_CHAIN, b""))
            rule_family = message[16] if len(message) > 16 else 0
            if place is not None and (
                    rule_table != place[1] or place[0] not in (socket.AF_UNSPEC, rule_family)
                    or place[2] not in (None, rule_chain)):
                continue  # a kernel that did not filter the dump by table and chain
            if utf8 and not any((rule_family, rule_table) == (f, t) and name in message
                                for f, t, name in anonymous):
                continue  # another table's anonymous set of that name
            found.append((_NFPROTO_NAMES.get(rule_family, str(rule_family)), _word(rule_table),
                          "rule", _word(rule_chain),
                          _handle(attributes.get(_NFTA_RULE_HANDLE, b""))))
        return found

    def _elements_utf8(self, family: int, table: bytes, name: bytes, key_type: int,
                       data_type: int) -> bool:
        """Whether the string parts of set ``name``'s elements are all UTF-8 (one
        ``GETSETELEM`` dump)."""
        body = (_attribute(_NFTA_SET_ELEM_LIST_TABLE, table + b"\0")
                + _attribute(_NFTA_SET_ELEM_LIST_SET, name + b"\0"))
        for message in self._dump(_NFT_MSG_GETSETELEM, family, body):
            if message.isascii():
                continue
            elements = _attributes(message, 20).get(_NFTA_SET_ELEM_LIST_ELEMENTS, b"")
            for _, element in _attribute_list(elements):
                attributes = _attributes(element, 0)
                for attribute, kind in ((_NFTA_SET_ELEM_KEY, key_type),
                                        (_NFTA_SET_ELEM_KEY_END, key_type),
                                        (_NFTA_SET_ELEM_DATA, data_type)):
                    value = _attributes(attributes.get(attribute, b""), 0).get(
                        _NFTA_DATA_VALUE)
                    if value is not None and not _typed_utf8(
                            value, kind, attribute == _NFTA_SET_ELEM_KEY_END):
                        return False
        return True

    def _request(self, kind: int, family: int, body: bytes) -> dict[int, bytes] | None:
        """One request and its answer's attributes; ``None`` when the object does not exist
        (ENOENT); other refusals as :class:`OSError`."""
        self._seq += 1
        message = struct.pack("=BBH", family, 0, 0) + body
        self._sock.send(struct.pack("=IHHII", 16 + len(message), kind, _NLM_F_REQUEST,
                                    self._seq, 0) + message)
        while True:
            data = self._sock.recv(65536)
            length, answer, _flags, seq = struct.unpack_from("=IHHI", data)
            if seq == self._seq:
                break  # skip any answer to an earlier, interrupted request
        if answer == _NLMSG_ERROR:
            (errno,) = struct.unpack_from("=i", data, 16)
            if -errno == _ENOENT:
                return None
            raise OSError(-errno, os.strerror(-errno))
        return _attributes(data[:length], 20)  # after nlmsghdr and nfgenmsg

    def xt_targets(self, family: str, table: str, chain: str,
                   handles: Collection[int] | None = None
                   ) -> dict[int, list[tuple[str, int, bytes]]]:
        """The compat targets of chain ``chain`` of table ``family table``'s rules, as the
        kernel holds them: rule handle -> each ``target`` expression's (name, revision,
        data), for the rules holding one (of ``handles`` only, when given); empty when
        the chain is gone.

        iptables-nft writes ``-j CT`` (``--notrack``, ``--zone``, ``--helper``; ``-j
        NOTRACK`` too) and ``-j SNAT`` as compat targets, and libnftables lists only
        their names, in JSON and, built without libxtables, in text: the kernel's rules
        hold the target's data (``NFTA_TARGET_INFO``, ``xt_ct_target_info`` for ``CT``).
        Up to :data:`ONE_BY_ONE` ``handles``: one ``GETRULE`` each; more, or none
        given: one ``GETRULE`` dump of the chain (a dump of 5 000 rules costs ~10 ms,
        a request ~25 µs: docs/performance.md, "iptables-nft's compat targets")."""
        found = self.xt_expressions(family, table, chain, handles, kinds=("target",))
        return {handle: [(name, revision, info) for _, name, revision, info in compat]
                for handle, compat in found.items()}

    def xt_expressions(self, family: str, table: str, chain: str,
                       handles: Collection[int] | None = None,
                       kinds: tuple[str, ...] = ("match", "target"),
                       ) -> dict[int, list[tuple[str, str, int, bytes]]]:
        """The compat expressions (``kinds``: ``match``, ``target``) of chain ``chain``'s
        rules, in each rule's order: rule handle -> (kind, name, revision, data), for the
        rules holding one (of ``handles`` only, when given); empty when the chain is gone.

        libnftables before 1.0.6 lists every compat expression in JSON as ``{"xt":
        null}``, neither its kind nor its name (iptables-nft's ``-m comment``, ``-m
        conntrack``, ``-j MASQUERADE``, ``-j REJECT``): the kernel's rule names them
        (:meth:`~k3snet.backends.nftables.kernel.Libnftables.list` gives them back)."""
        place = (_attribute(_NFTA_RULE_TABLE, table.encode() + b"\0")
                 + _attribute(_NFTA_RULE_CHAIN, chain.encode() + b"\0"))
        found: dict[int, list[tuple[str, str, int, bytes]]] = {}
        with translate_errors(f"read nftables chain {family} {table} {chain}'s rules",
                              capability=_CAPABILITY):
            if handles is not None and len(handles) <= ONE_BY_ONE:
                for handle in handles:
                    attributes = self._request(
                        _NFT_MSG_GETRULE, _NFPROTO[family],
                        place + _attribute(_NFTA_RULE_HANDLE, struct.pack(">Q", handle)))
                    compat = _compat(attributes, kinds) if attributes is not None else []
                    if compat:
                        found[handle] = compat
                return found
            messages = self._dump(_NFT_MSG_GETRULE, _NFPROTO[family], place)
        wanted = None if handles is None else set(handles)
        markers = tuple(kind.encode() + b"\0" for kind in kinds)
        for message in messages:
            if not any(marker in message for marker in markers):
                continue  # no compat expression (most rules): not decoded
            attributes = _attributes(message, 20)
            handle_data = attributes.get(_NFTA_RULE_HANDLE, b"")
            if (len(handle_data) < 8
                    or _text(attributes.get(_NFTA_RULE_TABLE, b"")) != table.encode()
                    or _text(attributes.get(_NFTA_RULE_CHAIN, b"")) != chain.encode()):
                continue  # a kernel that did not filter the dump by chain
            handle = int(struct.unpack_from(">Q", handle_data)[0])
            if wanted is not None and handle not in wanted:
                continue
            compat = _compat(attributes, kinds)
            if compat:
                found[handle] = compat
        return found

    def _dump(self, kind: int, family: int, body: bytes) -> list[bytes]:
        """One dump request and its answers (each message whole); none when what it names
        does not exist (ENOENT); other refusals as :class:`OSError`."""
        self._seq += 1
        message = struct.pack("=BBH", family, 0, 0) + body
        self._sock.send(struct.pack("=IHHII", 16 + len(message), kind,
                                    _NLM_F_REQUEST | _NLM_F_DUMP, self._seq, 0) + message)
        found: list[bytes] = []
        while True:
            data = self._sock.recv(1 << 17)
            offset = 0
            while offset + 16 <= len(data):
                length, answer, _flags, seq = struct.unpack_from("=IHHI", data, offset)
                if length < 16:
                    return found
                if seq == self._seq:
                    if answer == _NLMSG_DONE:
                        return found
                    if answer == _NLMSG_ERROR:
                        (errno,) = struct.unpack_from("=i", data, offset + 16)
                        if errno and -errno != _ENOENT:
                            raise OSError(-errno, os.strerror(-errno))
                        return found
                    found.append(data[offset:offset + length])
                offset += (length + 3) & ~3

    def close(self) -> None:
        """Close the socket (idempotent)."""
        self._sock.close()


def _of_table(sets: list[tuple[int, bytes, bytes, int, int, int]], family: str | None,
              table: str | None) -> list[tuple[int, bytes, bytes, int, int, int]]:
    """The sets of ``sets`` in table ``family table`` (every one: ``table`` ``None``;
    of any family: ``family`` ``None``)."""
    if table is None:
        return sets
    number = _FAMILY_NUMBERS.get(family or "", socket.AF_UNSPEC)
    return [one for one in sets
            if one[1] == table.encode() and number in (socket.AF_UNSPEC, one[0])]


def _attributes(data: bytes, offset: int) -> dict[int, bytes]:
    attributes: dict[int, bytes] = {}
    while offset + 4 <= len(data):
        attr_len, attr_type = struct.unpack_from("=HH", data, offset)
        if attr_len < 4:
            break
        attributes.setdefault(attr_type & 0x3FFF, data[offset + 4:offset + attr_len])
        offset += (attr_len + 3) & ~3
    return attributes


def _attribute_list(data: bytes) -> list[tuple[int, bytes]]:
    """A nested list's attributes in order (each ``NFTA_LIST_ELEM``, the same type)."""
    found = []
    offset = 0
    while offset + 4 <= len(data):
        attr_len, attr_type = struct.unpack_from("=HH", data, offset)
        if attr_len < 4:
            break
        found.append((attr_type & 0x3FFF, data[offset + 4:offset + attr_len]))
        offset += (attr_len + 3) & ~3
    return found


def _table(message: bytes) -> tuple[tuple[str, str, int], bool]:
    """((family, name, handle), owned) of the table one GETTABLE answer describes."""
    family = message[16] if len(message) > 16 else 0
    attributes = _attributes(message, 20)
    flags = attributes.get(_NFTA_TABLE_FLAGS, b"")
    owned = len(flags) >= 4 and bool(struct.unpack_from(">I", flags)[0] & _NFT_TABLE_F_OWNER)
    name = attributes.get(_NFTA_TABLE_NAME, b"").split(b"\0", 1)[0]
    handle = attributes.get(_NFTA_TABLE_HANDLE, b"")
    return ((_NFPROTO_NAMES.get(family, str(family)), name.decode(errors="replace"),
             struct.unpack_from(">Q", handle)[0] if len(handle) >= 8 else 0), owned)


def _compat(rule: dict[int, bytes], kinds: tuple[str, ...]
            ) -> list[tuple[str, str, int, bytes]]:
    """(kind, name, revision, data) of each compat expression of ``kinds`` (``match``,
    ``target``) of a rule's attributes, in the rule's order."""
    compat = []
    for _, element in _attribute_list(rule.get(_NFTA_RULE_EXPRESSIONS, b"")):
        expression = _attributes(element, 0)
        kind = _text(expression.get(_NFTA_EXPR_NAME, b"")).decode(errors="replace")
        if kind not in kinds:
            continue
        # NFTA_MATCH_NAME, _REV and _INFO are numbered as NFTA_TARGET_*.
        data = _attributes(expression.get(_NFTA_EXPR_DATA, b""), 0)
        revision = data.get(_NFTA_TARGET_REV, b"")
        compat.append((kind, _text(data.get(_NFTA_TARGET_NAME, b"")).decode(errors="replace"),
                       int(struct.unpack_from(">I", revision)[0]) if len(revision) >= 4
                       else 0, data.get(_NFTA_TARGET_INFO, b"")))
    return compat


def _string_set(message: bytes, sets: list[tuple[int, bytes, bytes, int, int, int]]) -> None:
    """Add the set one ``GETSET`` answer describes to ``sets`` if its key or data type
    holds an interface name or a string (a concatenation: any of its parts)."""
    attributes = _attributes(message, 20)
    key_type, data_type = (
        int(struct.unpack_from(">I", value)[0]) if len(value) >= 4 else 0
        for value in (attributes.get(_NFTA_SET_KEY_TYPE, b""),
                      attributes.get(_NFTA_SET_DATA_TYPE, b"")))
    if _string_typed(key_type) or _string_typed(data_type):
        sets.append((message[16] if len(message) > 16 else 0,
                     _text(attributes.get(1, b"")), _text(attributes.get(2, b"")),
                     _handle(attributes.get(16, b"")), key_type, data_type))


def _type_parts(kind: int) -> list[int]:
    """The datatypes of a set's key or data type, a concatenation's first part first
    (libnftables packs each in 6 bits); a verdict map's data: none."""
    if kind >= _NFT_DATA_VERDICT:
        return []
    parts = []
    while kind:
        parts.append(kind & 0x3F)
        kind >>= 6
    return parts[::-1]


def _string_typed(kind: int) -> bool:
    return any(part in _STRING_TYPES for part in _type_parts(kind))


def _typed_utf8(value: bytes, kind: int, end: bool = False) -> bool:
    """Whether each string part of an element's key or data ``value`` of type ``kind``
    is UTF-8 as libnftables prints it (up to its NUL); a concatenation whose parts'
    sizes k3snet does not know: whether it is all ASCII (conservative). ``end``: a
    range's end (``NFTA_SET_ELEM_KEY_END``), where nft ends a wildcard's prefix with
    0xff bytes (``"eth*" . 10.0.0.0/8``: ``eth\xff...``) and libnftables prints the
    prefix alone: those bytes are left out."""
    parts = _type_parts(kind)
    if len(parts) == 1:
        return parts[0] not in _STRING_TYPES or _utf8(_string(value, end))
    offset = 0
    for part in parts:
        size = _TYPE_SIZES.get(part)
        if size is None:
            return (value.translate(None, b"\xff") if end else value).isascii()
        if part in _STRING_TYPES and not _utf8(_string(value[offset:offset + size], end)):
            return False
        offset += size
    return True


def _string(value: bytes, end: bool) -> bytes:
    """A string part's bytes, up to its NUL; of a range's end, without its last 0xff."""
    return _text(value).rstrip(b"\xff") if end else _text(value)


def _rule_utf8(message: bytes) -> bool:
    """Whether a ``GETRULE`` answer compares no string libnftables prints with bytes
    that are not UTF-8 (:func:`_rule_strings_utf8`). Each ``meta`` load of a string
    followed by its ``cmp``, as the kernel writes them, is read from the bytes at once
    (:data:`_META_CMP`), with what writes its register next (:data:`_WRITES`: nft's next
    load, right after): each ``cmp`` of that register before then compares the string
    too (:data:`_CMPS`). A rule with any other load of a string, a ``range``, such a
    later ``cmp`` with bytes that are not UTF-8, or one of :data:`_UNFOLLOWED` before
    the register's next load (a ``bitwise`` of it, an xtables match whose data may look
    like a load), is decoded."""
    loads = len(_STRING_LOADS.findall(message))
    if not loads:
        return True
    tests = list(_META_CMP.finditer(message))
    if len(tests) != loads or b"range\0" in message:
        return _rule_strings_utf8(_attributes(message, 20).get(_NFTA_RULE_EXPRESSIONS, b""))
    for test in tests:
        if test.group(1) == test.group(2) and not _utf8(_compared(message, test, 3)):
            return False
        # The string stays in its register, and each cmp of that register compares it,
        # until an expression writes the register again: nft's next load, at once.
        # The expression right after the test (past its value and the element's length).
        after = _WRITES.match(message, test.end() - 2 + (
            (struct.unpack("=H", test.group(3))[0] + 3) & ~3))
        if after is not None and after.group(after.lastindex or 0) == test.group(1):
            continue  # the register loaded again at once (one spelling of it: nft's)
        register = _register(test.group(1))
        written = len(message)
        for write in _WRITES.finditer(message, test.end()):
            if _register(write.group(write.lastindex or 0)) == register:
                written = write.start()
                break
        if _UNFOLLOWED.search(message, test.end(), written):
            return _rule_strings_utf8(_attributes(message, 20).get(_NFTA_RULE_EXPRESSIONS, b""))
        for other in _CMPS.finditer(message, test.end(), written):
            end = other.end()
            value = message[end:end + struct.unpack("=H", other.group(2))[0] - 4]
            if (_register(other.group(1)) == register and not value.isascii()
                    and not _utf8(value.rstrip(b"\0"))):
                # (or written by an expression _WRITES does not know)
                return _rule_strings_utf8(
                    _attributes(message, 20).get(_NFTA_RULE_EXPRESSIONS, b""))
    return True


def _bitwise_utf8(data: Mapping[int, bytes]) -> bool:
    """Whether a ``bitwise`` of a string (its expression's decoded ``data``) has a mask
    and an xor that libnftables prints as UTF-8: each not UTF-8 is printed as the
    string's type (a mask of all ones is left out, as a zero xor is) and aborts the
    listing."""
    mask, xor = (_attributes(data.get(kind, b""), 0).get(_NFTA_DATA_VALUE, b"")
                 for kind in (_NFTA_BITWISE_MASK, _NFTA_BITWISE_XOR))
    return ((mask.count(0xFF) == len(mask) or _utf8(mask.rstrip(b"\0")))
            and _utf8(xor.rstrip(b"\0")))


def _compared(message: bytes, test: re.Match[bytes], group: int) -> bytes:
    """The bytes a ``cmp`` matched by ``test`` compares with (its value's length in
    ``group``), up to their NULs."""
    size = struct.unpack("=H", test.group(group))[0] - 4
    return message[test.end():test.end() + size].rstrip(b"\0")


def _rule_strings_utf8(expressions: bytes) -> bool:
    """Whether each ``cmp`` or ``range`` of a rule's expressions comparing a string
    libnftables prints (an interface name or kind ``meta`` loaded, ``ct helper``, ``osf
    name``, ``fib ... oifname``) compares it with bytes that are UTF-8; another
    expression's key equal to one of those (xfrm's SPI, numgen's modulus) is no string.

    libnftables reads a ``cmp`` of a register as a test of what was last written
    there, however many expressions came in between (a counter, a load into another
    register, another ``cmp``: raw netlink writes such rules, nft does not): each
    register a string was loaded into stays one until an expression of :data:`_DREG`
    writes it; a ``bitwise`` of one prints its mask and xor as that string's
    (:func:`_bitwise_utf8`). Each expression's name is read first (the kernel writes it
    first); only the loads of strings, the writers of such a register and the tests are
    decoded."""
    strings: set[int] = set()  # the registers holding a string (or a derivative of one)
    offset = 0
    while offset + 8 <= len(expressions):
        size = struct.unpack_from("=H", expressions, offset)[0]
        if size < 8:
            break
        element = offset
        offset += (size + 3) & ~3
        if not (strings or _STRING_LOADS.search(expressions, element, element + size)):
            continue
        expression = _attributes(expressions[element + 4:element + size], 0)
        name = _text(expression.get(_NFTA_EXPR_NAME, b""))
        data = _attributes(expression.get(_NFTA_EXPR_DATA, b""), 0)
        if name in (b"cmp", b"range"):
            sreg = data.get(_NFTA_CMP_SREG, b"")  # NFTA_RANGE_SREG alike
            values = ((_NFTA_CMP_DATA,) if name == b"cmp"
                      else (_NFTA_RANGE_FROM_DATA, _NFTA_RANGE_TO_DATA))
            if len(sreg) >= 4 and _register(sreg) in strings and not all(
                    _utf8(_attributes(data.get(value, b""), 0).get(
                        _NFTA_DATA_VALUE, b"").rstrip(b"\0")) for value in values):
                return False
            continue
        # NFTA_META_KEY, NFTA_CT_KEY, NFTA_FIB_RESULT
        key = data.get(2, b"")
        loads = (name == b"osf" or (len(key) >= 4 and _u32(key) in _STRING_KEYS.get(
            name, ())))
        dreg = data.get(_DREG.get(name, 0), b"")
        if len(dreg) < 4:
            continue  # writes no register k3snet knows of
        written = _register(dreg)
        sreg = data.get(1, b"")
        if loads or (name in _DERIVED and len(sreg) >= 4 and _register(sreg) in strings):
            if name == b"bitwise" and not _bitwise_utf8(data):
                return False
            strings.add(written)
        else:
            strings.discard(written)
    return True


def _u32(data: bytes) -> int:
    return int(struct.unpack_from(">I", data)[0])


def _register(data: bytes) -> int:
    """A register's number as a 32-bit register's (``NFT_REG_1`` is ``NFT_REG32_00``)."""
    number = _u32(data)
    return (number - 1) * 4 if 1 <= number <= 4 else number - 8


def _ascii_names(message: bytes, kinds: tuple[int, ...]) -> bool:
    """Whether the attributes ``kinds`` of a dump's answer are its first ones (the kernel
    writes a table's name, an object's table and name, first) and hold ASCII only: the
    quick look at each answer (3 000 chains: 13-38 ms decoded whole, about 5 ms so)."""
    offset = 20
    for kind in kinds:
        if offset + 4 > len(message):
            return False
        size, found = struct.unpack_from("=HH", message, offset)
        if size < 4 or found & 0x3FFF != kind:
            return False
        offset += (size + 3) & ~3
    return message[20:offset].isascii()


def _utf8(name: bytes) -> bool:
    try:
        name.decode()
    except UnicodeDecodeError:
        return False
    return True


def _word(name: bytes) -> str:
    """A name as Python reads it back: each byte that is not UTF-8 a lone surrogate."""
    return name.decode(errors="surrogateescape")


def _family(message: bytes) -> str:
    family = message[16] if len(message) > 16 else 0
    return _NFPROTO_NAMES.get(family, str(family))


def _handle(data: bytes) -> int:
    return int(struct.unpack_from(">Q", data)[0]) if len(data) >= 8 else 0


def _text(data: bytes) -> bytes:
    """A string attribute's bytes, up to its NUL."""
    return data.split(b"\0", 1)[0]


def _attribute(kind: int, data: bytes) -> bytes:
    size = 4 + len(data)
    return struct.pack("=HH", size, kind) + data + b"\0" * (-size % 4)
