"""The Ansible module ``k3snet.k3snet.egress``, run by ansible-core's ``ansible-playbook``
(tests/ansible/playbooks.py): its input checks, messages, warnings, secrets, plugins and
failures, and the docs' plays. The seed-lab runs, checked against the kernel's own view
and a real TCP connection from the lab's pod, are in test_module_lab.py.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import attrs
import jsonschema
import pytest
import yaml

import k3snet
from k3snet import Spec
from k3snet._admin_path import ADMIN_PATH
from k3snet.backends.base import ApplyResult
from k3snet.backends.lock import namespace_lock
from k3snet.cli import main as cli_main
from k3snet.demo import SPEC_PATH
from k3snet.errors import SpecError
from k3snet.lab.netns import temporary_netns
from k3snet.schemas import load_schema
from tests.ansible.playbooks import (
    DOCS_PAGE,
    MODULE_NAME,
    PLAYBOOK_TIMEOUT,
    REPO,
    Part,
    Tasks,
    egress,
    environment_in,
    forwarding,
    iptables_rules,
    load_module,
    no_traceback,
    playbook,
    returned_keys_are_documented,
    shared_playbook,
    state_files,
)


def test_a_failure_message_quoting_foreign_text_is_printable_its_lines_kept() -> None:
    # msg goes to whatever callback the controller uses; k3snet's text quotes others'.
    done = load_module().failure("error: table \x1b[2Jx\u202e\nnote: removed", "BackendError", 1)
    assert done["msg"] == "error: table \\x1b[2Jx\\u202e\nnote: removed"
    assert done["error"]["message"] == "error: table \x1b[2Jx\u202e\nnote: removed"  # as JSON


def test_a_task_result_shows_no_secret_sysctl_value() -> None:
    """plan, plan_text, applied and the diff show a tcp_fastopen_key or a stable_secret
    as the CLI prints it (<secret, 16 bytes, sha256:...>): a result is printed with -v,
    registered and kept by callbacks. plan and applied held the value."""
    key = "deadbeef-cafebabe-12345678-9abcdef0"
    wanted = k3snet.State(owned=[k3snet.Sysctl("net.ipv4.tcp_fastopen_key", key),
                                 k3snet.Sysctl("net.ipv6.conf.eth0.stable_secret",
                                               "2001:db8:dead:beef:cafe:babe:1234:5678")])
    p = k3snet.plan(k3snet.State(), wanted)
    done = k3snet.Convergence(k3snet.State(), p, ApplyResult("netlink", p.changes, 2))
    module = type("Module", (), {"params": {"state": "present", "netns": None},
                                 "_diff": True})()
    shown = json.dumps(load_module().result_of(module, done))
    assert "<secret, 16 bytes, sha256:" in shown
    for form in (key, "deadbeef", "dead:beef", "cafe:babe"):
        assert form not in shown


def test_a_task_s_registered_and_vvv_printed_arguments_show_no_secret_sysctl_value(
        tmp_path: Path, ansible_env: dict[str, str]) -> None:
    """The result's ``invocation`` holds the task's arguments, the ``spec`` option's
    secret sysctls too (printed with -vvv, given to callbacks): Ansible now hides their
    values, a failed task's too; a value under 8 characters is not hidden (it would
    hide every address holding it)."""
    key, stable = "deadbeef-cafebabe-12345678-9abcdef0", "2001:db8:dead:beef:cafe:babe:1234:5678"
    spec = {"cluster": {"podCIDRs": ["10.42.0.0/16"]},
            "sysctls": {"net.ipv4.tcp_fastopen_key": key,
                        "net.ipv6.conf.eth0.stable_secret": stable,
                        "net.ipv4.ip_local_port_range": "30000 60999"}}
    refused = {**spec, "sysctls": {"net.ipv4.tcp_fastopen_key": [key, key]},
               "masquerade": {"mode": "bogus"}}
    run = playbook(tmp_path, ansible_env, [
        egress(spec=spec, backends=["memory"], facts=False),
        {**egress(spec=refused, backends=["memory"], facts=False), "ignore_errors": True},
    ], "-vvv")
    assert run.returncode == 0, run.stdout + run.stderr
    done, failed = run.results
    assert done["changed"] is True
    assert failed["failed"] is True
    # -vvv prints each result's invocation: the option's other values stay.
    assert run.stdout.count('"VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"') == 4
    assert '"net.ipv4.ip_local_port_range": "30000 60999"' in run.stdout
    shown = json.dumps(run.results) + run.stdout + run.stderr
    for form in ("deadbeef", "dead:beef", "cafe:babe"):
        assert form not in shown.lower()
    assert load_module().secret_values({"sysctls": {
        "net.ipv6.conf.lo.stable_secret": "::1", "net.ipv4.ip_forward": "12345678"}}) == set()


@pytest.mark.kernel
@pytest.mark.usefixtures("require_root")
def test_a_cron_path_without_sbin_still_finds_the_iptables_tools(
        tmp_path: Path, ansible_env: dict[str, str]) -> None:
    # `ansible-playbook` from cron (connection local) runs the module with cron's
    # PATH=/usr/bin:/bin: the iptables backend said "iptables-nft-save not found on PATH
    # (install iptables)" where it is in /usr/sbin, as `k3snet apply` did before it
    # appended the sbin directories.
    cron = "/usr/bin:/bin"
    tool = shutil.which("iptables-nft-save") or shutil.which("iptables-legacy-save")
    if tool is None or str(Path(tool).parent) not in ADMIN_PATH or shutil.which(
            Path(tool).name, path=cron):
        pytest.skip("needs the iptables tools in an sbin directory only")
    with temporary_netns("cron") as ns:
        untouched = iptables_rules(ns)
        run = playbook(tmp_path, {**ansible_env, "PATH": cron},
                       [egress(state="absent", backends=["iptables"], netns=ns)], "--check")
        assert run.returncode == 0, run.stdout + run.stderr
        (result,) = run.results
        assert result["changed"] is False
        assert iptables_rules(ns) == untouched


@attrs.frozen
class Locked:
    """A play (check mode) run while this process holds a namespace's k3snet lock."""

    netns: str
    runs: dict[str, Part]


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Locked]:
    """The lock tests' tasks in one play (a run costs a second of CPU before its first
    task) on a namespace whose lock this process holds for the whole run."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    directory = tmp_path_factory.mktemp("locked")
    env = environment_in(directory)
    with pytest.MonkeyPatch.context() as monkeypatch, temporary_netns("lockwait") as ns:
        monkeypatch.setenv("K3SNET_LOCK_DIR", env["K3SNET_LOCK_DIR"])
        options = {"netns": ns, "backends": ["netlink"],
                   "backend_options": {"netlink": {"state_dir": str(directory)}}}
        with namespace_lock([ns]):  # held for the whole run
            runs = shared_playbook(directory, env, {
                "lock_wait": lambda _directory: lock_wait(options),
                "busy_retried": lambda _directory: busy_retried(options)}, "--check")
        yield Locked(ns, runs)


def lock_wait(options: dict[str, Any]) -> list[dict[str, Any]]:
    # The lock's "waiting up to 60 s" line went to the module's stderr, which Ansible does
    # not show: a task stood still for a minute without a word.
    return [egress(state="absent", lock_timeout=0.5, **options)]


@pytest.mark.kernel
def test_waiting_for_another_k3snet_process_is_a_task_warning(locked: Locked) -> None:
    (result,) = locked.runs["lock_wait"].results
    assert result["failed"] is True
    assert result["msg"].startswith(f"another k3snet process (pid {os.getpid()})")
    (warning,) = result["warnings"]
    assert warning.startswith(f"another k3snet process (pid {os.getpid()}) is changing "
                              f"network namespace {locked.netns!r}; waiting up to 0.5 s for it")


def busy_retried(options: dict[str, Any]) -> list[dict[str, Any]]:
    # `k3snet apply` exits 75 when another k3snet process (the agent) held the lock, "so a
    # script can retry on that code alone"; a failed task said it only in msg's prose, so
    # a play could not retry a busy node without retrying a bad spec as well.
    tasks = [egress(state="absent", lock_timeout=0, **options),
             egress(spec={"destinations": [{"cidr": "192.168.2.0/33"}]}, lock_timeout=0,
                    **options)]
    return [{**task, "register": f"busy{index}", "retries": 2, "delay": 0,
             "until": f"busy{index}.rc | default(0) != 75"} for index, task in enumerate(tasks)]


@pytest.mark.kernel
def test_a_busy_node_fails_with_rc_75_and_its_error_type_so_a_play_retries_it_alone(
        locked: Locked) -> None:
    run = locked.runs["busy_retried"]
    busy, bad = run.results
    assert busy["failed"] is True
    assert (busy["rc"], busy["error"]["type"]) == (75, "LockTimeoutError")
    assert busy["error"]["message"] == busy["msg"]
    assert busy["attempts"] >= 2  # retried (ansible-core versions count retries apart)
    assert returned_keys_are_documented(busy)
    # The CLI's error document's object (schema error), so one reader takes both.
    document = {"format": 1, "kind": "error", "error": busy["error"]}
    jsonschema.validate(document, load_schema("error"))
    documented = yaml.safe_load(load_module().RETURN)["error"]["contains"]
    assert set(documented) == set(load_schema("error")["properties"]["error"]["properties"])
    assert bad["failed"] is True
    assert (bad["rc"], bad["error"]["type"]) == (1, "SpecError")
    assert bad["error"]["problems"] == [
        "destinations[0].cidr: '192.168.2.0/33' is not a valid CIDR"]
    assert bad["attempts"] == 1  # not retried
    assert all(no_traceback(r, run) for r in run.results)


@pytest.mark.kernel
@pytest.mark.usefixtures("require_root")
def test_the_environment_s_state_dir_holds_the_sysctl_record_where_the_cli_reads_it(
        tmp_path: Path, ansible_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    # `k3snet apply` and the agent keep the netlink backend's record of the sysctls it took
    # over in $K3SNET_STATE_DIR; the module ignored the variable (its nftables read cache
    # did not), so on a node that sets it a playbook's record was in /run/k3snet, where
    # `k3snet destroy` never looked: the forwarding it had turned on was never given back.
    files_before = state_files()
    state = tmp_path / "state"
    spec = {"cluster": {"podCIDRs": ["10.42.0.0/16"]},
            "destinations": [{"cidr": "192.168.2.0/24"}]}
    with temporary_netns("envstate") as ns:
        before = forwarding(ns)
        task = {**egress(spec=spec, netns=ns, backends=["netlink"], facts=False),
                "environment": {"K3SNET_STATE_DIR": str(state)}}
        run = playbook(tmp_path, ansible_env, [task])
        assert run.returncode == 0, run.stdout + run.stderr
        assert before[0] == "0"
        assert forwarding(ns)[0] == "1"
        assert len(list(state.glob("*/sysctl.json"))) == 1
        # The command, in the same environment, finds the record and gives them back.
        monkeypatch.setenv("K3SNET_STATE_DIR", str(state))
        monkeypatch.setenv("K3SNET_LOCK_DIR", ansible_env["K3SNET_LOCK_DIR"])
        assert cli_main(["destroy", "--netns", ns, "--backend", "netlink", "--no-facts",
                         "--auto-approve"]) == 0
        assert forwarding(ns) == before
    assert state_files() == files_before, "the module kept its record in /run/k3snet"


BAD_SPEC = {"destinations": [{"cidr": "192.168.2.0/33"}], "masquerade": {"mode": "bogus"}}

# The tests of tasks that need no root and no namespace share one ansible-playbook run
# (shared_play, below them): a run costs about a second of CPU before its first task.
# Each test's tasks are the function named in the test; each reads its own results.
SHARED_PLAY: dict[str, Tasks] = {}


def in_the_shared_play(tasks: Tasks) -> Tasks:
    """Put ``tasks`` (one test's) into :data:`SHARED_PLAY`, under its name."""
    SHARED_PLAY[tasks.__name__] = tasks
    return tasks


@pytest.fixture(scope="module")
def shared_play(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Part]:
    directory = tmp_path_factory.mktemp("shared-play")
    return shared_playbook(directory, environment_in(directory), SHARED_PLAY)


@in_the_shared_play
def printing_a_module_failure(_directory: Path) -> list[dict[str, Any]]:
    # What another part's broken task prints (ansible-core before 2.19 prints a module's
    # crash as MODULE FAILURE and its Traceback): every test of the play that asserted
    # no_traceback over the whole play's output failed with it, naming the wrong tests.
    return [{"ansible.builtin.debug": {
        "msg": "MODULE FAILURE\nTraceback (most recent call last): of this task alone"}}]


def test_a_shared_play_s_part_holds_what_its_own_tasks_printed_alone(
        shared_play: dict[str, Part]) -> None:
    printed = "MODULE FAILURE\\nTraceback (most recent call last): of this task alone"
    assert printed in shared_play["printing_a_module_failure"].stdout
    others = {name: part for name, part in shared_play.items()
              if name != "printing_a_module_failure"}
    assert [name for name, part in others.items() if "of this task alone" in part.stdout] == []
    assert all(f"TASK [{name} 0]" in part.stdout for name, part in others.items())


@in_the_shared_play
def bad_input(_directory: Path) -> list[dict[str, Any]]:
    # None of these reaches a backend: no root, no namespace needed. One of each way a
    # task's input is refused, through ansible-playbook: a spec's problems (k3snet's
    # SpecError), a backend's constructor (BackendError) and Ansible's own option checks.
    # The other bad values take the same paths of main(): test_bad_option_values_...
    return [
        egress(spec=BAD_SPEC),
        egress(spec_path=str(SPEC_PATH), backend_options={"netlink": {"driver": "bogus"}}),
        egress(spec_path=str(SPEC_PATH), spec=BAD_SPEC),
    ]


def test_bad_input_fails_with_k3snet_s_message_and_no_traceback(
        shared_play: dict[str, Part]) -> None:
    run = shared_play["bad_input"]
    results = run.results
    assert len(results) == 3
    assert all(r["failed"] is True and no_traceback(r, run) for r in results), results
    # What a play tests to act on a failure: k3snet's error class and the exit code
    # `k3snet apply` has for it (Ansible's own option checks have neither).
    assert [(r["error"]["type"], r["rc"]) if "error" in r else None for r in results] == [
        ("SpecError", 1), ("BackendError", 1), None]
    assert results[0]["error"]["problems"] == [
        "destinations[0].cidr: '192.168.2.0/33' is not a valid CIDR",
        "masquerade.mode: must be destinations, all or off, got 'bogus'"]
    messages = [r["msg"] for r in results]
    assert messages[0] == ("2 problems in the spec option:\n"
                           "  destinations[0].cidr: '192.168.2.0/33' is not a valid CIDR\n"
                           "  masquerade.mode: must be destinations, all or off, got 'bogus'")
    assert messages[1] == "driver must be 'socket' or 'pyroute2', got 'bogus'"
    assert "mutually exclusive" in messages[2]


@attrs.define
class _Found:
    """What the module's ``discover`` gives, as the tests below need it."""

    groups: list[Any] = attrs.field(factory=list)

    def refusal(self, _command: str) -> None:
        """Every look permitted."""


def _module_result(args: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                   capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """The result the module's main() prints for ``args``, run in this process."""
    testing = pytest.importorskip("ansible.module_utils.testing")
    monkeypatch.setenv("PATH", os.environ["PATH"])  # main() appends the sbin directories
    with testing.patch_module_args(args), pytest.raises(SystemExit):
        load_module().main()
    result: dict[str, Any] = json.loads(capsys.readouterr().out)
    return result


def test_bad_option_values_fail_with_k3snet_s_message_its_error_type_and_rc(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # The module's main() in this process (a playbook's task costs a Python process that
    # imports k3snet): what ansible-playbook adds, the test above shows for each path.
    tasks: list[dict[str, Any]] = [
        {"spec_path": str(tmp_path / "missing.yaml")},
        {"spec_path": str(SPEC_PATH), "backends": ["no-such-backend"]},
        {"spec_path": str(SPEC_PATH), "backend_options": {"netlink": {"colour": "blue"}}},
        {"spec_path": str(SPEC_PATH), "backend_options": {"iptables": {}}},
        # Refused by the constructor before it touches anything.
        {"spec_path": str(SPEC_PATH), "backend_options": {"netlink": {"proc_sys": 5}}},
        {"state": "present"},
        # NaN never reached the lock's deadline: a held lock was waited for for ever.
        {"spec_path": str(SPEC_PATH), "backends": ["memory"], "facts": False,
         "lock_timeout": "nan"},
        # An empty list (a template that rendered none) silently meant the defaults.
        {"spec_path": str(SPEC_PATH), "backends": []},
        # The library's client object, given as text: a traceback when it was first used.
        {"spec_path": str(SPEC_PATH), "backends": ["calico"],
         "backend_options": {"calico": {"api_client": "https://10.0.0.1:6443"}}},
    ]
    results = [_module_result(args, monkeypatch, capsys) for args in tasks]
    assert all(r["failed"] is True and "exception" not in r for r in results), results
    assert [(r["error"]["type"], r["rc"]) if "error" in r else None for r in results] == [
        ("SpecError", 1), ("BackendNotFoundError", 1), ("BackendOptionError", 1),
        ("BackendOptionError", 1), ("BackendError", 1), None, ("ParameterError", 64),
        ("ParameterError", 64), ("BackendOptionError", 1)]
    messages = [r["msg"] for r in results]
    assert "missing.yaml" in messages[0]
    assert "no-such-backend" in messages[1]
    assert "backend 'netlink' has no option 'colour'; its options: " in messages[2]  # the CLI's
    assert "state_dir" in messages[2]  # the options it does have
    assert "backend_options names backends not in use: iptables" in messages[3]
    # The constructor's own check (as the driver's), no longer Path()'s TypeError.
    assert messages[4] == "proc_sys must be a path (text), got 5"
    assert "spec_path, spec" in messages[5]
    assert messages[6] == "lock_timeout must be a number of seconds >= 0 and below a day, got nan"
    assert messages[7].startswith("backends is an empty list")
    assert messages[8].startswith(
        "backend 'calico': api_client must be a Kubernetes ApiClient object")
    assert "kubeconfig" in messages[8]


@in_the_shared_play
def conflict_allowed(directory: Path) -> list[dict[str, Any]]:
    # allow_conflicts applies the rest of the plan; the part foreign state blocks stays
    # unmet. The task said ok (or changed) in green, the conflict only in plan_text.
    conf = directory / "net-conf.json"
    conf.write_text('{"Network": "10.42.0.0/16", "Backend": {"Type": "vxlan"}}')
    spec = {"cluster": {"podCIDRs": ["10.44.0.0/16"]},
            "destinations": [{"cidr": "192.168.2.0/24"}], "masquerade": {"mode": "all"}}
    return [egress(spec=spec, backends=["flannel"], allow_conflicts=True,
                   backend_options={"flannel": {"path": str(conf)}})]


def test_a_conflict_allowed_is_a_task_warning(shared_play: dict[str, Part]) -> None:
    run = shared_play["conflict_allowed"]
    (result,) = run.results
    assert not result.get("failed"), result["msg"]
    assert result["plan"]["notes"][0]["status"] == "conflict"
    (warning,) = result["warnings"]
    assert warning.startswith("allow_conflicts: not applied, foreign state conflicts: ")
    assert "expects Network=10.44.0.0/16" in warning
    assert "\n" not in warning
    assert "[WARNING]: allow_conflicts: not applied" in run.stdout + run.stderr


@in_the_shared_play
def disruptive_allowed(directory: Path) -> list[dict[str, Any]]:
    # `k3snet plan --allow-disruptive` prints "!! disruptive: ...; allowed" (flannel stops on
    # every node whose podCIDR the new Network lacks, until restarted); a --check --diff
    # review with allow_disruptive showed only the changed file, nothing of the disruption.
    conf = directory / "net-conf.json"
    conf.write_text('{"Network": "10.42.0.0/16", "Backend": {"Type": "vxlan"}}')
    spec = {"cluster": {"podCIDRs": ["10.44.0.0/16"]},
            "destinations": [{"cidr": "192.168.2.0/24"}], "masquerade": {"mode": "all"},
            "cni": {"flannel": {"setNetworks": True, "backend": {"type": "vxlan"}}}}
    return [{**egress(spec=spec, backends=["flannel"], allow_disruptive=True,
                      backend_options={"flannel": {"path": str(conf)}}), "check_mode": True}]


def test_a_disruptive_change_allowed_is_a_task_warning(shared_play: dict[str, Part]) -> None:
    run = shared_play["disruptive_allowed"]
    conf = run.directory / "net-conf.json"
    (result,) = run.results
    assert not result.get("failed"), result["msg"]
    assert result["changed"] is True
    assert result["applied"] == []  # check mode
    (warning,) = result["warnings"]
    assert warning.startswith(f"disruptive: + flannel file:{conf} Network=10.44.0.0/16")
    assert "changing flannel's Network" in warning
    assert warning.endswith("; allowed")


@in_the_shared_play
def no_node_backend(_directory: Path) -> list[dict[str, Any]]:
    # As `k3snet apply`: a backend without a network namespace (the memory backend here,
    # a cloud route table elsewhere) is not checked against this node's interfaces.
    # The module read them anyway and refused a device the node does not have.
    spec = {"cluster": {"podCIDRs": ["10.42.0.0/16"]},
            "destinations": [{"cidr": "198.51.100.0/24", "gateway": "203.0.113.1",
                              "device": "k3snet-nodev0"}]}
    return [egress(spec=spec, backends=["memory"])]


def test_node_facts_are_read_only_for_backends_acting_on_the_node(
        shared_play: dict[str, Part]) -> None:
    (result,) = shared_play["no_node_backend"].results
    assert not result.get("failed"), result["msg"]
    assert result["changed"] is True
    assert len(result["applied"]) == 4


@in_the_shared_play
def old_k3snet(directory: Path) -> list[dict[str, Any]]:
    # A node whose k3snet is older than the collection (the wheel of an earlier release)
    # was told k3snet was not installed at all, and to check ansible_python_interpreter.
    old = directory / "k3snet"
    old.mkdir()
    (old / "__init__.py").write_text('__version__ = "0.0.1"\n')
    # The module's environment on the node: its Python finds this k3snet first.
    return [{**egress(spec_path=str(SPEC_PATH)), "environment": {"PYTHONPATH": str(directory)}}]


def test_a_k3snet_the_module_cannot_use_is_named_with_its_version_and_place(
        shared_play: dict[str, Part]) -> None:
    run = shared_play["old_k3snet"]
    old = run.directory / "k3snet"
    (result,) = run.results
    assert result["failed"] is True
    assert result["msg"].startswith(
        f"k3snet 0.0.1 ({old / '__init__.py'}) on this node's Python ({sys.executable}) is "
        "not one this module can use: No module named 'k3snet._admin_path'; install the "
        "k3snet release of this collection")
    assert "Failed to import the required Python library" not in result["msg"]
    assert (result["error"]["type"], result["rc"]) == ("ImportError", 1)


def _python_without_k3snet() -> str | None:
    """The system's python3 when it cannot import k3snet (one without it), else None."""
    system = shutil.which("python3", path="/usr/bin:/bin")
    if system is None or subprocess.run([system, "-c", "import k3snet"], env={},
                                        cwd="/", capture_output=True, check=False).returncode == 0:
        return None
    return system


@in_the_shared_play
def broken_k3snet(directory: Path) -> list[dict[str, Any]]:
    # k3snet installed without a dependency (pip install --no-deps, attrs removed since):
    # the task said k3snet was not installed, and to check ansible_python_interpreter.
    broken = directory / "k3snet"
    broken.mkdir()
    (broken / "__init__.py").write_text("import k3snet_absent_dependency\n")
    tasks = [{**egress(spec_path=str(SPEC_PATH)), "environment": {"PYTHONPATH": str(directory)}}]
    # None at all (a Python without it: the system's, here).
    system = _python_without_k3snet()
    if system is not None:
        tasks.append({**egress(spec_path=str(SPEC_PATH)), "environment": {"PYTHONPATH": ""},
                      "vars": {"ansible_python_interpreter": system}})
    return tasks


def test_a_k3snet_that_fails_to_import_is_named_with_its_place_and_error(
        shared_play: dict[str, Part]) -> None:
    run = shared_play["broken_k3snet"]
    broken = run.directory / "k3snet"
    result, *without = run.results
    assert result["failed"] is True
    assert result["msg"] == (
        f"k3snet ({broken / '__init__.py'}) on this node's Python ({sys.executable}) fails to "
        "import: No module named 'k3snet_absent_dependency'; install it again with its "
        "dependencies")
    assert (result["error"]["type"], result["rc"]) == ("ImportError", 1)
    # None at all (a Python without it: the system's, here): Ansible's own words for a
    # library the node lacks, pointing at ansible_python_interpreter.
    if not without:
        pytest.skip("needs a system python3 without k3snet")
    (result,) = without
    assert result["msg"].startswith("Failed to import the required Python library (k3snet)")
    assert (result["error"]["type"], result["rc"]) == ("ImportError", 1)


def plugin_path(directory: Path, name: str, source: str) -> str:
    """A directory that, on the module's PYTHONPATH (a task's ``environment``), installs
    backend plugin ``name`` (class ``source``'s last) as an entry point, as a third-party
    backend is found."""
    plugins = directory / f"plugin-{name}"
    dist = plugins / f"k3snet_{name}-0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: k3snet-{name}\nVersion: 0\n")
    cls = re.findall(r"^class (\w+)", source, re.MULTILINE)[-1]
    (dist / "entry_points.txt").write_text(f"[k3snet.backends]\n{name} = k3snet_{name}:{cls}\n")
    (plugins / f"k3snet_{name}.py").write_text(source)
    return str(plugins)


FAILING_BACKEND = """
from k3snet.backends.memory import MemoryBackend
from k3snet.errors import ApplyError, RollbackError


class FailingBackend(MemoryBackend):
    name = "failing"

    def __init__(self, rollback: bool = False) -> None:
        super().__init__()
        self.rollback = rollback

    def apply(self, plan):
        if self.rollback:
            raise RollbackError("undoing it failed too", failed=plan.changes[0],
                                done=plan.changes[:1])
        raise ApplyError("the kernel said no", failed=plan.changes[0])
"""


@in_the_shared_play
def failing_apply(directory: Path) -> list[dict[str, Any]]:
    # A backend plugin (an entry point, as a third-party backend is found) whose apply
    # fails: rolled back, nothing changed; not rolled back (RollbackError), the node may
    # be half-changed, and a task that says changed=false hides it.
    plugins = plugin_path(directory, "failing", FAILING_BACKEND)
    spec = {"cluster": {"podCIDRs": ["10.42.0.0/16"]},
            "destinations": [{"cidr": "192.168.2.0/24", "gateway": "192.168.1.1"}]}
    return [{**egress(spec=spec, backends=["failing"], facts=False,
                      backend_options={"failing": {"rollback": rollback}}),
             "environment": {"PYTHONPATH": plugins}}
            for rollback in (False, True)]


def test_a_failed_apply_is_changed_only_when_its_rollback_failed_too(
        shared_play: dict[str, Part]) -> None:
    run = shared_play["failing_apply"]
    rolled_back, half_done = run.results
    assert rolled_back["failed"] is True
    assert rolled_back["changed"] is False
    assert rolled_back["msg"].startswith("the kernel said no; failed change: + ")
    assert half_done["failed"] is True
    assert half_done["changed"] is True
    assert half_done["msg"].startswith("undoing it failed too; failed change: + ")
    # The exit codes of `k3snet apply`: 5 is "the node may be half-changed".
    assert [(r["error"]["type"], r["rc"]) for r in run.results] == [
        ("ApplyError", 1), ("RollbackError", 5)]
    assert all(no_traceback(r, run) for r in run.results)


ANY_OPTIONS_BACKEND = """
from k3snet.backends.memory import MemoryBackend


class AnyOptionsBackend(MemoryBackend):
    name = "anyopts"

    def __init__(self, **options):
        super().__init__()
        if options != {"region": "eu-1"}:
            raise ValueError(f"got {options}")
"""

BARE_BACKEND = """
from k3snet.backends.memory import MemoryBackend


class BareBackend:
    # The members every use of a backend reaches for, and no __enter__ or __exit__.
    name = "bare"

    def __init__(self):
        self._memory = MemoryBackend()
        self.capabilities = self._memory.capabilities

    def observe(self):
        return self._memory.observe()

    def check(self, plan):
        return self._memory.check(plan)

    def apply(self, plan):
        return self._memory.apply(plan)

    def close(self):
        pass
"""

NOT_A_BACKEND = """
class NotABackend:
    pass
"""


@in_the_shared_play
def plugins_of_every_shape(directory: Path) -> list[dict[str, Any]]:
    # The module had its own copy of k3snet.create_backend: it refused every option of a
    # plugin whose constructor takes **options (the CLI passes them on), and a plugin
    # without __enter__, or a factory returning no backend, was a MODULE FAILURE with a
    # traceback (the CLI uses the first, and names what the second lacks).
    plugins = os.pathsep.join(plugin_path(directory, name, source) for name, source in (
        ("anyopts", ANY_OPTIONS_BACKEND), ("bare", BARE_BACKEND),
        ("notabackend", NOT_A_BACKEND)))
    spec = {"cluster": {"podCIDRs": ["10.42.0.0/16"]},
            "destinations": [{"cidr": "192.168.2.0/24", "gateway": "192.168.1.1"}]}
    tasks = [egress(spec=spec, backends=["anyopts"], facts=False,
                    backend_options={"anyopts": {"region": "eu-1"}}),
             egress(spec=spec, backends=["bare"], facts=False),
             egress(spec=spec, backends=["notabackend"], facts=False)]
    return [{**task, "environment": {"PYTHONPATH": plugins}} for task in tasks]


def test_backend_plugins_are_built_as_the_cli_builds_them(
        shared_play: dict[str, Part]) -> None:
    run = shared_play["plugins_of_every_shape"]
    anyopts, bare, broken = run.results
    assert not anyopts.get("failed"), anyopts["msg"]
    assert len(anyopts["applied"]) == 4
    assert not bare.get("failed"), bare.get("msg")
    assert len(bare["applied"]) == 4
    assert broken["failed"] is True
    assert broken["error"]["type"] == "BackendUnavailableError"
    assert "not a backend (no name, no capabilities" in broken["msg"]
    assert all(no_traceback(r, run) for r in run.results)


STOPPED_BACKEND = """
import os
import signal

from k3snet.backends.memory import MemoryBackend


class StoppedBackend(MemoryBackend):
    name = "stopped"

    def apply(self, plan):
        # What systemd stopping ansible-pull's unit, a CI job's cancel or `timeout` does to
        # a module run through the local connection: SIGTERM, here between two backends.
        os.kill(os.getpid(), signal.SIGTERM)
        return super().apply(plan)
"""


LATE_BACKEND = """
import os
import signal

from k3snet.backends.memory import MemoryBackend


class LateBackend(MemoryBackend):
    name = "late"

    def pending_restarts(self):
        # Asked once every part is made (Cilium's reads its agents' pods from the API
        # server): SIGTERM from Ansible's timeout, or systemd, landing there.
        os.kill(os.getpid(), signal.SIGTERM)
        return ()
"""

# A plugin backend signalled inside the module, after the netlink backend's part: name,
# source, the second backend of the task (its kinds split so netlink turns forwarding on).
SIGNALLED = {
    "sigterm": ("stopped", STOPPED_BACKEND),
    "sigint": ("stopped", STOPPED_BACKEND.replace("signal.SIGTERM", "signal.SIGINT")),
    "late": ("late", LATE_BACKEND),
}


@attrs.frozen
class Signalled:
    """A task stopped by a signal (:data:`SIGNALLED`): its result, its namespace and the
    namespace's forwarding before the play."""

    run: Part
    netns: str
    before: tuple[str, ...]


@pytest.fixture(scope="module")
def signalled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Signalled]]:
    """The tasks of :data:`SIGNALLED` in one play (a run costs a second of CPU before its
    first task), each in a namespace of its own."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    directory = tmp_path_factory.mktemp("signalled")
    spec = {"cluster": {"podCIDRs": ["10.42.0.0/16"]},
            "destinations": [{"cidr": "192.168.2.0/24"}]}
    with ExitStack() as stack:
        namespaces = {key: stack.enter_context(temporary_netns(key)) for key in SIGNALLED}
        before = {key: forwarding(ns) for key, ns in namespaces.items()}

        def tasks(key: str, part_dir: Path) -> list[dict[str, Any]]:
            name, source = SIGNALLED[key]
            return [{**egress(spec=spec, netns=namespaces[key], facts=False,
                              backends=["netlink", f"{name}:forward,nat"],
                              backend_options={"netlink": {"state_dir": str(part_dir)}}),
                     "environment": {"PYTHONPATH": plugin_path(part_dir, name, source)}}]

        runs = shared_playbook(directory, environment_in(directory), {
            key: functools.partial(tasks, key) for key in SIGNALLED})
        yield {key: Signalled(runs[key], namespaces[key], before[key]) for key in SIGNALLED}


@pytest.mark.kernel
def test_sigterm_during_an_apply_undoes_what_it_had_changed(
        signalled: dict[str, Signalled]) -> None:
    # `k3snet apply` undoes an apply in progress on SIGTERM or SIGHUP; the module died at
    # once, between two backends: the netlink backend's forwarding stayed on, unrecorded
    # in any task result (MODULE FAILURE).
    stopped = signalled["sigterm"]
    (result,) = stopped.run.results
    assert result["failed"] is True
    assert result["changed"] is False
    assert result["msg"].startswith("stopped by SIGTERM")
    assert (result["error"]["type"], result["rc"]) == ("SIGTERM", 143)  # as k3snet apply
    assert no_traceback(result, stopped.run)
    assert forwarding(stopped.netns) == stopped.before


@pytest.mark.kernel
def test_sigint_during_an_apply_undoes_it_and_fails_the_task_saying_so(
        signalled: dict[str, Signalled]) -> None:
    # Ctrl-C reaching a module run through the local connection (the terminal's process
    # group): its KeyboardInterrupt, after the undo, was Ansible's MODULE FAILURE, a
    # traceback with no word of the apply taken back. Now as SIGTERM's, rc 130 as
    # `k3snet apply`'s.
    stopped = signalled["sigint"]
    (result,) = stopped.run.results
    assert (result["failed"], result["changed"]) == (True, False), result.get("msg")
    assert result["msg"] == "stopped by SIGINT: nothing was changed (an apply in progress " \
        "was undone)"
    assert (result["error"]["type"], result["rc"]) == ("SIGINT", 130)
    assert no_traceback(result, stopped.run)
    assert forwarding(stopped.netns) == stopped.before


@pytest.mark.kernel
def test_sigterm_once_every_part_is_made_says_the_change_stays(
        signalled: dict[str, Signalled]) -> None:
    # As `k3snet apply` says it: the module, with no block holding a signal after the
    # commit, said "nothing was changed (an apply in progress was undone)", changed
    # false, of a node whose forwarding k3snet had turned on and left so.
    stopped = signalled["late"]
    (result,) = stopped.run.results
    assert (result["failed"], result["changed"]) == (True, True), result["msg"]
    assert result["msg"].startswith(
        "stopped by SIGTERM after the change was made, which stays: netlink+late: "), \
        result["msg"]
    assert (result["error"]["type"], result["rc"]) == ("SIGTERM", 143)
    assert no_traceback(result, stopped.run)
    assert forwarding(stopped.netns) != stopped.before


def test_documentation_and_examples_match_the_argument_spec() -> None:
    module = load_module()
    documented = yaml.safe_load(module.DOCUMENTATION)["options"]
    spec = module.ARGUMENT_SPEC
    assert set(documented) == set(spec)
    for name, option in spec.items():
        doc = documented[name]
        assert doc["type"] == option["type"], name
        assert doc.get("default") == option.get("default"), name
        assert doc.get("choices") == option.get("choices"), name
        assert doc.get("elements") == option.get("elements"), name
    for task in yaml.safe_load(module.EXAMPLES):
        assert set(task[MODULE_NAME]) <= set(spec), task


def test_the_collection_s_version_is_k3snet_s_in_semver_spelling() -> None:
    # The module drives the k3snet library of its own release ("install the k3snet release
    # of this collection"): collection 0.1.0 beside k3snet 0.1.0.dev0 named no release.
    galaxy = yaml.safe_load((REPO / "ansible_collections/k3snet/k3snet/galaxy.yml").read_text())
    semver = re.sub(r"^(\d+\.\d+\.\d+)\.?(.+)$", r"\1-\2", k3snet.__version__)
    assert galaxy["version"] == semver
    assert f"k3snet-k3snet-{semver}.tar.gz" in DOCS_PAGE.read_text()


def yaml_blocks(page: Path) -> Iterator[Any]:
    """The parsed ```` ```yaml ```` blocks of a Markdown page."""
    for block in re.findall(r"^```yaml\n(.*?)^```$", page.read_text(), re.MULTILINE | re.DOTALL):
        yield yaml.safe_load(block)


def test_no_docs_play_reads_with_spec_path_a_file_it_copies() -> None:
    """In check mode a copy task writes nothing: a later ``spec_path`` task plans the spec
    already on the node, and ``--check --diff`` showed an edited spec as no change."""
    for block in yaml_blocks(DOCS_PAGE):
        if not isinstance(block, list) or "hosts" not in block[0]:
            continue
        for play in block:
            copied = {task["ansible.builtin.copy"]["dest"] for task in play["tasks"]
                      if "ansible.builtin.copy" in task}
            read = {task[MODULE_NAME].get("spec_path") for task in play["tasks"]
                    if MODULE_NAME in task}
            assert not copied & read, play["name"]


def test_the_docs_playbooks_pass_a_syntax_check(
        tmp_path: Path, ansible_env: dict[str, str]) -> None:
    """Every playbook and task on docs/ansible.md parses, and names only real options."""
    options = set(load_module().ARGUMENT_SPEC)
    books = []
    for index, block in enumerate(yaml_blocks(DOCS_PAGE)):
        if isinstance(block, dict):  # requirements.yml
            assert block["collections"][0]["type"] == "git"
            continue
        plays = block if "hosts" in block[0] else [
            {"hosts": "localhost", "gather_facts": False, "tasks": block}]
        for play in plays:
            for task in play["tasks"]:
                if MODULE_NAME in task:
                    assert set(task[MODULE_NAME]) <= options, task
        book = tmp_path / f"docs-{index}.yml"
        book.write_text(json.dumps(plays))
        books.append(str(book))
    assert len(books) >= 4
    ansible_playbook = Path(sys.executable).with_name("ansible-playbook")
    done = subprocess.run([str(ansible_playbook), "--syntax-check", *books], env=ansible_env,
                          cwd=tmp_path, capture_output=True, text=True, check=False,
                          timeout=PLAYBOOK_TIMEOUT)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_spec_s_backend_options_and_allow_disruptive_reach_the_backends_as_in_the_cli(
        tmp_path: Path) -> None:
    # The same spec through the module and through `k3snet apply -f`: the same options
    # (a playbook writing to another table or file than the agent would duplicate them).
    conf = tmp_path / "net-conf.json"
    conf.write_text('{"Network": "10.42.0.0/16", "Backend": {"Type": "vxlan"}}')
    spec = Spec.from_dict({"cluster": {"podCIDRs": ["10.42.0.0/16"]},
                           "destinations": [{"cidr": "192.168.2.0/24"}],
                           "backends": {"nftables": {"table": "teama"},
                                        "flannel": {"path": str(conf)}},
                           "cni": {"allowDisruptive": True}})
    module = load_module()
    params = {name: option.get("default") for name, option in module.ARGUMENT_SPEC.items()}
    with ExitStack() as stack:
        group = module.build_backend(params, spec, stack)
        nftables, flannel = (m.backend for m in group.members)
        assert (nftables.table, flannel._store.path, flannel.allow_disruptive) == (
            "teama", conf, True)
        # The task's own backend_options still win over the spec's.
        params["backend_options"] = {"nftables": {"table": "teamb"}}
        group = module.build_backend(params, spec, stack)
        assert group.members[0].backend.table == "teamb"
    # A spec option no backend has is refused with the spec's own message.
    bad = Spec.from_dict({"destinations": [{"cidr": "192.168.2.0/24"}],
                          "backends": {"nftables": {"colour": "blue"}}})
    with ExitStack() as stack, pytest.raises(SpecError, match=r"backends\.nftables\.colour"):
        module.build_backend(params | {"backend_options": {}}, bad, stack)
    # So is a relative path, which names another file from each working directory.
    relative = Spec.from_dict({"destinations": [{"cidr": "192.168.2.0/24"}],
                               "backends": {"flannel": {"path": "net-conf.json"}}})
    with ExitStack() as stack, pytest.raises(
            SpecError, match=r"backends\.flannel\.path: 'net-conf.json' is a relative path"):
        module.build_backend(params | {"backend_options": {}}, relative, stack)


@pytest.mark.parametrize("with_spec", [True, False], ids=["present", "absent-without-spec"])
def test_allow_disruptive_reaches_the_backends_as_the_cli_flag_does(
        tmp_path: Path, with_spec: bool) -> None:
    # `k3snet apply/destroy --allow-disruptive`: without it a playbook could allow a
    # disruptive change only through the spec, and state=absent (no spec) not at all
    # but by naming each CNI backend's constructor option.
    conf = tmp_path / "net-conf.json"
    conf.write_text('{"Network": "10.42.0.0/16", "Backend": {"Type": "vxlan"}}')
    spec = Spec.from_dict({"cluster": {"podCIDRs": ["10.42.0.0/16"]},
                           "backends": {"flannel": {"path": str(conf)}}}) if with_spec else None
    module = load_module()
    params = {name: option.get("default") for name, option in module.ARGUMENT_SPEC.items()}
    params["backends"] = ["flannel"]
    if not with_spec:
        params["backend_options"] = {"flannel": {"path": str(conf)}}
    with ExitStack() as stack:
        assert module.build_backend(params, spec, stack).members[0].backend.allow_disruptive \
            is False
        params["allow_disruptive"] = True
        assert module.build_backend(params, spec, stack).members[0].backend.allow_disruptive \
            is True


@pytest.mark.usefixtures("require_root")
def test_a_spec_path_another_user_could_write_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # As `k3snet apply -f`: the module applies its spec_path as root (become), and a file
    # another user could write let that user change what root applies.
    monkeypatch.delenv("SUDO_UID", raising=False)
    spec = tmp_path / "egress.yaml"
    spec.write_text("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"
                    "destinations:\n  - cidr: 192.168.2.0/24\n")
    params = {"spec_path": str(spec), "spec": None}
    module = load_module()
    spec.chmod(0o644)
    assert module.load_spec(params) is not None
    spec.chmod(0o666)
    with pytest.raises(k3snet.SpecError, match=r"writable by others.*another user could"):
        module.load_spec(params)
    spec.chmod(0o644)
    os.chown(spec, 65534, 65534)
    with pytest.raises(k3snet.SpecError, match=r"owned by uid 65534"):
        module.load_spec(params)


@pytest.mark.usefixtures("require_root")
def test_a_file_the_spec_option_imports_that_another_user_could_write_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The spec option is the controller's, but the ip-masq-agent config it names is read
    # on the node: one another user can write decides what root masquerades, as with
    # `k3snet apply -f` (whose spec's imports are refused likewise).
    monkeypatch.delenv("SUDO_UID", raising=False)
    config = tmp_path / "ip-masq-agent"
    config.write_text("nonMasqueradeCIDRs: [10.0.0.0/8]\n")
    config.chmod(0o644)
    given = {"cluster": {"podCIDRs": ["10.42.0.0/16"]},
             "destinations": [{"cidr": "192.168.2.0/24"}],
             "masquerade": {"ipMasqAgentConfig": str(config)}}
    module = load_module()
    params = {name: option.get("default") for name, option in module.ARGUMENT_SPEC.items()}
    assert module.load_spec(params | {"spec": given}) is not None
    config.chmod(0o666)
    with pytest.raises(SpecError, match=r"masquerade\.ipMasqAgentConfig: .*writable by others"):
        module.load_spec(params | {"spec": given})


def test_a_switch_of_cluster_backends_names_the_ippool_calico_left_as_k3snet_plan_does(
        tmp_path: Path, ansible_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    # A cluster set up through calico, the playbook now on cilium: the IPPool k3snet
    # created stayed, and Calico kept NATting by it, unsaid.
    pytest.importorskip("kmock")
    from k3snet.testing.kube import EmulatedApiServer  # noqa: PLC0415 - kmock only

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    spec = tmp_path / "spec.yaml"
    spec.write_text("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"
                    "cluster: {podCIDRs: [10.42.0.0/16]}\n"
                    "destinations:\n  - cidr: 192.168.2.0/24\n    masquerade: false\n"
                    "cni:\n  calico: {}\n")
    kubeconfig = tmp_path / "kubeconfig"
    pools = "crd.projectcalico.org/v1/ippools"
    with EmulatedApiServer(resources=(pools, "crd.projectcalico.org/v1/felixconfigurations",
                                      "v1/configmaps")) as server:
        server.put(pools, {"apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
                           "metadata": {"name": "default-ipv4-ippool"},
                           "spec": {"cidr": "10.42.0.0/16", "natOutgoing": True}})
        kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "lab",
            "clusters": [{"name": "lab", "cluster": {"server": server.url}}],
            "users": [{"name": "u", "user": {}}],
            "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "u"}}]}))
        assert cli_main(["apply", "-f", str(spec), "--no-facts", "--auto-approve", "--backend",
                         "calico", "--backend-opt", f"calico.kubeconfig={kubeconfig}"]) == 0
        run = playbook(tmp_path, ansible_env, [egress(
            spec_path=str(spec), backends=["cilium"],
            backend_options={"cilium": {"kubeconfig": str(kubeconfig)}})], "--check")
        assert run.returncode == 0, run.stdout + run.stderr
        (result,) = run.results
        (left,) = [w for w in result["warnings"] if " holds " in w]
        assert left.startswith("calico holds 1 of k3snet's objects in the cluster"), left
        assert left.endswith(f"`k3snet destroy --backend calico --backend-opt "
                             f"calico.kubeconfig={kubeconfig}` removes them (k3snet's alone)")
        assert len(server.objects(pools)) == 2  # said, not removed


def test_a_fast_open_key_of_seven_characters_is_hidden_a_short_stable_secret_not() -> None:
    """``1-2-3-4`` is a Fast Open key the kernel takes (7 characters, the shortest): it was
    left in the task's ``invocation`` by the 8-character floor meant for a
    ``stable_secret`` such as ``::1``, which hidden would hide every address holding it
    too (``fd00::1`` shown as ``fd00********``). A key's dashes make it no address."""
    secret_values = load_module().secret_values
    assert secret_values({"sysctls": {"net.ipv4.tcp_fastopen_key": "1-2-3-4"}}) == {"1-2-3-4"}
    assert secret_values({"sysctls": {"net/ipv4/tcp_fastopen_key": " a-b-c-d "}}) == {"a-b-c-d"}
    assert secret_values({"sysctls": {"net.ipv6.conf.eth0.stable_secret": "::1",
                                      "net.ipv4.tcp_fastopen_key": "1-2-3"}}) == set()
    assert secret_values({"sysctls": {"net.ipv6.conf.eth0.stable_secret": "2001:db8::1"}}) \
        == {"2001:db8::1"}


@pytest.mark.parametrize(("stop", "rc", "name"), [
    (lambda: SystemExit(143), 143, "SIGTERM"), (KeyboardInterrupt, 130, "SIGINT")],
    ids=["sigterm", "sigint"])
def test_state_absent_stopped_between_two_backends_is_changed_naming_what_stays(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        stop: Callable[[], BaseException], rc: int, name: str) -> None:
    # destroy_each notes what the backends before the stopped one removed (it stays
    # removed); the module said "nothing was changed", changed false, of a changed node
    # (SIGTERM), and Ctrl-C's KeyboardInterrupt was Ansible's MODULE FAILURE (a
    # traceback), the removal that stays unsaid.
    testing = pytest.importorskip("ansible.module_utils.testing")
    module = load_module()
    said = "removed before nftables was stopped, and not undone: netlink: 2 change(s)"

    def stopped(*_args: object, **_kwargs: object) -> None:
        exc = stop()
        exc.add_note(said)
        raise exc

    monkeypatch.setattr(module, "discover", lambda _params, _stack: _Found())
    monkeypatch.setattr(module, "destroy_each", stopped)
    monkeypatch.setenv("PATH", os.environ["PATH"])  # main() appends the sbin directories
    with testing.patch_module_args({"state": "absent"}), pytest.raises(SystemExit):
        module.main()
    result = json.loads(capsys.readouterr().out)
    assert (result["failed"], result["changed"], result["rc"]) == (True, True, rc)
    assert result["msg"] == f"stopped by {name}: {said}"
    assert result["error"]["type"] == name


def test_state_absent_failing_between_two_backends_has_rc_5_as_k3snet_destroy(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # The first backend's removal stays, the second's failed: rc was 1 ("nothing was
    # applied, or it was rolled back") of a half-changed node, as the CLI's exit code.
    testing = pytest.importorskip("ansible.module_utils.testing")
    module = load_module()
    first = k3snet.MemoryBackend(k3snet.State(owned=[k3snet.Sysctl("net.ipv4.ip_forward", "1")]))
    second = k3snet.MemoryBackend(k3snet.State(owned=[
        k3snet.Sysctl("net.ipv4.conf.all.rp_filter", "2")]))
    second.faults.fail_at(0)
    monkeypatch.setattr(module, "discover", lambda _params, _stack: _Found([first, second]))
    monkeypatch.setenv("PATH", os.environ["PATH"])  # main() appends the sbin directories
    with testing.patch_module_args({"state": "absent"}), pytest.raises(SystemExit):
        module.main()
    result = json.loads(capsys.readouterr().out)
    assert (result["failed"], result["changed"], result["rc"]) == (True, True, 5)
    assert "removed before memory failed, and not undone: memory: 1 change(s)" in result["msg"]
    assert not first.observe().owned


def test_a_check_mode_task_stopped_by_sigterm_says_no_apply_was_undone(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # Check mode applies nothing; a SIGTERM in its read said "an apply in progress was
    # undone", an apply a check-mode run is not meant to make.
    testing = pytest.importorskip("ansible.module_utils.testing")
    module = load_module()

    def stopped(*_args: object, **_kwargs: object) -> None:
        raise SystemExit(143)

    monkeypatch.setattr(module, "discover", lambda _params, _stack: _Found())
    monkeypatch.setattr(module, "destroy_each", stopped)
    monkeypatch.setenv("PATH", os.environ["PATH"])  # main() appends the sbin directories
    with testing.patch_module_args({"state": "absent", "_ansible_check_mode": True}), \
            pytest.raises(SystemExit):
        module.main()
    result = json.loads(capsys.readouterr().out)
    assert (result["failed"], result["changed"], result["rc"]) == (True, False, 143)
    assert result["msg"] == "stopped by SIGTERM: nothing was changed"


def test_state_absent_failing_with_an_os_error_between_two_backends_has_rc_5_and_changed(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # An OSError the second backend lets through (EPERM, a tool gone) after the first
    # one's removal: rc 1, changed false and a msg without what stays removed.
    testing = pytest.importorskip("ansible.module_utils.testing")
    module = load_module()
    first = k3snet.MemoryBackend(k3snet.State(owned=[k3snet.Sysctl("net.ipv4.ip_forward", "1")]))
    second = k3snet.MemoryBackend(k3snet.State(owned=[
        k3snet.Sysctl("net.ipv4.conf.all.rp_filter", "2")]))

    def refused(*_args: object, **_kwargs: object) -> None:
        raise PermissionError(13, "Operation not permitted")

    monkeypatch.setattr(second, "apply", refused)
    monkeypatch.setattr(module, "discover", lambda _params, _stack: _Found([first, second]))
    monkeypatch.setenv("PATH", os.environ["PATH"])  # main() appends the sbin directories
    with testing.patch_module_args({"state": "absent"}), pytest.raises(SystemExit):
        module.main()
    result = json.loads(capsys.readouterr().out)
    assert (result["failed"], result["changed"], result["rc"]) == (True, True, 5)
    assert result["msg"].startswith("Operation not permitted\n")
    assert "removed before memory failed, and not undone: memory: 1 change(s)" in result["msg"]


def test_a_failed_apply_whose_error_has_a_note_but_was_rolled_back_is_not_changed(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # Any note on the error made the task changed (meant for destroy_each's "removed
    # before"): an apply with allow_conflicts notes the conflicts it left out, and its
    # failure was rolled back: the node is as it was.
    testing = pytest.importorskip("ansible.module_utils.testing")
    module = load_module()
    failed = k3snet.ApplyError("memory: change 1 of 1 failed; rolled back")
    failed.add_note("foreign state also conflicts with the spec, left out of this apply: x")

    def run(_module: object) -> None:
        raise failed

    monkeypatch.setattr(module, "run", run)
    monkeypatch.setenv("PATH", os.environ["PATH"])  # main() appends the sbin directories
    spec = {"destinations": [{"cidr": "192.168.2.0/24"}]}
    with testing.patch_module_args({"spec": spec, "allow_conflicts": True}), \
            pytest.raises(SystemExit):
        module.main()
    result = json.loads(capsys.readouterr().out)
    assert (result["failed"], result["changed"], result["rc"]) == (True, False, 1)
    assert "left out of this apply" in result["msg"]


def test_state_absent_failing_with_a_bug_between_two_backends_has_rc_5_and_changed(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # A bug in the second backend after the first one's removal: the CLI exits 5 and says
    # what stays; the module let it out as a traceback, Ansible's "MODULE FAILURE" with
    # rc 1 and changed false on a node whose first backend's removal stays.
    testing = pytest.importorskip("ansible.module_utils.testing")
    module = load_module()
    first = k3snet.MemoryBackend(k3snet.State(owned=[k3snet.Sysctl("net.ipv4.ip_forward", "1")]))
    second = k3snet.MemoryBackend(k3snet.State(owned=[
        k3snet.Sysctl("net.ipv4.conf.all.rp_filter", "2")]))

    def buggy(*_args: object, **_kwargs: object) -> None:
        raise KeyError("table")

    monkeypatch.setattr(second, "apply", buggy)
    monkeypatch.setattr(module, "discover", lambda _params, _stack: _Found([first, second]))
    monkeypatch.setenv("PATH", os.environ["PATH"])  # main() appends the sbin directories
    with testing.patch_module_args({"state": "absent"}), pytest.raises(SystemExit):
        module.main()
    result = json.loads(capsys.readouterr().out)
    assert (result["failed"], result["changed"], result["rc"]) == (True, True, 5)
    assert result["error"]["type"] == "InternalError"
    assert result["msg"].startswith("KeyError: 'table' (a bug: please report it")
    assert "removed before memory failed, and not undone: memory: 1 change(s)" in result["msg"]


def test_a_bug_with_nothing_removed_before_is_still_the_modules_traceback(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Only a half-done removal is caught: any other bug stays Ansible's MODULE FAILURE.
    testing = pytest.importorskip("ansible.module_utils.testing")
    module = load_module()

    def run(_module: object) -> None:
        raise KeyError("table")

    monkeypatch.setattr(module, "run", run)
    monkeypatch.setenv("PATH", os.environ["PATH"])  # main() appends the sbin directories
    with testing.patch_module_args({"state": "absent"}), pytest.raises(KeyError):
        module.main()
