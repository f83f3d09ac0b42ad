# Churn platform — the two set-up commands are `make dev` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml uv.lock | sha1sum | cut -c1-12)
PYTEST_ARGS ?=
# Two pytest-xdist workers: the suite waits on service processes (dagster dev's sensor ticks,
# run launches, servers starting) for about 40% of its wall time on one worker. Tests that
# share an expensive fixture run in one worker (groups in tests/conftest.py); TEST_WORKERS=0
# runs everything in one process.
TEST_WORKERS ?= 2
XDIST := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder)

.PHONY: install system-deps dev test test-fast lint-check demo seed bench lint format clean

# The exact versions come from uv.lock; --locked fails when pyproject.toml changed and the
# lock was not updated (`.venv/bin/uv lock`, see README). The stamp skips a second sync.
# --compile-bytecode writes every package's .pyc at install: without it, an environment that
# sets PYTHONDONTWRITEBYTECODE recompiles dagster, great_expectations, sklearn... from source
# in every process (each `dagster dev` step, test server and CLI call: seconds each).
$(STAMP): pyproject.toml uv.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet --upgrade pip uv
	UV_PROJECT_ENVIRONMENT=$(VENV) $(BIN)/uv sync --locked --extra dev --extra bench --compile-bytecode --quiet
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP)  ## create .venv and install the locked project with its dev extras

dev: install  ## start Dagster UI (:3000) + daemon on the embedded default, seeding data
	$(BIN)/churn dev

# Debian packages the tests and benchmarks run for real: PostgreSQL 15 (Dagster and MLflow
# storage in the production-like tests), Prometheus and Alertmanager (scraping the sidecar,
# firing alert rules), wrk (load), chromium (the browser test of the Dagster UI, driven by
# Playwright).
SYSTEM_PACKAGES := postgresql prometheus prometheus-alertmanager wrk chromium
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

lint-check: install  ## ruff lint and format check, as CI runs them
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: install lint-check system-deps  ## lint, then the whole test suite
	$(BIN)/pytest $(XDIST) $(PYTEST_ARGS)

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
	$(BIN)/churn bench training --customers 10000 --json
	$(BIN)/churn bench ingest --json

lint: install
	$(BIN)/ruff check .

format: install
	$(BIN)/ruff format .

clean:  ## remove local state (storage, Dagster home); keeps .venv
	rm -rf .churn
