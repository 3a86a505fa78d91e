"""``k3snet explain PATH``: a key's type, default, allowed values and meaning."""

from __future__ import annotations

import doctest
import inspect
import json
import os

import pytest

import k3snet.spec.explain
from k3snet.backends.registry import backend_options, register_backend, unregister_backend
from k3snet.cli import EXIT_USAGE, main
from k3snet.errors import UnknownFieldError
from k3snet.spec.explain import explain, spec_paths
from k3snet.spec.json_schema import spec_json_schema


def test_the_module_example_runs() -> None:
    failed, tried = doctest.testmod(k3snet.spec.explain)
    assert tried
    assert not failed


def test_a_leaf_says_type_default_values_and_meaning(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "masquerade.mode"]) == 0
    out = capsys.readouterr().out
    assert "TYPE:     one of destinations, all, off" in out
    assert "DEFAULT:  destinations" in out
    assert "ip-masq-agent's semantics" in out
    table = explain("destinations[].table")
    assert "TYPE:     integer 1..4294967295, not 255" in table
    assert "DEFAULT:  254" in table
    assert explain("destinations.table") == table.replace("destinations[].", "destinations.")
    cidr = explain("destinations.cidr")
    assert "REQUIRED: yes" in cidr
    assert "a CIDR" in cidr


def test_an_object_lists_its_keys() -> None:
    text = explain("destinations")
    assert "TYPE:     list of object" in text
    assert "    cidr" in text
    assert "required" in text.split("    cidr", 1)[1].splitlines()[0]
    assert "    apiVersion" in explain("")
    assert "    backend " in explain("cni.flannel")
    assert "TYPE:     one of vxlan, host-gw" in explain("cni.flannel.backend.type")


def test_every_path_is_explained() -> None:
    paths = spec_paths()
    assert {"destinations.cidr", "cni.calico.blockSize", "masquerade.ipMasqAgentConfig"} <= set(
        paths)
    for path in paths:
        assert explain(path).startswith(f"KEY:      {path}\n")


def test_unknown_paths_are_usage_errors_with_suggestions(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "masquerade.destinations.cidr"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "no key 'masquerade.destinations.cidr'" in err
    assert "did you mean destinations.cidr" in err
    with pytest.raises(UnknownFieldError) as info:
        explain("masquerade.mod")
    assert info.value.suggestions[0] == "masquerade.mode"
    with pytest.raises(UnknownFieldError):
        explain("destinations.cidr.more")


def test_backends_lists_each_backends_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "backends"]) == 0
    out = capsys.readouterr().out
    assert "BACKENDS (their options):" in out
    assert "nftables   netns, family, table" in out
    assert main(["explain", "backends.nftables.table"]) == 0
    assert "DEFAULT:  k3snet\n" in capsys.readouterr().out
    assert main(["explain", "backends.nftables.tabel"]) == EXIT_USAGE
    assert "did you mean table?" in capsys.readouterr().err
    assert main(["explain", "backends.nftabels"]) == EXIT_USAGE
    assert "did you mean backends.nftables" in capsys.readouterr().err


def test_schema_prints_the_shipped_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "--schema"]) == 0
    assert json.loads(capsys.readouterr().out) == spec_json_schema()


def test_a_backend_option_s_allowed_values_are_spelled_out(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "backends.nftables.family"]) == 0
    assert "TYPE:     one of inet, split\n" in capsys.readouterr().out
    assert main(["explain", "backends.iptables.mode"]) == 0
    assert "TYPE:     one of nft, legacy, auto\n" in capsys.readouterr().out
    # flannel's reader: explain said <string or null>, naming neither value it takes.
    assert main(["explain", "backends.flannel.reader"]) == 0
    assert "TYPE:     one of k3s, flanneld or null\n" in capsys.readouterr().out
    assert main(["explain", "backends.nftables"]) == 0
    assert ("netns              <string or null> default the caller's own namespace"
            in capsys.readouterr().out)


def test_a_null_default_says_what_the_backend_does_instead(
        capsys: pytest.CaptureFixture[str]) -> None:
    """netlink's ``state_dir`` defaults to ``None`` in Python, and explain said
    ``DEFAULT:  null``: the user gets ``/run/k3snet`` (the backend's option_defaults)."""
    assert main(["explain", "backends.netlink.state_dir"]) == 0
    assert capsys.readouterr().out == ("KEY:      backends.netlink.state_dir\n"
                                       "TYPE:     absolute path or null\n"
                                       "DEFAULT:  /run/k3snet\n")
    assert main(["explain", "backends.netlink"]) == 0
    out = capsys.readouterr().out
    assert "tables             <list or null> default every table but local" in out
    assert main(["explain", "backends.flannel.kubeconfig"]) == 0
    assert "DEFAULT:  the in-cluster service account in a pod, else $KUBECONFIG" in (
        capsys.readouterr().out)


@pytest.mark.parametrize("name", ["netlink", "nftables", "iptables", "flannel", "calico",
                                  "cilium", "memory"])
def test_backend_options_are_typed_in_a_spec_s_words(
        name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``<str or Path or null>``, ``<bool>``, ``<float>``, ``<Iterable>`` were Python's
    names of what a spec writes as a string, a boolean, a number or a list."""
    assert main(["explain", f"backends.{name}"]) == 0
    fields = capsys.readouterr().out.split("FIELDS:\n", 1)[1]
    types = [line.split("<", 1)[1].rsplit(">", 1)[0] for line in fields.splitlines()]
    words = {word for text in types for word in text.replace(",", " ").split()}
    assert not words & {"str", "bool", "int", "float", "Path", "Iterable", "tuple", "Any"}, (
        types)


def test_an_annotation_that_does_not_resolve_is_said_as_written() -> None:
    def factory(*, colour: Hue = "red") -> None:  # type: ignore[name-defined]  # noqa: F821
        """A third-party backend naming a type only its type checker sees."""

    register_backend("unresolved-hue", factory)  # type: ignore[arg-type]
    try:
        options = backend_options("unresolved-hue", resolve=True)
    finally:
        unregister_backend("unresolved-hue")
    assert explain("backends.unresolved-hue.colour",
                   backends={"unresolved-hue": options}).splitlines()[1] == "TYPE:     Hue"


def test_an_option_s_default_is_said_as_a_spec_writes_it(
        capsys: pytest.CaptureFixture[str]) -> None:
    """``DEFAULT:  'inet'`` and ``None`` were Python's spellings; a spec's ``backends:``
    takes ``inet`` and ``null``, as the spec keys' defaults are said. An empty text
    stays visible, quoted."""
    from k3snet.spec.explain import explain  # noqa: PLC0415

    assert main(["explain", "backends.nftables.family"]) == 0
    assert "DEFAULT:  inet\n" in capsys.readouterr().out

    def factory(*, path: str = "", limit: float = 10.0, on: bool = True) -> None:
        """A backend with an empty default text."""

    declared = {"x": dict(inspect.signature(factory).parameters)}
    assert "DEFAULT:  \"\"" in explain("backends.x.path", backends=declared)
    assert "DEFAULT:  10.0" in explain("backends.x.limit", backends=declared)
    assert "DEFAULT:  true" in explain("backends.x.on", backends=declared)


def test_a_backend_s_listing_marks_the_options_it_requires() -> None:
    """The listing of a third-party backend's options (``explain backends.jsonfile``)
    showed a required ``path`` as ``path <absolute path>``, like an option left to its
    default, where the spec's own keys say ``required``; only asking for the option
    alone said ``REQUIRED: yes``."""

    def factory(path: str | os.PathLike[str], *, limit: float = 10.0) -> None:
        """A backend with one required option."""

    declared = {"x": dict(inspect.signature(factory, eval_str=True).parameters)}
    fields = explain("backends.x", backends=declared).split("FIELDS:\n", 1)[1].splitlines()
    assert fields == ["    path               <absolute path>  required",
                      "    limit              <number> default 10.0"]


def test_the_backends_listing_aligns_a_long_third_party_name() -> None:
    """A backend name longer than the built-in ones (``staticroutes``) ran into its
    options (``staticroutes path``), out of the column the others' options start in."""
    def option(name: str) -> dict[str, inspect.Parameter]:
        return {name: inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY)}

    declared = {"netlink": option("netns"), "staticroutes": option("path")}
    listing = explain("backends", backends=declared).split("BACKENDS (their options):\n")[1]
    assert listing.splitlines() == ["    netlink       netns", "    staticroutes  path"]
