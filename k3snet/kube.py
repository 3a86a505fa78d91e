"""Shared helpers of the cluster backends: an API client, and errors that name the object.

The ``kubernetes`` package is imported lazily, so the file-only flannel backend
and the rest of k3snet work without it (``pip install 'k3snet[kube]'``).

Every call to the API server runs inside the kit's one error mapper,
:func:`k3snet.backends.kit.translate_errors`, with the classifier
:class:`KubeErrors`: the client's exceptions (``ApiException`` with a status,
urllib3 timeouts and connection errors) become a :class:`KubeApiError` whose
message says what k3snet was doing to which object and what the status means
for the operator, and which carries the HTTP ``status`` and the Kubernetes
``reason``::

    with translate_errors(f"read ConfigMap {namespace}/{name}", classifier=KubeErrors()):
        core.read_namespaced_config_map(name, namespace)

What each failure becomes (``status``, ``reason``: the message says):

* credentials refused: 401, ``Unauthorized``: ``unauthorized (401): ...``;
* an RBAC permission missing: 403, ``Forbidden``: ``forbidden (403): ...``;
* no such object (or API): 404, ``NotFound``: ``not found (404)``;
* changed meanwhile, or the name is taken: 409, ``Conflict`` or ``AlreadyExists``:
  ``conflict (409): ...``;
* rejected by validation: 422, ``Invalid``: ``rejected as invalid (422)``;
* throttled: 429, ``TooManyRequests``: ``throttled (429): ...``;
* the API server failed: 5xx, its reason: ``the API server failed (5xx ...)``;
* no answer in time: ``None``, ``Timeout``: ``no answer from the API server within
  Ns (timed out; it may or may not have acted on the request)``;
* the API server unreachable: ``None``, ``None``: ``cannot reach the API server: ...``.

The ``reason`` is the one the API server's ``Status`` body names, when it names
one (a one-word Kubernetes ``StatusReason``: it tells a 409 ``AlreadyExists``
from a 409 ``Conflict``), else the one Kubernetes uses for that status. The
message ends with the server's own message when it sent one.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import attrs

# Re-exported: their home is apart, for the CLI's cold path (see k3snet._deadline).
from k3snet._deadline import ASSUMED_TERMINATION_GRACE, Deadline, requests_within
from k3snet._deadline import WITHIN as _WITHIN
from k3snet._logline import printable
from k3snet._regex import lazy_pattern
from k3snet.errors import BackendError, BackendOptionError, BackendUnavailableError

__all__ = [
    "API_OPTION_CHECKS",
    "ASSUMED_TERMINATION_GRACE",
    "DEFAULT_TIMEOUT",
    "KUBECONFIG_DEFAULT",
    "LIST_PAGE",
    "MANAGED_BY_LABEL",
    "MANAGED_BY_VALUE",
    "METADATA_ONLY",
    "THROTTLED_STATUSES",
    "THROTTLE_WAITS",
    "Deadline",
    "KubeApiError",
    "KubeErrors",
    "ThrottleWaits",
    "configmap_ref",
    "label_selector_problem",
    "list_node_metadata",
    "list_pages",
    "make_api_client",
    "name_problem",
    "requests_within",
    "retry_policy",
    "safe_to_send_again",
    "selector_matches",
    "server_time",
    "throttle_waits",
]

KUBECONFIG_DEFAULT = ("the in-cluster service account in a pod, else $KUBECONFIG or "
                      "~/.kube/config")
"""What a backend's ``kubeconfig`` left out means (:func:`make_api_client`), in words."""

_DNS_LABEL = lazy_pattern(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = lazy_pattern(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DATA_KEY = lazy_pattern(r"[-._a-zA-Z0-9]+")


def name_problem(value: str, kind: str = "name") -> str | None:
    """Why the API server would refuse ``value`` as a ``kind`` (``None``: it would not).

    ``kind``: ``name`` (of a Node, a ConfigMap, a Lease: a DNS subdomain),
    ``namespace`` (a DNS label) or ``key`` (of a ConfigMap's data).

    >>> name_problem("kube-system", "namespace") is None
    True
    >>> name_problem("Worker-1").split(":")[0]
    "'Worker-1' is not a name"
    """
    if kind == "namespace":
        if not _DNS_LABEL.fullmatch(value):
            return (f"{value!r} is not a namespace: lower-case letters, digits and '-', at most "
                    "63 characters, a letter or digit at each end")
        return None
    if kind == "key":
        if len(value) > 253 or not _DATA_KEY.fullmatch(value) or value in (".", ".."):
            return (f"{value!r} is not a ConfigMap key: letters, digits, '-', '_' and '.', at "
                    "most 253 characters")
        return None
    if len(value) > 253 or not _DNS_SUBDOMAIN.fullmatch(value):
        return (f"{value!r} is not a name: lower-case letters, digits, '-' and '.', at most "
                "253 characters, a letter or digit at each end")
    return None


_LABEL_NAME = lazy_pattern(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")


def label_selector_problem(text: str) -> str | None:
    """Why ``text`` is not ``KEY`` or ``KEY=VALUE`` with a label key and value the API
    server accepts, as ``agent --lease-candidates`` takes it (``None``: it is).

    A selector that can match no label (``key==value`` as kubectl writes it, ``key!=v``,
    a set, a space) made every node no candidate: no node wrote the cluster-wide objects.

    >>> label_selector_problem("node-role.kubernetes.io/control-plane") is None
    True
    >>> label_selector_problem("role==edge").split(":")[0]
    "'role==edge' is not LABEL or LABEL=VALUE"
    """
    key, sep, value = text.partition("=")
    prefix, slash, name = key.rpartition("/")
    if (not _LABEL_NAME.fullmatch(name) or (slash and name_problem(prefix) is not None)
            or (sep and value and not _LABEL_NAME.fullmatch(value))):
        return (f"{text!r} is not LABEL or LABEL=VALUE: a label key ([PREFIX/]NAME, NAME at "
                "most 63 letters, digits, '-', '_' or '.') and one '=' before a value of the "
                "same (no '==', '!=', sets or spaces)")
    return None


def label_key_problem(key: Any) -> bool:
    """Whether the API server refuses ``key`` as a label key (or an annotation's name)."""
    if not isinstance(key, str):
        return True
    prefix, slash, name = key.rpartition("/")
    return not _LABEL_NAME.fullmatch(name) or bool(slash and name_problem(prefix) is not None)


def label_value_problem(value: Any) -> bool:
    """Whether the API server refuses ``value`` as a label value."""
    return not isinstance(value, str) or bool(value and not _LABEL_NAME.fullmatch(value))


_OPERATORS = {"In": True, "NotIn": True, "Exists": False, "DoesNotExist": False}  # values?


def _or_none(value: Any, empty: Any) -> Any:
    return empty if value is None else value


def selector_matches(selector: Any, labels: Mapping[str, str]) -> bool:
    """Whether the label selector ``selector`` (``metav1.LabelSelector`` as JSON data:
    ``matchLabels``, ``matchExpressions``) selects an object with ``labels``, as
    apimachinery's ``LabelSelectorAsSelector`` and ``Matches`` judge it: ``None``
    selects nothing, an empty one everything; ``NotIn`` and ``DoesNotExist`` select
    what lacks the key.

    A selector apimachinery refuses (an unknown operator, ``In`` without values,
    ``Exists`` with some, a key or value that is no label's) raises ``ValueError``.

    >>> selector_matches({"matchLabels": {"zone": "edge"}}, {"zone": "edge", "x": "y"})
    True
    >>> selector_matches({"matchExpressions": [{"key": "rack", "operator": "NotIn",
    ...                                         "values": ["a"]}]}, {})
    True
    """
    if selector is None:
        return False
    if not isinstance(selector, Mapping):
        raise ValueError("not a label selector")
    # JSON null is Go's nil (none); anything else not of the field's type fails to
    # decode, and is refused (an empty list is not "no matchLabels").
    match_labels = _or_none(selector.get("matchLabels"), {})
    expressions = _or_none(selector.get("matchExpressions"), [])
    if not isinstance(match_labels, Mapping) or not isinstance(expressions, list):
        raise ValueError("not a label selector")
    requirements: list[tuple[Any, str, list[Any]]] = []
    for key, value in match_labels.items():
        if label_key_problem(key) or label_value_problem(value):
            raise ValueError(f"not a label selector: matchLabels {key!r}: {value!r}")
        requirements.append((key, "In", [value]))
    for expression in expressions:
        if not isinstance(expression, Mapping):
            raise ValueError("not a label selector: a matchExpressions entry is no object")
        key, operator = expression.get("key"), expression.get("operator")
        values = _or_none(expression.get("values"), [])
        # A list or an object is unhashable: looked up as it is, a TypeError.
        if not isinstance(operator, str) or operator not in _OPERATORS or label_key_problem(key):
            raise ValueError(f"not a label selector: {key!r} {operator!r}")
        if (not isinstance(values, list) or bool(values) != _OPERATORS[operator]
                or any(label_value_problem(v) for v in values)):
            raise ValueError(f"not a label selector: {key!r} {operator} with values {values!r}")
        requirements.append((key, operator, values))
    for key, operator, values in requirements:
        has = key in labels
        if not {"In": has and labels.get(key) in values,
                "NotIn": not has or labels.get(key) not in values,
                "Exists": has, "DoesNotExist": not has}[operator]:
            return False
    return True


def object_ref_problem(text: str, *, key: bool = False) -> str | None:
    """Why ``text`` is not ``NS/NAME`` (``NS/NAME[:KEY]`` when ``key``), as the agent's
    ``--lease`` and ``--spec-configmap`` take them (``None``: it is).

    >>> object_ref_problem("kube-system/k3snet-spec:spec.yaml", key=True) is None
    True
    >>> object_ref_problem("kube-system")
    "must be NS/NAME, not 'kube-system'"
    """
    where, colon, name_key = text.partition(":") if key else (text, "", "")
    namespace, sep, name = where.partition("/")
    if not sep or not namespace or not name or (colon and not name_key):
        return f"must be NS/NAME{'[:KEY]' if key else ''}, not {text!r}"
    return (name_problem(namespace, "namespace") or name_problem(name)
            or (name_problem(name_key, "key") if name_key else None))


def configmap_ref(value: str | Sequence[str], *, option: str = "configmap"
                  ) -> tuple[str, str]:
    """``(namespace, name)`` of a ConfigMap given as ``"NAMESPACE/NAME"`` or a pair.

    Both forms reach backends: the pair from Python, the text from a spec's
    ``backends:`` options and the environment. Anything else is a
    :class:`~k3snet.errors.BackendOptionError` naming the option (the names
    themselves are checked by the backend's target).

    >>> configmap_ref("kube-system/cilium-config")
    ('kube-system', 'cilium-config')
    >>> configmap_ref(["kube-flannel", "kube-flannel-cfg"])
    ('kube-flannel', 'kube-flannel-cfg')
    """
    parts = value.split("/") if isinstance(value, str) else value
    if (not isinstance(parts, Sequence) or len(parts) != 2
            or not all(isinstance(part, str) and part for part in parts)):
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        raise BackendOptionError(f"{option}: {shown} is not NAMESPACE/NAME "
                                 "(or a [namespace, name] pair)")
    return parts[0], parts[1]


DEFAULT_TIMEOUT = 10.0
"""Seconds to wait for one API request before giving up."""

TERMINATION_GRACE = 70
"""The agent pod's ``terminationGracePeriodSeconds``: after SIGTERM, the seconds the
kubelet gives it to end its pass, release its Lease and (``--cleanup-on-exit``) remove
k3snet's objects, before it kills it.

SIGTERM never cuts the apply in progress. This is the grace period of an agent that
runs no iptables backend; one that may gets more from ``render manifests`` (130 s at
the backend's 30 s ``timeout``): the longest bounded step of a pass, an
``iptables-restore`` run killed at that bound, and its undo (a read-back, one run per
family), each as long; then the Lease's release and the last report, within
:data:`~k3snet.agent.CLEANUP_MARGIN` (5 s), and 5 s to spare. At 30 s the kubelet's
SIGKILL could land in that undo (the node half-changed, nothing said), and at 70 s in
its later runs.

The rendered DaemonSet tells the agent this value (``$K3SNET_TERMINATION_GRACE``,
``k3snet agent --termination-grace``); an agent not told assumes
:data:`ASSUMED_TERMINATION_GRACE`."""

_LEAST_TIMEOUT = 0.001  # the client sends a timeout of 0 with none at all
_CUT_ATTRIBUTE = "_k3snet_timeout_cut"
"""Set on the error of a request whose timeout :func:`requests_within` cut: the seconds
it waited at most, quoted by its message in place of the caller's timeout."""


def _cut(timeout: Any, left: float) -> Any:
    """A request's ``_request_timeout`` (seconds, ``(connect, read)`` or None) cut to
    ``left`` seconds."""
    left = max(left, _LEAST_TIMEOUT)
    if isinstance(timeout, tuple) and len(timeout) == 2:
        return tuple(left if t is None else min(t, left) for t in timeout)
    if isinstance(timeout, int | float) and timeout > 0:
        return min(float(timeout), left)
    return left


def _waits(timeout: Any) -> float:
    """The longest a request of ``_request_timeout`` (as :func:`_cut` makes it) waits
    for one thing: its connection or its answer."""
    if isinstance(timeout, tuple):
        return max(float(t) for t in timeout if t is not None)
    return float(timeout)


THROTTLED_STATUSES = frozenset({429, 503})
"""The answers k3snet sends a request again after (:class:`ThrottleWaits`): 429, the API
server's Priority and Fairness or max-in-flight limit turning it away before handling
it, and 503, the server (or its aggregated API) unable to serve it now."""


@attrs.frozen
class ThrottleWaits:
    """How a request of a client :func:`make_api_client` returned is sent again after a
    :data:`THROTTLED_STATUSES` answer, by k3snet's own request wrapper (urllib3 sends no
    answer again: :func:`retry_policy`).

    It waits the answer's ``Retry-After`` (``backoff`` seconds when it names none,
    doubled each time, up to ``longest``), at most ``tries`` times, never one wait over
    ``longest`` nor all of them over ``total`` seconds, nor past what is left of a
    :func:`requests_within` deadline: an answer asking longer is the caller's at once,
    the request never sent before the time the API server asked. Each wait is logged
    (a warning of the ``k3snet.kube`` logger: a line on the CLI's stderr). Only a
    request that is safe to send twice is sent again (:func:`safe_to_send_again`): the
    others' answer is the caller's at once. A write sent again after a 503 (which may
    come after the API server acted) and then refused says an earlier send may have
    made the change; one given up on with a 503 (after its last try, or not sent
    again) says a send may have made it. A ``Retry-After`` is seconds or an HTTP date.

    ``sleep`` waits (a recorder in tests).
    """

    tries: int = attrs.field(default=5, validator=attrs.validators.ge(0))
    """Times a request is sent again at most."""
    longest: float = attrs.field(default=5.0, validator=attrs.validators.ge(0))
    """Seconds of one wait at most."""
    total: float = attrs.field(default=30.0, validator=attrs.validators.ge(0))
    """Seconds of all the waits of one request at most."""
    backoff: float = attrs.field(default=1.0, validator=attrs.validators.ge(0))
    """The first wait after an answer naming no ``Retry-After``, doubled for each next."""
    sleep: Callable[[float], None] = attrs.field(default=time.sleep, eq=False, repr=False)

    def wait(self, retry_after: float | None, sent_again: int) -> float:
        """Seconds to wait before sending a request again for the ``sent_again + 1``-th
        time, after an answer whose ``Retry-After`` is ``retry_after``; unbounded."""
        if retry_after is not None:
            return max(0.0, retry_after)
        return min(self.longest, self.backoff * 2.0 ** min(sent_again, 30))


THROTTLE_WAITS = ThrottleWaits()
"""What the one-shot commands (``k3snet plan``, ``apply``, ``destroy``, ``observe``,
``doctor``, ``connectivity``, the Ansible module) and a library caller wait for a
throttled answer to a request of a client k3snet made (:func:`make_api_client` from a
kubeconfig): up to 5 more tries, 5 s each and 30 s in all at most. A client the caller
made and handed to k3snet (``api_client=``) waits none outside a :func:`throttle_waits`
block: its requests, the caller's own too, are left as the caller sends them. The agent
waits none (:func:`throttle_waits`): its loops wait with their own bounds."""

# (No default: unset, a client k3snet made waits THROTTLE_WAITS, a caller's none.)
_WAITS: contextvars.ContextVar[ThrottleWaits | None] = contextvars.ContextVar(
    "k3snet_kube_waits")
_NOTE_ATTRIBUTE = "_k3snet_throttle_note"
"""Set on the headers of a throttled answer given to the caller after waits, or without
one it asked too long for: what was done, quoted by :class:`KubeErrors`' message."""
_MAY_HAVE_ACTED = ("the request was sent again after a 503 answer, which may come after "
                   "the API server acted: this send changed nothing, an earlier one may "
                   "have made the change it refuses")
_MAY_HAVE_ACTED_ONE = ("a 503 may come after the API server acted: this send may have "
                       "made the change; the next plan shows what is there")
_MAY_HAVE_ACTED_ANY = ("a 503 may come after the API server acted: any send answered 503 "
                       "may have made the change; the next plan shows what is there")
_log = logging.getLogger(__name__)


@contextlib.contextmanager
def throttle_waits(waits: ThrottleWaits | None) -> Iterator[None]:
    """Within the block, in this thread, a request of a client :func:`make_api_client`
    returned answered 429 or 503 is sent again as ``waits`` says (``None``: never; its
    answer is the caller's at once). Outside any such block, :data:`THROTTLE_WAITS` for
    a client k3snet made, none for one the caller handed to it.

    The agent's pass, Lease elector and node report run within ``throttle_waits(None)``:
    each waits a throttled answer's ``Retry-After`` in its own loop, bounded and cut by
    the grace period after SIGTERM; a wait inside the request as well would double it.
    """
    token = _WAITS.set(waits)
    try:
        yield
    finally:
        _WAITS.reset(token)


_MERGING = ("application/merge-patch+json", "application/apply-patch+yaml")


def safe_to_send_again(method: str, content_type: str | None, body: Any) -> bool:
    """Whether a request may be sent again after an answer that may follow its effect:
    a second send then changes nothing the first did not, or is refused.

    A read (``GET``, ``HEAD``); a ``PUT`` (the same object stored twice); a JSON merge
    patch or a server-side apply (applied twice, they are applied once; with a
    ``resourceVersion``, the second is refused); a write whose body names
    ``metadata.resourceVersion`` (a second send is refused with 409 once the first
    acted); a ``DELETE`` whose ``preconditions`` name the object's ``resourceVersion``
    or ``uid`` (a second send cannot delete an object made again meanwhile); a
    ``POST`` creating an object it names (a second is refused, AlreadyExists: never a
    second object). Not: a create whose name the server makes (``generateName``), a
    JSON Patch (its ``add`` to a list adds twice), an unconditioned ``DELETE``.
    """
    method = method.upper()
    if method in ("GET", "HEAD", "PUT"):
        return True
    metadata = body.get("metadata") if isinstance(body, dict) else None
    if not isinstance(metadata, dict):
        metadata = {}
    if method == "PATCH":
        media = (content_type or "").split(";")[0].strip().lower()
        return media in _MERGING or bool(metadata.get("resourceVersion"))
    if method == "DELETE":
        preconditions = body.get("preconditions") if isinstance(body, dict) else None
        return isinstance(preconditions, dict) and bool(
            preconditions.get("resourceVersion") or preconditions.get("uid"))
    if method == "POST":
        return bool(metadata.get("name")) and not metadata.get("generateName")
    return False


def _request_parts(args: tuple[Any, ...], kwargs: dict[str, Any]
                   ) -> tuple[str, str, str | None, Any]:
    """Method, URL, Content-Type and body of a call of the REST client's ``request``
    (``method, url, headers=None, body=None, ...``)."""
    method = str(args[0] if args else kwargs.get("method", ""))
    url = str(args[1] if len(args) > 1 else kwargs.get("url", ""))
    headers = args[2] if len(args) > 2 else kwargs.get("headers")
    body = args[3] if len(args) > 3 else kwargs.get("body")
    content_type = None
    if isinstance(headers, Mapping):
        content_type = next((str(v) for k, v in headers.items()
                             if str(k).lower() == "content-type"), None)
    return method, url, content_type, body


def _note(response: Any, note: str) -> None:
    """Say ``note`` in the error the caller makes of ``response`` (on its headers, which
    the client's ``ApiException`` keeps)."""
    with contextlib.suppress(AttributeError, TypeError):
        setattr(response.headers, _NOTE_ATTRIBUTE, note)


def _given_up(response: Any, *said: str) -> Any:
    """``response``, its error saying what of ``said`` is not empty (``; `` between)."""
    if any(said):
        _note(response, "; ".join(filter(None, said)))
    return response


def _release(response: Any) -> None:
    """Read and let go of an answer not given to the caller (its connection back to the
    pool)."""
    raw = getattr(response, "response", None)
    with contextlib.suppress(Exception):  # an answer cut short: the pool drops its connection
        response.read()
    if raw is not None:
        with contextlib.suppress(Exception):
            raw.release_conn()


def _bound(api_client: Any, *, made: bool) -> None:
    """Make ``api_client``'s requests honour :func:`requests_within` and
    :func:`throttle_waits` (once a client; outside such a block, one k3snet ``made``
    waits :data:`THROTTLE_WAITS`, a caller's none: its own requests are its own)."""
    rest = getattr(api_client, "rest_client", None)
    if rest is None or getattr(rest, "_k3snet_within", False):
        return
    request = rest.request

    def send(args: tuple[Any, ...], kwargs: dict[str, Any], given: Any) -> Any:
        within = _WITHIN.get()
        deadline = within() if within is not None else None
        cut = None
        if deadline is not None:
            kwargs["_request_timeout"] = _cut(given, deadline.left())
            if kwargs["_request_timeout"] != given:
                cut = _waits(kwargs["_request_timeout"])
        try:
            return request(*args, **kwargs)
        except Exception as exc:
            if cut is not None:
                setattr(exc, _CUT_ATTRIBUTE, cut)
            raise

    def bounded(*args: Any, **kwargs: Any) -> Any:
        given = kwargs.get("_request_timeout")
        waits = _WAITS.get(THROTTLE_WAITS if made else None)
        # A write sent again after a 503, which may come after the API server acted: a
        # refusal of the next send (409 AlreadyExists or Conflict, a 404) says so.
        sent_again, waited, acted = 0, 0.0, False
        method, url, content_type, body = _request_parts(args, kwargs)
        writes = method.upper() not in ("GET", "HEAD")
        while True:
            response = send(args, kwargs, given)
            status = getattr(response, "status", None)
            if waits is None or status not in THROTTLED_STATUSES:
                if acted and isinstance(status, int) and status >= 400:
                    _note(response, _MAY_HAVE_ACTED)
                return response
            acted = acted or (status == 503 and writes)
            tried = (f"sent {sent_again + 1} times, {waited:.3g} s waited in all"
                     if sent_again else "")
            # Given up on a write after a 503 (this one, or one before a 429): any send
            # answered so may have acted, and the admin is told so, not "sent N times"
            # alone, as though nothing were changed.
            maybe = (_MAY_HAVE_ACTED_ANY if sent_again else _MAY_HAVE_ACTED_ONE) if acted else ""
            if not safe_to_send_again(method, content_type, body):
                return _given_up(response, maybe and "not sent again, a second send could "
                                 "act twice", maybe)
            asked = _retry_after(getattr(response, "headers", None))
            wait = waits.wait(asked, sent_again)
            within = _WITHIN.get()
            deadline = within() if within is not None else None
            if wait > waits.longest:
                return _given_up(response, ", ".join(filter(None, [
                    f"it asked to wait {_asked(wait)}, more than the {waits.longest:.3g} s "
                    "k3snet waits at once; not sent again", tried])), maybe)
            if (sent_again >= waits.tries or waited + wait > waits.total
                    or (deadline is not None and wait >= deadline.left())):
                return _given_up(response, tried, maybe)
            _release(response)
            path = printable(urllib.parse.urlsplit(url).path)
            _log.warning("the API server answered %s %s with %s%s: sending it again in "
                         "%.3g s (%d of at most %d more tries, within %.3g s of waits)",
                         method, path, status,
                         "" if asked is None else f" (Retry-After: {asked:.0f})", wait,
                         sent_again + 1, waits.tries, waits.total)
            waits.sleep(wait)
            sent_again, waited = sent_again + 1, waited + wait

    rest.request = bounded
    rest._k3snet_within = True


MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "k3snet"

LIST_PAGE = 500
"""Objects asked for in one list request (``limit``), as kubectl and client-go's pager
ask: a list of every Node of a 5 000-node cluster in one answer is tens of megabytes the
API server builds in memory at once, past the request timeout on a loaded server."""

METADATA_ONLY: Mapping[str, str] = {
    "Accept": "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1, "
              "application/json"}
"""The headers of a list that reads only the objects' metadata (``_headers=dict(...)``):
the API server answers a ``PartialObjectMetadataList`` (name, labels, annotations; a
Node's status and images left out, most of its size), or the whole objects where it
cannot (the same ``items[].metadata`` either way)."""

_MAX_PAGES = 10_000  # a server answering a continue token for ever is not followed further


def list_pages(fetch: Callable[[dict[str, Any]], Any], doing: str, *,
               page: int = LIST_PAGE, cached: bool = False) -> list[Any]:
    """Every item of a list, asked for ``page`` at a time.

    ``fetch(args)`` makes one list request, passing ``args`` to the client's list method
    (``limit``, ``_continue`` and ``resource_version``; none: the whole list at once),
    and returns the answer as JSON data, raising :class:`KubeApiError` for a failed
    request. The ``continue`` token of each answer asks for the next page. When a token
    has expired (410 Gone: the API server compacted the version the list began at), the
    whole list is asked for again in one request, as client-go's pager does. ``doing``
    names the list in the :class:`~k3snet.errors.BackendError` an answer without a list
    of items, a token the server gives again, or one that is no text, raises.

    ``cached``: the list may be a moment old: its first request (and the whole list
    asked again) names ``resourceVersion=0``, which the API server serves from its
    watch cache, not from etcd, as client-go's informers list (a cache answers it whole,
    ``limit`` aside, or in pages of a snapshot; a continue page names no version: its
    token carries the list's own, and the API server refuses any but 0 beside one,
    ``storage/etcd3`` and the cacher alike). Without it, every list is a quorum read
    from etcd, ``page`` objects a request: for what is written back naming the versions
    read (IPPools, ConfigMaps). Every Node of a 5 000-node cluster, for the Lease
    holder each interval, was 10 quorum reads of 500 whole Nodes from etcd.
    """
    first: dict[str, Any] = {"resource_version": "0"} if cached else {}
    items: list[Any] = []
    token: str | None = None
    seen: set[str] = set()
    for _ in range(_MAX_PAGES):
        try:
            answer = fetch({"limit": page, **({"_continue": token} if token else first)})
        except KubeApiError as exc:
            if exc.status != 410 or token is None:
                raise
            return _items(fetch(dict(first)), doing)
        items += _items(answer, doing)
        metadata = answer.get("metadata")
        token = metadata.get("continue") if isinstance(metadata, dict) else None
        if token is None or token == "":
            return items
        if not isinstance(token, str):  # the list goes on: this page is not all of it
            raise BackendError(f"{doing}: the API server gave a continue token that is "
                               f"no text ({type(token).__name__})")
        if token in seen:
            raise BackendError(f"{doing}: the API server gave the same continue token "
                               "twice; the list does not end")
        seen.add(token)
    raise BackendError(f"{doing}: more than {_MAX_PAGES} pages of {page} objects; k3snet "
                       "does not read further")


def list_node_metadata(core_api: Any, doing: str, *, timeout: Any) -> list[Any]:
    """Every Node as its metadata alone (:func:`list_metadata` of ``list_node``).

    ``core_api`` is a ``CoreV1Api``, ``timeout`` each request's; ``doing`` names the list
    in errors (a failed request is a :class:`KubeApiError`, an answer that is no JSON a
    :class:`~k3snet.errors.BackendError`).
    """
    return list_metadata(core_api.list_node, doing, timeout=timeout)


def list_metadata(list_call: Callable[..., Any], doing: str, *, timeout: Any,
                  on_version: Callable[[str], None] | None = None) -> list[Any]:
    """Every object a ``CoreV1Api`` list method (``list_node``, ``list_namespace``,
    ``list_pod_for_all_namespaces``) lists, as its metadata alone (:data:`METADATA_ONLY`),
    from the API server's watch cache (``cached``) :data:`LIST_PAGE` at a time where it
    pages (:func:`list_pages`), and read as JSON, not made into the client's objects: the
    items' ``metadata`` (labels, annotations) is what is read, to judge, never to write
    back; an object come or gone a moment before shows in the next list.

    ``timeout`` is each request's; ``doing`` names the list in errors (a failed request
    is a :class:`KubeApiError`, an answer that is no JSON a
    :class:`~k3snet.errors.BackendError`). ``on_version`` is called with the
    ``resourceVersion`` of each list begun (its first page, or the whole list asked
    again): the version the last call names is the one a watch of the changes after
    the list starts from (:func:`watch_metadata`).
    """
    # Imported when used: this module is read where the backend kit is not (spec checks).
    from k3snet.backends.kit import translate_errors  # noqa: PLC0415

    def fetch(page: dict[str, Any]) -> Any:
        with translate_errors(doing, classifier=KubeErrors(timeout=timeout)):
            answer: Any = list_call(_request_timeout=timeout, _preload_content=False,
                                    _headers=dict(METADATA_ONLY), **page)
        try:
            data = json.loads(answer.data)
        except ValueError as exc:
            raise BackendError(f"{doing}: the answer is not JSON ({exc})") from exc
        metadata = data.get("metadata") if isinstance(data, dict) else None
        version = metadata.get("resourceVersion") if isinstance(metadata, dict) else None
        if on_version is not None and "_continue" not in page and isinstance(version, str):
            on_version(version)  # a continue page's is its list's: the first page's
        return data

    return list_pages(fetch, doing, cached=True)


WATCH_METADATA_ONLY: Mapping[str, str] = {
    "Accept": "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1, "
              "application/json"}
"""The headers of a watch whose events carry the objects' metadata alone (a watch's
events hold single objects, ``PartialObjectMetadata``; a list, a ``...List``)."""
WATCH_SECONDS = 1
"""How long the API server holds a watch of :func:`watch_metadata` open (its
``timeoutSeconds``): the changes since the version asked for come at once (from the
API server's watch cache), then the stream is held this long for more, then closed."""


def watch_metadata(list_call: Callable[..., Any], doing: str, *, since: str,
                   timeout: Any) -> tuple[list[tuple[str, Any]], str]:
    """The changes to the objects a ``CoreV1Api`` list method lists after the
    ``resourceVersion`` ``since`` (a list's, :func:`list_metadata`): one watch request,
    held open :data:`WATCH_SECONDS` by the API server, whose events are read as JSON:
    ``(type, object)`` of each ``ADDED``, ``MODIFIED`` or ``DELETED`` in order, and the
    version to watch from next (the last event's or bookmark's: a real API server
    sends no bookmark in a watch held :data:`WATCH_SECONDS`, as it schedules one two
    seconds before the watch ends, so the version moves on with the events alone).
    An ``ERROR`` event raises its status as a :class:`KubeApiError` (410 Expired:
    ``since`` is older than the API server keeps: list again), and so does a failed
    request; ``timeout`` is the request's (longer than :data:`WATCH_SECONDS`)."""
    from k3snet.backends.kit import translate_errors  # noqa: PLC0415

    with translate_errors(doing, classifier=KubeErrors(timeout=timeout)):
        answer: Any = list_call(watch=True, resource_version=since, allow_watch_bookmarks=True,
                                timeout_seconds=WATCH_SECONDS, _request_timeout=timeout,
                                _preload_content=False, _headers=dict(WATCH_METADATA_ONLY))
        data = answer.data
    events: list[tuple[str, Any]] = []
    version = since
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError as exc:
            raise BackendError(f"{doing}: an event is not JSON ({exc})") from exc
        kind = event.get("type") if isinstance(event, dict) else None
        obj = event.get("object") if isinstance(event, dict) else None
        if not isinstance(obj, dict):
            raise BackendError(f"{doing}: an event without an object")
        if kind == "ERROR":
            code = obj.get("code")
            raise KubeApiError(f"{doing}: {obj.get('message') or obj.get('reason')}",
                               status=code if isinstance(code, int) else None,
                               reason=str(obj.get("reason") or "") or None)
        metadata = obj.get("metadata")
        found = metadata.get("resourceVersion") if isinstance(metadata, dict) else None
        if isinstance(found, str) and found:
            version = found
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            events.append((kind, obj))
    return events, version


def _items(answer: Any, doing: str) -> list[Any]:
    items = answer.get("items") if isinstance(answer, dict) else None
    if items is None and isinstance(answer, dict):
        return []  # an empty list, as Go's omitempty writes it
    if not isinstance(items, list):
        raise BackendError(f"{doing}: the answer has no list of items")
    return items

_HINTS = {
    401: "unauthorized (401): the credentials in the kubeconfig or service account token "
         "were refused",
    403: "forbidden (403): k3snet's account lacks the RBAC permission for this; grant it "
         "(see the ClusterRoles and Roles that k3snet render manifests makes: "
         "docs/manifests.md, RBAC)",
    404: "not found (404)",
    409: "conflict (409): the object was changed by someone else since k3snet read it, or "
         "already exists; nothing was written, observe and plan again",
    415: "unsupported media type (415)",
    422: "rejected as invalid (422)",
    429: "throttled (429): the API server asks to retry later",
}

# Kubernetes' StatusReason for a status, when the server's Status body names none
# (k8s.io/apimachinery/pkg/apis/meta/v1/types.go).
_REASONS = {
    400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
    405: "MethodNotAllowed", 406: "NotAcceptable", 409: "Conflict", 410: "Gone",
    413: "RequestEntityTooLarge", 415: "UnsupportedMediaType", 422: "Invalid",
    429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout",
}
_TIMEOUT_REASON = "Timeout"
_SECONDS = lazy_pattern(r"[0-9]+")
_RETRY_AFTER_MOST = 999_999_999.0
"""The seconds a ``Retry-After`` of 10 digits or more (or a date further) stands for."""


class KubeApiError(BackendError):
    """A request to the Kubernetes API failed.

    ``status`` is the HTTP status (``None``: no answer), ``reason`` the
    Kubernetes reason (``"NotFound"``, ``"AlreadyExists"``, ``"Conflict"``,
    ``"Forbidden"``, ``"Invalid"``, ``"Timeout"`` when no answer came in time;
    ``None`` when there is none): the table in :mod:`k3snet.kube`.
    """

    retry_after: float | None = None
    """Seconds the API server asked to wait before trying again (its ``Retry-After``
    header, as a 429 of its Priority and Fairness names one); ``None``: it named none."""

    def __init__(self, message: str, *, status: int | None = None,
                 reason: str | None = None) -> None:
        self.status = status
        self.reason = reason
        super().__init__(message)


def _kubernetes() -> Any:
    try:
        import kubernetes  # noqa: PLC0415 - optional dependency (k3snet[kube])
    except ImportError as exc:
        raise BackendUnavailableError(
            f"the kubernetes client is not installed: {exc} (pip install 'k3snet[kube]')"
        ) from exc
    return kubernetes


def _client_object(api_client: Any) -> None:
    if isinstance(api_client, str | bytes | bool | int | float | list | tuple | dict):
        # Plain data is what a spec's backends: options, --backend-opt and the Ansible
        # module can give: never a client, and it failed only at the first request.
        raise BackendOptionError(
            f"api_client must be a Kubernetes ApiClient object (a library caller's); a "
            f"spec, the command line or Ansible names the cluster with kubeconfig and "
            f"context, got {api_client!r}")


def _text_or_none(option: str) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if value is not None and not isinstance(value, str):
            raise BackendOptionError(f"{option} must be text, got {value!r}")
    return check


API_OPTION_CHECKS: Mapping[str, Callable[[Any], None]] = {
    "api_client": _client_object, "kubeconfig": _text_or_none("kubeconfig"),
    "context": _text_or_none("context")}
"""The checks :func:`make_api_client` makes of its options' values, each raising a
:class:`~k3snet.errors.BackendOptionError`: for the option checks of the backends that
take them (``k3snet validate`` runs them without loading any kubeconfig)."""


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
    ``~/.kube/config``, or ``kubeconfig``), with ``context``. Either way its requests
    honour :func:`requests_within`.
    """
    for option, value in (("api_client", api_client), ("kubeconfig", kubeconfig),
                          ("context", context)):
        API_OPTION_CHECKS[option](value)
    if api_client is not None:
        _bound(api_client, made=False)
        return api_client, False
    kubernetes = _kubernetes()
    config = kubernetes.config
    configuration = kubernetes.client.Configuration()
    try:
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)
        else:  # as new_client_from_config does, into a configuration of ours
            config.load_kube_config(config_file=kubeconfig, context=context,
                                    client_configuration=configuration)
    except (config.ConfigException, OSError, TypeError, ValueError) as exc:
        where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise BackendUnavailableError(
            f"no Kubernetes API to talk to: cannot load the kubeconfig {where} or the in-cluster "
            f"service account ({exc})"
        ) from exc
    configuration.retries = retry_policy()
    # kubernetes 37's client-go mode (off by default) would wait a GET's Retry-After in
    # the request itself, up to 10 times: the same sleep retry_policy leaves out.
    configuration.client_go_retries = False
    made = kubernetes.client.ApiClient(configuration)
    _bound(made, made=True)
    return made, True


def retry_policy() -> Any:
    """urllib3's retries for the clients :func:`make_api_client` makes: 3 more tries, at
    once, for a connection refused or reset; none for a request that timed out, none for
    an answer, whatever its status and ``Retry-After``, and none at all within
    :func:`requests_within`'s deadline (each try waited its whole timeout again).

    urllib3 sends again a request whose connect or (for a GET) answer timed out, each try
    waiting the whole request timeout: a read of an API server that accepts connections
    and never answers (overloaded, a load balancer whose backend is gone), or a
    black-holed address, took 4 x :data:`DEFAULT_TIMEOUT` (40 s). The agent's first pass
    waited that long for its Node (``--lease-candidates``), each interval's pass for the
    spec ConfigMap before converging the node, and the Lease's release on SIGTERM twice
    that, past the pod's grace period (30 s then).

    urllib3's ``Retry`` also sends again a GET, PUT or DELETE (its ``allowed_methods``)
    answered 413, 429 or 503 with a ``Retry-After`` (``respect_retry_after_header``),
    after sleeping what the header asks, up to 6 hours a try: outside every request
    timeout, outside :func:`requests_within`'s deadline, in the thread of the agent's
    pass or Lease step, so an agent told to stop slept on; and four such answers in a
    row became a ``MaxRetryError`` with no status (``cannot reach the API server``).
    Here no answer is tried again: it reaches the caller, whose :class:`KubeApiError`
    carries its ``status`` and ``retry_after``, and the agent's own loops wait it,
    bounded (a Lease candidate up to ``k3snet.agent.RETRY_AFTER_LIMIT``, the node report
    up to ``PATCH_RETRY_LIMIT``, the spec and the cluster-wide objects till the next
    pass). The caller tries again (the agent's next pass or Lease step), within its
    own pace and back-off. A one-shot command's request is sent again by k3snet's own
    wrapper instead, bounded (:class:`ThrottleWaits`, :func:`throttle_waits`).
    """
    import urllib3  # noqa: PLC0415 - a dependency of the kubernetes client

    class NoRetryAfterTimeout(urllib3.util.Retry):
        """Retry, except after a timeout (its error is raised at once)."""

        def increment(self, method: str | None = None, url: str | None = None,
                      response: Any = None, error: Exception | None = None,
                      _pool: Any = None, _stacktrace: Any = None) -> Any:
            # NewConnectionError (refused, unreachable: immediate) derives from
            # ConnectTimeoutError in urllib3: it is still retried.
            if isinstance(error, urllib3.exceptions.TimeoutError) and not isinstance(
                    error, urllib3.exceptions.NewConnectionError):
                raise urllib3.exceptions.MaxRetryError(_pool, url, error) from error
            # Within a deadline (requests_within: SIGTERM's grace period) a request is
            # sent once: a try more waits its whole timeout again (a GET whose connection
            # an API server or load balancer closed after a while, before answering),
            # each try given what was left when the request began, past the deadline.
            within = _WITHIN.get()
            if error is not None and within is not None and within() is not None:
                raise urllib3.exceptions.MaxRetryError(_pool, url, error) from error
            return super().increment(method, url, response, error, _pool, _stacktrace)

    # No status is retried (status_forcelist empty, Retry-After not honoured: is_retry
    # is False for every answer), and the tries left after an error sleep nothing
    # (backoff_factor 0).
    return NoRetryAfterTimeout(total=3, status=0, status_forcelist=(),
                               respect_retry_after_header=False, backoff_factor=0)


def _status_body(body: Any) -> tuple[str, str | None]:
    """The ``message`` (shortened) and ``reason`` of a Kubernetes ``Status`` body."""
    if not body:
        return "", None
    text = body.decode(errors="replace") if isinstance(body, bytes) else str(body)
    reason = None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):  # (a proxy's page; nested beyond Python's parser)
        message = text
    else:
        if isinstance(data, dict):
            message = str(data.get("message", ""))
            found = data.get("reason")
            # A StatusReason is one CamelCase word; anything else (kmock says "Object Not
            # Found") is not one, and the status's own reason is used instead.
            reason = found if isinstance(found, str) and found.isidentifier() else None
        else:
            message = text
    message = " ".join(message.split())
    return (message if len(message) <= 300 else message[:297] + "..."), reason


def _describe(exc: BaseException, timeout: float | None, *, cut_timeout: bool = False
              ) -> tuple[str, int | None, str | None]:
    """A human phrase for what went wrong, the HTTP status and the Kubernetes reason
    (``cut_timeout``: ``timeout`` is a :class:`Deadline`'s cut, said so)."""
    kubernetes = _kubernetes()
    import urllib3  # noqa: PLC0415 - a dependency of the kubernetes client

    cut: float | None = getattr(exc, _CUT_ATTRIBUTE, None)
    if cut is None and cut_timeout:
        cut = timeout
    if isinstance(exc, kubernetes.client.exceptions.ApiException):
        status = exc.status or None
        if status is None:  # the client's own failures (TLS, unusable arguments)
            return (f"the request failed before reaching the API server: {exc.reason}",
                    None, None)
        if status >= 500:
            what = f"the API server failed ({status} {exc.reason or ''})".replace(" )", ")")
        else:
            what = _HINTS.get(status, f"refused ({status} {exc.reason or ''})")
        message, reason = _status_body(exc.body)
        return ((f"{what}: {message}" if message else what), status,
                reason or _REASONS.get(status))
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    # NewConnectionError derives from ConnectTimeoutError in urllib3: test it first.
    if isinstance(exc, urllib3.exceptions.TimeoutError) and not isinstance(
        exc, urllib3.exceptions.NewConnectionError
    ):
        if cut is not None:
            # The caller's timeout (10 s) was not what the request waited: quoting it
            # after SIGTERM read as an API server 10 s slow, where it had 2 s to answer.
            limit = (f" within {cut:.3g}s, its timeout cut to what was left of the grace "
                     f"period")
        else:
            limit = f" within {timeout:g}s" if timeout is not None else ""
        return (f"no answer from the API server{limit} (timed out; it may or may not "
                f"have acted on the request)", None, _TIMEOUT_REASON)
    return f"cannot reach the API server: {type(exc).__name__}: {exc}", None, None


class KubeErrors:
    """The Kubernetes client's classifier for :func:`~k3snet.backends.kit.translate_errors`.

    It catches the client's ``ApiException``, urllib3's errors and ``OSError``,
    and makes each an ``error`` (:class:`KubeApiError` or a subclass taking the
    same arguments) with the message ``"DOING: WHAT HAPPENED"``, its ``status``
    and ``reason`` (the table in :mod:`k3snet.kube`). ``timeout`` is the
    request timeout in seconds, quoted when a request timed out; ``cut_timeout``:
    that timeout is what was left of a :class:`Deadline` (SIGTERM's grace period),
    less than the caller's own, and is quoted as such (a request :func:`requests_within`
    cut is said so without it). ``doing`` names the action and the object:
    ``"patch ConfigMap kube-flannel/x"``.
    """

    __slots__ = ("cut_timeout", "error", "timeout")

    def __init__(self, *, timeout: float | None = None, cut_timeout: bool = False,
                 error: Callable[..., KubeApiError] = KubeApiError) -> None:
        self.timeout = timeout
        self.cut_timeout = cut_timeout
        self.error = error

    @classmethod
    def within(cls, deadline: Deadline | None, limit: float) -> tuple[float, KubeErrors]:
        """The timeout of a request given ``limit`` seconds, cut to what is left of
        ``deadline`` (0: send none), and the classifier quoting it (as cut, when it is)."""
        timeout = limit if deadline is None else deadline.timeout(limit)
        return timeout, cls(timeout=timeout, cut_timeout=timeout < limit)

    def catches(self) -> tuple[type[BaseException], ...]:
        """``ApiException``, urllib3's ``HTTPError`` and ``OSError``."""
        kubernetes = _kubernetes()
        import urllib3  # noqa: PLC0415 - a dependency of the kubernetes client

        return (kubernetes.client.exceptions.ApiException, urllib3.exceptions.HTTPError,
                OSError)

    def classify(self, doing: str, exc: BaseException) -> KubeApiError:
        """``error("DOING: WHAT HAPPENED", status=..., reason=...)``."""
        phrase, status, reason = _describe(exc, self.timeout, cut_timeout=self.cut_timeout)
        note = getattr(getattr(exc, "headers", None), _NOTE_ATTRIBUTE, None)
        if status is not None and isinstance(note, str):
            phrase = f"{phrase} ({note})"  # the waits of THROTTLE_WAITS, or none and why
        error = self.error(f"{doing}: {phrase}", status=status, reason=reason)
        if status is not None:
            error.retry_after = _retry_after(getattr(exc, "headers", None))
        return error


def _retry_after(headers: Any, now: Callable[[], float] = time.time) -> float | None:
    """The seconds of an answer's ``Retry-After`` header: a whole number of seconds (as
    the API server writes it) or an HTTP date (RFC 9110 allows it; a proxy or load
    balancer in front of the API server may send one), taken from the answer's own
    ``Date`` when it has one (the two clocks are the same), else from ``now()``.

    A number of 10 digits or more (leading zeros aside) is :data:`_RETRY_AFTER_MOST`
    (longer than anything waited, never none: it asks a wait, not a quick try). A date
    already past, and anything else, is taken as none."""
    try:
        value = headers.get("Retry-After") if headers is not None else None
        date = headers.get("Date") if headers is not None else None
    except AttributeError:
        return None
    if not isinstance(value, str):
        return None
    value = value.strip()
    if _SECONDS.fullmatch(value):
        digits = value.lstrip("0")  # 1*DIGIT: "0000000003" is 3 s, no 10-digit wait
        return float(int(digits or "0")) if len(digits) < 10 else _RETRY_AFTER_MOST
    until = _http_date(value)
    if until is None:
        return None
    sent = _http_date(date) if isinstance(date, str) else None
    left = until - (now() if sent is None else sent)
    return min(left, _RETRY_AFTER_MOST) if left > 0 else None


def _asked(wait: float) -> str:
    """A wait asked, as the error says it: ``120 s``, ``3603 s`` (not ``3.6e+03 s``),
    ``999999999 s or more`` (:data:`_RETRY_AFTER_MOST`, not ``1e+09 s``)."""
    if wait >= _RETRY_AFTER_MOST:
        return f"{_RETRY_AFTER_MOST:.0f} s or more"
    return f"{wait:.3g} s" if wait < 100 else f"{wait:.0f} s"


def server_time(headers: Any) -> float | None:
    """The API server's clock (POSIX seconds, whole: an HTTP date) by an answer's
    ``Date`` header, ``None`` without a readable one."""
    try:
        date = headers.get("Date") if headers is not None else None
    except AttributeError:
        return None
    return _http_date(date) if isinstance(date, str) else None


def _http_date(value: str) -> float | None:
    """The POSIX time of an HTTP date (``Sun, 06 Dec 2026 01:30:00 GMT``, or one of the
    obsolete forms RFC 9110 has a recipient take), ``None`` for anything else."""
    # Imported here: email.utils brings base64 and binascii, which a cold CLI process
    # never loads otherwise (tests/api/test_cold_imports.py), for an answer seldom seen.
    import datetime  # noqa: PLC0415 - with email.utils, below
    import email.utils  # noqa: PLC0415 - base64 and binascii stay off the cold path

    try:
        parsed = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:  # -0000 or no zone: HTTP dates are in GMT
        parsed = parsed.replace(tzinfo=datetime.UTC)
    try:
        return parsed.timestamp()
    except (OverflowError, OSError, ValueError):
        return None
