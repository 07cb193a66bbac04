# Task runner: `make demo` and `make test` are the README's two commands; CI runs `make test`.
SHELL := /bin/bash
# icechunk 2.x needs Python >= 3.12 (on 3.11 pip silently picks icechunk 1.x).
PYTHON ?= $(shell command -v python3.12 || command -v python3.13 || echo python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test check lint imports typecheck unit fast browser lock ui clean

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 12), "Python >= 3.12 is required (icechunk 2.x)"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# --no-compile: Python compiles what it imports on first use; compiling every installed
	# module up front (botocore, dagster, scipy...) costs CI minutes for files never imported.
	$(BIN)/python -m pip install --quiet --no-compile -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-compile --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

## Build every missing region of the demo grid through Dagster (the main job).
demo: install
	$(BIN)/risk build

## Lint, type-check, check the layers and run the whole test suite (what CI runs).
# mypy (about 30 s from a fresh clone) runs beside the tests, whose end-to-end cases mostly wait
# on daemons and subprocesses; either failing fails `make test`.
test: lint imports
	$(MAKE) --no-print-directory -j2 typecheck unit

## The edit loop (under 2 minutes): the same checks and every test but the slow ones
## (real Dagster runs, servers and racing processes in subprocesses).
check: lint imports typecheck fast

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## The three layers: risk_assets/ over resources/ over risk_model/ (contracts in pyproject.toml).
imports: install
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

# Two workers: the machines have two cores, and every test uses its own folders, ports and databases.
# (Measured, docs/benchmarks.md ".ci/run after the cuts": a third worker gained nothing clear, 1,214
# and 1,309 s against 1,339 s, and stretched the end-to-end tests' waits toward their timeouts.
# Ordering the slow tests first runs heavy multi-process tests side by side, which was slower too.)
unit: install browser
	$(BIN)/pytest -q -n 2

fast: install
	$(BIN)/pytest -q -n 2 -m "not slow"

## Debian's chromium for the UI tests (Playwright cannot download its own browser here).
browser:
	command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

## Open the Dagster UI on the same instance `make demo` used.
ui: install
	DAGSTER_HOME=$(CURDIR) RISK_HOME=$(CURDIR) $(BIN)/dagster dev -w workspace.yaml

## Re-resolve the lock file from pyproject.toml in a scratch environment.
lock:
	rm -rf /tmp/risk-lock && $(PYTHON) -m venv /tmp/risk-lock
	/tmp/risk-lock/bin/pip install --quiet -e '.[dev]'
	/tmp/risk-lock/bin/pip freeze --exclude-editable | grep -v '^-e' > requirements.lock

clean:
	rm -rf var storage history schedules logs .logs_queue .telemetry .nux
