# The README's two commands: `make demo` and `make test`. Both work on a fresh Debian machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements/*.txt pyproject.toml | sha1sum | cut -c1-12)
PYTEST := $(BIN)/python -m pytest -p no:cacheprovider -q
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: venv system-deps demo demo-down test test-runtime test-fuzz test-chaos test-ansible test-e2e test-alerts lint bench chaos soak clean

$(STAMP): requirements/runtime.txt requirements/test.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements/test.txt
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

# Debian's etcd-server for the HA tests (a real 3-member cluster on loopback), installed when missing.
system-deps:
	@command -v etcd >/dev/null 2>&1 || { \
	  echo "installing etcd-server (Debian)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null; }
	@# The package enables an etcd service; our tests run their own cluster on other ports.
	@-systemctl disable --now etcd >/dev/null 2>&1 || true
	@# promtool (Debian's prometheus package) checks and unit-tests docs/alerts.yml; no server is run.
	@command -v promtool >/dev/null 2>&1 || { \
	  echo "installing prometheus (Debian) for promtool"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  systemctl disable --now prometheus >/dev/null 2>&1 || true; }

demo: venv
	bash scripts/demo.sh

demo-down: venv
	bash scripts/demo-down.sh

lint: venv
	$(BIN)/ruff check infrakit_runtime tests bench

test-runtime: venv system-deps
	$(PYTEST) tests/runtime

test-fuzz: venv
	@if [ -d tests/fuzz ]; then $(PYTEST) tests/fuzz; fi

# Fault injection at fixed seeds (2 per scenario, a few minutes); `make chaos` runs more, with random seeds.
test-chaos: venv system-deps
	$(PYTEST) tests/chaos

test-ansible: venv
	@if [ -x tests/ansible/run-ansible-test.sh ]; then tests/ansible/run-ansible-test.sh sanity units integration; fi

test-e2e: venv
	@if [ -d tests/e2e ]; then $(PYTEST) tests/e2e; fi

# The alert rules are valid and each alert's unit tests pass (tests/runtime/observability checks the rest).
test-alerts: system-deps
	promtool check rules docs/alerts.yml
	promtool test rules tests/runtime/observability/alerts.test.yml

# Every suite; CI runs exactly this.
test: lint test-alerts test-runtime test-fuzz test-chaos test-ansible test-e2e

# Longer fault and fuzz runs with random seeds (not part of `make test`).
chaos: venv system-deps
	INFRAKIT_FUZZ_EXAMPLES=2000 INFRAKIT_CHAOS_TRIALS=20 INFRAKIT_CHAOS_RANDOM=1 $(PYTEST) tests/fuzz $(wildcard tests/chaos)

bench: venv
	$(BIN)/python -m bench.rpc
	$(BIN)/python -m bench.controller
	$(BIN)/python -m bench.aws
	$(BIN)/python -m bench.failover

# 50 groups x 200 instances for 5 minutes under steady churn (not part of `make bench`).
soak: venv
	$(BIN)/python -m bench.soak

clean:
	rm -rf $(VENV) tests/output .pytest_cache .ruff_cache .hypothesis .demo
