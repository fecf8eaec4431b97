# The two commands of the README: `make demo` and `make test`. Both create .venv with
# Python 3.12 if needed and install what they use; nothing has to be installed by hand.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin

# The first Python 3.12 that actually runs: PATH first, then pyenv's versions (a pyenv shim
# named python3.12 exists even where 3.12 is not the selected version, and then fails).
PYTHON312 ?= $(shell for p in python3.12 $$HOME/.pyenv/versions/3.12*/bin/python3.12 \
	/usr/local/bin/python3.12 /usr/bin/python3.12; do \
	"$$p" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null && { echo "$$p"; break; }; \
	done)

.PHONY: demo test test-fast lint bench clean sbc

$(BIN)/python:
	@test -n "$(PYTHON312)" || { echo "Python 3.12 not found; install it or run 'make PYTHON312=/path/to/python3.12 ...'"; exit 1; }
	$(PYTHON312) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/bayes-gmm run configs/em_walkthrough.toml --overwrite

# The suite runs twice: JAX's default float32 and again with float64 enabled (tests that
# do not depend on the precision run in the first pass only: tests/conftest.py). Most of
# its time is XLA compiling (one core each), so two workers nearly halve it; loadscope,
# as tests/conftest.py schedules it, computes each module-scoped fixture once.
PYTEST := $(BIN)/python -m pytest -q -n 2 --dist loadscope

test: $(VENV)/.installed-test
	$(BIN)/ruff check .
	JAX_ENABLE_X64=0 $(PYTEST)
	JAX_ENABLE_X64=1 $(PYTEST)

test-fast: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -x

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .

# The benchmark suite (benchmarks/README.md): about 35 minutes on a quiet 2-core machine,
# then the samplers, whose NUTS from NumPyro's default start on the synthetic set alone
# can take over 40 (`python benchmarks/run_all.py --only ...` runs a part).
# `make bench BENCH_ARGS=--quick` is a smoke run of a few minutes.
bench: $(VENV)/.installed-test
	$(BIN)/python -c 'import gmmx, sklearn' 2>/dev/null || $(BIN)/python -m pip install -q -e '.[test,bench]'
	$(BIN)/python benchmarks/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) results build *.egg-info

# Simulation-based calibration of both samplers at full size (benchmarks/sbc.py; results in
# benchmarks/results/sbc*): 500 simulations per sampler in each of four cells (full and
# diag, K = 2 and 3). About 10 minutes on a 2-core machine (9 extrapolated from timed runs
# of 100 and 200 simulations per cell at a load of 2 to 5; see benchmarks/README.md).
sbc: $(VENV)/.installed-test
	$(BIN)/python benchmarks/sbc.py
