"""A signal while the JSON document is written: the reader gets it whole, or a clear error.

A document of a few hundred kilobytes into a pipe its reader empties slowly takes a
while to write; Ctrl-C or SIGTERM then cut it where they came, and since it had begun,
no error document followed: ``jq`` met half a document. These tests run k3snet as a
process writing into a pipe, and send the signal once the document has begun and more
of it is left than the pipe holds (no timing: it cannot have ended).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from k3snet import cli
from k3snet.cli import main

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"
RUN = ("import sys; sys.argv = ['k3snet', *sys.argv[1:]]; "
       "from k3snet.__main__ import main; sys.exit(main())")


def _big_spec(tmp_path: Path, count: int = 3000) -> Path:
    spec = tmp_path / "big.yaml"
    spec.write_text("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\ndestinations:\n" + "".join(
        f"  - cidr: 172.{16 + i // 256}.{i % 256}.0/24\n" for i in range(count)))
    return spec


def _signalled_within_the_document(signum: int, *argv: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of k3snet ``argv``, sent ``signum`` once its document
    has begun (its first byte read; more is left than the pipe and stdout's buffer hold)."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"K3SNET_FULL_EXIT", "PYTHONUNBUFFERED"}}
    process = subprocess.Popen([sys.executable, "-c", RUN, *argv], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=env)
    assert process.stdout is not None
    first = os.read(process.stdout.fileno(), 1)  # one byte: the rest waits for the reader
    assert first == b"{"
    process.send_signal(signum)
    out, err = process.communicate(timeout=300)
    return process.returncode, (first + out).decode(), err.decode()


def test_ctrl_c_while_a_big_plan_document_is_written_lets_it_end_whole(
        tmp_path: Path) -> None:
    argv = ("plan", "-f", str(_big_spec(tmp_path)), "--backend", "memory", "--no-facts",
            "--output", "json")
    code, out, err = _signalled_within_the_document(signal.SIGINT, *argv)
    assert len(out) > 1 << 18  # more than the pipe (64 KiB) and stdout's buffer hold
    assert json.loads(out)["kind"] == "plan"  # whole: was cut where Ctrl-C came
    assert code == cli.EXIT_INTERRUPTED  # Ctrl-C still ends it, once the document is out
    assert "Traceback" not in err


def test_sigterm_while_a_big_apply_document_is_written_lets_it_end_whole(
        tmp_path: Path) -> None:
    argv = ("apply", "-f", str(_big_spec(tmp_path)), "--backend", "memory", "--no-facts",
            "--output", "json")
    code, out, err = _signalled_within_the_document(signal.SIGTERM, *argv)
    assert json.loads(out)["kind"] == "apply"
    assert code == cli.EXIT_TERMINATED
    assert "k3snet: error: stopped by SIGTERM after the change was made, which stays" in err


class _CutTwice(io.StringIO):
    """A stdout that gets two Ctrl-C while a document is written: the second one cuts it."""

    def write(self, text: str) -> int:
        if self.tell() or len(text) < 1000:  # the big document only, once
            return super().write(text)
        super().write(text[:100])
        os.kill(os.getpid(), signal.SIGINT)  # waits for the document's end
        os.kill(os.getpid(), signal.SIGINT)  # cuts it
        return super().write(text[100:])  # never reached


def test_a_second_ctrl_c_cuts_the_document_and_the_error_document_follows_on_its_own_line(
        monkeypatch: pytest.MonkeyPatch) -> None:
    stdout = _CutTwice()
    monkeypatch.setattr(sys, "stdout", stdout)
    assert main(["plan", "-f", str(SEED), "--backend", "memory", "--no-facts",
                 "--output", "json"]) == cli.EXIT_INTERRUPTED
    cut, _, after = stdout.getvalue().partition("\n{\n")
    assert len(cut) < 200  # the plan's first 100 characters
    assert json.loads("{\n" + after)["error"]["type"] == "SIGINT"


class _GoneAfterCtrlC(io.StringIO):
    """A stdout whose reader, sent Ctrl-C too, goes away while the document is written."""

    def write(self, text: str) -> int:
        if not self.closed_pipe:
            self.closed_pipe = True
            os.kill(os.getpid(), signal.SIGINT)  # waits for the document's end
        raise BrokenPipeError(32, "Broken pipe")

    closed_pipe = False


def test_ctrl_c_that_waited_for_a_document_the_reader_left_still_ends_with_130(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The reader died with the same Ctrl-C (`k3snet plan -o json | jq` on a terminal):
    # the write fails, and the Ctrl-C that waited for it is the command's end, as before.
    monkeypatch.setattr(sys, "stdout", _GoneAfterCtrlC())
    monkeypatch.setattr(cli, "_drop_stdout", lambda: None)
    assert main(["plan", "-f", str(SEED), "--backend", "memory", "--no-facts",
                 "--output", "json"]) == cli.EXIT_INTERRUPTED


def _blocked_in_its_write_again(pid: int) -> bool:
    """Whether ``pid`` is back in a write to the full pipe, no signal pending: a signal
    sent to it was handled (the kernel takes a pending signal on the way out of the
    write, so blocked in one with none pending, it has run its handler since)."""
    status = Path(f"/proc/{pid}/status").read_text()
    pending = [line.split()[1] for line in status.splitlines()
               if line.startswith(("SigPnd:", "ShdPnd:"))]
    return (all(int(mask, 16) == 0 for mask in pending)
            and Path(f"/proc/{pid}/wchan").read_text() == "anon_pipe_write")


@pytest.mark.skipif(not Path("/proc/self/wchan").exists(), reason="Linux /proc")
@pytest.mark.parametrize("unbuffered", ["", "1"])
def test_ctrl_c_while_the_reader_does_not_read_still_leaves_the_document_whole(
        tmp_path: Path, unbuffered: str) -> None:
    # The signal interrupts the write blocked on the full pipe: the kernel says how much
    # of it went out (a short write). Python's unbuffered stdout (PYTHONUNBUFFERED=1, as
    # container images set it; python -u) returns that short count once the handler
    # (waiting for the document) returned, and the text writer above it dropped the
    # rest: 64 KiB of the document, exit 130 and no error document, as if it were whole.
    # Read here only once k3snet has handled Ctrl-C (no timing: it is written or blocked).
    env = {k: v for k, v in os.environ.items()
           if k not in {"K3SNET_FULL_EXIT", "PYTHONUNBUFFERED"}}
    env["PYTHONUNBUFFERED"] = unbuffered
    process = subprocess.Popen(
        [sys.executable, "-c", RUN, "plan", "-f", str(_big_spec(tmp_path)), "--backend",
         "memory", "--no-facts", "--output", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert process.stdout is not None
    first = os.read(process.stdout.fileno(), 1)
    while not _blocked_in_its_write_again(process.pid):  # the document is still written
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    while process.poll() is None and not _blocked_in_its_write_again(process.pid):
        time.sleep(0.01)
    out, err = process.communicate(timeout=300)
    assert len(first + out) > 1 << 18
    assert json.loads(first + out)["kind"] == "plan"
    assert process.returncode == cli.EXIT_INTERRUPTED
    assert "Traceback" not in err.decode()


def test_a_reader_gone_within_a_big_document_on_an_unbuffered_stdout_is_a_broken_pipe(
        tmp_path: Path) -> None:
    # `k3snet plan -o json | head -c 10` with PYTHONUNBUFFERED=1: the write blocked on the
    # full pipe returns the part that went out when the reader goes, and Python's text
    # layer dropped the rest: exit 2 (changes pending), as if the reader had it all.
    env = {k: v for k, v in os.environ.items() if k != "K3SNET_FULL_EXIT"}
    env["PYTHONUNBUFFERED"] = "1"
    process = subprocess.Popen(
        [sys.executable, "-c", RUN, "plan", "-f", str(_big_spec(tmp_path)), "--backend",
         "memory", "--no-facts", "--output", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert process.stdout is not None
    assert os.read(process.stdout.fileno(), 10).startswith(b"{")
    process.stdout.close()
    _, err = process.communicate(timeout=300)
    assert process.returncode == cli.EXIT_BROKEN_PIPE
    assert "Traceback" not in err.decode()


class _CutEachTime(io.StringIO):
    """A stdout that gets two Ctrl-C within each document written: the plan's, then the
    error document's that follows it, so the last Ctrl-C escapes the command."""

    cut = 0

    def write(self, text: str) -> int:
        if not text.lstrip("\n").startswith("{") or self.cut == 2:
            return super().write(text)
        self.cut += 1
        super().write(text[:20])
        os.kill(os.getpid(), signal.SIGINT)  # waits for the document's end
        os.kill(os.getpid(), signal.SIGINT)  # cuts it
        return super().write(text[20:])  # never reached


def test_ctrl_c_cutting_the_error_document_too_leaves_the_last_one_on_its_own_line(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The error document of a cut document was cut too: the Ctrl-C escaping the command
    # has k3snet.__main__ say it, and it followed the cut one on the same line.
    from k3snet import __main__ as entry  # noqa: PLC0415

    stdout = _CutEachTime()
    monkeypatch.setattr(sys, "stdout", stdout)
    monkeypatch.setattr(sys, "argv", ["k3snet", "plan", "-f", str(SEED), "--backend",
                                      "memory", "--no-facts", "--output", "json"])
    monkeypatch.setenv("K3SNET_FULL_EXIT", "1")  # end() returns the code
    assert entry.main() == cli.EXIT_INTERRUPTED
    *cut, last = stdout.getvalue().split("\n{\n")
    assert len(cut) == 2  # the plan's and the first error document's beginnings
    assert json.loads("{\n" + last)["error"]["type"] == "SIGINT"


class _CutBySigterm(io.StringIO):
    """A stdout that gets Ctrl-C, then SIGTERM, while the apply's document is written."""

    def write(self, text: str) -> int:
        if self.tell() or len(text) < 1000:  # the big document only, once
            return super().write(text)
        super().write(text[:100])
        os.kill(os.getpid(), signal.SIGINT)  # waits for the document's end
        os.kill(os.getpid(), signal.SIGTERM)  # cuts it
        return super().write(text[100:])  # never reached


def test_a_sigterm_cutting_the_document_a_ctrl_c_waited_for_is_the_end_said(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The Ctrl-C that waited is not run once the SIGTERM cut the document: its
    # KeyboardInterrupt took the SIGTERM's place, exit 130 and an error document of
    # type SIGINT, of a command that SIGTERM ended.
    stdout = _CutBySigterm()
    monkeypatch.setattr(sys, "stdout", stdout)
    with pytest.raises(SystemExit) as ended:
        main(["apply", "-f", str(SEED), "--backend", "memory", "--no-facts",
              "--output", "json"])
    assert ended.value.code == cli.EXIT_TERMINATED
    _, _, after = stdout.getvalue().partition("\n{\n")
    assert json.loads("{\n" + after)["error"]["type"] == "SIGTERM"


def test_a_document_for_no_stdout_at_all_is_dropped_as_print_drops_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # sys.stdout is None in a process started without one (a daemon's library call,
    # pythonw): print() writes nothing there; writing the document whole raised
    # AttributeError, an internal error and exit 1 for a plan that was made.
    monkeypatch.setattr(sys, "stdout", None)
    assert main(["plan", "-f", str(SEED), "--backend", "memory", "--no-facts",
                 "--output", "json"]) == cli.EXIT_CHANGES


def _waiting_for_room(pid: int, pipe: int) -> bool:
    """Whether ``pid`` waits in poll() with ``pipe`` (its read end) full: k3snet's wait
    for a non-blocking stdout to take bytes again (the write refused with EAGAIN)."""
    import fcntl  # noqa: PLC0415 - Linux only, as /proc
    import termios  # noqa: PLC0415

    held = fcntl.ioctl(pipe, termios.FIONREAD, b"\0\0\0\0")
    return (int.from_bytes(held, sys.byteorder) == fcntl.fcntl(pipe, fcntl.F_GETPIPE_SZ)
            and "poll" in Path(f"/proc/{pid}/wchan").read_text())


@pytest.mark.skipif(not Path("/proc/self/wchan").exists(), reason="Linux /proc")
@pytest.mark.parametrize("unbuffered", ["", "1"])
def test_a_big_document_on_a_non_blocking_stdout_is_written_whole_once_the_reader_reads(
        tmp_path: Path, unbuffered: str) -> None:
    # O_NONBLOCK is a flag of the pipe (or terminal) shared with the process that set it
    # (a Node.js parent, a CI runner's tty): the write into the full pipe failed with
    # EAGAIN, the document ended at 64 KiB with exit 1 and "stdout would block", the
    # plan made. Read here only once k3snet waits for room, or has ended (no timing).
    import fcntl  # noqa: PLC0415 - this test only

    env = {k: v for k, v in os.environ.items()
           if k not in {"K3SNET_FULL_EXIT", "PYTHONUNBUFFERED"}}
    env["PYTHONUNBUFFERED"] = unbuffered
    read, write = os.pipe()
    fcntl.fcntl(write, fcntl.F_SETFL, fcntl.fcntl(write, fcntl.F_GETFL) | os.O_NONBLOCK)
    with os.fdopen(read, "rb") as reader:
        process = subprocess.Popen(
            [sys.executable, "-c", RUN, "plan", "-f", str(_big_spec(tmp_path)), "--backend",
             "memory", "--no-facts", "--output", "json"],
            stdout=write, stderr=subprocess.PIPE, env=env)
        os.close(write)
        while process.poll() is None and not _waiting_for_room(process.pid, read):
            time.sleep(0.01)
        out = reader.read()
    _, err = process.communicate(timeout=300)
    assert len(out) > 1 << 18
    assert json.loads(out)["kind"] == "plan"
    assert process.returncode == cli.EXIT_CHANGES
    assert err.decode() == ""


@pytest.mark.skipif(not Path("/proc/self/wchan").exists(), reason="Linux /proc")
@pytest.mark.parametrize("unbuffered", ["", "1"])
def test_a_big_text_plan_on_a_non_blocking_stdout_is_written_whole_once_the_reader_reads(
        tmp_path: Path, unbuffered: str) -> None:
    # As the document above, the text plan: buffered, it ended at 64 KiB with "k3snet:
    # error: write could not complete without blocking" and exit 1; unbuffered
    # (PYTHONUNBUFFERED=1, as container images set it), at 64 KiB with exit 2 and not a
    # word, the rest dropped by Python's text layer.
    import fcntl  # noqa: PLC0415 - this test only

    env = {k: v for k, v in os.environ.items()
           if k not in {"K3SNET_FULL_EXIT", "PYTHONUNBUFFERED"}}
    env["PYTHONUNBUFFERED"] = unbuffered
    argv = [sys.executable, "-c", RUN, "plan", "-f", str(_big_spec(tmp_path)), "--backend",
            "memory", "--no-facts"]
    whole = subprocess.run(argv, capture_output=True, env=env, timeout=300, check=False)
    assert whole.returncode == cli.EXIT_CHANGES
    assert len(whole.stdout) > 1 << 18
    read, write = os.pipe()
    fcntl.fcntl(write, fcntl.F_SETFL, fcntl.fcntl(write, fcntl.F_GETFL) | os.O_NONBLOCK)
    with os.fdopen(read, "rb") as reader:
        process = subprocess.Popen(argv, stdout=write, stderr=subprocess.PIPE, env=env)
        os.close(write)
        while process.poll() is None and not _waiting_for_room(process.pid, read):
            time.sleep(0.01)
        out = reader.read()
    _, err = process.communicate(timeout=300)
    assert out == whole.stdout
    assert process.returncode == cli.EXIT_CHANGES
    assert err.decode() == ""


_ANSWERS = (
    "import json, sys; from k3snet._stdout import write_whole_streams; "
    "ask = lambda: [(s.name, s.mode, s.buffer.mode, s.encoding, s.isatty(), s.seekable(), "
    "s.writable()) for s in (sys.stdout, sys.stderr)]; "
    "before = ask(); write_whole_streams(); after = ask(); "
    "print('x', end=''); sys.stdout.flush(); "
    "open(sys.argv[1], 'w').write(json.dumps([before, after, type(sys.stdout.buffer).__name__]))")


@pytest.mark.parametrize("unbuffered", ["", "1"])
@pytest.mark.parametrize("into", ["pipe", "file"])
def test_the_whole_writing_streams_keep_their_name_encoding_and_tty_answers(
        tmp_path: Path, unbuffered: str, into: str) -> None:
    # Code run in the CLI's process (a third-party backend, a library it loads) may read
    # sys.stdout.name, .mode or .encoding, or ask seekable(); the wrapped streams answered
    # AttributeError to name and mode, and seekable() False on a file.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env["PYTHONUNBUFFERED"] = unbuffered
    answers, out = tmp_path / "answers.json", tmp_path / "out"
    with out.open("wb") as file:
        done = subprocess.run([sys.executable, "-c", _ANSWERS, str(answers)],
                              stdout=file if into == "file" else subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=60, check=True, env=env)
    before, after, layer = json.loads(answers.read_text())
    assert after == before
    assert [stream[:3] for stream in after] == [["<stdout>", "w", "wb"], ["<stderr>", "w", "wb"]]
    assert after[0][5] is (into == "file")
    assert layer == "WholeWrites"
    assert (out.read_bytes() if into == "file" else done.stdout) == b"x"


def _flush_cut_by_ctrl_c(pid: int, pipe: int) -> None:
    """Ctrl-C to ``pid`` once its write into the full pipe (read end ``pipe``) has put
    part of its bytes in: the pipe is full again, the write not done (no timing)."""
    import fcntl  # noqa: PLC0415 - Linux only, as /proc
    import termios  # noqa: PLC0415

    size = fcntl.fcntl(pipe, fcntl.F_GETPIPE_SZ)
    while int.from_bytes(fcntl.ioctl(pipe, termios.FIONREAD, b"\0\0\0\0"),
                         sys.byteorder) < size:
        time.sleep(0.01)
    os.kill(pid, signal.SIGINT)


_FLUSH_CUT = (
    "import sys; from k3snet._stdout import write_whole_streams; write_whole_streams(); "
    "sys.stdout.write('A' * 8000)\n"  # buffered: the end of a plan
    "try:\n    sys.stdout.flush()\n"  # end()'s flush, into the full pipe
    "except KeyboardInterrupt:\n    print('interrupted', file=sys.stderr, flush=True)\n"
    "sys.stdout.flush()\n")  # Python's exit, or end() once the Ctrl-C escaped the command


@pytest.mark.skipif(not Path("/proc/self/wchan").exists(), reason="Linux /proc")
def test_ctrl_c_cutting_a_flush_after_part_of_it_went_out_writes_no_byte_twice() -> None:
    # `k3snet plan | less`, Ctrl-C: the write blocked on the full pipe returns the part
    # that went out, the handler raises, and the count of that part was lost with the
    # exception: the buffer above sent it again at the next flush.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    read, write = os.pipe()
    try:
        os.set_blocking(write, False)
        with contextlib.suppress(BlockingIOError):
            while True:
                os.write(write, b"F")  # the pipe full, page by page
        os.set_blocking(write, True)
        os.read(read, 4096)  # one page of room: the flush's write puts 4096 bytes in
        process = subprocess.Popen([sys.executable, "-c", _FLUSH_CUT], stdout=write,
                                   stderr=subprocess.PIPE, env=env)
        os.close(write)
        write = -1
        assert process.stderr is not None
        _flush_cut_by_ctrl_c(process.pid, read)
        assert process.stderr.readline() == b"interrupted\n"  # then read the rest
        with os.fdopen(os.dup(read), "rb") as reader:
            out = reader.read()
        process.communicate(timeout=60)
    finally:
        os.close(read)
        if write != -1:
            os.close(write)
    assert out.count(b"A") == 8000
    assert out.endswith(b"A" * 8000)


class _Tee:
    """A library's stdout (not a TextIOWrapper): its write copies the text elsewhere too,
    ``buffer`` the real stdout's binary layer, as such wrappers hand it on."""

    def __init__(self) -> None:
        self.copied: list[str] = []
        self.buffer = io.BytesIO()

    def write(self, text: str) -> int:
        self.copied.append(text)
        return self.buffer.write(text.encode())

    def flush(self) -> None:
        pass


def test_a_document_on_a_stdout_that_is_no_text_wrapper_goes_through_its_own_write(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Its bytes went into the stdout's buffer, past the write that copies them.
    stdout = _Tee()
    monkeypatch.setattr(sys, "stdout", stdout)
    assert main(["plan", "-f", str(SEED), "--backend", "memory", "--no-facts",
                 "--output", "json"]) == cli.EXIT_CHANGES
    assert json.loads("".join(stdout.copied))["kind"] == "plan"


class _Writer:
    """A writer object that is no io class at all, its write returning None."""

    closed = False

    def __init__(self) -> None:
        self.kept = b""

    def readable(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        self.kept += bytes(data)

    def flush(self) -> None:
        pass


def test_a_document_into_a_writer_returning_none_is_written_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # None was read as "would block": BlockingIOError, exit 1 for a plan that was made.
    writer = _Writer()
    stdout = io.TextIOWrapper(writer, encoding="utf-8")  # type: ignore[type-var]  # the point
    monkeypatch.setattr(sys, "stdout", stdout)
    assert main(["plan", "-f", str(SEED), "--backend", "memory", "--no-facts",
                 "--output", "json"]) == cli.EXIT_CHANGES
    assert json.loads(writer.kept)["kind"] == "plan"


class _TeeWrapper(io.TextIOWrapper):
    """A text stdout whose write copies the text too (pytest's --capture=tee-sys)."""

    copied = ""

    def write(self, text: str) -> int:
        self.copied += text
        return super().write(text)


def test_a_document_on_a_text_wrapper_with_its_own_write_goes_through_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    stdout = _TeeWrapper(io.BytesIO(), encoding="utf-8")
    monkeypatch.setattr(sys, "stdout", stdout)
    assert main(["plan", "-f", str(SEED), "--backend", "memory", "--no-facts",
                 "--output", "json"]) == cli.EXIT_CHANGES
    assert json.loads(stdout.copied)["kind"] == "plan"


def _caller_s_stdout(kind: str, fd: int) -> io.TextIOWrapper:
    """A library caller's stdout over ``fd``, as Python makes one: buffered, unbuffered
    (``PYTHONUNBUFFERED=1``), or the ``k3snet`` command's own (:mod:`k3snet._stdout`)."""
    from k3snet._stdout import WholeWrites  # noqa: PLC0415 - this test only

    raw = io.FileIO(fd, "w")
    if kind == "unbuffered":
        return io.TextIOWrapper(raw, encoding="utf-8", write_through=True)
    binary = io.BufferedWriter(raw) if kind == "buffered" else WholeWrites(raw)
    return io.TextIOWrapper(binary, encoding="utf-8")


@pytest.mark.skipif(not Path("/proc/self/wchan").exists(), reason="Linux pipes")
@pytest.mark.parametrize("kind", ["buffered", "unbuffered", "whole-writes"])
def test_in_process_a_big_document_on_a_caller_s_non_blocking_pipe_is_written_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    # A program calling main() keeps its own stdout, a pipe another holder made
    # non-blocking: the document is written as its reader reads (EAGAIN waited out, a
    # short write written on), not cut at 64 KiB. The pipe is read only once it is full:
    # the write into it met EAGAIN (no timing).
    import fcntl  # noqa: PLC0415 - Linux only
    import termios  # noqa: PLC0415

    read, write = os.pipe()
    os.set_blocking(write, False)
    size = fcntl.fcntl(read, fcntl.F_GETPIPE_SZ)
    ended = threading.Event()
    got: list[bytes] = []

    def reader() -> None:
        while not ended.is_set() and int.from_bytes(
                fcntl.ioctl(read, termios.FIONREAD, b"\0\0\0\0"), sys.byteorder) < size:
            time.sleep(0.01)
        with os.fdopen(read, "rb") as pipe:
            got.append(pipe.read())

    thread = threading.Thread(target=reader)
    thread.start()
    stdout = _caller_s_stdout(kind, write)
    try:
        with contextlib.redirect_stdout(stdout):
            code = main(["plan", "-f", str(_big_spec(tmp_path)), "--backend", "memory",
                         "--no-facts", "--output", "json"])
    finally:
        ended.set()
        stdout.close()
        thread.join()
    assert code == cli.EXIT_CHANGES
    assert len(got[0]) > 1 << 18
    assert json.loads(got[0])["kind"] == "plan"
