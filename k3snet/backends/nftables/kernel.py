"""The nftables backend's I/O seam: the few kernel calls it makes, and libnftables' ones.

The backend talks to the kernel only through :class:`NftKernel` (the seam, as
knftables' ``execer``): the ruleset generation id, a JSON listing, and one
batch run (a transaction, or a dry run); a seam may also list text
(:class:`TextLists`, k3snet's own table's quick read). :class:`Libnftables` is the real one,
made and used inside the namespace's worker thread; tests hand the backend a
fake that serves recorded ``nft -j list`` output (``kernel=`` option).
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import json
import os
import queue
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Protocol, TypeVar, runtime_checkable

from k3snet._logline import shell_word
from k3snet._regex import lazy_pattern
from k3snet.backends.kit import undo_spares_children
from k3snet.backends.nfgen import GenerationReader
from k3snet.errors import BackendError, BackendUnavailableError
from k3snet.render.nftables_batch import list_command

__all__ = ["HANDOVER_INTERVAL", "BoundedLister", "Libnftables", "ListingTimeoutError", "Lists",
           "NftKernel", "OwnTableLister", "TextLists", "TextUnlistedError", "UnprintableNameError",
           "beside_listings",
           "first_lines", "list_in_child", "listed_items", "listing_key", "name_xt"]

HANDOVER_INTERVAL = 0.0002
"""The interpreter's switch interval (seconds) while a thread works in Python beside a
listing helper (:func:`beside_listings`)."""

_CAPABILITY = "CAP_NET_ADMIN"
T = TypeVar("T")


class NftKernel(Protocol):
    """Protocol: what the nftables backend asks of the kernel (one namespace, one thread).

    ``calls`` counts round trips (the backend reports them as ``operations``).
    """

    calls: int

    def genid(self) -> int:
        """The ruleset generation id: every committed nftables transaction bumps it."""
        ...

    def list(self, kind: str, **ref: str) -> list[dict[str, Any]] | None:
        """The objects ``nft -j list KIND REF...`` prints; ``None`` if the object does not exist."""
        ...

    def run(self, batch: str, *, json_input: bool, dry_run: bool = False) -> tuple[int, str]:
        """Run one batch (one transaction, or a dry run); return (rc, error text)."""
        ...

    def close(self) -> None:
        """Release sockets and contexts (idempotent)."""
        ...


class Lists(Protocol):
    """Protocol: the listing half of :class:`NftKernel` (what reading a table needs)."""

    def list(self, kind: str, **ref: str) -> list[dict[str, Any]] | None:
        """The objects ``nft -j list KIND REF...`` prints; ``None`` if the object does not exist."""
        ...


@runtime_checkable
class TextLists(Protocol):
    """Protocol: a listing in nft's own text, with rule handles (``nft -a list``).

    Optional: k3snet's own table is read from it when a lister offers it
    (:mod:`.text`), and from the JSON listing when not, or when the text holds
    anything the text reader does not take. nft prints a comment as it is, newlines
    included, so one rule can print lines that read as other rules: the text is
    taken only when each of the table's base chains holds as many rules as it has
    lines there (:meth:`chain_rules`).
    """

    def list_text(self, kind: str, **ref: str) -> str | None:
        """What ``nft -a list KIND REF...`` prints; ``None`` if the object does not exist.

        :class:`TextUnlistedError` when this listing cannot be made now (the
        JSON listing then serves). The names in ``ref`` go into nft's language:
        only names it reads as names (:func:`~k3snet.render.nftables.validate_table_name`).
        """
        ...

    def chain_rules(self, family: str, table: str, chain: str) -> int | None:
        """How many rules base chain ``chain`` of table ``family table`` holds now (its
        use count: nothing can jump to a base chain); ``None`` if there is no such chain.
        """
        ...

    def genid(self) -> int:
        """The ruleset generation id now: the counts are the listing's only if no commit
        came between them (the id is still the one read before the listing)."""
        ...


class TextUnlistedError(BackendError):
    """A text listing that cannot be made now: the caller lists as JSON instead."""


class UnprintableNameError(BackendError):
    """A JSON listing not made: a name it would print is not UTF-8, on which libnftables
    aborts the whole process (:meth:`Libnftables.list`). The message names each such
    object, escaped as a shell reads it back."""


def listed_items(output: str, what: str) -> list[dict[str, Any]]:
    """The objects of ``nft -j list`` output; :class:`BackendError` if it is not that."""
    try:
        items = json.loads(output)["nftables"]
    except (ValueError, KeyError, TypeError) as exc:
        raise BackendError(f"nft {what!r} printed unreadable JSON: {exc}") from exc
    if not isinstance(items, list):
        raise BackendError(f"nft {what!r} printed unreadable JSON: 'nftables' is not a list")
    return [item for item in items if isinstance(item, dict)]


def owner_tables(kernel: object) -> frozenset[tuple[str, str, int]]:
    """``kernel``'s :meth:`Libnftables.owner_tables`; none for a kernel seam without it
    (the recorded and fake kernels of tests)."""
    read = getattr(kernel, "owner_tables", None)
    return read() if read is not None else frozenset()


def first_lines(text: str, count: int = 4) -> str:
    """The first ``count`` non-empty lines of an nft error, joined with `` | ``: the
    kernel's or the parser's messages and the statements they quote, without the lines
    of ``^`` and ``~`` nft draws under a statement (as long as it is), nor the name of
    the file a batch was read from (:data:`_BATCH_FILE`)."""
    lines = [_BATCH_FILE.sub("", line.strip()) for line in text.strip().splitlines()
             if line.strip() and not _UNDERLINE.fullmatch(line)]
    return " | ".join(lines[:count]) or "no detail"


_UNDERLINE = lazy_pattern(r"[\s^~]+")
"""A line nft draws under the part of a statement an error is about."""
_BATCH_FILE = lazy_pattern(r"^/proc/self/fd/\d+:\d+:\d+(?:-\d+)?: ")
"""The place in the file :meth:`Libnftables.run` gives libnftables a batch in, as its
messages name it (``/proc/self/fd/7:6:29-38: Error: ...``): a line of a file no one
sees (the statement quoted under it says which)."""


CT_FLAGS = "k3snet_ct_flags"
"""The key :class:`Libnftables` adds to an ``xt`` ``CT`` target of a chain's JSON listing:
the target's flags as the kernel holds them (``XT_CT_NOTRACK``, 1: ``--notrack`` or
``-j NOTRACK``), read over netlink
(:meth:`~k3snet.backends.nfgen.GenerationReader.xt_targets`).
Absent (a listing by a child ``nft``, a rule gone meanwhile): not known."""

SNAT_TO = "k3snet_snat_to"
"""The key :class:`Libnftables` adds to an ``xt`` ``SNAT`` target of a chain's JSON listing
(iptables-nft's ``-j SNAT --to-source ADDR``, whose address libnftables does not list):
``{"addr": ADDR, "flags": [...]}`` (nft's words: ``random``, ``persistent``,
``fully-random``) as the kernel holds them, for a translation to one address and no
ports only. Absent (a range, ports, a revision k3snet does not know, not read): an SNAT
to an address k3snet does not model, as before."""

TTL_ARGS = "k3snet_ttl_args"
"""The key :class:`Libnftables` adds to an ``xt`` ``TTL`` or ``HL`` target of a chain's JSON
listing (iptables-nft's ``-j TTL --ttl-set N``, whose value libnftables does not list):
its options as ``iptables-save`` writes them (``["--ttl-set", "1"]``; ``--hl-*`` for
``HL``), from the kernel's ``ipt_TTL_info`` (``ip6t_HL_info``). Absent: not known."""

XT_NO_POD = "k3snet_no_pod"
"""The key :class:`Libnftables` adds, true, to an ``xt`` match of a drop's or reject's rule
in a chain's JSON listing (libnftables lists a compat match by its name alone) when the
kernel's data says no packet of a new pod connection, nor of its replies, passes it:
``-m conntrack --ctstate INVALID`` alone (kube-proxy's ``KUBE-FORWARD``, kube-router's
pod chains), ``-m addrtype --dst-type LOCAL`` (kube-proxy's reject of a node port
without endpoints in ``KUBE-EXTERNAL-SERVICES``: the node's own address, no forwarded
packet's), ``-m rt --rt-type 0`` (ufw's drop of IPv6's deprecated type 0 routing
header, which no stack sends). Absent: not known (``--ctstate NEW`` is passed by
every new connection)."""

_XT_ADDRTYPE_LOCAL = 1 << 2  # XT_ADDRTYPE_LOCAL, of xt_addrtype_info's dest

_XT_STATE = 1  # XT_CONNTRACK_STATE, a bit of xt_conntrack_mtinfo's match_flags
_XT_STATE_INVALID = 1  # XT_CONNTRACK_STATE_INVALID, of its state_mask

_TTL_MODES = ("set", "inc", "dec")  # IPT_TTL_SET, _INC, _DEC (IP6T_HL_* alike)

# nf_nat_range's flags (NF_NAT_RANGE_*): what an SNAT to one address may carry.
_NAT_MAP_IPS = 1
_NAT_FLAG_WORDS = {4: "random", 8: "persistent", 16: "fully-random"}


_RECHECKS = 3
"""How many times :meth:`Libnftables.list` checks what it lists while commits move the
generation id during the check; past that, it lists what the last check saw (a ruleset
committing faster than it can be checked)."""

_XT_READ = ("CT", "SNAT", "TTL", "HL")
"""The compat targets whose data :meth:`Libnftables.list` reads from the kernel."""


class Libnftables:
    """The real :class:`NftKernel`: a libnftables context and a netfilter netlink socket.

    Made inside the namespace's worker thread, so libnftables' netlink socket and
    ours both belong to that namespace.
    """

    def __init__(self) -> None:
        import nftables  # noqa: PLC0415 - optional dependency, checked by the backend

        try:
            self.nft = nftables.Nftables()
            lib = ctypes.CDLL("libnftables.so.1")
        except OSError as exc:
            raise BackendUnavailableError(
                f"libnftables cannot be loaded ({exc}); install libnftables1"
            ) from exc
        self.nft.set_json_output(True)
        self._set_dry_run = lib.nft_ctx_set_dry_run
        self._set_dry_run.argtypes = [ctypes.c_void_p, ctypes.c_bool]
        self._set_dry_run.restype = None
        self._from_file = lib.nft_run_cmd_from_filename
        self._from_file.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        self._from_file.restype = ctypes.c_int
        # pip-nftables keeps its context private; a dry run (nft -c) needs it.
        self._ctx = self.nft._Nftables__ctx
        self._generation = GenerationReader()
        # The names (and rules and sets) that are not UTF-8 at a generation id
        # (_refuse_unprintable).
        self._names: tuple[int, list[tuple[str, str, str, str, int]]] | None = None
        # The sets of interface names or strings at that generation id: a rule may add an
        # element to a named one from a packet, the generation id unmoved.
        self._string_sets: list[tuple[int, bytes, bytes, int, int, int]] = []
        # Whose rules and sets were read at that generation id: (family, table, chain);
        # chain None: the table's; (None, None, None): every table's.
        self._contents_read: set[tuple[str | None, str | None, str | None]] = set()
        self.calls = 0

    def genid(self) -> int:
        """The ruleset generation id (``NFT_MSG_GETGEN``, one small netlink round trip)."""
        self.calls += 1
        return self._generation.read()

    def owner_tables(self) -> frozenset[tuple[str, str, int]]:
        """The tables a process owns (:meth:`~k3snet.backends.nfgen.GenerationReader.owner_tables`:
        they go without moving the generation id)."""
        self.calls += 1
        return self._generation.owner_tables()

    def run(self, batch: str, *, json_input: bool, dry_run: bool = False) -> tuple[int, str]:
        """Run one libnftables buffer (one transaction); return (rc, error text)."""
        self.calls += 1
        # With JSON output on, libnftables tries its JSON parser first; off for nft text.
        self.nft.set_json_output(json_input)
        self._set_dry_run(self._ctx, dry_run)
        try:
            rc, _output, error = (self._cmd(batch) if json_input
                                  else self._cmd_from_file(batch))
        finally:
            self._set_dry_run(self._ctx, False)
            self.nft.set_json_output(True)
        return int(rc), _with_capability(error)

    def list(self, kind: str, **ref: str) -> list[dict[str, Any]] | None:
        """The objects ``list KIND REF...`` prints; ``None`` if the object does not exist.

        Sent as a JSON command, so any table or chain name, even one nft's own
        language would take for a keyword, is passed as data.
        """
        self.calls += 1
        what = " ".join(["list", kind, *ref.values()])
        self._refuse_unprintable(kind, ref)
        rc, output, error = self._cmd(list_command(kind, ref))
        if rc != 0:
            if "No such file or directory" in error:
                return None
            raise BackendError(f"nft {what!r} failed: {first_lines(_with_capability(error))}")
        items = listed_items(output, what)
        if kind == "chains":
            self._devices(items)
        if kind != "chain":
            return items
        named = (name_xt(items, self._xt_expressions) if _may_list_unnamed_xt(items, output)
                 else set())
        if (any(f'"{name}"' in output for name in _XT_READ)
                or not named.isdisjoint(_XT_READ)):
            self._xt_data(items)
        if any(f'"{name}"' in output for name in _XT_NO_POD_READ) or not named.isdisjoint(
                _XT_NO_POD_READ):
            self._xt_no_pod(items)
        return items

    def _devices(self, items: Iterable[dict[str, Any]]) -> None:
        """Give each ``ingress`` or ``egress`` base chain listed without its devices
        (libnftables 1.0.6's JSON leaves them out) the ``dev`` the kernel holds: a name, or
        a list of them."""
        for item in items:
            chain = item.get("chain")
            if (isinstance(chain, dict) and chain.get("hook") in ("ingress", "egress")
                    and "dev" not in chain and chain.get("family") in ("netdev", "inet")):
                devices = self._generation.chain_devices(
                    str(chain["family"]), str(chain.get("table")), str(chain.get("name")))
                if devices is not None:
                    chain["dev"] = devices[0] if len(devices) == 1 else list(devices)

    def _refuse_unprintable(self, kind: str, ref: Mapping[str, str]) -> None:
        """:meth:`_check_unprintable`, again while the generation id moved during it: a
        commit during the check (its dumps of 10 000 rules take 0.1-0.5 s) may have
        written what aborts the listing; so only one between the last read of the id
        and libnftables' own dump can (:data:`_RECHECKS` times at most)."""
        for _ in range(_RECHECKS):
            checked = self._check_unprintable(kind, ref)
            self.calls += 1
            if self._generation.read() == checked:
                return

    def _check_unprintable(self, kind: str, ref: Mapping[str, str]) -> int:
        """:class:`UnprintableNameError` if the listing ``list KIND REF...`` would print a
        name or string that is not UTF-8: libnftables asserts each name it prints as
        JSON is, and aborts the process when one is not (a foreign table or chain made
        through raw netlink, a rule's ``iifname`` of such bytes). One netlink dump of
        each kind of name first, before each JSON listing only
        (:meth:`~k3snet.backends.nfgen.GenerationReader.unprintable_names`), and one of
        the rules the listing prints, with one of the elements of each of its table's
        sets of interface names or strings
        (:meth:`~k3snet.backends.nfgen.GenerationReader.unprintable_contents`): of that
        chain for ``list chain``, of that table for ``list table``, none for ``list
        chains`` (no rule printed), every table's for any other listing (k3snet makes
        none). A listing of a table or chain is refused for a name or a set of such
        elements in that table (a rule names only its own table's chains, sets and
        objects; a set no rule of the chain names refuses it too, conservatively) and
        for such a rule of that chain (a table's: any of its chains), ``list chains`` for
        a table or chain name, any other for any of them. The dumps are made again only
        once the generation id moved (one small round trip before each listing), but the
        elements of each named set of interface names or strings (none in most
        rulesets) of the table listed are read again before each listing: a rule adds
        them from packets (``update @m { oifname : 1 }``; an interface named with bytes
        that are not UTF-8), the generation id unmoved. Returns the generation id checked
        at (:meth:`_refuse_unprintable` checks again if it moved meanwhile)."""
        self.calls += 1
        genid = self._generation.read()
        if self._names is None or self._names[0] != genid:
            self.calls += 1
            self._string_sets = []
            self._contents_read = set()
            self._names = (genid, self._generation.unprintable_names(self._string_sets))
        known = self._names[1]  # one found stays so until the generation id moves
        place: tuple[str | None, str | None, str | None] | None = None
        if "table" in ref or kind == "table":
            table = ref["table"] if "table" in ref else ref.get("name")
            place = (ref.get("family"), table, ref.get("name") if kind == "chain" else None)
        elif kind != "chains":  # a listing of the chains prints no rule, set or element
            place = (None, None, None)
        if place is not None:
            family, table, chain = place
            if not self._contents_read.isdisjoint(
                    {place, (family, table, None), (None, None, None)}):
                if any(not one[2].startswith(b"__") for one in self._string_sets):
                    self.calls += 1
                    known += [one for one in self._generation.unprintable_elements(
                        self._string_sets, family, table) if one not in known]
            else:
                self.calls += 1
                known += [one for one in self._generation.unprintable_contents(
                    self._string_sets, family, table, chain) if one not in known]
                self._contents_read.add(place)
        found = known
        if "table" in ref or kind == "table":
            where = (ref.get("family"), ref["table"] if "table" in ref else ref.get("name"))
            found = [one for one in found if (one[0], one[1]) == where]
            if kind == "chain":  # a rule prints in its own chain's listing alone
                found = [one for one in found if one[2] != "rule" or one[3] == ref.get("name")]
        elif kind == "chains":  # the chains alone, no rule: no set or object named
            found = [one for one in found if one[2] in ("table", "chain")]
        if found:
            raise UnprintableNameError(unprintable_message(found))
        return genid

    def _xt_expressions(self, family: str, table: str, chain: str,
                        handles: Collection[int]) -> Mapping[int, Sequence[tuple[str, str]]]:
        self.calls += 1
        found = self._generation.xt_expressions(family, table, chain, handles)
        return {handle: [(kind, name) for kind, name, _, _ in compat]
                for handle, compat in found.items()}

    def _xt_no_pod(self, items: Iterable[dict[str, Any]]) -> None:
        """Mark each iptables-nft compat match of a drop's or reject's rule that no packet
        of a new pod connection passes, as the kernel holds it (:data:`XT_NO_POD`):
        libnftables lists only the match's name, so kube-proxy's ``-m conntrack
        --ctstate INVALID -j DROP`` read as a drop of any new connection. One request
        per such rule, a dump of the chain past a few (as :meth:`_xt_data`)."""
        wanted: dict[tuple[str, str, str], list[tuple[int, dict[str, Any]]]] = {}
        for item in items:
            rule = item.get("rule")
            if not isinstance(rule, dict):
                continue
            expr = rule.get("expr")
            if not isinstance(expr, list) or not any(
                    isinstance(s, dict) and ("drop" in s or "reject" in s or s.get("xt") == {
                        "type": "target", "name": "REJECT"}) for s in expr):
                continue
            for statement in expr:
                xt = statement.get("xt") if isinstance(statement, dict) else None
                if (isinstance(xt, dict) and xt.get("type") == "match"
                        and xt.get("name") in _XT_NO_POD_READ):
                    try:
                        where = (str(rule["family"]), str(rule["table"]), str(rule["chain"]))
                        wanted.setdefault(where, []).append((int(rule["handle"]), xt))
                    except (KeyError, TypeError, ValueError):
                        continue  # not read: a test k3snet does not model
        for where, rules in wanted.items():
            try:
                self.calls += 1
                read = self._generation.xt_expressions(
                    *where, {handle for handle, _ in rules}, kinds=("match",))
            except (BackendError, KeyError):
                continue
            for handle, xt in rules:
                found = [(revision, info) for _, name, revision, info in read.get(handle, [])
                         if name == xt["name"]]
                if len(found) == 1 and _XT_NO_POD_READ[xt["name"]](*found[0]):
                    xt[XT_NO_POD] = True

    def _xt_data(self, items: Iterable[dict[str, Any]]) -> None:
        """Give each iptables-nft ``-j CT`` of a chain's listing the flags the kernel holds
        for it (:data:`CT_FLAGS`), each ``-j SNAT`` its address (:data:`SNAT_TO`), and each
        ``-j TTL`` / ``-j HL`` its options (:data:`TTL_ARGS`):
        libnftables lists only the target's name, so a ``--zone`` or ``--helper`` one
        looked as a ``--notrack`` one, and every SNAT as one to an unknown address. A
        few rules of a chain are read one request each, more with one rule dump of the
        chain (2 000 ``-j CT --zone N`` rules, OpenStack Neutron's, were a round trip
        each: docs/performance.md, "iptables-nft's compat targets")."""
        wanted: dict[tuple[str, str, str], list[tuple[int, dict[str, Any]]]] = {}
        for item in items:
            rule = item.get("rule")
            if not isinstance(rule, dict) or not isinstance(rule.get("expr"), list):
                continue
            for statement in rule["expr"]:
                xt = statement.get("xt") if isinstance(statement, dict) else None
                if not (isinstance(xt, dict) and xt.get("type") == "target"
                        and xt.get("name") in _XT_READ):
                    continue
                try:
                    where = (str(rule["family"]), str(rule["table"]), str(rule["chain"]))
                    wanted.setdefault(where, []).append((int(rule["handle"]), xt))
                except (KeyError, TypeError, ValueError):
                    continue  # not read: the target stays a doubt
        for where, rules in wanted.items():
            try:
                self.calls += 1
                read = self._generation.xt_targets(*where, {handle for handle, _ in rules})
            except (BackendError, KeyError):
                continue  # not read: the targets stay doubts
            for handle, xt in rules:
                name = xt["name"]
                found = [(revision, info) for kind, revision, info in read.get(handle, [])
                         if kind == name]
                if len(found) != 1:
                    continue
                xt.update(_xt_decoded(name, where[0], *found[0]))

    def list_text(self, kind: str, **ref: str) -> str | None:
        """What ``nft -a list KIND REF...`` prints; ``None`` if the object does not exist;
        :class:`TextUnlistedError` if nft refuses the command.

        About three times cheaper than :meth:`list` for the same table (10 000
        rules: 137 ms against 431 ms, and 60 ms of ``json.loads``), as nft
        prints it (docs/performance.md, "Reading k3snet's table as text").
        """
        self.calls += 1
        what = " ".join(["list", kind, *ref.values()])
        handles = self.nft.get_handle_output()
        self.nft.set_json_output(False)
        self.nft.set_handle_output(True)
        try:
            rc, output, error = self._cmd(what)
        finally:
            self.nft.set_handle_output(handles)
            self.nft.set_json_output(True)
        if rc != 0:
            if "No such file or directory" in error:
                return None
            # nft's language cannot name every table (a keyword such as "counter", quoted
            # or not): the JSON listing, which takes names as data, reads it, and says
            # what went wrong if anything else did.
            raise TextUnlistedError(f"nft {what!r} failed: {first_lines(error)}")
        return output

    def chain_handle(self, family: str, table: str, chain: str) -> int | None:
        """Chain ``chain`` of ``family table``'s handle (``None``: no such chain): one small
        netlink round trip, no listing (libnftables' would first dump the names it could
        not print: :meth:`list`)."""
        self.calls += 1
        return self._generation.chain_handle(family, table, chain)

    def chain_rules(self, family: str, table: str, chain: str) -> int | None:
        """:meth:`TextLists.chain_rules`: one small netlink round trip."""
        self.calls += 1
        return self._generation.chain_use(family, table, chain)

    def close(self) -> None:
        """Close the netlink socket (libnftables' context goes with the object)."""
        self._generation.close()

    def _cmd_from_file(self, batch: str) -> tuple[int, str, str]:
        """As :meth:`_cmd`, the batch read from a file of its own (an anonymous one).

        libnftables (1.0.6) quotes, under a kernel's error for a command of a buffer,
        the buffer's *first* line (``add table inet k3snet``, with the failing command's
        columns underlined): the refused statement went unsaid, and the change said to
        have failed was the one owning that first line. From a file it quotes the
        refused statement's own line."""
        try:
            fd = os.memfd_create("k3snet-batch", os.MFD_CLOEXEC)
        except OSError:
            return self._cmd(batch)  # no memfd (an old kernel): the buffer, as before
        try:
            path = f"/proc/self/fd/{fd}"
            if not os.path.exists(path):
                return self._cmd(batch)  # no /proc: the buffer, as before
            with open(fd, "wb", closefd=False) as file:
                file.write(batch.encode())
            rc = self._from_file(self._ctx, path.encode())
        finally:
            os.close(fd)
        output = self.nft.nft_ctx_get_output_buffer(self._ctx) or b""
        error = self.nft.nft_ctx_get_error_buffer(self._ctx) or b""
        return int(rc), output.decode(errors="replace"), error.decode(errors="replace")

    def _cmd(self, command: str) -> tuple[int, str, str]:
        """One libnftables command: (rc, output, error).

        As ``Nftables.cmd``, but a byte that is not UTF-8 reads as U+FFFD instead of
        failing the whole listing: a comment is bytes to the kernel, and an admin's
        need not be UTF-8 (such a line is no line of k3snet's; the JSON listing, which
        leaves such a comment out, judges the table).
        """
        nft = self.nft
        rc = nft.nft_run_cmd_from_buffer(self._ctx, command.encode())
        output = nft.nft_ctx_get_output_buffer(self._ctx) or b""
        error = nft.nft_ctx_get_error_buffer(self._ctx) or b""
        return int(rc), output.decode(errors="replace"), error.decode(errors="replace")


_UNNAMED_XT = lazy_pattern(r'"xt":\s*null')
"""A compat statement as libnftables before 1.0.6 lists it in JSON (``{"xt": null}``)."""
_NAMES_XT = (1, 0, 6)
"""The first libnftables version listing a compat statement's kind and name in JSON."""
_VERSION = lazy_pattern(r"(\d+)\.(\d+)\.(\d+)")


def _may_list_unnamed_xt(items: Sequence[dict[str, Any]], output: str) -> bool:
    """Whether a listing (its ``items`` and text) holds an ``{"xt": null}``: never from a
    libnftables its ``metainfo`` says is 1.0.6 or later (no scan of the text: 3 ms of a
    10 000-rule chain's 4.7 MB, on every listing); else looked for in the text."""
    metainfo = items[0].get("metainfo") if items else None
    version = metainfo.get("version") if isinstance(metainfo, dict) else None
    found = _VERSION.match(version) if isinstance(version, str) else None
    if found is not None and tuple(map(int, found.groups())) >= _NAMES_XT:
        return False
    return _UNNAMED_XT.search(output) is not None



def name_xt(items: Iterable[dict[str, Any]],
            expressions: Callable[[str, str, str, Collection[int]],
                                  Mapping[int, Sequence[tuple[str, str]]]]) -> set[str]:
    """Give each ``{"xt": null}`` of a chain's listing its kind and name, as libnftables
    1.0.6 and later list them (``{"xt": {"type": "target", "name": "REJECT"}}``).

    libnftables 0.9.8 to 1.0.5 (Debian 11, Ubuntu 22.04, RHEL 9 before 9.4) print every
    compat statement so, what it is left out: iptables-nft's ``-j REJECT`` and ``-j
    MASQUERADE`` were read as tests k3snet does not know with no verdict (a foreign
    reject before k3snet's accept was no block, flannel's masquerade met nothing), and
    the iptables backend's jumps (``-m comment --comment k3snet``) were not its own.
    ``expressions(family, table, chain, handles)`` gives each rule's compat expressions
    as the kernel holds them, (kind, name) in the rule's order (the listing keeps that
    order); a rule whose count differs from its listing's (it changed meanwhile) is left
    as listed. Returns the names given (the listing is not printed again to look for
    the targets :meth:`Libnftables.list` reads data of: 84 ms for 10 000 rules)."""
    unnamed: dict[tuple[str, str, str], dict[int, list[dict[str, Any]]]] = {}
    for item in items:
        rule = item.get("rule")
        if not isinstance(rule, dict) or not isinstance(rule.get("expr"), list):
            continue
        nulls = [statement for statement in rule["expr"]
                 if isinstance(statement, dict) and statement == {"xt": None}]
        if not nulls:
            continue
        try:
            where = (str(rule["family"]), str(rule["table"]), str(rule["chain"]))
            unnamed.setdefault(where, {})[int(rule["handle"])] = nulls
        except (KeyError, TypeError, ValueError):
            continue
    named: set[str] = set()
    for where, rules in unnamed.items():
        try:
            read = expressions(*where, set(rules))
        except BackendError:
            continue  # not read: the statements stay as listed
        for handle, nulls in rules.items():
            compat = read.get(handle, ())
            if len(compat) != len(nulls):
                continue
            for statement, (kind, name) in zip(nulls, compat, strict=True):
                statement["xt"] = {"type": kind, "name": name}
                named.add(name)
    return named


def _xt_decoded(name: str, family: str, revision: int, info: bytes) -> dict[str, Any]:
    """What a compat target's data (``info``, of ``revision``) says, as the keys a listing's
    ``xt`` gets (:data:`CT_FLAGS`, :data:`SNAT_TO`, :data:`TTL_ARGS`); empty: not read."""
    if name == "CT" and len(info) >= 2:  # host order, as xt_CT's
        return {CT_FLAGS: int(struct.unpack_from("=H", info)[0])}
    if name == "SNAT":
        to = _snat_to(family, revision, info)
        return {} if to is None else {SNAT_TO: to}
    if name in ("TTL", "HL") and len(info) >= 2 and info[0] < len(_TTL_MODES):
        # ipt_TTL_info / ip6t_HL_info: {u8 mode; u8 value}
        return {TTL_ARGS: [f"--{name.lower()}-{_TTL_MODES[info[0]]}", str(info[1])]}
    return {}


def _xt_state_invalid(revision: int, info: bytes) -> bool:
    """Whether an xt ``conntrack`` match's data (``xt_conntrack_mtinfo1`` to ``3``: eight
    ``nf_inet_addr``, the expiry bounds, the protocol and ports, then ``match_flags``
    and ``invert_flags`` at 146 and 148, ``state_mask`` at 150, a byte in revision 1, a
    host-order u16 after) tests the state ``INVALID`` alone, not inverted: a packet
    conntrack cannot place, never one of a new connection nor of its replies."""
    if revision not in (1, 2, 3) or len(info) < 152:
        return False
    flags, invert = struct.unpack_from("=HH", info, 146)
    state = info[150] if revision == 1 else struct.unpack_from("=H", info, 150)[0]
    return bool(flags & _XT_STATE) and not invert & _XT_STATE and state == _XT_STATE_INVALID


def _xt_dst_local(revision: int, info: bytes) -> bool:
    """Whether an xt ``addrtype`` match's data (``xt_addrtype_info``, revision 0: the
    source and destination types, u16 each, then an inversion u32 for each;
    ``xt_addrtype_info_v1``, revision 1: the types, then flags, ``XT_ADDRTYPE_INVERT_*``
    1 and 2) tests that the destination is local, not inverted, whatever else it tests:
    a packet the node routes to itself, never a forwarded one."""
    if revision == 0 and len(info) >= 12:
        _, dest, _, invert = struct.unpack_from("=HHII", info)
        inverted = bool(invert)
    elif revision == 1 and len(info) >= 8:
        _, dest, flags = struct.unpack_from("=HHI", info)
        inverted = bool(flags & 2)
    else:
        return False
    return dest == _XT_ADDRTYPE_LOCAL and not inverted


def _xt_rh0(revision: int, info: bytes) -> bool:
    """Whether an xt ``rt`` match's data (``ip6t_rt``: the type, u32, the segments left
    and length, then ``flags`` and ``invflags`` at 16 and 17, ``IP6T_RT_TYP`` 1) tests a
    routing header of type 0, not inverted: deprecated (RFC 5095), sent by no stack."""
    if revision != 0 or len(info) < 18:
        return False
    (kind,) = struct.unpack_from("=I", info)
    return kind == 0 and bool(info[16] & 1) and not info[17] & 1


_XT_NO_POD_READ: dict[str, Callable[[int, bytes], bool]] = {
    "conntrack": _xt_state_invalid, "addrtype": _xt_dst_local, "rt": _xt_rh0}
"""The compat matches whose data :meth:`Libnftables.list` reads (:data:`XT_NO_POD`)."""


def _snat_to(family: str, revision: int, info: bytes) -> dict[str, Any] | None:
    """What an xt ``SNAT`` target's data (``revision``) translates to, as :data:`SNAT_TO`
    holds it, when it is one address with no ports; else ``None``. Revision 0 is
    ``nf_nat_ipv4_multi_range_compat`` (iptables' IPv4 one: a range count, then flags,
    addresses in network order, ports), 1 ``nf_nat_range`` and 2 ``nf_nat_range2``
    (flags, then ``nf_inet_addr`` minimum and maximum: ip6tables')."""
    size = 4 if family == "ip" else 16 if family == "ip6" else 0
    if not size:
        return None
    if revision == 0 and size == 4 and len(info) >= 20:
        count, flags = struct.unpack_from("=II", info)
        if count != 1:
            return None
        low, high = info[8:12], info[12:16]
    elif revision in (1, 2) and len(info) >= 40:
        (flags,) = struct.unpack_from("=I", info)
        low, high = info[4:4 + size], info[20:20 + size]
    else:
        return None
    if not flags & _NAT_MAP_IPS or low != high or flags & ~(_NAT_MAP_IPS | 4 | 8 | 16):
        return None  # a range, ports, an offset or a map: not one address
    address = ipaddress.ip_address(low)
    return {"addr": str(address),
            "flags": [word for bit, word in _NAT_FLAG_WORDS.items() if flags & bit]}


@contextlib.contextmanager
def beside_listings() -> Iterator[None]:
    """While the calling thread works in Python and a :class:`BoundedLister` lists: the
    GIL handed over within :data:`HANDOVER_INTERVAL` rather than Python's 5 ms.

    The helper releases the GIL inside libnftables, but needs it back at each of
    its calls in and out (about ten per listing): behind a thread that never
    waits, each costs up to the switch interval. A 1 000-rule table listed and read
    beside the kept read's guess took 55 ms with 5 ms, 42 ms with 0.2 ms (medians
    of 9, docs/performance.md, "After another program's commit"). The interval is
    the process's: the first of overlapping blocks (any threads) sets it, the last
    one to end sets back what the first found.
    """
    with _handover_lock:
        if not _handover:
            before = sys.getswitchinterval()
            _handover.append(before)
            sys.setswitchinterval(min(before, HANDOVER_INTERVAL))
        else:
            _handover.append(_handover[0])
    try:
        yield
    finally:
        with _handover_lock:
            before = _handover.pop()
            if not _handover:
                sys.setswitchinterval(before)


_handover_lock = threading.Lock()
_handover: list[float] = []  # one entry per block running; the first, what it found


# Why a listing outlasts its bound. A ruleset that keeps changing restarts the dump,
# but a big table on a loaded machine is slow by itself (50 000 rules under load 9 on
# 2 vCPUs: `nft list table` took 12 s), so the message names both, not one guess.
SLOW_LISTING = "a large ruleset, a busy machine, or a ruleset that kept changing during it"


class ListingTimeoutError(BackendError):
    """A listing that did not finish within its bound (:data:`SLOW_LISTING` says why)."""


class BoundedLister:
    """Listings that return within a deadline, whatever the kernel does.

    libnftables lists again, with no bound, while the ruleset generation changes
    during its dump: a foreign chain whose dump takes longer than a foreign
    writer's period (3000 rules under 50 commits/s) never lists. A libnftables
    call cannot be interrupted, so it runs in a helper thread of its own (with
    its own context), and the caller waits only until the deadline. A helper
    still stuck is abandoned (it ends when its dump finally completes, or with
    the process); while it is, listings run ``nft -j -f -`` in a child process
    with the remaining time as timeout, which can be killed. Must be made and
    used in the namespace's worker thread: the helper thread and the child
    process inherit its network namespace.
    """

    def __init__(self, make: Callable[[], NftKernel] | None = None) -> None:
        self._make = make or Libnftables
        self._jobs: queue.SimpleQueue[tuple[Callable[[NftKernel], object], Future[object]] | None]
        self._jobs = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()  # the current helper's kernel is closed (close())
        self._stuck: Future[object] | None = None
        self._last: Future[object] | None = None  # the job queued last (they run in order)
        self.calls = 0

    @property
    def busy(self) -> bool:
        """Whether the helper is still in a listing it was given up on."""
        if self._stuck is not None and self._stuck.done():
            self._stuck = None  # the abandoned dump finished: the helper is free again
        return self._stuck is not None

    def run(self, deadline: float, fn: Callable[[NftKernel], T]) -> T:
        """``fn(kernel)`` in the helper thread, or :class:`ListingTimeoutError` once
        ``time.monotonic()`` passes ``deadline`` (also at once while :attr:`busy`)."""
        self.calls += 1
        if self.busy:
            raise ListingTimeoutError("the listing helper is still in an earlier listing")
        return self.wait(self.submit(fn), deadline)

    def submit(self, fn: Callable[[NftKernel], T]) -> Future[T]:
        """``fn(kernel)`` queued for the helper thread, not waited for (see :meth:`wait`)."""
        future: Future[T] = Future()
        self._start()
        self._jobs.put((fn, future))  # type: ignore[arg-type]
        self._last = future  # type: ignore[assignment]
        return future

    def abandon(self, future: Future[T]) -> None:
        """A job of :meth:`submit` nobody will wait for: while it still runs, the helper
        is :attr:`busy`, as after a job past its deadline (listings then run in child
        processes instead of queueing behind it)."""
        if self._stuck is None and not future.done():
            self._stuck = future  # type: ignore[assignment]

    def wait(self, future: Future[T], deadline: float) -> T:
        """``future``'s result (a job of :meth:`submit`), or :class:`ListingTimeoutError`
        once ``time.monotonic()`` passes ``deadline``; the helper is then :attr:`busy`
        until that job ends."""
        try:
            return future.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            self._stuck = future  # type: ignore[assignment]
            raise ListingTimeoutError("the listing did not finish within its bound "
                                      f"({SLOW_LISTING})") from None

    def list(self, deadline: float, kind: str, **ref: str) -> list[dict[str, Any]] | None:
        """``list KIND REF...`` as :meth:`NftKernel.list`, or :class:`ListingTimeoutError`
        once ``time.monotonic()`` passes ``deadline``."""
        if self.busy:
            return list_in_child(deadline, kind, **ref)
        try:
            return self.run(deadline, lambda kernel: kernel.list(kind, **ref))
        except ListingTimeoutError:
            raise ListingTimeoutError(_timed_out(kind, ref)) from None

    def list_text(self, deadline: float, kind: str, **ref: str) -> str | None:
        """``nft -a list KIND REF...`` as :meth:`TextLists.list_text`, within ``deadline``.

        :class:`TextUnlistedError` while :attr:`busy` or when the helper's kernel
        lists no text (the JSON listing, which can run in a child, serves then).
        """
        if self.busy:
            raise TextUnlistedError("the listing helper is still in an earlier listing")
        self.calls += 1
        return self.text_of(self.submit_text(kind, **ref), deadline, kind, **ref)

    def submit_text(self, kind: str, **ref: str) -> Future[str | None]:
        """The listing :meth:`list_text` makes, queued and not waited for: its text
        comes from :meth:`text_of`."""

        def listed(kernel: NftKernel) -> str | None:
            list_text = getattr(kernel, "list_text", None)
            if list_text is None:
                raise TextUnlistedError("this kernel seam lists no text")
            return list_text(kind, **ref)  # type: ignore[no-any-return]

        return self.submit(listed)

    def text_of(self, future: Future[str | None], deadline: float, kind: str,
                **ref: str) -> str | None:
        """The text of a :meth:`submit_text` listing of ``kind`` ``ref`` (as :meth:`list_text`
        returns or raises it), or :class:`ListingTimeoutError` past ``deadline``."""
        try:
            return self.wait(future, deadline)
        except ListingTimeoutError:
            raise ListingTimeoutError(_timed_out(kind, ref)) from None

    def close(self) -> None:
        """Stop the helper thread; one still in a job is left to end by itself: a dump
        given up on, or one nobody waited for (a prefetch), which may never end either.

        An idle helper's kernel is closed (its netlink socket) when this returns; the
        thread then frees libnftables' context and ends by itself. Freeing a context
        that listed 10 000 rules takes 20-30 ms (its cache), which a cold CLI process,
        about to end, no longer waits for (docs/performance.md, "Not waiting for
        libnftables to free its cache").
        """
        if self._thread is not None:
            self._jobs.put(None)
            if not self.busy and (self._last is None or self._last.done()):
                self._closed.wait()
            self._thread = None

    def _start(self) -> None:
        if self._thread is None:
            self._closed = threading.Event()  # a helper left in a dump sets its own
            self._thread = threading.Thread(target=self._work, args=(self._closed,),
                                            name="k3snet-nft-foreign", daemon=True)
            self._thread.start()

    def _work(self, closed: threading.Event) -> None:
        kernel: NftKernel | None = None
        try:
            while (job := self._jobs.get()) is not None:
                fn, future = job
                try:
                    if kernel is None:
                        kernel = self._make()
                    future.set_result(fn(kernel))
                except BaseException as exc:  # noqa: BLE001 - handed to the caller as is
                    future.set_exception(exc)
        finally:
            if kernel is not None:
                kernel.close()
            closed.set()
        # Only now, as this frame ends, is the context (and libnftables' cache) freed.


class OwnTableLister:
    """Listings of k3snet's own table through a :class:`BoundedLister`, each within ``seconds``.

    A listing not done in time is a :class:`~k3snet.errors.BackendError` naming
    the bound (``NftablesBackend(read_timeout=)``): observe fails, and an apply
    fails before changing anything. Counts its round trips in ``kernel.calls``.
    """

    def __init__(self, kernel: NftKernel, bounded: BoundedLister, seconds: float,
                 started: dict[tuple[str, ...], Future[str | None]] | None = None) -> None:
        self.kernel = kernel
        self.bounded = bounded
        self.seconds = seconds
        self.started = started or {}

    def list(self, kind: str, **ref: str) -> list[dict[str, Any]] | None:
        """``list KIND REF...`` within the bound, or :class:`BackendError` naming it."""
        return self._within(lambda deadline: self.bounded.list(deadline, kind, **ref))

    def list_text(self, kind: str, **ref: str) -> str | None:
        """``nft -a list KIND REF...`` within the bound, as :meth:`list`; taken from the
        listing in ``started`` under :func:`listing_key` if there is one (once)."""
        started = self.started.pop(listing_key(kind, **ref), None)
        if started is not None:
            return self._within(
                lambda deadline: self.bounded.text_of(started, deadline, kind, **ref))
        return self._within(lambda deadline: self.bounded.list_text(deadline, kind, **ref))

    def chain_rules(self, family: str, table: str, chain: str) -> int | None:
        """:meth:`TextLists.chain_rules` of the kernel (not the helper's, which may be
        listing); :class:`TextUnlistedError` if that kernel counts none."""
        if not isinstance(self.kernel, TextLists):
            raise TextUnlistedError("this kernel seam counts no rules")
        return self.kernel.chain_rules(family, table, chain)

    def genid(self) -> int:
        """:meth:`TextLists.genid`: the kernel's (one small netlink round trip)."""
        return self.kernel.genid()

    def _within(self, listing: Callable[[float], T]) -> T:
        self.kernel.calls += 1
        try:
            return listing(time.monotonic() + self.seconds)
        except ListingTimeoutError as exc:
            raise BackendError(f"k3snet's own table could not be read within {self.seconds:g} s "
                               f"(read_timeout; raise it for a table this large or a machine "
                               f"this busy): {exc}") from None


def listing_key(kind: str, **ref: str) -> tuple[str, ...]:
    """What names the listing ``list KIND REF...`` (the key of :class:`OwnTableLister`'s
    ``started``)."""
    return (kind, *(f"{k}={v}" for k, v in sorted(ref.items())))


def _timed_out(kind: str, ref: dict[str, str]) -> str:
    return (f"nft {' '.join(['list', kind, *ref.values()])!r} did not finish within its bound "
            f"({SLOW_LISTING})")


def list_in_child(deadline: float, kind: str, **ref: str) -> list[dict[str, Any]] | None:
    """``list KIND REF...`` through ``nft -j -f -`` (a JSON command: names passed as data),
    killed past ``deadline`` (:class:`ListingTimeoutError`). Runs in the caller's namespace;
    started within :func:`~k3snet.backends.kit.undo_spares_children`, as an undo's tools."""
    what = " ".join(["list", kind, *ref.values()])
    command = list_command(kind, ref)
    timeout = deadline - time.monotonic()
    if timeout <= 0:
        raise ListingTimeoutError(_timed_out(kind, ref))
    try:
        with undo_spares_children():  # in an undo: the cgroup's SIGTERM leaves it be
            process = subprocess.Popen(["nft", "-j", "-f", "-"], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True, errors="replace")
    except OSError as exc:
        raise BackendError(f"nft {what!r} could not run: {exc}") from exc
    with process:
        try:
            stdout, stderr = process.communicate(command, timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise ListingTimeoutError(_timed_out(kind, ref)) from None
        except BaseException:
            process.kill()
            raise
    if process.returncode != 0:
        if "No such file or directory" in stderr:
            return None
        raise BackendError(f"nft {what!r} failed: {first_lines(stderr)}")
    return listed_items(stdout, what)


def unprintable_message(found: Sequence[tuple[str, str, str, str, int]]) -> str:
    """What :class:`UnprintableNameError` says of ``found`` (:meth:`~k3snet.backends.nfgen.
    GenerationReader.unprintable`): each object escaped as a shell reads it back,
    with the command that deletes it (by handle: nft's language cannot name it)."""
    shown = []
    for family, table, kind, name, handle in found:
        if kind == "rule":
            where = f"{family} {shell_word(table)} {shell_word(name)}"
            shown.append(f"rule handle {handle} of chain {shell_word(name)} of table "
                         f"{family} {shell_word(table)} (its string is not UTF-8: "
                         f"nft -a list chain {where} shows it; "
                         f"nft delete rule {where} handle {handle})")
        elif kind == "table":
            shown.append(f"table {family} {shell_word(table)} (nft delete table {family} "
                         f"handle {handle})")
        elif kind != "object" and table.isprintable():
            shown.append(f"{kind} {shell_word(name)} of table {family} {shell_word(table)} "
                         f"(nft delete {kind} {family} {shell_word(table)} handle {handle})")
        else:
            shown.append(f"{kind} {shell_word(name)} of table {family} {shell_word(table)} "
                         f"(handle {handle})")
    return ("libnftables cannot list as JSON a name or string that is not UTF-8 (it aborts "
            f"the process), so this listing was not made: {'; '.join(shown)}")


def _with_capability(error: str) -> str:
    """libnftables' "Operation not permitted", with the capability that is missing."""
    if "Operation not permitted" in error:
        return (f"{error.rstrip()} (not permitted: this needs {_CAPABILITY}; run as root or "
                "grant the capability)")
    return error
