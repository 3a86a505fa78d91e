"""Shared helpers of the cluster backends: an API client, and errors that name the object.

The ``kubernetes`` package is imported lazily, so the file-only flannel backend
and the rest of k3snet work without it (``pip install 'k3snet[kube]'``).

Every call to the API server goes through :func:`kube_call`, which turns the
client's exceptions (``ApiException`` with a status, urllib3 timeouts and
connection errors) into a :class:`KubeApiError` whose message says what k3snet
was doing to which object and what the status means for the operator.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any, TypeVar

from k3snet.errors import BackendError, BackendUnavailableError

__all__ = [
    "DEFAULT_TIMEOUT",
    "MANAGED_BY_LABEL",
    "MANAGED_BY_VALUE",
    "KubeApiError",
    "kube_call",
    "make_api_client",
]

T = TypeVar("T")

DEFAULT_TIMEOUT = 10.0
"""Seconds to wait for one API request before giving up."""

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "k3snet"

_HINTS = {
    401: "unauthorized (401): the credentials in the kubeconfig or service account token "
         "were refused",
    403: "forbidden (403): k3snet's account lacks the RBAC permission for this; grant it "
         "(see the rendered ClusterRole)",
    404: "not found (404)",
    409: "conflict (409): the object was changed by someone else since k3snet read it, or "
         "already exists; nothing was written, observe and plan again",
    415: "unsupported media type (415)",
    422: "rejected as invalid (422)",
    429: "throttled (429): the API server asks to retry later",
}


class KubeApiError(BackendError):
    """A request to the Kubernetes API failed; ``status`` is the HTTP status (``None``:
    no answer)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


def _kubernetes() -> Any:
    try:
        import kubernetes  # noqa: PLC0415 - optional dependency (k3snet[kube])
    except ImportError as exc:
        raise BackendUnavailableError(
            f"the kubernetes client is not installed: {exc} (pip install 'k3snet[kube]')"
        ) from exc
    return kubernetes


def make_api_client(
    api_client: Any = None,
    *,
    kubeconfig: str | None = None,
    context: str | None = None,
) -> tuple[Any, bool]:
    """An ``ApiClient``, and whether the caller owns it (must close it).

    ``api_client`` is returned as is (not owned). Otherwise the in-cluster
    service account is used when running in a pod (``KUBERNETES_SERVICE_HOST``
    set and no ``kubeconfig`` given), else the kubeconfig (``$KUBECONFIG`` or
    ``~/.kube/config``, or ``kubeconfig``), with ``context``.
    """
    if api_client is not None:
        return api_client, False
    kubernetes = _kubernetes()
    config = kubernetes.config
    try:
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            configuration = kubernetes.client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            return kubernetes.client.ApiClient(configuration), True
        return config.new_client_from_config(config_file=kubeconfig, context=context), True
    except (config.ConfigException, OSError, TypeError, ValueError) as exc:
        where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise BackendUnavailableError(
            f"no Kubernetes API to talk to: cannot load the kubeconfig {where} or the in-cluster "
            f"service account ({exc})"
        ) from exc


def _server_message(body: Any) -> str:
    """The ``message`` of a Kubernetes ``Status`` body, shortened."""
    if not body:
        return ""
    text = body.decode(errors="replace") if isinstance(body, bytes) else str(body)
    try:
        data = json.loads(text)
    except ValueError:
        message = text
    else:
        message = str(data.get("message", "")) if isinstance(data, dict) else text
    message = " ".join(message.split())
    return message if len(message) <= 300 else message[:297] + "..."


def describe_api_exception(exc: BaseException, timeout: float | None) -> tuple[str, int | None]:
    """A human phrase for what went wrong, and the HTTP status if there was one."""
    kubernetes = _kubernetes()
    import urllib3  # noqa: PLC0415 - a dependency of the kubernetes client

    if isinstance(exc, kubernetes.client.exceptions.ApiException):
        status = exc.status or None
        if status is None:  # the client's own failures (TLS, unusable arguments)
            return f"the request failed before reaching the API server: {exc.reason}", None
        if status >= 500:
            what = f"the API server failed ({status} {exc.reason or ''})".replace(" )", ")")
        else:
            what = _HINTS.get(status, f"refused ({status} {exc.reason or ''})")
        message = _server_message(exc.body)
        return (f"{what}: {message}" if message else what), status
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    # NewConnectionError derives from ConnectTimeoutError in urllib3: test it first.
    if isinstance(exc, urllib3.exceptions.TimeoutError) and not isinstance(
        exc, urllib3.exceptions.NewConnectionError
    ):
        limit = f" within {timeout:g}s" if timeout is not None else ""
        return f"no answer from the API server{limit} (timed out; it may or may not " \
               f"have acted on the request)", None
    return f"cannot reach the API server: {type(exc).__name__}: {exc}", None


def kube_call(
    what: str,
    call: Callable[[], T],
    *,
    timeout: float | None = None,
    error: type[KubeApiError] = KubeApiError,
) -> T:
    """Run one API request; failures become ``error`` saying ``what`` failed and why.

    ``what`` names the action and the object: ``"patch ConfigMap kube-flannel/x"``.
    """
    kubernetes = _kubernetes()
    import urllib3  # noqa: PLC0415 - a dependency of the kubernetes client

    try:
        return call()
    except (kubernetes.client.exceptions.ApiException, urllib3.exceptions.HTTPError,
            OSError) as exc:
        phrase, status = describe_api_exception(exc, timeout)
        raise error(f"{what}: {phrase}", status=status) from exc
