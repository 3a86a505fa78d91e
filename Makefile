# k3snet developer entry points.
#
#   make test    install what is missing, then lint, type check and run the whole suite
#   make demo    build the seed lab in network namespaces and fix it with k3snet
#   make mutation  mutation testing of the pure modules with mutmut (slow; docs/testing.md)
#   make image   build the agent's container image without a registry (podman), and test it
#   make test-lowest  the root-free tests at the lowest versions pyproject.toml allows (QUICK=1: CI's part)
#
# Meant to work as root on a fresh Debian machine: `deps` installs the missing
# system packages with apt-get and creates .venv with everything from the
# `dev` dependency group.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := test
.DELETE_ON_ERROR:

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The stamp records that .venv holds everything pyproject.toml asks for. It lives
# inside .venv, so deleting .venv also forces a reinstall; editing pyproject.toml
# makes it stale.
STAMP := $(VENV)/.k3snet-deps

# System packages the library and the tests drive (ip, nft, iptables,
# libnftables for the nftables bindings, sysctl(8) and netplan for renderer tests, Node to
# run the JSON Schemas' patterns as ECMA 262 reads them), plus what pip needs to create
# the venv and to build python-iptables from its sdist (a C extension).
APT_PACKAGES := iproute2 nftables iptables libnftables1 procps netplan.io nodejs python3-venv gcc libc6-dev
# Headers for the interpreter that builds the extension: Debian's python3 needs
# python3-dev; an interpreter that ships its own headers (pyenv) needs nothing.
PY_HEADERS := $(shell $(PYTHON) -c 'import os, sysconfig; \
	print(int(os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))))' 2>/dev/null)
ifneq ($(PY_HEADERS),1)
APT_PACKAGES += python3-dev
endif

SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

HYPOTHESIS_PROFILE ?= ci
PYTEST_ARGS ?=
LINT_PATHS := k3snet tests benchmarks examples ansible_collections
# `make demo NAT=iptables` passes --nat-backend iptables to the demo.
NAT ?=
DEMO_ARGS ?= $(if $(NAT),--nat-backend $(NAT))

# `make mutation MUTANTS='k3snet.model.* k3snet.planner.*'` limits the run to some
# modules (mutmut's mutant-name globs); empty means every module [tool.mutmut] lists.
MUTANTS ?=
MUTATION_JOBS ?= 2
# Test paths judging the mutants instead of [tool.mutmut]'s selection (empty: that one).
MUTATION_TESTS ?=
# Minutes mutmut may judge mutants (empty: no limit); the in-process judge takes the rest,
# each mutant within MUTATION_TIMEOUT CPU seconds (empty: mutmut's limit, from its stats).
MUTATION_BUDGET ?=
MUTATION_TIMEOUT ?=
# The tests that judge the spec package: `make mutation-spec` (docs/testing.md).
SPEC_MUTATION_TESTS := tests/spec tests/api tests/cli tests/planner/test_golden_plans.py
# The tests that judge the model and the planner: `make mutation-model` (docs/testing.md).
# No CLI, cluster or reader tests: they reach these modules only through the model's
# own tested paths and cost minutes per mutant of cidr.py or plan().
MODEL_MUTATION_TESTS := tests/model tests/planner tests/backends tests/api/test_strategies.py
# The NAT readers, the plan-fit check and tag_digest: `make mutation-readers` (docs/testing.md,
# "Fifth pass"). The whole iptables foreign reader and tag.py; of parse.py the foreign
# reader's NAT path and the helpers it shares with the forward-block reader (the own-table
# reader and the rest were judged in the third pass); of the planner, Plan.problems and its
# fast path (Plan.kinds is a cached_property, which mutmut leaves alone).
READERS_MUTATION_TESTS := tests/iptables tests/nftables tests/model/test_nat_block.py \
	tests/model/test_forward_block.py tests/render/test_tag.py \
	tests/planner/test_plan_and_state_values.py tests/planner/test_planner_properties.py \
	tests/backends/test_kit.py
READERS_PARSE := xǁForeignReaderǁread xǁForeignReaderǁ_met xǁForeignReaderǁ_walk \
	xǁForeignReaderǁ_nat_rule xǁForeignReaderǁ_nat_rule_first x__spared x__spared_by \
	x__unmarked_only x__same_translation x__rule_words x__nat_blocks_of x__block_of
READERS_MUTANTS := k3snet.backends.iptables.foreign.* k3snet.render.tag.* \
	k3snet.planner.xǁPlanǁproblems__mutmut_* k3snet.planner.x__fits_as_is__mutmut_* \
	$(foreach f,$(READERS_PARSE),k3snet.backends.nftables.parse.$(f)__mutmut_*)

# The tests that judge the manifests and the iptables rule language: `make mutation-render`
# (docs/testing.md). Only the root-free files that reach render/manifests.py or
# render/iptables/rules.py (found with coverage); the CLI's and the docs' tests reach them
# too, through the same functions, at seconds per test.
RENDER_MUTATION_TESTS := tests/render/test_manifest_files.py tests/render/test_connectivity_result.py \
	tests/render/test_hostile_render.py tests/render/test_iptables_fast_path.py \
	tests/render/test_iptables_rebuild.py tests/render/test_iptables_text.py tests/render/test_tag.py \
	tests/render/test_iptables_parse_rule.py \
	tests/model/test_forward_block.py tests/model/test_nat_block.py tests/iptables/test_recorded.py \
	tests/iptables/test_foreign_cases.py tests/iptables/test_backend.py \
	tests/iptables/test_nat_reader_oracle.py tests/hostile/test_parser_fuzz.py \
	tests/cluster/test_manifests.py tests/cluster/test_connectivity_job.py

.PHONY: deps test checks lint typecheck typecheck-tests pytest demo bench docs dist clean distclean mutation mutation-spec mutation-model mutation-readers mutation-render image \
	spec-schema lowest-deps test-lowest

deps: $(STAMP)

# A shell test of whether the package "$$pkg" is installed. Not `dpkg -s`, which exits 0
# for a package removed but not purged (its config files left, `apt-get remove`): deps
# then never installed it again. One line per architecture installed (a Multi-Arch: same
# library): one "installed" will do; grep reads them all (no SIGPIPE under pipefail).
# Recursive (=), so `$$` reaches the recipe's shell as `$`.
PKG_INSTALLED = dpkg-query -W -f='$${db:Status-Status}\n' "$$pkg" 2>/dev/null | grep -x installed >/dev/null

# apt-get runs only when a package is not installed. pip >= 25.1
# understands --group (PEP 735 dependency groups in pyproject.toml).
$(STAMP): pyproject.toml Makefile
	@missing=""; \
	for pkg in $(APT_PACKAGES); do \
		$(PKG_INSTALLED) || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "Installing missing system packages:$$missing"; \
		$(SUDO) apt-get update; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	fi
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=25.1"
	$(BIN)/python -m pip install --quiet -e . --group dev
	touch $@

# Each check and the suite print their time (bash's `time`) under their own name.
lint typecheck typecheck-tests docs: export TIMEFORMAT = $@: %R s wall, %U s user, %S s system
test pytest: export TIMEFORMAT = pytest: %R s wall, %U s user, %S s system (workers included)

lint: deps
	time $(BIN)/ruff check $(LINT_PATHS)

typecheck: deps
	time $(BIN)/mypy

# The test directories that pass mypy's strict check (pyproject.toml), kept so: add one
# here once `mypy --explicit-package-bases tests/DIR` is clean. What they import from the
# other test directories is read, but its errors are not shown (--follow-imports=silent);
# the library's are `typecheck`'s. A cache of its own: these options differ from
# `typecheck`'s, and a shared cache would be rebuilt at every switch.
TYPECHECK_TESTS ?= tests

typecheck-tests: deps
	time $(BIN)/mypy --explicit-package-bases --follow-imports=silent --cache-dir .mypy_cache/tests \
		$(TYPECHECK_TESTS)

# pytest exits 5 when it collects no tests; make treats any non-zero status as a
# failure, so an empty or mis-configured suite fails `make test`. Never swallow
# pytest's status: no `|| true`, no `-` prefix (pipefail is on if you add a tee).
# The suite runs in PYTEST_JOBS processes (pytest-xdist), each test file in one of
# them (--dist loadfile: a file's module fixtures, the seed lab's among them, are
# built once); PYTEST_JOBS=0 runs it in this process alone. One process more than the
# machine has cores: the kernel tests wait much of their time (subprocesses, packets,
# polls), which the extra process fills (2 cores: 3 processes, 664 s against 701 s).
PYTEST_JOBS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); echo $$((n + 1)))
PYTEST := HYPOTHESIS_PROFILE=$(HYPOTHESIS_PROFILE) $(BIN)/python -m pytest --durations=15 \
	-n $(PYTEST_JOBS) --dist loadfile

# Lint, type check (the library, and the test directories) and a strict docs build
# first, then the suite. The checks run CHECK_JOBS at a time (mypy is single-threaded:
# the two mypy runs take the two cores, lint and docs the gaps), each one's output
# printed whole when it ends (--output-sync), and every one to its end (--keep-going):
# each failure is shown with its own message, and any fails `make test` before the suite.
CHECK_JOBS ?= 2
checks: lint typecheck typecheck-tests docs

test: deps
	$(MAKE) --no-print-directory --keep-going -j$(CHECK_JOBS) --output-sync=target checks
	time $(PYTEST) $(PYTEST_ARGS)

# The suite alone, e.g. `make pytest PYTEST_ARGS="-m 'not kernel'"`.
pytest: deps
	time $(PYTEST) $(PYTEST_ARGS)

demo: deps
	$(BIN)/python -m k3snet.demo $(DEMO_ARGS)

bench: deps
	$(BIN)/python benchmarks/run.py $(if $(QUICK),--quick)

# mutmut copies the tree to mutants/ and runs the root-free tests (selection in
# [tool.mutmut], pyproject.toml) against each mutant, with the derandomized
# `mutation` hypothesis profile. mutants/ is rebuilt every time: a stale copy
# would judge old code. The netns leftover check is off: these sessions create
# no namespace, but other runs on the machine may. mutmut's workers never see a
# mutant of code that runs at import time: benchmarks/mutation.py judges those
# survivors again, each in a new process (verdicts in mutants/fresh.json).
# mutmut stalls on mutants reached by hundreds of tests, and MUTATION_BUDGET stops it:
# `inproc` judges every mutant it left, in one pytest process (mutants/inproc.json),
# so a run ends with every mutant judged; `summary` counts the last verdicts.
MUTATION_ENV = K3SNET_SKIP_NETNS_CHECK=1 HYPOTHESIS_PROFILE=mutation MUTATION_TESTS='$(MUTATION_TESTS)'
mutation: deps
	rm -rf mutants
	$(MUTATION_ENV) MUTATION_BUDGET='$(MUTATION_BUDGET)' \
		$(BIN)/python benchmarks/mutation.py run --max-children $(MUTATION_JOBS) $(MUTANTS)
	$(MUTATION_ENV) $(BIN)/python benchmarks/mutation.py inproc --unjudged $(MUTANTS) \
		$(if $(MUTATION_TIMEOUT),--timeout $(MUTATION_TIMEOUT))
	$(MUTATION_ENV) $(BIN)/python benchmarks/mutation.py fresh --jobs $(MUTATION_JOBS)
	$(BIN)/python benchmarks/mutation.py summary $(MUTANTS)

mutation-spec:
	$(MAKE) mutation MUTANTS='$(or $(MUTANTS),k3snet.spec.*)' MUTATION_TESTS='$(SPEC_MUTATION_TESTS)'

mutation-model:
	$(MAKE) mutation MUTANTS='$(or $(MUTANTS),k3snet.model.* k3snet.planner.*)' \
		MUTATION_TESTS='$(MODEL_MUTATION_TESTS)'

mutation-readers:
	$(MAKE) mutation MUTANTS='$(READERS_MUTANTS)' MUTATION_TESTS='$(READERS_MUTATION_TESTS)'

mutation-render:
	$(MAKE) mutation MUTANTS='k3snet.render.manifests.* k3snet.render.iptables.rules.*' \
		MUTATION_TESTS='$(RENDER_MUTATION_TESTS)'

docs: deps
	time NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# The spec's JSON Schema, generated from its field table (a test checks it is current).
spec-schema: deps
	$(BIN)/python -m k3snet.spec.json_schema > k3snet/schemas/spec.schema.json

# The wheel and the sdist, into dist/ (pip install "dist/k3snet-*.whl[spec]").
dist: deps
	rm -rf dist
	$(BIN)/python -m build --outdir dist .

# ------------------------------------------------------- the lowest versions
# .venv holds the newest releases; the lower bounds of pyproject.toml's dependencies and
# extras are checked here. .ci/lowest_pins.py writes them out as == pins (pip has no
# --resolution lowest), .venv-lowest gets k3snet with every extra at those pins (what
# they pull in at its newest; the test tools too, at what fits the pins), and the
# root-free tests of the library, the CLI, the cluster backends (against kmock) and the
# agent run there, with the pyroute2 and libiptc drivers' kernel tests when root. A bound
# naming no release, or two bounds that cannot hold together, fails the install.
# .venv-lowest/core holds attrs alone: .ci/attrs_alone.py compiles, plans and applies on
# the memory backend there, the checkout on PYTHONPATH.
LOWEST := .venv-lowest
LOWEST_STAMP := $(LOWEST)/.k3snet-deps
LOWEST_TOOLS := pytest pytest-xdist pytest-asyncio kmock jsonschema cel-python kubernetes-validate
# tests/spec (PyYAML's reader as oracle, at 6.0.3 here) and most of tests/backends (the
# memory backend, the kit: attrs alone) add minutes and no library of another version; the
# conformance suite's own tests are what hypothesis>=6.125 stands on. The wheel test
# installs the newest releases into a venv of its own.
LOWEST_TESTS ?= tests/api tests/model $(if $(QUICK),,tests/planner tests/cli) tests/cluster \
	$(if $(QUICK),,tests/agent) \
	tests/backends/test_conformance_broken.py tests/backends/test_third_party_backend.py \
	tests/spec/test_spec.py tests/spec/test_compile.py \
	--deselect tests/api/test_packaging.py::test_the_wheel_installs_and_runs_the_getting_started_path
# The kernel tests of the drivers two extras bring: pyroute2's (netlink) and python-iptables'
# libiptc (iptables-legacy). pip-nftables has one release, so its lowest is CI's.
LOWEST_KERNEL_TESTS ?= tests/netlink/test_backend.py tests/iptables/test_backend.py
LOWEST_KERNEL := (pyroute2 or libiptc)$(if $(QUICK), and not conformance)
# QUICK=1 (CI's, .ci/run): what reaches the libraries of other versions most, ~1.5 minutes
# with the venv's install instead of ~2.5 (the suite's own time, see the CI log, comes first): the
# planner's, the CLI's and the agent's tests (attrs, as tests/model and the attrs-alone
# check reach it; the kubernetes client, as tests/cluster's other tests reach it), the
# drivers' conformance runs (their other kernel tests stay) and the cluster backends'
# (`test_*conforms*`: about a fifth of the quick run, the same client calls as the
# backends' own tests) are left to a full `make test-lowest`.
LOWEST_QUICK_K := $(if $(QUICK),-k "not conforms")
LOWEST_HYPOTHESIS_PROFILE ?= lowest
# Property tests at the `lowest` profile (50 examples, tests/conftest.py): the question here
# is whether an older library's API still does, not a new shape of input.
LOWEST_PYTEST = HYPOTHESIS_PROFILE=$(LOWEST_HYPOTHESIS_PROFILE) $(LOWEST)/bin/python -m pytest \
	--durations=10 -n $(PYTEST_JOBS) --dist loadfile

$(LOWEST_STAMP): pyproject.toml Makefile .ci/lowest_pins.py | $(STAMP)
	test -x $(LOWEST)/bin/python || $(PYTHON) -m venv $(LOWEST)
	$(PYTHON) .ci/lowest_pins.py > $(LOWEST)/lowest.txt
	$(LOWEST)/bin/python -m pip install --quiet --upgrade "pip>=25.1"
	$(LOWEST)/bin/python -m pip install --quiet -e ".[all]" -r $(LOWEST)/lowest.txt $(LOWEST_TOOLS)
	$(LOWEST)/bin/python -m pip check
	test -x $(LOWEST)/core/bin/python || $(PYTHON) -m venv --without-pip $(LOWEST)/core
	$(LOWEST)/bin/python -m pip --python $(LOWEST)/core/bin/python install --quiet \
		"$$(grep -i '^attrs==' $(LOWEST)/lowest.txt)"
	touch $@

# The venv alone (.ci/run builds it beside `make test`: it is mostly pip waiting on downloads).
lowest-deps: $(LOWEST_STAMP)

test-lowest: $(LOWEST_STAMP)
	PYTHONPATH=$(CURDIR) $(LOWEST)/core/bin/python .ci/attrs_alone.py
	$(LOWEST_PYTEST) -m "not kernel and not lab and not image" $(LOWEST_QUICK_K) $(LOWEST_TESTS) \
		$(PYTEST_ARGS)
	$(if $(filter 0,$(shell id -u)),$(LOWEST_PYTEST) -m "kernel and not lab" -k "$(LOWEST_KERNEL)" \
		$(LOWEST_KERNEL_TESTS) $(PYTEST_ARGS),@echo "not root: the drivers' kernel tests left out")

# ---------------------------------------------------------------- the image
# No registry is reachable from the build machines: the base is a Debian root
# file system made by mmdebstrap from this machine's own apt sources (never a
# hard-coded mirror), trimmed like debian:*-slim, and imported with podman; the
# wheels are built here, so `podman build` runs with --network=none.
# k3snet's version, from the one place that holds it (pyproject.toml's is dynamic).
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' k3snet/_version.py)
IMAGE ?= localhost/k3snet:$(VERSION)
DEBIAN_SUITE ?= bookworm
DEBIAN_SOURCES ?= $(firstword $(wildcard /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list))
BASE_IMAGE := localhost/k3snet-base:$(DEBIAN_SUITE)
IMAGE_DIR := build/image
IMAGE_PACKAGES := python3,python3-venv,nftables,iptables,libnftables1,iproute2,ca-certificates
IMAGE_TOOLS := mmdebstrap podman runc
# What debian:*-slim leaves out.
SLIM := --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
	--dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/info/*' \
	--dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias'
# crun refuses hybrid cgroups and raising rlimits without CAP_SYS_RESOURCE (CI
# machines); runc with explicit, lower limits works there and everywhere else.
PODMAN ?= podman --runtime runc
PODMAN_LIMITS ?= --ulimit nofile=1024:1024 --ulimit nproc=4096:4096

$(IMAGE_DIR)/rootfs.tar: Makefile
	@missing=""; for pkg in $(IMAGE_TOOLS); do $(PKG_INSTALLED) || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; fi
	test -n "$(DEBIAN_SOURCES)" || { echo "no Debian apt sources on this machine: set DEBIAN_SOURCES"; exit 1; }
	mkdir -p $(IMAGE_DIR)
	$(SUDO) mmdebstrap --quiet --variant=minbase --include=$(IMAGE_PACKAGES) $(SLIM) \
		--format=tar $(DEBIAN_SUITE) $@.tmp $(DEBIAN_SOURCES)
	mv $@.tmp $@

image: deps $(IMAGE_DIR)/rootfs.tar
	$(PODMAN) import --quiet $(IMAGE_DIR)/rootfs.tar $(BASE_IMAGE)
	rm -rf $(IMAGE_DIR)/wheels
	$(BIN)/python -m pip wheel --quiet --wheel-dir $(IMAGE_DIR)/wheels \
		".[nftables,iptables,kube,agent,spec]"
	$(PODMAN) build --quiet --network=none $(PODMAN_LIMITS) --build-arg BASE=$(BASE_IMAGE) \
		-f Containerfile -t $(IMAGE) .
	K3SNET_IMAGE=$(IMAGE) K3SNET_PODMAN="$(PODMAN)" K3SNET_PODMAN_LIMITS="$(PODMAN_LIMITS)" \
		$(PYTEST) -m image tests/image
	@echo "$(IMAGE) runs on $$($(PODMAN) image inspect --format '{{.Architecture}}' $(IMAGE)) nodes alone: give that in the spec's agent.architectures"

clean:
	rm -rf site dist build .pytest_cache .mypy_cache .ruff_cache .hypothesis .benchmarks *.egg-info \
		mutants
	find . \( -path ./$(VENV) -o -path ./$(LOWEST) \) -prune -o -name __pycache__ -type d -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) $(LOWEST)
