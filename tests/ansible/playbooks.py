"""Running the Ansible module ``k3snet.k3snet.egress`` in a real ``ansible-playbook``,
for tests/ansible: the play, its results as the test reads them, the kernel views.

Each run is a real ``ansible-playbook`` process (connection ``local``, the collection
from this checkout). The module's result is saved by a second task (``set_fact`` through
the ``k3snet_test_saved_to`` filter of tests/ansible/filter_plugins, never changed, run
even in check mode) so the test reads it as JSON; the PLAY RECAP line is what Ansible
itself counted.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import yaml

from k3snet.backends.netlink import DEFAULT_STATE_ROOT
from k3snet.lab import SeedLab
from k3snet.lab.netns import run_in

REPO = Path(__file__).resolve().parents[2]
COLLECTION_ROOT = REPO  # holds ansible_collections/k3snet/k3snet
MODULE_PATH = REPO / "ansible_collections/k3snet/k3snet/plugins/modules/egress.py"
DOCS_PAGE = REPO / "docs/ansible.md"
FILTER_PLUGINS = Path(__file__).resolve().parent / "filter_plugins"  # the results' saving
MODULE_NAME = "k3snet.k3snet.egress"
PLAYBOOK_TIMEOUT = 300  # a bound on a hung run, not a timing assertion
RECAP = re.compile(r"^localhost\s*:\s*ok=\d+\s+changed=(\d+)\s+unreachable=\d+\s+"
                   r"failed=(\d+)\s+skipped=\d+\s+rescued=\d+\s+ignored=(\d+)", re.MULTILINE)


def environment_in(directory: Path) -> dict[str, str]:
    """An environment for ansible-playbook that reads nothing of the user's or the host's,
    its files in ``directory``."""
    home = directory / "ansible-home"
    home.mkdir()
    config = directory / "ansible.cfg"
    config.write_text("[defaults]\n")  # so no ansible.cfg in the cwd or ~ is read
    inventory = directory / "hosts.ini"
    inventory.write_text(f"localhost ansible_connection=local "
                         f"ansible_python_interpreter={sys.executable}\n")
    locks = directory / "locks"
    locks.mkdir()
    return dict(
        os.environ,
        ANSIBLE_CONFIG=str(config),
        ANSIBLE_HOME=str(home),
        ANSIBLE_LOCAL_TEMP=str(home / "tmp"),
        ANSIBLE_REMOTE_TEMP=str(home / "remote-tmp"),
        ANSIBLE_INVENTORY=str(inventory),
        ANSIBLE_COLLECTIONS_PATH=str(COLLECTION_ROOT),
        ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false",
        ANSIBLE_FILTER_PLUGINS=str(FILTER_PLUGINS),
        ANSIBLE_GATHERING="explicit",
        ANSIBLE_RETRY_FILES_ENABLED="false",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_STDOUT_CALLBACK="default",
        # ansible-core refuses to start without a UTF-8 locale; C.UTF-8 is always there.
        LC_ALL="C.UTF-8",
        # The module's namespace lock lives with the test, not in /run/k3snet.
        K3SNET_LOCK_DIR=str(locks),
    )


@attrs.frozen
class Run:
    """One ansible-playbook run: its exit status, output, the module's results, the recap."""

    returncode: int
    stdout: str
    stderr: str
    results: list[dict[str, Any]]
    changed: int  # tasks Ansible counted as changed (the saving task never is)
    failed: int  # failed tasks, ignored (ignore_errors) or not


def playbook(tmp_path: Path, env: dict[str, str], tasks: Sequence[dict[str, Any]],
             *flags: str) -> Run:
    """Run the ``k3snet.k3snet.egress`` tasks in one play; ``flags`` e.g. ``--check``."""
    out = tmp_path / f"results-{len(list(tmp_path.glob('results-*')))}.json"
    play_tasks: list[dict[str, Any]] = []
    for index, task in enumerate(tasks):
        entry: dict[str, Any] = {"name": f"egress {index}", "register": f"r{index}"}
        entry.update(task)
        play_tasks.append(entry)
    names = ", ".join(entry["register"] for entry in play_tasks)  # a task may name its own
    # Saved by a filter in ansible-playbook, not by a copy task: its stat and copy modules
    # were two Python processes more per play (tests/ansible/filter_plugins).
    saved = f"{{{{ [{names}] | to_json | k3snet_test_saved_to('{out}') }}}}"
    play_tasks.append({
        "name": "save the results for the test",
        "ansible.builtin.set_fact": {"k3snet_test_results": saved},
        "check_mode": False, "diff": False, "changed_when": False,
    })
    book = tmp_path / "playbook.yml"
    # JSON is YAML: no YAML writer needed.
    book.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False,
                                 "tasks": play_tasks}], indent=2))
    ansible_playbook = Path(sys.executable).with_name("ansible-playbook")
    done = subprocess.run([str(ansible_playbook), *flags, str(book)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, check=False, timeout=PLAYBOOK_TIMEOUT)
    recap = RECAP.findall(done.stdout)
    assert len(recap) == 1, done.stdout + done.stderr
    changed, failed, ignored = (int(n) for n in recap[0])
    results = json.loads(out.read_text()) if out.exists() else []
    return Run(done.returncode, done.stdout, done.stderr, results, changed, failed + ignored)


Tasks = Callable[[Path], list[dict[str, Any]]]
"""One test's part of a shared play: its tasks, given a directory of its own for their files."""


@attrs.frozen
class Part:
    """One test's part of a play shared by several tests (:func:`shared_playbook`): its
    directory, its tasks' results, what ansible-playbook printed of its own tasks (each
    from its ``TASK [...]`` line to the next task's), and the whole play's stderr (where
    Ansible's warnings go, not told apart by task)."""

    directory: Path
    results: list[dict[str, Any]]
    stdout: str
    stderr: str


TASK_HEADER = re.compile(r"^TASK \[(.*)\] \**$", re.MULTILINE)


def printed_by_task(stdout: str) -> dict[str, str]:
    """What ansible-playbook printed for each task, by its name: from its ``TASK [name]``
    line up to the next task's (the last, up to the recap)."""
    headers = list(TASK_HEADER.finditer(stdout))
    ends = [header.start() for header in headers[1:]] + [stdout.find("PLAY RECAP")]
    return {header[1]: stdout[header.start():end]
            for header, end in zip(headers, ends, strict=True)}


def shared_playbook(directory: Path, env: dict[str, str], parts: Mapping[str, Tasks],
                    *flags: str) -> dict[str, Part]:
    """Run several tests' tasks in one play, each test's named after its key in ``parts``:
    each ansible-playbook run costs about a second of CPU before its first task.

    Every task runs whatever the others do (``ignore_errors``): a test reads whether its
    own failed from its results, and what was printed of its own tasks alone (another's
    MODULE FAILURE failed every test that looked for none in the play's output).
    """
    tasks: list[dict[str, Any]] = []
    made: dict[str, list[str]] = {}
    for name, part in parts.items():
        (directory / name).mkdir()
        own = [{"name": f"{name} {index}", **task, "ignore_errors": True}
               for index, task in enumerate(part(directory / name))]
        made[name] = [task["name"] for task in own]  # a task may name itself
        tasks += own
    run = playbook(directory, env, tasks, *flags)
    assert run.returncode == 0, run.stdout + run.stderr
    assert len(run.results) == len(tasks), run.stdout + run.stderr
    printed = printed_by_task(run.stdout)
    assert len(printed) == len(tasks) + 1, run.stdout  # and the save task, each named once
    shared: dict[str, Part] = {}
    start = 0
    for name, names in made.items():
        shared[name] = Part(directory / name, run.results[start:start + len(names)],
                            "".join(printed[task] for task in names), run.stderr)
        start += len(names)
    return shared


def egress(**args: Any) -> dict[str, Any]:
    """A task calling the module with ``args``."""
    return {MODULE_NAME: args}


def load_module() -> ModuleType:
    """The module's Python file, imported as a plain module (its main() is not run)."""
    spec = importlib.util.spec_from_file_location("k3snet_ansible_egress", MODULE_PATH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def returned_keys_are_documented(result: dict[str, Any]) -> bool:
    """Every key of a module result is in RETURN, but those Ansible adds itself."""
    documented = set(yaml.safe_load(load_module().RETURN))
    added = {"failed", "invocation", "warnings", "deprecations", "exception", "attempts"}
    return set(result) - added <= documented


def no_traceback(result: dict[str, Any], run: Run | Part) -> bool:
    """The module failed cleanly: its own message, no traceback, no MODULE FAILURE."""
    # ansible-core 2.19 adds "exception" to every failed result; it holds a traceback
    # only when the user turns them on (ANSIBLE_DISPLAY_TRACEBACK).
    shown = run.stdout + run.stderr + str(result.get("exception", ""))
    return ("Traceback" not in shown and "MODULE FAILURE" not in shown
            and "module_stderr" not in result)


def ruleset(ns: str) -> list[Any]:
    """The namespace's whole nftables ruleset as the kernel lists it (no metainfo)."""
    listing = json.loads(run_in(ns, ["nft", "-j", "list", "ruleset"]).stdout)["nftables"]
    return [item for item in listing if "metainfo" not in item]


def forwarding(ns: str) -> tuple[str, ...]:
    """IPv4 and IPv6 forwarding of the namespace, as /proc/sys shows them."""
    return tuple(run_in(ns, ["cat", "/proc/sys/net/ipv4/ip_forward",
                             "/proc/sys/net/ipv6/conf/all/forwarding"]).stdout.split())


def iptables_rules(ns: str) -> list[str]:
    """The namespace's iptables-nft rules as ``iptables-nft-save`` lists them (no comments)."""
    return [line for line in run_in(ns, ["iptables-nft-save"]).stdout.splitlines()
            if not line.startswith("#")]


def lab_node(lab: SeedLab) -> dict[str, Any]:
    """The module options that act on the lab's node (state file kept with the lab)."""
    return {"netns": lab.node, "backend_options": {"netlink": {"state_dir": str(lab.state_dir)}}}


def kernel_view(lab: SeedLab) -> tuple[object, ...]:
    """What the module could change on the node: its nftables ruleset and forwarding."""
    return ruleset(lab.node), forwarding(lab.node)


def state_files() -> set[Path]:
    """What is in the netlink backend's default state root (the module must not write there)."""
    return set(DEFAULT_STATE_ROOT.iterdir()) if DEFAULT_STATE_ROOT.exists() else set()
