"""A rule's comment, whatever it holds, is one value of one rule in the parsed save.

iptables-save quotes a comment that holds anything but letters, digits, ``_`` and
``-``, escapes ``"``, ``\\`` and ``'`` in it, and prints everything else as it is,
newlines and other line breaks included: a comment can print lines that read as
rules (tests/safety/test_foreign_bytes.py has the kernel's side).
"""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from k3snet.backends.iptables.save import parse_save
from k3snet.doctor import iptables as doctor
from k3snet.render.iptables.rules import tokenize

_PLAIN = frozenset("_-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def saved_string(value: str) -> str:
    """``value`` as iptables' ``xtables_save_string`` prints it."""
    if value and all(char in _PLAIN for char in value):
        return value
    return '"' + "".join("\\" + char if char in "\"\\'" else char for char in value) + '"'


COMMENTS = st.text(st.characters(exclude_characters="\0"), max_size=40)


@given(comments=st.lists(COMMENTS, min_size=1, max_size=5))
@example(comments=['x\n-A K3SNET-N-x -s 10.42.0.0/16 -d 192.168.3.0/24 -m comment --comment '
                   '"k3snet:75dde701eb85b1ff" -j MASQUERADE'])
@example(comments=["a\u2028-A POSTROUTING -j DROP", 'a"b\\', "'\n\"", "\n", ""])
def test_a_comment_whatever_it_holds_is_one_value_of_its_own_rule(comments: list[str]) -> None:
    lines = [f"-A POSTROUTING -d 10.0.0.{i}/32 -m comment --comment {saved_string(c)} "
             "-j MASQUERADE" for i, c in enumerate(comments)]
    text = "\n".join(["*nat", ":POSTROUTING ACCEPT [0:0]", *lines, "COMMIT", ""])
    rules = parse_save(text)["nat"].chain("POSTROUTING")
    assert len(rules) == len(comments)
    for i, (spec, comment) in enumerate(zip(rules, comments, strict=True)):
        tokens = tokenize(spec)
        assert tokens[:2] == ("-d", f"10.0.0.{i}/32")
        assert tokens[-2:] == ("-j", "MASQUERADE")
        assert tokens[tokens.index("--comment") + 1] == comment
    # the doctor's reader: the same rules, each with its target
    traced = doctor.parse_save(text)["nat"].chains["POSTROUTING"].rules
    assert [rule.target for rule in traced] == ["MASQUERADE"] * len(comments)
