"""discover_owners and destroy_each, with in-memory backends standing in for the node's."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jsonschema
import pytest
from referencing import Registry, Resource

from k3snet import MemoryBackend, State, Sysctl
from k3snet.backends import discover
from k3snet.backends.lock import namespace_lock
from k3snet.backends.registry import register_backend, unregister_backend
from k3snet.cli import main
from k3snet.converge import destroy_each, removed_before
from k3snet.errors import ApplyError, BackendError, BackendUnavailableError, LockTimeoutError
from k3snet.model import MasqueradeRule, Route
from k3snet.schemas import SCHEMA_NAMES, load_schema

ROUTE = Route("192.168.2.0/24", gateway="192.168.1.1")
NAT = MasqueradeRule("10.42.0.0/16")
SYSCTL = Sysctl("net.ipv4.ip_forward", 1)


class Missing(MemoryBackend):
    """A backend whose tool is missing: it cannot look."""

    def observe(self) -> State:
        raise BackendUnavailableError("fake-save not found on PATH (install it)")


@pytest.fixture
def node(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, MemoryBackend]]:
    """Four memory backends in NODE_BACKENDS' places: routes, nftables-like (holding NAT),
    iptables-like of one flavour (holding the same NAT: backends switched), one missing."""
    made = {
        "fake-netlink": MemoryBackend(State(owned=[ROUTE, SYSCTL]),
                                      capabilities=["route", "sysctl"]),
        "fake-nft": MemoryBackend(State(owned=[NAT]), capabilities=["nat", "forward"]),
        "fake-ipt": MemoryBackend(State(owned=[NAT]), capabilities=["nat", "forward"]),
        "fake-idle": MemoryBackend(capabilities=["nat", "forward"]),
        "fake-missing": Missing(capabilities=["nat", "forward"]),
    }
    for name, backend in made.items():
        register_backend(name, lambda backend=backend, **_: backend)
    monkeypatch.setattr(discover, "NODE_BACKENDS", tuple((n, n, {}) for n in made))
    try:
        yield made
    finally:
        for name in made:
            unregister_backend(name)


def test_backends_holding_one_kind_are_two_groups_and_a_missing_one_is_a_warning(
        node: dict[str, MemoryBackend]) -> None:
    with discover.discover_owners() as found:
        assert [o.label for o in found.owners] == ["fake-netlink", "fake-nft", "fake-ipt"]
        assert found.idle == ("fake-idle",)
        assert [[m.backend for m in g.members] for g in found.groups] == [
            [node["fake-netlink"], node["fake-nft"]], [node["fake-ipt"]]]
        (missing,) = found.warnings
        assert missing.startswith("fake-missing: fake-save not found")
        preview = destroy_each(found.groups, dry_run=True)
        assert len(preview.plan.changes) == 4  # the NAT rule once through each backend
        assert node["fake-ipt"].observe().owned == {NAT}
        done = destroy_each(found.groups)
    assert done.result is not None
    assert len(done.result.applied) == 4
    assert all(not b.observe().owned for n, b in node.items() if n != "fake-missing")


def test_destroy_naming_no_backend_says_what_it_found_in_its_document(
        node: dict[str, MemoryBackend], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["destroy", "--auto-approve", "--no-facts", "--output", "json"]) == 0
    document: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert document["discovered"] == {
        "held": {"fake-netlink": 2, "fake-nft": 1, "fake-ipt": 1}, "empty": ["fake-idle"],
        "unavailable": ["fake-missing: fake-save not found on PATH (install it)"]}
    assert len(document["applied"]) == 4
    assert any("fake-missing" in w for w in document["warnings"])
    registry: Registry[Any] = Registry().with_resources(
        (load_schema(n)["$id"], Resource.from_contents(load_schema(n))) for n in SCHEMA_NAMES)
    jsonschema.Draft202012Validator(load_schema("apply"), registry=registry).validate(document)

    assert main(["destroy", "--auto-approve", "--no-facts"]) == 0
    out = capsys.readouterr().out
    assert "Looked through fake-netlink, fake-nft, fake-ipt, fake-idle" in out
    assert "Nothing to destroy" in out


def test_a_backend_opt_may_name_any_backend_looked_through(
        node: dict[str, MemoryBackend], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["destroy", "--dry-run", "--backend-opt", "nope.x=1"]) == 1
    assert "no backend 'nope' in use" in capsys.readouterr().err


def test_a_later_backend_failing_leaves_the_earlier_removals_done_and_says_so(
        node: dict[str, MemoryBackend], caplog: pytest.LogCaptureFixture) -> None:
    node["fake-ipt"].faults.fail_at(0)
    with discover.discover_owners() as found, pytest.raises(ApplyError) as failed:
        destroy_each(found.groups)
    said = "removed before memory failed, and not undone: memory+memory: 3 change(s)"
    assert any(note.startswith(said) for note in failed.value.__notes__)
    assert said in caplog.text
    assert removed_before(failed.value) == ("memory+memory: 3 change(s) applied in 3 "
                                            "operation(s)",)
    assert not node["fake-netlink"].observe().owned
    assert node["fake-ipt"].observe().owned == {NAT}  # all or nothing, within a backend



def test_a_destroy_whose_later_backend_failed_names_what_stays_removed_in_its_document(
        node: dict[str, MemoryBackend], capsys: pytest.CaptureFixture[str]) -> None:
    # Said by a log line on stderr alone: a script reading the document and exit 1
    # ("nothing was applied, or it was rolled back") took the node as it was. Half
    # removed, the node is half-changed as after an apply whose undo failed: exit 5.
    node["fake-ipt"].faults.fail_at(0)
    assert main(["destroy", "--auto-approve", "--no-facts", "--output", "json"]) == 5
    document: dict[str, Any] = json.loads(capsys.readouterr().out)
    jsonschema.Draft202012Validator(load_schema("error")).validate(document)
    assert document["error"]["type"] == "ApplyError"
    assert ("\nremoved before memory failed, and not undone: memory+memory: 3 change(s)"
            in document["error"]["message"])


@pytest.mark.parametrize(("failure", "kind"), [
    (PermissionError(13, "Operation not permitted"), "PermissionError"),
    (RuntimeError("a bug"), "InternalError")])
def test_a_destroy_whose_later_backend_failed_not_with_a_k3snet_error_still_exits_5(
        node: dict[str, MemoryBackend], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, failure: Exception, kind: str) -> None:
    # An OSError a backend lets through (EPERM, a tool gone), or a bug, after the earlier
    # backends' removal: exit 1 ("nothing was applied, or it was rolled back") and a
    # document without what stays removed, as only k3snet's own errors were read for it.
    def fail(*_args: object, **_kwargs: object) -> None:
        raise failure

    monkeypatch.setattr(node["fake-ipt"], "apply", fail)
    assert main(["destroy", "--auto-approve", "--no-facts", "--output", "json"]) == 5
    document: dict[str, Any] = json.loads(capsys.readouterr().out)
    jsonschema.Draft202012Validator(load_schema("error")).validate(document)
    assert document["error"]["type"] == kind
    assert ("removed before memory failed, and not undone: memory+memory: 3 change(s)"
            in document["error"]["message"])
    assert not node["fake-netlink"].observe().owned


def test_a_destroy_whose_first_backend_failed_exits_1_nothing_removed(
        node: dict[str, MemoryBackend], capsys: pytest.CaptureFixture[str]) -> None:
    # Nothing was removed before the failure (each backend all or nothing): the node is
    # as it was, exit 1 as before.
    node["fake-netlink"].faults.fail_at(0)
    assert main(["destroy", "--auto-approve", "--no-facts", "--output", "json"]) == 1
    assert "not undone" not in json.loads(capsys.readouterr().out)["error"]["message"]
    assert node["fake-ipt"].observe().owned


def _stopped_by(signal_exit: BaseException) -> Any:
    def apply(*_args: object, **_kwargs: object) -> None:
        raise signal_exit
    return apply


@pytest.mark.parametrize("signal_exit", [KeyboardInterrupt(), SystemExit(143)],
                         ids=["ctrl-c", "sigterm"])
def test_a_later_backend_stopped_by_a_signal_says_the_earlier_removals_stay(
        node: dict[str, MemoryBackend], monkeypatch: pytest.MonkeyPatch,
        signal_exit: BaseException) -> None:
    # Ctrl-C and SIGTERM (SystemExit) are no Exception: the note naming what stays
    # removed was left off, and the CLI and the Ansible module said nothing was changed.
    monkeypatch.setattr(node["fake-ipt"], "apply", _stopped_by(signal_exit))
    with discover.discover_owners() as found, \
            pytest.raises(type(signal_exit)) as stopped:
        destroy_each(found.groups)
    said = "removed before memory was stopped, and not undone: memory+memory: 3 change(s)"
    assert any(note.startswith(said) for note in stopped.value.__notes__)
    assert not node["fake-netlink"].observe().owned


def test_a_destroy_stopped_by_ctrl_c_names_what_stays_removed_in_its_error_document(
        node: dict[str, MemoryBackend], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(node["fake-ipt"], "apply", _stopped_by(KeyboardInterrupt()))
    assert main(["destroy", "--auto-approve", "--no-facts", "--output", "json"]) == 130
    captured = capsys.readouterr()
    document: dict[str, Any] = json.loads(captured.out)
    jsonschema.Draft202012Validator(load_schema("error")).validate(document)
    assert document["error"]["type"] == "SIGINT"
    assert "removed before memory was stopped, and not undone" in document["error"]["message"]
    assert "nothing was changed" not in document["error"]["message"]
    assert f"k3snet: error: {document['error']['message']}" in captured.err

class InNamespace(MemoryBackend):
    """A memory backend acting in this thread's namespace (it takes the namespace lock);
    its ``expect`` hint, which converge calls before taking the lock, records whether
    another k3snet process (a thread here) could take it at that moment."""

    netns = None

    def __init__(self, *args: Any, seen: list[bool], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen = seen

    def expect(self, wanted: State) -> None:
        free: list[bool] = []

        def other() -> None:
            try:
                with namespace_lock([None], timeout=0):
                    free.append(True)
            except LockTimeoutError:
                free.append(False)

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        self.seen.append(free[0])


def test_a_destroy_through_several_backends_holds_the_namespace_lock_from_first_to_last(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each backend's removal took the lock on its own: between the first's and the
    # second's another k3snet process (an apply) could act on a half-destroyed node.
    monkeypatch.setenv("K3SNET_LOCK_DIR", str(tmp_path))
    seen: list[bool] = []
    first = InNamespace(State(owned=[ROUTE]), capabilities=["route"], seen=seen)
    second = InNamespace(State(owned=[NAT]), capabilities=["nat"], seen=seen)
    done = destroy_each([first, second])
    assert len(done.result.applied if done.result else ()) == 2
    assert seen == [False, False]  # the lock is never free for another between them
    with namespace_lock([None], timeout=0):  # and free again after
        pass


class _Reading(MemoryBackend):
    """Warnings of what its last observe saw; a read that may fail."""

    def __init__(self, said: list[str], fails: bool = False) -> None:
        super().__init__()
        self.said, self.fails = said, fails
        self.warnings: tuple[str, ...] = ()

    def observe(self) -> State:
        if self.fails:
            raise BackendUnavailableError("the tool went away")
        self.warnings = tuple(self.said)
        return super().observe()


def test_look_again_gives_warnings_of_what_holds_after_a_removal() -> None:
    table = ["nftables table inet k3snet holds rules k3snet's nftables backend wrote"]
    stays, gone = _Reading(["chain K3SNET-ADMIN is not k3snet's"]), _Reading(table)
    broken = _Reading(table)
    for backend in (stays, gone, broken):
        backend.observe()
    found = discover.Discovery((), ("a", "b", "c"), (), (stays, gone, broken))
    assert found.warnings == (*stays.said, *table)  # each text once
    gone.said, broken.fails = [], True  # the removal took the table; a read fails
    found.look_again()
    assert found.warnings[0] == "chain K3SNET-ADMIN is not k3snet's"
    [unread] = found.warnings[1:]
    assert "not read again after the removal (the tool went away)" in unread



class _Beside(MemoryBackend):
    """Warns of ``names``' objects, left behind, unless a backend of that name is beside it
    (the iptables backend's ``beside`` and k3snet's nftables table)."""

    def __init__(self, said: str, names: str, name: str = "memory") -> None:
        super().__init__()
        self.said, self.names, self.name = said, names, name
        self.others: tuple[object, ...] = ()

    def beside(self, others: tuple[object, ...]) -> None:
        self.others = others

    @property
    def warnings(self) -> tuple[str, ...]:
        if any(getattr(o, "name", None) == self.names for o in self.others):
            return ()
        return (self.said,)


def test_backends_are_told_the_owners_removing_what_they_would_name_as_left_behind() -> None:
    # `destroy --dry-run` after `apply --backend netlink --backend nftables`: both iptables
    # flavours named k3snet's nftables table, which the plan removed, as left behind.
    table = "nftables table inet k3snet holds rules k3snet's nftables backend wrote"
    chains = "nftables: iptables-nft's tables hold chains k3snet's iptables backend wrote"
    nft = _Beside(chains, "iptables", name="nftables")
    ipt_nft = _Beside(table, "nftables", name="iptables")
    ipt_legacy = _Beside(table, "nftables", name="iptables")
    alone = discover.Discovery((), ("a", "b", "c"), (), (nft, ipt_nft, ipt_legacy))
    assert alone.warnings == (chains, table)  # nobody removes them: each said once
    found = discover.Discovery((discover.Owner("nftables", nft, 4),), ("b", "c"), (),
                               (nft, ipt_nft, ipt_legacy))
    assert found.warnings == (chains,)
    assert ipt_nft.others == ipt_legacy.others == (nft,)
    # iptables-legacy removes none of iptables-nft's chains: no hint to the others.
    legacy = discover.Discovery((discover.Owner("iptables-legacy", ipt_legacy, 4),),
                                ("a", "b"), (), (nft, ipt_nft, ipt_legacy))
    assert legacy.warnings == (chains, table)


def test_left_behind_names_each_node_backend_not_in_use_holding_k3snets_objects(
        node: dict[str, MemoryBackend]) -> None:
    in_use = [SimpleNamespace(name="fake-nft")]
    found = discover.left_behind(in_use, netns="lab 1")
    assert [w.split(" holds ")[0] for w in found] == ["fake-netlink", "fake-ipt"]
    assert found[0].startswith("fake-netlink holds 2 of k3snet's objects, and no backend "
                               "in use is fake-netlink")
    assert found[0].endswith("`k3snet destroy --netns 'lab 1' --backend fake-netlink` "
                             "removes them")
    assert node["fake-ipt"].observe().owned == {NAT}  # looked at, nothing changed


def test_left_behind_looks_nowhere_without_a_node_backend_in_use(
        node: dict[str, MemoryBackend]) -> None:
    assert discover.left_behind([MemoryBackend()]) == ()
    assert discover.left_behind([SimpleNamespace(name="calico")]) == ()


def test_left_behind_names_a_destroy_with_the_options_it_looked_with_so_it_removes_those_objects(
        node: dict[str, MemoryBackend]) -> None:
    # A spec's nftables.table (or the agent's K3SNET_STATE_DIR): the destroy named without
    # it looked at the default table, removing nothing of what was found.
    options: dict[str, dict[str, object]] = {
        "fake-netlink": {"protocol": 200, "state_dir": Path("/var/lib/my k3snet"),
                         "netns": "lab", "allow_disruptive": True},
        "fake-ipt": {"table": "1", "tables": (254, 100)}}
    found = discover.left_behind([SimpleNamespace(name="fake-nft")], options, netns="lab")
    assert found[0].endswith(
        "`k3snet destroy --netns lab --backend fake-netlink --backend-opt fake-netlink.protocol=200"
        " --backend-opt 'fake-netlink.state_dir=/var/lib/my k3snet'` removes them")
    assert found[1].endswith(
        "`k3snet destroy --netns lab --backend fake-ipt --backend-opt 'fake-ipt.table=\"1\"'"
        " --backend-opt 'fake-ipt.tables=[254, 100]'` removes them")


def test_left_behind_names_a_destroy_in_the_namespace_it_looked_in(
        node: dict[str, MemoryBackend]) -> None:
    # A spec's netns of one backend's (no --netns): the destroy named without it acted in
    # this process's namespace, on the objects k3snet keeps there, not on those found.
    found = discover.left_behind([SimpleNamespace(name="fake-nft")],
                                 {"fake-netlink": {"netns": "pods 2"}})
    assert "`k3snet destroy --netns 'pods 2' --backend fake-netlink` " in found[0]
    assert "`k3snet destroy --backend fake-ipt` " in found[1]


def test_left_behind_passes_over_a_backend_whose_look_fails_in_any_way(
        node: dict[str, MemoryBackend], monkeypatch: pytest.MonkeyPatch) -> None:
    # The look is a warning no one asked for: a backend not in use whose read fails with
    # what is no k3snet error (an OSError of a tool, a bug of a custom backend) ended the
    # plan, or the agent's pass, with an internal error.
    def broken() -> State:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(node["fake-netlink"], "observe", broken)
    found = discover.left_behind([SimpleNamespace(name="fake-nft")])
    assert [w.split(" holds ")[0] for w in found] == ["fake-ipt"]


@pytest.mark.parametrize("options", [{"protocol": "211"}, {"protocol": 300}, {"protocol": True},
                                     {"state_dir": 5}])
def test_the_netlink_precheck_leaves_a_value_the_backend_refuses_to_the_backend(
        options: dict[str, Any], tmp_path: Path) -> None:
    # A spec's netlink options, netlink not in use: packed into the route dump's header,
    # "211" or 300 ended the plan with struct.error (an internal error) instead of the
    # backend's own refusal, passed over by the look.
    assert discover._netlink_may_own({"state_dir": tmp_path, **options})


@pytest.mark.parametrize("where", [".", "lab 1", "host", "host/unnamed-4026532835"])
def test_the_netlink_precheck_finds_a_record_wherever_the_backend_keeps_one(
        where: str, tmp_path: Path) -> None:
    # host/unnamed-INODE (a namespace of no name's, two levels down) was not looked in: the
    # sysctls k3snet took there went unnamed once its routes were gone.
    record = tmp_path / where / "sysctl.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"format": 1, "owned": {}, "released": []}))
    assert not discover._sysctl_records(str(tmp_path))
    record.write_text(json.dumps({"format": 1, "owned": {
        "net.ipv4.ip_forward": {"value": "1", "previous": "0"}}, "released": []}))
    assert discover._sysctl_records(str(tmp_path))
    assert not discover._sysctl_records(str(tmp_path / "none yet"))


@pytest.mark.parametrize("value", ["/etc/kube-flannel/net-conf.json", "[1]", "1",
                                   "[" * 2000 + "]" * 2000])
def test_a_destroy_s_backend_opt_reads_back_as_the_value_it_was_given(value: str) -> None:
    # The destroy named in a finding gives each option as --backend-opt reads it: JSON
    # when the text parses, else the text. One nested deeper than Python's JSON parser
    # goes raised a RecursionError out of the finding's own wording.
    import shlex  # noqa: PLC0415

    from k3snet.backends.discover import _destroy_options  # noqa: PLC0415
    from k3snet.cli import _option_value  # noqa: PLC0415

    flag, entry = shlex.split(_destroy_options("flannel", {"path": value}))
    assert flag == "--backend-opt"
    assert _option_value(entry.partition("=")[2]) == value


def test_each_file_read_once_holds_only_within_its_block_and_its_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The memory of the files read is the block's alone: a look after it (the next new
    # spec), after an exception left it, or from another thread within it (the agent's
    # probe or Lease thread) reads the file again, never a count the block read earlier.
    import k3snet.backends.flannel as flannel_module  # noqa: PLC0415
    from k3snet._kept import read_input as real_read  # noqa: PLC0415

    conf = tmp_path / "net-conf.json"
    conf.write_text('{"Network": "10.42.0.0/16", "Backend": {"Type": "vxlan"}}\n')
    reads: list[str] = []
    here = threading.current_thread()

    def read_input(file: Path, limit: int) -> bytes:
        thread = threading.current_thread()
        reads.append("here" if thread is here else thread.name)
        return real_read(file, limit)

    monkeypatch.setattr(flannel_module, "read_input", read_input)

    def look() -> None:
        discover._flannel_file_left([], {"path": str(conf)}, ())

    with discover.each_file_read_once():
        look()
        look()
        with discover.each_file_read_once():  # a block within: its own memory
            look()
        look()
        other = threading.Thread(target=look, name="other")
        other.start()
        other.join()
    assert reads == ["here", "here", "other"]
    look()
    assert reads[3:] == ["here"]
    def look_and_fail() -> None:
        with discover.each_file_read_once():
            look()
            raise RuntimeError

    with pytest.raises(RuntimeError):
        look_and_fail()
    look()
    assert reads[4:] == ["here", "here"]


class Refused(MemoryBackend):
    """A backend whose look the system refuses ("not permitted", as the kernel says it)."""

    def observe(self) -> State:
        raise BackendError("cannot read: not permitted") from PermissionError(
            1, "Operation not permitted")


def test_root_of_its_own_user_namespace_is_exempt_from_a_refused_iptables_legacy_look_alone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """k3snet as root of a user namespace owning the network namespace (``unshare -rn``):
    iptables-legacy's look is refused by the host (``/proc/net/ip_tables_names`` is the
    host root's), a warning; nftables' or netlink's look there is refused only by a
    security module, a refusal (a destroy naming no backend fails). Every look refused
    was exempt: nftables' table went unread, and the destroy said nothing to destroy."""
    labels = ("netlink", "nftables", "iptables-nft", "iptables-legacy")
    for label in labels:
        register_backend(f"refused-{label}", lambda **_: Refused())
    monkeypatch.setattr(discover, "NODE_BACKENDS",
                        tuple((label, f"refused-{label}", {}) for label in labels))
    monkeypatch.setattr(discover, "_admin_of_own_namespace", lambda netns: True)
    monkeypatch.setattr(discover, "_host_owns_xtables_names", lambda netns: True)
    try:
        with discover.discover_owners() as found:
            assert found.refused == ("netlink", "nftables", "iptables-nft")
            assert [u.split(":")[0] for u in found.unavailable] == list(labels)
    finally:
        for label in labels:
            unregister_backend(f"refused-{label}")


def test_a_refused_iptables_legacy_look_is_exempt_only_while_the_host_owns_its_tables_file(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Root of a user namespace whose uid map was written before the network namespace
    was made (a rootless container) owns its ``/proc/net/ip_tables_names``: a refused
    iptables-legacy look there is no host's refusal, it is a refusal. It was exempt."""
    register_backend("refused-iptables-legacy", lambda **_: Refused())
    monkeypatch.setattr(discover, "NODE_BACKENDS",
                        (("iptables-legacy", "refused-iptables-legacy", {}),))
    monkeypatch.setattr(discover, "_admin_of_own_namespace", lambda netns: True)
    try:
        for host_s, refused in ((False, ("iptables-legacy",)), (True, ())):
            monkeypatch.setattr(discover, "_host_owns_xtables_names", lambda netns, h=host_s: h)
            with discover.discover_owners() as found:
                assert found.refused == refused, host_s
    finally:
        unregister_backend("refused-iptables-legacy")
