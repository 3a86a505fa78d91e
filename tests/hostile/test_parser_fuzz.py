"""The readers of iptables-save, ``nft -j`` and ``ip -j`` output, fuzzed (issue 8, item 5).

Inputs are structured mutations of real outputs recorded in lab namespaces
(``tests/data/``, ``tests/doctor/golden/``): lines deleted, duplicated, swapped or
cut; words replaced by other words of the same output or by hostile text; JSON
values replaced, removed, duplicated or given another type; and plain random text.
Only each reader's own error may escape, never a ``KeyError``, ``TypeError``,
``IndexError`` ...:

============================================  ============================================
reader                                        its error
============================================  ============================================
``IptablesBackend.observe`` (iptables-save)   :class:`~k3snet.errors.BackendError`
``backends.iptables.save.parse_save``         none: it skips what it cannot read
``NftablesBackend.observe`` (``nft -j``)      :class:`~k3snet.errors.BackendError`
``facts_from_ip_json`` (``ip -j``)            :class:`~k3snet.errors.BackendError`
``NodeState.from_capture`` (doctor: all       :class:`~k3snet.doctor.BundleError`
three formats, and its routing readers)
============================================  ============================================
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from k3snet.backends.iptables import IptablesBackend
from k3snet.backends.iptables.save import parse_save
from k3snet.backends.nftables import NftablesBackend
from k3snet.backends.nftables.kernel import listed_items
from k3snet.doctor import BundleError, NodeCapture, NodeState
from k3snet.errors import BackendError
from k3snet.facts import facts_from_ip_json
from k3snet.testing import strategies
from tests.examples import examples
from tests.iptables.test_recorded import FakeKernel
from tests.nftables.test_recorded import RecordedKernel

DATA = Path(__file__).resolve().parents[1] / "data"
GOLDEN = Path(__file__).resolve().parents[1] / "doctor" / "golden"
SAVES = {(mode, family): (DATA / "iptables" / f"{mode}-v{family}.save").read_text()
         for mode in ("nft", "legacy") for family in (4, 6)}
RULESETS = sorted(p.name.removesuffix(".ruleset.json")
                  for p in (DATA / "nftables").glob("*.ruleset.json"))
IP_JSON = json.loads((DATA / "netlink" / "dumps.json").read_text())["ip_json"]
CAPTURES = sorted(p.name for p in GOLDEN.iterdir() if (p / "addr.json").exists())
FUZZ = settings(max_examples=examples(50), deadline=None)

# ------------------------------------------------------------------ mutations

_WORDS = sorted({word for text in SAVES.values() for word in text.split()})


def _scalars() -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), st.booleans(), st.integers(-(2**64), 2**64),
                     st.floats(allow_nan=False), st.text(max_size=8),
                     strategies.hostile_text(max_pieces=2, max_long=300))


def _junk(keys: list[str]) -> st.SearchStrategy[Any]:
    return st.recursive(_scalars(), lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(keys) | st.text(max_size=4), inner, max_size=3)),
        max_leaves=6)


def _paths(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*path, index))


def _keys(node: Any) -> list[str]:
    return sorted({p[-1] for p in _paths(node) if p and isinstance(p[-1], str)})


@st.composite
def mutated_json(draw: st.DrawFn, original: Any) -> Any:
    """``original`` with one to four structural mutations."""
    data = copy.deepcopy(original)
    junk = _junk(_keys(original) or ["x"])
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(list(_paths(data))))
        if not path:
            data = draw(junk)
            continue
        parent: Any = data
        for part in path[:-1]:
            parent = parent[part]
        key = path[-1]
        action = draw(st.sampled_from(("replace", "delete", "duplicate", "retype")))
        if action == "replace":
            parent[key] = draw(junk)
        elif action == "delete":
            del parent[key]
        elif action == "duplicate" and isinstance(parent, list):
            parent.insert(key, copy.deepcopy(parent[key]))
        else:
            value = parent[key]
            parent[key] = draw(st.sampled_from(
                (str(value), [value], {"x": value}, None, 0, json.dumps(value))))
    return data


@st.composite
def mutated_text(draw: st.DrawFn, original: str) -> str:
    """``original`` with one to five line or word mutations (or random text)."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=200))
    lines = original.splitlines()
    for _ in range(draw(st.integers(1, 5))):
        if not lines:
            lines = [draw(st.text(max_size=20))]
        i = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(("delete", "duplicate", "swap", "cut", "word", "word",
                                       "insert")))
        if action == "delete":
            del lines[i]
        elif action == "duplicate":
            lines.insert(i, lines[i])
        elif action == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif action == "cut":
            lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))]
        elif action == "insert":
            lines.insert(i, draw(strategies.hostile_text(max_pieces=3, max_long=300)))
        else:
            words = lines[i].split(" ")
            j = draw(st.integers(0, len(words) - 1))
            words[j] = draw(st.sampled_from(_WORDS) | st.text(max_size=6)
                            | strategies.hostile_text(max_pieces=2, max_long=100))
            lines[i] = " ".join(words)
    return "\n".join(lines) + draw(st.sampled_from(("", "\n")))


# ------------------------------------------------------------------ iptables-save


@FUZZ
@given(st.sampled_from(("nft", "legacy")), st.data())
def test_the_iptables_backend_reads_mutated_saves_with_only_its_own_error(
        mode: str, data: st.DataObject) -> None:
    saves = {(mode, family): data.draw(mutated_text(SAVES[(mode, family)]))
             for family in (4, 6)}
    for text in saves.values():
        parse_save(text)  # forgiving: never raises
    backend = IptablesBackend(mode=mode, kernel=FakeKernel(saves))  # type: ignore[arg-type]
    try:
        with backend:
            backend.observe()
    except BackendError:
        pass


# ------------------------------------------------------------------ nft -j


class MutatingKernel(RecordedKernel):
    """A recorded kernel whose every ``nft -j list`` output is mutated before it is read,
    then taken apart by the function :class:`~k3snet.backends.nftables.kernel.Libnftables`
    uses."""

    def __init__(self, scenario: str, data: st.DataObject) -> None:
        super().__init__(scenario)
        self.data = data

    def list(self, kind: str, **ref: str) -> list[dict[str, Any]] | None:
        found = super().list(kind, **ref)
        if found is None:
            return None
        output = json.dumps(self.data.draw(mutated_json({"nftables": found})))
        return listed_items(output, kind)


@FUZZ
@given(st.sampled_from(RULESETS), st.booleans(), st.data())
def test_the_nftables_backend_reads_mutated_listings_with_only_its_own_error(
        scenario: str, foreign: bool, data: st.DataObject) -> None:
    _observe_with_only_its_own_error(MutatingKernel(scenario, data), foreign=foreign)


def _observe_with_only_its_own_error(kernel: RecordedKernel, *, foreign: bool) -> None:
    """Observe through ``kernel``: a :class:`BackendError` is fine, any other error fails."""
    backend = NftablesBackend(kernel=lambda: kernel, observe_foreign=foreign)
    try:
        with backend:
            backend.observe()
    except BackendError:
        pass


class UnreadableJumpKernel(RecordedKernel):
    """A recorded kernel whose jumps in other tables name their target in a form k3snet
    cannot read (a string, not ``{"target": ...}``): the reduced example
    the fuzz test above found."""

    def list(self, kind: str, **ref: str) -> list[dict[str, Any]] | None:
        found = super().list(kind, **ref)
        if found is None or ref.get("table") == "k3snet":
            return found
        found = copy.deepcopy(found)
        for item in found:
            for expr in item.get("rule", {}).get("expr", []):
                if isinstance(expr.get("jump"), dict):
                    expr["jump"] = str(expr["jump"])
        return found


@pytest.mark.parametrize("scenario", RULESETS)
def test_a_jump_whose_target_is_unreadable_is_not_followed(scenario: str) -> None:
    _observe_with_only_its_own_error(UnreadableJumpKernel(scenario), foreign=True)


# ------------------------------------------------------------------ ip -j


@FUZZ
@given(st.data())
def test_node_facts_read_mutated_ip_json_with_only_their_own_error(data: st.DataObject) -> None:
    addresses = json.loads((GOLDEN / "healthy" / "addr.json").read_text())
    routes = [*IP_JSON["route4"][:6], *IP_JSON["route6"][:6]]
    with contextlib.suppress(BackendError):
        facts_from_ip_json(data.draw(mutated_json(addresses)), data.draw(mutated_json(routes)))


# ------------------------------------------------------------------ the doctor's readers

_TEXT_FILES = ("iptables-nft-v4.save", "iptables-nft-v6.save", "iptables-legacy-v4.save",
               "iptables-legacy-v6.save", "sysctl.txt")


@FUZZ
@given(st.sampled_from(CAPTURES), st.data())
def test_the_doctor_reads_mutated_captures_with_only_its_own_error(
        name: str, data: st.DataObject) -> None:
    capture = NodeCapture.read_dir(GOLDEN / name)
    texts = dict(capture.texts)
    for file in data.draw(st.sets(st.sampled_from(sorted(texts)), min_size=1, max_size=3)):
        if file in _TEXT_FILES or not file.endswith(".json"):
            texts[file] = data.draw(mutated_text(texts[file]))
        else:
            try:
                original = json.loads(texts[file])
            except ValueError:
                original = None
            texts[file] = json.dumps(data.draw(mutated_json(original)))
    with contextlib.suppress(BundleError):
        NodeState.from_capture(NodeCapture(texts=texts))


# ------------------------------------------------------------------ what the fuzz found


def test_an_nft_listing_whose_objects_are_not_a_list_is_a_backend_error() -> None:
    with pytest.raises(BackendError, match="not a list"):
        listed_items('{"nftables": null}', "list ruleset")


def test_malformed_ip_json_entries_are_skipped() -> None:
    facts = facts_from_ip_json(
        [{"ifname": '"lo"'}, {"ifname": "eth0", "addr_info": True},
         {"ifname": "eth1", "addr_info": [{"local": "192.168.1.5", "scope": "global"},
                                          {"local": "[1]", "prefixlen": 24, "scope": "global"},
                                          {"local": "192.168.2.5", "prefixlen": 24,
                                           "scope": "global"}]}],
        [{"dst": "fd00::%x/64"}, {"dst": "10.1.0.0/16"}])
    assert set(facts.interfaces) == {"eth0", "eth1"}
    assert [str(i) for i in facts.interfaces["eth1"]] == ["192.168.2.5/24"]
    assert [str(r) for r in facts.routes] == ["10.1.0.0/16"]
