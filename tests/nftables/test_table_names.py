"""k3snet's nftables table name: a word of nft's language is refused wherever nft text names it.

``add table inet counter`` is a syntax error in nft's language, quoted or not, so a
table so named cannot be written by ``nft -f`` nor by the backend's nft-syntax
batches: :data:`~k3snet.render.nftables.NFT_WORDS` lists the words of nft(8)
refused there, and the kernel test below holds that list to what the installed
nft parses (``tests/data/nftables/nft8-words.txt``: every word of the nft(8) man
page of nftables 1.0.6). Only the JSON syntax can name such a table.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from k3snet.backends.nftables import NftablesBackend
from k3snet.errors import ModelError
from k3snet.lab.netns import run_in
from k3snet.model import MasqueradeRule, State
from k3snet.planner import plan
from k3snet.render.nftables import (
    NFT_WORDS,
    render_nftables_conf,
    validate_nft_name,
    validate_table_name,
)
from k3snet.render.nftables_batch import NftCommands

WORDS = (Path(__file__).resolve().parents[1] / "data" / "nftables" / "nft8-words.txt") \
    .read_text().split()


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
    assert f"table inet {name} {{" in render_nftables_conf(State(), table=name)


def test_the_list_holds_only_words_of_nft8() -> None:
    assert set(WORDS) >= NFT_WORDS
    assert all(validate_table_name(word) == word for word in WORDS)  # the regex takes them all


@pytest.mark.kernel
def test_the_list_is_exactly_the_words_of_nft8_the_installed_nft_refuses(ns: str) -> None:
    def run(words: list[str]) -> subprocess.CompletedProcess[str]:  # parsed, never committed
        text = "".join(f"add table inet {word}\n" for word in words)
        return run_in(ns, ["nft", "-c", "-f", "-"], check=False, input_text=text)

    # Thirty words a run: nft names the line of each it refuses (up to ten a run).
    refused: set[str] = set()
    for start in range(0, len(WORDS), 30):
        chunk = WORDS[start:start + 30]
        lines = {int(m) for m in re.findall(r"^/dev/stdin:(\d+):", run(chunk).stderr, re.M)}
        named = {chunk[line - 1] for line in lines}
        rest = [word for word in chunk if word not in named]
        if rest and run(rest).returncode != 0:  # a refusal it did not name: word by word
            named = set(chunk)
        refused |= {word for word in named if run([word]).returncode != 0}
    assert refused == NFT_WORDS


@pytest.mark.kernel
def test_a_table_named_after_a_word_is_refused_before_anything_is_written(ns: str) -> None:
    wanted = State(owned=[MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24")])
    with pytest.raises(ModelError, match="word of nft's language"):
        NftablesBackend(ns, table="counter")
    with NftablesBackend(ns, table="counter", syntax="json") as backend:
        backend.apply(plan(backend.observe(), wanted))
        assert backend.observe(refresh=True).owned == wanted.owned
