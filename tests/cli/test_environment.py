"""Defaults taken from the environment are checked like the options they stand for.

argparse checks ``choices=`` only for what the command line gives, not for a default:
``K3SNET_LOG_LEVEL=LOUD`` reached the logging module and ended in an internal error.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from k3snet.cli import EXIT_USAGE, build_parser, main

SPEC = ("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"
        "destinations:\n  - cidr: 192.168.2.0/24\n")


def _run(tmp_path: Path, command: list[str],
         **environment: str) -> subprocess.CompletedProcess[str]:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    env = {**os.environ, **environment}
    return subprocess.run([sys.executable, "-m", "k3snet.cli", *command, "-f", str(spec),
                           "--backend", "memory"], capture_output=True, text=True, check=False,
                          timeout=120, env=env)


@pytest.fixture
def usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                capsys: pytest.CaptureFixture[str]) -> Callable[..., str]:
    """Runs the CLI in this process, which its parser must refuse with exit 64; gives stderr.

    The parser refuses before any command runs, so no process of its own is needed (a
    start of one costs ~0.4 s); a default it let through would run the command and
    return instead of exiting, which fails here.
    """
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)

    def run(command: list[str], **environment: str) -> str:
        for variable, value in environment.items():
            monkeypatch.setenv(variable, value)
        with pytest.raises(SystemExit) as exited:
            main([*command, "-f", str(spec), "--backend", "memory"])
        err = capsys.readouterr().err
        assert exited.value.code == EXIT_USAGE, err
        return err

    return run


@pytest.mark.parametrize(("variable", "value", "command", "option"), [
    ("K3SNET_LOG_LEVEL", "LOUD", ["agent", "--once", "--no-kube", "--listen", "none"],
     "--log-level"),
    ("K3SNET_LOG_FORMAT", "xml", ["plan"], "--log-format"),
    ("K3SNET_LOG_FORMAT", "xml", ["agent", "--once", "--no-kube", "--listen", "none"],
     "--log-format"),
    ("K3SNET_LISTEN", ":99999", ["agent", "--once", "--no-kube"], "--listen"),
    # Digits that are not 0-9: "²" was refused with int()'s "invalid literal" message, and
    # "٩٠٩٠" (Arabic-Indic digits) was taken as port 9090.
    ("K3SNET_LISTEN", ":\u00b2", ["agent", "--once", "--no-kube"], "--listen"),
    ("K3SNET_LISTEN", ":\u0669\u0660\u0669\u0660", ["agent", "--once", "--no-kube"],
     "--listen"),
])
def test_a_bad_default_from_the_environment_is_a_usage_error(
        usage_error: Callable[..., str], variable: str, value: str, command: list[str],
        option: str) -> None:
    err = usage_error(command, **{variable: value})
    assert f"argument {option}: " in err
    assert repr(value) in err
    assert "internal error" not in err
    assert "invalid literal" not in err
    # Set in a cron file or a unit, not typed: the message names where it came from.
    assert f"(from ${variable})" in err


def test_a_log_level_from_the_environment_may_be_lower_case(tmp_path: Path) -> None:
    agent = ["agent", "--once", "--no-kube", "--listen", "none"]
    assert " INFO " in _run(tmp_path, agent, K3SNET_LOG_LEVEL="info").stderr
    done = _run(tmp_path, agent, K3SNET_LOG_LEVEL="warning")
    assert done.returncode == 0, done.stderr
    assert " INFO " not in done.stderr


@pytest.mark.parametrize("name", ["Worker-1", "worker_1", "-worker", "worker-", "a" * 254,
                                  "worker..1", "wörker", "worker 1"])
def test_a_node_name_the_api_server_refuses_is_a_usage_error(
        usage_error: Callable[..., str], name: str) -> None:
    for given in (["--node-name", name], []):
        err = usage_error(["agent", "--once", "--no-kube", "--listen", "none", *given],
                          K3SNET_NODE_NAME=name)
        assert "argument --node-name: " in err


def test_a_node_name_may_be_a_dns_subdomain(tmp_path: Path) -> None:
    done = _run(tmp_path, ["agent", "--once", "--no-kube", "--listen", "none"],
                K3SNET_NODE_NAME="worker-1.eu-west.example")
    assert done.returncode == 0, done.stderr
    assert "node=worker-1.eu-west.example " in done.stderr


@pytest.mark.usefixtures("require_root")
def test_the_default_node_name_is_the_hostname_in_lower_case_as_the_kubelet_has_it(
        tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    env = {k: v for k, v in os.environ.items() if k != "K3SNET_NODE_NAME"}
    # A UTS namespace of its own: the machine's hostname is left alone.
    script = (f"hostname Worker-1 && exec {sys.executable} -m k3snet.cli agent --once "
              f"--no-kube --listen none --backend memory -f {spec}")
    done = subprocess.run(["unshare", "--uts", "sh", "-c", script], capture_output=True,
                          text=True, check=False, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert "node=worker-1 " in done.stderr


@pytest.mark.parametrize(("option", "value", "said"), [
    ("--spec-configmap", "kube system/k3snet-spec", "is not a namespace"),
    ("--spec-configmap", "kube-system/K3snet_Spec", "is not a name"),
    ("--spec-configmap", "kube-system/k3snet-spec:../spec", "is not a ConfigMap key"),
    ("--spec-configmap", "kube-system/k3snet-spec:", "must be NS/NAME[:KEY]"),
    ("--spec-configmap", "kube-system", "must be NS/NAME[:KEY]"),
    ("--lease", "kube-system/Writer", "is not a name"),
    ("--lease", "Kube-System/writer", "is not a namespace"),
    ("--lease", "kube-system", "must be NS/NAME, not"),
])
def test_object_names_the_api_server_refuses_are_usage_errors_before_any_request(
        usage_error: Callable[..., str], option: str, value: str, said: str) -> None:
    err = usage_error(["agent", "--once", "--no-kube", "--listen", "none", option, value])
    assert f"argument {option}: " in err
    assert said in err
    assert "internal error" not in err


def test_agent_once_serves_no_probe_unless_asked_so_a_taken_port_does_not_stop_its_pass(
        tmp_path: Path) -> None:
    # In a network namespace of its own (gone with the process): the DaemonSet's agent
    # already holds :9743 on the node, and an admin runs one pass by hand.
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    bound = tmp_path / "bound"
    holder = (f"{sys.executable} -c 'import pathlib, socket, time; s = socket.create_server("
              f"(\"::\", 9743), family=socket.AF_INET6, dualstack_ipv6=True); "
              f"pathlib.Path(\"{bound}\").touch(); time.sleep(60)'")
    agent = f"{sys.executable} -m k3snet.cli agent --no-kube --backend memory -f {spec}"
    script = (f"ip link set lo up && {{ {holder} & }}; holder=$!; "
              f"while [ ! -e {bound} ]; do sleep 0.05; done; "
              f"{agent} --once; echo once=$?; {agent} --once --listen :9743; echo asked=$?; "
              "kill $holder")
    env = {k: v for k, v in os.environ.items() if k != "K3SNET_LISTEN"}
    done = subprocess.run(["unshare", "--net", "sh", "-c", script], capture_output=True,
                          text=True, check=False, timeout=120, env=env)
    assert "once=0" in done.stdout, done.stderr
    assert "asked=1" in done.stdout, done.stderr
    assert "Address already in use" in done.stderr


_AGENT = ["agent", "--once", "--no-kube", "-f", "spec.yaml"]


@pytest.mark.parametrize(("variable", "command"), [
    ("K3SNET_LOG_FORMAT", ["plan", "-f", "spec.yaml"]),
    ("K3SNET_LOG_FORMAT", _AGENT),
    ("K3SNET_LOG_LEVEL", _AGENT),
    ("K3SNET_LISTEN", _AGENT),
    ("K3SNET_LEASE_CANDIDATES", _AGENT),
    ("K3SNET_SPEC_SETTLE", _AGENT),
    ("K3SNET_TERMINATION_GRACE", _AGENT),
    ("K3SNET_NODE_NAME", _AGENT),
])
def test_an_empty_variable_is_read_as_an_unset_one(
        monkeypatch: pytest.MonkeyPatch, variable: str, command: list[str]) -> None:
    # A template's `value: ""` (a Helm value left blank, an Ansible default('')): four of
    # these were a usage error, exit 64 (an agent in a crash loop), where K3SNET_NODE_NAME,
    # K3SNET_STATE_DIR and the others read empty as unset.
    monkeypatch.delenv(variable, raising=False)
    unset = build_parser().parse_args(command)
    monkeypatch.setenv(variable, "")
    assert build_parser().parse_args(command) == unset


def _read_by_k3snet(tmp_path: Path) -> dict[str, Callable[[], object]]:
    """For every environment variable k3snet reads, what k3snet makes of it."""
    from k3snet._env import env_switch  # noqa: PLC0415
    from k3snet._kept import state_directory  # noqa: PLC0415
    from k3snet.agent._main import _lease_settings  # noqa: PLC0415
    from k3snet.backends.lock import _lock_dir  # noqa: PLC0415
    from k3snet.backends.options import resolve_backend_options  # noqa: PLC0415
    from k3snet.cli import _agent_logs_json  # noqa: PLC0415

    def agent() -> argparse.Namespace:
        return build_parser().parse_args(_AGENT)

    def kept() -> object:
        return (state_directory("spec-cache", tmp_path, "K3SNET_SPEC_CACHE"),
                state_directory("nftables-read", tmp_path, "K3SNET_READ_CACHE"))

    def backend(name: str) -> Callable[[], object]:
        return lambda: resolve_backend_options(name)

    return {
        "K3SNET_LOG_FORMAT": lambda: (build_parser().parse_args(["plan", "-f", "spec.yaml"]),
                                      agent(), _agent_logs_json(_AGENT)),
        "K3SNET_LOG_LEVEL": agent, "K3SNET_LISTEN": agent, "K3SNET_NODE_NAME": agent,
        "K3SNET_LEASE_CANDIDATES": agent, "K3SNET_SPEC_SETTLE": agent,
        "K3SNET_TERMINATION_GRACE": agent,
        "K3SNET_NAMESPACE": lambda: _lease_settings(agent()),
        "K3SNET_STATE_DIR": lambda: (kept(), resolve_backend_options("netlink"),
                                     resolve_backend_options("iptables")),
        "K3SNET_SPEC_CACHE": kept, "K3SNET_READ_CACHE": kept,
        "K3SNET_LOCK_DIR": _lock_dir,
        "K3SNET_PROC_SYS": backend("netlink"),
        "K3SNET_FLANNEL_CONF": backend("flannel"), "K3SNET_FLANNEL_CONFIGMAP": backend("flannel"),
        "K3SNET_DEBUG": lambda: env_switch("K3SNET_DEBUG", default=False),
        "K3SNET_FULL_EXIT": lambda: env_switch("K3SNET_FULL_EXIT", default=False),
    }


@pytest.mark.parametrize("spaces", [" ", "  ", "\t", " \n"])
def test_a_variable_set_to_whitespace_alone_is_read_as_an_unset_one_for_every_variable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spaces: str) -> None:
    # K3SNET_LOG_LEVEL=" " was a usage error (exit 64) and K3SNET_STATE_DIR=" " a relative
    # path refused by the backends, where the switches (K3SNET_DEBUG) stripped theirs.
    read = _read_by_k3snet(tmp_path)
    assert sorted(read) == sorted(_variables_named_in_k3snet())  # a new one is tested here
    differ = []
    for variable, reader in read.items():
        monkeypatch.delenv(variable, raising=False)
        unset = _outcome(reader)
        monkeypatch.setenv(variable, spaces)
        if _outcome(reader) != unset:
            differ.append(variable)
        monkeypatch.delenv(variable)
    assert differ == []


def _outcome(reader: Callable[[], object]) -> object:
    """What ``reader`` gives, or the refusal it raises (a usage error exits)."""
    try:
        return reader()
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - any refusal is an outcome
        return f"{type(exc).__name__}: {exc}"


def _variables_named_in_k3snet() -> set[str]:
    import re  # noqa: PLC0415

    import k3snet  # noqa: PLC0415
    from k3snet import model  # noqa: PLC0415

    package = Path(k3snet.__file__).parent
    named = {name for path in package.rglob("*.py")
             for name in re.findall(r"[\"'](K3SNET_[A-Z_]+)[\"']", path.read_text())}
    return {name for name in named if not hasattr(model, name)}  # constants, not variables


def test_every_environment_variable_k3snet_reads_is_documented() -> None:
    # K3SNET_LEASE_CANDIDATES was read as --lease-candidates' default, named nowhere.
    import re  # noqa: PLC0415

    import k3snet  # noqa: PLC0415
    from k3snet import model  # noqa: PLC0415

    package = Path(k3snet.__file__).parent
    named = {name for path in package.rglob("*.py")
             for name in re.findall(r"[\"'](K3SNET_[A-Z_]+)[\"']", path.read_text())}
    named -= {name for name in named if hasattr(model, name)}  # constants, not variables
    docs = "".join(path.read_text() for path in (package.parent / "docs").glob("*.md"))
    assert named
    assert sorted(name for name in named if name not in docs) == []


@pytest.mark.kernel
def test_a_cron_path_without_sbin_still_finds_the_iptables_tools(tmp_path: Path) -> None:
    # cron runs root's jobs with PATH=/usr/bin:/bin: `k3snet apply --backend iptables`
    # said "iptables-nft-save not found on PATH (install iptables)" where it is in /usr/sbin.
    import shutil  # noqa: PLC0415

    from k3snet._admin_path import ADMIN_PATH  # noqa: PLC0415
    from k3snet.lab.netns import temporary_netns  # noqa: PLC0415

    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    cron = "/usr/bin:/bin"
    tool = shutil.which("iptables-nft-save") or shutil.which("iptables-legacy-save")
    if tool is None or str(Path(tool).parent) not in ADMIN_PATH or shutil.which(
            Path(tool).name, path=cron):
        pytest.skip("needs the iptables tools in an sbin directory only")
    env = {"PATH": cron, "K3SNET_LOCK_DIR": str(tmp_path),
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    with temporary_netns("cron") as ns:
        done = subprocess.run([sys.executable, "-m", "k3snet", "observe", "--backend",
                               "iptables", "--netns", ns], capture_output=True, text=True,
                              check=False, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("owned (0):")
