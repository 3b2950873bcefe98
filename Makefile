# driftline: `make demo` sets everything up and runs the main job; `make test` runs the tests.
# `make setup` is idempotent: a second run does nothing and needs no network.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.driftline-installed
JARS   := .driftline/jars/spark.stamp .driftline/jars/kafka.stamp .driftline/jars/object-store.stamp
export SPARK_LOCAL_IP ?= 127.0.0.1

.PHONY: help setup demo demo-test test lint unit loop reliability cluster bench broker-start broker-stop clean

help:
	@echo "make demo    set up (venv, JVM jars) and run the end-to-end demo on the embedded defaults"
	@echo "make test    set up and run lint, type checks and the whole test suite"
	@echo "make loop    run the closed-loop suite: monitor alerts, retraining, shadow, canary, promotion, rollback"
	@echo "make reliability run the fault battery: poison records, lost commits, replays, bad configuration"
	@echo "make demo-test run make demo's test: every phase shown, the summary equal to the tables"
	@echo "make cluster run the slower scale-out suite: a Spark standalone cluster, an S3-compatible lake"
	@echo "make setup   only set up (idempotent; offline after the first run)"
	@echo "make bench   run the benchmarks (see benchmarks/RESULTS.md)"
	@echo "make clean   remove .driftline/ data (keeps the venv and the jar cache)"

setup: $(STAMP) $(JARS)

$(STAMP): pyproject.toml
	@bin/ensure-system
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

$(JARS): conf/jvm/spark-connectors.pom.xml conf/jvm/kafka-broker.pom.xml conf/jvm/object-store.pom.xml $(STAMP)
	@bin/ensure-system
	bin/fetch-jars $(BIN)/python

demo: setup
	$(BIN)/driftline demo

lint: setup
	$(BIN)/ruff check lib jobs streaming tests benchmarks
	$(BIN)/mypy

test: lint
	@bin/ensure-compose
	$(BIN)/pytest -q

unit: setup
	$(BIN)/pytest -q tests/unit

# the closed-loop suite (tests/loop): drift -> alert -> retrain -> shadow -> canary -> champion or
# rollback on the real broker; run by .ci/run after make test
loop: setup
	$(BIN)/pytest -q tests/loop

# the reliability battery (tests/reliability): poison records, a lost commit, replay determinism and
# bad configuration run as a user would; run by .ci/run before make cluster
reliability: setup
	$(BIN)/pytest -q tests/reliability

# `driftline demo` end to end with its summary checked against the tables (tests/demo), about 8
# minutes on 2 cores; not in .ci/run until it passes a fresh-clone run (see the README)
demo-test: setup
	$(BIN)/pytest -q tests/demo

# the scale-out suite (tests/cluster): slower than `make test`, run by .ci/run after it
cluster: setup
	$(BIN)/pytest -q tests/cluster

bench: setup $(VENV)/.driftline-bench-installed
	$(BIN)/python -m benchmarks.run

# the optional bench extra (Evidently, the drift baseline), installed once
$(VENV)/.driftline-bench-installed: pyproject.toml $(STAMP)
	$(BIN)/pip install -q -e '.[dev,bench]'
	@touch $@

broker-start: setup
	$(BIN)/driftline kafka start

broker-stop:
	$(BIN)/driftline kafka stop

clean:
	-$(BIN)/driftline kafka stop
	rm -rf .driftline/lake .driftline/checkpoints .driftline/kafka .driftline/mlflow
