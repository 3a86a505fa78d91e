"""Session-wide test configuration.

- Hypothesis profiles, chosen with the ``HYPOTHESIS_PROFILE`` environment variable
  (unset means ``dev``; an unknown name is an error):

  ``dev``       200 examples, no deadline: a quick local run that still draws the
                rare shapes (same key and other value, big states) a few times;
  ``ci``        100 examples (hypothesis' own default), what ``make test`` uses;
  ``thorough``  5000 examples, for a long run before a release;
  ``mutation``  50 examples, derandomized, no example database and no shrinking,
                so ``make mutation`` judges every mutant on the same draws, quickly.
  ``lowest``    50 examples, no example database: ``make test-lowest``'s quick look at
                the lowest versions pyproject.toml allows.

  A test that names its own count takes it from ``tests/examples.py``'s ``examples(n)``:
  ``n`` scaled by the profile's count (``n`` at 300), so it follows the profile too.
- A leftover check: the run fails if a network namespace named ``k3snet-*`` that
  did not exist when the session started still exists when it ends. Tests must
  delete every namespace they create, also when they fail. ``K3SNET_SKIP_NETNS_CHECK=1``
  turns the check off: ``make mutation`` sets it, since its sessions run no namespace
  test and other runs on the machine may create namespaces meanwhile.
- A root-namespace check: the run fails if the network namespace it runs in (the
  machine's own) ends with other forwarding sysctls, routes of k3snet's protocol,
  nftables tables (iptables-nft's included) or policy rules than it started with. No
  test may change it (they work in namespaces of their own); a test that ran k3snet
  without ``--netns`` by mistake changed the machine's ``ip_forward`` unseen.
- SIGTERM (a ``timeout``, a cancelled CI job) ends the session as Ctrl-C does, so fixture
  finalizers still delete the namespaces: Python's default ended the process at once.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

NETNS_PREFIX = "k3snet-"

try:
    from hypothesis import HealthCheck, Phase, settings
except ImportError:  # hypothesis is in the dev group; tolerate a bare install
    pass
else:
    settings.register_profile(
        "ci",
        max_examples=100,
        deadline=None,  # shared CI machines have noisy timings
        derandomize=False,
        print_blob=True,  # failures print a reproduce_failure blob
        suppress_health_check=[HealthCheck.too_slow],
    )
    # Written out rather than left to hypothesis' default (100 examples), so an
    # unset HYPOTHESIS_PROFILE is a known, stated setting.
    settings.register_profile("dev", max_examples=200, deadline=None, print_blob=True)
    settings.register_profile(
        "thorough",
        max_examples=5000,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.register_profile(
        "mutation",
        max_examples=50,
        deadline=None,
        derandomize=True,
        database=None,
        # A mutant only needs to be killed, not explained: shrinking a failing
        # 30-object state can take minutes per mutant.
        phases=[Phase.explicit, Phase.reuse, Phase.generate],
        suppress_health_check=[HealthCheck.too_slow],
    )
    # `make test-lowest`: whether older libraries' APIs still do, not new shapes of input;
    # shrinking stays (the conformance suite's own tests judge what it reports).
    settings.register_profile(
        "lowest",
        max_examples=50,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def _k3snet_namespaces() -> set[str] | None:
    """Names of the ``k3snet-*`` network namespaces, or None if they cannot be listed."""
    if os.environ.get("K3SNET_SKIP_NETNS_CHECK") == "1":
        return None
    ip = shutil.which("ip")
    if ip is None:
        return None
    result = subprocess.run([ip, "netns", "list"], capture_output=True, check=False)
    if result.returncode != 0:
        return None
    # Lines look like "name" or "name (id: 3)"; names are file names (any bytes: a
    # namespace named by its bytes must not stop the suite).
    names = {line.split(" ", 1)[0] for line in os.fsdecode(result.stdout).split("\n")
             if line.strip()}
    return {name for name in names if name.startswith(NETNS_PREFIX)}


_ROOT_SYSCTLS = ("net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding",
                 "net/ipv4/conf/all/forwarding", "net/ipv4/conf/all/rp_filter",
                 "net/ipv4/conf/all/accept_redirects", "net/ipv6/conf/all/disable_ipv6")


def _root_namespace_view() -> dict[str, str]:
    """What the tests must leave as it is in the namespace they run in: forwarding
    sysctls, routes of k3snet's protocol, nftables tables and policy rules (an entry per
    thing read; one that cannot be read is left out, on both sides alike)."""
    view: dict[str, str] = {}
    for name in _ROOT_SYSCTLS:
        try:
            with open(f"/proc/sys/{name}") as handle:
                view[name] = handle.read().strip()
        except OSError:
            continue
    commands = {"routes of protocol 211": ["ip", "route", "show", "table", "all", "proto", "211"],
                "IPv6 routes of protocol 211": ["ip", "-6", "route", "show", "table", "all",
                                                "proto", "211"],
                "policy rules": ["ip", "rule", "show"],
                "IPv6 policy rules": ["ip", "-6", "rule", "show"],
                "nftables tables": ["nft", "list", "tables"]}
    for what, argv in commands.items():
        if shutil.which(argv[0]) is None:
            continue
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
        if done.returncode == 0:
            view[what] = done.stdout
    return view


_root_at_start = pytest.StashKey["dict[str, str]"]()
_root_changed = pytest.StashKey["list[str]"]()
_netns_at_start = pytest.StashKey["set[str] | None"]()
_netns_leftovers = pytest.StashKey["list[str]"]()


_session_lock_dir = pytest.StashKey["str | None"]()
_session_state_dir = pytest.StashKey[str]()


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # pytest then tears the fixtures down, as on Ctrl-C


def pytest_configure(config: pytest.Config) -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminated)
    if not hasattr(config, "workerinput"):  # the controller, before the workers start
        # Byte-compile the checkout's k3snet (tests/bytecode.py: why, and why the .pyc
        # files are checked against the sources' contents, not their dates).
        from tests.bytecode import compile_imported  # noqa: PLC0415 - once per session

        compile_imported("k3snet", config.rootpath)
    # pytest keeps the test modules it rewrote (their asserts) only where Python may write
    # bytecode: with PYTHONDONTWRITEBYTECODE=1, each worker collects the whole suite and
    # rewrote all of it at every run (collecting tests/ took 38 s of CPU instead of 9).
    # Set in each process before it collects; the processes the tests start still get
    # the variable (k3snet's bytecode is made above).
    sys.dont_write_bytecode = False
    # Set before any test runs, so the CLI processes the tests start inherit them.
    made = None
    if "K3SNET_LOCK_DIR" not in os.environ:
        made = tempfile.mkdtemp(prefix="k3snet-test-locks-")
        os.environ["K3SNET_LOCK_DIR"] = made
    config.stash[_session_lock_dir] = made
    os.environ.setdefault("K3SNET_SPEC_CACHE", "off")
    # The agent processes the tests start take a spec file at once (`--spec-settle`'s
    # default, 1 s, made each start and each spec change wait a second): the settling
    # is tested on its own (tests/agent/test_spec_settle.py), with the default too.
    os.environ.setdefault("K3SNET_SPEC_SETTLE", "0")
    # The nftables backend's kept read (k3snet.backends.nftables.kept) is off too, unless a
    # test turns it on (tests/nftables/test_kept.py): nothing is written to /run/k3snet.
    os.environ.setdefault("K3SNET_READ_CACHE", "off")
    # The iptables backend's record of the built-in chains it made (mode nft), for the
    # backends the tests build without a state_dir: under the session's directory, not
    # /run/k3snet (one directory per test namespace; the demo's test looks there).
    from k3snet.backends.iptables import made as iptables_made  # noqa: PLC0415

    state_root = tempfile.mkdtemp(prefix="k3snet-test-state-")
    config.stash[_session_state_dir] = state_root
    iptables_made.DEFAULT_ROOT = Path(state_root)


def pytest_unconfigure(config: pytest.Config) -> None:
    made = config.stash.get(_session_lock_dir, None)
    if made is not None:
        shutil.rmtree(made, ignore_errors=True)
    state_root = config.stash.get(_session_state_dir, None)
    if state_root is not None:
        shutil.rmtree(state_root, ignore_errors=True)


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_netns_at_start] = _k3snet_namespaces()
    if not hasattr(session.config, "workerinput"):
        session.config.stash[_root_at_start] = _root_namespace_view()


def pytest_sessionfinish(session: pytest.Session) -> None:
    if hasattr(session.config, "workerinput"):  # an xdist worker: the controller checks
        return
    root = session.config.stash.get(_root_at_start, None)
    if root is not None:
        now = _root_namespace_view()
        changed = [f"{what}: {root[what]!r} at the start, {now[what]!r} now"
                   for what in sorted(root.keys() & now.keys()) if root[what] != now[what]]
        session.config.stash[_root_changed] = changed
        if changed:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    before = session.config.stash.get(_netns_at_start, None)
    after = _k3snet_namespaces()
    if before is None or after is None:
        return
    leftovers = sorted(after - before)
    session.config.stash[_netns_leftovers] = leftovers
    if leftovers:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    changed = config.stash.get(_root_changed, [])
    if changed:
        terminalreporter.section("the machine's network namespace changed", red=True)
        terminalreporter.line("tests must work in namespaces of their own; undo these by hand:",
                              red=True)
        for line in changed:
            terminalreporter.line(f"  {line}")
    leftovers = config.stash.get(_netns_leftovers, [])
    if leftovers:
        terminalreporter.section("leftover network namespaces", red=True)
        terminalreporter.line(
            "these namespaces were created during the session and never deleted:",
            red=True,
        )
        for name in leftovers:
            terminalreporter.line(f"  {name}  (remove with: ip netns delete {name})")


@pytest.fixture
def require_root() -> None:
    """Skip the test unless we are root: namespaces, veths and sysctls need it."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")


@pytest.fixture
def ctrl_c() -> Iterator[None]:
    """SIGINT with Python's own handler, in the main thread (which alone runs handlers)."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("the tests run outside the main thread: no handler can be set")
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.fixture
def user_listings(monkeypatch: pytest.MonkeyPatch) -> list[None]:
    """``pwd.getpwall``'s calls from here on, one item each (every call answers the users
    as listed once, before). Skips where another user has root's group as primary group:
    a directory of group root is then another user's to write, whatever is listed."""
    import pwd  # noqa: PLC0415

    users = pwd.getpwall()
    if any(user.pw_gid == 0 and user.pw_uid != 0 for user in users):
        pytest.skip("another user has root's group as primary group here")
    calls: list[None] = []

    def listing() -> list[pwd.struct_passwd]:
        calls.append(None)
        return users

    monkeypatch.setattr(pwd, "getpwall", listing)
    return calls
