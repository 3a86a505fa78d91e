"""Flannel's backend options go into net-conf.json: JSON values only."""

from __future__ import annotations

import json
import math

import pytest

from k3snet.errors import SpecError
from k3snet.spec import Spec

BASE = {"destinations": [{"cidr": "192.168.2.0/24", "device": "eth0"}]}


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, [1, math.nan],
                                   {"a": math.inf}])
def test_a_flannel_backend_option_json_cannot_write_is_refused_at_its_path(
        value: object) -> None:
    # Python writes NaN/Infinity, which flannel's JSON reader refuses; NaN never equals
    # itself, so two readings of one spec differed.
    with pytest.raises(SpecError) as raised:
        Spec.from_dict({**BASE, "cni": {"flannel": {"backend": {"options": {"VNI": value}}}}})
    assert [p.path for p in raised.value.problems] == ["cni.flannel.backend.options"]


def test_flannel_backend_options_of_json_values_are_read_and_written_back() -> None:
    options = {"VNI": 4, "Port": 8472, "GBP": True, "Name": "x", "List": [1.5, None]}
    spec = Spec.from_dict({**BASE, "cni": {"flannel": {"backend": {"options": options}}}})
    assert spec.cni.flannel is not None
    assert dict(spec.cni.flannel.backend_options) == options
    json.dumps(dict(spec.cni.flannel.backend_options), allow_nan=False)


@pytest.mark.parametrize("options", [{"ESPProposal": "\ud800"}, {"\udce9": 1},
                                     {"List": ["ok", "\udfff"]}])
def test_a_flannel_backend_option_holding_half_a_surrogate_pair_is_refused_at_its_path(
        options: dict[str, object]) -> None:
    # A JSON "\ud800" escape (json.loads of the Ansible module's arguments, Spec.from_dict)
    # is no text UTF-8 can write: apply failed with a UnicodeEncodeError after check passed.
    with pytest.raises(SpecError) as raised:
        Spec.from_dict({**BASE, "cni": {"flannel": {"backend": {"type": "ipsec",
                                                                "options": options}}}})
    assert [p.path for p in raised.value.problems] == ["cni.flannel.backend.options"]
    assert "surrogate" in raised.value.problems[0].message


@pytest.mark.parametrize(("value", "hint"), [
    ("wireguard-native", "K3s's --flannel-backend wireguard-native writes flannel's Type "
                         "\"wireguard\""),
    ("none", "K3s's --flannel-backend none runs no flannel"),
    ("VXLAN", "write it as \"vxlan\""),
])
def test_a_k3s_flannel_backend_name_as_the_type_is_refused_with_flannel_s_name(
        value: str, hint: str) -> None:
    # K3s's flag names are not all flannel's Type words: a user copying
    # --flannel-backend=wireguard-native got only the list of flannel's types.
    with pytest.raises(SpecError) as raised:
        Spec.from_dict({**BASE, "cni": {"flannel": {"backend": {"type": value}}}})
    [problem] = raised.value.problems
    assert problem.path == "cni.flannel.backend.type"
    assert "expected one of vxlan" in problem.message
    assert hint in problem.message, problem.message
