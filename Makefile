# The two commands a new user needs: `make serve` and `make test`. Both create .venv first:
# serving installs chinwag and what it runs on; testing adds the test and benchmark tools.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.installed-runtime
DEV := $(VENV)/.installed-dev
# Test processes: most tests wait on sockets and child processes, not on the CPU, so more
# processes than cores shortens the run.
TEST_WORKERS ?= 4

.PHONY: serve test check install install-dev fakes bench bench-quick screenshots clean

serve: $(RUNTIME)
	$(BIN)/chinwag serve

# The parallel part first; then, alone, the tests that restart PostgreSQL and Redis.
test: $(DEV)
	$(BIN)/pytest -n $(TEST_WORKERS) -m "not serial"
	$(BIN)/pytest -m serial

check: $(DEV)
	scripts/check

install: $(RUNTIME)

install-dev: $(DEV)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUNTIME): pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUNTIME)

$(DEV): pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(RUNTIME) $(DEV)

fakes: $(RUNTIME)
	$(BIN)/chinwag fakes

bench: $(DEV)
	$(BIN)/python -m bench

bench-quick: $(DEV)
	$(BIN)/python -m bench --quick

# The README's screenshots come from the browser tests; a plain test run writes them to a
# temporary directory and leaves the tree as it found it.
screenshots: $(DEV)
	CHINWAG_SCREENSHOTS=$(CURDIR)/docs/img $(BIN)/pytest -p no:cacheprovider tests/web/browser

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
