"""A spec whose flannel backend options flannel would not read (a misspelt option, a
value its option is not: a wireguard ``PSK`` that is no WireGuard key, an ipsec one too
short, an unknown ``Mode``) leaves flannel's config as it is on an agent,
and the rest of the node converges.

Spec loading refuses such an option (``validate``, ``render``, ``plan``, ``apply``: an
operator at a terminal gets the refusal). The agent refused the whole spec: one started
with it (after an upgrade to the release that began refusing it, on a new node) had no
spec in force and converged nothing, its routes and NAT rules included. The flannel
backend refuses those options itself (its ``expect``), so the agent now takes the spec
with them and the backend's refusal is a member refusal: the rest converged, the pass
failed ``refused``, the spec's problem logged as an error.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from k3snet.agent import Agent, AgentOptions, FileSpecSource, NodeReporter
from k3snet.agent._metrics import AgentMetrics
from k3snet.agent._report import RESULT_ANNOTATION
from k3snet.backends.flannel import FlannelBackend
from k3snet.backends.group import BackendGroup
from k3snet.backends.memory import MemoryBackend
from k3snet.cli import main
from k3snet.converge import compile_for
from k3snet.errors import SpecError
from k3snet.planner import plan
from k3snet.spec import Spec
from k3snet.spec.validate import flannel_options_left_to_backend
from k3snet.testing.kube import AGENT_RESOURCES, EmulatedApiServer
from tests.agent.clock import FakeClock

from .desired import COMPILED

NODE_KINDS = ("route", "sysctl", "nat", "forward")
BAD_PSK = "not-a-wireguard-key-but-secret"
HEAD = """\
apiVersion: k3snet.io/v1alpha1
kind: EgressSpec
cluster: {podCIDRs: [10.42.0.0/16]}
destinations:
  - {cidr: 192.168.2.0/24, gateway: 192.168.1.1, device: eth0}
"""
FLANNEL = "cni:\n  flannel:\n    backend: "
MISSPELT = HEAD + FLANNEL + "{type: vxlan, options: {DirectRouteing: true}}\n"
BAD_KEY = HEAD + FLANNEL + f"{{type: wireguard, options: {{PSK: {BAD_PSK}}}}}\n"
SHORT_IPSEC_KEY = HEAD + FLANNEL + f"{{type: ipsec, options: {{PSK: {BAD_PSK}}}}}\n"
BAD_MODE = HEAD + FLANNEL + "{type: wireguard, options: {Mode: Auto, ListenPort: -1}}\n"


@pytest.fixture
def server() -> Iterator[EmulatedApiServer]:
    with EmulatedApiServer(resources=AGENT_RESOURCES) as srv:
        srv.put("v1/nodes", {"metadata": {"name": "node-1"}})
        yield srv


def _agent(tmp_path: Path, server: EmulatedApiServer, text: str, kind: str
           ) -> tuple[Agent, MemoryBackend, Path, AgentMetrics]:
    conf = tmp_path / "net-conf.json"
    conf.write_text(json.dumps({"Network": "10.42.0.0/16", "Backend": {"Type": kind}}))
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    memory = MemoryBackend(capabilities=NODE_KINDS)
    flannel = FlannelBackend(path=conf)
    metrics = AgentMetrics()
    agent = Agent(FileSpecSource(spec), lambda _: BackendGroup([memory, flannel]), COMPILED,
                  AgentOptions("node-1", interval=1.0, not_ready_for=0.0), metrics=metrics,
                  reporter=NodeReporter(server.api_client(), "node-1"), clock=FakeClock())
    return agent, memory, conf, metrics


@pytest.mark.parametrize(("case", "said"), [
    ((MISSPELT, "vxlan", "DirectRouteing"), "DirectRouteing"),
    ((BAD_KEY, "wireguard", "PSK"), "Backend.PSK must be a WireGuard key"),
    # (ipsec: "password is too short" under 96 bytes; wireguard: "no valid Mode
    # configured", and a ListenPort it advertises as the kernel never binds it)
    ((SHORT_IPSEC_KEY, "ipsec", "PSK"), "Backend.PSK must be a string of at least 96 bytes"),
    ((BAD_MODE, "wireguard", "Mode"), "Backend.ListenPort must be an integer 1..65535"),
])
def test_an_agent_started_with_flannel_options_flannel_would_not_read_converges_the_rest(
        tmp_path: Path, server: EmulatedApiServer, caplog: pytest.LogCaptureFixture,
        case: tuple[str, str, str], said: str) -> None:
    text, kind, key = case
    agent, memory, conf, metrics = _agent(tmp_path, server, text, kind)
    before = conf.read_bytes()
    with caplog.at_level(logging.ERROR, logger="k3snet.agent"):
        result = agent.run_pass()
    assert result.status == "failed", result.message
    assert result.message.startswith("refused: flannel backend refuses flannel file:"), \
        result.message
    assert said in result.message
    assert "what flannel manages is left as it is, everything else converged" in result.message
    # The node's routes, NAT and forward rules are in place; flannel's file as it was.
    assert {"route", "nat", "forward"} <= {c.kind for c in result.applied}
    spec = agent.spec
    assert spec is not None
    with flannel_options_left_to_backend():  # (the spec compiled as the agent compiles it)
        want = compile_for(BackendGroup([memory]), spec)
    assert plan(memory.observe(), want).empty
    assert conf.read_bytes() == before
    assert metrics.registry.get_sample_value("k3snet_agent_sync_failures_total",
                                             {"reason": "refused"}) == 1
    assert metrics.registry.get_sample_value("k3snet_agent_spec_rejected_total",
                                             {"reason": "invalid"}) in (None, 0)
    # The spec's own problem is said loudly, at its path; a secret never.
    path = f"cni.flannel.backend.options.{key}"
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(path in m for m in errors), errors
    node = server.get("v1/nodes", "node-1")
    assert node is not None
    for shown in (result.message, caplog.text, json.dumps(node)):
        assert BAD_PSK not in shown
    assert "refused: flannel backend refuses" in node["metadata"]["annotations"][
        RESULT_ANNOTATION]


@pytest.mark.parametrize("text", [MISSPELT, BAD_KEY, SHORT_IPSEC_KEY, BAD_MODE])
def test_spec_loading_and_the_cli_stay_strict_on_such_options(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        text: str) -> None:
    with pytest.raises(SpecError, match=r"cni\.flannel\.backend\.options\."):
        Spec.from_yaml(text)
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    conf = tmp_path / "net-conf.json"
    conf.write_text(json.dumps({"Network": "10.42.0.0/16", "Backend": {"Type": "vxlan"}}))
    monkeypatch.setenv("K3SNET_FLANNEL_CONF", str(conf))
    for command in ("plan", "apply"):
        assert main([command, "-f", str(spec), "--backend", "flannel", "--auto-approve"]
                    if command == "apply" else
                    [command, "-f", str(spec), "--backend", "flannel"]) == 1
        assert "cni.flannel.backend.options." in capsys.readouterr().err


def test_a_flannel_option_value_flannel_stops_on_is_refused_before_the_pass_applies(
        tmp_path: Path, server: EmulatedApiServer) -> None:
    # A spec whose VNI is text: flannel's Go decoding stops on it when it starts.
    # Planned, then refused by apply alone, it failed the whole pass and rolled back the
    # node's other changes. (Spec loading refuses it now; the agent takes it, as above.)
    text = HEAD + 'cni:\n  flannel:\n    backend: {type: vxlan, options: {VNI: "4"}}\n'
    agent, _, conf, metrics = _agent(tmp_path, server, text, "vxlan")
    before = conf.read_bytes()
    result = agent.run_pass()
    assert result.message.startswith("refused: flannel backend refuses flannel file:"), \
        result.message
    assert "Backend.VNI must be an integer" in result.message
    assert {"route", "nat", "forward"} <= {c.kind for c in result.applied}
    assert conf.read_bytes() == before
    assert metrics.registry.get_sample_value("k3snet_agent_sync_failures_total",
                                             {"reason": "refused"}) == 1


@pytest.mark.parametrize(("options", "kind"), [
    ("{type: wireguard, options: {PresharedKey: %s}}", "wireguard"),
    ("{type: tencent-vpc, options: {AccessKeySecrett: %s}}", "tencent-vpc"),
    ("{type: ipsec, options: {Password: %s}}", "ipsec"),
])
def test_the_value_of_a_misspelt_option_is_never_shown_it_may_be_a_misspelt_secret(
        tmp_path: Path, server: EmulatedApiServer, caplog: pytest.LogCaptureFixture,
        options: str, kind: str) -> None:
    # A key no option reads is the flannel backend's refusal on an agent: its value, under
    # a misspelt secret's name (PresharedKey for PSK), reached the pass's message, the log
    # and the Node's annotation, readable by whoever may read Nodes.
    agent, _, _, _ = _agent(tmp_path, server, HEAD + FLANNEL + options % BAD_PSK + "\n", kind)
    with caplog.at_level(logging.INFO):
        result = agent.run_pass()
    assert result.message.startswith("refused: flannel backend refuses"), result.message
    assert f"<secret, {len(BAD_PSK)} characters, sha256:" in result.message
    node = server.get("v1/nodes", "node-1")
    for shown in (result.message, caplog.text, json.dumps(node)):
        assert BAD_PSK not in shown
