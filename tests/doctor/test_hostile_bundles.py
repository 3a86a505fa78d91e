"""Bundles edited by hand, cut short or written by other tool versions: diagnosed or refused.

A support bundle comes from another machine, and a live capture from whatever
`nft` and `ip` the node has: a field of an unexpected type or shape must make the
doctor say so (a :class:`BundleError`) or treat what it cannot read as unknown, never
end in a traceback. Each example edits one golden bundle in one place.
"""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from k3snet.doctor import Flow, NodeCapture, NodeState, diagnose, nftables, packet
from k3snet.doctor.bundle import BundleError
from k3snet.testing.strategies import edited_documents
from tests.examples import examples

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if p.is_dir())

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.sampled_from(
        ["", "x", "10.0.0.0/8", "999.1.1.1", "fe80::1%eth0", "10.0.0.1/33", "0x10", "@set",
         "\x1b[2J", "drop", "accept", "eth0"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(
        ["dev", "gateway", "prefsrc", "iif", "oif", "fwmark", "table", "priority", "nexthops",
         "type", "addr", "len", "prefix", "payload", "meta", "key", "set", "map", "jump",
         "goto", "vmap", "data", "match", "left", "right", "op", "expr", "&", "concat"]),
        inner, max_size=2),
    max_leaves=4)

_WORDS = ["-j", "DROP", "ACCEPT", "MASQUERADE", "MARK", "--set-xmark", "--mark", "0x1/0x",
          "-m", "mark", "conntrack", "--ctstate", "!", "-s", "-d", "999.1.1.1/99", "::/0", "-o",
          "-p", "tcp", "--dport", "65536", "-g", "NOPE", "--to-source", ":X", "COMMIT", "*nat",
          "=", '"', "\\", "net.ipv4.ip_forward"]


@functools.cache
def _golden(case: str) -> dict[str, str]:
    """The golden bundle ``case``'s texts, read once: each example edits a copy."""
    return dict(NodeCapture.read_dir(GOLDEN / case).texts)


@functools.cache
def _flow(case: str) -> dict[str, Any]:
    """The flow the golden bundle ``case`` is diagnosed for."""
    flow: dict[str, Any] = json.loads((GOLDEN / case / "expected.json").read_text())["flow"]
    return flow


def _diagnosed_or_refused(case: str, texts: dict[str, str]) -> None:
    flow = _flow(case)
    try:
        state = NodeState.from_capture(NodeCapture.from_texts(texts))
    except BundleError:
        return
    d = diagnose(state, Flow(flow["source"], flow["destination"], port=flow["port"]))
    # What the CLI prints of it, in both forms: describing a rule or a route reads the
    # fields parsing kept.
    d.render()
    json.dumps(d.to_dict())


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), case=st.sampled_from(CASES))
def test_any_value_anywhere_in_a_bundle_json_is_diagnosed_or_a_bundle_error(
        data: st.DataObject, case: str) -> None:
    texts = dict(_golden(case))
    name = data.draw(st.sampled_from(sorted(n for n in texts if n.endswith(".json"))))

    def evaluated(place: tuple[Any, ...]) -> bool:
        """What the doctor evaluates: rules' statements and sets, routes, rules, addresses."""
        return name != "nft-ruleset.json" or (
            len(place) > 3 and place[2] in ("rule", "set") and place[3] in ("expr", "elem"))

    document = data.draw(edited_documents(
        json.loads(texts[name]), _JSON, where=evaluated,
        keys=["dev", "iif", "table", "prefsrc", "expr", "hook", "family", "elem", "jump"]),
        label="document")
    texts[name] = json.dumps(document)
    _diagnosed_or_refused(case, texts)


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), case=st.sampled_from(CASES))
def test_any_edit_of_a_line_of_a_saved_table_is_diagnosed_or_a_bundle_error(
        data: st.DataObject, case: str) -> None:
    texts = dict(_golden(case))
    name = data.draw(st.sampled_from(sorted(n for n in texts if not n.endswith(".json")
                                            and texts[n].strip())))
    lines = texts[name].splitlines()
    index = data.draw(st.integers(0, len(lines) - 1), label="line")
    words = lines[index].split()
    edited = data.draw(st.lists(st.sampled_from(_WORDS) | st.sampled_from(words or ["-A"]),
                                max_size=8), label="words")
    lines[index] = " ".join(edited)
    texts[name] = "\n".join(lines) + "\n"
    _diagnosed_or_refused(case, texts)


@pytest.mark.parametrize("name", ["nft-ruleset.json", "routes-v4.json", "rules-v6.json",
                                  "addr.json", "calico-ippools.json", "bundle.json"])
@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, "[" + "1" * 5000 + "]",
                                  '{"missing": {"x": ' + "1" * 5000 + "}}"])
def test_a_bundle_json_too_deep_or_with_a_huge_number_is_a_bundle_error(
        tmp_path: Path, name: str, text: str) -> None:
    """json.loads raises RecursionError on deep nesting and a plain ValueError on a
    5000-digit integer: both were internal errors ("a bug: please report it")."""
    shutil.copytree(GOLDEN / "healthy", tmp_path, dirs_exist_ok=True)
    (tmp_path / name).write_text(text)
    with pytest.raises(BundleError, match=name):
        NodeState.from_capture(NodeCapture.read_dir(tmp_path))


@pytest.mark.parametrize("metric", ["\u00b2", "1" * 5000, "99999999999", "-1", ""])
def test_a_routes_text_with_a_metric_int_cannot_read_is_diagnosed_not_refused(
        tmp_path: Path, metric: str) -> None:
    """``routes-v6.txt`` (the text saying ``mtu lock``) is anyone's in a bundle: ``²`` is
    a digit to ``str.isdigit`` and not to ``int``, 5 000 digits are over ``int``'s
    limit; both were a ValueError that refused the whole bundle ("cannot read the
    capture") for a file the doctor does without. The route is read unlocked."""
    shutil.copytree(GOLDEN / "healthy", tmp_path, dirs_exist_ok=True)
    (tmp_path / "routes-v6.txt").write_text(
        f"default via fe80::1 dev eth0 metric {metric} mtu lock 1280 pref medium\n")
    state = NodeState.from_capture(NodeCapture.read_dir(tmp_path))
    assert not any(route.mtu_locked for route in state.routes[6])


@pytest.mark.parametrize("field", [{"iif": 5}, {"iif": ["x"]}, {"oif": {}},
                                   {"table": {"x": 1}}, {"table": True}, {"priority": 1.5},
                                   {"priority": True}, {"action": ["blackhole"]},
                                   {"src": 5, "srclen": 8}, {"ipproto": 6}])
def test_a_policy_rule_field_of_another_type_than_ip_prints_is_a_bundle_error(
        tmp_path: Path, field: dict[str, Any]) -> None:
    """``"iif": 5`` in an inverted rule that matched broke the rule's description: an
    internal error ("a bug: please report it"); in a rule that did not match, it was read
    as a rule no packet matches."""
    shutil.copytree(GOLDEN / "reply-policy-rule", tmp_path, dirs_exist_ok=True)
    rules = json.loads((tmp_path / "rules-v4.json").read_text())
    rules[1].update({"not": None, **field})
    (tmp_path / "rules-v4.json").write_text(json.dumps(rules))
    with pytest.raises(BundleError, match="policy rule"):
        NodeState.from_capture(NodeCapture.read_dir(tmp_path))


def _fan_out_iptables(levels: int) -> str:
    lines = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
             *(f":C{i} - [0:0]" for i in range(levels + 1)), "-A FORWARD -j C0"]
    for i in range(levels):
        lines += [f"-A C{i} -j C{i + 1}", f"-A C{i} -m set --match-set s src -j C{i + 1}"]
    return "\n".join([*lines, "COMMIT", ""])


def _fan_out_nft(levels: int) -> str:
    items: list[dict[str, Any]] = [
        {"table": {"family": "inet", "name": "fan", "handle": 9}},
        {"chain": {"family": "inet", "table": "fan", "name": "fwd", "handle": 1,
                   "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}},
        {"rule": {"family": "inet", "table": "fan", "chain": "fwd",
                  "expr": [{"jump": {"target": "c0"}}]}}]
    unknown = {"match": {"op": "==", "left": {"ct": {"key": "mark"}}, "right": 1}}
    for i in range(levels):
        items.append({"chain": {"family": "inet", "table": "fan", "name": f"c{i}"}})
        items += [{"rule": {"family": "inet", "table": "fan", "chain": f"c{i}",
                            "expr": [*head, {"jump": {"target": f"c{i + 1}"}}]}}
                  for head in ([], [unknown])]
    items.append({"chain": {"family": "inet", "table": "fan", "name": f"c{levels}"}})
    return json.dumps({"nftables": items})


#: The walk's budget in the tests that run it out: the stop is the same at 100 000
#: (:data:`~k3snet.doctor.packet.MAX_RULE_VISITS`), which cost ~1 s of evaluations per
#: walk and two walks (the flow's forward hook, its reply's) per test; 2**40 or a loop
#: is far past either.
SMALL_BUDGET = 5_000


@pytest.fixture
def small_budget(monkeypatch: pytest.MonkeyPatch) -> int:
    """The walks of the test stop after :data:`SMALL_BUDGET` rule evaluations."""
    monkeypatch.setattr(packet, "MAX_RULE_VISITS", SMALL_BUDGET)
    assert packet.Budget().left == SMALL_BUDGET  # read as each walk starts
    return SMALL_BUDGET


@pytest.mark.parametrize("name", ["iptables-nft-v4.save", "nft-ruleset.json"])
def test_chains_calling_each_other_repeatedly_end_in_an_unknown_verdict_not_a_hang(
        name: str, small_budget: int) -> None:
    """A few hundred bytes: 40 chains, each calling the next twice (plainly and behind
    a rule the doctor cannot evaluate, whose effect it tries). Depth was bounded,
    breadth not: 2**40 rule evaluations. A walk stops after a bounded number of rule
    evaluations and says so (the verdict is unknown)."""
    texts = dict(NodeCapture.read_dir(GOLDEN / "healthy").texts)
    if name.endswith(".save"):
        kept = [p for p in texts[name].split("*") if p and not p.startswith("filter")]
        texts[name] = "".join(f"*{p}" for p in kept) + _fan_out_iptables(40)
    else:
        texts[name] = _fan_out_nft(40)
    state = NodeState.from_capture(NodeCapture.from_texts(texts))
    result = diagnose(state, Flow("10.42.0.10", "192.168.2.10", port=5432))
    assert result.verdict == "unknown"
    assert any(f"{small_budget} rule evaluations" in s.detail for s in result.trace.steps)


def test_a_walk_through_chains_calling_each_other_makes_each_nft_rule_s_text_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """10 chains each calling the next twice: 2**10 evaluations of the last chain's
    rules, within the walk's budget. Each evaluation made its rule's text again (half of
    the cost of a walk that runs its budget out); it is made once per rule."""
    made: list[int] = []
    real = nftables.rule_text

    def counted(chain: nftables.NftChain, expr: list[Any]) -> str:
        made.append(id(expr))
        return real(chain, expr)

    monkeypatch.setattr(nftables, "rule_text", counted)
    texts = dict(NodeCapture.read_dir(GOLDEN / "healthy").texts)
    texts["nft-ruleset.json"] = _fan_out_nft(10)
    state = NodeState.from_capture(NodeCapture.from_texts(texts))
    diagnose(state, Flow("10.42.0.10", "192.168.2.10", port=5432))
    assert made
    assert len(made) == len(set(made)) <= 1 + 2 * 10, len(made)


def _loop_iptables(levels: int) -> str:
    lines = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
             *(f":C{i} - [0:0]" for i in range(levels)), "-A FORWARD -j C0"]
    for i in range(levels):
        lines += [f"-A C{i} -j C{(i + 1) % levels}"] * 2
    return "\n".join([*lines, "COMMIT", ""])


def _loop_nft(levels: int) -> str:
    items: list[dict[str, Any]] = [
        {"table": {"family": "inet", "name": "loop", "handle": 9}},
        {"chain": {"family": "inet", "table": "loop", "name": "fwd", "handle": 1,
                   "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}},
        {"rule": {"family": "inet", "table": "loop", "chain": "fwd",
                  "expr": [{"jump": {"target": "c0"}}]}}]
    for i in range(levels):
        items.append({"chain": {"family": "inet", "table": "loop", "name": f"c{i}"}})
        items += [{"rule": {"family": "inet", "table": "loop", "chain": f"c{i}",
                            "expr": [{"jump": {"target": f"c{(i + 1) % levels}"}}]}}] * 2
    return json.dumps({"nftables": items})


@pytest.mark.parametrize("name", ["iptables-nft-v4.save", "nft-ruleset.json"])
def test_chains_jumping_in_a_loop_are_each_unknown_rule_once_not_thousands_of_steps(
        name: str, small_budget: int) -> None:
    """40 chains each jumping twice to the next, the last to the first (a loop the kernel
    refuses, a bundle can hold): each time the walk passed the depth limit it recorded
    "jumps nest too deep" again, ~50 000 steps and 5 MB of text from a few KB of bundle.
    Each unknown is now one step."""
    texts = dict(NodeCapture.read_dir(GOLDEN / "healthy").texts)
    if name.endswith(".save"):
        kept = [p for p in texts[name].split("*") if p and not p.startswith("filter")]
        texts[name] = "".join(f"*{p}" for p in kept) + _loop_iptables(40)
    else:
        texts[name] = _loop_nft(40)
    state = NodeState.from_capture(NodeCapture.from_texts(texts))
    result = diagnose(state, Flow("10.42.0.10", "192.168.2.10", port=5432))
    assert result.verdict == "unknown"
    steps = result.trace.steps
    assert any("nest too deep" in s.detail for s in steps)
    assert len(steps) == len(set(steps)) < 100, len(steps)


def test_a_fix_through_an_interface_k3snet_cannot_name_is_advice_not_an_error() -> None:
    """A route through a device named ``10.0.0.0/8`` (an edited bundle): the fix the
    doctor plans would go through it, and building it raised ModelError out of
    :func:`diagnose` (hypothesis found it in the test above)."""
    case = "route-shadowed-by-pod-route"
    texts = dict(NodeCapture.read_dir(GOLDEN / case).texts)
    routes = json.loads(texts["routes-v4.json"])
    for route in routes:
        if route["dst"] == "default":
            route["dev"] = "10.0.0.0/8"
    texts["routes-v4.json"] = json.dumps(routes)
    flow = json.loads((GOLDEN / case / "expected.json").read_text())["flow"]
    state = NodeState.from_capture(NodeCapture.from_texts(texts))
    result = diagnose(state, Flow(flow["source"], flow["destination"], port=flow["port"]))
    assert result.findings[0].fix == ()
    assert "10.0.0.0/8" in (result.findings[0].advice or "")


_CONTROL = "\x1b]52;c;cm0gLXJmIH4=\x07\x1b[2K\r\x9b31m\u202e\x00"


@settings(max_examples=examples(100), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(min_size=1, max_size=12) | st.sampled_from(
    [_CONTROL, "\nverdict: reaches", "\rverdict: reaches\x1b[K"]))
def test_text_from_a_bundle_reaches_the_terminal_as_printable_lines_of_its_own(
        text: str) -> None:
    """A rule's comment and an interface name come from the bundle, which whoever sent it
    wrote: with terminal escapes (``OSC 52`` sets the clipboard, ``CSI 2K`` and a
    carriage return erase a line, the C1 ``CSI``, a bidirectional override) or a line
    break, printed as they were, they could rewrite what the admin reads ("verdict:
    reaches"). Every line the diagnosis renders is printable, and the lines are the
    ones the doctor wrote."""
    texts = dict(_golden("forward-drop-nft"))
    save = texts["iptables-nft-v4.save"]
    comment = text.replace('"', "").replace("\n", " ")  # one saved line, one quoted word
    texts["iptables-nft-v4.save"] = save.replace(
        ":FORWARD DROP [1:60]\n", ":FORWARD DROP [1:60]\n-A FORWARD -m comment --comment "
        f'"{comment}" -m set --match-set x src -j ACCEPT\n', 1)
    assert texts["iptables-nft-v4.save"] != save
    for name in ("addr.json", "routes-v4.json"):
        texts[name] = texts[name].replace('"cni0"', json.dumps("cni0" + text))
    state = NodeState.from_capture(NodeCapture.from_texts(texts))
    rendered = diagnose(state, Flow("10.42.0.10", "192.168.2.10", port=5432)).render()
    for line in rendered.split("\n"):
        assert line.isprintable(), repr(line)
        assert not line.startswith("verdict: reaches"), rendered


@pytest.mark.parametrize("name", ["routes-v4.json", "iptables-nft-v4.save", "bundle.json",
                                  "calico-ippools.json"])
def test_a_symbolic_link_in_a_bundle_is_refused_not_followed(tmp_path: Path, name: str) -> None:
    """A bundle is a directory of the files a capture wrote, all regular: a link in one
    that someone sent points wherever they chose on the machine reading it (as root:
    any file), and the doctor read it as a capture file."""
    bundle = tmp_path / "bundle"
    shutil.copytree(GOLDEN / "healthy", bundle)
    target = tmp_path / "elsewhere"
    target.write_text((bundle / name).read_text() if (bundle / name).exists() else "[]")
    (bundle / name).unlink(missing_ok=True)
    (bundle / name).symlink_to(target)
    with pytest.raises(BundleError, match=f"{name}: a symbolic link"):
        NodeCapture.read_dir(bundle)
