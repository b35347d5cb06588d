# make demo: the testbed up, every runner host converged, verified, smoke-tested.
# make test: lint, unit tests and the testbed tests. Both set up what they need on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: setup demo test lint unit clean

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

unit: $(VENV)/.installed
	$(BIN)/pytest -q tests/unit

test: setup lint
	$(BIN)/pytest -q tests

clean:
	-$(BIN)/invoke testbed.down
	rm -rf $(VENV) .testbed .berth reports
