"""Reading other programs' rules at scale: ``observe()`` beside the raw save, per shape.

Run as root (fresh network namespaces, deleted at the end, also on error)::

    .venv/bin/python benchmarks/bench_foreign_shapes.py [--sizes 1000 2000 5000] \
        [--shapes blocklist returns ...] [--modes legacy nft] [--runs 3]

For each shape and size N, a namespace gets N foreign rules of a shape real hosts have
(loaded with ``iptables-restore``, legacy or nft flavour) and nothing of k3snet's; what
is timed, medians of ``--runs``, is the raw ``iptables-save`` of the namespace and a
fresh :class:`~k3snet.backends.iptables.IptablesBackend`'s ``observe()`` (CPU time of
this process and its children), side by side: the ratio should not grow with N.
Shapes: ``blocklist`` (N ``-s X -j DROP`` before N accepts), ``returns`` (N ``-d X -j
RETURN`` in FORWARD, policy DROP, and in a chain it jumps to, before N accepts),
``snat-exceptions`` (N ``-d X -j RETURN`` before N SNAT rules), ``kube-proxy``
(iptables mode, N services), ``docker`` (N bridge networks), ``calico`` (N workloads)
``firewalld`` (N zones by source), ``vm-taps`` (N virtual machines' tap devices: a
drop of spoofed sources and an accept each way) and ``copies`` (N copies of a pair of
accepts). The ``nft-`` shapes are another table's chains
loaded with ``nft -f`` and read by :class:`~k3snet.backends.nftables.NftablesBackend`
(beside ``nft list ruleset``; ``--modes`` does not apply): ``nft-blocklist`` (N ``ip saddr
X drop`` before N accepts), ``nft-returns`` (N ``ip daddr X return``, policy drop, before N
accepts), ``nft-snat-exceptions`` (N ``ip daddr X return`` before N ``snat`` rules in a
postrouting nat chain) and ``nft-sets`` (named sets of N elements, before N accepts and N
``snat`` rules). Past 2 000, those of two kinds of N rules pass the 4 096 rules the
reader walks: the rest is not read. Figures: docs/performance.md, "Other programs' rules
at scale".
"""

# ruff: noqa: E501 - the shapes are rules as iptables-save prints them, one a line
from __future__ import annotations

import argparse
import ipaddress
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

from k3snet.backends.iptables import IptablesBackend
from k3snet.backends.nftables import NftablesBackend
from k3snet.lab.netns import exit_on_signals, run_in, temporary_netns


def net(i: int, base: str = "10.100.0.0", plen: int = 32) -> str:
    return str(ipaddress.ip_address(base) + i) + f"/{plen}"

def addr(i: int, base: str = "172.20.0.0") -> str:
    return str(ipaddress.ip_address(base) + i)

def blocklist(n: int) -> str:
    f = ["*filter", ":FORWARD ACCEPT [0:0]"]
    f += [f"-A FORWARD -s {net(i)} -j DROP" for i in range(n)]
    f += [f"-A FORWARD -s 10.42.0.0/16 -d {net(i,'192.168.0.0')} -j ACCEPT" for i in range(n)]
    f += ["-A FORWARD -d 10.42.0.0/16 -j ACCEPT", "COMMIT"]
    return "\n".join(f) + "\n"

def returns(n: int) -> str:
    f = ["*filter", ":FORWARD DROP [0:0]", ":ADMIN - [0:0]", "-A FORWARD -j ADMIN"]
    f += [f"-A FORWARD -d {net(i)} -j RETURN" for i in range(n)]
    f += [f"-A ADMIN -d {net(i,'10.200.0.0')} -j RETURN" for i in range(n)]
    f += [f"-A ADMIN -s 10.42.0.0/16 -d {net(i,'192.168.0.0')} -j ACCEPT" for i in range(n)]
    f += [f"-A FORWARD -s 10.42.0.0/16 -d {net(i,'192.169.0.0')} -j ACCEPT" for i in range(n)]
    f += ["-A FORWARD -d 10.42.0.0/16 -j ACCEPT", "COMMIT"]
    return "\n".join(f) + "\n"

def snat_exceptions(n: int) -> str:
    f = ["*nat", ":POSTROUTING ACCEPT [0:0]"]
    f += [f"-A POSTROUTING -s 10.42.0.0/16 -d {net(i)} -j RETURN" for i in range(n)]
    f += [f"-A POSTROUTING -s 10.42.0.0/16 -d {net(i,'192.168.0.0',30)} -o eth0 -j SNAT --to-source {addr(i%250)}" for i in range(0, 4*n, 4)]
    f += ["-A POSTROUTING -s 10.42.0.0/16 -j MASQUERADE", "COMMIT"]
    return "\n".join(f) + "\n"

def kube_proxy(n: int) -> str:
    nat = ["*nat", ":PREROUTING ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]", ":POSTROUTING ACCEPT [0:0]",
           ":KUBE-SERVICES - [0:0]", ":KUBE-POSTROUTING - [0:0]", ":KUBE-MARK-MASQ - [0:0]",
           "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
           "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
           "-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING",
           "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
           "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
           "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0",
           "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully"]
    for i in range(n):
        svc, sep = f"KUBE-SVC-{i:016X}", f"KUBE-SEP-{i:016X}"
        nat += [f":{svc} - [0:0]", f":{sep} - [0:0]",
                f"-A KUBE-SERVICES -d {addr(i,'10.43.0.0')}/32 -p tcp -m comment --comment \"ns/s{i}:http cluster IP\" -m tcp --dport 80 -j {svc}",
                f"-A {svc} ! -s 10.42.0.0/16 -d {addr(i,'10.43.0.0')}/32 -p tcp -m tcp --dport 80 -j KUBE-MARK-MASQ",
                f"-A {svc} -j {sep}",
                f"-A {sep} -s {addr(i,'10.42.1.0')}/32 -j KUBE-MARK-MASQ",
                f"-A {sep} -p tcp -m tcp -j DNAT --to-destination {addr(i,'10.42.1.0')}:8080"]
    nat.append("COMMIT")
    flt = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
           ":KUBE-FORWARD - [0:0]", ":KUBE-SERVICES - [0:0]", ":KUBE-EXTERNAL-SERVICES - [0:0]",
           "-A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
           "-A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES",
           "-A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD",
           "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
           "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark 0x4000/0x4000 -j ACCEPT",
           "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"]
    flt += [f"-A KUBE-SERVICES -d {addr(i,'10.43.0.0')}/32 -p tcp -m comment --comment \"ns/e{i}:http has no endpoints\" -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable" for i in range(n)]
    flt.append("COMMIT")
    return "\n".join(nat + flt) + "\n"

def docker(n: int) -> str:
    f = ["*filter", ":FORWARD DROP [0:0]", ":DOCKER - [0:0]", ":DOCKER-ISOLATION-STAGE-1 - [0:0]",
         ":DOCKER-ISOLATION-STAGE-2 - [0:0]", ":DOCKER-USER - [0:0]",
         "-A FORWARD -j DOCKER-USER", "-A FORWARD -j DOCKER-ISOLATION-STAGE-1"]
    for i in range(n):
        br = f"br-{i:012x}"
        f += [f"-A FORWARD -o {br} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
              f"-A FORWARD -o {br} -j DOCKER", f"-A FORWARD -i {br} ! -o {br} -j ACCEPT",
              f"-A FORWARD -i {br} -o {br} -j ACCEPT",
              f"-A DOCKER-ISOLATION-STAGE-1 -i {br} ! -o {br} -j DOCKER-ISOLATION-STAGE-2",
              f"-A DOCKER-ISOLATION-STAGE-2 -o {br} -j DROP",
              f"-A DOCKER -d {addr(i,'172.18.0.2')}/32 ! -i {br} -o {br} -p tcp -m tcp --dport 80 -j ACCEPT"]
    f += ["-A DOCKER-ISOLATION-STAGE-1 -j RETURN", "-A DOCKER-ISOLATION-STAGE-2 -j RETURN",
          "-A DOCKER-USER -j RETURN", "COMMIT"]
    nat = ["*nat", ":POSTROUTING ACCEPT [0:0]", ":DOCKER - [0:0]"]
    nat += [f"-A POSTROUTING -s {addr(i*4,'172.18.0.0')}/30 ! -o br-{i:012x} -j MASQUERADE" for i in range(n)]
    nat += ["COMMIT"]
    return "\n".join(f + nat) + "\n"

def calico(n: int) -> str:
    f = ["*filter", ":FORWARD ACCEPT [0:0]", ":cali-FORWARD - [0:0]", ":cali-from-wl-dispatch - [0:0]",
         ":cali-to-wl-dispatch - [0:0]", ":cali-from-hep-forward - [0:0]",
         "-A FORWARD -m comment --comment \"cali:wUHhoiAYhphO9Mso\" -j cali-FORWARD",
         "-A cali-FORWARD -m comment --comment \"cali:vjrMJCRpqwy5oRoX\" -j MARK --set-xmark 0x0/0xe0000",
         "-A cali-FORWARD -m comment --comment \"cali:A_sPAO0mcxbT9mOV\" -m mark --mark 0x0/0x10000 -j cali-from-hep-forward",
         "-A cali-FORWARD -i cali+ -m comment --comment \"cali:8ZoYfO5HKXWbB3pk\" -j cali-from-wl-dispatch",
         "-A cali-FORWARD -o cali+ -m comment --comment \"cali:jdEuaPBe14V2hutn\" -j cali-to-wl-dispatch",
         "-A cali-FORWARD -m comment --comment \"cali:MH9kMp5aNICL-Olv\" -m comment --comment \"Policy explicitly accepted packet.\" -m mark --mark 0x10000/0x10000 -j ACCEPT"]
    for i in range(n):
        w = f"cali{i:011x}"
        f += [f":cali-fw-{w} - [0:0]", f":cali-tw-{w} - [0:0]",
              f"-A cali-from-wl-dispatch -i {w} -m comment --comment \"cali:x{i}\" -g cali-fw-{w}",
              f"-A cali-to-wl-dispatch -o {w} -m comment --comment \"cali:y{i}\" -g cali-tw-{w}",
              f"-A cali-fw-{w} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
              f"-A cali-fw-{w} -m conntrack --ctstate INVALID -j DROP",
              f"-A cali-fw-{w} -j MARK --set-xmark 0x0/0x10000",
              f"-A cali-fw-{w} -m mark --mark 0x0/0x10000 -j DROP",
              f"-A cali-tw-{w} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
              f"-A cali-tw-{w} -m conntrack --ctstate INVALID -j DROP",
              f"-A cali-tw-{w} -j MARK --set-xmark 0x0/0x10000",
              f"-A cali-tw-{w} -m mark --mark 0x0/0x10000 -j DROP"]
    f += ["-A cali-from-wl-dispatch -j DROP", "-A cali-to-wl-dispatch -j DROP", "COMMIT"]
    return "\n".join(f) + "\n"

def firewalld(n: int) -> str:
    f = ["*filter", ":FORWARD ACCEPT [0:0]", ":FORWARD_IN_ZONES - [0:0]", ":FORWARD_OUT_ZONES - [0:0]",
         "-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
         "-A FORWARD -i lo -j ACCEPT", "-A FORWARD -j FORWARD_IN_ZONES", "-A FORWARD -j FORWARD_OUT_ZONES",
         "-A FORWARD -m conntrack --ctstate INVALID -j DROP"]
    for i in range(n):
        z = f"FWDI_z{i}"
        f += [f":{z} - [0:0]", f"-A FORWARD_IN_ZONES -s {net(i,'10.150.0.0')} -g {z}",
              f"-A {z} -d {net(i,'10.160.0.0')} -j ACCEPT"]
    f += ["-A FORWARD -j REJECT --reject-with icmp-host-prohibited", "COMMIT"]
    return "\n".join(f) + "\n"

def vm_taps(n: int) -> str:
    # a virtual machine per tap device: its spoofed traffic dropped, its own accepted, both
    # ways (the drops name no positive address: told apart from the accepts by device alone)
    f = ["*filter", ":FORWARD DROP [0:0]"]
    f += [f"-A FORWARD -i tap{i} ! -s {net(i)} -j DROP" for i in range(n)]
    f += [line for i in range(n) for line in (f"-A FORWARD -i tap{i} -s {net(i)} -o eth0 -j ACCEPT",
                                              f"-A FORWARD -i eth0 -o tap{i} -d {net(i)} -j ACCEPT")]
    f += ["COMMIT"]
    return "\n".join(f) + "\n"

def copies(n: int) -> str:
    # a script that appended its pair of accepts at every boot: N copies of each
    f = ["*filter", ":FORWARD DROP [0:0]"]
    f += [line for i in range(n) for line in ("-A FORWARD -s 10.42.0.0/16 -d 192.168.0.0/16 -j ACCEPT",
                                              f'-A FORWARD -d 10.42.0.0/16 -m comment --comment "boot {i}" -j ACCEPT')]
    f += ["COMMIT"]
    return "\n".join(f) + "\n"

def _nft_chain(kind: str, hook: str, policy: str, rules: list[str], sets: str = "") -> str:
    return (f"table ip admin {{\n{sets}  chain c {{\n    type {kind} hook {hook} priority 0; "
            f"policy {policy};\n" + "".join(f"    {r}\n" for r in rules) + "  }\n}\n")

def nft_blocklist(n: int) -> str:
    r = [f"ip saddr {net(i)} drop" for i in range(n)]
    r += [f"ip saddr 10.42.0.0/16 ip daddr {net(i,'192.168.0.0')} accept" for i in range(n)]
    return _nft_chain("filter", "forward", "accept", [*r, "ip daddr 10.42.0.0/16 accept"])

def nft_returns(n: int) -> str:
    r = [f"ip daddr {net(i)} return" for i in range(n)]
    r += [f"ip saddr 10.42.0.0/16 ip daddr {net(i,'192.168.0.0')} accept" for i in range(n)]
    return _nft_chain("filter", "forward", "drop", [*r, "ip daddr 10.42.0.0/16 accept"])

def nft_snat_exceptions(n: int) -> str:
    r = [f"ip saddr 10.42.0.0/16 ip daddr {net(i)} return" for i in range(n)]
    r += [f"ip saddr 10.42.0.0/16 ip daddr {net(i,'192.168.0.0',30)} oifname \"eth0\" snat to {addr(i%250)}"
          for i in range(0, 4*n, 4)]
    return _nft_chain("nat", "postrouting", "accept", [*r, "ip saddr 10.42.0.0/16 masquerade"])

def nft_sets(n: int) -> str:
    # named sets of N elements (one of them read element by element up to 256, a
    # reference past that), before N accepts and N SNAT rules
    def named(name: str, base: str) -> str:
        return (f"  set {name} {{\n    type ipv4_addr; flags interval;\n    elements = {{ "
                + ", ".join(net(i, base) for i in range(n)) + " }\n  }\n")
    r = ["ip saddr @blocked drop"]
    r += [f"ip saddr 10.42.0.0/16 ip daddr {net(i,'192.168.0.0')} accept" for i in range(n)]
    r += ["ip daddr 10.42.0.0/16 accept"]
    f = _nft_chain("filter", "forward", "accept", r, named("blocked", "10.100.0.0"))
    r = ["ip saddr 10.42.0.0/16 ip daddr @kept return"]
    r += [f"ip saddr 10.42.0.0/16 ip daddr {net(i,'192.168.0.0',30)} snat to {addr(i%250)}"
          for i in range(0, 4*n, 4)]
    return f + _nft_chain("nat", "postrouting", "accept", r, named("kept", "10.200.0.0")).replace(
        "table ip admin", "table ip admin_nat")

NFT_SHAPES = {"nft-blocklist": nft_blocklist, "nft-returns": nft_returns,
              "nft-snat-exceptions": nft_snat_exceptions, "nft-sets": nft_sets}

SHAPES = {"blocklist": blocklist, "returns": returns, "snat-exceptions": snat_exceptions,
          "kube-proxy": kube_proxy, "docker": docker, "calico": calico, "firewalld": firewalld,
          "vm-taps": vm_taps, "copies": copies, **NFT_SHAPES}


def _cpu() -> float:
    own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                         resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _timed(work: Callable[[], object]) -> float:
    start = _cpu()
    work()
    return _cpu() - start


def measure(shape: str, size: int, mode: str, runs: int) -> dict[str, float]:
    text = SHAPES[shape](size)
    if shape in NFT_SHAPES:
        return measure_nft(text, runs)
    tool = "iptables-legacy" if mode == "legacy" else "iptables-nft"
    raw: list[float] = []
    read: list[float] = []
    with temporary_netns("foreign") as ns:
        run_in(ns, [f"{tool}-restore"], input_text=text, timeout=600)
        for _ in range(runs):
            raw.append(_timed(lambda: run_in(ns, [f"{tool}-save"], timeout=600)))
            with tempfile.TemporaryDirectory() as state, IptablesBackend(
                    ns, mode=mode, state_dir=state, timeout=600) as backend:  # type: ignore[arg-type]
                read.append(_timed(backend.observe))
    result = {"raw": statistics.median(raw), "observe": statistics.median(read)}
    result["ratio"] = result["observe"] / result["raw"]
    return result


def measure_nft(text: str, runs: int) -> dict[str, float]:
    """An ``nft -f`` shape: ``nft list ruleset`` beside :class:`NftablesBackend`'s
    ``observe()`` (its foreign read unbounded in time, so that all of it is read)."""
    raw: list[float] = []
    read: list[float] = []
    with temporary_netns("foreign") as ns:
        run_in(ns, ["nft", "-f", "-"], input_text=text, timeout=600)
        for _ in range(runs):
            raw.append(_timed(lambda: run_in(ns, ["nft", "list", "ruleset"], timeout=600)))
            with NftablesBackend(ns, foreign_timeout=600, read_timeout=600) as backend:
                read.append(_timed(backend.observe))
    result = {"raw": statistics.median(raw), "observe": statistics.median(read)}
    result["ratio"] = result["observe"] / result["raw"]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 5000])
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=list(SHAPES))
    parser.add_argument("--modes", nargs="+", choices=("legacy", "nft"), default=["legacy"])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    exit_on_signals()
    print(f"{'shape':16} {'mode':6} {'N':>6} {'save s':>8} {'observe s':>10} {'ratio':>7}")
    for shape in args.shapes:
        for mode in (["nft"] if shape in NFT_SHAPES else args.modes):
            for size in args.sizes:
                got = measure(shape, size, mode, args.runs)
                print(f"{shape:16} {mode:6} {size:6} {got['raw']:8.3f} {got['observe']:10.3f} "
                      f"{got['ratio']:7.1f}", flush=True)
    return 0


if __name__ == "__main__":
    start = time.perf_counter()
    status = main()
    print(f"({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    sys.exit(status)
