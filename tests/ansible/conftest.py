"""The environment tests/ansible's playbooks run in (see tests/ansible/playbooks.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.ansible.playbooks import COLLECTION_ROOT, FILTER_PLUGINS


@pytest.fixture
def ansible_env(tmp_path: Path) -> dict[str, str]:
    """An environment for ansible-playbook that reads nothing of the user's or the host's."""
    home = tmp_path / "ansible-home"
    home.mkdir()
    config = tmp_path / "ansible.cfg"
    config.write_text("[defaults]\n")  # so no ansible.cfg in the cwd or ~ is read
    inventory = tmp_path / "hosts.ini"
    inventory.write_text(f"localhost ansible_connection=local "
                         f"ansible_python_interpreter={sys.executable}\n")
    locks = tmp_path / "locks"
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
