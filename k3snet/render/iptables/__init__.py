"""The iptables rule language k3snet writes (:mod:`~k3snet.render.iptables.rules`), and
its persistence files ``k3snet.rules.v4`` / ``k3snet.rules.v6`` (:func:`render_iptables_save`).

The :mod:`iptables backend <k3snet.backends.iptables>` writes and reads its
chains through :mod:`k3snet.render.iptables.rules`; nothing here does any I/O.
"""

from k3snet.render.iptables.save import RULES_FILES, render_iptables_save

__all__ = ["RULES_FILES", "render_iptables_save"]
