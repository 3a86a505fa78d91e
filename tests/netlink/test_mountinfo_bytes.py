"""``/proc/self/mountinfo`` holds file names, not text: ``ip netns add`` of a name with a
byte that is no UTF-8 (``\\xff``) mounts ``/run/netns/<name>``, and every
``NetlinkBackend`` then failed to start with ``UnicodeDecodeError`` (it reads the mounts
to learn whether its ``proc_sys`` is the kernel's, :func:`~.sysctls.on_procfs`).
"""

from __future__ import annotations

import os
from pathlib import Path

from k3snet.backends.netlink.sysctls import on_procfs


def _mount(point: bytes, kind: bytes) -> bytes:
    return b"46 45 0:4 / " + point + b" rw shared:2 - " + kind + b" " + kind + b" rw\n"


def test_a_mount_point_of_bytes_no_utf8_spells_neither_hides_nor_breaks_the_proc_mount(
        tmp_path: Path) -> None:
    root = tmp_path / "proc"
    (root / "sys").mkdir(parents=True)
    place = os.fsencode(root)
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_bytes(_mount(b"/run/netns/x-\xff", b"nsfs") + _mount(place, b"proc"))
    assert on_procfs(root / "sys", mountinfo)
    # Its own bytes name the very directory: a tmpfs over it is seen over the proc mount.
    odd = tmp_path / os.fsdecode(b"odd-\xff")
    (odd / "sys").mkdir(parents=True)
    mountinfo.write_bytes(_mount(os.fsencode(odd), b"proc")
                          + _mount(os.fsencode(odd / "sys"), b"tmpfs"))
    assert not on_procfs(odd / "sys", mountinfo)
    assert on_procfs(odd, mountinfo)


def test_a_mount_point_holding_a_unicode_line_separator_keeps_its_line_whole(
        tmp_path: Path) -> None:
    root = tmp_path / "p\u2028q"
    (root / "sys").mkdir(parents=True)
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_bytes(_mount(os.fsencode(root), b"proc"))
    assert on_procfs(root / "sys", mountinfo)
