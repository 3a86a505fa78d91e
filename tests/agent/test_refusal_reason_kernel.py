"""A refused rule's reason is on the agent's log line, however long the rule (kernel).

Wired as ``k3snet agent --backend netlink --backend nftables`` in a fresh namespace, one
destination whose 2 000 exclusions make a NAT rule the kernel would refuse (more than
its 128 expressions): the backend refuses it before sending. Named whole, the rule took
34 KB, twice (the refusal's, then the failed change's): the line, cut at LOG_LINE_LIMIT
bytes, never came to why. Each now names the rule by its first exclusions and their
count, the reason after it on the line.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import jsonschema
import pytest

from k3snet.agent import LOG_LINE_LIMIT, configure_logging
from k3snet.lab.netns import run_in, temporary_netns
from k3snet.schemas import load_schema

pytestmark = pytest.mark.kernel

EXCLUDES = 2000


def _spec() -> str:
    # /26s every other 64 addresses: none merges with the next, 3 expressions each.
    lines = ["apiVersion: k3snet.io/v1alpha1", "kind: EgressSpec", "destinations:",
             "  - cidr: 100.64.0.0/10", "    gateway: 192.168.1.1", "    device: eth0",
             "    exclude:"]
    lines += [f"      - 100.{64 + i // 512}.{(i // 2) % 256}.{(i % 2) * 128}/26"
              for i in range(EXCLUDES)]
    return "\n".join(lines) + "\n"


def test_a_refused_rule_s_reason_is_on_the_log_line_whatever_its_exclusions_kernel(
        require_root: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from k3snet import cli  # noqa: PLC0415 - the CLI's own agent wiring, as `k3snet agent`
    from k3snet.agent import Agent, AgentOptions, FileSpecSource  # noqa: PLC0415

    monkeypatch.setenv("K3SNET_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("K3SNET_LOCK_DIR", str(tmp_path))
    stream = io.StringIO()
    with temporary_netns("refusal") as ns:
        run_in(ns, ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"])
        run_in(ns, ["ip", "link", "set", "eth1", "up"])
        run_in(ns, ["ip", "addr", "add", "192.168.1.5/24", "dev", "eth0"])
        run_in(ns, ["ip", "link", "set", "eth0", "up"])
        spec = tmp_path / "spec.yaml"
        spec.write_text(_spec())
        args = cli.build_parser().parse_args(["agent", "-f", str(spec), "--netns", ns,
                                              "--backend", "netlink", "--backend",
                                              "nftables"])
        desired = cli._AgentDesired(args)
        agent = Agent(FileSpecSource(spec), lambda s: cli._backend(args, s), desired,
                      AgentOptions("refusal", interval=60, not_ready_for=0))
        configure_logging("refusal", "json", stream=stream)
        try:
            result = agent.run_pass()
            ruleset = json.loads(run_in(ns, ["nft", "-j", "list", "ruleset"]).stdout)
        finally:
            configure_logging("refusal", "text", stream=io.StringIO())
            agent.shutdown()
            desired.close()
    assert result.status == "failed"
    # Nothing sent: the kernel holds no NAT rule of k3snet's.
    assert not [item for item in ruleset["nftables"]
                if "rule" in item and "masquerade" in json.dumps(item["rule"]["expr"])]
    lines = [json.loads(line) for line in stream.getvalue().splitlines()
             if "pass failed" in line]
    assert len(lines) == 1
    (record,) = lines
    jsonschema.validate(record, load_schema("log"))
    line = stream.getvalue().splitlines()[-1]
    assert len(line.encode()) + 1 <= LOG_LINE_LIMIT
    message = record["message"]
    assert "more characters)" not in message  # said whole, not cut
    assert "its nftables rule would hold 6010 expressions" in message
    assert "the kernel takes at most 128 in one rule" in message
    assert f"100.64.1.0/26,... ({EXCLUDES} prefixes) oif eth0" in message
    assert message.count("100.64.1.128/26") == 0  # the fourth exclusion on: counted
