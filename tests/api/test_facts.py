"""Node facts, read live or from captured `ip -j` output, agree."""

from __future__ import annotations

import ipaddress
import json
import time

import attrs
import pytest

from k3snet import BackendError, FactsWatch, NodeFacts, facts_from_ip_json, gather_facts
from k3snet.lab.netns import run_in, temporary_netns


@pytest.mark.kernel
def test_captured_output_gives_the_same_facts_as_a_live_read() -> None:
    with temporary_netns("facts") as ns:
        for argv in (["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "p0"],
                     ["ip", "link", "set", "eth0", "up"],
                     ["ip", "addr", "add", "192.168.1.5/24", "dev", "eth0"],
                     ["ip", "addr", "add", "fd01:1::5/64", "dev", "eth0", "nodad"],
                     ["ip", "route", "add", "192.168.2.0/24", "via", "192.168.1.1"]):
            run_in(ns, argv)
        captured = (json.loads(run_in(ns, ["ip", "-j", "addr", "show"]).stdout),
                    json.loads(run_in(ns, ["ip", "-4", "-j", "route", "show", "table",
                                           "all"]).stdout)
                    + json.loads(run_in(ns, ["ip", "-6", "-j", "route", "show", "table",
                                             "all"]).stdout))
        live = gather_facts(ns)
    offline = facts_from_ip_json(*captured, hostname=ns)
    assert offline == live
    assert "eth0" in offline.interfaces


def test_captured_output_that_is_not_a_listing_is_an_error() -> None:
    with pytest.raises(BackendError, match="expected the JSON lists"):
        facts_from_ip_json({"not": "a list"}, [])


def test_malformed_entries_are_skipped() -> None:
    facts = facts_from_ip_json([{"ifname": "eth0"}, "junk", {"ifname": 3}],
                               [{"dst": "not-a-cidr"}, {"dst": "default"}, 7])
    assert list(facts.interfaces) == ["eth0"]
    assert not facts.routes


@pytest.mark.kernel
def test_a_missing_namespace_is_a_backend_error_naming_it() -> None:
    # The route dump and the `ip -j addr show` listing run side by side; a missing
    # namespace is one error naming it, never a traceback or a half-read.
    with pytest.raises(BackendError, match="'k3snet-no-such-ns' does not exist"):
        gather_facts("k3snet-no-such-ns")


@pytest.mark.kernel
def test_k3snets_own_routes_are_not_facts_about_the_node() -> None:
    # What a spec makes is not what it is checked against: a gateway reachable only
    # through a route k3snet wrote must not count (the answer would change after the
    # first apply), and a node with 10k of them should not pay for parsing them.
    with temporary_netns("facts") as ns:
        for argv in (["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "p0"],
                     ["ip", "link", "set", "eth0", "up"],
                     ["ip", "addr", "add", "192.168.1.5/24", "dev", "eth0"],
                     ["ip", "route", "add", "192.168.2.0/24", "via", "192.168.1.1"],
                     ["ip", "route", "add", "192.168.3.0/24", "via", "192.168.1.1",
                      "proto", "211"]):
            run_in(ns, argv)
        facts = gather_facts(ns)
    assert "192.168.2.0/24" in {str(n) for n in facts.routes}
    assert "192.168.3.0/24" not in {str(n) for n in facts.routes}


@pytest.mark.parametrize("protocol", ["211", "k3snet", 211])
def test_a_route_of_k3snets_protocol_is_skipped_however_ip_names_it(protocol: object) -> None:
    facts = facts_from_ip_json([], [{"dst": "192.168.3.0/24", "protocol": protocol},
                                    {"dst": "192.168.2.0/24", "protocol": "static"}])
    assert [str(n) for n in facts.routes] == ["192.168.2.0/24"]


def test_routes_of_the_protocol_given_to_netlink_and_of_211_are_skipped() -> None:
    routes = [{"dst": "192.168.3.0/24", "protocol": "200"},
              {"dst": "192.168.4.0/24", "protocol": "211"},
              {"dst": "192.168.2.0/24", "protocol": "static"}]
    facts = facts_from_ip_json([], routes, protocol=200)
    assert [str(n) for n in facts.routes] == ["192.168.2.0/24"]


def _settled(watch: FactsWatch) -> int:
    """The token once the namespace's notifications stopped coming: the kernel sends some
    after `ip` returned (an IPv6 address's local route comes from a work queue), so a
    check that nothing moved is made only after that tail, never racing it."""
    token = watch.token()
    for _ in range(100):  # a bound on a namespace that never quietens, not a timing check
        time.sleep(0.1)
        again = watch.token()
        if again == token:
            return token
        token = again
    raise AssertionError("the namespace's notifications never stopped")


@pytest.mark.kernel
def test_the_facts_watch_moves_with_a_link_address_or_route_of_its_namespace_only() -> None:
    with temporary_netns("facts") as ns, temporary_netns("other") as other:
        watch = FactsWatch(ns)
        try:
            token = _settled(watch)
            changes = (["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "p0"],
                       ["ip", "link", "set", "eth0", "up"],
                       ["ip", "addr", "add", "192.168.1.5/24", "dev", "eth0"],
                       ["ip", "-6", "addr", "add", "fd01:1::5/64", "dev", "eth0", "nodad"],
                       ["ip", "route", "add", "192.168.2.0/24", "via", "192.168.1.1"],
                       ["ip", "-6", "route", "add", "fd02::/64", "dev", "eth0"],
                       ["ip", "route", "del", "192.168.2.0/24"],
                       ["ip", "link", "set", "eth0", "down"])
            for argv in changes:
                run_in(other, argv)  # the same changes elsewhere move nothing here
                assert watch.token() == token, argv
                run_in(ns, argv)
                moved = _settled(watch)
                assert moved != token, argv
                token = moved
        finally:
            watch.close()


@pytest.mark.kernel
def test_the_facts_watch_moves_when_more_changed_than_it_could_keep() -> None:
    # A flood overruns the watch's small socket buffer: the kernel then says some
    # notifications were lost (ENOBUFS), which must move the token too.
    with temporary_netns("facts") as ns:
        run_in(ns, ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "p0"])
        run_in(ns, ["ip", "link", "set", "eth0", "up"])
        watch = FactsWatch(ns)
        try:
            token = watch.token()
            batch = "".join(f"route add 10.{i >> 8}.{i & 255}.0/24 dev eth0\n"
                            for i in range(5000))
            run_in(ns, ["ip", "-batch", "-"], input_text=batch)
            assert watch.token() != token
            assert watch.token() == watch.token()
        finally:
            watch.close()


def test_a_facts_watch_of_a_missing_namespace_is_a_backend_error() -> None:
    with pytest.raises(BackendError, match="does not exist"):
        FactsWatch("k3snet-no-such-ns")


def test_node_facts_are_immutable_and_hashable_like_every_other_k3snet_value() -> None:
    # A frozen class holding a dict: facts.interfaces could be edited in place (under a
    # compile cache that compares facts), and hash(facts) raised TypeError.
    facts = NodeFacts({"eth0": ["192.168.1.5/24"]}, routes=["10.0.0.0/8"])
    with pytest.raises(TypeError):
        facts.interfaces["eth1"] = ()  # type: ignore[index]
    same = NodeFacts({"eth0": ["192.168.1.5/24"]}, routes=["10.0.0.0/8"])
    assert same == facts
    assert hash(same) == hash(facts)
    assert facts.interfaces == {"eth0": (ipaddress.ip_interface("192.168.1.5/24"),)}
    assert attrs.evolve(facts, hostname="node1").interfaces == facts.interfaces
