# Two entry points on a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-unit test-integration install install-dev services lint bench bench-embedded bench-load clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: install
	$(BIN)/sessionpipe demo

services:
	bash scripts/ensure-services.sh

# Every test, after lint; test-unit needs no service, test-integration only the services.
test: install-dev services
	$(MAKE) lint
	$(BIN)/pytest

test-unit: install-dev
	$(BIN)/pytest -m "not integration"

test-integration: install-dev services
	$(BIN)/pytest -m integration

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/mypy shared workers capture_agent sessionpipe synthetic bench tests

bench: install-dev
	$(BIN)/python bench/bench_pipeline.py --minutes 2

# `sessionpipe process` end to end on the embedded default vs the plain ffmpeg commands.
bench-embedded: install-dev
	$(BIN)/python bench/bench_embedded.py --minutes 10 --repeat 3

# Load (fault scenario 8): 1,000 short sessions from 4 capture-agent processes, real workers.
bench-load: install-dev services
	$(BIN)/python bench/bench_load.py --sessions 1000 --agents 4 --json bench/out/load.json

clean:
	rm -rf $(VENV) var .pytest_cache
