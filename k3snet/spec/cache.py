"""A cache of parsed spec documents, next to k3snet's state, for cold processes.

A fresh ``k3snet apply`` of a large spec spent about half of its spec loading in
the YAML parser. The parsed document is plain data, so it is kept as JSON (far
cheaper to read than YAML) under the state directory, keyed by a digest of the
spec file's bytes and of the k3snet version. What is cached is the *parse*, and
whether it made a sound spec: the document still goes through the whole field
table (:func:`spec_from_document`), so the cache can never let through a spec
that the file itself would not give. A document is written only once it made a
sound spec, and the key covers the code that judged it, so a hit whose document
names no other file (an ``ipMasqAgentConfig`` path is read anew every time and
may have changed) skips its checks (:func:`~k3snet.spec.validate.validate`),
which would find nothing new: a third of the load of a 10k-destination spec.

The destinations of such a document are kept as rows of plain values instead
(:func:`_rows`: its networks and addresses as integers), written only from the
spec the document made and only when every row reads back equal to its
destination; a hit makes them again through the model's own constructor (its
converters and checks run; a row of other types or values is no destination,
and the spec file is read again) and reads the rest of the document through the
field table: ~50 ms instead of ~100 ms for 10 000 destinations.

Safe by construction:

* any mismatch (other bytes, another k3snet version, another format, another
  size or mtime of any module of :mod:`k3snet.spec`, :mod:`k3snet.model`, k3snet's top
  level or PyYAML, the code that reads and checks a document: a development install
  changes it without changing the version, an upgrade of PyYAML without k3snet's)
  recomputes;
* a file that is not a regular file owned by the effective user (root on a
  node), that is group- or world-writable, or whose directory is either, is
  ignored (``os.fstat`` of the opened file, ``O_NOFOLLOW``; ``os.lstat`` of the
  directory): someone else could have put a different spec's document there;
* an unreadable or corrupt file is ignored and rewritten;
* writes are atomic (a 0600 temporary file in the same directory, then
  ``os.replace``), so a reader sees the old file or the new one, never half.

:func:`load_spec_head_cached` reads a hit's spec without its destinations, so that a
cold CLI can make its backends, and let them start reading, before the
destinations are read; the whole load that follows takes the same document.

A compiled :class:`~k3snet.model.State` is *not* cached: reading its objects
back (JSON or pickle) costs more than compiling them. Figures and their
commands: docs/performance.md, "The cold path".
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path
from typing import Any, Final

import attrs

from k3snet._gc import gc_paused
from k3snet._kept import (
    STATE_ROOT,
    code_identity,
    prune,
    read_input,
    read_trusted,
    state_directory,
    write_atomic,
)
from k3snet._regex import lazy_pattern
from k3snet._version import __version__
from k3snet.errors import K3snetError
from k3snet.model.cidr import Address, Network
from k3snet.spec.load import spec_from_document
from k3snet.spec.model import Destination, Spec
from k3snet.spec.schema import SPEC
from k3snet.spec.source import MAX_BYTES, load_mapping
from k3snet.spec.validate import known_sound

__all__ = ["CACHE_FORMAT", "MAX_ENTRIES", "cache_directory", "load_spec_cached",
           "load_spec_head_cached"]

CACHE_FORMAT = 3
"""Bumped when the cache file's layout changes (an old file is then a mismatch)."""

MAX_ENTRIES = 32
"""How many parsed specs (one per spec path) the cache keeps; the oldest go first."""

_DEFAULT_ROOT = STATE_ROOT


def cache_directory() -> Path | None:
    """Where parsed specs are kept: ``$K3SNET_STATE_DIR/spec-cache``, else
    ``/run/k3snet/spec-cache`` when ``/run/k3snet`` exists; ``None`` (no cache) when
    ``K3SNET_SPEC_CACHE=off`` or neither applies."""
    return state_directory("spec-cache", _DEFAULT_ROOT, "K3SNET_SPEC_CACHE")


def _yaml_directory() -> tuple[Path, ...]:
    """PyYAML's package directory, found without importing it (a hit parses no YAML), or
    none when it is not installed."""
    try:
        found = importlib.util.find_spec("yaml")
    except (ImportError, ValueError):  # (a "yaml" module without a spec)
        return ()
    places = () if found is None else found.submodule_search_locations or ()
    return tuple(Path(place) for place in places)


_CODE = (Path(__file__).parent, Path(__file__).parent.parent / "model",
         Path(__file__).parent.parent, *_yaml_directory())
"""The directories of the modules that read and check a spec document: k3snet's spec and
model, its top level (the YAML and JSON text checks, ``_yamltext``, ``_gojson``) and PyYAML
(an upgrade may read the same bytes otherwise)."""


def _code_identity() -> str:
    """Name, size and mtime of every module that reads and checks a spec document."""
    return code_identity(_CODE)


def _digest(data: bytes) -> str:
    head = (f"k3snet {__version__}\0cache {CACHE_FORMAT}\0{_code_identity()}\0"
            .encode(errors="surrogateescape"))
    return hashlib.sha256(head + data).hexdigest()


# (section key, input key) of every import a section reads besides its fields
# (masquerade.ipMasqAgentConfig), from the field table.
_IMPORTS = tuple((f.key, name) for f in SPEC.fields
                 if f.child is not None and not f.many for name in f.child.inputs)


def _self_contained(document: Any) -> bool:
    """The document alone decides the spec: no import given as a path or text (a file
    read anew on every load, which may have changed; a mapping is part of the document)."""
    if not isinstance(document, dict):
        return True
    for section, name in _IMPORTS:
        held = document.get(section)
        if isinstance(held, dict) and not isinstance(held.get(name, {}), dict):
            return False
    return True


def _read_cached(file: Path, key: str) -> tuple[Any, bool, Any]:
    """The cached document for ``key``, whether it made a sound spec on its own, and its
    destinations as rows when the document was kept without them (:func:`_rows`), or
    ``(None, False, None)`` (missing, foreign, corrupt, stale). The caller pauses the
    cyclic GC (:func:`load_spec_cached`: one pause for this and the spec read from it)."""
    raw = read_trusted(file, 4 * MAX_BYTES)
    if raw is None:
        return None, False, None
    try:
        entry = json.loads(raw)
    except (ValueError, RecursionError):
        return None, False, None
    if not isinstance(entry, dict) or entry.get("key") != key or "document" not in entry:
        return None, False, None
    sound = entry.get("sound") is True
    rows = entry.get("destinations")
    if rows is not None and not sound:
        return None, False, None  # rows stand for a sound document's list: not this one
    return entry["document"], sound, rows


def _write_cached(file: Path, key: str, document: Any, spec: Spec | None = None) -> None:
    """Atomically replace ``file``; any failure leaves the cache as it was (it is optional).

    With ``spec`` (what ``document`` made) and a self-contained document, its
    destinations are kept as rows (:func:`_rows`) in place of the document's list.
    """
    # Only documents that made a sound spec are written: "sound" says the checks
    # need not run again, unless the spec depends on another file.
    sound = _self_contained(document)
    entry: dict[str, Any] = {"key": key, "document": document, "sound": sound}
    rows = (_rows(spec.destinations) if sound and spec is not None and isinstance(document, dict)
            and "destinations" in document else None)
    if rows is not None:
        entry["document"] = {k: v for k, v in document.items() if k != "destinations"}
        entry["destinations"] = rows
    try:
        text = json.dumps(entry, separators=(",", ":"))
        back = json.loads(text)
        if back["document"] != entry["document"] or back.get("destinations") != rows:
            return  # not plain JSON data (an int key, a date): read the YAML each time
    except (TypeError, ValueError):
        return
    if write_atomic(file, text, _TEMPORARY):
        _prune(file.parent, keep=file)


def _rows(destinations: tuple[Destination, ...]) -> list[list[Any]] | None:
    """The destinations as rows of ints, strings, booleans and ``None``, or ``None`` when
    any of them would not come back equal (:func:`_destinations`).

    Reading 10 000 destinations of a cached document through the field table again
    took ~70 ms; rows come back as the same values in ~35-45 ms (docs/performance.md,
    "Destinations kept as rows"). Written only from a spec the document made, and
    only when every row reads back equal to its destination.
    """
    rows: list[list[Any]] = []
    for d in destinations:
        gateway = d.gateway
        rows.append([*_net_row(d.cidr),
                     None if gateway is None else [gateway.version, int(gateway)],
                     d.device, d.table, d.metric, d.masquerade, d.forward,
                     [_net_row(e) for e in d.exclude]])
    try:
        if _destinations(rows) != destinations:
            return None
    except (K3snetError, TypeError, ValueError):
        return None
    return rows


def _net_row(net: Network) -> list[int]:
    return [net.version, int(net.network_address), net.prefixlen]


_NETWORKS: Final[dict[int, type[Network]]] = {4: IPv4Network, 6: IPv6Network}
_ADDRESSES: Final[dict[int, type[Address]]] = {4: IPv4Address, 6: IPv6Address}


def _destinations(rows: Any) -> tuple[Destination, ...]:
    """The destinations :func:`_rows` made rows of, through their constructor (every
    converter and check of the model runs; a row of anything else raises)."""
    networks, addresses = _NETWORKS, _ADDRESSES
    gateways: dict[tuple[int, int], Address] = {}  # most destinations share a few
    made = []
    for version, address, length, gateway, device, table, metric, masquerade, forward, \
            exclude in rows:
        # The types the field table gives (the model takes others for some fields).
        if (type(address) is not int or type(length) is not int or type(table) is not int
                or (metric is not None and type(metric) is not int)
                or type(masquerade) is not bool or type(forward) is not bool):
            raise TypeError("a destination row of other types")
        via = None
        if gateway is not None:
            via = gateways.get(key := (gateway[0], gateway[1]))
            if via is None:
                if type(key[1]) is not int:
                    raise TypeError("a destination row's gateway is no address")
                via = gateways[key] = addresses[key[0]](key[1])
        made.append(Destination(
            networks[version]((address, length)), gateway=via, device=device, table=table,
            metric=metric, masquerade=masquerade, forward=forward,
            exclude=[_network(networks, row) for row in exclude] if exclude else ()))
    return tuple(made)


def _network(networks: dict[int, type[Network]], row: Any) -> Network:
    version, address, length = row
    if type(address) is not int or type(length) is not int:
        raise TypeError("a destination row's exclusion is no network")
    return networks[version]((address, length))


def _with_rows(document: Any, rows: Any, where: str) -> Spec | None:
    """The spec of a sound document kept without its destinations, and of its rows;
    ``None`` (the file is read again) when they make none."""
    try:
        head = spec_from_document(document, source=where, sound=True)
        spec = attrs.evolve(head, destinations=_destinations(rows))
    except (K3snetError, TypeError, ValueError, KeyError, IndexError):
        return None
    known_sound(spec)
    return spec


def _prune(directory: Path, keep: Path) -> None:
    """Keep the :data:`MAX_ENTRIES` newest files: one per spec path, and paths come and go
    (test runs, renamed specs); only on a miss, so a hit never lists the directory."""
    prune(directory, keep, MAX_ENTRIES, stem=_ENTRY_STEM, temporary=_TEMPORARY)


_ENTRY_STEM = lazy_pattern(r"[0-9a-f]{32}")  # only a miss prunes
_TEMPORARY = ".spec-"  # write_atomic's prefix: a killed writer's file is pruned
"""An entry's name before ``.json``: the digest of the spec's path (:func:`_located`)."""


_handed: tuple[Path, str, Any, bool, Any] | None = None
"""The cached document :func:`load_spec_head_cached` read (its file, key, document,
soundness and destination rows), for the :func:`load_spec_cached` of that file that
follows: taken once."""


def _located(path: Path, directory: Path | None) -> tuple[Path, str, bytes] | None:
    """The cache file and key of ``path``'s bytes, and the bytes; ``None`` when there is
    no cache or the file is not a regular file of at most :data:`MAX_BYTES`."""
    if directory is None:
        return None
    try:
        data = read_input(path, MAX_BYTES)
    except OSError:
        return None
    # One file per spec path: a node alternating two specs keeps both parsed.
    file = directory / (hashlib.sha256(os.fsencode(path.absolute())).hexdigest()[:32] + ".json")
    return file, _digest(data), data


def load_spec_head_cached(path: str | Path, directory: Path | None = None) -> Spec | None:
    """``path``'s spec without its destinations, from a cache hit; ``None`` on a miss or
    if that part alone is no spec.

    Everything but the destinations (the backends and their options, the CNI
    settings) goes through the same checks as in :func:`load_spec_cached`. A
    cold CLI makes its backends from it, so that they start reading the node
    (``prefetch``) while the destinations are read; it makes them again if the
    whole spec asks for other ones. The document is read once: the next
    :func:`load_spec_cached` of the same bytes takes it.
    """
    global _handed  # noqa: PLW0603 - one hand-over from one call to the next
    path = Path(path)
    located = _located(path, cache_directory() if directory is None else directory)
    if located is None:
        return None
    file, key, data = located
    with gc_paused(len(data) // 16):  # about one object per 16 bytes of YAML
        document, sound, rows = _read_cached(file, key)
    if not isinstance(document, dict):
        return None
    _handed = (file, key, document, sound, rows)
    head = {name: value for name, value in document.items() if name != "destinations"}
    try:
        return spec_from_document(head, source=str(path), sound=sound)
    except K3snetError:
        return None


def load_spec_cached(path: str | Path, directory: Path | None = None) -> Spec:
    """:func:`~k3snet.spec.load_spec`, with the parsed document cached in ``directory``
    (default :func:`cache_directory`; ``None`` there: no cache). Same spec, same errors."""
    global _handed
    path = Path(path)
    where = str(path)
    located = _located(path, cache_directory() if directory is None else directory)
    if located is None:
        # Every message about an unreadable or oversized file comes from the one place
        # that words it.
        from k3snet.spec.load import load_spec  # noqa: PLC0415

        return load_spec(path)
    file, key, data = located
    handed, _handed = _handed, None
    # One pause for reading the cached document and the spec from it: the collection
    # that ends it walks both at once (each with its own pause: two collections).
    with gc_paused(len(data) // 16):  # about one object per 16 bytes of YAML
        if handed is not None and handed[:2] == (file, key):
            document, sound, rows = handed[2:]
        else:
            document, sound, rows = _read_cached(file, key)
        if isinstance(document, dict) and rows is not None and "destinations" not in document:
            spec = _with_rows(document, rows, where)
            if spec is not None:
                return spec
        elif document is not None:
            return spec_from_document(document, source=where, sound=sound)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        from k3snet.spec.load import load_spec  # noqa: PLC0415

        return load_spec(path)
    document = load_mapping(text, where)
    spec = spec_from_document(document, source=where)
    _write_cached(file, key, document, spec)  # only documents that made a valid spec
    return spec
