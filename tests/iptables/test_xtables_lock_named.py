"""An xtables lock that cannot be opened is named as such by the restore driver.

iptables-legacy-restore ``-w`` says only "Fatal: can't open lock file PATH: Is a
directory": k3snet's error now says what that file is (the xtables lock) and where its
name comes from (``$XTABLES_LOCKFILE``). Checked with the kernel's own listing: nothing
was written.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from k3snet.backends.iptables import IptablesBackend
from k3snet.errors import ApplyError
from k3snet.lab.netns import run_in
from k3snet.model import MasqueradeRule, State
from k3snet.planner import plan

pytestmark = pytest.mark.kernel


def test_a_restore_refused_by_an_unopenable_xtables_lock_names_the_xtables_lock(
        ns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lock = tmp_path / "xtables.lock"
    lock.mkdir()  # a directory in its place
    monkeypatch.setenv("XTABLES_LOCKFILE", str(lock))
    backend = IptablesBackend(netns=ns, mode="legacy", driver="restore")
    try:
        wanted = State(owned=[MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24")])
        with pytest.raises(ApplyError, match=r"can't open lock file .*: Is a directory "
                           r"\(the xtables lock, \$XTABLES_LOCKFILE, else /run/xtables.lock,"):
            backend.apply(plan(backend.observe(), wanted))
    finally:
        backend.close()
    assert "K3SNET" not in run_in(ns, ["iptables-legacy-save", "-t", "nat"]).stdout
