"""A policy rule sending the pods' packets to another table before k3snet's.

``ip rule add from 10.42.0.0/16 lookup 100`` (priority 100, before ``main``'s 32766)
with a default route in table 100: the kernel sends every forwarded packet of the pods
through table 100 (``ip route get DST from POD iif cni0`` says ``table 100``), and
k3snet's route in ``main`` carries none of them, while the warnings, naming only rules
every lookup meets, said nothing. A rule whose ``from`` holds every pod CIDR of the
family is named now (IPv4 and IPv6, both drivers); one holding no pod's address, or
any such rule while the pod CIDRs are unknown, is not.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from k3snet.backends.netlink import NetlinkBackend
from k3snet.lab.netns import run_in, temporary_netns
from k3snet.model import Route, State
from k3snet.planner import plan
from tests.netlink.links import ip
from tests.netlink.test_backend import DRIVERS, Driver

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]

_CASES = {4: ("192.168.2.0/24", "192.168.2.10", "10.42.0.5", "10.42.0.0/16", "192.168.9.1"),
          6: ("fd01:2::/64", "fd01:2::10", "fd42:42::5", "fd42:42::/56", "fd01:9::1")}


@contextmanager
def _node() -> Iterator[str]:
    """eth0 (k3snet's gateways), eth1 (the other table's) and cni0 (the pods'), veths."""
    with ExitStack() as stack:
        node = stack.enter_context(temporary_netns("podrule"))
        run_in(node, ["sysctl", "-qw", "net.ipv4.ip_forward=1",
                      "net.ipv6.conf.all.forwarding=1"])
        ip(node, "link", "set", "lo", "up")
        for link, four, six in (("eth0", "192.168.1.2/24", "fd01:1::2/64"),
                                ("eth1", "192.168.9.2/24", "fd01:9::2/64"),
                                ("cni0", "10.42.0.1/24", "fd42:42::1/64")):
            ip(node, "link", "add", link, "type", "veth", "peer", "name", f"{link}p")
            for name in (link, f"{link}p"):
                ip(node, "link", "set", name, "up")
            ip(node, "addr", "add", four, "dev", link)
            ip(node, "-6", "addr", "add", six, "dev", link, "nodad")
        yield node


@contextmanager
def _routed(tmp_path: Path, driver: Driver, family: int,
            pod_cidrs: tuple[str, ...] = ("10.42.0.0/16", "fd42:42::/56"),
            ) -> Iterator[tuple[str, NetlinkBackend, State]]:
    """:func:`_node` with k3snet's route of ``family`` applied (by eth0), a default route
    of table 100 by eth1 (no rule sends anything there yet), and the backend that wrote
    the route, told ``pod_cidrs``."""
    dst, _target, _pod, _pods, gateway = _CASES[family]
    ours = Route(dst, gateway="192.168.1.1" if family == 4 else "fd01:1::1", device="eth0")
    with _node() as node, NetlinkBackend(node, state_dir=tmp_path, driver=driver,
                                          pod_cidrs=list(pod_cidrs)) as backend:
        wanted = State(owned=[ours])
        backend.expect(wanted)
        backend.apply(plan(backend.observe(), wanted))
        ip(node, f"-{family}", "route", "add", "default", "via", gateway, "dev", "eth1",
           "table", "100")
        yield node, backend, wanted


def _table_of_pods_packets(node: str, family: int) -> str:
    _dst, target, pod, _pods, _gateway = _CASES[family]
    got = ip(node, f"-{family}", "route", "get", target, "from", pod, "iif", "cni0")
    return "table 100" if "table 100" in got else "main"


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("family", [4, 6])
def test_a_rule_sending_every_pod_s_packets_to_another_table_is_named(
        tmp_path: Path, driver: Driver, family: int) -> None:
    dst, _target, _pod, pods, _gateway = _CASES[family]
    with _routed(tmp_path, driver, family) as (node, backend, wanted):
        v = f"-{family}"
        ip(node, v, "rule", "add", "from", pods, "lookup", "100", "pref", "100")
        assert _table_of_pods_packets(node, family) == "table 100"
        backend.observe()
        [warning] = backend.warnings
        assert f"the route {dst} via" in warning
        assert "carries none of the pods' traffic" in warning
        assert (f"the policy rule at priority 100, before table main, sends every lookup of "
                f"{dst} from the pods ({pods}) reaching it to table 100") in warning
        # Unknown pod CIDRs: a rule of a source may or may not be the pods', unnamed.
        with NetlinkBackend(node, state_dir=tmp_path / "unknown", driver=driver) as unknown:
            unknown.expect(wanted)
            unknown.observe()
            assert unknown.warnings == ()
        ip(node, v, "rule", "del", "pref", "100")
        # A `from` holding no pod's address: the pods' packets stay on k3snet's route.
        other = "10.77.0.0/16" if family == 4 else "fd77::/56"
        ip(node, v, "rule", "add", "from", other, "lookup", "100", "pref", "100")
        assert _table_of_pods_packets(node, family) == "main"
        backend.observe()
        assert backend.warnings == ()


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("family", [4, 6])
def test_a_pods_rule_a_marked_packet_passes_by_is_not_said_to_take_every_pod_s_packet(
        tmp_path: Path, driver: Driver, family: int) -> None:
    # `fwmark 0/0x4000` beside the `from`: a pod's packet marked 0x4000 (kube-proxy's
    # masquerade mark) passes the rule by and leaves by k3snet's route; the kernel sends
    # no FRA_FWMARK for a mark of 0, only the mask. `fwmark 0` alone has no mask (the
    # kernel sets one for a mark other than 0): every packet meets it, named.
    _dst, target, pod, pods, _gateway = _CASES[family]
    with _routed(tmp_path, driver, family) as (node, backend, _wanted):
        v = f"-{family}"
        for mark, passed_by in (("0/0x4000", True), ("0", False)):
            ip(node, v, "rule", "add", "from", pods, "fwmark", mark, "lookup", "100",
               "pref", "100")
            assert _table_of_pods_packets(node, family) == "table 100"
            marked = ip(node, v, "route", "get", target, "from", pod, "iif", "cni0", "mark",
                        "0x4000")
            assert ("table 100" not in marked and "dev eth0" in marked) is passed_by
            backend.observe()
            assert (backend.warnings == ()) is passed_by, backend.warnings
            ip(node, v, "rule", "del", "pref", "100")


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_route_the_node_s_own_source_still_takes_is_said_to_carry_none_of_the_pods_traffic(
        tmp_path: Path, driver: Driver) -> None:
    # `from 192.168.1.2 lookup main` (the node's own address) before `lookup 100`: the
    # node's packets from that address still leave by k3snet's route; the pods' do not.
    with _routed(tmp_path, driver, 4, pod_cidrs=("10.42.0.0/16",)) as (node, backend, _):
        ip(node, "rule", "add", "from", "192.168.1.2", "lookup", "main", "pref", "100")
        ip(node, "rule", "add", "lookup", "100", "pref", "200")
        assert "dev eth0" in ip(node, "route", "get", "192.168.2.10", "from", "192.168.1.2")
        assert _table_of_pods_packets(node, 4) == "table 100"
        backend.observe()
        [warning] = backend.warnings
        assert "carries none of the pods' traffic" in warning
        assert ("the policy rule at priority 200, before table main, sends every lookup of "
                "192.168.2.0/24 from the pods (10.42.0.0/16) reaching it to table 100"
                in warning)
