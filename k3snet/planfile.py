"""Plan files: a plan saved with what it needs to be applied later, exactly, or refused.

``k3snet plan --out FILE`` writes one, ``k3snet apply FILE`` reads it; scripts
can do the same::

    saved = PlanFile.make(p, desired=desired, observed=observed, backends=["netlink"],
                          netns="node1", spec_path=Path("egress.yaml"),
                          clusters=clusters_of(backend))    # none for netlink
    saved.write(Path("node1.plan"))
    again = PlanFile.read(Path("node1.plan"), netns=None)   # checks machine and namespace
    backend = NetlinkBackend(netns=again.node["netns"])
    again.refuse_elsewhere(backend)                          # acts in that namespace
    k3snet.converge.apply_plan(backend, again.plan, desired=again.desired)

The file records the node (machine id, hostname, network namespace and its
identity), the backends, the cluster each backend with an ``api_client`` talks to,
the spec's SHA-256 and pod CIDRs, a fingerprint of what the backends observed, the
backends' options and the desired state (schema: ``k3snet.schemas.load_schema("planfile")``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from k3snet._gojson import MAX_NESTING, JsonTextError, text_nests_deeper
from k3snet._kept import code_identity, input_problem, read_input, write_output
from k3snet._logline import shell_path
from k3snet._regex import lazy_pattern
from k3snet._version import __version__
from k3snet.backends.lock import namespace_id, namespaces_of
from k3snet.converge import state_digest
from k3snet.errors import BackendError, ModelError, PlanError
from k3snet.model import parse_network, printable
from k3snet.model.cni import FlannelConfig
from k3snet.model.state import State, object_from_dict
from k3snet.model.sysctl import Sysctl
from k3snet.planner import Plan
from k3snet.spec.source import MAX_BYTES as SPEC_MAX_BYTES
from k3snet.spec.source import unique_pairs

__all__ = ["MAX_PLANFILE_BYTES", "PLANFILE_FORMAT", "PLANFILE_KIND", "PlanFile", "build_identity",
           "clusters_of", "node_identity"]

PLANFILE_KIND = "k3snet-planfile"
MAX_PLANFILE_BYTES = 256 * 1024 * 1024
"""The largest plan file read (a plan of 50 000 changes is tens of MB)."""
PLANFILE_FORMAT = 2
"""2: the backends' options and ``allow_disruptive`` are recorded (format 1 files, which
lack them, are refused: applied with default options they would write elsewhere)."""
RESERVED_OPTIONS = frozenset({"netns", "allow_disruptive"})
"""Options a plan file never records per backend: the namespace is the node's (checked
against its identity), ``allow_disruptive`` is recorded once for all backends."""


def build_identity() -> str:
    """A digest of this k3snet's modules (name, size, mtime): two builds of one version (a
    development install, a patched package) read and plan a node alike only when it is
    equal. A plan file records it: a refusal of one made by another build says so rather
    than that the node changed (a route through a device the model refuses was read as
    another object since, and every such plan file read as planned on a changed node)."""
    package = Path(__file__).parent
    directories = [package, *(Path(root) / name for root, names, _ in os.walk(package)
                              for name in names if name != "__pycache__")]
    return hashlib.sha256(code_identity(directories).encode()).hexdigest()[:16]


def _read_json(path: Path) -> Any:
    """A plan file's JSON document; a PlanError when it is not a readable regular file of
    at most :data:`MAX_PLANFILE_BYTES` holding UTF-8 JSON nested at most
    :data:`~k3snet._gojson.MAX_NESTING` deep, each object's keys once (a FIFO or a device is
    refused unread), owned by this user or root and writable by no one else, nor reached
    through a link or a directory another user owns or may write."""
    try:
        # Owned by this user or root, and written by nobody else: a plan file is what
        # will be done as root, and whoever else could write it could change it between
        # the review and the apply. So could whoever may change the way to it: rename
        # another plan file of root's (made from the same state, a destroy's) in its
        # place, or point a link on the way at one.
        data = read_input(path, MAX_PLANFILE_BYTES, owned=True)
    except OSError as exc:
        if exc.errno == errno.EFBIG:
            raise PlanError(f"{path}: larger than {MAX_PLANFILE_BYTES >> 20} MiB; not a "
                            "k3snet plan file") from None
        if exc.errno == errno.EPERM:
            fix = ("move it where only root may change the way to it" if _on_the_way(exc)
                   else "chown it to root and chmod go-w")
            raise PlanError(f"{path}: {input_problem(exc)}: another user could have changed "
                            f"it since it was made and reviewed; refused ({fix}, after "
                            "reading it again)") from None
        raise PlanError(f"cannot read {path}: {input_problem(exc)}") from None
    try:
        text = data.decode("utf-8")
        # Measured first: json.loads recurses, and a file of 200 000 "[" would be a
        # RecursionError (an internal error) rather than a refused plan file.
        if text_nests_deeper(text, MAX_NESTING):
            raise JsonTextError(f"it nests objects and arrays deeper than {MAX_NESTING} levels")
        # k3snet writes each key once: a second value (read last, so in force) is an
        # edited file, which shows one allow_disruptive to a reader and applies another.
        return json.loads(text, object_pairs_hook=unique_pairs)
    except ValueError as exc:
        if _SPEC_LINE.search(data[:65536].decode("utf-8", "replace")):
            # Quoted: the command is pasted into a shell as it is (a path with spaces).
            raise PlanError(f"{path} is a spec, not a plan file: apply it with `k3snet apply "
                            f"-f {shell_path(path)}`") from None
        raise PlanError(f"{path} is not a k3snet plan file: {exc}") from exc


def _on_the_way(exc: OSError) -> bool:
    """Whether :func:`read_input` refused the way to a file (a directory or a link on it),
    not the file itself."""
    return (exc.strerror or "").startswith(("in directory ", "reached through "))


_SPEC_LINE = lazy_pattern(r"^(kind:\s*EgressSpec|apiVersion:\s*k3snet\.io/)", re.MULTILINE)
"""A line only a spec (YAML) has: what a plan file given in its place is told."""


def _machine_id() -> str | None:
    """This machine's id (systemd's or D-Bus's), ``None`` when it has none."""
    for candidate in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        with contextlib.suppress(OSError):
            return Path(candidate).read_text().strip() or None
    return None


def _is_json(value: Any) -> bool:
    """Whether ``value`` is made of JSON's types only (str, int, float, bool, None, lists,
    objects with text keys); nesting is bounded by the reader's check."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if not all(isinstance(k, str) for k in item):
                return False
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif not (item is None or isinstance(item, (str, int, float, bool))):
            return False
    return True


def _options_problem(options: Mapping[str, Any], backends: Sequence[str]) -> str | None:
    """What is wrong with recorded backend options (``None``: nothing)."""
    names = {entry.partition(":")[0] for entry in backends}
    for name, given in options.items():
        if name not in names:
            return f"options for backend {name!r}, which it does not use"
        if not isinstance(given, dict):
            return f"the options of backend {name!r} are not a JSON object"
        for key, value in given.items():
            if not (key.isascii() and key.isidentifier()) or key in RESERVED_OPTIONS:
                return f"backend {name!r} has no recordable option {key!r}"
            if not _is_json(value):
                return f"option {name}.{key} is not a JSON value"
    return None


def _clusters_problem(clusters: Any) -> str | None:
    """What is wrong with recorded clusters (``None``: nothing, or none recorded)."""
    if clusters is None:
        return None
    if not (isinstance(clusters, dict) and all(isinstance(v, str) for v in clusters.values())):
        return "its clusters are a JSON object of texts"
    # (one of a backend none of them is is refused on apply, by refuse_elsewhere: a
    # cluster is recorded by the backend's own name, which need not be the one it is
    # registered under, the one in ``backends``)
    return None


def _pod_cidrs_problem(pod_cidrs: Any) -> str | None:
    """What is wrong with recorded pod CIDRs (``None``: nothing, or none recorded)."""
    if pod_cidrs is None:
        return None
    if not isinstance(pod_cidrs, list) or not all(isinstance(n, str) for n in pod_cidrs):
        return "its pod_cidrs are a JSON list of texts"
    for text in pod_cidrs:
        try:  # as the spec's cluster.podCIDRs and the backends read them (no zone id)
            parse_network(text)
        except (ModelError, ValueError) as exc:
            return f"its pod_cidrs hold {printable(text[:80])!r}, no CIDR ({exc})"
    return None


def node_identity(netns: str | None) -> dict[str, str | None]:
    """What names this node and namespace: machine id, hostname, namespace and its identity."""
    return {"machine_id": _machine_id(), "hostname": socket.gethostname(), "netns": netns,
            "netns_id": namespace_id(netns)}


def _cluster(api_client: Any) -> str:
    """What tells the cluster an ``ApiClient`` talks to from another: its API server's
    address and a digest of the certificate authorities it trusts (K3s makes one per
    cluster, and every K3s node's kubeconfig names https://127.0.0.1:6443); the address
    alone when it names none."""
    configuration = getattr(api_client, "configuration", None)
    host = str(getattr(configuration, "host", None) or "an unknown API server")
    digest = _authorities_digest(configuration)
    return host if digest is None else f"{host} (certificate authority sha256:{digest})"


_MAX_AUTHORITY = 1024 * 1024
"""The largest certificate authority file read for :func:`_cluster`."""

_PEM_CERTIFICATE = lazy_pattern(
    rb"-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]*)-----END CERTIFICATE-----")


def _authorities_digest(configuration: Any) -> str | None:
    """The SHA-256 (16 digits) of the certificates the client verifies the API server
    with: ``ssl_ca_cert``'s file and ``ca_cert_data`` (the client trusts both), each
    certificate as its DER bytes, in no order: the same authorities whether given as a
    file or as data, with either line ends, blank lines, in any order in a bundle.
    ``None``: none given (or the file is unreadable)."""
    # Only a plan of a cluster backend reads these: not imported by every cold CLI.
    import base64  # noqa: PLC0415
    import binascii  # noqa: PLC0415

    given: list[bytes] = []
    path = getattr(configuration, "ssl_ca_cert", None)
    if path:
        with contextlib.suppress(OSError, TypeError, ValueError):
            given.append(read_input(path, _MAX_AUTHORITY))
    data = getattr(configuration, "ca_cert_data", None)
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    if isinstance(data, bytes) and data:
        given.append(data)
    certificates: set[bytes] = set()
    for blob in given:
        bodies = _PEM_CERTIFICATE.findall(blob)
        if not bodies:
            certificates.add(blob)  # DER (ca_cert_data takes it), or else as it is
        for body in bodies:
            try:
                certificates.add(base64.b64decode(b"".join(body.split()), validate=True))
            except binascii.Error:
                certificates.add(body)
    if not certificates:
        return None
    digest = hashlib.sha256()
    for certificate in sorted(certificates):
        digest.update(hashlib.sha256(certificate).digest())
    return digest.hexdigest()[:16]


def _member_names(backend: object) -> list[str]:
    """The own names of ``backend``'s backends (a group's members), as
    :func:`clusters_of` names them."""
    members = getattr(backend, "members", None)
    backends = [m.backend for m in members] if members is not None else [backend]
    return [str(getattr(member, "name", type(member).__name__)) for member in backends]


def clusters_of(backend: object) -> dict[str, str]:
    """Backend name -> the cluster it talks to (:func:`_cluster`), for each backend (a
    group's members) with an ``api_client`` (the calico, cilium and flannel ConfigMap
    backends)."""
    members = getattr(backend, "members", None)
    backends = [m.backend for m in members] if members is not None else [backend]
    found: dict[str, str] = {}
    for member in backends:
        client = getattr(member, "api_client", None)
        if client is not None:
            found[str(getattr(member, "name", type(member).__name__))] = _cluster(client)
    return found


def _check_node(path: Path, node: Mapping[str, str | None],
                here: Mapping[str, str | None]) -> None:
    """Refuse a plan file made for another node or namespace, or where that cannot be told.

    Each of machine id, hostname and namespace identity must match: in an agent pod
    the machine id is the image's (the same on every node, or none) and the host
    namespace's identity is the same on every node, so the hostname is what tells
    two nodes apart there. A machine id missing on either side tells nothing.
    """
    if not node.get("machine_id"):
        raise PlanError(f"{path}: no machine id recorded, so k3snet cannot tell whether it "
                        "was made on this node; plan on this node")
    if not here["machine_id"]:
        raise PlanError(f"{path}: this machine has no machine id (/etc/machine-id), so "
                        "k3snet cannot tell whether the file was made here; plan and apply "
                        "with a spec (-f) instead")
    for key, what in (("machine_id", "machine"), ("hostname", "host"),
                      ("netns_id", "network namespace")):
        if node.get(key) != here[key]:
            made, now = repr(node.get(key)), repr(here[key])
            if key == "netns_id":  # the names say more than the identities (device, inode)
                made = f"{node.get('netns') or 'the host'!s}, {made}"
                now = f"{here.get('netns') or 'the host'!s}, {now}"
            raise PlanError(f"{path} was made for another {what} ({made}; here {now}); "
                            "plan on this node")


_KEYS: dict[str, frozenset[str]] = {
    "a plan file": frozenset({"format", "kind", "k3snet", "build", "node", "backends", "spec",
                              "options", "allow_disruptive", "clusters", "observed",
                              "pod_cidrs",
                              "desired", "plan"}),
    "node": frozenset({"machine_id", "hostname", "netns", "netns_id"}),
    "spec": frozenset({"path", "sha256"}),
    "desired": frozenset({"format", "owned", "foreign"}),
    "plan": frozenset({"format", "changes", "notes", "held"}),
    "change": frozenset({"action", "before", "after"}),
    "note": frozenset({"status", "wanted", "foreign", "reason", "owned"}),
    "held": frozenset({"wanted", "owned"}),
}
"""The keys each part of a plan file has (those :meth:`PlanFile.to_dict` writes)."""

_OPTIONAL: dict[str, frozenset[str]] = {
    "a plan file": frozenset({"build", "clusters", "pod_cidrs"}), "node": _KEYS["node"],
    "spec": _KEYS["spec"], "plan": frozenset({"held"}), "note": frozenset({"reason", "owned"})}
"""The keys of each part that :meth:`PlanFile.to_dict` leaves out at times; every other
one it always writes (left out by hand, it would be read as empty or none)."""


def _not_as_written(document: Mapping[str, Any]) -> str | None:
    """What of plan file ``document`` this k3snet does not read as it is written (``None``:
    nothing): a key it does not know, in the file or in one of its objects (a field of a
    newer k3snet's route, dropped unread: its plan applied without it) or an object's
    key missing (read as its default). ``apply FILE`` applies what was read; what was
    reviewed is what was written (a value is checked as the object reads it). A
    :class:`~k3snet.errors.ModelError` for an object that is none (the caller read them
    all already)."""
    desired = document.get("desired") or {}
    p = document.get("plan") or {}
    for what, at, part in (("a plan file", "", document),
                           ("node", "node", document.get("node") or {}),
                           ("spec", "spec", document.get("spec") or {}),
                           ("desired", "desired", desired), ("plan", "plan", p)):
        if not part.keys() <= _KEYS[what] or _lacks(what, part):
            return _unknown_key(at or what, what, part)
    # Where each object is, as (list, index, key): its text only made for a refusal.
    objects: list[tuple[str, int, str | None, Any]] = [
        (f"desired.{side}", i, None, o)
        for side in ("owned", "foreign") for i, o in enumerate(desired.get(side) or [])]
    for what, inside in (("change", ("before", "after")),
                         ("note", ("wanted", "foreign", "owned")), ("held", ("wanted", "owned"))):
        allowed, group = _KEYS[what], f"plan.{what}s" if what != "held" else "plan.held"
        for i, part in enumerate(p.get(group[5:]) or []):
            if not part.keys() <= allowed or _lacks(what, part):
                return _unknown_key(f"{group}[{i}]", what, part)
            objects += [(group, i, k, part[k]) for k in inside if part.get(k) is not None]
    verified: set[tuple[Any, ...]] = set()  # keys (with the type), found as written
    for group, i, k, given in objects:
        shape = (str(given.get("type")), _shape(given))
        if shape in verified:  # 10 000 routes of one shape: one read back, not 10 000
            continue
        back = object_from_dict(given).to_dict()
        at = f"{group}[{i}]" if k is None else f"{group}[{i}].{k}"
        kind = f"a {printable(str(given.get('type'))[:40])} object"
        unread = _keys_unread(given, back, at, kind)
        if unread is not None:
            return unread
        verified.add(shape)
    return None


def _shape(value: Any) -> Any:
    """The keys of ``value`` at every depth (in order), its texts and numbers left out:
    two objects of one shape read back alike, key for key."""
    if isinstance(value, dict):
        return tuple((key, _shape(item)) for key, item in value.items())
    if isinstance(value, list):
        return ("[", *(_shape(item) for item in value))
    return None


def _keys_unread(given: Any, back: Any, at: str, kind: str, *,
                 nested: bool = False) -> str | None:
    """A key of object ``given`` (at ``at``, ``kind`` the object's type, for the message)
    that reading it drops (``back``: what it reads back as), at any depth (a pool of a
    Calico pool list, a Cilium override's part), or one it lacks there (read as its
    default); ``None``: every key is read as written. A list is compared item for item;
    one of objects that each have a distinct ``name`` by name (the model keeps some
    sorted by it)."""
    if isinstance(given, dict) and isinstance(back, dict):
        unknown = sorted(set(given) - set(back))
        if unknown:
            what = f"this part of {kind}" if nested else kind
            return f"{at} has the key {printable(unknown[0][:80])!r}, which {what} does not have"
        missing = sorted(set(back) - set(given))
        if missing:
            return (f"{at} lacks its key {printable(missing[0][:80])!r} (it would be read as "
                    f"{_shown(back[missing[0]])})")
        for key, item in given.items():
            unread = _keys_unread(item, back[key], f"{at}.{printable(key[:80])}", kind,
                                  nested=True)
            if unread is not None:
                return unread
        return None
    if isinstance(given, list) and isinstance(back, list) and len(given) == len(back):
        pairs = list(zip(given, back, strict=True))
        named = [_name(item) for item in given], [_name(item) for item in back]
        if all(n is not None for n in named[0]) and len(set(named[0])) == len(given) and (
                set(named[0]) == set(named[1])):
            by_name = {_name(item): item for item in back}
            pairs = [(item, by_name[_name(item)]) for item in given]
        for index, (item, again) in enumerate(pairs):
            unread = _keys_unread(item, again, f"{at}[{index}]", kind, nested=True)
            if unread is not None:
                return unread
    return None


def _name(item: Any) -> Any:
    """An object's ``name`` when it is a text (``None``: it has none)."""
    name = item.get("name") if isinstance(item, dict) else None
    return name if isinstance(name, str) else None


_REQUIRED = {what: keys - _OPTIONAL.get(what, frozenset()) for what, keys in _KEYS.items()}


def _lacks(what: str, part: Mapping[str, Any]) -> bool:
    return not _REQUIRED[what] <= part.keys()


def _unknown_key(at: str, what: str, part: Mapping[str, Any]) -> str:
    """How ``part`` (a ``what``) is not what :meth:`PlanFile.to_dict` writes."""
    unknown = sorted(set(part) - _KEYS[what])
    if unknown:
        return f"{at} has the key {printable(unknown[0][:80])!r}, unknown to it"
    missing = sorted(_REQUIRED[what] - set(part))
    return f"{at} lacks its key {missing[0]!r}"


def _refuse_not_as_written(path: Path, document: Mapping[str, Any]) -> None:
    """A PlanError when this k3snet does not read plan file ``document`` as it is written
    (:func:`_not_as_written`)."""
    unread = _not_as_written(document)
    if unread is not None:
        made_by = document.get("k3snet")
        by = f"k3snet {printable(made_by)}" if isinstance(made_by, str) else "an unknown k3snet"
        raise PlanError(f"{path}: {unread}: this k3snet ({__version__}) would not apply "
                        f"the file as it is written (made by {by}, or edited); refused, "
                        "nothing applied: plan again with this k3snet")


def _shown(value: Any) -> str:
    return printable(json.dumps(value, sort_keys=True)[:80])


@attrs.frozen
class PlanFile:
    """A saved plan and what it was made from and for."""

    plan: Plan
    desired: State
    backends: tuple[str, ...]
    node: Mapping[str, str | None]
    observed: str
    spec: Mapping[str, str] | None = None
    options: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    """Each backend's options as its spec and ``--backend-opt`` gave them (JSON values);
    the namespace and the agent's environment are not among them."""
    allow_disruptive: bool = False
    clusters: Mapping[str, str] | None = None
    """Backend name -> the cluster it talked to (:func:`clusters_of`); ``None`` in a file
    made before k3snet recorded them."""
    made_by: str | None = __version__
    """The k3snet version that wrote the file (its ``k3snet``; ``None`` when not a text):
    another one may plan otherwise, which `apply FILE`'s refusal then says."""
    build: str | None = attrs.field(factory=build_identity)
    """The :func:`build_identity` of the k3snet that wrote the file (``None``: a file of
    before, or not a text): another build of one version may plan otherwise too."""
    pod_cidrs: tuple[str, ...] | None = None
    """The spec's ``cluster.podCIDRs``, given again to the backends judging by them (the
    netlink backend's ``pod_cidrs`` option: which IPv6 source-specific routes take the
    pods' packets); ``None`` in a file made before k3snet recorded them (none known: any
    source may be a pod's, as without a spec)."""

    @classmethod
    def make(cls, p: Plan, *, desired: State, observed: State, backends: Sequence[str],
             netns: str | None, spec_path: Path | None = None,
             options: Mapping[str, Mapping[str, Any]] | None = None,
             allow_disruptive: bool = False,
             clusters: Mapping[str, str] | None = None,
             pod_cidrs: Sequence[str] | None = None) -> PlanFile:
        """A plan file for this node; ``desired`` and ``observed`` as the plan saw them.

        ``options``: backend name -> the options it was built with from the spec and
        explicit overrides (JSON values; a PlanError otherwise). ``clusters``: backend
        name -> the cluster it talks to (:func:`clusters_of` of the backends); ``None``
        (not given): none recorded, and :meth:`refuse_elsewhere` compares none, as for a
        file of before (an empty mapping: no backend talked to a cluster).
        ``pod_cidrs``: the spec's ``cluster.podCIDRs`` (``None``: none recorded).
        """
        options = {name: dict(given) for name, given in (options or {}).items() if given}
        problem = _options_problem(options, backends)
        if problem:
            raise PlanError(f"cannot save the plan: {problem}")
        spec = None if spec_path is None else {
            "path": str(spec_path), "sha256": hashlib.sha256(
                read_input(spec_path, SPEC_MAX_BYTES)).hexdigest()}
        return cls(p, desired, tuple(backends), node_identity(netns), state_digest(observed),
                   spec, options, allow_disruptive,
                   None if clusters is None else dict(clusters),
                   pod_cidrs=None if pod_cidrs is None else tuple(map(str, pod_cidrs)))

    def refuse_elsewhere(self, backend: object, path: Path | str = "the plan file") -> None:
        """A PlanError unless every backend of ``backend`` (a group's members) acting in a
        network namespace acts in the one this file was made for (its identity, as
        :meth:`read` checks it): a backend made with another ``netns`` would apply there the
        plan of this node, when it is that namespace's plan too. ``path``: the file, for
        the message."""
        made_for = self.node.get("netns_id")
        for netns in namespaces_of(backend):
            try:
                here = namespace_id(netns)
            except BackendError as exc:
                raise PlanError(f"{path}: {exc}") from exc
            if here != made_for:
                made = self.node.get("netns")
                raise PlanError(
                    f"{path} was made for network namespace "
                    f"{'the host' if made is None else repr(made)} ({made_for}), and a backend "
                    f"would act in {'the host' if netns is None else repr(netns)} ({here}) "
                    "(its netns option, --backend-opt NAME.netns): refused; plan there instead")
        if self.clusters is None:  # a file of before: nothing to compare
            return
        for name, here in clusters_of(backend).items():
            made = self.clusters.get(name)
            if made != here:
                raise PlanError(
                    f"{path} was made against the cluster at {printable(made or 'none')}, and "
                    f"backend {name!r} talks to {printable(here)} (another kubeconfig or "
                    "context): refused; plan against that cluster instead")
        # (as for options: compared with no backend's, it was read and never checked)
        unused = sorted(set(self.clusters) - set(_member_names(backend)))
        if unused:
            raise PlanError(f"{path}: it records the cluster of backend "
                            f"{printable(unused[0][:80])!r}, which it does not use")

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {"format": PLANFILE_FORMAT, "kind": PLANFILE_KIND, "k3snet": __version__,
                **({} if self.build is None else {"build": self.build}),
                "node": dict(self.node), "backends": list(self.backends),
                "spec": dict(self.spec) if self.spec is not None else None,
                "options": {name: dict(given) for name, given in self.options.items()},
                "allow_disruptive": self.allow_disruptive,
                **({"clusters": dict(self.clusters)} if self.clusters is not None else {}),
                **({"pod_cidrs": list(self.pod_cidrs)} if self.pod_cidrs is not None else {}),
                "observed": self.observed, "desired": self.desired.to_dict(),
                "plan": self.plan.to_dict()}

    @property
    def secret(self) -> bool:
        """Whether the file holds a secret sysctl's value (:func:`~k3snet.model.sysctl.is_secret`:
        ``tcp_fastopen_key``, a ``stable_secret``) or a flannel ``Backend`` secret (its
        ``PSK`` ..., :attr:`~k3snet.model.cni.FlannelConfig.secret`), which ``apply FILE``
        writes: it is then written readable by its owner alone (``0600``)."""
        objects = [*self.desired.owned, *self.desired.foreign]
        for change in self.plan.changes:
            objects += [o for o in (change.before, change.after) if o is not None]
        return any(isinstance(o, (Sysctl, FlannelConfig)) and o.secret for o in objects)

    def write(self, path: Path) -> None:
        """Write the file (stable JSON) atomically; a link at ``path`` is replaced, not
        followed; ``0600`` when it holds a secret (:attr:`secret`)."""
        write_output(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n",
                     owner_writes_only=True,  # read back only so (_read_json)
                     private=self.secret)

    @classmethod
    def read(cls, path: Path, *, netns: str | None) -> PlanFile:
        """Read a plan file, refusing one made on another machine or namespace.

        ``netns``: the namespace it is applied in (``None``: the one it was made for).
        """
        document = _read_json(path)
        if not isinstance(document, dict) or document.get("kind") != PLANFILE_KIND:
            raise PlanError(f"{path} is not a k3snet plan file (made by `k3snet plan --out`)")
        if document.get("format") != PLANFILE_FORMAT:
            raise PlanError(f"{path}: plan file format {document.get('format')!r} is not "
                            f"{PLANFILE_FORMAT}; plan again with this k3snet")
        node = document.get("node") or {}
        if not isinstance(node, dict) or not all(
                isinstance(v, str) or v is None for v in node.values()):
            raise PlanError(f"{path}: its node is a JSON object of texts")
        try:
            here = node_identity(netns if netns is not None else node.get("netns"))
        except BackendError as exc:  # the namespace it names is not here, or no name at all
            raise PlanError(f"{path}: {exc}") from exc
        _check_node(path, node, here)
        backends = document.get("backends")
        if not isinstance(backends, list) or not all(isinstance(b, str) for b in backends):
            raise PlanError(f"{path}: no backends recorded")
        desired = document.get("desired")
        if not isinstance(desired, dict):
            raise PlanError(f"{path}: no desired state recorded; plan again with this k3snet")
        spec = document.get("spec")
        if spec is not None and not (isinstance(spec, dict) and all(
                isinstance(v, str) for v in spec.values())):
            raise PlanError(f"{path}: its spec is a JSON object of texts")
        options = document.get("options")
        if not isinstance(options, dict):
            raise PlanError(f"{path}: no backend options recorded; plan again with this k3snet")
        problem = _options_problem(options, backends)
        if problem:
            raise PlanError(f"{path}: {problem}")
        allow_disruptive = document.get("allow_disruptive")
        if not isinstance(allow_disruptive, bool):
            raise PlanError(f"{path}: its allow_disruptive is true or false")
        clusters, pod_cidrs = document.get("clusters"), document.get("pod_cidrs")
        problem = _clusters_problem(clusters) or _pod_cidrs_problem(pod_cidrs)
        if problem:
            raise PlanError(f"{path}: {problem}")
        made_by = document.get("k3snet")
        try:
            read = cls(Plan.from_dict(document.get("plan") or {}), State.from_dict(desired),
                       tuple(backends), {**node, "netns": here["netns"]},
                       str(document.get("observed")), spec, options, allow_disruptive,
                       clusters, made_by if isinstance(made_by, str) else None,
                       build if isinstance(build := document.get("build"), str) else None,
                       None if pod_cidrs is None else tuple(pod_cidrs))
            _refuse_not_as_written(path, document)
        except ModelError as exc:
            raise PlanError(f"{path}: {exc}") from exc
        return read
