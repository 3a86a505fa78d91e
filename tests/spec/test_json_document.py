"""JSON specs are read by ``json``: whenever that shortcut answers, PyYAML reads the same data.

JSON is YAML, and automation often writes specs as JSON; PyYAML reads them ~20x
slower than ``json``. The shortcut (``k3snet.spec.source._json_document``) must
never answer differently from PyYAML's safe loaders, types included, nor answer
where they refuse, and must answer for the JSON ``json.dumps`` writes.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from k3snet.spec.source import _json_document, load_mapping
from tests.examples import examples
from tests.spec import test_blockstyle
from tests.spec.test_blockstyle import edited


def assert_agrees_with_pyyaml(text: str) -> None:
    test_blockstyle.assert_agrees_with_pyyaml(text, _json_document)


STRINGS = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=12) \
    | st.sampled_from(["yes", "on", "1e3", "0x1f", "010", "~", "null", "10.0.0.0/8", "fd00::",
                       "a: b", "#c", "- x", "", "caf\u00e9", "tab\there"])
LEAVES = (STRINGS | st.integers() | st.integers(-10, 10) | st.booleans() | st.none()
          | st.floats(allow_nan=True))
DOCUMENTS = st.dictionaries(STRINGS, st.recursive(
    LEAVES, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(STRINGS, inner,
                                                                       max_size=4),
    max_leaves=15), max_size=5)
LAYOUTS = st.sampled_from([{}, {"indent": 2}, {"separators": (",", ":")},
                           {"indent": 1, "separators": (", ", ": ")}, {"ensure_ascii": False}])


@settings(max_examples=examples(600))
@given(DOCUMENTS, LAYOUTS)
def test_a_json_document_read_by_json_is_what_pyyaml_reads(data: dict[str, Any],
                                                           layout: dict[str, Any]) -> None:
    assert_agrees_with_pyyaml(json.dumps(data, **layout))


@settings(max_examples=examples(600))
@given(st.data(), DOCUMENTS, LAYOUTS)
def test_a_json_document_with_random_edits_read_by_json_is_what_pyyaml_reads(
        data: st.DataObject, document: dict[str, Any], layout: dict[str, Any]) -> None:
    assert_agrees_with_pyyaml(edited(data, json.dumps(document, **layout)))


def test_json_that_pyyaml_reads_the_same_is_read_by_json() -> None:
    spec = {"apiVersion": "k3snet.io/v1alpha1", "kind": "EgressSpec",
            "destinations": [{"cidr": f"11.0.{i}.0/24", "gateway": "192.168.1.1",
                              "device": "eth0", "metric": i, "exclude": []}
                             for i in range(50)],
            "forward": {"accept": True}, "note": None}
    for layout in ({}, {"indent": 2}, {"separators": (",", ":")}):
        text = json.dumps(spec, **layout)
        assert _json_document(text) == spec
        assert_agrees_with_pyyaml(text)
    assert load_mapping(json.dumps(spec), "spec.json") == spec


@pytest.mark.parametrize("text", [
    '{"metric": 1.5}', '{"metric": 1e3}', '{"a": NaN}',  # a float: YAML 1.1 differs on some
    '{"a": "caf\\u00e9"}', '{"a": "q\\"q"}',             # escapes
    '{"a": "caf\u00e9"}', '{"a":\t1}', '{"a": 1}\r\n',  # non-ASCII, a tab, a carriage return
    '{"a": 1, "a": 2}',                                   # a duplicate key: PyYAML says where
    '[{"a": 1}]', '{"a": 1} # c', '{"a": 1,}', "",        # not a JSON object
])
def test_what_json_leaves_to_pyyaml(text: str) -> None:
    assert _json_document(text) is None


def test_a_duplicate_key_in_json_is_still_refused_with_its_line() -> None:
    from k3snet.errors import SpecError  # noqa: PLC0415

    with pytest.raises(SpecError, match=r"(?s)duplicate key 'kind'.*line 1"):
        load_mapping('{"kind": "EgressSpec", "kind": "Other"}', "spec.json")


@pytest.mark.parametrize("text", [
    '{"00"\n: []}',  # found by the random edits: a key's ":" on the next line
    '{"a" \r\n :1}',
    '{"a": {"b"\n:1}}',
    '{"' + "k" * 1100 + '": 1}',  # YAML's simple keys end within 1024 characters
    '{"a": {"' + "k" * 600 + '"' + " " * 600 + ': 1}}',
    '{"a": 1,"b"' + " " * 1100 + ":2}",
])
def test_keys_pyyaml_cannot_read_as_simple_keys_are_left_to_it(text: str) -> None:
    assert json.loads(text) is not None  # valid JSON, which PyYAML refuses
    assert _json_document(text) is None
    assert_agrees_with_pyyaml(text)


def test_long_values_and_a_colon_after_a_line_break_elsewhere_are_still_read_by_json() -> None:
    text = '{"a": "' + "v" * 2000 + '",\n "b":\n [1,\n 2]}'
    assert _json_document(text) == {"a": "v" * 2000, "b": [1, 2]}
    assert_agrees_with_pyyaml(text)
