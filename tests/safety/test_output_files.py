"""Files a user asks for (a plan, rendered files, a bundle) are written whole, never through a link.

Root runs ``k3snet plan --out /tmp/node.plan``: a link planted there by someone else
must not make k3snet write the plan into the file it points to, and an interrupted
write must not leave half a plan where a script will apply it.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from k3snet import MasqueradeRule, State, plan
from k3snet._kept import refuse_foreign_output, write_output
from k3snet.doctor import NodeCapture
from k3snet.doctor.bundle import MAX_FILE_BYTES, BundleError
from k3snet.errors import PlanError
from k3snet.planfile import MAX_PLANFILE_BYTES, PlanFile

SPEC = ("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"
        "destinations:\n  - cidr: 192.168.2.0/24\n")


def _planfile() -> PlanFile:
    desired = State(owned=[MasqueradeRule("10.42.0.0/16")])
    return PlanFile.make(plan(State(), desired), desired=desired, observed=State(),
                         backends=["memory"], netns=None)


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    return victim


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_a_plan_file_replaces_a_link_at_its_path_and_leaves_its_target(tmp_path: Path) -> None:
    victim = _victim(tmp_path)
    out = tmp_path / "node.plan"
    out.symlink_to(victim)
    _planfile().write(out)
    assert victim.read_text() == "precious\n"
    assert not out.is_symlink()
    assert PlanFile.read(out, netns=None).plan == _planfile().plan
    assert _leftovers(tmp_path) == []


def test_rendered_files_replace_links_and_leave_their_targets(tmp_path: Path) -> None:
    victim = _victim(tmp_path)
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    out = tmp_path / "out"
    out.mkdir()
    (out / "99-k3snet.conf").symlink_to(victim)
    done = subprocess.run([sys.executable, "-m", "k3snet.cli", "render", "sysctl", "-f",
                           str(spec), "--out", str(out)], capture_output=True, text=True,
                          check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    assert victim.read_text() == "precious\n"
    written = [Path(line) for line in done.stdout.splitlines()]
    assert written
    assert all(p.is_file() and not p.is_symlink() for p in written)
    assert _leftovers(out) == []


def _render_networkd(spec: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "k3snet.cli", "render", "networkd", "-f",
                           str(spec), "--network-file", "eth0=10-eth0.network", "--out",
                           str(out)], capture_output=True, text=True, check=False, timeout=120)


def test_a_drop_in_directory_that_is_another_users_link_is_refused_and_its_target_untouched(
        tmp_path: Path) -> None:
    # Root renders into a directory another user can write (sticky, as /tmp): that
    # user's link standing for 10-eth0.network.d/ put root's file in whatever directory
    # it pointed to.
    if os.geteuid() != 0:
        pytest.skip("needs root to give a link to another user")
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC + "    gateway: 192.168.1.1\n    device: eth0\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o1777)
    planted = out / "10-eth0.network.d"
    planted.symlink_to(elsewhere)
    os.lchown(planted, 65534, 65534)
    done = _render_networkd(spec, out)
    assert done.returncode == 1
    assert f"{planted}: a symbolic link of uid 65534" in done.stderr
    assert list(elsewhere.iterdir()) == []
    # A link of one's own is followed (an admin's drop-in directory kept elsewhere).
    os.lchown(planted, 0, 0)
    done = _render_networkd(spec, out)
    assert done.returncode == 0, done.stderr
    assert [p.name for p in elsewhere.iterdir()] == ["90-k3snet-routes.conf"]
    assert "Gateway=192.168.1.1" in (elsewhere / "90-k3snet-routes.conf").read_text()


def test_a_bundle_replaces_links_and_leaves_their_targets(tmp_path: Path) -> None:
    victim = _victim(tmp_path)
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "sysctl.txt").symlink_to(victim)
    (out / "bundle.json").symlink_to(victim)
    NodeCapture.from_texts({"sysctl.txt": "net.ipv4.ip_forward = 1\n"}).write_dir(out)
    assert victim.read_text() == "precious\n"
    assert NodeCapture.read_dir(out).texts["sysctl.txt"] == "net.ipv4.ip_forward = 1\n"
    assert _leftovers(out) == []


def test_an_interrupted_write_leaves_the_file_that_was_there(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "node.plan"
    out.write_text("the plan of before\n")

    def fail(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="No space left"):
        write_output(out, "a new plan\n")
    assert out.read_text() == "the plan of before\n"
    assert _leftovers(tmp_path) == []


def test_a_new_file_takes_the_umask_and_a_replaced_one_keeps_its_mode(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        write_output(tmp_path / "new", "x")
        assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o640
        kept = tmp_path / "kept"
        kept.write_text("y")
        kept.chmod(0o604)
        write_output(kept, "z")
        assert stat.S_IMODE(kept.stat().st_mode) == 0o604
        assert kept.read_text() == "z"
    finally:
        os.umask(old)


def test_a_replaced_files_set_id_and_sticky_bits_are_not_copied(tmp_path: Path) -> None:
    # Root writing a plan over a user's file of mode 6777 made a set-user-ID root file.
    planted = tmp_path / "node.plan"
    planted.write_text("y")
    planted.chmod(0o7755)
    write_output(planted, "z")
    assert stat.S_IMODE(planted.stat().st_mode) == 0o755


def test_a_plan_over_another_users_world_writable_file_is_not_left_writable_by_them(
        tmp_path: Path) -> None:
    # nobody plants /tmp/node.plan mode 0666; root's `plan --out /tmp/node.plan` took
    # that mode, and nobody rewrote root's plan before root applied it.
    if os.geteuid() != 0:
        pytest.skip("needs root to give a file to another user")
    planted = tmp_path / "node.plan"
    planted.write_text("x")
    planted.chmod(0o666)
    os.chown(planted, 65534, 65534)
    old = os.umask(0o022)
    try:
        _planfile().write(planted)
    finally:
        os.umask(old)
    info = planted.stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (0, 0o644)
    assert PlanFile.read(planted, netns=None).plan == _planfile().plan


@pytest.mark.parametrize("where", ["a-directory", "missing/node.plan"])
def test_a_write_that_cannot_be_done_names_the_file_asked_for(tmp_path: Path,
                                                              where: str) -> None:
    (tmp_path / "a-directory").mkdir()
    with pytest.raises(OSError, match=r"Is a directory|No such file") as raised:
        write_output(tmp_path / where, "x")
    assert raised.value.filename == str(tmp_path / where)
    assert _leftovers(tmp_path) == []



def test_a_plan_file_or_a_bundle_file_too_large_to_be_one_is_refused_unread(
        tmp_path: Path) -> None:
    huge = tmp_path / "node.plan"
    with huge.open("wb") as handle:  # sparse: no disk, no memory
        handle.truncate(MAX_PLANFILE_BYTES + 1)
    with pytest.raises(PlanError, match="larger than 256 MiB"):
        PlanFile.read(huge, netns=None)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    with (bundle / "routes-v4.json").open("wb") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)
    with pytest.raises(BundleError, match="larger than 256 MiB"):
        NodeCapture.read_dir(bundle)


def test_a_fifo_or_a_device_in_an_output_directory_is_refused_and_a_mask_named(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A rendered boot file (``render sysctl -o /etc/sysctl.d``) is renamed into place:
    a FIFO there is refused, and a link to ``/dev/null``, systemd's mask of the file, an
    admin's, is named as one and left (replacing it unmasked the file)."""
    from k3snet.cli import main  # noqa: PLC0415 - the CLI's own handling of the refusal

    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC + "sysctls:\n  net.ipv4.tcp_fastopen_key: 1-2-3-4\n")
    boot = tmp_path / "sysctl.d"
    boot.mkdir()
    os.mkfifo(boot / "90-k3snet.conf")
    assert main(["render", "sysctl", "-f", str(spec), "--out", str(boot)]) == 1
    assert "a FIFO, not a file" in capsys.readouterr().err
    assert stat.S_ISFIFO((boot / "90-k3snet.conf").lstat().st_mode)
    (boot / "90-k3snet.conf").unlink()
    (boot / "90-k3snet.conf").symlink_to("/dev/null")
    assert main(["render", "sysctl", "-f", str(spec), "--out", str(boot)]) == 1
    assert "(a link to /dev/null masks a file of that name for systemd: remove the link" in \
        capsys.readouterr().err
    assert os.readlink(boot / "90-k3snet.conf") == "/dev/null"
    assert _leftovers(boot) == []


def test_a_fifo_a_pipe_or_dev_null_named_by_out_is_written_into_never_replaced(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--out >(gpg -e ...)`` (``/dev/fd/63``, a pipe), a named pipe to another program,
    ``--out /dev/null``: the plan file is written into what the path names, as a shell's
    ``>`` does, and the path is left as it was (5483b24 refused them all; before it, the
    rename replaced them). Read with a FIFO, a link to ``/proc/self/fd/W`` of a pipe and
    a link to ``/dev/null``, all the test's."""
    from k3snet.cli import main  # noqa: PLC0415 - the CLI's own handling

    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC + "sysctls:\n  net.ipv4.tcp_fastopen_key: 1-2-3-4\n")
    fifo, null, piped = tmp_path / "fifo", tmp_path / "null", tmp_path / "63"
    os.mkfifo(fifo, 0o600)
    null.symlink_to("/dev/null")
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # the writer's open then returns
    r, w = os.pipe()
    piped.symlink_to(f"/proc/self/fd/{w}")
    try:
        for out, read in ((fifo, reader), (piped, r), (null, None)):
            assert main(["plan", "-f", str(spec), "--backend", "memory",
                         "--out", str(out)]) == 2
            assert f"Wrote the plan file into {out}" in capsys.readouterr().out
            if read is not None:
                text = os.read(read, 1 << 16).decode()
                assert json.loads(text)["kind"] == "k3snet-planfile"
                assert "00000001-00000002-00000003-00000004" in text  # an apply's to write
    finally:
        for fd in (reader, r, w):
            os.close(fd)
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert os.readlink(piped) == f"/proc/self/fd/{w}"
    assert os.readlink(null) == "/dev/null"
    assert _leftovers(tmp_path) == []


def test_a_device_a_socket_or_another_users_fifo_named_by_out_is_refused_unopened(
        tmp_path: Path) -> None:
    """A character device neither ``/dev/null`` nor open here (opening one can act:
    ``/dev/watchdog``), a block device, a socket, or a FIFO whose reader is another
    user's (the plan holds a secret's value) is an error, and nothing is replaced."""
    zero, sock, fifo = tmp_path / "zero", tmp_path / "sock", tmp_path / "theirs"
    zero.symlink_to("/dev/zero")
    os.mkfifo(fifo, 0o666)
    # Its reader another process (no hang should it be opened; not one open here).
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    held = subprocess.Popen(["sleep", "600"], stdin=reader)
    os.close(reader)
    import socket  # noqa: PLC0415

    listening = socket.socket(socket.AF_UNIX)
    listening.bind(str(sock))
    try:
        with pytest.raises(OSError, match="neither /dev/null nor open in this process"):
            write_output(zero, "x")
        with pytest.raises(OSError, match="a socket, not a file"):
            write_output(sock, "x")
        if os.geteuid() == 0:
            os.chown(fifo, 65534, 65534)
            with pytest.raises(PermissionError, match="a FIFO of uid 65534: whoever owns it"):
                write_output(fifo, "x")
    finally:
        held.kill()
        held.wait()
        listening.close()
    assert os.readlink(zero) == "/dev/zero"
    assert stat.S_ISSOCK(sock.lstat().st_mode)
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert _leftovers(tmp_path) == []


def test_plan_out_naming_its_own_stdout_prints_the_plan_on_stderr(tmp_path: Path) -> None:
    """``k3snet plan --out /dev/stdout | gpg -e ...``: stdout carries the plan file alone
    (a JSON document a later ``apply`` reads), the plan text goes to stderr. Read with a
    link of the test's to ``/proc/self/fd/1``, never the machine's ``/dev/stdout``."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    out = tmp_path / "stdout"
    out.symlink_to("/proc/self/fd/1")
    done = subprocess.run([sys.executable, "-m", "k3snet.cli", "plan", "-f", str(spec),
                           "--backend", "memory", "--out", str(out)], capture_output=True,
                          text=True, check=False, timeout=120)
    assert done.returncode == 2, done.stderr
    assert json.loads(done.stdout)["kind"] == "k3snet-planfile"
    assert "Plan: 3 to add" in done.stderr
    assert os.readlink(out) == "/proc/self/fd/1"


def test_a_link_to_a_file_this_process_has_open_is_refused_not_replaced(tmp_path: Path) -> None:
    """``plan --out /dev/stdout > node.plan``: ``/dev/stdout`` is a link (through
    ``/proc/self/fd/1``) to a regular file, which the refusal of devices let by, and the
    link, the node's ``/dev/stdout``, was replaced by the plan file as any link to a file
    is. Read here with a link of the test's to ``/proc/self/fd/N``, N a file it opened."""
    from k3snet.cli import main  # noqa: PLC0415 - the CLI's own handling of the refusal

    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    redirected = tmp_path / "redirected"
    fd = os.open(redirected, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        link = tmp_path / "stdout"
        link.symlink_to(f"/proc/self/fd/{fd}")
        with pytest.raises(OSError, match="a link to a file this process has open") as raised:
            write_output(link, "x")
        assert raised.value.filename == str(link)
        assert main(["plan", "-f", str(spec), "--backend", "memory", "--out", str(link)]) == 1
        assert os.readlink(link) == f"/proc/self/fd/{fd}"
        assert redirected.read_text() == ""
    finally:
        os.close(fd)
    assert _leftovers(tmp_path) == []


def _render(what: str, spec: Path, out: Path, *extra: str,
            umask: int = 0o022) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "k3snet.cli", "render", what, "-f", str(spec),
                           *extra, "--out", str(out)], capture_output=True, text=True,
                          check=False, timeout=120, umask=umask)


def test_rendered_files_and_the_directories_made_are_never_group_or_other_writable(
        tmp_path: Path) -> None:
    # Under umask 0 the boot files root runs or loads were 0666 and the directories made
    # 0777; a re-render kept 0666 from the file it replaced.
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC + "    gateway: 192.168.1.1\n    device: eth0\n")
    out = tmp_path / "new" / "dir"
    for what, extra in [("ifupdown", ()), ("nftables", ()), ("sysctl", ()),
                        ("networkd", ("--network-file", "eth0=10-eth0.network"))]:
        done = _render(what, spec, out, *extra, umask=0)
        assert done.returncode == 0, done.stderr
    made = [tmp_path / "new", *sorted(p for p in (tmp_path / "new").rglob("*"))]
    assert {p.name for p in made} >= {"new", "dir", "10-eth0.network.d", "k3snet-routes",
                                      "k3snet.nft", "90-k3snet.conf"}
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode) & 0o022) for p in made} == {
        p.name: "0o0" for p in made}
    routes = out / "k3snet-routes"
    routes.chmod(0o666)
    assert _render("ifupdown", spec, out).returncode == 0
    assert stat.S_IMODE(routes.stat().st_mode) == 0o644


@pytest.mark.parametrize("kind", ["link", "directory", "parent"])
def test_out_through_another_users_link_or_directory_is_refused_and_nothing_written(
        tmp_path: Path, kind: str) -> None:
    # render -o DIR followed another user's link at DIR (to a directory of root's) and
    # wrote into a directory another user owns, where that user replaces what is there.
    if os.geteuid() != 0:
        pytest.skip("needs root to give a link or a directory to another user")
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    victim = tmp_path / "victim"
    victim.mkdir()
    theirs = tmp_path / "theirs"
    if kind == "link":
        theirs.symlink_to(victim)
        os.lchown(theirs, 65534, 65534)
        out = theirs
    else:
        theirs.mkdir()
        os.chown(theirs, 65534, 65534)
        out = theirs if kind == "directory" else theirs / "sub" / "dir"
    done = _render("sysctl", spec, out)
    assert done.returncode == 1
    assert f"{out}: " in done.stderr
    assert "uid 65534" in done.stderr
    assert list(victim.iterdir()) == []
    if kind != "link":
        assert list(theirs.iterdir()) == []


@pytest.mark.parametrize(("group", "taken"), [(0, True), (4, False), (65534, False)])
def test_a_group_writable_out_directory_is_taken_only_when_its_group_is_root_s_alone(
        tmp_path: Path, group: int, taken: bool) -> None:
    # 0775 root:root: only root writes it (as owner or group). 0775 root:adm (gid 4, no
    # member here) or root:nogroup (nobody's group): another user may join or is in it,
    # and could empty and refill the directory with root's boot files.
    if os.geteuid() != 0:
        pytest.skip("needs root to give a directory to a group")
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    out = tmp_path / "out"
    out.mkdir()
    os.chown(out, 0, group)
    out.chmod(0o775)
    done = _render("sysctl", spec, out)
    assert (done.returncode == 0) is taken, done.stderr
    assert bool(list(out.iterdir())) is taken
    if not taken:
        assert "writable by group" in done.stderr


def _root_group_directory(tmp_path: Path) -> Path:
    """A new directory of mode 0775 and group root (gid 0) under ``tmp_path``."""
    if os.geteuid() != 0:
        pytest.skip("needs root to give a directory to group root")
    out = tmp_path / "out"
    out.mkdir()
    os.chown(out, os.geteuid(), 0)
    out.chmod(0o775)
    return out


def test_a_root_group_another_user_has_as_primary_group_is_not_root_s_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A user whose primary group is root's (gid 0) writes a 0775 directory of group root:
    # the group is not root's alone, though /etc/group lists no member of it.
    import pwd  # noqa: PLC0415

    out = _root_group_directory(tmp_path)
    toor = pwd.struct_passwd(("toor", "x", 4242, 0, "", "/", "/bin/sh"))
    users = pwd.getpwall()
    monkeypatch.setattr(pwd, "getpwall", lambda: [*users, toor])
    with pytest.raises(PermissionError, match="writable by group root"):
        refuse_foreign_output(out)
    monkeypatch.setattr(pwd, "getpwall", lambda: users)
    refuse_foreign_output(out)


def test_a_refused_root_group_names_its_users_that_are_not_root(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # RHEL's and Alpine's /etc/passwd give sync, shutdown, halt and operator gid 0: there
    # a 0775 root:root directory is refused, and "writable by group root" alone read as
    # root's own group; the refusal names who else is in it.
    import pwd  # noqa: PLC0415

    out = _root_group_directory(tmp_path)
    rhel = [pwd.struct_passwd((name, "x", uid, 0, name, "/sbin", "/sbin/nologin"))
            for name, uid in (("sync", 5), ("shutdown", 6), ("halt", 7), ("operator", 11))]
    users = pwd.getpwall()
    monkeypatch.setattr(pwd, "getpwall", lambda: [*users, *rhel])
    with pytest.raises(PermissionError, match=r"writable by group root of user\(s\) sync, "
                                              r"shutdown, halt, operator \(mode 0775\)"):
        refuse_foreign_output(out)
