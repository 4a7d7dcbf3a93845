PYTHON ?= python3.11
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: install test bench bench-gpu clean

install: $(BIN)/vl2

$(BIN)/vl2: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(BIN)/vl2

# `make test` leaves out the tests marked slow (subprocess end-to-end runs, signals, kill -9, the CLI
# export, compiled encoders): about half the time. `make test SLOW=1` runs everything; .ci/run does.
PYTEST_SELECT = $(if $(SLOW),,-m "not slow")

test:
	$(BIN)/python -m pytest -q $(PYTEST_SELECT)

bench:
	$(BIN)/python -m benchmarks.run

# Full-size GPU benchmark (docs/benchmarks.md); flags through BENCH_GPU_ARGS, e.g. "--json out.json".
bench-gpu:
	$(BIN)/python -m benchmarks.bench_gpu $(BENCH_GPU_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
