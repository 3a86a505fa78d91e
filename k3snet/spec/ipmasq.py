"""ip-masq-agent's config file, read so a spec can take over an existing ip-masq-agent setup.

``masquerade.ipMasqAgentConfig`` in a spec (a path, the text, or the mapping)
gives ``mode: all`` with that file's ``nonMasqueradeCIDRs`` and link-local
settings; keys the spec sets itself win.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from k3snet._regex import lazy_pattern
from k3snet.errors import ModelError, Problem, SpecError
from k3snet.model.cidr import Network, go_cidr_text, network_text, parse_network
from k3snet.spec.fields import (
    CIDR_SCHEMA,
    INVALID,
    Field,
    Reader,
    Section,
    boolean,
    check_section,
    raw,
    read_section,
)
from k3snet.spec.source import load_mapping, read_text
from k3snet.spec.validators import int_in, with_schema

__all__ = [
    "IP_MASQ_AGENT_CIDR_LIMIT",
    "IP_MASQ_AGENT_DEFAULT_NON_MASQUERADE",
    "IpMasqAgentConfig",
    "file_named",
    "import_problem",
    "load_ip_masq_agent_config",
    "names_a_file",
]

IP_MASQ_AGENT_DEFAULT_NON_MASQUERADE: tuple[str, ...] = (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "192.0.0.0/24",
    "192.0.2.0/24", "192.88.99.0/24", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24",
    "240.0.0.0/4",
)
"""ip-masq-agent's ``nonMasqueradeCIDRs`` when its config does not set the key and it runs
with ``--nomasq-all-reserved-ranges`` (GKE's setting); without that flag it exempts only the
first three (RFC 1918)."""

IP_MASQ_AGENT_CIDR_LIMIT = 64
"""ip-masq-agent's ``cidrLimit`` when its config does not set the key: it refuses a config
listing more ``nonMasqueradeCIDRs`` than that."""


def _networks(values: Any) -> tuple[Network, ...]:
    return tuple(parse_network(v) for v in values)


@attrs.frozen
class IpMasqAgentConfig:
    """ip-masq-agent's config file, as that agent reads it."""

    non_masquerade_cidrs: tuple[Network, ...] = attrs.field(
        default=IP_MASQ_AGENT_DEFAULT_NON_MASQUERADE, converter=_networks
    )
    masq_link_local: bool = False
    masq_link_local_ipv6: bool = False
    resync_interval: str | None = None
    cidr_limit: int = IP_MASQ_AGENT_CIDR_LIMIT


# Go's time.ParseDuration: "0", or numbers each with a unit, after an optional sign.
_GO_DURATION = lazy_pattern(
    r"[-+]?(?:0|(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:ns|us|\u00b5s|\u03bcs|ms|s|m|h))+)")


_DURATION_PART = lazy_pattern(r"([0-9]*)(?:\.([0-9]*))?([^0-9.]+)")
_UNIT_NS = {"ns": 1, "us": 1_000, "\u00b5s": 1_000, "\u03bcs": 1_000, "ms": 1_000_000,
            "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}
_GO_INT64 = 1 << 63


def _go_duration_overflows(text: str) -> bool:
    """Whether ``time.ParseDuration`` refuses ``text`` (of :data:`_GO_DURATION`'s shape) as
    out of range: it sums the parts in a uint64 and refuses a total beyond an int64, so
    ``100000000000h`` (about 11 million years) is an "invalid duration"."""
    total = 0
    for whole, fraction, unit in _DURATION_PART.findall(text.lstrip("+-")):
        ns = _UNIT_NS[unit]
        value = int(whole or "0")
        if value > _GO_INT64 // ns:
            return True
        value *= ns
        # Go adds a fraction through a float64 (18 digits are more than it holds).
        digits = (fraction or "")[:18]
        if digits:
            value += int(float(int(digits)) * (ns / 10 ** len(digits)))
        total += value
        if total > _GO_INT64:
            return True
    return total > _GO_INT64 - (0 if text.startswith("-") else 1)


def _go_duration(reader: Reader, value: Any, path: str) -> Any:
    """A text Go's ``time.ParseDuration`` reads (``60s``, ``1m30s``): ip-masq-agent decodes
    ``resyncInterval`` as a ``metav1.Duration`` and refuses the config otherwise. Zero and
    negative ones are read: the agent checks no range and sleeps that long between
    syncs (none: it syncs over and over), its rules in force all the same."""
    if not isinstance(value, str) or not _GO_DURATION.fullmatch(value):
        reader.problem(path, f"expected a Go duration such as 60s or 1m30s, got {value!r:.80}; "
                             "ip-masq-agent refuses this config")
        return INVALID
    if _go_duration_overflows(value):
        reader.problem(path, f"{value[:80]!r} is longer than a Go duration can be (about 292 "
                             "years); ip-masq-agent refuses this config")
        return INVALID
    return value


with_schema(_go_duration, {"type": "string"})


def _go_network(value: Any) -> Network:
    """One ``nonMasqueradeCIDRs`` entry, as ip-masq-agent takes it, or a ModelError."""
    net = parse_network(value)  # its messages for a non-text, host bits, a bad address
    # Go's net.ParseCIDR, which ip-masq-agent's validateCIDR runs on every entry: the agent
    # refuses the whole config for a bare address, spaces or a netmask, keeping its rules.
    if isinstance(value, str) and not go_cidr_text(value):
        raise ModelError(f"{value[:80]!r} is not a CIDR as ip-masq-agent reads it (Go's "
                         "net.ParseCIDR: an address, '/' and a prefix length, nothing "
                         f"else, such as {network_text(net)}); ip-masq-agent refuses this "
                         "config")
    mapped = net.network_address.ipv4_mapped if net.version == 6 else None
    if mapped is not None:
        # isIPv6CIDR() asks Go's To4(), which is not nil for ::ffff:a.b.c.d: the agent puts
        # the entry among its IPv4 rules, and iptables-restore refuses them all.
        raise ModelError(f"{network_text(net)} is an IPv4-mapped IPv6 prefix, which "
                         "ip-masq-agent writes among its IPv4 rules (iptables-restore "
                         f"refuses them); list {mapped}/{max(net.prefixlen - 96, 0)} instead")
    return net


def _go_networks(reader: Reader, value: Any, path: str) -> Any:
    """``nonMasqueradeCIDRs``: a list of CIDRs each as Go reads it (:func:`_go_network`)."""
    result = [reader.convert(v, f"{path}[{i}]", _go_network)
              for i, v in enumerate(reader.sequence(value, path))]
    return reader.kept_items(path, result, INVALID)


with_schema(_go_networks, {"type": "array", "items": CIDR_SCHEMA})


IP_MASQ_AGENT = Section(IpMasqAgentConfig, (
    Field("nonMasqueradeCIDRs", "non_masquerade_cidrs", _go_networks),
    Field("masqLinkLocal", "masq_link_local", boolean),
    Field("masqLinkLocalIPv6", "masq_link_local_ipv6", boolean),
    Field("resyncInterval", "resync_interval", _go_duration),
    # A Go int: anything else makes json.Unmarshal, and so the agent, refuse the config.
    Field("cidrLimit", "cidr_limit", raw, checks=(int_in(-(1 << 63), (1 << 63) - 1),)),
))
"""The keys of ip-masq-agent's config file."""


def load_ip_masq_agent_config(source: str | Path | Mapping[str, Any]) -> IpMasqAgentConfig:
    """Read an ip-masq-agent config (a path, YAML/JSON text, or the parsed mapping).

    A text of one line without ``:`` (and not ``{...}``) is a path, read as a spec
    file is (a regular file of bounded size); a missing file is a SpecError.
    Missing ``nonMasqueradeCIDRs`` means ip-masq-agent's defaults
    (:data:`IP_MASQ_AGENT_DEFAULT_NON_MASQUERADE`), as in the agent itself; an
    empty list or ``null`` (as Go decodes it) means none. More CIDRs than
    ``cidrLimit`` (default :data:`IP_MASQ_AGENT_CIDR_LIMIT`) is a SpecError: the
    agent refuses such a config.

    The problems of a *file* never quote what it holds besides the values of
    ip-masq-agent's own keys (:func:`_unquoted`): the agent reads the file as root
    for a spec that anyone who may edit its ConfigMap wrote, and its problems end up
    in the Node's annotation and Events.
    """
    where = "ip-masq-agent config"
    problem = import_problem(source)
    if problem is not None:
        raise SpecError([Problem("", problem)], source=where)
    from_file = False
    if isinstance(source, Mapping):
        data: Any = source
    else:
        text = str(source)
        path = str(source) if isinstance(source, Path) else file_named(text)
        if not text.strip():
            # Read as YAML it is null: ip-masq-agent's defaults, from a template that
            # rendered nothing.
            raise SpecError([Problem("", "empty: give a path, the config's text or a "
                                         "mapping")], source=where)
        if path is not None:
            where, from_file = path, True
            text = read_text(path)
        try:
            data = load_mapping(text, where)
        except SpecError as exc:
            raise _unquoted(exc.problems, data=None, where=where) if from_file else exc from None
    if isinstance(data, Mapping) and "nonMasqueradeCIDRs" in data \
            and data["nonMasqueradeCIDRs"] is None:
        # Go's json.Unmarshal sets a slice to nil for null (``nonMasqueradeCIDRs:`` with
        # nothing after it): the agent exempts no CIDR then, not its default list.
        data = {**data, "nonMasqueradeCIDRs": []}
    reader = Reader()
    if isinstance(data, Mapping) and "resyncInterval" in data and data["resyncInterval"] is None:
        # metav1.Duration decodes null as "", which time.ParseDuration refuses.
        _go_duration(reader, None, "resyncInterval")
    config = read_section(reader, IP_MASQ_AGENT, data, "")
    if config is not None:
        check_section(IP_MASQ_AGENT, config, "", reader.problems)
    if isinstance(config, IpMasqAgentConfig) and not reader.problems \
            and len(config.non_masquerade_cidrs) > config.cidr_limit:
        # ip-masq-agent's validate(): the whole config is refused, the agent keeps what
        # it had (its defaults at start), so importing the list would not be what it does.
        reader.problem("nonMasqueradeCIDRs", (
            f"{len(config.non_masquerade_cidrs)} CIDRs, more than the cidrLimit of "
            f"{config.cidr_limit}; ip-masq-agent refuses this config (raise cidrLimit)"))
    if reader.problems:
        raise _unquoted(reader.problems, data, where) if from_file else \
            SpecError(reader.problems, source=where)
    assert isinstance(config, IpMasqAgentConfig)  # the section has no required key
    return config


_KNOWN = tuple(f.key for f in IP_MASQ_AGENT.fields)
_POSITION = lazy_pattern(r"line \d+,? column \d+")


def _unquoted(problems: tuple[Problem, ...] | list[Problem], data: Any, where: str) -> SpecError:
    """The problems of a config *file*, without its text.

    A parse error keeps only its position (PyYAML's messages quote the line, an
    alias's or a duplicate key's name); a key that is not ip-masq-agent's is named
    only when it is a near miss of one (a typo), the others are counted: naming
    ``/etc/shadow`` as the config made every password hash an "unknown key".
    """
    if data is None:  # load_mapping refused the text: one problem
        message = problems[0].message if problems else ""
        position = _POSITION.findall(message)
        at = f" ({position[-1]})" if position else ""
        return SpecError([Problem("", f"cannot be read as YAML or JSON{at}; the file's text "
                                      "is not shown")], source=where)
    import difflib  # noqa: PLC0415 - a config that cannot be read only

    unknown = {str(key) for key in data if key not in _KNOWN} if isinstance(data, Mapping) \
        else set()
    hidden = {key for key in unknown
              if not difflib.get_close_matches(key, _KNOWN, n=1, cutoff=0.8)}
    paths = {Problem(key, "").path for key in hidden}  # as cut in the problems
    kept = [p for p in problems if p.path not in paths]
    if hidden:
        count = len(hidden)
        kept.append(Problem("", f"{count} key{'s' if count != 1 else ''} ip-masq-agent does "
                                f"not read (not shown: the file may be another one than its "
                                f"config; its keys are {', '.join(_KNOWN)})"))
    return SpecError(kept, source=where)


def import_problem(source: Any) -> str | None:
    """What is wrong with ``source`` as an ip-masq-agent config to import (``None``: it is a
    path, text or a mapping); anything else made into text would name a file (``5``)."""
    if isinstance(source, str | Path | Mapping):
        return None
    return f"expected a path, the config's text or a mapping, got {source!r:.80}"


def names_a_file(text: str) -> bool:
    """Whether ``text`` names a file rather than holding the config: one line without
    ``:`` (every mapping of the config's keys has one) that is not a flow mapping, with
    or without blank space around it (:func:`file_named`)."""
    return file_named(text) is not None


def file_named(text: str) -> str | None:
    """The path ``text`` names (:func:`names_a_file`), blank space around it left out: a
    YAML block scalar (``ipMasqAgentConfig: |``) ends the line with a newline, which
    made the path a one-line config "expected a mapping, got str". ``None`` when it holds
    the config or nothing at all."""
    path = text.strip()
    if not path or "\n" in path or ":" in path or path.startswith("{"):
        return None
    return path
