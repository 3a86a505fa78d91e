"""A ConfigMap option is ``NAMESPACE/NAME`` text (a spec's ``backends:``, the
environment) or a ``(namespace, name)`` pair (Python); anything else is a
BackendOptionError naming the option, not a bare ValueError from unpacking."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("kubernetes")

from kubernetes import client

from k3snet.backends.cilium import CiliumBackend
from k3snet.backends.flannel import FlannelBackend
from k3snet.errors import BackendOptionError
from k3snet.kube import configmap_ref


@pytest.mark.parametrize("backend", [CiliumBackend, FlannelBackend])
@pytest.mark.parametrize("given", ["kube-system/net-conf", ("kube-system", "net-conf"),
                                   ["kube-system", "net-conf"]])
def test_text_and_pair_name_the_same_configmap(backend: Any, given: Any) -> None:
    made = backend(configmap=given, api_client=client.ApiClient())
    assert made.target == "configmap:kube-system/net-conf"


@pytest.mark.parametrize("given", ["kube-system", "a/b/c", "/name", "ns/", "", ("ns",),
                                   ("ns", "name", "x"), ("ns", 5), 5, None])
def test_anything_else_is_an_option_error_naming_the_option(given: Any) -> None:
    with pytest.raises(BackendOptionError, match=r"^configmap: .* is not NAMESPACE/NAME"):
        configmap_ref(given)


@pytest.mark.parametrize("backend", [CiliumBackend, FlannelBackend])
def test_a_backend_refuses_a_bad_configmap_before_connecting(backend: Any) -> None:
    with pytest.raises(BackendOptionError, match="configmap"):
        backend(configmap="kube-system/cilium-config/extra", api_client=None,
                kubeconfig="/nonexistent/kubeconfig")


def test_a_long_value_is_cut_in_the_message() -> None:
    with pytest.raises(BackendOptionError) as caught:
        configmap_ref("x" * 5000)
    assert len(str(caught.value)) < 200
