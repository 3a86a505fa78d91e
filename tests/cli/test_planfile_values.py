"""Plan files as values: written, read back, refused when foreign or malformed."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from k3snet import MasqueradeRule, PlanError, State, plan, planfile
from k3snet.planfile import PlanFile
from k3snet.testing.strategies import edited_documents
from tests.examples import examples

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"


def _saved(tmp_path: Path) -> tuple[PlanFile, Path]:
    desired = State(owned=[MasqueradeRule("10.42.0.0/16")])
    p = plan(State(), desired)
    spec = tmp_path / "spec.yaml"
    spec.write_text("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n")
    saved = PlanFile.make(p, desired=desired, observed=State(), backends=["memory"],
                          netns=None, spec_path=spec)
    path = tmp_path / "node.plan"
    saved.write(path)
    return saved, path


def test_a_plan_file_reads_back_as_written(tmp_path: Path) -> None:
    saved, path = _saved(tmp_path)
    again = PlanFile.read(path, netns=None)
    assert again.plan == saved.plan
    assert again.desired == saved.desired
    assert again.backends == ("memory",)
    assert again.spec == saved.spec


@pytest.mark.usefixtures("require_root")
def test_a_plan_file_another_user_could_write_is_refused(tmp_path: Path) -> None:
    """A plan file is what `apply FILE` does as root: one that another user owns, or that
    its group or others may write, could have been changed after it was reviewed."""
    _saved_file, path = _saved(tmp_path)
    assert PlanFile.read(path, netns=None).plan is not None
    for mode, message in ((0o666, r"writable by group and others \(mode 0666\)"),
                          (0o646, r"writable by others"), (0o664, r"writable by group")):
        path.chmod(mode)
        with pytest.raises(PlanError, match=message + ".*another user could have changed"):
            PlanFile.read(path, netns=None)
    path.chmod(0o644)
    os.chown(path, 65534, 65534)
    with pytest.raises(PlanError, match="owned by uid 65534, not by this user or root"):
        PlanFile.read(path, netns=None)


@pytest.mark.usefixtures("require_root")
def test_a_plan_file_whose_way_another_user_could_change_is_refused(tmp_path: Path) -> None:
    """Root's own plan file, read by a path another user could change between plan and
    apply: a directory on it that they own or may write (they rename another of root's
    plan files, made from the same state, into its place), or a link on it that they own
    (they point it at one). Each is refused naming the directory or the link; root's
    links in root's directories are followed, and a sticky directory (/tmp), where
    nobody renames another's entry, is taken."""
    outer = tmp_path / "outer"
    inner = outer / "inner"
    inner.mkdir(parents=True)
    _saved_file, path = _saved(inner)
    link, directory_link = tmp_path / "node.plan", tmp_path / "plans"
    link.symlink_to(path)
    directory_link.symlink_to(inner)
    for way in (path, link, directory_link / "node.plan"):
        assert PlanFile.read(way, netns=None).plan is not None
    for directory, mode, owner, why in (
            (inner, 0o755, (65534, 65534), f"in directory {inner}, owned by uid 65534"),
            (inner, 0o777, (0, 0), rf"in directory {inner}, writable by others \(mode 0777\)"),
            (outer, 0o757, (0, 0), rf"in directory {outer}, writable by others \(mode 0757\)")):
        os.chown(directory, *owner)
        directory.chmod(mode)
        for way in (path, link):
            with pytest.raises(PlanError, match=why + ".*another user could have changed.*"
                               "move it where only root may change the way to it"):
                PlanFile.read(way, netns=None)
        os.chown(directory, 0, 0)
        directory.chmod(0o755)
    for owned_by_nobody, way in ((link, link), (directory_link, directory_link / "node.plan")):
        os.chown(owned_by_nobody, 65534, 65534, follow_symlinks=False)
        with pytest.raises(PlanError, match=f"reached through {owned_by_nobody}, a symbolic "
                           "link of uid 65534"):
            PlanFile.read(way, netns=None)
        os.chown(owned_by_nobody, 0, 0, follow_symlinks=False)
    inner.chmod(0o1777)  # sticky, as /tmp
    assert PlanFile.read(path, netns=None).plan is not None


def test_a_plan_file_written_over_a_link_replaces_the_link(tmp_path: Path) -> None:
    """`plan --out` at a link (planted at a plan file's name) writes no file where the
    link points: the link is replaced by the plan file."""
    target = tmp_path / "elsewhere"
    target.write_text("kept\n")
    path = tmp_path / "node.plan"
    path.symlink_to(target)
    _saved(tmp_path)
    assert not path.is_symlink()
    assert target.read_text() == "kept\n"
    assert PlanFile.read(path, netns=None).plan is not None


def test_a_plan_file_is_written_writable_by_its_owner_alone(tmp_path: Path) -> None:
    """Under a umask that lets the group write (0002), the plan file `plan --out` writes
    is still one `apply FILE` reads."""
    old = os.umask(0o002)
    try:
        _saved_file, path = _saved(tmp_path)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    assert PlanFile.read(path, netns=None).plan is not None


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d.update(kind="other"), "is not a k3snet plan file"),
    (lambda d: d.update(format=9), "plan file format 9"),
    (lambda d: d["node"].update(machine_id="elsewhere"), "made for another machine"),
    (lambda d: d["node"].update(hostname="node-b"), "made for another host"),
    (lambda d: d["node"].update(machine_id=None), "no machine id recorded.*cannot tell"),
    (lambda d: d["node"].update(netns_id="1-2"), "made for another network namespace"),
    (lambda d: d.pop("desired"), "no desired state recorded"),
    (lambda d: d.update(backends="memory"), "no backends recorded"),
])
def test_a_foreign_or_malformed_plan_file_is_refused(tmp_path: Path, edit: object,
                                                     message: str) -> None:
    _saved_file, path = _saved(tmp_path)
    document = json.loads(path.read_text())
    edit(document)  # type: ignore[operator]
    path.write_text(json.dumps(document))
    with pytest.raises(PlanError, match=message):
        PlanFile.read(path, netns=None)


def test_a_plan_file_is_refused_where_the_machine_has_no_id(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An agent pod's image may hold no /etc/machine-id: None == None says nothing.
    _saved_file, path = _saved(tmp_path)
    monkeypatch.setattr(planfile, "_machine_id", lambda: None)
    with pytest.raises(PlanError, match=r"this machine has no machine id.*cannot tell"):
        PlanFile.read(path, netns=None)


def test_a_file_that_is_not_json_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.plan"
    path.write_text("not json")
    with pytest.raises(PlanError, match="is not a k3snet plan file"):
        PlanFile.read(path, netns=None)


@pytest.mark.parametrize("text", [
    "apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\ndestinations: []\n",
    "# my spec\ndestinations: []\nkind:   EgressSpec\n",
])
def test_a_spec_given_as_a_plan_file_is_told_to_use_dash_f(tmp_path: Path, text: str) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(PlanError, match=r"is a spec, not a plan file: apply it with "
                                        r"`k3snet apply -f .*spec\.yaml`"):
        PlanFile.read(path, netns=None)


def test_a_plan_file_nested_too_deep_is_refused_not_an_internal_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.plan"
    path.write_text("[" * 200_000)
    with pytest.raises(PlanError, match="nests objects and arrays deeper than"):
        PlanFile.read(path, netns=None)


@settings(max_examples=examples(300), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_value_anywhere_in_a_plan_file_is_read_or_refused_with_a_plan_error(
        tmp_path: Path, data: st.DataObject) -> None:
    _saved_file, path = _saved(tmp_path)
    document = data.draw(edited_documents(json.loads(path.read_text())), label="document")
    path.write_text(json.dumps(document))
    with contextlib.suppress(PlanError):
        PlanFile.read(path, netns=None)


def test_a_plan_file_records_the_backends_options_and_allow_disruptive(
        tmp_path: Path) -> None:
    desired = State(owned=[MasqueradeRule("10.42.0.0/16")])
    saved = PlanFile.make(plan(State(), desired), desired=desired, observed=State(),
                          backends=["memory:masquerade"], netns=None,
                          options={"memory": {"table": "teamA", "limits": [1, {"a": None}]}},
                          allow_disruptive=True)
    saved.write(tmp_path / "node.plan")
    again = PlanFile.read(tmp_path / "node.plan", netns=None)
    assert again.options == {"memory": {"table": "teamA", "limits": [1, {"a": None}]}}
    assert again.allow_disruptive is True


@pytest.mark.parametrize(("options", "message"), [
    ("teamA", "options are not a JSON object"),  # read: "no backend options recorded"
    ({"nftables": {"table": "teamA"}}, "options for backend 'nftables', which it does not use"),
    ({"memory": ["table"]}, "the options of backend 'memory' are not a JSON object"),
    ({"memory": {"netns": "other"}}, "no recordable option 'netns'"),
    ({"memory": {"allow_disruptive": True}}, "no recordable option 'allow_disruptive'"),
    ({"memory": {"a-b": 1}}, "no recordable option 'a-b'"),
])
def test_tampered_backend_options_are_refused(tmp_path: Path, options: object,
                                              message: str) -> None:
    _saved_file, path = _saved(tmp_path)
    document = json.loads(path.read_text())
    document["options"] = options
    path.write_text(json.dumps(document))
    expected = "no backend options recorded" if isinstance(options, str) else message
    with pytest.raises(PlanError, match=expected):
        PlanFile.read(path, netns=None)


def test_a_plan_file_of_format_1_without_options_is_refused(tmp_path: Path) -> None:
    _saved_file, path = _saved(tmp_path)
    document = json.loads(path.read_text())
    document["format"] = 1
    del document["options"], document["allow_disruptive"]
    path.write_text(json.dumps(document))
    with pytest.raises(PlanError, match="plan file format 1 is not 2; plan again"):
        PlanFile.read(path, netns=None)


def test_a_backend_option_that_is_not_json_is_not_saved() -> None:
    with pytest.raises(PlanError, match=r"option memory\.path is not a JSON value"):
        PlanFile.make(plan(State(), State()), desired=State(), observed=State(),
                      backends=["memory"], netns=None, options={"memory": {"path": Path("/x")}})


def test_the_command_a_spec_given_as_a_plan_file_is_told_runs_as_pasted_in_a_shell(
        tmp_path: Path) -> None:
    # "apply it with `k3snet apply -f my spec.yaml`", pasted, gave apply two paths.
    path = tmp_path / "my spec's copy.yaml"
    path.write_text("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\ndestinations: []\n")
    with pytest.raises(PlanError) as caught:
        PlanFile.read(path, netns=None)
    command = str(caught.value).split("`")[1]
    assert shlex.split(command) == ["k3snet", "apply", "-f", str(path)]


def test_an_edited_plan_is_told_apart_from_a_node_that_changed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Both were "the node changed since this plan was made", the file records a
    # fingerprint of what was observed: when the node still matches it, the file is at fault.
    from k3snet import Sysctl  # noqa: PLC0415
    from k3snet.cli import main  # noqa: PLC0415

    with _one_change_taken_out(tmp_path) as (held, saved, edited, _document):  # by hand
        capsys.readouterr()
        assert main(["apply", str(edited)]) == 1
        err = capsys.readouterr().err
        assert "has not changed since it was planned" in err, err
        assert "the plan file was edited" in err
        assert held.observe() == State()
        held.apply(plan(held.observe(), State(owned=[Sysctl("net.ipv4.ip_forward", "0")])))
        assert main(["apply", str(saved)]) == 1  # now the node did change
        assert "the node changed since this plan was made" in capsys.readouterr().err


@pytest.mark.parametrize("key", ["allow_disruptive", "backends"])
def test_a_plan_file_giving_a_key_twice_is_refused(tmp_path: Path, key: str) -> None:
    # json keeps the last value silently: a reader of the file saw "allow_disruptive":
    # false and apply allowed disruptive changes.
    _saved_file, path = _saved(tmp_path)
    text = path.read_text()
    second = {"allow_disruptive": '"allow_disruptive": true', "backends": '"backends": []'}[key]
    top = '"kind": "k3snet-planfile"'  # a key of the top-level object only
    assert text.count(top) == 1
    path.write_text(text.replace(top, f"{second},\n  {top}"))
    with pytest.raises(PlanError, match=f"is not a k3snet plan file: duplicate key '{key}'"):
        PlanFile.read(path, netns=None)


@pytest.mark.parametrize("version", ["0.0.1", None, "\x1b[2J9"])
def test_a_refused_plan_file_of_another_k3snet_version_names_both_versions(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], version: str | None) -> None:
    # Upgraded between plan and apply: the planner may plan otherwise, which the refusal
    # now names instead of leaving "edited, or made by another version" to guess.
    from k3snet._version import __version__  # noqa: PLC0415
    from k3snet.cli import main  # noqa: PLC0415

    # One change fewer, as another planner might have made it.
    with _one_change_taken_out(tmp_path) as (held, _saved, edited, document):
        capsys.readouterr()
        assert main(["apply", str(edited)]) == 1
        assert "was made by k3snet" not in capsys.readouterr().err  # this version's
        document["k3snet"] = version
        edited.write_text(json.dumps(document))
        assert main(["apply", str(edited)]) == 1
        err = capsys.readouterr().err
        shown = {"0.0.1": "0.0.1", None: "of an unknown version", "\x1b[2J9": "\\x1b[2J9"}
        assert f"the plan file was made by k3snet {shown[version]}, this is k3snet " \
               f"{__version__} (build " in err, err
        assert "\x1b" not in err
        assert held.observe() == State()


@pytest.mark.parametrize("build", ["0123456789abcdef", None])
def test_a_refused_plan_file_of_another_build_says_so_not_that_the_node_changed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], build: str | None) -> None:
    # A development build between plan and apply read a route through a device the model
    # refuses as another object: the file's note and digest no longer matched, and one
    # version on both sides, apply said "the node changed" on a node that had not.
    from k3snet.cli import main  # noqa: PLC0415
    from k3snet.planfile import build_identity  # noqa: PLC0415

    with _one_change_taken_out(tmp_path) as (held, _saved, edited, document):
        assert document["build"] == build_identity()
        document["observed"] = "0" * 64  # as read by the other build: another digest
        edited.write_text(json.dumps(document))
        capsys.readouterr()
        assert main(["apply", str(edited)]) == 1
        assert "the node changed since" in capsys.readouterr().err  # this build's file
        if build is None:
            del document["build"]  # a file of before
        else:
            document["build"] = build
        edited.write_text(json.dumps(document))
        assert main(["apply", str(edited)]) == 1
        err = capsys.readouterr().err
        assert "the plan file was made by another build of it, this is k3snet" in err, err
        assert "(the node may not have changed): planned again now" in err
        assert "the node changed since" not in err
        assert held.observe() == State()


@contextlib.contextmanager
def _one_change_taken_out(tmp_path: Path) -> Iterator[tuple[Any, Path, Path, dict[str, Any]]]:
    """A plan file of the seed spec for a memory backend (``memory-node``), and a copy
    of it with its last change taken out: (the backend, the file, the copy, the copy's
    document)."""
    from k3snet import MemoryBackend, register_backend  # noqa: PLC0415
    from k3snet.backends.registry import unregister_backend  # noqa: PLC0415
    from k3snet.cli import main  # noqa: PLC0415

    held = MemoryBackend()
    register_backend("memory-node", lambda: held)
    try:
        saved = tmp_path / "node.plan"
        assert main(["plan", "-f", str(SEED), "--backend", "memory-node", "--no-facts",
                     "--out", str(saved)]) == 2
        document = json.loads(saved.read_text())
        document["plan"]["changes"].pop()
        edited = tmp_path / "edited.plan"
        edited.write_text(json.dumps(document))
        yield held, saved, edited, document
    finally:
        unregister_backend("memory-node")
