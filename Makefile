# Quickstart targets; each creates the virtual environment on first use.
VENV ?= .venv
PYTHON ?= python3
CONFIG ?= configs/fashion_mnist_mlp.yaml
BIN = $(VENV)/bin
FASHION_DIR = /usr/share/datasets/fashion-mnist

.PHONY: setup train test test-quick lint coverage data bench clean

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

# The suite, with the coverage figure reported at the end (a report, not a gate).
test: setup
	$(BIN)/python -m pytest -q --cov=dlcli --cov-report=term:skip-covered

# The development loop: everything but the end-to-end tests that start dlcli processes, DDP
# workers or servers and wait on them (marker e2e). make test runs those too.
test-quick: setup
	$(BIN)/python -m pytest -q -m "not e2e"

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
	rm -rf $(VENV) runs plots .pytest_cache
