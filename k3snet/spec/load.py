"""Loading a spec: a file or YAML/JSON text or a mapping to a validated :class:`Spec`.

Reading follows the field table (:mod:`k3snet.spec.schema`); then every check
runs on what was read, and all problems come out at once in one
:class:`~k3snet.errors.SpecError`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from k3snet._gc import gc_paused
from k3snet._kept import input_problem, refuse_foreign_input, users_looked_up_once
from k3snet._regex import lazy_pattern
from k3snet.errors import Problem, SpecError
from k3snet.spec.fields import Reader
from k3snet.spec.ipmasq import file_named
from k3snet.spec.model import API_VERSION, KIND, Spec
from k3snet.spec.schema import SPEC, read_spec
from k3snet.spec.source import load_mapping, read_text
from k3snet.spec.validate import known_sound, validate

__all__ = ["imported_files", "load_mapping", "load_spec", "refuse_foreign_imports",
           "refuse_foreign_spec", "spec_from_dict", "spec_from_document", "sudo_invoker"]


# The one path a check puts in its message: "duplicate destination ... (also destinations[0])".
_ALSO = lazy_pattern(r"(?<=\(also )[^)]+(?=\)$)")


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
    return tuple(file for _, file in _imports(document))


def _imports(document: Any) -> list[tuple[str, str]]:
    """(the input's path in the spec, the file it names) of :func:`imported_files`."""
    if not isinstance(document, Mapping):
        return []
    found = []
    for field in SPEC.fields:
        if field.child is None or field.many or not field.child.inputs:
            continue
        held = document.get(field.key)
        if isinstance(held, Mapping):
            found += [(f"{field.key}.{name}", path) for name in field.child.inputs
                      if isinstance(value := held.get(name), str)
                      and (path := file_named(value)) is not None]
    return found


_last_imports: tuple[bytes, list[tuple[str, str]]] = (b"", [])
"""The digest of the last text :func:`_text_imports` parsed, and its imports."""


def _text_imports(text: str, source: str | None) -> list[tuple[str, str]]:
    """:func:`_imports` of spec ``text`` (none when it cannot be read: loading says why).

    Only a text that names an input (or could, escaped) is parsed, and a text once: the
    agent judges its spec at every pass, and a 10k-destination spec takes ~0.1 s to
    parse where its digest takes ~1 ms.
    """
    global _last_imports  # noqa: PLW0603 - one text remembered, for the next pass
    if "ipMasqAgentConfig" not in text and "\\" not in text:
        return []
    digest = hashlib.sha256(text.encode(errors="surrogatepass")).digest()
    if _last_imports[0] != digest:
        try:
            found = _imports(load_mapping(text, source))
        except SpecError:
            found = []
        _last_imports = (digest, found)
    return list(_last_imports[1])


_FOREIGN = ("another user could change what k3snet applies; refused (chown it to yourself "
            "or root and chmod go-w, after reading it again)")


def refuse_foreign_imports(document: Any, *, invoker: int | None = None,
                           source: str | None = None) -> None:
    """A :class:`SpecError` naming each file spec ``document`` imports
    (:func:`imported_files`) that another user than this one, root or ``invoker`` could
    change (:func:`k3snet._kept.refuse_foreign_input`), at the input's path in the spec:
    the file decides what root applies as much as the spec does. For a spec given as
    data (the Ansible module's ``spec``); :func:`refuse_foreign_spec` judges a file's."""
    with users_looked_up_once():
        _refuse_foreign_imports(_imports(document), invoker, source)


def _refuse_foreign_imports(imports: list[tuple[str, str]], invoker: int | None,
                            source: str | None) -> None:
    problems = []
    for at, file in imports:
        try:
            refuse_foreign_input(file, invoker=invoker)
        except OSError as exc:
            problems.append(Problem(at, f"{file}: {input_problem(exc)}: {_FOREIGN}"))
    if problems:
        raise SpecError(problems, source=source)


def refuse_foreign_spec(path: str | Path, *, invoker: int | None = None) -> str | None:
    """The text of spec file ``path`` (``None`` when it cannot be read: the reader says
    why), or a :class:`SpecError` when another user than its
    owner (this user, root, or ``invoker``: the user who ran sudo, who could run k3snet as
    root anyway) could change it, or a file it imports: what root applies would be
    theirs, its routes, rules and the paths its backends write.

    Each file is judged as :func:`k3snet._kept.refuse_foreign_input` judges one (its
    owner and modes, and the links and directories on the way to it); an imported
    file's problem is at its path in the spec (``masquerade.ipMasqAgentConfig``).
    The node commands check their spec with it, and the agent each spec it reads.
    """
    where = str(path)
    with users_looked_up_once():  # the file, its imports and each directory on their ways
        try:
            refuse_foreign_input(path, invoker=invoker)
        except OSError as exc:
            raise SpecError([Problem("", f"{input_problem(exc)}: {_FOREIGN}")],
                            source=where) from None
        try:
            text = read_text(path)
        except SpecError:
            return None
        _refuse_foreign_imports(_text_imports(text, where), invoker, where)
    return text


def sudo_invoker() -> int | None:
    """The user who ran ``sudo`` (``$SUDO_UID``), if any."""
    given = os.environ.get("SUDO_UID", "")
    return int(given) if given.isdigit() and given.isascii() else None
