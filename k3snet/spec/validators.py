"""Reusable value checks for the spec's field table (in the spirit of attrs' validators).

A check is a function ``value -> message | None``: ``None`` when the value is
fine, else the problem, without its path (the table adds it). Each is built
once and shared, so a range is written in one place::

    >>> port = int_in(1, 65535)
    >>> port(8080) is None, port(0)
    (True, 'must be 1..65535, got 0')
    >>> optional(port)(None) is None
    True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from k3snet._regex import lazy_pattern
from k3snet.spec.blockstyle import YAML_BOOLS

__all__ = ["NO_FINAL_NEWLINE", "Check", "int_in", "integer", "matches", "one_of", "optional",
           "schema_of", "with_schema"]

Check = Callable[[Any], "str | None"]
"""``value -> problem message``, or ``None`` when the value passes."""

F = TypeVar("F", bound=Callable[..., Any])

# The JSON Schema of what each check (or read function of the field table) accepts,
# recorded where the check is built, so the spec's schema is derived, never restated.
_SCHEMAS: dict[Callable[..., Any], Mapping[str, Any]] = {}


def with_schema(fn: F, schema: Mapping[str, Any]) -> F:
    """Record the JSON Schema of the values ``fn`` (a check or a read function) accepts."""
    _SCHEMAS[fn] = schema
    return fn


def schema_of(fn: Callable[..., Any]) -> Mapping[str, Any] | None:
    """What :func:`with_schema` recorded for ``fn`` (``None``: nothing known)."""
    return _SCHEMAS.get(fn)


def _is_int(value: Any) -> bool:
    # bool is an int subclass, but ``port: true`` is a mistake, not port 1.
    return isinstance(value, int) and not isinstance(value, bool)


_DECIMAL_TEXT = lazy_pattern(r"\s*[-+]?[0-9]+\s*")


def quoted_hint(value: Any, *, boolean: bool = False) -> str:
    """The hint for a number (``boolean``: a true or false) written as a text, in quotes
    (``metric: "100"``), else ``""``: "got '100'" looks right to whoever wrote it."""
    if not isinstance(value, str):
        return ""
    if boolean and value.strip().lower() in YAML_BOOLS:
        return " (a text: write true or false without quotes)"
    if not boolean and _DECIMAL_TEXT.fullmatch(value):
        return " (a text: write the number without quotes)"
    return ""


def integer() -> Check:
    """Any integer (not a bool)."""

    def check(value: Any) -> str | None:
        return None if _is_int(value) else (f"expected an integer, got {value!r}"
                                            + quoted_hint(value))

    return with_schema(check, {"type": "integer"})


def int_in(
    low: int, high: int | None = None, *, name: str | None = None, excluding: tuple[int, ...] = ()
) -> Check:
    """An integer in ``low..high`` (no upper bound when ``high`` is ``None``), not in ``excluding``.

    ``name`` starts the message (``table must be 1..4294967295 and not 255``).
    """
    if high is None:
        wanted = "a positive integer" if low == 1 else f"an integer >= {low}"
    else:
        wanted = f"{low}..{high}"
    if excluding:
        wanted += " and not " + ", ".join(map(str, excluding))
    prefix = f"{name} must be" if name else "must be"

    def check(value: Any) -> str | None:
        if (_is_int(value) and value >= low and (high is None or value <= high)
                and value not in excluding):
            return None
        return f"{prefix} {wanted}, got {value!r}{quoted_hint(value)}"

    schema: dict[str, Any] = {"type": "integer", "minimum": low}
    if high is not None:
        schema["maximum"] = high
    if excluding:
        schema["not"] = {"enum": list(excluding)}
    return with_schema(check, schema)


def _unquoted_word_hint(value: Any, choices: tuple[Any, ...]) -> str:
    """The hint for a choice YAML 1.1 read as a boolean (``mode: off`` is ``False``), else
    ``""``: the value says ``False``, which the user never wrote."""
    if isinstance(value, bool):
        for choice in choices:
            if isinstance(choice, str) and YAML_BOOLS.get(choice.lower()) is value:
                return (f" (YAML reads an unquoted {choice} as {str(value).lower()}: "
                        f"quote it, '{choice}')")
    return ""


def one_of(*choices: Any, message: str | None = None) -> Check:
    """One of ``choices``; ``message`` (a ``str.format`` template with ``{value}``) overrides
    the default ``expected one of a, b, got 'x'``.
    """
    allowed = frozenset(choices)
    template = message or ("expected one of " + ", ".join(map(str, choices)) + ", got {value!r}")

    def check(value: Any) -> str | None:
        try:
            if value in allowed:
                return None
        except TypeError:  # unhashable (a list or mapping given for a word)
            pass
        return template.format(value=value) + _unquoted_word_hint(value, choices)

    return with_schema(check, {"enum": list(choices)})


NO_FINAL_NEWLINE: Mapping[str, Any] = {"type": "string", "pattern": "\\n$"}
"""The JSON Schema of a text ending in a newline, which a string schema refuses
(``"not"``) when its ``^...$`` pattern takes none: Python's ``$`` (jsonschema's) matches
before a final newline, ECMA 262's and RE2's do not, and a lookahead is no RE2. A string
(``"type"``): a pattern holds for any other value, and ``null`` was refused."""


def matches(pattern: str, message: str) -> Check:
    """A string matching ``pattern`` in full; ``message`` is a template with ``{value}``.
    ``pattern`` takes no text ending in a newline: the schema refuses one in every JSON
    Schema validator (:data:`NO_FINAL_NEWLINE`)."""
    compiled = lazy_pattern(pattern)

    def check(value: Any) -> str | None:
        if isinstance(value, str) and compiled.fullmatch(value):
            return None
        return message.format(value=value)

    return with_schema(check, {"type": "string", "pattern": f"^(?:{pattern})$",
                               "not": NO_FINAL_NEWLINE})


def optional(check: Check) -> Check:
    """``check``, letting ``None`` (the key left unset) pass."""

    def optional_check(value: Any) -> str | None:
        return None if value is None else check(value)

    return with_schema(optional_check, schema_of(check) or {})
