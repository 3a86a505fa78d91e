"""A command line tells the user to run (``apply it with `k3snet apply PATH```) runs on
the very file when pasted into a shell, whatever standard output's encoding.

Under ``PYTHONIOENCODING=ascii`` (or ``latin-1``, or ``LC_ALL=C`` without UTF-8 mode)
a path of ``é`` was quoted ``'.../d\\xe9/...'`` by stdout's ``backslashreplace``: inside
single quotes the shell keeps the backslash, another file. Such a character is now given
as its bytes in ``$'...'``. Each case runs a process of its own (the encoding is set as
Python starts) and has bash read the word back.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import k3snet

SPEC = Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"
_HOME = str(Path(k3snet.__file__).resolve().parents[1])


def _k3snet(*args: str, **environment: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": _HOME, **environment}
    return subprocess.run([sys.executable, "-m", "k3snet.cli", *args], capture_output=True,
                          check=False, timeout=120, env=env)


def _read_back(word: bytes) -> bytes:
    """The bytes bash makes of ``word`` (one word of a pasted command line)."""
    return subprocess.run(["bash", "-c", b"printf %s " + word], capture_output=True,
                          check=True, timeout=30).stdout


@pytest.mark.parametrize("environment", [{"PYTHONIOENCODING": "ascii"},
                                         {"PYTHONIOENCODING": "latin-1"}])
def test_the_apply_hint_of_a_saved_plan_names_its_file_whatever_stdout_s_encoding(
        tmp_path: Path, environment: dict[str, str]) -> None:
    out = tmp_path / "dé" / "plän€.json"
    out.parent.mkdir()
    planned = _k3snet("plan", "-f", str(SPEC), "--backend", "memory", "--no-facts",
                      "--out", str(out), **environment)
    assert planned.returncode == 2, planned.stderr
    (word,) = re.findall(rb"apply it with `k3snet apply (.*)`\.", planned.stdout)
    assert _read_back(word) == os.fsencode(out)


def test_the_apply_hint_of_a_spec_given_as_a_plan_file_names_it_under_ascii(
        tmp_path: Path) -> None:
    spec = tmp_path / "spéc.yaml"
    spec.write_bytes(SPEC.read_bytes())
    applied = _k3snet("apply", str(spec), PYTHONIOENCODING="ascii")
    assert applied.returncode == 1, applied.stderr
    (word,) = re.findall(rb"apply it with `k3snet apply -f (.*)`", applied.stderr)
    assert _read_back(word) == os.fsencode(spec)


_DOCTOR_STATE = Path(__file__).resolve().parents[1] / "doctor" / "golden" / "seed"


def _latin1_locale(where: Path) -> dict[str, str]:
    """The environment of a Latin-1 locale compiled into ``where`` (``LOCPATH``): its
    file system encoding reads a byte that is not UTF-8 (``\\xff``) as a character."""
    try:
        subprocess.run(["localedef", "-i", "C", "-f", "ISO-8859-1", str(where / "latin1")],
                       capture_output=True, check=True, timeout=60)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"no Latin-1 locale can be compiled here: {exc}")
    return {"LOCPATH": str(where), "LC_ALL": "latin1", "PYTHONUTF8": "0",
            "PYTHONCOERCECLOCALE": "0"}


def test_the_doctor_fix_line_names_its_files_by_their_bytes_under_a_latin1_locale(
        tmp_path: Path) -> None:
    """``-f`` and ``--kubeconfig`` of bytes that are not UTF-8, read by a Latin-1 locale as
    ``ÿ`` and ``é``, were written as those characters' UTF-8 (``$'sp\\xc3\\xbfc.yaml'``):
    the line pasted named other files. The words bash reads back are the files' bytes."""
    environment = _latin1_locale(tmp_path)
    spec = os.fsdecode(bytes(tmp_path) + b"/sp\xffc.yaml")
    Path(spec).write_bytes(b"apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"
                           b"cluster:\n  podCIDRs: [10.42.0.0/16]\n")
    kubeconfig = os.fsdecode(bytes(tmp_path) + b"/k\xe9ube")
    doctor = subprocess.run(
        [sys.executable, "-m", "k3snet.cli", "doctor", "--from", "10.42.0.10", "--to",
         "192.168.2.10:5432", "--state", os.fsencode(_DOCTOR_STATE), b"-f",
         os.fsencode(spec), b"--kubeconfig", os.fsencode(kubeconfig)],
        capture_output=True, check=False, timeout=120,
        env={**os.environ, "PYTHONPATH": _HOME, **environment})
    assert doctor.returncode == 3, doctor.stderr
    line = doctor.stdout.rstrip(b"\n").splitlines()[-1]
    (spec_word,) = re.findall(rb" -f (\S+) ", line)
    (kubeconfig_word,) = re.findall(rb" --kubeconfig (\S+) ", line)
    assert (_read_back(spec_word), _read_back(kubeconfig_word)) == (
        os.fsencode(spec), os.fsencode(kubeconfig)), line


@pytest.fixture
def latin1_netns(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A namespace whose name ends in ``é`` (its UTF-8 bytes ``\\xc3\\xa9``, which a
    Latin-1 locale reads as ``Ã©``), and the environment of such a locale with a state
    directory named so too. UTF-8 bytes, not a lone ``\xff``: ``ip netns list`` stays
    readable as UTF-8 to whatever else lists the namespaces meanwhile."""
    from k3snet.lab.netns import unique_name  # noqa: PLC0415

    environment = _latin1_locale(tmp_path)
    state = tmp_path / "sté"
    state.mkdir()
    name = unique_name("latin") + "é"  # the lab's own names are ASCII
    subprocess.run(["ip", "netns", "add", name], capture_output=True, check=True, timeout=60)
    try:
        yield name, {**environment, "K3SNET_STATE_DIR": str(state),
                     "K3SNET_LOCK_DIR": str(tmp_path)}
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False,
                       timeout=60)


def _latin1_k3snet(environment: dict[str, str], *args: str) -> bytes:
    """What ``k3snet ARGS`` says (stdout and stderr) under the Latin-1 ``environment``."""
    done = subprocess.run([sys.executable, "-m", "k3snet.cli", *args], capture_output=True,
                          check=False, timeout=120,
                          env={**os.environ, "PYTHONPATH": _HOME, **environment})
    assert done.returncode in (0, 2), done.stderr
    return done.stdout + done.stderr


def _hint(said: bytes, start: bytes, end: bytes = b"") -> bytes:
    """The one command in backquotes in ``said`` beginning with ``start``, ending in ``end``."""
    commands: list[bytes] = re.findall(
        rb"`(" + re.escape(start) + rb"[^`]*" + re.escape(end) + rb")`", said)
    (command,) = commands
    return command


def _word_after(command: bytes, option: bytes) -> bytes:
    """The bytes bash reads of the word after ``option`` in ``command``."""
    (word,) = re.findall(re.escape(option) + rb" (\S+)", command)
    return _read_back(word)


@pytest.mark.kernel
@pytest.mark.usefixtures("require_root")
def test_the_switch_hints_name_the_namespace_and_state_dir_by_their_bytes_under_latin1(
        latin1_netns: tuple[str, dict[str, str]]) -> None:
    """What a switch of backends left, named under a Latin-1 locale (discover's warning,
    the group's, the nftables backend's ``ip netns exec``): the namespace and the state
    directory, named ``é`` (read ``Ã©``), were written as ``Ã©``'s UTF-8
    (``$'...\\xc3\\x83\\xc2\\xa9'``), another namespace and directory once pasted. The words bash
    reads back are their bytes, and the destroy pasted removes what was left (the
    kernel's own listing)."""
    netns, environment = latin1_netns
    spec = str(SPEC)
    for backend in ("nftables", "iptables"):
        _latin1_k3snet(environment, "apply", "-f", spec, "--backend", backend,
                       "--netns", netns)
    name, state = netns.encode(), environment["K3SNET_STATE_DIR"].encode()

    said = _latin1_k3snet(environment, "plan", "-f", spec, "--backend", "netlink",
                          "--netns", netns)
    nft_destroy = _hint(said, b"k3snet destroy --netns ", b" --backend nftables")
    assert _word_after(nft_destroy, b"--netns") == name, said
    iptables_destroy = _hint(said, b"k3snet destroy --netns ", b"st\\xc3\\xa9'")
    assert _word_after(iptables_destroy, b"iptables.mode=nft --backend-opt") == (
        b"iptables.state_dir=" + state), said

    grouped = _latin1_k3snet(environment, "plan", "-f", spec, "--backend", "nftables:nat",
                             "--backend", "netlink", "--netns", netns)
    assert _word_after(_hint(grouped, b"k3snet destroy --netns "), b"--netns") == name

    exec_hint = _hint(_latin1_k3snet(environment, "plan", "-f", spec, "--backend",
                                     "nftables", "--netns", netns), b"ip netns exec ")
    assert _word_after(exec_hint, b"exec") == name, exec_hint

    # The destroy pasted into bash, under that locale, removes the nftables table.
    pasted = b"k3snet() { \"$PY\" -m k3snet.cli \"$@\"; }; " + nft_destroy + b" --auto-approve"
    subprocess.run(["bash", "-c", pasted], capture_output=True, check=True, timeout=120,
                   env={**os.environ, "PYTHONPATH": _HOME, "PY": sys.executable,
                        **environment})
    listing = json.loads(subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "-j", "list", "tables"], capture_output=True,
        check=True, timeout=60).stdout)["nftables"]
    assert [i["table"]["name"] for i in listing if "table" in i
            and i["table"]["family"] == "inet"] == []
