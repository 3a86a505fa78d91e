"""Every string of the rendered manifests reads back as that string, whoever reads it.

kubectl reads YAML with Go's reader, which takes plain ``y``, ``n``, ``0o17`` or ``1e3``
for a bool or a number where PyYAML (YAML 1.1) reads text: a label value ``y`` became
``true`` (refused by the API server), a label key ``1e3`` became ``1000`` (a policy for
other pods), a namespace ``09`` the number 9. Editors and JSON Schema tools (YAML 1.2)
read ``09`` and ``1e3`` as numbers too, and k3snet's own spec loader refuses such a plain
value. :func:`~k3snet.render.manifests.dump_manifests` and the spec text of the agent's
ConfigMap quote every such string, keys too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

yaml = pytest.importorskip("yaml")

from k3snet.render.manifests import (  # noqa: E402 - after the importorskip
    SPEC_CONFIGMAP_NAME,
    dump_manifests,
    render_manifests,
)
from k3snet.spec import AgentSettings, Destination, EgressPolicy, Spec, validate  # noqa: E402

# Valid label values and namespace names some reader takes for no string.
TRICKY = ["y", "Y", "n", "N", "yes", "No", "on", "OFF", "true", "False", "null", "Null",
          "09", "0", "1e3", "12E3", "0o17", "0x1F", "0b101", "1_000", "1.5", "1.2.3",
          "2001-12-14", "inf", "nan", "0xg"]
_LABEL = st.one_of(st.sampled_from(TRICKY),
                   st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,6}[A-Za-z0-9])?", fullmatch=True))
_NAMESPACE = st.one_of(st.sampled_from([t for t in TRICKY if t == t.lower() and
                                        "." not in t and "_" not in t]),
                       st.from_regex(r"[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?", fullmatch=True))


def _spec(labels: dict[str, str], namespace: str) -> Spec:
    return Spec(destinations=[Destination("192.168.2.0/24")],
                egress_policy=EgressPolicy(restrict=True, pod_selector=labels),
                agent=AgentSettings(namespace=namespace))


def _spec_texts(objs: list[dict[str, Any]]) -> list[str]:
    return [obj["data"]["spec.yaml"] for obj in objs if obj["kind"] == "ConfigMap"
            and obj["metadata"]["name"].startswith(SPEC_CONFIGMAP_NAME)]


@settings(max_examples=40, deadline=None)  # each example renders every manifest twice
@given(st.dictionaries(_LABEL, _LABEL, min_size=1, max_size=4), _NAMESPACE, _NAMESPACE)
def test_every_rendered_string_reads_back_as_that_string_in_yaml_1_1(
        labels: dict[str, str], namespace: str, profile: str) -> None:
    spec = _spec(labels, namespace)
    assume(not validate(spec))
    assume(profile != "default")
    objs = render_manifests(spec, profiles={profile: spec})
    text = dump_manifests(objs)
    # PyYAML reads YAML 1.1 (BaseLoader: every scalar text; SafeLoader: its types).
    assert list(yaml.safe_load_all(text)) == objs
    # The spec text k3snet writes for the agent (render_manifests(spec) without the
    # operator's text) is one k3snet's loader takes, and the same spec.
    for spec_text in _spec_texts(objs):
        assert Spec.from_yaml(spec_text) == spec


def _read_by_kubectl(text: str, tmp_path: Path) -> list[dict[str, Any]]:
    """The objects as kubectl (Go's YAML) reads them, printed back as JSON (no cluster)."""
    path = tmp_path / "manifests.yaml"
    path.write_text(text)
    done = subprocess.run(["kubectl", "label", "--local", "-f", str(path), "k3snet-read=1",
                           "-o", "json"], capture_output=True, text=True, check=False,
                          timeout=120, env={**os.environ, "KUBECONFIG": os.devnull})
    assert done.returncode == 0, done.stderr
    decoder, out, at = json.JSONDecoder(), done.stdout, 0
    objs = []
    while out[at:].strip():
        at += len(out[at:]) - len(out[at:].lstrip())
        obj, at = decoder.raw_decode(out, at)
        objs.append(obj)
    return objs


def _strings(value: Any) -> list[str]:
    """Every key and string of ``value``, in order; any other scalar as its repr."""
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else [repr(value)]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_reads_every_tricky_label_key_value_and_namespace_as_its_string(
        tmp_path: Path) -> None:
    labels = {t: t for t in TRICKY}
    spec = _spec(labels, "09")
    assert validate(spec) == []
    objs = render_manifests(spec, profiles={"y": spec, "1e3": spec})
    read = _read_by_kubectl(dump_manifests(objs), tmp_path)
    assert len(read) == len(objs)
    for mine, theirs in zip(objs, read, strict=True):
        theirs["metadata"]["labels"].pop("k3snet-read")
        if not theirs["metadata"]["labels"] and "labels" not in mine["metadata"]:
            del theirs["metadata"]["labels"]
        # kubectl adds nothing else it reads; compare what both hold, strings exactly.
        assert _strings(mine) == _strings(_pick(theirs, mine))


def _pick(theirs: Any, mine: Any) -> Any:
    """``theirs`` cut to the keys ``mine`` has (kubectl fills in defaults)."""
    if isinstance(mine, dict) and isinstance(theirs, dict):
        return {k: _pick(theirs[k], v) for k, v in mine.items() if k in theirs}
    if isinstance(mine, list) and isinstance(theirs, list):
        return [_pick(t, m) for t, m in zip(theirs, mine, strict=False)]
    return theirs
