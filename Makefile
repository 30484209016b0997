# The README's two commands: `make demo` and `make test`. Both work on a fresh Debian machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements/runtime.txt requirements/test.txt pyproject.toml | sha1sum | cut -c1-12)
PYTEST := $(BIN)/python -m pytest -p no:cacheprovider -q
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: venv system-deps demo demo-down demo-ha demo-ha-down test test-runtime test-fuzz test-chaos test-ansible test-e2e test-alerts lint lint-code bench chaos soak clean \
	gates-venv core-venvs test-gates lint-ansible galaxy-import ee tarball role-readme role-readme-check wheelhouse

$(STAMP): requirements/runtime.txt requirements/test.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements/test.txt
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

# The Ansible ecosystem's gates (galaxy-importer, ansible-lint, ansible-builder) in a venv of their own:
# galaxy-importer's pins (attrs<24) clash with the project's.
GATES := .venv-gates
GATES_STAMP := $(GATES)/.installed-$(shell cat requirements/gates.txt | sha1sum | cut -c1-12)
$(GATES_STAMP): requirements/gates.txt
	test -x $(GATES)/bin/python || $(PYTHON) -m venv $(GATES)
	$(GATES)/bin/pip install -q --disable-pip-version-check -r requirements/gates.txt
	rm -f $(GATES)/.installed-*
	touch $@

gates-venv: $(GATES_STAMP)

# One venv per ansible-core line that requires_ansible (meta/runtime.yml) claims, besides the project's
# own (2.19, requirements/test.txt): ansible-test sanity and units run on each.
CORE_LINES := 2.16 2.17 2.18
core_stamp = .venv-core/$(1)/.installed-$(shell cat requirements/ansible-core-$(1).txt | sha1sum | cut -c1-12)
define core_venv
$(call core_stamp,$(1)): requirements/ansible-core-$(1).txt
	test -x .venv-core/$(1)/bin/python || $$(PYTHON) -m venv .venv-core/$(1)
	.venv-core/$(1)/bin/pip install -q --disable-pip-version-check -r requirements/ansible-core-$(1).txt
	rm -f .venv-core/$(1)/.installed-*
	touch $$@
endef
$(foreach v,$(CORE_LINES),$(eval $(call core_venv,$(v))))

core-venvs: $(foreach v,$(CORE_LINES),$(call core_stamp,$(v)))

# Debian's etcd-server for the HA tests (a real 3-member cluster on loopback), installed when missing.
system-deps:
	@command -v etcd >/dev/null 2>&1 || { \
	  echo "installing etcd-server (Debian)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null; }
	@# etcdctl: the disaster recovery steps of docs/operations.md restore a snapshot with it (and a test follows them).
	@command -v etcdctl >/dev/null 2>&1 || { \
	  echo "installing etcd-client (Debian)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-client >/dev/null; }
	@# The package enables an etcd service; our tests run their own cluster on other ports.
	@-systemctl disable --now etcd >/dev/null 2>&1 || true
	@# promtool (Debian's prometheus package) checks and unit-tests docs/alerts.yml; no server is run.
	@command -v promtool >/dev/null 2>&1 || { \
	  echo "installing prometheus (Debian) for promtool"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  systemctl disable --now prometheus >/dev/null 2>&1 || true; }
	@# Debian's openssh-server for the ansible flavor's ssh test: the test runs its own sshd on loopback
	@# (a free port, generated keys); the service the package enables is not wanted.
	@test -x /usr/sbin/sshd || { \
	  echo "installing openssh-server (Debian)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssh-server >/dev/null; \
	  systemctl disable --now ssh >/dev/null 2>&1 || true; }

demo: venv
	bash scripts/demo.sh

demo-down: venv
	bash scripts/demo-down.sh

# A self-hosted control plane on local processes (etcd members and controller replicas kept alive
# by the plane itself): up, measured, down. KEEP=1 leaves it running; demo-ha-down removes it.
demo-ha: venv system-deps
	bash scripts/demo-ha.sh

demo-ha-down: venv
	bash scripts/demo-ha-down.sh

# The gates themselves, without the venv step (tests/runtime/test_lint_gates.py runs them on a copy
# of the tree with a wrong-way import or a type error injected, and expects them to fail): ruff on
# the runtime and the collection's Python, the import contracts of .importlinter, mypy (strict on
# spi and the planner, pyproject.toml).
lint-code:
	$(BIN)/ruff check infrakit_runtime tests bench plugins scripts
	$(BIN)/lint-imports --config .importlinter
	$(BIN)/mypy

lint: venv
	$(MAKE) lint-code

test-runtime: venv system-deps
	$(PYTEST) tests/runtime

test-fuzz: venv
	@if [ -d tests/fuzz ]; then $(PYTEST) tests/fuzz; fi

# Fault injection at fixed seeds (2 per scenario, a few minutes); `make chaos` runs more, with random seeds.
test-chaos: venv system-deps
	$(PYTEST) tests/chaos

# ansible-test on every ansible-core line requires_ansible claims: sanity, units and integration on the
# project's (2.19); sanity of the Ansible content and units on the others (the bundled runtime's trees
# are no Ansible content: their sanity pass runs once). Every line runs even when one fails; then it fails.
test-ansible: venv core-venvs
	@status=0; \
	tests/ansible/run-ansible-test.sh sanity units integration || status=1; \
	for v in $(CORE_LINES); do tests/ansible/run-ansible-test.sh --core .venv-core/$$v --content-only sanity units || status=1; done; \
	exit $$status

# The built collection as Galaxy, ansible-lint and ansible-builder see it (tests/gates/run.py), and the role
# README in sync with its argument spec.
test-gates: gates-venv role-readme-check
	$(GATES)/bin/python tests/gates/run.py all

lint-ansible galaxy-import ee tarball: gates-venv
	$(GATES)/bin/python tests/gates/run.py $(subst lint-ansible,lint,$@)

role-readme: venv
	$(BIN)/python scripts/role_readme.py

role-readme-check: venv
	$(BIN)/python scripts/role_readme.py --check

# An offline wheelhouse for the controller role (controller_wheelhouse): every pinned dependency of the
# runtime as a wheel for this machine's Python and platform (docs/operations.md, "Offline installs").
WHEELHOUSE ?= wheelhouse
wheelhouse: venv
	$(BIN)/python -m pip download --disable-pip-version-check --only-binary :all: -r requirements/runtime.txt -d $(WHEELHOUSE)

test-e2e: venv
	@if [ -d tests/e2e ]; then $(PYTEST) tests/e2e; fi

# The alert rules are valid and each alert's unit tests pass (tests/runtime/observability checks the rest).
test-alerts: system-deps
	promtool check rules docs/alerts.yml
	promtool test rules tests/runtime/observability/alerts.test.yml

# Every suite; CI runs exactly this.
test: lint test-gates test-alerts test-runtime test-fuzz test-chaos test-ansible test-e2e

# Longer fault and fuzz runs with random seeds (not part of `make test`).
chaos: venv system-deps
	INFRAKIT_FUZZ_EXAMPLES=2000 INFRAKIT_CHAOS_TRIALS=20 INFRAKIT_CHAOS_RANDOM=1 $(PYTEST) tests/fuzz $(wildcard tests/chaos)

bench: venv
	$(BIN)/python -m bench.rpc
	$(BIN)/python -m bench.controller
	$(BIN)/python -m bench.aws
	$(BIN)/python -m bench.aws --spread
	$(BIN)/python -m bench.failover
	$(BIN)/python -m bench.ansible_flavor

# 50 groups x 200 instances for 5 minutes under steady churn (not part of `make bench`).
soak: venv
	$(BIN)/python -m bench.soak

clean:
	rm -rf $(VENV) $(GATES) .venv-core tests/output .pytest_cache .ruff_cache .hypothesis .demo .demo-ha
