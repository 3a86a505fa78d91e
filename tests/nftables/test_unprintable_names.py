"""Names that are not UTF-8: libnftables aborts the process listing one as JSON.

nft's command line writes no such name, raw netlink does (a table, a chain, a set, a
stateful object). libnftables 1.0.6 asserts each name it prints as JSON is UTF-8
(``chain_print_json: Assertion '__out' failed``) and aborts the whole process:
``k3snet observe`` died with exit 134 and no message of its own, and an agent on such
a node would crash-loop. k3snet now dumps the names over netlink before each JSON
listing (again only once the generation id moved) and lists nothing they would abort:
the other tables are then not judged, with a warning naming the object; a name in
k3snet's own table is an error saying how to delete it.

The objects are made through raw netlink by a script run in the lab namespace, and
the real CLI runs as a child process: an abort in pytest's own process would end
the test run.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from k3snet.backends.nftables import NftablesBackend
from k3snet.lab.netns import run_in
from k3snet.model import MasqueradeRule, State
from k3snet.planner import plan

pytestmark = pytest.mark.kernel

BAD = "bad\\xff\\xfe"  # as the shell escapes it in $'...'

# Makes nftables objects in the namespace it runs in, through one netlink batch.
MAKER = r'''
import socket, struct, sys
BAD = b"bad\xff\xfe"
def attr(kind, data):
    size = 4 + len(data)
    return struct.pack("=HH", size, kind) + data + b"\0" * (-size % 4)
def s(b):
    return b + b"\0"
def table(name):
    return (0, attr(1, s(name)))
def chain(t, name):
    return (3, attr(1, s(t)) + attr(3, s(name)))
def set_(t, name):  # type ipv4_addr (7), 4-byte keys, set id 1
    return (9, attr(1, s(t)) + attr(2, s(name)) + attr(4, struct.pack(">I", 7))
            + attr(5, struct.pack(">I", 4)) + attr(10, struct.pack(">I", 1)))
def counter(t, name):  # NFT_OBJECT_COUNTER (1), no data
    return (18, attr(1, s(t)) + attr(2, s(name)) + attr(3, struct.pack(">I", 1))
            + attr(4 | 0x8000, b""))
what = {"table": [table(BAD), chain(BAD, b"c")],
        "chain": [table(b"t"), chain(b"t", BAD)],
        "set": [table(b"t"), set_(b"t", BAD)],
        "object": [table(b"t"), counter(b"t", BAD)],
        "own": [table(b"k3snet"), chain(b"k3snet", BAD)]}[sys.argv[1]]
head = struct.pack("=BBH", 0, 0, socket.htons(10))
messages = [(0x10, 1, head)]
messages += [((10 << 8) | kind, 1 | 4 | 0x400, struct.pack("=BBH", 1, 0, 0) + body)
             for kind, body in what]  # inet, NLM_F_REQUEST | ACK | CREATE
messages.append((0x11, 1, head))
data = b"".join(struct.pack("=IHHII", 16 + len(body), kind, flags, seq, 0) + body
                for seq, (kind, flags, body) in enumerate(messages, 1))
sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)
sock.send(data)
waiting = set(range(2, len(messages)))
while waiting:
    answer = sock.recv(65536)
    offset = 0
    while offset + 16 <= len(answer):
        length, kind, _, seq = struct.unpack_from("=IHHI", answer, offset)
        if kind == 2:
            (errno,) = struct.unpack_from("=i", answer, offset + 16)
            if errno:
                raise OSError(-errno, f"message {seq} refused")
            waiting.discard(seq)
        offset += (length + 3) & ~3
'''


def make(ns: str, what: str) -> None:
    run_in(ns, [sys.executable, "-c", MAKER, what])
    # What the test is about: libnftables' own JSON listing aborts on it.
    assert run_in(ns, ["nft", "-j", "list", "ruleset"], check=False).returncode != 0


def listed_text(ns: str) -> bytes:
    return subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "ruleset"],
                          capture_output=True, check=True, timeout=60).stdout


def k3snet(ns: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "k3snet", "observe", "--netns", ns, *args],
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("what", ["table", "chain", "set", "object"])
@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_a_foreign_name_not_utf8_leaves_the_other_tables_unjudged_with_a_warning(
        ns: str, what: str, backend: str) -> None:
    make(ns, what)
    if what in ("set", "object"):
        # Listed only with a chain of its table, which k3snet lists when it is a base chain.
        run_in(ns, ["nft", "add chain inet t f { type filter hook forward priority 0; }"])
    done = k3snet(ns, "--backend", backend)
    assert done.returncode == 0, done.stderr
    assert "not UTF-8" in done.stderr
    assert re.search(rf"{what} (inet )?\$'{re.escape(BAD)}'", done.stderr), done.stderr
    assert "Assertion" not in done.stderr
    # The object is left as it was: nft's text listing still shows it.
    assert b"bad\xff\xfe" in listed_text(ns)


def test_a_name_not_utf8_in_k3snets_own_table_is_an_error_naming_its_deletion(ns: str) -> None:
    with NftablesBackend(ns) as backend:
        wanted = State(owned=[MasqueradeRule("10.42.0.0/16")])
        backend.apply(plan(backend.observe(), wanted))
    make(ns, "own")
    done = k3snet(ns, "--backend", "nftables")
    assert done.returncode == 1, done.stderr
    assert f"chain $'{BAD}' of table inet k3snet" in done.stderr, done.stderr
    command = re.search(r"\(nft (delete chain inet k3snet handle \d+)\)", done.stderr)
    assert command is not None, done.stderr
    run_in(ns, ["nft", *command.group(1).split()])
    done = k3snet(ns, "--backend", "nftables")
    assert done.returncode == 0, done.stderr
    assert "not UTF-8" not in done.stderr
    assert "10.42.0.0/16" in done.stdout
