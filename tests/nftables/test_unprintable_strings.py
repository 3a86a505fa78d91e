"""Strings of rules and set elements that are not UTF-8: libnftables aborts listing them.

nft's own command line writes them (``iifname $'"bad\\xff\\xfe"'``), and libnftables
1.0.6 aborts the whole process as it prints one as JSON (``relational_expr_json:
Assertion '__out' failed``, ``mapping_expr_json`` for a map): ``k3snet observe`` and
``plan`` died with exit 134 and no message of their own, and an agent on such a node
would crash-loop. Before each JSON listing k3snet now also dumps the rules (and the
elements of each set of interface names) over netlink with the names (again only once
the generation id moved) and lists nothing that would abort: another table's such
rule leaves its chain unjudged with a warning naming it; one in k3snet's own table is
an error saying how to delete it.

The real CLI runs as a child process: an abort in pytest's own process would end the
test run. The child is forked from the test's process, k3snet already imported, and runs
``k3snet.cli.main`` there (a cold ``python -m k3snet`` per call cost each test a second
of start, which these tests are not about).
"""

from __future__ import annotations

import faulthandler
import os
import re
import select
import signal
import struct
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import pytest

from k3snet.backends.netns import NetnsRunner
from k3snet.backends.nfgen import GenerationReader
from k3snet.backends.nftables import NftablesBackend
from k3snet.cli import main
from k3snet.lab.netns import run_in
from k3snet.model import MasqueradeRule, State
from k3snet.planner import plan

pytestmark = pytest.mark.kernel

BAD = b"bad\xff\xfe"
SEED = Path(__file__).parents[2] / "examples" / "seed.yaml"

# Each rule nft writes with BAD where libnftables prints a string.
RULES = {
    "iifname": b'iifname "bad\xff\xfe" accept',
    "oifname": b'ip daddr 10.200.0.0/16 oifname "bad\xff\xfe" accept',
    "iifkind": b'meta iifkind "bad\xff\xfe" accept',
    "sdifname": b'meta sdifname "bad\xff\xfe" accept',
    "helper": b'ct helper "bad\xff\xfe" accept',
    "fib-oifname": b'fib daddr oifname "bad\xff\xfe" accept',
    "wildcard": b'iifname "bad\xff*" accept',
    "anonymous-set": b'iifname { "eth0", "b\xc3*" } drop',
    "vmap": b'iifname vmap { "bad\xff\xfe" : accept }',
}


def nft(ns: str, *words: bytes) -> None:
    subprocess.run([b"ip", b"netns", b"exec", ns.encode(), b"nft", *words], check=True,
                   capture_output=True, timeout=60)


def json_listing_aborts(ns: str) -> bool:
    """What the test is about: the kernel's ruleset aborts libnftables' JSON listing."""
    done = run_in(ns, ["nft", "-j", "list", "ruleset"], check=False)
    return done.returncode != 0 and "Assertion" in done.stderr


def k3snet(ns: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``k3snet ARGS --netns NS`` in a child forked from this process: its exit code (an
    abort's is ``-SIGABRT``, as :mod:`subprocess` gives a signal's), stdout and stderr,
    the C library's writes to file descriptors 1 and 2 (libnftables' assertion) too."""
    argv = [*args, "--netns", ns]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: never back into pytest
            code = 70
            try:
                faulthandler.disable()  # pytest's: its dump of an abort went to the run's stderr
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
                sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - ended by _exit
                sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
                code = main(argv)
            except SystemExit as exc:  # argparse's (a usage error: 64), as Python ends
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
                if exc.code is not None and not isinstance(exc.code, int):
                    sys.stderr.write(f"{exc.code}\n")
            except BaseException:  # noqa: BLE001 - said as Python's own exit says it
                traceback.print_exc()
                code = 1
            finally:
                try:  # a flush that fails (or a Ctrl-C here) must not end the child's
                    sys.stdout.flush()  # way out: back in pytest, it would run the
                    sys.stderr.flush()  # rest of the session a second time
                finally:
                    os._exit(code)
        ended = os.pidfd_open(pid)
        try:
            if not select.select([ended], [], [], timeout)[0]:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise subprocess.TimeoutExpired(["k3snet", *argv], timeout)
        finally:
            os.close(ended)
        returncode = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(
            ["k3snet", *argv], returncode, out.read().decode(errors="replace"),
            err.read().decode(errors="replace"))



class _FailingFlush:
    """A stdout whose flush fails (a full disk, a closed pipe)."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        raise OSError(28, "No space left on device")


def _main_returning_3(argv: list[str]) -> int:
    sys.stdout.write(f"said {argv[-2:]}\n")
    return 3


def _main_exiting_none(argv: list[str]) -> int:
    raise SystemExit(None)


def _main_exiting_with_a_message(argv: list[str]) -> int:
    raise SystemExit("said on exit")


def _main_whose_stdout_fails_to_flush(argv: list[str]) -> int:
    sys.stdout = _FailingFlush()
    return 5


def _main_aborting(argv: list[str]) -> int:
    os.abort()


@pytest.mark.parametrize(("fake", "code", "said"), [
    (_main_returning_3, 3, "said ['--netns', 'nowhere']"),
    (_main_exiting_none, 0, ""),
    (_main_exiting_with_a_message, 1, "said on exit"),
    (_main_whose_stdout_fails_to_flush, 5, ""),
    (_main_aborting, -signal.SIGABRT, ""),
])
def test_the_forked_cli_ends_with_the_code_a_cold_process_would_and_never_returns_to_pytest(
        monkeypatch: pytest.MonkeyPatch, fake: object, code: int, said: str) -> None:
    """The helper the tests run the CLI with: its child's exit code and output are those
    of a process running the command (Python's for ``SystemExit(None)``: 0; a message:
    1, the message on stderr; an abort: -SIGABRT), and a child whose last flush fails
    still ends there (it went back into pytest and ran the rest of the session again)."""
    monkeypatch.setitem(globals(), "main", fake)
    done = k3snet("nowhere")
    assert done.returncode == code, done
    assert said in done.stdout + done.stderr, done


def foreign_forward(ns: str, rule: bytes) -> None:
    nft(ns, b"add table inet t")
    nft(ns, b"add chain inet t c { type filter hook forward priority 0; }")
    nft(ns, b"add rule inet t c " + rule)


@pytest.mark.parametrize("what", sorted(RULES))
@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_a_foreign_rule_string_not_utf8_leaves_its_chain_unjudged_with_a_warning(
        ns: str, what: str, backend: str) -> None:
    foreign_forward(ns, RULES[what])
    if what == "anonymous-set":
        # Of a set of two or more, libnftables leaves the element out: no abort, and
        # the rule reads as matching less than it does (b\xc3* holds each "bé...").
        listed = run_in(ns, ["nft", "-j", "list", "ruleset"])
        assert '"set": ["eth0"]' in listed.stdout
    else:
        assert json_listing_aborts(ns)
    done = k3snet(ns, "observe", "--backend", backend)
    assert done.returncode == 0, done.stderr
    assert "Assertion" not in done.stderr
    assert "not UTF-8" in done.stderr
    assert re.search(r"rule handle \d+ of chain c of table inet t ", done.stderr), done.stderr
    assert re.search(r"nft delete rule inet t c handle \d+", done.stderr), done.stderr


def test_the_plan_of_a_node_with_such_a_rule_is_made(ns: str) -> None:
    nft(ns, b"add table ip t")
    nft(ns, b"add chain ip t c { type filter hook forward priority 0; }")
    nft(ns, b"add rule ip t c " + RULES["iifname"])
    assert json_listing_aborts(ns)
    done = k3snet(ns, "plan", "-f", str(SEED), "--backend", "nftables", "--no-facts")
    assert done.returncode == 2, done.stderr  # changes to make
    assert "+ masquerade 10.42.0.0/16 -> 192.168.2.0/24 oif eth0" in done.stdout
    assert "rule handle 2 of chain c of table ip t " in done.stdout + done.stderr


@pytest.mark.parametrize("kind", ["map", "set"])
def test_a_named_set_of_interface_names_not_utf8_is_named_not_read(ns: str, kind: str) -> None:
    # A map of them aborts its table's listing; a set of them is listed without the
    # element (its rules read as matching less than they do).
    nft(ns, b"add table inet t")
    if kind == "map":
        nft(ns, b'add map inet t s { type ipv4_addr : ifname; elements = { 10.1.1.1 : '
                b'"bad\xff\xfe" }; }')
    else:
        nft(ns, b'add set inet t s { type ifname; elements = { "eth0", "bad\xff\xfe" }; }')
    nft(ns, b"add chain inet t c { type filter hook forward priority 0; }")
    nft(ns, b"add rule inet t c ip daddr 10.200.0.0/16 drop")
    done = k3snet(ns, "observe", "--backend", "nftables")
    assert done.returncode == 0, done.stderr
    assert re.search(r"set s of table inet t \(nft delete set inet t handle \d+\)",
                     done.stderr), done.stderr


def test_strings_that_are_utf8_are_no_finding(ns: str) -> None:
    # Addresses and ports whose bytes are not UTF-8, beside interface names that are.
    foreign_forward(ns, b'iifname "\xc3\xa9th*" ip saddr 10.200.0.0/16 tcp dport 65535 '
                        b'oifname { "eth0", "eth1" } ct helper "ftp" accept')
    # Keys of other expressions equal to a string key (xfrm's SPI, numgen's modulus, as
    # meta's IIFNAME and ct's HELPER: 6) and a fib result that is no interface name,
    # each compared with bytes that are not UTF-8.
    nft(ns, b"add rule inet t c ipsec in spi 0xfffefdfc accept")
    nft(ns, b"add rule inet t c numgen inc mod 6 offset 0xfffffff0 0xfffffff3 accept")
    nft(ns, b"add rule inet t c fib daddr type 0xfffefdfc accept")
    # An interface name test followed by an expression 128 bytes long or more (a jump to
    # a long chain name, a long log prefix): its length's byte is not UTF-8.
    nft(ns, b"add chain inet t " + b"k" * 72)
    nft(ns, b'add rule inet t c iifname "eth0" jump ' + b"k" * 72)
    nft(ns, b'add rule inet t c oifname "eth1" log prefix "' + b"p" * 100 + b'" accept')
    nft(ns, b'add set inet t s { type ipv4_addr . ifname; elements = { 200.200.200.200 . '
            b'"eth0" }; }')
    # A wildcard in a range of a concatenation: its end's prefix ends with 0xff bytes.
    nft(ns, b'add set inet t r { type ifname . ipv4_addr; flags interval; elements = { '
            b'"eth*" . 10.0.0.0/8, "\xc3\xa9*" . 10.1.0.0/16, "lo" . 1.2.3.4 }; }')
    with NetnsRunner(ns) as runner:
        assert runner.call(lambda: GenerationReader().unprintable()) == []


def test_a_rule_string_not_utf8_in_k3snets_own_table_is_an_error_naming_its_deletion(
        ns: str) -> None:
    with NftablesBackend(ns) as backend:
        wanted = State(owned=[MasqueradeRule("10.42.0.0/16")])
        backend.apply(plan(backend.observe(), wanted))
    nft(ns, b"add chain inet k3snet stray")
    nft(ns, b"add rule inet k3snet stray " + RULES["iifname"])
    assert json_listing_aborts(ns)
    done = k3snet(ns, "observe", "--backend", "nftables")
    assert done.returncode == 1, done.stderr
    assert "Assertion" not in done.stderr
    command = re.search(r"nft (delete rule inet k3snet stray handle \d+)\)", done.stderr)
    assert command is not None, done.stderr
    run_in(ns, ["nft", *command.group(1).split()])
    done = k3snet(ns, "observe", "--backend", "nftables")
    assert done.returncode == 0, done.stderr
    assert "not UTF-8" not in done.stderr
    assert "10.42.0.0/16" in done.stdout


@pytest.fixture
def rule_dumps(monkeypatch: pytest.MonkeyPatch) -> list[list[tuple[str, str]]]:
    """Each ``GETRULE`` dump a :class:`GenerationReader` makes: the (table, chain) of each
    rule the kernel sent back."""
    dumps: list[list[tuple[str, str]]] = []
    made = GenerationReader._dump

    def recording(self: GenerationReader, kind: int, family: int, body: bytes) -> list[bytes]:
        messages = made(self, kind, family, body)
        if kind == _GETRULE:
            dumps.append([(_named(message, 1), _named(message, 2)) for message in messages])
        return messages

    monkeypatch.setattr(GenerationReader, "_dump", recording)
    return dumps


_GETRULE = (10 << 8) | 7


def _named(message: bytes, attribute: int) -> str:
    """The text of a rule message's attribute ``attribute`` (1: its table, 2: its chain)."""
    offset = 20
    while offset + 4 <= len(message):
        length, kind = struct.unpack_from("=HH", message, offset)
        if length < 4:
            break
        if kind & 0x7FFF == attribute:
            return message[offset + 4:offset + length].rstrip(b"\0").decode(
                errors="surrogateescape")
        offset += (length + 3) & ~3
    return ""


def test_the_rules_are_dumped_once_per_generation_id_not_at_each_listing(
        ns: str, rule_dumps: list[list[tuple[str, str]]]) -> None:
    foreign_forward(ns, b'iifname "eth0" ip saddr 10.200.0.0/16 accept')
    nft(ns, b"add chain inet t d { type nat hook postrouting priority 100; }")
    with NftablesBackend(ns) as backend:
        backend.observe()
        dumped = len(rule_dumps)
        assert dumped >= 1
        backend.observe()
        assert len(rule_dumps) == dumped  # the generation id unmoved: no dump again
        nft(ns, b"add rule inet t c accept")
        backend.observe()
        assert len(rule_dumps) > dumped


def test_the_rules_dumped_before_a_listing_are_the_listed_tables_alone(
        ns: str, rule_dumps: list[list[tuple[str, str]]]) -> None:
    # 10 000 rules of a table no listing prints cost 0.2-0.4 s an observe after each
    # commit when every rule of the node was dumped (docs/performance.md, "Strings that
    # are not UTF-8").
    foreign_forward(ns, b'iifname "eth0" ip saddr 10.200.0.0/16 accept')
    nft(ns, b"add table inet bulk")
    nft(ns, b"add chain inet bulk unhooked")
    subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], check=True, timeout=60,
                   input="".join(f'add rule inet bulk unhooked iifname "veth{n}" accept\n'
                                 for n in range(50)), text=True, capture_output=True)
    with NftablesBackend(ns) as backend:
        backend.observe()
        assert backend.warnings == ()
    dumped = [where for dump in rule_dumps for where in dump]
    assert ("t", "c") in dumped  # the chain listed was checked
    assert not [where for where in dumped if where[0] == "bulk"]  # 50 rules before


# Run in a child: lists table inet t, has a packet sent out of interface BAD, lists it again.
_LIST_AFTER_A_PACKET = """
import sys
from k3snet.backends.netns import NetnsRunner
from k3snet.backends.nftables.kernel import Libnftables, UnprintableNameError
from k3snet.lab.netns import run_in

def listed(kernel: Libnftables) -> str:
    try:
        kernel.list("table", family="inet", name="t")
    except UnprintableNameError as exc:
        return str(exc)
    return "listed"

with NetnsRunner(sys.argv[1]) as runner:
    kernel = runner.call(Libnftables)
    print(runner.call(lambda: listed(kernel)))
    run_in(sys.argv[1], [sys.executable, "-c", "import socket; socket.socket(socket.AF_INET, "
                         "socket.SOCK_DGRAM).sendto(b'x', ('10.9.9.2', 9))"])
    print(runner.call(lambda: listed(kernel)))
"""


def test_an_element_a_rule_adds_from_a_packet_is_found_before_the_next_listing(
        ns: str) -> None:
    # The kernel adds the element, the generation id unmoved: a process that read the
    # names and elements at that generation id listed the map and aborted.
    run_in(ns, ["ip", "link", "add", BAD.decode(errors="surrogateescape"), "type", "veth",
                "peer", "name", "peer0"])
    run_in(ns, ["ip", "link", "set", BAD.decode(errors="surrogateescape"), "up"])
    run_in(ns, ["ip", "addr", "add", "10.9.9.1/24", "dev", BAD.decode(errors="surrogateescape")])
    nft(ns, b"add table inet t")
    nft(ns, b"add map inet t m { type ifname : mark; flags dynamic; }")
    nft(ns, b"add chain inet t o { type filter hook output priority 0; }")
    nft(ns, b"add rule inet t o ip daddr 10.9.9.2 update @m { oifname : 0x1 }")
    done = subprocess.run([sys.executable, "-c", _LIST_AFTER_A_PACKET, ns], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    assert first == "listed"
    assert re.search(r"set m of table inet t \(nft delete set inet t handle \d+\)", second), second
    assert json_listing_aborts(ns)


# Adds to chain inet t c a rule of expressions nft never writes (argv[1] names which),
# through one netlink batch: a string load, then something else, then its test.
_RAW_RULE = r'''
import socket, struct, sys
BAD = b"bad\xff\xfe\0"
def attr(kind, data, nested=False):
    size = 4 + len(data)
    return (struct.pack("=HH", size, kind | (0x8000 if nested else 0)) + data
            + b"\0" * (-size % 4))
def u32(value):
    return struct.pack(">I", value)
def expr(name, data):
    return attr(1, attr(1, name + b"\0") + attr(2, data, True), True)
def iifname(dreg):  # meta load of NFT_META_IIFNAME (6)
    return expr(b"meta", attr(2, u32(6)) + attr(1, u32(dreg)))
def cmp(sreg, value):  # NFT_CMP_EQ
    return expr(b"cmp", attr(1, u32(sreg)) + attr(2, u32(0)) + attr(3, attr(1, value), True))
def bitwise(sreg, dreg, mask, xor):  # NFT_BITWISE_BOOL of 16 bytes
    return expr(b"bitwise", attr(1, u32(sreg)) + attr(2, u32(dreg)) + attr(3, u32(16))
                + attr(4, attr(1, mask), True) + attr(5, attr(1, xor), True))
counter = expr(b"counter", attr(1, bytes(8)) + attr(2, bytes(8)))
looks_like_a_load = (struct.pack("=HHH", 1, 14, 1) + b"immediate\0\0\0"
                     + struct.pack("=HHHH", 12, 2, 8, 1) + u32(1))
rules = {
    "a counter in between": [iifname(1), counter, cmp(1, BAD)],
    "a load into another register": [iifname(1), expr(b"meta", attr(2, u32(3)) + attr(1, u32(2))),
                                     cmp(1, BAD)],
    "a test before": [iifname(1), cmp(1, b"eth0\0"), cmp(1, BAD)],
    "32-bit registers": [iifname(8), counter, cmp(8, BAD)],
    "an immediate into another register": [
        iifname(1), expr(b"immediate", attr(1, u32(2)) + attr(2, attr(1, u32(7)), True)),
        cmp(1, BAD)],
    "a test, then a mask": [iifname(1), cmp(1, b"eth0\0"),
                            bitwise(1, 1, b"\xff" * 16, bytes(16)), cmp(1, BAD + bytes(10))],
    "a range": [iifname(1), expr(b"range", attr(1, u32(1)) + attr(2, u32(0))
                                 + attr(3, attr(1, b"a\xff\0"), True)
                                 + attr(4, attr(1, b"b\xff\0"), True))],
    # A mask of the name into another register, that register tested.
    "a test, then a mask into another register": [
        iifname(1), cmp(1, b"eth0\0"), bitwise(1, 2, b"\xff" * 16, bytes(16)),
        cmp(2, BAD + bytes(10))],
    # libnftables prints a mask or xor of a string (one not all ones) as the string's.
    "a mask not UTF-8": [iifname(1), bitwise(1, 1, BAD + bytes(10), bytes(16)),
                         cmp(1, b"eth0" + bytes(12))],
    "a test, then an xor not UTF-8": [
        iifname(1), cmp(1, b"eth0\0"), bitwise(1, 1, b"\xff" * 16, BAD + bytes(10)),
        cmp(1, b"eth0" + bytes(12))],
    # An xtables match whose data hold the bytes of a load of the name's register (256
    # bytes of -m comment's, as the kernel keeps them): no load to libnftables.
    "a match holding a load's bytes": [
        iifname(1), cmp(1, b"eth0\0"), expr(b"match", attr(1, b"comment\0") + attr(2, u32(0))
                                           + attr(3, looks_like_a_load.ljust(256, b"\0"))),
        cmp(1, BAD)],
    # ip saddr 10.255.254.1 loaded over the name: no string compared.
    "the register written again": [
        iifname(1), expr(b"payload", attr(1, u32(1)) + attr(2, u32(1)) + attr(3, u32(12))
                         + attr(4, u32(4))), cmp(1, b"\x0a\xff\xfe\x01")],
}
body = attr(1, b"t\0") + attr(2, b"c\0") + attr(4, b"".join(rules[sys.argv[1]]), True)
head = struct.pack("=BBH", 0, 0, socket.htons(10))
messages = [(0x10, 1, head), ((10 << 8) | 6, 1 | 4 | 0x400 | 0x800,
                              struct.pack("=BBH", 1, 0, 0) + body), (0x11, 1, head)]
sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)
sock.send(b"".join(struct.pack("=IHHII", 16 + len(body), kind, flags, seq, 0) + body
                   for seq, (kind, flags, body) in enumerate(messages, 1)))
answer = sock.recv(65536)
if struct.unpack_from("=H", answer, 4)[0] == 2 and struct.unpack_from("=i", answer, 16)[0]:
    raise OSError(-struct.unpack_from("=i", answer, 16)[0], "rule refused")
'''


@pytest.mark.parametrize("between", ["a counter in between", "a load into another register",
                                     "a test before", "32-bit registers",
                                     "an immediate into another register",
                                     "a test, then a mask", "a range",
                                     "a test, then a mask into another register",
                                     "a mask not UTF-8", "a test, then an xor not UTF-8",
                                     "a match holding a load's bytes"])
def test_a_string_test_apart_from_its_load_is_found_as_libnftables_reads_it(
        ns: str, between: str) -> None:
    # libnftables reads a test of a register as one of what was last loaded there,
    # however far back: such a rule (raw netlink's; nft writes each test right after its
    # load) aborted the JSON listing, and the check before it, which looked at the
    # expression right after the load alone, found nothing: exit 134.
    foreign_forward(ns, b"accept")
    run_in(ns, [sys.executable, "-c", _RAW_RULE, between])
    assert json_listing_aborts(ns)
    done = k3snet(ns, "observe", "--backend", "nftables")
    assert done.returncode == 0, done.stderr
    assert "Assertion" not in done.stderr
    assert re.search(r"rule handle \d+ of chain c of table inet t ", done.stderr), done.stderr


def test_a_register_written_again_after_a_string_load_holds_no_string(ns: str) -> None:
    foreign_forward(ns, b"accept")
    run_in(ns, [sys.executable, "-c", _RAW_RULE, "the register written again"])
    assert not json_listing_aborts(ns)
    with NetnsRunner(ns) as runner:
        assert runner.call(lambda: GenerationReader().unprintable()) == []


# Run in a child: lists chain inet t c, a foreign rule of BAD committed while the check
# before the listing dumps the rules (once).
_COMMIT_DURING_THE_CHECK = """
import subprocess, sys
from k3snet.backends.netns import NetnsRunner
from k3snet.backends.nfgen import GenerationReader
from k3snet.backends.nftables.kernel import Libnftables, UnprintableNameError

checked = GenerationReader.unprintable_contents
commits = []

def commit_after(self, *args, **kwargs):
    found = checked(self, *args, **kwargs)
    if not commits:
        commits.append(subprocess.run(["nft", "-f", "-"], check=True, timeout=60, input=(
            b'add rule inet t c iifname "bad\\xff\\xfe" accept\\n')))
    return found

GenerationReader.unprintable_contents = commit_after
with NetnsRunner(sys.argv[1]) as runner:
    kernel = runner.call(Libnftables)
    try:
        runner.call(lambda: kernel.list("chain", family="inet", table="t", name="c"))
    except UnprintableNameError as exc:
        print(exc)
"""


def test_a_rule_committed_during_the_check_is_found_before_the_listing(ns: str) -> None:
    # The check's dump of 10 000 rules takes 0.1-0.5 s; a commit in that time aborted
    # the listing after it (exit 134). The generation id is read again after the check.
    foreign_forward(ns, b"accept")
    done = run_in(ns, [sys.executable, "-c", _COMMIT_DURING_THE_CHECK, ns], check=False)
    assert done.returncode == 0, done.stderr
    assert "Assertion" not in done.stderr
    assert re.search(r"rule handle \d+ of chain c of table inet t ", done.stdout), done.stdout


def test_a_tag_comment_not_utf8_makes_no_rule_k3snets(ns: str) -> None:
    # libnftables leaves such a comment out of the JSON listing (and k3snet's text
    # reader reads U+FFFD): k3snet's tag followed by a byte that is not UTF-8 is no tag,
    # in k3snet's own table (drift, deleted by the plan) as in another (foreign).
    wanted = State(owned=[MasqueradeRule("10.42.0.0/16")])
    with NftablesBackend(ns) as backend:
        backend.apply(plan(backend.observe(), wanted))
    listed = run_in(ns, ["nft", "list", "chain", "inet", "k3snet", "postrouting"]).stdout
    found = re.search(r'comment "(k3snet:[0-9a-f]+)"', listed)
    assert found is not None, listed
    bad = b'comment "' + found.group(1).encode() + b'\xff"'
    nft(ns, b"flush chain inet k3snet postrouting")
    nft(ns, b"add rule inet k3snet postrouting ip saddr 10.42.0.0/16 masquerade " + bad)
    nft(ns, b"add table inet f")
    nft(ns, b"add chain inet f post { type nat hook postrouting priority 100; }")
    nft(ns, b"add rule inet f post ip saddr 10.43.0.0/16 masquerade " + bad)
    with NftablesBackend(ns) as backend:
        observed = backend.observe()
        changes = plan(observed, wanted).changes
    assert [type(one).__name__ for one in observed.owned] == ["NatDrift"]
    assert MasqueradeRule("10.43.0.0/16") in observed.foreign
    assert [(change.action, type(change.before or change.after).__name__)
            for change in changes] == [("delete", "NatDrift"), ("add", "MasqueradeRule")]
