"""The netfilter ruleset generation id, and a chain's rule count, read over a netlink socket.

Every committed nftables transaction in a network namespace bumps one counter
(``NFT_MSG_GETGEN``), iptables-nft's commits included. Reading it is one small
netlink round trip, so a backend can keep what it observed until the id moves.
Written once here for the nftables and the iptables backends. A chain's use count
(``NFT_MSG_GETCHAIN``) is, for a base chain (nothing can jump to one), the number
of its rules: what the nftables backend holds its text listing to.
"""

from __future__ import annotations

import os
import socket
import struct

from k3snet.backends.kit import translate_errors
from k3snet.errors import BackendError

__all__ = ["GenerationReader"]

# Netfilter netlink: NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETGEN, and its answer.
_NETLINK_NETFILTER = 12
_NFT_MSG_GETGEN = (10 << 8) | 16
_NFT_MSG_GETCHAIN = (10 << 8) | 4
_NFTA_GEN_ID = 1
_NFTA_CHAIN_TABLE = 1
_NFTA_CHAIN_NAME = 3
_NFTA_CHAIN_USE = 6
_NFPROTO = {"inet": 1, "ip": 2, "ip6": 10}
_ENOENT = 2
_NLMSG_ERROR = 2
_NLM_F_REQUEST = 1
_CAPABILITY = "CAP_NET_ADMIN"


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

    def chain_use(self, family: str, table: str, chain: str) -> int | None:
        """Chain ``chain`` of table ``family table``'s use count (``None``: no such chain):
        its rules, and the rules and map elements that jump to it (none can to a base
        chain)."""
        body = _attribute(_NFTA_CHAIN_TABLE, table.encode() + b"\0") + _attribute(
            _NFTA_CHAIN_NAME, chain.encode() + b"\0")
        with translate_errors(f"read nftables chain {family} {table} {chain}",
                              capability=_CAPABILITY):
            attributes = self._request(_NFT_MSG_GETCHAIN, _NFPROTO[family], body)
        if attributes is None:
            return None
        if _NFTA_CHAIN_USE not in attributes:
            raise BackendError(f"the kernel's answer for chain {family} {table} {chain} has no "
                               "use count")
        return int(struct.unpack_from(">I", attributes[_NFTA_CHAIN_USE])[0])

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
        attributes: dict[int, bytes] = {}
        offset = 20  # nlmsghdr, then nfgenmsg
        while offset + 4 <= length:
            attr_len, attr_type = struct.unpack_from("=HH", data, offset)
            if attr_len < 4:
                break
            attributes.setdefault(attr_type & 0x3FFF, data[offset + 4:offset + attr_len])
            offset += (attr_len + 3) & ~3
        return attributes

    def close(self) -> None:
        """Close the socket (idempotent)."""
        self._sock.close()


def _attribute(kind: int, data: bytes) -> bytes:
    size = 4 + len(data)
    return struct.pack("=HH", size, kind) + data + b"\0" * (-size % 4)
