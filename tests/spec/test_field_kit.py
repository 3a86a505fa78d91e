"""The field-table kit on its own: checks (validators) and sections (fields), with small tables.

The spec's own table is judged through whole documents elsewhere; here each piece is
judged with tables made for the test, so every message, path and schema is pinned.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from k3snet.model.cidr import parse_network
from k3snet.spec.fields import (
    INVALID,
    Field,
    Reader,
    Section,
    boolean,
    check_section,
    converted,
    items,
    join,
    mapping,
    nested,
    nested_list,
    networks,
    opt_str,
    pairs,
    raw,
    read_section,
    string,
    strs,
    write_section,
)
from k3snet.spec.json_schema import dumps, field_schema, section_schema
from k3snet.spec.schema import DESTINATION
from k3snet.spec.validators import (
    int_in,
    integer,
    matches,
    one_of,
    optional,
    schema_of,
    with_schema,
)
from k3snet.testing.strategies import hostile_values
from tests.examples import examples


def test_int_in_messages_and_bounds() -> None:
    port = int_in(1, 65535)
    assert [port(v) for v in (1, 65535)] == [None, None]
    assert [port(v) for v in (0, 65536, True, 1.0, "1", None)] == [
        "must be 1..65535, got 0", "must be 1..65535, got 65536", "must be 1..65535, got True",
        "must be 1..65535, got 1.0",
        "must be 1..65535, got '1' (a text: write the number without quotes)",
        "must be 1..65535, got None"]
    assert int_in(1)(0) == "must be a positive integer, got 0"
    assert int_in(1)(10**30) is None
    assert int_in(2)(1) == "must be an integer >= 2, got 1"
    assert int_in(0, name="metric")(-1) == "metric must be an integer >= 0, got -1"
    assert int_in(0, name="metric")(0) is None
    assert int_in(1, 9, excluding=(3, 5))(5) == "must be 1..9 and not 3, 5, got 5"
    assert int_in(1, 9, excluding=(3, 5))(4) is None
    assert int_in(1, excluding=(7,))(7) == "must be a positive integer and not 7, got 7"


def test_each_check_records_its_schema() -> None:
    assert schema_of(int_in(1, 9, excluding=(3,))) == {
        "type": "integer", "minimum": 1, "maximum": 9, "not": {"enum": [3]}}
    assert schema_of(int_in(0)) == {"type": "integer", "minimum": 0}
    assert schema_of(integer()) == {"type": "integer"}
    assert schema_of(one_of("a", 2)) == {"enum": ["a", 2]}
    assert schema_of(matches("[a-z]+|x", "{value}")) == {
        "type": "string", "pattern": "^(?:[a-z]+|x)$",
        "not": {"type": "string", "pattern": "\\n$"}}  # "x\n": Python's "$" took it
    assert schema_of(optional(int_in(1, 2))) == {"type": "integer", "minimum": 1, "maximum": 2}
    assert schema_of(optional(lambda value: None)) == {}
    assert schema_of(len) is None

    def fn(value: Any) -> None:
        return None

    assert with_schema(fn, {"x": 1}) is fn
    assert schema_of(fn) == {"x": 1}


def test_integer_one_of_matches_optional() -> None:
    check = integer()
    assert [check(v) for v in (0, -5, 2**70)] == [None, None, None]
    assert check(False) == "expected an integer, got False"
    assert check("1") == "expected an integer, got '1' (a text: write the number without quotes)"
    choice = one_of("a", "b")
    assert (choice("a"), choice("b")) == (None, None)
    assert choice("c") == "expected one of a, b, got 'c'"
    assert choice(["a"]) == "expected one of a, b, got ['a']"
    assert one_of(1, 2, message="{value} is not one or two")(3) == "3 is not one or two"
    word = matches("[a-z]+", "{value!r} is not a word")
    assert word("abc") is None
    assert [word(v) for v in ("abc1", "1abc", "", 5)] == [
        "'abc1' is not a word", "'1abc' is not a word", "'' is not a word", "5 is not a word"]
    assert optional(word)(None) is None
    assert optional(word)("A") == "'A' is not a word"


@attrs.frozen
class Inner:
    name: str
    size: int = 1


@attrs.frozen
class Outer:
    flag: bool = False
    inner: Inner | None = None
    items: tuple[Inner, ...] = ()
    label: str | None = None
    nets: tuple[Any, ...] = ()
    words: tuple[str, ...] = ()
    opts: Mapping[str, Any] | tuple[()] = ()  # what mapping() read, or the default
    mode: str = "a"
    low: int = 0
    high: int = 0


INNER = Section(Inner, (
    Field("name", "name", string, required="required, a name"),
    Field("size", "size", raw, checks=(int_in(1, 9),)),
))


def _words(reader: Reader, value: Any, path: str) -> Any:
    # Not a text: INVALID too. An AttributeError here (a mapping in the list) made the
    # fast-path property fail at random: the full path met it before "range"'s TypeError.
    return INVALID if value == "bad" or not isinstance(value, str) else value.upper()


OUTER = Section(Outer, (
    Field("flag", "flag", boolean),
    nested("inner", "inner", INNER, omit_none=True),
    nested_list("items", "items", INNER),
    Field("label", "label", string, omit_none=True, checks=(optional(matches("[a-z]+", "no")),)),
    Field("nets", "nets", networks, strs),
    Field("words", "words", items(_words)),
    Field("opts", "opts", mapping("a mapping please"), pairs),
    Field("deep.mode", "mode", raw, checks=(one_of("a", "b"),)),
    Field("deep.range", None, raw, list, spread=("low", "high")),
))


def _read(value: Any) -> tuple[Any, list[str]]:
    reader = Reader()
    result = read_section(reader, OUTER, value, "top")
    return result, [str(p) for p in reader.problems]


def test_a_section_reads_every_key_into_its_class() -> None:
    obj, problems = _read({
        "flag": True, "inner": {"name": "x", "size": 3},
        "items": [{"name": "a"}, {"name": "b", "size": 2}], "label": "ok",
        "nets": ["10.0.0.0/8"], "words": ["a", "b"], "opts": {"k": 1, "2": "v"},
        "deep": {"mode": "b", "range": [1, 5]}})
    assert problems == []
    assert obj == Outer(flag=True, inner=Inner("x", 3), items=(Inner("a"), Inner("b", 2)),
                        label="ok", nets=(parse_network("10.0.0.0/8"),),
                        words=("A", "B"), opts={"k": 1, "2": "v"}, mode="b", low=1, high=5)
    assert write_section(OUTER, obj) == {
        "flag": True, "inner": {"name": "x", "size": 3},
        "items": [{"name": "a", "size": 1}, {"name": "b", "size": 2}], "label": "ok",
        "nets": ["10.0.0.0/8"], "words": ("A", "B"), "opts": {"k": 1, "2": "v"},
        "deep": {"mode": "b", "range": [1, 5]}}
    # omit_none: a key written only when set.
    assert write_section(OUTER, Outer()) == {
        "flag": False, "items": [], "nets": [], "words": (), "opts": {},
        "deep": {"mode": "a", "range": [0, 0]}}
    assert _read(None) == (Outer(), [])
    assert _read({"flag": None, "inner": None, "deep": None}) == (Outer(), [])


def test_problems_carry_their_paths_and_the_defaults_apply() -> None:
    obj, problems = _read({
        "flag": "yes", "inner": {"size": 0}, "items": [{"name": 1}, {"name": "ok", "size": 10},
                                                       {"name": "fine"}, "x"],
        "label": 5, "nets": ["10.0.0.1/8", "10.0.0.0/8"], "words": ["a", "bad", "c"],
        "opts": [], "deep": {"mode": "c", "other": 1}, "extra": 1})
    assert problems == [
        "top.extra: unknown key (known: flag, inner, items, label, nets, words, opts, deep)",
        "top.deep.other: unknown key (known: mode, range)",
        "top.flag: expected true or false, got 'yes' (a text: write true or false "
        "without quotes)",
        "top.inner.name: required, a name",
        "top.inner.size: must be 1..9, got 0",
        "top.items[0].name: expected a string, got 1",
        "top.items[3]: expected a mapping, got a string",
        "top.items[3].name: required, a name",
        "top.label: expected a string, got 5",
        "top.nets[0]: '10.0.0.1/8' has host bits set (did you mean 10.0.0.0/8?)",
        "top.opts: a mapping please",
    ]
    # Bad values are left out (their defaults apply); good siblings are kept. The
    # checks of a built object are check_section's (run by validate), not reading's.
    assert obj == Outer(items=(Inner("ok", 10), Inner("fine")),
                        nets=obj.nets, words=("A", "C"), mode="c")
    assert [str(n) for n in obj.nets] == ["10.0.0.0/8"]
    found: list[Any] = []
    check_section(OUTER, obj, "top", found)
    assert [str(p) for p in found] == ["top.deep.mode: expected one of a, b, got 'c'",
                                       "top.items[0].size: must be 1..9, got 10"]


def test_check_section_walks_nested_objects_with_paths() -> None:
    obj = Outer(inner=Inner("x", 0), items=(Inner("a"), Inner("b", 12)), label="UP", mode="z")
    found: list[Any] = []
    check_section(OUTER, obj, "", found)
    assert [str(p) for p in found] == [
        "label: no", "deep.mode: expected one of a, b, got 'z'", "inner.size: must be 1..9, got 0",
        "items[1].size: must be 1..9, got 12"]
    found = []
    check_section(OUTER, Outer(), "", found)
    assert found == []


def test_the_reader_kit() -> None:
    reader = Reader()
    assert reader.mapping(None, "p", ("a",)) == {}
    assert reader.mapping([1], "p", ("a",)) == {}
    assert reader.mapping({"a": 1, 2: 3}, "", ("a", "b")) == {"a": 1, 2: 3}
    assert reader.sequence(None, "s") == ()
    assert reader.sequence("abc", "s") == ()
    assert reader.sequence({"a": 1}, "s") == ()
    assert reader.sequence((1, 2), "s") == (1, 2)
    assert reader.convert("5", "c", int) == 5
    assert reader.convert("x", "c", int) is INVALID
    assert reader.networks(["10.0.0.0/8", "x"], "n") == reader.networks(["10.0.0.0/8"], "n")
    assert [str(p) for p in reader.problems] == [
        "p: expected a mapping, got a list", "2: unknown key (known: a, b)",
        "s: expected a list, got a string", "s: expected a list, got a mapping",
        "c: invalid literal for int() with base 10: 'x'", "n[1]: 'x' is not a valid CIDR"]
    assert (join("", "k"), join("a.b", "k")) == ("k", "a.b.k")
    assert repr(INVALID) == "INVALID"
    assert converted(int)(reader, "7", "q") == 7
    assert converted(int)(reader, None, "q") is INVALID
    assert str(reader.problems[-1]).startswith("q: int() argument must be")
    assert raw(reader, [1], "r") == [1]
    assert (opt_str(None), opt_str(5)) == (None, "5")
    assert strs([1, "a"]) == ["1", "a"]
    assert pairs((("a", 1), ("b", 2))) == {"a": 1, "b": 2}
    assert OUTER.field("deep.mode").attr == "mode"
    with pytest.raises(KeyError, match=r"^'mode'$"):
        OUTER.field("mode")
    assert OUTER.keys == ("flag", "inner", "items", "label", "nets", "words", "opts", "deep")
    assert OUTER.nested == {"deep": ("mode", "range")}
    assert schema_of(items(converted(int))) == {"type": "array", "items": {}}
    assert schema_of(converted(int)) == {}
    assert schema_of(mapping("m")) == {"type": "object"}


def test_inputs_and_prepare() -> None:
    def prepare(reader: Reader, data: Any, path: str) -> Any:
        if "size_text" not in data:
            return data
        return {"name": "from-text", **data, "size": int(data["size_text"])}

    section = Section(Inner, INNER.fields, inputs=("size_text",), prepare=prepare)
    assert section.keys == ("name", "size", "size_text")
    reader = Reader()
    assert read_section(reader, section, {"size_text": "4"}, "") == Inner("from-text", 4)
    assert read_section(reader, section, {"name": "n", "size_text": "5"}, "") == Inner("n", 5)
    assert read_section(reader, section, {"name": "n"}, "") == Inner("n")
    assert reader.problems == []


@attrs.frozen
class Shapes:
    listed: tuple[str, ...] = attrs.field(factory=lambda: ("x",))
    choice: str | None = None
    either: Any = 1
    open_: Any = None
    both: tuple[int, int] = (0, 0)
    first: int = 0
    second: int | None = None


SHAPES = Section(Shapes, (
    Field("listed", "listed", items(string), list, doc="Listed."),
    Field("choice", "choice", raw, checks=(one_of("a", None),)),
    Field("either", "either", raw, schema={"type": ["integer", "string", "null"], "oneOf": [
        {"type": "integer"}, {"type": "string"}]}, doc="Either."),
    Field("open", "open_", converted(parse_network), str, doc="A network.", example="10.0.0.0/8"),
    Field("pair", None, raw, list, spread=("first", "second")),
    Field("const", None, raw, schema={"const": "c"}, required="required"),
))


def test_the_json_schema_of_a_small_table() -> None:
    schema = section_schema(SHAPES)
    properties = schema["properties"]
    assert properties["listed"] == {"type": ["array", "null"], "items": {"type": "string"},
                                    "description": "Listed.", "default": ["x"]}
    assert properties["choice"] == {"enum": ["a", None]}
    assert properties["either"] == {"type": ["integer", "string", "null"], "oneOf": [
        {"type": "integer"}, {"type": "string"}, {"type": "null"}], "description": "Either.",
        "default": 1}
    assert properties["open"] == {
        "type": ["string", "null"], "pattern": "^\\s*[0-9A-Fa-f.:]+(/[0-9]{1,3})?\\s*$",
        "description": "A network. Value: a CIDR, such as 192.168.2.0/24 or fd00::/64.",
        "examples": ["10.0.0.0/8"]}
    assert properties["pair"] == {}  # one of its attributes has no default
    assert properties["const"] == {"const": "c"}
    assert schema["required"] == ["const"]
    assert schema["additionalProperties"] is False
    assert field_schema(SHAPES, SHAPES.field("pair")) == {}
    assert field_schema(OUTER, OUTER.field("deep.range")) == {"default": [0, 0]}
    nested_schema = section_schema(OUTER)["properties"]
    assert nested_schema["deep"]["type"] == ["object", "null"]
    assert list(nested_schema["deep"]["properties"]) == ["mode", "range"]
    assert nested_schema["items"]["type"] == ["array", "null"]
    assert nested_schema["items"]["items"]["required"] == ["name"]
    assert "default" not in nested_schema["inner"]


def test_the_schema_file_is_indented_utf8_with_a_final_newline() -> None:
    # Reviewable diffs: non-ASCII text (a doc in another language) is written as is.
    assert dumps({"doc": "Adresse du nœud", "n": [1]}) == (
        '{\n  "doc": "Adresse du nœud",\n  "n": [\n    1\n  ]\n}\n')


NETWORK = parse_network("10.0.0.0/8")


@attrs.frozen
class Corners:
    net: Any = NETWORK
    need: int = 0
    typed: Any = None
    kinds: Any = None
    version: Any = None


CORNERS = Section(Corners, (
    Field("net", "net", raw),
    Field("deep.need", "need", raw, required="required"),
    Field("deep.er.key", "typed", raw),
    Field("kinds", "kinds", raw, schema={"type": ["integer", "string"]}),
    Field("version", None, raw, schema={"type": "string", "const": "v1"}),
), inputs=("text",))


def test_the_schema_writes_defaults_as_json_nests_one_level_and_keeps_constants() -> None:
    schema = section_schema(CORNERS)
    properties = schema["properties"]
    # A default JSON cannot hold is written as its text.
    assert properties["net"] == {"default": "10.0.0.0/8"}
    # A dotted key nests once: the rest of the key is the inner key.
    assert list(properties["deep"]["properties"]) == ["need", "er.key"]
    # A required key of a nested mapping is not required at the top.
    assert "required" not in schema
    # A type list gets null added; a constant is never nullable.
    assert properties["kinds"] == {"type": ["integer", "string", "null"]}
    assert properties["version"] == {"type": "string", "const": "v1"}
    # An input without a recorded schema takes any value.
    assert properties["text"] == {}


def test_a_list_key_given_something_else_is_a_problem_at_its_path() -> None:
    assert _read({"words": "a", "items": {"name": "x"}})[1] == [
        "top.items: expected a list, got a mapping", "top.words: expected a list, got a string"]


def test_a_key_with_two_dots_is_written_nested_once() -> None:
    assert write_section(CORNERS, Corners())["deep"] == {"need": 0, "er.key": None}


def _full_path_only(section: Section) -> Section:
    """``section`` read only through read_section's full path (the table order)."""
    slow = attrs.evolve(section)
    object.__setattr__(slow, "_by_key", None)
    return slow


_FLAT = Section(Outer, (
    Field("flag", "flag", boolean),
    Field("label", "label", string, omit_none=True, checks=(optional(matches("[a-z]+", "no")),),
          required="required, a label"),
    Field("nets", "nets", networks, strs),
    Field("words", "words", items(_words)),
    Field("more", "items", items(converted(parse_network))),
    Field("range", None, raw, list, spread=("low", "high")),
))


_KEYS = st.sampled_from(sorted({*DESTINATION.keys, *_FLAT.keys, "", "x", "cidrs"}))
_VALUES: st.SearchStrategy[object] = st.sampled_from([
    "10.0.0.0/8", "192.168.1.1", "eth0", 100, True, ["10.0.0.0/24"], [{"name": "a"}],
    {"name": "b", "size": 2}, [{}], [1, 2], ["a"], ["bad"], "bad", None, "10.0.0.1/8",
    " 10.1.0.0/16", ["10.0.0.0/8", "nope"]])


@settings(max_examples=examples(300))
@given(st.sampled_from([DESTINATION, _FLAT]), st.one_of(
    st.dictionaries(_KEYS, st.one_of(_VALUES, _VALUES, hostile_values()), max_size=8),
    hostile_values()))
@example(_FLAT, {"label": "x", "more": ["nope"], "nets": ["nope"]})
# Each path meets another key's failure first (the fast path range's, the full path words').
@example(_FLAT, {"label": "x", "range": 100, "words": [{}]})
@example(DESTINATION, {"exclude": ["nope"], "cidr": "10.0.0.0/8", "gateway": "x"})
def test_the_fast_path_reads_what_the_table_order_path_reads(section: Section,
                                                              document: Any) -> None:
    # read_section first reads only the keys given (in a section of plain keys), and
    # falls back to the full path on any problem: the object, the problems, their paths
    # and their order are the same.
    assert section._by_key is not None
    assert OUTER._by_key is None  # nested objects: the full path only
    fast, slow = Reader(), Reader()
    try:
        got = read_section(fast, section, document, "d[3]")
    except Exception as exc:  # noqa: BLE001 - the same failure on both paths
        with pytest.raises(type(exc)):
            read_section(slow, _full_path_only(section), document, "d[3]")
        return
    assert got == read_section(slow, _full_path_only(section), document, "d[3]")
    assert fast.problems == slow.problems
