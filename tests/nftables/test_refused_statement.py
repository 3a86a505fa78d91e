"""What a refused transaction says: the statement the kernel refused, not the batch's first.

libnftables (1.0.6) quotes, under a kernel's error for a command of a buffer, the
buffer's *first* line, with the refused command's columns underlined (``add table inet
k3snet`` over a line of ``^``): a refusal in a transaction of 10 000 rules named the
wrong statement, and the change said to have failed was the one owning that first line
(none). The backend now hands libnftables the batch as a file, from which it quotes the
refused statement's own line, and :func:`first_lines` leaves out the lines of ``^`` nft
draws under it (as long as the statement) and the file's name. Kernel tests: the real
libnftables, the kernel's own refusal.
"""

from __future__ import annotations

import os

import pytest

from k3snet.backends.nftables import NftablesBackend
from k3snet.backends.nftables.batch import Batch
from k3snet.backends.nftables.kernel import NftKernel, first_lines
from k3snet.errors import ApplyError
from k3snet.model import MasqueradeRule, State
from k3snet.planner import plan

RULES = 10_000
REFUSED = 5_000


def _masquerades(count: int) -> list[MasqueradeRule]:
    return [MasqueradeRule(f"10.{i // 250}.{i % 250}.0/24", destination="192.168.2.0/24")
            for i in range(count)]


@pytest.mark.kernel
def test_a_refused_command_deep_in_a_large_batch_is_quoted_and_maps_to_its_change(
        ns: str) -> None:
    batch = Batch("k3snet", "nft")
    batch.ensure_table("inet", None)
    for change, rule in enumerate(_masquerades(RULES)):
        batch.add_object("inet", rule, change)
    batch.inject_failure(REFUSED, "inet")  # a delete of a handle no table reaches

    def run(kernel: NftKernel) -> tuple[int, str]:
        return kernel.run(batch.text(), json_input=False)

    with NftablesBackend(ns, keep_read=False) as backend:  # its kernel, in the namespace
        rc, error = backend._call(run)
    assert rc != 0
    assert batch.owner_in(error) == REFUSED
    said = first_lines(error)
    assert said.startswith("Error: Could not process rule: No such file or directory | "
                           "delete rule inet k3snet postrouting handle "), said
    assert "^" not in said
    assert "/proc/self/fd/" not in said


def test_the_lines_nft_draws_under_a_statement_are_left_out() -> None:
    statement = "add rule inet k3snet postrouting ip saddr 10.0.0.0/33 masquerade"
    error = (f"/proc/self/fd/7:3:45-55: Error: Prefix length 33 is invalid\n{statement}\n"
             f"{' ' * 44}{'^' * 11}\nError: Could not process rule: No such file\n"
             f"{statement}\n{'~' * 20}^^^\n")
    assert first_lines(error) == (f"Error: Prefix length 33 is invalid | {statement} | "
                                  f"Error: Could not process rule: No such file | {statement}")


@pytest.mark.kernel
def test_an_apply_refused_deep_in_a_large_transaction_says_the_refused_statement(
        ns: str) -> None:
    with NftablesBackend(ns, keep_read=False) as backend:
        p = plan(backend.observe(), State(owned=_masquerades(RULES)))
        backend.faults.fail_at(REFUSED)
        with pytest.raises(ApplyError) as caught:
            backend.apply(p)
    message = str(caught.value)
    assert caught.value.failed == p.changes[REFUSED]
    assert "| delete rule inet k3snet postrouting handle " in message, message
    assert "^" not in message
    assert len(message) < 400, message


@pytest.mark.kernel
@pytest.mark.parametrize("missing", ["memfd", "proc"])
def test_a_batch_is_applied_and_its_refusal_said_without_memfd_or_proc(
        ns: str, missing: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """No anonymous file (an old kernel, the descriptors' limit reached) or no ``/proc``
    to name it by: the batch goes to libnftables as a buffer, as before, and no
    descriptor is left open."""
    def refused(*_: object) -> int:
        raise OSError(24, "Too many open files")

    if missing == "memfd":
        monkeypatch.setattr(os, "memfd_create", refused)
    else:
        real_exists = os.path.exists
        monkeypatch.setattr(os.path, "exists", lambda path: (
            False if str(path).startswith("/proc/self/fd/") else real_exists(path)))
    batch = Batch("k3snet", "nft")
    batch.ensure_table("inet", None)
    for change, rule in enumerate(_masquerades(3)):
        batch.add_object("inet", rule, change)
    refusal = Batch("k3snet", "nft")
    refusal.ensure_table("inet", None)
    refusal.inject_failure(0, "inet")
    with NftablesBackend(ns, keep_read=False) as backend:
        before = len(os.listdir("/proc/self/fd"))
        rc, error = backend._call(lambda kernel: kernel.run(batch.text(), json_input=False))
        assert (rc, error) == (0, "")
        rc, error = backend._call(lambda kernel: kernel.run(refusal.text(), json_input=False))
        assert len(os.listdir("/proc/self/fd")) == before
    assert rc != 0
    assert "/proc/self/fd/" not in error
    assert first_lines(error).startswith("Error: Could not process rule: "), error
