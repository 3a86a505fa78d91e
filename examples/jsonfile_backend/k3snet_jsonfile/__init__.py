"""An example third-party k3snet backend: a JSON file that other programs write too.

It is the backend of docs/custom-backend.md ("A complete backend"), packaged: each
entry of the file says who wrote it (``{"by": "k3snet", "object": {...}}``); k3snet's
entries are owned, every other program's are foreign, observed and never written.
It shows everything a backend needs: a ``name``, ``capabilities``, ``observe``,
``check`` and an all-or-nothing ``apply`` (write a temporary file, then rename it
over the old one, the other programs' entries kept as they were written), with the
lifecycle, the plan-fit check and the fault hook taken from
:class:`k3snet.backends.kit.BackendBase`. Register it through the
``k3snet.backends`` entry-point group (see ``pyproject.toml`` beside this package)
and test it with ``k3snet.testing.run_conformance``, on a file holding other
programs' entries and with ``reopen=`` (k3snet's tests/backends/test_backends_api.py).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from k3snet import ApplyResult, BackendError, ModelError, Plan, State
from k3snet.backends.kit import BackendBase, Compensation, fit_problems, translate_errors
from k3snet.model import object_from_dict

__all__ = ["JsonFileBackend"]

MINE = "k3snet"
"""The ``by`` of k3snet's own entries."""


class JsonFileBackend(BackendBase):
    """Owns the entries of one JSON file written ``by`` k3snet; the others are foreign."""

    name = "jsonfile"
    capabilities = frozenset({"route", "nat"})

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        self.path = Path(path)

    def entries(self) -> list[dict[str, Any]]:
        """The file's entries, as written (none while it does not exist)."""
        if not self.path.exists():
            return []
        # A file that cannot be read or parsed is a BackendError naming it, not a crash.
        with translate_errors(f"read {self.path}", errors=(OSError, ValueError)):
            found = json.loads(self.path.read_text())
            if not isinstance(found, list) or not all(
                    isinstance(e, dict) and isinstance(e.get("by"), str)
                    and isinstance(e.get("object"), dict) for e in found):
                raise ValueError('not a list of {"by": WHO, "object": {...}} entries')
        return found

    def state_of(self, entries: list[dict[str, Any]]) -> State:
        """k3snet's entries are owned; every other program's are foreign, never written.
        Of the backend's kinds only (``observe()`` reports no other): another program's
        sysctl entry is kept as written and not reported."""
        try:
            return State(
                owned=[object_from_dict(e["object"]) for e in entries if e["by"] == MINE],
                foreign=[object_from_dict(e["object"]) for e in entries if e["by"] != MINE],
            ).only(self.capabilities)
        except ModelError as exc:  # an entry the model refuses: say which file holds it
            raise BackendError(f"cannot read {self.path}: {exc}") from exc

    def observe(self) -> State:
        return self.state_of(self.entries())

    def check(self, plan: Plan) -> tuple[str, ...]:
        return tuple(fit_problems(self, plan, self.observe()))

    def apply(self, plan: Plan) -> ApplyResult:
        entries = self.entries()
        observed = self.state_of(entries)
        self.ensure_fits(plan, observed)  # refuses before anything is written
        fail_at = self.faults.take(plan)
        if fail_at is not None:  # the write below is one step: failing anywhere writes nothing
            Compensation(self.name).fail(plan.changes[fail_at], "injected failure")
        new = plan.apply_to(observed)
        others = [e for e in entries if e["by"] != MINE]  # kept as they were written
        mine = [{"by": MINE, "object": o.to_dict()} for o in sorted(new.owned)]
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".k3snet-")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(others + mine, handle, indent=1)
            os.replace(tmp, self.path)  # atomic: all or nothing
        except BaseException:
            os.unlink(tmp)
            raise
        return ApplyResult(self.name, plan.changes, operations=1)
