"""One seed lab for a module's tests that write on it alone: checked to be the lab as made
before each test, put back after it (:func:`shared_lab`). A lab of its own cost each such
test 0.6 to 1.3 s (made and deleted, by the machine's load); the check and the putting
back about half of that (0.3 to 0.7 s, most of it the four readings).

The check reads every namespace of the lab in the kernel's own view, and compares it
with the same reading taken before the lab's first test: the rules, user chains and
policies of iptables of both flavours and families, the nftables ruleset (its sets
with it), every ``net.*`` sysctl, the devices (their MTU, state, master, flags such as
NOARP, hardware address and root qdisc: a blackhole drops as a rule does), the
addresses, the routes of every table, the policy routing rules, the neighbour entries
set by hand (permanent), and the path MTU learnt towards the database; and k3snet's
files for the node (``SeedLab.state_dir``). The neighbours the kernel learnt are
forgotten after each test. What a test leaves of these is taken back after it where a
test may leave it (rules, chains, the ruleset, sysctls, added devices and MTUs, added
routes and routing rules, learnt path MTUs, k3snet's files); anything else fails the
next test's check, which names it."""

from __future__ import annotations

import json
import os
import shlex
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from k3snet.lab import SeedLab
from k3snet.lab.netns import run_in
from k3snet.lab.seed import DB_ADDRESSES

_LEGACY_SAVES = ("iptables-legacy-save", "ip6tables-legacy-save")
_FORWARDING = ("/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding")
_VOLATILE = ("/proc/sys/net/netfilter/nf_conntrack_count",)
"""Sysctls traffic itself changes (not a test's setting)."""

# One shell per namespace reads it all (a process per reading cost more than the
# reading); iptables-nft's tables are in nftables' ruleset.
_SECTION = "@@@ "
_READ = "\n".join([
    *(f"echo '{_SECTION}{save}'; {save} 2>/dev/null" for save in _LEGACY_SAVES),
    f"echo '{_SECTION}nft'; nft list ruleset",
    f"echo '{_SECTION}sysctl'; grep -r . /proc/sys/net 2>/dev/null",  # 3 times `sysctl net`'s speed
    f"echo '{_SECTION}addr'; ip -j addr",  # the devices too
    *(f"echo '{_SECTION}route{family}'; ip -{family} -j route show table all"
      for family in (4, 6)),
    *(f"echo '{_SECTION}rule{family}'; ip -{family} -j rule" for family in (4, 6)),
    f"echo '{_SECTION}neigh'; ip -j neigh show nud permanent",
    f"echo '{_SECTION}pmtu'",
    *(f"ip -o route get {address}" for address in DB_ADDRESSES.values()),
])
# After each test, what tests leave, taken back blind (a reading to find it cost more):
# legacy tables emptied (they stay once loaded), the ruleset flushed (iptables-nft's
# tables with it), forwarding off, MTUs of 1500, learnt path MTUs flushed, the
# neighbours learnt forgotten (as in a lab as made, whose first packets resolve them: a
# cached entry would hide a rule dropping ARP or neighbour discovery). The check
# before the next test finds the rest, and takes back what a test may leave
# (:func:`_reset`) before it reads again.
_EMPTY_LEGACY = r"""
for tool in iptables ip6tables; do
  saved=$($tool-legacy-save 2>/dev/null)
  [ -n "$saved" ] || continue
  printf '%s\n' "$saved" | sed -n -e '/^\*/p' -e '/^COMMIT/p' \
    -e 's/^\(:[A-Z]*\) [A-Z]\+ .*/\1 ACCEPT [0:0]/p' | $tool-legacy-restore -w
done
nft flush ruleset
"""
_FORGET_NEIGHBOURS = "ip neigh flush all\n"
_PUT_BACK = {
    "node": _EMPTY_LEGACY + "sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0\n"
            "ip -4 route flush cache; ip -6 route flush cache\n" + _FORGET_NEIGHBOURS,
    "pod": "ip -4 route flush cache; ip -6 route flush cache\n" + _FORGET_NEIGHBOURS,
    "router": "ip link set eth1 mtu 1500\n" + _FORGET_NEIGHBOURS,
    "db": "ip link set eth0 mtu 1500\n" + _FORGET_NEIGHBOURS,
}

Reading = dict[str, object]
"""One namespace's state by section (see :func:`_read`)."""

_MADE_AS: dict[str, dict[str, Reading]] = {}
"""Each lab's reading (by namespace) when its first test began, by its node's name."""


def made_lab() -> Iterator[SeedLab]:
    """The lab itself (a module-scoped fixture's body)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    with SeedLab.create() as made:
        yield made


def _iptables(saved: str) -> list[str]:
    """What of an iptables save is not a fresh table's: rules, user chains and policies
    but ACCEPT (a table the kernel holds empty, as legacy tables stay once loaded, is
    none)."""
    return [line if line.startswith("-") else line.split()[0] + " " + line.split()[1]
            for line in saved.splitlines()
            if line.startswith("-") or (line.startswith(":") and line.split()[1] != "ACCEPT")]


def _read(ns: str) -> Reading:
    """``ns`` as its kernel shows it, by section."""
    out = run_in(ns, ["sh", "-c", _READ]).stdout
    raw: dict[str, str] = {}
    for block in out.split(_SECTION)[1:]:
        name, _, text = block.partition("\n")
        raw[name] = text
    reading: Reading = {save: _iptables(raw[save]) for save in _LEGACY_SAVES}
    reading["nft"] = raw["nft"].strip()
    sysctls: dict[str, str] = {}
    for line in raw["sysctl"].splitlines():
        path, _, value = line.partition(":")
        if path not in _VOLATILE:
            sysctls[path] = f"{sysctls[path]}\n{value}" if path in sysctls else value
    reading["sysctl"] = sysctls
    links = json.loads(raw["addr"])
    reading["link"] = {link["ifname"]: (link["mtu"], "UP" in link["flags"], link.get("master"),
                                        tuple(sorted(link["flags"])), link.get("address"),
                                        link.get("qdisc"))
                       for link in links}
    reading["addr"] = sorted((link["ifname"], address["local"], address["prefixlen"])
                             for link in links for address in link["addr_info"])
    for family in (4, 6):
        reading[f"route{family}"] = sorted(
            (route.get("table", "main"), route.get("type", "unicast"), route["dst"],
             route.get("dev", ""), route.get("gateway", ""), _attributes(route))
            for route in json.loads(raw[f"route{family}"]))
        reading[f"rule{family}"] = sorted(
            json.dumps(rule, sort_keys=True) for rule in json.loads(raw[f"rule{family}"]))
    reading["neigh"] = sorted((entry["dev"], entry["dst"], entry.get("lladdr", ""))
                              for entry in json.loads(raw["neigh"]))
    reading["pmtu"] = [line for line in raw["pmtu"].splitlines() if " mtu " in line]
    return reading


_ROUTE_KEYS = frozenset({"table", "type", "dst", "dev", "gateway", "flags", "expires"})
"""Of a route's JSON, what :func:`_read` takes apart, or what its device's state (read
with the device) or time changes."""


def _attributes(route: dict[str, Any]) -> str:
    """The rest of a route (its source address, metric, MTU, protocol, scope): a route
    changed in place (``ip route change ... src``) is not the lab's."""
    return json.dumps({k: v for k, v in route.items() if k not in _ROUTE_KEYS},
                      sort_keys=True)


def read_lab(lab: SeedLab) -> dict[str, Reading]:
    """Every namespace of ``lab`` as its kernel shows it (:func:`_read`)."""
    return {ns: _read(ns) for ns in lab.namespaces}


def _differences(made_as: dict[str, Reading], now: dict[str, Reading]) -> list[str]:
    """What differs between two readings of a lab, section by section (of a sysctl or
    device section, the keys that differ alone)."""
    differences = []
    for ns, reading in made_as.items():
        for section, was in reading.items():
            is_ = now[ns][section]
            if is_ == was:
                continue
            if isinstance(was, dict) and isinstance(is_, dict):
                keys = sorted(k for k in was.keys() | is_.keys() if was.get(k) != is_.get(k))
                is_ = {k: is_.get(k) for k in keys}
                was = {k: was.get(k) for k in keys}  # noqa: PLW2901
            differences.append(f"{ns} {section}: {was!r} as made, {is_!r} now")
    return differences


def shared_lab(made: SeedLab) -> Iterator[SeedLab]:
    """``made``, as it was made in the kernel's own view (checked before the test against
    the reading before the lab's first test, itself checked fresh: no iptables rule,
    user chain or policy but ACCEPT, no nftables ruleset, forwarding off on the node, no
    path MTU learnt), put back after the test."""
    now = read_lab(made)
    made_as = _MADE_AS.setdefault(made.node, now)
    if made_as is now:
        for ns, reading in now.items():
            assert not any(reading[save] for save in _LEGACY_SAVES), (ns, reading)
            assert reading["nft"] == "", (ns, reading["nft"])
            assert reading["pmtu"] == [], (ns, reading["pmtu"])
        sysctls = _dict(now[made.node]["sysctl"])
        assert [sysctls[key] for key in _FORWARDING] == ["0", "0"], sysctls
    elif _differences(made_as, now):  # left by the last test, past what was put back blind
        _reset(made_as, now)
        now = read_lab(made)
    differences = _differences(made_as, now)
    # k3snet's files for the node (``SeedLab.state_dir``): none in a lab as made.
    differences += [f"state dir: {path.name}" for path in made.state_dir.iterdir()]
    assert not differences, ("left by a test", differences)
    try:
        yield made
    finally:
        _put_back_blind(made)


# The fixtures a module imports to share one lab among its tests (``from tests.shared_lab
# import lab_fixture, made_lab_fixture``): pytest gives each importing module its own lab.


@pytest.fixture(scope="module", name="made_lab")
def made_lab_fixture() -> Iterator[SeedLab]:
    """One seed lab for the module's tests of real packets."""
    yield from made_lab()


@pytest.fixture(name="lab")
def lab_fixture(made_lab: SeedLab) -> Iterator[SeedLab]:
    """The module's lab, checked to be as it was made, put back after the test."""
    yield from shared_lab(made_lab)


def left_over(lab: SeedLab) -> list[str]:
    """What differs in ``lab`` from the lab as made, as the check before a test names it
    (nothing taken back)."""
    return _differences(_MADE_AS[lab.node], read_lab(lab))


def _put_back_blind(lab: SeedLab) -> None:
    """What tests leave, taken back without reading first (see :data:`_PUT_BACK`)."""
    shutil.rmtree(lab.state_dir)
    lab.state_dir.mkdir()
    for role, script in _PUT_BACK.items():
        run_in(getattr(lab, role), ["sh", "-c", script])


def put_back(lab: SeedLab) -> None:
    """Take back what a test left in ``lab``, as far as a test may leave it (as after a
    test and before the next)."""
    _put_back_blind(lab)
    _reset(_MADE_AS[lab.node], read_lab(lab))


def _reset(made_as: dict[str, Reading], lab_now: dict[str, Reading]) -> None:
    """Take back what differs from the lab as made (``made_as``) as far as a test may
    leave it (see the module), by namespace."""
    for ns, now in lab_now.items():
        was = made_as[ns]
        if now == was:
            continue
        _reset_rules(ns, now, was)
        links, made_links = _dict(now["link"]), _dict(was["link"])
        for link in sorted(links.keys() - made_links.keys()):
            run_in(ns, ["ip", "link", "delete", link])
        for link, (mtu, *_) in sorted(made_links.items()):
            if link in links and links[link][0] != mtu:
                run_in(ns, ["ip", "link", "set", link, "mtu", str(mtu)])
        if links != made_links:  # a device's sysctls (its IPv6 MTU) follow the device
            now = _read(ns)  # noqa: PLW2901
        sysctls, made_sysctls = _dict(now["sysctl"]), _dict(was["sysctl"])
        changed = [f"printf '%s' {shlex.quote(value)} > {path}"
                   for path, value in made_sysctls.items() if sysctls.get(path) != value]
        if changed:
            run_in(ns, ["sh", "-c", "; ".join(changed)])
        commands = []
        for family in (4, 6):
            routes, made_routes = _list(now[f"route{family}"]), _list(was[f"route{family}"])
            made_keys = {route[:3] for route in made_routes}
            # (not the local table's: the kernel's own, gone with forwarding turned off)
            commands += [f"ip -{family} route del {kind} {destination} table {table}"
                         for table, kind, destination, *_ in sorted(set(routes))
                         if (table, kind, destination) not in made_keys and table != "local"]
            rules, made_rules = _list(now[f"rule{family}"]), _list(was[f"rule{family}"])
            commands += [f"ip -{family} rule del pref {json.loads(rule)['priority']}"
                         for rule in sorted(set(rules) - set(made_rules))]
            if now["pmtu"] or links != made_links:  # a learnt path MTU
                commands.append(f"ip -{family} route flush cache")
        if commands:  # what is left: the check's
            run_in(ns, ["sh", "-c", "; ".join(commands)], check=False)


def _reset_rules(ns: str, now: Reading, was: Reading) -> None:
    """iptables' rules of both flavours, and the nftables ruleset."""
    for tool in ("iptables", "ip6tables"):  # legacy tables stay, emptied
        if now[f"{tool}-legacy-save"]:
            _empty_legacy(ns, tool)
    if now["nft"] != was["nft"]:
        run_in(ns, ["nft", "flush", "ruleset"])  # iptables-nft's tables with the rest


def _dict(section: object) -> dict[Any, Any]:
    assert isinstance(section, dict)
    return section


def _list(section: object) -> list[Any]:
    assert isinstance(section, list)
    return section


def _empty_legacy(ns: str, tool: str) -> None:
    saved = run_in(ns, [f"{tool}-legacy-save"]).stdout
    empty: list[str] = []
    for line in saved.splitlines():
        if line.startswith("*") or line == "COMMIT":
            empty.append(line)
        elif line.startswith(":") and line.split()[1] != "-":  # a built-in chain
            empty.append(f"{line.split()[0]} ACCEPT [0:0]")
    if empty:
        run_in(ns, [f"{tool}-legacy-restore", "-w"], input_text="\n".join(empty) + "\n")

