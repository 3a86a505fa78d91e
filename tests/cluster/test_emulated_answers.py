"""What the emulated API server answers: a missing object's 404 is the API server's
Status, with no server traceback in its details (kmock formatted one for each, which
cost each 404 about half its time), and requests in flight at once each get their own
answer (the emulator keeps only the last request for kmock's matching)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from k3snet.testing.kube import EmulatedApiServer


def test_a_missing_object_is_a_404_status_without_a_traceback(api_client: Any) -> None:
    with pytest.raises(ApiException) as caught:
        client.CoreV1Api(api_client).read_namespaced_config_map("absent", "default",
                                                               _request_timeout=5)
    status = json.loads(caught.value.body or "{}")
    assert caught.value.status == 404
    assert (status["kind"], status["status"], status["code"]) == ("Status", "Failure", 404)
    assert status["details"] == {}


def test_requests_sent_at_once_each_get_their_own_object(api_server: EmulatedApiServer) -> None:
    names = [f"c{i}" for i in range(12)]
    for name in names:
        api_server.put("v1/configmaps", {"apiVersion": "v1", "kind": "ConfigMap",
                                         "metadata": {"name": name, "namespace": "default"},
                                         "data": {"name": name}})

    def read(name: str) -> str:
        api: Any = client.CoreV1Api(api_server.api_client())
        return str(api.read_namespaced_config_map(name, "default", _request_timeout=10)
                   .data["name"])

    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        assert list(pool.map(read, names * 3)) == names * 3
