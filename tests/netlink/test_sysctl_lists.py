"""Sysctls whose value is a list, as the kernel stores and shows them in a namespace:
a set of ports written in any order (``ip_local_reserved_ports`` "30000-32767,1000")
is shown sorted and merged, and every apply of one not so written failed ("the kernel
stored '1000,30000-32767'") and was rolled back, the agent's at each pass. A vector
written short keeps its other numbers, which is why the model refuses one. The kernel's
own view is read with ``ip netns exec NS cat /proc/sys/...``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from k3snet import ApplyError, converge, destroy
from k3snet.backends.netlink import NetlinkBackend
from k3snet.lab.netns import run_in, temporary_netns
from k3snet.model import State, Sysctl
from k3snet.model.sysctl import value_problem
from k3snet.planner import plan

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]


@pytest.fixture
def ns() -> Iterator[str]:
    with temporary_netns("route") as name:
        yield name


def _shown(ns: str, name: str) -> str:
    return run_in(ns, ["cat", f"/proc/sys/{name.replace('.', '/')}"]).stdout


@pytest.mark.parametrize(("name", "value"), [
    ("net.ipv4.ip_local_reserved_ports", "30000-32767,1000"),
    ("net.ipv4.ip_local_reserved_ports", "5,4,3,9,8,1000,1000-1001,"),
    ("net.ipv6.icmp.ratemask", "3-127,0-1"),
    ("net.ipv4.ip_local_port_range", "10000\t20000"),
    ("net.ipv4.tcp_rmem", "8192  131072 6291456"),
    ("net.ipv4.ping_group_range", "0 2147483647"),
    ("net.ipv4.tcp_fastopen_key", "ABCDEF01-2-3-4,0x1-2-3-4"),
])
def test_a_list_sysctl_converges_to_what_the_kernel_shows_and_is_given_back(
        ns: str, tmp_path: Path, name: str, value: str) -> None:
    before = _shown(ns, name)
    wanted = State(owned=[Sysctl(name, value)])
    with NetlinkBackend(ns, state_dir=tmp_path) as backend:
        converge(backend, wanted)
        # The model holds the value as the kernel shows it (a tab between numbers is a space).
        assert " ".join(_shown(ns, name).split()) == Sysctl(name, value).value
        assert plan(backend.observe(), wanted).changes == ()
        converge(backend, wanted)  # a second pass: nothing to do, nothing failing
        destroy(backend)
    assert _shown(ns, name) == before


@pytest.mark.parametrize(("name", "written", "shown"), [
    ("net.ipv4.ip_local_port_range", "10000", "10000 60999"),
    ("net.ipv4.ip_local_port_range", "10000 20000 30000", "10000 20000"),
    ("net.ipv4.ping_group_range", "5 1", "1 0"),
])
def test_the_kernel_shows_a_vector_the_model_refuses_otherwise_than_written(
        ns: str, name: str, written: str, shown: str) -> None:
    """Why Sysctl refuses these (tests/model/test_sysctl_lists.py): written in the
    namespace with sh, each is shown otherwise, so an apply of it could never succeed."""
    if name == "net.ipv4.ip_local_port_range":
        run_in(ns, ["sh", "-c", f"echo '32768 60999' > /proc/sys/{name.replace('.', '/')}"])
    run_in(ns, ["sh", "-c", f"echo '{written}' > /proc/sys/{name.replace('.', '/')}"])
    assert " ".join(_shown(ns, name).split()) == shown


@pytest.mark.parametrize(("name", "written", "shown"), [
    ("net.ipv4.tcp_fastopen_key", "ABCDEF01-2-3-4", "abcdef01-00000002-00000003-00000004"),
    ("net.ipv4.tcp_fastopen_key", "0x1-2-3-4,a-b-c-d",
     "00000001-00000002-00000003-00000004,0000000a-0000000b-0000000c-0000000d"),
    ("net.ipv6.conf.lo.stable_secret", "2001:DB8::1", "2001:0db8:0000:0000:0000:0000:0000:0001"),
])
def test_the_kernel_shows_a_key_in_its_own_form_which_the_model_holds(
        ns: str, name: str, written: str, shown: str) -> None:
    """A TCP Fast Open key is shown as lower-case groups of 8 digits, a stable_secret as
    an IPv6 address's 8 groups of 4: held as written, each plan wrote it again."""
    run_in(ns, ["sh", "-c", f"echo '{written}' > /proc/sys/{name.replace('.', '/')}"])
    assert _shown(ns, name).strip() == shown
    assert Sysctl(name, written).value == shown


def test_the_kernel_takes_the_allowed_congestion_control_in_the_host_namespace_alone(
        ns: str) -> None:
    """Why a spec's net.ipv4.tcp_allowed_congestion_control is a problem (with its order,
    the kernel's): it is one value for the host, read-only in any other namespace."""
    path = "/proc/sys/net/ipv4/tcp_allowed_congestion_control"
    assert run_in(ns, ["stat", "-c", "%a", path]).stdout.strip() == "444"
    allowed = _shown(ns, "net.ipv4.tcp_allowed_congestion_control").split()
    available = _shown(ns, "net.ipv4.tcp_available_congestion_control").split()
    assert allowed == [name for name in available if name in allowed]


@pytest.mark.parametrize(("name", "step"), [
    ("net.ipv4.neigh.lo.base_reachable_time_ms", 20),
    ("net.ipv6.neigh.lo.retrans_time_ms", 20),
    ("net.ipv4.icmp_ratelimit", 20),
    ("net.ipv6.icmp.ratelimit", 20),
    ("net.ipv4.neigh.lo.locktime", 2),
    ("net.ipv4.tcp_invalid_ratelimit", 20),
    ("net.ipv6.conf.lo.mldv1_unsolicited_report_interval", 20),
    ("net.ipv6.conf.lo.mldv2_unsolicited_report_interval", 20),
    ("net.ipv6.route.gc_min_interval_ms", 20),
])
def test_the_kernel_shows_a_time_in_ticks_as_written_only_at_the_multiple_the_spec_takes(
        ns: str, name: str, step: int) -> None:
    """Why value_problem refuses 1001 for these: the kernel keeps them in ticks of its
    clock, and shows the multiple of ``step`` as written whatever its HZ."""
    path = f"/proc/sys/{name.replace('.', '/')}"
    run_in(ns, ["sh", "-c", f"echo 1001 > {path}"])
    odd = int(_shown(ns, name))
    run_in(ns, ["sh", "-c", f"echo {1000 + step} > {path}"])
    assert int(_shown(ns, name)) == 1000 + step
    # Rounded to a tick of this kernel's clock (1004 ms at HZ=250, 1000 for locktime);
    # only at HZ=1000 (ms) or 100 and 1000 (locktime) is 1001 itself shown (HZ=300
    # shows every locktime 1 less, 1000 for 1001 and 1001 for 1002).
    assert odd - 1001 in range(-step, step)
    assert value_problem(name, "1001") is not None


def test_the_kernel_shows_ipv6_neigh_retrans_time_as_written_so_the_spec_takes_any(
        ns: str) -> None:
    """IPv6's retrans_time is kept in ticks as written (ndisc_ifinfo_sysctl_change:
    proc_dointvec), not IPv4's hundredths: 1001 is shown 1001, and held."""
    name = "net.ipv6.neigh.lo.retrans_time"
    run_in(ns, ["sh", "-c", f"echo 1001 > /proc/sys/{name.replace('.', '/')}"])
    assert _shown(ns, name).strip() == "1001"
    assert value_problem(name, "1001") is None


def test_a_stable_secret_none_set_is_taken_over_and_left_set_by_destroy(
        ns: str, tmp_path: Path) -> None:
    """The kernel answers EIO to the read of a stable_secret none set (a new interface's):
    every apply of one failed, "no such sysctl". Set, it cannot be unset (an empty write
    is refused, EIO): destroy gives k3snet's ownership up and leaves the secret."""
    name = "net.ipv6.conf.lo.stable_secret"
    path = f"/proc/sys/{name.replace('.', '/')}"
    assert run_in(ns, ["sh", "-c", f"cat {path} 2>/dev/null || echo unset"]).stdout.strip() \
        == "unset"
    wanted = State(owned=[Sysctl(name, "2001:db8::1")])
    with NetlinkBackend(ns, state_dir=tmp_path) as backend:
        converge(backend, wanted)
        assert _shown(ns, name).strip() == "2001:0db8:0000:0000:0000:0000:0000:0001"
        assert plan(backend.observe(), wanted).changes == ()
        destroy(backend)
        assert not backend.observe().owned
    assert _shown(ns, name).strip() == "2001:0db8:0000:0000:0000:0000:0000:0001"


@pytest.mark.parametrize(("name", "value", "shown"), [
    ("net.ipv4.icmp_ratelimit", "-20", None),
    ("net.ipv4.neigh.lo.interval_probe_time_ms", "0", None),
    ("net.ipv4.neigh.lo.locktime", "-20", "-0"),
])
def test_the_kernel_refuses_a_negative_time_in_ticks_or_shows_it_otherwise(
        ns: str, name: str, value: str, shown: str | None) -> None:
    """Why value_problem refuses them: written, each apply failed."""
    path = f"/proc/sys/{name.replace('.', '/')}"
    written = run_in(ns, ["sh", "-c", f"echo {value} > {path}"], check=False)
    if shown is None:
        assert written.returncode != 0
    else:
        assert _shown(ns, name).strip() == shown
    assert value_problem(name, value) is not None


def test_a_rollback_leaves_a_stable_secret_it_cannot_unset_as_written(
        ns: str, tmp_path: Path) -> None:
    """An apply failing after it set a stable_secret none was set: the kernel cannot unset
    one, and the rollback leaves the one written (and fails on nothing)."""
    name = "net.ipv6.conf.lo.stable_secret"
    wanted = State(owned=[Sysctl(name, "2001:db8::1"),
                          Sysctl("net.ipv6.icmp.ratelimit", "-20")])  # EINVAL, after it
    with NetlinkBackend(ns, state_dir=tmp_path) as backend, pytest.raises(ApplyError):
        converge(backend, wanted)
    assert _shown(ns, name).strip() == "2001:0db8:0000:0000:0000:0000:0000:0001"


def test_a_stable_secret_is_written_before_the_interfaces_addr_gen_mode(
        ns: str, tmp_path: Path) -> None:
    """A write of an interface's stable_secret sets its addr_gen_mode to 2 (stable
    privacy): written after the spec's addr_gen_mode (by name), the apply said it was
    done and left 2 where the spec held 3; the next plan wrote 3 again."""
    mode = "net.ipv6.conf.lo.addr_gen_mode"
    wanted = State(owned=[Sysctl(mode, "3"),
                          Sysctl("net.ipv6.conf.lo.stable_secret", "2001:db8::1")])
    with NetlinkBackend(ns, state_dir=tmp_path) as backend:
        converge(backend, wanted)
        assert _shown(ns, mode).strip() == "3"
        assert plan(backend.observe(), wanted).changes == ()


@pytest.mark.parametrize("first", [
    [Sysctl("net.ipv6.conf.lo.addr_gen_mode", "3")],
    [Sysctl("net.ipv6.conf.lo.addr_gen_mode", "3"),
     Sysctl("net.ipv6.conf.lo.stable_secret", "2001:db8::1")],
    [Sysctl("net.ipv6.conf.lo.addr_gen_mode", "3"),
     Sysctl("net.ipv6.conf.default.stable_secret", "2001:db8::1")],
], ids=["mode-alone", "secret-changed", "default-secret-to-lo"])
def test_a_stable_secret_written_leaves_an_addr_gen_mode_already_in_place_as_the_spec_holds(
        ns: str, tmp_path: Path, first: list[Sysctl]) -> None:
    """The spec's addr_gen_mode already in place (written by an earlier apply): a
    stable_secret then added or changed (an interface's, or default's, which sets every
    interface's) set it to 2, with no change of its own in the plan to write it after:
    the apply said it was done and left 2 where the spec held 3."""
    mode = "net.ipv6.conf.lo.addr_gen_mode"
    wanted = State(owned=[Sysctl(mode, "3"),
                          Sysctl("net.ipv6.conf.lo.stable_secret", "2001:db8::2")])
    with NetlinkBackend(ns, state_dir=tmp_path) as backend:
        converge(backend, State(owned=first))
        converge(backend, wanted)
        assert _shown(ns, mode).strip() == "3"
        assert plan(backend.observe(), wanted).changes == ()


@pytest.mark.parametrize("name", ["net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding",
                                  "net.ipv4.conf.lo.forwarding"])
@pytest.mark.parametrize(("value", "taken"), [
    ("2147483647", True), ("-2147483648", True), ("2147483648", False),
    ("4294967296", False), ("-2147483649", False)])
def test_an_on_off_sysctl_is_taken_within_the_kernel_s_int_as_the_kernel_takes_it(
        ns: str, name: str, value: str, taken: bool) -> None:
    path = f"/proc/sys/{name.replace('.', '/')}"
    written = run_in(ns, ["sh", "-c", f"echo {value} > {path}"], check=False)
    assert (written.returncode == 0) is taken  # the kernel's own judgement (EINVAL)
    assert (value_problem(name, value) is None) is taken
