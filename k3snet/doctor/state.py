"""A node's networking state, parsed from a :class:`~k3snet.doctor.bundle.NodeCapture`.

:class:`NodeState` is everything :func:`k3snet.doctor.trace` reads: addresses,
routes and policy rules per family, the forwarding and ``rp_filter`` sysctls, the
netfilter base chains of every captured ruleset (iptables-nft, iptables-legacy,
every nftables table) and the cluster CIDR when a CNI file says it. Which
rulesets were evaluated from where is recorded in :attr:`NodeState.sources`.

The service CIDRs are not on the node (kube-proxy's rules name each ClusterIP,
not the range they come from): :meth:`NodeState.with_cluster` adds them, from a
spec's ``cluster`` or ``k3snet doctor --service-cidr``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Any

import attrs

from k3snet.backends.iptables.foreign import (
    PATH_CHAINS,
    foreign_blocks,
    forward_drops_untracked,
    path_blocks,
    untracked_accepts,
)
from k3snet.backends.iptables.mode import detect_mode
from k3snet.backends.iptables.native import XT_TABLES, native_tables
from k3snet.backends.iptables.save import TableDump
from k3snet.backends.iptables.save import parse_save as parse_table_dump
from k3snet.backends.iptables.table import has_tag, own_chains
from k3snet.backends.nftables.parse import ForeignReader
from k3snet.backends.routed import RoutedBy
from k3snet.doctor import ipset, iptables, nftables
from k3snet.doctor.bundle import (
    FILES,
    IPVS_BYTES,
    NFQUEUE_BYTES,
    NOT_INSTALLED,
    BundleError,
    NodeCapture,
)
from k3snet.doctor.ipset import IPSetMembers
from k3snet.doctor.packet import BaseChain
from k3snet.doctor.routing import (
    Address,
    Fib,
    RouteEntry,
    RuleEntry,
    nexthop_objects,
    parse_addresses,
    parse_link_mtus,
    parse_link_states,
    parse_locked_mtus,
    parse_routes,
    parse_rules,
)
from k3snet.errors import BackendError, K3snetError
from k3snet.model import ForwardBlock, NatBlock, NetObject
from k3snet.model.cidr import go_cidr_text
from k3snet.render.iptables.rules import HOOKS, hook_position, normalize, tokenize

__all__ = ["CalicoPool", "NodeState"]

IPNetwork = IPv4Network | IPv6Network
#: The bundle files holding netfilter rules.
RULESET_FILES = frozenset(name for name in FILES
                          if name.endswith(".save") or name == "nft-ruleset.json")
# What a file not captured at all is said to be missing for (read_dir, from_texts).
_ABSENT = frozenset({"not in the capture", "not captured"})
# Felix's pool set in cali-nat-outgoing, by name (iptables-save, nft's text or JSON).
_FELIX_POOL_SET = re.compile(r"cali[46]0(all-ipam-pools|network-ip-pools)\b")
_FLANNEL_NETWORK = re.compile(r"^FLANNEL_(IPV6_)?NETWORK=(?P<cidr>\S+)\s*$", re.MULTILINE)


# The ipsets iptables rules match (``-m set --match-set NAME src``), the only ones read.
_MATCH_SET = re.compile(r'--match-set\s+(?:"([^"]*)"|(\S+))')
# A table iptables-nft-save calls incompatible, or one whose save stopped at a rule it
# cannot decode (the capture then read the others apart: save.stopped_mark).
_INCOMPATIBLE = re.compile(
    r"^# (?:Table|k3snet: table) `(\w+)' (?:is incompatible|stopped the save)", re.MULTILINE)


def _read_from_save(text: str, tables: Mapping[str, Any], family: int
                    ) -> set[tuple[str, str, str | None]]:
    """The nftables chains an iptables-nft-save text evaluates (family, table, chain;
    ``None``: the whole table): the chains of each table it printed, and the tables it
    did not print at all. A table it calls incompatible (written with ``nft``) is
    left to nft's own view whole, and so is a base chain a printed table holds but the
    text leaves out."""
    fam = "ip" if family == 4 else "ip6"
    incompatible = set(_INCOMPATIBLE.findall(text))
    found: set[tuple[str, str, str | None]] = {
        (fam, name, chain) for name, table in tables.items() for chain in table.chains}
    found |= {(fam, name, None) for name in nftables.IPTABLES_NFT_TABLES
              if name not in tables and name not in incompatible}
    return found


def _bridges(masters: Mapping[str, tuple[str, str | None]]) -> frozenset[str]:
    """The bridges among the ports' ``masters``, whose bridge-family chains a routed packet
    on them crosses: the kernel runs them from a bridge's receive handler and transmit
    path alone, so a bond's, team's or VRF's ports never meet them. A master whose kind
    the capture does not say (made without ``ip -d``) is taken as a bridge."""
    return frozenset(master for master, kind in masters.values() if kind in (None, "bridge"))


def _masters(data: object) -> dict[str, tuple[str, str | None]]:
    """``ip -j -d addr`` -> each port's master and the master's kind as the port tells it
    (``info_slave_kind``: ``bridge``, ``bond``, ``vrf`` ...; None in a capture made
    without ``-d``)."""
    found: dict[str, tuple[str, str | None]] = {}
    for link in data if isinstance(data, list) else []:
        if not isinstance(link, Mapping):
            continue
        name, master = link.get("ifname"), link.get("master")
        if isinstance(name, str) and isinstance(master, str):
            info = link.get("linkinfo")
            kind = info.get("info_slave_kind") if isinstance(info, Mapping) else None
            found[name] = (master, kind if isinstance(kind, str) else None)
    return found


class _CapturedLists:
    """A :class:`~k3snet.backends.nftables.kernel.Lists` over a captured ``nft -j list
    ruleset`` (``list chains``, ``list chain FAMILY TABLE NAME``), for the readers of
    k3snet's backends."""

    def __init__(self, items: Sequence[object]) -> None:
        self.chains: dict[tuple[object, object, object], dict[str, Any]] = {}
        self.rules: dict[tuple[object, object, object], list[dict[str, Any]]] = {}
        for item in items:
            if not isinstance(item, dict):
                continue
            chain, rule = item.get("chain"), item.get("rule")
            if isinstance(chain, dict):
                self.chains[chain.get("family"), chain.get("table"), chain.get("name")] = item
            elif isinstance(rule, dict):
                self.rules.setdefault(
                    (rule.get("family"), rule.get("table"), rule.get("chain")), []).append(item)

    def list(self, kind: str, **ref: str) -> list[dict[str, Any]] | None:
        if kind == "chains":
            return list(self.chains.values())
        if kind != "chain":
            raise BackendError(f"not captured: list {kind} {' '.join(ref.values())}")
        key = (ref.get("family"), ref.get("table"), ref.get("name"))
        chain = self.chains.get(key)
        return None if chain is None else [chain, *self.rules.get(key, [])]


def _native_blocks(data: object) -> frozenset[NetObject]:
    """The blocks of the nftables tables iptables does not show in a captured ``nft -j
    list ruleset`` (``data``), read as k3snet's iptables backend reads them
    (:mod:`k3snet.backends.iptables.native`: iptables-nft's own tables and any holding
    k3snet's marker chain passed by). Best effort: nothing when there is none or the
    capture does not read."""
    items = data.get("nftables") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return frozenset()
    tables = frozenset((str(t.get("family")), str(t.get("name"))) for item in items
                       if isinstance(item, dict) and isinstance(t := item.get("table"), dict))
    if not native_tables(tables):
        return frozenset()  # the usual node: nothing to read
    xt = frozenset((f, n) for f, n in tables if f in ("ip", "ip6") and n in XT_TABLES)
    try:
        found = ForeignReader(_CapturedLists(items), xt, skip_marked=True).read()
    except (K3snetError, KeyError, TypeError, ValueError, AttributeError):
        return frozenset()
    return frozenset(o for o in found if isinstance(o, ForwardBlock | NatBlock))


def _auto_mode(saves: Mapping[str, Sequence[str]]) -> tuple[str, str] | None:
    """The flavour k3snet's iptables backend picks in mode ``auto`` from the captured
    ``-save`` texts (:func:`~k3snet.backends.iptables.mode.detect_mode`), and why; None:
    none captured."""
    if not (saves.get("nft") or saves.get("legacy")):
        return None
    flavour, why = detect_mode(saves, "")
    return flavour, f"mode auto: {why}"


@attrs.define(eq=False)
class _NativeBlocks:
    """:func:`_native_blocks` of a captured ruleset (``data``), read once when asked: a
    large table of another program's (kube-proxy's nftables mode) costs a read only to
    a diagnosis that judges a forward accept."""

    data: object
    found: frozenset[NetObject] | None = None

    def blocks(self) -> frozenset[NetObject]:
        if self.found is None:
            self.found = _native_blocks(self.data)
        return self.found


def _queue_readers(capture: NodeCapture) -> frozenset[int] | None:
    """The queue numbers ``nfqueue.txt`` lists (each line's first field; None: no such
    file). A line that is no number (a truncated last one) is passed over."""
    text = capture.text("nfqueue.txt")
    if "nfqueue.txt" not in capture.texts or len(text) > NFQUEUE_BYTES:
        return None  # not captured, or past what a capture reads: made by hand, not known
    found = set()
    for line in text.splitlines():
        first = line.split(None, 1)[0] if line.strip() else ""
        if first.isdigit() and int(first) < 1 << 16:
            found.add(int(first))
    return frozenset(found)


_IPVS_ADDRESS = r"(?:([0-9A-F]{8})|\[([0-9a-fA-F:.]+)\]):([0-9A-F]{4})"
_IPVS_SERVICE = re.compile(rf"(TCP|UDP|SCTP)\s+{_IPVS_ADDRESS}\s")
_IPVS_FWM = re.compile(r"FWM\s+([0-9A-F]{8})\s")
_IPVS_REAL = re.compile(rf"\s+->\s+{_IPVS_ADDRESS}\s+(\S+)")


_IPVS_ADDRESSES_KEPT = 4096
"""The parsed addresses of ``ipvs.txt`` one read keeps for the lines that repeat them."""


def _ipvs_address(hex_v4: str | None, v6: str | None) -> IPv4Address | IPv6Address | None:
    try:
        return IPv4Address(int(hex_v4, 16)) if hex_v4 else ip_address(v6 or "")
    except ValueError:
        return None


def _ipvs(capture: NodeCapture) -> dict[str, Any]:
    """``/proc/net/ip_vs`` (``ipvs.txt``) as :class:`NodeState`'s ``ipvs``, ``ipvs_fwmarks``
    and ``ipvs_cut``: each service line (``TCP  0A2B0064:0050 rr``, an IPv4 address in
    hex; ``TCP  [fd43::64]:0050 rr``; ``FWM  00000001 rr``) and its real servers' lines
    (``  -> C0A8020A:1538      Masq    1 ...``)."""
    if "ipvs.txt" not in capture.texts:
        return {}
    text = capture.text("ipvs.txt")[:IPVS_BYTES]  # a bundle's may be longer than a capture's
    services: dict[tuple[str, IPv4Address | IPv6Address, int], list[str]] = {}
    marks: set[int] = set()
    current: list[str] | None = None
    # Each address text once while it repeats (a NodePort is a virtual server on every
    # address of the node, an endpoint a real server of each of its Service's ports);
    # keyed by the text, and emptied when full, so a file of distinct addresses (a large
    # cluster's pods, or a hostile file) holds no more than a few thousand of them.
    addresses: dict[str, IPv4Address | IPv6Address | None] = {}

    def address_of(hex_v4: str | None, v6: str | None) -> IPv4Address | IPv6Address | None:
        key = hex_v4 or f"[{v6}]"
        if key in addresses:
            return addresses[key]
        if len(addresses) >= _IPVS_ADDRESSES_KEPT:
            addresses.clear()
        found = addresses[key] = _ipvs_address(hex_v4, v6)
        return found

    for line in text.splitlines():
        if (service := _IPVS_SERVICE.match(line)) is not None:
            address = address_of(service[2], service[3])
            current = None if address is None else services.setdefault(
                (service[1].lower(), address, int(service[4], 16)), [])
        elif (fwm := _IPVS_FWM.match(line)) is not None:
            marks.add(int(fwm[1], 16))
            current = None
        elif (real := _IPVS_REAL.match(line)) is not None and current is not None:
            if (address := address_of(real[1], real[2])) is None:
                continue
            port = int(real[3], 16)
            shown = f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"
            current.append(f"{shown} {real[4]}")
    return {"ipvs": {key: tuple(reals) for key, reals in services.items()},
            "ipvs_fwmarks": frozenset(marks), "ipvs_cut": len(text) >= IPVS_BYTES}


def _maybe_dormant(chain: BaseChain, dormant: bool | None, family: str) -> BaseChain:
    """An iptables-nft ``chain`` whose nftables table may be dormant (None) made uncertain."""
    table = chain.where.split()[-2]
    return nftables.maybe_dormant(chain, family, table) if dormant is None else chain


@attrs.frozen
class NodeState:
    """The parsed state of one node (see the module docstring)."""

    addresses: tuple[Address, ...]
    routes: Mapping[int, tuple[RouteEntry, ...]]
    rules: Mapping[int, tuple[RuleEntry, ...]]
    sysctls: Mapping[str, str]
    chains: tuple[BaseChain, ...]
    cluster_cidrs: tuple[IPNetwork, ...] = ()
    service_cidrs: tuple[IPNetwork, ...] = ()
    calico_pools: tuple[CalicoPool, ...] = ()
    sources: tuple[str, ...] = ()
    missing: Mapping[str, str] = attrs.field(factory=dict)
    links: Mapping[str, str] = attrs.field(factory=dict)
    """The interfaces that are ``down`` or have ``no-carrier`` (the others are absent)."""
    mtus: Mapping[str, int] = attrs.field(factory=dict)
    """Each interface's MTU (``ip -j addr``'s ``mtu``)."""
    masters: Mapping[str, tuple[str, str | None]] = attrs.field(factory=dict)
    """Each port's master and its kind (``bridge``, ``bond``, ``vrf`` ...; None: the
    capture does not say)."""
    felix_pool_sets: frozenset[str] = frozenset()
    """Which of Felix's pool sets the captured rules name (``all-ipam-pools``, Felix
    before v3.31.6 and v3.32.1; ``network-ip-pools``, later ones): whether Felix NATs
    to LoadBalancer-only pools. Empty: no Calico NAT rule in the capture."""
    kernel_ipsets: Mapping[str, IPSetMembers] = attrs.field(factory=dict)
    """The kernel's ipsets whose members ``ipset save`` gave (sets of addresses only:
    :mod:`k3snet.doctor.ipset`)."""
    ipvs: Mapping[tuple[str, IPv4Address | IPv6Address, int], tuple[str, ...]] | None = None
    """The IPVS virtual servers (``ipvs.txt``), by protocol (``tcp``, ``udp``, ``sctp``),
    address and port, each with its real servers (``ADDR:PORT METHOD``, as
    ``/proc/net/ip_vs`` says them); None: not captured (an older bundle)."""
    ipvs_fwmarks: frozenset[int] = frozenset()
    """The marks of the IPVS virtual servers that take packets by mark (``FWM``)."""
    ipvs_cut: bool = False
    """``ipvs.txt`` reached the capture's bound: a virtual server past it is not known."""
    queue_readers: frozenset[int] | None = None
    """The NFQUEUE queues a program reads (``nfqueue.txt``); None: not captured (an older
    bundle), and whether a queue rule drops is unknown."""
    netns: str | None = None
    """The network namespace the node is, as ``ip netns exec`` names it (the doctor's
    ``--netns``, or the one a doctor started by ``ip netns exec NS`` read): a command the
    advice gives (``ip link set DEV up``) is run there; None: the node's own namespace."""
    iptables_dumps: Mapping[tuple[str, int], Mapping[str, TableDump]] = attrs.field(
        factory=dict)
    """Each captured ``-save`` text's tables, by iptables flavour (``nft``, ``legacy``) and
    family, as k3snet's iptables backend reads them: the foreign rules that decide a fix's
    forward accept first (:meth:`forward_blocks`)."""
    native: _NativeBlocks = attrs.field(factory=lambda: _NativeBlocks(None), eq=False,
                                        repr=False)
    """The captured ``nft-ruleset.json``, read for :attr:`native_blocks` when asked."""
    iptables_mode: tuple[str, str] | None = None
    """The iptables flavour k3snet's iptables backend writes into on this node (mode
    ``auto``: :func:`~k3snet.backends.iptables.mode.detect_mode` of the captured ``-save``
    texts; ``k3snet doctor -f SPEC``: the spec's ``backends.iptables.mode`` when it names
    one), and why; None: no iptables ruleset captured."""
    mtu_locks_known: bool = True
    """Whether the IPv6 routes' ``mtu lock`` was read (``routes-v6.txt``, the one listing
    that says it); False: a bundle made before that file, whose routes' mtus all read
    unlocked, a lock or not (the findings that depend on it say so)."""
    legacy_nat: frozenset[int] = frozenset()
    """The families whose iptables-legacy ``nat`` table exists (``iptables-legacy-save``
    prints it, rules or not): its hooks keep the NAT core registered, from a time taken
    as before any nftables chain (see :attr:`BaseChain.run_key`)."""

    @classmethod
    def from_capture(cls, capture: NodeCapture) -> NodeState:
        """Parse every text of ``capture``; a malformed file raises :class:`BundleError`."""
        try:
            return cls._parse(capture)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, BundleError):
                raise
            raise BundleError(f"cannot read the capture: {type(exc).__name__}: {exc}") from exc

    @classmethod
    def _parse(cls, capture: NodeCapture) -> NodeState:
        chains: list[BaseChain] = []
        sources: list[str] = []
        has_nft_save = False
        read_from_save: set[tuple[str, str, str | None]] = set()
        legacy_nat: set[int] = set()
        iptables_dumps: dict[tuple[str, int], dict[str, TableDump]] = {}
        saves: dict[str, list[str]] = {"nft": [], "legacy": []}
        data = capture.json("nft-ruleset.json")
        ruleset = (nftables.parse_ruleset(data).with_text(capture.text("nft-ruleset.txt"))
                   if data is not None else None)
        for flavour in ("nft", "legacy"):
            for family in (4, 6):
                name = f"iptables-{flavour}-v{family}.save"
                text = capture.text(name)
                if not text.strip():
                    continue
                has_nft_save = has_nft_save or flavour == "nft"
                saves[flavour].append(text)
                tables = iptables.parse_save(text)
                if flavour == "legacy" and "nat" in tables:
                    legacy_nat.add(family)
                iptables_dumps[flavour, family] = parse_table_dump(text)
                fam = "ip" if family == 4 else "ip6"
                # The nat chains nft lists (registered, rules or not: the NAT core's order).
                empty_nat = [c for c in ("PREROUTING", "POSTROUTING") if ruleset is not None
                             and flavour == "nft" and ruleset.order(fam, "nat", c) is not None]
                found = iptables.base_chains(tables, f"iptables-{flavour}", family,
                                             empty_nat=empty_nat)
                if flavour == "nft":  # what nft's own view then leaves to this text
                    read_from_save |= _read_from_save(text, tables, family)
                if flavour == "nft" and ruleset is not None:
                    # iptables-nft's chains are nftables chains: their handles say when,
                    # and a dormant table's are hooked nowhere (iptables-save still
                    # prints them).
                    found = [_maybe_dormant(
                        attrs.evolve(c, order=ruleset.order(fam, *c.where.split()[-2:])),
                        ruleset.dormant(fam, c.where.split()[-2]), fam)
                        for c in found if not ruleset.dormant(fam, c.where.split()[-2])]
                chains += found
                sources.append(f"{name}: {len(found)} base chain(s)")
        if ruleset is not None:
            found = nftables.base_chains(ruleset, read_from_save=read_from_save,
                                         bridges=_bridges(_masters(capture.json("addr.json"))))
            chains += found
            dormant = [f"{f} {t}" for f, t in ruleset.listed if ruleset.dormant(f, t)]
            sources.append(f"nft-ruleset.json: {len(found)} base chain(s)"
                           + (" (iptables-nft tables read from iptables-save)"
                              if has_nft_save else "")
                           + (f"; dormant tables, hooked nowhere: {', '.join(dormant)}"
                              if dormant else ""))
        nexthops = nexthop_objects(capture.json("nexthops.json"))
        locked = parse_locked_mtus(capture.text("routes-v6.txt"))
        cidrs = []
        for match in _FLANNEL_NETWORK.finditer(capture.text("flannel-subnet.env")):
            cidrs.append(ip_network(match["cidr"], strict=False))
        rule_texts = [capture.text(f"iptables-{flavour}-v{family}.save")
                      for flavour in ("nft", "legacy") for family in (4, 6)]
        rule_texts += [capture.text("nft-ruleset.txt"), capture.text("nft-ruleset.json")]
        calico_pools, unreadable = _calico_pools(capture.json("calico-ippools.json"))
        return cls(
            felix_pool_sets=frozenset(m[1] for text in rule_texts
                                      for m in _FELIX_POOL_SET.finditer(text)),
            calico_pools=calico_pools,
            kernel_ipsets=ipset.parse_save(capture.text("ipset.save"), wanted={
                m[1] if m[1] is not None else m[2]
                for text in rule_texts[:4] for m in _MATCH_SET.finditer(text)}),
            legacy_nat=frozenset(legacy_nat),
            iptables_dumps=iptables_dumps,
            native=_NativeBlocks(data),
            iptables_mode=_auto_mode(saves),
            queue_readers=_queue_readers(capture),
            mtu_locks_known="routes-v6.txt" in capture.texts,
            **_ipvs(capture),
            addresses=tuple(parse_addresses(capture.json("addr.json"))),
            links=parse_link_states(capture.json("addr.json")),
            mtus=parse_link_mtus(capture.json("addr.json")),
            masters=_masters(capture.json("addr.json")),
            routes={f: tuple(parse_routes(capture.json(f"routes-v{f}.json"), f, nexthops,
                                          locked if f == 6 else frozenset()))
                    for f in (4, 6)},
            rules={f: tuple(parse_rules(capture.json(f"rules-v{f}.json"), f)) for f in (4, 6)},
            sysctls=capture.sysctls(),
            chains=tuple(chains),
            cluster_cidrs=tuple(cidrs),
            sources=tuple(sources),
            missing={**{n: "not in the capture" for n in FILES if n not in capture.texts},
                     **({"calico-ippools.json": unreadable} if unreadable else {}),
                     **capture.missing},
        )

    def pod_network(self, source: IPv4Address | IPv6Address,
                    ingress: str | None) -> IPNetwork | None:
        """The pods' network ``source`` lies in: a cluster CIDR the node knows (a CNI
        file's), else the connected network of ``ingress``, the interface the pod's
        packets come in by; ``None`` when neither holds it."""
        for cidr in self.cluster_cidrs:
            if cidr.version == source.version and source in cidr:
                return cidr
        for a in self.addresses:
            if a.device == ingress and a.address.version == source.version and (
                    source in a.network):
                return a.network
        return None

    def with_cluster(self, *, pod_cidrs: Iterable[str | IPNetwork] = (),
                     service_cidrs: Iterable[str | IPNetwork] = ()) -> NodeState:
        """This state with the cluster's pod and service CIDRs added (from a spec's
        ``cluster``, or given by hand); what a CNI file said is kept."""
        def merged(have: tuple[IPNetwork, ...],
                   more: Iterable[str | IPNetwork]) -> tuple[IPNetwork, ...]:
            out = list(have)
            for cidr in more:
                network = ip_network(cidr, strict=False)
                if network not in out:
                    out.append(network)
            return tuple(out)
        return attrs.evolve(self, cluster_cidrs=merged(self.cluster_cidrs, pod_cidrs),
                            service_cidrs=merged(self.service_cidrs, service_cidrs))

    def with_calico_pools(self, pools: Iterable[CalicoPool], source: str, *,
                          unreadable: Iterable[str] = ()) -> NodeState:
        """This state with Calico's IP pools replaced by ``pools`` (read live, e.g. by
        :func:`k3snet.doctor.cni.read_calico_pools`), in the order of their names (of
        pools of one CIDR Felix uses the first, :meth:`ipsets`); ``source`` says from
        where; ``unreadable``, a sentence for each pool read otherwise than the calico
        backend reads it, or left out (:attr:`LivePools.unreadable
        <k3snet.doctor.cni.LivePools.unreadable>`), said in the capture-incomplete finding."""
        pools = tuple(pools)
        missing = {k: v for k, v in self.missing.items() if k != "calico-ippools.json"}
        notes = "; ".join(unreadable)
        if notes:
            missing["calico-ippools.json"] = notes
        return attrs.evolve(self, calico_pools=pools, missing=missing,
                            sources=(*self.sources, f"{source}: {len(pools)} IP pool(s)"))

    @property
    def native_blocks(self) -> frozenset[NetObject]:
        """The drops of the nftables tables iptables does not show (an administrator's
        ``table inet filter``, firewalld's ``inet firewalld``; ``nft-ruleset.json``), as
        k3snet's iptables backend reads them
        (:func:`~k3snet.backends.iptables.native.read_native`): a forward accept of
        k3snet's one of them drops is a conflict its plan never applies
        (:meth:`forward_blocks`). Read at the first use (a forward drop to fix)."""
        return self.native.blocks()

    def forward_blocks(self, flavour: str, family: int) -> set[NetObject] | None:
        """The foreign rules that decide a forward accept of k3snet's in ``flavour``
        (``nft``, ``legacy``) first, exactly as k3snet's iptables backend reads them: those
        of the captured ``filter`` table met before k3snet's jump from ``FORWARD`` (or
        where a new one would go: after every rule but a final catch-all drop) that drop,
        reject or return forwarded packets
        (:func:`~k3snet.backends.iptables.foreign.foreign_blocks`), the drops of the
        ``raw``, ``mangle`` and ``security`` chains forwarded packets pass
        (:func:`~k3snet.backends.iptables.foreign.path_blocks`: a ``-t mangle -A
        POSTROUTING`` drop runs after filter's accept) and those of nftables tables
        iptables does not show (:attr:`native_blocks`). A forward accept one of them
        decides is a conflict the plan never applies. None: no ``filter`` table of
        ``flavour`` was captured."""
        tables = self.iptables_dumps.get((flavour, family), {})
        dump = tables.get("filter")
        if dump is None:
            return None
        hook = HOOKS["filter"]
        # k3snet's own chains, left unread as the backend leaves them: an administrator's
        # K3SNET-* chain (untagged, or a name k3snet does not write) is read as any other,
        # and a tagged jump to a main chain of theirs is no hook of k3snet's.
        ours = own_chains(hook, dump)
        rules = [normalize(tokenize(spec)) if family == 6 else tokenize(spec)
                 for spec in dump.chain(hook.builtin)]
        jumps = [i for i, line in enumerate(rules) if hook.main in ours
                 and line[-2:] in (("-j", hook.main), ("-g", hook.main)) and has_tag(line)]
        before = jumps[0] if jumps else hook_position(rules)
        routed = RoutedBy([(entry.destination, device) for entry in self.routes.get(family, ())
                           if entry.type == "unicast"
                           for device in ([entry.device] if not entry.nexthops
                                          else [d for _, d in entry.nexthops])])
        found = foreign_blocks(dump, family, before, ours=ours, routed=routed)
        drops = forward_drops_untracked(dump, ours=ours)
        accepted = untracked_accepts(dump, family, ours=ours) if drops else ()
        for table in PATH_CHAINS:
            found |= path_blocks(tables.get(table), family, forward_drops=drops,
                                 accepted=accepted, routed=routed)
        found |= {b for b in self.native_blocks
                  if isinstance(b, ForwardBlock) and b.family == family}
        return {b for b in found if isinstance(b, ForwardBlock)}

    def unread_rulesets(self) -> dict[str, str]:
        """The rulesets whose capture failed (a command that ran and exited non-zero, e.g.
        without root: "Permission denied"), with why: the rules they hold are unknown,
        not absent. A ruleset left out of a bundle, or whose tool is not installed, is
        not one of them."""
        return {name: why for name, why in self.missing.items()
                if name in RULESET_FILES and why not in _ABSENT
                and not why.endswith(f": {NOT_INSTALLED}")
                and "[Errno 2]" not in why}  # FileNotFoundError (older bundles): the same

    @property
    def devices(self) -> frozenset[str]:
        """The device names the capture holds: its links', addresses' and routes'."""
        return frozenset({*self.links, *self.mtus, *(a.device for a in self.addresses),
                          *(r.device for entries in self.routes.values() for r in entries
                            if r.device)})

    def sysctl(self, name: str, default: int = 0) -> int:
        """An integer sysctl (``default`` when not captured or not a number)."""
        value = self.sysctls.get(name)
        try:
            return int(value) if value is not None else default
        except ValueError:
            return default

    def device_mtu(self, device: str, family: int) -> int | None:
        """The largest packet of ``family`` the kernel forwards out of ``device``
        unannounced: its MTU (``ip -j addr``), for IPv6 its own IPv6 MTU where that is
        smaller (``net.ipv6.conf.DEV.mtu``, which a router advertisement's MTU lowers,
        and against which the kernel checks a forwarded IPv6 packet). None: the
        capture does not list the device."""
        mtu = self.mtus.get(device)
        if family == 6 and mtu is not None:
            ipv6 = self.sysctl(f"net.ipv6.conf.{device.replace('.', '/')}.mtu")
            if 0 < ipv6 < mtu:
                return ipv6
        return mtu

    def linkdown_ignored(self, family: int) -> frozenset[str]:
        """The devices whose ``linkdown`` routes a lookup of ``family`` passes over
        (``ignore_routes_with_linkdown``): for IPv4 where the device's or ``all``'s
        is set (the kernel reads both), for IPv6 where the device's is (writing
        ``all`` sets every device's there). Not captured (an older bundle): none,
        the kernel's default."""
        prefix = f"net.ipv{family}.conf."
        suffix = ".ignore_routes_with_linkdown"
        every = family == 4 and self.sysctl(f"{prefix}all{suffix}") == 1
        devices = {d for r in self.routes.get(family, ()) for d in r.linkdown if d is not None}
        devices.update(name[len(prefix):-len(suffix)].replace("/", ".")
                       for name in self.sysctls
                       if name.startswith(prefix) and name.endswith(suffix))
        devices -= {"all", "default"}
        return frozenset(d for d in devices if every or self.sysctl(
            f"{prefix}{d.replace('.', '/')}{suffix}") == 1)

    def fib(self, family: int) -> Fib:
        """The node's routing of ``family`` as netfilter's route lookups see it."""
        return Fib(self.routes.get(family, ()), self.rules.get(family, ()),
                   frozenset(a.address for a in self.addresses if a.address.version == family))

    def local_addresses(self) -> frozenset[object]:
        """Every address of the node."""
        return frozenset(a.address for a in self.addresses)

    def ipsets(self) -> dict[str, IPSetMembers]:
        """The ipsets whose members the doctor knows: the kernel's (``ipset save``), and
        Calico's pool sets from its IP pools where the kernel's are not captured.

        ``all-ipam-pools`` holds every pool (Felix before v3.31.6 and v3.32.1);
        ``network-ip-pools``, its successor, every pool but LoadBalancer-only ones
        (projectcalico/calico#12769): the set's name in Felix's rule says which
        Felix wrote it. Of pools of one CIDR, Felix uses only the first (the pools are
        in name order: Calico's syncer passes on the one whose name sorts first,
        libcalico-go's ``conflictResolvingCache``)."""
        sets: dict[str, IPSetMembers] = {}
        felix: dict[IPNetwork, CalicoPool] = {}
        for pool in self.calico_pools:
            felix.setdefault(pool.cidr, pool)
        for family, prefix in ((4, "cali40"), (6, "cali60")) if self.calico_pools else ():
            pools = [p for p in felix.values() if p.cidr.version == family]
            sets[f"{prefix}all-ipam-pools"] = IPSetMembers.of(p.cidr for p in pools)
            sets[f"{prefix}network-ip-pools"] = IPSetMembers.of(
                p.cidr for p in pools if not p.load_balancer_only)
            sets[f"{prefix}masq-ipam-pools"] = IPSetMembers.of(
                p.cidr for p in pools if p.nat_outgoing)
        sets.update(self.kernel_ipsets)  # what the kernel holds is what rules match
        return sets


@attrs.frozen
class CalicoPool:
    """One Calico IP pool: its CIDR, whether Calico masquerades traffic leaving it, and
    whether it is for LoadBalancer addresses only (``allowedUses: [LoadBalancer]``)."""

    cidr: IPNetwork
    nat_outgoing: bool = False
    disabled: bool = False
    load_balancer_only: bool = False


def _pool_name(item: object) -> str:
    metadata = item.get("metadata") if isinstance(item, Mapping) else None
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    return name if isinstance(name, str) else ""


def _calico_pools(data: object) -> tuple[tuple[CalicoPool, ...], str | None]:
    """``kubectl get ippools -o json`` (a list or ``{"items": [...]}``) -> the pools, and
    why they cannot be read, or the sentences naming each pool read otherwise than the
    calico backend reads it (:func:`calico_pool_items`), as the live doctor names them;
    None when every pool was read."""
    items = data.get("items", []) if isinstance(data, Mapping) else data
    pools, why, notes = calico_pool_items(items if isinstance(items, list) else [])
    return pools, why if why is not None else "; ".join(notes) or None


def calico_pool_items(items: Iterable[object]
                      ) -> tuple[tuple[CalicoPool, ...], str | None, tuple[str, ...]]:
    """IPPool objects -> the pools as Felix reads them into its sets, or none and why
    they cannot be read; and a sentence naming each pool read otherwise than the calico
    backend reads it: one Felix drops, or one the backend cannot model for another
    reason (a ``blockSize`` out of range, a field of the wrong type), whose CIDR and
    ``natOutgoing`` Felix still puts in its sets, judged so.

    An IPv4-mapped IPv6 CIDR (``::ffff:10.42.0.0/112``, which the CRDs take) is no IPv6
    pool to Felix: Calico v3.32 and before key it by the IPv4 CIDR Go's ``IPNet.String()``
    gives (``10.42.0.0/16``, a twin of a pool there), its development branch drops it.
    As the calico backend, which calls such a pool unreadable, the doctor does not guess
    which: the pools' sets are unknown (the kernel's ``ipset save`` still tells them).
    A CIDR Go's ``net.ParseCIDR`` refuses (``10.42.0.0/255.255.0.0``, a bare address,
    blanks around it), or none, is no pool to Felix: its syncer drops the pool
    (libcalico-go ``IPPoolV3ToV1``), and so does the doctor, naming it."""
    pools = []
    dropped: list[str] = []
    # In name order, as Felix picks among pools of one CIDR (NodeState.ipsets).
    for item in sorted(items, key=_pool_name):
        spec = item.get("spec", {}) if isinstance(item, Mapping) else {}
        spec = spec if isinstance(spec, Mapping) else {}
        name = _pool_name(item) or "(no name)"
        if "cidr" not in spec:
            dropped.append(f"IPPool {name}: no spec.cidr: Felix drops it too, and so does "
                           "the doctor")
            continue
        try:
            if not (isinstance(spec["cidr"], str) and go_cidr_text(spec["cidr"])):
                raise ValueError(spec["cidr"])
            cidr = ip_network(spec["cidr"], strict=False)
        except ValueError:
            # Go's net.ParseCIDR refuses it: Felix's syncer drops the pool
            dropped.append(f"IPPool {name}: spec.cidr {json.dumps(spec['cidr'])[:100]} is no "
                           "CIDR Go's net.ParseCIDR parses: Felix drops it too, and so does "
                           "the doctor")
            continue
        mapped = cidr.network_address.ipv4_mapped if cidr.version == 6 else None
        if mapped is not None:
            ipv4 = ip_network((mapped, max(cidr.prefixlen - 96, 0)), strict=False)
            return (), (f"IPPool {name}: spec.cidr "
                        f"{spec['cidr']} is an IPv4-mapped IPv6 CIDR, which Felix takes "
                        f"for the IPv4 CIDR {ipv4} (Calico v3.32 and before; Calico's "
                        "development branch drops the pool): the pools' sets are not "
                        "known"), ()
        pools.append(CalicoPool(cidr, bool(spec.get("natOutgoing")),
                                bool(spec.get("disabled")),
                                spec.get("allowedUses") == ["LoadBalancer"]))
        dropped += _unmodelled(item)
    return tuple(pools), None, tuple(dropped)


def _unmodelled(item: object) -> list[str]:
    """A sentence naming ``item`` (a pool Felix reads) where the calico backend cannot
    model it, else none."""
    # Imported when used: the bundle reader runs where the backends are not loaded.
    from k3snet.backends.calico import read_pool  # noqa: PLC0415
    from k3snet.errors import ModelError  # noqa: PLC0415

    try:
        read_pool(item if isinstance(item, Mapping) else {})
    except ModelError as exc:
        return [f"{exc}: the calico backend cannot read it, but Felix still puts its CIDR "
                "in its sets: judged with its CIDR and natOutgoing as Felix reads them"]
    return []
