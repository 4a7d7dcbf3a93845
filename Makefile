PYTHON ?= python3.11
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: install test bench bench-gpu clean

install: $(BIN)/vl2

$(BIN)/vl2: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,ray]'
	touch $(BIN)/vl2

test:
	$(BIN)/python -m pytest -q

bench:
	$(BIN)/python -m benchmarks.run

# Full-size GPU benchmark (docs/benchmarks.md); flags through BENCH_GPU_ARGS, e.g. "--json out.json".
bench-gpu:
	$(BIN)/python -m benchmarks.bench_gpu $(BENCH_GPU_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
