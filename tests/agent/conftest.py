"""Fixtures of the agent's tests."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from k3snet.agent import LOGGER_NAME, FileSpecSource
from k3snet.testing.kube import AGENT_RESOURCES, EmulatedApiServer


@pytest.fixture(autouse=True)
def _loggers_restored() -> Iterator[None]:
    """Undo what an in-process ``k3snet`` command did to k3snet's loggers.

    The CLI and ``configure_logging`` bind a handler to the stderr of the moment,
    which pytest closes after the test: later tests logging through it printed
    "--- Logging error --- ValueError: I/O operation on closed file".
    """
    loggers = [logging.getLogger(name) for name in ("k3snet", LOGGER_NAME)]
    saved = [(list(lg.handlers), lg.level, lg.propagate) for lg in loggers]
    yield
    for logger, (handlers, level, propagate) in zip(loggers, saved, strict=True):
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        for handler in handlers:
            logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


@pytest.fixture(autouse=True)
def _spec_files_taken_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent's tests write a spec file and pass at once: a new text is taken without
    waiting for the file's modification time to be ``SPEC_SETTLE`` old (a real second
    per agent and per rewrite). The settle time has tests of its own, each giving its
    ``settle`` and clocks (test_spec_settle.py); a file open for writing still waits."""
    monkeypatch.setattr(FileSpecSource, "settle", 0.0)


@pytest.fixture
def server() -> Iterator[EmulatedApiServer]:
    """An emulated API server serving what the agent reads and writes (its Lease, its
    events, Nodes); a test module needing more (a Node, Calico's resources) overrides it."""
    with EmulatedApiServer(resources=AGENT_RESOURCES) as srv:
        yield srv
