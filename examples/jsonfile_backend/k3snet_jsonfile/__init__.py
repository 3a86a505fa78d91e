"""An example third-party k3snet backend: owned objects kept in a JSON file.

It shows everything a backend needs: a ``name``, ``capabilities``,
``observe``, ``check`` and an all-or-nothing ``apply`` (write a temporary file,
then rename it over the old one), with the lifecycle, the plan-fit check and
the fault hook taken from :class:`k3snet.backends.kit.BackendBase`. Register it
through the ``k3snet.backends`` entry-point group (see ``pyproject.toml`` beside
this package) and test it with ``k3snet.testing.run_conformance``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from k3snet import ApplyResult, Plan, State
from k3snet.backends.kit import BackendBase, Compensation, fit_problems, translate_errors
from k3snet.model import object_from_dict

__all__ = ["JsonFileBackend"]


class JsonFileBackend(BackendBase):
    """Owns the objects listed in one JSON file; sees no foreign state."""

    name = "jsonfile"
    capabilities = frozenset({"route", "nat"})

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        self.path = Path(path)

    def observe(self) -> State:
        if not self.path.exists():
            return State()
        # A file that cannot be read or parsed is a BackendError naming it, not a crash.
        with translate_errors(f"read {self.path}", errors=(OSError, ValueError)):
            found = json.loads(self.path.read_text())
        return State(owned=[object_from_dict(o) for o in found])

    def check(self, plan: Plan) -> tuple[str, ...]:
        return tuple(fit_problems(self, plan, self.observe()))

    def apply(self, plan: Plan) -> ApplyResult:
        observed = self.observe()
        self.ensure_fits(plan, observed)  # refuses before anything is written
        fail_at = self.faults.take(plan)
        if fail_at is not None:  # the write below is one step: failing anywhere writes nothing
            Compensation(self.name).fail(plan.changes[fail_at], "injected failure")
        new = plan.apply_to(observed)
        data = json.dumps([o.to_dict() for o in sorted(new.owned)], indent=1)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".k3snet-")
        with os.fdopen(fd, "w") as handle:
            handle.write(data)
        os.replace(tmp, self.path)  # atomic: all or nothing
        return ApplyResult(self.name, plan.changes, operations=1)
