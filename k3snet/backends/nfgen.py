"""The netfilter ruleset generation id, read over a netlink socket of its own.

Every committed nftables transaction in a network namespace bumps one counter
(``NFT_MSG_GETGEN``), iptables-nft's commits included. Reading it is one small
netlink round trip, so a backend can keep what it observed until the id moves.
Written once here for the nftables and the iptables backends.
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
_NFTA_GEN_ID = 1
_NLMSG_ERROR = 2
_NLM_F_REQUEST = 1
_CAPABILITY = "CAP_NET_ADMIN"


class GenerationReader:
    """Reads the generation id of the network namespace it was made in.

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
        self._seq += 1
        body = struct.pack("=BBH", socket.AF_UNSPEC, 0, 0)
        header = struct.pack(
            "=IHHII", 16 + len(body), _NFT_MSG_GETGEN, _NLM_F_REQUEST, self._seq, 0
        )
        with translate_errors("read the nftables generation id", capability=_CAPABILITY):
            self._sock.send(header + body)
            while True:
                data = self._sock.recv(65536)
                length, kind, _flags, seq = struct.unpack_from("=IHHI", data)
                if seq == self._seq:
                    break  # skip any answer to an earlier, interrupted request
            if kind == _NLMSG_ERROR:
                (errno,) = struct.unpack_from("=i", data, 16)
                raise OSError(-errno, os.strerror(-errno))
        offset = 20  # nlmsghdr, then nfgenmsg
        while offset + 8 <= length:
            attr_len, attr_type = struct.unpack_from("=HH", data, offset)
            if attr_type & 0x3FFF == _NFTA_GEN_ID:
                return int(struct.unpack_from(">I", data, offset + 4)[0])
            offset += max(4, (attr_len + 3) & ~3)
        raise BackendError("the kernel's nftables generation answer has no id")

    def close(self) -> None:
        """Close the socket (idempotent)."""
        self._sock.close()
