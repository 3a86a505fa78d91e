"""IPVS virtual servers (kube-proxy's IPVS mode) in the doctor's capture.

IPVS takes packets at the input hook (``ip_vs_in``, for what the node receives for a
virtual server's address: kube-proxy binds each Service's address to ``kube-ipvs0``) and
at the forward hook only the replies of its own connections: the pods' flow to a
destination beyond the node never meets it, their flow to a Service does. The doctor
said only "delivered to the node itself" there; it now names the virtual server and its
real servers (``/proc/net/ip_vs``, captured as ``ipvs.txt``). This kernel has no IPVS:
the file is written as the kernel prints it (``ip_vs_info_seq_show``).
"""

from __future__ import annotations

import json
import weakref
from ipaddress import ip_address
from typing import Any

import pytest

from k3snet.doctor import Flow, NodeCapture, NodeState, Verdict, trace
from k3snet.doctor import state as state_module

_POD = "10.42.0.10"
_IPVS = """IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port Forward Weight ActiveConn InActConn
TCP  0A2B0064:0050 rr
  -> C0A8020A:1538      Masq    1      0          0
  -> C0A8020B:1538      Masq    1      0          0
UDP  0A2B000A:0035 rr
TCP  [fd43:0043:0000:0000:0000:0000:0000:0064]:0050 rr
  -> [fd01:0002:0000:0000:0000:0000:0000:0010]:1538      Masq    1      0          0
FWM  00004000 rr
  -> C0A8020C:1538      Masq    1      0          0
"""


def _capture(ipvs: str | None) -> NodeCapture:
    def link(index: int, name: str, address: str, prefix: int) -> dict[str, Any]:
        return {"ifindex": index, "ifname": name, "flags": ["UP", "LOWER_UP"],
                "operstate": "UP", "addr_info": [
                    {"family": "inet", "local": address, "prefixlen": prefix,
                     "scope": "global"}]}
    routes = [{"dst": "default", "gateway": "192.168.1.1", "dev": "eth0", "flags": []},
              {"dst": "192.168.1.0/24", "dev": "eth0", "scope": "link",
               "prefsrc": "192.168.1.5", "flags": []},
              {"dst": "10.42.0.0/24", "dev": "cni0", "scope": "link", "prefsrc": "10.42.0.1",
               "flags": []},
              {"type": "local", "dst": "10.43.0.100", "dev": "kube-ipvs0", "table": "local",
               "protocol": "kernel", "scope": "host", "prefsrc": "10.43.0.100", "flags": []},
              {"type": "local", "dst": "192.168.1.5", "dev": "eth0", "table": "local",
               "protocol": "kernel", "scope": "host", "prefsrc": "192.168.1.5", "flags": []}]
    ruleset = {"nftables": [
        {"table": {"family": "ip", "name": "lab", "handle": 1}},
        {"chain": {"family": "ip", "table": "lab", "name": "post", "handle": 1,
                   "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}},
        {"rule": {"family": "ip", "table": "lab", "chain": "post", "handle": 2, "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                       "right": {"prefix": {"addr": "10.42.0.0", "len": 16}}}},
            {"masquerade": None}]}},
    ]}
    texts = {"addr.json": json.dumps([link(2, "eth0", "192.168.1.5", 24),
                                      link(3, "cni0", "10.42.0.1", 24),
                                      link(4, "kube-ipvs0", "10.43.0.100", 32)]),
             "routes-v4.json": json.dumps(routes),
             "rules-v4.json": json.dumps([{"priority": 0, "src": "all", "table": "local"},
                                          {"priority": 32766, "src": "all", "table": "main"}]),
             "nft-ruleset.json": json.dumps(ruleset),
             "sysctl.txt": "net.ipv4.ip_forward = 1\n"}
    if ipvs is not None:
        texts["ipvs.txt"] = ipvs
    return NodeCapture.from_texts(texts)


def test_a_flow_to_an_ipvs_virtual_server_names_it_and_its_real_servers() -> None:
    found = trace(NodeState.from_capture(_capture(_IPVS)), Flow(_POD, "10.43.0.100", port=80))
    assert found.verdict is Verdict.UNKNOWN, found.render()
    local = next(s for s in found.steps if s.code == "destination-is-local")
    assert "IPVS virtual server" in local.detail, found.render()
    assert "192.168.2.10:5432 Masq, 192.168.2.11:5432 Masq" in local.detail, found.render()


def test_the_pods_flow_beyond_the_node_does_not_meet_ipvs() -> None:
    found = trace(NodeState.from_capture(_capture(_IPVS)), Flow(_POD, "192.168.2.10", port=80))
    assert found.verdict is Verdict.REACHES, found.render()
    assert "IPVS" not in found.render()


@pytest.mark.parametrize(("port", "said"), [(443, "by mark (0x4000)"), (80, "real servers")])
def test_a_flow_to_a_node_address_may_meet_an_ipvs_fwmark_service(port: int, said: str
                                                                   ) -> None:
    text = _IPVS.replace("TCP  0A2B0064:0050", "TCP  0A2B0064:01BB") if port == 443 else (
        _IPVS)
    found = trace(NodeState.from_capture(_capture(text)), Flow(_POD, "10.43.0.100", port=80))
    local = next(s for s in found.steps if s.code == "destination-is-local")
    assert said in local.detail, found.render()


def test_the_ipvs_capture_reads_as_the_kernel_prints_it() -> None:
    state = NodeState.from_capture(_capture(_IPVS))
    assert state.ipvs is not None
    assert {(proto, str(address), port): reals for (proto, address, port), reals
            in state.ipvs.items()} == {
        ("tcp", "10.43.0.100", 80): ("192.168.2.10:5432 Masq", "192.168.2.11:5432 Masq"),
        ("udp", "10.43.0.10", 53): (),
        ("tcp", "fd43:43::64", 80): ("[fd01:2::10]:5432 Masq",)}
    assert state.ipvs_fwmarks == frozenset({0x4000})
    assert not state.ipvs_cut
    assert NodeState.from_capture(_capture(None)).ipvs is None


def test_a_virtual_server_past_what_a_capture_reads_is_said_to_be_maybe_there() -> None:
    """A bundle's ``ipvs.txt`` is read up to the 16 MiB a capture takes: a virtual server
    past it is not known, and the step says one may take the flow."""
    head = _IPVS.split("TCP  0A2B0064", maxsplit=1)[0]
    filler = "UDP  0A2B000B:0035 rr\n" * (16 * 1024 * 1024 // 22 + 1)
    state = NodeState.from_capture(_capture(head + filler + _IPVS))
    assert state.ipvs_cut
    found = trace(state, Flow(_POD, "10.43.0.100", port=80))
    local = next(s for s in found.steps if s.code == "destination-is-local")
    assert "past the part of /proc/net/ip_vs captured" in local.detail, found.render()


def test_a_read_of_distinct_real_servers_keeps_a_bounded_number_of_parsed_addresses(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The read parses an address text once while the file repeats it (a NodePort on each
    node address, an endpoint under each port of its Service), but a file of distinct
    ones (a large cluster's pods; a bundle's 16 MiB of them) must not keep every parsed
    address alive to the end of the read: that held ~70 MB more at the peak of 16 MiB
    and spent more CPU than parsing each line did. Counted through weak references to
    what the parser returned, not by timing."""
    parsed: list[weakref.ref[Any]] = []
    most_alive = 0
    parse = state_module._ipvs_address

    def counting(hex_v4: str | None, v6: str | None) -> Any:
        nonlocal most_alive
        if len(parsed) % 1000 == 0:
            most_alive = max(most_alive, sum(ref() is not None for ref in parsed))
        address = parse(hex_v4, v6)
        parsed.append(weakref.ref(address))
        return address

    monkeypatch.setattr(state_module, "_ipvs_address", counting)
    kept = state_module._IPVS_ADDRESSES_KEPT
    reals = "".join(f"  -> {0x0A000000 + n:08X}:1538      Masq    1      0          0\n"
                    for n in range(3 * kept))
    state = NodeState.from_capture(_capture(_IPVS + "TCP  0A2B0065:0050 rr\n" + reals))
    assert state.ipvs is not None
    read = state.ipvs["tcp", ip_address("10.43.0.101"), 80]
    assert len(read) == 3 * kept
    assert read[-1] == f"{ip_address(0x0A000000 + 3 * kept - 1)}:5432 Masq"
    assert len(parsed) > 3 * kept  # each distinct text parsed (once)
    assert most_alive <= kept + 16, most_alive


@pytest.mark.parametrize("bracketed_first", [False, True])
def test_an_address_text_is_read_the_same_wherever_it_repeats_in_either_form(
        bracketed_first: bool) -> None:
    """The read parses each address text once: a hex IPv4 address and the same digits
    in brackets (no IPv6 address; the kernel never prints it, a bundle may hold it) are
    two texts, whichever comes first; the same IPv6 address written two ways is one."""
    v4 = "TCP  C0A8020A:0050 rr\n  -> C0A8020A:1538      Masq    1      0          0\n"
    bracketed = "TCP  [C0A8020A]:0051 rr\n  -> [C0A8020A]:1538      Masq    1      0          0\n"
    v6 = ("TCP  [fd43::64]:0050 rr\n  -> [FD01:2:0::10]:1538      Masq    1      0     0\n"
          "TCP  [fd43:0043::0064]:0051 rr\n  -> [fd01:2::10]:1538      Masq    1      0     0\n")
    state = NodeState.from_capture(_capture(
        bracketed + v4 + v6 if bracketed_first else v4 + v6 + bracketed))
    assert state.ipvs is not None
    assert {(proto, str(address), port): reals for (proto, address, port), reals
            in state.ipvs.items()} == {
        ("tcp", "192.168.2.10", 80): ("192.168.2.10:5432 Masq",),
        ("tcp", "fd43::64", 80): ("[fd01:2::10]:5432 Masq",),
        ("tcp", "fd43:43::64", 81): ("[fd01:2::10]:5432 Masq",)}
