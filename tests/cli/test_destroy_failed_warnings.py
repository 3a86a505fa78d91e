"""A ``destroy`` naming no backend that fails in one backend after an earlier one's
removal (exit 5) says the warnings of what holds after it, not those read before.

Before, the warnings held back until the command's end (they are ``!! warning:`` lines
of a destroy that succeeds) were logged as read before the removal: the iptables
backend's "nftables table inet k3snet holds rules k3snet's nftables backend wrote ...
`k3snet destroy --backend nftables` removes them", of a table the same command had
just removed. Checked with the kernel's own listing (``nft -j list tables``).
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from k3snet.backends.kit import WarningLog
from k3snet.cli import _HeldWarnings
from k3snet.demo import SPEC_PATH
from k3snet.lab import SeedLab
from k3snet.lab.netns import run_in
from tests.in_process import k3snet

_KERNEL = [pytest.mark.kernel, pytest.mark.lab, pytest.mark.usefixtures("require_root")]


def _nft_tables(ns: str) -> list[str]:
    listing = json.loads(run_in(ns, ["nft", "-j", "list", "tables"]).stdout)["nftables"]
    return [i["table"]["name"] for i in listing if "table" in i]


@_KERNEL[0]
@_KERNEL[1]
@_KERNEL[2]
def test_a_destroy_failing_after_removing_the_nftables_table_does_not_name_it_as_left(
        tmp_path: Path) -> None:
    with SeedLab.create() as lab:
        environ = {"K3SNET_STATE_DIR": str(lab.state_dir), "K3SNET_LOCK_DIR": str(tmp_path)}
        # A switch of backends: the nftables table stays beside iptables-nft's chains.
        for backend in (["nftables"], ["iptables", "--backend-opt", "iptables.mode=nft"]):
            applied = k3snet("apply", "-f", str(SPEC_PATH), "--netns", lab.node,
                             "--backend", "netlink", "--backend", *backend, "--auto-approve",
                             **environ)
            assert applied.returncode == 0, applied.stderr
        # An admin's jump into a chain of k3snet's: the iptables part is refused.
        run_in(lab.node, ["iptables-nft", "-N", "ADMIN"])
        chain = next(line.split()[0][1:] for line in run_in(
            lab.node, ["iptables-nft-save", "-t", "filter"]).stdout.splitlines()
            if line.startswith(":K3SNET-F-"))
        run_in(lab.node, ["iptables-nft", "-A", "ADMIN", "-j", chain])

        destroyed = k3snet("destroy", "--netns", lab.node, "--auto-approve", **environ)

        assert destroyed.returncode == 5, destroyed.stderr
        assert "k3snet" not in _nft_tables(lab.node)  # removed before iptables failed
        assert "nftables table inet k3snet holds" not in destroyed.stderr
        # What still holds is said: the admin's jump that kept the chain.
        assert f"jumps to k3snet's chain {chain}" in destroyed.stderr


@pytest.fixture
def k3snet_logger() -> Iterator[logging.Logger]:
    """The ``k3snet`` logger, as the CLI sets it up (its handlers, its level) for the test."""
    logger = logging.getLogger("k3snet")
    saved = logger.handlers[:], logger.level, logger.propagate
    logger.setLevel(logging.WARNING)
    try:
        yield logger
    finally:
        logger.handlers[:], logger.propagate = saved[0], saved[2]
        logger.setLevel(saved[1])


def _held(logger: logging.Logger, *warnings: str) -> tuple[_HeldWarnings, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    held = _HeldWarnings(handler)
    handler.addFilter(held)
    logger.handlers[:], logger.propagate = [handler], False
    WarningLog(logger.getChild("backends.iptables"), "iptables").say(warnings)
    return held, out


def test_warnings_held_are_said_as_read_before_a_removal_not_read_again(
        k3snet_logger: logging.Logger) -> None:
    held, out = _held(k3snet_logger, "nftables table inet k3snet holds rules")
    held.label_read_before("the removal")
    held.release()
    assert out.getvalue() == ("read before the removal, which may have changed it: "
                              "iptables: nftables table inet k3snet holds rules\n")


def test_warnings_held_keep_only_those_read_again(k3snet_logger: logging.Logger) -> None:
    held, out = _held(k3snet_logger, "gone", "stays")
    held.keep_only(["stays", "new"])
    held.release()
    assert out.getvalue().splitlines() == ["iptables: stays", "new"]
