# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test smoke bench bench-memory format clean

run: $(STAMP) ## Start the emulator and the function on http://localhost:8080
	$(BIN)/python -m scripts.serve

test: $(STAMP) ## Lint, then run every test (starts its own emulator)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

smoke: ## Check a deployed counter: make smoke URL=https://... [ORIGIN=https://your.site]
	@test -n "$(URL)" || { echo "usage: make smoke URL=<function URL> [ORIGIN=https://your.site]"; exit 1; }
	scripts/smoke.sh $(if $(ORIGIN),--origin=$(ORIGIN)) "$(URL)"

bench: $(STAMP) ## Counting strategies and cold start under CPU caps (~8 min, root for the caps); writes bench/results/
	$(BIN)/python -m bench.run

bench-memory: $(STAMP) ## Worker memory after POSTs to 30,000 distinct pages, COALESCE_HITS off and on (~5 min)
	$(BIN)/python -m bench.memory

format: $(STAMP) ## Fix what ruff can fix
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

clean: ## Remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache test-artifacts
