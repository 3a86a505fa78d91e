"""The exception tree is the one ``k3snet.errors`` draws, and errors carry what they say."""

from __future__ import annotations

import pytest

from k3snet import errors
from k3snet.kube import KubeApiError
from k3snet.model import Sysctl
from k3snet.planner import Change


@pytest.mark.parametrize(
    ("cls", "parents"),
    [
        (errors.SpecError, (errors.K3snetError, ValueError)),
        (errors.ModelError, (errors.K3snetError, ValueError)),
        (errors.PlanError, (errors.K3snetError, ValueError)),
        (errors.ConflictError, (errors.PlanError,)),
        (errors.BackendError, (errors.K3snetError, RuntimeError)),
        (errors.BackendNotFoundError, (errors.BackendError, LookupError)),
        (errors.BackendUnavailableError, (errors.BackendError,)),
        (errors.CheckError, (errors.BackendError,)),
        (KubeApiError, (errors.BackendError,)),
        (errors.LockTimeoutError, (errors.BackendError,)),
        (errors.ApplyError, (errors.BackendError,)),
        (errors.RollbackError, (errors.ApplyError,)),
    ],
)
def test_tree_matches_the_drawing(cls: type, parents: tuple[type, ...]) -> None:
    assert all(issubclass(cls, p) for p in parents)
    assert cls.__name__ in (errors.__doc__ or "")


def test_spec_error_lists_every_problem() -> None:
    exc = errors.SpecError([errors.Problem("a.b", "bad"), errors.Problem("c", "worse")],
                           source="spec.yaml")
    assert str(exc) == "2 problems in spec.yaml:\n  a.b: bad\n  c: worse"


def test_apply_error_names_the_failed_change_and_the_rollback() -> None:
    change = Change.add(Sysctl("net.ipv4.ip_forward", 1))
    exc = errors.ApplyError("kernel said no", failed=change, rolled_back=[change.inverse()])
    assert "failed change: + sysctl net.ipv4.ip_forward = 1" in str(exc)
    assert "rolled back 1 change(s)" in str(exc)


def test_apply_error_names_the_failed_change_once() -> None:
    # The kit's message names it ("+ sysctl ... failed: ..."): "; failed change: + sysctl
    # ..." after it said it twice, in a group's error as in a backend's.
    change = Change.add(Sysctl("net.ipv4.ip_forward", 1))
    exc = errors.ApplyError(f"memory backend: {change} failed: injected (nothing was "
                            "changed)", failed=change)
    assert str(exc).count(str(change)) == 1, str(exc)
    assert exc.failed == change
    other = Change.add(Sysctl("net.ipv4.ip_forward", 0))  # another named: it is said
    assert f"failed change: {change}" in str(errors.ApplyError(f"{other} failed: no",
                                                                failed=change))


def test_a_spec_where_a_state_is_wanted_is_refused_with_the_step_left_out() -> None:
    # The likely slip of a script: the spec itself instead of what it compiles to (it
    # failed with "AttributeError: 'Spec' object has no attribute 'only'").
    import k3snet  # noqa: PLC0415

    spec = k3snet.seed_spec()
    backend = k3snet.MemoryBackend()
    hint = r"got Spec \(compile it first: k3snet\.compile\(spec\)"
    with pytest.raises(errors.ModelError, match=r"desired must be a k3snet\.State, " + hint):
        k3snet.converge(backend, spec)  # type: ignore[arg-type]
    with pytest.raises(errors.ModelError, match=r"desired must be a k3snet\.State, " + hint):
        k3snet.plan(backend.observe(), spec)  # type: ignore[arg-type]
    with pytest.raises(errors.ModelError, match=r"observed must be a k3snet\.State, got int$"):
        k3snet.plan(1, k3snet.State())  # type: ignore[arg-type]
    assert backend.observe() == k3snet.State()  # nothing was applied


@pytest.mark.parametrize("excludes", [0, 3, 4, 10_000])
def test_an_error_names_a_rule_of_many_exclusions_briefly_its_reason_after_it(
        excludes: int) -> None:
    # Named whole, a rule of 10 000 exclusions took 160 KB before the refusal's reason,
    # twice: the agent's log line, cut at LOG_LINE_LIMIT bytes, never came to it.
    from k3snet.model import MasqueradeRule  # noqa: PLC0415
    from k3snet.render.nftables import too_large  # noqa: PLC0415

    rule = MasqueradeRule("10.42.0.0/16", destination="100.64.0.0/10",
                          exclude=[f"100.{64 + i // 512}.{(i // 2) % 256}.{(i % 2) * 128}/26"
                                   for i in range(excludes)])
    change = Change.add(rule)
    if excludes <= 3:  # a short list: as the plan prints it
        assert rule.brief() == rule.describe()
        assert change.brief() == str(change)
        return
    assert rule.brief() == ("masquerade 10.42.0.0/16 -> 100.64.0.0/10 except 100.64.0.0/26,"
                            f"100.64.0.128/26,100.64.1.0/26,... ({excludes} prefixes)")
    # nftables writes such a rule's exclusions as one set (too_large: None); any refusal
    # of it (the kernel's, another backend's) names it briefly, its reason kept.
    assert too_large(rule) is None
    problem = "the kernel refused it: File too large"
    exc = errors.ApplyError(f"nftables: nothing was changed: {problem}", failed=change)
    assert len(str(exc)) < 1000
    assert problem in str(exc)
    assert f"failed change: + {rule.brief()}" in str(exc)
    replaced = Change.replace(MasqueradeRule("10.42.0.0/16", destination="100.64.0.0/10"), rule)
    assert replaced.brief() == (f"~ {rule.brief()} (was: masquerade 10.42.0.0/16 -> "
                                "100.64.0.0/10)")


def test_a_backend_s_failed_change_of_many_exclusions_is_named_briefly_before_why() -> None:
    # The kit's failure ("<change> failed: <reason>", the iptables backend's refusal by
    # iptables-restore too) named the change whole: 34 KB for 2000 exclusions before why.
    from k3snet.backends.memory import MemoryBackend  # noqa: PLC0415
    from k3snet.model import MasqueradeRule, State  # noqa: PLC0415
    from k3snet.planner import plan  # noqa: PLC0415

    rule = MasqueradeRule("10.42.0.0/16", destination="100.64.0.0/10",
                          exclude=[f"100.{64 + i // 512}.{(i // 2) % 256}.{(i % 2) * 128}/26"
                                   for i in range(2000)])
    backend = MemoryBackend(capabilities=("nat",))
    backend.faults.fail_at(0)
    with pytest.raises(errors.ApplyError) as raised:
        backend.apply(plan(backend.observe(), State(owned=[rule])))
    message = str(raised.value)
    assert len(message) < 1000
    assert f"memory backend: {Change.add(rule).brief()} failed: injected failure" in message
    assert "failed change:" not in message  # named once
    assert raised.value.failed == Change.add(rule)  # the change itself, whole
