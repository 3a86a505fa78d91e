"""The record of the built-in chains iptables-nft made for k3snet: this namespace's only."""

from __future__ import annotations

from pathlib import Path

import pytest

from k3snet.backends.iptables.made import Made, MadeRecord

MADE = [Made("ip", "filter", "FORWARD", True), Made("ip6", "nat", "POSTROUTING", False)]


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("K3SNET_STATE_DIR", str(tmp_path))
    return tmp_path


def test_a_record_reads_back_for_its_namespace_alone_and_goes_when_empty(
        state_dir: Path) -> None:
    record = MadeRecord("lab", "1-2")
    record.save(MADE)
    assert record.file == state_dir / "lab" / "iptables-made.json"
    assert record.file.stat().st_mode & 0o077 == 0
    assert MadeRecord("lab", "1-2").load() == MADE
    # a later namespace of the same name (another inode) made none of them
    assert MadeRecord("lab", "1-3").load() == []
    record.save([])
    assert not record.file.exists()


def test_a_damaged_or_foreign_record_is_nothing_made(state_dir: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    record = MadeRecord(None, "1-2")
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
