"""A flannel ``Backend`` secret (wireguard's and ipsec's ``PSK``, tencent-vpc's
``AccessKeySecret``) is never printed: the model's ``describe``, ``str`` and ``repr``,
``k3snet plan`` (text and JSON), and the agent's refusal message, which it logs and
writes into the Node's status annotation (readable by anyone who may read Nodes), show
``<secret, N characters, sha256:XXXXXXXX>``; two values still differ. Before, the
``Backend`` JSON was printed whole, the key in it."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from k3snet.agent import Agent, AgentOptions, FileSpecSource, NodeReporter
from k3snet.agent._report import RESULT_ANNOTATION
from k3snet.backends.flannel import FlannelBackend
from k3snet.backends.flannel_read import flannel_values
from k3snet.backends.group import BackendGroup
from k3snet.backends.memory import MemoryBackend
from k3snet.cli import main
from k3snet.errors import BackendError
from k3snet.model.cni import FlannelConfig
from k3snet.model.sysctl import redact_secrets
from k3snet.testing.kube import AGENT_RESOURCES, EmulatedApiServer
from tests.agent.clock import FakeClock
from tests.agent.desired import COMPILED

PSK = "U0VDUkVUUFNLLTAxMjM0NTY3ODlhYmNkZWZnaGlqa2w="  # a WireGuard key flannel reads
CONF = {"Network": "10.42.0.0/16", "Backend": {"Type": "wireguard"}}


def _spec(more: str = "") -> str:
    return ("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"
            "cluster: {podCIDRs: [10.42.0.0/16]}\n"
            f"cni:\n  flannel:\n{more}"
            f"    backend: {{type: wireguard, options: {{PSK: {PSK}}}}}\n")


@pytest.mark.parametrize(("kind", "key"), [("wireguard", "PSK"), ("ipsec", "PSK"),
                                           ("ipsec", "psk"),
                                           ("tencent-vpc", "AccessKeySecret")])
def test_describe_str_and_repr_never_hold_a_backend_secret(kind: str, key: str) -> None:
    config = FlannelConfig("file:/etc/flannel/net-conf.json", backend_type=kind,
                           backend_options={key: PSK})
    for text in (config.describe(), config.brief(), str(config), repr(config)):
        assert PSK not in text, text
        assert f"<secret, {len(PSK)} characters, sha256:" in text, text
    # Kept verbatim in extra (a Backend the model does not read) all the same.
    verbatim = FlannelConfig.from_members("file:/x", {"Backend": {key: PSK}})
    for text in (verbatim.describe(), repr(verbatim)):
        assert PSK not in text, text
        assert "<secret, " in text, text


def test_a_changed_backend_secret_still_reads_as_changed() -> None:
    one, two = (FlannelConfig("file:/x", backend_type="wireguard",
                              backend_options={"PSK": value}) for value in (PSK, PSK + "x"))
    assert one.describe() != two.describe()
    assert FlannelConfig("file:/x", backend_type="wireguard",
                         backend_options={"MTU": 1400}).describe().endswith(
        'Backend={"Type":"wireguard","MTU":1400}')  # the rest as it was


@pytest.mark.parametrize(("kind", "value"), [("wireguard", PSK[:-2]), ("ipsec", PSK),
                                             ("wireguard", 12345678901)])
def test_a_malformed_key_is_refused_without_being_shown(kind: str, value: object) -> None:
    with pytest.raises(BackendError) as raised:
        flannel_values({"Network": "10.42.0.0/16", "Backend": {"Type": kind, "psk": value}})
    assert "Backend.PSK must be a" in str(raised.value)
    assert str(value) not in str(raised.value)
    assert "got <secret, " in str(raised.value)


@pytest.mark.parametrize("output", ["text", "json"])
def test_plan_prints_no_backend_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str],
                                       output: str) -> None:
    conf = tmp_path / "net-conf.json"
    conf.write_text(json.dumps(CONF))
    spec = tmp_path / "spec.yaml"
    spec.write_text(_spec())
    monkeypatch.setenv("K3SNET_FLANNEL_CONF", str(conf))
    assert main(["plan", "-f", str(spec), "--backend", "flannel", "--output", output]) == 2
    captured = capsys.readouterr()
    assert PSK not in captured.out + captured.err
    assert "<secret, " in captured.out


def test_a_plan_file_holding_a_backend_secret_is_readable_by_its_owner_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The file keeps the key, which `apply FILE` writes, as it keeps a secret sysctl's.
    conf = tmp_path / "net-conf.json"
    conf.write_text(json.dumps(CONF))
    spec = tmp_path / "spec.yaml"
    spec.write_text(_spec())
    saved = tmp_path / "node.plan"
    monkeypatch.setenv("K3SNET_FLANNEL_CONF", str(conf))
    old = os.umask(0o022)
    try:
        assert main(["plan", "-f", str(spec), "--backend", "flannel",
                     "--out", str(saved)]) == 2
    finally:
        os.umask(old)
    assert PSK in saved.read_text()
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600


@pytest.fixture
def server() -> Iterator[EmulatedApiServer]:
    with EmulatedApiServer(resources=AGENT_RESOURCES) as srv:
        srv.put("v1/nodes", {"metadata": {"name": "node-1"}})
        yield srv


def test_the_agents_refusal_and_node_annotation_hold_no_backend_secret(
        tmp_path: Path, server: EmulatedApiServer, caplog: pytest.LogCaptureFixture) -> None:
    conf = tmp_path / "net-conf.json"
    conf.write_text(json.dumps(CONF))
    spec = tmp_path / "spec.yaml"
    # EnableNFTables in a file K3s' flannel reads: refused (it would not read it).
    spec.write_text(_spec("    enableNFTables: true\n"))
    memory = MemoryBackend(capabilities=("route", "sysctl", "nat", "forward"))
    agent = Agent(FileSpecSource(spec),
                  lambda _: BackendGroup([memory, FlannelBackend(path=conf)]), COMPILED,
                  AgentOptions("node-1", interval=1.0, not_ready_for=0.0),
                  reporter=NodeReporter(server.api_client(), "node-1"), clock=FakeClock())
    result = agent.run_pass()
    assert result.message.startswith("refused: flannel backend refuses flannel file:"), \
        result.message
    assert "EnableNFTables" in result.message
    node = server.get("v1/nodes", "node-1")
    assert node is not None
    annotation = node["metadata"]["annotations"][RESULT_ANNOTATION]
    assert "refused: flannel backend refuses" in annotation
    for text in (result.message, annotation, caplog.text, json.dumps(node)):
        assert PSK not in text
    assert f"<secret, {len(PSK)} characters, sha256:" in result.message


def test_tencent_vpc_s_access_key_id_names_the_key_and_is_shown_its_secret_never() -> None:
    # The ID (Tencent Cloud's SecretId) travels in clear in every signed API request; the
    # secret signs them. Shown, a plan says which key it sets (docs/backends.md).
    config = FlannelConfig("file:/x", backend_type="tencent-vpc",
                           backend_options={"AccessKeyID": "AKIDexample", "AccessKeySecret": PSK})
    assert '"AccessKeyID":"AKIDexample"' in config.describe()
    assert PSK not in config.describe() + repr(config)


@pytest.mark.parametrize(("kind", "name"), [
    ("wireguard", "PresharedKey"), ("tencent-vpc", "AccessKeySecrett"), ("ipsec", "Password")])
def test_the_value_of_an_option_no_backend_reads_is_never_shown_a_misspelt_secret_being_one(
        kind: str, name: str) -> None:
    # k3snet refuses to write such a key (flannel would drop it); its refusal, a plan's
    # line and a log line showed the value, under a misspelt secret's name a secret.
    config = FlannelConfig("file:/x", backend_type=kind, backend_options={name: PSK, "MTU": 1})
    for shown in (config.describe(), repr(config), json.dumps(redact_secrets(config.to_dict()))):
        assert PSK not in shown
        assert f"<secret, {len(PSK)} characters, sha256:" in shown


def test_a_misspelt_option_s_value_that_is_no_text_is_shown_no_secret_being_one() -> None:
    config = FlannelConfig("file:/x", backend_type="vxlan",
                           backend_options={"DirectRouteing": True, "VNII": 4})
    assert '"DirectRouteing":true,"VNII":4' in config.describe()
