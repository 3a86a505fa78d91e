"""Whether the ``cilium`` DaemonSet gives its agent the ip-masq-agent ConfigMap as a file.

Cilium's eBPF ip-masq-agent reads one file (``ip-masq-agent-config-path``, by default
``/etc/config/ip-masq-agent``); the ConfigMap k3snet edits reaches it only through a
volume of the agent's pod. Cilium's Helm chart adds that volume (ConfigMap
``ip-masq-agent``, ``optional: true``, its key ``config`` as the file ``ip-masq-agent``)
and its mount (``/etc/config`` in the ``cilium-agent`` container) only with
``ipMasqAgent.enabled=true``. Without them the agent finds no file and uses its default
list, whatever the ConfigMap says; and where nothing is mounted at ``/etc/config`` at all
(that directory is not in Cilium's image), the agent does not start: its ip-masq-agent
watches the file's directory, and fails, and the agent with it, where there is none
(:func:`agent_directory_missing`).

The DaemonSet is read as JSON, never written: its pod template is what every pod started
from now runs; where its status says some pods run an older one (mid-rollout, or the
``OnDelete`` update strategy: :func:`pods_lag`), those pods' own specs are what the
agents running there read the file through (:func:`pod_as_daemonset` judges one).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

__all__ = ["AGENT_CONTAINER", "BUILD_CONFIG", "CONFIG_DIR_KEY", "CONFIG_FILE_KEY",
           "CONFIG_PATH_FLAG", "CONFIG_PATH_VARIABLE", "DEFAULT_AGENT_FILE", "DEFAULT_DAEMONSET",
           "AgentOption", "ConfigSources", "agent_config_dir_missing", "agent_config_path",
           "agent_directory_missing", "agent_env_reads", "agent_file_copied", "agent_file_mounted",
           "agent_file_unreadable", "agent_options", "config_sources", "option_variable",
           "pod_as_daemonset", "pod_node", "pods_lag", "runs_agent", "runs_nowhere",
           "variable_configmap_ref"]

DEFAULT_DAEMONSET = "cilium"
"""The name of Cilium's agent DaemonSet (in Cilium's namespace), as Helm installs it."""

AGENT_CONTAINER = "cilium-agent"
"""The container of the DaemonSet's pods that runs the Cilium agent."""

DEFAULT_AGENT_FILE = "/etc/config/ip-masq-agent"
"""Where the agent reads the ip-masq-agent file (its ``ip-masq-agent-config-path`` flag)."""


CONFIG_PATH_FLAG = "--ip-masq-agent-config-path"
"""The agent's argument naming the ip-masq-agent file (``ip-masq-agent-config-path``)."""

CONFIG_FILE_KEY = "config"
"""The agent's option naming its config file (``--config``, ``CILIUM_CONFIG``): viper's
``ReadInConfig`` reads it after the config directory and replaces what that gave
(``cilium-config`` and the CiliumNodeConfigs laid over it)."""

CONFIG_PATH_VARIABLE = "CILIUM_IP_MASQ_AGENT_CONFIG_PATH"
"""The agent's environment variable for ``ip-masq-agent-config-path`` (Cilium binds each
option to ``CILIUM_`` and its name, upper case, ``-`` as ``_``: ``option.BindEnv``)."""


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _sources_of(volume: Mapping[str, Any], configmap: str) -> list[dict[str, Any]]:
    """The parts of ``volume`` that project the ConfigMap ``configmap``: a ``configMap``
    volume, or a ``projected`` one's ``configMap`` sources."""
    sources = [volume["configMap"]] if isinstance(volume.get("configMap"), dict) else []
    projected = volume.get("projected")
    if isinstance(projected, dict):
        sources += [s["configMap"] for s in _dicts(projected.get("sources"))
                    if isinstance(s.get("configMap"), dict)]
    return [s for s in sources if _text(s.get("name")) == configmap]


def _files_of(sources: list[dict[str, Any]], key: str) -> list[str]:
    """The paths inside the volume holding ``key``: the ``items`` naming it, else (no
    ``items``) a file named as the key."""
    found = []
    for source in sources:
        items = _dicts(source.get("items"))
        found += [_text(i.get("path")) for i in items
                  if _text(i.get("key")) == key and _text(i.get("path"))] if items else [key]
    return [posixpath.normpath(f) for f in found]


def _pod_and_agent(daemonset: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The pod template's spec of ``daemonset`` and its ``cilium-agent`` container (None:
    none)."""
    spec = daemonset.get("spec")
    template = spec.get("template") if isinstance(spec, dict) else None
    pod = template.get("spec") if isinstance(template, dict) else None
    pod = pod if isinstance(pod, dict) else {}
    agent = next((c for c in _dicts(pod.get("containers"))
                  if c.get("name") == AGENT_CONTAINER), None)
    return pod, agent


# The agent's program, as a command names it (``cilium-agent``, ``/usr/bin/cilium-agent``).
_AGENT_PROGRAM = "cilium-agent"


def _argv(agent: Mapping[str, Any]) -> list[str]:
    """The container ``agent``'s ``command`` and ``args``, as text."""
    argv: list[str] = []
    for name in ("command", "args"):
        value = agent.get(name)
        argv += [a for a in value if isinstance(a, str)] if isinstance(value, list) else []
    return argv


def runs_agent(daemonset: Mapping[str, Any]) -> bool:
    """Whether the pods of ``daemonset`` (JSON) run Cilium's agent: a ``cilium-agent``
    container whose command, where it has one, names ``cilium-agent`` (its program, a
    wrapper's argument, a shell's script). One running another program runs none: a debug
    copy's ``sleep``, Helm's ``sleepAfterInit`` loop (``/bin/bash -c -- 'while true; do
    sleep 30; done'``). Without a command, the image's entrypoint runs: taken as the agent.

    >>> runs_agent({"spec": {"template": {"spec": {"containers": [{"name": "cilium-envoy"}]}}}})
    False
    >>> debug = {"name": "cilium-agent", "command": ["sleep"], "args": ["infinity"]}
    >>> runs_agent({"spec": {"template": {"spec": {"containers": [debug]}}}})
    False
    """
    agent = _pod_and_agent(daemonset)[1]
    if agent is None:
        return False
    command = agent.get("command")
    if not isinstance(command, list) or not command:  # the image's entrypoint
        return True
    return any(_AGENT_PROGRAM in a for a in _argv(agent))


def runs_nowhere(daemonset: Mapping[str, Any]) -> bool:
    """Whether ``daemonset`` (JSON) surely runs no pod now, as its status says: its
    controller has seen its latest spec (``status.observedGeneration`` at
    ``metadata.generation``) and schedules it on no node (``desiredNumberScheduled`` 0: a
    node pool scaled to zero, a ``nodeSelector`` no node has), with no pod left running on
    a node it no longer selects (``currentNumberScheduled``, ``numberMisscheduled`` 0). A
    status not yet written tells nothing: False.

    >>> runs_nowhere({"metadata": {"generation": 1}, "status": {"observedGeneration": 1,
    ...     "desiredNumberScheduled": 0, "currentNumberScheduled": 0, "numberMisscheduled": 0}})
    True
    """
    metadata, status = daemonset.get("metadata"), daemonset.get("status")
    if not isinstance(metadata, dict) or not isinstance(status, dict):
        return False
    generation, seen = metadata.get("generation"), status.get("observedGeneration")
    if type(generation) is not int or type(seen) is not int or seen < generation:
        return False
    return all(type(status.get(k)) is int and status.get(k) == 0 for k in (
        "desiredNumberScheduled", "currentNumberScheduled", "numberMisscheduled"))


def pods_lag(daemonset: Mapping[str, Any]) -> bool:
    """Whether some pods of ``daemonset`` may run an older pod template than its own: its
    controller has not yet seen its latest spec (``status.observedGeneration`` behind
    ``metadata.generation``), or fewer of its pods run the latest one than are scheduled
    (``updatedNumberScheduled`` below ``desiredNumberScheduled``: a rollout under way,
    or the ``OnDelete`` strategy, which replaces a pod only once it is deleted). The API
    server leaves ``updatedNumberScheduled`` out where it is 0 (``omitempty``: no pod on
    the latest template yet, as just after a change under ``OnDelete``), while it always
    writes ``desiredNumberScheduled``: absent beside it, it counts as 0.

    >>> pods_lag({"metadata": {"generation": 2}, "status": {"observedGeneration": 2,
    ...           "desiredNumberScheduled": 3, "updatedNumberScheduled": 1}})
    True
    """
    metadata, status = daemonset.get("metadata"), daemonset.get("status")
    if not isinstance(metadata, dict) or not isinstance(status, dict):
        return False

    def number(value: Any) -> int | None:
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    generation, seen = number(metadata.get("generation")), number(status.get("observedGeneration"))
    desired = number(status.get("desiredNumberScheduled"))
    updated = number(status.get("updatedNumberScheduled", 0 if desired is not None else None))
    return ((generation is not None and seen is not None and seen < generation)
            or (updated is not None and desired is not None and updated < desired))


def pod_as_daemonset(pod: Mapping[str, Any]) -> dict[str, Any]:
    """A pod (JSON data) as a DaemonSet whose pod template is its spec: what the agent in
    it runs with, for :func:`agent_file_mounted` and its siblings."""
    spec = pod.get("spec")
    return {"spec": {"template": {"spec": spec if isinstance(spec, dict) else {}}}}


def pod_node(pod: Mapping[str, Any]) -> str | None:
    """The Node a pod (JSON data) of a DaemonSet runs on: its ``spec.nodeName``, else,
    not yet scheduled, the one its DaemonSet's controller made it for (the required node
    affinity it writes into each pod: one term, ``matchFields`` ``metadata.name In
    [NODE]``); ``None``: neither.

    >>> pod_node({"spec": {"affinity": {"nodeAffinity": {
    ...     "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
    ...         {"matchFields": [{"key": "metadata.name", "operator": "In",
    ...                           "values": ["edge-1"]}]}]}}}}})
    'edge-1'
    """
    spec = pod.get("spec")
    spec = spec if isinstance(spec, dict) else {}
    name = spec.get("nodeName")
    if isinstance(name, str) and name:
        return name
    affinity = spec.get("affinity")
    node = affinity.get("nodeAffinity") if isinstance(affinity, dict) else None
    required = (node.get("requiredDuringSchedulingIgnoredDuringExecution")
                if isinstance(node, dict) else None)
    terms = _dicts(required.get("nodeSelectorTerms")) if isinstance(required, dict) else []
    # Several terms (any one may be met), or more than the node's name: not one node.
    fields = _dicts(terms[0].get("matchFields")) if len(terms) == 1 else []
    if len(fields) != 1 or _dicts(terms[0].get("matchExpressions")):
        return None
    (field,) = fields
    values = field.get("values")
    if (field.get("key"), field.get("operator")) != ("metadata.name", "In") or not (
            isinstance(values, list) and len(values) == 1):
        return None
    return _text(values[0]) or None


class AgentOption(NamedTuple):
    """A Cilium option the ``cilium-agent`` container sets (:func:`agent_options`)."""

    given: str
    """How: ``--KEY`` (an argument) or ``$CILIUM_KEY`` (a variable of its ``env``)."""
    value: str | None
    """The text the agent reads (``None``: known only where the pod runs, :attr:`unknown`)."""
    unknown: str | None = None
    """Why the value is known only where the pod runs (``None``: it is known)."""
    stray: str | None = None
    """The argument right after a bool flag given alone (``--KEY false``), which pflag
    leaves positional and ``cilium-agent`` (a command with subcommands) refuses at start
    as an unknown command (``None``: none)."""


def option_variable(key: str) -> str:
    """The environment variable Cilium binds its option ``key`` to (``option.BindEnv``:
    ``CILIUM_`` and the name, upper case, ``-`` as ``_``).

    >>> option_variable("enable-ip-masq-agent")
    'CILIUM_ENABLE_IP_MASQ_AGENT'
    """
    return "CILIUM_" + key.upper().replace("-", "_")


# The shells a container's command may run a script with (``sh -c 'exec cilium-agent ...'``).
_SHELLS = frozenset({"sh", "bash", "ash", "dash", "zsh", "ksh", "mksh"})

# The init processes a container's command may start its program under, each with its
# options that take a value: getopt's letters (tini's ``-p SIGNAL``, ``-e CODE``, ``-R A``;
# dumb-init's ``-r s:r``) and getopt_long's names (dumb-init's ``--rewrite``).
_INITS: dict[str, tuple[str, tuple[str, ...]]] = {
    "tini": ("peR", ()), "tini-static": ("peR", ()), "dumb-init": ("r", ("rewrite",))}


def _takes_next(arg: str, letters: str, names: tuple[str, ...]) -> bool:
    """Whether an init process's option ``arg`` takes the next argument as its value, as
    getopt reads it: a word of letters (``-sp SIGTERM``: -s, then -p, whose value is the
    rest of the word, else the next argument), or a name getopt_long takes by any start
    of it (``--rew 15:2``), its value not given after ``=``."""
    if arg.startswith("--"):
        name = arg[2:]
        return "=" not in name and any(n.startswith(name) for n in names)
    for at, letter in enumerate(arg[1:], 1):
        if letter in letters:
            return at == len(arg) - 1
    return False


def _program(argv: list[str]) -> int:
    """Where in ``argv`` the program an init process runs starts (0: no init process):
    past ``tini`` or ``dumb-init`` and their options (:func:`_takes_next`), up to their
    ``--`` or the first argument that is no option. The agent's flags are read from
    there: the init's ``--`` ends its own options, not the agent's (pflag reads up to the
    agent's)."""
    index = 0
    while index < len(argv) and posixpath.basename(argv[index]) in _INITS:
        letters, names = _INITS[posixpath.basename(argv[index])]
        index += 1
        while index < len(argv) and argv[index].startswith("-") and argv[index] != "-":
            arg = argv[index]
            index += 1
            if arg == "--":
                break
            if _takes_next(arg, letters, names):
                index += 1  # its value
    return index


def _shell_script(argv: list[str]) -> str | None:
    """The shell (``sh -c``, as it is named, with the init process it runs under) where
    ``argv`` runs a shell's ``-c`` script, where the agent's flags are text k3snet does
    not run (None: not a shell's script): ``sh -c``, ``/bin/bash -ec``, ``bash --norc -o
    pipefail -c``, ``busybox sh -c``, ``tini -- sh -c``, ``dumb-init sh -c``."""
    start = _program(argv)
    index = start + (1 if start < len(argv) and posixpath.basename(argv[start]) == "busybox"
                     else 0)
    if index >= len(argv) or posixpath.basename(argv[index]) not in _SHELLS:
        return None
    position = index + 1
    while position < len(argv):
        arg = argv[position]
        if arg in ("-o", "+o"):
            position += 1  # its option name
        elif arg == "--" or not arg.startswith(("-", "+")):
            return None  # a script file (or nothing): not -c
        elif not arg.startswith("--") and "c" in arg[1:]:
            return " ".join(argv[:position + 1])
        position += 1
    return None


def _flag_values(argv: list[str], keys: frozenset[str], booleans: frozenset[str]
                 ) -> tuple[dict[str, list[str]], dict[str, str]]:
    """The values of the ``--KEY`` arguments of ``argv`` as pflag reads them, each key's
    in order: up to ``--``; ``--KEY=VALUE``; a boolean's ``--KEY`` alone is ``true`` (the
    next argument is not its value: pflag takes it as a positional one, the second dict,
    where it is one cobra counts: not empty, not starting with ``-``), another's takes
    the next argument, whatever it looks like."""
    found: dict[str, list[str]] = {}
    strays: dict[str, str] = {}
    index = 0
    while index < len(argv) and argv[index] != "--":
        arg = argv[index]
        index += 1
        name, equals, value = arg[2:].partition("=")
        if not arg.startswith("--") or name not in keys:
            continue
        if equals:
            found.setdefault(name, []).append(value)
        elif name in booleans:
            found.setdefault(name, []).append("true")
            after = argv[index] if index < len(argv) else ""
            if after and not after.startswith("-"):
                strays.setdefault(name, after)
        elif index < len(argv):
            found.setdefault(name, []).append(argv[index])  # its value, whatever it looks like
            index += 1
    return found, strays


def agent_options(daemonset: Mapping[str, Any], keys: Iterable[str], *,
                  booleans: Iterable[str] = (), lists: Iterable[str] = ()
                  ) -> dict[str, AgentOption]:
    """The options of ``keys`` the ``cilium-agent`` container of ``daemonset`` sets, as
    the agent reads them over its ``--config-dir`` (``cilium-config`` and the
    CiliumNodeConfigs laid over it): viper takes a flag set on the command line first,
    then the option's variable (:func:`option_variable`), then the config directory.

    A flag: its ``command`` and ``args`` as pflag reads them (:func:`_flag_values`;
    ``booleans``: the keys whose flag is a bool), the last one given winning (``lists``:
    string-slice flags, whose values add up, joined by ``,``), with the ``$(NAME)``
    references of the container's ``env`` expanded as the kubelet expands them. Not
    given, the variable where set and not empty (viper takes an empty one as unset), as
    the kubelet sets it (its ``env``, ``$(NAME)`` references expanded). A value known only
    where the pod runs (a ``valueFrom``, an ``envFrom`` that may set it, a service's
    variable) has ``value`` ``None`` and :attr:`AgentOption.unknown` saying so. The value
    is taken as given, spaces and all (pflag keeps them, and so does Cilium). Not known
    either: every option where the container runs a shell's script (``sh -c 'exec
    cilium-agent ...'``: the flags are in its text), and each option no flag or variable
    sets where the agent is given a config file (``--config``, ``CILIUM_CONFIG``), which
    replaces its config directory (:data:`CONFIG_FILE_KEY`).

    >>> agent = {"name": "cilium-agent", "args": ["--enable-ip-masq-agent", "x"],
    ...          "env": [{"name": "CILIUM_ENABLE_BPF_MASQUERADE", "value": "true"}]}
    >>> found = agent_options({"spec": {"template": {"spec": {"containers": [agent]}}}},
    ...                       ["enable-ip-masq-agent", "enable-bpf-masquerade"],
    ...                       booleans=["enable-ip-masq-agent", "enable-bpf-masquerade"])
    >>> [(o.given, o.value) for o in found.values()]
    [('--enable-ip-masq-agent', 'true'), ('$CILIUM_ENABLE_BPF_MASQUERADE', 'true')]
    """
    pod, agent = _pod_and_agent(daemonset)
    if agent is None:
        return {}
    wanted = tuple(dict.fromkeys(keys))
    argv = _argv(agent)
    shell = _shell_script(argv)
    argv = argv[_program(argv):]  # the agent's own (an init process's `--` is not its)
    if shell is not None:
        # The flags are in the script's text: the one that runs the agent is not known
        # (nor which variables the script sets or drops), so no option is.
        return {key: AgentOption(f"--{key}", None, (
            f"the container runs its command through a shell ({shell} ...), whose script "
            "k3snet does not read: the agent's flags are in it")) for key in wanted}
    # enableServiceLinks false (unset: true): the kubelet gives the pod the API server's
    # variables alone, not those of the services of its namespace.
    service_links = pod.get("enableServiceLinks") is not False
    found = _given_options(agent, argv, wanted, booleans=frozenset(booleans),
                           joined=frozenset(lists), service_links=service_links)
    config = _given_options(agent, argv, (CONFIG_FILE_KEY,), booleans=frozenset(),
                            joined=frozenset(), service_links=service_links
                            ).get(CONFIG_FILE_KEY)
    if config is None or config.value == "":  # empty: none (viper looks in $HOME)
        return found
    # viper reads the config file after the config directory, and its ReadInConfig
    # replaces what the directory gave (cilium-config, the CiliumNodeConfigs): an option
    # neither a flag nor a variable sets is that file's, which k3snet does not read.
    why = (f"the agent is given the config file {config.value!r} ({config.given}), which "
           "replaces its config directory (cilium-config) and k3snet does not read"
           if config.value is not None else
           f"the agent's config file ({config.given}), which replaces its config directory "
           f"(cilium-config) where set, is not known: {config.unknown}")
    return {key: found.get(key) or AgentOption(config.given, None, why) for key in wanted}


def _given_options(agent: Mapping[str, Any], argv: list[str], wanted: tuple[str, ...], *,
                   booleans: frozenset[str], joined: frozenset[str], service_links: bool
                   ) -> dict[str, AgentOption]:
    """The options of ``wanted`` the container ``agent`` (its ``argv``) sets by flag or
    variable (:func:`agent_options`, but for a shell's script and a config file)."""
    flags, strays = _flag_values(argv, frozenset(wanted), booleans)
    found: dict[str, AgentOption] = {}
    for key in wanted:
        if key in flags:
            given = f"--{key}"
            try:
                values = [_expand(v, agent, service_links=service_links) for v in flags[key]]
            except ValueError as exc:
                found[key] = AgentOption(given, None, str(exc))
                continue
            found[key] = AgentOption(given, ",".join(values) if key in joined else values[-1],
                                     stray=strays.get(key))
            continue
        variable = option_variable(key)
        reference = f"$({variable})"
        try:
            value = _expand(reference, agent, service_links=service_links)
        except ValueError:
            found[key] = AgentOption(f"${variable}", None, (
                f"not given, the variable {variable}, which Cilium takes over its config "
                "directory, is set only where the pod runs"))
            continue
        named = any(e.get("name") == variable for e in _dicts(agent.get("env")))
        if value and (named or value != reference):
            found[key] = AgentOption(f"${variable}", value)
    return found


CONFIG_DIR_KEY = "config-dir"
"""The agent's option naming its config directory (``--config-dir``, ``CILIUM_CONFIG_DIR``;
Helm's ``/tmp/cilium/config-map``, which its ``config`` init container fills with
``cilium-config`` and the CiliumNodeConfigs of the node): none given, the agent reads
neither."""


def agent_config_dir_missing(daemonset: Mapping[str, Any]) -> bool:
    """Whether the ``cilium-agent`` container of ``daemonset`` is surely given no config
    directory (:data:`CONFIG_DIR_KEY`: no flag, no variable; an empty one is none), so its
    agent reads no ``cilium-config``; False where it has none of its own command (a
    shell's script) or the value is known only where the pod runs.

    >>> agent = {"name": "cilium-agent", "command": ["cilium-agent"], "args": ["--debug"]}
    >>> agent_config_dir_missing({"spec": {"template": {"spec": {"containers": [agent]}}}})
    True
    """
    if not runs_agent(daemonset):
        return False
    found = agent_options(daemonset, (CONFIG_DIR_KEY,)).get(CONFIG_DIR_KEY)
    return found is None or found.value == ""


def agent_config_path(daemonset: Mapping[str, Any]) -> str | None:
    """The ``--ip-masq-agent-config-path`` the ``cilium-agent`` container of ``daemonset``
    is started with, else its variable :data:`CONFIG_PATH_VARIABLE` (:func:`agent_options`:
    what the agent reads over its config directory); ``None``: neither; ValueError where
    it is known only where the pod runs (``valueFrom``, ``envFrom``, a service's).

    >>> agent = {"name": "cilium-agent", "command": ["cilium-agent"],
    ...          "args": ["--config-dir=/tmp/cilium/config-map",
    ...                   "--ip-masq-agent-config-path", "/etc/masq/config"]}
    >>> agent_config_path({"spec": {"template": {"spec": {"containers": [agent]}}}})
    '/etc/masq/config'
    """
    key = CONFIG_PATH_FLAG[2:]
    found = agent_options(daemonset, (key,)).get(key)
    if found is None:
        return None
    if found.value is None:
        raise ValueError(found.unknown)
    return found.value


class ConfigMapRef(NamedTuple):
    """The key of a ConfigMap of the pod's namespace a variable takes its value from
    (``valueFrom.configMapKeyRef``, :func:`variable_configmap_ref`)."""

    name: str
    key: str
    optional: bool
    """``optional: true``: the ConfigMap or its key missing, the kubelet sets no variable
    (else the container does not start)."""
    shadowed: bool = False
    """An ``envFrom`` (a ``prefix`` the name starts with) or an earlier ``env`` entry may
    set it too: what is left where ``optional`` and missing (the key present, the last
    ``env`` entry wins over them all, as the kubelet sets them)."""


def variable_configmap_ref(daemonset: Mapping[str, Any], variable: str) -> ConfigMapRef | None:
    """The ConfigMap key the ``cilium-agent`` container of ``daemonset`` takes its
    ``variable`` from: the last ``env`` entry naming it is a ``configMapKeyRef`` (None:
    not so, or no such entry), ``shadowed`` where an earlier one names it or an
    ``envFrom`` (a ``prefix`` it starts with) may set it, which the kubelet's
    ``optional`` ref left unset would leave.

    >>> agent = {"name": "cilium-agent", "env": [{"name": "CILIUM_DEBUG", "valueFrom": {
    ...     "configMapKeyRef": {"name": "pool", "key": "debug", "optional": True}}}]}
    >>> variable_configmap_ref(
    ...     {"spec": {"template": {"spec": {"containers": [agent]}}}}, "CILIUM_DEBUG")
    ConfigMapRef(name='pool', key='debug', optional=True, shadowed=False)
    """
    _, agent = _pod_and_agent(daemonset)
    if agent is None:
        return None
    named = [e for e in _dicts(agent.get("env")) if e.get("name") == variable]
    if not named:
        return None
    value_from = named[-1].get("valueFrom")
    ref = value_from.get("configMapKeyRef") if isinstance(value_from, dict) else None
    if not isinstance(ref, dict) or not _text(ref.get("name")) or not _text(ref.get("key")):
        return None
    shadowed = len(named) > 1 or any(variable.startswith(_text(source.get("prefix")))
                                     for source in _dicts(agent.get("envFrom")))
    return ConfigMapRef(_text(ref.get("name")), _text(ref.get("key")),
                        ref.get("optional") is True, shadowed)


def agent_env_reads(daemonset: Mapping[str, Any], name: str) -> bool:
    """Whether the ``cilium-agent`` container of ``daemonset`` takes a variable from the
    ConfigMap ``name`` of the pod's namespace (an ``env`` entry's ``configMapKeyRef``, an
    ``envFrom``'s ``configMapRef``): the kubelet reads it when the container starts.

    >>> agent = {"name": "cilium-agent", "env": [{"name": "CILIUM_DEBUG", "valueFrom": {
    ...     "configMapKeyRef": {"name": "cilium-config", "key": "debug"}}}]}
    >>> agent_env_reads({"spec": {"template": {"spec": {"containers": [agent]}}}},
    ...                 "cilium-config")
    True
    """
    _, agent = _pod_and_agent(daemonset)
    if agent is None:
        return False
    for entry in _dicts(agent.get("env")):
        value_from = entry.get("valueFrom")
        ref = value_from.get("configMapKeyRef") if isinstance(value_from, dict) else None
        if isinstance(ref, dict) and ref.get("name") == name:
            return True
    return any(isinstance(ref := source.get("configMapRef"), dict) and ref.get("name") == name
               for source in _dicts(agent.get("envFrom")))


# What a container's environment gives a $(NAME) of its command or args: the text, or
# None where only the kubelet knows it (valueFrom, or maybe an envFrom source).
_Env = Mapping[str, "str | None"]

# The names of the variables the kubelet gives a container for a service (the namespace's,
# with service links, and the API server's KUBERNETES_*, always: the kubelet's
# getServiceEnvVarMap): NAME_SERVICE_HOST, NAME_SERVICE_PORT[_PORTNAME], NAME_PORT and
# NAME_PORT_<port>_<PROTO>[_PROTO|_PORT|_ADDR].
_SERVICE_SUFFIX = (r"_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT(_[0-9]+_(TCP|UDP|SCTP)"
                   r"(_PROTO|_PORT|_ADDR)?)?)")
_SERVICE_VARIABLE = re.compile(r"[A-Z0-9_]+" + _SERVICE_SUFFIX)
_API_SERVER_VARIABLE = re.compile(r"KUBERNETES" + _SERVICE_SUFFIX)  # service "kubernetes"


def _expand(text: str, container: Mapping[str, Any], *, service_links: bool = True) -> str:
    """``text``, an argument of ``container``, with its ``$(NAME)`` references expanded
    from the container's environment as the kubelet expands them (``$$`` is ``$``; a name
    not defined stays as written), an ``env`` value's from the ones before it. ValueError
    where a name's value is known only to the kubelet (``valueFrom``; a name not in
    ``env`` where an ``envFrom`` may set it, one starting with its ``prefix``, or a
    service's variable, which the kubelet sets where ``env`` does not: with
    ``service_links`` false, the pod's ``enableServiceLinks: false``, only the API
    server's ``KUBERNETES_*``, the others staying as written)."""
    env: dict[str, str | None] = {}
    # An envFrom source may define any name starting with its prefix (none: ""; the
    # kubelet names each key of its ConfigMap or Secret prefix + key), for the env values
    # as for the argument.
    services = _SERVICE_VARIABLE if service_links else _API_SERVER_VARIABLE
    prefixes = [_text(source.get("prefix")) for source in _dicts(container.get("envFrom"))]

    def open_names(name: str) -> bool:
        return (any(name.startswith(p) for p in prefixes)
                or services.fullmatch(name) is not None)

    for entry in _dicts(container.get("env")):
        name = entry.get("name")
        if isinstance(name, str):
            value = entry.get("value")
            if "valueFrom" in entry:
                env[name] = None
            else:
                try:
                    env[name] = _substitute(value if isinstance(value, str) else "", env,
                                            open_names=open_names)
                except ValueError:
                    env[name] = None
    return _substitute(text, env, open_names=open_names)


def _substitute(text: str, env: _Env, *, open_names: Callable[[str], bool]) -> str:
    """``text`` with ``$(NAME)`` replaced from ``env`` (see :func:`_expand`; ``open_names``:
    whether a name not in ``env`` may be defined where it cannot be read, as an
    ``envFrom``'s or a service's variable may)."""
    out, index = [], 0
    while index < len(text):
        char = text[index]
        if char != "$" or index + 1 == len(text):
            out.append(char)
            index += 1
        elif text[index + 1] == "$":
            out.append("$")
            index += 2
        elif text[index + 1] == "(" and ")" in text[index + 2:]:
            end = text.index(")", index + 2)
            name = text[index + 2:end]
            unknown = name not in env and open_names(name)
            value = env.get(name, text[index:end + 1])
            if value is None or unknown:
                raise ValueError(f"$({name}) is set only where the pod runs")
            out.append(value)
            index = end + 1
        else:
            out.append(char)
            index += 1
    return "".join(out)


def _mounted_at(mount: Mapping[str, Any], inside: str) -> str | None:
    """Where the container sees the volume's path ``inside`` through ``mount`` (None: not
    through it; a ``subPathExpr`` is not evaluated)."""
    at = _text(mount.get("mountPath"))
    if not at or mount.get("subPathExpr"):
        return None
    sub = posixpath.normpath(_text(mount.get("subPath")) or ".")
    if sub == ".":
        return posixpath.normpath(posixpath.join(at, inside))
    if inside == sub:
        return posixpath.normpath(at)
    if inside.startswith(sub + "/"):
        return posixpath.normpath(posixpath.join(at, inside[len(sub) + 1:]))
    return None


def agent_file_mounted(daemonset: Mapping[str, Any], where: str, configmap: str, *,
                     key: str = "config", path: str = DEFAULT_AGENT_FILE
                     ) -> tuple[bool | None, str]:
    """Whether the agent container of ``daemonset`` (``where`` names it) sees ``key`` of
    the ConfigMap ``configmap`` at ``path``: ``(True, "")``; ``(False, why not)``; or
    ``(None, why not known)`` when its pods have no ``cilium-agent`` container.

    >>> ds = {"spec": {"template": {"spec": {"containers": [{"name": "cilium-agent"}]}}}}
    >>> agent_file_mounted(ds, "DaemonSet kube-system/cilium", "ip-masq-agent")
    (False, 'DaemonSet kube-system/cilium has no volume of the ConfigMap ip-masq-agent')
    """
    pod, agent = _pod_and_agent(daemonset)
    if agent is None:
        return None, (f"{where} has no {AGENT_CONTAINER} container: whether its agent reads "
                      f"the ConfigMap {configmap} is not known")
    volumes = _volumes(pod, configmap, key)
    missing = _no_volume(volumes, where, configmap, key)
    if missing is not None:
        return False, missing
    wanted = posixpath.normpath(path)
    seen = []
    for mount in _dicts(agent.get("volumeMounts")):
        for inside in volumes.get(_text(mount.get("name")), ()):
            at = _mounted_at(mount, inside)
            if at == wanted:
                return True, ""
            if at is not None:
                seen.append(at)
    found = f" (it is at {', '.join(sorted(set(seen)))})" if seen else ""
    return False, (f"the {AGENT_CONTAINER} container of {where} does not have the key {key} "
                   f"of the ConfigMap {configmap} at {wanted}{found}")


def _volumes(pod: Mapping[str, Any], configmap: str, key: str) -> dict[str, list[str]]:
    """The volumes of ``pod`` (a pod spec) of the ConfigMap ``configmap``, by name: the
    files of ``key`` in each."""
    return {_text(v.get("name")): _files_of(sources, key)
            for v in _dicts(pod.get("volumes")) if (sources := _sources_of(v, configmap))}


def _no_volume(volumes: dict[str, list[str]], where: str, configmap: str,
               key: str) -> str | None:
    """Why no volume of ``volumes`` (:func:`_volumes`) gives ``key`` of the ConfigMap,
    whatever path the agent reads (None: one does)."""
    if not volumes:
        return f"{where} has no volume of the ConfigMap {configmap}"
    if not any(volumes.values()):
        return f"no volume of {where} holds the key {key} of the ConfigMap {configmap}"
    return None


def agent_file_unreadable(daemonset: Mapping[str, Any], where: str, configmap: str, *,
                          key: str = "config") -> str | None:
    """Why the agent container of ``daemonset`` reads ``key`` of the ConfigMap
    ``configmap`` at no path at all (no volume of it, or none holding ``key``); None
    where some path would (or it has no agent container): for an agent whose file is not
    known (:func:`agent_config_path` raised).

    >>> ds = {"spec": {"template": {"spec": {"containers": [{"name": "cilium-agent"}]}}}}
    >>> agent_file_unreadable(ds, "pod kube-system/cilium-a", "ip-masq-agent")
    'pod kube-system/cilium-a has no volume of the ConfigMap ip-masq-agent'
    """
    pod, agent = _pod_and_agent(daemonset)
    if agent is None:
        return None
    return _no_volume(_volumes(pod, configmap, key), where, configmap, key)


def agent_file_copied(daemonset: Mapping[str, Any], configmap: str, *, key: str = "config",
                      path: str = DEFAULT_AGENT_FILE) -> bool:
    """Whether the agent container of ``daemonset`` has ``key`` of the ConfigMap
    ``configmap`` at ``path`` only through ``subPath`` mounts: copies the kubelet does not
    update when the ConfigMap changes, so the agent reads a change only when it restarts
    (a whole volume mounted, as Helm's chart does, is updated in place: not a copy).

    >>> mount = {"name": "m", "mountPath": "/etc/config/ip-masq-agent",
    ...          "subPath": "ip-masq-agent"}
    >>> volume = {"name": "m", "configMap": {"name": "ip-masq-agent",
    ...           "items": [{"key": "config", "path": "ip-masq-agent"}]}}
    >>> agent_file_copied({"spec": {"template": {"spec": {"volumes": [volume],
    ...     "containers": [{"name": "cilium-agent", "volumeMounts": [mount]}]}}}},
    ...     "ip-masq-agent")
    True
    """
    pod, agent = _pod_and_agent(daemonset)
    if agent is None:
        return False
    volumes = {_text(v.get("name")): _files_of(sources, key)
               for v in _dicts(pod.get("volumes")) if (sources := _sources_of(v, configmap))}
    wanted = posixpath.normpath(path)
    copied = False
    for mount in _dicts(agent.get("volumeMounts")):
        for inside in volumes.get(_text(mount.get("name")), ()):
            if _mounted_at(mount, inside) == wanted:
                if posixpath.normpath(_text(mount.get("subPath")) or ".") == ".":
                    return False
                copied = True
    return copied


def agent_directory_missing(daemonset: Mapping[str, Any], path: str = DEFAULT_AGENT_FILE
                            ) -> bool:
    """Whether the agent container of ``daemonset`` surely has no directory of ``path``
    (the ip-masq-agent file): Cilium's ip-masq-agent watches that directory (fsnotify)
    and fails to start without it, and the whole agent exits ("failed to add
    \"/etc/config\" dir to fsnotify watcher", every release since 1.8).

    Sure only of Cilium's default ``/etc/config``, which its image lacks, and only where no
    mount of the container is at it, inside it or around it (a host directory mounted
    at ``/etc`` may hold it); another directory may be in the image: not judged.

    >>> ds = {"spec": {"template": {"spec": {"containers": [{"name": "cilium-agent"}]}}}}
    >>> agent_directory_missing(ds)
    True
    """
    directory = posixpath.dirname(posixpath.normpath(path))
    if directory != posixpath.dirname(DEFAULT_AGENT_FILE):
        return False
    _, agent = _pod_and_agent(daemonset)
    if agent is None:
        return False
    for mount in _dicts(agent.get("volumeMounts")):
        at = _text(mount.get("mountPath"))
        if not at:
            continue
        at = posixpath.normpath(at)
        if at == directory or at.startswith(directory + "/") or (
                at != "/" and directory.startswith(at + "/")):
            return False
    return True


BUILD_CONFIG = "build-config"
"""The subcommand of ``cilium-dbg`` (``cilium`` before 1.15) that Helm's ``config`` init
container runs to fill the agent's config directory (``pkg/option/resolver``)."""

_SOURCE_KINDS = ("config-map", "cilium-node-config", "node")


class ConfigSources(NamedTuple):
    """How the ``config`` init container of an agent DaemonSet builds the agent's config
    directory (``cilium-dbg build-config``, :func:`config_sources`): its ``--source``
    list in order (kind, namespace, name), and its key filters. The first source's keys
    are all taken; each later one's, laid over them, only those ``allow`` holds where it
    is not empty (``--allow-config-keys``), else those ``deny`` does not
    (``--deny-config-keys``)."""

    sources: tuple[tuple[str, str, str], ...]
    allow: frozenset[str]
    deny: frozenset[str]
    given: str
    """The flags as given (none: Helm's default list), for messages."""
    mounted: bool = False
    """No ``build-config``: the agent's config directory is the one ConfigMap its
    container mounts there (Cilium before 1.13, or a copy mounting its own)."""

    def filtered(self, key: str) -> str | None:
        """Why a source after the first does not give ``key`` (None: it does)."""
        if self.allow:
            return None if key in self.allow else "--allow-config-keys does not allow it"
        return "--deny-config-keys denies it" if key in self.deny else None

    def dropped(self, namespace: str, name: str, key: str) -> str | None:
        """Why the agent does not take ``key`` from the ConfigMap ``namespace/name``
        (None: it does)."""
        places = [i for i, source in enumerate(self.sources)
                  if source == ("config-map", namespace, name)]
        if not places:
            return f"its --source names no config-map:{namespace}/{name} ({self.given})"
        if places[0] == 0:
            return None
        why = self.filtered(key)
        return None if why is None else f"{why}, and it is not the first --source ({self.given})"

    def configmaps_after(self, namespace: str, name: str, key: str
                         ) -> list[tuple[str, str]]:
        """The other ConfigMaps (namespace, name) whose ``key`` the resolver lays over
        that of the ConfigMap ``namespace/name``, taken: the ``config-map:`` sources after
        its last one (the last source giving a key wins) whose filter keeps ``key``, the
        last one first (none where it is not taken, :meth:`dropped`)."""
        places = [i for i, source in enumerate(self.sources)
                  if source == ("config-map", namespace, name)]
        if not places or self.dropped(namespace, name, key) is not None:
            return []
        return [(at, other) for kind, at, other in reversed(self.sources[places[-1] + 1:])
                if kind == "config-map" and (at, other) != (namespace, name)
                and self.filtered(key) is None]

    def node_configs_named(self, namespace: str) -> frozenset[str] | None:
        """The names of the CiliumNodeConfigs of ``namespace`` the agent reads where each
        ``cilium-node-config:`` source of it names one (``NAMESPACE/NAME``: the resolver
        gets that one, and lays it on every node whatever its ``nodeSelector``); None
        where one reads them all, or none reads any."""
        names = [name for kind, at, name in self.sources
                 if kind == "cilium-node-config" and at == namespace]
        return None if not names or "" in names else frozenset(names)

    def node_config_dropped(self, namespace: str, key: str,
                            over: tuple[str, Iterable[str]] | None = None) -> str | None:
        """Why the agent does not take ``key`` from the CiliumNodeConfigs of ``namespace``
        that select its node (None: it does). ``over``: the ConfigMap of ``namespace``
        named so and the keys it holds: a ``config-map:`` source of it after the last
        CiliumNodeConfig source gives its own value of a key it holds and the filter
        keeps, laid over theirs (the resolver lays each source over the ones before)."""
        places = [i for i, (kind, at, _) in enumerate(self.sources)
                  if kind == "cilium-node-config" and at == namespace]
        if not places:
            return f"its --source reads no CiliumNodeConfig of {namespace} ({self.given})"
        why = None if places[0] == 0 else self.filtered(key)
        if why is not None or over is None:
            return why
        name, keys = over
        later = [i for i, source in enumerate(self.sources)
                 if source == ("config-map", namespace, name) and i > places[-1]]
        if later and key in keys and self.filtered(key) is None:
            return (f"config-map:{namespace}/{name}, which holds it, comes after it in "
                    f"--source and is laid over it ({self.given})")
        return None


def config_sources(daemonset: Mapping[str, Any], namespace: str
                   ) -> ConfigSources | str | None:
    """The :class:`ConfigSources` of the init container of ``daemonset`` (JSON, in
    ``namespace``) running ``build-config``, as ``cilium-dbg`` reads its flags (pflag
    string slices: comma-separated, added up when repeated; a source's namespace left
    out is its ``CILIUM_K8S_NAMESPACE``, which Helm sets to the pod's namespace); None
    where it has none (its config directory filled otherwise: every key of
    ``cilium-config`` taken, as before ``build-config``); why not known, a text: the
    command is a shell's script, a value is known only where the pod runs, or a source
    kind ``build-config`` refuses (its pods do not start)."""
    pod, _ = _pod_and_agent(daemonset)
    for container in _dicts(pod.get("initContainers")):
        argv = _argv(container)
        if not any(BUILD_CONFIG in a for a in argv):
            continue
        label = f"the init container {_text(container.get('name'))} ({BUILD_CONFIG})"
        shell = _shell_script(argv)
        if shell is not None:
            return (f"{label} runs through a shell ({shell} ...), whose script k3snet does "
                    "not read: which sources and keys it takes is not known")
        argv = argv[_program(argv):]
        flags, _ = _flag_values(argv, frozenset({"source", "allow-config-keys",
                                                  "deny-config-keys"}), frozenset())
        try:
            lists = {key: [item for value in values
                           for item in (_source_items(value, container) if value else ())]
                     for key, values in flags.items()}
        except ValueError as exc:
            return f"{label}: {exc}"
        own = next((e for e in _dicts(container.get("env"))
                    if e.get("name") == "CILIUM_K8S_NAMESPACE"), None)
        default = (own["value"] if own is not None and isinstance(own.get("value"), str)
                   and "valueFrom" not in own else namespace)
        sources = []
        for spec in lists.get("source", ["config-map:cilium-config",
                                         f"cilium-node-config:{default}"]):
            if not spec:
                continue
            kind, _, rest = spec.partition(":")
            if kind not in _SOURCE_KINDS:
                return (f"{label}: the source kind {kind!r} is not one build-config knows "
                        "(its pods do not start)")
            at, name = default, "cilium-config" if kind == "config-map" else ""
            if rest:
                first, slash, second = rest.partition("/")
                if slash:
                    at, name = first, second
                elif kind == "cilium-node-config":
                    at = first
                else:
                    name = first
            sources.append((kind, at, name))
        given = " ".join(f"--{k}={','.join(v)}" for k, v in lists.items()) or "Helm's default"
        return ConfigSources(tuple(sources), frozenset(lists.get("allow-config-keys", ())),
                             frozenset(lists.get("deny-config-keys", ())), given)
    return _mounted_config(daemonset, namespace)


def _source_items(value: str, container: Mapping[str, Any]) -> list[str]:
    """The comma-separated items of ``value``, a flag of ``build-config``'s ``container``,
    expanded as the kubelet expands it (:func:`_expand`; ValueError where a value is
    known only where the pod runs). A ``node:`` source naming the pod's node by a variable
    of it (a ``fieldRef`` to ``spec.nodeName``, as Helm's ``K8S_NODE_NAME``, which holds no
    comma) is known all the same: ``node``, whose Node k3snet does not read."""
    try:
        return _expand(value, container).split(",")
    except ValueError:
        named = {**container, "env": [
            {"name": e["name"], "value": "node"}
            if isinstance(e.get("valueFrom"), dict)
            and isinstance(e["valueFrom"].get("fieldRef"), dict)
            and e["valueFrom"]["fieldRef"].get("fieldPath") == "spec.nodeName" else e
            for e in _dicts(container.get("env"))]}
        items = []
        for item in value.split(","):
            named_node = item.partition(":")[0] == "node" and (
                (expanded := _expand(item, named)) != item and "," not in expanded)
            items.append("node" if named_node else item)
        return _expand(",".join(items), container).split(",")


def _mounted_config(daemonset: Mapping[str, Any], namespace: str) -> ConfigSources | None:
    """Without ``build-config``: the ConfigMap (of ``namespace``) mounted whole at the
    agent's config directory (:data:`CONFIG_DIR_KEY`), as Cilium's Helm chart mounted
    ``cilium-config`` before 1.13, the agent reading each key as a file there; None where
    the directory is not known or is not one ConfigMap's whole volume (its ``items``
    choosing keys, ``subPath``, another kind: every key of ``cilium-config`` taken, as
    before)."""
    pod, agent = _pod_and_agent(daemonset)
    if agent is None:
        return None
    found = agent_options(daemonset, (CONFIG_DIR_KEY,)).get(CONFIG_DIR_KEY)
    if found is None or not found.value:
        return None
    directory = posixpath.normpath(found.value)
    mounts = [m for m in _dicts(agent.get("volumeMounts"))
              if _text(m.get("mountPath")) and posixpath.normpath(_text(m["mountPath"]))
              == directory]
    if len(mounts) != 1 or mounts[0].get("subPath") or mounts[0].get("subPathExpr"):
        return None
    volume = next((v for v in _dicts(pod.get("volumes"))
                   if v.get("name") == mounts[0].get("name")), None)
    source = volume.get("configMap") if volume is not None else None
    if not isinstance(source, dict) or not _text(source.get("name")) or source.get("items"):
        return None
    name = _text(source.get("name"))
    return ConfigSources((("config-map", namespace, name),), frozenset(), frozenset(),
                         f"{found.given}={found.value}, the ConfigMap {name} mounted there",
                         mounted=True)
