"""Thousands of foreign accepts by address, read from a real kernel in a linear number of
questions (iptables-nft, iptables-legacy, nftables; IPv4 and IPv6).

A firewall script accepting each customer network (``-s 10.x.y.0/24 -j ACCEPT``) and the
replies of established connections: each accept is the pods' way out to anywhere
(``ForwardRule(10.x.y.0/24, 0.0.0.0/0)``), and reading that asked every accept about
every other (4 million questions at 2 000 rules; a legacy observe took 6 s at 2 000 and
160 s at 10 000). What the kernel lists is checked first (``iptables-save``, ``nft -j
list ruleset``), then what the backend read and how many questions it asked.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
from collections.abc import Iterator
from typing import Literal

import pytest

from k3snet.backends.iptables import IptablesBackend, foreign
from k3snet.backends.nftables import NftablesBackend, parse
from k3snet.lab.netns import run_in, temporary_netns
from k3snet.model import ForwardRule
from tests.backends.test_reply_index import counted

COUNT = 2_000


@pytest.fixture
def ns(require_root: None) -> Iterator[str]:
    with temporary_netns("manyacc") as name:
        yield name


def _networks(family: int) -> list[str]:
    if family == 4:
        return [f"10.{i // 256}.{i % 256}.0/24" for i in range(COUNT)]
    return [f"fd00:{i:x}::/64" for i in range(COUNT)]


def _expected(family: int) -> set[ForwardRule]:
    anywhere = "0.0.0.0/0" if family == 4 else "::/0"
    return {ForwardRule(net, anywhere) for net in _networks(family)}


@pytest.mark.parametrize("mode", ["nft", "legacy"])
@pytest.mark.parametrize("family", [4, 6])
def test_iptables_reads_thousands_of_accepts_in_questions_linear_in_them(
        ns: str, mode: Literal["nft", "legacy"], family: int,
        monkeypatch: pytest.MonkeyPatch) -> None:
    tool = f"{'ip' if family == 4 else 'ip6'}tables-{mode}"
    if shutil.which(f"{tool}-restore") is None:
        pytest.skip(f"{tool}-restore is not installed")
    rules = [f"-A FORWARD -s {net} -j ACCEPT" for net in _networks(family)]
    text = "\n".join(["*filter", ":FORWARD DROP [0:0]", *rules,
                      "-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                      "COMMIT", ""])
    run_in(ns, [f"{tool}-restore"], input_text=text)
    saved = run_in(ns, [f"{tool}-save"]).stdout
    assert sum(line.startswith("-A FORWARD -s ") for line in saved.splitlines()) == COUNT
    answers = counted(monkeypatch, foreign, "_answers")
    errors = counted(monkeypatch, foreign, "_takes_errors")
    state = IptablesBackend(netns=ns, mode=mode).observe()
    assert {o for o in state.foreign if isinstance(o, ForwardRule)} >= _expected(family)
    assert len(answers) <= 2 * COUNT  # (every pair: 4 million)
    assert len(errors) <= 2 * COUNT
    assert run_in(ns, [f"{tool}-save"]).stdout.splitlines()[2:-2] == saved.splitlines()[2:-2]


@pytest.mark.parametrize("family", [4, 6])
def test_nftables_reads_thousands_of_accepts_in_questions_linear_in_them(
        ns: str, family: int, monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("nft") is None:
        pytest.skip("nft is not installed")
    field = "ip" if family == 4 else "ip6"
    anywhere = "0.0.0.0/0" if family == 4 else "::/0"
    lines = ["table inet fw {", "chain pass {", "type filter hook forward priority 0; policy drop;"]
    lines += [f"{field} saddr {net} accept" for net in _networks(family)]
    # every network's replies, by address (no conntrack test): each accept is a way out
    lines += [f"{field} saddr {anywhere} {field} daddr {_parent(family)} accept", "}", "}"]
    run_in(ns, ["nft", "-f", "-"], input_text="\n".join(lines) + "\n")
    listed = json.loads(run_in(ns, ["nft", "-j", "list", "ruleset"]).stdout)["nftables"]
    assert sum("rule" in item for item in listed) == COUNT + 1
    answers = counted(monkeypatch, parse, "_answers")
    state = NftablesBackend(ns).observe()
    assert {o for o in state.foreign if isinstance(o, ForwardRule)} >= _expected(family)
    assert len(answers) <= 2 * (COUNT + 1)  # (every pair: 4 million)


def _parent(family: int) -> str:
    """The network holding every one of :func:`_networks`."""
    net = ipaddress.ip_network(_networks(family)[0])
    return str(net.supernet(new_prefix=8 if family == 4 else 16))
