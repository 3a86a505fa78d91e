"""Any value in any field of a node object is taken or refused with k3snet's ModelError.

An interface name that is a list or a dict met the name check's cache first, whose
``TypeError: unhashable type`` escaped code catching k3snet's errors; a lone surrogate
(a ``"\\ud800"`` in JSON) was a ``UnicodeEncodeError`` when the name's length was measured.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from k3snet.errors import ModelError
from k3snet.model import (
    ForwardBlock,
    ForwardRule,
    MasqueradeRule,
    NatBlock,
    NetObject,
    Route,
    RouteBlock,
    SnatRule,
    State,
    Sysctl,
)
from k3snet.testing import strategies as ks

_MAKERS: dict[str, Callable[[Any], NetObject]] = {
    "route device": lambda v: Route("10.0.0.0/8", device=v),
    "route gateway": lambda v: Route("10.0.0.0/8", gateway=v, device="eth0"),
    "route destination": lambda v: Route(v, device="eth0"),
    "route table": lambda v: Route("10.0.0.0/8", device="eth0", table=v),
    "route metric": lambda v: Route("10.0.0.0/8", device="eth0", metric=v),
    "route scope": lambda v: Route("10.0.0.0/8", device="eth0", scope=v),
    "route protocol": lambda v: Route("10.0.0.0/8", device="eth0", protocol=v),
    "route block kind": lambda v: RouteBlock("10.0.0.0/8", what=v),
    "route block device": lambda v: RouteBlock("10.0.0.0/8", device=v),
    "forward in interface": lambda v: ForwardRule("10.42.0.0/16", "10.1.0.0/16",
                                                  in_interface=v),
    "forward out interface": lambda v: ForwardRule("10.42.0.0/16", "10.1.0.0/16",
                                                   out_interface=v),
    "masquerade out interface": lambda v: MasqueradeRule("10.42.0.0/16", out_interface=v),
    "masquerade exclude": lambda v: MasqueradeRule("10.42.0.0/16", exclude=v),
    "masquerade random_fully": lambda v: MasqueradeRule("10.42.0.0/16", random_fully=v),
    "snat address": lambda v: SnatRule("10.42.0.0/16", to_address=v),
    "sysctl name": lambda v: Sysctl(v, "1"),
    "sysctl value": lambda v: Sysctl("net.ipv4.ip_forward", v),
    "forward block rule": lambda v: ForwardBlock(4, "drop", v, "iptables filter FORWARD"),
    "forward block interface": lambda v: ForwardBlock(4, "drop", "-j DROP", "iptables",
                                                      out_interface=v),
    "nat block action": lambda v: NatBlock(4, v, "-j MASQUERADE", "iptables nat"),
}

_hostile = st.one_of(ks.hostile_values(), st.text(), st.lists(st.text(max_size=3), max_size=2),
                     st.just("\ud800"), st.just("eth\udcff"), st.just("\udcff" * 8),
                     st.binary(max_size=4))


@pytest.mark.parametrize("field", sorted(_MAKERS))
@given(value=_hostile)
def test_any_value_in_any_field_is_taken_or_refused_with_a_model_error(
        field: str, value: object) -> None:
    with contextlib.suppress(ModelError):  # anything else raised fails the test
        _MAKERS[field](value)


@pytest.mark.parametrize("value", [["eth0"], {"eth0": 1}, "\ud800", "eth\udcff",
                                   "\ud800" * 6])
def test_an_interface_name_that_is_no_text_or_holds_a_lone_surrogate_is_a_model_error(
        value: object) -> None:
    with pytest.raises(ModelError, match="interface name"):
        Route("10.0.0.0/8", device=value)  # type: ignore[arg-type]


@pytest.mark.parametrize(("device", "shown"), [("a\x1bb", "$'a\\x1bb'"), ("v\u00e9", "'v\u00e9'"),
                                              ("\udcff\udcfe", "$'\\xff\\xfe'")])
def test_a_route_blocks_device_reads_back_from_its_json_and_prints_as_a_shell_word(
        device: str, shown: str) -> None:
    # The name the model refuses, as the kernel holds it: kept, never printed raw.
    block = RouteBlock("10.9.0.0/24", what="device route, unnamed device", device=device)
    state = State(foreign=[block, RouteBlock("10.9.0.0/24", what="device route, unnamed "
                                             "device", device="other")])
    text = state.to_json()
    assert text.isascii()
    assert State.from_json(text) == state
    assert f" dev {shown} table main" in block.describe()
    assert all(line.isprintable() for line in state.render().splitlines())
