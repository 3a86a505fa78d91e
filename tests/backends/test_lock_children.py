"""A writer k3snet started keeps the namespace lock until it ends, even if k3snet dies first.

The iptables backend writes through ``iptables-restore`` processes, fed through a
pipe big enough for the whole input: k3snet killed by SIGKILL (``kill -9``, the OOM
killer) while one runs loses the lock at once, and the tool, at the end of its input,
goes on committing the tables it was given. Another k3snet waiting for the lock (the
agent) read the node in the middle of it and planned from that half: a destroy
reported everything removed while the NAT table was committed after it (seen in a lab
namespace: 4 000 destinations, the apply killed after its filter table's commit).

The tools are stand-ins here (no network is touched): a script at the tool's name on
``PATH`` that holds its input until told to end.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from k3snet.backends.lock import namespace_lock
from k3snet.errors import LockTimeoutError

_HOLDER = textwrap.dedent("""
    import os, sys, threading, time
    from k3snet.backends.lock import namespace_lock
    from k3snet.backends.iptables.driver import Processes
    kernel = Processes(None, timeout=3600)
    with namespace_lock([None], timeout=0):
        if sys.argv[1] == "restore":
            run = kernel.restore(4, "nft")
            run.table("nat")
            run.send(["-A K3SNET-TEST -j ACCEPT"])
        else:  # what deletes a foreign jump to k3snet's chain
            threading.Thread(target=kernel.run, daemon=True,
                             args=(["iptables-nft", "-t", "nat", "-D", "POSTROUTING", "1"],),
                             kwargs={"input_text": "x"}).start()
        while not os.path.exists(os.path.join(os.environ["TOOL_DIR"], "pid")):
            time.sleep(0.01)
        print("started", flush=True)
        time.sleep(3600)
""")

_TOOL = textwrap.dedent("""\
    #!/bin/sh
    echo $$ > "$TOOL_DIR/pid.tmp"
    mv "$TOOL_DIR/pid.tmp" "$TOOL_DIR/pid"
    cat > /dev/null
    while [ ! -e "$TOOL_DIR/go" ]; do sleep 0.01; done
""")


@pytest.fixture
def tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "bin"
    directory.mkdir()
    for name in ("iptables-nft-restore", "iptables-nft"):
        tool = directory / name
        tool.write_text(_TOOL)
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("TOOL_DIR", str(tmp_path))
    monkeypatch.setenv("K3SNET_LOCK_DIR", str(tmp_path / "locks"))
    for name in ("iptables-nft-restore", "iptables-nft"):
        assert shutil.which(name) == str(directory / name)  # never the real tool
    return tmp_path


def _lock_is_free() -> bool:
    try:
        with namespace_lock([None], timeout=0):
            return True
    except LockTimeoutError:
        return False


def _pid_ends(pid: int) -> None:
    """Wait for an orphan (reaped by init, not by us) to be gone."""
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        try:  # a zombie left for init counts as gone
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return
        except OSError:
            return
        os.sched_yield()


@pytest.mark.parametrize("how", ["restore", "run"])
def test_the_lock_of_a_killed_k3snet_stays_held_until_the_writer_it_started_ends(
        tools: Path, how: str) -> None:
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, how], stdout=subprocess.PIPE,
                              text=True, cwd=Path(__file__).parents[2])
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "started\n"
        tool = int((tools / "pid").read_text())
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    try:
        # k3snet is gone; its iptables-restore is not, and may still commit: not free.
        assert not _lock_is_free()
    finally:
        (tools / "go").touch()
    _pid_ends(tool)
    assert _lock_is_free()
