"""The iptables renderer's text layer: quoting, tokenizing, address forms, tags,
reading our own rules back, and the ``rules.v4``/``rules.v6`` file.

The quoting is checked against :mod:`shlex` (POSIX rules, which is what
``iptables-restore`` and ``iptables-save`` follow for the characters k3snet
quotes); the read-back against the objects rendered.
"""

from __future__ import annotations

import contextlib
import ipaddress
import shlex
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from k3snet.errors import K3snetError, ModelError
from k3snet.model import ForwardRule, MasqueradeRule, NetObject, Route, SnatRule, State
from k3snet.render.iptables.rules import (
    clear_caches,
    comment_digest,
    format_line,
    normalize,
    rebuild_unit,
    render_unit,
    table_image,
    table_of,
    tokenize,
)
from k3snet.render.iptables.save import render_iptables_save
from k3snet.testing import strategies

# Blanks shlex and str.isspace agree on; quotes and backslashes are what needs care.
_CHARS = string.ascii_letters + string.digits + "-_./:!,=+" + " \t\"'\\"
tokens_lists = st.lists(st.text(alphabet=_CHARS, max_size=8), max_size=6)


@given(tokens=tokens_lists)
def test_a_formatted_line_reads_back_as_its_tokens(tokens: list[str]) -> None:
    line = format_line(tokens)
    assert shlex.split(line) == tokens  # the independent reader
    assert tokenize(line) == tuple(tokens)


@given(tokens=st.lists(st.text(alphabet=string.ascii_letters + "-_./:!", min_size=1), max_size=6))
def test_plain_tokens_are_written_as_they_are(tokens: list[str]) -> None:
    assert format_line(tokens) == " ".join(tokens)


def _quoted(token: str, style: int) -> str:
    """``token`` as a shell-like reader reads it, in one of three spellings."""
    if style == 0 and token and not any(c in token for c in " \t\"'\\"):
        return token
    if style == 1 and "'" not in token and "\\" not in token:
        return f"'{token}'"
    return '"' + token.replace("\\", "\\\\").replace('"', '\\"') + '"'


@given(tokens=tokens_lists, data=st.data())
def test_text_written_in_any_quoting_reads_back_as_its_tokens(
        tokens: list[str], data: st.DataObject) -> None:
    n = len(tokens)
    styles = data.draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    blanks = data.draw(st.lists(st.sampled_from([" ", "  ", "\t", " \t "]),
                                min_size=n + 1, max_size=n + 1))
    pieces = [_quoted(t, style) for t, style in zip(tokens, styles, strict=True)]
    text = blanks[0] + "".join(p + b for p, b in zip(pieces, blanks[1:], strict=True))
    assert shlex.split(text) == tokens
    assert tokenize(text) == tuple(tokens)


@pytest.mark.parametrize(("tokens", "line"), [
    (("a b",), '"a b"'),
    (("a b", "c"), '"a b" c'),
    (("a  b",), '"a  b"'),
    (("-m", "comment", "--comment", ""), '-m comment --comment ""'),
    (("a", "", "b"), 'a "" b'),
    (("it's", 'say "hi"', "back\\slash", "tab\tin"),
     '"it\'s" "say \\"hi\\"" "back\\\\slash" "tab\tin"'),
])
def test_format_line_quotes_only_the_tokens_that_need_it(
        tokens: tuple[str, ...], line: str) -> None:
    assert format_line(tokens) == line
    assert shlex.split(line) == list(tokens)


@pytest.mark.parametrize(("text", "tokens"), [
    ('-m comment --comment "a \\', ("-m", "comment", "--comment", "a ")),  # cut short
    ("  -s   'a b'  -j X", ("-s", "a b", "-j", "X")),
    ("-m comment --comment 'it''s' -j X", ("-m", "comment", "--comment", "its", "-j", "X")),
    ("-m comment --comment \"a \\\"b\\\" c\" -j X", ("-m", "comment", "--comment", 'a "b" c',
                                                     "-j", "X")),
])
def test_tokenize_examples(text: str, tokens: tuple[str, ...]) -> None:
    assert tokenize(text) == tokens


def test_ipv6_addresses_are_read_in_their_canonical_form() -> None:
    printed = ("-s", "::ffff:1.2.3.4/128", "-d", "2001:db8:0:0::1", "-p", "tcp", "--dport",
               "1:2", "-d", "bad:value", "-s", "2001:db8::1/64", "-s", "10.0.0.1",
               "-d", "fd00:0:0::/64", "-j", "SNAT", "--to-source", "fd00:0::1")
    assert normalize(printed) == (
        "-s", "::ffff:102:304/128", "-d", "2001:db8::1", "-p", "tcp", "--dport",
        "1:2", "-d", "bad:value", "-s", "2001:db8::/64", "-s", "10.0.0.1",
        "-d", "fd00::/64", "-j", "SNAT", "--to-source", "fd00::1")


@given(tokens=st.lists(st.one_of(
    st.sampled_from(["-s", "-d", "--to-source", "-j", "-p", "!"]),
    strategies.addresses().map(str), strategies.networks().map(str),
    st.text(alphabet="0123456789abcdef:./", max_size=12)), max_size=8))
def test_normalize_agrees_with_ipaddress(tokens: list[str]) -> None:
    expected = list(tokens)
    for index, token in enumerate(tokens[:-1]):
        value = tokens[index + 1]
        if token in ("-s", "-d", "--to-source") and ":" in value:
            with contextlib.suppress(ValueError):  # not an address: left as printed
                expected[index + 1] = str(ipaddress.ip_network(value, strict=False)
                                          if "/" in value else ipaddress.ip_address(value))
    assert normalize(tuple(tokens)) == tuple(expected)


# -- tags --------------------------------------------------------------------------


@pytest.mark.parametrize("obj", [
    MasqueradeRule("10.42.0.0/16", exclude=["10.0.0.0/8"]),
    ForwardRule("10.42.0.0/16", "192.168.2.0/24"),
])
def test_every_line_of_a_unit_carries_its_digest(obj: NetObject) -> None:
    unit = render_unit(obj)
    for line in (*unit.lines, *unit.sub_lines):
        assert comment_digest(line) == unit.digest
        # Wherever the comment stands in the rule, the last tokens included.
        at = line.index("comment") - 1
        moved = (*line[:at], *line[at + 4:], *line[at: at + 4])
        assert moved[-1].endswith(unit.digest)
        assert comment_digest(moved) == unit.digest


@pytest.mark.parametrize("comment", [
    "k3snet", "k3snet:abc", "k3snet:" + "z" * 16, "x" * len("k3snet:" + "0" * 16),
    "k3snet-" + "0" * 16,
])
def test_a_malformed_tag_is_no_digest(comment: str) -> None:
    render_unit(MasqueradeRule("10.42.0.0/16"))  # a digest known to this process
    assert comment_digest(("-m", "comment", "--comment", comment, "-j", "ACCEPT")) is None


def test_a_rule_cut_short_after_comment_has_no_digest() -> None:
    assert comment_digest(("-j", "ACCEPT", "-m", "comment", "--comment")) is None


# -- read back -----------------------------------------------------------------------

ROUND_TRIP = [
    MasqueradeRule("0.0.0.0/0", destination="192.168.2.0/24"),
    MasqueradeRule("10.42.0.0/16", destination="0.0.0.0/0"),
    MasqueradeRule("::/0", destination="fd01::/64", out_interface="eth0"),
    MasqueradeRule("fd42::/56", destination="::/0", random_fully=True),
    MasqueradeRule("0.0.0.0/0", exclude=["10.0.0.0/8", "192.168.0.0/16"]),
    MasqueradeRule("::/0", exclude=["fd00::/8"]),
    # Half the addresses (every address is refused by the model: the rule could not match).
    MasqueradeRule("10.42.0.0/16", exclude=["0.0.0.0/1", "10.0.0.0/8"]),
    MasqueradeRule("fd42::/56", exclude=["::/1", "fd00::/8"]),
    SnatRule("0.0.0.0/0", destination="0.0.0.0/0", to_address="192.0.2.1"),
    SnatRule("::/0", exclude=["fd00::/8"], to_address="fd00::1", random_fully=True),
    ForwardRule("0.0.0.0/0", "10.42.0.0/16"),
    ForwardRule("10.42.0.0/16", "0.0.0.0/0", in_interface="cni0"),
    ForwardRule("::/0", "fd42::/56", out_interface="cni0"),
    ForwardRule("fd42::/56", "::/0"),
]


@pytest.mark.parametrize("obj", ROUND_TRIP, ids=str)
def test_objects_with_any_address_are_rebuilt_from_their_rules(obj: NetObject) -> None:
    unit = render_unit(obj)
    chains = {unit.chain: list(unit.lines)}
    if unit.sub_chain is not None:
        chains[unit.sub_chain] = list(unit.sub_lines)
    clear_caches()  # rebuilt from the text alone, as in a fresh process
    assert obj.family is not None
    rebuilt = rebuild_unit(obj.family, unit.digest, unit.chain, unit.lines, chains)
    assert rebuilt is not None
    assert rebuilt.obj == obj


def test_any_address_is_no_match_and_a_half_is_one() -> None:
    unit = render_unit(SnatRule("0.0.0.0/0", destination="128.0.0.0/1", to_address="192.0.2.1"))
    (line,) = unit.lines
    assert "-s" not in line
    assert line[:2] == ("-d", "128.0.0.0/1")


def test_a_rule_whose_exclusion_chain_is_gone_is_not_ours() -> None:
    unit = render_unit(MasqueradeRule("10.42.0.0/16", exclude=["10.0.0.0/8", "172.16.0.0/12"]))
    assert unit.sub_chain is not None
    clear_caches()
    assert rebuild_unit(4, unit.digest, unit.chain, unit.lines, {unit.chain: list(unit.lines)}) \
        is None


@given(objs=st.lists(strategies.nat_rules(family=4), min_size=2, max_size=6, unique=True),
       data=st.data())
def test_a_table_image_does_not_depend_on_the_order_objects_come_in(
        objs: list[NetObject], data: st.DataObject) -> None:
    shuffled = data.draw(st.permutations(objs))
    assert table_image(shuffled) == table_image(objs)


def test_only_nat_and_forward_rules_have_a_table() -> None:
    assert table_of(ForwardRule("10.42.0.0/16", "0.0.0.0/0")) == "filter"
    assert table_of(MasqueradeRule("10.42.0.0/16")) == "nat"
    with pytest.raises(K3snetError, match="cannot hold route objects"):
        table_of(Route("192.168.2.0/24", gateway="10.0.0.1"))


# -- rules.v4 / rules.v6 -------------------------------------------------------------


def test_the_rules_files_hold_exactly_our_chains() -> None:
    state = State(owned=[
        MasqueradeRule("10.42.0.0/16", exclude=["10.0.0.0/8", "192.168.0.0/16"],
                       random_fully=True),
        SnatRule("10.43.0.0/16", destination="192.168.2.0/24", to_address="192.0.2.1"),
        MasqueradeRule("fd42::/56", out_interface="eth0"),
    ])
    assert render_iptables_save(state, 4) == """\
# k3snet: only k3snet's chains and jumps (IPv4).
# Load with `iptables-restore --noflush /etc/k3snet/k3snet.rules.v4`,
# so that foreign rules are kept. Never as netfilter-persistent's
# /etc/iptables/rules.v4: it loads without --noflush, which flushes every
# table named below (kube-proxy's, flannel's, Docker's rules with them).
*nat
:K3SNET-POSTROUTING - [0:0]
:K3SNET-M-3d4b9e1fa28c79e1 - [0:0]
:K3SNET-N-d0-s16-a-3 - [0:0]
:K3SNET-N-d24-s16-a-4 - [0:0]
-A POSTROUTING -m comment --comment k3snet -j K3SNET-POSTROUTING
-A K3SNET-POSTROUTING -m comment --comment k3snet -j K3SNET-N-d24-s16-a-4
-A K3SNET-POSTROUTING -m comment --comment k3snet -j K3SNET-N-d0-s16-a-3
-A K3SNET-M-3d4b9e1fa28c79e1 -d 10.0.0.0/8 -m comment --comment k3snet:3d4b9e1fa28c79e1 -j RETURN
-A K3SNET-M-3d4b9e1fa28c79e1 -d 192.168.0.0/16 -m comment --comment k3snet:3d4b9e1fa28c79e1 -j RETURN
-A K3SNET-M-3d4b9e1fa28c79e1 -m comment --comment k3snet:3d4b9e1fa28c79e1 -j MASQUERADE --random-fully
-A K3SNET-N-d0-s16-a-3 -s 10.42.0.0/16 -m comment --comment k3snet:3d4b9e1fa28c79e1 -j K3SNET-M-3d4b9e1fa28c79e1
-A K3SNET-N-d24-s16-a-4 -s 10.43.0.0/16 -d 192.168.2.0/24 -m comment --comment k3snet:461240b4afa33197 -j SNAT --to-source 192.0.2.1
COMMIT
"""  # noqa: E501 - rules as iptables-save prints them
    assert render_iptables_save(state, 6) == """\
# k3snet: only k3snet's chains and jumps (IPv6).
# Load with `ip6tables-restore --noflush /etc/k3snet/k3snet.rules.v6`,
# so that foreign rules are kept. Never as netfilter-persistent's
# /etc/iptables/rules.v6: it loads without --noflush, which flushes every
# table named below (kube-proxy's, flannel's, Docker's rules with them).
*nat
:K3SNET-POSTROUTING - [0:0]
:K3SNET-N-d0-s56-o-2 - [0:0]
-A POSTROUTING -m comment --comment k3snet -j K3SNET-POSTROUTING
-A K3SNET-POSTROUTING -m comment --comment k3snet -j K3SNET-N-d0-s56-o-2
-A K3SNET-N-d0-s56-o-2 -s fd42::/56 -o eth0 -m comment --comment k3snet:234517a666cc2436 -j MASQUERADE
COMMIT
"""  # noqa: E501


def test_the_rules_file_of_another_family_is_refused() -> None:
    with pytest.raises(ModelError, match="family must be 4 or 6, got 5"):
        render_iptables_save(State(), 5)
