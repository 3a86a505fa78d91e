"""Facts about a node (interfaces, addresses, routed prefixes), read live or from ``ip -j``.

Compile uses them to check a spec against the node it runs on: devices exist,
gateways are reachable. A live read takes the interfaces from ``ip -j addr show``
and the routed prefixes from a netlink route dump (the stdlib's sockets, not
pyroute2); :func:`facts_from_ip_json` gives the same facts from captured ``ip -j``
listings. :class:`FactsWatch` tells when they may have changed (netlink notifications).
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import socket
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from k3snet.backends.netns import NetnsRunner, validate_netns
from k3snet.errors import BackendError
from k3snet.model import is_interface_name
from k3snet.model.cidr import Network, parse_network
from k3snet.model.route import K3SNET_ROUTE_PROTOCOL, protocol_name
from k3snet.spec import NodeFacts

if TYPE_CHECKING:
    from k3snet.backends.netlink.socket_driver import SocketDriver

__all__ = ["FactsWatch", "facts_from_ip_json", "gather_facts"]

T = TypeVar("T")


def _argv(args: list[str], netns: str | None) -> list[str]:
    argv = ["ip", "-j"]
    if netns is not None:
        argv += ["-n", validate_netns(netns)]
    return argv + args


def _ip_json_all(commands: list[list[str]], netns: str | None,
                 meanwhile: Callable[[], T]) -> tuple[list[Any], T]:
    """The JSON of several ``ip -j`` listings, the processes run side by side, and what
    ``meanwhile`` returns, called while they run.

    A cold ``k3snet apply`` waited for three in a row (each a fork, exec and
    netlink dump); the answers and the errors are those of running them one by one.
    """
    argvs = [_argv(args, netns) for args in commands]
    started: list[subprocess.Popen[str]] = []
    try:
        for argv in argvs:
            # An interface name is bytes to the kernel: one that is not UTF-8 reads as
            # U+FFFD and is then skipped as no interface name (no spec can name it).
            started.append(subprocess.Popen(argv, stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, text=True, errors="replace"))
        other = meanwhile()
        outputs = [proc.communicate(timeout=30) for proc in started]
    except FileNotFoundError as exc:
        raise BackendError("iproute2's `ip` is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise BackendError(f"`{' '.join(map(str, exc.cmd))}` timed out") from exc
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    results = []
    for argv, proc, (out, err) in zip(argvs, started, outputs, strict=True):
        if proc.returncode != 0:
            raise BackendError(f"`{' '.join(argv)}` failed: {err.strip()}")
        # strict=False: `ip -j` prints a control character of a name (ESC: the kernel
        # refuses only "/", ":" and white space) as it is, inside a JSON string; such
        # a name is then left out as no interface name.
        results.append(json.loads(out or "[]", strict=False))
    return results, other


class FactsWatch:
    """Whether the node facts of a namespace may have changed since the last look.

    A netlink socket in the namespace receives its route, link, address and
    nexthop-object notifications, what the facts are made of; :meth:`token` moves when any came
    (or were too many to keep: the socket overran) since the last call. Read it
    *before* the facts: a change while they are read moves it for the next call,
    so facts kept while the token stands still are never older than the node.
    The agent uses one when no netlink backend keeps such a token already::

        watch = FactsWatch("node1")       # a namespace's name, or None: this one
        token = watch.token()
        facts = gather_facts("node1")
        ...
        if watch.token() != token:        # something moved: read them again
            facts = gather_facts("node1")
        watch.close()
    """

    _BUFFER = 64 * 1024
    """Enough for a few hundred notifications; beyond, the overrun moves the token too."""

    def __init__(self, netns: str | None = None, *, proc_sys: str | Path = "/proc/sys") -> None:
        from k3snet.backends.netlink.socket_driver import open_monitor  # noqa: PLC0415
        from k3snet.backends.netlink.sysctls import open_unannounced_switch  # noqa: PLC0415

        runner = NetnsRunner(netns)
        try:
            # The socket and the switch's file stay in the namespace they were opened in;
            # the thread is not needed.
            self._socket = runner.call(lambda: open_monitor(self._BUFFER))
            try:
                self._silent_fd = runner.call(lambda: open_unannounced_switch(Path(proc_sys)))
            except BaseException:
                self._socket.close()
                raise
        finally:
            runner.close()
        self._buffer = bytearray(self._BUFFER)
        self._version = 0

    def token(self) -> int:
        """A number that moves with any route, link or address change since the last call,
        and at every call while ``net.ipv6.route.skip_notify_on_dev_down`` is 1 (under
        ``proc_sys``): the kernel may then delete IPv6 routes with no notification at all
        (``disable_ipv6`` turned on for an interface without an IPv6 address), so nothing
        tells whether the facts still hold."""
        from k3snet.backends.netlink.sysctls import deletes_unannounced  # noqa: PLC0415

        moved = deletes_unannounced(self._silent_fd)
        while True:
            try:
                self._socket.recv_into(self._buffer, 0, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise BackendError(f"read the node's notifications: {exc}") from exc
            moved = True  # a notification, or the news that some were lost
        if moved:
            self._version += 1
        return self._version

    def close(self) -> None:
        """Close the socket and the switch's file (idempotent)."""
        self._socket.close()
        fd, self._silent_fd = self._silent_fd, None
        if fd is not None:
            os.close(fd)


def gather_facts(netns: str | None = None, *, hostname: str | None = None,
                 protocol: int = K3SNET_ROUTE_PROTOCOL, backend: object = None) -> NodeFacts:
    """Interfaces with their global addresses, and the prefixes the node routes (read live).

    The same facts as :func:`facts_from_ip_json` of ``ip -j addr show`` and ``ip -j
    route show table all`` (both families), but the routes come from a netlink dump
    read here: 10 000 routes printed as JSON by two ``ip`` processes and parsed
    again cost most of an agent pass after each route change.

    ``protocol``: the route protocol k3snet's routes are marked with, when the netlink
    backend was given another than 211 (:func:`k3snet.converge.route_protocol`); its
    routes are left out as 211's are (see :func:`facts_from_ip_json`).

    ``backend``: the backend (or group) about to observe that namespace; a member
    with ``route_dumps`` acting there (the netlink backend) reads the routes, and
    its next observe takes that dump instead of making its own while nothing changed.
    """
    read = _route_reader(backend, netns)
    driver = None
    if read is None:
        driver = _open_driver(netns)  # a missing namespace fails here, before any process
        read = driver.route_dumps
    try:
        [addresses], prefixes = _ip_json_all(
            [["addr", "show"]], netns, lambda: _prefixes_of(read, netns, protocol))
    finally:
        if driver is not None:
            driver.close()
    facts = facts_from_ip_json(addresses, [], hostname=hostname or netns)
    return attrs.evolve(facts, routes=prefixes)


def _count_nothing() -> None:
    """The socket driver counts its requests for the backend; the facts do not."""


def _where(netns: str | None) -> str:
    return "this namespace" if netns is None else f"namespace {netns!r}"


def _route_reader(backend: object, netns: str | None
                  ) -> Callable[[], list[list[bytes]] | None] | None:
    """The ``route_dumps`` of ``backend`` (or of a member of its group) acting in ``netns``."""
    if backend is None:
        return None
    members = getattr(backend, "members", None)
    candidates = [m.backend for m in members] if members is not None else [backend]
    for candidate in candidates:
        read = getattr(candidate, "route_dumps", None)
        if callable(read) and getattr(candidate, "netns", False) == netns:
            return read  # type: ignore[no-any-return]
    return None


def _prefixes_of(read: Callable[..., list[list[bytes]] | None], netns: str | None,
                 protocol: int) -> list[Network]:
    """The prefixes ``ip -j route show table all`` lists as :func:`facts_from_ip_json`
    keeps them, IPv4 then IPv6, from ``read()``: each family's netlink dump of every
    table (a socket driver's, or a netlink backend's ``route_dumps``)."""
    from k3snet.backends.netlink.codec import NetlinkError  # noqa: PLC0415

    try:
        dumps = read()
    except (OSError, NetlinkError) as exc:
        raise BackendError(f"read the routes of {_where(netns)}: {exc}") from exc
    if dumps is None:  # a backend whose driver cannot: a dump of the facts' own
        driver = _open_driver(netns)
        try:
            return _prefixes_of(driver.route_dumps, netns, protocol)
        finally:
            driver.close()
    return _prefixes((msg for dump in dumps for msg in dump),
                     frozenset({K3SNET_ROUTE_PROTOCOL, protocol}))


def _open_driver(netns: str | None) -> SocketDriver:
    """A socket driver of the facts' own in ``netns`` (the caller closes it)."""
    from k3snet.backends.netlink.socket_driver import open_socket_driver  # noqa: PLC0415

    runner = NetnsRunner(netns)
    try:
        return open_socket_driver(runner, _count_nothing)
    except OSError as exc:
        raise BackendError(f"read the routes of {_where(netns)}: {exc}") from exc
    finally:
        runner.close()


_last_prefixes: dict[bytes, Network | None] = {}
"""The last dump's route messages (without their netlink header) and the prefix each gave."""


def _prefixes(messages: Iterable[bytes], own: frozenset[int]) -> list[Network]:
    """The prefix of each unicast route message, but k3snet's (protocol in ``own``).

    A message repeated byte for byte by the next dump is the prefix it gave before
    (:func:`~k3snet.backends.netlink.codec.route_prefix` is pure): building 10 000
    networks again after each change of one route cost ~20 ms of a ~30 ms read
    (docs/performance.md, "Node facts from a netlink dump"). Only the last dump's
    are kept, whatever the namespace: a read of another namespace costs a full build,
    never a wrong answer.
    """
    global _last_prefixes  # noqa: PLW0603 - one small cache, replaced by each read
    from k3snet.backends.netlink.codec import HDR, RTMSG, route_prefix  # noqa: PLC0415

    known = _last_prefixes
    seen: dict[bytes, Network | None] = {}
    found: list[Network] = []
    at_protocol = HDR + 5  # rtmsg: family, dst_len, src_len, tos, table, protocol, ...
    for msg in messages:
        if len(msg) < HDR + RTMSG.size or msg[at_protocol] in own:
            continue
        body = msg[HDR:]
        prefix = known[body] if body in known else route_prefix(msg)
        seen[body] = prefix
        if prefix is not None:
            found.append(prefix)
    _last_prefixes = seen
    return found


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _interface(entry: dict[str, Any]) -> str | None:
    """``local/prefixlen`` of one ``addr_info`` entry; ``None`` when it is not one."""
    text = f"{entry.get('local')}/{entry.get('prefixlen')}"
    try:
        ipaddress.ip_interface(text)
    except ValueError:
        return None
    return text


# k3snet's own routes are not facts about the node: they are what compile makes. Left
# in, a gateway could count as reachable only through a route of the same spec (the
# answer would change after the first apply), and a cold apply parsed its 10 000
# routes for nothing. `ip` prints the protocol by name when rt_protos has one. Those of
# 211 are left out whatever protocol the netlink backend is given: routes an earlier
# configuration of k3snet made.
def _own_protocols(protocol: int) -> frozenset[str]:
    numbers = {K3SNET_ROUTE_PROTOCOL, protocol}
    return frozenset({str(n) for n in numbers} | {str(protocol_name(n)) for n in numbers})


def facts_from_ip_json(addresses: Any, routes: Any, *, hostname: str | None = None,
                       protocol: int = K3SNET_ROUTE_PROTOCOL) -> NodeFacts:
    """:class:`NodeFacts` from captured ``ip -j addr show`` and ``ip -j route show table all``.

    For central planning of many nodes: capture on each node (IPv4 and IPv6 route
    listings concatenated, or one each) and check every node's spec where the plan
    is made. Malformed entries are skipped, and so are k3snet's own routes (protocol
    ``k3snet``, 211, and ``protocol`` when the netlink backend marks them with another:
    what a spec makes is no fact about the node); a listing that is not a list is an
    error.

    >>> facts = facts_from_ip_json(
    ...     [{"ifname": "eth0", "addr_info": [{"local": "192.168.1.5", "prefixlen": 24,
    ...                                        "scope": "global"}]}],
    ...     [{"dst": "192.168.2.0/24", "gateway": "192.168.1.1", "dev": "eth0"}])
    >>> facts.interfaces["eth0"]
    (IPv4Interface('192.168.1.5/24'),)
    """
    if not isinstance(addresses, list) or not isinstance(routes, list):
        raise BackendError("facts: expected the JSON lists of `ip -j addr show` and "
                           "`ip -j route show table all`")
    interfaces: dict[str, list[str]] = {}
    for link in addresses:
        name = link.get("ifname") if isinstance(link, dict) else None
        if not isinstance(name, str) or name == "lo" or not is_interface_name(name):
            continue
        interfaces[name] = [
            address for a in _list(link.get("addr_info"))
            if isinstance(a, dict) and a.get("scope") == "global"
            and (address := _interface(a)) is not None
        ]
    own = _own_protocols(protocol)
    prefixes = []
    for route in routes:
        if not isinstance(route, dict):
            continue
        dst = route.get("dst")
        if route.get("type", "unicast") != "unicast" or not isinstance(dst, str) or \
                dst == "default" or str(route.get("protocol")) in own:
            continue
        try:
            prefixes.append(parse_network(dst, strict=False))
        except ValueError:  # ModelError too: a zone id ("fd00::%x/64") is refused
            continue
    return NodeFacts(interfaces=interfaces, routes=prefixes, hostname=hostname)
