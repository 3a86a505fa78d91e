"""Checking a spec: every field check of the table, then the checks across fields.

Each problem carries its path (``destinations[1].gateway``); :func:`validate`
returns them all, and loading raises them in one :class:`~k3snet.errors.SpecError`.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import weakref
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from k3snet._logline import printable
from k3snet._regex import lazy_pattern
from k3snet.errors import Problem
from k3snet.model.cidr import (
    Address,
    Network,
    address_text,
    contains,
    not_unicast,
    not_unicast_network,
    overlaps,
)
from k3snet.model.cni import (
    BLOCK_SIZE_RANGE,
    DEFAULT_BLOCK_SIZE,
    FLANNEL_BACKEND_OPTIONS,
    FLANNEL_WINDOWS_OPTIONS,
    flannel_backend_type,
    flannel_option_spellings,
    flannel_unread_options,
)
from k3snet.model.nat import snat_address_problem
from k3snet.model.route import next_hop_problem
from k3snet.model.sysctl import contradicting_aliases, value_problem
from k3snet.spec.fields import check_section
from k3snet.spec.model import (
    BLOCK_SIZE_KEYS,
    BlockSizes,
    Cluster,
    Destination,
    MasqueradePolicy,
    Spec,
)
from k3snet.spec.schema import DNS_LABEL, SPEC
from k3snet.spec.validators import int_in

__all__ = ["BLOCK_SIZE_PATH", "block_size_problems", "flannel_option_problems",
           "flannel_options_left_to_backend", "holds_nul", "known_sound", "validate"]

BLOCK_SIZE_PATH = "cni.calico.blockSize"


_sound: weakref.ref[Spec] | None = None  # the last spec found sound
_sound_but_left: weakref.ref[Spec] | None = None  # ... but for the flannel options left

_FLANNEL_OPTIONS_LEFT: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "k3snet_flannel_options_left", default=False)


@contextlib.contextmanager
def flannel_options_left_to_backend() -> Iterator[None]:
    """Within it, :func:`validate` (so loading and compiling a spec) leaves out the
    problems of :func:`flannel_option_problems`: the flannel backend refuses those options
    itself (its ``expect``), so the agent takes such a spec and that refusal leaves
    flannel's config as it is while the rest of the node converges (docs/agent.md).
    Everywhere else (``validate``, ``render``, ``plan``, ``apply``) they are problems of
    the spec: an operator at a terminal wants the refusal."""
    token = _FLANNEL_OPTIONS_LEFT.set(True)
    try:
        yield
    finally:
        _FLANNEL_OPTIONS_LEFT.reset(token)


def validate(spec: Spec) -> list[Problem]:
    """Every problem of a spec, each with its path: the field checks of the table, then
    the checks across fields. Empty when the spec is sound.
    """
    # Loading a spec checks it, and compiling it checks it again (compile also takes
    # specs built in code): a cold apply of 10k destinations paid for it twice
    # (benchmarks/bench_cold.py). A Spec is frozen (tuples of frozen values; only
    # backend option values may be lists, and changing one in place after loading
    # is not supported), so the same object is sound the second time too.
    global _sound, _sound_but_left  # noqa: PLW0603 - one slot each, by identity
    leaving = _FLANNEL_OPTIONS_LEFT.get()
    if _sound is not None and _sound() is spec:
        return []
    if leaving and _sound_but_left is not None and _sound_but_left() is spec:
        return []  # (each of the agent's passes compiles the spec in force again)
    problems = _validate(spec)
    left = flannel_option_problems(spec) if leaving else []
    if not problems:
        _sound = weakref.ref(spec)
    elif left:  # (their paths and messages: one problem of each)
        problems = [p for p in problems if p not in left]
        if not problems:
            _sound_but_left = weakref.ref(spec)
    return problems


def known_sound(spec: Spec) -> None:
    """Take ``spec`` as sound without checking it: only for a spec read from a document
    this very code found sound before (the spec cache, :mod:`k3snet.spec.cache`)."""
    global _sound  # noqa: PLW0603 - the slot of validate()
    _sound = weakref.ref(spec)


def _validate(spec: Spec) -> list[Problem]:
    problems: list[Problem] = []
    check_section(SPEC, spec, "", problems)
    add = problems.append
    cluster = spec.cluster
    if not cluster.pod_cidrs:
        add(Problem("cluster.podCIDRs", "at least one pod CIDR is needed"))
    _duplicates(problems, "cluster.podCIDRs", cluster.pod_cidrs)
    _duplicates(problems, "cluster.serviceCIDRs", cluster.service_cidrs)
    for i, pod in enumerate(cluster.pod_cidrs):
        for svc in cluster.service_cidrs:
            if overlaps(pod, svc):
                add(Problem(f"cluster.podCIDRs[{i}]",
                            f"{pod} overlaps service CIDR {svc}; pods and services need "
                            "separate ranges"))
    families: set[int] = {n.version for n in cluster.pod_cidrs}
    seen: dict[Network, int] = {}
    for i, dest in enumerate(spec.destinations):
        path = f"destinations[{i}]"
        first = seen.setdefault(dest.cidr, i)  # one hash: ipaddress hashes in Python
        if first != i:
            add(Problem(f"{path}.cidr", f"duplicate destination {dest.cidr} "
                                        f"(also destinations[{first}])"))
        problems += _destination_problems(path, dest, cluster, families)
    problems += _masquerade_problems(spec.masquerade, cluster)
    if spec.cni.calico is not None:
        problems += block_size_problems(spec.cni.calico.block_size, cluster.pod_cidrs)
    problems += _cluster_object_problems(spec)
    problems += _option_nul_problems(spec)
    problems += flannel_option_problems(spec)
    problems += _flannel_spelling_problems(spec)
    names: set[str] = set()
    for s in spec.sysctls:
        if s.name in names:
            add(Problem(f"sysctls.{s.name}", "duplicate sysctl"))
        names.add(s.name)
        problem = value_problem(s.name, s.value)
        if problem is not None:
            add(Problem(f"sysctls.{s.name}", problem))
    for one, other in contradicting_aliases({s.name: s.value for s in spec.sysctls}):
        add(Problem(f"sysctls.{other}", f"{one} is the same kernel value under another "
                    "name, given another value: each write sets the other, and every apply "
                    "would write them again in turn; give one of them"))
    return problems


def _option_nul_problems(spec: Spec) -> list[Problem]:
    """A backend option holding a NUL character (``state_dir: "/run/a\\0b"``): no path,
    name or other text a backend takes has one, and a path with one failed as an
    internal error ("embedded null byte") at the first file the backend touched."""
    return [Problem(f"backends.{name}.{key}", "holds a NUL character (\\0), which no path, "
                    "name or other text a backend takes has")
            for name, options in spec.backend_options for key, value in options
            if holds_nul(value)]


def flannel_option_problems(spec: Spec) -> list[Problem]:
    """A ``cni.flannel.backend.options`` key no option of the backend type matches (a typo,
    another type's option): flannel's Go JSON decoding drops it without a word, and the
    flannel backend refuses to write it; said here, ``validate``, ``render`` and the
    agent's spec loading refuse it alike, with the options that type reads. Its Windows
    options count (a ConfigMap is read by flanneld on Windows nodes too; a node's own
    file, read by K3s' Linux flannel alone, has the backend refuse them)."""
    flannel = spec.cni.flannel
    if flannel is None or not isinstance(flannel.backend_type, str):
        return []
    names = [name for name, _ in flannel.backend_options]
    unread = flannel_unread_options(flannel.backend_type, names, windows=True)
    problems = _flannel_value_problems(flannel.backend_type, flannel.backend_options)
    if not unread:
        return problems
    kind = flannel_backend_type(flannel.backend_type)
    options = FLANNEL_BACKEND_OPTIONS[kind]
    extra = FLANNEL_WINDOWS_OPTIONS.get(kind, ())
    reads = f"it reads only {', '.join(options)}" if options else "it reads no option"
    if extra:
        reads += f" (on Windows nodes also {', '.join(extra)})"
    by_fold = {o.lower(): o for o in (*options, *extra)}
    import difflib  # noqa: PLC0415 - a misspelt option only: not on every cold run

    for name in unread:
        close = [by_fold[c] for c in difflib.get_close_matches(
            name.lower(), list(by_fold), n=3, cutoff=0.6)]
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        problems.append(Problem(
            f"cni.flannel.backend.options.{name}",
            f"flannel's {kind} backend has no option {printable(name)}, so flannel would "
            f"ignore it (Go's JSON decoding drops a key no option matches): {reads}{hint}"))
    return problems


def _flannel_spelling_problems(spec: Spec) -> list[Problem]:
    """Two spellings of one ``cni.flannel.backend.options`` key, or its ``Type`` among
    them (:func:`~k3snet.model.cni.flannel_option_spellings`): no flannel config holds
    them, so these are never left to the flannel backend (the agent could not compile
    the spec)."""
    flannel = spec.cni.flannel
    if flannel is None:
        return []
    return [Problem(f"cni.flannel.backend.options.{key}", why)
            for key, why in flannel_option_spellings(name for name, _ in flannel.backend_options)]


def _flannel_value_problems(backend_type: str, options: Sequence[tuple[str, Any]]
                            ) -> list[Problem]:
    """An option value flannel's backend refuses or misreads when it starts (another Go
    type, a VNI or port out of range, an unknown wireguard ``Mode``, a wireguard ``PSK``
    that is no WireGuard key, an ipsec ``PSK`` too short, a second spelling of an
    option): such a value, written, broke flannel at its next restart. Judged by the
    table the flannel backend judges it by
    (:func:`~k3snet.model.flannel_options.option_problems`); a secret is shown as
    :func:`~k3snet.model.cni.shown_flannel_secret` shows it."""
    if not options:
        return []
    # (flannel's options only: not on every cold run, tests/api/test_cold_imports.py)
    from k3snet.model.flannel_options import option_problems  # noqa: PLC0415

    return [Problem(f"cni.flannel.backend.options.{key}", why)
            for key, _, why in option_problems(backend_type, options)]


def holds_nul(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` (a backend option's: text, a path, lists and mappings of them)
    holds a NUL character anywhere, ``depth`` levels down at most 8."""
    if isinstance(value, str):
        return "\0" in value
    if isinstance(value, bytes):
        return b"\0" in value
    if isinstance(value, os.PathLike):
        return holds_nul(os.fspath(value))
    if depth < 8 and isinstance(value, Mapping):
        return any(holds_nul(k, depth + 1) or holds_nul(v, depth + 1)
                   for k, v in value.items())
    if depth < 8 and isinstance(value, list | tuple | set | frozenset):
        return any(holds_nul(item, depth + 1) for item in value)
    return False


def _gateway_problem(dest: Destination) -> str | None:
    """Why ``dest``'s gateway is no next hop for it, whatever the node (``None``: none)."""
    gateway = dest.gateway
    if gateway is None:
        return None
    if gateway.version != dest.family:
        return (f"gateway {gateway} is IPv{gateway.version} but destination {dest.cidr} is "
                f"IPv{dest.family}")
    unusable = next_hop_problem(gateway, dest.device)
    kind = not_unicast(gateway)
    if unusable is None and kind is not None:
        # Not in the route model's check: the kernel takes some of them (via 127.0.0.1
        # through lo, where the traffic is lost; via 224.0.0.1 or 255.255.255.255 when a
        # link route covers it, sent as link-layer multicast or broadcast), and the model
        # must read such a foreign route back.
        unusable = (f"gateway {address_text(gateway)} is {kind}, never a next hop; give the "
                    "address of the router on the link")
    return unusable


def _destination_problems(
    path: str, dest: Destination, cluster: Cluster, families: set[int]
) -> list[Problem]:
    problems: list[Problem] = []
    add = problems.append
    kind = not_unicast_network(dest.cidr)
    if kind is not None:
        # The kernel takes the route (127.0.0.0/8 via a gateway, ff00::/8 ...), and the
        # apply succeeded with nothing a pod's traffic could use.
        add(Problem(f"{path}.cidr", f"{dest.cidr} is {kind}: no pod's packet to it is "
                                    "routed to a host, so its route, masquerade and forward "
                                    "rule would do nothing; give the unicast network the "
                                    "pods must reach"))
    unusable = _gateway_problem(dest)
    if unusable is not None:
        add(Problem(f"{path}.gateway", unusable))
    for kind, nets in (("pod", cluster.pod_cidrs), ("service", cluster.service_cidrs)):
        for net in nets:
            if overlaps(dest.cidr, net):
                add(Problem(f"{path}.cidr",
                            f"{dest.cidr} overlaps the cluster {kind} CIDR {net}: traffic to it "
                            f"is routed inside the cluster and never leaves the node, a common "
                            f"cause of 'pods cannot reach the subnet'; renumber one of them"))
    if dest.family not in families and cluster.pod_cidrs:
        add(Problem(f"{path}.cidr", f"{dest.cidr} is IPv{dest.family} but the cluster has no "
                                    f"IPv{dest.family} pod CIDR"))
    for j, ex in enumerate(dest.exclude):
        if ex.version != dest.family:
            add(Problem(f"{path}.exclude[{j}]", f"{ex} is not IPv{dest.family} like {dest.cidr}"))
        elif not contains(dest.cidr, ex):
            add(Problem(f"{path}.exclude[{j}]", f"{ex} is not inside destination {dest.cidr}"))
        elif ex == dest.cidr:
            add(Problem(f"{path}.exclude[{j}]", "excludes the whole destination; set "
                                                "masquerade: false instead"))
    _duplicates(problems, f"{path}.exclude", dest.exclude)
    inside = [ex for ex in dest.exclude if ex.version == dest.family
              and contains(dest.cidr, ex) and ex != dest.cidr]
    if len(inside) > 1 and _cover(dest.cidr, inside):
        add(Problem(f"{path}.exclude", f"the exclusions together cover the whole destination "
                                       f"{dest.cidr}; set masquerade: false instead"))
    return problems


def _cover(net: Network, parts: Sequence[Network]) -> bool:
    """Whether ``parts``, prefixes inside ``net``, together hold every address of it: what
    ``aggregate(parts) == (net,)`` says, without making the prefixes (a spec of thousands
    of destinations with a few excludes each spent most of its validation there)."""
    reached = int(net.network_address)
    end = reached + net.num_addresses
    for start, size in sorted((int(p.network_address), p.num_addresses) for p in parts):
        if start > reached:
            return False
        reached = max(reached, start + size)
    return reached >= end


def _masquerade_problems(policy: MasqueradePolicy, cluster: Cluster) -> list[Problem]:
    problems: list[Problem] = []
    if policy.non_masquerade_cidrs and policy.mode != "all":
        problems.append(Problem("masquerade.nonMasqueradeCIDRs",
                                "only meaningful with mode: all (ip-masq-agent semantics)"))
    _duplicates(problems, "masquerade.nonMasqueradeCIDRs", policy.non_masquerade_cidrs)
    by_family: dict[int, Address] = {}
    for i, address in enumerate(policy.snat_addresses):
        if address.version in by_family:
            problems.append(Problem(f"masquerade.snatAddresses[{i}]",
                                    f"a second IPv{address.version} SNAT address "
                                    f"({by_family[address.version]} is already given)"))
        by_family.setdefault(address.version, address)
        unusable = snat_address_problem(address)
        if unusable is not None:
            problems.append(Problem(f"masquerade.snatAddresses[{i}]", unusable))
        elif any(contains(n, address) for n in cluster.pod_cidrs):
            problems.append(Problem(f"masquerade.snatAddresses[{i}]",
                                    f"{address} is a pod address; SNAT needs a node address"))
    return problems


_DNS_LABEL = lazy_pattern(DNS_LABEL)
_LABEL_VALUE = lazy_pattern(r"(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?")
_LABEL_NAME = lazy_pattern(r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                         r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
# A label key's prefix is a DNS subdomain: at most 253 characters (the name part's 63
# are in the pattern).
_LABEL_PREFIX_MAX = 253
# A zone becomes the key ZONE.server of coredns-custom, and a ConfigMap key has at most
# 253 characters: a longer key makes the API server refuse the whole ConfigMap.
_ZONE_MAX = 253 - len(".server")
# Zones the cluster's own DNS answers (K3s's Corefile: `kubernetes cluster.local
# in-addr.arpa ip6.arpa` in its "." block). CoreDNS sends a query to the server block of
# the most specific zone, so a coredns-custom block for one of these, or for a zone
# above one (local, arpa), takes it away from the cluster: with cluster.local, no
# Service name resolves any more, in every pod.
_CLUSTER_DNS_ZONES = ("cluster.local", "in-addr.arpa", "ip6.arpa")


# Calico's blockSize ranges, as checks and as text ("20..32 (IPv4) or 116..128 (IPv6)").
_BLOCK_FITS = {version: int_in(low, high) for version, (low, high) in BLOCK_SIZE_RANGE.items()}
_BLOCK_RANGES = " or ".join(f"{low}..{high} (IPv{version})"
                            for version, (low, high) in BLOCK_SIZE_RANGE.items())
_BLOCK_POOLS = ", ".join(f"{low}..{high} for IPv{version} pools"
                         for version, (low, high) in BLOCK_SIZE_RANGE.items())


def block_size_problems(block_size: int | BlockSizes | None,
                        pod_cidrs: Sequence[Network]) -> list[Problem]:
    """What is wrong with ``cni.calico.blockSize`` for a cluster of these pod CIDRs.

    Calico takes 20..32 for an IPv4 pool and 116..128 for an IPv6 one
    (:data:`~k3snet.model.cni.BLOCK_SIZE_RANGE`): one integer fits a single-stack
    cluster only, a dual-stack one needs the per-family form. Each problem is at
    ``cni.calico.blockSize`` or at the family's key (``cni.calico.blockSize.ipv6``).
    """
    if block_size is None:
        return []
    families = sorted({n.version for n in pod_cidrs})
    if isinstance(block_size, BlockSizes):
        problems = []
        for key, value in block_size.given():
            version = BLOCK_SIZE_KEYS[key]
            low, high = BLOCK_SIZE_RANGE[version]
            path = f"{BLOCK_SIZE_PATH}.{key}"
            if _BLOCK_FITS[version](value) is not None:
                problems.append(Problem(path, f"expected {low}..{high} (Calico's range for "
                                              f"IPv{version} pools), got {value!r}"))
            elif families and version not in families:
                problems.append(Problem(path, f"the cluster has no IPv{version} pod CIDR "
                                              "(cluster.podCIDRs)"))
        return problems
    if all(fits(block_size) is not None for fits in _BLOCK_FITS.values()):
        return [Problem(BLOCK_SIZE_PATH, f"expected {_BLOCK_RANGES}, got {block_size!r}")]
    if len(families) > 1:
        per_family = ", ".join(f"ipv{v}: {DEFAULT_BLOCK_SIZE[v]}" for v in BLOCK_SIZE_RANGE)
        return [Problem(BLOCK_SIZE_PATH, f"one blockSize ({block_size}) cannot fit both "
                                         f"families of a dual-stack cluster (Calico takes "
                                         f"{_BLOCK_POOLS}): give one per family, such as "
                                         f"blockSize: {{{per_family}}}")]
    for version in families:
        low, high = BLOCK_SIZE_RANGE[version]
        if _BLOCK_FITS[version](block_size) is not None:
            pods = ", ".join(str(n) for n in pod_cidrs)
            return [Problem(BLOCK_SIZE_PATH, f"blockSize {block_size} is not {low}..{high}, "
                                             f"Calico's range for the IPv{version} pod CIDR "
                                             f"{pods}")]
    return []


def _cluster_object_problems(spec: Spec) -> list[Problem]:
    """Fields that end up in Kubernetes objects: names, labels, zones, ports."""
    problems: list[Problem] = []
    add = problems.append
    zones: set[str] = set()
    for i, zone in enumerate(spec.dns):
        path = f"dns.zones[{i}]"
        name = zone.zone.rstrip(".").lower()
        if not name or any(not _DNS_LABEL.fullmatch(label) for label in name.split(".")):
            add(Problem(f"{path}.zone", f"{zone.zone!r} is not a DNS zone name"))
        elif taken := next((z for z in _CLUSTER_DNS_ZONES if z == name or z.endswith(
                "." + name) or (z == "cluster.local" and name.endswith("." + z))), None):
            add(Problem(f"{path}.zone", (
                f"{zone.zone!r} overlaps {taken}, which the cluster's own DNS answers: "
                "CoreDNS answers each query from the most specific zone, so these "
                "resolvers would get the cluster's names instead")))
        elif len(name) > _ZONE_MAX:
            add(Problem(f"{path}.zone", (
                f"{zone.zone!r} is longer than {_ZONE_MAX} characters: its key ZONE.server "
                "in the coredns-custom ConfigMap would be over the 253 the API server "
                "accepts")))
        if name in zones:
            add(Problem(f"{path}.zone", f"duplicate zone {zone.zone!r}"))
        zones.add(name)
        if not zone.resolvers:
            add(Problem(f"{path}.resolvers", "at least one resolver is needed"))
    if spec.agent.architectures == ():
        # An `In` without values: the API server refuses the whole DaemonSet.
        add(Problem("agent.architectures", (
            "an empty list runs the agent on no node (the API server refuses the "
            "DaemonSet's node affinity without a value); leave it out for every node")))
    return problems + _policy_problems(spec)


def _policy_problems(spec: Spec) -> list[Problem]:
    """Prefixes and labels of the egress policy (names and ports are field checks)."""
    problems: list[Problem] = []
    add = problems.append
    for i, denied in enumerate(spec.egress_policy.deny):
        holders = [d.cidr for d in spec.destinations if contains(d.cidr, denied)]
        if not holders:
            add(Problem(f"egressPolicy.except[{i}]",
                        f"{denied} is not inside any destination (only a destination's "
                        "ipBlock can have exceptions)"))
        elif denied in holders:
            add(Problem(f"egressPolicy.except[{i}]",
                        f"{denied} is a whole destination; remove the destination instead"))
    _duplicates(problems, "egressPolicy.except", spec.egress_policy.deny)
    for key, value in spec.egress_policy.pod_selector:
        if (not isinstance(key, str) or not _LABEL_NAME.fullmatch(key)
                or len(key.rpartition("/")[0]) > _LABEL_PREFIX_MAX):
            add(Problem(f"egressPolicy.podSelector.{key}", "not a valid label key"))
        if not isinstance(value, str) or not _LABEL_VALUE.fullmatch(value):
            add(Problem(f"egressPolicy.podSelector.{key}",
                        f"{value!r} is not a valid label value"))
    return problems


def _duplicates(problems: list[Problem], path: str, values: Sequence[object]) -> None:
    seen: set[object] = set()
    for i, value in enumerate(values):
        if value in seen:
            problems.append(Problem(f"{path}[{i}]", f"duplicate entry {value}"))
        seen.add(value)
