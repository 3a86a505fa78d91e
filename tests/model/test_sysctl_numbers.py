"""A sysctl value's numbers as the kernel reads them back: one rule for the model and the spec."""

from __future__ import annotations

import pytest

from k3snet import ModelError, Plan, Spec, SpecError, Sysctl
from k3snet.model import object_from_dict
from k3snet.model.sysctl import value_problem


@pytest.mark.parametrize("value", ["0x1e", "0X1f", "010", "-0", "-0x10", "+2", "09",
                                   "4096 0x10 6291456"])
def test_a_sysctl_number_the_kernel_reads_back_otherwise_is_a_model_error(value: str) -> None:
    """The kernel reads 0x1e as hexadecimal and 010 as octal and shows 30 and 8; +2 and 09
    it refuses. A library caller's Sysctl (or a plan file's) holding one was taken, and
    the netlink backend's dry run passed it: every apply then failed and was rolled back."""
    with pytest.raises(ModelError, match="decimal") as info:
        Sysctl("net.ipv4.tcp_fin_timeout", value)
    # One rule, one message: the spec's problem and value_problem() say the same.
    assert value_problem("net.ipv4.tcp_fin_timeout", value) == str(info.value)
    with pytest.raises(SpecError) as spec_info:
        Spec.from_dict({"sysctls": {"net.ipv4.tcp_fin_timeout": value}})
    (problem,) = spec_info.value.problems
    assert (problem.path, problem.message) == ("sysctls.net.ipv4.tcp_fin_timeout",
                                               str(info.value))
    with pytest.raises(ModelError, match="decimal"):
        object_from_dict({"type": "sysctl", "name": "net.ipv4.tcp_fin_timeout",
                          "value": value})
    change = {"action": "add", "after": {"type": "sysctl", "name": "net.ipv4.tcp_fin_timeout",
                                         "value": value}}
    with pytest.raises(ModelError, match="decimal"):
        Plan.from_dict({"changes": [change]})


@pytest.mark.parametrize("value", ["30", "-1", "0", "4096 131072 6291456", "bbr", "x0x1", 30])
def test_a_decimal_number_or_a_word_is_a_sysctl_value(value: str | int) -> None:
    assert Sysctl("net.ipv4.tcp_fin_timeout", value).value == str(value)


@pytest.mark.parametrize("name", ["net.core.rps_default_mask", "net.core.flow_limit_cpu_bitmap"])
def test_a_cpu_bitmap_sysctl_takes_the_hexadecimal_the_kernel_reads_and_shows(name: str) -> None:
    """bitmap_parse reads hexadecimal digits, and the kernel shows the bitmap so ("00",
    "0003"): the kernel's own value read back is a value of the model."""
    assert Sysctl(name, "0003").value == "3"
    assert Sysctl(name, "00").value == "0"


@pytest.mark.parametrize(("given", "held"), [
    ("0003", "3"), ("00", "0"), ("F", "f"), ("00000000,00000003", "3"),
    ("1,3", "1,00000003"), ("00000001,00000003", "1,00000003"), ("0,0,ff", "ff"),
    ("0x3", "0x3"), ("1,123456789", "1,123456789")])
def test_a_cpu_bitmap_is_held_as_one_spelling_whatever_the_node_pads_it_to(
        given: str, held: str) -> None:
    """The kernel shows a CPU bitmap padded to the node's possible CPUs in 32-bit groups
    (1 written is 01 on 8 CPUs, 00000000,00000001 on 64): a spec's value was never what
    it read back, and every apply failed ("the kernel stored '01'"), the agent's each
    pass. One spelling, the leading zeros gone, matches whatever the node shows; a value
    that is no bitmap (0x3, a group over 32 bits) is left for the kernel to refuse."""
    sysctl = Sysctl("net.core.rps_default_mask", given, previous=given)
    assert (sysctl.value, sysctl.previous) == (held, held)
    assert Sysctl("net.core.rps_default_mask", held).met_by(sysctl)


def test_a_recorded_previous_value_is_the_kernel_s_and_not_judged() -> None:
    assert Sysctl("net.ipv4.tcp_fin_timeout", "30", previous="060").previous == "060"


@pytest.mark.parametrize(("name", "value"), [("net.ipv4.icmp_ratemask", "0x1818"),
                                             ("net.ipv6.icmp.ratemask", "01")])
def test_a_sysctl_named_mask_that_is_an_integer_is_judged_as_any_number(name: str,
                                                                         value: str) -> None:
    """Only the CPU bitmaps are hexadecimal to the kernel: icmp_ratemask is an integer it
    shows 0x1818 of as 6168 (proc_dointvec), the IPv6 ratemask a list whose 01 it shows as
    1; a Sysctl holding such a value never matches what the kernel reads back."""
    with pytest.raises(ModelError, match="decimal"):
        Sysctl(name, value)
