"""/healthz, /readyz and /metrics over real HTTP on 127.0.0.1 (an ephemeral port)."""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from k3snet.agent import HealthServer, parse_listen
from k3snet.model.route import Route
from k3snet.model.state import State
from k3snet.planner import Plan, plan

from .test_loop import SPEC_TWO, Node


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Node, str]]:
    node = Node(tmp_path)
    server = HealthServer("127.0.0.1", 0, healthy=node.agent.health, ready=node.agent.readiness,
                          metrics=node.metrics.exposition).start()
    try:
        yield node, f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - http on loopback
            return answer.status, answer.headers["Content-Type"], answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def _metrics(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, ctype, body = _get(url + "/metrics")
    assert status == 200
    assert ctype.startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body) for s in family.samples}


def test_healthz_is_ok_while_passes_finish(served: tuple[Node, str]) -> None:
    _node, url = served
    status, _, body = _get(url + "/healthz")
    assert (status, body.startswith("ok")) == (200, True)


def test_healthz_fails_for_a_stuck_agent(tmp_path: Path) -> None:
    now = [0.0]
    node = Node(tmp_path, stale_after=10.0)
    node.agent._monotonic = lambda: now[0]
    node.agent._heartbeat = 0.0
    server = HealthServer("127.0.0.1", 0, healthy=node.agent.health,
                          ready=node.agent.readiness, metrics=None).start()
    try:
        now[0] = 11.0
        status, _, body = _get(f"http://127.0.0.1:{server.port}/healthz")
        assert status == 503
        assert body.startswith("stuck")
        assert _get(f"http://127.0.0.1:{server.port}/metrics")[0] == 404
    finally:
        server.stop()


def test_readyz_only_after_the_first_successful_apply(served: tuple[Node, str]) -> None:
    node, url = served
    node.memory.faults.fail_at(0)
    assert node.agent.run_pass().status == "failed"
    assert _get(url + "/readyz")[0] == 503
    assert node.agent.run_pass().status == "ok"
    status, _, body = _get(url + "/readyz")
    assert status == 200
    assert "generation 1" in body
    assert _metrics(url)[("k3snet_agent_ready", ())] == 1


def test_unknown_path_is_404(served: tuple[Node, str]) -> None:
    assert _get(served[1] + "/nope")[0] == 404


def test_metrics_count_what_the_passes_did(served: tuple[Node, str]) -> None:
    node, url = served
    before = _metrics(url)
    assert before[("k3snet_agent_ready", ())] == 0
    assert ("k3snet_agent_last_success_timestamp_seconds", ()) in before
    node.agent.run_pass()
    after = _metrics(url)
    assert after[("k3snet_agent_changes_total", (("action", "add"), ("kind", "nat")))] == 1
    assert after[("k3snet_agent_changes_total", (("action", "add"), ("kind", "sysctl")))] == 1
    assert after[("k3snet_agent_sync_duration_seconds_count", ())] == 1
    assert after[("k3snet_agent_last_success_timestamp_seconds", ())] > 1.7e9
    assert after[("k3snet_agent_spec_generation", ())] == 1
    sha = node.agent.spec_sha256
    assert sha is not None
    assert after[("k3snet_agent_spec_info", (("sha256", sha),))] == 1
    # a new spec: a new generation, and the info metric names only the new one
    node.path.write_text(SPEC_TWO)
    node.agent.run_pass()
    newer = _metrics(url)
    assert newer[("k3snet_agent_spec_generation", ())] == 2
    assert [k for k in newer if k[0] == "k3snet_agent_spec_info"] == [
        ("k3snet_agent_spec_info", (("sha256", node.agent.spec_sha256),))]


def test_metrics_count_failures_conflicts_and_drift(served: tuple[Node, str],
                                                    tmp_path: Path) -> None:
    node, url = served
    node.agent.run_pass()
    nat = [c for c in plan(State(), node.memory.state).changes if c.kind == "nat"]
    node.memory.apply(Plan(changes=[c.inverse() for c in nat]))
    node.agent.run_pass()
    assert _metrics(url)[("k3snet_agent_drift_repairs_total", ())] == 1
    node.memory.apply(Plan(changes=[c.inverse() for c in nat]))
    node.memory.faults.fail_at(0)
    node.agent.run_pass()
    m = _metrics(url)
    assert m[("k3snet_agent_sync_failures_total", (("reason", "apply"),))] == 1
    assert m[("k3snet_agent_conflicts_total", ())] == 0


def test_conflicts_are_counted(tmp_path: Path) -> None:
    node = Node(tmp_path)
    # A foreign route where the spec wants its own: the plan has a conflict.
    spec_route = ("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"
                  "destinations:\n  - cidr: 192.168.2.0/24\n    gateway: 192.168.1.1\n"
                  "    device: eth0\n")
    node.path.write_text(spec_route)
    desired = node.agent._desired
    from k3snet.spec import Spec  # noqa: PLC0415

    want = desired(Spec.from_yaml(spec_route), node.agent._make_backend(
        Spec.from_yaml(spec_route)))
    route = next(o for o in want.owned if o.kind == "route")
    import attrs  # noqa: PLC0415

    # a RouteBlock has no gateway
    foreign = attrs.evolve(route, gateway=None) if isinstance(route, Route) else route
    node.memory._restore(State(foreign=[foreign]))
    result = node.agent.run_pass()
    assert result.status == "failed"
    assert result.message.startswith("conflict:")
    assert node.sample("k3snet_agent_conflicts_total") == 1
    assert node.sample("k3snet_agent_sync_failures_total", reason="conflict") == 1


def test_parse_listen() -> None:
    assert parse_listen(":9743") == ("::", 9743)
    assert parse_listen("0.0.0.0:9743") == ("0.0.0.0", 9743)  # noqa: S104 - the parser
    assert parse_listen("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_listen("[::1]:80") == ("::1", 80)
    assert parse_listen("[::]:9743") == ("::", 9743)
    assert parse_listen("node-1.example:9743") == ("node-1.example", 9743)
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_listen("9743")


@pytest.mark.parametrize("text", [
    ":99999", ":65536", ":", "127.0.0.1:", ":-1", ":+80", ":0x50", ": 80", ":9743 ",
    "[::1:80", "::1:80", "[::1]80", "[zz]:80", "[127.0.0.1]:80", "[::1]:", "[]:80",
    "host name:80", "-host:80", "host-:80", "a/b:80", "\x1b[2J:80", "localhost:080000",
])
def test_parse_listen_refuses_what_is_no_address(text: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(text))):
        parse_listen(text)


@pytest.mark.parametrize("text", [":99999", "[::1:80"])
def test_the_agent_refuses_a_bad_listen_address_as_a_usage_error(text: str) -> None:
    done = subprocess.run([sys.executable, "-m", "k3snet.cli", "agent", "-f", "/nonexistent",
                           "--listen", text, "--once"], capture_output=True, text=True,
                          check=False, timeout=120)
    assert done.returncode == 64, done.stderr
    assert "argument --listen" in done.stderr
    assert "internal error" not in done.stderr


def test_every_metric_is_listed_in_the_docs(served: tuple[Node, str]) -> None:
    """docs/agent.md's metrics table names every exported family, and nothing else."""
    _, url = served
    _, _, body = _get(url + "/metrics")
    # Nor the `<counter>_created` gauge prometheus_client's text format adds for each
    # counter's (and the histogram's) series: 32 of 89 series, undocumented.
    exported = {family.name for family in text_string_to_metric_families(body)}
    docs = (Path(__file__).resolve().parents[2] / "docs" / "agent.md").read_text()
    listed = {line.split("`")[1].split("{")[0].removesuffix("_total")
              for line in docs.splitlines() if line.startswith("| `k3snet_agent_")}
    assert exported
    assert exported == listed


@pytest.mark.parametrize("reason", ["failed: inet t\x1b[2Kx\nready: forged", "B\udcfcro"])
def test_a_probe_answers_its_reason_on_one_printable_line(tmp_path: Path, reason: str) -> None:
    # /readyz quotes a pass's failure: a foreign name's escape sequence reached curl's
    # terminal and the kubelet's event, and a lone surrogate (a rule's byte that was not
    # UTF-8) made the probe a 500.
    server = HealthServer("127.0.0.1", 0, healthy=lambda: (True, "ok"),
                          ready=lambda: (False, reason), metrics=None).start()
    try:
        status, _, body = _get(f"http://127.0.0.1:{server.port}/readyz")
    finally:
        server.stop()
    assert status == 503
    assert body.endswith("\n")
    assert body[:-1].isprintable(), body
