# Churn platform — the two set-up commands are `make dev` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: install system-deps dev test test-fast demo seed bench lint format clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --python $(BIN)/python --quiet -e '.[dev,bench]'
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP)  ## create .venv and install the project with its dev extras

dev: install  ## start Dagster UI (:3000) + daemon on the embedded default, seeding data
	$(BIN)/churn dev

# Debian packages the tests and benchmarks run for real: PostgreSQL 15 (Dagster and MLflow
# storage in the production-like tests), Prometheus (scraping the sidecar), wrk (load).
SYSTEM_PACKAGES := postgresql prometheus wrk
system-deps:  ## install missing Debian packages (root only; otherwise those tests skip)
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    (apt-get install -y --no-install-recommends $$missing || \
	     (apt-get update && apt-get install -y --no-install-recommends $$missing)) >/dev/null \
	    || echo "warning: could not install$$missing (their tests will install or skip)"; \
	  else echo "not root: skipping$$missing (their tests will skip)"; fi; \
	fi

test: install system-deps  ## run the whole test suite
	$(BIN)/pytest $(PYTEST_ARGS)

test-fast: install  ## unit tests only (no service processes)
	$(BIN)/pytest -m "not integration" $(PYTEST_ARGS)

demo: install  ## materialize the whole graph once on the synthetic data set
	$(BIN)/churn demo

seed: install  ## write the synthetic data set into the landing zone
	$(BIN)/churn seed --if-empty

bench: install system-deps  ## benchmarks: ratios against references measured in the same run
	$(BIN)/churn bench features --json
	$(BIN)/churn bench drift --json
	$(BIN)/churn bench serving --json
	$(BIN)/python benchmarks/import_time.py

lint: install
	$(BIN)/ruff check .

format: install
	$(BIN)/ruff format .

clean:  ## remove local state (storage, Dagster home); keeps .venv
	rm -rf .churn
