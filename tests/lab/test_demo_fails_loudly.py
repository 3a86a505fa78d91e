"""``make demo`` fails, with one line saying why, when the lab does not behave as it shows."""

from __future__ import annotations

import pytest

from k3snet import demo
from k3snet.lab import LabError, ProbeResult, SeedLab
from k3snet.lab.netns import NetnsCommandError


@pytest.fixture(autouse=True)
def _keep_our_signal_handlers(monkeypatch: pytest.MonkeyPatch) -> None:
    # main() installs its handlers for the process: here that is pytest's.
    monkeypatch.setattr(demo, "exit_on_signals", lambda: None)


def test_a_lab_that_cannot_be_built_is_one_failure_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A LabError (a server that never listened, a probe without an answer) ended the
    # demo with a traceback.
    def broken(cls: type[SeedLab]) -> SeedLab:
        raise LabError("the lab's database server did not start listening: 'boom'")

    monkeypatch.setattr(SeedLab, "create", classmethod(broken))
    assert demo.main([]) == 1
    err = capsys.readouterr().err
    assert "demo FAILED: lab error: the lab's database server did not start listening" in err


def test_a_user_who_is_not_root_is_told_the_demo_needs_root(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `make demo` as a user: `ip netns add` refuses, and the demo ended in a traceback.
    def refused(cls: type[SeedLab]) -> SeedLab:
        raise NetnsCommandError(1, ["ip", "netns", "add", "k3snet-pod-000000"], "",
                                "mount --make-shared /run/netns failed: Operation not permitted")

    monkeypatch.setattr(SeedLab, "create", classmethod(refused))
    monkeypatch.setattr("k3snet.demo.os.geteuid", lambda: 1000)
    assert demo.main([]) == 1
    err = capsys.readouterr().err
    assert "demo FAILED: " in err
    assert "Operation not permitted (the demo needs root: run `make demo` as root)" in err
    assert "Traceback" not in err


@pytest.mark.kernel
@pytest.mark.lab
@pytest.mark.usefixtures("require_root")
def test_a_node_that_cannot_reach_the_database_fails_the_demo_at_step_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The demo printed the node's probe FAILED and went on: its claim "the node reaches
    # the database, its pods do not" was never checked, and the pod's failure proved nothing.
    def unreachable(self: SeedLab, family: int = 4, timeout: float = 2.0) -> ProbeResult:
        return ProbeResult(ok=False, source_seen=None, error="TimeoutError: timed out")

    monkeypatch.setattr(SeedLab, "node_probe", unreachable)
    assert demo.main([]) == 1
    captured = capsys.readouterr()
    assert "demo FAILED: IPv4: the node could not reach the database" in captured.err
    assert "[2]" not in captured.out  # nothing was planned or applied
