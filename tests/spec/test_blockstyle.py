"""The block-style reader: whenever it answers, PyYAML's safe loader gives the same data.

The reader is only a shortcut: a text it does not read goes to PyYAML. What can
go wrong is an answer PyYAML would not give (another value, another type, data
where PyYAML refuses the text), so the properties compare the two on generated
documents, on random edits of real specs, and on the hostile corpus; and a
shortcut that never answers is no shortcut, so real specs must be read by it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from k3snet.spec.blockstyle import read_block_style
from k3snet.spec.source import load_mapping
from tests.examples import examples

_RESOLVER = yaml.resolver.Resolver()
HERE = Path(__file__).parent
ROOT = HERE.parent.parent


def resolve(value: str) -> str:
    # types-PyYAML leaves Resolver.resolve unannotated
    return str(_RESOLVER.resolve(yaml.ScalarNode, value, (True, False)))  # type: ignore[no-untyped-call]


def read(text: str) -> dict[str, Any] | None:
    return read_block_style(text, resolve)


def same(a: Any, b: Any) -> bool:
    """Equal, with the same types all the way down (``True == 1`` in Python)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[key], b[key]) for key in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def assert_agrees_with_pyyaml(text: str, reader: Callable[[str], Any] | None = None) -> None:
    """Whatever ``reader`` (the block-style reader by default) answers, PyYAML reads too."""
    got = (reader or read)(text)
    if got is None:
        return
    for loader in (yaml.CSafeLoader, yaml.SafeLoader):
        try:
            want = yaml.load(text, Loader=loader)  # noqa: S506 - safe loaders only
        except (yaml.YAMLError, ValueError) as exc:
            pytest.fail(f"read {got!r} where PyYAML ({loader.__name__}) refuses: {exc}\n{text}")
        assert same(got, want), f"{loader.__name__}: {want!r}, the reader: {got!r}\n{text}"


KEYS = ["a", "b", "cidr", "x.y", "_k", "a-b", "on", "y", "No", "null", "True", "k1",
        "1", "a b", "'q'", "a:b"]
SCALARS = ["v", "eth0", "10.0.0.0/8", "11.0.3.8/29", "192.168.1.1", "fd00::/64", "fd00::",
           "2001:db8::1", "yes", "No", "TRUE", "off", "~", "null", "NULL", "0", "-0", "+7",
           "100", "010", "0o7", "0x1f", "1_000", "1:20", "-1", "1.5", "1e3", "1.0e+3", ".inf",
           ".NaN", "2001-01-01", "2001-12-14t21:59:43.10-05:00", "a: b", "a:b", "a #c", "a#b",
           "a ", "'q'", "'q' # c", "'it''s'", '"d"', '"e\\n"', '"a #b"', "[a, b]", "[]", "{}",
           "{a: 1}", "[a, [b]]", "[10.42.0.0/16] # c", '["a]"]', "['a,b']", "[a, ]", "[a:b]",
           "[ x , 'y' ]", "[fd42:42::/56, 10.42.0.0/16]", "[fd00::]", "[a:, b]", "[a?b]", "[x:y:z]",
           "[a: b]", "[a #b]", "[a[b]", "[a, b[c]", "[a]b]", "[a, 'b']",
           "&x a", "*x", "!tag a", "!!str 1", "|", ">", "-", "- a", "-x", "a, b",
           "(x)", "=", "<<", "?x", "? x", "@x", "`x", "%x", "a  b", "9" * 30,
           "99999999999999999999"]
LINE_FORMS = ["{k}: {v}", "{k}:", "- {v}", "- {k}: {v}", "- {k}:", "-", "# {v}", "",
              "{k}: {v}  # note", "---", "...", "{k}:{v}", "-  {k}:  {v}"]


@st.composite
def block_documents(draw: st.DrawFn) -> str:
    """Texts made of the lines specs are written with, most of them near misses."""
    lines = []
    for _ in range(draw(st.integers(1, 14))):
        form = draw(st.sampled_from(LINE_FORMS))
        line = form.format(k=draw(st.sampled_from(KEYS)), v=draw(st.sampled_from(SCALARS)))
        lines.append(" " * draw(st.sampled_from([0, 0, 0, 1, 2, 2, 4, 6])) + line)
    return "\n".join(lines) + draw(st.sampled_from(["", "\n", "\n\n"]))


@settings(max_examples=examples(800))
@given(block_documents())
def test_a_document_of_near_misses_the_reader_reads_is_what_pyyaml_reads(text: str) -> None:
    assert_agrees_with_pyyaml(text)


@settings(max_examples=examples(800))
@given(st.text(alphabet=" -:#'\"[]{},.ab01~\n\t", max_size=40))
def test_any_short_text_the_reader_reads_is_what_pyyaml_reads(text: str) -> None:
    assert_agrees_with_pyyaml(text)


READABLE = ["v", "eth0", "10.0.0.0/8", "fd00::/64", "2001:db8::1", "a:b", "a#b", "(x)", "x y",
            "-x", "yes", "Off", "~", "null", "0", "-0", "+7", "100", "'q'", "'a: b'", '"d"',
            '"a #b"', "''", "a/b.c_d-e"]
"""Scalars in the style the reader reads (the sample above has the near misses)."""


@functools.cache
def trees(leaves: tuple[str, ...]) -> st.SearchStrategy[dict[str, Any]]:
    """Nested mappings and lists whose leaves are scalars' texts (made once per pool of
    leaves: a recursive strategy made in each draw was most of the draw's cost)."""
    node = st.recursive(
        st.sampled_from(leaves),
        lambda inner: st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "b", "cidr", "x.y", "_k", "a-b"]), inner,
                          max_size=3),
        max_leaves=12)
    return st.dictionaries(st.sampled_from(["apiVersion", "kind", "spec", "a", "b"]), node,
                           min_size=1, max_size=4)


_STEPS = st.sampled_from([2, 4])


@st.composite
def rendered(draw: st.DrawFn, tree: Any) -> str:
    """``tree`` written in block style, with the layout choices people make."""
    step = draw(_STEPS)
    indentless = draw(st.booleans())
    flow = draw(st.booleans())
    comments = draw(st.booleans())
    lines: list[str] = ["---"] if draw(st.booleans()) else []

    def note() -> str:
        return "  # note" if comments and draw(st.booleans()) else ""

    def scalars_only(value: Any) -> bool:
        return isinstance(value, list) and all(isinstance(item, str) for item in value)

    def entry(pad: str, head: str, value: Any, column: int) -> None:
        if isinstance(value, str):
            lines.append(f"{pad}{head} {value}{note()}")
        elif not value:
            lines.append(f"{pad}{head} {'[]' if isinstance(value, list) else '{}'}")
        elif flow and scalars_only(value) and not any(set(item) & set(":#'\",") for item in value):
            lines.append(f"{pad}{head} [{', '.join(value)}]{note()}")
        else:
            lines.append(f"{pad}{head}")
            nested = column if isinstance(value, list) and indentless else column + step
            block(value, nested)

    def block(value: Any, column: int) -> None:
        pad = " " * column
        if isinstance(value, dict):
            for key, child in value.items():
                entry(pad, f"{key}:", child, column)
            return
        for item in value:
            if isinstance(item, dict) and item:
                first, *rest = item.items()
                entry(pad, f"- {first[0]}:", first[1], column + 2)
                block(dict(rest), column + 2)
            elif isinstance(item, str):
                lines.append(f"{pad}- {item}{note()}")
            elif not item:
                lines.append(f"{pad}- {'[]' if isinstance(item, list) else '{}'}{note()}")
            else:
                lines.append(f"{pad}-")  # a list in a list: the reader leaves it to PyYAML
                block(item, column + 2)

    block(tree, 0)
    return "\n".join(lines) + "\n"


def edited(data: st.DataObject, text: str) -> str:
    """``text`` with one to four random edits: a character in or out, a line indented or twice."""
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(text)))
        edit = data.draw(st.sampled_from(["insert", "delete", "indent", "duplicate"]))
        if edit == "insert":
            character = data.draw(st.sampled_from(list(" -:#'\"[],{}&*!|>\n0yx.")))
            text = text[:at] + character + text[at:]
        elif edit == "delete":
            text = text[:at] + text[at + 1:]
        elif edit == "indent":
            start = text.rfind("\n", 0, at) + 1
            text = text[:start] + " " + text[start:]
        else:
            start, end = text.rfind("\n", 0, at) + 1, text.find("\n", at)
            end = len(text) if end < 0 else end
            text = text[:end] + "\n" + text[start:end] + text[end:]
    return text


def without_nested_lists(value: Any) -> bool:
    if isinstance(value, dict):
        return all(without_nested_lists(child) for child in value.values())
    if isinstance(value, list):
        return all(not (isinstance(item, list) and item) and without_nested_lists(item)
                   for item in value)
    return True


@settings(max_examples=examples(800))
@given(st.data())
def test_a_block_style_document_is_read_by_the_reader_as_pyyaml_reads_it(
        data: st.DataObject) -> None:
    tree = data.draw(trees(tuple(READABLE)))
    text = data.draw(rendered(tree))
    if without_nested_lists(tree):
        assert read(text) is not None, text
    assert_agrees_with_pyyaml(text)


@settings(max_examples=examples(800))
@given(st.data())
def test_a_document_with_any_scalar_the_reader_reads_is_what_pyyaml_reads(
        data: st.DataObject) -> None:
    text = data.draw(rendered(data.draw(trees((*READABLE, *SCALARS)))))
    assert_agrees_with_pyyaml(text)


@settings(max_examples=examples(800))
@given(st.data())
def test_a_document_with_random_edits_the_reader_reads_is_what_pyyaml_reads(
        data: st.DataObject) -> None:
    text = data.draw(rendered(data.draw(trees(tuple(READABLE)))))
    assert_agrees_with_pyyaml(edited(data, text))


@settings(max_examples=examples(300))
@given(st.data())
def test_the_example_spec_with_random_edits_the_reader_reads_is_what_pyyaml_reads(
        data: st.DataObject) -> None:
    assert_agrees_with_pyyaml(edited(data, (ROOT / "examples" / "seed.yaml").read_text()))


# One value of arbitrary characters, in every place a value or a key takes: the sample
# scalars above are near misses someone thought of; these are the ones nobody did.
VALUE_FORMS = ["k: {}", "k:\n- {}", "k:\n  - {}", "k: [{}]", "k: [{}, x]", "- k: {}",
               "k:\n  {}: 1", "{}: 1", "k: {}  # c", "k:\n  a: {}\n  b: 1"]


@settings(max_examples=examples(800))
@given(st.sampled_from(VALUE_FORMS),
       st.text(alphabet="ab01yYnNoOfFtTeE.-+_:#'\" []{},?!&*|>%@`~=<()/\\xX", min_size=1,
               max_size=8))
def test_one_value_of_any_characters_the_reader_reads_is_what_pyyaml_reads(
        form: str, value: str) -> None:
    assert_agrees_with_pyyaml(form.format(value))


CORPUS = sorted((HERE.parent / "hostile" / "corpus").iterdir())


def test_every_file_of_the_hostile_corpus_the_reader_reads_is_what_pyyaml_reads() -> None:
    for path in CORPUS:
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        assert_agrees_with_pyyaml(text)


def generated_spec(count: int) -> dict[str, Any]:
    return {"apiVersion": "k3snet.io/v1alpha1", "kind": "EgressSpec",
            "cluster": {"podCIDRs": ["10.42.0.0/16", "fd42::/56"],
                        "serviceCIDRs": ["10.43.0.0/16"]},
            "destinations": [{"cidr": f"11.0.{i}.0/24", "gateway": "192.168.1.1", "device": "eth0",
                              "exclude": [f"11.0.{i}.8/29"] if i % 3 == 0 else [], "metric": i}
                             for i in range(count)],
            "masquerade": {"mode": "destinations"}, "forward": {"accept": True},
            "sysctls": {"net.ipv4.conf.all.rp_filter": 2}, "note": None}


@pytest.mark.parametrize("style", [
    {}, {"indent": 4}, {"sort_keys": False}, {"explicit_start": True}, {"width": 20},
])
def test_specs_pyyaml_writes_are_read_by_the_reader_as_pyyaml_reads_them(
        style: dict[str, Any]) -> None:
    data = generated_spec(40)
    text = yaml.safe_dump(data, **style)
    assert read(text) == data, "the reader should read PyYAML's own block style"
    assert_agrees_with_pyyaml(text)


def test_flow_mappings_pyyaml_writes_are_left_to_pyyaml() -> None:
    text = yaml.safe_dump(generated_spec(4), default_flow_style=None)
    assert "{" in text
    assert read(text) is None


def test_the_example_spec_is_read_by_the_reader() -> None:
    text = (ROOT / "examples" / "seed.yaml").read_text()
    assert read(text) is not None
    assert_agrees_with_pyyaml(text)


def test_the_documented_spec_is_read_by_the_reader() -> None:
    import k3snet.spec  # noqa: PLC0415

    assert k3snet.spec.__doc__ is not None
    doc = k3snet.spec.__doc__.split("::\n\n", 1)[1].split("\n\n", 1)[0]
    text = "\n".join(line[4:] for line in doc.splitlines())
    assert read(text) is not None
    assert_agrees_with_pyyaml(text)


@pytest.mark.parametrize(("text", "data"), [
    ("---\na: b  # c\n", {"a": "b"}),
    ("a:\n- 1\n- x\nb: {}\n", {"a": [1, "x"], "b": {}}),
    ("a:\n    - k: 1\n      l: [x, 'y z', \"fd00::/64\"]  # c\n",
     {"a": [{"k": 1, "l": ["x", "y z", "fd00::/64"]}]}),
    ("a: 'x #y'  # c\nb: \"\"\nc:\nd: -1\n", {"a": "x #y", "b": "", "c": None, "d": -1}),
    ("a: yes\nb: ~\nc: a#b\nd: x y\n", {"a": True, "b": None, "c": "a#b", "d": "x y"}),
])
def test_what_the_reader_reads(text: str, data: dict[str, Any]) -> None:
    assert same(read(text), data)
    assert_agrees_with_pyyaml(text)


@pytest.mark.parametrize("text", [
    "a: 1\na: 2\n",                        # a duplicate key: PyYAML's loader gives its line
    "a: &x 1\nb: *x\n",                    # anchors and aliases
    "a: !!str 1\n",                        # a tag
    "a: |\n  text\n",                      # a literal block
    "a: one\n  two\n",                     # a plain scalar on two lines
    "a: 'x\n  y'\n",                       # a quoted one
    'a: "tab\\t"\n',                       # an escape
    "a:\tb\n",                             # a tab
    "a: b\r\n",                            # a carriage return
    "a: caf\u00e9\n",                      # non-ASCII text
    # not a str, a decimal int, a bool nor null:
    "a: 1.5\n", "a: 2001-01-01\n", "a: 010\n", "a: 1_000\n", "a: 1:20\n",
    "on: 1\n",                             # a key PyYAML reads as True
    "a: [b, [c]]\n", "a: {b: 1}\n",        # nested flow collections
    "- a\n- b\n",                          # not a mapping
    "a: 1\n---\nb: 2\n",                   # two documents
    "a: fd00::\n",                         # PyYAML: mapping values are not allowed here
    "# nothing\n", "",
])
def test_what_the_reader_leaves_to_pyyaml(text: str) -> None:
    assert read(text) is None


def test_a_duplicate_key_is_still_refused_with_its_line() -> None:
    from k3snet.errors import SpecError  # noqa: PLC0415

    with pytest.raises(SpecError, match=r"(?s)duplicate key 'kind'.*line 3"):
        load_mapping("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\nkind: Other\n", "spec.yaml")


def test_deep_nesting_is_left_to_pyyaml_without_recursing() -> None:
    text = "".join(" " * (2 * depth) + "- a:\n" for depth in range(3000)) + " " * 6000 + "- x\n"
    assert read("k:\n" + text) is None
