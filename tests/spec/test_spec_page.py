"""docs/spec.md lists every key of the spec, with its type, default and meaning.

The table under "Every key" is what ``k3snet explain`` says of each key (the same field
table, through the spec's JSON Schema): a key added, renamed or given another default
fails here until the page says so too. The test prints the table to paste.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from k3snet import Spec
from k3snet.spec.explain import explain, spec_paths

PAGE = Path(__file__).resolve().parents[2] / "docs" / "spec.md"
_HEADER = ("| key | type | default | meaning |", "|---|---|---|---|")


def _sections(text: str) -> dict[str, str]:
    """``explain``'s ``NAME: value`` lines and its DESCRIPTION, by name."""
    found: dict[str, str] = {}
    lines = text.splitlines()
    for index, line in enumerate(lines):
        name, colon, value = line.partition(":")
        if colon and name.isupper() and value.strip():
            found[name] = value.strip()
        elif line == "DESCRIPTION:":
            body = []
            for following in lines[index + 1 :]:
                if not following.startswith("    "):
                    break
                body.append(following.strip())
            found["DESCRIPTION"] = " ".join(body)
    return found


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def expected_rows() -> list[str]:
    """One row per key that holds a value (not the objects and lists of objects that
    only group keys), in the schema's order."""
    rows = []
    for path in spec_paths():
        said = _sections(explain(path))
        if said["TYPE"] in ("object", "list of object"):
            continue
        default = said.get("DEFAULT") or ("required" if "REQUIRED" in said else "unset")
        rows.append(
            f"| `{path}` | {_cell(said['TYPE'])} | {_cell(default)} | "
            f"{_cell(said.get('DESCRIPTION', ''))} |"
        )
    return rows


def documented_rows(text: str) -> list[str]:
    section = text.split("\n## Every key\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    assert tuple(lines[:2]) == _HEADER, "the table of every key lost its header"
    return lines[2:]


def test_the_page_lists_every_key_with_its_type_and_default() -> None:
    expected = expected_rows()
    documented = documented_rows(PAGE.read_text(encoding="utf-8"))
    if documented != expected:
        table = "\n".join((*_HEADER, *expected))
        keys = {row.split("|")[1].strip() for row in expected}
        shown = {row.split("|")[1].strip() for row in documented}
        raise AssertionError(
            f"docs/spec.md, 'Every key', is not what k3snet explain says (missing: "
            f"{sorted(keys - shown)}, unknown: {sorted(shown - keys)}); the table is:\n"
            f"{table}"
        )


def test_every_leaf_key_has_a_row() -> None:
    """The rows come from ``spec_paths``: a scan that lost keys would pass the test above."""
    keys = {re.match(r"\| `([^`]+)`", row)[1] for row in expected_rows()}  # type: ignore[index]
    assert {
        "destinations.cidr",
        "masquerade.mode",
        "cni.calico.blockSize",
        "cni.calico.blockSize.ipv6",
        "cni.allowDisruptive",
        "agent.createNamespace",
        "backends",
        "sysctls",
    } <= keys
    assert not keys & {"destinations", "cni", "cni.calico"}


_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,})\s*(?P<info>\S*)")
_TOP_KEYS = {
    "apiVersion",
    "kind",
    "cluster",
    "destinations",
    "masquerade",
    "forward",
    "sysctls",
    "manageForwarding",
    "backends",
    "dns",
    "egressPolicy",
    "connectivityTest",
    "agent",
    "cni",
}


def spec_fragments() -> list[tuple[str, dict[str, object]]]:
    """(page:line, document) of every ``yaml`` block of the docs made of spec keys:
    whole specs and the fragments a section shows (``cluster`` and ``cni.calico``)."""
    found = []
    for page in sorted(PAGE.parent.glob("*.md")):
        lines = page.read_text(encoding="utf-8").splitlines()
        index = 0
        while index < len(lines):
            opening = _FENCE.match(lines[index])
            index += 1
            if opening is None:
                continue
            start, body, width = index, [], len(opening["indent"])
            while index < len(lines) and lines[index].strip() != opening["fence"]:
                body.append(lines[index][width:])
                index += 1
            index += 1
            if opening["info"] in ("yaml", "yml"):
                document = yaml.safe_load("\n".join(body))
                if isinstance(document, dict) and set(document) <= _TOP_KEYS:
                    found.append((f"{page.name}:{start}", document))
    return found


FRAGMENTS = spec_fragments()


def test_the_fragments_are_found() -> None:
    """The full example and the block-size section's fragment, at least."""
    keys = [sorted(document) for where, document in FRAGMENTS if where.startswith("spec.md")]
    assert ["cluster", "cni"] in keys
    assert any("kind" in found and "cni" in found for found in keys)


@pytest.mark.parametrize(("where", "document"), FRAGMENTS, ids=[w for w, _ in FRAGMENTS])
def test_every_spec_fragment_of_the_docs_is_valid(where: str, document: dict[str, object]) -> None:
    """A fragment (a section's ``cluster:`` and ``cni:`` keys) is read with the header and
    a destination it leaves out; the file an ``ipMasqAgentConfig`` names is the node's."""
    whole: dict[str, Any] = {
        "apiVersion": "k3snet.io/v1alpha1",
        "kind": "EgressSpec",
        "destinations": [{"cidr": "192.168.2.0/24"}],
        **document,
    }
    if isinstance(whole.get("masquerade"), dict):
        whole["masquerade"] = {
            k: v for k, v in whole["masquerade"].items() if k != "ipMasqAgentConfig"
        }
    Spec.from_dict(whole)
