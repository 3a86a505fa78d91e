"""The seed lab and its network-namespace helpers (root and iproute2 needed).

What ``make demo`` and the docs use to rebuild the seed problem in network
namespaces that it creates and deletes: :class:`SeedLab` (pod, node, router and
database namespaces) and :mod:`k3snet.lab.netns` (named namespaces, commands run
inside them). Nothing here touches the root network namespace. Unlike
:mod:`k3snet.testing`, it needs no hypothesis.
"""

from k3snet.lab.seed import (
    DB_ADDRESSES,
    DB_PORT,
    NODE_ADDRESSES,
    POD_ADDRESSES,
    POD_CIDRS,
    Family,
    ForwardTool,
    LabError,
    ProbeResult,
    SeedLab,
)

__all__ = [
    "DB_ADDRESSES",
    "DB_PORT",
    "NODE_ADDRESSES",
    "POD_ADDRESSES",
    "POD_CIDRS",
    "Family",
    "ForwardTool",
    "LabError",
    "ProbeResult",
    "SeedLab",
]
