# Quickstart targets; each creates the virtual environment on first use.
VENV ?= .venv
PYTHON ?= python3
CONFIG ?= configs/fashion_mnist_mlp.yaml
BIN = $(VENV)/bin
FASHION_DIR = /usr/share/datasets/fashion-mnist

.PHONY: setup train test data bench clean

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

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/bench_train.py

clean:
	rm -rf $(VENV) runs plots .pytest_cache
