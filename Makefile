# The README's two commands: `make demo` and `make test`. Both work on a fresh Debian machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements/*.txt pyproject.toml | sha1sum | cut -c1-12)
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: venv system-deps demo demo-down test test-runtime lint bench clean

$(STAMP): requirements/runtime.txt requirements/test.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements/test.txt
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

# etcd (Debian's etcd-server) for the HA tests, installed only when missing.
system-deps:
	@command -v etcd >/dev/null 2>&1 || { \
	  echo "installing etcd-server (Debian)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null) || \
	  echo "warning: could not install etcd-server; etcd tests will be skipped"; }

demo: venv
	$(BIN)/python -m bench.demo

demo-down: venv
	-$(BIN)/infrakit plugin stop --all

lint: venv
	$(BIN)/ruff check infrakit_runtime tests bench

test-runtime: venv system-deps
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/runtime

test: lint test-runtime

bench: venv
	$(BIN)/python -m bench.rpc

clean:
	rm -rf $(VENV) tests/output .pytest_cache .ruff_cache .hypothesis
