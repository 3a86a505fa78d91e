"""What k3snet prints or logs of a text it did not choose is one line of printable characters.

Another program names an nftables table or chain (any text but a NUL through the JSON
API), an interface (any byte but ``/``, ``:`` and white space), writes a rule comment, an
API server's error or a custom backend's warning: a line break in it forged a line of
``k3snet plan`` (``verdict: reaches``) or a record of the agent's log, and an escape
sequence (``ESC [2K`` erases the line, ``ESC ]52`` sets the clipboard) or a
bidirectional override reached the terminal of whoever read them. One escape,
:func:`k3snet.model.printable`, for every printer: the plan's foreign objects, the CLI's
warning, problem and error lines, both logs' text records and their tracebacks.
"""

from __future__ import annotations

import ast
import io
import json
import logging
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from k3snet import MemoryBackend, State, _logline, register_backend
from k3snet._logline import one_line, printable_lines, shell_join, shell_word
from k3snet.agent import configure_logging
from k3snet.backends.registry import unregister_backend
from k3snet.cli import main
from k3snet.errors import BackendError, CheckError, Problem
from k3snet.lab.netns import run_in, temporary_netns
from k3snet.model import ForwardBlock, MasqueradeRule, printable

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"
# What reaches a terminal or begins a line: ESC, BEL, the C1 CSI, every line break
# str.splitlines() knows (a reader's too), a bidirectional override, a lone surrogate.
HOSTILE = ["\x1b[2K", "\x1b]52;c;ZWNobyBoaQ==\x07", "\x9b31m", "\n", "\r", "\x0b", "\x0c",
           "\x1c", "\x85", "\u2028", "\u2029", "\u202e", "\u2066", "\x00", "\ud800", "\t",
           "\\", "é", "\U0001f600", " ", "verdict: reaches", "2026-01-01 ERROR forged"]
TEXT = st.one_of(st.text(), st.lists(st.sampled_from(HOSTILE), max_size=20).map("".join))


def _safe(line: str) -> bool:
    """No character of ``line`` can act on a terminal or end it as a line."""
    return line.isprintable() and len(line.splitlines()) <= 1


@given(TEXT)
@example("x\x1b[2Kverdict: reaches\nforged")
def test_printable_is_one_line_of_printable_characters_whatever_the_text(text: str) -> None:
    shown = printable(text)
    assert _safe(shown)
    assert one_line(text) == shown


@given(st.text())
@example("C:\\dir")
def test_printable_leaves_printable_text_without_a_backslash_as_it_is(text: str) -> None:
    assert (printable(text) == text) is (text.isprintable() and "\\" not in text)


def _read_back(shown: str) -> str:
    # As a person reads an escape: the body of a Python string literal.
    return ast.literal_eval('"' + shown.replace('"', '\\"') + '"')  # type: ignore[no-any-return]


@given(TEXT)
@example("\\x1b[2J")
@example("\\\x1b")
@example("\\u202e\\n")
def test_printable_is_read_back_as_the_text_itself_so_no_two_texts_print_alike(
        text: str) -> None:
    # A foreign text holding a backslash and "x1b" printed as k3snet's escape of an
    # ESC: a reader (and a script comparing lines) could not tell the two apart.
    assert _read_back(printable(text)) == text
    assert printable("\\x1b") != printable("\x1b")


@given(TEXT)
def test_printable_writes_each_character_it_escapes_as_python_does(text: str) -> None:
    # The escape is Python's own (\x1b, \n, \u202e, \udcff): read back by a person as such.
    for char in text:
        want = char if char.isprintable() and char != "\\" else repr(char)[1:-1]
        assert printable(char) == want


@given(TEXT)
@example("refused:\n  a: x\nverdict: reaches\n  b: \x1b[2J")
def test_printable_lines_begin_no_line_at_the_margin_but_the_first(text: str) -> None:
    first, *rest = printable_lines(text).split("\n")
    assert _safe(first)
    assert all(_safe(line) and line.startswith(" ") for line in rest)


# The characters str.isprintable takes, drawn as such: Unicode's Other and Separator
# categories but the ASCII space (Python's definition). Any text filtered by it threw most
# draws away, and kept a third of the lines and half of the characters these reach.
_PRINTABLE = st.characters(exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"),
                           include_characters=" ")


@given(st.lists(st.text(_PRINTABLE, min_size=1).filter(str.isprintable), min_size=1))
def test_printable_lines_keep_the_indented_lines_k3snet_makes(lines: list[str]) -> None:
    text = "\n  ".join(lines)
    assert printable_lines(text) == text


@given(message=TEXT, extra=TEXT, fmt=st.sampled_from(["text", "json"]))
@example(message="x\x1b[2J\x0bERROR forged", extra="\u202e", fmt="text")
def test_every_agent_log_line_is_printable_whatever_its_message_extras_and_traceback(
        message: str, extra: str, fmt: str) -> None:
    stream = io.StringIO()
    logger = configure_logging("node-1", fmt, stream=stream)  # type: ignore[arg-type]
    try:
        logger.warning("pass: %s", message, extra={"reason": extra})
        try:
            raise BackendError(f"the API server said {message}")
        except BackendError:
            logger.error("pass failed", exc_info=True)
    finally:
        configure_logging("node-1", "text", stream=io.StringIO())
    for line in stream.getvalue().removesuffix("\n").split("\n"):
        assert _safe(line), line


class _Hostile(MemoryBackend):
    """A backend whose warnings, check problems and logs quote what another program
    wrote: a table name holding a line break and escape sequences."""

    NAME = "inet t\x1b[2Kx\nverdict: reaches \u202ec\x1b[31m"

    @property
    def warnings(self) -> tuple[str, ...]:
        return (f"nftables: {self.NAME} may drop k3snet's traffic",)

    def observe(self) -> State:
        logging.getLogger("k3snet.backends.nftables").warning("nftables: %s", self.NAME)
        try:
            raise ValueError(self.NAME)
        except ValueError:
            logging.getLogger("k3snet.backends.nftables").warning("read", exc_info=True)
        return super().observe()

    def check(self, plan: object) -> tuple[str, ...]:
        return (f"{self.NAME} holds the name",)


class _Failing(MemoryBackend):
    def observe(self) -> State:
        raise BackendError(f"libnftables: {_Hostile.NAME}")


@pytest.fixture
def hostile() -> Iterator[None]:
    register_backend("memory-hostile", _Hostile)
    register_backend("memory-failing", _Failing)
    try:
        yield
    finally:
        unregister_backend("memory-hostile")
        unregister_backend("memory-failing")


def _lines(out: str) -> list[str]:
    # As a terminal and a log collector split them: at "\n" (other breaks are checked).
    return out.removesuffix("\n").split("\n") if out else []


@pytest.mark.usefixtures("hostile")
@pytest.mark.parametrize("argv", [
    ["plan", "-v"],
    ["plan", "-v", "--log-format", "json"],
    ["apply", "--dry-run", "--auto-approve"],
])
def test_cli_prints_a_foreign_name_on_one_printable_line(
        argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    main([*argv, "-f", str(SEED), "--no-facts", "--backend", "memory-hostile"])
    out, err = capsys.readouterr()
    for line in _lines(out) + _lines(err):
        assert _safe(line), line
        assert not line.startswith("verdict")
    assert out.count("verdict: reaches") >= 1


@pytest.mark.usefixtures("hostile")
@pytest.mark.parametrize("command", ["plan", "observe"])
def test_cli_prints_a_backend_error_quoting_a_foreign_name_printable(
        command: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [command, "--backend", "memory-failing"]
    if command == "plan":
        argv += ["-f", str(SEED), "--no-facts"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("k3snet: error: libnftables: inet t\\x1b[2Kx\\nverdict")
    assert all(_safe(line) for line in _lines(err))


def test_a_problem_quoting_foreign_text_is_one_printable_line() -> None:
    problem = Problem(f"a\x1b[2J{_Hostile.NAME}", f"the table {_Hostile.NAME} is not k3snet's")
    assert _safe(str(problem))


@pytest.mark.usefixtures("hostile")
def test_cli_keeps_the_lines_of_an_error_listing_problems_and_escapes_the_others(
        capsys: pytest.CaptureFixture[str]) -> None:
    class _Refusing(MemoryBackend):
        def observe(self) -> State:
            raise CheckError("the check failed:", [f"x {_Hostile.NAME}", "y\n  indented"])

    register_backend("memory-refusing", _Refusing)
    try:
        assert main(["plan", "-f", str(SEED), "--no-facts", "--backend",
                     "memory-refusing"]) == 1
    finally:
        unregister_backend("memory-refusing")
    err = [line for line in _lines(capsys.readouterr().err) if "check failed" in line
           or line.startswith(" ")]
    assert err[0] == "k3snet: error: the check failed:"
    assert err[1] == "  x inet t\\x1b[2Kx\\nverdict: reaches \\u202ec\\x1b[31m"
    assert err[2:] == ["  y\\n  indented"]
    assert all(_safe(line) for line in err)


@given(problem=TEXT)
@example(problem="t\n  the check found no problem\n")
@example(problem="a\\x1b[2J")
def test_a_check_problem_is_one_line_of_the_error_escaped_once_whatever_it_quotes(
        problem: str) -> None:
    # A backend's check quotes a foreign table's name: a line break and spaces in it
    # began a line that read as another problem (printable_lines keeps "\n  ").
    error = CheckError("the check failed:", [problem, "next"])
    lines = str(error).split("\n")
    assert lines == ["the check failed:", f"  {printable(problem)}", "  next"]
    assert error.problems == (problem, "next")
    assert _read_back(lines[1][2:]) == problem


@given(text=TEXT)
@example(text="-A FORWARD -m comment --comment \"a\\x1b[2J\" -j DROP\x1b[2J")
def test_observe_and_a_note_print_a_foreign_rule_s_text_escaped_once(text: str) -> None:
    # The model keeps a foreign rule's text escaped (printable); observe and a plan's note
    # printed it escaped again, and its ESC (\x1b) read \\x1b, a backslash the rule held.
    from k3snet.planner import Note  # noqa: PLC0415

    if not text.split():
        return
    block = ForwardBlock(4, "drop", text, "FORWARD")
    listed = State(foreign=[block]).render().split("\n")[-1]
    assert listed == f"  {block.describe()}"
    note = Note("conflict", MasqueradeRule("10.42.0.0/16"), block).render().split("\n")[1]
    assert note == f"    (conflicts with foreign: {block.describe()})"
    assert _safe(listed)
    assert _safe(note)


def test_observe_tells_a_foreign_rule_s_esc_from_the_backslash_it_holds() -> None:
    block = ForwardBlock(4, "drop", "a\\x1b b\x1b", "FORWARD")
    assert State(foreign=[block]).render().split("\n")[-1] == \
        "  drop by FORWARD: a\\\\x1b b\\x1b"


def test_cli_prints_a_spec_problem_escaped_once(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A Problem escapes the key it quotes; the CLI escaped the error's message again, and
    # the key's ESC (\x1b) read \\x1b: a backslash the spec held.
    spec = tmp_path / "spec.yaml"
    spec.write_text('apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"x\\e\\\\y": 1\n')
    assert main(["validate", "-f", str(spec)]) != 0
    err = capsys.readouterr().err
    assert "x\\x1b\\\\y" in err, err
    assert "\\\\x1b" not in err


def _argv_bytes(word: str) -> bytes:
    # The bytes the command line gets of a word: a name of the kernel that is not UTF-8
    # read as lone surrogates (\udc80-\udcff, one a byte); another surrogate (a JSON
    # "\ud800") as its UTF-8.
    return b"".join(char.encode("utf-8", "surrogateescape" if "\udc80" <= char <= "\udcff"
                                else "surrogatepass") for char in word)


def _shell_reads(command: str) -> list[bytes]:
    """The words a real shell gives a command of ``command``'s (its argv)."""
    done = subprocess.run(["bash", "-c", "printf '%s\\0' " + command], capture_output=True,
                          check=True, timeout=60)
    return done.stdout.split(b"\0")[:-1]


WORDS = st.lists(st.sampled_from([*HOSTILE, "'", '"', "$", "`", "\udc9b", "x"]),
                 min_size=1, max_size=8).map("".join).filter(lambda w: "\x00" not in w)


@given(st.lists(WORDS, min_size=1, max_size=4))
@example(["e\x1b[2Jx", "b\udc9b\x07y", "c\x07\\z", "it's", "\x9b31m", "a\rb"])
def test_a_shown_command_is_read_by_the_shell_as_the_very_words_on_one_printable_line(
        words: list[str]) -> None:
    # shlex.join sent an interface's or a foreign table's ESC raw to the terminal;
    # escaped for it inside single quotes, the shell kept the backslash: another name.
    command = shell_join(words)
    assert _safe(command)
    assert _shell_reads(command) == [_argv_bytes(word) for word in words]
    assert all(shell_word(word) == shlex.quote(word) for word in words
               if word.isprintable() and "\\" not in word)


@given(st.lists(WORDS, min_size=1, max_size=3), TEXT)
def test_a_command_in_a_message_is_printed_as_it_runs_and_the_rest_escaped(
        words: list[str], text: str) -> None:
    # A backend's warning quoting foreign names and the command that lists them is
    # escaped whole as it is printed (printable): the command's backslashes doubled, it
    # named another table. They stay single; the rest is escaped as ever.
    command = shell_join(words)
    shown = printable(f"{text} (`{command}` shows it)")
    assert _safe(shown)
    assert shown.endswith(f"(`{command}` shows it)")
    assert shown == printable(text) + f" (`{command}` shows it)"
    restart = f"kubectl -n {shell_word(words[0])} rollout restart daemonset/{command}"
    assert printable(f"{text}: {restart}") == f"{printable(text)}: {restart}"


def test_a_command_past_the_process_s_word_limit_is_still_printed_as_it_runs() -> None:
    # Past _SHOWN_LIMIT words (a long-running agent), shell_word's words were no longer
    # kept: printable() doubled their backslashes and the command pasted named another
    # table. The most recent words are kept, the oldest forgotten.
    for i in range(_logline._SHOWN_LIMIT + 100):
        shell_word(f"limit-{i}\x1b")
    late = "run `nft list table ip " + shell_word("late\x1b") + "`"
    assert printable(late) == late
    again = "run `nft list table ip " + shell_word("limit-0\x1b") + "`"  # again: recent
    assert printable(again) == again
    assert len(_logline._SHOWN_WORDS) <= _logline._SHOWN_LIMIT


class _NotScanned(dict[str, None]):
    def __iter__(self) -> Iterator[str]:
        raise AssertionError("every word written read for one line")


def test_printable_finds_the_words_of_a_line_without_reading_every_word_written(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # With the list full, each line to escape compared every word written with it:
    # 25 us a line became 1.1 ms. The line's own $'...' words are looked up instead.
    for i in range(_logline._SHOWN_LIMIT):
        shell_word(f"scan-{i}\x1b")
    word = shell_word("mine\x1b")
    kept = _NotScanned.fromkeys(list(_logline._SHOWN_WORDS))
    monkeypatch.setattr(_logline, "_SHOWN_WORDS", kept)
    line = f"a\x07 `nft list table ip {word}` and $'not\\x1b' `x $'y\\'z' ip/{word}`"
    assert printable(line) == (
        "a\\x07 `nft list table ip " + word + "` and $'not\\\\x1b' `x $'y\\\\'z' ip/" + word + "`")


def test_words_written_while_other_threads_print_are_kept_without_an_error() -> None:
    # The agent's threads log while one writes a word: printing reads the words while
    # shell_word adds one and forgets the oldest.
    import threading  # noqa: PLC0415 - this test only

    failed: list[BaseException] = []

    def write(start: int) -> None:
        try:
            for i in range(start, start + 2 * _logline._SHOWN_LIMIT):
                word = shell_word(f"thread-{i}\x1b")
                printable(f"`{word}` \x07")
        except BaseException as exc:  # noqa: BLE001 - said by the assertion below
            failed.append(exc)

    threads = [threading.Thread(target=write, args=(n * 100_000,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failed == []
    assert len(_logline._SHOWN_WORDS) <= _logline._SHOWN_LIMIT


@pytest.mark.kernel
@pytest.mark.usefixtures("require_root")
def test_plan_prints_a_real_foreign_table_and_chain_name_escaped() -> None:
    # nft's JSON input takes any name: a table whose name holds a line break and escapes,
    # its forward chain dropping by default (the nftables backend's warning names it).
    name = "t\x1b[2Kx\nverdict: reaches"
    batch = ('{"nftables": [{"add": {"table": {"family": "inet", "name": %s}}}, '
             '{"add": {"chain": {"family": "inet", "table": %s, "name": "c\\u001b[31m", '
             '"type": "filter", "hook": "forward", "prio": 0, "policy": "drop"}}}]}')
    quoted = '"t\\u001b[2Kx\\nverdict: reaches"'
    assert name.encode("unicode_escape") == b"t\\x1b[2Kx\\nverdict: reaches"
    with temporary_netns("escapes") as ns:
        run_in(ns, ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"])
        run_in(ns, ["ip", "link", "set", "eth0", "up"])
        run_in(ns, ["ip", "addr", "add", "192.168.1.2/24", "dev", "eth0"])
        subprocess.run(["ip", "netns", "exec", ns, "nft", "-j", "-f", "-"], check=True,
                       input=(batch % (quoted, quoted)).encode(), timeout=60)
        done = subprocess.run(
            [sys.executable, "-m", "k3snet", "plan", "-f", str(SEED), "--netns", ns,
             "--backend", "netlink", "--backend", "nftables", "--no-facts"],
            capture_output=True, timeout=300, check=False)
        out = done.stdout.decode()
        assert done.returncode in (2, 4), done.stderr
        warned = [line for line in _lines(out)
                  if line.startswith("!! warning: nftables: inet t")]
        assert warned, out
        assert "inet t\\x1b[2Kx\\nverdict: reaches chain c\\x1b[31m" in warned[0]
        assert all(_safe(line) for line in _lines(out) + _lines(done.stderr.decode()))
        # The command it names, pasted into a shell, lists the very table and chain (it
        # named 'inet t\x1b[2Kx...' with a backslash; then byte for byte, but nft's
        # command line refuses such a name: "syntax error, unexpected junk").
        command = warned[0].rpartition("(`")[2].partition("`")[0]
        listed = subprocess.run(["bash", "-c", command], capture_output=True, check=True,
                                timeout=60).stdout
    chains = [item["chain"] for item in json.loads(listed)["nftables"] if "chain" in item]
    assert [(c["family"], c["table"], c["name"], c["policy"]) for c in chains] == [
        ("inet", name, "c\x1b[31m", "drop")]


@given(reason=TEXT)
@example(reason="x\x1b[2J\n= route 10.0.0.0/8 met\n    (met by foreign: forged)")
def test_a_note_says_its_reason_on_one_printable_line_whatever_it_holds(reason: str) -> None:
    # A plan file's note (Plan.from_dict) or a custom backend's conflict gives the reason.
    from k3snet.model import MasqueradeRule  # noqa: PLC0415
    from k3snet.planner import Note  # noqa: PLC0415

    class _Quoting(MasqueradeRule):
        def describe(self) -> str:  # a custom kind's text of another program's rule
            return f"-A X {reason}"

    note = Note("conflict", MasqueradeRule("10.42.0.0/16"), _Quoting("10.42.0.0/16"),
                reason=reason)
    lines = note.render().split("\n")
    assert len(lines) == 3
    assert all(_safe(line) for line in lines)


@given(name=TEXT)
@example(name="p\x1b[2J\n  forged-pool 10.0.0.0/8")
def test_observe_lists_a_foreign_object_on_one_printable_line_whatever_it_quotes(
        name: str) -> None:
    # `k3snet observe` prints State.render(): an IPPool k3snet could not read is named as
    # the API server gave it (CalicoPools.invalid), written as it was.
    from k3snet.model.cni import CalicoPools  # noqa: PLC0415

    lines = State(foreign=[CalicoPools(invalid=[(name or "x", "unreadable")])]).render()
    assert lines.split("\n")[:2] == ["owned (0):", "foreign (1):"]
    assert len(lines.split("\n")) == 3
    assert all(_safe(line) for line in lines.split("\n"))
