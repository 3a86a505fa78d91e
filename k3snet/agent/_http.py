"""``/healthz``, ``/readyz`` and ``/metrics`` on a small stdlib HTTP server in a thread."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["HealthServer", "parse_listen"]


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` (every address) or ``[V6]:PORT`` -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"listen address must be HOST:PORT or :PORT, not {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 - probes come from the kubelet


class HealthServer:
    """Serves the agent's probes and metrics until :meth:`stop`.

    ``healthy`` and ``ready`` return ``(ok, reason)``; ``metrics`` returns the
    body and its content type. Port 0 picks a free port (see :attr:`port`).
    """

    def __init__(self, host: str, port: int, *,
                 healthy: Callable[[], tuple[bool, str]],
                 ready: Callable[[], tuple[bool, str]],
                 metrics: Callable[[], tuple[bytes, str]] | None) -> None:
        routes: dict[str, Callable[[], tuple[int, bytes, str]]] = {
            "/healthz": lambda: _probe(healthy()),
            "/readyz": lambda: _probe(ready()),
        }
        if metrics is not None:
            routes["/metrics"] = lambda: (200, *metrics())

        class Handler(http.server.BaseHTTPRequestHandler):
            server_version = "k3snet-agent"

            def do_GET(self) -> None:
                route = routes.get(self.path.split("?", 1)[0])
                if route is None:
                    status, body, ctype = 404, b"not found\n", "text/plain; charset=utf-8"
                else:
                    status, body, ctype = route()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # probes every few seconds would drown the agent's own log

        family_server = _server_class(host)
        self._server = family_server((host, port), Handler)
        self.host = host
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="k3snet-agent-http", daemon=True)

    def start(self) -> HealthServer:
        """Start serving in a daemon thread; returns self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=10)
        self._server.server_close()


def _probe(result: tuple[bool, str]) -> tuple[int, bytes, str]:
    ok, reason = result
    return (200 if ok else 503), (reason.rstrip("\n") + "\n").encode(), "text/plain; charset=utf-8"


def _server_class(host: str) -> type[http.server.ThreadingHTTPServer]:
    import socket  # noqa: PLC0415

    if ":" not in host:
        return http.server.ThreadingHTTPServer

    class V6Server(http.server.ThreadingHTTPServer):
        address_family = socket.AF_INET6

    return V6Server
