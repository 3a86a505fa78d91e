"""A lab stopped while ``ip netns add`` runs deletes the namespace that command made.

:func:`~k3snet.lab.netns.temporary_netns` only knew the name once ``create_netns``
returned: a SIGTERM (``exit_on_signals``) or a timeout while ``ip`` was still running, on
a loaded machine, left a namespace that nothing deleted.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from k3snet.lab.netns import delete_netns, netns_exists

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]

CHILD = """
from k3snet.lab.netns import exit_on_signals, temporary_netns
exit_on_signals()
with temporary_netns("stopped"):
    pass
"""


def test_a_lab_stopped_while_ip_netns_add_runs_leaves_no_namespace(tmp_path: Path) -> None:
    real_ip = shutil.which("ip")
    assert real_ip is not None
    made = tmp_path / "made"
    # An `ip` that has made the namespace and has not exited yet (a slow machine).
    fake = tmp_path / "bin" / "ip"
    fake.parent.mkdir()
    fake.write_text(f"""#!/bin/sh
if [ "$1" = netns ] && [ "$2" = add ]; then
    {real_ip} netns add "$3" || exit $?
    echo "$3" > {made}
    exec sleep 60
fi
exec {real_ip} "$@"
""")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}:/usr/sbin:/usr/bin:/sbin:/bin"}
    child = subprocess.Popen([sys.executable, "-c", CHILD], env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    name = ""
    try:
        deadline = time.monotonic() + 60
        while not (made.exists() and made.read_text().strip()) and time.monotonic() < deadline:
            assert child.poll() is None, child.communicate()
            time.sleep(0.05)
        name = made.read_text().strip()
        assert netns_exists(name)
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=60)
        assert child.returncode == 128 + signal.SIGTERM, err
        assert not netns_exists(name)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if name and netns_exists(name):  # what the old code left, so the suite stays clean
            delete_netns(name)


CLEANED_UP_CHILD = """
import os
from k3snet.lab.netns import exit_on_signals, temporary_netns
exit_on_signals()
with temporary_netns("ctrlc") as name:
    print(name, flush=True)
    os.kill(os.getpid(), __import__("signal").SIGINT)  # the first Ctrl-C
"""


def test_a_second_ctrl_c_on_the_terminal_spares_the_clean_ups_ip_netns_delete(
    tmp_path: Path,
) -> None:
    # Ctrl-C on a terminal signals its whole foreground process group: the lab's `ip`
    # commands too. A second one while the clean-up ran `ip netns delete` killed that
    # command (and raised in the clean-up), and the namespace stayed. Now the first one
    # makes SIGINT ignored, which the clean-up's commands inherit.
    real_ip = shutil.which("ip")
    assert real_ip is not None
    fake = tmp_path / "bin" / "ip"
    fake.parent.mkdir()
    # The second Ctrl-C, sent as the terminal sends it: to the lab's process group.
    fake.write_text(f"""#!/bin/sh
if [ "$1" = netns ] && [ "$2" = delete ]; then
    kill -INT -"$LAB_GROUP"
fi
exec {real_ip} "$@"
""")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}:/usr/sbin:/usr/bin:/sbin:/bin"}
    # A process group of its own, as a terminal's foreground job has (its id: the pid).
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import os; os.environ['LAB_GROUP'] = str(os.getpgrp()); "
         "import signal; signal.signal(signal.SIGINT, signal.default_int_handler)\n"
         + CLEANED_UP_CHILD],
        env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        process_group=0)
    out, err = child.communicate(timeout=60)
    name = out.strip()
    try:
        assert name.startswith("k3snet-ctrlc-"), err
        assert child.returncode == -signal.SIGINT, err
        assert not netns_exists(name), err
    finally:
        if name and netns_exists(name):  # what the old code left behind
            delete_netns(name)
