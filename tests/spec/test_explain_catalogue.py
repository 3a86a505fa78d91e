"""``k3snet explain``: what it prints for every key of the spec, word for word.

The record (``tests/data/spec/explain.txt``) holds the text of every path, of the
top, of backend options (declared by stand-in backends, so the record does not follow
the real backends' signatures) and of the errors for unknown paths with their
suggestions. The text comes from the field table through the JSON Schema: a change
of a key's doc, type, default or example changes it; regenerate with
``K3SNET_REGENERATE=1`` and review the diff.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

import pytest

from k3snet.errors import UnknownFieldError
from k3snet.spec.explain import explain, spec_paths

DATA = Path(__file__).resolve().parents[1] / "data" / "spec"


def _option(name: str, annotation: object = inspect.Parameter.empty,
            default: object = inspect.Parameter.empty) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                             default=default)


class Family:
    """An annotation that is a class (explain prints its name)."""


BACKENDS = {
    "nft": {"netns": _option("netns", "str | None", None),  # text: "string or null"
            "family": _option("family", Family),
            "table": _option("table", str, "k3snet"), "count": _option("count"),
            "limit": _option("limit", int | None, 5),  # a union: "int or null"
            "mode": _option("mode", Literal["a", "b"], "a"),  # "one of a, b"
            "state_dir": _option("state_dir", str | Path | None, None),  # "absolute path"
            "flag": _option("flag", bool, False), "ratio": _option("ratio", float, 0.5),
            "pools": _option("pools", Iterable[int] | None, None),  # "list or null"
            "hook": _option("hook", Callable[[], None] | None, None)},  # Python's alone
    "plain": {},
    "many": {f"width{i}": _option(f"width{i}", int, i) for i in range(1, 6)},
}


DEFAULTS = {"nft": {"state_dir": "/run/k3snet", "netns": "the caller's own namespace"}}


def _explained(path: str, **keywords: object) -> Callable[[], str]:
    def run() -> str:
        try:
            return explain(path, **keywords)  # type: ignore[arg-type]
        except UnknownFieldError as exc:
            return f"! {exc}\n! suggestions: {exc.suggestions}"

    return run


CASES: dict[str, Callable[[], str]] = {path: _explained(path) for path in spec_paths()}
CASES.update({
    "(the top)": _explained(""),
    " .destinations[0].exclude. (spelled loosely)": _explained(" .destinations[0].exclude. "),
    "destinations[].cidr": _explained("destinations[].cidr"),
    "backends (with backends)": _explained("backends", backends=BACKENDS),
    "backends.nft": _explained("backends.nft", backends=BACKENDS),
    "backends.plain": _explained("backends.plain", backends=BACKENDS),
    "backends.nft.table": _explained("backends.nft.table", backends=BACKENDS),
    # What a backend does with an option left out (its option_defaults), said where its
    # default is null: explain said "null" of netlink's state_dir, /run/k3snet in fact.
    "backends.nft (with what null means)": _explained("backends.nft", backends=BACKENDS,
                                                      defaults=DEFAULTS),
    "backends.nft.state_dir (with what null means)": _explained(
        "backends.nft.state_dir", backends=BACKENDS, defaults=DEFAULTS),
    "backends.nft.table (a default that is not null stays)": _explained(
        "backends.nft.table", backends=BACKENDS, defaults={"nft": {"table": "ignored"}}),
    "backends.nft.netns": _explained("backends.nft.netns", backends=BACKENDS),
    "backends.nft.family": _explained("backends.nft.family", backends=BACKENDS),
    "backends.nft.count": _explained("backends.nft.count", backends=BACKENDS),
    "backends.nft.limit": _explained("backends.nft.limit", backends=BACKENDS),
    "backends.nft.tabel": _explained("backends.nft.tabel", backends=BACKENDS),
    "backends.nft.zzz": _explained("backends.nft.zzz", backends=BACKENDS),
    "backends.nft.couxxx (just above the cutoff)": _explained("backends.nft.couxxx",
                                                              backends=BACKENDS),
    "backends.many.width (five close options)": _explained("backends.many.width",
                                                           backends=BACKENDS),
    "backends.nft.table.x": _explained("backends.nft.table.x", backends=BACKENDS),
    "backends.nf": _explained("backends.nf", backends=BACKENDS),
    "backends.nft (without backends)": _explained("backends.nft"),
    "backend.nft (a typo, with backends)": _explained("backend.nft", backends=BACKENDS),
    "masquerade.mod": _explained("masquerade.mod"),
    "destination.cidr": _explained("destination.cidr"),
    "cni.calico.blocksize": _explained("cni.calico.blocksize"),
    "x.y.zzzzz": _explained("x.y.zzzzz"),
    "agent.imag": _explained("agent.imag"),
    "qqq": _explained("qqq"),
    "some.other.place.resolverz (a typo of the last key)": _explained(
        "some.other.place.resolverz"),
    "some.other.place.intervalSecs": _explained("some.other.place.intervalSecs"),
    "qqqqqqqqqqqqqqq.masqLinkLocl (four keys end alike)": _explained(
        "qqqqqqqqqqqqqqq.masqLinkLocl"),
    "qqqqqqqqqqqqqqq.zzzzzzzzzzzz.masqLinkLocl (only the last key is close)": _explained(
        "qqqqqqqqqqqqqqq.zzzzzzzzzzzz.masqLinkLocl"),
    "qqqqqqqqqqqqqqq.zzzzzzzzzzzz.resolverz": _explained(
        "qqqqqqqqqqqqqqq.zzzzzzzzzzzz.resolverz"),
    "qqqqqqqqqqqqqqq.zzzzzzzzzzzz.imagxxx (a last key below its cutoff)": _explained(
        "qqqqqqqqqqqqqqq.zzzzzzzzzzzz.imagxxx"),
    "dest (close matches just above the cutoff)": _explained("dest"),
    "egress.ns": _explained("egress.ns"),
    "destinations.cidr.more": _explained("destinations.cidr.more"),
})


def _recorded() -> dict[str, str]:
    out = {}
    for block in (DATA / "explain.txt").read_text().split("\n### ")[1:]:
        title, _, body = block.partition("\n")
        out[title] = body.rstrip("\n")
    return out


def test_the_catalogue_is_recorded() -> None:
    if os.environ.get("K3SNET_REGENERATE") == "1":
        DATA.mkdir(parents=True, exist_ok=True)
        (DATA / "explain.txt").write_text(
            "".join(f"\n### {name}\n{case()}\n" for name, case in CASES.items()))
    assert list(_recorded()) == list(CASES)


@pytest.mark.parametrize("name", list(CASES))
def test_explain_prints_the_recorded_text(name: str) -> None:
    assert CASES[name]() == _recorded()[name]
