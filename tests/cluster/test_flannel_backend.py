"""The flannel backend: net-conf.json as a file and as a ConfigMap (emulated API server)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any

import pytest

from k3snet.backends import flannel as flannel_module
from k3snet.backends.cni_restart import CHANGED_ANNOTATION
from k3snet.backends.flannel import (
    OWNED_ANNOTATION,
    WRITTEN_ANNOTATION,
    FlannelBackend,
    effective_config,
)
from k3snet.backends.group import BackendGroup
from k3snet.errors import ApplyError, BackendError, ModelError, PlanError, SpecError
from k3snet.model.cni import (
    FLANNEL_OWNED_MARKER,
    FLANNEL_WRITTEN_MARKER,
    FlannelConfig,
    configmap_target,
)
from k3snet.model.state import State, object_from_dict
from k3snet.planner import Change, Plan, plan
from k3snet.spec import Cluster, Spec, check_pod_cidr, compile_flannel, pod_cidr_problems
from k3snet.testing import run_conformance
from k3snet.testing.kube import EmulatedApiServer, flannel_configs

pytestmark = pytest.mark.cluster

CONFIGMAPS = "v1/configmaps"

# What a K3s node's --flannel-conf file looks like, with keys k3snet does not model,
# odd spacing and a trailing newline: all of it must survive byte for byte.
NET_CONF = """{
  "Network": "10.42.0.0/16",
  "EnableIPv6": false,
  "EnableIPv4": true,
  "IPv6Network": "::/0",
  "SubnetLen" :24,
  "Backend": {
    "Type": "vxlan",
    "VNI":   1,
    "Port": 8472
  },
  "x-vendor": {"weird":  [1, 2,3], "nested": {"a": null}}
}
"""

# A key k3snet may write into a node's file (K3s ignores EnableNFTables there, and flannel
# SubnetLen/SubnetMin/SubnetMax, which k3snet refuses to write): one flannel does not know,
# which k3snet writes as it writes a key of a flannel newer than it.
SITE_NOTE = {"x-site": "rack-1"}


def _configmap(text: str = NET_CONF, **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "kube-flannel-cfg", "namespace": "kube-flannel",
                     "labels": {"app": "flannel"}, **metadata},
        "data": {"net-conf.json": text, "cni-conf.json": '{"name": "cbr0"}'},
    }


def _stored(server: EmulatedApiServer) -> dict[str, Any]:
    obj = server.get(CONFIGMAPS, "kube-flannel-cfg", "kube-flannel")
    assert obj is not None
    return obj


def _content(obj: dict[str, Any]) -> dict[str, Any]:
    """What must not change when nothing is applied: data and annotations."""
    return {"data": obj["data"], "annotations": obj["metadata"].get("annotations") or {}}


@pytest.fixture
def conf_file(tmp_path: Path) -> Path:
    path = tmp_path / "flannel" / "net-conf.json"
    path.parent.mkdir()
    path.write_text(NET_CONF)
    path.chmod(0o640)
    return path


@pytest.fixture
def configmap_backend(api_server: EmulatedApiServer, api_client: Any) -> FlannelBackend:
    api_server.put(CONFIGMAPS, _configmap())
    # A generous timeout: on a loaded machine the emulator may take longer than half a
    # second. The timeout test builds its own backend with a short one.
    return FlannelBackend(api_client=api_client, timeout=10.0, allow_disruptive=True)


def _converge(backend: FlannelBackend, desired: State) -> Plan:
    p = plan(backend.observe(), desired)
    backend.apply(p)
    return p


# ---------------------------------------------------------------- conformance


def test_file_backend_conforms_and_leaves_the_file_byte_identical(conf_file: Path) -> None:
    backend = FlannelBackend(path=conf_file, allow_disruptive=True)
    run_conformance(lambda: FlannelBackend(path=conf_file, allow_disruptive=True),
                    objects=flannel_configs(backend.target), max_examples=25,
                    reopen=lambda _: FlannelBackend(path=conf_file, allow_disruptive=True))
    assert conf_file.read_text() == NET_CONF
    assert sorted(os.listdir(conf_file.parent)) == ["net-conf.json"]  # no temporary files left


def test_configmap_backend_conforms_and_leaves_the_configmap_as_found(
    api_server: EmulatedApiServer, api_client: Any
) -> None:
    api_server.put(CONFIGMAPS, _configmap())
    before = _stored(api_server)
    target = configmap_target("kube-flannel", "kube-flannel-cfg")
    run_conformance(lambda: FlannelBackend(api_client=api_client, allow_disruptive=True),
                    objects=flannel_configs(target), max_examples=15,
                    reopen=lambda _: FlannelBackend(api_client=api_client,
                                                    allow_disruptive=True))
    after = _stored(api_server)
    assert after["data"] == before["data"]  # both keys, byte for byte
    # k3snet's records gone; its restart stamp alone stays (the text given back is read
    # when flannel starts, and that restart is followed).
    assert set(after["metadata"].get("annotations") or {}) <= {CHANGED_ANNOTATION}
    assert after["metadata"]["labels"] == before["metadata"]["labels"]


# ---------------------------------------------------------------- minimal, byte-exact edits


def test_changing_one_key_rewrites_only_its_value(conf_file: Path) -> None:
    backend = FlannelBackend(path=conf_file, allow_disruptive=True)
    desired = State(owned=[FlannelConfig(backend.target, network="10.244.0.0/16")])
    p = _converge(backend, desired)
    assert [c.action for c in p] == ["add"]
    text = conf_file.read_text()
    expected = NET_CONF.replace('"10.42.0.0/16"', '"10.244.0.0/16"')
    marker = json.dumps({"Network": '"10.42.0.0/16"'}, sort_keys=True)
    written = json.dumps({"Network": '"10.244.0.0/16"'}, sort_keys=True)
    expected = expected.replace(
        '[1, 2,3], "nested": {"a": null}}',
        f'[1, 2,3], "nested": {{"a": null}}}},\n  "{FLANNEL_OWNED_MARKER}": {marker},'
        f'\n  "{FLANNEL_WRITTEN_MARKER}": {written}')
    assert text == expected
    assert plan(backend.observe(), desired).empty
    # Removing k3snet's config puts the original bytes back.
    _converge(backend, State())
    assert conf_file.read_text() == NET_CONF


def test_adding_an_absent_key_follows_the_layout_and_is_removed_exactly(conf_file: Path) -> None:
    backend = FlannelBackend(path=conf_file, allow_disruptive=True)
    desired = State(owned=[FlannelConfig(backend.target, extra={
        "x-rack": "r1", "x-site": "rack-1"})])
    _converge(backend, desired)
    text = conf_file.read_text()
    assert '\n  "x-rack": "r1",\n  "x-site": "rack-1",\n' in text
    assert text.startswith(NET_CONF.rstrip()[:-2])  # everything before is untouched
    observed = backend.observe()
    assert observed.owned == desired.owned
    _converge(backend, State())
    assert conf_file.read_text() == NET_CONF


def test_replace_gives_back_keys_and_keeps_the_rest(conf_file: Path) -> None:
    backend = FlannelBackend(path=conf_file, allow_disruptive=True)
    first = FlannelConfig(backend.target, network="10.244.0.0/16", backend_type="host-gw")
    second = FlannelConfig(backend.target, backend_type="wireguard",
                           backend_options={"PersistentKeepaliveInterval": 25})
    _converge(backend, State(owned=[first]))
    p = _converge(backend, State(owned=[second]))
    assert [c.action for c in p] == ["replace"]
    values = json.loads(conf_file.read_text())
    assert values["Network"] == "10.42.0.0/16"  # given back: the original text
    # Backend is merged key by key: the type changes, VNI and Port stay (wireguard ignores them).
    assert values["Backend"] == {"Type": "wireguard", "VNI": 1, "Port": 8472,
                                 "PersistentKeepaliveInterval": 25}
    assert values["x-vendor"] == {"weird": [1, 2, 3], "nested": {"a": None}}
    assert backend.observe().owned == {second}
    _converge(backend, State())
    assert conf_file.read_text() == NET_CONF


def test_value_already_there_is_met_by_the_foreign_config(conf_file: Path) -> None:
    backend = FlannelBackend(path=conf_file, allow_disruptive=True)
    desired = State(owned=[FlannelConfig(backend.target, network="10.42.0.0/16",
                                         backend_type="vxlan",
                                         backend_options={"Port": 8472, "VNI": 1})])
    p = plan(backend.observe(), desired)
    assert p.empty
    assert [n.status for n in p.notes] == ["met"]


def test_file_mode_is_kept_and_the_file_is_replaced_atomically(conf_file: Path) -> None:
    backend = FlannelBackend(path=conf_file, allow_disruptive=True)
    inode = conf_file.stat().st_ino
    _converge(backend, State(owned=[FlannelConfig(backend.target, extra=SITE_NOTE)]))
    info = conf_file.stat()
    assert oct(info.st_mode & 0o777) == oct(0o640)
    assert info.st_ino != inode  # a new file renamed over the old one, never written in place


def test_a_file_whose_owner_cannot_be_kept_is_left_alone(tmp_path: Path) -> None:
    """Run as a user that may write the directory but not give a file to another user:
    the rewrite would change the file's owner, so nothing is written."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make a file of another user and to drop privileges")
    writer, owner = 23456, 12345
    directory = Path(tempfile.mkdtemp(prefix="k3snet-flannel-owner-"))  # outside 0700 dirs
    try:
        os.chown(directory, writer, writer)
        path = directory / "net-conf.json"
        path.write_text(NET_CONF)
        os.chown(path, owner, owner)
        path.chmod(0o644)
        inode = path.stat().st_ino
        read, write = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - the child reports through the pipe
            try:
                os.setgid(writer)
                os.setuid(writer)
                backend = FlannelBackend(path=path)
                try:
                    _converge(backend, State(owned=[FlannelConfig(backend.target,
                                                                  extra=SITE_NOTE)]))
                    outcome = "written"
                except ApplyError as exc:
                    outcome = str(exc)
                os.write(write, outcome.encode())
            finally:
                os._exit(0)
        os.close(write)
        with os.fdopen(read, "rb") as pipe:
            outcome = pipe.read().decode()
        os.waitpid(child, 0)
        info = path.stat()
        assert (info.st_uid, info.st_gid, info.st_ino) == (owner, owner, inode)
        assert path.read_text() == NET_CONF
        assert "cannot give the rewritten file its owner 12345:12345" in outcome, outcome
        assert "the file is unchanged" in outcome
        assert sorted(os.listdir(directory)) == ["net-conf.json"]
    finally:
        shutil.rmtree(directory)


def test_failed_write_leaves_the_file_unchanged(
    conf_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = FlannelBackend(path=conf_file, allow_disruptive=True)

    def refuse(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)  # the rename that would commit the write
    p = plan(backend.observe(), State(owned=[FlannelConfig(backend.target, network="10.9.0.0/16")]))
    with pytest.raises(ApplyError, match=r"cannot write flannel config file .*net-conf.json \(the "
                                         r"file is unchanged\): .*No space left on device"):
        backend.apply(p)
    assert conf_file.read_text() == NET_CONF
    assert sorted(os.listdir(conf_file.parent)) == ["net-conf.json"]


def test_a_hard_linked_file_is_left_alone_as_the_rename_would_part_its_names(
    conf_file: Path,
) -> None:
    """The rename gives one name the new text; K3s reading the other (--flannel-conf naming
    it) would never see what k3snet reported as applied."""
    other = conf_file.parent / "k3s-flannel.json"
    os.link(conf_file, other)
    backend = FlannelBackend(path=conf_file, allow_disruptive=True)
    p = plan(backend.observe(), State(owned=[FlannelConfig(backend.target,
                                                           extra=SITE_NOTE)]))
    problems = backend.check(p)
    assert len(problems) == 1
    assert "2 hard links" in problems[0], problems
    with pytest.raises(ApplyError, match="2 hard links"):
        backend.apply(p)
    assert conf_file.read_text() == other.read_text() == NET_CONF
    assert conf_file.stat().st_ino == other.stat().st_ino
    assert sorted(os.listdir(conf_file.parent)) == ["k3s-flannel.json", "net-conf.json"]


def test_a_file_that_is_a_mount_point_is_named_so_when_the_rename_is_refused(
    conf_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The kernel refuses a rename over a mount point (EBUSY): a container given the file
    # itself (a hostPath of type File, docker -v FILE:FILE), not its directory.
    backend = FlannelBackend(path=conf_file, allow_disruptive=True)

    def busy(src: str, dst: str) -> None:
        raise OSError(16, "Device or resource busy")

    monkeypatch.setattr(os, "replace", busy)
    p = plan(backend.observe(), State(owned=[FlannelConfig(backend.target,
                                                           extra=SITE_NOTE)]))
    with pytest.raises(ApplyError, match=r"the file is unchanged\): .*a mount point .*mount "
                                         r"its directory"):
        backend.apply(p)
    assert conf_file.read_text() == NET_CONF
    assert sorted(os.listdir(conf_file.parent)) == ["net-conf.json"]


def test_enable_nftables_is_written_to_a_configmap_upstream_flanneld_reads(
    configmap_backend: FlannelBackend, api_server: EmulatedApiServer
) -> None:
    """Upstream flanneld (v0.25 and later) reads EnableNFTables from its ConfigMap; only a
    node's own file (K3s' embedded flannel) is refused it."""
    _converge(configmap_backend, State(owned=[FlannelConfig(configmap_backend.target,
                                                            enable_nftables=True)]))
    data = json.loads(_stored(api_server)["data"]["net-conf.json"])
    assert data["EnableNFTables"] is True


def test_a_concurrent_change_of_the_file_is_not_overwritten(
    conf_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = FlannelBackend(path=conf_file, allow_disruptive=True)
    p = plan(backend.observe(), State(owned=[FlannelConfig(backend.target, network="10.9.0.0/16")]))
    original_edit = FlannelBackend._edit

    def edit_while_someone_writes(self: FlannelBackend, doc: Any, pl: Plan, **kw: Any) -> Any:
        conf_file.write_text(NET_CONF.replace("8472", "8473"))
        return original_edit(self, doc, pl, **kw)

    monkeypatch.setattr(FlannelBackend, "_edit", edit_while_someone_writes)
    with pytest.raises(ApplyError, match="changed by someone else"):
        backend.apply(p)
    assert conf_file.read_text() == NET_CONF.replace("8472", "8473")


def test_two_k3snet_writers_of_one_file_never_lose_either_edit(
    conf_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another k3snet (the agent beside an operator's apply) writing the same file between
    this one's last check and its rename: one of them is refused, never silently lost."""
    from k3snet.backends import flannel  # noqa: PLC0415 - its private wait, made 0 here

    monkeypatch.setattr(flannel, "_WRITE_LOCK_SECONDS", 0.0, raising=False)
    first = FlannelBackend(path=conf_file, allow_disruptive=True)
    second = FlannelBackend(path=conf_file, allow_disruptive=True)
    first_plan = plan(first.observe(), State(owned=[FlannelConfig(first.target,
                                                                  network="10.9.0.0/16")]))
    second_plan = plan(second.observe(), State(owned=[FlannelConfig(second.target,
                                                                    extra=SITE_NOTE)]))
    outcome: list[str] = []
    mkstemp = tempfile.mkstemp
    calls: list[None] = []

    def second_writes_meanwhile(*args: Any, **kwargs: Any) -> Any:
        calls.append(None)
        if len(calls) == 1:  # the first writer, after its check of the file, before its rename
            try:
                second.apply(second_plan)
                outcome.append("applied")
            except ApplyError as exc:
                outcome.append(str(exc))
        return mkstemp(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", second_writes_meanwhile)
    first.apply(first_plan)
    values = json.loads(conf_file.read_text())
    assert values["Network"] == "10.9.0.0/16"
    if outcome == ["applied"]:  # then its edit must be there too
        assert values.get("x-site") == "rack-1", "the second writer's edit was lost"
    else:
        assert "another k3snet is writing" in outcome[0], outcome
        assert "x-site" not in values
    assert FlannelBackend(path=conf_file).observe().owned == frozenset(
        {FlannelConfig(first.target, network="10.9.0.0/16")})


@pytest.mark.parametrize("config", [
    {"backend_type": "ipsec", "backend_options": {"ESPProposal": "\ud800"}},
    {"extra": {"x-note": "\udce9"}},
])
def test_a_value_holding_half_a_surrogate_pair_is_refused_by_check_and_apply(
    conf_file: Path, config: dict[str, Any]
) -> None:
    """No UTF-8 writes a lone surrogate (a JSON "\\ud800" escape read by Python): apply
    failed with a UnicodeEncodeError after check found nothing."""
    backend = FlannelBackend(path=conf_file, allow_disruptive=True)
    p = plan(backend.observe(), State(owned=[FlannelConfig(backend.target, **config)]))
    problems = backend.check(p)
    assert len(problems) == 1
    assert "half of a UTF-16 surrogate pair" in problems[0], problems
    with pytest.raises(PlanError, match="half of a UTF-16 surrogate pair"):
        backend.apply(p)
    assert conf_file.read_text() == NET_CONF


def test_invalid_json_in_the_file_is_a_clear_error(conf_file: Path) -> None:
    conf_file.write_text('{"Network": "10.42.0.0/16",}')
    backend = FlannelBackend(path=conf_file, allow_disruptive=True)
    with pytest.raises(BackendError, match=r"flannel config file .*net-conf.json: net-conf.json "
                                           r"is not valid JSON: .*line 1, column 28"):
        backend.observe()
    problems = backend.check(Plan(changes=[Change.add(FlannelConfig(backend.target,
                                                                    network="10.9.0.0/16"))]))
    assert problems
    assert "not valid JSON" in problems[0]


def test_a_byte_order_mark_is_named_as_flannel_refuses_it_too(conf_file: Path) -> None:
    # Python's own message advised decoding with utf-8-sig, as if k3snet were at fault;
    # flannel's Go stops on it: "invalid character 'ï' looking for beginning of value".
    conf_file.write_bytes(b"\xef\xbb\xbf" + NET_CONF.encode())
    with pytest.raises(BackendError, match=r"net-conf.json: net-conf.json starts with a "
                                           r"byte order mark .*flannel refuses it too") as info:
        FlannelBackend(path=conf_file, allow_disruptive=True).observe()
    assert "utf-8-sig" not in str(info.value)


def test_duplicate_top_level_keys_are_refused(conf_file: Path) -> None:
    conf_file.write_text('{"Network": "10.42.0.0/16", "Network": "10.9.0.0/16"}')
    with pytest.raises(BackendError, match="key 'Network' twice"):
        FlannelBackend(path=conf_file, allow_disruptive=True).observe()


@pytest.mark.parametrize(("text", "reason"), [
    ('{"Network": "10.42.0.0/16", "Other": ' + "[" * 2000 + "]" * 2000 + "}",
     "nests objects and arrays deeper than 128 levels"),
    ('{"Network": "10.42.0.0/16", "Backend": ' + '{"a": ' * 129 + "1" + "}" * 130,
     "nests objects and arrays deeper than 128 levels"),
    # Go's encoding/json refuses what Python's json reads by default.
    ('{"Network": "10.42.0.0/16", "SubnetLen": NaN}', "NaN is not JSON"),
    ('{"Network": "10.42.0.0/16", "Other": [Infinity]}', "Infinity is not JSON"),
    ('{"Network": "10.42.0.0/16", "Other": 1e999}', "beyond double range"),
])
def test_json_flannel_cannot_read_is_a_clear_error_naming_the_file(
    conf_file: Path, text: str, reason: str
) -> None:
    conf_file.write_text(text)
    with pytest.raises(BackendError, match=r"flannel config file .*net-conf.json: net-conf.json "
                                           r"is not valid JSON") as info:
        FlannelBackend(path=conf_file, allow_disruptive=True).observe()
    assert reason in str(info.value)


@pytest.mark.parametrize(("data", "reason"), [
    # flannel's file is a few hundred bytes: a larger one is never read whole.
    (NET_CONF.encode()[:-3] + b', "x": "' + b"a" * (1 << 20) + b'"}\n', "larger than 1048576"),
    # Go's decoder reads invalid UTF-8 as U+FFFD, which k3snet could not write back.
    (NET_CONF.replace('"weird"', '"w\u00e9ird"').encode("latin-1"), "not UTF-8 text"),
    (NET_CONF.encode("utf-16"), "not UTF-8 text"),
])
def test_bytes_flannel_would_read_otherwise_are_refused_and_the_file_kept(
    conf_file: Path, data: bytes, reason: str
) -> None:
    conf_file.write_bytes(data)
    backend = FlannelBackend(path=conf_file, allow_disruptive=True)
    with pytest.raises(BackendError, match=reason):
        backend.observe()
    (problem,) = backend.check(Plan(changes=[Change.add(FlannelConfig(
        backend.target, extra=SITE_NOTE))]))
    assert reason in problem
    assert conf_file.read_bytes() == data


def test_a_key_written_with_json_escapes_is_the_field_go_unescapes_it_to(
    conf_file: Path
) -> None:
    """Go's decoder unescapes a key before matching it: "\\u004eetwork" is Network."""
    conf_file.write_text(NET_CONF.replace('"Network"', '"\\u004eetwork"'))
    backend = FlannelBackend(path=conf_file, allow_disruptive=True)
    (foreign,) = backend.observe().foreign
    assert str(foreign.network) == "10.42.0.0/16"
    assert plan(backend.observe(), State(owned=[FlannelConfig(
        backend.target, network="10.42.0.0/16")])).empty


def test_a_deeply_nested_ownership_record_is_a_clear_error(conf_file: Path) -> None:
    deep = json.dumps("[" * 2000 + "]" * 2000)
    record = '{"Network": ' + deep + "}"
    conf_file.write_text('{"Network": "10.42.0.0/16", "k3snet.io/owned": ' + record + "}")
    with pytest.raises(BackendError, match="ownership record entry 'Network' holds invalid JSON "
                                           r"\(it nests objects and arrays deeper than 128"):
        FlannelBackend(path=conf_file, allow_disruptive=True).observe()


def test_missing_file_is_observed_empty_and_never_created(tmp_path: Path) -> None:
    path = tmp_path / "absent.json"
    backend = FlannelBackend(path=path)
    assert backend.observe() == State()
    p = plan(State(), State(owned=[FlannelConfig(backend.target, network="10.9.0.0/16")]))
    assert "does not exist" in backend.check(p)[0]
    with pytest.raises(ApplyError, match="does not exist"):
        backend.apply(p)
    assert not path.exists()


def test_plans_for_other_targets_or_foreign_configs_are_refused(conf_file: Path) -> None:
    backend = FlannelBackend(path=conf_file, allow_disruptive=True)
    other = FlannelConfig("file:/elsewhere.json", network="10.9.0.0/16")
    with pytest.raises(PlanError, match="manages file:"):
        backend.apply(Plan(changes=[Change.add(other)]))
    (foreign,) = backend.observe().foreign
    with pytest.raises(PlanError, match=r"it is not k3snet's \(foreign\)"):
        backend.apply(Plan(changes=[Change.delete(foreign)]))
    assert conf_file.read_text() == NET_CONF


def _edit_by_hand(path: Path, old: str, new: str) -> None:
    """An admin's edit of the file: one value changed, k3snet's members left as they are."""
    text = path.read_text()
    assert text.count(old) == 1
    path.write_text(text.replace(old, new))


def test_a_key_an_admin_edited_in_the_file_is_theirs_and_removal_keeps_their_value(
    conf_file: Path,
) -> None:
    backend = FlannelBackend(path=conf_file, allow_disruptive=True)
    desired = State(owned=[FlannelConfig(backend.target, network="10.244.0.0/16",
                                         backend_type="vxlan",
                                         backend_options={"Port": 4789})])
    _converge(backend, desired)
    # The admin edits Network and Backend.Port by hand afterwards.
    _edit_by_hand(conf_file, '"Network": "10.244.0.0/16"', '"Network": "10.43.0.0/16"')
    _edit_by_hand(conf_file, '"Port": 4789', '"Port": 8475')
    admins = NET_CONF.replace("10.42.0.0/16", "10.43.0.0/16").replace("8472", "8475")
    observed = backend.observe()
    assert [o.describe() for o in observed.foreign] == [
        FlannelConfig.from_members(backend.target, json.loads(admins)).describe()]
    (owned,) = observed.owned
    assert isinstance(owned, FlannelConfig)
    assert owned.members() == {"Backend": {"Type": "vxlan"}}  # Type is still as k3snet wrote it
    # Removing k3snet's config keeps the admin's values (only Backend.Type is given back,
    # and it was vxlan before k3snet too): the file is the admin's text byte for byte.
    _converge(backend, State())
    assert conf_file.read_text() == admins


def test_a_file_key_an_admin_edited_is_set_again_and_their_value_given_back(
    conf_file: Path,
) -> None:
    backend = FlannelBackend(path=conf_file, allow_disruptive=True)
    desired = State(owned=[FlannelConfig(backend.target, network="10.244.0.0/16")])
    _converge(backend, desired)
    _edit_by_hand(conf_file, '"Network": "10.244.0.0/16"', '"Network": "10.43.0.0/16"')
    p = _converge(backend, desired)  # k3snet's value again; the admin's recorded as theirs
    assert [c.action for c in p] == ["replace"]
    assert json.loads(conf_file.read_text())["Network"] == "10.244.0.0/16"
    assert plan(backend.observe(), desired).empty
    _converge(backend, State())
    assert conf_file.read_text() == NET_CONF.replace("10.42.0.0/16", "10.43.0.0/16")


def test_a_file_record_of_an_older_k3snet_keeps_every_key_it_names(conf_file: Path) -> None:
    # Without the written member, who set a value is unknown: nothing is dropped.
    record = json.dumps({"Network": '"10.42.0.0/16"'})
    conf_file.write_text(NET_CONF.replace("10.42.0.0/16", "10.43.0.0/16").rstrip()[:-1]
                         + f',\n  "{FLANNEL_OWNED_MARKER}": {record}\n}}\n')
    backend = FlannelBackend(path=conf_file, allow_disruptive=True)
    (owned,) = backend.observe().owned
    assert isinstance(owned, FlannelConfig)
    assert owned.members() == {"Network": "10.43.0.0/16"}
    _converge(backend, State())
    assert conf_file.read_text() == NET_CONF


@pytest.mark.parametrize("written", ['"x"', "[]", '{"Network": 1}', '{"Backend": {"Port": 2}}'])
def test_a_corrupt_written_record_in_the_file_is_reported(conf_file: Path, written: str) -> None:
    conf_file.write_text('{"Network": "10.42.0.0/16", "k3snet.io/owned": {"Network": null}, '
                         f'"k3snet.io/written": {written}}}')
    with pytest.raises(BackendError, match=r"k3snet's key 'k3snet\.io/written' is not valid; "
                                           r"remove it"):
        FlannelBackend(path=conf_file, allow_disruptive=True).observe()


def test_a_corrupt_ownership_record_is_reported(conf_file: Path) -> None:
    conf_file.write_text('{"Network": "10.42.0.0/16", "k3snet.io/owned": {"Network": "{"}}')
    with pytest.raises(BackendError, match="ownership record entry 'Network' holds invalid JSON"):
        FlannelBackend(path=conf_file, allow_disruptive=True).observe()


def test_path_and_configmap_are_exclusive(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not both"):
        FlannelBackend(path=tmp_path / "x", configmap=("a", "b"))


# ---------------------------------------------------------------- the ConfigMap


def test_configmap_patch_carries_resource_version_and_only_what_changed(
    api_server: EmulatedApiServer, configmap_backend: FlannelBackend
) -> None:
    seeded = _stored(api_server)
    desired = State(owned=[FlannelConfig(configmap_backend.target, network="10.244.0.0/16")])
    result = configmap_backend.apply(plan(configmap_backend.observe(), desired))
    assert result.operations == 2  # one read, one patch
    method, path, body = api_server.requests()[-1]
    assert (method, path) == ("PATCH",
                              "/api/v1/namespaces/kube-flannel/configmaps/kube-flannel-cfg")
    assert body["metadata"]["resourceVersion"] == seeded["metadata"]["resourceVersion"]
    assert set(body["data"]) == {"net-conf.json"}  # cni-conf.json is not sent
    stored = _stored(api_server)
    assert stored["data"]["net-conf.json"] == NET_CONF.replace("10.42.0.0/16", "10.244.0.0/16")
    assert stored["data"]["cni-conf.json"] == '{"name": "cbr0"}'
    assert json.loads(stored["metadata"]["annotations"][OWNED_ANNOTATION]) == {
        "Network": '"10.42.0.0/16"'}
    assert plan(configmap_backend.observe(), desired).empty


def _kubectl_apply(server: EmulatedApiServer, text: str) -> None:
    """What ``kubectl apply -f kube-flannel.yml`` does: the manifest's net-conf.json back,
    annotations it did not apply left as they are."""
    obj = _stored(server)
    obj["data"]["net-conf.json"] = text
    server.put(CONFIGMAPS, obj)


def test_a_key_someone_else_rewrote_is_theirs_and_removal_keeps_their_value(
    api_server: EmulatedApiServer, configmap_backend: FlannelBackend
) -> None:
    backend = configmap_backend
    desired = State(owned=[FlannelConfig(backend.target, network="10.244.0.0/16",
                                         backend_type="vxlan",
                                         backend_options={"Port": 4789})])
    backend.apply(plan(backend.observe(), desired))
    # The admin's manifest moves on (another Network and Port) and is applied again.
    manifest = NET_CONF.replace("10.42.0.0/16", "10.43.0.0/16").replace("8472", "8475")
    _kubectl_apply(api_server, manifest)
    observed = backend.observe()
    assert [o.describe() for o in observed.foreign] == [
        FlannelConfig.from_members(backend.target, json.loads(manifest)).describe()]
    (owned,) = observed.owned
    assert isinstance(owned, FlannelConfig)
    # Network and Backend.Port are theirs now; Backend.Type is still as k3snet wrote it.
    assert owned.members() == {"Backend": {"Type": "vxlan"}}
    p = plan(observed, desired)
    assert [c.action for c in p.changes] == ["replace"]
    backend.apply(p)  # k3snet's values again, the manifest's recorded as theirs
    assert json.loads(_stored(api_server)["data"]["net-conf.json"])["Network"] == "10.244.0.0/16"
    backend.apply(plan(backend.observe(), State()))
    stored = _stored(api_server)
    # Removal gives back the manifest's values, not the ones from before k3snet's first write.
    assert stored["data"]["net-conf.json"] == manifest
    assert set(stored["metadata"]["annotations"]) == {CHANGED_ANNOTATION}  # records gone


def test_a_re_apply_that_keeps_k3snet_s_value_keeps_it_k3snet_s(
    api_server: EmulatedApiServer, configmap_backend: FlannelBackend
) -> None:
    backend = configmap_backend
    desired = State(owned=[FlannelConfig(backend.target, network="10.244.0.0/16")])
    backend.apply(plan(backend.observe(), desired))
    # Another key edited by hand: k3snet's Network is as it wrote it, so still its.
    text = _stored(api_server)["data"]["net-conf.json"]
    _kubectl_apply(api_server, text.replace('"SubnetLen" :24', '"SubnetLen" :25'))
    assert plan(backend.observe(), desired).empty
    backend.apply(plan(backend.observe(), State()))
    assert _stored(api_server)["data"]["net-conf.json"] == NET_CONF.replace(
        '"SubnetLen" :24', '"SubnetLen" :25')


def test_a_record_of_an_older_k3snet_keeps_every_key_it_names(
    api_server: EmulatedApiServer, configmap_backend: FlannelBackend
) -> None:
    # Without the written annotation, who set a value is unknown: nothing is dropped.
    api_server.put(CONFIGMAPS, _configmap(
        NET_CONF.replace("10.42.0.0/16", "10.43.0.0/16"),
        annotations={OWNED_ANNOTATION: '{"Network": "\\"10.42.0.0/16\\""}'}))
    (owned,) = configmap_backend.observe().owned
    assert isinstance(owned, FlannelConfig)
    assert owned.members() == {"Network": "10.43.0.0/16"}


def test_configmap_changed_between_read_and_patch_gives_409_and_nothing(
    api_server: EmulatedApiServer, configmap_backend: FlannelBackend,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    p = plan(configmap_backend.observe(),
             State(owned=[FlannelConfig(configmap_backend.target, network="10.244.0.0/16")]))
    edited = NET_CONF.replace("8472", "4789")
    original_edit = FlannelBackend._edit

    def someone_edits_meanwhile(self: FlannelBackend, doc: Any, pl: Plan, **kw: Any) -> Any:
        api_server.put(CONFIGMAPS, _configmap(edited))  # bumps the resourceVersion
        return original_edit(self, doc, pl, **kw)

    monkeypatch.setattr(FlannelBackend, "_edit", someone_edits_meanwhile)
    with pytest.raises(ApplyError, match=r"patch ConfigMap kube-flannel/kube-flannel-cfg: "
                                         r"conflict \(409\).*nothing was changed"):
        configmap_backend.apply(p)
    assert _stored(api_server)["data"]["net-conf.json"] == edited


@pytest.mark.parametrize(
    ("status", "method", "message"),
    [
        (403, "GET", r"read ConfigMap kube-flannel/kube-flannel-cfg: forbidden \(403\)"),
        (500, "GET", r"read ConfigMap kube-flannel/kube-flannel-cfg: the API server failed "
                     r"\(500"),
        (403, "PATCH", r"patch ConfigMap kube-flannel/kube-flannel-cfg: forbidden \(403\)"),
        (409, "PATCH", r"patch ConfigMap kube-flannel/kube-flannel-cfg: conflict \(409\)"),
        (500, "PATCH", r"patch ConfigMap kube-flannel/kube-flannel-cfg: the API server failed"),
    ],
)
def test_api_errors_name_the_configmap_and_change_nothing(
    api_server: EmulatedApiServer, configmap_backend: FlannelBackend,
    status: int, method: str, message: str,
) -> None:
    before = _content(_stored(api_server))
    p = plan(configmap_backend.observe(),
             State(owned=[FlannelConfig(configmap_backend.target, network="10.244.0.0/16")]))
    api_server.fail(status, method=method, plural="configmaps")
    with pytest.raises(ApplyError, match=message) as info:
        configmap_backend.apply(p)
    assert "nothing was changed" in str(info.value)
    assert _content(_stored(api_server)) == before


def test_observe_reports_api_errors_with_the_object(
    api_server: EmulatedApiServer, configmap_backend: FlannelBackend
) -> None:
    api_server.fail(403, method="GET", plural="configmaps",
                    message='configmaps "kube-flannel-cfg" is forbidden: User "system:'
                            'serviceaccount:kube-system:k3snet" cannot get resource')
    with pytest.raises(BackendError, match=r"read ConfigMap kube-flannel/kube-flannel-cfg: "
                                           r"forbidden \(403\).*cannot get resource"):
        configmap_backend.observe()


def test_a_timeout_is_an_error_naming_the_configmap(
    api_server: EmulatedApiServer, configmap_backend: FlannelBackend, api_client: Any
) -> None:
    before = _content(_stored(api_server))
    p = plan(configmap_backend.observe(),
             State(owned=[FlannelConfig(configmap_backend.target, network="10.244.0.0/16")]))
    api_server.fail(504, method="PATCH", plural="configmaps", delay=1.5)
    hurried = FlannelBackend(api_client=api_client, timeout=0.5, allow_disruptive=True)
    with pytest.raises(ApplyError, match=r"patch ConfigMap kube-flannel/kube-flannel-cfg: no "
                                         r"answer from the API server within 0.5s"):
        hurried.apply(p)
    assert _content(_stored(api_server)) == before


def test_invalid_json_in_the_configmap_is_a_clear_error(
    api_server: EmulatedApiServer, api_client: Any
) -> None:
    api_server.put(CONFIGMAPS, _configmap('{"Network": "10.42.0.0/16", "Backend": {"Type": '))
    before = _content(_stored(api_server))
    backend = FlannelBackend(api_client=api_client, allow_disruptive=True)
    with pytest.raises(BackendError, match=r"ConfigMap kube-flannel/kube-flannel-cfg: "
                                           r"net-conf.json is not valid JSON"):
        backend.observe()
    p = Plan(changes=[Change.add(FlannelConfig(backend.target, network="10.9.0.0/16"))])
    assert "not valid JSON" in backend.check(p)[0]
    with pytest.raises(ApplyError, match=r"not valid JSON.*nothing was changed"):
        backend.apply(p)
    assert _content(_stored(api_server)) == before


def test_configmap_without_net_conf_is_reported(
    api_server: EmulatedApiServer, api_client: Any
) -> None:
    cm = _configmap()
    del cm["data"]["net-conf.json"]
    api_server.put(CONFIGMAPS, cm)
    with pytest.raises(BackendError, match=r"has no 'net-conf.json' key.*cni-conf.json"):
        FlannelBackend(api_client=api_client, allow_disruptive=True).observe()


def test_missing_configmap_is_observed_empty_and_not_created(
    api_server: EmulatedApiServer, api_client: Any
) -> None:
    backend = FlannelBackend(configmap=("kube-system", "flannel"), api_client=api_client)
    assert backend.observe() == State()
    p = plan(State(), State(owned=[FlannelConfig(backend.target, network="10.9.0.0/16")]))
    with pytest.raises(ApplyError, match="ConfigMap kube-system/flannel does not exist"):
        backend.apply(p)
    assert api_server.get(CONFIGMAPS, "flannel", "kube-system") is None


# ---------------------------------------------------------------- spec checks and model


def test_pod_cidr_disagreeing_with_network_is_an_error_naming_both(conf_file: Path) -> None:
    backend = FlannelBackend(path=conf_file, allow_disruptive=True)
    observed = backend.observe()
    spec = Spec(cluster=Cluster(pod_cidrs=["10.244.0.0/16"], service_cidrs=["10.96.0.0/12"]))
    with pytest.raises(SpecError) as info:
        check_pod_cidr(spec, observed)
    (problem,) = info.value.problems
    assert problem.path == "cluster.podCIDRs[0]"
    assert "10.244.0.0/16" in problem.message
    assert "flannel's Network 10.42.0.0/16" in problem.message
    check_pod_cidr(Spec(), observed)  # K3s defaults agree
    # What k3snet owns counts over the foreign value.
    _converge(backend, compile_flannel(spec, target=backend.target))
    assert pod_cidr_problems(spec, backend.observe()) == []
    config = effective_config(backend.observe())
    assert config is not None
    assert str(config.network) == "10.244.0.0/16"
    assert config.backend_type == "vxlan"


def test_ipv6_pod_cidr_is_checked_against_ipv6network() -> None:
    config = FlannelConfig("file:/x.json", network="10.42.0.0/16",
                           ipv6_network="fd00:42::/56", enable_ipv6=True)
    problems = pod_cidr_problems(["10.42.0.0/16", "fd00:43::/56"], config)
    assert [p.path for p in problems] == ["cluster.podCIDRs[1]"]
    assert "flannel's IPv6Network fd00:42::/56" in problems[0].message


def test_flannel_config_model() -> None:
    config = FlannelConfig("configmap:kube-flannel/kube-flannel-cfg", network="10.42.0.0/16",
                           backend_type="vxlan", backend_options={"VNI": 1},
                           extra={"SubnetLen": 24})
    assert object_from_dict(config.to_dict()) == config
    assert config.describe() == ('flannel configmap:kube-flannel/kube-flannel-cfg '
                                 'Network=10.42.0.0/16 Backend={"Type":"vxlan","VNI":1} '
                                 'SubnetLen=24')
    # Modelled keys given in extra are lifted into their fields: one spelling, one value.
    assert FlannelConfig(config.target, extra={"Network": "10.42.0.0/16"}) == FlannelConfig(
        config.target, network="10.42.0.0/16")
    # Observed values that do not validate stay verbatim instead of failing.
    odd = FlannelConfig.from_members("file:/x.json", {"Network": "10.42.0.1/16",
                                                      "Backend": {"Type": "vpn"}})
    assert odd.network is None
    assert odd.extra["Network"] == "10.42.0.1/16"
    assert odd.extra["Backend"] == {"Type": "vpn"}
    for bad in ("relative/path", "configmap:Bad_NS/x", "http://x"):
        with pytest.raises(ModelError):
            FlannelConfig(bad)
    with pytest.raises(ModelError, match="IPv4"):
        FlannelConfig("file:/x.json", network="fd00::/64")
    with pytest.raises(ModelError, match="reserved"):
        FlannelConfig("file:/x.json", extra={FLANNEL_OWNED_MARKER: {}})
    with pytest.raises(ModelError, match="reserved"):
        FlannelConfig("file:/x.json", extra={FLANNEL_WRITTEN_MARKER: {}})
    assert FlannelConfig.from_members("file:/x.json", {FLANNEL_WRITTEN_MARKER: {}}).keys == ()


def test_members_spelled_otherwise_than_flannel_s_fields_are_modelled_as_flannel_reads_them(
) -> None:
    """``from_members`` never fails on content: a key Go's JSON decoding reads as a field
    of flannel's (``subnetlen``, ``backend``) is that field, the later of two spellings
    winning, as the backend's reader renames them; the model refuses such a key only
    where it is given (``extra``)."""
    read = FlannelConfig.from_members("file:/x.json", {
        "network": "10.43.0.0/16", "Network": "10.42.0.0/16", "subnetlen": 24,
        "backend": {"Type": "vxlan", "VNI": 2}, "Other": 1})
    assert read == FlannelConfig("file:/x.json", network="10.42.0.0/16", backend_type="vxlan",
                                 backend_options={"VNI": 2},
                                 extra={"SubnetLen": 24, "Other": 1})
    later = FlannelConfig.from_members("file:/x.json", {"Network": "10.42.0.0/16",
                                                        "NETWORK": "10.43.0.0/16"})
    assert str(later.network) == "10.43.0.0/16"


def test_a_net_conf_key_or_value_cannot_forge_a_line_of_the_plan(
    api_server: EmulatedApiServer, configmap_backend: FlannelBackend
) -> None:
    # Whoever may edit kube-flannel-cfg wrote a key and a value with line breaks and
    # terminal escapes: the foreign config printed them as they were, a forged "=" line
    # under the note and a cleared screen.
    hostile = NET_CONF.replace(
        '"x-vendor"', '"x\\n= flannel fake met\\u001b[2J": "v\\u202e\\n+ route",\n  "x-vendor"')
    _kubectl_apply(api_server, hostile)
    backend = configmap_backend
    desired = State(owned=[FlannelConfig(backend.target, network="10.42.0.0/16")])
    p = plan(backend.observe(), desired)
    assert len(p.met) == 1
    text = p.render()
    assert "\x1b" not in text
    assert "\u202e" not in text
    assert [line[0] for line in text.splitlines() if not line.startswith(" ")] == ["P", "="]


DEEP = "[" * 100000 + "]" * 100000
"""JSON nested deeper than Python's parser goes (RecursionError, not ValueError)."""


def test_a_written_record_nested_too_deep_is_reported_as_not_valid(
    api_server: EmulatedApiServer, configmap_backend: FlannelBackend
) -> None:
    # The written annotation (json.loads, unlike the ownership record's bounded reader)
    # nested deeper than Python's parser goes failed every observe with a RecursionError
    # (an internal error), not the message saying to remove it.
    api_server.put(CONFIGMAPS, _configmap(annotations={
        OWNED_ANNOTATION: '{"Network": null}', WRITTEN_ANNOTATION: DEEP}))
    with pytest.raises(BackendError, match=f"k3snet's annotation {WRITTEN_ANNOTATION} is not "
                                           "valid; remove it"):
        configmap_backend.observe()


def test_a_written_member_nested_too_deep_in_the_file_is_reported(conf_file: Path) -> None:
    # The file's member holds a JSON text (a string) that json.loads read unbounded.
    conf_file.write_text('{"Network": "10.42.0.0/16", "k3snet.io/owned": {"Network": null}, '
                         f'"k3snet.io/written": {json.dumps(DEEP)}}}')
    with pytest.raises(BackendError, match=r"k3snet's key 'k3snet\.io/written' is not valid; "
                                           r"remove it"):
        FlannelBackend(path=conf_file, allow_disruptive=True).observe()


def test_ctrl_c_right_after_the_file_is_replaced_takes_the_edit_back(
        conf_file: Path, monkeypatch: pytest.MonkeyPatch, ctrl_c: None) -> None:
    """Ctrl-C landing as the rename replaced net-conf.json, before the apply returned:
    the write was never among the parts a group takes back, and the file kept k3snet's
    edit while the command said nothing was changed."""
    real = flannel_module._atomic_write

    def then_signalled(path: Path, data: bytes) -> None:
        real(path, data)
        if data.decode() != NET_CONF:  # the apply's write, not the undo's
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(flannel_module, "_atomic_write", then_signalled)
    with BackendGroup([FlannelBackend(path=conf_file, allow_disruptive=True)]) as group:
        target = FlannelBackend(path=conf_file).target
        p = plan(group.observe(),
                 State(owned=[FlannelConfig(target, network="10.244.0.0/16")]))
        with pytest.raises(KeyboardInterrupt):
            group.apply(p)
    assert conf_file.read_text() == NET_CONF


def test_ctrl_c_as_the_configmap_patch_is_answered_takes_the_edit_back(
        api_server: EmulatedApiServer, configmap_backend: FlannelBackend,
        monkeypatch: pytest.MonkeyPatch, ctrl_c: None) -> None:
    """Ctrl-C landing as the API server answered the ConfigMap's patch, before its undo
    was recorded: the ConfigMap kept k3snet's edit, undone by no one."""
    from kubernetes import client  # noqa: PLC0415 - as the backend imports it

    real = client.CoreV1Api.patch_namespaced_config_map_with_http_info
    sent: list[str] = []

    def then_signalled(self: Any, *args: Any, **kwargs: Any) -> Any:
        answer = real(self, *args, **kwargs)
        if not sent:  # the apply's patch, not the undo's
            sent.append("patch")
            signal.raise_signal(signal.SIGINT)
        return answer

    before = _stored(api_server)["data"]
    monkeypatch.setattr(client.CoreV1Api, "patch_namespaced_config_map_with_http_info",
                        then_signalled)
    with BackendGroup([configmap_backend]) as group:
        target = configmap_backend.target
        p = plan(group.observe(),
                 State(owned=[FlannelConfig(target, network="10.244.0.0/16")]))
        with pytest.raises(KeyboardInterrupt):
            group.apply(p)
    assert sent == ["patch"]
    assert _stored(api_server)["data"] == before


@pytest.mark.parametrize(("backend_type", "options", "named"), [
    # A typo of DirectRouting: flannel's vxlan backend decodes Backend into its VXLANConfig,
    # and Go's JSON decoding drops a key no field matches without a word.
    ("vxlan", {"DirectRoute": True}, "DirectRoute"),
    # host-gw (and alloc) decode no options at all.
    ("host-gw", {"VNI": 3}, "VNI"),
    # wireguard's options are not vxlan's.
    ("wireguard", {"DirectRouting": True, "ListenPort": 51820}, "DirectRouting"),
])
def test_a_backend_option_the_type_s_backend_does_not_read_is_refused(
    configmap_backend: FlannelBackend, api_server: EmulatedApiServer, backend_type: str,
    options: dict[str, Any], named: str
) -> None:
    # Written, the option was reported applied (and a flannel restart asked for), and
    # flannel ignored it: the spec's setting never took effect.
    before = _content(_stored(api_server))
    wanted = FlannelConfig(configmap_backend.target, backend_type=backend_type,
                           backend_options=options)
    p = plan(configmap_backend.observe(), State(owned=[wanted]))
    (problem,) = configmap_backend.check(p)
    assert f"Backend.{named}" in problem
    assert f"flannel's {backend_type} backend" in problem
    with pytest.raises(PlanError, match=f"Backend.{named}"):
        configmap_backend.apply(p)
    assert _content(_stored(api_server)) == before


def test_a_backend_option_spelled_in_another_case_is_read_by_flannel_and_written(
    configmap_backend: FlannelBackend, api_server: EmulatedApiServer
) -> None:
    # Go's JSON decoding matches directRouting to DirectRouting: not an unread option.
    wanted = FlannelConfig(configmap_backend.target, backend_type="vxlan",
                           backend_options={"directRouting": True})
    _converge(configmap_backend, State(owned=[wanted]))
    stored = json.loads(_stored(api_server)["data"]["net-conf.json"])
    assert stored["Backend"]["directRouting"] is True


@pytest.mark.parametrize(("backend_type", "options"), [
    # flanneld on Windows nodes (pkg/backend/vxlan/vxlan_windows.go, every version since
    # v0.11) reads Name and MacPrefix; upstream's Helm chart writes MacPrefix.
    ("vxlan", {"VNI": 4096, "Port": 4789, "MacPrefix": "0E-2A", "Name": "flannel.4096"}),
    # ... and its host-gw (hostgw_windows.go) Name and DNSServerList.
    ("host-gw", {"Name": "cbr0", "DNSServerList": "10.43.0.10"}),
])
def test_a_windows_backend_option_is_written_to_the_configmap_windows_nodes_read(
    configmap_backend: FlannelBackend, api_server: EmulatedApiServer, backend_type: str,
    options: dict[str, Any]
) -> None:
    # A ConfigMap's net-conf.json is read by flannel's Windows DaemonSet too: refusing
    # these options as unread blocked a valid write.
    wanted = FlannelConfig(configmap_backend.target, backend_type=backend_type,
                           backend_options=options)
    _converge(configmap_backend, State(owned=[wanted]))
    stored = json.loads(_stored(api_server)["data"]["net-conf.json"])
    assert {k: stored["Backend"][k] for k in options} == options  # (VNI, Port found kept)
    assert stored["Backend"]["Type"] == backend_type


def test_a_windows_backend_option_is_refused_for_a_node_s_own_file(conf_file: Path) -> None:
    # A node's file is read by K3s' (Linux) flannel alone, which drops MacPrefix.
    backend = FlannelBackend(path=conf_file, allow_disruptive=True)
    wanted = FlannelConfig(backend.target, backend_type="vxlan",
                           backend_options={"MacPrefix": "0E-2A"})
    (problem,) = backend.check(plan(backend.observe(), State(owned=[wanted])))
    assert "Backend.MacPrefix" in problem
    assert "Windows" not in problem


def test_unread_backend_option_names_are_refused_in_one_printable_bounded_line(
    configmap_backend: FlannelBackend
) -> None:
    # Hostile names: a line break, a terminal escape, a bidirectional override; and
    # thousands of them. The refusal named each raw, with the backend's options again
    # for every one (hundreds of kilobytes).
    options = {"Direct\nRoute\x1b[2J\u202e": True, **{f"o{i}": 1 for i in range(3000)}}
    wanted = FlannelConfig(configmap_backend.target, backend_type="vxlan",
                           backend_options=options)
    p = plan(configmap_backend.observe(), State(owned=[wanted]))
    (problem,) = configmap_backend.check(p)
    assert problem.isprintable()
    assert "Backend.Direct\\nRoute\\x1b[2J\\u202e, Backend.o0" in problem
    assert "and 2996 more" in problem
    assert len(problem) < len(str(p.changes[0])) + 1000  # (before: 340,000 more)
