# Developer entry points. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
VENV  := .venv
BIN   := $(VENV)/bin

.PHONY: help install services demo test lint format bench clean distclean

help:
	@echo "make install   create .venv and install the project (scripts/bootstrap.sh)"
	@echo "make services  start Postgres and Redis if they are down (scripts/services.sh)"
	@echo "make demo      run the end-to-end demo (ARGS='...' passes arguments)"
	@echo "make test      the full check: lint, type check, tests (ARGS='...' goes to pytest)"
	@echo "make lint      ruff format --check, ruff check, mypy"
	@echo "make format    ruff format and ruff check --fix"
	@echo "make bench     run the benchmarks (python -m bench.run; ARGS='--only speed text')"
	@echo "make clean     remove caches and build output (distclean: also .venv)"

install:
	@scripts/bootstrap.sh

services:
	@scripts/services.sh

demo:
	@scripts/demo.sh $(ARGS)

test:
	@scripts/test.sh $(ARGS)

lint: install
	@rc=0; \
	echo "==== ruff format --check"; $(BIN)/ruff format --check . || rc=1; \
	echo "==== ruff check";          $(BIN)/ruff check . || rc=1; \
	echo "==== mypy";                $(BIN)/mypy || rc=1; \
	exit $$rc

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install
	@$(BIN)/python -m bench.run $(ARGS)

clean:
	rm -rf build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache demo-output
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -print0 | xargs -0 rm -rf

distclean: clean
	rm -rf $(VENV)
