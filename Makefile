# make demo: the testbed up, every runner host converged, verified, smoke-tested.
# make test: lint, unit tests and the testbed tests. Both set up what they need on a fresh machine.
# make bench: the converge benchmark (bench/README.md): berth vs ansible-playbook vs pyinfra, bench/RESULTS.md.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: setup demo test lint unit bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

setup: $(VENV)/.installed
	scripts/ensure-docker.sh

demo: setup
	$(BIN)/invoke demo

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy

unit: $(VENV)/.installed
	$(BIN)/pytest -q tests/unit

test: setup lint
	$(BIN)/pytest -q tests

$(VENV)/.bench-installed: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[dev,bench]'
	touch $@

bench: setup $(VENV)/.bench-installed
	$(BIN)/python -m bench --hosts 1,10,30 --repeat 5

clean:
	-$(BIN)/invoke testbed.down
	rm -rf $(VENV) .testbed .berth reports
