"""The cheap ways the iptables reader takes values from `iptables-save` text read them as the
slow ones did: a network through k3snet's parser (and its memo) as `ipaddress` reads it, and
IPv4 lines without the address normalisation only ip6tables-save needs."""

from __future__ import annotations

import ipaddress

from hypothesis import example, given
from hypothesis import strategies as st

from k3snet.render.iptables import rules
from k3snet.render.iptables.rules import normalize, parse_rule, tokenize

_V4 = st.builds(lambda a, p: f"{ipaddress.IPv4Address(a)}/{p}",
                st.integers(0, 2**32 - 1), st.integers(0, 32))
_V6 = st.builds(lambda a, p: f"{ipaddress.IPv6Address(a)}/{p}",
                st.integers(0, 2**128 - 1), st.integers(0, 128))
_ODD = st.sampled_from(["10.0.0.1", "010.0.0.0/8", "10.0.0.0/33", "10.0.0/8", "1.2.3.4/08",
                        "::ffff:1.2.3.4/128", "fe80::1", "10.0.0.0/255.0.0.0", "", "/8",
                        "1.2.3.4:80-90", "10.0.0.0/-1", " 10.0.0.0/8", "256.0.0.0/8",
                        "fe80::%eth0/64", "10.0.0.0/8 "])
VALUES = st.one_of(_V4, _V6, _ODD, st.text(alphabet="0123456789abcdef.:/-% ", max_size=20))


def _ipaddress(text: str) -> object:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return ValueError


def _ours(text: str) -> object:
    try:
        return rules._saved_network(text)
    except ValueError:
        return ValueError


@given(VALUES)
@example("10.42.0.0/16")
def test_a_saved_network_reads_as_ipaddress_reads_it(text: str) -> None:
    rules._SAVED_NETWORKS.clear()
    first, second = _ours(text), _ours(text)  # the second may come from the memo
    assert first == second == _ipaddress(text)
    if first is not ValueError:
        assert type(first) is type(_ipaddress(text))


def test_the_memo_keeps_only_the_first_values() -> None:
    rules._SAVED_NETWORKS.clear()
    for n in range(rules._SAVED_NETWORKS_MAX + 50):
        assert _ours(f"10.{n // 256}.{n % 256}.0/24") == _ipaddress(f"10.{n // 256}.{n % 256}.0/24")
    assert len(rules._SAVED_NETWORKS) == rules._SAVED_NETWORKS_MAX


@given(VALUES, VALUES, VALUES)
def test_a_rule_parses_its_networks_as_ipaddress_reads_them(source: str, dest: str,
                                                            to: str) -> None:
    line = ("-s", source, "-d", dest, "-m", "comment", "--comment", "k3snet:x", "-j", "ACCEPT")
    fields = parse_rule(line)
    expected = (_ipaddress(source), _ipaddress(dest))
    if ValueError in expected:
        assert fields is None
    else:
        assert fields is not None
        assert (fields.source, fields.destination) == expected


@given(st.lists(st.one_of(st.sampled_from(["-s", "-d", "--to-source", "-j", "SNAT", "-o",
                                           "eth0", "!", "-m", "comment"]), _V4, _ODD),
                max_size=12))
def test_normalize_is_the_identity_on_ipv4_lines(tokens: list[str]) -> None:
    # What lets the reader skip it on tables of family 4 (only ip6tables-save prints an
    # address another way than k3snet renders it). A value with ':' in an IPv4 table
    # is a port range (`--to-source 1.2.3.4:80-90`): left as printed.
    line = tuple(t for t in tokens if ":" not in t or "-" in t)
    assert normalize(line) == line
    assert normalize(tokenize(" ".join(line))) == tokenize(" ".join(line))


def test_a_rule_ending_in_a_negation_is_not_read() -> None:
    line = ("-s", "10.42.0.0/16", "-j", "MASQUERADE")
    assert parse_rule(line) is not None
    assert parse_rule((*line, "!")) is None
    assert parse_rule(("!", "-s", "10.42.0.0/16", "-j", "MASQUERADE")) is not None
