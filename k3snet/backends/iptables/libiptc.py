"""The libiptc driver: the same :class:`Op` edits, through python-iptables (``import iptc``).

libiptc reads a whole legacy table into memory, edits it and writes it back in
one ``setsockopt`` (the commit): one commit per table is atomic, as an
``iptables-restore`` run is. It only knows the *legacy* x_tables
(ldx/python-iptables#298): on an iptables-nft host its rules would be invisible.

Four traps of python-iptables are avoided here:

* its ``Table`` objects are process-wide singletons with ``autocommit=True``,
  bound to the network namespace of whichever thread made them first, and they
  commit their (possibly stale) copy when garbage-collected. We never use that
  cache: each call opens a private handle inside the namespace's worker thread
  (:class:`~k3snet.backends.netns.NetnsRunner`), with autocommit off, and frees it;
* deciding whether ``-j NAME`` jumps to a chain asks ``Rule.tables``, which goes
  through that cache; our rules ask our own handle instead;
* iptables >= 1.8.9 ships SNAT/MASQUERADE in one ``libxt_NAT.so`` whose
  constructor registers only the family current at its first load, and
  registering twice exits the process. Before the first rule is built, a family
  that lacks the NAT targets gets them from a private copy of the library.
* a rule's bytes are only complete after ``rule.final_check()`` (the NAT
  targets set their range count there; without it the kernel says EINVAL).

libiptc takes no lock: like ``iptables-legacy`` we hold ``/run/xtables.lock``
(``XTABLES_LOCKFILE``) from reading the table to committing it.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import ipaddress
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from k3snet.backends.iptables.driver import XTABLES_LOCK
from k3snet.backends.iptables.table import INJECTED_CHAIN, Op
from k3snet.backends.kit import committing
from k3snet.backends.netns import NetnsRunner
from k3snet.errors import BackendError, BackendUnavailableError
from k3snet.render.iptables.rules import Line, rule_verb

__all__ = ["LibiptcDriver"]

_LOCK_TIMEOUT = 10.0
_XTF_DONT_LOAD = 0
_nat_copies: dict[int, Any] = {}
_nat_ready = False
_nat_lock = threading.Lock()


def _import_iptc() -> Any:
    try:
        import iptc  # noqa: PLC0415 - optional dependency, loaded on first use
    except (ImportError, OSError) as exc:  # OSError: libiptc / libxtables missing
        raise BackendUnavailableError(
            f"the libiptc driver needs python-iptables and libiptc: {exc} "
            "(pip install 'k3snet[iptables]', or use driver='restore')"
        ) from exc
    return iptc


_XT_LOCK_NAME = "/run/xtables.lock"
"""The lock file of iptables when ``$XTABLES_LOCKFILE`` does not name one."""


@contextlib.contextmanager
def _xtables_lock() -> Iterator[None]:
    # As iptables reads it (xshared.c): unset or empty, its own default. An empty value
    # was given to open(): "No such file or directory: ''", and no change was made.
    path = os.environ.get("XTABLES_LOCKFILE") or _XT_LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise BackendError(f"cannot open the lock file {path} ({XTABLES_LOCK}): "
                           f"{exc.strerror or exc}") from exc
    try:
        deadline = time.monotonic() + _LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise BackendError(
                        f"the xtables lock {path} is held by another process"
                    ) from None
                time.sleep(0.01)
        yield
    finally:
        os.close(fd)  # closing releases the flock


class LibiptcDriver:
    """Runs :class:`Op` lists against the legacy tables of one namespace."""

    def __init__(self, netns: str | None) -> None:
        self._iptc = _import_iptc()
        self._runner = NetnsRunner(netns)
        self._entries = {4: _Entries(self._iptc, 4), 6: _Entries(self._iptc, 6)}

    def close(self) -> None:
        """Stop the namespace worker thread."""
        self._runner.close()

    def run(self, family: int, table: str, ops: Sequence[Op], *, commit: bool = True) -> None:
        """Apply ``ops`` to one table in one commit (or check them only, ``commit=False``)."""
        self._runner.call(lambda: self._run(family, table, ops, commit))

    def _run(self, family: int, table: str, ops: Sequence[Op], commit: bool) -> None:
        iptc = self._iptc
        _preload_nat_targets()
        with _xtables_lock():
            handle = object.__new__(iptc.Table if family == 4 else iptc.Table6)
            try:
                handle._init(table, False)  # a private handle, never the cached one
            except iptc.IPTCError as exc:
                raise BackendError(f"libiptc cannot open the {table} table: {exc}") from exc
            entries = self._entries[family]
            entries.bind(handle)
            try:
                for op in ops:
                    self._do(handle, entries, op)
                if commit:
                    # Raises if a signal stopped the caller: no commit. Brief: the
                    # xtables lock is held, the commit is a call into the kernel; a
                    # second Ctrl-C then waits for the caller to note it as the first.
                    committing(brief=True)
                    try:
                        handle.commit()
                    except iptc.IPTCError as exc:
                        raise OpFailedError(None, f"commit refused: {exc}") from exc
            finally:
                handle.close()  # autocommit is off: frees without committing

    def _do(self, handle: Any, entries: _Entries, op: Op) -> None:
        iptc = self._iptc
        chain = op.chain
        line: Line | None = op.lines[0] if op.lines else None
        try:
            if op.kind == "declare":
                if handle.is_chain(chain):
                    handle.flush_entries(chain)
                else:
                    handle.create_chain(chain)
            elif op.kind == "flush":
                handle.flush_entries(chain)
            elif op.kind == "remove":
                handle.delete_chain(chain)
            elif op.kind == "append":
                for line in op.lines:
                    handle.append_entry(chain, entries.entry(line))
            elif op.kind == "insert":
                handle.insert_entry(chain, entries.entry(op.lines[0]), op.position - 1)
            elif op.kind == "delete":
                self._delete(handle, chain, op)
            elif op.kind == "fail":
                line = (INJECTED_CHAIN,)
                handle.append_entry(INJECTED_CHAIN, entries.entry(("-j", "ACCEPT")))
        except (iptc.IPTCError, iptc.XTablesError, ValueError) as exc:
            raise OpFailedError(line, f"{op.kind} {chain}: {exc}") from exc

    def _delete(self, handle: Any, chain: str, op: Op) -> None:
        # Delete by number, checking that the rule there is the one we expect (its
        # target): building a byte-identical entry for a by-spec delete is fragile.
        entry = handle.first_rule(chain)
        for _ in range(op.position - 1):
            entry = handle.next_rule(entry) if entry else None
        if not entry:
            raise ValueError(f"{chain} has no rule {op.position} (changed since it was read)")
        found = handle.get_target(entry)
        found = found.decode() if isinstance(found, bytes) else found
        expected = _target(op.lines[0])
        if expected is not None and found not in (expected, None, ""):
            raise ValueError(
                f"{chain} rule {op.position} jumps to {found}, expected {expected} "
                "(changed since it was read)"
            )
        if handle._iptc.iptc_delete_num_entry(chain.encode(), op.position - 1,
                                              handle._handle) != 1:
            raise ValueError(f"cannot delete {chain} rule {op.position}: {handle.strerror()}")


# Values that stand in for a rule's own addresses and hash while its shape is built.
_PLACEHOLDER_NET = {4: "192.0.2.0/24", 6: "2001:db8::/64"}
_PLACEHOLDER_COMMENT = "k3snet:" + "5a" * 8
_PLACEHOLDER_TO = {4: "198.18.251.173", 6: "2001:db8:fffe:fffd::f00d"}
_VARIABLE = frozenset({"-s", "-d", "--to-source"})
_MAX_SHAPES = 4096


class _Entries:
    """Binary rules for libiptc, one python-iptables build per rule *shape*.

    python-iptables builds a rule through ctypes and the xtables parse callbacks
    (~0.3 ms each: seconds for 10k rules). Rules of one shape differ only in their
    addresses, hash comment and SNAT address, so the shape is built once with
    placeholders and each rule is a copy of its bytes with those fields set: the
    addresses and masks in the ``ipt_entry``/``ip6t_entry`` header, the comment
    and the SNAT address where the placeholders sit.
    """

    def __init__(self, iptc: Any, family: int) -> None:
        self._iptc = iptc
        self._family = family
        self._shapes: dict[Line, tuple[bytes, tuple[int, ...], tuple[int, ...]]] = {}
        self._rule_class: Any = None

    def bind(self, handle: Any) -> None:
        """Use ``handle`` to tell jumps to chains from target extensions."""
        base = self._iptc.Rule if self._family == 4 else self._iptc.Rule6
        # Jumps to chains are recognised through our handle, not python-iptables' cache.
        self._rule_class = type("_Rule", (base,), {"tables": property(lambda _self: [handle])})

    def entry(self, line: Line) -> Any:
        """A buffer holding the binary rule for ``line``."""
        shape, values = _shape(line)
        if shape not in self._shapes:
            if len(self._shapes) >= _MAX_SHAPES:  # jumps to per-rule chains are shapes too
                self._shapes.clear()
            self._shapes[shape] = self._build(shape)
        template, comments, targets = self._shapes[shape]
        data = bytearray(template)
        size = 4 if self._family == 4 else 16
        for flag, value in values:
            if flag == "--comment":
                text = value.encode()
                for offset in comments:
                    data[offset:offset + len(text)] = text
            elif flag == "--to-source":
                packed = _packed_address(value)
                for offset in targets:
                    data[offset:offset + len(packed)] = packed
            else:
                # The header starts with src, dst, smsk, dmsk (ipt_ip / ip6t_ip6).
                address, mask = _packed_network(value)
                at = 0 if flag == "-s" else size
                data[at:at + size] = address
                data[2 * size + at:3 * size + at] = mask
        return (ctypes.c_ubyte * len(data)).from_buffer(data)

    def _build(self, shape: Line) -> tuple[bytes, tuple[int, ...], tuple[int, ...]]:
        family = self._family
        line = tuple(
            _PLACEHOLDER_NET[family] if (t == "*" and shape[i - 1] in ("-s", "-d"))
            else _PLACEHOLDER_TO[family] if (t == "*" and shape[i - 1] == "--to-source")
            else _PLACEHOLDER_COMMENT if (t == "*" and shape[i - 1] == "--comment")
            else t
            for i, t in enumerate(shape)
        )
        rule = self._rule_class()
        _fill(rule, line, rule.create_target)
        rule.final_check()
        template = bytes(rule.rule)
        target_offset = rule.entry.target_offset  # set by building rule.rule
        comments = _find(template, _PLACEHOLDER_COMMENT.encode(), 0, target_offset)
        targets = _find(template, ipaddress.ip_address(_PLACEHOLDER_TO[family]).packed,
                        target_offset, len(template))
        if "--to-source" in shape and not targets:
            raise ValueError(f"cannot locate the SNAT address in a {' '.join(shape)} rule")
        return template, comments, targets


def _shape(line: Line) -> tuple[Line, tuple[tuple[str, str], ...]]:
    """``line`` with its rule-specific values as ``*``, and those values."""
    shape = list(line)
    values = []
    for index in range(len(line) - 1):
        flag, value = line[index], line[index + 1]
        variable = flag in _VARIABLE or (
            flag == "--comment" and len(value) == len(_PLACEHOLDER_COMMENT)
            and value.startswith("k3snet:")
        )
        if variable:
            shape[index + 1] = "*"
            values.append((flag, value))
    return tuple(shape), tuple(values)


def _find(data: bytes, needle: bytes, start: int, end: int) -> tuple[int, ...]:
    found = []
    at = data.find(needle, start, end)
    while at != -1:
        found.append(at)
        at = data.find(needle, at + len(needle), end)
    return tuple(found)


@functools.lru_cache(maxsize=1 << 12)
def _packed_network(text: str) -> tuple[bytes, bytes]:
    """(address, netmask) in network byte order, without ipaddress' slow parser."""
    address, _, prefix = text.partition("/")
    if ":" in address:
        packed, bits = socket.inet_pton(socket.AF_INET6, address), 128
    else:
        packed, bits = socket.inet_aton(address), 32
    length = int(prefix) if prefix else bits
    mask = ((1 << bits) - 1) ^ ((1 << (bits - length)) - 1)
    return packed, mask.to_bytes(bits // 8, "big")


def _packed_address(text: str) -> bytes:
    if ":" in text:
        return socket.inet_pton(socket.AF_INET6, text)
    return socket.inet_aton(text)


class OpFailedError(BackendError):
    """An op failed; ``line`` is the rule it was writing or deleting, if any."""

    def __init__(self, line: Line | None, message: str) -> None:
        self.line = line
        super().__init__(message)


def _target(line: Line) -> str | None:
    flag, index = rule_verb(line)
    if flag == "-j" and index + 1 < len(line):
        return line[index + 1]
    return None


def _fill(rule: Any, line: Line, make_target: Callable[[str], Any]) -> None:
    """Set a python-iptables rule from iptables tokens (the subset k3snet writes and reads)."""
    module: Any = None
    neg = False
    i = 0
    while i < len(line):
        tok = line[i]
        if tok == "!":
            neg = True
            i += 1
            continue
        prefix = "!" if neg else ""
        neg = False
        if tok in ("-s", "-d", "-i", "-o", "-p"):
            attr = {"-s": "src", "-d": "dst", "-i": "in_interface", "-o": "out_interface",
                    "-p": "protocol"}[tok]
            setattr(rule, attr, prefix + line[i + 1])
            i += 2
        elif tok == "-m":
            module = rule.create_match(line[i + 1])
            i += 2
        elif tok in ("-j", "-g"):
            module = make_target(line[i + 1])
            i += 2
        elif tok.startswith("--") and module is not None:
            values = []
            i += 1
            while i < len(line) and not line[i].startswith("-") and line[i] != "!":
                values.append(line[i])
                i += 1
            value = " ".join(values)
            module.set_parameter(tok[2:], prefix + value if value or prefix else None)
        else:
            raise ValueError(f"libiptc driver cannot express {tok!r} in {' '.join(line)}")


def _preload_nat_targets() -> None:
    """Make sure SNAT/MASQUERADE are registered for both families (once per process).

    A family that has them already (python-iptables loaded ``libxt_NAT.so`` for it)
    is left alone: registering a target twice makes libxtables exit the process.
    For the other family a private copy of the library is loaded, whose
    constructor registers its targets for the family set just before.
    """
    global _nat_ready  # noqa: PLW0603 - process-wide, like the libxtables registry itself
    if _nat_ready:
        return
    from iptc import xtables  # noqa: PLC0415 - python-iptables internals, on demand

    with _nat_lock:
        if _nat_ready:
            return
        # A fresh function pointer: python-iptables set its own restype on the cached one.
        find = xtables._lib_xtables["xtables_find_target"]
        find.restype = ctypes.c_void_p
        find.argtypes = [ctypes.c_char_p, ctypes.c_int]
        source = os.path.join(xtables._xtables_libdir, "libxt_NAT.so")
        for family, proto in ((4, xtables.NFPROTO_IPV4), (6, xtables.NFPROTO_IPV6)):
            xtables.xtables._xtables_set_nfproto(proto)
            if find(b"MASQUERADE", _XTF_DONT_LOAD) or not os.path.exists(source):
                continue
            workdir = tempfile.mkdtemp(prefix="k3snet-xt-")
            copy = os.path.join(workdir, "libxt_NAT.so")
            try:
                shutil.copyfile(source, copy)
                _nat_copies[family] = ctypes.CDLL(copy)  # its constructor registers for `proto`
            except OSError as exc:
                raise BackendUnavailableError(
                    f"libiptc driver: cannot load the NAT targets for IPv{family}: {exc}"
                ) from exc
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(copy)
                with contextlib.suppress(OSError):
                    os.rmdir(workdir)
        _nat_ready = True
