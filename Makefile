# Two commands on a fresh machine: `make run` (main job) and `make test` (the suite).
# Each creates the virtual environment in .venv when it is missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONHASHSEED ?= 0

.PHONY: run test lint format env clean-cache

env: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,cluster]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m analyses.asymmetry_vs_mrs

test: $(STAMP) lint
	$(PY) -m pytest -q tests

lint: $(STAMP)
	$(PY) -m ruff check hypo analyses tests
	$(PY) -m ruff format --check hypo analyses tests

format: $(STAMP)
	$(PY) -m ruff format hypo analyses tests
	$(PY) -m ruff check --fix hypo analyses tests
