"""Texts read from the kernel (a foreign rule, a drift finding) print as one safe line.

They quote what other programs wrote: a comment can hold a newline (which would
print a forged line of a plan), a terminal escape (``ESC[2K`` erases the line
shown), a bidirectional override (U+202E reverses what follows) or, read with
``surrogateescape``, a byte that is not UTF-8. Whatever they hold, the text kept
is one line of printable characters, the others written as Python escapes.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from k3snet.errors import ModelError
from k3snet.model import Drift, ForwardBlock, NatBlock, NetObject

TEXTS = st.text(st.characters(exclude_characters="\0", codec=None), min_size=1, max_size=80)
MAKERS: dict[str, Callable[[str], NetObject]] = {
    "forward block": lambda text: ForwardBlock(4, "drop", text, text),
    "nat block": lambda text: NatBlock(4, "exempt", text, text),
    "drift": lambda text: Drift.of("nat", backend="iptables", where=text, what=text),
}


@pytest.mark.parametrize("kind", list(MAKERS))
@given(text=TEXTS)
@example(text="-A FORWARD -j DROP\x1b[2K\x1b[1A+ masquerade 10.42.0.0/16")
@example(text="caf\udce9 \u202eolleh \x85 \u2028x\x7f\x9b")
def test_a_text_read_from_the_kernel_is_one_printable_line(kind: str, text: str) -> None:
    if not text.split():  # only white space: no text at all
        with pytest.raises(ModelError, match="non-empty string"):
            MAKERS[kind](text)
        return
    shown = MAKERS[kind](text).describe()
    assert shown.isprintable()
    shown.encode("utf-8")  # no lone surrogate left either
    if text.isprintable() and text == " ".join(text.split()) and "\\" not in text:
        assert text[:100] in shown  # a plain text is kept as it is
