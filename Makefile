# Self-documenting: `make help` lists every target with its `## comment`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help setup system-deps run test test-fast lint format data simulate lab dashboard bench bench-full

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

setup: $(STAMP) ## create .venv and install everything (idempotent)

# The servers and browser the slow tests use: Debian's PostgreSQL and Chromium, installed with
# apt-get when missing (as root); elsewhere those tests skip and say why.
SYSTEM_PACKAGES := postgresql chromium
system-deps: ## install PostgreSQL and Chromium for the tests when missing (Debian, as root)
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	test -x /usr/bin/chromium || missing="$$missing chromium"; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	elif [ -n "$$missing" ]; then echo "not installed:$$missing (their tests will skip)"; fi

run: $(STAMP) ## the main job: data (real or simulated), notebook headless, reports/
	$(PY) -m lensing run

test: $(STAMP) system-deps ## lint, then every test (unit tests, the notebook, PostgreSQL, browser)
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

dashboard: $(STAMP) ## optuna-dashboard for the search in models/ on http://127.0.0.1:8080
	$(PY) -m lensing dashboard --out models

bench: $(STAMP) ## quick benchmarks against the seed pipeline (reports/benchmarks.json)
	$(PY) -m benchmarks

bench-full: $(STAMP) ## the full benchmarks (long)
	$(PY) -m benchmarks --full
