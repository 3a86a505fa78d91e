"""``/healthz``, ``/readyz`` and ``/metrics``: a one-thread HTTP server no client can exhaust.

The agent listens on the node's port (the DaemonSet uses the host network), which
every pod of the cluster can reach, not only the node's. The standard library's
threading server gives each connection a thread and waits on it for ever: 3 000
connections that sent half a request held 3 000 threads and 78 MiB, and kept them,
so that any pod could walk the agent to its memory limit. This server instead:

* runs one thread and a selector, however many clients connect;
* holds at most ``max_connections``; for one more, it first serves every request
  that has arrived (a probe sends its request as it connects, so even one accepted
  from a backlog full of idle connections is answered), then closes the oldest
  connection not all answered (its request not all arrived, whether it sent nothing or
  a part, or its answer not all written) of the peer holding the most connections (an
  IPv4 address; an IPv6 /64, then the address of it holding the most: the nodes of one
  IPv6 subnet, another node's pods masqueraded to its address among them, share the
  kubelet's /64, not its address):
  a flood from one pod pushes out only its own, however fast it reconnects;
* closes a connection not answered and written within ``deadline`` seconds of its
  accept (a client that sends a byte at a time, or never reads its answer);
* reads at most :data:`REQUEST_LIMIT` bytes of request line and headers (431 beyond);
* answers ``GET`` and ``HEAD`` of a path or an absolute URL (``http://HOST/healthz``; one
  of no host, of a userinfo, or whose authority does not parse, is a 400), one request a
  connection (``Connection: close``), one empty line before the request line ignored, a
  bare CR in or before it a 400; a 400 too for an HTTP/1.1 request of no ``Host``, any of
  two, of one whose value is not a host and port, and of a field line that does not parse
  (whitespace before its colon, a fold); ``Host``'s value routes nothing;
* once its answer is written, shuts its sending side and reads and drops what the client
  still sends, until it closes, for at most ``linger`` seconds and :data:`LINGER_LIMIT`
  bytes (as Apache's lingering close and Go's ``closeWriteAndWait``): a socket closed
  with bytes unread, or receiving more, answers a reset, and a client sending its whole
  request before reading (a 431's headers, a 405's body) failed to send and never read
  its answer. A connection doing so (the one just accepted included) is the first closed
  for one more.
"""

from __future__ import annotations

import collections
import http
import ipaddress
import logging
import re
import selectors
import socket
import threading
import time
from collections.abc import Callable

from k3snet._logline import printable_line

__all__ = ["DEADLINE", "LINGER", "LINGER_LIMIT", "MAX_CONNECTIONS", "REQUEST_LIMIT",
           "HealthServer", "parse_listen"]

MAX_CONNECTIONS = 64
"""Connections held at once; one more closes one of the peer holding most (see the module)."""

DEADLINE = 10.0
"""Seconds from a connection's accept to its answer written; it is closed then."""

REQUEST_LIMIT = 8192
"""Bytes of request line and headers read before answering 431."""

LINGER = 2.0
"""Seconds a connection is read (and what it sends dropped) after its answer is written."""

LINGER_LIMIT = 256 * 1024
"""Bytes read and dropped after a connection's answer is written; it is closed then."""

_MAX_WAIT = 3600.0  # seconds: the loop turns then, a connection not due yet

_TEXT = "text/plain; charset=utf-8"

Route = Callable[[], tuple[int, bytes, str]]


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` (every address) or ``[V6]:PORT`` -> (host, port).

    ``HOST`` is an IPv4 address or a host name; an IPv6 address is written in
    brackets. ``:PORT`` and ``[::]:PORT`` are every address of both families (host
    ``::``, served dual-stack; IPv4 alone where the kernel has no IPv6), so that
    a probe reaches the agent on an IPv6-only or IPv6-first node too;
    ``0.0.0.0:PORT`` is every IPv4 address. Anything else, a port above 65535
    included, is a ``ValueError`` quoting the text.
    """
    bracketed = _BRACKETED.fullmatch(text)
    if bracketed is not None:
        host, port = bracketed["host"], bracketed["port"]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"listen address {text!r}: {host!r} is not an IPv6 address") from None
    else:
        host, sep, port = text.rpartition(":")
        if not sep or not (host == "" or _HOST.fullmatch(host)):
            raise ValueError(f"listen address must be HOST:PORT, :PORT or [IPV6]:PORT, "
                             f"not {text!r}")
    # ASCII digits: str.isdigit() also takes "²" (int() refuses it) and other scripts'.
    if not (port.isascii() and port.isdigit()) or len(port) > 5 or int(port) > 65535:
        raise ValueError(f"listen address {text!r}: the port must be 0..65535")
    return host or "::", int(port)


# The empty line ending the headers: a line may end in a bare LF (RFC 9112 2.2), the
# last header's or the empty line's, so "\n\r\n" too (it was answered by no status).
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_EMPTY_LINE = re.compile(rb"\r?\n")
_AUTHORITY_END = re.compile(r"[/#]")
_BRACKETED = re.compile(r"\[(?P<host>[0-9A-Fa-f:.]+)\]:(?P<port>[0-9]*)")
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+")  # a field's name, RFC 9110 5.6.2
# A Host field's value, uri-host [":" port] (RFC 9112 3.2), empty too; no userinfo.
_HOST_FIELD = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[-A-Za-z0-9._~!$&'()*+,;=%]*)(?::[0-9]*)?")


class _Client:
    """One accepted connection: what it sent so far, then what is left to write, then
    (``lingering``) how many more bytes it may send before it is closed."""

    __slots__ = ("answer", "lingering", "peer", "request", "sock", "until")

    def __init__(self, sock: socket.socket, until: float, peer: tuple[str, str]) -> None:
        self.sock = sock
        self.until = until  # closed then (monotonic time)
        self.peer = peer
        self.request = bytearray()
        self.answer: memoryview | None = None
        self.lingering: int | None = None


class HealthServer:
    """Serves the agent's probes and metrics until :meth:`stop`.

    ``healthy`` and ``ready`` return ``(ok, reason)``; ``metrics`` returns the
    body and its content type. Port 0 picks a free port (see :attr:`port`).
    ``max_connections``, ``deadline`` and ``linger`` bound what clients can hold (see
    the module's text).
    """

    def __init__(self, host: str, port: int, *,
                 healthy: Callable[[], tuple[bool, str]],
                 ready: Callable[[], tuple[bool, str]],
                 metrics: Callable[[], tuple[bytes, str]] | None,
                 max_connections: int = MAX_CONNECTIONS,
                 deadline: float = DEADLINE,
                 linger: float = LINGER) -> None:
        if max_connections < 1 or not deadline > 0 or not linger >= 0:
            raise ValueError("max_connections must be at least 1, deadline above 0 and "
                             "linger 0 or more")
        self._routes: dict[str, Route] = {
            "/healthz": lambda: _probe(healthy()),
            "/readyz": lambda: _probe(ready()),
        }
        if metrics is not None:
            self._routes["/metrics"] = lambda: (200, *metrics())
        self._max = max_connections
        self._deadline = deadline
        self._linger = linger
        self._listener = _listen(host, port)
        fell_back = host == "::" and self._listener.family == socket.AF_INET
        self.host = "0.0.0.0" if fell_back else host  # noqa: S104 - every address, IPv4 only
        self.port = int(self._listener.getsockname()[1])
        self._clients: dict[int, _Client] = {}  # by file descriptor, in accept order
        self._stopping = threading.Event()
        self._wake_read, self._wake_write = socket.socketpair()
        self._selector = selectors.DefaultSelector()
        self._thread = threading.Thread(target=self._serve, name="k3snet-agent-http",
                                        daemon=True)

    def start(self) -> HealthServer:
        """Start serving in a daemon thread; returns self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close every connection and the listening socket."""
        self._stopping.set()
        if self._thread.is_alive():
            self._wake_write.send(b"\0")
            self._thread.join(timeout=10)
        else:
            self._close_all()
        self._wake_read.close()
        self._wake_write.close()

    @property
    def address(self) -> str:
        """Where it listens, ``HOST:PORT`` (``[V6]:PORT``): ``[::]:PORT`` is both families."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def connections(self) -> int:
        """How many client connections are held now."""
        return len(self._clients)

    # ------------------------------------------------------------ the loop

    def _serve(self) -> None:
        selector = self._selector
        selector.register(self._listener, selectors.EVENT_READ)
        selector.register(self._wake_read, selectors.EVENT_READ)
        try:
            while not self._stopping.is_set():
                for key, _events in selector.select(self._wait()):
                    if key.fileobj is self._listener:
                        self._accept()
                    elif key.data is not None:
                        self._turn(key.data)
                self._expire()
        except Exception:  # the probes stop answering: the liveness probe restarts the agent
            logging.getLogger("k3snet.agent").exception("the health server stopped")
        finally:
            self._close_all()

    def _wait(self) -> float | None:
        """Seconds until the first connection's deadline or end of linger (None: none held),
        at most :data:`_MAX_WAIT`: select() refuses infinity or beyond 2**31 ms (a deadline
        or linger of ``inf``, or of 25 days, stopped the server at its first connection)."""
        until = min((client.until for client in self._clients.values()), default=None)
        return None if until is None else min(max(0.0, until - time.monotonic()), _MAX_WAIT)

    def _accept(self) -> None:
        # At most max_connections at a time: then the loop turns (deadlines, writes).
        for _ in range(self._max):
            try:
                sock, address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionError:  # the client gave up before its accept
                continue
            except OSError:  # out of descriptors or memory: the loop must not spin
                time.sleep(0.1)
                return
            sock.setblocking(False)
            client = _Client(sock, time.monotonic() + self._deadline, _peer(address))
            self._clients[sock.fileno()] = client
            self._selector.register(sock, selectors.EVENT_READ, client)
            if len(self._clients) > self._max:
                self._make_room(client)

    def _make_room(self, newcomer: _Client) -> None:
        """One connection too many: serve what has arrived, else close one (module text)."""
        # The accepts drained from the backlog were never read: a probe among them has
        # its whole request in its buffer, and must not count as one still sending.
        for key, _events in self._selector.select(0):
            if key.data is not None:
                self._turn(key.data)
        if len(self._clients) <= self._max:
            return
        # The peer holding the most connections loses its oldest not all answered, whether
        # it sent nothing or a part (a client accepted before its first packet was read
        # has sent nothing either): one pod reconnecting in a loop, each connection
        # sending a byte, closed the kubelet's probe whenever it was accepted a moment
        # before its request came. Or whether its answer is still being written: clients
        # never reading an answer larger than the sockets hold (a big /metrics) left only
        # the newcomer to close, every probe until their deadline. Not the newcomer: its
        # request may be on its way.
        # An IPv6 peer is a /64 (a host picks any address of its own), and within it the
        # address holding the most: the nodes of one IPv6 subnet share the kubelet's
        # /64, and another node's pods, masqueraded to its address, flooding the port
        # made the kubelet's probe the oldest of that /64. max() keeps the oldest of a tie.
        # A connection answered and lingering goes first, whoever's: its answer is sent.
        # The newcomer too, once answered (served above from the backlog): it made room
        # by itself when an answered connection was closed at once, and spared, it had
        # an unanswered one closed in its place.
        nets = collections.Counter(c.peer[0] for c in self._clients.values())
        held = collections.Counter(c.peer for c in self._clients.values())
        waiting = [c for c in self._clients.values()
                   if c.lingering is not None or c is not newcomer]
        self._close(max(waiting, key=lambda c: (c.lingering is not None, nets[c.peer[0]],
                                                held[c.peer]),
                        default=newcomer))

    def _expire(self) -> None:
        now = time.monotonic()
        for client in list(self._clients.values()):
            if now >= client.until:
                self._close(client)

    def _turn(self, client: _Client) -> None:
        """The client's socket is ready: read its request, write its answer, or read and
        drop what it sends after (lingering)."""
        try:
            if client.lingering is not None:
                self._drop(client)
            elif client.answer is None:
                self._read(client)
            else:
                self._write(client)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # reset by the peer, or the like
            self._close(client)

    def _read(self, client: _Client) -> None:
        data = client.sock.recv(4096)
        if not data:
            self._close(client)
            return
        # Searched from the 3 bytes before what was read, no earlier (the end is 2 to 4
        # bytes long, none in what came before): from its first byte, a request sent a
        # byte at a time had 33 MB searched for its 8 KiB, 1.8 s of this one thread.
        start = max(0, len(client.request) - 3)
        client.request += data
        # One empty line before the request line is ignored (RFC 9112 2.2: a client may
        # end its previous request's body with one; it was a 400). The search takes in
        # its LF: an empty line after it is an empty request line, a 400, not a wait.
        lead = _EMPTY_LINE.match(client.request)
        begin = 0 if lead is None else lead.end()
        end = _HEAD_END.search(client.request, max(start, begin - 1))
        if end is None and len(client.request) > REQUEST_LIMIT:
            self._answer(client, _text(431, "request headers too large"), head=False)
        elif end is not None:
            head = client.request[begin:max(begin, end.start())]
            self._answer(client, *self._route(bytes(head)))

    def _route(self, head: bytes) -> tuple[tuple[int, bytes, str], bool]:
        """The answer to a request (its line and headers) and whether it is a HEAD."""
        if len(head) > REQUEST_LIMIT:
            return _text(431, "request headers too large"), False
        line, newline, fields = head.partition(b"\n")
        if newline:  # its CR; a head of one line has lost its line's end to _HEAD_END
            line = line.removesuffix(b"\r")
        words = line.split(b" ")
        path = _path(words[1].decode("ascii", "replace")) if len(words) == 3 else None
        # A CR not ending the line is a bare CR (RFC 9112 2.2: invalid): one before the
        # method made it a method not allowed (405), not a bad request.
        if (path is None or b"\r" in line or not words[2].startswith(b"HTTP/1.")
                or not _fields_valid(fields, http_1_0=words[2] == b"HTTP/1.0")):
            return _text(400, "bad request"), False
        method = words[0]
        if method not in (b"GET", b"HEAD"):
            return _text(405, "only GET and HEAD"), False
        route = self._routes.get(path)
        if route is None:
            return _text(404, "not found"), method == b"HEAD"
        try:
            return route(), method == b"HEAD"
        except Exception as exc:  # noqa: BLE001 - a probe's answer, not the agent's end
            logging.getLogger("k3snet.agent").warning("%s failed: %s", path, exc)
            return _text(500, "internal error"), method == b"HEAD"

    def _answer(self, client: _Client, answer: tuple[int, bytes, str], head: bool) -> None:
        status, body, ctype = answer
        allow = "Allow: GET, HEAD\r\n" if status == 405 else ""  # RFC 9110: a 405's must
        lines = (f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n"
                 f"Server: k3snet-agent\r\nContent-Type: {ctype}\r\n{allow}"
                 f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
        client.answer = memoryview(lines.encode("latin-1") + (b"" if head else body))
        self._selector.modify(client.sock, selectors.EVENT_WRITE, client)
        self._write(client)

    def _write(self, client: _Client) -> None:
        assert client.answer is not None
        sent = client.sock.send(client.answer)
        client.answer = client.answer[sent:]
        if not client.answer:
            self._linger_on(client)

    def _linger_on(self, client: _Client) -> None:
        """The answer is written: send the end (FIN), then read until the client closes.

        Closed now, a socket with bytes unread, or receiving more, would answer a reset:
        a client still sending (a 431's headers, a 405's body) fails to send and reports
        that, never the status, and a reset that overtakes the answer loses it.
        """
        client.sock.shutdown(socket.SHUT_WR)
        client.lingering = LINGER_LIMIT
        client.until = time.monotonic() + self._linger
        client.request = bytearray()
        self._selector.modify(client.sock, selectors.EVENT_READ, client)

    def _drop(self, client: _Client) -> None:
        """Read and drop what a client sends after its answer; close it at its end, or
        beyond :data:`LINGER_LIMIT`."""
        assert client.lingering is not None
        data = client.sock.recv(65536)
        client.lingering -= len(data)
        if not data or client.lingering <= 0:
            self._close(client)

    def _close(self, client: _Client) -> None:
        if self._clients.pop(client.sock.fileno(), None) is not None:
            self._selector.unregister(client.sock)
        client.sock.close()

    def _close_all(self) -> None:
        for client in list(self._clients.values()):
            self._close(client)
        self._selector.close()
        self._listener.close()


def _listen(host: str, port: int) -> socket.socket:
    """A non-blocking listening socket on (host, port); IPv6 when the host has a colon,
    ``::`` dual-stack whatever ``net.ipv6.bindv6only`` says (IPv4's ``0.0.0.0`` where the
    kernel has no IPv6)."""
    try:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                             socket.SOCK_STREAM)
    except OSError as exc:
        if host != "::":
            raise
        logging.getLogger("k3snet.agent").warning(
            "no IPv6 here (%s): serving every IPv4 address only", exc.strerror or exc)
        return _listen("0.0.0.0", port)  # noqa: S104 - every address, as asked
    try:
        if host == "::":
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except BaseException as exc:
        sock.close()
        if isinstance(exc, OSError):  # which address, for a host name not found too
            where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"  # as .address
            raise OSError(exc.errno, exc.strerror, f"listen on {where}") from exc
        raise
    return sock


def _peer(address: tuple[object, ...]) -> tuple[str, str]:
    """Whose connection it is: its network and its address, an IPv4 address twice, an
    IPv6 address's /64 and the address (a host picks any address of its /64; a pod has
    one address; the nodes of one subnet share a /64)."""
    host = str(address[0])
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host, host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # an IPv4 client of the dual-stack socket
            return str(ip.ipv4_mapped), str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False)), host  # %scope kept
    return str(ip), str(ip)


def _path(target: str) -> str | None:
    """The path of a request's target, its query left out: the target itself (origin-form,
    ``/healthz``) or, in absolute-form (``http://HOST:PORT/healthz``, which a server must
    accept: RFC 9112 3.2.2), what follows its authority (``/`` when nothing does), which
    ends at ``/`` or ``#``; ``None`` (a 400) for an absolute-form of no host
    (``http:///healthz``, ``http://:80/``, ``http://#/healthz``), which a recipient must
    reject (RFC 9110 4.2.1). A fragment stays in the path: a request's target has none
    (RFC 9112 3.2), and no route matches it.

    The ``Host`` header's value routes nothing (:func:`_fields_valid` checks it is there):
    for absolute-form the target's host counts and ``Host`` is ignored (RFC 9112 3.2.2);
    for origin-form nothing here depends on a host."""
    path = target.split("?", 1)[0]
    scheme, sep, rest = path.partition("://")
    if sep and scheme.lower() in ("http", "https"):
        # The authority ends at "/" or "#" ("?" is gone): RFC 3986 3.2. Ended at "/"
        # alone, `http://#/healthz` had a host, "#", and its fragment was routed.
        authority = _AUTHORITY_END.split(rest, maxsplit=1)[0]
        return "/" + rest[len(authority):].removeprefix("/") if _host_of(authority) else None
    return path


def _fields_valid(fields: bytes, *, http_1_0: bool) -> bool:
    """Whether a request's field lines (its headers, each line's end but the last's kept)
    are ones a server may read: each a token, a colon at once after it (RFC 9112 5.1: a
    server must reject whitespace before the colon, ``Host : evil``, which a proxy in
    front may read as another field than the server does), no line beginning with
    whitespace (an obsolete fold, RFC 9112 5.2, rejected), no CR nor NUL in a value
    (RFC 9110 5.5); and exactly one ``Host`` of a valid value, which may be empty, or,
    for HTTP/1.0 alone, none (RFC 9112 3.2: a server must answer 400 to an HTTP/1.1
    request lacking one and to any with two). They were all answered 200.

    The last line's end (its CR too) is the head's end, left out already: a CR ending it
    is a bare one (``Host: node\\r\\r\\n\\r\\n``), which was taken for that line's
    end and served (RFC 9112 2.2: invalid)."""
    hosts = []
    *ended, last = fields.split(b"\n")
    lines = [line.removesuffix(b"\r") for line in ended] + [last] if fields else []
    for field in lines:
        name, colon, value = field.partition(b":")
        if not colon or _TOKEN.fullmatch(name) is None or b"\r" in value or b"\0" in value:
            return False
        if name.lower() == b"host":
            hosts.append(value.strip(b" \t"))
    if not hosts:
        return http_1_0
    return len(hosts) == 1 and _HOST_FIELD.fullmatch(hosts[0]) is not None


def _host_of(authority: str) -> str | None:
    """The host of an absolute target's authority (``[fd00::1]:9743``: ``fd00::1``);
    ``None`` where there is none or the authority does not parse (RFC 3986 3.2): an IP
    literal's ``[`` not closed by a ``]`` ending the host, a ``[`` or ``]`` outside one, a
    port not all digits. They were routed by their path (``http://[::1/healthz``: 200).
    ``None`` too for one of a userinfo (``user@node``), which a recipient should treat as
    an error (RFC 9110 4.2.4: a user name or password in a URL ends up in logs); it was
    routed (200)."""
    if "@" in authority:  # a userinfo: an error (RFC 9110 4.2.4), as one of no user
        return None
    hostport = authority
    if hostport.startswith("["):
        host, closed, after = hostport[1:].partition("]")
        if not closed or (after and not after.startswith(":")):
            return None
        port = after[1:]
    else:
        host, _, port = hostport.partition(":")
    # ASCII digits, or none (``node:``, RFC 3986's *DIGIT): str.isdigit() takes "²" too.
    if "[" in host or "]" in host or "]" in port or not (
            port == "" or (port.isascii() and port.isdigit())):
        return None
    return host or None


def _probe(result: tuple[bool, str]) -> tuple[int, bytes, str]:
    ok, reason = result
    # The reason quotes a pass's failure (a foreign table's name, an API server's text):
    # one printable line, so a probe's reader (curl, a monitoring check; the kubelet logs
    # it at -v=4) gets no escape sequence, and a byte that was not UTF-8 (a lone
    # surrogate) no 500.
    return (200 if ok else 503), (printable_line(reason.rstrip("\n")) + "\n").encode(), _TEXT


def _text(status: int, text: str) -> tuple[int, bytes, str]:
    return status, (text + "\n").encode(), _TEXT
