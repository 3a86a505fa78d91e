"""``k3snet agent`` as a process: probes on a real port, SIGTERM, --once, bad arguments."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from k3snet.cli import main

SPEC = "apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\ndestinations:\n  - cidr: 192.168.2.0/24\n"
BASE = ["--backend", "memory", "--no-kube", "--no-facts"]


def _k3snet(*args: str) -> list[str]:
    return [sys.executable, "-m", "k3snet.cli", *args]


def _readyz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz",
                                    timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.parametrize(("stop", "cleanup"), [(signal.SIGTERM, False), (signal.SIGTERM, True),
                                               (signal.SIGHUP, False)])
def test_sigterm_ends_the_loop_after_the_pass(tmp_path: Path, stop: signal.Signals,
                                              cleanup: bool) -> None:
    # SIGHUP (an agent run by hand, its terminal or SSH session gone) ended the process
    # at once, whatever the pass was doing, its Lease held: it ends as SIGTERM does.
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    args = _k3snet("agent", "-f", str(spec), *BASE, "--listen", "127.0.0.1:0",
                   "--interval", "0.2", "--log-format", "json")
    if cleanup:
        args.append("--cleanup-on-exit")
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "K3SNET_NODE_NAME": "node-x"})
    try:
        assert proc.stderr is not None
        lines: list[dict[str, object]] = []
        port = None
        while port is None:
            line = proc.stderr.readline()
            assert line, "the agent ended before serving"
            lines.append(json.loads(line))
            found = re.search(r"on 127\.0\.0\.1:(\d+)", str(lines[-1]["message"]))
            port = int(found.group(1)) if found else None
        deadline = time.monotonic() + 60  # a generous bound, not a timing assertion
        while _readyz(port) != 200:
            assert time.monotonic() < deadline, "never ready"
            time.sleep(0.05)
        proc.send_signal(stop)
        _, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    entries = lines + [json.loads(line) for line in rest.splitlines()]
    assert {e["node"] for e in entries} == {"node-x"}
    last = str(entries[-1]["message"])
    if cleanup:
        assert any("clean-up on exit: removed 3 object(s)" in str(e["message"])
                   for e in entries)
        assert "removed what k3snet owned" in last
    else:
        assert "the rules stay in place" in last


def test_once_against_the_memory_backend(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    assert main(["agent", "-f", str(spec), *BASE, "--once", "--listen", "none"]) == 0
    (tmp_path / "bad.yaml").write_text("destinations: 3\n")
    assert main(["agent", "-f", str(tmp_path / "bad.yaml"), *BASE, "--once",
                 "--listen", "none"]) == 1


@pytest.mark.parametrize("source", [[], ["-f", "spec.yaml", "--spec-configmap", "ns/cm"]])
def test_spec_file_or_configmap_exactly_one_else_a_usage_error(
        source: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    # docs/cli.md: a missing argument is a usage error, exit 64 (1 is a failed run)
    with pytest.raises(SystemExit) as done:
        main(["agent", *source, *BASE, "--once"])
    assert done.value.code == 64
    err = capsys.readouterr().err
    assert "-f/--spec" in err
    assert "--spec-configmap" in err


def test_the_agent_refuses_output_as_a_usage_error_instead_of_ignoring_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The agent prints no plan nor result document: its output is its log, and
    # --log-format json is what makes it JSON. An --output it silently ignored let a
    # DaemonSet's author believe the agent's output was JSON.
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    with pytest.raises(SystemExit) as done:
        main(["agent", "-f", str(spec), *BASE, "--once", "--listen", "none",
              "--output", "json"])
    assert done.value.code == 64
    assert "--output" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert re.fullmatch(r"k3snet \S+\n", capsys.readouterr().out)


def test_without_a_kubernetes_api_the_agent_still_converges_the_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert main(["agent", "-f", str(spec), "--backend", "memory", "--no-facts", "--once",
                 "--listen", "none"]) == 0
    err = capsys.readouterr().err
    assert "no Kubernetes API: no node report, no Lease" in err
    assert "applied: 3 change(s)" in err


# The agent's run, replaced: SIGTERM arrives while the loop holds the lock of its wake-up
# Event (between taking it and waiting in Event.wait, or in Event.clear). The handler ran
# agent.stop() there, whose Event.set() took the same lock: the main thread waited on
# itself for ever, and the kubelet killed the agent 30 s later, its Lease held.
_SIGNAL_WHILE_WAITING = """
import os, signal, sys
from k3snet.agent import Agent
from k3snet.cli import main

def run(self, *, once=False):
    with self._wake._cond:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs here, the lock held
            pass
    return 0 if self._stopping.wait(60) else 3

Agent.run = run
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_while_the_loop_holds_its_wake_up_lock_stops_the_agent(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    # A generous bound on a hang (the old code never ended), not a timing assertion.
    done = subprocess.run([sys.executable, "-c", _SIGNAL_WHILE_WAITING, "agent", "-f", str(spec),
                           *BASE, "--listen", "none"], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr


def test_the_agent_puts_back_the_signal_handlers_it_found(tmp_path: Path) -> None:
    # run_from_cli (a library caller's, `main(["agent", ...])` in a process that goes on)
    # left SIGTERM, SIGINT and SIGHUP calling the stop of an agent that had ended: Ctrl-C
    # no longer interrupted the process.
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    assert main(["agent", "-f", str(spec), *BASE, "--once", "--listen", "none"]) == 0
    assert {s: signal.getsignal(s) for s in before} == before


@pytest.mark.parametrize(("backend", "warned"), [
    (["--backend", "memory", "--backend-opt", 'memory.capabilities=["route","sysctl"]'], True),
    (["--backend", "memory:route,sysctl"], False),  # the kinds split on purpose
    (["--backend", "memory"], False),  # every kind
], ids=["kinds-left-out", "kinds-given", "all-kinds"])
def test_the_agent_warns_once_of_the_spec_s_objects_no_backend_in_use_manages(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], backend: list[str],
        warned: bool) -> None:
    """As ``plan`` and ``apply`` do: the agent said nothing, every pass "in sync", while
    the spec's masquerade and forward accepts were in no plan."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    assert main(["agent", "-f", str(spec), *backend, "--no-kube", "--no-facts", "--once",
                 "--listen", "none", "--log-format", "json"]) == 0
    said = [json.loads(line)["message"] for line in capsys.readouterr().err.splitlines()]
    warnings = [m for m in said if "in no plan" in m]
    assert len(warnings) == (1 if warned else 0)
    if warned:
        assert warnings[0].startswith("spec generation 1: the spec's 1 forward accept and "
                                      "1 NAT rule are in no plan")
