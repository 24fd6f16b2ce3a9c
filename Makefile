# `make demo` and `make test` are the two commands a newcomer runs (see README).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STACK := deploy/local/stack

.PHONY: venv stack-up stack-down demo test test-unit lint typecheck check clean

$(BIN)/kfm: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(BIN)/kfm

stack-up: venv
	$(STACK) up

stack-down:
	$(STACK) down

## Set up everything, then run the registry end to end on local defaults.
demo: stack-up
	$(BIN)/python deploy/local/demo.py

## Set up everything, then run every test (unit and end to end against the stack).
test: stack-up
	$(BIN)/python -m pytest -q -rs tests

test-unit: venv
	$(BIN)/python -m pytest -q tests/unit

lint: venv
	$(BIN)/ruff check worker hooks

typecheck: venv
	$(BIN)/mypy

check: lint typecheck

clean: stack-down
	rm -rf .stack
