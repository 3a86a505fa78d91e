"""The ownership tag: :func:`tag_digest` accepts exactly the well-formed tags.

A well-formed tag is defined here by a regex (what ``tag_digest`` used before it
became a plain length, prefix and hex-digit check, cheaper per rule read back):
the two must agree on every text, hostile or nearly a tag, also when the digest of
the tag a comment was made from is known (rendered in this process); ``comment_digest``
must find the same digest as a walk over the rule's words does.
"""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from k3snet.model import MasqueradeRule
from k3snet.render.iptables.rules import comment_digest, render_unit
from k3snet.render.tag import TAG_DIGITS, TAG_PREFIX, content_digest, ownership_tag, tag_digest
from k3snet.testing import strategies as ks

_WELL_FORMED = re.compile(rf"{re.escape(TAG_PREFIX)}([0-9a-f]{{{TAG_DIGITS}}})")


def _by_regex(comment: str) -> str | None:
    match = _WELL_FORMED.fullmatch(comment)
    return match.group(1) if match else None


# Hex digits' look-alikes: upper case, letters past f, blanks, NUL, other
# scripts' digits (Arabic-Indic three, fullwidth zero), a combining mark.
_LOOKALIKES = "ABCDEFgxz:- \n\t\x00\u0663\uff10\u0301"


_CANONICAL = st.text(max_size=8)


@st.composite
def _near_tags(draw: st.DrawFn, canonical: st.SearchStrategy[str] = _CANONICAL) -> str:
    """A real tag with up to three characters replaced, upper-cased, inserted or deleted."""
    chars = list(ownership_tag(draw(canonical)))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(chars) - 1)) if chars else 0
        char = draw(st.sampled_from(_LOOKALIKES) | st.characters())
        edit = draw(st.sampled_from(["replace", "upper", "insert", "delete"]))
        if edit == "insert" or not chars:
            chars.insert(at, char)
        elif edit == "replace":
            chars[at] = char
        elif edit == "upper":
            chars[at] = chars[at].upper()
        else:
            del chars[at]
    return "".join(chars)


_comments = st.one_of(ks.hostile_text(), _near_tags(), _near_tags(), st.text(max_size=30),
                      st.text(max_size=8).map(ownership_tag))


@given(_comments)
def test_tag_digest_agrees_with_the_well_formed_tag_regex_on_hostile_text(comment: str) -> None:
    assert tag_digest(comment) == _by_regex(comment)


@given(_CANONICAL.flatmap(lambda text: st.tuples(st.just(text), _near_tags(st.just(text)))))
def test_a_known_digest_spares_the_digit_check_and_nothing_else(case: tuple[str, str]) -> None:
    # The digest of the tag the comment was made from is known (rendered in this
    # process): the comment, or any near miss of it, is judged as without it.
    text, comment = case
    assert tag_digest(comment, {content_digest(text)}) == _by_regex(comment)


def test_tag_digest_reads_the_tags_it_makes_and_refuses_their_near_misses() -> None:
    tag = ownership_tag("masquerade|10.42.0.0/16")
    assert tag_digest(tag) == tag[len(TAG_PREFIX):]
    for near in (tag.upper(), tag + "\n", tag[:-1], tag[:-1] + "g", tag[:-1] + "\uff10",
                 " " + tag, tag[:-1] + "0" * 2):
        assert tag_digest(near) is None, near


def _first_tag_by_walk(tokens: tuple[str, ...]) -> str | None:
    for index, word in enumerate(tokens):
        if word == "--comment" and index + 1 < len(tokens):
            digest = tag_digest(tokens[index + 1])
            if digest is not None:
                return digest
    return None


_words = st.one_of(st.sampled_from(["--comment", "-m", "comment", "-j", "MASQUERADE"]),
                   _comments)
# Words, and "--comment" with a value: several comments in one rule, tags or not.
_segments = st.one_of(_words.map(lambda word: (word,)),
                      _comments.map(lambda comment: ("--comment", comment)))
_rules = st.lists(_segments, max_size=5).map(
    lambda segments: tuple(word for segment in segments for word in segment))


@given(_rules)
def test_comment_digest_finds_the_first_well_formed_comment_tag(tokens: tuple[str, ...]) -> None:
    assert comment_digest(tokens) == _first_tag_by_walk(tokens)


def test_comment_digest_of_a_rule_rendered_here_and_of_its_near_misses() -> None:
    # The unit's digest is in the renderer's table: comment_digest takes it by a
    # lookup; near misses of its tag are still refused.
    unit = render_unit(MasqueradeRule("10.42.0.0/16", destination="192.168.7.0/24"))
    at = unit.lines[0].index("--comment") + 1
    tag = unit.lines[0][at]
    assert comment_digest(unit.lines[0]) == unit.digest
    for near in (tag.upper(), TAG_PREFIX + unit.digest.upper(), tag + "\n", tag[:-1],
                 " " + tag, tag[:-1] + "\uff10"):
        line = (*unit.lines[0][:at], near, *unit.lines[0][at + 1:])
        assert comment_digest(line) is None, near
