PYTHON ?= python3.11
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: install browser test bench bench-gpu clean

install: $(BIN)/vl2 browser

# The report test drives Debian's chromium (tests/test_report.py skips without it): installed with
# apt-get where that works (root, Debian); anywhere else this step says so and goes on.
browser:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
		|| echo "make: chromium could not be installed; the browser test of vl2 report will be skipped"; \
	else echo "make: no chromium and no apt-get as root; the browser test of vl2 report will be skipped"; fi

$(BIN)/vl2: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,ray]'
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
