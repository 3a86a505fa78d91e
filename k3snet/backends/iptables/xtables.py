"""iptables-legacy's change token: x_tables' rules, read with ``getsockopt``.

(And what ``iptables-legacy-save`` does not print of them: :func:`never_met`.)

x_tables keeps no generation counter and sends no notification; what the kernel
does offer is each table whole, in the two ``getsockopt`` calls ``iptables-save``
itself makes: ``IPT_SO_GET_INFO`` (hooks, underflows, number of entries, size)
and ``IPT_SO_GET_ENTRIES`` (the blob of every ``struct ipt_entry``, each with its
packet and byte counters). A digest of the blob with each entry's counters
zeroed changes with any rule, chain or policy of the table, and not with the
traffic that moves the counters (nor with ``iptables -Z``). One token covers the
tables the backend reads (:data:`TABLES`) of IPv4 and IPv6 (``IP6T_SO_*`` on an
``AF_INET6`` socket).

Reading a table the namespace does not have would *create* it (the kernel loads
the table's module or instantiates it from its template on first use), so a
table is read only when ``/proc/net/ip_tables_names`` (``ip6_tables_names``)
lists it; an absent table, or x_tables not loaded at all, is part of the token
as "absent" (its creation then moves the token).

The calls run in the calling thread's network namespace (``/proc/thread-self``,
not ``/proc/self``: :class:`~k3snet.backends.netns.NetnsRunner` moves one thread
only). Python's ``socket.getsockopt`` cannot hand the kernel input bytes (the
table's name), hence libc's ``getsockopt`` through ctypes.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import socket
import struct

import attrs

from k3snet.backends.kit import translate_errors
from k3snet.backends.netns import libc, xtables_names
from k3snet.errors import BackendError

__all__ = ["ENTRIES_AT", "LAYOUTS", "TABLES", "Kept", "Layout", "NeverMet", "TableDigest",
           "digest_table", "fetch_table", "legacy_token", "never_met", "never_met_in",
           "table_digests", "zero_counters"]

TABLES = ("filter", "nat", "raw", "mangle", "security")
"""The tables the iptables backend reads: those it writes
(``k3snet.render.iptables.rules.TABLES``) and those whose drops it judges
(``k3snet.backends.iptables.foreign.PATH_CHAINS``)."""

_SO_GET_INFO = 64  # IPT_SO_GET_INFO == IP6T_SO_GET_INFO (IPT_BASE_CTL)
_SO_GET_ENTRIES = 65
_NAME_LEN = 32  # XT_TABLE_MAXNAMELEN
# struct ipt_getinfo: name, valid_hooks, hook_entry[5], underflow[5], num_entries, size.
_INFO = struct.Struct(f"={_NAME_LEN}s13I")
ENTRIES_AT = 40
"""Where the entries start in ``struct ipt_get_entries`` (after the name and the size,
8-aligned: the entries hold u64 counters)."""
_ATTEMPTS = 5
_U16 = struct.Struct("=H")
_ZEROS = memoryview(bytes(8 * 4096)).cast("Q")
_CAPABILITY = "CAP_NET_ADMIN"


@attrs.frozen
class Layout:
    """Where one family's ``struct ipt_entry`` / ``ip6t_entry`` keeps its fields.

    ``next_offset`` (u16) is the size of the entry with its matches and target;
    ``counters`` (two u64) is what traffic moves; ``size`` is the entry without
    matches and target. The offsets follow the kernel's UAPI headers
    (``ipt_ip`` is 84 bytes, ``ip6t_ip6`` 136). ``names`` is the file under
    ``/proc/net`` listing the namespace's tables.
    """

    family: int
    af: int
    level: int
    names: str
    next_offset: int
    counters: int
    size: int


LAYOUTS = (
    Layout(4, socket.AF_INET, socket.IPPROTO_IP, "ip_tables_names",
           next_offset=90, counters=96, size=112),
    Layout(6, socket.AF_INET6, socket.IPPROTO_IPV6, "ip6_tables_names",
           next_offset=142, counters=152, size=168),
)
"""IPv4 (``IPT_SO_*``) and IPv6 (``IP6T_SO_*``)."""

def _getsockopt(sock: socket.socket, level: int, option: int, buffer: bytearray,
                length: int) -> None:
    """libc ``getsockopt`` with ``buffer`` as input and output (``length`` bytes of it)."""
    size = ctypes.c_uint32(length)
    view = (ctypes.c_char * len(buffer)).from_buffer(buffer)
    if libc().getsockopt(sock.fileno(), level, option, view, ctypes.byref(size)) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _present(layout: Layout) -> frozenset[str]:
    """The tables this thread's namespace has (none when x_tables is not loaded)."""
    return xtables_names(layout.names)


def zero_counters(blob: bytearray, start: int, end: int, layout: Layout) -> int:
    """Zero the counters of every entry in ``blob[start:end]``; the number of entries.

    Entries are walked by their ``next_offset``; a blob that does not walk to
    ``end`` exactly is refused (BackendError) rather than half read. ``start``
    and every entry are 8-aligned (``XT_ALIGN``), as the kernel hands them over.

    Entry by entry this is a Python loop; since a chain's rules mostly share one
    shape, hence one size, each run of entries of the same size is found and
    zeroed with strided slices instead, several times faster (figures:
    ``benchmarks/bench_legacy_token.py``, docs/performance.md).
    """
    next_at, counters = layout.next_offset, layout.counters
    unpack = _U16.unpack_from
    offset, count = start, 0
    try:
        words = memoryview(blob).cast("Q")
    except TypeError:
        words = None  # not a whole number of u64: refused below, at the first entry
    try:
        while offset < end:
            (size,) = unpack(blob, offset + next_at)
            run = _same_size_run(blob, offset, end, size, next_at)
            if words is None or size < layout.size or size % 8 or offset % 8 or \
                    offset + run * size > end:
                raise BackendError(f"IPv{layout.family} x_tables entry at {offset - start} has "
                                   f"size {size}: the table cannot be read")
            word, step = (offset + counters) // 8, size // 8
            left = run
            while left:  # packets, then bytes, of up to len(_ZEROS) entries at a time
                chunk = min(left, len(_ZEROS))
                words[word:word + chunk * step:step] = _ZEROS[:chunk]
                words[word + 1:word + 1 + chunk * step:step] = _ZEROS[:chunk]
                word += chunk * step
                left -= chunk
            offset += run * size
            count += run
    finally:
        if words is not None:
            words.release()
    return count


def _same_size_run(blob: bytearray, offset: int, end: int, size: int, next_at: int) -> int:
    """How many entries from ``offset`` on (at least 1) are ``size`` bytes long.

    Each candidate's ``next_offset`` is read through two strided byte slices (its
    low and high bytes), in windows that double while the run lasts, so a table
    of mixed sizes costs a few bytes per entry, not a slice of the whole rest.
    """
    low, high = bytes((size & 0xFF,)), bytes((size >> 8,))
    run, window = 1, 8
    while size:
        first = offset + size * run + next_at
        last = min(end, offset + size * (run + window))
        lows, highs = blob[first:last:size], blob[first + 1:last + 1:size]
        same = min(len(lows) - len(lows.lstrip(low)), len(highs) - len(highs.lstrip(high)))
        run += same
        if same < len(lows) or last >= end:
            break
        window = min(2 * window, len(_ZEROS))
    return run


@attrs.frozen
class TableDigest:
    """One x_tables table as the kernel handed it over: its size and its digest.

    ``digest`` is a SHA-256 of the table's info (hooks, underflows, number of
    entries, size) and of its entries with their counters zeroed.
    """

    entries: int
    size: int
    digest: bytes


def fetch_table(sock: socket.socket, layout: Layout, table: str) -> tuple[bytes, bytearray]:
    """One table as the kernel hands it over, counters included: its info (what
    follows the name in ``struct ipt_getinfo``) and a buffer holding
    ``struct ipt_get_entries`` (the entries from ``ENTRIES_AT`` on).

    Two ``getsockopt`` calls on ``sock`` (a raw socket of ``layout.af``), made
    again if the table was replaced in between. The table must exist: reading
    one that does not creates it (see the module docs).
    """
    name = table.encode().ljust(_NAME_LEN, b"\0")
    for _ in range(_ATTEMPTS):
        info = bytearray(name.ljust(_INFO.size, b"\0"))
        _getsockopt(sock, layout.level, _SO_GET_INFO, info, len(info))
        size = _INFO.unpack(info)[-1]
        blob = bytearray(ENTRIES_AT + size)
        blob[:_NAME_LEN] = name
        struct.pack_into("=I", blob, _NAME_LEN, size)
        try:
            _getsockopt(sock, layout.level, _SO_GET_ENTRIES, blob, len(blob))
        except OSError as exc:
            if exc.errno == errno.EAGAIN:  # the table was replaced since GET_INFO: again
                continue
            raise
        return bytes(info[_NAME_LEN:]), blob
    raise BackendError(f"IPv{layout.family} {table} kept changing while k3snet read it "
                       f"({_ATTEMPTS} attempts)")


Kept = tuple[bytes, bytearray, TableDigest]
"""What a read of one table found: its info, its entries (counters zeroed), its digest."""


def digest_table(info: bytes, blob: bytearray, layout: Layout, kept: Kept | None = None
                 ) -> TableDigest:
    """The :class:`TableDigest` of what :func:`fetch_table` returned (``blob``'s
    counters are zeroed in place).

    ``kept``: what the last read of this table found; when the table is byte for
    byte the same, its digest is that one, without hashing again (a comparison
    costs a tenth of the SHA-256: ``benchmarks/bench_legacy_token.py``).
    """
    *_, entries, size = struct.unpack(f"={len(info) // 4}I", info)
    walked = zero_counters(blob, ENTRIES_AT, len(blob), layout)
    if walked != entries or len(blob) != ENTRIES_AT + size:
        raise BackendError(f"IPv{layout.family} x_tables: the kernel announced {entries} "
                           f"entries in {size} bytes and handed over {walked} in "
                           f"{len(blob) - ENTRIES_AT}")
    if kept is not None and kept[0] == info and kept[1] == blob:
        return kept[2]
    digest = hashlib.sha256(info)
    digest.update(blob)
    return TableDigest(entries, size, digest.digest())


def table_digests(tables: tuple[str, ...] = TABLES, memo: dict[tuple[int, str], Kept] | None = None
                  ) -> dict[tuple[int, str], TableDigest | None]:
    """Each of ``tables`` of IPv4 and IPv6 in this thread's network namespace, by
    (family, table); ``None`` for a table the namespace does not have (it is not
    read: that would create it).

    ``memo`` keeps what each read found, for the next read (see
    :func:`digest_table`): a copy of the entries of every table read.
    Needs ``CAP_NET_ADMIN`` (BackendError naming it otherwise).
    """
    found: dict[tuple[int, str], TableDigest | None] = {}
    with translate_errors("read the iptables-legacy tables", capability=_CAPABILITY):
        for layout in LAYOUTS:
            present = _present(layout)
            wanted = [table for table in tables if table in present]
            found.update({(layout.family, table): None for table in tables})
            if not wanted:
                continue
            with socket.socket(layout.af, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                               socket.IPPROTO_RAW) as sock:
                for table in wanted:
                    key = (layout.family, table)
                    info, blob = fetch_table(sock, layout, table)
                    found[key] = read = digest_table(
                        info, blob, layout, memo.get(key) if memo is not None else None)
                    if memo is not None:
                        memo[key] = (info, blob, read)
    if memo is not None:
        for key in [key for key, read in found.items() if read is None]:
            memo.pop(key, None)
    return found


def legacy_token(tables: tuple[str, ...] = TABLES,
                 memo: dict[tuple[int, str], Kept] | None = None) -> bytes:
    """One digest of :func:`table_digests` (``memo`` as there): it changes whenever
    a rule, a chain or a policy of one of ``tables`` changes, or one appears;
    packet and byte counters do not move it.

    >>> len(legacy_token())  # doctest: +SKIP
    32
    """
    token = hashlib.sha256()
    for (family, table), read in table_digests(tables, memo).items():
        token.update(f"{family} {table}:".encode())
        token.update(read.digest if read is not None else b"absent")
    return token.digest()


# -- rules no packet meets ---------------------------------------------------------

NeverMet = dict[str, tuple[int, dict[int, str]]]
"""Of one table, by chain: how many rules the chain holds, and by each rule's index in it
(0-based, as ``iptables-save`` prints them) the words of the match it does not print."""

_HOOKS = ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING")
# Per family: where struct ipt_ip / ip6t_ip6 keeps the in- and out-interface masks
# (IFNAMSIZ bytes each) and invflags, and where struct ipt_entry keeps target_offset.
_IFACE_FIELDS = {4: (48, 64, 83, 88), 6: (96, 112, 132, 140)}
_INV_VIA_IN, _INV_VIA_OUT = 0x01, 0x02  # IPT_INV_VIA_IN/OUT == IP6T_INV_VIA_IN/OUT
_IFNAMSIZ = 16
_NO_MASK = bytes(_IFNAMSIZ)
_TARGET_NAME = slice(2, 31)  # struct xt_entry_target: u16 size, name[29], u8 revision
_ERROR_NAME = 32  # struct xt_error_target: the target, then the chain's name


def never_met_in(info: bytes, blob: bytearray, layout: Layout) -> NeverMet:
    """The rules of one table (as :func:`fetch_table` returned it) that test a negated
    interface with an empty mask: ``! -i +`` (``+`` matches every name, so its negation
    none), which ``iptables-legacy-save`` prints as nothing (it prints an interface only
    when its mask holds a byte): ``-A FORWARD ! -i + -j DROP`` reads ``-A FORWARD -j
    DROP``, a drop of every packet, while the kernel (``ip_packet_match``: the masked
    comparison, equal, then inverted) drops none.

    Chains as the kernel keeps them: a built-in one from its hook's entry to its policy
    (the underflow), a user-defined one from the ``ERROR`` entry naming it to the
    ``RETURN`` that ends it. A blob that does not walk is none (BackendError)."""
    *_, entries, size = struct.unpack(f"={len(info) // 4}I", info)
    if not _inverts_any_interface(blob, size, layout):
        return {}  # (most tables, Docker's `! -o docker0` too: under 1 ms at 10k rules)
    valid, hooks, underflows = info_hooks(info)
    starts = {hooks[h]: _HOOKS[h] for h in range(len(_HOOKS)) if valid & (1 << h)}
    ends = {underflows[h] for h in range(len(_HOOKS)) if valid & (1 << h)}
    in_mask, out_mask, inv_at, target_at = _IFACE_FIELDS[layout.family]
    found: NeverMet = {}
    chain: str | None = None
    rules: list[str] = []  # the words each rule of the chain does not print ("": none)
    user = False

    def close() -> None:
        if chain is not None:
            kept = rules[:-1] if user else rules  # a user chain's closing RETURN
            found[chain] = (len(kept), {i: w for i, w in enumerate(kept) if w})

    offset, walked = 0, 0
    while offset < size:
        at = ENTRIES_AT + offset
        (step,) = _U16.unpack_from(blob, at + layout.next_offset)
        (target,) = _U16.unpack_from(blob, at + target_at)
        if step < layout.size or offset + step > size or target >= step:
            raise BackendError(f"IPv{layout.family} x_tables entry at {offset} cannot be read")
        name = bytes(blob[at + target + _TARGET_NAME.start:at + target + _TARGET_NAME.stop])
        name = name.split(b"\0", 1)[0]
        if offset in starts:
            close()
            chain, rules, user = starts[offset], [], False
        if name == b"ERROR":
            close()
            label = bytes(blob[at + target + _ERROR_NAME:at + step]).split(b"\0", 1)[0]
            chain, rules, user = label.decode(errors="replace"), [], True
            if chain == "ERROR":  # the table's last entry
                chain = None
        elif offset in ends:
            close()
            chain = None
        elif chain is not None:
            inverted = blob[at + inv_at]
            words = []
            if inverted & _INV_VIA_IN and blob[at + in_mask:at + in_mask + _IFNAMSIZ] == _NO_MASK:
                words.append("! -i +")
            if inverted & _INV_VIA_OUT and (
                    blob[at + out_mask:at + out_mask + _IFNAMSIZ] == _NO_MASK):
                words.append("! -o +")
            rules.append(" ".join(words))
        offset += step
        walked += 1
    close()
    if walked != entries:
        raise BackendError(f"IPv{layout.family} x_tables: {walked} entries, not {entries}")
    return {c: read for c, read in found.items() if read[1]}


_VIA = bytes(b & (_INV_VIA_IN | _INV_VIA_OUT) for b in range(256))  # invflags' two bits


def _inverts_any_interface(blob: bytearray, size: int, layout: Layout) -> bool:
    """Whether an entry of the table inverts a test of any interface (``! -i +``, ``! -o
    +``: an empty mask): the invflags of a run of entries of one size read at a time,
    through a strided slice (as :func:`zero_counters` zeroes the counters), and the
    masks of those inverting one (Docker's ``! -o docker0``: a name, its mask not empty;
    walking the table for it took about 90 ms at 10 000 rules)."""
    in_mask, out_mask, inv_at, _ = _IFACE_FIELDS[layout.family]
    offset, end = ENTRIES_AT, ENTRIES_AT + size
    while offset < end:
        (step,) = _U16.unpack_from(blob, offset + layout.next_offset)
        if step < layout.size or offset + step > end:
            raise BackendError(f"IPv{layout.family} x_tables entry at {offset - ENTRIES_AT} "
                               f"has size {step}: the table cannot be read")
        run = _same_size_run(blob, offset, end, step, layout.next_offset)
        run = min(run, (end - offset) // step)
        flags = bytes(blob[offset + inv_at:offset + run * step:step]).translate(_VIA)
        for index in (i for i, flag in enumerate(flags) if flag):
            at = offset + index * step
            if (flags[index] & _INV_VIA_IN
                    and blob[at + in_mask:at + in_mask + _IFNAMSIZ] == _NO_MASK) or (
                    flags[index] & _INV_VIA_OUT
                    and blob[at + out_mask:at + out_mask + _IFNAMSIZ] == _NO_MASK):
                return True
        offset += run * step
    return False


def info_hooks(info: bytes) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    """What :func:`fetch_table`'s info says of the hooks: the valid ones (a bit each), and
    where each one's chain starts and ends (its policy) among the entries."""
    words = struct.unpack_from("=11I", info)
    return words[0], words[1:6], words[6:11]


def never_met(family: int, tables: tuple[str, ...] = TABLES) -> dict[str, NeverMet]:
    """:func:`never_met_in` of each of ``tables`` of ``family`` this thread's namespace
    has (a table it does not have is not read: that would create it), by table; only the
    tables holding such a rule."""
    layout = next(layout for layout in LAYOUTS if layout.family == family)
    found: dict[str, NeverMet] = {}
    with translate_errors("read the iptables-legacy tables", capability=_CAPABILITY):
        wanted = [table for table in tables if table in _present(layout)]
        if not wanted:
            return found
        with socket.socket(layout.af, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                           socket.IPPROTO_RAW) as sock:
            for table in wanted:
                info, blob = fetch_table(sock, layout, table)
                read = never_met_in(info, blob, layout)
                if read:
                    found[table] = read
    return found
