# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test smoke bench bench-profile format clean

run: $(STAMP) ## Start the emulator and the function on http://localhost:8080
	$(BIN)/python -m scripts.serve

test: $(STAMP) ## Lint, then run every test (starts its own emulator)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

smoke: ## Check a deployed counter: make smoke URL=https://... [ORIGIN=https://your.site]
	@test -n "$(URL)" || { echo "usage: make smoke URL=<function URL> [ORIGIN=https://your.site]"; exit 1; }
	scripts/smoke.sh $(if $(ORIGIN),--origin=$(ORIGIN)) "$(URL)"

bench: $(STAMP) ## Benchmark the counting strategies on Google's emulator (~5 min); writes bench/results/
	$(BIN)/python -m bench.run

bench-profile: $(STAMP) ## Where the server's CPU goes at 32 clients (py-spy); writes bench/results/profile.md
	$(BIN)/python -m bench.profile

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
