"""The doctor's text output writes a device name holding a byte that is not UTF-8 as the
shell word of its bytes (:func:`k3snet.doctor.trace.shown`): pasted into bash, that word
is the very name, whatever else the kernel lets a name hold.

The kernel refuses in a name only ``/``, ``:`` and its own spaces (``isspace``: tab, line
break, vertical tab, form feed, carriage return, space, 0xa0; dev_valid_name). Python's
``\\s`` is wider: the separators 0x1c to 0x1f, NEL and U+3000 ended the word there, and
``$'\\xb6'\\x1d$'\\xb6'`` was pasted as three words, the middle one ``x1d``.
"""

from __future__ import annotations

import subprocess

from hypothesis import given
from hypothesis import strategies as st

from k3snet._logline import shell_word
from k3snet.doctor.trace import _CLAUSE, _SURROGATE, shown

#: Bytes the kernel takes in a device's name.
_NAME_BYTES = [bytes([b]) for b in range(1, 256) if b not in b"/: \t\n\v\f\r\xa0"]

#: How the doctor's lines quote a device (trace steps, findings, the advice).
_TEXTS = ["dev {}", "arrives on {} (10.3.0.0/24 dev {})", "leaves dev {};",
          "no automatic fix: interface name {} is not valid", "rp_filter=1 (strict) on {}",
          "the route back is via {}, not via eth0", "dev {}.", "'{}'"]


def _name(raw: bytes) -> str:
    return raw.decode(errors="surrogateescape")


_NAMES = st.lists(st.sampled_from(_NAME_BYTES), min_size=1, max_size=15).map(b"".join).filter(
    lambda raw: _SURROGATE.search(_name(raw)) is not None)


def _read_by_bash(words: str) -> list[bytes]:
    done = subprocess.run(["bash", "-c", f"printf '%s\\0' {words}"], capture_output=True,
                          check=True)
    return done.stdout.split(b"\0")[:-1]


@given(_NAMES, st.sampled_from(_TEXTS))
def test_every_kernel_legal_name_with_a_non_utf8_byte_is_one_shell_word_bash_reads_back(
        raw: bytes, text: str) -> None:
    name = _name(raw)
    # Trace.names: the node's devices whose names hold a clause's punctuation.
    names = frozenset({name} if _CLAUSE.search(name) else ())
    word = shell_word(name)
    assert shown(text.format(name, name), names) == text.format(word, word)
    assert _read_by_bash(word) == [raw]


def test_a_name_holding_a_separator_python_takes_for_a_space_is_one_shell_word() -> None:
    """The kernel's example: 0x1d (group separator) and U+3000 in a name beside a byte
    that is not UTF-8."""
    for raw in (b"\xb6\x1d\xb6", b"\xe3\x80\x80\xff", b"a\xc2\x85\xff", b"\x1c\xd7"):
        name = _name(raw)
        out = shown(f"leaves dev {name}; the route", ())
        word = out.removeprefix("leaves dev ").removesuffix("; the route")
        assert _read_by_bash(word) == [raw], out
