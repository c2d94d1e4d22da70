# Entry points on a fresh machine: `make demo`, `make up` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

# Every install takes the exact versions in constraints.txt; `make constraints` rewrites it.
CONSTRAINTS := constraints.txt
LOCK_VENV := .venv-constraints

.PHONY: up demo test test-unit test-integration test-faults install install-up install-dev constraints services packages lint bench bench-embedded bench-enrich bench-load bench-api bench-events bench-live bench-search clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) -e '.[enrich]'
	touch $@

$(VENV)/.installed-up: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) -e '.[enrich,up]'
	touch $@ $(VENV)/.installed

$(VENV)/.installed-dev: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) -e '.[dev]'
	touch $@ $(VENV)/.installed $(VENV)/.installed-up

install: $(VENV)/.installed
install-up: $(VENV)/.installed-up
install-dev: $(VENV)/.installed-dev

# After changing pyproject.toml's dependencies: resolve them afresh in a new venv (dev extras
# included) and write down every version installed, the project itself excepted.
constraints:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LOCK_VENV)/bin/pip install --quiet -e '.[dev]'
	{ echo "# Exact versions for every install (pip install -c $(CONSTRAINTS) ...): written by"; \
	  echo "# make constraints from pyproject.toml on Python $$($(LOCK_VENV)/bin/python -c 'import platform; print(platform.python_version())'); do not edit by hand."; \
	  $(LOCK_VENV)/bin/pip freeze --exclude-editable --exclude sessionpipe; } > $(CONSTRAINTS).tmp
	mv $(CONSTRAINTS).tmp $(CONSTRAINTS)
	rm -rf $(LOCK_VENV)

# docker-compose.yml's workers, API and Flower on this machine without Docker (Procfile, honcho),
# on the local PostgreSQL and Redis: sessionpipe/up.py (secrets: .env, else var/local.env).
up: install-up services
	$(BIN)/python -m sessionpipe.up

demo: install
	bash scripts/ensure-packages.sh --best-effort tesseract-ocr tesseract-ocr-eng
	$(BIN)/sessionpipe demo

services:
	bash scripts/ensure-services.sh

# Debian packages the tests need (speech synthesis, OCR), installed when missing.
packages:
	bash scripts/ensure-packages.sh

# Every test, after lint; test-unit needs no service, test-integration only the services.
test: install-dev services packages
	$(MAKE) lint
	$(BIN)/pytest

test-unit: install-dev packages
	$(BIN)/pytest -m "not integration"

test-integration: install-dev services packages
	$(BIN)/pytest -m integration

# The fault suite at full size (`make test` runs every scenario small): more sessions in
# flight per fault, and the load scenario's share of bench/bench_load.py.
FAULTS_SCALE ?= 5
test-faults: install-dev services
	rm -f var/faults-report.jsonl && mkdir -p var
	SESSIONPIPE_FAULTS_SCALE=$(FAULTS_SCALE) SESSIONPIPE_FAULTS_REPORT=$(abspath var/faults-report.jsonl) \
		$(BIN)/pytest tests/faults
	@cat var/faults-report.jsonl

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/mypy shared workers capture_agent sessionpipe synthetic bench tests

bench: install-dev
	$(BIN)/python bench/bench_pipeline.py --minutes 2

# `sessionpipe process` end to end on the embedded default vs the plain ffmpeg commands.
bench-embedded: install-dev
	$(BIN)/python bench/bench_embedded.py --minutes 10 --repeat 3

# Enrichment of a talk through `sessionpipe process`: each stage per recorded minute, the
# plain faster-whisper call on the same audio, peak memory (bench/RESULTS.md).
ENRICH_MINUTES ?= 5
bench-enrich: install-dev packages
	$(BIN)/python bench/bench_enrich.py --minutes $(ENRICH_MINUTES) --json bench/out/enrich.json

# Load (fault scenario 8): 1,000 short sessions from 4 capture-agent processes, real workers.
bench-load: install-dev services
	$(BIN)/python bench/bench_load.py --sessions 1000 --agents 4 --json bench/out/load.json

# The status API's latency: GET /sessions/{id} and GET /sessions over 10,000 jobs in a fresh
# PostgreSQL database, against the plain SQL reads of the same answers (bench/RESULTS.md).
bench-api: install-dev services
	$(BIN)/python bench/bench_api.py --json bench/out/api.json

# Live sessions (5, 30, 120 min, 1080p30 8 Mbit/s) replayed at 5x through capture-agent watch
# into real workers: seconds from the end to the playable MP4 and the compressed copy.
LIVE_MINUTES ?= 5 30 120
bench-live: install-dev services
	$(BIN)/python bench/bench_live.py --minutes $(LIVE_MINUTES) --json bench/out/live.json

# Search over 1,000 text-made 30-minute sessions on PostgreSQL and SQLite: query latency
# p50/p99 of two-word queries and the time to index one session (bench/RESULTS.md).
bench-search: install-dev services
	$(BIN)/python bench/bench_search.py --sessions 1000 --json bench/out/search.json

clean:
	rm -rf $(VENV) $(LOCK_VENV) var .pytest_cache

# Progress change in the database -> the web page's bar in a real browser (and a plain client).
bench-events: install-dev packages services
	$(BIN)/python bench/bench_events.py --changes 60
