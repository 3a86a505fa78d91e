"""The string tests that replaced two per-call regular expressions (issue 9's cold path)
answer as the patterns did, on names drawn to break them: the old patterns are kept
here as the reference."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from k3snet._kept import _is_temporary
from k3snet.model.sysctl import _stable_secret
from tests.examples import examples


def _old_is_temporary(name: str, prefix: str) -> bool:
    """``_prune_temporaries``' test before the change: a pattern compiled per call."""
    return re.fullmatch(re.escape(prefix) + r"[0-9a-f]{16}\.tmp", name) is not None


def _old_stable_secret(name: str) -> bool:
    """``_stable_secret`` before the change: ``re.split`` at each call."""
    parts = re.split(r"[./]", name, maxsplit=3)
    return parts[:3] == ["net", "ipv6", "conf"] and name.endswith("stable_secret") and \
        name[-len("stable_secret") - 1] in "./"


_PREFIXES = st.one_of(st.sampled_from([".spec-", ".kept-", "", ".", "a.b*", "[0-9]", "x\\"]),
                      st.text(st.sampled_from(".-*+?[](){}\\^$|a0F\n"), max_size=6))
_DIGITS = st.text(st.sampled_from("0123456789abcdefABCDEFg.\n\u0660\uff10"), min_size=14,
                  max_size=18)
_ENDS = st.sampled_from([".tmp", ".tmp\n", ".TMP", "tmp", ".tmp.tmp", "", ".tm", "xtmp"])


@settings(max_examples=examples(600))
@given(prefix=_PREFIXES, other=_PREFIXES, digits=_DIGITS, end=_ENDS, same=st.booleans())
def test_a_temporary_name_is_told_as_the_old_pattern_told_it(
        prefix: str, other: str, digits: str, end: str, same: bool) -> None:
    name = (prefix if same else other) + digits + end
    assert _is_temporary(name, prefix) == _old_is_temporary(name, prefix)


_HEADS = st.sampled_from(["net.ipv6.conf.", "net/ipv6/conf/", "net.ipv6/conf.", "net.ipv6.conf",
                          "net.ipv4.conf.", "net.ipv6.", "net.ipv6.confx.", "ne.ipv6.conf.",
                          "", ".", "net..ipv6.conf."])
_MIDDLES = st.text(st.sampled_from("eth0.1/_x"), max_size=6)
_SEPARATORS = st.sampled_from([".", "/", "", "x", "_", "./", "\n"])
_TAILS = st.sampled_from(["stable_secret", "stable_secret\n", "stable_secre", "xstable_secret",
                          "", "forwarding"])


@settings(max_examples=examples(600))
@given(name=st.one_of(st.tuples(_HEADS, _MIDDLES, _SEPARATORS, _TAILS).map("".join),
                      st.text(st.sampled_from("netipv6cofsabl_r./"), max_size=30)))
def test_a_stable_secret_name_is_told_as_the_old_pattern_told_it(name: str) -> None:
    assert _stable_secret(name) == _old_stable_secret(name)


def test_the_reference_patterns_tell_the_names_the_writers_give() -> None:
    """The properties above compare with references that answer: a name ``write_atomic``
    gives and a VLAN's ``stable_secret`` are told so, their near misses not."""
    assert _old_is_temporary(".spec-0123456789abcdef.tmp", ".spec-")
    assert not _old_is_temporary(".spec-0123456789abcdeF.tmp", ".spec-")
    assert _old_stable_secret("net/ipv6/conf/eth0.100/stable_secret")
    assert not _old_stable_secret("net.ipv6.conf.eth0.xstable_secret")
