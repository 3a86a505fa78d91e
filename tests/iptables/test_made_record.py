"""The record of the built-in chains iptables-nft made for k3snet: this namespace's only."""

from __future__ import annotations

from pathlib import Path

import pytest

from k3snet.backends.iptables import made
from k3snet.backends.iptables.made import Made, MadeRecord

MADE = [Made("ip", "filter", "FORWARD", True), Made("ip6", "nat", "POSTROUTING", False)]


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path


def test_a_record_reads_back_for_its_namespace_alone_and_goes_when_empty(
        state_dir: Path) -> None:
    record = MadeRecord("lab", "1-2", state_dir)
    record.save(MADE)
    assert record.file == state_dir / "lab" / "iptables-made.json"
    assert record.file.stat().st_mode & 0o077 == 0
    assert MadeRecord("lab", "1-2", state_dir).load() == MADE
    # a later namespace of the same name (another inode) made none of them
    assert MadeRecord("lab", "1-3", state_dir).load() == []
    record.save([])
    assert not record.file.exists()
    assert not record.file.parent.exists()  # nothing else was in the namespace's directory
    record.save(MADE)
    (record.file.parent / "sysctl.json").write_text("{}")  # the netlink backend's record
    record.save([])
    assert not record.file.exists()
    assert (record.file.parent / "sysctl.json").exists()


def test_a_damaged_or_foreign_record_is_nothing_made(state_dir: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    record = MadeRecord(None, "1-2", state_dir)
    record.save(MADE)
    assert record.file == state_dir / "host" / "iptables-made.json"
    record.file.write_text('{"namespace": "1-2", "made": [{"family": "ip"}]}')
    assert record.load() == []
    assert "ignoring the record" in caplog.text
    record.file.chmod(0o666)  # writable by anyone: not k3snet's to trust
    record.save(MADE)  # replaced atomically by a file of k3snet's own
    assert record.load() == MADE
    record.file.chmod(0o666)
    assert record.load() == []


def test_without_a_state_dir_the_record_is_kept_where_the_netlink_backend_keeps_its_own(
        ) -> None:
    from k3snet.backends.iptables import IptablesBackend  # noqa: PLC0415
    from k3snet.backends.netlink import DEFAULT_STATE_ROOT, NetlinkBackend  # noqa: PLC0415

    # (the tests' conftest moves made.DEFAULT_ROOT away from /run/k3snet)
    assert IptablesBackend.option_defaults["state_dir"] == str(DEFAULT_STATE_ROOT)
    assert NetlinkBackend.option_defaults["state_dir"] == str(DEFAULT_STATE_ROOT)
    assert MadeRecord("lab", "1-2").file.parent.parent == made.DEFAULT_ROOT


def test_the_cli_s_k3snet_state_dir_reaches_the_iptables_backend_as_the_netlink_one(
        ) -> None:
    from k3snet.backends.options import resolve_backend_options  # noqa: PLC0415

    environ = {"K3SNET_STATE_DIR": "/var/lib/k3snet"}
    for name in ("iptables", "netlink"):
        options = resolve_backend_options(name, environ=environ)
        assert options["state_dir"] == Path("/var/lib/k3snet")


@pytest.mark.parametrize("value", ["/run/k3s\0net", 5, ["/run"]])
def test_a_state_dir_that_is_no_path_is_refused_when_the_backend_is_built(
        value: object) -> None:
    from k3snet.backends.iptables import IptablesBackend  # noqa: PLC0415
    from k3snet.errors import ModelError  # noqa: PLC0415

    with pytest.raises(ModelError, match="state_dir must be a path"):
        IptablesBackend(state_dir=value)  # type: ignore[arg-type]


def test_a_namespace_named_host_and_the_callers_own_keep_records_apart(
        state_dir: Path) -> None:
    # Both map to state_dir/host/: one file for both, each apply replaced the other's
    # record, and a destroy of one left the chains the other had made.
    own = MadeRecord(None, "1-1", state_dir)
    named = MadeRecord("host", "2-2", state_dir)
    assert own.file != named.file
    own.save(MADE)
    named.save(MADE[:1])
    assert own.load() == MADE
    assert named.load() == MADE[:1]
    named.save([])  # the named one's destroy
    assert own.load() == MADE
    assert own.file.parent.is_dir()


def test_a_record_of_another_instance_of_the_same_inode_is_nothing_made(
        state_dir: Path) -> None:
    # A namespace deleted and made again under its name gets, as often as not, the
    # inode the deleted one had: its boot id and cookie (the instance) tell them apart.
    MadeRecord("lab", "1-2", state_dir, instance="boot:7").save(MADE)
    assert MadeRecord("lab", "1-2", state_dir, instance="boot:8").load() == []
    assert MadeRecord("lab", "1-2", state_dir, instance="boot:7").load() == MADE
    # an older k3snet's record, without an instance, is judged by the inode, as it was
    record = MadeRecord("lab", "1-2", state_dir)
    record.save(MADE)
    assert MadeRecord("lab", "1-2", state_dir, instance="boot:8").load() == MADE


def test_a_named_namespaces_instance_is_the_boot_id_and_its_cookie_the_nodes_its_cookie(
        ) -> None:
    from k3snet.backends.netns import boot_id, namespace_instance, netns_cookie  # noqa: PLC0415

    here = namespace_instance(None)
    if here is None:
        pytest.skip("no netns cookie (Linux before 5.14)")
    assert here == str(netns_cookie())  # the same after a reboot: the node's own
    assert namespace_instance(None) == here
    assert boot_id()


def test_a_record_kept_in_an_earlier_place_is_read_and_moved_when_it_is_this_namespace_s(
        state_dir: Path) -> None:
    """A namespace entered by ``ip netns exec NAME`` kept its record in ``host/`` before
    2026-12-05 (and one given a name later sorting first, under its other name): kept
    under ``NAME`` now, that record was never read again, and a destroy left the chains
    (and tables) iptables-nft had made for k3snet. It is read while the namespace has
    none of its own and removed by the next save; another namespace's there (the node's
    own) is neither read nor touched."""
    MadeRecord(None, "1-2", state_dir).save(MADE)  # the entered namespace's, in host/
    node = state_dir / "other"
    MadeRecord("other", "9-9", state_dir).save(MADE[:1])  # another namespace's
    record = MadeRecord("lab", "1-2", state_dir, earlier=["other", "host"])
    assert record.load() == MADE
    record.save(MADE[1:])
    assert not (state_dir / "host" / "iptables-made.json").exists()
    assert (node / "iptables-made.json").exists()
    assert MadeRecord("lab", "1-2", state_dir).load() == MADE[1:]
    assert MadeRecord("other", "9-9", state_dir).load() == MADE[:1]
    MadeRecord(None, "1-2", state_dir).save(MADE)
    MadeRecord("lab", "1-2", state_dir, earlier=["host"]).save([])  # a destroy's: none left
    assert not (state_dir / "host" / "iptables-made.json").exists()


def test_a_namespace_named_host_given_a_name_sorting_first_reads_its_record(
        state_dir: Path) -> None:
    """A namespace named ``host`` keeps its record as ``host/iptables-made-netns.json``;
    given a name sorting first it keeps it under that one, and the earlier place read
    was the node's ``host/iptables-made.json``: a destroy left its chains. Its own
    record, entered by ``ip netns exec host`` (``host`` its earlier place), stays."""
    named = MadeRecord("host", "1-2", state_dir, earlier=["host"])
    named.save(MADE)
    assert named.file == state_dir / "host" / "iptables-made-netns.json"
    named.save(MADE)  # host/ is an earlier place of its own too: its file stays
    assert named.file.exists()
    node = MadeRecord(None, "1-1", state_dir)
    node.save(MADE[:1])
    renamed = MadeRecord("0-alias", "1-2", state_dir, earlier=["host"])
    assert renamed.load() == MADE
    renamed.save(MADE)
    assert not named.file.exists()
    assert node.load() == MADE[:1]
