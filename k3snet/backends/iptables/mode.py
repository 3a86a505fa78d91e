"""Which iptables flavour a namespace uses, from what each flavour's ``-save`` shows (pure).

K3s may run either flavour, and reading the wrong one hides every rule. The
``-save`` output of both flavours (IPv4 and IPv6) is compared, in this order,
and the first criterion only one flavour meets decides: it has k3snet's own
``K3SNET-`` chains (from an earlier run; an admin's chain named so is not
k3snet's, as :func:`~k3snet.backends.iptables.table.own_chains` tells); it has
``KUBE-``/``FLANNEL-`` chains (K3s is using it); it has any rule, user chain or
non-ACCEPT policy. When both have rules, the one with more wins (the rule of
kube-proxy's iptables-wrapper). When neither has anything, the flavour
``iptables --version`` reports decides (the host's alternatives).

Both flavours' rules run in the kernel side by side, but k3snet reads one:
:func:`other_flavour_rules` says what the other one holds in the tables k3snet
reads, for the backend's warning.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import attrs

from k3snet._regex import lazy_pattern
from k3snet.backends.iptables.driver import Flavour
from k3snet.backends.iptables.foreign import PATH_CHAINS
from k3snet.backends.iptables.save import parse_save
from k3snet.backends.iptables.table import own_chains
from k3snet.render.iptables.rules import HOOKS, PREFIX, TABLES

__all__ = ["Evidence", "detect_mode", "other_flavour_rules"]

_KUBE_CHAIN = lazy_pattern(r"^:(KUBE-|FLANNEL-)", re.MULTILINE)
_K3SNET_NAMED = lazy_pattern(rf"^:{PREFIX}", re.MULTILINE)
_USER_CHAIN = lazy_pattern(r"^:\S+ - ", re.MULTILINE)
_POLICY = lazy_pattern(r"^:\S+ (DROP|REJECT) ", re.MULTILINE)
_RULE = lazy_pattern(r"^(?:\[\d+:\d+\] )?-A ", re.MULTILINE)


@attrs.frozen
class Evidence:
    """What one iptables flavour's ``-save`` output shows."""

    ours: int
    k8s: int
    rules: int

    @classmethod
    def of(cls, texts: Sequence[str]) -> Evidence:
        """Count what ``texts`` (``-save`` outputs, one per family) hold."""
        text = "\n".join(texts)
        return cls(
            ours=sum(_own_chains(save) for save in texts),
            k8s=len(_KUBE_CHAIN.findall(text)),
            rules=len(_RULE.findall(text)) + len(_USER_CHAIN.findall(text))
            + len(_POLICY.findall(text)),
        )


def _own_chains(text: str) -> int:
    """How many of k3snet's own chains one ``-save`` output holds (an admin's
    ``K3SNET-*`` chain is not one); parsed only when a chain is named so."""
    if _K3SNET_NAMED.search(text) is None:
        return 0
    return sum(len(own_chains(HOOKS[name], table)) for name, table in parse_save(text).items()
               if name in HOOKS)


def detect_mode(saves: Mapping[str, Sequence[str]], version: str) -> tuple[Flavour, str]:
    """The flavour in use and why, from each flavour's ``-save`` texts and the version."""
    nft = Evidence.of(saves.get("nft", ()))
    legacy = Evidence.of(saves.get("legacy", ()))
    for field, label in (("ours", "K3SNET- chains"), ("k8s", "KUBE-/FLANNEL- chains"),
                         ("rules", "rules, user chains or DROP policies")):
        has_nft, has_legacy = getattr(nft, field) > 0, getattr(legacy, field) > 0
        if has_nft != has_legacy:
            winner: Flavour = "nft" if has_nft else "legacy"
            return winner, f"only iptables-{winner} has {label}"
    if nft.rules or legacy.rules:
        if legacy.rules > nft.rules:
            return "legacy", "iptables-legacy has more rules than iptables-nft"
        return "nft", "iptables-nft has at least as many rules as iptables-legacy"
    if "legacy" in version:
        return "legacy", f"no rules in either flavour; `iptables --version`: {version.strip()}"
    if "nf_tables" in version:
        return "nft", f"no rules in either flavour; `iptables --version`: {version.strip()}"
    return "nft", "no rules in either flavour and no `iptables` to ask; nft by default"


def other_flavour_rules(texts: Mapping[int, str | None]) -> list[str]:
    """What one flavour's ``-save`` texts (by family) hold in the tables k3snet reads.

    One ``IPv4 filter: 2 rules, FORWARD policy DROP, 1 user chain`` line per table
    that holds anything (what iptables-nft-save says it left out too); empty when
    those tables are empty (or absent). The raw, mangle and security tables, whose
    drops on the forward path k3snet judges, count by their rules and policies: an
    empty chain there (kubelet's ``KUBE-IPTABLES-HINT`` in mangle) runs nothing.
    """
    found = []
    for family, text in sorted(texts.items()):
        if not text:
            continue
        dump = parse_save(text)
        for table in (*TABLES, *PATH_CHAINS):
            held = dump.get(table)
            if held is None:
                continue
            parts = []
            rules = sum(len(lines) for lines in held.rules.values())
            if rules:
                parts.append(f"{rules} rule{'s' if rules != 1 else ''}")
            parts += [f"{chain} policy {policy}" for chain, policy in held.policies.items()
                      if policy not in ("ACCEPT", "-")]
            chains = sum(policy == "-" for policy in held.policies.values())
            if chains and (rules or table in TABLES):
                parts.append(f"{chains} user chain{'s' if chains != 1 else ''}")
            if held.hidden == "unread":  # read alone, the tool failed (save_apart)
                parts.append(f"not read ({held.detail})")
            elif held.hidden is not None:  # iptables-nft-save said it left them out
                parts.append(f"{'base chains' if held.hidden == 'base chains' else 'rules'} "
                             "written with nft that iptables-nft-save cannot show")
            if parts:
                found.append(f"IPv{family} {table}: {', '.join(parts)}")
    return found
