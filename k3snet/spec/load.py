"""Loading a spec: a file or YAML/JSON text or a mapping to a validated :class:`Spec`.

Reading follows the field table (:mod:`k3snet.spec.schema`); then every check
runs on what was read, and all problems come out at once in one
:class:`~k3snet.errors.SpecError`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from k3snet._gc import gc_paused
from k3snet.errors import Problem, SpecError
from k3snet.spec.fields import Reader
from k3snet.spec.ipmasq import file_named
from k3snet.spec.model import API_VERSION, KIND, Spec
from k3snet.spec.schema import SPEC, read_spec
from k3snet.spec.source import load_mapping, read_text
from k3snet.spec.validate import known_sound, validate

__all__ = ["imported_files", "load_mapping", "load_spec", "spec_from_dict", "spec_from_document"]


# The one path a check puts in its message: "duplicate destination ... (also destinations[0])".
_ALSO = re.compile(r"(?<=\(also )[^)]+(?=\)$)")


def _related(path: str, other: str) -> bool:
    return path.startswith(other) or other.startswith(path)


def spec_from_dict(data: Mapping[str, Any], *, source: str | None = None,
                   sound: bool = False) -> Spec:
    """Read and check the YAML/JSON form (:meth:`Spec.from_dict`).

    ``sound``: the document was found sound before by this very code (the spec cache
    says so, :mod:`k3snet.spec.cache`), so its checks (:func:`validate`) are not run
    again; it is still read through the field table, and any reading problem
    sends it through every check as usual.
    """
    reader = Reader()
    # Reading 10k destinations builds ~100k objects, none in a cycle: with the GC
    # running, its collections took a third of Spec.from_dict's CPU
    # (benchmarks/bench_spec.py, docs/performance.md).
    listed = data.get("destinations") if isinstance(data, Mapping) else None
    with gc_paused(len(listed) if isinstance(listed, list) else 0):
        spec = read_spec(reader, data)
        if sound and not reader.problems:
            known_sound(spec)
            return spec
        problems = list(reader.problems)
        # Checks run on the parts that parsed, so one pass reports everything; a
        # path that already has a reading problem is not reported twice.
        bad = {p.path for p in problems}
        found = validate(spec)
        if reader.kept:  # some list items were left out: name the document's items
            found = [Problem(reader.document_path(p.path),
                             _ALSO.sub(lambda m: reader.document_path(m.group()), p.message))
                     for p in found]
        problems += [p for p in found if not any(_related(p.path, b) for b in bad if b)]
    if problems:
        raise SpecError(problems, source=source)
    return spec


def spec_from_document(data: Any, *, source: str | None = None, sound: bool = False) -> Spec:
    """A spec *document* (a file, a ConfigMap's text): the header is required.

    ``apiVersion`` and ``kind`` must be there (not null), so that an empty file, ``{}`` or
    some other YAML document is never read as "a spec that wants nothing"
    (applying that would remove everything k3snet owns). The dict form of
    :meth:`Spec.from_dict`, for specs built in code, keeps them optional.
    ``sound`` as in :func:`spec_from_dict`.
    """
    if data is None or (isinstance(data, Mapping) and not data):
        raise SpecError([Problem("", f"the spec is empty: it needs at least apiVersion: "
                                     f"{API_VERSION} and kind: {KIND}")], source=source)
    if isinstance(data, Mapping):
        # ``kind:`` with no value (a template that rendered nothing) is missing too: the
        # field table reads null as "the default" and would accept the document.
        missing = [Problem(key, f"required: {key}: {value}")
                   for key, value in (("apiVersion", API_VERSION), ("kind", KIND))
                   if data.get(key) is None]
        if missing:
            try:
                spec_from_dict(data, source=source)
            except SpecError as exc:
                missing += list(exc.problems)
            raise SpecError(missing, source=source)
    return spec_from_dict(data, source=source, sound=sound)


def load_spec(path: str | Path) -> Spec:
    """Read a spec from a YAML or JSON file."""
    path = Path(path)
    return Spec.from_yaml(read_text(path), source=str(path))


def imported_files(document: Any) -> tuple[str, ...]:
    """The files a spec document imports, read anew on every load: each section input
    (``masquerade.ipMasqAgentConfig``) given as a path rather than as text or a mapping.

    What the document says is not all of the spec then: a reader that keeps a spec
    while its text is unchanged (the agent) must look at these files too.
    """
    if not isinstance(document, Mapping):
        return ()
    found = []
    for field in SPEC.fields:
        if field.child is None or field.many or not field.child.inputs:
            continue
        held = document.get(field.key)
        if isinstance(held, Mapping):
            found += [path for name in field.child.inputs
                      if isinstance(value := held.get(name), str)
                      and (path := file_named(value)) is not None]
    return tuple(found)
