"""The exceptions k3snet raises.

Every exception is a :class:`K3snetError`; most also inherit the built-in
exception a caller would expect, so ``except ValueError`` keeps working::

    K3snetError
    ├── SpecError(ValueError)          a spec (or import) has problems; lists them all
    ├── UnknownFieldError(LookupError)  ``k3snet explain`` of a key the spec has not
    ├── ModelError(ValueError)         a model value is invalid (bad CIDR, name, ...)
    ├── PlanError(ValueError)          a plan cannot be applied to a state
    │   ├── ConflictError              the plan has unresolved conflicts with foreign state
    │   ├── TeardownError              the plan would delete everything k3snet owns
    │   └── StalePlanError             a saved plan no longer fits what the node has
    └── BackendError(RuntimeError)     a backend failed talking to the system
        ├── BackendNotFoundError(LookupError)  no backend registered under that name
        ├── BackendUnavailableError    the backend's dependencies or tools are missing
        ├── BackendOptionError(TypeError)  an option the backend does not declare, or a bad one
        ├── CheckError                 a dry run found the plan would fail
        ├── KubeApiError               an API request failed (k3snet.kube; .status, .reason)
        ├── LockTimeoutError           another k3snet process held the namespace's lock too long
        └── ApplyError                 an apply failed; says what was rolled back
            └── RollbackError          ... and the rollback failed too (state unknown)

Backends translate the errors of their libraries (``OSError``, pyroute2's
``NetlinkError``, libnftables' messages) at the boundary with
``raise ... from exc``, so the original stays in ``__cause__``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, ClassVar

import attrs

from k3snet._logline import printable, printable_lines

if TYPE_CHECKING:
    from k3snet.planner import Change

__all__ = [
    "ApplyError",
    "BackendError",
    "BackendNotFoundError",
    "BackendOptionError",
    "BackendUnavailableError",
    "CheckError",
    "ConflictError",
    "K3snetError",
    "LockTimeoutError",
    "ModelError",
    "PlanError",
    "Problem",
    "RollbackError",
    "SpecError",
    "StalePlanError",
    "TeardownError",
    "UnknownFieldError",
]


class K3snetError(Exception):
    """Root of every exception k3snet raises."""


def _cut(text: str, limit: int) -> str:
    """Messages quote values: a huge value must not make a huge message."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _problem_path(value: object) -> str:
    # A path quotes the spec's keys as they are: one holding a line break forged a problem
    # line of its own, and an escape sequence (ESC [2J) reached the terminal; each
    # character that is not printable is written as Python escapes it (\n, \x1b).
    return _cut(printable(str(value)), 200)


def _problem_message(value: object) -> str:
    # A message quotes values, some another program wrote (a backend's problem naming a
    # foreign table): printable, its lines only those it indents (a config's problems).
    return _cut(printable_lines(str(value)), 500)


@attrs.frozen
class Problem:
    """One thing wrong with a spec, at a path such as ``destinations[1].gateway``.

    Paths and messages are cut to 200 and 500 characters: they quote user input.
    """

    path: str = attrs.field(converter=_problem_path)
    message: str = attrs.field(converter=_problem_message)

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class SpecError(K3snetError, ValueError):
    """A spec has one or more problems; all of them are in :attr:`problems`.

    Its message names the first :data:`SHOWN_PROBLEMS` and counts the rest: a 1 MB spec of
    100 000 unknown keys made a message of 17 MB (on stderr, twice in ``--output json``,
    in the agent's log).
    """

    SHOWN_PROBLEMS: ClassVar[int] = 100

    def __init__(self, problems: Iterable[Problem], *, source: str | None = None) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        self.source = source
        where = f" in {printable(source)}" if source else ""
        count = len(self.problems)
        head = f"{count} problem{'s' if count != 1 else ''}{where}:"
        shown = [str(p) for p in self.problems[:self.SHOWN_PROBLEMS]]
        if count > self.SHOWN_PROBLEMS:
            shown.append(f"... and {count - self.SHOWN_PROBLEMS} more (all of them: "
                         "k3snet validate --output json)")
        super().__init__("\n  ".join([head, *shown]))


class UnknownFieldError(K3snetError, LookupError):
    """A path names no key of the spec; :attr:`suggestions` are the closest ones."""

    def __init__(self, message: str, suggestions: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.suggestions = tuple(suggestions)


class ModelError(K3snetError, ValueError):
    """A model value is invalid (an address, a CIDR with host bits, a bad name)."""


class PlanError(K3snetError, ValueError):
    """A plan does not fit the state it is applied to."""


class ConflictError(PlanError):
    """The plan has conflicts with foreign state; nothing was applied."""


class TeardownError(PlanError):
    """The plan would delete everything k3snet owns through a backend; nothing was applied.

    Use :func:`k3snet.destroy` (``k3snet destroy``) to remove everything on purpose.
    """


class StalePlanError(PlanError):
    """A saved plan was made from another state than the node has now; nothing was applied."""


class BackendError(K3snetError, RuntimeError):
    """A backend failed while talking to the system it manages."""


class BackendNotFoundError(BackendError, LookupError):
    """No backend is registered under the requested name."""


class BackendUnavailableError(BackendError):
    """The backend exists but cannot run here (a library or tool is missing)."""


class BackendOptionError(BackendError, TypeError):
    """A backend was given an option it does not declare, or a value it cannot take."""


class CheckError(BackendError):
    """A dry run (``backend.check``) found that the plan would fail.

    Its message is ``message`` and each of :attr:`problems` on a line of its own, each
    :func:`~k3snet.model.printable`: a problem quotes what others named (a foreign table,
    an interface), and a line break and spaces in it began a line that read as another
    problem. :attr:`problems` holds them as the backends said them."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        self.problems = tuple(problems)
        super().__init__("\n  ".join([printable(message), *map(printable, self.problems)]))


class LockTimeoutError(BackendError):
    """Another k3snet process held a network namespace's lock for longer than the
    timeout (:mod:`k3snet.backends.lock`); nothing was changed. ``k3snet apply`` and
    ``destroy`` exit 75 with it (sysexits' EX_TEMPFAIL: try again later), so a script
    tells "busy" from a failure."""


class ApplyError(BackendError):
    """An apply failed.

    ``failed`` is the change that failed (or ``None`` when the whole transaction
    was refused), ``done`` the changes that had been applied before it, in the order
    they were made, and ``rolled_back`` what was undone: the inverses of ``done``,
    last first (a finding's repair has none), as
    :meth:`k3snet.backends.kit.Compensation.fail` says them. A backend with real
    transactions (nftables, iptables-restore) leaves the system as it was: both are
    empty. A :class:`~k3snet.BackendGroup` counts the parts its earlier
    members made (and it took back) in both. For a :class:`RollbackError`, what
    ``done`` holds and ``rolled_back`` does not undo may still be there.
    """

    def __init__(
        self,
        message: str,
        *,
        failed: Change | None = None,
        done: Sequence[Change] = (),
        rolled_back: Sequence[Change] = (),
    ) -> None:
        self.failed = failed
        self.done = tuple(done)
        self.rolled_back = tuple(rolled_back)
        self.message = message
        """The message alone, without the failed change and the rollback count."""
        parts = [message]
        # Once: a message saying "<change> failed: ..." (the kit's, and a group's of a
        # member's) named it, and a second "failed change: <change>" made a long line
        # longer with what it had just said.
        # Briefly (a rule's 10 000 exclusions counted): named whole, the change took the
        # bounded log line, and an error saying why after it (a refusal's) was cut off.
        if failed is not None and not any(f"{named} failed" in message
                                          for named in (failed, failed.brief())):
            parts.append(f"failed change: {failed.brief()}")
        if rolled_back:
            parts.append(f"rolled back {len(rolled_back)} change(s) that had been applied")
        super().__init__("; ".join(parts))


class RollbackError(ApplyError):
    """An apply failed and undoing it failed too: the system may be half-changed."""
