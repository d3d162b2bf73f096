# Developer and CI entry points. CI runs `.ci/run`, which starts the services and runs `make test`.
#
#   make install        .venv with the project (editable) and its test and dev extras
#   make pwa            the handheld app (pwa/dist): `npm ci` when needed, then `npm run build`
#   make run            the demo: `mes demo` on the embedded SQLite database
#   make test           both legs: SQLite (no Redis), then PostgreSQL + Redis
#   make test-sqlite    the SQLite leg only
#   make test-postgres  the PostgreSQL + Redis leg only (PostgreSQL and Redis must answer)
#   make lint           ruff check, ruff format --check, mypy
#   make schema         schema.graphql from the code (`mes export-schema`)
#   make bench          tests/benchmarks, with output
#   make clean          the venv, caches and build output
#
# Extra pytest arguments: make test PYTEST_ARGS='-x -k order'

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := install
# The legs share this checkout; never run them side by side under `make -j`.
.NOTPARALLEL:

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.mes-installed

PG_HOST ?= 127.0.0.1
PG_PORT ?= 5432
PG_USER ?= postgres
PG_DB ?= mes_test
REDIS_HOST ?= 127.0.0.1
REDIS_PORT ?= 6379
MES_TEST_DATABASE_URL ?= postgresql+asyncpg://$(PG_USER)@$(PG_HOST):$(PG_PORT)/$(PG_DB)
MES_TEST_REDIS_URL ?= redis://$(REDIS_HOST):$(REDIS_PORT)/0
PYTEST_ARGS ?=

NPM ?= npm
PWA := pwa
# `npm ci` again only when the lock (or package.json) changes; the build again only when a
# source changes. The stamps are make's memory of both.
PWA_DEPS := $(PWA)/node_modules/.mes-installed
PWA_BUILT := $(PWA)/dist/.mes-built
PWA_SOURCES := $(shell find $(PWA)/src $(PWA)/public -type f 2>/dev/null) \
	$(wildcard $(PWA)/index.html $(PWA)/vite.config.ts $(PWA)/tsconfig*.json)

# $(call pytest,ENV-PREFIX,ARGS,WHAT): pytest, where exit 5 ("no tests collected") is a failure
# too, so that no run can pass without having run a test.
pytest = rc=0; $(1) $(BIN)/python -m pytest $(2) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make: pytest collected no tests ($(3)): that is a failure" >&2; fi; \
	exit $$rc

.PHONY: install pwa run test test-sqlite test-postgres test-faults check-services lint schema bench clean

install: $(STAMP)

$(BIN)/python:
	@echo "==> creating $(VENV) with $$($(PYTHON) --version 2>&1)"
	@$(PYTHON) -m venv $(VENV)

# Reinstalled only when pyproject.toml changes; the editable install follows code changes itself.
$(STAMP): pyproject.toml | $(BIN)/python
	@echo "==> pip install -e '.[test,dev]'"
	@$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test,dev]'
	@touch $@

# The handheld app, served by `mes serve` at `/` (and driven by the browser tests in tests/pwa).
pwa: $(PWA_BUILT)

$(PWA_DEPS): $(PWA)/package-lock.json $(PWA)/package.json
	@command -v $(NPM) >/dev/null 2>&1 || { \
	  echo "make: $(NPM) not found: building the PWA ($(PWA)/) needs Node.js 20.19+ and npm." >&2; \
	  exit 1; }
	@echo "==> npm ci ($(PWA)/)"
	@cd $(PWA) && $(NPM) ci --no-audit --no-fund --loglevel=error
	@touch $@

$(PWA_BUILT): $(PWA_DEPS) $(PWA_SOURCES) $(PWA)/package.json
	@echo "==> npm run build ($(PWA)/ -> $(PWA)/dist)"
	@cd $(PWA) && $(NPM) run --silent build
	@touch $@

# Without npm the demo still runs, with a page saying the app is not built.
run: install
	@if command -v $(NPM) >/dev/null 2>&1; then $(MAKE) --no-print-directory pwa; \
	else echo "make: npm not found: the handheld app is not built (needs Node.js 20.19+ and npm)" >&2; fi
	$(BIN)/mes demo

test: test-sqlite test-postgres

test-sqlite: install pwa
	@echo "==> pytest: SQLite leg (embedded database, no Redis)"
	@$(call pytest,env -u MES_TEST_DATABASE_URL -u MES_TEST_REDIS_URL MES_TEST_DATABASE=sqlite,-q $(PYTEST_ARGS),SQLite leg)

test-postgres: install pwa check-services
	@echo "==> pytest: PostgreSQL + Redis leg ($(PG_HOST):$(PG_PORT)/$(PG_DB), $(MES_TEST_REDIS_URL))"
	@$(call pytest,env -u MES_TEST_DATABASE MES_TEST_DATABASE_URL='$(MES_TEST_DATABASE_URL)' MES_TEST_REDIS_URL='$(MES_TEST_REDIS_URL)',-q $(PYTEST_ARGS),PostgreSQL + Redis leg)

# The PostgreSQL + Redis leg never skips quietly: a service that does not answer fails it,
# with the reason. (.ci/run starts both before `make test`.)
check-services: install
	@fail() { \
	  echo "make: $$1: the PostgreSQL + Redis leg cannot run." >&2; \
	  echo "      $$2" >&2; \
	  echo "      Run 'make test-sqlite' for the SQLite leg alone$${CI:+ (CI=$$CI: a missing service fails the run)}." >&2; \
	  exit 1; \
	}; \
	if command -v pg_isready >/dev/null 2>&1; then \
	  pg_isready -q -h $(PG_HOST) -p $(PG_PORT) || fail "PostgreSQL is not answering on $(PG_HOST):$(PG_PORT)" \
	    "Start it (Debian: pg_ctlcluster --skip-systemctl-redirect \$$(ls /etc/postgresql) main start)."; \
	else \
	  $(BIN)/python -c "import socket; socket.create_connection(('$(PG_HOST)', $(PG_PORT)), 3).close()" 2>/dev/null \
	    || fail "PostgreSQL is not answering on $(PG_HOST):$(PG_PORT)" "Start PostgreSQL."; \
	fi; \
	$(BIN)/python -c "import socket; s = socket.create_connection(('$(REDIS_HOST)', $(REDIS_PORT)), 3); s.sendall(b'PING\r\n'); assert s.recv(64).startswith(b'+PONG')" 2>/dev/null \
	  || fail "Redis is not answering on $(REDIS_HOST):$(REDIS_PORT)" \
	    "Start it: redis-server --daemonize yes --bind 127.0.0.1 --port $(REDIS_PORT) --save '' --appendonly no"; \
	if command -v psql >/dev/null 2>&1; then \
	  psql_() { psql -X -q -v ON_ERROR_STOP=1 -h $(PG_HOST) -p $(PG_PORT) -U $(PG_USER) -d postgres "$$@"; }; \
	  exists=$$(psql_ -tAc "SELECT 1 FROM pg_database WHERE datname = '$(PG_DB)'") \
	    || fail "cannot connect to PostgreSQL as $(PG_USER)" "Check the user and the authentication in pg_hba.conf."; \
	  if [ "$$exists" != 1 ]; then \
	    echo "==> creating database $(PG_DB)"; \
	    psql_ -c 'CREATE DATABASE "$(PG_DB)"' || fail "cannot create database $(PG_DB)" "Create it: createdb -h $(PG_HOST) -U $(PG_USER) $(PG_DB)"; \
	  fi; \
	fi

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Written through a temporary file: a failing export never leaves a truncated schema.graphql.
schema: install
	@$(BIN)/mes export-schema > schema.graphql.tmp || { rm -f schema.graphql.tmp; exit 1; }
	@mv schema.graphql.tmp schema.graphql
	@echo "==> schema.graphql written"

# Only the equipment fault tests (real simulators, bridge and server; about 1.5 minutes; they
# also run in the SQLite leg of `make test`).
test-faults: install
	@$(call pytest,,tests/equipment/test_faults.py -v $(PYTEST_ARGS),fault tests)

bench: install pwa
	@$(call pytest,MES_BENCH=1,tests/benchmarks -s $(PYTEST_ARGS),benchmarks)

clean:
	rm -rf $(VENV) build dist .mypy_cache .ruff_cache .pytest_cache pwa/dist schema.graphql.tmp
	find . -name '*.egg-info' -prune -exec rm -rf {} +
	find . -path ./.git -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
