"""Hostile clients of the agent's probe port: none of them costs a thread or holds a probe up.

The agent serves /healthz, /readyz and /metrics on the node's port (host network),
which every pod of the node can reach. Each test plays a client that a pod could
be, on 127.0.0.1 (an ephemeral port), and checks that the kubelet's probe is still
answered and that what the client holds is bounded.
"""

from __future__ import annotations

import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from k3snet.agent import HealthServer, _http, parse_listen
from k3snet.agent._http import DEADLINE, LINGER, LINGER_LIMIT, REQUEST_LIMIT, _peer

PROBE = b"GET /healthz HTTP/1.1\r\nHost: node\r\nUser-Agent: kube-probe/1.31\r\n\r\n"


def _server(host: str = "127.0.0.1", **options: object) -> HealthServer:
    big = b"# a large exposition\n" * 800_000  # 16.8 MB
    return HealthServer(host, 0, healthy=lambda: (True, "ok: last pass 1 s ago"),
                        ready=lambda: (True, "ready"), metrics=lambda: (big, "text/plain"),
                        **options).start()  # type: ignore[arg-type]


@pytest.fixture
def server() -> Iterator[HealthServer]:
    served = _server()
    try:
        yield served
    finally:
        served.stop()


def _connect(server: HealthServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def _answer(sock: socket.socket, limit: int = 1 << 26) -> bytes:
    """Everything the server sends until it closes the connection."""
    got = bytearray()
    while len(got) < limit:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        got += data
    return bytes(got)


def _probe(server: HealthServer, request: bytes = PROBE) -> bytes:
    with _connect(server) as sock:
        sock.sendall(request)
        return _answer(sock)


def _trickle(sock: socket.socket, data: bytes) -> int:
    """Send a byte every 10 ms until the server closes; how many were sent."""
    for sent, byte in enumerate(data):
        try:
            sock.send(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            return sent
        time.sleep(0.01)
    return len(data)


def _closed_by_server(sock: socket.socket, within: float = 10.0) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _until(condition: Callable[[], bool], within: float = 10.0) -> bool:
    end = time.monotonic() + within
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True


def test_idle_connections_take_no_thread_and_a_probe_is_still_answered(
        server: HealthServer) -> None:
    threads = threading.active_count()
    idle = [_connect(server) for _ in range(300)]
    try:
        for sock in idle:
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # never finished
        answer = _probe(server)
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
        assert answer.endswith(b"\r\n\r\nok: last pass 1 s ago\n")
        assert threading.active_count() == threads
        # Read while the server accepts the rest of the backlog, 65 for a moment (one
        # accepted, then one closed); the answered probe is held until its close is read.
        assert _until(lambda: server.connections <= 64)
    finally:
        for sock in idle:
            sock.close()


def test_a_full_server_closes_its_oldest_unfinished_connection_for_a_new_one() -> None:
    served = _server(max_connections=8)
    idle = [_connect(served) for _ in range(8)]
    try:
        for sock in idle:
            sock.sendall(b"GET /")
        assert _until(lambda: served.connections == 8)
        with _connect(served):  # one more, sending nothing: only unfinished ones to close
            assert _closed_by_server(idle[0])
        assert _probe(served).startswith(b"HTTP/1.1 200 OK\r\n")
        assert not _closed_by_server(idle[-1], within=0.2)
    finally:
        for sock in idle:
            sock.close()
        served.stop()


def test_a_probe_queued_behind_a_flood_of_idle_connections_is_answered() -> None:
    # Not started yet: every connection waits in the listen backlog, so the first
    # accept drains a probe whose whole request has arrived among 3 x max idle ones.
    served = HealthServer("127.0.0.1", 0, healthy=lambda: (True, "ok"),
                          ready=lambda: (True, "ready"), metrics=None, max_connections=8)
    before = [_connect(served) for _ in range(4)]
    probe = _connect(served)
    probe.sendall(PROBE)
    after = [_connect(served) for _ in range(24)]
    try:
        served.start()
        assert _answer(probe).startswith(b"HTTP/1.1 200 OK\r\n")
        # Read from this thread while the server's may be between the accept of one
        # too many and the close that makes room (9 for an instant): once it has turned.
        assert _until(lambda: served.connections <= 8)
    finally:
        for sock in (*before, probe, *after):
            sock.close()
        served.stop()


def test_a_full_server_closes_its_oldest_connection_whatever_it_sent() -> None:
    # A client whose request is still on its way (accepted before its first packet is
    # read) is no likelier to be closed than one still sending: connections that each
    # send one byte as they connect once made every other newcomer the first closed,
    # so a pod reconnecting in a loop reset probes and scrapes a few ms behind.
    served = _server(max_connections=4)
    flood = []
    try:
        for _ in range(3):
            flood.append(_connect(served))
            flood[-1].sendall(b"G")
        assert _until(lambda: served.connections == 3)
        late = _connect(served)  # its request not sent yet
        assert _until(lambda: served.connections == 4)
        flood.append(_connect(served))  # one too many, its byte on the way
        flood[-1].sendall(b"G")
        assert _closed_by_server(flood[0])
        assert not _closed_by_server(late, within=0.2)
        late.sendall(PROBE)
        assert _answer(late).startswith(b"HTTP/1.1 200 OK\r\n")
        late.close()
    finally:
        for sock in flood:
            sock.close()
        served.stop()


def _connect_from(server: HealthServer, source: str, to: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection((to, server.port), timeout=10,
                                    source_address=(source, 0))


def _flood_beside_a_late_probe(served: HealthServer,
                               connect: Callable[[str], socket.socket],
                               kubelet: str, pod: str) -> None:
    """The kubelet connects first (its request not sent yet), then a pod holds every
    other connection and reconnects as fast as it is closed (each sending a byte): the
    pod's own oldest goes, the probe is still answered."""
    flood: list[socket.socket] = []
    try:
        probe = connect(kubelet)  # the oldest, its request not sent
        assert _until(lambda: served.connections == 1)
        for _ in range(8):  # 3 fill the server, then each one closes one of the pod's
            flood.append(connect(pod))
            flood[-1].sendall(b"G")
            assert _until(lambda: served.connections == 4 or len(flood) < 3)
        assert _closed_by_server(flood[0])
        assert not _closed_by_server(probe, within=0.2)
        probe.sendall(PROBE)
        assert _answer(probe).startswith(b"HTTP/1.1 200 OK\r\n")
        probe.close()
    finally:
        for sock in flood:
            sock.close()


def test_a_full_server_closes_a_connection_of_the_peer_holding_the_most() -> None:
    # One pod (one address) holding every connection, reconnecting as fast as it is
    # closed, must not push out the kubelet's probe (the node's address), however late
    # the probe's request is: the pod's own oldest goes first.
    served = _server(max_connections=4)
    try:
        _flood_beside_a_late_probe(served, lambda source: _connect_from(served, source),
                                   "127.0.0.1", "127.0.0.2")
    finally:
        served.stop()


@pytest.mark.kernel
@pytest.mark.usefixtures("require_root")
@pytest.mark.parametrize(("kubelet", "pod"), [
    # The nodes of one IPv6 subnet share its /64: another node's pods, masqueraded to
    # that node's address, flooded the port, and the kubelet's probe (from this node's
    # address, of the same /64) was the oldest of the peer holding the most.
    ("fd00:10::1", "fd00:10::2"),
    ("127.0.0.1", "127.0.0.2"),  # IPv4 through the dual-stack socket (::ffff:127.0.0.1)
])
def test_a_flood_from_another_address_of_the_kubelet_s_network_closes_only_its_own(
        kubelet: str, pod: str) -> None:
    from k3snet.backends.netns import NetnsRunner  # noqa: PLC0415 - kernel tests only
    from k3snet.lab.netns import run_in, temporary_netns  # noqa: PLC0415

    with temporary_netns("http") as ns, NetnsRunner(ns) as runner:
        run_in(ns, ["ip", "link", "set", "lo", "up"])
        for address in ("fd00:10::1/64", "fd00:10::2/64"):
            run_in(ns, ["ip", "address", "add", address, "dev", "lo", "nodad"])
        served = runner.call(lambda: _server("::", max_connections=4))  # as the agent's
        try:
            _flood_beside_a_late_probe(
                served, lambda source: runner.call(lambda: _connect_from(served, source,
                                                                         to=kubelet)),
                kubelet, pod)
        finally:
            served.stop()


@pytest.mark.parametrize(("address", "peer"), [
    (("10.0.0.1", 5), ("10.0.0.1", "10.0.0.1")),
    (("::ffff:10.0.0.1", 5, 0, 0), ("10.0.0.1", "10.0.0.1")),  # IPv4, dual-stack socket
    (("2001:db8::1", 5, 0, 0), ("2001:db8::/64", "2001:db8::1")),
    (("2001:db8::ffff:1", 5, 0, 0), ("2001:db8::/64", "2001:db8::ffff:1")),  # one /64
    (("fe80::1%eth0", 5, 0, 2), ("fe80::/64", "fe80::1%eth0")),
])
def test_a_peer_is_an_ipv4_address_or_an_ipv6_64_then_its_address(
        address: tuple[object, ...], peer: tuple[str, str]) -> None:
    assert _peer(address) == peer


def test_a_client_trickling_its_request_is_closed_at_the_deadline() -> None:
    served = _server(deadline=0.5)
    try:
        with _connect(served) as sock:
            sent = _trickle(sock, PROBE * 100)
            assert sent < len(PROBE)
            assert served.connections == 0
        assert _probe(served).startswith(b"HTTP/1.1 200 OK\r\n")
    finally:
        served.stop()


def test_a_client_never_reading_its_answer_holds_no_probe_up_and_is_closed_at_the_deadline(
        ) -> None:
    served = _server(deadline=1.0)
    try:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.settimeout(10)
            sock.connect(("127.0.0.1", served.port))
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: node\r\n\r\n")
            time.sleep(0.2)  # the server has written what the socket takes, and waits
            assert _probe(served).startswith(b"HTTP/1.1 200 OK\r\n")
            time.sleep(1.5)
            assert served.connections == 0
            assert len(_answer(sock)) < 800_000 * 21
    finally:
        served.stop()


def test_headers_beyond_the_limit_are_refused_with_431(server: HealthServer) -> None:
    endless = b"GET /healthz HTTP/1.1\r\n" + b"X-Pad: " + b"a" * (REQUEST_LIMIT + 100)
    assert _probe(server, endless).startswith(b"HTTP/1.1 431 ")
    long_but_whole = b"GET /healthz HTTP/1.1\r\n" + b"X: y\r\n" * REQUEST_LIMIT + b"\r\n"
    assert _probe(server, long_but_whole).startswith(b"HTTP/1.1 431 ")


class _Searches:
    """The pattern of the headers' end, counting the bytes each search of it reads and
    releasing ``done`` after each."""

    def __init__(self) -> None:
        self.pattern = _http._HEAD_END
        self.read: list[int] = []
        self.done = threading.Semaphore(0)

    def search(self, data: bytearray, pos: int = 0) -> re.Match[bytes] | None:
        self.read.append(len(data) - pos)
        self.done.release()
        return self.pattern.search(data, pos)


@pytest.mark.parametrize(("line_end", "empty_line"), [
    (b"\r\n", b"\r\n"), (b"\n", b"\n"), (b"\n", b"\r\n"), (b"\r\n", b"\n")])
def test_a_request_read_a_byte_at_a_time_is_searched_for_its_end_in_its_new_bytes_only(
        monkeypatch: pytest.MonkeyPatch, line_end: bytes, empty_line: bytes) -> None:
    # Each read searched the whole request from its first byte for the empty line: a
    # client sending 8 KiB a byte at a time had 33 MB searched, a regular expression's
    # 1.8 s of the server's one thread (ten times the two finds it replaced); 63 of
    # them, reconnecting, made a probe wait 120 ms (1 ms now). The end may begin in
    # the 3 bytes before what was read, no earlier: it is 2 to 4 bytes long.
    searches = _Searches()
    monkeypatch.setattr(_http, "_HEAD_END", searches)
    served = _server(deadline=60.0)
    request = (b"GET /healthz HTTP/1.1" + line_end + b"Host: node" + line_end
               + (b"X: y" + line_end) * 100 + empty_line)
    try:
        with _connect(served) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for byte in request:  # each byte read and searched before the next is sent
                sock.sendall(bytes([byte]))
                assert searches.done.acquire(timeout=10)
            assert _answer(sock).startswith(b"HTTP/1.1 200 OK\r\n")
        assert len(searches.read) == len(request)  # no end found before the last byte
        assert max(searches.read) <= 4
    finally:
        served.stop()


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"\r\n\r\n", b"400"),
    (b"GET /healthz\r\n\r\n", b"400"),
    (b"GET /healthz HTTP/2.0\r\n\r\n", b"400"),
    (b"GET  /healthz HTTP/1.1\r\nHost: node\r\n\r\n", b"400"),
    (b"\xff\xfe /healthz HTTP/1.1\r\nHost: node\r\n\r\n", b"405"),
    (b"POST /healthz HTTP/1.1\r\nHost: n\r\nContent-Length: 2\r\n\r\nhi", b"405"),
    (b"GET /\xff\x1b[2J HTTP/1.1\r\nHost: node\r\n\r\n", b"404"),
    (b"GET /healthz?x=1 HTTP/1.0\n\n", b"200"),
    # Lines ending in a bare LF (RFC 9112 2.2 lets a server take them), mixed with CRLF
    # ones: a header block ending "\n\r\n" was answered by no status, only closed at
    # the deadline.
    (b"GET /healthz HTTP/1.1\nHost: node\n\r\n", b"200"),
    (b"GET /healthz HTTP/1.1\r\nHost: node\r\n\n", b"200"),
    (b"GET /healthz HTTP/1.1\r\nHost: node\nAccept: */*\r\n\r\n", b"200"),
    # Absolute-form, which a server must accept (RFC 9112 3.2.2): its path is routed
    # (it was 404).
    (b"GET http://node:9743/healthz HTTP/1.1\r\nHost: node:9743\r\n\r\n", b"200"),
    (b"GET HTTP://[fd00::1]:9743/readyz?x=/metrics HTTP/1.1\r\nHost: n\r\n\r\n", b"200"),
    (b"GET http://node:9743?x=/healthz HTTP/1.1\r\nHost: n\r\n\r\n", b"404"),  # its path: /
    (b"GET ftp://node/healthz HTTP/1.1\r\nHost: node\r\n\r\n", b"404"),
    # The authority ends at "#" as at "/" (RFC 3986 3.2): what follows is a fragment, the
    # path is empty; it was taken for part of the host and the fragment routed (200).
    (b"GET http://node#/healthz HTTP/1.1\r\nHost: node\r\n\r\n", b"404"),
])
def test_malformed_and_foreign_requests_get_a_status_and_a_closed_connection(
        server: HealthServer, request_bytes: bytes, status: bytes) -> None:
    answer = _probe(server, request_bytes)
    assert answer.split(b" ", 2)[1] == status
    assert b"\r\nConnection: close\r\n" in answer
    assert _probe(server).startswith(b"HTTP/1.1 200 OK\r\n")


@pytest.mark.parametrize("lead", [b"\r\n", b"\n"])
def test_one_empty_line_before_the_request_line_is_ignored(server: HealthServer,
                                                           lead: bytes) -> None:
    # RFC 9112 2.2: a server should ignore at least one empty line received before the
    # request line (a client's previous body may end in one). It was a 400.
    assert _probe(server, lead + PROBE).startswith(b"HTTP/1.1 200 OK\r\n")
    head = _probe(server, lead + b"HEAD /readyz HTTP/1.1\r\nHost: node\r\n\r\n").partition(
        b"\r\n\r\n")
    assert head[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert head[2] == b""
    # Only one: an empty line after it is an empty request line, answered at once.
    assert _probe(server, lead + b"\r\n" + PROBE).startswith(b"HTTP/1.1 400 ")
    assert _probe(server, lead + lead).startswith(b"HTTP/1.1 400 ")


@pytest.mark.parametrize("target", [
    b"http:///healthz", b"http://:9743/healthz", b"HTTP://@/healthz", b"http://user@:1/readyz",
    b"http://[]:9743/healthz", b"https:///metrics", b"http://", b"http://?x=/healthz",
    b"http://#/healthz", b"http://user@#x/readyz"])
def test_an_absolute_target_of_no_host_is_400_whatever_the_host_header_says(
        server: HealthServer, target: bytes) -> None:
    # RFC 9110 4.2.1: a recipient must reject an http URI of an empty host as invalid;
    # the Host header does not stand in for it (RFC 9112 3.2.2: it is ignored). They
    # were routed by their path: 200.
    for host in (b"Host: node:9743\r\n", b"Host: \r\n", b""):
        request = b"GET " + target + b" HTTP/1.1\r\n" + host + b"\r\n"
        assert _probe(server, request).startswith(b"HTTP/1.1 400 "), request


@pytest.mark.parametrize("target", [
    b"http://[::1/healthz", b"http://[fd00::1/healthz", b"http://a]/healthz",
    b"http://[fd00::1]x/healthz", b"http://[a[b]/healthz", b"http://a[b/healthz",
    b"http://node:notaport/healthz", b"http://node:1:2/healthz", b"http://node:\xc2\xb2/healthz",
    b"http://[fd00::1]:x/readyz", b"http://@node/healthz", b"http://u[@node/healthz"])
def test_an_absolute_target_whose_authority_does_not_parse_is_400(
        server: HealthServer, target: bytes) -> None:
    # RFC 3986 3.2: an IP literal's "[" closed by the "]" ending the host, no bracket
    # outside one, a port of digits, an "@" only after a userinfo. They were routed by
    # their path: 200.
    request = b"GET " + target + b" HTTP/1.1\r\nHost: node:9743\r\n\r\n"
    assert _probe(server, request).startswith(b"HTTP/1.1 400 "), request


@pytest.mark.parametrize("target", [b"http://node:/healthz", b"http://[fd00::1]:/healthz",
                                    b"http://[fd00::1]/healthz"])
def test_an_absolute_target_of_an_empty_port_or_an_ip_literal_is_served(
        server: HealthServer, target: bytes) -> None:
    assert _probe(server, b"GET " + target + b" HTTP/1.1\r\nHost: node\r\n\r\n").startswith(
        b"HTTP/1.1 200 OK\r\n")


@pytest.mark.parametrize("request_bytes", [
    b"\rGET /healthz HTTP/1.1\r\nHost: node\r\n\r\n",
    b"\r" + b"\r\nGET /healthz HTTP/1.1\r\nHost: node\r\n\r\n",
    b"GET\r /healthz HTTP/1.1\r\nHost: node\r\n\r\n", b"GET /healthz HTTP/1.1\r\r\n\r\n"])
def test_a_bare_cr_in_or_before_the_request_line_is_400(server: HealthServer,
                                                         request_bytes: bytes) -> None:
    # RFC 9112 2.2: a CR not followed by LF is invalid; one before the method made a
    # method not allowed (405).
    assert _probe(server, request_bytes).startswith(b"HTTP/1.1 400 "), request_bytes
    assert _probe(server).startswith(b"HTTP/1.1 200 OK\r\n")


@pytest.mark.parametrize("host", [
    b"Host: node:9743\r\n", b"Host: other.example:80\r\n", b"Host: \r\n", b"host:[::1]\r\n"])
def test_an_absolute_target_with_a_host_is_served_whatever_the_host_header_says(
        server: HealthServer, host: bytes) -> None:
    # RFC 9112 3.2.2: the server must ignore Host's value and use the target's host; the
    # agent serves every host of the node alike.
    for target, status in ((b"http://node:9743/healthz", b"200"),
                           (b"http://[fd00::1]/readyz", b"200"),
                           (b"http://node/nowhere", b"404")):
        request = b"GET " + target + b" HTTP/1.1\r\n" + host + b"\r\n"
        assert _probe(server, request).split(b" ", 2)[1] == status, request


@pytest.mark.parametrize("request_bytes", [
    # RFC 9112 3.2: a server must answer 400 to an HTTP/1.1 request lacking Host, and to
    # any request of more than one Host field line or of an invalid Host value.
    b"GET /healthz HTTP/1.1\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nUser-Agent: kube-probe/1.31\r\n\r\n",
    b"GET http://node/healthz HTTP/1.1\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: node\r\nHost: evil\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: node\r\nhOST: node\r\n\r\n",
    b"GET /healthz HTTP/1.0\r\nHost: node\r\nHost: node\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: user@node\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: no de\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: node/healthz\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: node:x\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: \x1b[2Jnode\r\n\r\n",
    # RFC 9112 5.1: whitespace between a field's name and its colon must be a 400 (a
    # proxy in front may read "Host : evil" as no Host, or as another one).
    b"GET /healthz HTTP/1.1\r\nHost : node\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: node\r\nHost\t: evil\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: node\r\nX-A : b\r\n\r\n",
    # A field line that is no field: an obsolete fold (RFC 9112 5.2), no colon, no name,
    # a bare CR or a NUL in a value (RFC 9110 5.5).
    b"GET /healthz HTTP/1.1\r\nHost: node\r\nX-A: b\r\n c\r\n\r\n",
    # A bare CR ending the last field line, before the head's end (it was taken for that
    # line's CR: 200).
    b"GET /healthz HTTP/1.1\r\nHost: node\r\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: node\r\nX-A: b\r\r\n\r\n",
    b"GET /healthz HTTP/1.1\nHost: node\r\r\n\n",
    b"GET /healthz HTTP/1.1\r\n Host: node\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: node\r\nno colon\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: node\r\n: b\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: node\r\nX-A: b\rc\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: node\r\nX-A: b\0c\r\n\r\n",
])
def test_a_request_of_no_host_two_hosts_or_a_field_line_that_does_not_parse_is_400(
        server: HealthServer, request_bytes: bytes) -> None:
    # They were answered 200, the request line alone read.
    assert _probe(server, request_bytes).startswith(b"HTTP/1.1 400 "), request_bytes
    assert _probe(server).startswith(b"HTTP/1.1 200 OK\r\n")


@pytest.mark.parametrize("request_bytes", [
    b"GET /healthz HTTP/1.0\r\n\r\n", b"GET /healthz HTTP/1.1\r\nHost:\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nhost:node\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: \t[fd00::1]:9743 \r\nX-A:\r\n\r\n",
    b"GET /healthz HTTP/1.1\nAccept: */*\nHOST: 10.0.0.1:\n\n"])
def test_a_request_of_one_host_or_an_http_1_0_one_of_none_is_served(
        server: HealthServer, request_bytes: bytes) -> None:
    assert _probe(server, request_bytes).startswith(b"HTTP/1.1 200 OK\r\n"), request_bytes


@pytest.mark.parametrize("target", [
    b"http://user@node/healthz", b"http://u:p@node:9743/healthz", b"HTTP://user@[fd00::1]/readyz",
    b"http://%40@node/metrics"])
def test_an_absolute_target_of_a_userinfo_is_400(server: HealthServer, target: bytes) -> None:
    # RFC 9110 4.2.4: a recipient should treat a userinfo in an http URI as an error (a
    # password in a URL ends up in logs). They were routed by their path: 200.
    request = b"GET " + target + b" HTTP/1.1\r\nHost: node\r\n\r\n"
    assert _probe(server, request).startswith(b"HTTP/1.1 400 "), request


def test_a_method_not_allowed_names_the_allowed_ones(server: HealthServer) -> None:
    # RFC 9110 15.5.6: a 405 answer must carry Allow.
    for request in (b"POST /metrics HTTP/1.1\r\nHost: node\r\n\r\n",
                    b"OPTIONS * HTTP/1.1\r\nHost: node\r\n\r\n"):
        head = _probe(server, request).partition(b"\r\n\r\n")[0]
        assert head.startswith(b"HTTP/1.1 405 ")
        assert b"\r\nAllow: GET, HEAD\r\n" in head + b"\r\n"
    assert b"\r\nAllow:" not in _probe(server)


def test_head_is_answered_without_a_body(server: HealthServer) -> None:
    answer = _probe(server, b"HEAD /metrics HTTP/1.1\r\nHost: node\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nContent-Length: 16800000\r\n" in head + b"\r\n"
    assert body == b""


def test_a_failing_probe_is_500_and_the_server_goes_on() -> None:
    def broken() -> tuple[bool, str]:
        raise RuntimeError("boom")

    served = HealthServer("127.0.0.1", 0, healthy=broken, ready=lambda: (True, "ready"),
                          metrics=None).start()
    try:
        assert _probe(served).startswith(b"HTTP/1.1 500 ")
        assert _probe(served, b"GET /readyz HTTP/1.1\r\nHost: node\r\n\r\n").startswith(
            b"HTTP/1.1 200 ")
    finally:
        served.stop()


def test_stop_closes_held_connections_and_the_port() -> None:
    served = _server()
    idle = _connect(served)
    idle.sendall(b"GET /")
    served.stop()
    try:
        assert _closed_by_server(idle)
    finally:
        idle.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", served.port), timeout=5).close()


def test_ipv6_loopback_is_served() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this Python")
    try:
        served = HealthServer("::1", 0, healthy=lambda: (True, "ok"), ready=lambda: (True, "r"),
                              metrics=None).start()
    except OSError as exc:
        pytest.skip(f"no ::1 here: {exc}")
    try:
        with socket.create_connection(("::1", served.port), timeout=10) as sock:
            sock.sendall(PROBE)
            assert _answer(sock).startswith(b"HTTP/1.1 200 OK\r\n")
    finally:
        served.stop()


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="max_connections"):
        HealthServer("127.0.0.1", 0, healthy=lambda: (True, ""), ready=lambda: (True, ""),
                     metrics=None, max_connections=0)


def test_an_address_that_cannot_be_listened_on_is_named_in_the_error() -> None:
    taken = _server()
    try:
        with pytest.raises(OSError, match="Address already in use") as raised:
            HealthServer("127.0.0.1", taken.port, healthy=lambda: (True, ""),
                         ready=lambda: (True, ""), metrics=None)
        assert raised.value.filename == f"listen on 127.0.0.1:{taken.port}"
    finally:
        taken.stop()


def test_every_address_is_served_on_both_families() -> None:
    """``--listen :PORT`` (the DaemonSet's): a kubelet probing the node's IPv6 address
    (an IPv6-only or IPv6-first node) must reach the agent as one probing IPv4 does."""
    host, port = parse_listen(":0")
    served = HealthServer(host, port, healthy=lambda: (True, "ok"), ready=lambda: (True, "r"),
                          metrics=None).start()
    assert served.address == f"[::]:{served.port}"
    try:
        for address in ("127.0.0.1", "::1"):
            with socket.create_connection((address, served.port), timeout=10) as sock:
                sock.sendall(PROBE)
                assert _answer(sock).startswith(b"HTTP/1.1 200 OK\r\n"), address
    finally:
        served.stop()



def test_every_address_falls_back_to_ipv4_where_the_kernel_has_no_ipv6(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    real = socket.socket

    def no_ipv6(family: int = socket.AF_INET, *args: object) -> socket.socket:
        if family == socket.AF_INET6:
            raise OSError(97, "Address family not supported by protocol")
        return real(family, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "socket", no_ipv6)
    served = HealthServer(*parse_listen(":0"), healthy=lambda: (True, "ok"),
                          ready=lambda: (True, "r"), metrics=None)
    monkeypatch.setattr(socket, "socket", real)
    served.start()
    try:
        assert served.host == "0.0.0.0"  # noqa: S104 - what the fallback says it serves
        assert served.address == f"0.0.0.0:{served.port}"
        assert any("no IPv6 here" in r.getMessage() for r in caplog.records)
        assert _probe(served).startswith(b"HTTP/1.1 200 OK\r\n")
    finally:
        served.stop()


def _send_after_the_answer(server: HealthServer, request: bytes, more: bytes) -> bytes:
    """Send ``request``, wait for the answer to arrive (unread), send ``more`` 1 KiB at a
    time, shut the sending side, then read: what arrived until the server closed,
    ``RESET`` at its end if the connection ended in a reset rather than a close."""
    with _connect(server) as sock:
        sock.sendall(request)
        sock.recv(1, socket.MSG_PEEK)  # the server has answered: what follows is late
        try:
            for start in range(0, len(more), 1024):
                sock.sendall(more[start:start + 1024])
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            return b"RESET while sending"
        got = bytearray()
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                return bytes(got) + b"RESET"
            if not data:
                return bytes(got)
            got += data


def test_a_431_reaches_a_client_still_sending_its_headers(server: HealthServer) -> None:
    # The server closed with the rest of the headers unread or still coming, so the
    # kernel answered a reset: the client's next send failed (http.client, urllib and
    # the like send all before they read, and report that error, never the 431), and
    # a reset that overtakes the answer (a window full, Windows) loses it. The server
    # now shuts its side, reads and drops what follows, then closes.
    answer = _send_after_the_answer(
        server, b"GET /healthz HTTP/1.1\r\nX-Pad: " + b"a" * (REQUEST_LIMIT * 2),
        b"a" * (REQUEST_LIMIT * 8))
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert not answer.endswith(b"RESET")
    assert _until(lambda: server.connections == 0)


def test_a_405_reaches_a_client_still_sending_its_body(server: HealthServer) -> None:
    answer = _send_after_the_answer(
        server,
        b"POST /metrics HTTP/1.1\r\nHost: n\r\nContent-Length: 131072\r\n\r\n" + b"x" * 1024,
        b"x" * (131072 - 1024))
    assert answer.startswith(b"HTTP/1.1 405 ")
    assert not answer.endswith(b"RESET")


def test_a_client_sending_on_after_its_answer_is_closed_beyond_the_linger_limit() -> None:
    # Read and dropped after the answer, but not for ever: LINGER_LIMIT bytes, then
    # closed (a linger of a minute here: the bytes end it, not the time).
    served = _server(linger=60.0, deadline=60.0)
    try:
        with _connect(served) as sock:
            sock.sendall(b"POST /healthz HTTP/1.1\r\nHost: node\r\n\r\n")
            sock.recv(1, socket.MSG_PEEK)
            sent = 0
            try:
                while sent < 1 << 28:  # more than any socket buffers
                    sent += sock.send(b"x" * 65536)
            except (BrokenPipeError, ConnectionResetError):
                closed = True
            else:
                closed = False
        assert closed
        assert sent >= LINGER_LIMIT
        assert _until(lambda: served.connections == 0)
    finally:
        served.stop()


def test_an_answered_client_that_never_closes_is_closed_after_the_linger() -> None:
    served = _server(linger=0.2, deadline=60.0)
    try:
        with _connect(served) as sock:
            sock.sendall(PROBE)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK\r\n")
            assert _until(lambda: served.connections == 0)
    finally:
        served.stop()


def test_a_full_server_answering_the_newcomer_closes_it_rather_than_one_still_sending(
        ) -> None:
    # The newcomer is spared because its request may be on its way; answered and
    # lingering, it was spared still, and an unanswered connection (the kubelet's, its
    # request not arrived yet) was closed in its place: before the server lingered, the
    # newcomer answered at once was closed, and made room by itself.
    served = _server(max_connections=1, linger=60.0, deadline=60.0)
    # Accepted once its request is there, as a connection drained from a full backlog
    # (TCP_DEFER_ACCEPT: otherwise it may be accepted before its request comes).
    served._listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 10)
    try:
        with _connect_from(served, "127.0.0.2") as kubelet:
            kubelet.sendall(b"GET /healthz")  # the rest on its way
            assert _until(lambda: served.connections == 1)
            with _connect_from(served, "127.0.0.3") as scrape:
                scrape.sendall(PROBE)
                assert _answer(scrape).startswith(b"HTTP/1.1 200 OK\r\n")
            assert not _closed_by_server(kubelet, within=0.2)
            kubelet.sendall(b" HTTP/1.1\r\nHost: node\r\n\r\n")
            assert _answer(kubelet).startswith(b"HTTP/1.1 200 OK\r\n")
    finally:
        served.stop()


def test_the_answer_ends_with_the_servers_fin_while_it_still_reads() -> None:
    # A client reading to the end of the connection (HTTP/1.0's way, curl's for a body
    # of no length) sees it at once, not at the end of the linger.
    served = _server(linger=60.0, deadline=60.0)
    try:
        with _connect(served) as sock:
            sock.sendall(PROBE)
            assert _answer(sock).startswith(b"HTTP/1.1 200 OK\r\n")  # to its end
            assert served.connections == 1  # still reading what the client sends
    finally:
        served.stop()


def test_a_lingering_connection_reset_by_its_client_is_closed_at_once() -> None:
    served = _server(linger=60.0, deadline=60.0)
    try:
        sock = _connect(served)
        sock.sendall(PROBE)
        assert _answer(sock).startswith(b"HTTP/1.1 200 OK\r\n")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # a reset, not a FIN
        assert _until(lambda: served.connections == 0)
        assert _probe(served).startswith(b"HTTP/1.1 200 OK\r\n")
    finally:
        served.stop()


def test_a_lingering_connection_is_closed_at_its_own_end_not_at_an_older_ones_deadline(
        ) -> None:
    # The loop waits until the first end of any connection: an idle one accepted before
    # (its deadline a minute away) must not hold a lingering one past its linger.
    served = _server(linger=0.2, deadline=60.0)
    try:
        with _connect(served) as idle, _connect(served) as sock:
            idle.sendall(b"G")
            assert _until(lambda: served.connections == 2)
            sock.sendall(PROBE)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK\r\n")
            assert _until(lambda: served.connections == 1)
            assert not _closed_by_server(idle, within=0.2)
    finally:
        served.stop()


@pytest.mark.parametrize(("deadline", "linger"), [
    (DEADLINE, float("inf")), (float("inf"), LINGER),
    (DEADLINE, 3e6), (3e6, LINGER),  # 35 days: more milliseconds than epoll takes
])
def test_a_deadline_or_linger_longer_than_a_select_can_wait_still_serves(
        deadline: float, linger: float) -> None:
    # The loop passed the time to the first connection's end to select(): infinity, or
    # more than 2**31 ms, raised OverflowError there, and the server stopped for good
    # (every probe refused, the liveness probe restarting the agent) at the first
    # connection held while another came.
    served = _server(deadline=deadline, linger=linger)
    try:
        with _connect(served) as held:
            held.sendall(PROBE)  # answered, then lingering; or answered at once
            assert held.recv(65536).startswith(b"HTTP/1.1 200 OK\r\n")
            with _connect(served) as idle:
                idle.sendall(b"G")  # unanswered: held until its deadline
                assert _until(lambda: served.connections >= 1)
                assert _probe(served).startswith(b"HTTP/1.1 200 OK\r\n")
                assert _probe(served).startswith(b"HTTP/1.1 200 OK\r\n")
    finally:
        served.stop()


def test_a_full_server_closes_a_lingering_connection_before_any_unanswered_one() -> None:
    # Answered (its answer and end sent), a lingering connection loses nothing when
    # closed: it goes first, even of a peer holding fewer than another.
    served = _server(max_connections=3, linger=60.0, deadline=60.0)
    try:
        with _connect_from(served, "127.0.0.2") as one, \
                _connect_from(served, "127.0.0.2") as two, \
                _connect_from(served, "127.0.0.3") as answered:
            one.sendall(b"G")
            two.sendall(b"G")
            answered.sendall(PROBE)
            assert _answer(answered).startswith(b"HTTP/1.1 200 OK\r\n")  # then lingers
            assert _until(lambda: served.connections == 3)
            with _connect_from(served, "127.0.0.4") as probe:
                probe.sendall(PROBE)
                assert _answer(probe).startswith(b"HTTP/1.1 200 OK\r\n")
            assert not _closed_by_server(one, within=0.2)
            assert not _closed_by_server(two, within=0.2)
    finally:
        served.stop()


def test_a_full_server_of_clients_never_reading_a_large_answer_closes_one_for_a_probe(
        ) -> None:
    # A connection whose answer is still being written was never closed for one more:
    # max_connections clients asking for an answer larger than the sockets' buffers and
    # never reading it left none to close but the newcomer, and the kubelet's probe
    # (accepted a moment before its request came) was closed at once, every probe until
    # their deadline. The oldest of the peer holding the most goes, writing or not.
    big = b"# a large exposition\n" * 10_000  # 210 KB, beyond what the sockets hold
    served = HealthServer("127.0.0.1", 0, healthy=lambda: (True, "ok"),
                          ready=lambda: (True, "ready"), metrics=lambda: (big, "text/plain"),
                          deadline=60.0)  # no connection freed by its deadline
    # Small send buffers (each accepted socket inherits the listener's): a loopback
    # socket's grows to 4 MB, which a real /metrics over a real network never fills.
    served._listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    served.start()
    stalled: list[socket.socket] = []
    try:
        for _ in range(64):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.settimeout(10)
            sock.connect(("127.0.0.1", served.port))
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: node\r\n\r\n")
            stalled.append(sock)
        # Every one answered and its answer stuck in the sockets, none closed.
        assert _until(lambda: served.connections == 64 and all(
            c.answer for c in list(served._clients.values())))
        with _connect(served) as probe:  # its request not sent yet
            assert not _closed_by_server(probe, within=0.2)
            probe.sendall(PROBE)
            assert _answer(probe).startswith(b"HTTP/1.1 200 OK\r\n")
        assert _probe(served).startswith(b"HTTP/1.1 200 OK\r\n")
        assert served.connections <= 64
        assert len(_answer(stalled[0])) < len(big)  # the oldest closed, its answer cut
    finally:
        for sock in stalled:
            sock.close()
        served.stop()
