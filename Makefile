# Maxwell's tasks. `make help` lists them. Everything runs from a project-local virtualenv (.venv).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_BUDGET ?= 25J

.DEFAULT_GOAL := help
.PHONY: help demo budget-demo test test-v2 lint typecheck docs bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,dev]'
	touch $@

# The demo needs the package alone: none of the test, dev or zk extras.
$(VENV)/.installed-demo: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

demo: $(VENV)/.installed-demo ## the main job: a private market of four agents (useful, looper, bloat, cheater); exit 0 on the intended outcomes
	$(BIN)/maxwell demo

budget-demo: $(VENV)/.installed ## a looping workload metered live on a 25 J budget until apoptosis (exit 0 when it happens)
	@$(BIN)/maxwell run --budget $(DEMO_BUDGET) -- $(BIN)/python -m maxwell.samples.looper; \
	status=$$?; \
	if [ $$status -eq 124 ]; then echo "budget-demo: apoptosis at the budget, as intended"; \
	else echo "budget-demo: expected exit 124 (apoptosis), got $$status" >&2; exit 1; fi

test: $(VENV)/.installed ## run the whole test suite (root-only cgroup tests skip, saying why, without root)
	$(BIN)/python -m pytest

test-v2: $(VENV)/.installed ## the real-cgroup suites in a pure cgroup v2 kernel under qemu (root; ~18 min)
	$(BIN)/python -m pytest -m v2vm tests/test_v2vm.py

lint: $(VENV)/.installed ## ruff
	$(BIN)/ruff check src tests benchmarks docs

typecheck: $(VENV)/.installed ## mypy --strict on the package
	$(BIN)/mypy

docs: $(VENV)/.installed ## the documentation site (MkDocs, strict: a broken link fails) in site/
	$(BIN)/python -m pip install --quiet -e '.[docs]'
	$(BIN)/python docs/gen_reference.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -d site

bench: $(VENV)/.installed ## the benchmarks (JSON): meter (beside CodeCarbon), market, daemon, audit, proof, zk
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/maxwell bench meter --json
	$(BIN)/maxwell bench market --json
	$(BIN)/maxwell bench daemon --json
	$(BIN)/maxwell bench audit --json
	$(BIN)/maxwell bench proof --json
	$(BIN)/maxwell bench zk --json

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis site
