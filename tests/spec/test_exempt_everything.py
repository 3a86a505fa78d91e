"""Exemptions that cover every destination: no NAT rule, never a rule that cannot match.

ip-masq-agent reads ``nonMasqueradeCIDRs: [0.0.0.0/0]`` as "masquerade nothing".
k3snet used to write ``ip saddr 10.42.0.0/16 ip daddr != 0.0.0.0/0 masquerade``: a
rule that never matches. Mode ``all`` now makes no rule for that family, and the
model refuses the rule, as it refuses exclusions covering an explicit destination.
"""

from __future__ import annotations

from typing import Any

import pytest

from k3snet import MasqueradeRule, SnatRule
from k3snet.errors import ModelError
from k3snet.spec import compile as compile_spec
from k3snet.spec.load import spec_from_document


def _document(exempt: list[str], **masquerade: Any) -> dict[str, Any]:
    return {
        "apiVersion": "k3snet.io/v1alpha1", "kind": "EgressSpec",
        "cluster": {"podCIDRs": ["10.42.0.0/16", "fd42:42::/56"],
                    "serviceCIDRs": ["10.43.0.0/16", "fd43:43::/112"]},
        "destinations": [],
        "masquerade": {"mode": "all", "nonMasqueradeCIDRs": exempt, **masquerade},
    }


def _nat(document: dict[str, Any]) -> list[Any]:
    state = compile_spec(spec_from_document(document))
    return sorted((o for o in state.owned if o.kind == "nat"), key=lambda o: o.family)


@pytest.mark.parametrize("exempt", [["0.0.0.0/0"], ["0.0.0.0/1", "128.0.0.0/1"]],
                         ids=["slash-0", "two-halves"])
def test_exempting_every_ipv4_destination_makes_no_ipv4_rule(exempt: list[str]) -> None:
    rules = _nat(_document(exempt))
    assert [r.family for r in rules] == [6]


def test_exempting_every_ipv6_destination_makes_no_ipv6_rule() -> None:
    rules = _nat(_document(["::/0"]))
    assert [r.family for r in rules] == [4]


def test_exempting_almost_everything_still_makes_the_rule() -> None:
    rules = _nat(_document(["0.0.0.0/1", "128.0.0.0/2"]))
    assert [r.family for r in rules] == [4, 6]


def test_the_same_holds_with_snat_addresses() -> None:
    rules = _nat(_document(["0.0.0.0/0"], snatAddresses=["192.168.1.5", "fd01:1::5"]))
    assert [type(r) for r in rules] == [SnatRule]


@pytest.mark.parametrize("exclude", [["0.0.0.0/0"], ["0.0.0.0/1", "128.0.0.0/1"]])
def test_the_model_refuses_a_rule_whose_exclusions_cover_every_destination(
        exclude: list[str]) -> None:
    with pytest.raises(ModelError, match="exclusions cover every destination"):
        MasqueradeRule("10.42.0.0/16", exclude=exclude)
    with pytest.raises(ModelError, match="exclusions cover every destination"):
        SnatRule("10.42.0.0/16", to_address="192.168.1.5", exclude=exclude)
    MasqueradeRule("10.42.0.0/16", exclude=["0.0.0.0/1"])  # half is fine
