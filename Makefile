# Everything runs from a project-local .venv that this Makefile creates.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SPEC ?= specs/demo.toml
STACKS := $(BIN)/stacks
INSTALLED := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test test-fast lint lock build publish export bench clean

$(INSTALLED): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $@

DEMO_DIR := specs
DEMO_DEPLOY := $(DEMO_DIR)/_deploy

## demo: lock, build, publish and export specs/demo.toml, run its app, deploy the archives and run it again
demo: $(INSTALLED)
	$(STACKS) show specs/demo.toml
	$(STACKS) lock specs/demo.toml
	$(STACKS) build specs/demo.toml
	$(STACKS) run specs/demo.toml demo
	$(STACKS) publish specs/demo.toml
	$(STACKS) export specs/demo.toml
	$(DEMO_DIR)/_export/app-demo/bin/python -m demo_app
	rm -rf $(DEMO_DEPLOY)
	$(STACKS) deploy $(DEMO_DIR)/_artifacts --target $(DEMO_DEPLOY)
	$(DEMO_DEPLOY)/app-demo/bin/python -m demo_app

## lock, build, publish, export: one step for SPEC (default specs/demo.toml), for CI use
lock build publish export: $(INSTALLED)
	$(STACKS) $@ $(SPEC)

## test: lint, then the whole test suite (slow end-to-end tests included)
test: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## test-fast: the test suite without the slow end-to-end tests
test-fast: $(INSTALLED)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

## bench: the benchmark suite (table + bench/results/latest.json); BENCH_ARGS="--only publish"
bench: $(INSTALLED)
	$(BIN)/python -m bench $(BENCH_ARGS)

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) specs/cache specs/_artifacts specs/_export specs/_deploy
