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
    assert dict(spec.cni.flannel.backend_options) == options
    json.dumps(dict(spec.cni.flannel.backend_options), allow_nan=False)
