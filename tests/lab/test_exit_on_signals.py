"""What :func:`k3snet.lab.netns.exit_on_signals` makes of Ctrl-C, SIGTERM and SIGHUP.

Each case runs in a child process of its own, so this process's handlers stay as they are.
The clean-up the child's ``finally`` stands for is a lab's: killing its servers and
deleting its namespaces, which a second signal must not cut short.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

CLEANUP_DONE = "clean-up done"


def _child(body: str, *,
           ignore: tuple[signal.Signals, ...] = ()) -> subprocess.CompletedProcess[str]:
    # As a terminal starts it, whatever this process (a test worker) ignores.
    handlers = ("signal.signal(signal.SIGINT, signal.default_int_handler)\n"
                "signal.signal(signal.SIGHUP, signal.SIG_DFL)\n"
                + "".join(f"signal.signal({int(s)}, signal.SIG_IGN)\n" for s in ignore))
    code = ("import os, signal, time\n" + handlers
            + "from k3snet.lab.netns import exit_on_signals\n"
            + textwrap.dedent(body))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)


def test_a_second_ctrl_c_waits_for_the_clean_up_of_the_first() -> None:
    # An impatient user presses Ctrl-C twice: the second came while the first one's
    # clean-up ran, and cut it short (its KeyboardInterrupt), leaving the namespaces.
    done = _child(f"""
        exit_on_signals()
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(30)
        finally:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(5):
                time.sleep(0.01)  # a handler runs between two bytecodes: here, at the latest
            print({CLEANUP_DONE!r}, flush=True)
    """)
    assert CLEANUP_DONE in done.stdout, done.stderr
    # Still ended as Ctrl-C ends Python: by SIGINT (a shell sees 130).
    assert done.returncode == -signal.SIGINT, done.stderr


def test_an_ignored_sighup_stays_ignored_under_nohup() -> None:
    # `nohup make demo`: the demo made SIGHUP end it anyway when the terminal closed.
    done = _child("""
        exit_on_signals()
        print(signal.getsignal(signal.SIGHUP) is signal.SIG_IGN)
    """, ignore=(signal.SIGHUP,))
    assert done.stdout.strip() == "True", done.stderr


def test_an_ignored_ctrl_c_stays_ignored_in_a_background_job() -> None:
    # A shell starts `make demo &` with SIGINT ignored: Ctrl-C is for the foreground job.
    done = _child("""
        exit_on_signals()
        print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)
    """, ignore=(signal.SIGINT,))
    assert done.stdout.strip() == "True", done.stderr


def test_sigterm_and_sighup_still_end_the_process_with_128_plus_the_signal() -> None:
    for stop in (signal.SIGTERM, signal.SIGHUP):
        done = _child(f"""
            exit_on_signals()
            try:
                os.kill(os.getpid(), {int(stop)})
                time.sleep(30)
            finally:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.01)
                print({CLEANUP_DONE!r}, flush=True)
        """)
        assert done.returncode == 128 + stop, done.stderr
        assert CLEANUP_DONE in done.stdout, done.stderr
