"""Devices whose kernel names hold bytes that are not UTF-8, as the doctor reads them.

Two veths named by three such bytes each (``$'\\xff\\xfe\\xfd'``, ``$'\\xfa\\xfb\\xfc'``):
read with ``errors="replace"`` both were ``'\\ufffd' * 3``, one device to the doctor (the
routes of both on it), and ``sysctl -r`` in a UTF-8 locale listed neither's
``rp_filter`` (its ``.*`` stops at such a byte): strict ``rp_filter`` on one read as 0.
A reply from the other's network arriving on it passed in the doctor's view; the
kernel drops it (``ip route get ... iif``: a martian source, Invalid argument).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from k3snet.cli import main
from k3snet.doctor.bundle import NodeCapture
from k3snet.doctor.routing import rp_filter_check
from k3snet.doctor.state import NodeState
from k3snet.lab.netns import run_in

pytestmark = [pytest.mark.kernel]

STRICT = b"\xff\xfe\xfd".decode(errors="surrogateescape")  # rp_filter 1, 10.1.0.1/24
LOOSE = b"\xfa\xfb\xfc".decode(errors="surrogateescape")  # rp_filter 0, 10.2.0.1/24
NETNS = "h-doctorleft2-1"


def _run(argv: list[str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([a.encode(errors="surrogateescape") for a in argv],
                          capture_output=True, check=False)


@pytest.fixture
def node() -> Iterator[str]:
    subprocess.run(["ip", "netns", "add", NETNS], check=True)
    try:
        for name, peer, address, mode in ((STRICT, "pa", "10.1.0.1/24", "1"),
                                          (LOOSE, "pb", "10.2.0.1/24", "0")):
            for argv in (["link", "add", name, "type", "veth", "peer", "name", peer],
                         ["link", "set", name, "up"], ["link", "set", peer, "up"],
                         ["addr", "add", address, "dev", name]):
                assert _run(["ip", "-n", NETNS, *argv]).returncode == 0, argv
            assert _run(["ip", "netns", "exec", NETNS, "sh", "-c", f'echo {mode} > "$1"',
                         "sh", f"/proc/sys/net/ipv4/conf/{name}/rp_filter"]).returncode == 0
        run_in(NETNS, ["sysctl", "-q", "-w", "net.ipv4.conf.all.rp_filter=0",
                       "net.ipv4.ip_forward=1"])
        yield NETNS
    finally:
        subprocess.run(["ip", "netns", "del", NETNS], check=False)


def _passes(state: NodeState) -> bool | None:
    """The doctor's rp_filter verdict on 10.2.0.7 -> 10.1.0.5 arriving on STRICT."""
    mode = max(state.sysctl("net.ipv4.conf.all.rp_filter"),
               state.sysctl(f"net.ipv4.conf.{STRICT}.rp_filter"))
    passed, _ = rp_filter_check(state.routes[4], state.rules[4], state.addresses,
                                src=IPv4Address("10.2.0.7"), dst=IPv4Address("10.1.0.5"),
                                iif=STRICT, mode=mode, oif=STRICT)
    return passed


def test_two_devices_named_by_as_many_non_utf8_bytes_stay_two_live_and_in_a_bundle(
        node: str, tmp_path: Path) -> None:
    kernel = _run(["ip", "-n", node, "route", "get", "10.1.0.5", "from", "10.2.0.7",
                   "iif", STRICT])
    assert kernel.returncode != 0, kernel  # the kernel's own view: a martian, dropped
    assert b"Invalid" in kernel.stderr, kernel.stderr
    other = _run(["ip", "-n", node, "route", "get", "10.2.0.5", "from", "10.1.0.7",
                  "iif", LOOSE])
    assert other.returncode == 0, other  # rp_filter 0 there: it passes
    live = NodeCapture.read_live(node)
    _assert_two_devices(NodeState.from_capture(live))
    live.write_dir(tmp_path / "bundle")
    assert b"\xff\xfe\xfd" in (tmp_path / "bundle" / "addr.json").read_bytes()
    assert b"\xff\xfe\xfd" in (tmp_path / "bundle" / "sysctl.txt").read_bytes()
    _assert_two_devices(NodeState.from_capture(NodeCapture.read_dir(tmp_path / "bundle")))


def _assert_two_devices(state: NodeState) -> None:
    assert state.sysctl(f"net.ipv4.conf.{STRICT}.rp_filter") == 1
    assert state.sysctl(f"net.ipv4.conf.{LOOSE}.rp_filter", default=-1) == 0
    devices = {r.device for r in state.routes[4] if r.table == 254}
    assert {STRICT, LOOSE} <= devices, devices
    assert _passes(state) is False


def test_the_doctor_prints_a_device_named_by_non_utf8_bytes_as_observe_does(
        node: str, capsys: pytest.CaptureFixture[str]) -> None:
    """As the shell word of its bytes (``$'\\xff\\xfe\\xfd'``), not as U+FFFD or the
    escapes of the lone surrogates standing for them (``\\udcff``)."""
    main(["doctor", "--netns", node, "--from", "10.1.0.7", "--to", "10.2.0.5:80"])
    # The trace's lines (the finding's advice quotes the model's refusal of the name as
    # it words it, a Python repr).
    out = capsys.readouterr().out.partition("findings:")[0]
    assert r"arrives on $'\xff\xfe\xfd'" in out, out
    assert r"dev $'\xfa\xfb\xfc'" in out, out
    assert r"$'net.ipv4.conf.\xff\xfe\xfd.forwarding': 1" in out, out
    assert "\\udc" not in out, out
    assert "\ufffd" not in out, out


def test_the_advice_of_an_unbuildable_fix_names_the_device_as_the_shell_word_of_its_bytes(
        node: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The model refuses the name (no masquerade rule can hold it) and says so quoting it
    as a Python literal (``'\\udcfa\\udcfb\\udcfc'``): the advice words it as the trace
    does."""
    main(["doctor", "--netns", node, "--from", "10.1.0.7", "--to", "10.2.0.5:80"])
    findings = capsys.readouterr().out.partition("findings:")[2]
    assert r"do:    no automatic fix: interface name $'\xfa\xfb\xfc' is not valid" in findings
    assert "udc" not in findings, findings


# Kernel names a device may hold (dev_valid_name refuses only '/', ':' and whitespace),
# each with a byte that is not UTF-8 next to a clause's punctuation.
SEMICOLON = b"p;\xff".decode(errors="surrogateescape")  # 10.3.0.1/24
PARENS = b"q(\xfe)".decode(errors="surrogateescape")  # 10.4.0.1/24
CLAUSE_NETNS = "h-doctorleft2-2"


@pytest.fixture
def clause_node() -> Iterator[str]:
    subprocess.run(["ip", "netns", "add", CLAUSE_NETNS], check=True)
    try:
        for name, peer, address in ((SEMICOLON, "pa", "10.3.0.1/24"),
                                    (PARENS, "pb", "10.4.0.1/24")):
            for argv in (["link", "add", name, "type", "veth", "peer", "name", peer],
                         ["link", "set", name, "up"], ["link", "set", peer, "up"],
                         ["addr", "add", address, "dev", name]):
                assert _run(["ip", "-n", CLAUSE_NETNS, *argv]).returncode == 0, argv
        run_in(CLAUSE_NETNS, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
        yield CLAUSE_NETNS
    finally:
        subprocess.run(["ip", "netns", "del", CLAUSE_NETNS], check=False)


def _shell_words(line: str) -> list[bytes]:
    """The words bash reads in ``line`` (what pasting it runs on), as bytes."""
    read = subprocess.run(["bash", "-c", f"printf '%s\\0' {line}"], capture_output=True,
                          check=True)
    return read.stdout.split(b"\0")[:-1]


def test_a_device_name_holding_clause_punctuation_and_a_non_utf8_byte_is_one_shell_word(
        clause_node: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Split at the ``;`` or the parentheses, ``p;$'\\xff'`` ran ``p`` then ``$'\\xff'``
    once pasted, and ``q($'\\xfe')`` was no shell word at all."""
    main(["doctor", "--netns", clause_node, "--from", "10.3.0.7", "--to", "10.4.0.5:80"])
    out = capsys.readouterr().out
    assert r"arrives on $'p;\xff' (10.3.0.0/24 dev $'p;\xff')" in out, out
    assert r"table main: 10.4.0.0/24 dev $'q(\xfe)'" in out, out
    assert r"leaves dev $'q(\xfe)';" in out, out
    assert r"interface name $'q(\xfe)' is not valid" in out, out
    assert _shell_words(r"$'p;\xff' $'q(\xfe)'") == [b"p;\xff", b"q(\xfe)"]


# Kernel names holding what Python's str.isspace takes for a space but the kernel's
# isspace does not (0x1d, the group separator; U+3000 in UTF-8), beside a byte that is
# not UTF-8.
SEPARATOR = b"r\x1d\xff".decode(errors="surrogateescape")  # 10.5.0.1/24
WIDE_SPACE = b"\xe3\x80\x80\xfe".decode(errors="surrogateescape")  # 10.6.0.1/24
SPACE_NETNS = "h-crossdr2-1"


@pytest.fixture
def space_node() -> Iterator[str]:
    subprocess.run(["ip", "netns", "add", SPACE_NETNS], check=True)
    try:
        for name, peer, address in ((SEPARATOR, "pa", "10.5.0.1/24"),
                                    (WIDE_SPACE, "pb", "10.6.0.1/24")):
            for argv in (["link", "add", name, "type", "veth", "peer", "name", peer],
                         ["link", "set", name, "up"], ["link", "set", peer, "up"],
                         ["addr", "add", address, "dev", name]):
                assert _run(["ip", "-n", SPACE_NETNS, *argv]).returncode == 0, argv
        run_in(SPACE_NETNS, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
        yield SPACE_NETNS
    finally:
        subprocess.run(["ip", "netns", "del", SPACE_NETNS], check=False)


def test_a_device_name_holding_a_separator_python_calls_a_space_is_one_shell_word(
        space_node: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Split at the 0x1d as at a space, ``$'r'\\x1d$'\\xff'`` pasted was three words, the
    middle one ``x1d``: another device."""
    main(["doctor", "--netns", space_node, "--from", "10.5.0.7", "--to", "10.6.0.5:80"])
    out = capsys.readouterr().out
    assert r"arrives on $'r\x1d\xff' (10.5.0.0/24 dev $'r\x1d\xff')" in out, out
    assert r"leaves dev $'\xe3\x80\x80\xfe';" in out, out
    assert _shell_words(r"$'r\x1d\xff' $'\xe3\x80\x80\xfe'") == [b"r\x1d\xff",
                                                                 b"\xe3\x80\x80\xfe"]
