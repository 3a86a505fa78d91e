"""The nftables renderer's output, byte for byte: the ``nft -f`` file and the JSON
rules the backend sends, for objects of every shape and both table layouts.

The expected texts under ``tests/data/render/`` were written by the renderer;
the kernel tests load the same shapes into a namespace and compare with
``nft -j list`` (tests/nftables). A change of them is a change of what nodes run:
regenerate with ``K3SNET_REGENERATE=1`` and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from k3snet.errors import ModelError
from k3snet.model import ForwardRule, MasqueradeRule, Route, SnatRule, State, Sysctl
from k3snet.render.nftables import nft_rules, nft_rules_json, render_nftables_conf

DATA = Path(__file__).resolve().parents[1] / "data" / "render"

OBJECTS = (
    MasqueradeRule("10.42.0.0/16"),
    MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24", out_interface="eth1",
                   random_fully=True),
    MasqueradeRule("10.43.0.0/16", exclude=["10.0.0.0/8", "192.168.0.0/16"]),
    SnatRule("10.44.0.0/16", destination="198.51.100.0/24", to_address="192.0.2.1",
             random_fully=True),
    SnatRule("fd42::/56", exclude=["fd00::/8"], to_address="fd00::1"),
    MasqueradeRule("fd43::/56", out_interface="eth0"),
    # neither contains the other: the one with a destination goes first
    MasqueradeRule("10.45.0.0/16", out_interface="eth0"),
    MasqueradeRule("10.45.0.0/16", destination="0.0.0.0/1"),
    ForwardRule("10.42.0.0/16", "192.168.2.0/24", in_interface="cni0", out_interface="eth1"),
    ForwardRule("fd42::/56", "::/0"),
)
STATE = State(owned=[*OBJECTS, Route("10.1.0.0/24", device="eth0"),
                     Sysctl("net.ipv4.ip_forward", 1)],
              foreign=[MasqueradeRule("10.99.0.0/16")])


def _check(name: str, text: str) -> None:
    path = DATA / name
    if os.environ.get("K3SNET_REGENERATE") == "1":
        path.write_text(text)
    assert text == path.read_text()


@pytest.mark.parametrize(("family", "table"), [("inet", "k3snet"), ("split", "egress")])
def test_nftables_conf(family: str, table: str) -> None:
    kwargs = {} if table == "k3snet" else {"table": table}
    _check(f"nftables-{family}.conf",
           render_nftables_conf(STATE, family=family, **kwargs))  # type: ignore[arg-type]


def test_nftables_conf_with_the_defaults() -> None:
    assert render_nftables_conf(STATE) == render_nftables_conf(STATE, table="k3snet",
                                                               family="inet")


def test_json_rules() -> None:
    lines = []
    for obj in OBJECTS:
        for inet in (True, False):
            lines.append(f"# {obj.describe()} (inet={inet})")
            lines += nft_rules_json(obj, inet=inet)
            # each rule is a JSON list of statements, as libnftables takes a rule's expr
            assert all(isinstance(json.loads(r), list) for r in nft_rules_json(obj, inet=inet))
        assert nft_rules_json(obj) == nft_rules_json(obj, inet=True)
    _check("nftables-rules.jsonl", "\n".join(lines) + "\n")


def test_text_rules() -> None:
    lines = []
    for obj in OBJECTS:
        for inet in (True, False):
            lines.append(f"# {obj.describe()} (inet={inet})")
            lines += [repr(tuple(r)) for r in nft_rules(obj, inet=inet)]
        assert nft_rules(obj) == nft_rules(obj, inet=True)
    _check("nftables-rules.txt", "\n".join(lines) + "\n")


@pytest.mark.parametrize("render", [nft_rules, nft_rules_json])
def test_other_objects_are_refused_by_name(render: object) -> None:
    with pytest.raises(ModelError, match="handles NAT and forward rules, not route"):
        render(Route("10.1.0.0/24", device="eth0"))  # type: ignore[operator]


@pytest.mark.parametrize("name", ["k3s net", "", "a" * 300, "k3snet;", "tä"])
def test_a_table_name_nft_cannot_read_is_refused(name: str) -> None:
    with pytest.raises(ModelError) as caught:
        render_nftables_conf(State(), table=name)
    assert str(caught.value) == (f"nftables table name {name!r} must be a letter followed by up "
                                 "to 31 letters, digits, '_' or '-'")
