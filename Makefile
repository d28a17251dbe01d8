# Herald: `make run` starts the service, `make test` runs every test. Both set up what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: install services browser run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

services:
	./scripts/ensure-services.sh

# Debian's Chromium for the dashboard's browser test (installed with apt-get when missing).
browser:
	./scripts/ensure-browser.sh

# The embedded default: API and worker in one process, SQLite, no servers needed.
run: install
	$(BIN)/herald serve

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

# Three test processes on two cores: most of a test's time is spent waiting on the live
# processes it drives. Slow fault-injection tests start first (tests/conftest.py). Coverage
# includes the herald processes the tests start ([tool.coverage.run] in pyproject.toml); the
# table lists the files not fully covered.
test: install services browser lint
	$(BIN)/pytest -n 3 --dist worksteal --cov --cov-report=term:skip-covered

bench: install services
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .herald test-artifacts .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.* htmlcov
