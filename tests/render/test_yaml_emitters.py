"""libyaml's emitter writes every document k3snet renders byte for byte as PyYAML's own.

:func:`~k3snet.render.manifests.dump_manifests` and the spec text of the agent's
ConfigMap are written by libyaml's emitter (``yaml.CSafeDumper``) when PyYAML has it:
PyYAML's own took seconds on a spec of 10,000 destinations (docs/performance.md,
"Rendering manifests"). The two emitters do not always agree (a double-quoted string
folded at the width, a long or odd key, a ``|+`` block): the documents where they may
differ are written by PyYAML's own, which the lowest dependencies may be left with anyway.
Each test compares the bytes of both: PyYAML's own is had by hiding ``CSafeDumper``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

yaml = pytest.importorskip("yaml")

from k3snet.render import manifests  # noqa: E402 - after the importorskip
from k3snet.render.manifests import dump_manifests, render_manifests  # noqa: E402
from k3snet.spec import Destination, Spec  # noqa: E402
from k3snet.testing.strategies import hostile_text, specs  # noqa: E402
from tests.examples import examples  # noqa: E402

pytestmark = pytest.mark.skipif(not hasattr(yaml, "CSafeDumper"),
                                reason="PyYAML without libyaml: one emitter only")

# Text the two emitters are most likely to write otherwise: YAML's indicators, line
# breaks and spaces next to them, quotes, words some reader takes for no text.
_TRICKY = st.lists(st.sampled_from(["a", " ", "  ", "word", ": ", " #", "#", "\n", "- ",
                                    "'", '"', "yes", "09", "|", ">", "\t", "\r", "é",
                                    "\x85", "\u2028", "\ufeff", "\x00", "\\"]),
                   max_size=120).map("".join)
_TEXT = st.one_of(hostile_text(), _TRICKY, st.text(), st.text(max_size=400))
_SMALL = Spec(destinations=[Destination("192.168.2.0/24")])
_DOCUMENTS = st.lists(st.recursive(
    _TEXT | st.integers() | st.booleans() | st.none(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=8).map(lambda value: {"value": value}), min_size=1, max_size=3)


@contextmanager
def _emitter(which: str) -> Iterator[None]:
    """``_dump`` with PyYAML's own emitter (``"pure"``), or with libyaml's whatever
    the documents (``"libyaml"``: what the check before it would have been without)."""
    with pytest.MonkeyPatch.context() as patch:
        if which == "pure":
            patch.delattr(yaml, "CSafeDumper")
        else:
            patch.setattr(manifests, "_libyaml_writes_alike", lambda documents: True)
        yield


def _written(which: str, documents: list[Any], **options: Any) -> str:
    with _emitter(which):
        return manifests._dump(*documents, **options)


def _manifest_options() -> dict[str, Any]:
    return {"explicit_start": True, "width": 100}  # what dump_manifests passes


@settings(deadline=None)
@given(_DOCUMENTS, st.sampled_from([{}, _manifest_options()]))
def test_libyaml_writes_documents_judged_alike_as_pyyaml_does_and_the_dump_always_does(
        documents: list[dict[str, Any]], options: dict[str, Any]) -> None:
    pure = _written("pure", documents, **options)
    assert manifests._dump(*documents, **options) == pure
    if manifests._libyaml_writes_alike(documents):
        assert _written("libyaml", documents, **options) == pure


@settings(max_examples=30, deadline=None)  # each example renders every manifest three times
@given(specs(max_destinations=6), st.one_of(st.none(), _TEXT))
def test_every_rendered_manifest_is_the_same_bytes_from_either_emitter(
        spec: Spec, spec_text: str | None) -> None:
    objs = render_manifests(spec, spec_text=spec_text, node_restriction=True)
    with _emitter("pure"):
        pure = dump_manifests(render_manifests(spec, spec_text=spec_text,
                                               node_restriction=True))
    assert dump_manifests(objs) == pure
    if manifests._libyaml_writes_alike(objs):
        with _emitter("libyaml"):
            assert dump_manifests(objs) == pure


@settings(max_examples=30, deadline=None)
@given(specs(max_destinations=6))
def test_a_rendered_spec_is_written_by_libyaml(spec: Spec) -> None:
    # What k3snet renders from a spec without a text of its own is judged alike: the
    # fast emitter is the one used, not a fallback taken every time.
    objs = render_manifests(spec)
    assert manifests._libyaml_writes_alike(objs)


def test_dump_uses_libyaml_when_pyyaml_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    used = []
    real = yaml.dump_all

    def spy(documents: Any, **options: Any) -> Any:
        used.append(options["Dumper"])
        return real(documents, **options)

    monkeypatch.setattr(yaml, "dump_all", spy)
    dump_manifests(render_manifests(_SMALL))
    # The spec text of the agent's ConfigMap, then the manifests.
    assert len(used) == 2
    assert all(issubclass(dumper, yaml.CSafeDumper) for dumper in used)


def test_without_libyaml_pyyamls_own_emitter_writes() -> None:
    objs = render_manifests(_SMALL)
    with _emitter("pure"):
        assert not hasattr(yaml, "CSafeDumper")
        pure = dump_manifests(objs)
    assert pure == dump_manifests(objs)
    assert "kind: DaemonSet" in pure


# Where the two emitters write otherwise (libyaml 0.2.6 of the PyYAML 6.0.x wheels): each is judged
# unlike, so PyYAML's own writes it.
UNLIKE = {
    "empty key": [{"": "x"}],
    "key with a carriage return": [{"\r": "x"}],
    "key of 125 characters": [{"0" * 125: "x"}],
    "escape folded at the width": [{"0" * 72: "0\x1f0"}],
    "space ending a line": [{"0" * 75: "0 \n"}],
    "|+ block before more of the document": [{"a": "x\n\n", "b": 1}],
    "line break alone before more of the document": [{"a": "\n", "b": "c"}],
}


@pytest.mark.parametrize("documents", UNLIKE.values(), ids=list(UNLIKE))
def test_documents_the_emitters_write_otherwise_are_written_by_pyyamls_own(
        documents: list[Any]) -> None:
    pure = _written("pure", documents)
    assert _written("libyaml", documents) != pure
    assert not manifests._libyaml_writes_alike(documents)
    assert manifests._dump(*documents) == pure


# Printable ASCII the check lets through, made of what the emitters decide on: YAML 1.1
# words and numbers the representer quotes, indicators leading or inside, spaces and
# line breaks, words long enough to fold a line at the width, leading spaces of a | block
# (its indentation indicator). _TEXT above is mostly other characters, so a document of
# it was nearly always judged unlike: these classes went untried.
_ASCII_PIECES = st.sampled_from([
    "a", "word", " ", "  ", "\n", "\n  ", "yes", "no", "on", "off", "~", "null", "1e3",
    "0x1F", "0o17", "1_000", ".inf", ".nan", "2026-12-07", "12:30:00", "=", "<<", "-", "- ",
    "?", ":", ": ", "!", "&", "*", "%", "@", "`", "|", ">", "'", '"', "#", " #", "{", "[",
    ",", "...", "---", "\\", "x" * 40, "fold " * 12])


def _alike_form(text: str) -> str:
    """``text`` without a space ending a line or a blank line ending it (what the check
    refuses: those are judged unlike, tried above)."""
    if "\n" not in text:
        return text
    body = "\n".join(line.rstrip(" ") for line in text.split("\n")).rstrip("\n")
    return body + "\n" if body and text.endswith("\n") else body


_ASCII_TEXT = st.lists(_ASCII_PIECES, max_size=30).map("".join).map(_alike_form)
_ASCII_KEY = st.lists(_ASCII_PIECES.filter(lambda piece: "\n" not in piece),
                      min_size=1, max_size=12).map(lambda pieces: "".join(pieces)[:100])
_ASCII_LEAF = (_ASCII_TEXT | st.integers() | st.booleans() | st.none()
               | st.floats(allow_nan=False))
_ASCII_DOCUMENTS = st.lists(st.recursive(
    _ASCII_LEAF,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_ASCII_KEY, inner, max_size=3),
    max_leaves=12), min_size=1, max_size=3)


@settings(max_examples=examples(300), deadline=None)
@given(_ASCII_DOCUMENTS, st.sampled_from([{}, _manifest_options()]))
def test_printable_ascii_documents_of_yaml_indicators_are_the_same_bytes_from_either_emitter(
        documents: list[Any], options: dict[str, Any]) -> None:
    # Any document, a scalar alone too (PyYAML's own ends a plain one with "...",
    # libyaml's not): what _dump writes is PyYAML's own bytes.
    pure = _written("pure", documents, **options)
    assert manifests._dump(*documents, **options) == pure
    if all(isinstance(document, (dict, list)) for document in documents):
        assert manifests._libyaml_writes_alike(documents)  # the fast emitter, tried here
        assert _written("libyaml", documents, **options) == pure


@pytest.mark.parametrize("document", ["abc", 1, 1.5, True, None],
                         ids=["str", "int", "float", "bool", "None"])
def test_a_document_of_a_plain_scalar_alone_is_written_by_pyyamls_own(document: Any) -> None:
    pure = _written("pure", [document])
    assert pure.endswith("\n...\n")
    assert _written("libyaml", [document]) != pure
    assert not manifests._libyaml_writes_alike([document])
    assert manifests._dump(document) == pure
