"""A spec file rewritten in place is taken only once it has settled: the agent never puts
a half-written spec in force (its first destinations alone, the others' routes deleted
and put back a pass later)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from k3snet.agent import (
    SPEC_SETTLE,
    SPEC_SETTLE_LIMIT,
    Agent,
    AgentMetrics,
    AgentOptions,
    FileSpecSource,
)
from k3snet.backends.group import BackendGroup
from k3snet.backends.memory import MemoryBackend
from k3snet.spec.load import refuse_foreign_spec
from k3snet.spec.source import read_text

from .desired import COMPILED

HEAD = """\
apiVersion: k3snet.io/v1alpha1
kind: EgressSpec
destinations:
  - cidr: 192.168.2.0/24
"""
TAIL = "  - cidr: 172.20.0.0/16\n"
WHOLE = HEAD + TAIL
NODE_KINDS = ("route", "sysctl", "nat", "forward")


class Clocks:
    """The source's wall clock and monotonic clock, and its sleep, which moves both on
    (none sleeps for real); ``on_sleep`` runs at each sleep (a writer going on)."""

    def __init__(self, wall: float) -> None:
        self.wall, self.now = wall, 1000.0
        self.slept: list[float] = []
        self.on_sleep: list[object] = []

    def clock(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.slept.append(seconds)
        self.advance(seconds)
        for action in self.on_sleep:
            action()  # type: ignore[operator]

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.now += seconds


class Node:
    """An agent over one MemoryBackend, its spec in a file it reads with ``source``."""

    def __init__(self, path: Path, source: FileSpecSource) -> None:
        self.memory = MemoryBackend(capabilities=NODE_KINDS)
        self.metrics = AgentMetrics()
        self.agent = Agent(source, lambda spec: BackendGroup([self.memory]), COMPILED,
                           AgentOptions("node-1", interval=3600.0), metrics=self.metrics)
        self.path = path

    def routes(self) -> list[str]:
        """The destinations the node's objects serve now (their masquerade and forward)."""
        owned = [str(o) for o in self.memory.state.owned]
        return sorted(c for c in ("192.168.2.0/24", "172.20.0.0/16")
                      if any(c in o for o in owned))


def _old(path: Path, text: str) -> float:
    """Write ``text`` to ``path``, modified an hour ago; the time it was modified."""
    path.write_text(text)
    then = path.stat().st_mtime - 3600
    os.utime(path, (then, then))
    return then


def test_a_spec_file_half_written_while_open_for_writing_is_not_put_in_force(
        tmp_path: Path) -> None:
    # /tmp/auditb-partial.sh: `cmd > spec.yaml` with a slow cmd, scp, an editor writing
    # in place: truncated, then half written, the rest seconds later. The agent put the
    # half in force (the second destination's route deleted), then the whole back.
    path = tmp_path / "spec.yaml"
    _old(path, WHOLE)
    source = FileSpecSource(path)  # settle 0 (conftest): the file's times play no part here
    node = Node(path, source)
    assert node.agent.run_pass().status == "ok"
    assert node.routes() == ["172.20.0.0/16", "192.168.2.0/24"]
    with path.open("w") as writer:  # truncated: empty, then the first destination alone
        writer.write(HEAD)
        writer.flush()
        for _ in range(3):
            result = node.agent.run_pass()
            assert (result.status, result.applied) == ("ok", ())
            assert node.agent.generation == 1
            assert node.routes() == ["172.20.0.0/16", "192.168.2.0/24"]
            assert source.read_again_in is not None
        writer.write(TAIL + "masquerade:\n  mode: destinations\n")
    result = node.agent.run_pass()  # closed: the whole new text goes in force
    assert result.status == "ok"
    assert node.agent.generation == 2
    assert node.routes() == ["172.20.0.0/16", "192.168.2.0/24"]
    assert source.read_again_in is None


def test_a_new_spec_text_goes_in_force_only_once_modified_the_settle_time_ago(
        tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    then = _old(path, HEAD)
    clocks = Clocks(then + 3600)
    source = FileSpecSource(path, settle=SPEC_SETTLE, clock=clocks.clock,
                            monotonic=clocks.monotonic, sleep=clocks.sleep)
    node = Node(path, source)
    assert node.agent.run_pass().status == "ok"
    assert clocks.slept == []  # an old file: taken at once
    path.write_text(WHOLE)  # closed at once, but `cat a > f; cat b >> f` writes on
    clocks.wall = path.stat().st_mtime + 0.25
    result = node.agent.run_pass()
    assert (result.status, node.agent.generation, node.routes()) == ("ok", 1, ["192.168.2.0/24"])
    assert source.read_again_in == pytest.approx(SPEC_SETTLE - 0.25)
    clocks.advance(SPEC_SETTLE - 0.25)
    assert node.agent.run_pass().status == "ok"
    assert (node.agent.generation, node.routes()) == (2, ["172.20.0.0/16", "192.168.2.0/24"])
    assert source.read_again_in is None


def test_a_text_read_while_the_file_changed_is_not_taken(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "spec.yaml"
    _old(path, WHOLE)
    source = FileSpecSource(path)
    node = Node(path, source)
    assert node.agent.run_pass().status == "ok"
    real = refuse_foreign_spec
    writes = [TAIL]

    def written_meanwhile(file: Path, *, invoker: int | None = None) -> str | None:
        text = real(file, invoker=invoker)
        if writes:  # the writer goes on once the agent has read (and closes the file)
            with path.open("a") as writer:
                writer.write(writes.pop())
        return text

    monkeypatch.setattr("k3snet.agent._spec_source.refuse_foreign_spec", written_meanwhile)
    path.write_text(HEAD)  # the first destination alone, the second written during the read
    assert node.agent.run_pass().status == "ok"
    assert (node.agent.generation, node.routes()) == (1, ["172.20.0.0/16", "192.168.2.0/24"])
    assert source.read_again_in is not None
    assert node.agent.run_pass().status == "ok"  # the same whole text: nothing new
    assert (node.agent.generation, node.routes()) == (1, ["172.20.0.0/16", "192.168.2.0/24"])


def test_the_first_read_waits_for_a_file_being_written_then_takes_the_whole(
        tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    writer = path.open("w")
    try:
        writer.write(HEAD)
        writer.flush()
        clocks = Clocks(path.stat().st_mtime + 3600)
        done = []

        def finish() -> None:  # the writer ends during the agent's second wait
            if len(clocks.slept) == 2:
                writer.write(TAIL)
                writer.close()
                done.append(clocks.now)

        clocks.on_sleep.append(finish)
        source = FileSpecSource(path, settle=SPEC_SETTLE, clock=clocks.clock,
                                monotonic=clocks.monotonic, sleep=clocks.sleep)
        node = Node(path, source)
        assert node.agent.run_pass().status == "ok"
    finally:
        writer.close()
    assert done
    assert (node.agent.generation, node.routes()) == (1, ["172.20.0.0/16", "192.168.2.0/24"])
    assert sum(clocks.slept) < SPEC_SETTLE_LIMIT


def test_the_agent_stopped_during_the_first_reads_wait_puts_nothing_in_force_at_once(
        tmp_path: Path) -> None:
    # SIGTERM (a pod deleted) while the first read waited for a file held open for
    # writing: the wait went on to SPEC_SETTLE_LIMIT (lab namespace: the agent exited
    # 8.6 s after SIGTERM), then the half-written text went in force, its route added.
    path = tmp_path / "spec.yaml"
    then = _old(path, HEAD)
    clocks = Clocks(then + 3600)
    source = FileSpecSource(path, settle=SPEC_SETTLE, clock=clocks.clock,
                            monotonic=clocks.monotonic, sleep=clocks.sleep)
    node = Node(path, source)
    clocks.on_sleep.append(node.agent.stop)  # SIGTERM during the first wait
    with path.open("a"):
        result = node.agent.run_pass()
    assert result.status == "failed"
    assert "stopped while waiting for the file" in result.message
    assert clocks.slept == [0.25]
    assert (node.agent.generation, node.routes()) == (0, [])


def test_a_file_held_open_for_writing_is_taken_after_the_settle_limit_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # A program keeping the file open for writing (a lock taken through it) must not keep
    # every spec out of force, nor the first read wait for ever.
    path = tmp_path / "spec.yaml"
    then = _old(path, HEAD)
    clocks = Clocks(then + 3600)
    source = FileSpecSource(path, settle=SPEC_SETTLE, clock=clocks.clock,
                            monotonic=clocks.monotonic, sleep=clocks.sleep)
    node = Node(path, source)
    with caplog.at_level(logging.DEBUG, logger="k3snet.agent"), path.open("a") as holder:
        assert node.agent.run_pass().status == "ok"
        assert SPEC_SETTLE_LIMIT <= sum(clocks.slept) < SPEC_SETTLE_LIMIT + SPEC_SETTLE
        assert node.routes() == ["192.168.2.0/24"]
        assert "has not settled for 10 s (open for writing): taken as it is" in caplog.text
        # Still held, unchanged since taken: nothing new, not read again every 0.25 s.
        assert node.agent.run_pass().status == "ok"
        assert source.read_again_in is None
        assert "being written" not in caplog.text.split("taken as it is")[-1]
        caplog.clear()
        holder.write(TAIL)
        holder.flush()
        clocks.wall = path.stat().st_mtime + 3600
        looks = 0
        while True:  # kept, read again soon, until the limit
            node.agent.run_pass()
            looks += 1
            if node.agent.generation == 2:
                break
            assert node.routes() == ["192.168.2.0/24"]
            assert looks <= SPEC_SETTLE_LIMIT / 0.25
            assert source.read_again_in is not None
            clocks.advance(source.read_again_in)
        assert node.routes() == ["172.20.0.0/16", "192.168.2.0/24"]
        assert looks > SPEC_SETTLE_LIMIT / 0.25
    said = [r for r in caplog.records if "being written (open for writing)" in r.message]
    assert [r.levelno for r in said[:1]] == [logging.INFO]  # once at info, then debug
    assert all(r.levelno == logging.DEBUG for r in said[1:])
    assert clocks.slept == pytest.approx([0.25] * 40)  # the first read's waits alone


def test_a_spec_file_modified_in_the_future_is_taken_once_unchanged_for_the_settle_time(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # A clock set apart, touch -d: its age never reaches the settle time; judged by how
    # long the agent saw it unchanged instead, and said.
    path = tmp_path / "spec.yaml"
    path.write_text(WHOLE)
    future = path.stat().st_mtime + 7200
    os.utime(path, (future, future))
    clocks = Clocks(future - 7200)
    source = FileSpecSource(path, settle=SPEC_SETTLE, clock=clocks.clock,
                            monotonic=clocks.monotonic, sleep=clocks.sleep)
    node = Node(path, source)
    with caplog.at_level(logging.WARNING, logger="k3snet.agent"):
        assert node.agent.run_pass().status == "ok"
    assert node.routes() == ["172.20.0.0/16", "192.168.2.0/24"]
    assert SPEC_SETTLE <= sum(clocks.slept) < SPEC_SETTLE_LIMIT
    assert [r.message for r in caplog.records] == [
        f"the spec file {path} is modified 7200 s in the future of this node's clock (a "
        "clock set apart, touch -d): judged by how long it stays unchanged instead"]


def test_a_spec_file_gone_is_refused_at_once(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    _old(path, WHOLE)
    clocks = Clocks(path.stat().st_mtime + 3600)
    node = Node(path, FileSpecSource(path, settle=SPEC_SETTLE, clock=clocks.clock,
                                     monotonic=clocks.monotonic, sleep=clocks.sleep))
    assert node.agent.run_pass().status == "ok"
    path.unlink()
    result = node.agent.run_pass()
    assert result.status == "spec-refused"
    assert "refused (unreadable)" in result.message
    assert clocks.slept == []


class RecordedWaits:
    """An Event stand-in recording each wait, on a clock each wait moves on."""

    def __init__(self) -> None:
        self.now = 100.0
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None
        self.waits.append(timeout)
        self.now += timeout
        return False

    def is_set(self) -> bool:
        return False


class TokenMemory(MemoryBackend):
    """A MemoryBackend with a change token that never moves (the watch looks at it)."""

    def change_token(self) -> int:
        return 0


@pytest.mark.parametrize("watch", [None, 0.25])
def test_a_spec_file_being_written_is_read_again_soon_not_an_interval_later(
        tmp_path: Path, watch: float | None, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "spec.yaml"
    _old(path, WHOLE)
    waits = RecordedWaits()
    memory = TokenMemory(capabilities=NODE_KINDS)
    metrics = AgentMetrics()
    source = FileSpecSource(path)
    agent = Agent(source, lambda spec: BackendGroup([memory]), COMPILED,
                  AgentOptions("node-1", interval=3600.0, watch=watch), metrics=metrics,
                  monotonic=lambda: waits.now)
    assert agent.run_pass().status == "ok"
    agent._wake = waits  # type: ignore[assignment]
    agent._random = lambda: 0.0
    source.read_again_in = 0.25  # as a read keeping the spec in force leaves it
    assert agent._wait_after(waits.now) is False  # no change on the node ended it
    assert sum(waits.waits) == pytest.approx(0.25)
    # The re-check's pass, finding nothing to do, is no heartbeat: at debug level.
    with caplog.at_level(logging.DEBUG, logger="k3snet.agent"):
        assert agent.run_pass().status == "ok"
    assert [(r.levelno, r.message) for r in caplog.records if "in sync" in r.message] == [
        (logging.DEBUG, "in sync: no changes")]
    assert metrics.registry.get_sample_value("k3snet_agent_sync_duration_seconds_count") == 2


@pytest.mark.parametrize(("argv", "env", "settle"), [
    ([], None, None),  # the source's own: SPEC_SETTLE (this directory's fixture sets 0)
    (["--spec-settle", "0"], None, 0.0),
    (["--spec-settle", "2.5"], "0", 2.5),  # the option over the variable
    ([], "0.25", 0.25),
])
def test_the_agent_command_s_spec_settle_is_the_option_else_the_variable_else_a_second(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str], env: str | None,
        settle: float | None) -> None:
    from k3snet.agent._main import _spec_source  # noqa: PLC0415 - this test only
    from k3snet.cli import build_parser  # noqa: PLC0415

    if env is None:
        monkeypatch.delenv("K3SNET_SPEC_SETTLE", raising=False)
    else:
        monkeypatch.setenv("K3SNET_SPEC_SETTLE", env)
    path = tmp_path / "spec.yaml"
    path.write_text("destinations:\n  - cidr: 192.168.2.0/24\n")
    args = build_parser().parse_args(["agent", "-f", str(path), *argv])
    assert args.spec_settle == settle
    source = _spec_source(args, lambda: None)
    assert isinstance(source, FileSpecSource)
    if settle is not None:
        assert source.settle == settle


@pytest.mark.parametrize("case", [
    (["--spec-settle", "-1"], None, "must be 0 or more"),
    (["--spec-settle", "nan"], None, "must be 0 or more"),
    (["--spec-settle", "inf"], None, "must be 0 or more"),
    (["--spec-settle", "soon"], None, "not a number of seconds"),
    ([], "soon", "(from $K3SNET_SPEC_SETTLE)"),
])
def test_a_spec_settle_that_is_no_time_is_a_usage_error_naming_where_it_came_from(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        case: tuple[list[str], str | None, str]) -> None:
    from k3snet.cli import build_parser  # noqa: PLC0415 - this test only

    argv, env, said = case

    if env is None:
        monkeypatch.delenv("K3SNET_SPEC_SETTLE", raising=False)
    else:
        monkeypatch.setenv("K3SNET_SPEC_SETTLE", env)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["agent", "-f", str(tmp_path / "s.yaml"), *argv])
    assert said in capsys.readouterr().err


IMPORTED = "nonMasqueradeCIDRs:\n  - 10.0.0.0/8\n  - 172.16.0.0/12\n"


class ImportingNode(Node):
    """A Node whose spec imports an ip-masq-agent config file (``imported``)."""

    def __init__(self, tmp_path: Path, **settling: object) -> None:
        self.imported = tmp_path / "ip-masq-agent"
        _old(self.imported, IMPORTED)
        path = tmp_path / "spec.yaml"
        _old(path, HEAD + f"masquerade:\n  ipMasqAgentConfig: {self.imported}\n")
        super().__init__(path, FileSpecSource(path, **settling))  # type: ignore[arg-type]

    def exempted(self) -> str:
        """The CIDRs the masquerade rule exempts."""
        rules = [str(o) for o in self.memory.state.owned if str(o).startswith("masquerade")]
        assert len(rules) == 1
        return rules[0].split(" except ")[1]


def test_an_imported_ip_masq_agent_config_written_in_place_is_taken_once_settled(
        tmp_path: Path) -> None:
    # An editor or `cp` rewriting the imported file in place (a mounted ConfigMap is
    # swapped whole): read half written, its first CIDR alone went in force, the other
    # destinations masqueraded.
    node = ImportingNode(tmp_path)
    assert node.agent.run_pass().status == "ok"
    assert node.exempted() == "10.0.0.0/8,169.254.0.0/16,172.16.0.0/12"
    with node.imported.open("w") as writer:  # truncated, then the first CIDR alone
        writer.write("nonMasqueradeCIDRs:\n  - 10.0.0.0/8\n")
        writer.flush()
        for _ in range(2):
            assert node.agent.run_pass().status == "ok"
            assert node.agent.generation == 1
            assert node.exempted() == "10.0.0.0/8,169.254.0.0/16,172.16.0.0/12"
            assert node.agent._imports_again_in is not None
        writer.write("  - 172.16.0.0/12\n  - 192.168.0.0/16\n")
    assert node.agent.run_pass().status == "ok"  # closed: the whole file goes in force
    assert node.agent.generation == 2
    assert node.exempted() == "10.0.0.0/8,169.254.0.0/16,172.16.0.0/12,192.168.0.0/16"
    assert node.agent._imports_again_in is None


def test_an_imported_file_rewritten_while_the_spec_loads_is_not_taken(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    node = ImportingNode(tmp_path)
    assert node.agent.run_pass().status == "ok"
    real = read_text
    rewrites = ["nonMasqueradeCIDRs:\n  - 10.0.0.0/8\n"]

    def rewritten_first(file: str | Path) -> str:
        if rewrites:  # truncated and half written after the agent read it whole
            Path(file).write_text(rewrites.pop())
        return real(file)

    monkeypatch.setattr("k3snet.spec.ipmasq.read_text", rewritten_first)
    _old(node.imported, IMPORTED + "  - 192.168.0.0/16\n")
    assert node.agent.run_pass().status == "ok"
    assert node.agent.generation == 1
    assert node.exempted() == "10.0.0.0/8,169.254.0.0/16,172.16.0.0/12"
    assert node.agent._imports_again_in == 0.0


def test_the_first_read_waits_for_an_imported_file_being_written(tmp_path: Path) -> None:
    node = ImportingNode(tmp_path)
    waits: list[float] = []
    with node.imported.open("w") as writer:
        writer.write("nonMasqueradeCIDRs:\n  - 10.0.0.0/8\n")
        writer.flush()

        def finish(seconds: float | None = None) -> bool:
            waits.append(seconds or 0.0)
            writer.write("  - 172.16.0.0/12\n")
            writer.close()
            return False

        node.agent._stopping.wait = finish  # type: ignore[method-assign,assignment]
        assert node.agent.run_pass().status == "ok"
    assert waits == [0.25]
    assert (node.agent.generation, node.exempted()) == (
        1, "10.0.0.0/8,169.254.0.0/16,172.16.0.0/12")


class ApiSource:
    """A spec read through the API (as ConfigMapSpecSource): each read is a GET."""

    remote = True
    where = "ConfigMap kube-system/k3snet-spec key spec.yaml"
    settle = 0.0  # the imported file's times make no wait: its writer alone does

    def __init__(self, text: str) -> None:
        self.text, self.gets = text, 0

    def read(self) -> str:
        self.gets += 1
        return self.text


def test_looking_again_at_an_imported_file_being_written_makes_no_get_of_a_configmap_spec(
        tmp_path: Path) -> None:
    # A program holding the imported file open for writing: with --spec-configmap, each
    # look again (every 0.25 s, up to SPEC_SETTLE_LIMIT, and again at each change)
    # read the spec through the API, 41 GETs in 12 s where the interval's passes make 4.
    imported = tmp_path / "ip-masq-agent"
    _old(imported, IMPORTED)
    source = ApiSource(HEAD + f"masquerade:\n  ipMasqAgentConfig: {imported}\n")
    memory = MemoryBackend(capabilities=NODE_KINDS)
    agent = Agent(source, lambda spec: BackendGroup([memory]), COMPILED,
                  AgentOptions("node-1", interval=3600.0, watch=None))
    assert agent.run_pass().status == "ok"
    with imported.open("a") as writer:
        writer.write("  - 192.168.0.0/16\n")
        writer.flush()
        assert agent.run_pass().status == "ok"  # the interval's pass: one GET
        assert (source.gets, agent.generation) == (2, 1)
        assert agent._imports_again_in is not None
        for _ in range(2):
            agent._wait_after(agent._monotonic())  # until it is worth looking again
            assert agent._rechecking
            assert agent.run_pass().status == "ok"
            assert (source.gets, agent.generation) == (2, 1)
    agent._wait_after(agent._monotonic())
    assert agent.run_pass().status == "ok"  # closed: taken, the spec as last read
    assert (source.gets, agent.generation) == (2, 2)
    owned = [str(o) for o in memory.state.owned if str(o).startswith("masquerade")]
    assert "192.168.0.0/16" in owned[0]


def test_the_agent_stopped_while_the_first_read_waits_for_an_import_counts_a_failed_read(
        tmp_path: Path) -> None:
    # SIGTERM during the first read's wait for the spec file counted in
    # k3snet_agent_spec_read_errors_total; during the wait for a file it imports, not.
    node = ImportingNode(tmp_path)

    def stopped(seconds: float | None = None) -> bool:
        node.agent.stop()
        return True

    node.agent._stopping.wait = stopped  # type: ignore[method-assign,assignment]
    with node.imported.open("a"):  # held open for writing: the first read waits for it
        result = node.agent.run_pass()
    assert result.status == "failed"
    assert "stopped while waiting for the file" in result.message
    assert (node.agent.generation, node.memory.state.owned) == (0, frozenset())
    assert node.metrics.registry.get_sample_value(
        "k3snet_agent_spec_read_errors_total", {"reason": "other"}) == 1


def test_an_imported_file_still_changing_at_the_settle_limit_is_taken_as_the_log_says(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    # An import changing all along (each look, and while the spec loads) was said "taken
    # as it is" at the settle limit, then dropped as rewritten since it settled: a new
    # spec never went in force, and the warning came again at each limit.
    node = ImportingNode(tmp_path, settle=SPEC_SETTLE, settle_limit=0.0)
    assert node.agent.run_pass().status == "ok"
    assert node.exempted() == "10.0.0.0/8,169.254.0.0/16,172.16.0.0/12"
    real = read_text

    def rewritten(file: str | Path) -> str:
        if Path(file) == node.imported:  # written again, just now, as the spec loads
            node.imported.write_text(IMPORTED + "  - 192.168.0.0/16\n")
        return real(file)

    monkeypatch.setattr("k3snet.spec.ipmasq.read_text", rewritten)
    node.imported.write_text(IMPORTED + "  - 192.168.0.0/16\n")  # just now: not settled
    with caplog.at_level(logging.WARNING, logger="k3snet.agent"):
        assert node.agent.run_pass().status == "ok"
    assert "has not settled for 0 s (modified" in caplog.text
    assert "taken as it is" in caplog.text
    assert node.agent.generation == 2
    assert node.exempted() == "10.0.0.0/8,169.254.0.0/16,172.16.0.0/12,192.168.0.0/16"


@pytest.mark.parametrize("cut", ["nonMasqueradeCIDRs:\n  - 10.0.0.0/8\n",  # a shorter list
                                 "nonMasqueradeCIDRs:\n  - 10.0"])  # no CIDR: refused
def test_an_import_taken_unsettled_then_read_cut_is_judged_again_once_it_settles(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cut: str) -> None:
    # Taken as it is at the settle limit, the import is read again as the spec loads: a
    # writer rewriting it (cp in a loop, the same text each time) had it cut mid-way then.
    # Keyed by the text taken at the limit, what loading read went in force (or was
    # refused) under that key, and the file settling at that very text changed no key:
    # the cut list stayed in force, or the good spec refused, until the file changed.
    node = ImportingNode(tmp_path, settle=SPEC_SETTLE, settle_limit=0.0)
    assert node.agent.run_pass().status == "ok"
    whole = IMPORTED + "  - 192.168.0.0/16\n"
    real = read_text

    def cut_while_loading(file: str | Path) -> str:
        if Path(file) != node.imported:
            return real(file)
        node.imported.write_text(cut)  # truncated and half written as loading reads it
        try:
            return real(file)
        finally:
            node.imported.write_text(whole)  # and whole again just after

    monkeypatch.setattr("k3snet.spec.ipmasq.read_text", cut_while_loading)
    node.imported.write_text(whole)  # just now: not settled, taken at the limit (0 s)
    node.agent.run_pass()
    monkeypatch.setattr("k3snet.spec.ipmasq.read_text", real)
    _old(node.imported, whole)  # the writer is done: settled, the text taken at the limit
    assert node.agent.run_pass().status == "ok"
    assert node.exempted() == "10.0.0.0/8,169.254.0.0/16,172.16.0.0/12,192.168.0.0/16"


def test_a_spec_file_being_written_lists_the_users_once_a_settle_not_at_every_look(
        tmp_path: Path, user_listings: list[None]) -> None:
    # A spec in a group-writable directory, held open for writing: the agent looks at it
    # every 0.25 s until it settles, and each look's read listed every user (getpwall, a
    # directory search on a node whose users are in LDAP). Now once a settle, afresh the
    # next one; the first read's wait alike.
    if os.geteuid() != 0:
        pytest.skip("needs root to give a directory to group root")
    folder = tmp_path / "shared"
    folder.mkdir()
    os.chown(folder, 0, 0)
    folder.chmod(0o775)  # group root, which root alone has here
    path = folder / "spec.yaml"
    then = _old(path, HEAD)
    clocks = Clocks(then + 3600)
    source = FileSpecSource(path, settle=SPEC_SETTLE, clock=clocks.clock,
                            monotonic=clocks.monotonic, sleep=clocks.sleep)
    assert (source.read(), len(user_listings)) == (HEAD, 1)
    with path.open("w") as writer:
        writer.write(HEAD)
        writer.flush()
        for _ in range(8):  # the agent's passes, each when the last said to look again
            assert source.read() == HEAD
            assert source.read_again_in is not None
            clocks.advance(source.read_again_in)
        writer.write(TAIL)
    clocks.wall = path.stat().st_mtime + SPEC_SETTLE
    assert (source.read(), source.read_again_in) == (WHOLE, None)
    assert len(user_listings) == 2
    assert source.read() == WHOLE
    assert len(user_listings) == 3  # the next settle asks NSS afresh
    waiting = FileSpecSource(path, settle=SPEC_SETTLE, clock=clocks.clock,
                             monotonic=clocks.monotonic, sleep=clocks.sleep)
    with path.open("a") as writer:  # the first read waits, looking every 0.25 s
        writer.write("# more\n")
        writer.flush()

        def close_at_the_sixth_look() -> None:
            if len(clocks.slept) == 6:
                writer.close()

        clocks.on_sleep.append(close_at_the_sixth_look)
        clocks.wall = path.stat().st_mtime + SPEC_SETTLE
        assert waiting.read() == WHOLE + "# more\n"
    assert len(clocks.slept) >= 6
    assert len(user_listings) == 4
