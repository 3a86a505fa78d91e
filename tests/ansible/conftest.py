"""The environment tests/ansible's playbooks run in (see tests/ansible/playbooks.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ansible.playbooks import environment_in


@pytest.fixture
def ansible_env(tmp_path: Path) -> dict[str, str]:
    """An environment for ansible-playbook that reads nothing of the user's or the host's."""
    return environment_in(tmp_path)
