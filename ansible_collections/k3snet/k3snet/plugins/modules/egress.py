#!/usr/bin/python
# Copyright: k3snet developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Ansible module ``k3snet.k3snet.egress``: converge a node's pod egress to a k3snet spec.

A thin layer over the k3snet library, like the ``k3snet`` command: observe, plan,
apply (or only plan in check mode), and report ``changed`` from the plan.
"""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: egress
short_description: Make pod egress work on a K3s node with k3snet
version_added: "0.1.0"
description:
  - Brings the routes, NAT and forward rules, sysctls and CNI settings that k3snet
    owns on a node to what a k3snet spec asks for, through k3snet's backends (netlink,
    nftables, iptables, flannel, calico, cilium).
  - Only objects k3snet owns are ever changed; foreign routes and rules are observed
    and reported in the plan, never touched.
  - C(changed) is true exactly when the plan had changes; a second run with the same
    spec reports C(changed=false).
  - What the backends warn of (the C(!! warning:) lines of C(k3snet plan)) are task
    warnings, and so are the spec's objects none of the backends in use manages.
  - The same library calls as C(k3snet apply) and C(k3snet destroy); the node needs
    the k3snet Python package (see the requirements).
options:
  spec_path:
    description:
      - Path of a spec file (YAML or JSON) B(on the managed node).
      - In check mode, a file an earlier task of the play would copy there is not written,
        so the plan is the one of the spec already on the node. To review an edited spec
        with C(--check --diff), give it as O(spec) (see the examples).
      - Mutually exclusive with O(spec).
    type: path
  spec:
    description:
      - The spec as a mapping, the same keys as a spec file (a file on the controller
        reads in with the C(ansible.builtin.file) lookup and the C(from_yaml) filter,
        see the examples).
      - Mutually exclusive with O(spec_path).
    type: dict
  state:
    description:
      - V(present) applies the spec.
      - V(absent) removes everything k3snet owns through the backends (owned sysctls
        get their recorded previous values back), like C(k3snet destroy).
      - No spec is needed then. Without a spec or O(backends), every node backend
        (V(netlink), V(nftables), V(iptables) in both its nft and legacy flavours) looks
        for k3snet's own objects, and those holding any remove them (the return value
        C(discovered) says which); a backend that cannot look (its tool missing) is a task
        warning, one the system refused to let look (no root nor CAP_NET_ADMIN, no
        C(become)) fails the task, nothing removed. A CNI backend's settings (flannel,
        calico, cilium) need the spec or O(backends).
    type: str
    choices: [present, absent]
    default: present
  backends:
    description:
      - Backends to use, each V(NAME) or V(NAME:KINDS) (for example V(iptables:forward)).
      - Default the spec's C(backends), else V(netlink) and V(nftables), as the
        C(k3snet) command. An empty list is refused.
    type: list
    elements: str
  backend_options:
    description:
      - "Keyword options per backend name, for example
        V({netlink: {state_dir: /var/lib/k3snet}}). Unknown options are refused with the
        list of those the backend accepts."
    type: dict
    default: {}
  netns:
    description:
      - Act inside this network namespace (a name as C(ip netns) knows it) instead of
        the host's own.
    type: str
  allow_conflicts:
    description:
      - Apply the rest of the plan even when foreign state blocks part of it
        (otherwise the task fails and nothing is changed). Each part left unmet is a
        task warning.
    type: bool
    default: false
  allow_teardown:
    description:
      - Apply even a plan that deletes everything k3snet owns through a backend
        (an emptied or truncated spec). Refused by default; O(state=absent) is the
        way to remove everything.
    type: bool
    default: false
  allow_disruptive:
    description:
      - "Let CNI backends make changes that disrupt running pods (a Calico pool deleted
        and re-created, a flannel network changed, a CNI config k3snet wrote removed),
        which they refuse otherwise, as C(k3snet apply --allow-disruptive) does. The
        spec's C(cni.allowDisruptive: true) allows them too; with O(state=absent) this
        option is the only way. In check mode each disruptive change is a task warning."
    type: bool
    default: false
  facts:
    description:
      - Read the node's interfaces and routes (C(ip -j)) to check the spec against
        them (devices exist, gateways are reachable), when a backend acts on the node
        (not the memory backend or a remote one), as C(k3snet apply) does.
      - They are read in the network namespace the backends act in (O(netns), or a
        C(netns) in O(backend_options) or the spec's C(backends)); backends in two
        namespaces fail the task unless O(facts=false).
    type: bool
    default: true
  lock_timeout:
    description:
      - Seconds to wait for another k3snet process (the agent, another run) acting
        in the same network namespace, from V(0) (try once) to below a day.
      - Another value fails the task before anything is read, with C(rc) V(64)
        (C(ParameterError)), as C(k3snet apply --lock-timeout) refuses it.
    type: float
    default: 60
requirements:
  - python >= 3.11 on the managed node
  - k3snet (with the C(spec) extra for YAML spec files; C(nftables) or C(iptables)
    extras for those backends)
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying
      target.
    support: full
    details: Computes the plan and runs the backends' own check of it; changes nothing.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in
      check_mode), when in diff mode.
    support: full
    details: The objects k3snet owns before, and after the plan.
notes:
  - Needs root (or C(CAP_NET_ADMIN)) on the node; use O(ignore:become=true).
  - SIGTERM or SIGHUP (a stopped C(ansible-pull) unit, a cancelled CI job), or SIGINT
    (Ctrl-C reaching a module run through the local connection), takes back an
    apply in progress, as C(k3snet apply) does, and fails the task with C(changed=false)
    (with O(state=absent) naming no spec or backend, what the backends before the stopped
    one removed stays removed, and the task reports C(changed=true) and names it in C(msg)).
author:
  - k3snet developers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Pods reach the database subnet (spec file shipped to the node first)
  k3snet.k3snet.egress:
    spec_path: /etc/k3snet/egress.yaml
  become: true

- name: The same with an inline spec, in check mode and with a diff
  k3snet.k3snet.egress:
    spec:
      cluster:
        podCIDRs: [10.42.0.0/16]
      destinations:
        - cidr: 192.168.2.0/24
          gateway: 192.168.1.1
          device: eth0
    backends: [netlink, nftables]
  check_mode: true
  diff: true
  become: true

- name: A spec kept next to the playbook, on the controller
  k3snet.k3snet.egress:
    spec: "{{ lookup('ansible.builtin.file', 'files/egress.yaml') | from_yaml }}"
  become: true

- name: Remove everything k3snet owns on the node (through every backend holding any)
  k3snet.k3snet.egress:
    state: absent
  become: true
"""

RETURN = r"""
changed:
  description:
    - Whether the plan had changes (in check mode, whether it would).
    - A failed task changed nothing (the backends roll back what they did), but when
      undoing a failed apply failed too; then C(changed) is true, as the node may be
      half-changed (C(msg) names the change that failed). So with O(state=absent) through
      several backends, when a later one fails after an earlier one's removal, which
      stays (C(msg) names it, C(rc) is V(5)).
  returned: always
  type: bool
msg:
  description: The plan's summary line, or that nothing was to do (with O(state=absent),
    as C(k3snet destroy) says it); on failure, what failed.
  returned: always
  type: str
  sample: "Plan: 6 to add, 0 to replace, 0 to delete."
plan:
  description: The plan as k3snet's versioned JSON (C(k3snet plan --output json)).
  returned: success
  type: dict
  sample: {"format": 1, "changes": [], "notes": []}
plan_text:
  description: The plan as C(k3snet plan) prints it (V(+) add, V(~) replace, V(-) delete,
    V(=) met by foreign state, V(!) conflict).
  returned: success
  type: str
applied:
  description: The changes applied, in order (empty in check mode or when nothing was to do).
  returned: success
  type: list
  elements: dict
operations:
  description: How many system operations the apply took.
  returned: success
  type: int
discovered:
  description:
    - With O(state=absent) and neither a spec nor O(backends), the node backends looked
      through, as C(k3snet destroy --output json) says them; C(held) maps each backend
      holding k3snet's objects (V(netlink), V(nftables), V(iptables-nft),
      V(iptables-legacy)) to how many; C(empty) lists those holding none, C(unavailable)
      those that could not look.
  returned: success, with O(state=absent) naming no spec or backend
  type: dict
  sample: {"held": {"netlink": 4, "iptables-nft": 4}, "empty": ["nftables"],
           "unavailable": []}
diff:
  description: The owned objects before and after the plan, one per line.
  returned: success, in diff mode
  type: dict
rc:
  description:
    - The exit code C(k3snet apply) (or C(destroy)) exits with for the same failure, the
      table of docs/cli.md; V(75) is busy (another k3snet process, such as the agent, held
      the namespace's lock past O(lock_timeout); nothing was changed, a later run may
      succeed), V(4) a conflict, V(5) a failed apply whose undo failed too (or a removal
      through several backends that failed after an earlier one's, which stays), V(64) a
      parameter the module refuses (as the command's parser would, O(backends=[]) or an
      O(lock_timeout) out of range), V(143), V(129) or V(130) stopped by SIGTERM, SIGHUP
      or SIGINT, V(1) any other failure.
  returned: failure (but Ansible's own checks of the options)
  type: int
  sample: 75
error:
  description:
    - What failed, as the C(error) object of the C(k3snet --output json) error document
      (schema C(error)).
  returned: failure (but Ansible's own checks of the options)
  type: dict
  contains:
    type:
      description:
        - k3snet's error class (V(LockTimeoutError), V(ConflictError), V(SpecError),
          V(TeardownError), V(CheckError), V(ApplyError), V(RollbackError),
          V(BackendOptionError) ...), or V(ParameterError), V(OSError), V(ImportError)
          (k3snet missing on the node, failing to import or too old), V(SIGTERM),
          V(SIGHUP) or V(SIGINT).
      type: str
      sample: LockTimeoutError
    message:
      description: The same as C(msg).
      type: str
    problems:
      description: Each problem on its own (a spec's, with its path); empty when the
        message is the one problem.
      type: list
      elements: str
"""

import importlib.util
import logging
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import Any

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

K3SNET_FOUND: str | None = None  # "VERSION (PATH)" of a k3snet that imports at all
K3SNET_ABSENT = False  # no k3snet package on this Python's path at all
try:
    import k3snet

    K3SNET_FOUND = f"{getattr(k3snet, '__version__', '?')} ({k3snet.__file__})"
    from k3snet._admin_path import admin_path
    from k3snet._logline import printable
    from k3snet.backends.discover import (
        CLUSTER_BACKENDS,
        NODE_BACKENDS,
        Discovery,
        cluster_left_behind,
        discover_owners,
        left_behind,
    )
    from k3snet.backends.kit import held_after_commit, option_seconds
    from k3snet.backends.options import resolve_backend_options
    from k3snet.backends.registry import backend_options as registered_options
    from k3snet.backends.registry import create_backend, path_options
    from k3snet.cli import (
        EXIT_ERROR,
        EXIT_HALF_CHANGED,
        EXIT_INTERRUPTED,
        EXIT_USAGE,
        NOTHING_TO_DESTROY,
        disruptive_notes,
        error_code,
        refuse_foreign_spec,
        sigterm_undoes,
        unmanaged_warnings,
    )
    from k3snet.converge import (
        compile_for,
        destroy_each,
        facts_namespace,
        reads_node_facts,
        removed_before,
        route_protocol,
    )
    from k3snet.errors import BackendOptionError, ModelError
    from k3snet.facts import gather_facts
    from k3snet.model.sysctl import redact_secrets
    from k3snet.spec import check_backend_options, spec_backend_options
    from k3snet.spec.load import refuse_foreign_imports, sudo_invoker
except (ImportError, SyntaxError) as exc:  # SyntaxError: a k3snet for a newer Python
    K3SNET_IMPORT_ERROR: str | None = traceback.format_exc()
    K3SNET_MISSING = str(exc)
    # Not there at all, rather than there but failing (a dependency missing: attrs, ...).
    K3SNET_ABSENT = isinstance(exc, ModuleNotFoundError) and exc.name == "k3snet"
else:
    K3SNET_IMPORT_ERROR = None

# The same default as the `k3snet` command's, so a playbook and the command agree.
DEFAULT_BACKENDS = ("netlink", "nftables")

ARGUMENT_SPEC: dict[str, Any] = {
    "spec_path": {"type": "path"},
    "spec": {"type": "dict"},
    "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
    "backends": {"type": "list", "elements": "str"},
    "backend_options": {"type": "dict", "default": {}},
    "netns": {"type": "str"},
    "allow_conflicts": {"type": "bool", "default": False},
    "allow_teardown": {"type": "bool", "default": False},
    "allow_disruptive": {"type": "bool", "default": False},
    "facts": {"type": "bool", "default": True},
    "lock_timeout": {"type": "float", "default": 60.0},
}


class ParameterError(Exception):
    """Module parameters that ask for nothing to act on (the CLI's parser refuses its own
    such arguments, exit 64); a backend option is a ``BackendOptionError``, as the CLI's."""


def load_spec(params: dict[str, Any]) -> k3snet.Spec | None:
    """The spec from ``spec_path`` (a file on the node) or ``spec`` (a mapping), if any."""
    if params["spec_path"] is not None:
        # As `k3snet apply -f`: a file another user could write would be theirs to change
        # what the module applies as root.
        refuse_foreign_spec(params["spec_path"])
        return k3snet.load_spec(params["spec_path"])
    if params["spec"] is not None:
        # A file it imports (masquerade.ipMasqAgentConfig) is read on the node: refused
        # as a spec_path's imports are, when another user could change it.
        refuse_foreign_imports(params["spec"], invoker=sudo_invoker(),
                               source="the spec option")
        return k3snet.Spec.from_dict(params["spec"], source="the spec option")
    return None


def build_backend(params: dict[str, Any], spec: k3snet.Spec | None,
                  stack: ExitStack) -> k3snet.BackendGroup:
    """The backend group the task names (closed by ``stack``)."""
    if params["backends"] is not None and not params["backends"]:
        # A template that rendered no backend: the defaults would act instead, unasked.
        raise ParameterError("backends is an empty list: name at least one backend, or "
                             "leave the option out for the spec's (else netlink and "
                             "nftables)")
    names = params["backends"] or (list(spec.backends) if spec is not None and spec.backends
                                   else list(DEFAULT_BACKENDS))
    options: dict[str, Any] = params["backend_options"]
    unused = sorted(set(options) - {n.partition(":")[0] for n in names})
    if unused:
        raise BackendOptionError(f"backend_options names backends not in use: "
                                 f"{', '.join(unused)} (backends: {', '.join(names)})")
    used = sorted({n.partition(":")[0] for n in names})
    if spec is not None:  # the spec's backends: options, refused as `k3snet apply -f` does
        check_backend_options(spec, registered_options,
                              [n for n in used if spec_backend_options(spec, n)],
                              paths=path_options)
    members = []
    for entry in names:
        name, kinds = entry.split(":", 1) if ":" in entry else (entry, "")
        chosen = options.get(name) or {}
        if not isinstance(chosen, dict):
            raise BackendOptionError(f"backend_options.{name} must be a mapping of option "
                                     "names to values")
        # As `k3snet apply -f` builds it: the spec's options, then the task's netns and
        # allow_disruptive or the spec's cni.allowDisruptive and the environment's
        # K3SNET_STATE_DIR ... (to the backends that declare them), then the task's
        # backend_options. The same environment, the same sysctl record as the CLI's: the
        # one kept elsewhere, neither gave back a sysctl the other had taken over.
        wanted = resolve_backend_options(
            name, spec_backend_options(spec, name) if spec is not None else None,
            netns=params["netns"],
            allow_disruptive=params["allow_disruptive"] or (
                spec is not None and spec.cni.disruptive_allowed),
            explicit=chosen)
        try:
            # The CLI's own constructor: an undeclared option refused with the backend's
            # list (a factory taking **options takes any), a factory that returns no
            # backend refused (not a traceback from the ExitStack).
            made = create_backend(name, **wanted)
        except ValueError as exc:  # an option value the constructor refuses as Python does
            if isinstance(exc, k3snet.K3snetError):
                raise
            raise BackendOptionError(f"backend {name!r}: {exc}") from exc
        # Closed as the CLI's group closes its members: a backend need not be a context
        # manager (docs/custom-backend.md asks for close, not __enter__).
        stack.callback(made.close)
        members.append(k3snet.Member(made, kinds.split(",") if kinds else None))
    return k3snet.BackendGroup(members)


def discover(params: dict[str, Any], stack: ExitStack) -> Discovery:
    """``state=absent`` naming no spec nor backend: every node backend holding k3snet's
    objects, as ``k3snet destroy`` without ``-f`` or ``--backend`` finds them (closed by
    ``stack``). Through netlink and nftables alone, a node set up with ``backends:
    [netlink, iptables]`` kept k3snet's iptables chains (its masquerade)."""
    options: dict[str, Any] = params["backend_options"]
    names = {name for _, name, _ in NODE_BACKENDS}
    unused = sorted(set(options) - names)
    if unused:
        raise BackendOptionError(f"backend_options names backends not in use: "
                                 f"{', '.join(unused)} (looked through: "
                                 f"{', '.join(sorted(names))})")
    resolved = {}
    for name in sorted(names):
        chosen = options.get(name) or {}
        if not isinstance(chosen, dict):
            raise BackendOptionError(f"backend_options.{name} must be a mapping of option "
                                     "names to values")
        resolved[name] = resolve_backend_options(name, None, netns=params["netns"],
                                                 explicit=chosen)
    return stack.enter_context(discover_owners(resolved))


def failure(msg: str, kind: str, rc: int, problems: Sequence[object] = (), *,
            changed: bool = False) -> dict[str, Any]:
    """A failed task's result: ``msg``, and what a playbook tests to act on the failure
    (retry a busy node, ``until: result.rc | default(0) != 75``): ``rc``, the exit code of
    ``k3snet apply`` for it, and ``error``, the object of the CLI's ``error`` document."""
    shown = msg
    if K3SNET_IMPORT_ERROR is None:
        # k3snet's messages quote others' text (a foreign table's name, an API server's):
        # no escape sequence for a callback that prints msg as it is. Its lines are kept
        # (a rollback's notes, each on its own): Ansible shows msg as one value. The
        # error's message stays as the CLI's JSON document has it, the text itself.
        shown = "\n".join(printable(line) for line in msg.split("\n"))
    return {"msg": shown, "changed": changed, "rc": rc,
            "error": {"type": kind, "message": msg, "problems": [str(p) for p in problems]}}


class TaskWarnings(logging.Handler):
    """Log records as task warnings: a module's stderr is not shown by Ansible."""

    def __init__(self, module: AnsibleModule) -> None:
        super().__init__(logging.WARNING)
        self.module = module

    def emit(self, record: logging.LogRecord) -> None:
        """Warn of ``record``'s message."""
        warn(self.module, record.getMessage())


def warn(module: AnsibleModule, text: str) -> None:
    """``text`` as a task warning, as ``k3snet plan`` prints a ``!! warning:`` line: it
    quotes what others named (a foreign table, chain or interface), and Ansible shows it
    on the controller's terminal as it is (an escape sequence cleared the screen)."""
    module.warn(printable(text))


def owned_lines(state: k3snet.State) -> str:
    """The owned objects, one per line, in k3snet's order (a diff's before or after)."""
    return "".join(f"{o.describe()}\n" for o in state.ordered)


def converge_or_destroy(module: AnsibleModule, backend: k3snet.BackendGroup,
                        spec: k3snet.Spec | None) -> k3snet.Convergence:
    """``k3snet.converge`` to the spec, or ``k3snet.destroy`` (``state=absent``)."""
    params = module.params
    if params["state"] == "absent":
        return k3snet.destroy(backend, dry_run=module.check_mode,
                              lock_timeout=params["lock_timeout"])
    if spec is None:  # required_if already refuses this; kept for type checkers
        raise ParameterError("state=present needs spec_path or spec")
    # As `k3snet apply`: only for backends acting on this node, in the namespace they act
    # in (the netns option, or a netns in backend_options or the spec's backends:).
    local = params["facts"] and reads_node_facts(backend)
    facts = (gather_facts(facts_namespace(backend), protocol=route_protocol(backend))
             if local else None)
    return k3snet.converge(
        backend, compile_for(backend, spec, facts), dry_run=module.check_mode,
        allow_conflicts=params["allow_conflicts"],
        allow_teardown=params["allow_teardown"], lock_timeout=params["lock_timeout"])


def left_behind_warnings(params: dict[str, Any], spec: k3snet.Spec,
                         backend: k3snet.BackendGroup) -> tuple[str, ...]:
    """What the node backends not in use hold of k3snet's, left by a switch of backends
    (:func:`k3snet.backends.discover.left_behind`), and beside a cluster backend in use
    the other cluster backends (:func:`~k3snet.backends.discover.cluster_left_behind`),
    looked for with the options the task would give them; nothing when an option of
    theirs is refused."""
    given = params["backend_options"] or {}
    members = [m.backend for m in backend.members]
    in_use = {getattr(b, "name", None) for b in members}
    options: dict[str, dict[str, Any]] = {}
    try:
        for name in (*(n for _, n, _ in NODE_BACKENDS),
                     *(n for n in CLUSTER_BACKENDS if n in in_use)):
            chosen = given.get(name) if isinstance(given, dict) else None
            options[name] = resolve_backend_options(
                name, spec_backend_options(spec, name),
                netns=params["netns"], explicit=chosen if isinstance(chosen, dict) else None)
        return (*left_behind(members, options, netns=params["netns"]),
                *cluster_left_behind(members, options))
    except k3snet.K3snetError:
        return ()


_MADE = "k3snet_made"
"""The attribute of a signal's exception naming what the run had made (:func:`noted`)."""


def noted(change: Callable[[], k3snet.Convergence]) -> k3snet.Convergence:
    """``change()``, a signal after its commit waiting until what it made is noted on the
    signal's exception, as ``k3snet apply`` notes it: a SIGTERM once every part was made
    (Cilium's read of its pods to restart, Ansible's timeout) failed the task with
    "nothing was changed (an apply in progress was undone)", changed false, the change
    staying on the node."""
    made: list[str] = []
    try:
        with held_after_commit():
            done = change()
            if done.result is not None and done.result.applied:
                made.append(done.result.summary())
    except BaseException as exc:
        if made:
            vars(exc)[_MADE] = tuple(made)
        raise
    return done


def run(module: AnsibleModule) -> dict[str, Any]:
    """Converge (or destroy) as the parameters say; the result to exit with."""
    params = module.params
    try:
        # As the CLI's parser refuses --lock-timeout nan (exit 64), before the node is read.
        option_seconds("lock_timeout", params["lock_timeout"], zero=True)
    except ModelError as exc:
        raise ParameterError(str(exc)) from exc
    spec = load_spec(params)
    if params["state"] == "absent" and spec is None and params["backends"] is None:
        return run_discovered(module)
    with ExitStack() as stack:
        backend = build_backend(params, spec, stack)
        # As `k3snet apply`: SIGTERM (systemd stopping ansible-pull, a cancelled CI job,
        # `timeout`) or SIGHUP undoes an apply in progress instead of ending the process
        # between two backends. Only around it: a signal after it must not be reported
        # as "nothing was changed".
        with sigterm_undoes():
            done = noted(lambda: converge_or_destroy(module, backend, spec))
        for warning in backend.warnings:  # what `k3snet plan` prints as `!! warning:`
            warn(module, warning)
        if spec is not None and params["state"] != "absent":
            # As `k3snet apply`: the spec's objects no backend in use manages.
            for warning in unmanaged_warnings(backend, spec, params["backends"] or ()):
                warn(module, warning)
            # As `k3snet apply -f`: what the node backends not in use hold of k3snet's.
            for warning in left_behind_warnings(params, spec, backend):
                warn(module, warning)
        if module.check_mode:
            # What `k3snet plan` prints as `!! disruptive:`, judged before anything changed
            # (after an apply, the node already runs with the new value).
            command = "destroy" if params["state"] == "absent" else "apply"
            for line in disruptive_notes(backend, done.plan, command):
                warn(module, f"disruptive: {line}")
        for note in done.plan.conflicts:  # allowed: the rest is applied, this part unmet
            warn(module, "allow_conflicts: not applied, foreign state conflicts: "
                 + note.render().replace("\n", " "))
        if module.check_mode and not done.plan.empty:
            # What `apply` would run before changing anything: the backends' own dry run.
            problems = backend.check(done.plan)
            if problems:
                raise k3snet.CheckError("the plan would fail; nothing was applied:", problems)
    return result_of(module, done)


def run_discovered(module: AnsibleModule) -> dict[str, Any]:
    """``state=absent`` naming no spec nor backend: through every node backend holding
    k3snet's objects (:func:`discover`); check mode runs their own check of the plan."""
    params = module.params
    with ExitStack() as stack:
        found = discover(params, stack)
        refusal = found.refusal("state=absent")
        if refusal is not None:  # as `k3snet destroy`: not "ok", changed=false
            raise refusal
        with sigterm_undoes():
            done = noted(lambda: destroy_each(found.groups, dry_run=module.check_mode,
                                              check=module.check_mode,
                                              lock_timeout=params["lock_timeout"]))
        if done.result is not None and done.result.applied:
            found.look_again()  # else the warnings name what the removal took
        for warning in found.warnings:
            warn(module, warning)
        discovered = {"held": {o.label: o.owned for o in found.owners},
                      "empty": list(found.idle), "unavailable": list(found.unavailable)}
    return {**result_of(module, done), "discovered": discovered}


def result_of(module: AnsibleModule, done: k3snet.Convergence) -> dict[str, Any]:
    """The task's result: ``changed``, the plan, what was applied, the diff."""
    params = module.params
    text = done.plan.render()
    # As `k3snet destroy` says it: there is no spec for the node to match.
    nothing = params["state"] == "absent" and done.plan.empty
    result: dict[str, Any] = {
        "changed": not done.plan.empty,
        "msg": NOTHING_TO_DESTROY if nothing else text.splitlines()[0],
        # A secret sysctl's value as the text shows it: a task's result is printed (-v),
        # registered and kept by callbacks (docs/spec.md).
        "plan": redact_secrets(done.plan.to_dict()),
        "plan_text": text,
        "applied": redact_secrets([c.to_dict() for c in done.result.applied]
                                  if done.result else []),
        "operations": done.result.operations if done.result else 0,
    }
    if module._diff:  # how AnsibleModule says the play runs with --diff
        where = f" (netns {params['netns']})" if params["netns"] else ""
        result["diff"] = {
            "before_header": f"k3snet owned objects{where}",
            "after_header": f"k3snet owned objects after the plan{where}",
            "before": owned_lines(done.observed),
            "after": owned_lines(done.plan.apply_to(done.observed)),
        }
    return result


SECRET_SHORTEST = 8
"""Characters of the shortest ``stable_secret`` value :func:`secret_values` hides: Ansible
replaces each hidden value wherever it appears in the result, and a shorter one (``::1``,
no secret anyone guesses long) would hide every address holding it too."""

FASTOPEN_SHORTEST = 7
"""Characters of the shortest Fast Open key :func:`secret_values` hides: ``1-2-3-4``, the
shortest the kernel takes; its dashes make it no address."""


def secret_values(spec: Any) -> set[str]:
    """The values of the secret sysctls (``tcp_fastopen_key``, a ``stable_secret``) that
    the ``spec`` option sets, as written (each of a list's too), for Ansible to replace
    with ``********`` in the task's result: its ``invocation`` holds the task's
    arguments (printed with -vvv, registered, kept by callbacks). By name alone, as
    :func:`k3snet.model.sysctl.is_secret` reads a name it does not take, before k3snet
    is imported."""
    sysctls = spec.get("sysctls") if isinstance(spec, dict) else None
    if not isinstance(sysctls, dict):
        return set()
    found: set[str] = set()
    for name, value in sysctls.items():
        if isinstance(name, str) and ("stable_secret" in name or "fastopen_key" in name):
            shortest = FASTOPEN_SHORTEST if "fastopen_key" in name else SECRET_SHORTEST
            for item in value if isinstance(value, list) else [value]:
                text = str(item).strip()
                if len(text) >= shortest:
                    found.add(text)
    return found


def installed_at() -> str:
    """`` (PATH)`` of the k3snet package that Python finds but cannot import, if known."""
    try:
        found = importlib.util.find_spec("k3snet")
    except (ImportError, ValueError):
        return ""
    return f" ({found.origin})" if found is not None and found.origin else ""


def main() -> None:
    """Module entry point."""
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        mutually_exclusive=[("spec_path", "spec")],
        required_if=[("state", "present", ("spec_path", "spec"), True)],
        supports_check_mode=True,
    )
    # Before any exit_json or fail_json: each adds the task's arguments (`invocation`),
    # printed with -vvv and registered.
    module.no_log_values.update(secret_values(module.params["spec"]))
    # rc 1: k3snet.cli's EXIT_ERROR, which cannot be imported here.
    if K3SNET_IMPORT_ERROR is not None and K3SNET_FOUND is None and K3SNET_ABSENT:
        module.fail_json(**failure(missing_required_lib("k3snet"), "ImportError", 1),
                         exception=K3SNET_IMPORT_ERROR)
    if K3SNET_IMPORT_ERROR is not None and K3SNET_FOUND is None:
        # Installed, but it fails to import (pip install --no-deps, a dependency removed
        # since): "not installed, check ansible_python_interpreter" would send the user
        # to look for a k3snet that is there.
        module.fail_json(**failure(
            f"k3snet{installed_at()} on this node's Python ({sys.executable}) fails to "
            f"import: {K3SNET_MISSING}; install it again with its dependencies",
            "ImportError", 1), exception=K3SNET_IMPORT_ERROR)
    if K3SNET_IMPORT_ERROR is not None:
        # Installed, but a release without what this module imports (an older wheel):
        # "not installed, check ansible_python_interpreter" would send the user astray.
        module.fail_json(**failure(
            f"k3snet {K3SNET_FOUND} on this node's Python ({sys.executable}) is not one this "
            f"module can use: {K3SNET_MISSING}; install the k3snet release of this collection",
            "ImportError", 1), exception=K3SNET_IMPORT_ERROR)
    # ansible-playbook from cron runs the module with PATH=/usr/bin:/bin: the tools the
    # backends run (iptables-save, nft, ip) are in sbin, as for the `k3snet` command.
    admin_path()
    # The lock's "another k3snet process ... waiting up to N s" (the backends' own
    # warnings are in backend.warnings): else a task stands still without a word.
    logging.getLogger("k3snet.backends.lock").addHandler(TaskWarnings(module))
    # And each wait for a throttled API server (429, 503) before a request is sent again.
    logging.getLogger("k3snet.kube").addHandler(TaskWarnings(module))
    try:
        result = run(module)
    except k3snet.K3snetError as exc:
        # k3snet's messages name every problem (with its spec path); no traceback. Every
        # failure leaves the node as it was, but an apply whose undo failed too: the node
        # may be half-changed, and Ansible's changed says so.
        # What a removal through several backends had removed before one failed stays
        # removed: changed too (destroy_each's note says it). Not any note: an apply
        # with allow_conflicts notes the conflicts left out, and was rolled back.
        notes = getattr(exc, "__notes__", ())
        module.fail_json(**failure("\n".join([str(exc), *notes]), type(exc).__name__,
                                   error_code(exc), getattr(exc, "problems", ()),
                                   changed=isinstance(exc, k3snet.RollbackError)
                                   or bool(removed_before(exc))))
    except ParameterError as exc:  # what the CLI's parser refuses (exit 64)
        module.fail_json(**failure(str(exc), "ParameterError", EXIT_USAGE))
    except OSError as exc:  # an unreadable spec_path, a missing tool
        where = f"{exc.filename}: " if exc.filename is not None else ""
        # A backend's, after an earlier one's removal (state=absent): that stays, rc 5.
        stays = removed_before(exc)
        module.fail_json(**failure(
            "\n".join([where + (exc.strerror or str(exc)), *getattr(exc, "__notes__", ())]),
            "OSError", EXIT_HALF_CHANGED if stays else EXIT_ERROR, changed=bool(stays)))
    except Exception as exc:
        # A bug stays Ansible's MODULE FAILURE with its traceback, but one after an earlier
        # backend's removal (state=absent) leaves that removal done: rc 5 and changed, the
        # msg naming what stays, as the CLI's error document (an internal error's).
        stays = removed_before(exc)
        if not stays:
            raise
        module.fail_json(**failure(
            "\n".join([f"{type(exc).__name__}: {exc} (a bug: please report it)",
                       *getattr(exc, "__notes__", ())]),
            "InternalError", EXIT_HALF_CHANGED, changed=True),
            exception=traceback.format_exc())
    except (SystemExit, KeyboardInterrupt) as exc:
        # run's sigterm_undoes (SystemExit), or SIGINT (a module run through the local
        # connection, in the terminal's process group): a RollbackError above if undoing
        # failed. SIGINT's KeyboardInterrupt was Ansible's MODULE FAILURE, a traceback
        # with no word of the apply it had undone.
        if isinstance(exc, KeyboardInterrupt):
            signame, code = "SIGINT", EXIT_INTERRUPTED
        else:
            signame = "SIGHUP" if exc.code == signal.SIGHUP + 128 else "SIGTERM"
            code = int(exc.code or 1)
        # state=absent through several backends: what the first ones removed stays removed.
        notes = getattr(exc, "__notes__", ())
        made = vars(exc).get(_MADE, ())
        # Check mode applies nothing: no apply was in progress to undo.
        said = "; ".join(notes) or ("nothing was changed" if module.check_mode else
                                    "nothing was changed (an apply in progress was undone)")
        message = (f"stopped by {signame} after the change was made, which stays: "
                   + "; ".join(made) if made and not notes else f"stopped by {signame}: {said}")
        module.fail_json(**failure(message, signame, code, changed=bool(notes) or bool(made)))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
