"""A fuzz over every field of the spec on a lab node full of foreign state (issue 8, item 1).

Each example puts a hostile value (``strategies.hostile_values``) into one field of
a working spec (the fields are walked from the field table: ``spec_fields.py``),
then loads, compiles and converges it in a lab namespace through netlink (routes,
sysctls), nftables (NAT) and iptables (forward), as ``k3snet apply`` does. The
outcome must be a clean refusal (:class:`SpecError`, :class:`PlanError`, or an
:class:`ApplyError` that left nothing changed) or a successful apply; and in
every case the foreign state (other nftables tables, other iptables chains and
rules, other routes, other sysctls) is byte-identical afterwards, as the kernel
lists it.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from k3snet.backends.group import BackendGroup, Member
from k3snet.backends.iptables import IptablesBackend
from k3snet.backends.netlink import NetlinkBackend
from k3snet.backends.nftables import NftablesBackend
from k3snet.converge import converge
from k3snet.errors import ApplyError, PlanError, SpecError
from k3snet.lab.netns import run_in, temporary_netns
from k3snet.model import Sysctl
from k3snet.spec.compiler import compile as compile_spec
from k3snet.spec.load import spec_from_document
from k3snet.testing import strategies
from k3snet.testing.k3s import FLANNEL_NAT_V4
from tests.examples import examples
from tests.safety.spec_fields import Target, base_document, hostile_document, targets
from tests.safety.test_safety_kernel import FOREIGN_IP6TABLES, FOREIGN_IPTABLES

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]

FOREIGN_NFT = """\
table inet admin {
\tchain post {
\t\ttype nat hook postrouting priority 50; policy accept;
\t\tip saddr 10.77.0.0/16 oifname "eth0" masquerade
\t}
\tchain filt {
\t\ttype filter hook forward priority -5; policy accept;
\t\tip saddr 10.99.0.0/16 ip daddr 192.168.7.0/24 counter drop
\t}
}
table ip6 edge {
\tset blocked {
\t\ttype ipv6_addr
\t\telements = { fd01:1::99 }
\t}
\tchain out {
\t\ttype filter hook output priority 0; policy accept;
\t\tip6 daddr @blocked drop
\t}
}
"""
FOREIGN_ROUTES = (
    ["198.51.100.0/24", "via", "192.168.1.1", "proto", "static"],
    ["192.168.7.128/25", "via", "192.168.1.254", "table", "100", "proto", "bird"],
    ["fd77::/48", "via", "fd01:1::1", "proto", "boot", "metric", "5"],
)
FOREIGN_SYSCTLS = {"net.ipv4.conf.eth0.rp_filter": "1", "net.ipv4.conf.default.rp_filter": "2",
                   "net.ipv6.conf.all.accept_ra": "0", "net.ipv4.conf.all.rp_filter": "1"}
OUTCOMES: Counter[str] = Counter()

FUZZ = settings(max_examples=examples(100), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


# The node's iptables without flannel's masquerades: they would sit in iptables-nft's
# nat table at the priority of k3snet's NAT chain (srcnat), where which runs first is
# not to be relied on, so the spec's SNAT would be a conflict and nothing of it would
# reach the kernel (tests/nftables/test_nat_blocks.py). Docker's masquerade of its own
# bridge stands in for them.
FUZZ_IPTABLES = "\n".join(
    line for line in FOREIGN_IPTABLES.splitlines() if line not in FLANNEL_NAT_V4[1:]
).replace("COMMIT", "-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE\nCOMMIT", 1) + "\n"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    with temporary_netns("fuzz") as ns:
        run_in(ns, ["ip", "link", "set", "lo", "up"])
        for index, device in enumerate(("eth0", "eth1", "cni0")):
            run_in(ns, ["ip", "link", "add", device, "type", "veth", "peer", "name", f"p{index}"])
            run_in(ns, ["ip", "link", "set", device, "up"])
            run_in(ns, ["ip", "link", "set", f"p{index}", "up"])
        run_in(ns, ["ip", "address", "add", "192.168.1.10/24", "dev", "eth0"])
        run_in(ns, ["ip", "address", "add", "fd01:1::10/64", "dev", "eth0", "nodad"])
        run_in(ns, ["iptables-restore", "--noflush"], input_text=FUZZ_IPTABLES)
        run_in(ns, ["ip6tables-restore", "--noflush"], input_text=FOREIGN_IP6TABLES)
        run_in(ns, ["nft", "-f", "-"], input_text=FOREIGN_NFT)
        for route in FOREIGN_ROUTES:
            run_in(ns, ["ip", "route", "add", *route])
        for name, value in FOREIGN_SYSCTLS.items():
            run_in(ns, ["sysctl", "-qw", f"{name}={value}"])
        yield ns, tmp_path_factory.mktemp("fuzz-state")


_COUNTERS = re.compile(r"\[\d+:\d+\]")
_OURS = re.compile(r"K3SNET")


def _k3snets_nft(item: dict[str, Any]) -> bool:
    """An item of ``nft -j list ruleset`` that is k3snet's: its own table, and its
    chains, rules and jumps inside the iptables-nft tables (which the listing shows
    too; iptables-save's side is filtered by name below)."""
    body = next(iter(item.values()))
    if body.get("table", body.get("name")) == "k3snet":
        return True
    if "chain" in item:
        return bool(_OURS.match(str(body.get("name", ""))))
    if "rule" in item:
        if _OURS.match(str(body.get("chain", ""))):
            return True
        return any(_OURS.match(str(expr.get(verb, {}).get("target", "")))
                   for expr in body.get("expr", []) for verb in ("jump", "goto")
                   if isinstance(expr, dict))
    return False


def _foreign(ns: str, owned_sysctls: set[str]) -> dict[str, Any]:
    """Everything on the node that is not k3snet's, as the kernel lists it."""
    def out(*argv: str) -> str:
        return run_in(ns, list(argv)).stdout

    ruleset = json.loads(out("nft", "-j", "list", "ruleset"))["nftables"]
    nft = [item for item in ruleset if "metainfo" not in item and not _k3snets_nft(item)]
    routes = [r for family in ("-4", "-6")
              for r in json.loads(out("ip", family, "-j", "route", "show", "table", "all"))
              if r.get("protocol") != "211"
              and not (r.get("protocol") == "kernel" and str(r.get("dst")).startswith("fe80"))]
    return {
        "nft": nft,
        "iptables": [_COUNTERS.sub("[0:0]", line)
                     for tool in ("iptables-save", "ip6tables-save")
                     for line in out(tool).splitlines()
                     if not line.startswith("#") and not _OURS.search(line)],
        "routes": routes,
        "sysctls": {name: out("sysctl", "-n", name) for name in FOREIGN_SYSCTLS
                    if Sysctl(name, "0").name not in owned_sysctls},
    }


def _backend(ns: str, state_dir: Path) -> BackendGroup:
    return BackendGroup([
        Member(NetlinkBackend(ns, state_dir=state_dir)),
        Member(NftablesBackend(ns), ["nat"]),
        Member(IptablesBackend(ns, mode="nft"), ["forward"]),
    ])


def test_the_base_document_applies_on_the_lab_node(node: tuple[str, Path],
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    """The fuzz starts from a spec that works, so its values reach the kernel."""
    ns, state_dir = node
    monkeypatch.setenv("K3SNET_LOCK_DIR", str(tmp_path))
    state = compile_spec(spec_from_document(base_document()))
    before = _foreign(ns, {o.name for o in state.owned if isinstance(o, Sysctl)})
    # The snapshot holds the foreign state (a comparison of empty lists proves nothing).
    assert {i["table"]["name"] for i in before["nft"] if "table" in i} >= {"admin", "edge"}
    assert any("FLANNEL-FWD" in line for line in before["iptables"])
    assert any(r["dst"] == "198.51.100.0/24" for r in before["routes"])
    assert before["sysctls"]["net.ipv4.conf.eth0.rp_filter"].strip() == "1"
    with _backend(ns, state_dir) as backend:
        result = converge(backend, state)
        assert result.plan.changes
        assert not converge(backend, state).plan.changes  # converged (some rules met by flannel's)
    assert _foreign(ns, {o.name for o in state.owned if isinstance(o, Sysctl)}) == before


@pytest.mark.parametrize(("change", "undo"), [
    (["ip", "route", "add", "203.0.113.0/24", "via", "192.168.1.1", "proto", "static"],
     ["ip", "route", "del", "203.0.113.0/24", "via", "192.168.1.1", "proto", "static"]),
    (["nft", "add", "chain", "inet", "admin", "extra"],
     ["nft", "delete", "chain", "inet", "admin", "extra"]),
    (["iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "10.79.0.0/16", "-j", "MASQUERADE"],
     ["iptables", "-t", "nat", "-D", "POSTROUTING", "-s", "10.79.0.0/16", "-j", "MASQUERADE"]),
    (["sysctl", "-qw", "net.ipv4.conf.eth0.rp_filter=2"],
     ["sysctl", "-qw", "net.ipv4.conf.eth0.rp_filter=1"]),
])
def test_the_foreign_snapshot_sees_a_change_of_each_kind(
        node: tuple[str, Path], change: list[str], undo: list[str]) -> None:
    """The comparison the fuzz relies on fails when foreign state changes."""
    ns, _ = node
    before = _foreign(ns, set())
    run_in(ns, change)
    try:
        assert _foreign(ns, set()) != before
    finally:
        run_in(ns, undo)
    assert _foreign(ns, set()) == before


def _plausible() -> st.SearchStrategy[Any]:
    """Values valid in some field (so that many examples get as far as the kernel):
    odd interface names, addresses and prefixes of both families, numbers, words."""
    return st.one_of(
        strategies.interface_names(), strategies.addresses().map(str),
        strategies.networks(min_prefix=8).map(str), st.integers(0, 2**32),
        st.sampled_from(["eth1", "cni0", "192.168.7.0/24", "fe80::1%eth0", "1", "2",
                         "nftables", "off", "all", "corp.example.", "Never"]),
        st.lists(strategies.interface_names(), max_size=2),
    )


@FUZZ
@given(target=st.sampled_from(targets()),
       value=st.one_of(strategies.hostile_values(), _plausible()))
def test_hostile_values_in_any_spec_field_never_change_foreign_state(
        node: tuple[str, Path], monkeypatch: pytest.MonkeyPatch,
        tmp_path_factory: pytest.TempPathFactory, target: Target, value: Any) -> None:
    ns, state_dir = node
    monkeypatch.setenv("K3SNET_LOCK_DIR", str(tmp_path_factory.getbasetemp()))
    try:
        state = compile_spec(spec_from_document(hostile_document(target, value)))
    except SpecError:
        OUTCOMES["refused by the spec"] += 1
        return
    owned_sysctls = {o.name for o in state.owned if isinstance(o, Sysctl)}
    with _backend(ns, state_dir) as backend:
        # A sysctl an earlier example's spec set is k3snet's now (its previous value
        # recorded): giving it back when this spec drops it is not a foreign change.
        owned_sysctls |= {o.name for o in backend.observe().owned if isinstance(o, Sysctl)}
        before = _foreign(ns, owned_sysctls)
        failed: ApplyError | None
        try:
            converge(backend, state)
        except PlanError:
            OUTCOMES["refused by the plan"] += 1
            failed = None
        except ApplyError as exc:
            # A value the spec cannot judge (a sysctl's) refused by the kernel: clean
            # only when the apply left nothing changed.
            failed = exc
            OUTCOMES["refused by the kernel, rolled back"] += 1
        else:
            OUTCOMES["applied"] += 1
            failed = None
    if failed is not None:
        assert not failed.done or failed.rolled_back, failed
    assert _foreign(ns, owned_sysctls) == before


def test_zz_report_the_fuzz_outcomes() -> None:
    """Printed with ``-s``: how the examples ended (figures for docs/reliability.md)."""
    print(f"spec fuzz outcomes: {dict(OUTCOMES)}")  # noqa: T201 - the figures of the run
