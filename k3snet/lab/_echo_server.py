"""The seed lab's "legacy database": a TCP server that tells each client who it saw.

Run inside the lab's db namespace as ``python -I -S PATH/_echo_server.py --port 5432``
(as the lab does; ``python -m k3snet.lab._echo_server`` works too). It listens on IPv4
and IPv6 (two sockets, so an IPv4 peer shows as ``192.168.1.5`` rather than
``::ffff:192.168.1.5``), prints ``READY_LINE`` on stdout once both listen, then
answers every connection with one line, ``seen <peer address>\\n``, and closes it. It
runs until killed.

Standard library only and it imports no other k3snet module, so the lab depends on
little more than the package being importable.
"""

from __future__ import annotations

import argparse
import selectors
import socket
import sys
from collections.abc import Sequence
from contextlib import suppress

#: Printed (and flushed) once the server listens on every family: the lab waits for it.
READY_LINE = "listening"

# A client that connects and then stalls must not hold the single-threaded loop.
_CLIENT_TIMEOUT = 1.0


def _listener(family: socket.AddressFamily, port: int) -> socket.socket:
    """Return a non-blocking listening socket for one address family."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        # Keep IPv6 to itself: the IPv4 socket answers IPv4 peers with plain addresses.
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(("::", port))
    else:
        sock.bind(("0.0.0.0", port))  # noqa: S104 - the lab's db must hear every interface
    sock.listen(16)
    sock.setblocking(False)
    return sock


def _answer(listener: socket.socket) -> None:
    """Accept one pending connection, tell the peer its address, close."""
    try:
        conn, peer = listener.accept()
    except BlockingIOError:
        return
    with conn:
        conn.settimeout(_CLIENT_TIMEOUT)
        with suppress(OSError):  # The client went away; nothing to tell it.
            conn.sendall(f"seen {peer[0]}\n".encode("ascii"))


def serve(port: int) -> None:
    """Listen on ``port`` for IPv4 and IPv6 and answer connections forever."""
    selector = selectors.DefaultSelector()
    for family in (socket.AF_INET, socket.AF_INET6):
        selector.register(_listener(family, port), selectors.EVENT_READ)
    print(READY_LINE, flush=True)  # noqa: T201 - the readiness handshake with the lab
    while True:
        for key, _events in selector.select():
            listener = key.fileobj
            assert isinstance(listener, socket.socket)
            _answer(listener)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``--port`` and serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=5432)
    args = parser.parse_args(argv)
    serve(args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
