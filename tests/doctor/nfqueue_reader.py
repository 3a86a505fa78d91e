"""A program reading an NFQUEUE queue, for the doctor's kernel tests (run inside a namespace).

``python nfqueue_reader.py QUEUE`` binds ``QUEUE`` (nfnetlink_queue, raw netlink: no library
needed), prints ``bound`` and accepts every packet it is given until it is killed.
"""

from __future__ import annotations

import socket
import struct
import sys

_NETLINK_NETFILTER = 12
_CONFIG = (3 << 8) | 2  # NFNL_SUBSYS_QUEUE, NFQNL_MSG_CONFIG
_VERDICT = (3 << 8) | 1  # NFQNL_MSG_VERDICT
_REQUEST, _ACK = 1, 4
_NF_ACCEPT = 1


def _message(kind: int, flags: int, queue: int, attributes: list[tuple[int, bytes]]) -> bytes:
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(queue))
    for number, payload in attributes:
        attribute = struct.pack("=HH", 4 + len(payload), number) + payload
        body += attribute + b"\0" * (-len(attribute) % 4)
    return struct.pack("=IHHII", 16 + len(body), kind, flags, 0, 0) + body


def _packet_ids(data: bytes) -> list[int]:
    """The packet ids of the queued packets' messages in ``data``."""
    ids, offset = [], 0
    while offset + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, offset)
        if length < 16:
            break
        at = offset + 20
        while kind & 0xFF == 0 and at + 4 <= offset + length:  # NFQNL_MSG_PACKET
            size, number = struct.unpack_from("=HH", data, at)
            if size < 4:
                break
            if number & 0x7FFF == 1:  # NFQA_PACKET_HDR: the packet id first
                ids.append(struct.unpack_from("!I", data, at + 4)[0])
            at += (size + 3) & ~3
        offset += (length + 3) & ~3
    return ids


def main() -> None:
    queue = int(sys.argv[1])
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_NETFILTER)
    sock.bind((0, 0))
    sock.send(_message(_CONFIG, _REQUEST | _ACK, queue, [(1, struct.pack("=BBH", 1, 0, 0))]))
    sock.recv(4096)
    sock.send(_message(_CONFIG, _REQUEST | _ACK, queue, [(2, struct.pack("!IB", 0, 1))]))
    sock.recv(4096)
    sys.stdout.write("bound\n")
    sys.stdout.flush()
    while True:
        for packet_id in _packet_ids(sock.recv(65536)):
            sock.send(_message(_VERDICT, _REQUEST, queue,
                               [(2, struct.pack("!II", _NF_ACCEPT, packet_id))]))


if __name__ == "__main__":
    main()
