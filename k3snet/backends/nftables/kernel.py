"""The nftables backend's I/O seam: the few kernel calls it makes, and libnftables' ones.

The backend talks to the kernel only through :class:`NftKernel` (the seam, as
knftables' ``execer``): the ruleset generation id, a JSON listing, and one
batch run (a transaction, or a dry run). :class:`Libnftables` is the real one,
made and used inside the namespace's worker thread; tests hand the backend a
fake that serves recorded ``nft -j list`` output (``kernel=`` option).
"""

from __future__ import annotations

import ctypes
import json
from typing import Any, Protocol

from k3snet.backends.nfgen import GenerationReader
from k3snet.errors import BackendError, BackendUnavailableError

__all__ = ["Libnftables", "NftKernel", "first_lines", "listed_items"]

_CAPABILITY = "CAP_NET_ADMIN"


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


def listed_items(output: str, what: str) -> list[dict[str, Any]]:
    """The objects of ``nft -j list`` output; :class:`BackendError` if it is not that."""
    try:
        items = json.loads(output)["nftables"]
    except (ValueError, KeyError, TypeError) as exc:
        raise BackendError(f"nft {what!r} printed unreadable JSON: {exc}") from exc
    if not isinstance(items, list):
        raise BackendError(f"nft {what!r} printed unreadable JSON: 'nftables' is not a list")
    return [item for item in items if isinstance(item, dict)]


def first_lines(text: str, count: int = 4) -> str:
    """The first ``count`` non-empty lines of an nft error, joined with `` | ``."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[:count]) or "no detail"


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
        # pip-nftables keeps its context private; a dry run (nft -c) needs it.
        self._ctx = self.nft._Nftables__ctx
        self._generation = GenerationReader()
        self.calls = 0

    def genid(self) -> int:
        """The ruleset generation id (``NFT_MSG_GETGEN``, one small netlink round trip)."""
        self.calls += 1
        return self._generation.read()

    def run(self, batch: str, *, json_input: bool, dry_run: bool = False) -> tuple[int, str]:
        """Run one libnftables buffer (one transaction); return (rc, error text)."""
        self.calls += 1
        # With JSON output on, libnftables tries its JSON parser first; off for nft text.
        self.nft.set_json_output(json_input)
        self._set_dry_run(self._ctx, dry_run)
        try:
            rc, _output, error = self.nft.cmd(batch)
        finally:
            self._set_dry_run(self._ctx, False)
            self.nft.set_json_output(True)
        return int(rc), _with_capability(str(error))

    def list(self, kind: str, **ref: str) -> list[dict[str, Any]] | None:
        """The objects ``list KIND REF...`` prints; ``None`` if the object does not exist.

        Sent as a JSON command, so any table or chain name, even one nft's own
        language would take for a keyword, is passed as data.
        """
        self.calls += 1
        what = " ".join(["list", kind, *ref.values()])
        command = {"nftables": [{"list": {kind: ref or None}}]}
        rc, output, error = self.nft.cmd(json.dumps(command))
        if rc != 0:
            if "No such file or directory" in error:
                return None
            raise BackendError(f"nft {what!r} failed: {first_lines(_with_capability(error))}")
        return listed_items(output, what)

    def close(self) -> None:
        """Close the netlink socket (libnftables' context goes with the object)."""
        self._generation.close()


def _with_capability(error: str) -> str:
    """libnftables' "Operation not permitted", with the capability that is missing."""
    if "Operation not permitted" in error:
        return (f"{error.rstrip()} (not permitted: this needs {_CAPABILITY}; run as root or "
                "grant the capability)")
    return error
