"""The emulated API server refuses a continue token it did not make with 400, as the
real one refuses one it cannot decode: a token decoding to something other than its
own (a number, an object, a list of numbers) was a ``TypeError`` in the emulator, which
kmock answered as a 500, a server error a pager may retry."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from k3snet.testing.kube import EmulatedApiServer


def _put(server: EmulatedApiServer, name: str) -> None:
    server.put("v1/configmaps", {"apiVersion": "v1", "kind": "ConfigMap",
                                 "metadata": {"name": name, "namespace": "default"}})


def _token(value: Any) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


@pytest.mark.parametrize("token", ["not base64!", _token(5), _token({"a": 1}), _token([1, 2]),
                                   _token(["a"]), _token(None)])
def test_a_continue_token_the_server_did_not_make_is_a_bad_request(
        api_server: EmulatedApiServer, api_client: Any, token: str) -> None:
    _put(api_server, "a")
    with pytest.raises(ApiException) as caught:
        client.CoreV1Api(api_client).list_namespaced_config_map(
            "default", limit=2, _continue=token, _request_timeout=5)
    assert caught.value.status == 400


def test_a_continue_token_the_server_made_gives_the_next_page(
        api_server: EmulatedApiServer, api_client: Any) -> None:
    for name in ("a", "b", "c"):
        _put(api_server, name)
    api: Any = client.CoreV1Api(api_client)
    first = api.list_namespaced_config_map("default", limit=2, _request_timeout=5)
    rest = api.list_namespaced_config_map("default", limit=2, _continue=first.metadata._continue,
                                          _request_timeout=5)
    assert [c.metadata.name for c in [*first.items, *rest.items]] == ["a", "b", "c"]
    assert not rest.metadata._continue
