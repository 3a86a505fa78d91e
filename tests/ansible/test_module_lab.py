"""The Ansible module ``k3snet.k3snet.egress`` driving a seed lab's node namespace.

Each run is a real ``ansible-playbook`` process (tests/ansible/playbooks.py); what it
reports is checked against the kernel's own view (``nft -j list ruleset``, /proc/sys)
and a real TCP connection from the lab's pod. A file apart from test_module.py so the
two halves run side by side under ``pytest --dist loadfile``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml

from k3snet import BackendGroup, converge, load_spec
from k3snet.backends.netlink import NetlinkBackend
from k3snet.backends.nftables import NftablesBackend
from k3snet.converge import compile_for
from k3snet.demo import SPEC_PATH
from k3snet.facts import gather_facts
from k3snet.lab import NODE_ADDRESSES, SeedLab
from k3snet.lab.netns import run_in, temporary_netns
from tests.ansible.playbooks import (
    DOCS_PAGE,
    REPO,
    Part,
    Tasks,
    egress,
    environment_in,
    forwarding,
    iptables_rules,
    kernel_view,
    lab_node,
    no_traceback,
    playbook,
    returned_keys_are_documented,
    ruleset,
    shared_playbook,
    state_files,
)


@pytest.mark.kernel
@pytest.mark.lab
@pytest.mark.usefixtures("require_root")
def test_check_mode_then_apply_then_a_second_run_reports_no_change(
        tmp_path: Path, ansible_env: dict[str, str]) -> None:
    files_before = state_files()
    with SeedLab.create() as lab:
        present = egress(spec_path=str(SPEC_PATH), **lab_node(lab))
        untouched = kernel_view(lab)
        assert forwarding(lab.node) == ("0", "0")

        # Check mode (with a diff): says it would change, changes nothing.
        check = playbook(tmp_path, ansible_env, [present], "--check", "--diff")
        assert check.returncode == 0, check.stdout + check.stderr
        (result,) = check.results
        assert result["changed"] is True
        assert check.changed == 1
        assert result["applied"] == []
        assert returned_keys_are_documented(result)
        assert result["msg"].startswith("Plan: 6 to add, 0 to replace, 0 to delete")
        assert "+ masquerade 10.42.0.0/16 -> 192.168.2.0/24 oif eth0" in result["plan_text"]
        assert len(result["plan"]["changes"]) == 6
        assert result["diff"]["before"] == ""
        assert "masquerade 10.42.0.0/16 -> 192.168.2.0/24 oif eth0\n" in result["diff"]["after"]
        assert "+masquerade 10.42.0.0/16 -> 192.168.2.0/24 oif eth0" in check.stdout  # the diff
        assert kernel_view(lab) == untouched
        assert not lab.tcp_probe(4, timeout=1.0).ok

        # The real run: changed, and the pod reaches the database as the node.
        applied = playbook(tmp_path, ansible_env, [present], "--diff")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        (result,) = applied.results
        assert result["changed"] is True
        assert applied.changed == 1
        assert len(result["applied"]) == 6
        assert result["diff"]["after"].count("\n") == 6
        assert forwarding(lab.node) == ("1", "1")
        assert any("masquerade" in json.dumps(item) for item in ruleset(lab.node))
        probe = lab.tcp_probe(4)
        assert probe.ok, probe.error
        assert probe.source_seen == NODE_ADDRESSES[4]

        # The second run: nothing to do, and Ansible counts no change.
        fixed = kernel_view(lab)
        again = playbook(tmp_path, ansible_env, [present], "--diff")
        assert again.returncode == 0, again.stdout + again.stderr
        (result,) = again.results
        assert result["changed"] is False
        assert again.changed == 0
        assert result["plan"]["changes"] == []
        assert result["diff"]["before"] == result["diff"]["after"]
        assert kernel_view(lab) == fixed
    assert state_files() == files_before, "the module left state files in /run/k3snet"


@pytest.mark.kernel
@pytest.mark.lab
@pytest.mark.usefixtures("require_root")
def test_teardown_is_refused_and_state_absent_removes_everything_once(
        tmp_path: Path, ansible_env: dict[str, str]) -> None:
    with SeedLab.create() as lab:
        untouched = kernel_view(lab)
        # What `k3snet apply` (or an earlier playbook) left on the node.
        with BackendGroup([NetlinkBackend(lab.node, state_dir=lab.state_dir),
                           NftablesBackend(lab.node)]) as node:
            converge(node, compile_for(node, load_spec(SPEC_PATH), gather_facts(lab.node)))
        fixed = kernel_view(lab)
        assert fixed != untouched
        assert lab.tcp_probe(4).ok

        # A spec that lost its destinations would remove egress: refused, nothing changed.
        # Then state=absent in check mode (one play: a run costs a second of CPU before its
        # first task): it plans all 6 deletes, so the refused task removed none of them.
        emptied = egress(spec={"cluster": {"podCIDRs": ["10.42.0.0/16", "fd42:42::/56"]}},
                         **lab_node(lab))
        absent = egress(state="absent", **lab_node(lab))
        looked = playbook(tmp_path, ansible_env, [{**emptied, "ignore_errors": True},
                                                  {**absent, "check_mode": True}])
        result, preview = looked.results
        assert result["failed"] is True
        assert "deletes everything k3snet owns" in result["msg"]
        assert no_traceback(result, looked)
        assert preview["changed"] is True
        assert len(preview["plan"]["changes"]) == 6
        assert all(c["action"] == "delete" for c in preview["plan"]["changes"])
        assert kernel_view(lab) == fixed

        # state=absent for real, then again.

        removed = playbook(tmp_path, ansible_env, [absent])
        assert removed.returncode == 0, removed.stdout + removed.stderr
        (result,) = removed.results
        assert result["changed"] is True
        assert removed.changed == 1
        assert kernel_view(lab) == untouched
        assert not lab.tcp_probe(4, timeout=1.0).ok

        gone = playbook(tmp_path, ansible_env, [absent])
        assert gone.returncode == 0, gone.stdout + gone.stderr
        (result,) = gone.results
        assert result["changed"] is False
        # As `k3snet destroy` says it (it said "The system matches the spec", of no spec).
        assert result["msg"] == "Nothing to destroy: k3snet owns nothing here."
        assert gone.changed == 0


@pytest.mark.kernel
@pytest.mark.lab
@pytest.mark.usefixtures("require_root")
def test_state_absent_naming_no_backend_removes_what_every_node_backend_holds(
        tmp_path: Path, ansible_env: dict[str, str]) -> None:
    # A node set up through a spec's `backends: [netlink, iptables]` (K3s on iptables):
    # `state: absent` alone, as the docs showed it, removed the routes and sysctls and
    # said changed, while k3snet's iptables chains (its masquerade) stayed. Now every node
    # backend looks for k3snet's objects, and those holding any remove them.
    spec = {**yaml.safe_load(SPEC_PATH.read_text()), "backends": ["netlink", "iptables"]}
    with SeedLab.create() as lab:
        before = forwarding(lab.node)
        applied = playbook(tmp_path, ansible_env, [egress(spec=spec, **lab_node(lab))])
        assert applied.returncode == 0, applied.stdout + applied.stderr
        made = iptables_rules(lab.node)
        assert any("K3SNET-" in line for line in made)

        checked = playbook(tmp_path, ansible_env, [egress(state="absent", **lab_node(lab))],
                           "--check")
        assert checked.returncode == 0, checked.stdout + checked.stderr
        (result,) = checked.results
        assert result["changed"] is True
        assert result["discovered"]["held"].keys() == {"netlink", "iptables-nft"}
        assert any(c["before"]["type"] == "masquerade" for c in result["plan"]["changes"])
        assert iptables_rules(lab.node) == made  # check mode changes nothing

        bare = playbook(tmp_path, ansible_env, [egress(state="absent", **lab_node(lab))])
        assert bare.returncode == 0, bare.stdout + bare.stderr
        (result,) = bare.results
        assert result["changed"] is True
        assert returned_keys_are_documented(result)
        assert not [line for line in iptables_rules(lab.node) if "K3SNET" in line]
        assert forwarding(lab.node) == before  # the sysctls given back, through netlink

        again = playbook(tmp_path, ansible_env, [egress(state="absent", **lab_node(lab))])
        (result,) = again.results
        assert result["changed"] is False
        assert result["msg"] == "Nothing to destroy: k3snet owns nothing here."
        assert result["discovered"]["held"] == {}


@attrs.frozen
class Checked:
    """The check-mode tasks of several tests, run in one play (a run costs a second of CPU
    before its first task) on one seed lab, which none of them changes."""

    lab: SeedLab
    other: str  # a namespace beside the lab's
    untouched: tuple[object, ...]  # the lab node's kernel view before the play
    runs: dict[str, Part]


def facts_namespace(lab: SeedLab, other: str) -> Tasks:
    def tasks(_directory: Path) -> list[dict[str, Any]]:
        # backend_options' netns (or a spec's backends: netns) put the backends in the
        # node's namespace, but the facts were read from the module's own (the task's netns
        # option, unset): the node's gateway was refused as outside every prefix of the host.
        task = egress(spec_path=str(SPEC_PATH), backend_options={
            "netlink": {"netns": lab.node, "state_dir": str(lab.state_dir)},
            "nftables": {"netns": lab.node}})
        # Backends in two namespaces: no one node to check the spec against.
        split = egress(spec_path=str(SPEC_PATH), backend_options={
            "netlink": {"netns": lab.node, "state_dir": str(lab.state_dir)},
            "nftables": {"netns": other}})
        return [task, split]
    return tasks


def docs_diff(lab: SeedLab) -> Tasks:
    def tasks(_directory: Path) -> list[dict[str, Any]]:
        # The single-stack spec of getting-started, as docs/ansible.md's play names it.
        started = (REPO / "docs/getting-started.md").read_text(encoding="utf-8")
        spec = yaml.safe_load(started.split('Spec.from_yaml("""\n', 1)[1].split('"""', 1)[0])
        return [{"name": "Pods reach the database subnet", **egress(spec=spec, **lab_node(lab))}]
    return tasks


def unplanned_kinds(lab: SeedLab) -> Tasks:
    def tasks(_directory: Path) -> list[dict[str, Any]]:
        return [egress(spec_path=str(SPEC_PATH), backends=backends, **lab_node(lab))
                for backends in (["netlink"], ["netlink:route,sysctl"])]
    return tasks


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Checked]:
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    directory = tmp_path_factory.mktemp("checked")
    with SeedLab.create() as lab, temporary_netns("other") as other:
        untouched = kernel_view(lab)
        runs = shared_playbook(directory, environment_in(directory), {
            "facts_namespace": facts_namespace(lab, other), "docs_diff": docs_diff(lab),
            "unplanned_kinds": unplanned_kinds(lab)}, "--check", "--diff")
        yield Checked(lab, other, untouched, runs)


@pytest.mark.kernel
@pytest.mark.lab
def test_node_facts_come_from_the_namespace_the_backends_act_in(checked: Checked) -> None:
    result, refused = checked.runs["facts_namespace"].results
    assert not result.get("failed"), result["msg"]
    assert result["changed"] is True
    assert result["msg"].startswith("Plan: 6 to add")
    assert kernel_view(checked.lab) == checked.untouched
    assert refused["failed"] is True
    assert "several network namespaces" in refused["msg"]
    assert "facts" in refused["msg"]


@pytest.mark.kernel
@pytest.mark.lab
def test_the_diff_the_docs_show_is_what_check_mode_prints(checked: Checked) -> None:
    """docs/ansible.md shows the ``--check --diff`` output for the single-stack spec of
    getting-started on a node with the administrator's static route: a lab node is one."""
    page = DOCS_PAGE.read_text(encoding="utf-8")
    shown = page.split("```text\nTASK [Pods reach the database subnet]", 1)[1].split("```", 1)[0]
    run = checked.runs["docs_diff"]
    (result,) = run.results
    assert not result.get("failed"), result["msg"]
    # its own task's output alone (the blank line before the next task's left out)
    printed = run.stdout.split("TASK [Pods reach the database subnet]", 1)[1]
    printed = printed.rstrip("\n").replace("[localhost]", "[node1]") + "\n"
    # the headers name a namespace other than the host's
    printed = printed.replace(f" (netns {checked.lab.node})", "")
    assert printed.lstrip("*") == shown.lstrip("*")


@pytest.mark.kernel
@pytest.mark.lab
def test_the_spec_s_objects_no_backend_in_use_manages_are_a_task_warning(
        checked: Checked) -> None:
    """``backends: [netlink]``: the spec's masquerade and forward accepts are in no plan,
    as ``k3snet plan --backend netlink`` says; the task said ok (or changed) in silence.
    ``netlink:route,sysctl`` splits the kinds on purpose: no warning."""
    alone, split = checked.runs["unplanned_kinds"].results
    assert not alone.get("failed"), alone["msg"]
    assert not split.get("failed"), split["msg"]
    warned = [w for w in alone.get("warnings", []) if "in no plan" in w]
    assert len(warned) == 1, alone.get("warnings")
    assert "2 forward accepts and 2 NAT rules" in warned[0]
    assert not [w for w in split.get("warnings", []) if "in no plan" in w]


# Chains another program made in the lab node's iptables-nft nat table, named like
# k3snet's: one plain, one with terminal escapes (clear the screen, set the title).
MINE = "K3SNET-MINE"
ESCAPED = "K3SNET-\x1b[2J\x1b]0;x\x07"


@attrs.frozen
class Foreign:
    """A check-mode task for each of two tests, run in one play on a seed lab holding
    the chains :data:`MINE` and :data:`ESCAPED`, which neither task changes."""

    untouched: tuple[object, ...]  # the node's iptables rules and forwarding before the play
    after: tuple[object, ...]  # and after it
    run: Part


@pytest.fixture(scope="module")
def foreign_chains(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Foreign]:
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    directory = tmp_path_factory.mktemp("foreign-chains")
    with SeedLab.create() as lab:
        for name in (MINE, ESCAPED):
            for argv in (["-N", name], ["-A", name, "-j", "RETURN"],
                         ["-I", "POSTROUTING", "1", "-j", name]):
                run_in(lab.node, ["iptables-nft", "-w", "-t", "nat", *argv])
        untouched = iptables_rules(lab.node), forwarding(lab.node)
        task = egress(spec_path=str(SPEC_PATH), backends=["netlink", "iptables"],
                      **lab_node(lab))
        runs = shared_playbook(directory, environment_in(directory),
                               {"foreign_chains": lambda _directory: [task]}, "--check")
        yield Foreign(untouched, (iptables_rules(lab.node), forwarding(lab.node)),
                      runs["foreign_chains"])


@pytest.mark.kernel
@pytest.mark.lab
def test_what_the_backends_warn_of_is_an_ansible_warning(foreign_chains: Foreign) -> None:
    # `k3snet plan` prints a backend's warnings (`!! warning:`); the module kept them to
    # itself, so a task said ok over an administrator's chain named like k3snet's.
    run = foreign_chains.run
    (result,) = run.results
    assert not result.get("failed"), result["msg"]
    assert result["changed"] is True
    warned = [w for w in result.get("warnings", []) if MINE in w]
    assert len(warned) == 1, result.get("warnings")
    assert f"chain {MINE} is not k3snet's" in warned[0]
    assert "[WARNING]" in run.stdout + run.stderr
    assert foreign_chains.after == foreign_chains.untouched


@pytest.mark.kernel
@pytest.mark.lab
def test_a_warning_quoting_a_foreign_name_reaches_the_controller_printable(
        foreign_chains: Foreign) -> None:
    # A chain another program named with a terminal escape (clear the screen, set the
    # window's title): `k3snet plan` writes it \x1b[2J; the module's task warning (and its
    # failure message) went to ansible-playbook's terminal as it was.
    run = foreign_chains.run
    (result,) = run.results
    warned = [w for w in result.get("warnings", []) if "K3SNET-" in w and MINE not in w]
    assert len(warned) == 1, result.get("warnings")
    assert "chain K3SNET-\\x1b[2J\\x1b]0;x\\x07 is not k3snet's" in warned[0]
    assert "\x1b" not in run.stdout + run.stderr


@pytest.mark.kernel
@pytest.mark.lab
@pytest.mark.usefixtures("require_root")
def test_a_switch_of_backends_names_the_iptables_legacy_chains_left_as_k3snet_apply_does(
        tmp_path: Path, ansible_env: dict[str, str]) -> None:
    # A node set up with `--backend iptables --backend-opt iptables.mode=legacy`, the
    # playbook now on netlink and nftables: k3snet's legacy masquerade ran on, unsaid.
    with SeedLab.create() as lab:
        before = subprocess.run(
            [sys.executable, "-m", "k3snet.cli", "apply", "-f", str(SPEC_PATH), "--backend",
             "netlink", "--backend", "iptables", "--backend-opt", "iptables.mode=legacy",
             "--netns", lab.node, "--backend-opt", f"netlink.state_dir={lab.state_dir}"],
            env={**os.environ, "K3SNET_LOCK_DIR": ansible_env["K3SNET_LOCK_DIR"]},
            text=True, capture_output=True, check=False, timeout=120)
        assert before.returncode == 0, before.stderr
        run = playbook(tmp_path, ansible_env, [egress(
            spec_path=str(SPEC_PATH), backends=["netlink", "nftables"], **lab_node(lab))])
        assert run.returncode == 0, run.stdout + run.stderr
        (result,) = run.results
        (left,) = [w for w in result["warnings"] if " holds " in w]
        assert re.match(r"iptables-legacy holds \d+ of k3snet's objects", left), left
        assert left.endswith(f"`k3snet destroy --netns {lab.node} --backend iptables "
                             "--backend-opt iptables.mode=legacy` removes them")
        legacy = run_in(lab.node, ["iptables-legacy-save"]).stdout
        assert "K3SNET-" in legacy  # said, not removed
