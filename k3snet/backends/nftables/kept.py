"""k3snet's table as the last process left it, kept on disk for the next cold process.

A cold ``k3snet apply`` or ``plan`` first reads k3snet's table: at 10 000 rules
libnftables lists it in ~0.15 s, and taking its lines as objects costs ~0.1 s
more. Most cold runs (a cron job's) find the table as the run before left it.
So the backend keeps what it knew of its table when its last process closed it
(objects, kernel handles, chains), stamped with the ruleset generation id, and a
cold process takes that instead of listing, while that id is unchanged.

Sound by construction; a file is used only if all of these hold:

* **nothing was committed in the namespace since**: any nftables transaction,
  k3snet's, nft's, iptables-nft's, anyone's, moves the generation id
  (``NFT_MSG_GETGEN``), the stamp of the backend's own in-memory cache (the one an
  agent trusts between its passes);
* **the same namespace, the same boot**: the file is keyed by the namespace's
  cookie (``SO_NETNS_COOKIE``, Linux 5.14: never reused while the machine is up,
  unlike a name or an inode) and the boot id; a namespace deleted and made again
  under the same name, whose generation id happens to match, is another key.
  Without a cookie nothing is kept;
* **the same code**: the k3snet version and the name, size and mtime of every
  module that reads, renders or models the rules;
* **the same table, read the same way**: its name and families, and whether an
  unmarked table was judged drift (``syntax="nft"``; :func:`~.parse.read_own`'s
  ``mark``): a ``"json"`` backend's read of an older k3snet's table holds no such
  drift;
* **a trusted file** (:mod:`k3snet._kept`: owned by us, writable by nobody else,
  written atomically).

Only a table exactly as k3snet writes it is kept: no drift, every handle known.
Each object is kept as its sort key (what equality compares, so the whole
object) and taken as the expected object with that key (:meth:`expect`'s hint,
the desired state, compiled anyway); an object not expected (one a plan is about
to remove) is read back from its first rule's text as the text reader reads a
listed line (parsed, then rendered back). If neither works the table is listed.
``K3SNET_READ_CACHE=off`` (or the backend's ``keep_read=False``) turns it off.

A stale file (something was committed since) is still worth something: most
commits are other programs', and k3snet's table is as it was. While the table is
listed, the backend reads the file's first-rule texts (:meth:`Kept.first_rules`)
as a guess of the lines to come (:func:`~.text.first_rule_lines`); that guess is
never taken as the table, only as what each of those texts reads as.
"""

from __future__ import annotations

import contextlib
import hashlib
import marshal
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from k3snet._kept import (
    STATE_ROOT,
    code_identity,
    prune,
    read_trusted,
    state_directory,
    write_atomic,
)
from k3snet._version import __version__
from k3snet.backends.netns import boot_id, netns_cookie
from k3snet.backends.nftables.cache import Cache, Table, rule_count
from k3snet.backends.nftables.parse import table_of
from k3snet.backends.nftables.text import FirstRules
from k3snet.model import NetObject
from k3snet.render.nftables import CHAIN_HOOKS, FORWARD_CHAIN, MARKER_CHAIN, NAT_CHAIN

__all__ = ["FORMAT", "MAX_ENTRIES", "Kept", "kept_directory", "netns_cookie"]

FORMAT: Final = 1
"""Bumped when the file's layout changes (an old file is then a mismatch)."""

MAX_ENTRIES: Final = 32
"""How many kept tables (one per namespace and table) the directory holds."""

_DEFAULT_ROOT: Final = STATE_ROOT
_LIMIT: Final = 64 << 20  # bytes read at most: ~60 bytes a rule plus its text
_PACKAGE: Final = Path(__file__).parent.parent.parent
_CODE: Final = (Path(__file__).parent, _PACKAGE / "render", _PACKAGE / "model")


def kept_directory() -> Path | None:
    """``$K3SNET_STATE_DIR/nftables-read``, else ``/run/k3snet/nftables-read`` when
    ``/run/k3snet`` exists; ``None`` when ``K3SNET_READ_CACHE=off`` or neither applies."""
    return state_directory("nftables-read", _DEFAULT_ROOT, "K3SNET_READ_CACHE")


def _own_chains(chains: tuple[str, ...]) -> bool:
    """Each chain one k3snet writes, once; both base chains there."""
    return (NAT_CHAIN in chains and FORWARD_CHAIN in chains and len(set(chains)) == len(chains)
            and all(c in CHAIN_HOOKS or c == MARKER_CHAIN for c in chains))


class _Unusable(Exception):  # noqa: N818 - internal signal: list the table instead
    """The kept file does not make a cache: the table is listed instead."""


class Kept:
    """The kept read of one table (``table``, nft ``families``, read with ``mark``: see
    :func:`~.parse.read_own`) in the namespace whose cookie is ``cookie``, in
    ``directory``."""

    def __init__(self, directory: Path, cookie: int, table: str,
                 families: tuple[str, ...], *, mark: bool = True) -> None:
        self.families = families
        boot = boot_id()
        where = f"{cookie}\0{boot}\0{table}\0{','.join(families)}\0{'mark' if mark else ''}"
        self.file = directory / (hashlib.sha256(where.encode()).hexdigest()[:32] + ".kept")
        identity = (f"k3snet {__version__}\0kept {FORMAT}\0{sys.implementation.cache_tag}\0"
                    f"{where}\0{code_identity(_CODE)}")
        self.key = hashlib.sha256(identity.encode(errors="surrogateescape")).hexdigest()
        self.usable = boot is not None
        self.loaded: int | None = None  # the generation id of the file read, if one was
        self._document: tuple[Any, ...] | None = None

    @classmethod
    def here(cls, table: str, families: tuple[str, ...], *, mark: bool = True) -> Kept | None:
        """The kept read of ``table`` (read with ``mark``) in the calling thread's
        namespace, or ``None`` (no directory, no cookie, no boot id: nothing is kept)."""
        directory = kept_directory()
        cookie = netns_cookie() if directory is not None else None
        if directory is None or cookie is None:
            return None
        kept = cls(directory, cookie, table, families, mark=mark)
        return kept if kept.usable else None

    def stamped(self, genid: int) -> bool:
        """Whether the file holds the table as of generation ``genid`` (read once)."""
        document = self._loaded()
        return bool(document) and document[1] == genid

    def cache(self, genid: int, expected: Sequence[NetObject]) -> Cache | None:
        """The table as of ``genid`` from the file, its objects taken from ``expected``
        where they are there; ``None`` when the file does not give it."""
        if not self.stamped(genid):
            return None
        assert self._document is not None
        try:
            cache = self._cache(self._document, genid, expected)
        except (_Unusable, TypeError, ValueError, KeyError, IndexError, AttributeError):
            return None
        self.loaded = genid
        return cache

    def first_rules(self) -> list[tuple[str, str, bool]]:
        """Each kept object's first rule as ``(chain, text, inet table)``, whatever the
        file's stamp: after another program's commit, what k3snet's table most likely
        still holds (a guess for :func:`~.text.first_rule_lines`, never taken as the
        table). Empty without a usable file."""
        document = self._loaded()
        records = document[3] if document else None
        if type(records) is not tuple:
            return []
        families, rule_chains = self.families, (NAT_CHAIN, FORWARD_CHAIN)
        return [(record[3], record[4], record[1] == "inet") for record in records
                if type(record) is tuple and len(record) == 5 and record[1] in families
                and record[3] in rule_chains and type(record[4]) is str]

    def keep(self, cache: Cache) -> bool:
        """Write ``cache`` to the file, if it is a table exactly as k3snet writes it and
        not what the file already holds; whether it was written."""
        if cache.genid == self.loaded or cache.drift or not self._keepable(cache):
            return False
        bodies = dict(cache.bodies)
        for (chain, body, reply, _inet), (obj, _tag) in cache.lines.items():
            if not reply and cache.objects.get(obj.key) is obj:
                bodies[obj.key] = (chain, body)
        records = []
        handles, families = cache.handles, self.families
        for key, obj in cache.objects.items():
            known = handles.get(key)
            if known is None or None in known or len(known) != rule_count(obj):
                return False
            first = bodies.get(key)
            records.append((obj.sort_key, table_of(obj, families), tuple(known),
                            *(first or (None, None))))
        tables = tuple((family, tuple(table.chains), table.marker)
                       for family, table in cache.tables.items())
        try:
            data = marshal.dumps((self.key, cache.genid, tables, tuple(records)))
        except ValueError:
            return False
        if not write_atomic(self.file, data, ".nft-"):
            return False
        prune(self.file.parent, self.file, MAX_ENTRIES, ".kept", temporary=".nft-")
        self.loaded = cache.genid
        return True

    def forget(self) -> None:
        """Remove the file (after a failed apply, as the in-memory cache is dropped)."""
        self._document, self.loaded = (), None
        with contextlib.suppress(OSError):
            os.unlink(self.file)

    def _loaded(self) -> tuple[Any, ...]:
        """The file's document, read once (empty without a usable file)."""
        if self._document is None:
            self._document = self._read() or ()
        return self._document

    def _read(self) -> tuple[Any, ...] | None:
        raw = read_trusted(self.file, _LIMIT)
        if raw is None or len(raw) > _LIMIT:
            return None
        try:
            # Only from a trusted file (ours, written by no one else), and every value is
            # checked before use; marshal gives tuples back as tuples, 5 ms for 10 000
            # records where JSON took 24 ms and 14 ms more to make its lists tuples again.
            document = marshal.loads(raw)  # noqa: S302
        except (ValueError, EOFError, TypeError):
            return None
        if (type(document) is not tuple or len(document) != 4 or document[0] != self.key
                or type(document[1]) is not int):
            return None
        return document

    def _keepable(self, cache: Cache) -> bool:
        if not cache.tables or cache.handles.keys() != cache.objects.keys():
            return False
        return all(_own_chains(tuple(table.chains)) for table in cache.tables.values())

    def _tables(self, cache: Cache, kept_tables: Any) -> None:
        for family, chains, marker in kept_tables:
            if (family not in self.families or family in cache.tables or type(marker) is not bool
                    or type(chains) is not tuple or not _own_chains(chains)):
                raise _Unusable
            cache.tables[family] = Table(
                chains={name: dict(CHAIN_HOOKS.get(name, {})) for name in chains}, marker=marker)

    def _cache(self, document: tuple[Any, ...], genid: int,
               expected: Sequence[NetObject]) -> Cache:
        _, _, kept_tables, records = document
        cache = Cache(genid=genid)
        self._tables(cache, kept_tables)
        by_sort = {obj.sort_key: obj for obj in expected}
        objects, handles, bodies = cache.objects, cache.handles, cache.bodies
        families, tables = self.families, cache.tables
        single = families[0] if len(families) == 1 else None  # then every object's table
        texts = FirstRules()
        # One loop, its checks spelled out: it runs once per rule of a 10 000-rule table.
        for sort, family, held, chain, body in records:
            obj = by_sort.get(sort)
            if obj is None:  # not expected: read back from its first rule's text
                if type(body) is not str or chain not in (NAT_CHAIN, FORWARD_CHAIN):
                    raise _Unusable
                obj = texts.read(body, chain, family == "inet")
                if obj is None or obj.sort_key != sort:
                    raise _Unusable
            key = obj.key
            if (key in objects or family not in tables
                    or family != (single or table_of(obj, families))
                    or type(held) is not tuple or len(held) != rule_count(obj)):
                raise _Unusable
            for handle in held:
                if type(handle) is not int or handle <= 0:
                    raise _Unusable
            cache.put(key, obj)
            handles[key] = list(held)
            if type(body) is str and type(chain) is str:
                bodies[key] = (chain, body)
        return cache
