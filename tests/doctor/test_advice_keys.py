"""The spec keys doctor's advice names are keys the spec has (`k3snet explain` knows them).

Read from the source: each mention is written whole in one string literal,
``(spec destinations[].gateway, .device)``.
"""

from __future__ import annotations

import re
from pathlib import Path

import k3snet.doctor.findings
from k3snet.spec.explain import spec_paths

# "(spec destinations[].gateway, .device)": a key path, then siblings of its last part.
_MENTION = re.compile(r"\(spec ([a-zA-Z][\w.\[\]]*)((?:, \.\w+)*)\)")


def _mentioned() -> list[str]:
    text = Path(k3snet.doctor.findings.__file__).read_text()
    found = []
    for mention in _MENTION.finditer(text):
        path = mention.group(1).replace("[]", "")
        found.append(path)
        parent = path.rpartition(".")[0]
        found += [f"{parent}.{sibling}" for sibling in re.findall(r"\.(\w+)", mention.group(2))]
    return found


def test_every_spec_key_doctor_advises_is_a_key_of_the_spec() -> None:
    mentioned = _mentioned()
    assert mentioned.count("destinations.gateway") == 2  # both route findings
    assert not set(mentioned) - set(spec_paths())
