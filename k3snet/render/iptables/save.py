"""Persistence for the iptables backend: ``k3snet.rules.v4`` and ``k3snet.rules.v6``.

The file holds *only* k3snet's chains and the jumps into them, in the exact
layout the :mod:`iptables backend <k3snet.backends.iptables>` writes, so that::

    iptables-restore --noflush /etc/k3snet/k3snet.rules.v4
    ip6tables-restore --noflush /etc/k3snet/k3snet.rules.v6

at boot recreates our rules and leaves every foreign chain and rule (flannel,
kube-proxy, Docker, the administrator's) alone: with ``--noflush`` a table is
not flushed, and declaring ``:K3SNET-... - [0:0]`` empties only that chain.

The file is *not* netfilter-persistent's ``/etc/iptables/rules.v4``: that service
loads its files without ``--noflush``, which flushes every table the file names
(``*nat``, ``*filter``) and deletes its other chains, kube-proxy's, flannel's and
Docker's among them, whenever it starts or reloads (and it owns that file: its
``save`` overwrites it with the whole ruleset). Hence the names the CLI writes
(:data:`RULES_FILES`) and the warning in the file itself.

Meant for loading into a boot-time kernel. Loading the file a second time into a
kernel that already has our chains re-creates their content but adds a second
jump from POSTROUTING/FORWARD (the restore format has no "add if missing"); the
backend's ``observe`` reports that as drift and its next apply removes the
extra jump.

>>> from k3snet.model import MasqueradeRule, State
>>> text = render_iptables_save(State(owned=[MasqueradeRule("10.42.0.0/16")]), 4)
>>> print(text.splitlines()[5])
*nat
"""

from __future__ import annotations

from k3snet.errors import ModelError
from k3snet.model import Drift, NetObject
from k3snet.model.state import State
from k3snet.render.iptables.rules import HOOKS, TABLES, format_line, hook_line, table_image

__all__ = ["RULES_FILES", "render_iptables_save"]

RULES_FILES = {4: "k3snet.rules.v4", 6: "k3snet.rules.v6"}
"""The names ``k3snet render iptables`` writes, per family: not netfilter-persistent's
``rules.v4``/``rules.v6``, which it loads without ``--noflush``."""

_KINDS = {"filter": "forward", "nat": "nat"}


def render_iptables_save(state: State, family: int, *, mode: str = "auto") -> str:
    """``iptables-save`` text of the owned NAT and forward rules of one family (4 or 6).

    Other kinds (routes, sysctls) and the other family are left out; a state
    with nothing for this family gives a file with only its header comments.
    ``mode`` is the iptables backend's (``nft``, ``legacy`` or ``auto``): the
    command the header gives loads the file into that flavour
    (``iptables-legacy-restore``), the one the backend reads; ``auto`` names
    the host's ``iptables-restore``.
    """
    if family not in (4, 6):
        raise ModelError(f"family must be 4 or 6, got {family!r}")
    if mode not in ("nft", "legacy", "auto"):
        raise ModelError(f"iptables mode must be 'nft', 'legacy' or 'auto', got {mode!r}")
    tool = ("iptables" if family == 4 else "ip6tables") + ("" if mode == "auto" else f"-{mode}")
    lines = [
        f"# k3snet: only k3snet's chains and jumps (IPv{family}).",
        f"# Load with `{tool}-restore --noflush /etc/k3snet/{RULES_FILES[family]}`,",
        "# so that foreign rules are kept. Never as netfilter-persistent's",
        f"# /etc/iptables/rules.v{family}: it loads without --noflush, which flushes every",
        "# table named below (kube-proxy's, flannel's, Docker's rules with them).",
    ]
    for table in TABLES:
        objects: list[NetObject] = [
            o for o in state.owned
            if o.kind == _KINDS[table] and o.family == family and not isinstance(o, Drift)
        ]
        image = table_image(objects)
        if not image:
            continue
        hook = HOOKS[table]
        lines.append(f"*{table}")
        lines += [f":{chain} - [0:0]" for chain in image]
        jump = format_line(hook_line(hook))
        # Appended, like an apply creates it: the rules loaded before this file
        # (an admin's) come first and decide.
        lines.append(f"-A {hook.builtin} {jump}")
        lines += [f"-A {chain} {format_line(rule)}" for chain, rules in image.items()
                  for rule in rules]
        lines.append("COMMIT")
    return "\n".join(lines) + "\n"
