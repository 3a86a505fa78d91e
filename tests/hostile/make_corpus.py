"""Write the hostile-input corpus: ``python tests/hostile/make_corpus.py``.

Each file under ``corpus/`` is a spec document (or something posing as one)
that a careless or hostile operator, or a truncated ConfigMap, could hand to
k3snet. ``expected.json`` says, per file, whether k3snet must refuse it
(``refuse``) or may read it (``any``). The files are committed; this script
only makes them reproducible.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
HEADER = {"apiVersion": "k3snet.io/v1alpha1", "kind": "EgressSpec"}

BASE: dict[str, Any] = {
    **HEADER,
    "cluster": {"podCIDRs": ["10.42.0.0/16"], "serviceCIDRs": ["10.43.0.0/16"]},
    "destinations": [{"cidr": "192.168.2.0/24", "gateway": "192.168.1.1", "device": "eth0",
                      "exclude": ["192.168.2.8/29"]}],
    "masquerade": {"mode": "all", "outInterface": "eth0",
                   "nonMasqueradeCIDRs": ["10.0.0.0/8"]},
    "forward": {"accept": True, "inInterface": "cni0"},
    "dns": {"zones": [{"zone": "corp.example", "resolvers": ["192.168.2.53"]}]},
    "egressPolicy": {"namespace": "apps", "podSelector": {"app": "web"}},
    "connectivityTest": {"target": "192.168.2.10", "port": 5432, "namespace": "apps",
                         "image": "busybox:1.37"},
    "agent": {"image": "registry.local/k3snet:1", "namespace": "k3snet",
              "intervalSeconds": 60},
    "cni": {"calico": {"ipipMode": "Never", "vxlanMode": "Never", "blockSize": 26,
                       "nodeSelector": "all()"}},
    "sysctls": {"net.ipv4.conf.all.rp_filter": "2"},
    "backends": ["netlink", "nftables"],
}

HOSTILE_TEXT = [
    'eth0"; flush ruleset; #',
    'fd01:1::5%1"}}]}}},{"flush":{"ruleset":null}}',
    "192.168.2.0/24 ; flush ruleset",
    "eth0\nCOMMIT\n*filter\n-F FORWARD",
    "$(reboot)",
    "`id`",
    "../../etc/passwd",
    "\x00",
    "\u202eoverride",
    "}\n.:53 { forward . 192.0.2.1 }\n",
    "10.0.0.0/8\n-A POSTROUTING -j ACCEPT",
    "-j ACCEPT",
    "",
    " ",
    "x" * 5000,
]
HOSTILE_VALUES: list[Any] = [*HOSTILE_TEXT, -1, 2**70, 1e400, True, None, [], {}, ["a", ["b"]]]

# path (with [0] for the first item), and whether every hostile value must be refused
FIELDS: list[tuple[str, bool]] = [
    ("cluster.podCIDRs[0]", True), ("cluster.serviceCIDRs[0]", True),
    ("destinations[0].cidr", True), ("destinations[0].gateway", True),
    ("destinations[0].device", True), ("destinations[0].exclude[0]", True),
    ("destinations[0].table", True), ("destinations[0].metric", True),
    ("masquerade.mode", True), ("masquerade.outInterface", True),
    ("masquerade.nonMasqueradeCIDRs[0]", True), ("masquerade.snatAddresses", True),
    ("forward.inInterface", True),
    ("dns.zones[0].zone", True), ("dns.zones[0].resolvers[0]", True),
    ("egressPolicy.namespace", True), ("connectivityTest.target", True),
    ("connectivityTest.port", True), ("connectivityTest.namespace", True),
    ("agent.namespace", True), ("agent.intervalSeconds", True),
    ("cni.calico.ipipMode", True), ("cni.calico.blockSize", True),
    ("backends[0]", True),
    # free text that reaches only Kubernetes objects as JSON data: read or refused
    ("connectivityTest.image", False), ("agent.image", False),
    ("cni.calico.nodeSelector", False), ("egressPolicy.podSelector.app", False),
]

# Values that are fine in some of those fields (a number where a number is wanted).
ACCEPTABLE: dict[str, list[Any]] = {
    "destinations[0].metric": [None], "destinations[0].table": [None],
    "connectivityTest.port": [None], "cni.calico.blockSize": [None],
    "masquerade.snatAddresses": [None, []], "destinations[0].exclude[0]": [],
    "egressPolicy.podSelector.app": [],
}


REQUIRED = {"destinations[0].cidr", "dns.zones[0].zone", "connectivityTest.target"}


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    parts = path.replace("]", "").replace("[", ".").split(".")
    node: Any = doc
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    last = parts[-1]
    if last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value


def _structural() -> dict[str, tuple[bytes, str]]:
    """Inputs hostile by shape: (content, expectation)."""
    cases: dict[str, tuple[bytes, str]] = {}
    laughs = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}]\n" for i in range(9))
    cases["alias-bomb.yaml"] = (laughs.encode(), "refuse")
    cases["alias-one.yaml"] = (b"apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"
                               b"cluster: &c {podCIDRs: [10.42.0.0/16]}\nx: *c\n", "refuse")
    for depth in (40, 500, 5000):
        cases[f"deep-list-{depth}.yaml"] = (("[" * depth + "]" * depth).encode(), "refuse")
        cases[f"deep-map-{depth}.yaml"] = (("{a: " * depth + "1" + "}" * depth).encode(),
                                           "refuse")
    head = b"apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"
    cases["duplicate-destinations.yaml"] = (
        head + b"destinations:\n  - cidr: 192.168.2.0/24\ndestinations: []\n", "refuse")
    cases["duplicate-nested.yaml"] = (
        head + b"destinations:\n  - cidr: 192.168.2.0/24\n    cidr: 192.168.3.0/24\n", "refuse")
    cases["duplicate-kind.yaml"] = (head + b"kind: EgressSpec\n", "refuse")
    cases["empty.yaml"] = (b"", "refuse")
    cases["empty-mapping.yaml"] = (b"{}\n", "refuse")
    cases["comment-only.yaml"] = (b"# nothing\n" * 50, "refuse")
    cases["no-header.yaml"] = (b"destinations:\n  - cidr: 192.168.2.0/24\n", "refuse")
    cases["no-kind.yaml"] = (b"apiVersion: k3snet.io/v1alpha1\ndestinations: []\n", "refuse")
    cases["wrong-kind.yaml"] = (b"apiVersion: v1\nkind: ConfigMap\n", "refuse")
    cases["list-document.yaml"] = (b"- 1\n- 2\n", "refuse")
    cases["scalar-document.yaml"] = (b"hello\n", "refuse")
    cases["two-documents.yaml"] = (head + b"---\n" + head, "refuse")
    cases["python-tag.yaml"] = (b"!!python/object/apply:os.system ['true']\n", "refuse")
    cases["binary-tag.yaml"] = (head + b"x: !!binary aGVsbG8=\n", "refuse")
    cases["huge-number.yaml"] = (head + b"agent:\n  intervalSeconds: " + b"9" * 5000 + b"\n",
                                 "refuse")
    cases["huge-float.yaml"] = (head + b"agent:\n  intervalSeconds: 1e400\n", "refuse")
    cases["nan.yaml"] = (head + b"destinations:\n  - {cidr: 192.168.2.0/24, metric: .nan}\n",
                         "refuse")
    cases["latin-1.yaml"] = (head + "# caf\xe9\n".encode("latin-1"), "refuse")
    cases["utf-16.yaml"] = ((head.decode() + "# x\n").encode("utf-16"), "refuse")
    cases["nul-byte.yaml"] = (head + b"\x00\n", "refuse")
    cases["unclosed.yaml"] = (head + b"destinations: [\n", "refuse")
    cases["tab-indent.yaml"] = (head + b"cluster:\n\tpodCIDRs: []\n", "refuse")
    cases["long-key.yaml"] = (head + b"k" * 100_000 + b": 1\n", "refuse")
    cases["many-destinations.yaml"] = (head + b"destinations:\n" + b"".join(
        f"  - cidr: 172.{16 + i // 256}.{i % 256}.0/24\n".encode() for i in range(3000)),
        "any")
    cases["json.yaml"] = (json.dumps(BASE).encode(), "any")
    return cases


def main() -> None:
    if CORPUS.exists():
        shutil.rmtree(CORPUS)
    CORPUS.mkdir()
    expected: dict[str, str] = {}
    for name, (content, expectation) in _structural().items():
        (CORPUS / name).write_bytes(content)
        expected[name] = expectation
    for path, strict in FIELDS:
        for index, value in enumerate(HOSTILE_VALUES):
            doc = json.loads(json.dumps(BASE))
            _set(doc, path, value)
            slug = path.replace("[", "-").replace("]", "").replace(".", "-")
            name = f"field-{slug}-{index:02}.yaml"
            (CORPUS / name).write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=False))
            # null means "the default" for every key that is not required
            acceptable = value in ACCEPTABLE.get(path, []) or (
                value is None and path not in REQUIRED)
            expected[name] = "refuse" if strict and not acceptable else "any"
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    print(f"{len(expected)} inputs")  # noqa: T201 - a script's one line of output


if __name__ == "__main__":
    main()
