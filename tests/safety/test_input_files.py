"""Files a user names (a spec, an ip-masq-agent config, a plan file, a bundle, flannel's
config file) are read only when they are regular files of bounded size.

A FIFO at such a path used to hang k3snet for ever (``open`` waits for a writer: an
agent pass, or ``k3snet apply`` in a cron job, stuck), and ``/dev/zero`` as an
ip-masq-agent config, or a plan file, was read until the kernel killed the process
(exit 137) or Python gave up (``internal error: MemoryError``). Each is now an
error that names the file and says what it is.

A reader that still waited on a FIFO would hang this test too: every FIFO here has a
rescuer that, after a few seconds, opens it for writing and closes it (the reader
then reads an empty file), and the test fails when the rescuer had to.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from k3snet._kept import read_input
from k3snet.agent import FileSpecSource
from k3snet.backends.flannel import FlannelBackend
from k3snet.doctor import NodeCapture
from k3snet.errors import BackendError, PlanError, SpecError
from k3snet.planfile import PlanFile
from k3snet.spec import load_ip_masq_agent_config, load_spec

RESCUE_AFTER = 5.0
SPEC = ("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"
        "destinations:\n  - cidr: 192.168.2.0/24\n")


class Rescuer:
    """Opens a FIFO for writing (and closes it at once) whenever someone waits on it,
    from :data:`RESCUE_AFTER` seconds on; :attr:`rescued` says whether it had to."""

    def __init__(self, fifo: Path) -> None:
        self.fifo, self.rescued, self.done = fifo, False, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        if self.done.wait(RESCUE_AFTER):
            return
        while not self.done.is_set():  # a writer opens only once a reader waits
            try:
                os.close(os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError as exc:
                if exc.errno != errno.ENXIO:
                    return
            else:  # and again, for a reader opening it once more
                self.rescued = True
            time.sleep(0.05)

    def stop(self) -> None:
        self.done.set()
        self.thread.join()


@contextlib.contextmanager
def fifo(path: Path) -> Iterator[Path]:
    """A FIFO at ``path`` with a :class:`Rescuer`; the test fails if it was needed."""
    os.mkfifo(path)
    rescuer = Rescuer(path)
    try:
        yield path
    finally:
        rescuer.stop()
    assert not rescuer.rescued, f"{path}: k3snet waited on the FIFO for a writer"


def _sparse(path: Path, size: int) -> Path:
    with path.open("wb") as handle:  # no disk, no memory
        handle.truncate(size)
    return path


def test_read_input_takes_regular_files_and_refuses_the_rest_unread(tmp_path: Path) -> None:
    text = tmp_path / "spec.yaml"
    text.write_text(SPEC)
    assert read_input(text, 1000) == SPEC.encode()
    link = tmp_path / "link"
    link.symlink_to(text)  # a file the user named through a link is that file
    assert read_input(link, 1000) == SPEC.encode()
    # A regular file of /proc says it has no size: read up to the limit.
    assert read_input("/proc/self/status", 1 << 20).startswith(b"Name:")
    cases: dict[str, list[str | Path]] = {
        "not a regular file": [tmp_path / "fifo", "/dev/zero", "/dev/null"],
        "a directory": [tmp_path],
        f"larger than {len(SPEC) - 1} bytes": [text],
        "larger than 1000 bytes": [_sparse(tmp_path / "huge", 1 << 40)],
    }
    with fifo(tmp_path / "fifo"):
        for why, paths in cases.items():
            for path in paths:
                limit = len(SPEC) - 1 if path == text else 1000
                with pytest.raises(OSError, match=why) as raised:
                    read_input(path, limit)
                assert (raised.value.strerror, raised.value.filename) == (why, str(path))
    with pytest.raises(FileNotFoundError):
        read_input(tmp_path / "missing", 1000)


def test_a_spec_file_that_is_a_fifo_or_a_device_is_refused_not_waited_on(
        tmp_path: Path) -> None:
    with fifo(tmp_path / "spec.yaml") as path:
        with pytest.raises(SpecError, match=r"cannot read .*spec\.yaml: not a regular file"):
            load_spec(path)
        with pytest.raises(SpecError, match="not a regular file"):
            FileSpecSource(path).read()


def test_the_command_line_refuses_a_fifo_spec_and_ends(tmp_path: Path) -> None:
    with fifo(tmp_path / "spec.yaml") as path:
        # The spec cache is on here: its reader opened the file first, and waited too.
        env = {**os.environ, "K3SNET_SPEC_CACHE": "on", "K3SNET_STATE_DIR": str(tmp_path)}
        done = subprocess.run([sys.executable, "-m", "k3snet", "validate", "-f", str(path)],
                              capture_output=True, text=True, env=env, timeout=120,
                              check=False)
    assert done.returncode == 1, done.stderr
    assert "not a regular file" in done.stderr


@pytest.mark.parametrize("kind", ["fifo", "directory", "missing"])
def test_an_ip_masq_agent_config_that_is_no_file_is_a_spec_problem(
        tmp_path: Path, kind: str) -> None:
    why = {"fifo": "not a regular file", "directory": "a directory",
           "missing": "No such file or directory"}[kind]
    path = {"fifo": tmp_path / "config", "directory": tmp_path,
            "missing": tmp_path / "missing"}[kind]
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"{SPEC}masquerade:\n  ipMasqAgentConfig: {path}\n")
    with contextlib.ExitStack() as stack:
        if kind == "fifo":
            stack.enter_context(fifo(path))
        with pytest.raises(SpecError) as raised:
            load_spec(spec)
        with pytest.raises(SpecError, match=why):
            load_ip_masq_agent_config(path)
    [problem] = raised.value.problems
    assert problem.path == "masquerade.ipMasqAgentConfig"
    assert f"cannot read {path}: {why}" in problem.message


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_a_plan_file_that_is_no_file_is_a_plan_error(tmp_path: Path, kind: str) -> None:
    why = "a directory" if kind == "directory" else "not a regular file"
    path = {"fifo": tmp_path / "node.plan", "directory": tmp_path}[kind]
    with contextlib.ExitStack() as stack:
        if kind == "fifo":
            stack.enter_context(fifo(path))
        with pytest.raises(PlanError, match=f"cannot read {path}: {why}"):
            PlanFile.read(path, netns=None)


# Run in a child whose address space is capped: a reader of /dev/zero would otherwise
# take the machine's memory before it failed (the kernel killed it: exit 137).
_DEVICES = """
import json, resource, sys
from pathlib import Path
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
from k3snet.agent import FileSpecSource
from k3snet.backends.flannel import FlannelBackend
from k3snet.planfile import PlanFile
from k3snet.spec import load_spec
calls = {
    "spec": lambda: load_spec(sys.argv[1]),
    "agent": lambda: FileSpecSource(Path("/dev/zero")).read(),
    "plan": lambda: PlanFile.read(Path("/dev/zero"), netns=None),
    "flannel": lambda: FlannelBackend(path=Path("/dev/zero")).observe(),
}
found = {}
for name, call in calls.items():
    try:
        call()
        found[name] = "read"
    except BaseException as exc:
        found[name] = f"{type(exc).__name__}: {exc}"
print(json.dumps(found))
"""


def test_a_device_is_never_read_as_a_spec_a_config_a_plan_or_flannels_file(
        tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"{SPEC}masquerade:\n  ipMasqAgentConfig: /dev/zero\n")
    done = subprocess.run([sys.executable, "-c", _DEVICES, str(spec)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["spec"].startswith("SpecError: 1 problem in ")
    assert "masquerade.ipMasqAgentConfig" in found["spec"]
    for name in found:
        assert "cannot read /dev/zero: not a regular file" in found[name] or (
            name == "flannel" and "not a regular file: '/dev/zero'" in found[name]), found


def test_a_bundle_skips_a_fifo_and_keeps_the_bytes_of_a_file_that_is_not_utf8(
        tmp_path: Path) -> None:
    # A kernel name's bytes that are no UTF-8 (a device's) are the node's own: kept as the
    # lone surrogates standing for them, as a live capture reads them; the doctor then
    # judges the file's text (JSON that does not parse is its error, not a traceback).
    (tmp_path / "routes-v4.json").write_text("[]")
    with fifo(tmp_path / "routes-v6.json"):
        capture = NodeCapture.read_dir(tmp_path)
    assert set(capture.texts) == {"routes-v4.json"}
    (tmp_path / "addr.json").write_bytes(b"\xff[]")
    assert NodeCapture.read_dir(tmp_path).texts["addr.json"] == "\udcff[]"


def test_a_bundle_file_swapped_for_a_link_after_the_look_is_refused_not_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # read_dir refuses links, then read each file through any link: the owner of the
    # directory could swap one in between, and root's doctor read the file it named.
    secret = tmp_path / "secret"
    secret.write_text("net.secret = hunter2\n")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "sysctl.txt").symlink_to(secret)
    monkeypatch.setattr(Path, "is_symlink", lambda self: False)  # the look came first
    with pytest.raises(ValueError, match=r"sysctl.txt: a symbolic link"):
        NodeCapture.read_dir(bundle)
    with pytest.raises(OSError, match="a symbolic link") as refused:
        read_input(bundle / "sysctl.txt", 100, follow=False)
    assert refused.value.errno == errno.ELOOP
    assert read_input(bundle / "sysctl.txt", 100) == secret.read_bytes()  # default: follows


def test_a_terminal_named_as_a_file_is_refused_and_never_becomes_the_controlling_one(
        tmp_path: Path) -> None:
    # A process with no controlling terminal (a service, the agent: a session leader)
    # that opened a terminal without O_NOCTTY took it as its own: its owner could then
    # stop or interrupt k3snet from the keyboard, and a hangup killed it.
    code = ("import os, sys\n"
            "from k3snet._kept import read_input\n"
            "try:\n    read_input(sys.argv[1], 100)\n"
            "except OSError as exc:\n    print(exc.strerror)\n"
            "try:\n    os.close(os.open('/dev/tty', os.O_RDWR))\n    print('controlling')\n"
            "except OSError:\n    print('none')\n")
    master, slave = os.openpty()
    try:
        done = subprocess.run([sys.executable, "-c", code, os.ttyname(slave)],
                              start_new_session=True, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, check=True, timeout=60)
    finally:
        os.close(master)
        os.close(slave)
    assert done.stdout.splitlines() == ["not a regular file", "none"], done.stderr


def test_a_device_or_a_fifo_named_as_a_file_is_judged_without_ever_being_opened(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Opening is not harmless: /dev/watchdog starts the machine's reboot countdown (a
    # spec's ipMasqAgentConfig path, read by root), a tape rewinds, a FIFO's waiting
    # writer is released. Only an O_PATH handle (which opens nothing) may name them.
    opened: list[tuple[str, int]] = []
    real_open = os.open

    def recording(path: str | Path, flags: int, *args: object, **kwargs: object) -> int:
        opened.append((str(path), flags))
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("k3snet._kept.os.open", recording)
    with fifo(tmp_path / "spec.yaml") as named:
        for path in ("/dev/zero", "/dev/null", str(named)):
            with pytest.raises(OSError, match="not a regular file"):
                read_input(path, 100)
    assert opened
    assert all(flags & os.O_PATH for _, flags in opened), opened
    (tmp_path / "real.yaml").write_text("a: 1\n")
    assert read_input(tmp_path / "real.yaml", 100) == b"a: 1\n"  # a file is still read


def test_flannels_config_file_as_a_fifo_or_too_large_is_an_error_not_a_hang(
        tmp_path: Path) -> None:
    path = tmp_path / "net-conf.json"
    with fifo(path), pytest.raises(BackendError, match="not a regular file"):
        FlannelBackend(path=path).observe()
    _sparse(tmp_path / "big.json", 1 << 30)
    with pytest.raises(BackendError, match="larger than"):
        FlannelBackend(path=tmp_path / "big.json").observe()


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    spec = tmp_path / "egress.yaml"
    spec.write_text(SPEC)
    spec.chmod(0o644)
    return spec


NODE_COMMANDS = [
    ["plan", "--no-facts"],
    ["apply", "--no-facts"],
    ["destroy", "--auto-approve"],
    ["observe"],
    ["agent", "--once", "--no-kube", "--no-facts", "--node-name", "n1"],
]


@pytest.mark.usefixtures("require_root")
@pytest.mark.parametrize("argv", NODE_COMMANDS, ids=lambda argv: argv[0])
def test_a_spec_another_user_could_write_is_refused_by_every_node_command(
        argv: list[str], spec_file: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A spec is what root applies, as a plan file is: one another user owns, or that others
    (or a group other than its owner's own) may write, lets that user change the routes,
    rules and backend paths root writes. Refused before it is read: nothing is applied."""
    from k3snet import MemoryBackend, State, Sysctl, register_backend  # noqa: PLC0415
    from k3snet.backends.registry import unregister_backend  # noqa: PLC0415
    from k3snet.cli import main  # noqa: PLC0415

    monkeypatch.delenv("SUDO_UID", raising=False)
    held = MemoryBackend(State(owned=[Sysctl("net.ipv4.conf.all.rp_filter", "2")]))
    register_backend("memory-spec-owner", lambda: held)
    run = [argv[0], "-f", str(spec_file), "--backend", "memory-spec-owner", *argv[1:]]
    try:
        for mode, owner, why in (
                (0o646, (0, 0), r"writable by others \(mode 0646\)"),
                (0o664, (0, 65534),
                 r"writable by group nogroup( of user\(s\) [^(]*)? \(mode 0664\)"),
                (0o644, (65534, 65534), r"owned by uid 65534, not by this user or root")):
            os.chown(spec_file, *owner)
            spec_file.chmod(mode)
            assert main(run) == 1, why
            err = capsys.readouterr().err
            assert re.search(why + ".*another user could change what k3snet applies", err), err
            assert held.observe() == State(owned=[Sysctl("net.ipv4.conf.all.rp_filter", "2")])
    finally:
        unregister_backend("memory-spec-owner")


@pytest.mark.usefixtures("require_root")
def test_a_spec_of_root_the_sudo_user_or_a_private_group_is_taken(
        spec_file: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`sudo k3snet plan -f ~/egress.yaml`: the file of the user who ran sudo is theirs to
    change anyway; a 0664 file in its owner's private group (Debian's and Ubuntu's
    default for users) has no other writer; commands that only read a spec
    (validate, render) take any spec."""
    from k3snet.cli import main  # noqa: PLC0415

    plan = ["plan", "-f", str(spec_file), "--backend", "memory", "--no-facts"]
    monkeypatch.delenv("SUDO_UID", raising=False)
    spec_file.chmod(0o664)  # root:root, root's own group with no other member
    assert main(plan) == 2, capsys.readouterr().err
    spec_file.chmod(0o644)
    os.chown(spec_file, 65534, 65534)
    monkeypatch.setenv("SUDO_UID", "65534")
    assert main(plan) == 2, capsys.readouterr().err
    monkeypatch.setenv("SUDO_UID", "1")  # sudo run by another user: still refused
    assert main(plan) == 1
    spec_file.chmod(0o666)
    capsys.readouterr()
    assert main(["validate", "-f", str(spec_file)]) == 0
    assert main(["render", "sysctl", "-f", str(spec_file)]) == 0
    bundle = Path(__file__).resolve().parents[1] / "doctor" / "golden" / "seed"
    doctor = ["doctor", "--from", "10.42.0.10", "--to", "192.168.2.10", "-f", str(spec_file)]
    assert main([*doctor, "--state", str(bundle)]) == 3  # a diagnosis changes nothing
    capsys.readouterr()
    # --fix applies a fix the spec's cluster CIDRs shape: refused like apply's spec. In a
    # namespace that does not exist: were the spec taken, nothing could be changed (never
    # the host's namespace, where this test runs).
    assert main([*doctor, "--fix", "--auto-approve", "--netns", "k3snet-cli-no-such-ns"]) == 1
    assert "another user could change what k3snet applies" in capsys.readouterr().err


@pytest.mark.usefixtures("require_root")
def test_a_spec_reached_through_another_user_s_link_is_refused(
        spec_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The file is checked, then read by name: a link its owner can point elsewhere in
    between (root's own spec first, theirs at the read) is refused, wherever it is on
    the way (the file itself, a directory); root's links are followed."""
    from k3snet.cli import main  # noqa: PLC0415

    monkeypatch.delenv("SUDO_UID", raising=False)
    plan = ["plan", "--backend", "memory", "--no-facts", "-f"]
    link, directory_link = tmp_path / "link.yaml", tmp_path / "dir"
    link.symlink_to(spec_file)
    directory_link.symlink_to(tmp_path)
    relative = tmp_path / "sub"
    relative.mkdir()
    (relative / "up.yaml").symlink_to("../link.yaml")
    for given in (link, directory_link / "egress.yaml", relative / "up.yaml"):
        assert main([*plan, str(given)]) == 2, capsys.readouterr().err
    for owned_by_nobody, given in ((link, link), (directory_link, directory_link / "egress.yaml"),
                                   (link, relative / "up.yaml")):
        os.chown(owned_by_nobody, 65534, 65534, follow_symlinks=False)
        assert main([*plan, str(given)]) == 1
        assert f"reached through {owned_by_nobody}, a symbolic link of uid 65534" in \
            capsys.readouterr().err
        os.chown(owned_by_nobody, 0, 0, follow_symlinks=False)


@pytest.mark.usefixtures("require_root")
@pytest.mark.parametrize("argv", NODE_COMMANDS, ids=lambda argv: argv[0])
def test_a_spec_in_a_directory_another_user_may_change_is_refused_by_every_node_command(
        argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Root's own 0644 spec in a directory another user owns or may write is theirs to
    replace (rename it away, put their own in its place, between the check and the read,
    or a link to another of root's files): refused like a spec they could write, naming
    the directory, at any depth. A sticky directory (``/tmp``) lets nobody rename or
    remove another's entry: taken."""
    from k3snet import MemoryBackend, State, Sysctl, register_backend  # noqa: PLC0415
    from k3snet.backends.registry import unregister_backend  # noqa: PLC0415
    from k3snet.cli import main  # noqa: PLC0415

    monkeypatch.delenv("SUDO_UID", raising=False)
    held = MemoryBackend(State(owned=[Sysctl("net.ipv4.conf.all.rp_filter", "2")]))
    register_backend("memory-spec-directory", lambda: held)
    outer = tmp_path / "outer"
    inner = outer / "inner"
    inner.mkdir(parents=True)
    spec_file = inner / "egress.yaml"
    spec_file.write_text(SPEC)
    spec_file.chmod(0o644)
    run = [argv[0], "-f", str(spec_file), "--backend", "memory-spec-directory", *argv[1:]]
    try:
        for directory, mode, owner, why in (
                (inner, 0o755, (65534, 65534), f"in directory {inner}, owned by uid 65534"),
                (inner, 0o777, (0, 0), rf"in directory {inner}, writable by others \(mode 0777\)"),
                (inner, 0o775, (0, 65534),
                 rf"in directory {inner}, writable by group nogroup( of user\(s\) [^(]*)? "
                 r"\(mode 0775\)"),
                (outer, 0o757, (0, 0), rf"in directory {outer}, writable by others \(mode 0757\)")):
            os.chown(directory, *owner)
            directory.chmod(mode)
            assert main(run) == 1, why
            err = capsys.readouterr().err
            assert re.search(why + ".*another user could change what k3snet applies", err), err
            assert held.observe() == State(owned=[Sysctl("net.ipv4.conf.all.rp_filter", "2")])
            os.chown(directory, 0, 0)
            directory.chmod(0o755)
        inner.chmod(0o1777)  # sticky, as /tmp
        assert main(run) != 1, capsys.readouterr().err
    finally:
        unregister_backend("memory-spec-directory")


@pytest.mark.usefixtures("require_root")
def test_a_spec_on_a_read_only_mount_is_taken_whatever_its_directory_s_modes(
        tmp_path: Path) -> None:
    """The agent's spec is a ConfigMap volume: a read-only mount whose directory has mode
    0777. Nobody writes a read-only mount, so its modes give nobody a way in: taken. The
    same directory mounted writable is refused. (In a mount namespace of its own, which
    goes with the process: the host's mounts are never changed.)"""
    directory = tmp_path / "config"
    directory.mkdir()
    (directory / "egress.yaml").write_text(SPEC)
    directory.chmod(0o777)
    plan = (f"{sys.executable} -m k3snet plan --backend memory --no-facts "
            f"-f {directory}/egress.yaml")
    env = {**os.environ, "K3SNET_SPEC_CACHE": "off"}
    env.pop("SUDO_UID", None)
    mount = f"mount --bind {directory} {directory}"
    for remount, code in ((f"mount -o remount,bind,ro {directory}", 2), ("true", 1)):
        done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                               f"{mount} && {remount} && {plan}"],
                              env=env, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == code, done.stderr
        assert ("writable by others" in done.stderr) == (code == 1), done.stderr


@pytest.mark.usefixtures("require_root")
def test_an_ip_masq_agent_config_another_user_could_write_is_refused_at_its_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The file ``masquerade.ipMasqAgentConfig`` names decides what root masquerades, as
    the spec does: one another user owns or may write (or in a directory they may) is
    refused for the node commands, at the input's path; `validate` still takes it."""
    from k3snet.cli import main  # noqa: PLC0415

    monkeypatch.delenv("SUDO_UID", raising=False)
    config = tmp_path / "ip-masq" / "config"
    config.parent.mkdir()
    config.write_text("nonMasqueradeCIDRs: [10.0.0.0/8]\nmasqLinkLocal: false\n")
    config.chmod(0o644)
    spec_file = tmp_path / "egress.yaml"
    spec_file.write_text(SPEC + "cluster:\n  podCIDRs: [10.42.0.0/16]\n"
                         f"masquerade:\n  ipMasqAgentConfig: {config}\n")
    spec_file.chmod(0o644)
    plan = ["plan", "-f", str(spec_file), "--backend", "memory", "--no-facts"]
    assert main(plan) == 2, capsys.readouterr().err
    for path, mode, owner, why in (
            (config, 0o646, (0, 0), rf"{config}: writable by others \(mode 0646\)"),
            (config, 0o644, (65534, 65534), rf"{config}: owned by uid 65534"),
            (config.parent, 0o777, (0, 0),
             rf"{config}: in directory {config.parent}, writable by others")):
        os.chown(path, *owner)
        path.chmod(mode)
        assert main(plan) == 1, why
        err = capsys.readouterr().err
        assert re.search(rf"masquerade\.ipMasqAgentConfig: {why}.*another user could change",
                         err), err
        assert main(["validate", "-f", str(spec_file)]) == 0
        capsys.readouterr()
        os.chown(path, 0, 0)
        path.chmod(0o644 if path == config else 0o755)
    assert main(plan) == 2, capsys.readouterr().err


@pytest.mark.usefixtures("require_root")
def test_the_agent_judges_its_spec_file_at_every_read(
        spec_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent reads its spec every pass; the file's owner and modes, its directory and
    its imports may change after the start's check: a read of a spec another user could
    have changed is refused (the last good spec stays in force)."""
    monkeypatch.delenv("SUDO_UID", raising=False)
    # settle=0: the file was written just now, its judgement is the subject here.
    source = FileSpecSource(spec_file, settle=0)
    assert source.read() == SPEC
    spec_file.chmod(0o666)
    with pytest.raises(SpecError, match=r"writable by others \(mode 0666\)"):
        source.read()
    spec_file.chmod(0o644)
    spec_file.parent.chmod(0o777)
    try:
        with pytest.raises(SpecError, match=r"in directory .*writable by others"):
            source.read()
    finally:
        spec_file.parent.chmod(0o700)
    assert source.read() == SPEC


def test_the_agent_parses_a_spec_text_once_for_its_imports_across_reads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Judging the imports at every read must not parse the spec at every pass (~0.1 s for
    10k destinations): a text is parsed for its imports once, and again when it changes."""
    import k3snet.spec.load as spec_load  # noqa: PLC0415

    monkeypatch.delenv("SUDO_UID", raising=False)
    config = tmp_path / "config"
    config.write_text("nonMasqueradeCIDRs: []\n")
    spec_file = tmp_path / "egress.yaml"
    spec_file.write_text(f"{SPEC}masquerade:\n  ipMasqAgentConfig: {config}\n")
    parsed: list[str] = []
    real = spec_load.load_mapping

    def parsing(text: str, where: str | None) -> object:
        parsed.append(text)
        return real(text, where)

    monkeypatch.setattr(spec_load, "load_mapping", parsing)
    # settle=0: each text is taken as written (the spec file rewritten, then its import
    # changed, within the second a new text otherwise waits).
    source = FileSpecSource(spec_file, settle=0)
    for _ in range(3):
        source.read()
    assert len(parsed) == 1
    spec_file.write_text(f"{SPEC}masquerade:\n  ipMasqAgentConfig: '{config}'\n")
    source.read()
    assert len(parsed) == 2
    config.chmod(0o666)
    with pytest.raises(SpecError, match=r"masquerade\.ipMasqAgentConfig: .*writable by others"):
        source.read()


def _pipe_holding(data: bytes) -> int:
    """The read end of a pipe holding ``data``, its write end closed (as bash's
    ``<(cat spec.yaml)`` once ``cat`` is done)."""
    read, write = os.pipe()
    os.write(write, data)
    os.close(write)
    return read


def test_a_pipe_this_process_holds_open_is_read_once_within_the_limit(tmp_path: Path) -> None:
    # bash's `-f <(cat spec.yaml)`: /dev/fd/63, a pipe the shell gave k3snet, was refused
    # as "not a regular file" (exit 1), while `--out >(...)` was accepted.
    fds = [_pipe_holding(SPEC.encode()) for _ in range(3)]
    try:
        for name in (f"/dev/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}"):
            assert read_input(name, 1000) == SPEC.encode()
            assert read_input(name, 1000) == SPEC.encode()  # its checks, cache, digest
        name = f"/dev/fd/{fds[2]}"
        with pytest.raises(OSError, match=f"larger than {len(SPEC) - 1} bytes") as raised:
            read_input(name, len(SPEC) - 1)
        assert raised.value.filename == name
    finally:
        for fd in fds:
            os.close(fd)


def test_only_a_pipe_held_open_is_read_not_a_named_fifo_nor_another_path_to_one(
        tmp_path: Path) -> None:
    held = _pipe_holding(SPEC.encode())
    try:
        link = tmp_path / "link"
        link.symlink_to(f"/dev/fd/{held}")  # the pipe, named otherwise: no exception made
        with fifo(tmp_path / "fifo") as named:
            for path in (named, link, f"/proc/{os.getpid()}/fd/{held}"):
                with pytest.raises(OSError, match="not a regular file"):
                    read_input(path, 1000)
    finally:
        os.close(held)


def test_the_command_line_plans_from_a_pipe_it_holds_and_records_its_digest(
        tmp_path: Path) -> None:
    spec = (Path(__file__).resolve().parents[2] / "examples" / "seed.yaml").read_bytes()
    held = _pipe_holding(spec)
    out = tmp_path / "node.plan"
    env = {**os.environ, "K3SNET_SPEC_CACHE": "on", "K3SNET_STATE_DIR": str(tmp_path)}
    try:
        done = subprocess.run([sys.executable, "-m", "k3snet", "plan", "-f", f"/dev/fd/{held}",
                               "--backend", "memory", "--no-facts", "--out", str(out)],
                              capture_output=True, text=True, env=env, timeout=120,
                              check=False, pass_fds=(held,))
    finally:
        os.close(held)
    assert done.returncode == 2, done.stderr  # changes pending
    assert json.loads(out.read_text())["spec"] == {
        "path": f"/dev/fd/{held}", "sha256": hashlib.sha256(spec).hexdigest()}


def test_a_held_fifo_or_a_pipe_this_process_also_writes_is_refused_not_waited_on(
        tmp_path: Path) -> None:
    # Its read would never end: `exec 3<>fifo; k3snet -f /dev/fd/3` (a named FIFO held
    # for reading and writing), or a pipe whose write end this process holds itself.
    # Non-blocking here so that the code before the fix said EAGAIN, not hung.
    os.mkfifo(tmp_path / "fifo")
    named = os.open(tmp_path / "fifo", os.O_RDWR | os.O_NONBLOCK)
    read, write = os.pipe()
    both = os.open(f"/proc/self/fd/{read}", os.O_RDWR | os.O_NONBLOCK)  # both ends, one fd
    os.set_blocking(read, False)
    try:
        for fd in (named, read, both):
            with pytest.raises(OSError, match="not a regular file"):
                read_input(f"/dev/fd/{fd}", 1000)
        os.close(write)
        os.close(both)  # no writer left in this process: read to its (empty) end
        assert read_input(f"/dev/fd/{read}", 1000) == b""
    finally:
        for fd in (named, read, write, both):
            with contextlib.suppress(OSError):
                os.close(fd)


@pytest.mark.skipif(os.geteuid() != 0, reason="gives a pipe to another user: needs root")
def test_an_owned_read_refuses_a_held_pipe_another_user_made(tmp_path: Path) -> None:
    # A plan file (owned=True) must be this user's or root's: whoever made a pipe
    # decides what it says, as for a file.
    held = _pipe_holding(b"{}")
    try:
        os.fchown(held, 65534, -1)
        with pytest.raises(OSError, match="owned by uid 65534") as raised:
            read_input(f"/dev/fd/{held}", 1000, owned=True)
        assert raised.value.errno == errno.EPERM
        os.fchown(held, 0, -1)
        assert read_input(f"/dev/fd/{held}", 1000, owned=True) == b"{}"
    finally:
        os.close(held)


def test_a_spec_read_lists_the_users_once_whatever_its_group_writable_directories(
        tmp_path: Path, user_listings: list[None]) -> None:
    # Each group-writable directory on the way to the spec and to the file it imports
    # listed every user (pwd.getpwall), a directory search each on a node whose users are
    # in LDAP, at each of the agent's reads: now once a read, and afresh the next one.
    from k3snet.spec.load import refuse_foreign_spec  # noqa: PLC0415

    if os.geteuid() != 0:
        pytest.skip("needs root to give directories to group root")
    where = tmp_path
    for name in ("a", "b", "c"):  # 0775 and group root, which root alone has here
        where = where / name
        where.mkdir()
        os.chown(where, 0, 0)
        where.chmod(0o775)
    config = where / "ip-masq-agent.yaml"
    config.write_text("nonMasqueradeCIDRs: [10.0.0.0/8]\n")
    spec = where / "spec.yaml"
    spec.write_text(f"{SPEC}masquerade:\n  ipMasqAgentConfig: {config}\n")
    assert refuse_foreign_spec(spec) == spec.read_text()
    assert len(user_listings) == 1
    assert refuse_foreign_spec(spec) == spec.read_text()
    assert len(user_listings) == 2
