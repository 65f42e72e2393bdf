# The two commands a new user needs: `make demo` and `make test`. `make test-stress` runs the
# concurrency tests (Ray, DDP, kill-and-resume, concurrent store writers) STRESS_RUNS times under
# a CPU load it starts and stops itself, and prints how many runs passed.
# Each creates .venv when missing, installs torch (CPU wheel) first, then synaug with
# its test extras, and makes sure Fashion-MNIST is present.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.synaug-installed

STRESS_RUNS ?= 20

.PHONY: demo test test-stress install data

demo: install data
	$(BIN)/synaug demo

test: install data
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-stress: install
	PYTHON=$(BIN)/python sh scripts/stress-tests.sh $(STRESS_RUNS)

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

data:
	@sh scripts/ensure-fashion-mnist.sh
