"""The ``nftables`` backend: NAT and forward rules in a table k3snet owns, via libnftables.

A package of small modules: :mod:`.backend` (the backend: observe, plan a
batch, apply), :mod:`.kernel` (the I/O seam and its libnftables
implementation), :mod:`.parse` (JSON listings to objects, drift and foreign
rules), :mod:`.batch` (one transaction: its commands in order, spelled by
:mod:`k3snet.render.nftables_batch`) and :mod:`.cache` (what the
backend knows of its table). The registry entry point is
``k3snet.backends.nftables:NftablesBackend``.
"""

from __future__ import annotations

from k3snet.backends.nftables.backend import NftablesBackend
from k3snet.render.nftables import MARKER_CHAIN
from k3snet.render.nftables_batch import Syntax

__all__ = ["MARKER_CHAIN", "NftablesBackend", "Syntax"]
