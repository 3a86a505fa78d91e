"""The Kubernetes manifests, byte for byte, for specs of every shape.

The expected YAML streams under ``tests/data/render/manifests-*.yaml`` were
written by :func:`~k3snet.render.manifests.dump_manifests`; every object in them
validates with ``kubernetes-validate --strict`` (tests/cluster/test_manifests.py
checks the same shapes). A change of them is a change of what clusters run:
regenerate with ``K3SNET_REGENERATE=1`` and review the diff.

The spec text each ConfigMap carries is given (``spec_text``, as the CLI passes
the file it read), so the files do not move when the spec's own YAML form does;
:func:`test_default_spec_text_reads_back_as_the_spec` checks that form.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, TypedDict

import attrs
import pytest

yaml = pytest.importorskip("yaml")

import k3snet  # noqa: E402 - after the importorskip
from k3snet.render.manifests import (  # noqa: E402
    PROFILE_LABEL,
    SPEC_HASH_ANNOTATION,
    dump_manifests,
    render_manifests,
)
from k3snet.spec import (  # noqa: E402
    AgentSettings,
    Cluster,
    ConnectivityTest,
    Destination,
    DnsZone,
    EgressPolicy,
    Spec,
    validate,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "render"


def _text(name: str) -> str:
    return f"# {name}: the operator's file, comments kept\napiVersion: k3snet.io/v1alpha1\n"


def _everything() -> Spec:
    return Spec(
        cluster=Cluster(["10.42.0.0/16", "fd42:42::/56"], ["10.43.0.0/16", "fd43:43::/112"]),
        destinations=[
            Destination("192.168.2.0/24", gateway="192.168.1.1", device="eth0",
                        exclude=["192.168.2.128/25"]),
            Destination("fd01:2::/64", gateway="fd01:1::1", device="eth0"),
        ],
        backends=["netlink", "iptables", "calico", "flannel"],
        # out of order, a trailing dot and capitals (an X last): sorted keys, normalised zones
        dns=[DnsZone("Corp.Example.TAX.", ["192.168.2.53", "192.168.2.54"]),
             DnsZone("b.internal", ["fd01:2::53"])],
        egress_policy=EgressPolicy(restrict=True, namespace="shop",
                                   pod_selector={"app": "web", "tier": "frontend"},
                                   # each inside one destination only
                                   deny=["192.168.2.128/25", "fd01:2::/120"]),
        connectivity_test=ConnectivityTest("fd01:2::10", port=443, namespace="shop"),
        agent=AgentSettings(image="registry.example/k3snet:1.2.3", namespace="k3snet-system",
                            interval_seconds=60),
    )


def _edge(spec: Spec) -> Spec:
    return Spec(cluster=spec.cluster, backends=spec.backends, agent=spec.agent,
                destinations=[Destination("10.9.0.0/16", gateway="192.168.1.254",
                                          device="eth1")])


SEED = k3snet.seed_spec()
EVERYTHING = _everything()


def _cilium(configmap: Any) -> Spec:
    return Spec(destinations=[Destination("192.168.2.0/24")], backends=["cilium"],
                backend_options={"cilium": {"configmap": configmap, "ip_masq_agent": "masq"}})


CILIUM = _cilium(["cilium-system", "cilium-cfg"])
FLANNEL_FILE = Spec(
    destinations=[Destination("192.168.2.0/24")], backends=["nftables", "flannel"],
    egress_policy=EgressPolicy(restrict=True, namespace="shop", allow_dns=False,
                               pod_selector={"app": "web"}),
    # another namespace than the policy's: the test pod keeps its own labels
    connectivity_test=ConnectivityTest("192.168.2.10"),
)

# name -> (spec, render_manifests' keyword arguments)
CASES: dict[str, tuple[Spec, dict[str, Any]]] = {
    # no backend named: every node backend may run; the node report's RBAC
    "seed": (SEED, {}),
    # nothing reaches the API: no token, no RBAC
    "seed-no-report": (SEED, {"node_report": False}),
    # a namespace of its own, calico, flannel's ConfigMap, DNS, policy, test, profiles
    "everything": (EVERYTHING, {
        "flannel_configmap_namespace": "kube-flannel",
        "profiles": {"gpu": (attrs.evolve(EVERYTHING, manage_forwarding=False), _text("gpu")),
                     "edge": (_edge(EVERYTHING), _text("edge"))},
    }),
    # cluster-wide writer without the node report; cilium's ConfigMaps moved
    "cilium": (CILIUM, {"node_report": False}),
    # flannel's file; a policy with no rule at all; a test without a port
    "flannel-file": (FLANNEL_FILE, {"node_report": False,
                                    "flannel_conf": "/etc/k3s/flannel/net-conf.json"}),
}


def _check(name: str, text: str) -> None:
    path = DATA / name
    if os.environ.get("K3SNET_REGENERATE") == "1":
        path.write_text(text)
    assert text == path.read_text()


def _render(name: str) -> list[dict[str, Any]]:
    spec, options = CASES[name]
    return render_manifests(spec, spec_text=_text(name), **options)


@pytest.mark.parametrize("name", sorted(CASES))
def test_manifests(name: str) -> None:
    objs = _render(name)
    text = dump_manifests(objs)
    _check(f"manifests-{name}.yaml", text)
    # what kubectl reads back is what was rendered
    assert list(yaml.safe_load_all(text)) == objs


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_daemonset_rolls_with_its_own_spec_text(name: str) -> None:
    objs = _render(name)
    texts = {o["metadata"]["name"]: o["data"]["spec.yaml"] for o in objs if o["kind"] == "ConfigMap"
             and o["metadata"]["name"].startswith("k3snet-spec")}
    daemonsets = [o for o in objs if o["kind"] == "DaemonSet"]
    assert len(daemonsets) == len(texts) == 1 + len(CASES[name][1].get("profiles", {}))
    for ds in daemonsets:
        pod = ds["spec"]["template"]
        (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == "spec"]
        text = texts[volume["configMap"]["name"]]
        assert pod["metadata"]["annotations"] == {
            SPEC_HASH_ANNOTATION: hashlib.sha256(text.encode()).hexdigest()}
        profile = pod["metadata"]["labels"][PROFILE_LABEL]
        assert text == (_text(name) if profile == "default"
                        else CASES[name][1]["profiles"][profile][1])


def test_cilium_configmap_as_namespace_slash_name() -> None:
    # the RBAC as for ["namespace", "name"] (only the spec text differs)
    assert render_manifests(_cilium("cilium-system/cilium-cfg"), spec_text="") == \
        render_manifests(CILIUM, spec_text="")


# ---------------------------------------------------------------- the spec's own YAML


def _flow_nodes(text: str) -> list[Any]:
    """The collections of a YAML document written in flow style (``[a, b]``, ``{k: v}``)."""
    found, todo = [], [yaml.compose(text)]
    while todo:
        node = todo.pop()
        if isinstance(node, yaml.SequenceNode):
            found += [node] if node.flow_style else []
            todo += node.value
        elif isinstance(node, yaml.MappingNode):
            found += [node] if node.flow_style else []
            todo += [v for pair in node.value for v in pair]
    return found


@pytest.mark.parametrize("spec", [SEED, EVERYTHING, FLANNEL_FILE], ids=["seed", "everything",
                                                                      "flannel-file"])
def test_default_spec_text_reads_back_as_the_spec(spec: Spec) -> None:
    kwargs: dict[str, Any] = {"flannel_conf": "/etc/k3s/flannel/net-conf.json"} if (
        "flannel" in spec.backends) else {}
    edge = _edge(spec)
    objs = render_manifests(spec, profiles={"edge": edge}, **kwargs)
    texts = {o["metadata"]["name"]: o["data"]["spec.yaml"] for o in objs
             if o["kind"] == "ConfigMap" and "spec.yaml" in o.get("data", {})}
    assert set(texts) == {"k3snet-spec", "k3snet-spec-edge"}
    for name, wanted in (("k3snet-spec", spec), ("k3snet-spec-edge", edge)):
        text = texts[name]
        assert Spec.from_yaml(text) == wanted
        # the keys in the order of the spec's own form (apiVersion and kind first), in
        # block style: the file an operator would write
        assert list(yaml.safe_load(text)) == list(wanted.to_dict())
        assert text.startswith("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n")
        # only the empty ones ([] and {}) in flow style
        assert [n.value for n in _flow_nodes(text)] == [[]] * len(_flow_nodes(text))


# ---------------------------------------------------------------- refusals


def _problems(spec: Spec, **options: Any) -> list[tuple[str, str]]:
    with pytest.raises(k3snet.SpecError) as info:
        render_manifests(spec, **options)
    return [(p.path, p.message) for p in info.value.problems]


FLANNEL = Spec(backends=["flannel"])
EXACTLY_ONE = ("backends", "the flannel backend needs exactly one of flannel_conf (the "
               "net-conf.json K3s reads with --flannel-conf) or flannel_configmap_namespace "
               "(upstream flannel's kube-flannel-cfg ConfigMap), or the spec's "
               "backends.flannel.path or backends.flannel.configmap")


def _not_normalised(path: str) -> tuple[str, str]:
    return ("backends", f"flannel_conf must be an absolute, normalised path of a file below a "
                        f"directory, got {path!r}")


def _shared(path: str, directory: str) -> tuple[str, str]:
    return ("backends", f"flannel_conf {path!r} is in {directory}, which holds other files "
                        "(K3s's kubeconfig, tokens, config); the agent mounts the file's "
                        "directory writable, so give flannel's config a directory of its own, "
                        "e.g. /etc/rancher/k3s/flannel/net-conf.json")


@pytest.mark.parametrize(("options", "problems"), [
    ({}, [EXACTLY_ONE]),
    ({"flannel_conf": "/a/b.json", "flannel_configmap_namespace": "Kube_Flannel"},
     [EXACTLY_ONE, ("backends", "'Kube_Flannel' is not a valid namespace name (a DNS-1123 "
                  "label: lower-case letters, digits and '-', at most 63)")]),
    ({"flannel_conf": "a/b.json"}, [_not_normalised("a/b.json")]),
    ({"flannel_conf": "/a/./b.json"}, [_not_normalised("/a/./b.json")]),
    ({"flannel_conf": "/b.json"}, [_not_normalised("/b.json")]),
    ({"flannel_conf": "/etc/b.json"}, [_shared("/etc/b.json", "/etc")]),
    ({"flannel_conf": "/tmp/b.json"}, [_shared("/tmp/b.json", "/tmp")]),
    ({"flannel_configmap_namespace": "-flannel"},
     [("backends", "'-flannel' is not a valid namespace name (a DNS-1123 "
                  "label: lower-case letters, digits and '-', at most 63)")]),
    ({"flannel_configmap_namespace": "f" * 64},
     [("backends", f"{'f' * 64!r} is not a valid namespace name (a DNS-1123 label: "
                  "lower-case letters, digits and '-', at most 63)")]),
])
def test_flannel_options_are_refused_with_every_problem(
    options: dict[str, str], problems: list[tuple[str, str]]
) -> None:
    assert _problems(FLANNEL, **options) == problems


@pytest.mark.parametrize("options", [{"flannel_conf": "/etc/k3s/flannel/net-conf.json"},
                                     {"flannel_configmap_namespace": "kube-flannel"}])
def test_flannel_options_without_the_flannel_backend(options: dict[str, str]) -> None:
    assert _problems(SEED, **options) == [
        ("backends", "flannel options given but the spec's backends do not include flannel")]


class _FlannelOptions(TypedDict, total=False):
    """The flannel keywords of :func:`render_manifests`, either or both."""

    flannel_conf: str
    flannel_configmap_namespace: str


@pytest.mark.parametrize("options", [{"flannel_conf": "/etc/k3s/flannel/net-conf.json"},
                                     {"flannel_configmap_namespace": "k" * 63},
                                     {"flannel_configmap_namespace": "a"}])
def test_flannel_options_accepted(options: _FlannelOptions) -> None:
    assert [o["kind"] for o in render_manifests(FLANNEL, **options)][-1] == "DaemonSet"


def test_profiles_are_refused_with_every_problem() -> None:
    base = CILIUM
    shared = ("must equal the base spec's {} (shared by every node or written once for the "
              "cluster)")
    other = Spec(destinations=[Destination("192.168.2.0/24", exclude=["10.0.0.0/8"])],
                 backends=["cilium", "nftables"], agent=AgentSettings(interval_seconds=5),
                 cluster=Cluster(["10.52.0.0/16"], ["10.53.0.0/16"]),
                 backend_options={"cilium": {"ip_masq_agent": "masq"}})
    moved = attrs.evolve(base, backend_options={"cilium": {"configmap": "kube-system/cfg",
                                                           "ip_masq_agent": "masq"}})
    name = ("a profile name is a DNS label of at most 40 characters other than 'default'")
    problems = _problems(base, profiles={
        "default": base, "x" * 41: base, "Edge": base, "ok": (base, "# text\n"),
        "other": other, "moved": moved})
    assert len(validate(other)) == 1
    assert problems == [
        ("profiles.Edge", name),
        ("profiles.default", name),
        ("profiles.moved.backends.cilium", "must equal the base spec's options of this "
                                           "backend (it writes objects shared by the cluster)"),
        # the profile's own problems, under its path
        *[(f"profiles.other.{p.path}", p.message) for p in validate(other)],
        ("profiles.other.backends", shared.format("backends")),
        ("profiles.other.agent", shared.format("agent")),
        ("profiles.other.cluster", shared.format("cluster")),
        ("profiles.other.backends.cilium", "must equal the base spec's options of this "
                                           "backend (it writes objects shared by the cluster)"),
        (f"profiles.{'x' * 41}", name),
    ]


def test_a_profile_name_of_40_characters() -> None:
    name = "p" * 40
    objs = render_manifests(SEED, profiles={name: SEED}, node_report=False)
    assert [o["metadata"]["name"] for o in objs] == [
        "k3snet-agent", "k3snet-spec", f"k3snet-spec-{name}", "k3snet-agent",
        f"k3snet-agent-{name}"]


# ---------------------------------------------------------------- the YAML stream


def test_dump_writes_every_document_on_its_own() -> None:
    shared = {"app": "web"}
    objs = [{"kind": "A", "metadata": {"labels": shared, "annotations": shared}},
            {"kind": "B", "metadata": {"labels": shared}}]
    text = dump_manifests(objs)
    # no &anchor / *alias even for an object met twice: each document reads alone
    assert "&" not in text
    assert "*" not in text
    assert [list(yaml.safe_load_all(doc)) for doc in text.split("---\n")[1:]] == [
        [objs[0]], [objs[1]]]
    assert dump_manifests(objs[:1]) == (
        "---\nkind: A\nmetadata:\n  labels:\n    app: web\n  annotations:\n    app: web\n")


def test_dump_writes_multi_line_strings_as_blocks() -> None:
    text = dump_manifests([{"data": {"one": "a line", "two": "line 1\nline 2\n"}}])
    assert text == "---\ndata:\n  one: a line\n  two: |\n    line 1\n    line 2\n"


@pytest.mark.parametrize("prefix", ["", "b"])
def test_dump_folds_long_strings_at_100_columns(prefix: str) -> None:
    value = prefix + " a" * 120
    text = dump_manifests([{"k": value}])
    (back,) = yaml.safe_load_all(text)
    assert back == {"k": value}
    lines = text.splitlines()[1:]
    # folded where a space passes column 100 (not PyYAML's default of 80)
    assert len(lines) == 3
    assert all(90 < len(line) <= 102 for line in lines[:-1])


def test_a_profile_given_twice_with_two_specs_is_refused_not_the_last_taken(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # `--profile gpu=a.yaml --profile gpu=b.yaml` rendered b's DaemonSet, silently.
    from k3snet.cli import main  # noqa: PLC0415

    seed = Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"
    other = tmp_path / "other.yaml"
    other.write_text(seed.read_text())
    argv = ["render", "manifests", "-f", str(seed), "--profile", f"gpu={seed}"]
    assert main([*argv, "--profile", f"gpu={other}"]) == 1
    assert (f"--profile gpu is given twice, with {seed} and {other}: one spec per profile"
            in capsys.readouterr().err)
    assert main([*argv, "--profile", f"gpu={seed}"]) == 0  # the same twice: one profile
    assert capsys.readouterr().out.count("k3snet.io/profile: gpu") >= 1
