"""No teardown by accident, and one writer per network namespace."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from k3snet import (
    BackendGroup,
    MasqueradeRule,
    MemoryBackend,
    Plan,
    Route,
    Spec,
    State,
    Sysctl,
    TeardownError,
    converge,
    destroy,
    plan,
)
from k3snet import compile as compile_spec
from k3snet.backends.lock import namespace_lock, namespaces_of
from k3snet.errors import BackendError, ModelError
from k3snet.model import Drift

RULE = MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24")
ROUTE = Route("192.168.2.0/24", gateway="192.168.1.1", device="eth0")
FOREIGN = Route("192.168.9.0/24", gateway="192.168.1.1", device="eth0", protocol=4)
FORWARDING = Sysctl("net.ipv4.ip_forward", "1", previous="0")


def _node() -> BackendGroup:
    return BackendGroup([
        MemoryBackend(State(owned=[ROUTE, FORWARDING], foreign=[FOREIGN]),
                      capabilities=["route", "sysctl"]),
        MemoryBackend(State(owned=[RULE]), capabilities=["nat", "forward"]),
    ])


def test_an_empty_spec_does_not_tear_down_what_k3snet_owns() -> None:
    node = _node()
    before = node.observe()
    with pytest.raises(TeardownError, match=r"deletes everything k3snet owns through .*k3snet "
                                            r"destroy"):
        converge(node, State())
    assert node.observe() == before


def test_a_spec_emptying_only_one_backend_is_refused_too() -> None:
    node = _node()
    with pytest.raises(TeardownError, match=r"memory \(1 object\(s\) of forward, nat\)"):
        converge(node, State(owned=[ROUTE, FORWARDING]))


def test_teardown_can_be_asked_for() -> None:
    node = _node()
    converge(node, State(owned=[ROUTE, FORWARDING]), allow_teardown=True)
    assert RULE not in node.observe().owned


def test_replacing_every_object_is_not_a_teardown() -> None:
    node = _node()
    other = MasqueradeRule("10.42.0.0/16", destination="192.168.3.0/24")
    converge(node, State(owned=[ROUTE, FORWARDING, other]))
    assert other in node.observe().owned


def test_drift_alone_is_not_something_to_keep() -> None:
    drift = Drift.of("nat", backend="memory", where="t", what="extra rule")
    backend = MemoryBackend(State(owned=[drift]), capabilities=["nat", "forward"])
    converge(backend, State())
    assert not backend.observe().owned


def test_destroy_removes_exactly_what_k3snet_owns_and_restores_sysctls() -> None:
    node = _node()
    preview = destroy(node, dry_run=True)
    assert preview.result is None
    assert {c.action for c in preview.plan.changes} == {"delete"}
    done = destroy(node)
    assert done.result is not None
    after = node.observe()
    assert not after.owned
    assert FOREIGN in after.foreign
    assert Sysctl("net.ipv4.ip_forward", "0") in after.foreign
    assert plan(after, State()).empty


def test_the_namespace_lock_serialises_writers_and_names_the_holder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("K3SNET_LOCK_DIR", str(tmp_path))
    entered = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with namespace_lock([None]):
            entered.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert entered.wait(10)
        with pytest.raises(BackendError, match=r"another k3snet process \(pid \d+\) is changing "
                                               r"network namespace 'host'"), \
                namespace_lock([None], timeout=0.2):
            pass
    finally:
        release.set()
        thread.join()
    with namespace_lock([None], timeout=1):  # free again
        pass


@pytest.mark.parametrize("timeout", [float("nan"), -1, float("inf"), 86400, "5", True, None])
def test_a_lock_timeout_that_is_not_a_number_of_seconds_is_refused_before_waiting(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, timeout: object) -> None:
    # NaN never reached its deadline (`now >= nan` is false): a held lock was waited
    # for for ever, and a negative timeout said "waited -1 s".
    monkeypatch.setenv("K3SNET_LOCK_DIR", str(tmp_path))
    with pytest.raises(ModelError, match=r"lock_timeout must be a number of seconds "
                                         r">= 0 and below a day"):
        converge(_node(), State(), allow_teardown=True,
                 lock_timeout=timeout)  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="lock_timeout"), \
            namespace_lock([None], timeout=timeout):  # type: ignore[arg-type]
        pass
    assert list(tmp_path.iterdir()) == []  # refused before any lock file was made


def test_a_zero_lock_timeout_tries_the_lock_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("K3SNET_LOCK_DIR", str(tmp_path))
    refused: list[BaseException] = []

    def other() -> None:  # another thread: this one would take its own lock again
        with pytest.raises(BackendError, match="waited 0 s") as failed, \
                namespace_lock([None], timeout=0):
            pass
        refused.append(failed.value)

    with namespace_lock([None], timeout=0):
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    assert len(refused) == 1


def test_backends_without_a_namespace_need_no_lock() -> None:
    assert namespaces_of(_node()) == []
    assert namespaces_of(MemoryBackend()) == []


@pytest.mark.kernel
def test_every_kernel_backend_says_which_namespace_it_locks(tmp_path: Path) -> None:
    from k3snet.backends.iptables import IptablesBackend  # noqa: PLC0415
    from k3snet.backends.netlink import NetlinkBackend  # noqa: PLC0415
    from k3snet.backends.nftables import NftablesBackend  # noqa: PLC0415
    from k3snet.lab.netns import temporary_netns  # noqa: PLC0415

    with temporary_netns("lock") as ns:
        for backend in (IptablesBackend(ns), NetlinkBackend(ns, state_dir=tmp_path),
                        NftablesBackend(ns)):
            with backend:
                assert namespaces_of(backend) == [ns], backend


def test_converge_applies_without_a_separate_dry_run_and_checks_only_when_asked() -> None:
    from k3snet import CheckError  # noqa: PLC0415

    calls: list[str] = []

    class Counting(MemoryBackend):
        def check(self, plan: Plan) -> tuple[str, ...]:
            calls.append("check")
            return ("refused by the backend's own check",)

    backend = Counting(capabilities=["nat", "forward"])
    converge(backend, State(owned=[RULE]))
    assert calls == []
    assert RULE in backend.observe().owned
    with pytest.raises(CheckError, match="refused by the backend's own check"):
        converge(backend, State(owned=[RULE, MasqueradeRule("10.43.0.0/16")]), dry_run=True,
                 check=True)
    assert calls == ["check"]


@pytest.mark.kernel
@pytest.mark.usefixtures("require_root")
def test_the_lock_and_state_file_of_this_namespace_are_those_of_the_calling_thread() -> None:
    """``netns=None`` backends act in the calling thread's namespace (setns(2) moves one
    thread): the lock and the sysctl state file must be that namespace's too. They were
    the main thread's (``/proc/self``), so a thread in namespace X and ``k3snet apply
    --netns X`` did not exclude each other."""
    from k3snet.backends.lock import namespace_id  # noqa: PLC0415
    from k3snet.backends.netlink.sysctls import namespace_identity  # noqa: PLC0415
    from k3snet.backends.netns import NetnsRunner  # noqa: PLC0415
    from k3snet.lab.netns import temporary_netns  # noqa: PLC0415

    with temporary_netns("lockthr") as ns, NetnsRunner(ns) as runner:
        inside = runner.call(lambda: (namespace_id(None), namespace_identity(None)))
        named = (namespace_id(ns), namespace_identity(ns))
    assert inside == named
    assert namespace_id(None) != named[0]


def test_a_spec_that_lost_its_destinations_is_a_teardown_though_sysctls_stay() -> None:
    """With ``masquerade: {mode: all}`` (or sysctls of its own) a spec whose destinations
    were lost still wants the forwarding sysctls and the NAT rule of every pod: the
    route backend kept "something" (its sysctls) and the plan deleted every route and
    forward rule unasked. Sysctls carry no egress: a backend left with only them is
    emptied; one that manages only sysctls is judged by them as before."""
    doc = {"cluster": {"podCIDRs": ["10.42.0.0/16"]}, "masquerade": {"mode": "all"},
           "destinations": [{"cidr": "192.168.2.0/24", "gateway": "192.168.1.1",
                             "device": "eth0"}]}
    node = MemoryBackend(capabilities=["route", "sysctl"])
    group = BackendGroup([node, MemoryBackend(capabilities=["nat", "forward"])])
    converge(group, compile_spec(Spec.from_dict(doc)))
    before = group.observe()
    assert {o.kind for o in before.owned} == {"route", "sysctl", "nat", "forward"}
    lost = compile_spec(Spec.from_dict({**doc, "destinations": []}))
    assert {o.kind for o in lost.owned} == {"sysctl", "nat"}  # still wanted
    with pytest.raises(TeardownError, match=r"through memory \(1 object\(s\) of route\)"):
        converge(group, lost)
    assert group.observe() == before
    converge(group, lost, allow_teardown=True)
    assert {o.kind for o in group.observe().owned} == {"sysctl", "nat"}
    sysctls = MemoryBackend(State(owned=[FORWARDING]), capabilities=["sysctl"])
    with pytest.raises(TeardownError, match=r"memory \(1 object\(s\) of sysctl\)"):
        converge(sysctls, State())


def test_deleting_every_owned_route_is_no_teardown_when_foreign_routes_meet_the_spec() -> None:
    """The spec still wants a route, which a foreign route now provides (a plan note):
    k3snet's own routes going, its sysctls kept, is what the spec asks for."""
    met = Route("192.168.2.0/24", gateway="192.168.1.1", device="eth0", protocol=4)
    backend = MemoryBackend(State(owned=[Route("10.100.0.0/24", gateway="192.168.1.1",
                                               device="eth0"), FORWARDING],
                                  foreign=[met]),
                            capabilities=["route", "sysctl"])
    done = converge(backend, State(owned=[ROUTE, FORWARDING]))
    assert [n.status for n in done.plan.notes] == ["met"], done.plan.render()
    assert backend.observe().owned == {FORWARDING}


def test_the_namespace_lock_is_re_entrant_in_its_thread_and_still_excludes_others(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # flock on a second descriptor of the file waited for this very thread: a destroy
    # holding the lock for several backends could not let each take it again.
    monkeypatch.setenv("K3SNET_LOCK_DIR", str(tmp_path))
    refused: list[BaseException] = []

    def other() -> None:
        try:
            with namespace_lock([None], timeout=0):
                pass
        except BackendError as exc:
            refused.append(exc)

    with namespace_lock([None], timeout=0):
        with namespace_lock([None, None], timeout=0):  # taken again at once
            pass
        thread = threading.Thread(target=other)  # still held: the inner block kept it
        thread.start()
        thread.join()
    assert len(refused) == 1
    assert "waited 0 s" in str(refused[0])
    thread = threading.Thread(target=other)  # the outermost block released it
    thread.start()
    thread.join()
    assert len(refused) == 1
