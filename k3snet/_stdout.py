"""Standard output and error that write every byte, whatever their file descriptor's flags.

O_NONBLOCK is a flag of the pipe or terminal, shared with every process holding it, and
another one sets it (a Node.js parent, some CI runners' terminals): a write into the
full pipe then fails with EAGAIN. Python's buffered writer raised it (``k3snet: error:
write could not complete without blocking``, exit 1, after 64 KiB of a plan) and its
unbuffered one (``PYTHONUNBUFFERED=1``, as container images set it) returned the short
count, and the text layer dropped the rest without a word: a plan of 315 KB ended at
64 KiB with exit 2. A signal whose handler returns cut a blocking write short in the
same way. Imported by :mod:`k3snet.__main__` (the process's own streams, not a library
caller's); it imports nothing Python has not loaded at start.
"""

from __future__ import annotations

import io
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = ["WholeWrites", "write_whole_streams"]


class WholeWrites(io.RawIOBase):
    """The file descriptor ``fd`` (not closed with this), each write written whole: again
    after a short count, and once the descriptor takes bytes again after EAGAIN (a
    ``poll`` for it). A reader gone is the ``BrokenPipeError`` of the next write."""

    def __init__(self, fd: int, name: object = None) -> None:
        super().__init__()
        self._fd = fd
        #: What the stream it stands under answered to ``name`` (``"<stdout>"``), so
        #: ``sys.stdout.name`` still answers (code run in the CLI's process may read it).
        self.name = fd if name is None else name

    def fileno(self) -> int:
        return self._fd

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return os.isatty(self._fd)

    def write(self, data: ReadableBuffer) -> int:
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            try:
                done += os.write(self._fd, view[done:])
            except BlockingIOError:
                _wait_for_room(self._fd)
        return done


def _wait_for_room(fd: int) -> None:
    import select  # noqa: PLC0415 - only once a write would block

    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    poller.poll()  # the reader gone: POLLERR, and the next write says EPIPE


def write_whole_streams() -> None:
    """Make ``sys.stdout`` and ``sys.stderr`` write every byte (see the module): each a
    text stream as Python made it (its encoding, errors, line buffering, buffered or not)
    over :class:`WholeWrites` of its descriptor. A stream that is not Python's own
    (replaced, or over no descriptor) is left as it is."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if type(stream) is not io.TextIOWrapper:
            continue
        binary = stream.buffer
        if type(binary) not in (io.BufferedWriter, io.FileIO):
            continue
        try:
            fd = binary.fileno()
        except (OSError, ValueError):
            continue
        stream.flush()
        raw = WholeWrites(fd, getattr(binary, "name", fd))
        # Unbuffered (PYTHONUNBUFFERED, -u) stays unbuffered: the text layer over the raw one.
        layer: io.RawIOBase | io.BufferedWriter = (
            raw if type(binary) is io.FileIO else io.BufferedWriter(raw))
        setattr(sys, name, io.TextIOWrapper(
            layer, encoding=stream.encoding, errors=stream.errors,
            line_buffering=stream.line_buffering, write_through=stream.write_through))
