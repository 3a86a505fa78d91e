"""The backend kit: each shared concern, tested once."""

from __future__ import annotations

import errno
import logging
from pathlib import Path

import pytest

from k3snet import (
    ApplyError,
    ApplyResult,
    Change,
    MasqueradeRule,
    Plan,
    PlanError,
    RollbackError,
    State,
    Sysctl,
    plan,
)
from k3snet.backends.group import BackendGroup
from k3snet.backends.kit import (
    BackendBase,
    Compensation,
    FaultHook,
    FreshRead,
    LibraryErrors,
    ObserveCache,
    UndoFailure,
    WarningLog,
    backend_warnings,
    ensure_fits,
    fit_problems,
    option_seconds,
    translate_errors,
    undoing,
)
from k3snet.errors import BackendError, ModelError

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"
A = MasqueradeRule("10.42.0.0/16")
B = MasqueradeRule("10.43.0.0/16")
C = MasqueradeRule("10.44.0.0/16")


class Nat(BackendBase):
    name = "nat-only"
    capabilities = frozenset({"nat"})


# ---------------------------------------------------------------- FaultHook


def test_fault_hook_fires_once_at_the_index_given() -> None:
    hook = FaultHook()
    p = Plan(changes=[Change.add(A), Change.add(B)])
    hook.fail_at(1)
    assert hook.armed == 1
    assert hook.take(p) == 1
    assert hook.armed is None
    assert hook.take(p) is None


def test_fault_hook_past_the_end_means_the_last_change_and_empty_plans_disarm() -> None:
    hook = FaultHook()
    hook.fail_at(9)
    assert hook.take(Plan(changes=[Change.add(A), Change.add(B)])) == 1
    hook.fail_at(0)
    assert hook.take(Plan()) is None
    assert hook.armed is None


@pytest.mark.parametrize("bad", [-1, 1.5, True, "0"])
def test_fault_hook_refuses_what_is_not_an_index(bad: object) -> None:
    with pytest.raises(ValueError, match="fail_at"):
        FaultHook().fail_at(bad)  # type: ignore[arg-type]


# ---------------------------------------------------------------- plan fit


def test_fit_problems_lists_every_problem_at_once() -> None:
    observed = State(owned=[A], foreign=[C])
    p = Plan(changes=[Change.add(A), Change.delete(B), Change.delete(C)])
    problems = fit_problems(Nat(), p, observed)
    assert len(problems) == 3
    assert problems[0].startswith("cannot add")
    assert "not in the state" in problems[1]
    assert "not k3snet's (foreign)" in problems[2]


def test_fit_problems_judges_each_change_after_the_ones_before() -> None:
    p = Plan(changes=[Change.add(B), Change.replace(B, MasqueradeRule("10.43.0.0/16",
                                                                       random_fully=True))])
    assert fit_problems(Nat(), p, State()) == []


def test_fit_problems_names_kinds_outside_the_capabilities() -> None:
    from k3snet import Sysctl  # noqa: PLC0415 - only here

    p = Plan(changes=[Change.add(Sysctl("net.ipv4.ip_forward", "1"))])
    assert "also changes sysctl" in fit_problems(Nat(), p, State())[0]


def test_ensure_fits_raises_plan_error_with_the_backend_name() -> None:
    with pytest.raises(PlanError, match="nat-only backend refuses the plan"):
        ensure_fits(Nat(), Plan(changes=[Change.delete(A)]), State())


# ---------------------------------------------------------------- Compensation


def test_compensation_undoes_in_reverse_and_raises_apply_error() -> None:
    log: list[str] = []
    undo = Compensation("demo", "netns x")
    undo.record(Change.add(A), lambda: log.append("a"))
    undo.record([Change.add(B), Change.add(C)], lambda: log.append("bc"))
    with pytest.raises(ApplyError) as caught:
        undo.fail(Change.add(MasqueradeRule("10.45.0.0/16")), "refused")
    assert log == ["bc", "a"]
    error = caught.value
    assert not isinstance(error, RollbackError)
    assert error.done == (Change.add(A), Change.add(B), Change.add(C))
    assert error.rolled_back == (Change.delete(C), Change.delete(B), Change.delete(A))
    assert "demo backend, netns x:" in str(error)
    assert "3 change(s) made before it were undone" in str(error)


def test_undoing_says_so_in_compensations_undo_and_a_groups_undo_alone() -> None:
    # The CLI's SIGTERM and SIGHUP ask it: in an undo they let it run on (bounded).
    from k3snet.backends.memory import MemoryBackend  # noqa: PLC0415

    seen: list[bool] = []
    undo = Compensation("demo")
    undo.record(Change.add(A), lambda: seen.append(undoing()))
    seen.append(undoing())
    with pytest.raises(ApplyError):
        undo.fail(Change.add(B), "refused")

    class Seen(MemoryBackend):
        def apply(self, plan: Plan) -> ApplyResult:
            seen.append(undoing())
            return super().apply(plan)

    first, second = Seen(capabilities=["sysctl"]), MemoryBackend(capabilities=["nat"])
    group = BackendGroup([first, second])
    p = plan(group.observe(), State(owned=[MasqueradeRule("10.42.0.0/16"),
                                           Sysctl("net.ipv4.ip_forward", "1")]))
    second.faults.fail_at(0)
    with pytest.raises(ApplyError):
        group.apply(p)  # first's part applied, then taken back by the group
    assert seen == [False, True, False, True]
    assert not undoing()


def test_compensation_reports_every_failed_undo_as_rollback_error() -> None:
    def broken() -> None:
        raise OSError(errno.EIO, "gone")

    def partial() -> None:
        raise UndoFailure(["delete 10.44.0.0/16: busy"], undone=[Change.delete(B)])

    undo = Compensation("demo")
    undo.record(Change.add(A), broken)
    undo.record([Change.add(B), Change.add(C)], partial)
    with pytest.raises(RollbackError) as caught:
        undo.fail(None, "refused", OSError("x"))
    message = str(caught.value)
    assert "ROLLBACK FAILED" in message
    assert "busy" in message
    assert "gone" in message
    assert caught.value.rolled_back == (Change.delete(B),)


def test_a_failed_undo_of_a_step_recorded_without_changes_is_a_rollback_error() -> None:
    """A step recorded with no change of its own (cilium's second write of one change,
    netlink's store restore): its undo's failure was one line per inverse, none, and
    went unsaid; so did a second interruption in it."""
    def broken() -> None:
        raise OSError(errno.EIO, "gone")

    undo = Compensation("demo")
    undo.record(Change.add(A), lambda: None)
    undo.record((), broken)
    with pytest.raises(RollbackError, match=r"an undo step: .*gone"):
        undo.fail(None, "refused")
    undo.record(Change.add(A), lambda: None)
    undo.record((), broken)
    with pytest.raises(RollbackError, match=r"an undo step: .*gone"), undo.guarding():
        raise SystemExit(143)

    def interrupted() -> None:
        raise KeyboardInterrupt

    undo.record((), lambda: None)
    undo.record((), interrupted)
    assert undo.rollback()[1] == [
        "an undo step: interrupted (KeyboardInterrupt), may be half-undone",
        "an undo step: not undone (the undo was interrupted)"]


def test_compensation_with_nothing_done_says_nothing_changed() -> None:
    with pytest.raises(ApplyError, match="nothing was changed"):
        Compensation("demo").fail(Change.add(A), "refused")


def test_an_interruption_whose_undo_fails_is_a_rollback_error_not_silence() -> None:
    """guarding() threw away what rollback() reported: Ctrl-C while an undo failed
    ended as a bare KeyboardInterrupt (the CLI's exit 130, nothing said), with the
    system half-changed. The group raises RollbackError then; so does the kit."""
    def broken() -> None:
        raise OSError(errno.EIO, "device gone")

    undo = Compensation("demo", "netns x")
    undo.record(Change.add(A), lambda: None)
    undo.record(Change.add(B), broken)
    interruption = KeyboardInterrupt()
    with pytest.raises(RollbackError) as caught, undo.guarding():
        raise interruption
    error = caught.value
    assert error.__cause__ is interruption
    assert "demo backend, netns x: interrupted (KeyboardInterrupt)" in str(error)
    assert "ROLLBACK FAILED" in str(error)
    assert "device gone" in str(error)
    assert error.done == (Change.add(A), Change.add(B))
    assert error.rolled_back == (Change.delete(A),)


def test_an_interruption_whose_undo_succeeds_goes_on_as_it_came() -> None:
    log: list[str] = []
    undo = Compensation("demo")
    undo.record(Change.add(A), lambda: log.append("a"))
    with pytest.raises(KeyboardInterrupt), undo.guarding():
        raise KeyboardInterrupt
    assert log == ["a"]


# ---------------------------------------------------------------- translate_errors


def test_translate_errors_maps_library_errors_and_keeps_the_cause() -> None:
    cause = OSError(errno.ENOENT, "no such file")
    with pytest.raises(BackendError, match=r"cannot read x: .*no such file") as caught, \
            translate_errors("read x"):
        raise cause
    assert caught.value.__cause__ is cause


def test_translate_errors_names_the_missing_capability() -> None:
    with pytest.raises(BackendError, match="needs CAP_NET_ADMIN"), \
            translate_errors("read the generation id", capability="CAP_NET_ADMIN"):
        raise PermissionError(errno.EPERM, "Operation not permitted")


def test_translate_errors_lets_k3snet_errors_and_others_through() -> None:
    with pytest.raises(PlanError), translate_errors("x"):
        raise PlanError("mine")
    with pytest.raises(KeyError), translate_errors("x"):
        raise KeyError("not an OSError")


class _RefusedError(Exception):
    def __init__(self, code: int) -> None:
        self.code = code
        super().__init__(f"refused with {code}")


class _TypedError(BackendError):
    def __init__(self, message: str, code: int) -> None:
        self.code = code
        super().__init__(message)


class _Classifier:
    """A client library's classifier: asked for its types only once something failed."""

    def __init__(self) -> None:
        self.asked = 0

    def catches(self) -> tuple[type[BaseException], ...]:
        self.asked += 1
        return (_RefusedError,)

    def classify(self, doing: str, exc: BaseException) -> _TypedError:
        assert isinstance(exc, _RefusedError)
        return _TypedError(f"{doing}: code {exc.code}", exc.code)


def test_translate_errors_with_a_classifier_raises_its_typed_error() -> None:
    classifier = _Classifier()
    with translate_errors("read y", classifier=classifier):
        pass
    assert classifier.asked == 0  # nothing failed: the library's types were never needed
    cause = _RefusedError(409)
    with pytest.raises(_TypedError, match=r"^read y: code 409$") as caught, \
            translate_errors("read y", classifier=classifier):
        raise cause
    assert (caught.value.code, caught.value.__cause__) == (409, cause)


def test_a_classifier_decides_alone_what_it_maps() -> None:
    # errors= and into= are the default classifier's; with a classifier they are not used.
    with pytest.raises(OSError, match="disk"), \
            translate_errors("x", classifier=_Classifier(), errors=OSError, into=ApplyError):
        raise OSError("disk")
    with pytest.raises(PlanError), translate_errors("x", classifier=_Classifier()):
        raise PlanError("k3snet's own errors pass through")


def test_library_errors_is_the_default_classifier() -> None:
    mapper = LibraryErrors((KeyError, OSError), into=ApplyError, capability="CAP_NET_RAW")
    assert mapper.catches() == (KeyError, OSError)
    error = mapper.classify("open a socket", PermissionError(errno.EACCES, "Permission denied"))
    assert type(error) is ApplyError
    assert str(error) == ("cannot open a socket: [Errno 13] Permission denied (not permitted: "
                          "this needs CAP_NET_RAW; run as root or grant the capability)")
    assert str(LibraryErrors().classify("z", OSError())) == "cannot z: OSError"
    with pytest.raises(ApplyError, match=r"^cannot look up k: 'k'$"), \
            translate_errors("look up k", errors=(KeyError,), into=ApplyError):
        raise KeyError("k")


def test_a_bound_in_seconds_a_day_or_more_is_refused_saying_below_a_day() -> None:
    """A timeout of a day was refused as "must be a number of seconds > 0", which it is."""
    with pytest.raises(ModelError, match=r"read_timeout must be a number of seconds > 0 and "
                                         r"below a day, got 86400"):
        option_seconds("read_timeout", 86400)
    assert option_seconds("read_timeout", 86399.5) == 86399.5


# ---------------------------------------------------------------- FreshRead


def test_a_fresh_read_is_taken_once_within_its_age_and_dropped_by_a_new_read(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from k3snet.backends import kit  # noqa: PLC0415 - its clock, moved

    now = [100.0]
    monkeypatch.setattr(kit, "_monotonic", lambda: now[0])
    fresh: FreshRead[str] = FreshRead(age=5.0)
    assert fresh.take() is None
    fresh.put("listing")
    now[0] += 4.9
    assert fresh.take() == "listing"
    assert fresh.take() is None  # once
    fresh.put("listing")
    now[0] += 5.0
    assert fresh.take() is None  # too old: read again
    fresh.put("listing")
    fresh.drop()  # an observe begins (and may fail)
    assert fresh.take() is None


# ---------------------------------------------------------------- ObserveCache


def test_observe_cache_reads_only_when_the_token_changes() -> None:
    token = [1]
    loads: list[int] = []
    cache: ObserveCache[str] = ObserveCache()

    def load() -> str:
        loads.append(token[0])
        return f"state at {token[0]}"

    assert cache.read(lambda: token[0], load) == "state at 1"
    assert cache.read(lambda: token[0], load) == "state at 1"
    assert loads == [1]
    token[0] = 2
    assert cache.read(lambda: token[0], load) == "state at 2"
    assert cache.read(lambda: token[0], load, refresh=True) == "state at 2"
    assert loads == [1, 2, 2]
    cache.invalidate()
    assert cache.value is None


def test_observe_cache_keyed_by_a_token_that_cannot_tell_loads_every_time() -> None:
    """``None`` is "cannot tell" (``BackendBase.change_token``'s default): a backend that
    keyed its cache by it observed what it first read, for ever."""
    system = ["empty"]
    cache: ObserveCache[str] = ObserveCache()
    backend = Nat()
    assert cache.read(backend.change_token, lambda: system[0]) == "empty"
    system[0] = "a rule"
    assert cache.read(backend.change_token, lambda: system[0]) == "a rule"
    assert cache.get(None) is None


def test_observe_cache_rereads_when_a_writer_commits_meanwhile_and_gives_up_typed() -> None:
    counter = iter(range(100))
    cache: ObserveCache[int] = ObserveCache(attempts=3)
    with pytest.raises(BackendError, match=r"kept changing .*3 attempts"):
        cache.read(lambda: next(counter), lambda: 0)
    stable = iter([5, 6, 7, 7])
    assert cache.read(lambda: next(stable), lambda: 42) == 42


# ---------------------------------------------------------------- BackendBase


def test_backend_base_gives_the_lifecycle_and_a_hook() -> None:
    with Nat() as backend:
        assert isinstance(backend.faults, FaultHook)
        assert not backend.closed
    assert backend.closed


# ---------------------------------------------------------------- WarningLog


def _said(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.name, r.getMessage()) for r in caplog.records if r.levelno == logging.WARNING]


def test_a_warning_log_says_each_warning_once_while_it_lasts_and_again_when_it_comes_back(
        caplog: pytest.LogCaptureFixture) -> None:
    said = WarningLog("k3snet.backends.test", "nat-only")
    with caplog.at_level(logging.WARNING):
        assert said.say(["a", "nat-only: b"]) == ("a", "nat-only: b")
        assert said.say(("a", "nat-only: b")) == ()  # the next pass: nothing new
        assert said.say(["a"]) == ()  # b went away
        assert said.say(["a", "nat-only: b", "c"]) == ("nat-only: b", "c")  # b came back
        assert said.say([]) == ()
    assert _said(caplog) == [("k3snet.backends.test", m) for m in (
        "nat-only: a", "nat-only: b", "nat-only: b", "nat-only: c")]  # never named twice


def test_backend_base_logs_its_warnings_on_a_k3snet_logger_for_a_backend_of_another_package(
        caplog: pytest.LogCaptureFixture) -> None:
    # The agent's log shows k3snet's loggers alone: a third-party backend's module
    # logger ("tests.backends...", "acme.backend") would say nothing there.
    class Warns(Nat):
        warnings = ("the file is read-only",)

    backend = Warns()
    assert not Warns.__module__.startswith("k3snet.")
    with caplog.at_level(logging.WARNING):
        assert backend.log_warnings() == ("the file is read-only",)
        assert backend.log_warnings() == ()
        assert Nat().log_warnings() == ()  # no warnings at all: nothing to say
    assert _said(caplog) == [("k3snet.backends.nat-only", "nat-only: the file is read-only")]


class _MethodWarns(Nat):
    """A third-party backend whose ``warnings`` is a method, not a property."""

    def warnings(self) -> list[str]:
        return ["the file is read-only"]


def _group(backend: Nat) -> BackendGroup:
    """A group of ``backend`` alone (a Nat is no whole Backend: no observe)."""
    return BackendGroup([backend])  # type: ignore[list-item]


class _TextWarns(Nat):
    warnings = "one warning, not one per character"


def test_a_backend_whose_warnings_is_a_method_or_one_text_is_read_as_its_warnings(
        caplog: pytest.LogCaptureFixture) -> None:
    # group.warnings iterated the bound method: TypeError: 'method' object is not
    # iterable, ending k3snet plan after its read; a text was one warning per character.
    group = _group(_MethodWarns())
    assert group.warnings == ("the file is read-only",)
    assert backend_warnings(_MethodWarns()) == ("the file is read-only",)
    assert backend_warnings(_TextWarns()) == ("one warning, not one per character",)
    assert backend_warnings(Nat()) == ()
    with caplog.at_level(logging.WARNING):
        assert group.log_warnings() == ("the file is read-only",)
        assert _MethodWarns().log_warnings() == ("the file is read-only",)
        assert _group(_TextWarns()).log_warnings() == (
            "one warning, not one per character",)


def test_warnings_that_are_no_texts_are_refused_naming_the_backend() -> None:
    class Counted(Nat):
        warnings = 3

    with pytest.raises(BackendError, match=r"nat-only\.warnings .*int.*sequence of texts"):
        backend_warnings(Counted())
    with pytest.raises(BackendError, match=r"nat-only\.warnings"):
        _ = _group(Counted()).warnings
    assert _group(Counted()).log_warnings() == ()  # a warning never fails a pass


def test_k3snet_plan_says_the_warnings_of_a_backend_whose_warnings_is_a_method(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # It ended with "internal error" (TypeError: 'method' object is not iterable) after
    # its read, the plan unsaid.
    from k3snet.backends.memory import MemoryBackend  # noqa: PLC0415
    from k3snet.backends.registry import register_backend, unregister_backend  # noqa: PLC0415
    from k3snet.cli import main  # noqa: PLC0415

    class Said(MemoryBackend):
        def warnings(self) -> list[str]:
            return ["the file is read-only"]

    register_backend("method-warns", Said)
    try:
        assert main(["plan", "-f", str(SEED), "--backend", "method-warns", "--no-facts"]) == 2
    finally:
        unregister_backend("method-warns")
    out = capsys.readouterr()
    assert "the file is read-only" in out.out + out.err
    assert "internal error" not in out.out + out.err


@pytest.mark.parametrize("first", [KeyboardInterrupt(), SystemExit(143)])
def test_a_second_interruption_during_the_undo_is_a_rollback_error_naming_what_is_left(
        first: BaseException) -> None:
    """A second Ctrl-C (or a SIGTERM after Ctrl-C) during the undo guarding() started
    went out as a bare KeyboardInterrupt: the CLI's exit 130, nothing said, and the steps
    after it never undone, the system half-changed. It is a RollbackError (exit 5) now,
    naming the step interrupted and those not undone; the undo stops there."""
    log: list[str] = []

    def interrupted() -> None:
        raise KeyboardInterrupt

    undo = Compensation("demo")
    undo.record(Change.add(A), lambda: log.append("a"))
    undo.record(Change.add(B), interrupted)
    with pytest.raises(RollbackError) as caught, undo.guarding():
        raise first
    error = caught.value
    assert error.__cause__ is first
    assert "ROLLBACK FAILED" in str(error)
    assert f"{Change.delete(B)}: interrupted (KeyboardInterrupt)" in str(error)
    assert f"{Change.delete(A)}: not undone" in str(error)
    assert log == []  # the undo stopped at the second interruption
    assert error.done == (Change.add(A), Change.add(B))
    assert error.rolled_back == ()


def test_an_interruption_during_the_undo_fail_started_is_a_rollback_error() -> None:
    def interrupted() -> None:
        raise KeyboardInterrupt

    undo = Compensation("demo")
    undo.record(Change.add(A), interrupted)
    with pytest.raises(RollbackError, match="interrupted \\(KeyboardInterrupt\\)"):
        undo.fail(Change.add(B), "refused")
