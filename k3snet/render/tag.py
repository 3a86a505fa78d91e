"""The ownership tag every kernel rule of k3snet carries, for every rule language.

A rule's comment is ``k3snet:`` followed by 16 hex digits: a BLAKE2b digest of
the rule's canonical text (the language's layout version included). It marks
the rule as k3snet's and is the diff key (the Calico Felix approach): a rule
whose content no longer hashes to its tag was edited outside k3snet. One
function makes the tag, one reads it, for nftables and iptables alike.

>>> tag = ownership_tag("masquerade|10.42.0.0/16")
>>> tag.startswith(TAG_PREFIX), len(tag) == len(TAG_PREFIX) + TAG_DIGITS
(True, True)
>>> tag_digest(tag) == tag[len(TAG_PREFIX):]
True
>>> tag_digest("k3snet:not-hex") is None
True
"""

from __future__ import annotations

import hashlib
from collections.abc import Container
from typing import Final

__all__ = ["TAG_DIGITS", "TAG_PREFIX", "content_digest", "ownership_tag", "tag_digest"]

TAG_PREFIX: Final = "k3snet:"
TAG_DIGITS: Final = 16
"""Hex digits of the digest: 64 bits, so collisions are negligible for 10^6 rules."""

_TAG_LENGTH: Final = len(TAG_PREFIX) + TAG_DIGITS
_HEX_DIGITS: Final = "0123456789abcdef"
_BLAKE2B: Final = hashlib.blake2b


def content_digest(canonical: str) -> str:
    """The 16 hex digits identifying ``canonical`` (a rule's canonical text)."""
    return _BLAKE2B(canonical.encode(), digest_size=TAG_DIGITS // 2).hexdigest()


def ownership_tag(canonical: str) -> str:
    """``k3snet:<digest>``: the comment of the rule whose canonical text is ``canonical``."""
    return TAG_PREFIX + content_digest(canonical)


def tag_digest(comment: str, known: Container[str] = ()) -> str | None:
    """The digest of a well-formed tag, ``None`` for anything else (a forged or foreign comment).

    Well formed: :data:`TAG_PREFIX` and exactly :data:`TAG_DIGITS` lowercase hex
    digits, nothing before or after (what ``re.fullmatch(r"k3snet:([0-9a-f]{16})")``
    accepts; a property test holds the two to the same answers). A digest in
    ``known`` (digests :func:`content_digest` made, so well formed) is taken
    without checking its digits.
    """
    # No regex: observe reads one tag per rule. The digit check is most of this
    # function's cost; a process that rendered the rule skips it by a lookup
    # (docs/performance.md, "The observe after an apply").
    if len(comment) == _TAG_LENGTH and comment.startswith(TAG_PREFIX):
        digest = comment[len(TAG_PREFIX):]
        if digest in known or not digest.strip(_HEX_DIGITS):  # every character a hex digit
            return digest
    return None
