"""The seed lab: the article's broken K3s node, rebuilt in four network namespaces.

::

    pod ns                node ns                      router ns                 db ns
    eth0 10.42.0.10  ---  cni0 10.42.0.1
                          eth0 192.168.1.5   ---   eth0 192.168.1.1
                                                   eth1 192.168.2.1   ---   eth0 192.168.2.10
         fd42:42::10           fd42:42::1 / fd01:1::5    fd01:1::1 / fd01:2::1        fd01:2::10

The node has the administrator's static route to ``192.168.2.0/24`` (and
``fd01:2::/64``) via the router, but forwarding off. The router forwards, yet knows
no way back to the pod CIDR (``10.42.0.0/16``, ``fd42:42::/56``): replies to pod
addresses are lost. So the node reaches the database on port 5432 and the pod does
not, which is the seed problem. Forwarding on the node plus masquerade of the pod
CIDR leaving the node's ``eth0`` fixes it, and the database then sees the node's
address.

Every namespace has a fresh name (``k3snet-<role>-<hex>``); nothing is done in the
root namespace, and leaving the ``with`` block (even by an exception) stops the
database server and deletes every namespace.

Example::

    with SeedLab.create() as lab:
        assert not lab.tcp_probe(family=4, timeout=1.0).ok
        assert lab.node_probe(family=4).ok
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Final, Literal, Self

import attrs

from k3snet.lab.netns import (
    DEFAULT_TIMEOUT,
    Ipv6NotReadyError,
    await_ipv6_ready,
    run_in,
    temporary_netns,
)

__all__ = [
    "DB_ADDRESSES",
    "DB_PORT",
    "NODE_ADDRESSES",
    "POD_ADDRESSES",
    "POD_CIDRS",
    "Family",
    "ForwardTool",
    "LabError",
    "ProbeResult",
    "SeedLab",
]

Family = Literal[4, 6]
"""An IP family: 4 or 6."""
ForwardTool = Literal["iptables-nft", "iptables-legacy"]
"""The iptables variant a lab's FORWARD policy DROP is set with."""

DB_PORT: Final = 5432
"""The port the database listens on (PostgreSQL's, as in the article's example)."""
POD_CIDRS: Final[Mapping[Family, str]] = MappingProxyType({4: "10.42.0.0/16", 6: "fd42:42::/56"})
"""The cluster CIDR K3s gives pods by default, per family."""
POD_ADDRESSES: Final[Mapping[Family, str]] = MappingProxyType({4: "10.42.0.10", 6: "fd42:42::10"})
"""The pod's own address, per family."""
NODE_ADDRESSES: Final[Mapping[Family, str]] = MappingProxyType({4: "192.168.1.5", 6: "fd01:1::5"})
"""The node's address on its uplink (``eth0``): what the database sees after masquerade."""
DB_ADDRESSES: Final[Mapping[Family, str]] = MappingProxyType({4: "192.168.2.10", 6: "fd01:2::10"})
"""The database's address, per family."""

_ROLES: Final = ("pod", "node", "router", "db")

# Each veth pair: (role, interface) on one side, (role, interface) on the other.
_LINKS: Final = (
    (("node", "cni0"), ("pod", "eth0")),
    (("node", "eth0"), ("router", "eth0")),
    (("router", "eth1"), ("db", "eth0")),
)

# Addresses with prefix, per role and interface.
_ADDRESSES: Final = {
    "pod": {"eth0": ("10.42.0.10/24", "fd42:42::10/64")},
    "node": {
        "cni0": ("10.42.0.1/24", "fd42:42::1/64"),
        "eth0": ("192.168.1.5/24", "fd01:1::5/64"),
    },
    "router": {
        "eth0": ("192.168.1.1/24", "fd01:1::1/64"),
        "eth1": ("192.168.2.1/24", "fd01:2::1/64"),
    },
    "db": {"eth0": ("192.168.2.10/24", "fd01:2::10/64")},
}

# `ip route add` arguments per role. The node's routes are the administrator's static
# routes from the article; the router deliberately has none towards the pod CIDR.
_ROUTES: Final = {
    "pod": (
        ("-4", "default", "via", "10.42.0.1", "dev", "eth0"),
        ("-6", "default", "via", "fd42:42::1", "dev", "eth0"),
    ),
    "node": (
        ("-4", "192.168.2.0/24", "via", "192.168.1.1", "dev", "eth0", "proto", "static"),
        ("-6", "fd01:2::/64", "via", "fd01:1::1", "dev", "eth0", "proto", "static"),
    ),
    "router": (),
    "db": (
        ("-4", "default", "via", "192.168.2.1", "dev", "eth0"),
        ("-6", "default", "via", "fd01:2::1", "dev", "eth0"),
    ),
}

# Forwarding per role, written explicitly: a new namespace may inherit the root
# namespace's values (net.core.devconf_inherit_init_net), and the lab must not
# depend on the host.
_FORWARDING: Final = {"pod": 0, "node": 0, "router": 1, "db": 0}

# How long the database server may take to start listening.
_SERVER_START_TIMEOUT: Final = 10.0
# How long the kernel may take to give every lab interface its IPv6 local routes.
_IPV6_READY_TIMEOUT: Final = 10.0
# Slack on top of a probe's own timeout for starting Python inside the namespace.
_PROBE_STARTUP_SLACK: Final = 10.0
# The probe program's file: it imports the standard library alone (see _run_probe).
_PROBE_FILE: Final = str(Path(__file__).with_name("_probe.py"))
# The database's echo server, standard library only as well (see _start_server).
_ECHO_SERVER_FILE: Final = str(Path(__file__).with_name("_echo_server.py"))
# The directory that holds the k3snet package, so `python -m k3snet...` works in a
# namespace whether or not the package is installed.
_IMPORT_ROOT: Final = str(Path(__file__).resolve().parents[2])


class LabError(RuntimeError):
    """The lab could not be built or a probe misbehaved (not: a probe that failed)."""


@attrs.frozen
class ProbeResult:
    """The outcome of one TCP exchange with the lab's database.

    ``ok`` is true when the server answered; ``source_seen`` is then the address it
    saw the client as (the node's address once masquerade works). ``error`` says why
    it failed otherwise, e.g. ``"TimeoutError: timed out"``.
    """

    ok: bool
    source_seen: str | None
    error: str | None


def _check_family(family: int) -> Family:
    if family == 4:
        return 4
    if family == 6:
        return 6
    msg = f"family must be 4 or 6, got {family!r}"
    raise ValueError(msg)


def _python_env() -> dict[str, str]:
    """Our environment, with the k3snet package importable first."""
    env = dict(os.environ)
    extra = env.get("PYTHONPATH")
    env["PYTHONPATH"] = _IMPORT_ROOT if not extra else f"{_IMPORT_ROOT}{os.pathsep}{extra}"
    return env


def _setup_namespace(ns: str, role: str) -> None:
    """Loopback up, forwarding as the role wants, IPv6 usable at once."""
    run_in(ns, ["ip", "link", "set", "lo", "up"])
    forwarding = _FORWARDING[role]
    run_in(
        ns,
        [
            "sysctl",
            "-q",
            "-w",
            f"net.ipv4.ip_forward={forwarding}",
            f"net.ipv6.conf.all.forwarding={forwarding}",
            # Before any veth exists, so link-local addresses skip DAD too: neighbour
            # discovery for forwarded packets needs a usable link-local source.
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
            "net.ipv6.conf.all.disable_ipv6=0",
            "net.ipv6.conf.default.disable_ipv6=0",
        ],
    )


def _wire(names: Mapping[str, str]) -> None:
    """Create the veth pairs directly inside the namespaces (never in the root one)."""
    for (role_a, if_a), (role_b, if_b) in _LINKS:
        peer = ["peer", "name", if_b, "netns", names[role_b]]
        run_in(names[role_a], ["ip", "link", "add", if_a, "type", "veth", *peer])


def _address(names: Mapping[str, str]) -> None:
    """Put the addresses on, bring the links up, add the routes."""
    for role, interfaces in _ADDRESSES.items():
        ns = names[role]
        for interface, (v4, v6) in interfaces.items():
            run_in(ns, ["ip", "-4", "addr", "add", v4, "dev", interface])
            # nodad: usable at once, no tentative period racing the first probe.
            run_in(ns, ["ip", "-6", "addr", "add", v6, "dev", interface, "nodad"])
            run_in(ns, ["ip", "link", "set", interface, "up"])
    for role, routes in _ROUTES.items():
        for route in routes:
            family, *rest = route
            run_in(names[role], ["ip", family, "route", "add", *rest])


def _await_ipv6_routes(names: Mapping[str, str]) -> None:
    """Wait until every lab interface has its ``multicast ff00::/8`` and link-local routes
    (:func:`~k3snet.lab.netns.await_ipv6_ready`): until then a neighbour solicitation
    arriving on the interface is dropped and the first IPv6 connection waits out the
    one-second retransmit."""
    deadline = time.monotonic() + _IPV6_READY_TIMEOUT
    try:
        for role in _ROLES:
            await_ipv6_ready(names[role], _ADDRESSES[role],
                             timeout=max(deadline - time.monotonic(), 0.0))
    except Ipv6NotReadyError as error:
        raise LabError(str(error)) from error


def _start_server(db: str) -> subprocess.Popen[str]:
    """Start the echo server in ``db`` and wait until it listens."""
    # Its file, isolated and without site packages, as the probe: through `-m` it imported
    # k3snet and the lab first, ~0.1 s of CPU (more on a loaded machine) every lab.
    argv = ["ip", "netns", "exec", db, sys.executable, "-I", "-S", _ECHO_SERVER_FILE]
    server = subprocess.Popen(
        [*argv, "--port", str(DB_PORT)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_python_env(),
        cwd=_IMPORT_ROOT,
    )
    try:
        _await_ready(server)
    except BaseException:
        _stop_server(server)
        raise
    return server


def _await_ready(server: subprocess.Popen[str]) -> None:
    # Imported here, not with this module: `python -m k3snet.lab._echo_server` imports
    # k3snet.lab (and so this module) first, and runpy warns of a module imported before
    # it runs as __main__, an error under PYTHONWARNINGS=error (which the server inherits).
    from k3snet.lab._echo_server import READY_LINE  # noqa: PLC0415

    assert server.stdout is not None
    deadline = time.monotonic() + _SERVER_START_TIMEOUT
    while (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([server.stdout], [], [], left)
        if not readable:
            break
        line = server.stdout.readline()
        if line.strip() == READY_LINE:
            return
        if not line:  # EOF: the server died.
            break
    server.kill()
    _, stderr = server.communicate(timeout=DEFAULT_TIMEOUT)
    msg = f"the lab's database server did not start listening: {stderr.strip()!r}"
    raise LabError(msg)


def _stop_server(server: subprocess.Popen[str]) -> None:
    """Terminate the server (kill it if it lingers) and reap it."""
    if server.poll() is None:
        server.terminate()
    try:
        server.communicate(timeout=2.0)
    except subprocess.TimeoutExpired:
        server.kill()
        server.communicate(timeout=DEFAULT_TIMEOUT)


class SeedLab:
    """The seed problem in four network namespaces; see the module docstring.

    Build it with :meth:`create` and use it as a context manager, which tears it
    down on exit. The namespace names are :attr:`pod`, :attr:`node`, :attr:`router`
    and :attr:`db`; drive them with :func:`k3snet.lab.netns.run_in`.
    """

    def __init__(self, names: Mapping[str, str], server: subprocess.Popen[str], stack: ExitStack):
        """Adopt built namespaces; use :meth:`create` rather than this."""
        self._names = dict(names)
        self._server = server
        self._stack = stack
        self._state_dir: Path | None = None
        # A lab dropped without close() (or at interpreter exit) still cleans up.
        self._finalizer = weakref.finalize(self, stack.close)

    @classmethod
    def create(cls) -> Self:
        """Build the whole lab and return it, running; on any failure, undo it all."""
        with ExitStack() as stack:
            # Files k3snet keeps for the node (the netlink backend's sysctl state)
            # live and die with the lab, like its namespaces.
            state_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="k3snet-lab-"))
            names = {role: stack.enter_context(temporary_netns(role)) for role in _ROLES}
            for role, ns in names.items():
                _setup_namespace(ns, role)
            _wire(names)
            _address(names)
            server = _start_server(names["db"])
            # Registered last, so it runs first: the server must go before its namespace.
            stack.callback(_stop_server, server)
            _await_ipv6_routes(names)
            lab = cls(names, server, stack.pop_all())
            lab._state_dir = Path(state_dir)
            return lab
        raise AssertionError("unreachable")  # pragma: no cover - ExitStack never swallows

    @property
    def state_dir(self) -> Path:
        """A directory for k3snet's per-node files (``NetlinkBackend(state_dir=...)``),
        deleted with the lab."""
        if self._state_dir is None:
            raise LabError("this lab was not built by SeedLab.create()")
        return self._state_dir

    # -- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        """Stop the server and delete every namespace. Safe to call more than once."""
        self._finalizer()

    @property
    def closed(self) -> bool:
        """Whether the lab has been torn down."""
        return not self._finalizer.alive

    def __enter__(self) -> Self:
        """Return the (already built) lab."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Tear the lab down, whatever happened in the block."""
        self.close()

    # -- names -------------------------------------------------------------------------

    @property
    def pod(self) -> str:
        """The pod's namespace: ``eth0`` on the cluster network."""
        return self._names["pod"]

    @property
    def node(self) -> str:
        """The K3s node's namespace: ``cni0`` towards the pod, ``eth0`` uplink."""
        return self._names["node"]

    @property
    def router(self) -> str:
        """The router's namespace between ``192.168.1.0/24`` and ``192.168.2.0/24``."""
        return self._names["router"]

    @property
    def db(self) -> str:
        """The database host's namespace, where the echo server listens."""
        return self._names["db"]

    @property
    def namespaces(self) -> tuple[str, ...]:
        """Every namespace of the lab: pod, node, router, db."""
        return tuple(self._names[role] for role in _ROLES)

    @property
    def server_pid(self) -> int:
        """The process id of the database's echo server."""
        return self._server.pid

    # -- probes ------------------------------------------------------------------------

    def tcp_probe(self, family: int = 4, timeout: float = 2.0) -> ProbeResult:
        """Connect from the pod to the database on :data:`DB_PORT`; bounded by ``timeout``."""
        return self._tcp_probe_from(self.pod, family, timeout)

    def node_probe(self, family: int = 4, timeout: float = 2.0) -> ProbeResult:
        """Connect from the node itself to the database (this works from the start)."""
        return self._tcp_probe_from(self.node, family, timeout)

    def ping(self, family: int = 4, count: int = 2, timeout: int = 2) -> bool:
        """Send ``count`` ICMP echo requests from the pod to the database.

        True when at least one reply came back (as ping(8) exits 0); each request waits
        at most ``timeout`` seconds.
        """
        if count < 1:
            msg = f"count must be at least 1, got {count!r}"
            raise ValueError(msg)
        host = DB_ADDRESSES[_check_family(family)]
        args = ["ping", "--host", host, "--count", str(count), "--timeout", str(timeout)]
        answer = self._run_probe(self.pod, args, count * timeout)
        return answer.get("ok") is True

    def _tcp_probe_from(self, ns: str, family: int, timeout: float) -> ProbeResult:
        host = DB_ADDRESSES[_check_family(family)]
        args = ["tcp", "--host", host, "--port", str(DB_PORT), "--timeout", str(timeout)]
        answer = self._run_probe(ns, args, timeout)
        seen, error = answer.get("seen"), answer.get("error")
        return ProbeResult(
            ok=answer.get("ok") is True,
            source_seen=seen if isinstance(seen, str) else None,
            error=error if isinstance(error, str) else None,
        )

    def _run_probe(self, ns: str, args: list[str], budget: float) -> dict[str, object]:
        """Run the probe module in ``ns`` and return its JSON answer."""
        # Standard library only: its file, isolated and without site packages. Through
        # `-m` each probe imported k3snet and the lab first (attrs, the seed lab), several
        # times the exchange's own CPU time (as the doctor's kernel tests found).
        argv = [sys.executable, "-I", "-S", _PROBE_FILE, *args]
        try:
            result = run_in(
                ns, argv, check=False, timeout=budget + _PROBE_STARTUP_SLACK, env=_python_env()
            )
        except subprocess.TimeoutExpired as exc:
            msg = f"the probe in {ns} overran its time budget"
            raise LabError(msg) from exc
        try:
            answer = json.loads(result.stdout)
        except json.JSONDecodeError as exc:
            msg = f"the probe in {ns} gave no answer (exit {result.returncode}): {result.stderr!r}"
            raise LabError(msg) from exc
        if not isinstance(answer, dict):
            msg = f"the probe in {ns} answered {answer!r}"
            raise LabError(msg)
        return answer

    # -- node state --------------------------------------------------------------------

    def block_forward(self, tool: ForwardTool = "iptables-nft") -> None:
        """Set the node's FORWARD policy to DROP (IPv4 and IPv6), as Docker or firewalld do.

        ``tool`` picks the iptables flavour, so both the nf_tables and the legacy
        x_tables paths of a real node can be reproduced.
        """
        commands = {
            "iptables-nft": ("iptables-nft", "ip6tables-nft"),
            "iptables-legacy": ("iptables-legacy", "ip6tables-legacy"),
        }
        if tool not in commands:
            msg = f"tool must be one of {sorted(commands)}, got {tool!r}"
            raise ValueError(msg)
        for command in commands[tool]:
            run_in(self.node, [command, "-w", "-P", "FORWARD", "DROP"])

    @property
    def node_interfaces(self) -> dict[str, tuple[str, ...]]:
        """The node's interfaces and their global addresses with prefix, as the kernel says.

        For example ``{"cni0": ("10.42.0.1/24", "fd42:42::1/64"), "eth0": (...)}``;
        loopback and link-local addresses are left out.
        """
        links = json.loads(run_in(self.node, ["ip", "-j", "addr", "show"]).stdout)
        interfaces: dict[str, tuple[str, ...]] = {}
        for link in links:
            if "LOOPBACK" in link.get("flags", ()):
                continue
            interfaces[link["ifname"]] = tuple(
                f"{info['local']}/{info['prefixlen']}"
                for info in link.get("addr_info", ())
                if info.get("scope") == "global"
            )
        return interfaces
