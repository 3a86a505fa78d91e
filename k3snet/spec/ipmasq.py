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

from k3snet.errors import SpecError
from k3snet.model.cidr import Network, parse_network
from k3snet.spec.fields import Field, Reader, Section, boolean, networks, read_section
from k3snet.spec.source import load_mapping, read_text

__all__ = [
    "IP_MASQ_AGENT_DEFAULT_NON_MASQUERADE",
    "IpMasqAgentConfig",
    "load_ip_masq_agent_config",
]

IP_MASQ_AGENT_DEFAULT_NON_MASQUERADE: tuple[str, ...] = (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "192.0.0.0/24",
    "192.0.2.0/24", "192.88.99.0/24", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24",
    "240.0.0.0/4",
)
"""ip-masq-agent's ``nonMasqueradeCIDRs`` when its config does not set the key."""


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


def _text(reader: Reader, value: Any, path: str) -> Any:
    return str(value)


IP_MASQ_AGENT = Section(IpMasqAgentConfig, (
    Field("nonMasqueradeCIDRs", "non_masquerade_cidrs", networks),
    Field("masqLinkLocal", "masq_link_local", boolean),
    Field("masqLinkLocalIPv6", "masq_link_local_ipv6", boolean),
    Field("resyncInterval", "resync_interval", _text),
))
"""The keys of ip-masq-agent's config file."""


def load_ip_masq_agent_config(source: str | Path | Mapping[str, Any]) -> IpMasqAgentConfig:
    """Read an ip-masq-agent config (a path, YAML/JSON text, or the parsed mapping).

    A text of one line without ``:`` (and not ``{...}``) is a path, read as a spec
    file is (a regular file of bounded size); a missing file is a SpecError.
    Missing ``nonMasqueradeCIDRs`` means ip-masq-agent's defaults
    (:data:`IP_MASQ_AGENT_DEFAULT_NON_MASQUERADE`), as in the agent itself; an
    empty list means none.
    """
    where = "ip-masq-agent config"
    if isinstance(source, Mapping):
        data: Any = source
    else:
        text = str(source)
        if isinstance(source, Path) or _a_path(text):
            where = text
            text = read_text(text)
        data = load_mapping(text, where)
    reader = Reader()
    config = read_section(reader, IP_MASQ_AGENT, data, "")
    if reader.problems:
        raise SpecError(reader.problems, source=where)
    assert isinstance(config, IpMasqAgentConfig)  # the section has no required key
    return config


def _a_path(text: str) -> bool:
    """Whether ``text`` names a file rather than holding the config: one line without
    ``:`` (every mapping of the config's keys has one) that is not a flow mapping."""
    return "\n" not in text and ":" not in text and not text.lstrip().startswith("{")
