"""The commands k3snet's warnings and refusals show, run as a user runs them.

k3snet reads a namespace either given ``--netns NS`` or started by ``ip netns exec NS
k3snet ...`` (no ``--netns``). Either way a command a message names must come after
``ip netns exec NS``: named alone and pasted into the shell that ran k3snet, it read
(or wrote) the node's own tables. The tests of each backend make k3snet say something
both ways (:data:`BOTH_WAYS`, :func:`as_k3snet_ran`), then check the text names the
command (:func:`shown`) and run the commands that only read as shown, from the test's
own namespace, outside the lab (:func:`run_as_shown`, :func:`check_shown`).
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Callable
from typing import TypeVar

import pytest

from k3snet.backends.netns import NetnsRunner

T = TypeVar("T")

BOTH_WAYS = pytest.mark.parametrize("given", [True, False], ids=["netns", "ip-netns-exec"])
"""Run a test taking ``given`` once with ``--netns NS`` and once under ``ip netns exec NS``."""


def inside(ns: str, call: Callable[[], T]) -> T:
    """``call()`` run in ``ns``, as a k3snet started by ``ip netns exec ns`` runs."""
    with NetnsRunner(ns) as runner:
        return runner.call(call)


def as_k3snet_ran(ns: str, given: bool, call: Callable[[str | None], T]) -> T:
    """``call(ns)`` (k3snet given ``--netns ns``) if ``given``, else ``call(None)`` run in
    ``ns`` (k3snet started by ``ip netns exec ns``)."""
    if given:
        return call(ns)
    return inside(ns, lambda: call(None))


def shown(ns: str, command: str) -> str:
    """``command`` as a message shows it for ``ns``: quoted, after ``ip netns exec ns``."""
    return f"`ip netns exec {ns} {command}`"


def run_as_shown(ns: str, command: str) -> str:
    """Run ``ip netns exec ns command`` from here, outside the lab, as pasted into the
    shell that ran k3snet; its output (it must succeed)."""
    return subprocess.run(shlex.split(f"ip netns exec {ns} {command}"), capture_output=True,
                          text=True, check=True).stdout


def check_shown(message: str, ns: str, command: str, seen: str) -> None:
    """``message`` names ``command`` for ``ns``, and that command, run as shown, prints
    ``seen`` (only for commands that read: it runs outside the lab's own code)."""
    assert shown(ns, command) in message, (shown(ns, command), message)
    out = run_as_shown(ns, command)
    assert seen in out, (seen, out)
