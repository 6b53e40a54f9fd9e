# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_STAMP := $(VENV)/.demo-stamp
TEST_STAMP := $(VENV)/.test-stamp

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The demo needs the local backend and what its analysis imports; the tests need every extra.
# .ci/install.py installs with uv (pip's settings handed over), or with pip if uv cannot be had.
$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python .ci/install.py -e '.[examples]'
	touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python .ci/install.py -e '.[examples,test]'
	touch $@ $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	rm -rf build/demo
	$(BIN)/daskstep run examples/dask-bag/reana.yaml --workspace build/demo --test
	@echo "The histogram is at build/demo/histogram.png"

lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Three workers on 2 cores: most of the suite waits on servers, timeouts and sleeps (CI: 946 s
# with three, 969-1070 s with two; see tests/conftest.py for how tests that share a
# machine-wide server stay on one worker).
PYTEST_WORKERS ?= 3

test: lint
	$(BIN)/python -m pytest -ra -n $(PYTEST_WORKERS) --dist loadgroup --no-loadscope-reorder $(PYTEST_ARGS)

bench: $(TEST_STAMP)
	$(BIN)/python bench/whole_run.py
	$(BIN)/python bench/cluster_start.py
	$(BIN)/python bench/workload.py
	$(BIN)/python bench/entrypoint_overhead.py
	$(BIN)/python bench/log_throughput.py
	$(BIN)/python bench/batch_start.py

clean:
	rm -rf build .pytest_cache .ruff_cache
