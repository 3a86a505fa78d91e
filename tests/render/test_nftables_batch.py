"""The nftables batch commands (k3snet.render.nftables_batch), byte for byte, without root.

``tests/data/render/nftables-batch.{nft,json}`` were recorded from the nftables
backend's batches as they were written before the commands moved into render/
(the same edits in the same order): the backend sends exactly these bytes, so a
change of them is a change of what nodes run. Regenerate with
``K3SNET_REGENERATE=1`` and review the diff. The kernel tests (tests/nftables)
load such batches into a namespace and read them back with ``nft -j list``.
"""

from __future__ import annotations

import doctest
import json
import os
from pathlib import Path

import pytest

import k3snet.render.nftables_batch
from k3snet.errors import ModelError
from k3snet.model import ForwardRule, MasqueradeRule, Route, SnatRule
from k3snet.render.nftables import FORWARD_CHAIN, MARKER_CHAIN, NAT_CHAIN, nft_rules
from k3snet.render.nftables_batch import NftCommands, list_command, validate_syntax

DATA = Path(__file__).resolve().parents[1] / "data" / "render"

OBJECTS = (
    MasqueradeRule("10.42.0.0/16"),
    MasqueradeRule("10.43.0.0/16", destination="192.168.0.0/16",
                   exclude=["192.168.2.0/24", "192.168.4.0/24"], out_interface="eth1",
                   random_fully=True),
    SnatRule("10.44.0.0/16", destination="198.51.100.0/24", to_address="192.0.2.1",
             random_fully=True),
    SnatRule("fd42::/56", exclude=["fd00::/8"], to_address="fd00::1"),
    MasqueradeRule("fd43::/56", out_interface="eth0"),
    ForwardRule("10.42.0.0/16", "192.168.2.0/24", in_interface="cni0", out_interface="eth1"),
    ForwardRule("fd42::/56", "::/0"),
)


def _commands(nft: NftCommands) -> list[str]:
    """Every kind of command, in the order the recording's batch had them."""
    commands = [nft.delete_table("inet"), nft.add_table("inet"),
                nft.add_base_chain("inet", NAT_CHAIN), nft.add_base_chain("inet", FORWARD_CHAIN),
                nft.add_base_chain("ip", FORWARD_CHAIN),  # a policy declared again
                nft.delete_rule("inet", NAT_CHAIN, 7), nft.delete_rule("ip6", FORWARD_CHAIN, 12)]
    for obj in OBJECTS:
        commands += nft.add_rules("inet", obj)
    split = [command for obj in OBJECTS
             for command in nft.add_rules("ip" if obj.family == 4 else "ip6", obj)]
    # The backend's fault hook: a rule handle no table reaches, before the split table's rules.
    commands += [nft.delete_rule("inet", NAT_CHAIN, 1 << 62), *split]
    commands += [nft.add_chain("inet", MARKER_CHAIN),
                 nft.delete_chain("ip", MARKER_CHAIN), nft.add_chain("ip", MARKER_CHAIN)]
    return commands


def _check(name: str, text: str) -> None:
    path = DATA / name
    if os.environ.get("K3SNET_REGENERATE") == "1":
        path.write_text(text)
    assert text == path.read_text()


def test_nft_commands_are_the_recorded_batch() -> None:
    nft = NftCommands("k3snet", "nft")
    commands = _commands(nft)
    _check("nftables-batch.nft", nft.transaction(commands))
    assert len(commands) == 29
    assert all("\n" not in command for command in commands)  # one line each: errors quote it


def test_json_commands_are_the_recorded_batch() -> None:
    nft = NftCommands("k3snet", "json")
    commands = _commands(nft)
    _check("nftables-batch.json", nft.transaction(commands))
    batch = json.loads(nft.transaction(commands))["nftables"]
    assert batch == [json.loads(command) for command in commands]
    assert [next(iter(c)) for c in batch[:3]] == ["delete", "add", "add"]
    assert batch[2] == {"add": {"chain": {"family": "inet", "table": "k3snet",
                                          "name": "postrouting", "type": "nat",
                                          "hook": "postrouting", "prio": 100,
                                          "policy": "accept"}}}
    assert batch[5] == {"delete": {"rule": {"family": "inet", "table": "k3snet",
                                            "chain": "postrouting", "handle": 7}}}


def test_both_syntaxes_say_the_same_edits() -> None:
    nft, js = _commands(NftCommands("egress", "nft")), _commands(NftCommands("egress", "json"))
    assert len(nft) == len(js)
    for text, command in zip(nft, js, strict=True):
        action, target = next(iter(json.loads(command).items()))
        kind, fields = next(iter(target.items()))
        table = fields.get("table", fields.get("name"))
        assert text.split()[:4] == [action, kind, fields["family"], table]
        if kind == "rule" and action == "add":
            assert text.endswith(f' comment "{fields["comment"]}"')
        elif kind == "rule":
            assert text.endswith(f" {fields['chain']} handle {fields['handle']}")


def test_a_command_is_spelled_for_its_family_and_table() -> None:
    nft = NftCommands("egress")
    snat = SnatRule("10.44.0.0/16", to_address="192.0.2.1")
    tag = nft_rules(snat)[0].comment
    assert nft.add_rules("inet", snat) == [
        f'add rule inet egress postrouting ip saddr 10.44.0.0/16 snat ip to 192.0.2.1 '
        f'comment "{tag}"']
    # no family in an ip table's snat; the tag is the same
    assert nft.add_rules("ip", snat) == [
        f'add rule ip egress postrouting ip saddr 10.44.0.0/16 snat to 192.0.2.1 '
        f'comment "{tag}"']
    assert [c.split()[:5] for c in nft.add_rules("ip6", ForwardRule("fd42::/56", "::/0"))] == [
        ["add", "rule", "ip6", "egress", "forward"]] * 2


@pytest.mark.parametrize("syntax", ["yaml", "", "NFT"])
def test_a_syntax_it_cannot_write_is_refused(syntax: str) -> None:
    with pytest.raises(ModelError, match=f"syntax must be 'json' or 'nft', got {syntax!r}"):
        NftCommands("k3snet", syntax)  # type: ignore[arg-type]
    with pytest.raises(ModelError):
        validate_syntax(syntax)


def test_a_table_name_nft_cannot_read_is_refused() -> None:
    with pytest.raises(ModelError, match="must be a letter followed by"):
        NftCommands('k3snet"; flush ruleset; "', "nft")


def test_only_nat_and_forward_rules_have_commands() -> None:
    with pytest.raises(ModelError, match="handles NAT and forward rules, not route"):
        NftCommands("k3snet", "json").add_rules("inet", Route("10.1.0.0/24", device="eth0"))


def test_listing_commands_pass_names_as_data() -> None:
    # A chain named like an nft keyword, or with a quote, stays a JSON string.
    command = list_command("chain", {"family": "ip", "table": "filter", "name": 'a "b'})
    assert command == ('{"nftables": [{"list": {"chain": {"family": "ip", "table": "filter", '
                       '"name": "a \\"b"}}}]}')
    assert json.loads(command)["nftables"][0]["list"]["chain"]["name"] == 'a "b'
    assert list_command("ruleset", {}) == '{"nftables": [{"list": {"ruleset": null}}]}'


def test_the_module_examples_hold() -> None:
    failed, tried = doctest.testmod(k3snet.render.nftables_batch)
    assert (failed, tried > 0) == (0, True)


@pytest.mark.parametrize("syntax", ["nft", "json"])
def test_create_spells_what_the_kernel_refuses_when_it_is_there(syntax: str) -> None:
    nft = NftCommands("k3snet", syntax)  # type: ignore[arg-type]
    made = [nft.add_table("inet", create=True), nft.add_base_chain("inet", NAT_CHAIN, create=True),
            nft.add_chain("inet", MARKER_CHAIN, create=True)]
    added = [nft.add_table("inet"), nft.add_base_chain("inet", NAT_CHAIN),
             nft.add_chain("inet", MARKER_CHAIN)]
    for create, add in zip(made, added, strict=True):
        if syntax == "json":
            assert list(json.loads(create)) == ["create"]
            assert json.loads(create)["create"] == json.loads(add)["add"]
        else:
            assert create == "create" + add.removeprefix("add")
