"""The ``netlink`` backend: routes and ``net.*`` sysctls of one network namespace.

The package, by concern:

* :mod:`.backend`: :class:`NetlinkBackend` (observe, check, apply, rollback);
* :mod:`.codec`: rtnetlink messages as bytes, pure (tested from recorded dumps);
* :mod:`.driver`: the I/O seam, :class:`~.driver.RouteDriver`, and its two
  implementations :mod:`.socket_driver` (the default) and :mod:`.pyroute2_driver`;
* :mod:`.view`: the route view kept warm by the kernel's notifications;
* :mod:`.sysctls`: ``/proc/sys`` and the state file of owned sysctls.
"""

from k3snet.backends.netlink.backend import DEFAULT_STATE_ROOT, WATCHED_SYSCTLS, NetlinkBackend

__all__ = ["DEFAULT_STATE_ROOT", "WATCHED_SYSCTLS", "NetlinkBackend"]
