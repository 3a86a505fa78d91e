"""The seed lab's client: one TCP exchange with the echo server, or an ICMP echo.

Run inside a lab namespace as::

    python -m k3snet.lab._probe tcp --host ADDR --port 5432 --timeout 2
    python -m k3snet.lab._probe ping --host ADDR --count 2 --timeout 2

It prints exactly one JSON object on stdout and exits 0 whatever the outcome, so
the caller tells a failed exchange (``"ok": false``) from a broken probe (no JSON):

- ``tcp``: ``{"ok": bool, "seen": str | null, "error": str | null}``, where ``seen``
  is the address the server saw us as;
- ``ping``: ``{"ok": bool, "received": int, "error": str | null}``, ``ok`` when at
  least one echo reply came back (as ping(8) exits 0).

Each wait is bounded by ``--timeout``. ICMP is done here with raw sockets (the lab
runs as root) rather than with ping(8), which is not always installed.

Standard library only; it imports no other k3snet module.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import socket
import struct
import sys
import time
from collections.abc import Sequence

_PREFIX = "seen "
_ICMP_ECHO_REQUEST = {4: 8, 6: 128}
_ICMP_ECHO_REPLY = {4: 0, 6: 129}


def _read_line(sock: socket.socket, deadline: float) -> str:
    """Read until newline or EOF, giving up at ``deadline`` (a monotonic time)."""
    data = b""
    while b"\n" not in data:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        chunk = sock.recv(256)
        if not chunk:
            break
        data += chunk
    return data.decode("ascii", errors="replace").strip()


def tcp_probe(host: str, port: int, timeout: float) -> dict[str, object]:
    """Connect to ``host``:``port`` and return what the server said it saw."""
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            line = _read_line(sock, deadline)
    except OSError as exc:  # TimeoutError, ConnectionRefusedError, unreachable...
        return {"ok": False, "seen": None, "error": f"{type(exc).__name__}: {exc}"}
    if not line.startswith(_PREFIX):
        return {"ok": False, "seen": None, "error": f"unexpected reply {line!r}"}
    return {"ok": True, "seen": line.removeprefix(_PREFIX), "error": None}


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) that ICMPv4 needs; the kernel does ICMPv6's."""
    if len(data) % 2:
        data += b"\0"
    words: tuple[int, ...] = struct.unpack(f"!{len(data) // 2}H", data)
    total = sum(words)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _echo_request(family: int, ident: int, seq: int) -> bytes:
    payload = b"k3snet-lab"
    header = struct.pack("!BBHHH", _ICMP_ECHO_REQUEST[family], 0, 0, ident, seq)
    if family == 6:
        return header + payload
    checksum = _checksum(header + payload)
    return struct.pack("!BBHHH", _ICMP_ECHO_REQUEST[family], 0, checksum, ident, seq) + payload


def _is_reply(family: int, packet: bytes, ident: int, seq: int) -> bool:
    """Tell whether ``packet`` (as a raw socket hands it over) answers our request."""
    if family == 4:
        # IPv4 raw sockets include the IP header; skip it by its length field.
        packet = packet[(packet[0] & 0x0F) * 4 :]
    if len(packet) < 8:
        return False
    kind, _code, _sum, got_ident, got_seq = struct.unpack("!BBHHH", packet[:8])
    return kind == _ICMP_ECHO_REPLY[family] and (got_ident, got_seq) == (ident, seq)


def _await_reply(sock: socket.socket, family: int, ident: int, seq: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            packet = sock.recv(2048)
        except TimeoutError:
            return False
        if _is_reply(family, packet, ident, seq):
            return True
    return False


def ping(host: str, count: int, timeout: float) -> dict[str, object]:
    """Send ``count`` ICMP echo requests to ``host``, each awaited up to ``timeout``."""
    family = ipaddress.ip_address(host).version
    af, proto = (
        (socket.AF_INET, socket.IPPROTO_ICMP)
        if family == 4
        else (socket.AF_INET6, socket.IPPROTO_ICMPV6)
    )
    ident = os.getpid() & 0xFFFF
    received = 0
    try:
        with socket.socket(af, socket.SOCK_RAW, proto) as sock:
            for seq in range(1, count + 1):
                sock.sendto(_echo_request(family, ident, seq), (host, 0))
                received += _await_reply(sock, family, ident, seq, timeout)
    except OSError as exc:
        return {"ok": received > 0, "received": received, "error": f"{type(exc).__name__}: {exc}"}
    error = None if received else f"no reply to {count} echo request(s)"
    return {"ok": received > 0, "received": received, "error": error}


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, probe once, print the JSON result."""
    parser = argparse.ArgumentParser(description="Probe the seed lab from inside a namespace.")
    commands = parser.add_subparsers(dest="command", required=True)
    tcp = commands.add_parser("tcp", help="one exchange with the echo server")
    tcp.add_argument("--host", required=True)
    tcp.add_argument("--port", type=int, default=5432)
    tcp.add_argument("--timeout", type=float, default=2.0)
    icmp = commands.add_parser("ping", help="ICMP echo requests")
    icmp.add_argument("--host", required=True)
    icmp.add_argument("--count", type=int, default=2)
    icmp.add_argument("--timeout", type=float, default=2.0)
    args = parser.parse_args(argv)
    if args.command == "tcp":
        result = tcp_probe(args.host, args.port, args.timeout)
    else:
        result = ping(args.host, args.count, args.timeout)
    print(json.dumps(result), flush=True)  # noqa: T201 - stdout is the probe's answer
    return 0


if __name__ == "__main__":
    sys.exit(main())
