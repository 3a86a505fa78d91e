"""A server that reads each request and closes the connection without an answer, as an
API server or a load balancer with no backend left does: the tests of what k3snet's
clients send again after such a close (tests/agent/test_shutdown.py,
tests/cluster/test_kube_errors.py)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def closing_server() -> Iterator[tuple[int, list[int]]]:
    """Its port on 127.0.0.1, and a list holding one item for each connection it took
    (read, then closed unanswered); shut down on leaving."""
    accepted: list[int] = []
    with socket.socket() as closing:
        closing.bind(("127.0.0.1", 0))
        closing.listen(16)

        def serve() -> None:
            while True:
                try:
                    conn, _ = closing.accept()
                except OSError:
                    return
                with conn:
                    conn.recv(65536)
                    accepted.append(1)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            yield closing.getsockname()[1], accepted
        finally:
            closing.shutdown(socket.SHUT_RDWR)
            thread.join(5)
