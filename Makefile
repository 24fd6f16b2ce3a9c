# `make demo` and `make test` are the two commands a newcomer runs (see README).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STACK := deploy/local/stack

.PHONY: venv native constraints wheel stack-up stack-down demo test test-unit test-faults lint typecheck check clean bench cli-docs

# pyproject.toml names compatible ranges; constraints.txt the exact versions the tests run against.
$(BIN)/kfm: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $@

venv: $(BIN)/kfm native

## The optional native ledger scan (native/kfm_scan, Rust): built once and cached in .cache/;
## without Rust the registry runs on the pure Python path (docs/ledger.md#the-native-accelerator).
native: $(BIN)/kfm
	deploy/local/build-native.sh $(BIN)/python

## After changing a dependency in pyproject.toml: install it, then record the exact versions.
constraints:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/python deploy/local/constraints.py > constraints.txt.new && mv constraints.txt.new constraints.txt

## The wheel, into dist/ (docs/deploy.md).
wheel: venv
	rm -rf build  # setuptools reuses build/lib: a module deleted from the tree would stay in the wheel
	$(BIN)/pip wheel -q --no-deps -w dist .

stack-up: venv
	$(STACK) up

stack-down:
	$(STACK) down

## Set up everything, then run the registry end to end on local defaults.
demo: stack-up
	$(BIN)/python deploy/local/demo.py

## Set up everything, then run every test in three legs, each on its own stack: unit and end to end
## against the stack; the webhook, bundle and rollback paths again on Kafka 4; the fault tests
## (servers killed and restarted, on a private stack with the persistent S3 server). Every leg runs
## even if one before it failed; the exit code says whether all passed.
test: stack-up
	deploy/local/build-s3.sh >/dev/null
	rc=0; \
	$(BIN)/python -m pytest -q -rs tests || rc=1; \
	$(MAKE) test-kafka4 || rc=1; \
	$(MAKE) test-faults || rc=1; \
	exit $$rc

# A second, separate stack (own state dir and ports) whose broker is Kafka 4.x:
# aiokafka >= 0.13 negotiates protocol versions, and this leg proves it (the secure listeners too).
K4 := KAFKA_VERSION=4.1.1 KFM_STACK_DIR=$(CURDIR)/.stack-kafka4 KFM_STACK_KAFKA_PORT=19192 \
	KFM_STACK_KAFKA_CONTROLLER_PORT=19193 KFM_STACK_LAKEFS_PORT=18100 KFM_STACK_S3_PORT=19100
K4_TESTS := tests/integration/test_hooks_http.py tests/integration/test_lakefs_webhooks.py \
	tests/integration/test_bundler.py tests/integration/test_rollback.py tests/integration/test_kafka_security.py
test-kafka4: venv
	$(K4) $(STACK) up
	$(K4) $(BIN)/python -m pytest -q -rs $(K4_TESTS); rc=$$?; $(K4) $(STACK) down; exit $$rc

# Fault tests (tests/faults): their session fixture brings up a private stack (.stack-faults/, own
# ports), kills/stops/starts its servers and the registry's processes, and takes it down again;
# the figures go to .stack-faults/fault-figures.jsonl (docs/reliability.md). The `down` here is a
# safety net for an interrupted run (it stops only what that stack's `up` started, by pid).
test-faults: venv
	$(BIN)/python -m pytest -q -rs tests/faults; rc=$$?; KFM_STACK_DIR=$(CURDIR)/.stack-faults $(STACK) down; exit $$rc

## The benchmark suite (docs/performance.md), never part of `make test`: each script prints a table
## (ours, the raw tool measured in the same run, the ratio) and writes bench/results/<name>.json
## (git-ignored: figures of one machine on one day). BENCH_MIB sizes the model file of the bundle paths.
BENCH_MIB ?= 1024
## verify from S3 is measured a second time against SeaweedFS on a stack of its own: moto closes
## every connection after one request (werkzeug's server), so from moto each GET is a new TCP
## connection on both sides, which a production S3 endpoint does not make its clients pay.
SW := KFM_STACK_DIR=$(CURDIR)/.stack-bench-s3 KFM_STACK_S3_SERVER=seaweedfs KFM_STACK_S3_PORT=19400
bench: stack-up
	$(BIN)/python bench/bench_startup.py
	$(BIN)/python bench/bench_verify.py --mib $(BENCH_MIB)
	$(BIN)/python bench/bench_restore.py --mib $(BENCH_MIB)
	$(BIN)/python bench/bench_build.py --mib $(BENCH_MIB)
	$(BIN)/python bench/bench_rollback_restore.py --mib $(BENCH_MIB)
	$(BIN)/python bench/bench_commit_latency.py --out bench/results/commit-latency.json
	$(BIN)/python bench/bench_ledger.py --sizes 10000 100000 --out bench/results/ledger.json
	$(SW) $(STACK) up s3
	$(SW) $(BIN)/python bench/bench_ledger.py --sizes 10000 100000 --steps verify --no-replay \
		--out bench/results/ledger-verify-seaweedfs.json; rc=$$?; $(SW) $(STACK) down; exit $$rc

test-unit: venv
	$(BIN)/python -m pytest -q tests/unit

# The --help blocks of docs/cli.md, from the parser (tests/unit/test_cli_docs.py checks them).
cli-docs: venv
	$(BIN)/python docs/cli_help.py

lint: venv
	$(BIN)/ruff check worker hooks

typecheck: venv
	$(BIN)/mypy

check: lint typecheck

clean: stack-down
	rm -rf .stack .stack-kafka4 .stack-faults
