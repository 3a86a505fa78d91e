"""The ``iptables`` backend: k3snet's own chains, through iptables-nft or iptables-legacy.

Modules: :mod:`~k3snet.backends.iptables.backend` (the backend),
:mod:`~k3snet.backends.iptables.driver` (the I/O seam: ``iptables-save``,
``iptables-restore``, libiptc), :mod:`~k3snet.backends.iptables.save` (the
``iptables-save`` parser), :mod:`~k3snet.backends.iptables.table` (what k3snet
holds in one table, and the edits that change it),
:mod:`~k3snet.backends.iptables.foreign` (the foreign rules k3snet can model),
:mod:`~k3snet.backends.iptables.mode` (which flavour a namespace uses),
:mod:`~k3snet.backends.iptables.xtables` (iptables-legacy's change token) and
:mod:`~k3snet.backends.iptables.libiptc`. The rule language itself is
:mod:`k3snet.render.iptables.rules`.
"""

from k3snet.backends.iptables.backend import Driver, IptablesBackend, Mode

__all__ = ["Driver", "IptablesBackend", "Mode"]
