"""The grace period the agent's shutdown plans for is the pod's, as the DaemonSet says it.

``terminationGracePeriodSeconds`` went from 30 s to 70 s; an agent assuming 70 s under a
DaemonSet rendered before (an image updated alone) planned 65 s of shutdown and was
killed at 30 s, its Lease held. The rendered DaemonSet now tells the agent
(``$K3SNET_TERMINATION_GRACE``, ``--termination-grace``); not told, it assumes 30 s.
"""

from __future__ import annotations

import inspect
import logging
import math
from pathlib import Path

import pytest

from k3snet.agent import CLEANUP_MARGIN, Agent, AgentOptions, FileSpecSource, grace_shortfalls
from k3snet.agent._main import _agent_options
from k3snet.backends.group import BackendGroup, Member
from k3snet.backends.iptables import IptablesBackend
from k3snet.backends.kit import longest_step, undo_steps
from k3snet.backends.memory import MemoryBackend
from k3snet.cli import build_parser
from k3snet.errors import BackendError, ModelError
from k3snet.kube import ASSUMED_TERMINATION_GRACE, TERMINATION_GRACE
from k3snet.render.manifests import render_manifests
from k3snet.spec import Destination, Spec

from .desired import COMPILED

STOPPED_AT = 1000.0


def _deadline_after_sigterm(options: AgentOptions, tmp_path: Path) -> float:
    agent = Agent(FileSpecSource(tmp_path / "spec.yaml"),  # (no pass: never read)
                  lambda spec: BackendGroup([MemoryBackend()]), COMPILED, options,
                  monotonic=lambda: STOPPED_AT)
    agent.stop()  # SIGTERM
    deadline = agent.grace_deadline()
    assert deadline is not None
    return deadline.at - STOPPED_AT


def test_an_agent_not_told_its_grace_period_plans_for_the_30_s_of_daemonsets_rendered_before(
        tmp_path: Path) -> None:
    assert ASSUMED_TERMINATION_GRACE == 30 < TERMINATION_GRACE
    # (it was TERMINATION_GRACE, 70 s: 65 s planned, the kubelet's kill at 30 s)
    assert _deadline_after_sigterm(AgentOptions("node-a"), tmp_path) == 30 - CLEANUP_MARGIN


@pytest.mark.parametrize("grace", [TERMINATION_GRACE, 10.5, 600])
def test_an_agent_told_its_grace_period_plans_for_that_one(tmp_path: Path,
                                                           grace: float) -> None:
    assert _deadline_after_sigterm(AgentOptions("node-a", termination_grace=grace),
                                   tmp_path) == grace - CLEANUP_MARGIN


@pytest.mark.parametrize(("argv", "env", "grace"), [
    ([], None, ASSUMED_TERMINATION_GRACE),
    ([], "70", 70.0),
    (["--termination-grace", "45"], None, 45.0),
    (["--termination-grace", "45"], "70", 45.0),  # the option over the variable
])
def test_the_agent_command_s_grace_period_is_the_option_else_the_variable_else_30_s(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str], env: str | None,
        grace: float) -> None:
    if env is None:
        monkeypatch.delenv("K3SNET_TERMINATION_GRACE", raising=False)
    else:
        monkeypatch.setenv("K3SNET_TERMINATION_GRACE", env)
    args = build_parser().parse_args(["agent", "-f", str(tmp_path / "spec.yaml"), *argv])
    options = _agent_options(args)
    assert options.termination_grace == grace
    assert _deadline_after_sigterm(options, tmp_path) == grace - CLEANUP_MARGIN


@pytest.mark.parametrize("case", [
    (["--termination-grace", "5"], None, "must be more than 5 s"),  # all of it the margin
    (["--termination-grace", "0"], None, "must be more than 5 s"),
    (["--termination-grace", "-70"], None, "must be more than 5 s"),
    (["--termination-grace", "86400"], None, "less than 86400 s"),  # a day
    (["--termination-grace", "nan"], None, "must be more than 5 s"),
    (["--termination-grace", "inf"], None, "less than 86400 s"),
    (["--termination-grace", "70s"], None, "not a number of seconds"),
    ([], "70s", "(from $K3SNET_TERMINATION_GRACE)"),
    ([], "1", "(from $K3SNET_TERMINATION_GRACE)"),
])
def test_a_grace_period_that_is_no_time_to_plan_for_is_a_usage_error_naming_where_it_came_from(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        case: tuple[list[str], str | None, str]) -> None:
    argv, env, said = case
    if env is None:
        monkeypatch.delenv("K3SNET_TERMINATION_GRACE", raising=False)
    else:
        monkeypatch.setenv("K3SNET_TERMINATION_GRACE", env)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["agent", "-f", str(tmp_path / "s.yaml"), *argv])
    err = capsys.readouterr().err
    assert "--termination-grace" in err
    assert said in err


@pytest.mark.parametrize(("value", "error"), [
    (5, ValueError), (5.0, ValueError), (float("nan"), ValueError), (86400, ValueError),
    ("70", TypeError), (True, TypeError), (None, TypeError),
])
def test_agent_options_refuse_a_grace_period_that_is_no_time_to_plan_for(
        value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="termination_grace"):
        AgentOptions("node-a", termination_grace=value)  # type: ignore[arg-type]


def test_a_library_caller_s_grace_period_is_checked_as_the_command_line_s(
        tmp_path: Path) -> None:
    args = build_parser().parse_args(["agent", "-f", str(tmp_path / "spec.yaml")])
    args.termination_grace = 2.0
    with pytest.raises(ModelError, match="--termination-grace must be more than 5 s"):
        _agent_options(args)


class _SlowStep(MemoryBackend):
    """A backend whose longest bounded step takes 40 s: the iptables backend's restore
    run under a ``timeout`` raised from its 30 s."""

    longest_step = 40.0


@pytest.mark.parametrize(("grace", "warned"), [(TERMINATION_GRACE, True), (85, True),
                                               (86, False)])
def test_an_agent_warns_once_a_spec_is_in_force_if_a_step_and_its_undo_outlast_its_grace(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, grace: float, warned: bool) -> None:
    """The DaemonSet's 70 s hold one iptables restore killed at its 30 s bound, its undo
    and the clean-up margin: a ``timeout`` raised above that had the kubelet's SIGKILL
    land in the undo after SIGTERM (the node half-changed), and nothing said so."""
    path = tmp_path / "spec.yaml"
    path.write_text("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"
                    "destinations:\n  - cidr: 192.168.2.0/24\n")
    agent = Agent(FileSpecSource(path), lambda spec: BackendGroup([_SlowStep()]), COMPILED,
                  AgentOptions("node-a", termination_grace=grace))
    with caplog.at_level(logging.WARNING, logger="k3snet.agent"):
        assert agent.run_pass().status == "ok"
    agent.shutdown()
    said = [r.getMessage() for r in caplog.records
            if "memory: a step of it may take 40 s (its timeout) and its undo as long, 85 s"
            in r.getMessage()]
    assert len(said) == (1 if warned else 0), caplog.text
    if warned:
        assert said[0].startswith("spec generation 1: ")
        assert f"not within the pod's grace period of {grace:g} s" in said[0]


def _rendered_grace(spec: Spec) -> int:
    (daemonset,) = [o for o in render_manifests(spec) if o["kind"] == "DaemonSet"]
    grace: int = daemonset["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    return grace


@pytest.mark.parametrize("timeout", [None, 1, 12.5, 30, 40])
@pytest.mark.parametrize("backends", [["iptables"], []])
def test_the_rendered_grace_period_holds_the_iptables_backend_s_step_and_every_undo_run(
        timeout: float | None, backends: list[str]) -> None:
    """The rendered DaemonSet's grace period holds a restore run killed at the spec's
    ``timeout`` and every bounded run of its undo: the read-back and one run per family
    (``undo_steps``), as the agent counts them. It was 70 s against one undo run: a
    dual-stack apply whose IPv6 run was killed took back IPv4's filter and nat in two
    runs (95 s at 30 s), and more after a read-back, with no warning. A spec naming no
    backend may run the iptables one too."""
    options = {} if timeout is None else {"iptables": {"timeout": timeout}}
    spec = Spec(destinations=[Destination("192.168.2.0/24")], backends=backends,
                backend_options=options)
    grace = _rendered_grace(spec)
    default = inspect.signature(IptablesBackend).parameters["timeout"].default
    backend = IptablesBackend(timeout=default if timeout is None else timeout)
    assert undo_steps(backend) == 3
    assert not grace_shortfalls(grace, BackendGroup([backend]))
    # no longer than that needs (it delays a drain): 5 s to spare, or the 70 s floor
    step = 30.0 if timeout is None else timeout
    assert grace == max(TERMINATION_GRACE, math.ceil(4 * step + CLEANUP_MARGIN) + 5)
    # The 70 s of a spec without it do not hold the default timeout's.
    assert _rendered_grace(Spec(destinations=[Destination("192.168.2.0/24")],
                                backends=["nftables"])) == TERMINATION_GRACE
    assert grace_shortfalls(TERMINATION_GRACE, BackendGroup([IptablesBackend()]))


class _StepOf(MemoryBackend):
    """A third-party backend whose ``longest_step`` is ``step`` (or raises it)."""

    def __init__(self, step: object) -> None:
        super().__init__()
        self._step = step

    @property
    def longest_step(self) -> object:
        if isinstance(self._step, Exception):
            raise self._step
        return self._step


_HUGE = 10**400
"""An int beyond any float: ``float()`` of it raises ``OverflowError``."""
_INVALID_STEPS = ["40", float("nan"), math.inf, _HUGE, True, 0, -1.0,
                  BackendError("its kernel connection is closed"),
                  RuntimeError("not connected"), AttributeError("no _kernel")]
"""``longest_step`` values (or what its property raises) that are no bound."""


def _case_id(value: object) -> str | None:
    """``10**400`` by name, not its 401 digits; pytest's own id for the others."""
    return "10**400" if value is _HUGE else None


@pytest.mark.parametrize("step", _INVALID_STEPS, ids=_case_id)
def test_a_backend_s_longest_step_that_is_no_number_of_seconds_fails_no_pass(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, step: object) -> None:
    """The bound is an optional attribute of the backend protocol; one that is no number
    of seconds (text, NaN, infinity, a flag) or cannot be read is a warning naming the
    backend: it failed the first pass of every spec (raised outside the spec warnings'
    guard), then was said at debug level alone, while the spec's own warnings are still
    said."""
    path = tmp_path / "spec.yaml"
    path.write_text("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"
                    "destinations:\n  - cidr: 192.168.2.0/24\n")
    agent = Agent(FileSpecSource(path), lambda spec: BackendGroup([_StepOf(step)]), COMPILED,
                  AgentOptions("node-a", termination_grace=TERMINATION_GRACE),
                  spec_warnings=lambda spec, group: ["the spec's own"])
    with caplog.at_level(logging.WARNING, logger="k3snet.agent"):
        assert agent.run_pass().status == "ok"
    agent.shutdown()
    said = [r.getMessage() for r in caplog.records]
    assert "spec generation 1: the spec's own" in said
    assert [m for m in said if m.startswith("spec generation 1: memory.longest_step ")
            and "not held against the pod's grace period" in m], said


# undo_steps: 10**400 is a whole number (too many: warned of as a shortfall), 2.0 is none.
@pytest.mark.parametrize(("declared", "value"), [
    *(("longest_step", value) for value in _INVALID_STEPS),
    *(("undo_steps", value) for value in _INVALID_STEPS if value is not _HUGE),
    ("undo_steps", 2.0)], ids=_case_id)
def test_a_backend_declaring_no_valid_bound_is_warned_of_and_the_others_are_judged_still(
        declared: str, value: object) -> None:
    """A backend whose ``longest_step`` or ``undo_steps`` is invalid (or whose property
    raises) made ``grace_shortfalls`` raise, and the agent skipped the whole check: the
    iptables backend's shortfall in a 70 s grace period went unsaid with it. Each
    backend is judged on its own now; the invalid one is a warning naming it and what
    is wrong."""
    odd = _StepOf(value) if declared == "longest_step" else _UndoOf(value)
    group = BackendGroup([Member(odd, "route"), Member(IptablesBackend(), "nat")])
    said = grace_shortfalls(TERMINATION_GRACE, group)
    assert len(said) == 2, said
    ((bad,), (iptables,)) = ([m for m in said if m.startswith(f"memory.{declared} ")],
                             [m for m in said if m.startswith("iptables: ")])
    assert f"not held against the pod's grace period of {TERMINATION_GRACE:g} s" in bad
    shown = repr(value) if not isinstance(value, Exception) else str(value)
    assert shown in bad, bad
    assert "its undo 3 steps as long, 125 s" in iptables


@pytest.mark.parametrize(("step", "read"), [(None, None), (40, 40.0), (2.5, 2.5)])
def test_the_kit_reads_a_backend_s_longest_step_as_seconds(step: object, read: object) -> None:
    assert longest_step(_StepOf(step)) == read
    assert longest_step(object()) is None


class _UndoOf(MemoryBackend):
    """A third-party backend whose step takes 10 s and whose undo ``steps`` as many (or
    whose ``undo_steps`` property raises ``steps``)."""

    longest_step = 10.0

    def __init__(self, steps: object) -> None:
        super().__init__()
        self._steps = steps

    @property
    def undo_steps(self) -> object:
        if isinstance(self._steps, Exception):
            raise self._steps
        return self._steps


@pytest.mark.parametrize("steps", [1, 2, 5])
def test_the_agent_holds_a_step_and_every_step_of_its_undo_against_the_grace(
        steps: int) -> None:
    needed = (1 + steps) * 10.0 + CLEANUP_MARGIN
    group = BackendGroup([_UndoOf(steps)])
    (said,) = grace_shortfalls(needed, group)
    assert f"{needed:g} s with the" in said
    assert ("its undo as long" if steps == 1 else f"its undo {steps} steps as long") in said
    assert not grace_shortfalls(needed + 0.5, group)
    (said,) = grace_shortfalls(600, BackendGroup([_UndoOf(_HUGE)]))
    assert "inf s with the" in said


_UNWRITABLE = 10**5000
"""An int of more digits than ``str()`` writes (4300): it raises ``ValueError``."""


@pytest.mark.parametrize(("odd", "start"), [
    (_StepOf(_UNWRITABLE), "memory.longest_step is int "),
    (_StepOf(-_UNWRITABLE), "memory.longest_step is int "),
    (_UndoOf(_UNWRITABLE), "memory: a step of it may take 10 s (its timeout) and its undo "),
    (_UndoOf(-_UNWRITABLE), "memory.undo_steps is int "),
], ids=["step", "negative step", "undo", "negative undo"])
def test_a_bound_with_more_digits_than_python_writes_is_warned_of_and_fails_no_pass(
        odd: MemoryBackend, start: str) -> None:
    """Writing such a bound in its warning raised ``ValueError`` out of
    ``grace_shortfalls``: the agent's pass failed, the other backends' shortfalls
    unsaid."""
    group = BackendGroup([Member(odd, "route"), Member(IptablesBackend(), "nat")])
    (said, iptables) = grace_shortfalls(TERMINATION_GRACE, group)
    assert said.startswith(start), said
    assert len(said) < 1000, said
    assert "its undo 3 steps as long, 125 s" in iptables


@pytest.mark.parametrize("steps", [0, -1, 2.0, "3", True])
def test_a_backend_s_undo_steps_that_is_no_whole_number_of_1_or_more_is_said(
        steps: object) -> None:
    with pytest.raises(BackendError, match=r"memory\.undo_steps is .* not a whole number"):
        undo_steps(_UndoOf(steps))
    (said,) = grace_shortfalls(600, BackendGroup([_UndoOf(steps)]))
    assert said.startswith("memory.undo_steps is ")
    assert undo_steps(object()) == 1


@pytest.mark.parametrize("timeout", [21598.75, 30000, 86399.5])
def test_the_rendered_grace_period_of_a_long_iptables_timeout_is_one_the_agent_accepts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, timeout: float) -> None:
    """A ``timeout`` the backend accepts (below a day) whose four bounds and margins
    reach a day rendered a grace period the agent refuses (exit 64 on every node): the
    rendered one is the longest it accepts, and the agent warns that it does not hold
    the step and its undo."""
    IptablesBackend(timeout=timeout)  # a timeout the backend takes
    spec = Spec(destinations=[Destination("192.168.2.0/24")], backends=["iptables"],
                backend_options={"iptables": {"timeout": timeout}})
    grace = _rendered_grace(spec)
    (daemonset,) = [o for o in render_manifests(spec) if o["kind"] == "DaemonSet"]
    (container,) = daemonset["spec"]["template"]["spec"]["containers"]
    told = {e["name"]: e.get("value") for e in container["env"]}["K3SNET_TERMINATION_GRACE"]
    assert told == str(grace)
    monkeypatch.setenv("K3SNET_TERMINATION_GRACE", told)
    args = build_parser().parse_args(["agent", "-f", str(tmp_path / "spec.yaml")])
    assert _agent_options(args).termination_grace == grace == 86399
    assert grace_shortfalls(grace, BackendGroup([IptablesBackend(timeout=timeout)]))


@pytest.mark.parametrize("timeout", ["abc", "10", float("nan"), float("inf"), None, True,
                                     -5, 0, 86400])
def test_a_spec_whose_iptables_timeout_the_backend_refuses_renders_the_default_s_grace(
        timeout: object) -> None:
    """Render read the ``timeout`` with ``float()``: text, NaN or infinity was an
    internal error ("a bug: please report it") where the spec's check names the value
    (``k3snet validate``, the agent). Such a timeout counts as the backend's default."""
    with pytest.raises(ModelError):
        IptablesBackend(timeout=timeout)  # type: ignore[arg-type]
    spec = Spec(destinations=[Destination("192.168.2.0/24")], backends=["iptables"],
                backend_options={"iptables": {"timeout": timeout}})
    assert _rendered_grace(spec) == _rendered_grace(
        Spec(destinations=[Destination("192.168.2.0/24")], backends=["iptables"]))
