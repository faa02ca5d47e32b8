# clinicdb: `make demo` then `make test` on a fresh Debian machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CLINICDB := $(BIN)/clinicdb

# Another installed PostgreSQL for every server the tests start: make test PG_BINDIR=/usr/lib/postgresql/17/bin
ifdef PG_BINDIR
export CLINICDB_PG_BINDIR := $(PG_BINDIR)
export PATH := $(PG_BINDIR):$(PATH)
endif

.PHONY: default demo test test-citus test-pgtap test-py test-psycopg-matrix test-fresh-clone lint lock-migrations generate bench soak system-deps venv down clean

default: test lint

# The main job: local primary + replica, migrated, two demo clinics, the story.
demo: venv
	$(CLINICDB) dev up
	$(CLINICDB) demo

# Every test: pgTAP through pg_prove, then pytest (each starts its own servers).
test: test-pgtap test-py

# The Citus suites (tests/citus/) on a coordinator and two workers they start; one line and exit 0 without Citus.
test-citus: venv
	$(BIN)/python tests/run_citus.py

# pgTAP suites under tests/pgtap/ against a throwaway migrated server.
test-pgtap: venv
	$(BIN)/python tests/run_pgtap.py

# pytest over tests/py/ (exit code 5, "no tests ran", fails too).
test-py: venv
	$(BIN)/pytest

# The driver's suites on the oldest and the newest supported psycopg, each in a venv of its own (.venv-psycopg-*).
# (--no-deps for the oldest: psycopg 3.2.0's [binary] extra names a psycopg-binary 3.2.0.dev1 that was never published.)
PSYCOPG_OLDEST ?= --no-deps 'psycopg==3.2.0' 'psycopg-binary==3.2.0' 'psycopg-pool==3.2.0'
PSYCOPG_NEWEST ?= --upgrade 'psycopg[binary]>=3.2,<4' 'psycopg-pool>=3.2,<4'
DRIVER_TESTS ?= tests/py/test_driver*.py tests/py/test_cli_driver.py tests/py/test_keys_keyring_cache.py
test-psycopg-matrix: system-deps
	@set -e; for which in oldest newest; do \
	    venv=.venv-psycopg-$$which; \
	    [ -x $$venv/bin/python ] || $(PYTHON) -m venv $$venv; \
	    $$venv/bin/pip install --quiet --upgrade pip; \
	    $$venv/bin/pip install --quiet -e ".[dev]"; \
	    if [ $$which = oldest ]; then $$venv/bin/pip install --quiet $(PSYCOPG_OLDEST); \
	    else $$venv/bin/pip install --quiet $(PSYCOPG_NEWEST); fi; \
	    echo "== $$which: $$($$venv/bin/python -c 'import psycopg, psycopg_pool; print("psycopg", psycopg.__version__, "psycopg_pool", psycopg_pool.__version__)')"; \
	    $$venv/bin/pytest -q $(DRIVER_TESTS); \
	done

# The checkers pre-commit runs too; the last two fail when sync.py is not generated from asyncio.py
# and when a published migration changed (or a new one is not locked yet).
lint: venv
	$(BIN)/ruff check python cli tests/py bench migrations tools tests/run_pgtap.py tests/run_citus.py tests/citus
	$(BIN)/ruff format --check python cli tests/py bench migrations tools tests/run_pgtap.py tests/run_citus.py tests/citus
	$(BIN)/mypy python cli
	$(BIN)/python tools/async_to_sync.py --check
	$(BIN)/python tools/freeze.py check

# Publish new migration files: add them to migrations/migrations.lock (a published file never changes).
lock-migrations: venv
	$(BIN)/python tools/freeze.py lock

# The sync driver (python/clinicdb/sync.py) from the async one (asyncio.py, the source).
generate: venv
	$(BIN)/python tools/async_to_sync.py

# The README's two commands from a fresh clone of this repository in a mktemp -d (0700) folder.
test-fresh-clone:
	bash tests/fresh_clone.sh

# Benchmarks: ratios against a baseline measured in the same run.
bench: venv
	$(BIN)/python -m bench

# Fault injection against the pg_auto_failover formation (`clinicdb dev up --ha`, started if needed; docs/ha.md).
# Not part of `make test`. Longer or shorter: make soak SOAK_ARGS="--steady 30 --observe 10".
soak: venv
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

# PostgreSQL 15 server, pgTAP, pg_prove and venv support: installs only what is missing (root: apt).
system-deps:
	@bash docker/install-debian-deps.sh

# The virtual environment with clinicdb installed editable, plus dev tools.
venv: system-deps $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

# Stop the local servers (data kept).
down:
	$(CLINICDB) dev down

# Stop the servers and remove them, the venv and caches.
clean:
	-$(CLINICDB) dev down
	rm -rf .clinicdb $(VENV) .pytest_cache .mypy_cache .ruff_cache
