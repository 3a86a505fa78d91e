"""A pod's connection the node drops, seen ended the moment the kernel counts the drop.

A dropped connection's probe waited out its whole timeout (nothing ever comes back);
the kernel's counter of the rule (or the chain's policy) that drops it says so as soon
as the first packet is dropped. Shared by the iptables tests of real packets.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable

from k3snet.lab import DB_ADDRESSES, DB_PORT, SeedLab
from k3snet.lab.netns import run_in
from k3snet.lab.seed import _PROBE_FILE

_RULE = re.compile(r"\[(\d+):\d+\] (.*)")
_POLICY = re.compile(r"(:\S+ \S+) \[(\d+):\d+\]")


def iptables_count(ns: str, save: str, table: str, line: str) -> Callable[[], int]:
    """How many packets the kernel counted for ``line`` of ``table``, as ``save -c`` (an
    iptables-save) shows it: a rule as listed (``-A FORWARD -j DROP``), or a chain's
    policy (``:FORWARD DROP``)."""

    def count() -> int:
        for listed in run_in(ns, [save, "-c", "-t", table]).stdout.splitlines():
            if (rule := _RULE.fullmatch(listed)) and rule.group(2) == line:
                return int(rule.group(1))
            if (policy := _POLICY.fullmatch(listed)) and policy.group(1) == line:
                return int(policy.group(2))
        msg = f"{line!r} is not in {save} -t {table}"
        raise AssertionError(msg)

    return count


def dropped(lab: SeedLab, family: int, counted: Callable[[], int],
            timeout: float = 1.0) -> bool:
    """Whether the pod's connection to the database fails (``not lab.tcp_probe(family,
    timeout).ok``), the probe ended as soon as ``counted()`` moved: the kernel dropped a
    packet of it there, so it cannot connect (no other packet passes the lab's node)."""
    host = DB_ADDRESSES[4 if family == 4 else 6]
    before = counted()
    probe = subprocess.Popen(
        ["ip", "netns", "exec", lab.pod, sys.executable, "-I", "-S", _PROBE_FILE, "tcp",
         "--host", host, "--port", str(DB_PORT), "--timeout", str(timeout)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while probe.poll() is None:
            if counted() > before:
                return True
            time.sleep(0.01)
    finally:
        if probe.poll() is None:
            probe.kill()
        out, err = probe.communicate()
    answer = json.loads(out or "null")
    assert isinstance(answer, dict), (out, err)
    return answer.get("ok") is not True


def snmp_count(ns: str, group: str, name: str) -> Callable[[], int]:
    """A counter of the namespace's ``/proc/net/snmp`` or ``/proc/net/netstat``:
    ``("IpExt", "InNoRoutes")`` counts the packets it had to forward and had no route
    for (the router's, for a pod's unmasqueraded reply: no way back to the pod)."""

    def count() -> int:
        return mib(run_in(ns, ["cat", "/proc/net/snmp", "/proc/net/netstat"]).stdout,
                   f"{group}:{name}")

    return count


def mib(listing: str, key: str) -> int:
    """The counter ``key`` in ``listing``, the kernel's ``/proc/net/snmp`` or
    ``/proc/net/netstat`` (``"IpExt:InNoRoutes"``: each group a line of names, then one
    of values) or ``/proc/net/snmp6`` (``"Ip6InAddrErrors"``: a name and its value a
    line). Read by :func:`snmp_count` and the doctor lab's counters alike."""
    lines = listing.splitlines()
    if ":" not in key:
        for line in lines:
            name, value = line.split()
            if name == key:
                return int(value)
        raise KeyError(key)
    group, name = key.split(":")
    for names, values in zip(lines[::2], lines[1::2], strict=True):
        head = names.split()
        if head[0] == f"{group}:" and name in head:
            return int(values.split()[head.index(name)])
    raise KeyError(key)
