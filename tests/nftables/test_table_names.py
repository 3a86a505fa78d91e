"""Names nft cannot take: a table named after a word of nft's language, an interface in JSON.

``add table inet counter`` is a syntax error in nft's language, quoted or not, so a
table so named cannot be written by ``nft -f`` nor by the backend's nft-syntax
batches: :data:`~k3snet.render.nftables.NFT_WORDS` lists the words of nft(8)
refused there, and a kernel test holds that list to what the installed nft parses
(``tests/data/nftables/nft8-words.txt``: every word of the nft(8) man page of
nftables 1.0.6). Only the JSON syntax can name such a table.

The other way round, libnftables' JSON parser reads a few interface names as a
protocol (``oifname`` ``"sctp"``), which nft's language takes quoted:
:data:`~k3snet.render.nftables.NFT_JSON_IFNAME_WORDS`, held by a kernel test to the
names among ``tests/data/nftables/ifname-words.txt`` (the words of nft(8) and of
``/etc/protocols`` that are interface names) the installed nft refuses.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from k3snet.backends.nftables import NftablesBackend
from k3snet.errors import ModelError
from k3snet.lab.netns import run_in
from k3snet.model import ForwardRule, MasqueradeRule, State
from k3snet.planner import plan
from k3snet.render.nftables import (
    FOREIGN_TABLES,
    NFT_JSON_IFNAME_WORDS,
    NFT_WORDS,
    nft_rules,
    nft_rules_json,
    render_nftables_conf,
    validate_nft_name,
    validate_table_name,
)
from k3snet.render.nftables_batch import NftCommands

DATA = Path(__file__).resolve().parents[1] / "data" / "nftables"
WORDS = (DATA / "nft8-words.txt").read_text().split()
IFNAME_WORDS = (DATA / "ifname-words.txt").read_text().split()


@pytest.mark.parametrize("word", ["counter", "table", "handle", "ip", "masquerade", "jump"])
def test_a_word_of_nfts_language_is_refused_where_nft_text_would_name_it(word: str) -> None:
    state = State(owned=[MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24")])
    with pytest.raises(ModelError, match=rf"'{word}' is a word of nft's language.*syntax='json'"):
        render_nftables_conf(state, table=word)
    with pytest.raises(ModelError, match="word of nft's language"):
        NftCommands(word)
    with pytest.raises(ModelError, match="word of nft's language"):
        NftablesBackend(table=word)
    # The JSON syntax names it as data.
    assert validate_table_name(word) == word
    assert NftCommands(word, "json").table == word
    assert NftablesBackend(table=word, syntax="json", kernel=object)._table == word  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["k3snet", "filter", "nat", "Counter", "COUNTER", "k3snet-2"])
def test_names_nft_reads_as_names_are_taken(name: str) -> None:
    assert validate_nft_name(name) == name
    if ("inet", name) not in FOREIGN_TABLES:  # inet filter: another program's, refused
        assert f"table inet {name} {{" in render_nftables_conf(State(), table=name)


def test_the_list_holds_only_words_of_nft8() -> None:
    assert set(WORDS) >= NFT_WORDS
    assert all(validate_table_name(word) == word for word in WORDS)  # the regex takes them all


@pytest.mark.kernel
def test_the_list_is_exactly_the_words_of_nft8_the_installed_nft_refuses(ns: str) -> None:
    def run(words: list[str]) -> subprocess.CompletedProcess[str]:  # parsed, never committed
        text = "".join(f"add table inet {word}\n" for word in words)
        return run_in(ns, ["nft", "-c", "-f", "-"], check=False, input_text=text)

    def refused_alone(words: set[str]) -> set[str]:
        """The ``words`` nft refuses each alone: one ``nft -c`` a word, all run by one
        shell in the namespace (an ``ip netns exec`` a word was half of the test's time)."""
        script = ('for w in "$@"; do printf "add table inet %s\\n" "$w" '
                  '| nft -c -f - >/dev/null 2>&1 || printf "%s\\n" "$w"; done')
        return set(run_in(ns, ["sh", "-c", script, "sh", *sorted(words)]).stdout.split())

    # Thirty words a run: nft names the line of each it refuses (up to ten a run).
    named: set[str] = set()
    for start in range(0, len(WORDS), 30):
        chunk = WORDS[start:start + 30]
        lines = {int(m) for m in re.findall(r"^/dev/stdin:(\d+):", run(chunk).stderr, re.M)}
        named |= {chunk[line - 1] for line in lines}
        rest = [word for word in chunk if word not in named]
        if rest and run(rest).returncode != 0:  # a refusal it did not name: word by word
            named |= set(chunk)
    assert refused_alone(named) == NFT_WORDS


@pytest.mark.kernel
def test_a_table_named_after_a_word_is_refused_before_anything_is_written(ns: str) -> None:
    wanted = State(owned=[MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24")])
    with pytest.raises(ModelError, match="word of nft's language"):
        NftablesBackend(ns, table="counter")
    with NftablesBackend(ns, table="counter", syntax="json") as backend:
        backend.apply(plan(backend.observe(), wanted))
        assert backend.observe(refresh=True).owned == wanted.owned


@pytest.mark.parametrize("name", sorted(NFT_JSON_IFNAME_WORDS))
def test_an_interface_name_nfts_json_reads_as_a_protocol_is_refused_in_json_only(
    name: str
) -> None:
    for obj in (MasqueradeRule("10.42.0.0/16", out_interface=name),
                ForwardRule("10.42.0.0/16", "192.168.2.0/24", in_interface=name)):
        with pytest.raises(ModelError, match=rf"'{name}' cannot be written through nft's JSON"):
            nft_rules_json(obj)
        assert f'"{name}"' in nft_rules(obj)[0].body  # nft's language quotes it


def test_the_interface_list_holds_only_interface_names_of_the_word_list() -> None:
    assert set(IFNAME_WORDS) >= NFT_JSON_IFNAME_WORDS
    for name in IFNAME_WORDS:  # every one a name k3snet takes for an interface
        assert MasqueradeRule("10.42.0.0/16", out_interface=name).out_interface == name


@pytest.mark.kernel
def test_the_interface_list_is_exactly_the_names_the_installed_nfts_json_refuses(
    ns: str
) -> None:
    run_in(ns, ["nft", "add table inet t; add chain inet t c"])

    def refused(names: list[str]) -> set[str]:
        """Halving: a batch of names that loads (dry run) holds none the parser refuses."""
        rules = ",".join(
            '{"add":{"rule":{"family":"inet","table":"t","chain":"c","expr":[{"match":'
            f'{{"op":"==","left":{{"meta":{{"key":"oifname"}}}},"right":"{name}"}}}},'
            '{"accept":null}]}}}' for name in names)
        done = run_in(ns, ["nft", "-c", "-j", "-f", "-"], check=False,
                      input_text=f'{{"nftables":[{rules}]}}')
        if done.returncode == 0:
            return set()
        if len(names) == 1:
            return set(names)
        return refused(names[:len(names) // 2]) | refused(names[len(names) // 2:])

    assert refused(IFNAME_WORDS) == NFT_JSON_IFNAME_WORDS
