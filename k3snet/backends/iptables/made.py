"""Built-in chains iptables-nft made for k3snet's jump, recorded to go with it.

iptables-nft creates a built-in chain (``ip filter FORWARD``, ``ip6 nat POSTROUTING``),
and its table, only when a rule is first added to it: on a node where nothing else
used them, k3snet's hook jump made them, and a destroy left them behind, empty with
policy accept (a nat chain keeps connection tracking on for every packet of the
namespace). Whether they existed is read when k3snet's apply adds rules to the table
(the kernel's own answer, never guessed from ``iptables-nft-save``, which shows every
built-in chain, existing or not), and what k3snet's apply made is kept in
``<state_dir>/<netns or 'host'>/iptables-made.json`` (a namespace named ``host`` keeps
``iptables-made-netns.json`` there, beside the caller's own; the backend's ``state_dir``,
``/run/k3snet`` by default, as the netlink backend's sysctl record; the CLI, the agent
and the Ansible module give both ``$K3SNET_STATE_DIR``), with the namespace's identity
(its device and inode) and instance (its cookie, and a named one's boot id: the kernel
gives a namespace made again under the same name the inode of the one just deleted);
the backend names the namespace by :func:`~k3snet.backends.netns.record_netns`, so
that one namespace has one record whatever name reaches it.
Once k3snet's chains are gone from that table, a recorded chain that is still empty
with policy accept is deleted, with its table when k3snet's apply made that too and
it holds nothing else, in one transaction the kernel refuses when anything changed
since (a rule, a chain, an admin's policy drop: then it is another program's and the
record is dropped). A record that cannot be read or written is a log line: the
chain then stays, as before.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import attrs

from k3snet._kept import STATE_ROOT, read_trusted, replace_atomically

__all__ = ["DEFAULT_ROOT", "Made", "MadeRecord"]

log = logging.getLogger(__name__)

DEFAULT_ROOT = STATE_ROOT  # k3snet._kept's, the backends' default (not Final:
# the project's tests move it)
_NAME: Final = "iptables-made.json"
_NAMED_HOST: Final = "iptables-made-netns.json"
_LIMIT: Final = 64 * 1024


@attrs.frozen
class Made:
    """A built-in chain iptables-nft made for k3snet (``table_made``: its table too)."""

    family: str
    table: str
    chain: str
    table_made: bool


class MadeRecord:
    """The record of one namespace (``identity``: its ``namespace_id``; ``instance``: its
    :func:`~k3snet.backends.netns.namespace_instance`; a record of an earlier namespace
    of the same name is another's, and ignored, also in the same inode. A record without
    an instance, an older k3snet's, is judged by the identity alone)."""

    def __init__(self, netns: str | None, identity: str,
                 root: str | os.PathLike[str] | None = None, *,
                 instance: str | None = None, earlier: Sequence[str] = ()) -> None:
        base = Path(root if root is not None else DEFAULT_ROOT)
        directory = base / (netns or "host")
        # The caller's own namespace keeps its record in "host/": a namespace named
        # "host" has another file there, or each apply replaced the other's record (and
        # the other's destroy left the chains it had made).
        self.file = directory / (_NAMED_HOST if netns == "host" else _NAME)
        self.identity = identity
        self.instance = instance
        # Where an earlier k3snet may have kept this namespace's record (directory
        # names: earlier_records), read while it has none and removed by a save.
        # In host/ for another namespace, its file as a namespace named host's too (one
        # so named given a name sorting first keeps its records under that one).
        self.earlier = [base / name / file for name in earlier for file in (
            (_NAME, _NAMED_HOST) if name == "host" and netns not in (None, "host")
            else (_NAME,))]

    def load(self) -> list[Made]:
        """What is recorded for this namespace (nothing when unreadable), or in an
        earlier place for it while it has no record of its own."""
        found = self._read(self.file)
        for older in self.earlier:
            if found is not None:
                break
            found = self._read(older)
        return found or []

    def _read(self, file: Path) -> list[Made] | None:
        """The record in ``file``; ``None`` when there is none, or another's."""
        data = read_trusted(file, _LIMIT)
        if data is None:
            return None
        try:
            document = json.loads(data)
            written = document.get("instance")
            if document.get("namespace") != self.identity or (
                    written is not None and self.instance is not None
                    and written != self.instance):
                return None
            return [Made(str(e["family"]), str(e["table"]), str(e["chain"]),
                         bool(e["table_made"])) for e in document["made"]]
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("iptables: ignoring the record %s of chains k3snet made: %s",
                        file, exc)
            return None

    def _retire_earlier(self) -> None:
        """Remove this namespace's records in the earlier places (another's stays)."""
        for older in self.earlier:
            if self._read(older) is not None:
                with contextlib.suppress(OSError):
                    older.unlink()

    def save(self, made: list[Made]) -> None:
        """Record ``made`` (the file removed when empty, and its namespace's directory
        when nothing else is in it: the netlink backend's record shares it); a failure is
        a log line."""
        try:
            if not made:
                self._retire_earlier()
                if self.file.exists():
                    self.file.unlink()
                    with contextlib.suppress(OSError):  # not empty: another record's
                        self.file.parent.rmdir()
                return
            document: dict[str, object] = {"namespace": self.identity,
                                           "made": [attrs.asdict(m) for m in made]}
            if self.instance is not None:
                document["instance"] = self.instance
            replace_atomically(self.file, json.dumps(document, indent=1) + "\n",
                               ".iptables-made-", mode=0o700, durable=True)
            self._retire_earlier()  # once the record is in its own place
        except OSError as exc:
            log.warning("iptables: cannot record the built-in chains k3snet made in %s: %s "
                        "(a destroy leaves them, empty)", self.file, exc)
