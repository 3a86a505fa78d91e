"""Standard output and error that write every byte, whatever their file descriptor's flags.

O_NONBLOCK is a flag of the pipe or terminal, shared with every process holding it, and
another one sets it (a Node.js parent, some CI runners' terminals): a write into the
full pipe then fails with EAGAIN. Python's buffered writer raised it (``k3snet: error:
write could not complete without blocking``, exit 1, after 64 KiB of a plan) and its
unbuffered one (``PYTHONUNBUFFERED=1``, as container images set it) returned the short
count, and the text layer dropped the rest without a word: a plan of 315 KB ended at
64 KiB with exit 2. A signal whose handler returns cut a blocking write short in the
same way. Imported by :mod:`k3snet.__main__` (the process's own streams, not a library
caller's); it imports nothing Python has not loaded at start. The CLI writes its JSON
document on a library caller's stdout with :func:`write_all` too (``k3snet.cli``'s
``_write_whole``): one way of waiting out EAGAIN and short writes.
"""

from __future__ import annotations

import io
import sys

# Not typing.TYPE_CHECKING, as in k3snet/__init__.py: typing (with collections, re, enum
# and contextlib) is no module Python loads at start, and `k3snet --version` paid for it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from _typeshed import HasFileno, ReadableBuffer

__all__ = ["WholeWrites", "flush_all", "write_all", "write_whole_streams"]


class WholeWrites(io.BufferedWriter):
    """Python's buffered writer over ``raw`` (its own ``FileIO``, as Python's streams have
    it), each write and flush waited out once the descriptor takes bytes again after
    EAGAIN (a ``poll`` for it) where it raised ``BlockingIOError``; ``unbuffered``: each
    write flushed, as ``PYTHONUNBUFFERED``'s stream writes at once. A short count is
    written again by Python's writer, which counts it before it runs a signal handler: a
    handler raising then (Ctrl-C, SIGTERM's stop) leaves the rest in the buffer, and no
    byte is written twice (a raw layer writing whole lost its count with the exception,
    and the buffer sent that part again). A reader gone is the ``BrokenPipeError`` of
    the next write."""

    def __init__(self, raw: io.FileIO, *, unbuffered: bool = False) -> None:
        super().__init__(raw)
        self._unbuffered = unbuffered

    def write(self, data: ReadableBuffer, /) -> int:
        view = memoryview(data).cast("B")
        write_all(super().write, view, self)
        if self._unbuffered:
            self.flush()
        return len(view)

    def flush(self) -> None:
        flush_all(super().flush, self)


def write_all(write: Callable[[memoryview], int | None], data: memoryview,
              writer: HasFileno) -> None:
    """``write`` (of ``writer``, Python's buffered writer or its ``FileIO``) called until
    it has taken every byte of ``data``: a short count is written on, and EAGAIN waited
    out once the descriptor takes bytes again (a buffered writer's ``BlockingIOError``,
    counting what it took; a raw one's ``None``, nothing taken)."""
    done = 0
    while done < len(data):
        try:
            written = write(data[done:])
        except BlockingIOError as exc:  # it took this much (buffered, or written)
            written = exc.characters_written
            _wait_for_room(writer.fileno())
        if written is None:  # a raw writer took nothing
            _wait_for_room(writer.fileno())
            written = 0
        done += written


def flush_all(flush: Callable[[], object], writer: HasFileno) -> None:
    """``flush()`` (of ``writer``), again once its descriptor takes bytes after EAGAIN:
    what went out is out of the buffer."""
    while True:
        try:
            flush()
        except BlockingIOError:
            _wait_for_room(writer.fileno())
        else:
            return


def _wait_for_room(fd: int) -> None:
    import select  # noqa: PLC0415 - only once a write would block

    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    poller.poll()  # the reader gone: POLLERR, and the next write says EPIPE


def write_whole_streams() -> None:
    """Make ``sys.stdout`` and ``sys.stderr`` write every byte (see the module): each a
    text stream as Python made it (its encoding, errors, line buffering, buffered or not,
    ``name`` and ``mode``) over :class:`WholeWrites` of its descriptor. A stream that is
    not Python's own (replaced, or over no descriptor) is left as it is."""
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
        raw = io.FileIO(fd, "w", closefd=False)
        raw.name = getattr(binary, "name", fd)  # as Python names its own ("<stdout>")
        # Unbuffered (PYTHONUNBUFFERED, -u) stays unbuffered: each write flushed.
        whole = io.TextIOWrapper(
            WholeWrites(raw, unbuffered=type(binary) is io.FileIO), encoding=stream.encoding,
            errors=stream.errors, line_buffering=stream.line_buffering,
            write_through=stream.write_through)
        mode = getattr(stream, "mode", None)  # open() sets it: "w"
        if mode is not None:
            whole.mode = mode  # type: ignore[misc]  # read-only to typeshed, not to Python
        setattr(sys, name, whole)
