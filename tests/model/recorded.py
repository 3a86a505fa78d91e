"""Recorded texts of model values: what a user reads and what is stored.

A case is a name and a function; its outcome is the text of what the function
returns (a model object as its plan line and its JSON form), or the message of
the :class:`~k3snet.errors.ModelError` it raises. The outcomes are recorded under
``tests/data/model/``: they were written by the code, then read and checked by
hand. A change of them is a change of what users see in plans, conflict notes
and error messages: regenerate with ``K3SNET_REGENERATE=1`` and review the diff.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from k3snet.errors import ModelError
from k3snet.model._base import NetObject

DATA = Path(__file__).resolve().parents[1] / "data" / "model"

Case = Callable[[], object]


def show(value: object) -> str:
    """The text of one value: objects by plan line and JSON form, the rest as JSON or repr."""
    if isinstance(value, NetObject):
        return f"{value.describe()}  |  {json.dumps(value.to_dict(), sort_keys=True)}"
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(show(v) for v in value) + "]"
    try:
        return json.dumps(value, sort_keys=True)
    except TypeError:
        return repr(value)


def outcome(case: Case) -> str:
    """What ``case`` gives: its value's text, or ``ModelError: message``."""
    try:
        value = case()
    except ModelError as exc:
        return f"ModelError: {exc}"
    return show(value)


def check(name: str, cases: Mapping[str, Case]) -> None:
    """Every case's outcome equals the one recorded in ``tests/data/model/NAME.json``."""
    path = DATA / f"{name}.json"
    found = {key: outcome(case) for key, case in cases.items()}
    if os.environ.get("K3SNET_REGENERATE") == "1":
        DATA.mkdir(exist_ok=True)
        path.write_text(json.dumps(found, indent=1, ensure_ascii=False) + "\n")
    recorded = json.loads(path.read_text())
    different = {key: (recorded.get(key), text) for key, text in found.items()
                 if recorded.get(key) != text}
    assert not different, "\n".join(f"{key}:\n  recorded {old!r}\n  now      {new!r}"
                                    for key, (old, new) in different.items())
    assert set(recorded) == set(found), "cases added or removed: regenerate"
