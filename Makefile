# crawljob: `make run` processes a sample file end to end on a local stack; `make test` tests it all.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: help install run test lint format clean bench-worker

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip check
	touch $(STAMP)

install: $(STAMP) ## Create .venv with crawljob and the dev tools

run: $(STAMP) ## Run the local stack and process a sample CSV end to end (ARGS="--once --size-mb 5")
	$(BIN)/crawljob run $(ARGS)

test: $(STAMP) ## Run the test suite (unit, integration, end to end)
	$(BIN)/pytest -q $(ARGS)

lint: $(STAMP) ## ruff (lint + format check) and mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP) ## Reformat the code with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench-worker: $(STAMP) ## Worker vs cat, pandas, DuckDB, polars on a generated CSV; one table (SIZE_MB=800 REPEAT=2)
	$(BIN)/pip install -q polars duckdb
	$(BIN)/python bench/worker.py --size-mb $(or $(SIZE_MB),800) --repeat $(or $(REPEAT),2)

clean: ## Remove the venv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
