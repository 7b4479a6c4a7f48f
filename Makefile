# Self-documenting: `make help` lists every target with its `## comment`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help setup run test test-fast lint format data simulate lab bench bench-full strip

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

setup: $(STAMP) ## create .venv and install everything (idempotent)

run: $(STAMP) ## the main job: data (real or simulated), notebook headless, reports/
	$(PY) -m lensing run

test: $(STAMP) ## lint, then every test (unit tests and the notebook end to end)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pytest

test-fast: $(STAMP) ## the tests not marked slow
	$(VENV)/bin/pytest -m "not slow"

lint: $(STAMP) ## ruff check and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP) ## ruff fix and format in place, strip notebook outputs
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .
	$(VENV)/bin/nbstripout notebooks/*.ipynb

data: $(STAMP) ## download and unpack the real data set into data/dataset
	$(PY) download_data.py

simulate: $(STAMP) ## simulate a small set into data/simulated (1000/250/250 per class)
	$(PY) -m lensing simulate --out data/simulated --train 1000 --val 250 --test 250

lab: $(STAMP) ## open JupyterLab on the notebook
	$(VENV)/bin/jupyter lab notebooks/classification_notebook.ipynb

bench: $(STAMP) ## quick benchmarks against the seed recipe (reports/benchmarks.json)
	$(PY) -m benchmarks

bench-full: $(STAMP) ## the full benchmarks (long)
	$(PY) -m benchmarks --full
