# Quickstart targets; each creates the virtual environment on first use.
VENV ?= .venv
PYTHON ?= python3
CONFIG ?= configs/fashion_mnist_mlp.yaml
BIN = $(VENV)/bin
FASHION_DIR = /usr/share/datasets/fashion-mnist

.PHONY: setup train test test-quick test-typer-floor lint coverage data bench clean

$(BIN)/dlcli: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --editable ".[test]"
	@touch $@

setup: $(BIN)/dlcli

# Debian ships Fashion-MNIST as a package; elsewhere dlcli downloads it on first use.
data:
	@if [ ! -d $(FASHION_DIR) ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "Installing Debian's dataset-fashion-mnist (files in $(FASHION_DIR))"; \
		apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	fi

train: setup data
	$(BIN)/dlcli train $(CONFIG)

# Test processes (pytest-xdist): two halve the time of the many tests that wait on dlcli processes,
# servers and DDP ranks, even on two cores. TEST_WORKERS=0 runs the suite in this one process.
TEST_WORKERS ?= 2

# The suite, with the coverage figure reported at the end (a report, not a gate).
test: setup
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --cov=dlcli --cov-report=term:skip-covered

# The development loop: everything but the end-to-end tests that start dlcli processes, DDP
# workers or servers and wait on them (marker e2e). make test runs those too.
test-quick: setup
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) -m "not e2e"

# The oldest typer that pyproject.toml admits, over the newest that setup installs, for the suite
# but its end-to-end tests: typer's own handling of options differs between versions (before 0.29
# it turned the defaults of evaluate's, predict's and export's choice options into None), and
# only the installed one is tested otherwise. CI runs it after make test.
# The floor is read from pyproject.toml's dependencies (`"typer>=X..."`), so it is stated once;
# the folder is given whole, as some tests start dlcli in other working folders.
TYPER_FLOOR := $(shell sed -n 's/^ *"typer *>= *\([0-9][0-9.]*\).*/\1/p' pyproject.toml)
FLOOR_DIR = $(CURDIR)/.typer-floor
test-typer-floor: setup
	@[ "$(words $(TYPER_FLOOR))" = 1 ] || { echo "error: no single typer>=X line in pyproject.toml's dependencies" >&2; exit 2; }
	rm -rf $(FLOOR_DIR)
	$(BIN)/python -m pip install --quiet --no-deps --target $(FLOOR_DIR) "typer==$(TYPER_FLOOR)"
	PYTHONPATH=$(FLOOR_DIR) $(BIN)/python -c 'import sys, typer; sys.exit(0 if typer.__file__.startswith("$(FLOOR_DIR)") else "typer $(TYPER_FLOOR) is not the one imported")'
	PYTHONPATH=$(FLOOR_DIR) $(BIN)/python -m pytest -q -n $(TEST_WORKERS) -m "not e2e" -p no:cacheprovider

# lint-imports checks the layers of ARCHITECTURE.md (contracts in pyproject.toml).
lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

# The suite with the full per-file coverage table, covered files included.
coverage: setup
	$(BIN)/python -m pytest -q --cov=dlcli --cov-report=term

bench: setup
	$(BIN)/python benchmarks/bench_train.py

clean:
	rm -rf $(VENV) runs plots .pytest_cache .typer-floor
