# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[examples,test]'
	touch $(STAMP)

demo: $(STAMP)
	rm -rf build/demo
	$(BIN)/daskstep run examples/dask-bag/reana.yaml --workspace build/demo --test
	@echo "The histogram is at build/demo/histogram.png"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Two workers: most of the suite waits on servers, timeouts and sleeps (see tests/conftest.py
# for how tests that share a machine-wide server stay on one worker).
PYTEST_WORKERS ?= 2

test: lint
	$(BIN)/python -m pytest -ra -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/cluster_start.py
	$(BIN)/python bench/workload.py
	$(BIN)/python bench/entrypoint_overhead.py
	$(BIN)/python bench/log_throughput.py
	$(BIN)/python bench/batch_start.py

clean:
	rm -rf build .pytest_cache .ruff_cache
