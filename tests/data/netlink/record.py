"""Record real rtnetlink dumps for the codec's root-free tests: ``dumps.json`` here.

Run as root (it builds a throwaway network namespace, never touches the root one)::

    .venv/bin/python tests/data/netlink/record.py

The namespace gets links, addresses and routes of every kind the backend meets
(IPv4/IPv6, gateway and device-only, other tables including one above 255,
metrics, other protocols, k3snet's protocol 211, host and link scope, and routes
the model cannot hold: multipath, nexthop objects, IPv4 via an IPv6 gateway,
source-specific, TOS, blackhole/unreachable/prohibit). It stores the raw dump
messages (hex), the kernel's own view of the same routes (``ip -j``), and the
raw answers to a few requests (an acknowledgement, refusals with extended-ack
text), so the tests compare the codec with the kernel's listing, without root.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from k3snet.backends.netlink import codec
from k3snet.backends.netlink.socket_driver import SocketDriver, open_socket_driver
from k3snet.backends.netns import NetnsRunner
from k3snet.lab.netns import temporary_netns
from k3snet.model import Route
from k3snet.planner import Change

HERE = Path(__file__).resolve().parent

SETUP: tuple[tuple[str, ...], ...] = (
    ("link", "set", "lo", "up"),
    ("link", "add", "d0", "type", "veth", "peer", "name", "d0p"),
    ("link", "add", "e0", "type", "veth", "peer", "name", "e0p"),
    ("link", "set", "d0p", "up"),
    ("link", "set", "e0p", "up"),
    ("link", "set", "d0", "up"),
    ("link", "set", "e0", "up"),
    ("link", "add", "down0", "type", "veth", "peer", "name", "down0p"),  # left down
    ("addr", "add", "10.0.0.1/24", "dev", "d0"),
    ("addr", "add", "fd00::1/64", "dev", "d0", "nodad"),
    ("addr", "add", "10.9.0.1/24", "dev", "e0"),
    ("addr", "add", "fd09::1/64", "dev", "e0", "nodad"),
    # Foreign routes the model holds.
    ("route", "add", "192.168.50.0/24", "via", "10.0.0.254", "proto", "static"),
    ("route", "add", "192.168.51.0/24", "via", "10.0.0.254"),  # proto boot
    ("route", "add", "192.168.52.0/24", "via", "10.0.0.254", "proto", "bird", "metric", "32"),
    ("route", "add", "default", "via", "10.0.0.254", "proto", "dhcp", "metric", "100"),
    ("route", "add", "172.16.0.0/16", "via", "10.9.0.254", "table", "100", "proto", "static"),
    ("-6", "route", "add", "fd99::/64", "via", "fd00::fe", "proto", "static"),
    # k3snet's own (protocol 211).
    ("route", "add", "10.1.0.0/24", "via", "10.0.0.2", "dev", "d0", "proto", "211"),
    ("route", "add", "10.1.1.0/24", "via", "10.0.0.2", "dev", "d0", "metric", "10",
     "proto", "211"),
    ("route", "add", "10.2.0.0/16", "dev", "e0", "table", "100", "proto", "211"),
    ("route", "add", "10.3.0.5/32", "dev", "d0", "table", "100", "metric", "7",
     "proto", "211"),
    ("route", "add", "10.4.0.0/24", "via", "10.0.0.3", "dev", "d0", "table", "70000",
     "metric", "5", "proto", "211"),
    ("route", "add", "10.72.0.1/32", "dev", "d0", "scope", "host", "proto", "211"),
    ("route", "add", "10.73.0.0/24", "dev", "d0", "scope", "link", "table", "100",
     "proto", "211"),
    ("route", "add", "default", "via", "10.9.0.2", "dev", "e0", "table", "1000",
     "proto", "211"),
    ("-6", "route", "add", "fd01::/64", "via", "fd00::2", "dev", "d0", "proto", "211"),
    ("-6", "route", "add", "fd02::/48", "dev", "e0", "table", "100", "metric", "300",
     "proto", "211"),
    ("-6", "route", "add", "fd03::/64", "via", "fe80::1", "dev", "e0", "table", "1000",
     "proto", "211"),
    ("-6", "route", "add", "default", "via", "fd09::2", "dev", "e0", "table", "1000",
     "proto", "211"),
    # Routes the model cannot hold: skipped by observe, never owned.
    ("route", "add", "198.51.100.0/24", "proto", "211", "nexthop", "via", "10.0.0.250",
     "nexthop", "via", "10.9.0.250"),
    ("-6", "route", "add", "fd51::/64", "nexthop", "via", "fd00::250", "nexthop", "via",
     "fd09::250"),
    ("nexthop", "add", "id", "7", "via", "10.0.0.9", "dev", "d0"),
    ("route", "add", "10.70.0.0/24", "nhid", "7", "proto", "211"),
    ("route", "add", "10.74.0.0/24", "via", "inet6", "fd00::7", "dev", "d0", "proto", "211"),
    ("-6", "route", "add", "fd74::/64", "from", "fd00::/64", "via", "fd00::8", "dev", "d0",
     "proto", "211"),
    ("route", "add", "10.75.0.0/24", "tos", "0x10", "via", "10.0.0.8", "dev", "d0",
     "proto", "211"),
    ("route", "add", "blackhole", "198.18.0.0/15"),
    ("route", "add", "unreachable", "10.71.0.0/24", "table", "100", "proto", "211"),
    ("-6", "route", "add", "prohibit", "fd71::/64", "proto", "211"),
)


def ip(ns: str, *args: str) -> str:
    done = subprocess.run(["ip", "-n", ns, *args], check=False, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def hexes(found: list[bytes]) -> list[str]:
    return [msg.hex() for msg in found]


def answers(driver: SocketDriver, requests: list[tuple[int, int, bytes]]) -> list[dict[str, str]]:
    """Each request sent alone with an acknowledgement asked; its raw answer."""
    recorded = []
    for seq, (kind, flags, body) in enumerate(requests, start=1000):
        request = codec.message(kind, codec.NLM_F_REQUEST | codec.NLM_F_ACK | flags, seq, body)
        driver.request.send(request)
        buf = bytearray(65536)
        size = driver.request.recv_into(buf)
        for offset, length, mkind, _flags, mseq, _pid in codec.messages(buf, size):
            if mkind == codec.NLMSG_ERROR and mseq == seq:
                recorded.append({"request": request.hex(),
                                 "answer": bytes(buf[offset:offset + length]).hex()})
    return recorded


def record(ns: str) -> dict[str, object]:
    for args in SETUP:
        ip(ns, *args)
    runner = NetnsRunner(ns)
    try:
        driver = open_socket_driver(runner, lambda: None)
        try:
            dumps = {
                "link": hexes(driver.dump(codec.RTM_GETLINK, codec.link_dump_request())),
                "addr4": hexes(driver.dump(codec.RTM_GETADDR,
                                           codec.address_dump_request(socket.AF_INET))),
                "addr6": hexes(driver.dump(codec.RTM_GETADDR,
                                           codec.address_dump_request(socket.AF_INET6))),
                "route4": hexes(driver.dump(codec.RTM_GETROUTE,
                                            codec.route_dump_request(socket.AF_INET, None))),
                "route6": hexes(driver.dump(codec.RTM_GETROUTE,
                                            codec.route_dump_request(socket.AF_INET6, None))),
                "route4_table100": hexes(driver.dump(
                    codec.RTM_GETROUTE, codec.route_dump_request(socket.AF_INET, 100))),
            }
            # The kernel's own listing of the same routes, before the requests below.
            kernel = {name: json.loads(ip(ns, "-j", *family, "route", "show", "table", "all"))
                      for name, family in (("route4", ("-4",)), ("route6", ("-6",)))}
            links = {link.name: link.index for link in driver.links().values()}
            new = Route("10.5.0.0/24", gateway="10.0.0.2", device="d0", table=100)
            vanished = Route("10.5.9.0/24", gateway="10.0.0.2", device="d0", table=100)
            offlink = Route("10.6.3.0/24", gateway="10.77.0.1", device="d0")
            local_gw = Route("fd08::/64", gateway="fd00::1", device="d0")
            owned = Route("10.1.0.0/24", gateway="10.0.0.2", device="d0")
            requests = [
                codec.route_message(Change.add(new), links),  # acknowledged
                codec.route_message(Change.add(new), links),  # EEXIST: create-exclusive
                codec.route_message(Change.replace(vanished, vanished), links),  # ENOENT
                codec.route_message(Change.add(offlink), links),  # ENETUNREACH + ext-ack
                codec.route_message(Change.add(local_gw), links),  # EINVAL + ext-ack
                codec.route_message(Change.delete(Route(
                    "192.168.50.0/24", gateway="10.0.0.254", device="d0")), links),  # foreign
                codec.route_message(Change.delete(owned), links),  # acknowledged
            ]
            recorded = answers(driver, requests)
        finally:
            driver.close()
    finally:
        runner.close()
    return {
        "recorded_with": {
            "kernel": os.uname().release,
            "iproute2": subprocess.run(["ip", "-V"], check=True, capture_output=True,
                                       text=True).stdout.strip(),
        },
        "setup": [list(args) for args in SETUP],
        "links": links,
        "dumps": dumps,
        "ip_json": kernel,
        "answers": recorded,
    }


def main() -> None:
    if os.geteuid() != 0:
        sys.exit("needs root (it creates a network namespace)")
    with temporary_netns("rec") as ns:
        data = record(ns)
    (HERE / "dumps.json").write_text(json.dumps(data, indent=1) + "\n")
    sys.stdout.write(f"wrote {HERE / 'dumps.json'}\n")


if __name__ == "__main__":
    main()
