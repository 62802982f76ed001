# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
VENV10 := .venv10
PY := $(VENV)/bin/python
PY10 := $(VENV10)/bin/python
PYTEST_ARGS ?=

.PHONY: demo test test9 test10 lint bench sim clean

$(VENV)/.stamp: requirements.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

# The official 10.x client ships as `ibapi-stable` but installs the `ibapi`
# module: install the project without its dependencies so pip never pulls
# PyPI's 9.81 `ibapi` over it.
$(VENV10)/.stamp: requirements-ibapi10.txt setup.py
	$(PYTHON) -m venv $(VENV10)
	$(PY10) -m pip install -q -r requirements-ibapi10.txt
	$(PY10) -m pip install -q --no-deps -e .
	touch $@

demo: $(VENV)/.stamp
	$(PY) -m ib_resilience.cli demo

sim: $(VENV)/.stamp
	$(PY) -m ib_resilience.sim --port 7497

# Benchmarks (bench/ -> docs/performance.md): a third venv with the project, the 9.81 pins,
# the benchmark-only peer ib-async and, if it installs, matplotlib for the timeline plot.
# Never part of `make test` or CI. `make bench BENCH_ARGS=--quick` for a short run.
VENV_BENCH := .venv-bench
PY_BENCH := $(VENV_BENCH)/bin/python
MATPLOTLIB_PIN := matplotlib==3.11.2
BENCH_ARGS ?=

$(VENV_BENCH)/.stamp: requirements.txt requirements-bench.txt setup.py
	$(PYTHON) -m venv $(VENV_BENCH)
	$(PY_BENCH) -m pip install -q -r requirements.txt -r requirements-bench.txt
	-$(PY_BENCH) -m pip install -q "$(MATPLOTLIB_PIN)"
	$(PY_BENCH) -m pip install -q --no-deps -e .
	touch $@

bench: $(VENV_BENCH)/.stamp
	IB_BENCH_VIA_MAKE=1 $(PY_BENCH) bench/run.py $(BENCH_ARGS)

lint: $(VENV)/.stamp
	$(VENV)/bin/ruff check ib_resilience tests bench scripts

test9: $(VENV)/.stamp
	$(PY) -m pytest $(PYTEST_ARGS)

test10: $(VENV10)/.stamp
	$(PY10) -m pytest $(PYTEST_ARGS)

test: lint test9 test10

clean:
	rm -rf $(VENV) $(VENV10) .pytest_cache
