"""Sysctls whose value is a list: a vector of numbers (``ip_local_port_range``,
``tcp_rmem``, ``ping_group_range``) and a set of numbers and ranges
(``ip_local_reserved_ports``, ``net.ipv6.icmp.ratemask``), held as the kernel shows
them or refused when it never shows them as written (tests/netlink/test_sysctl_lists.py
reads the kernel's own view)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from k3snet import ModelError, Spec, SpecError, Sysctl
from k3snet.model.sysctl import sysctl_name, sysctl_path, value_problem

_RESERVED = "net.ipv4.ip_local_reserved_ports"


@pytest.mark.parametrize(("name", "given", "held"), [
    (_RESERVED, "30000-32767,1000", "1000,30000-32767"),
    (_RESERVED, "1000,1000,1001", "1000-1001"),
    (_RESERVED, "1000-1002,1003", "1000-1003"),
    (_RESERVED, "1005-1005,1006", "1005-1006"),
    (_RESERVED, "5,4,3,9,8", "3-5,8-9"),
    (_RESERVED, "1-3,2-6", "1-6"),
    (_RESERVED, "65535,0", "0,65535"),
    (_RESERVED, "1000,", "1000"),
    (_RESERVED, "1,3,5", "1,3,5"),
    ("net.ipv6.icmp.ratemask", "3-127,0-1", "0-1,3-127"),
])
def test_a_set_of_numbers_is_held_as_the_kernel_shows_it(name: str, given: str,
                                                          held: str) -> None:
    """proc_do_large_bitmap shows the ports sorted, duplicates gone, neighbours merged
    ("30000-32767,1000" written is "1000,30000-32767"): the value was taken as written,
    and every apply failed ("the kernel stored '1000,30000-32767'") and was rolled back."""
    sysctl = Sysctl(name, given, previous=given)
    assert (sysctl.value, sysctl.previous) == (held, held)
    assert Sysctl(name, held) == sysctl
    assert value_problem(name, given) is None


def _ports(value: str) -> set[int]:
    ports: set[int] = set()
    for member in value.split(","):
        low, _, high = member.partition("-")
        ports.update(range(int(low), int(high or low) + 1))
    return ports


@given(st.lists(st.tuples(st.integers(0, 65535), st.integers(0, 40)), min_size=1, max_size=8))
def test_a_set_of_numbers_is_held_as_the_same_numbers_in_one_spelling(
        spans: list[tuple[int, int]]) -> None:
    given_value = ",".join(f"{low}-{min(low + width, 65535)}" if width else str(low)
                           for low, width in spans)
    held = Sysctl(_RESERVED, given_value).value
    assert _ports(held) == _ports(given_value)
    assert Sysctl(_RESERVED, held).value == held  # one spelling: held again as it is
    bounds = [tuple(map(int, m.partition("-")[::2])) if "-" in m else (int(m), int(m))
              for m in held.split(",")]
    # Sorted, and apart: two members that touch are one range, as the kernel shows them.
    assert all(high + 1 < low for (_, high), (low, _) in itertools.pairwise(bounds))
    assert all(low < high for low, high in bounds if f"{low}-{high}" in held.split(","))


@pytest.mark.parametrize("value", ["1000,0x20", "0x20-0x22", "1000-010"])
def test_a_number_of_a_set_the_kernel_reads_otherwise_is_a_model_error(value: str) -> None:
    """The kernel reads each number of the list as its integer handlers do: 0x20 is 32 and
    010 is 8, shown in decimal; only a value of one number was checked."""
    with pytest.raises(ModelError, match="decimal") as info:
        Sysctl(_RESERVED, value)
    assert value_problem(_RESERVED, value) == str(info.value)


@pytest.mark.parametrize(("name", "value", "kept"), [
    ("net.ipv4.ip_local_port_range", "10000", "keeps the ones not written"),
    ("net.ipv4.ip_local_port_range", "10000 20000 30000", "ignores the ones after the first 2"),
    ("net.ipv4.tcp_rmem", "4096 87380", "keeps the ones not written"),
    ("net.ipv4.tcp_wmem", "4096", "keeps the ones not written"),
    ("net.ipv4.tcp_mem", "1 2 3 4", "ignores the ones after the first 3"),
    ("net.ipv4.ping_group_range", "100", "keeps the ones not written"),
])
def test_a_vector_sysctl_given_another_count_of_numbers_is_a_model_error(
        name: str, value: str, kept: str) -> None:
    """The kernel sets as many numbers of a vector as are written and keeps the others
    (ip_local_port_range "10000" is shown "10000 60999"), or ignores the ones past its
    length: it never shows the value as written, and every apply failed."""
    with pytest.raises(ModelError, match=kept) as info:
        Sysctl(name, value)
    assert value_problem(name, value) == str(info.value)
    with pytest.raises(SpecError) as spec_info:
        Spec.from_dict({"sysctls": {name: value}})
    (problem,) = spec_info.value.problems
    assert (problem.path, problem.message) == (f"sysctls.{name}", str(info.value))


@pytest.mark.parametrize(("name", "value"), [
    ("net.ipv4.ip_local_port_range", "32768\t60999"),
    ("net.ipv4.ip_local_port_range", "10000  20000"),
    ("net.ipv4.tcp_rmem", "4096 131072 6291456"),
    ("net.ipv4.ping_group_range", "1 0"),  # the kernel's own default: no group
    ("net.ipv4.ping_group_range", "0 2147483647"),
    ("net.ipv4.ping_group_range", "7 7"),
])
def test_a_vector_as_the_kernel_shows_it_is_a_sysctl_value(name: str, value: str) -> None:
    assert Sysctl(name, value).value == " ".join(value.split())
    assert value_problem(name, value) is None


@pytest.mark.parametrize("value", ["5 1", "3 2", "2 0"])
def test_a_ping_group_range_ending_below_its_start_is_a_spec_problem_but_1_0(value: str) -> None:
    """ipv4_ping_group_range stores a range whose end is below its start as 1 0 (no group):
    "5 1" written is shown "1 0", and every apply failed."""
    problem = value_problem("net.ipv4.ping_group_range", value)
    assert problem is not None
    assert problem.endswith("write 1 0 for no group")
    with pytest.raises(SpecError, match="write 1 0 for no group"):
        Spec.from_dict({"sysctls": {"net.ipv4.ping_group_range": value}})


def test_a_ping_group_range_read_ending_below_its_start_is_a_sysctl_value() -> None:
    """In a user namespace lacking a mapping of the range's first group, the kernel shows
    it as the overflow group (``from_kgid_munged``): ``1 0``, no group, is ``65534 0``
    there. The model refused the value read (a ModelError, the sysctl read as missing:
    observe dropped it, a take-over recorded no previous value to give back)."""
    assert Sysctl("net.ipv4.ping_group_range", "65534\t0").value == "65534 0"


@pytest.mark.parametrize("name", ["net.ipv4.ip_local_port_range", "net/ipv4/tcp_rmem"])
def test_the_name_of_a_vector_sysctl_is_spelled_and_found_without_a_value(name: str) -> None:
    assert sysctl_name(name) == name.replace("/", ".")
    assert sysctl_path(name) == name.replace(".", "/")


@pytest.mark.parametrize(("name", "value"), [
    (_RESERVED, "2000-1000"), (_RESERVED, "65536"), (_RESERVED, "1000 2000"),
    (_RESERVED, "1000,,2000"), (_RESERVED, ",1000"), (_RESERVED, "1000-"),
    ("net.ipv6.icmp.ratemask", "256"),
    ("net.ipv4.ip_local_port_range", "20000 10000"),
])
def test_a_list_the_kernel_refuses_is_a_problem_of_the_spec_and_left_to_the_model(
        name: str, value: str) -> None:
    """The kernel refuses these (EINVAL, each apply failed with nothing changed), and
    `validate` passed them; the model takes them as written (a plan file of them is
    read, and the kernel says why)."""
    assert Sysctl(name, value).value == value
    problem = value_problem(name, value)
    assert problem is not None
    assert problem.endswith("the kernel refuses it"), problem
    with pytest.raises(SpecError) as spec_info:
        Spec.from_dict({"sysctls": {name: value}})
    (found,) = spec_info.value.problems
    assert (found.path, found.message) == (f"sysctls.{name}", problem)


@pytest.mark.parametrize(("name", "given", "held"), [
    ("net.ipv4.tcp_fastopen_key", "ABCDEF01-2-3-4", "abcdef01-00000002-00000003-00000004"),
    ("net.ipv4.tcp_fastopen_key", "0x1-2-3-4,a-b-c-d",
     "00000001-00000002-00000003-00000004,0000000a-0000000b-0000000c-0000000d"),
    ("net.ipv6.conf.eth0.stable_secret", "2001:DB8::1",
     "2001:0db8:0000:0000:0000:0000:0000:0001"),
    ("net.ipv6.conf.default.stable_secret", "::ffff:10.0.0.1",
     "0000:0000:0000:0000:0000:ffff:0a00:0001"),
])
def test_a_key_is_held_as_the_kernel_shows_it(name: str, given: str, held: str) -> None:
    """proc_tcp_fastopen_key shows each group lower-case in 8 digits, a stable_secret is
    shown as %pI6 writes an address (tests/netlink/test_sysctl_lists.py reads both): a
    spec writing them otherwise made every plan write them again."""
    sysctl = Sysctl(name, given, previous=given)
    assert (sysctl.value, sysctl.previous) == (held, held)
    assert Sysctl(name, held) == sysctl
    assert value_problem(name, given) is None


@pytest.mark.parametrize(("name", "value", "form"), [
    ("net.ipv4.tcp_allowed_congestion_control", "cubic reno", "in its own order"),
    ("net.ipv4.tcp_allowed_congestion_control", "reno", "in its own order"),
    ("net.ipv4.tcp_fastopen_key", "1-2-3", "4 groups of up to 8 hexadecimal digits"),
    ("net.ipv4.tcp_fastopen_key", "1-2-3-4,5-6-7-8,9-a-b-c", "one or two keys"),
    ("net.ipv4.tcp_fastopen_key", "123456789-2-3-4", "up to 8 hexadecimal digits"),
    ("net.ipv6.conf.eth0.stable_secret", "2001:db8::g", "an IPv6 address"),
    ("net.ipv6.conf.eth0.stable_secret", "fe80::1%eth0", "an IPv6 address"),
])
def test_a_value_the_kernel_shows_in_a_form_k3snet_cannot_hold_is_a_spec_problem(
        name: str, value: str, form: str) -> None:
    problem = value_problem(name, value)
    assert problem is not None
    assert form in problem, problem
    with pytest.raises(SpecError, match=name.replace(".", r"\.")):
        Spec.from_dict({"sysctls": {name: value}})
    assert Sysctl(name, value).name == name  # read from a node, the model holds it


@pytest.mark.parametrize(("name", "value", "step"), [
    ("net.ipv4.neigh.eth0.base_reachable_time_ms", "30001", 20),
    ("net.ipv6.neigh.default.retrans_time_ms", "1010", 20),
    ("net.ipv4.neigh.eth0/100.interval_probe_time_ms", "5", 20),
    ("net.ipv4.icmp_ratelimit", "1001", 20),
    ("net.ipv6.icmp.ratelimit", "3", 20),
    ("net.ipv6.route.gc_min_interval_ms", "510", 20),
    ("net.ipv4.neigh.default.locktime", "101", 2),
    ("net.ipv6.neigh.eth0.anycast_delay", "99", 2),
    ("net.ipv4.neigh.eth0.proxy_delay", "81", 2),
    ("net.ipv4.neigh.eth0.retrans_time", "1", 2),
    ("net.ipv4.tcp_invalid_ratelimit", "501", 20),
    ("net.ipv6.conf.eth0.mldv1_unsolicited_report_interval", "10001", 20),
    ("net.ipv6.conf.default.mldv2_unsolicited_report_interval", "1010", 20),
    ("net.ipv4.route.gc_min_interval_ms", "510", 20),
])
def test_a_time_the_kernel_keeps_in_clock_ticks_is_a_spec_problem_unless_shown_as_written(
        name: str, value: str, step: int) -> None:
    """The kernel keeps these in ticks of its clock (HZ) and shows them converted back:
    1001 ms is 1004 at HZ=250 (tests/netlink/test_sysctl_lists.py), and every apply of
    1001 failed. A multiple of 20 ms (2 hundredths of a second) is shown as written at HZ
    100, 250, 300 and 1000 (1010 ms is 1012 at 250)."""
    problem = value_problem(name, value)
    assert problem is not None
    assert f"write a multiple of {step}" in problem, problem
    assert value_problem(name, str(int(value) - int(value) % step + step)) is None
    assert Sysctl(name, value).value == value  # read from a node, the model holds it


def _ms_shown(ms: int, hz: int) -> int:
    """proc_dointvec_ms_jiffies: msecs_to_jiffies rounds up to a tick, jiffies_to_msecs
    rounds down (HZ=300: 10/3 ms a tick)."""
    ticks = -(-ms * hz // 1000)
    return ticks * 1000 // hz


def _hundredths_shown(hundredths: int, hz: int) -> int:
    """proc_dointvec_userhz_jiffies: clock_t_to_jiffies (x * HZ / USER_HZ, rounded down),
    jiffies_to_clock_t (ticks * TICK_NSEC / (NSEC_PER_SEC / USER_HZ), rounded down)."""
    ticks = hundredths * hz // 100
    tick_nsec = (10**9 + hz // 2) // hz
    return ticks * tick_nsec // 10**7


@given(st.integers(min_value=0, max_value=10**6))
def test_a_time_in_ticks_is_taken_exactly_when_the_kernels_conversions_show_it_as_written(
        number: int) -> None:
    """The kernel's own arithmetic at HZ 100, 250, 300 and 1000: a time in ms is taken
    when every HZ shows it as written. In hundredths of a second, HZ=300 shows every one
    1 less (a TICK_NSEC of 3333333 ns: 100 is 99), so none but 0 holds there: taken when
    HZ 100, 250 and 1000 show it as written."""
    ms = value_problem("net.ipv4.icmp_ratelimit", str(number)) is None
    assert ms == all(_ms_shown(number, hz) == number for hz in (100, 250, 300, 1000))
    hundredths = value_problem("net.ipv4.neigh.eth0.locktime", str(number)) is None
    assert hundredths == all(_hundredths_shown(number, hz) == number for hz in (100, 250, 1000))
    assert _hundredths_shown(number, 300) == max(number - 1, 0)


@pytest.mark.parametrize("name", ["net.ipv6.neigh.eth0.retrans_time",
                                  "net.ipv6.neigh.default.retrans_time"])
def test_ipv6_neigh_retrans_time_is_kept_in_ticks_as_written_so_any_number_is_taken(
        name: str) -> None:
    """ndisc_ifinfo_sysctl_change keeps IPv6's retrans_time in ticks as written
    (proc_dointvec, not IPv4's hundredths): 1001 is shown 1001 at any HZ
    (tests/netlink/test_sysctl_lists.py)."""
    assert value_problem(name, "1001") is None
    assert [s.value for s in Spec.from_dict({"sysctls": {name: "1001"}}).sysctls] == ["1001"]


@pytest.mark.parametrize(("name", "value"), [
    ("net.ipv4.icmp_ratelimit", "-20"),
    ("net.ipv6.neigh.eth0.base_reachable_time_ms", "-1000"),
    ("net.ipv4.neigh.eth0.locktime", "-2"),
    ("net.ipv4.neigh.default.interval_probe_time_ms", "0"),
])
def test_a_negative_time_in_ticks_is_a_spec_problem(name: str, value: str) -> None:
    """The kernel refuses a negative time in ms (proc_dointvec_ms_jiffies: EINVAL) and an
    interval_probe_time_ms of 0 (its minimum is 1), and shows a negative time in
    hundredths as -0 (tests/netlink/test_sysctl_lists.py): each apply failed."""
    problem = value_problem(name, value)
    assert problem is not None
    assert "never shows it as written" in problem, problem
    assert value_problem("net.ipv4.icmp_ratelimit", "0") is None
