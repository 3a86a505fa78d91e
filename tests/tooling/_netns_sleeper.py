"""Run only by test_suite_stopped.py (its name keeps it out of the suite): makes a lab
namespace in a fixture, writes its name where ``K3SNET_SLEEPER_FILE`` says, and waits."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from k3snet.lab.netns import temporary_netns


@pytest.fixture
def namespace() -> Iterator[str]:
    with temporary_netns("sleeper") as name:
        yield name


def test_waits_in_a_namespace(namespace: str) -> None:
    Path(os.environ["K3SNET_SLEEPER_FILE"]).write_text(namespace)
    time.sleep(120)
