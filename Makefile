# The Python that builds the venv: the first of these that satisfies requires-python (>= 3.10), so
# the python3 a user already has is taken when it is new enough. Override: make install PYTHON=python3.12
PYTHON_CANDIDATES ?= python3 python python3.13 python3.12 python3.11 python3.10
PYTHON ?= $(shell for p in $(PYTHON_CANDIDATES); do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 10))' >/dev/null 2>&1 \
	&& { echo $$p; break; }; done)
VENV   ?= .venv
BIN     = $(VENV)/bin
# Exactly one onnxruntime build: onnxruntime-gpu (extra "gpu") where an NVIDIA driver answers, else
# onnxruntime (extra "cpu"). They share one import folder, so the other one is removed first.
ORT    ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
ORT_OTHER = $(if $(filter gpu,$(ORT)),onnxruntime,onnxruntime-gpu)
# TORCH=cpu: the CPU-only build of torch from PyTorch's index (≈0.2 GB of wheels instead of ≈4 GB
# with CUDA), at the versions pyproject.toml pins.
TORCH  ?= default
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_PINS = $(shell grep -oE '"(torch|torchvision)==[^"]+"' pyproject.toml | tr -d '"')

.PHONY: install browser test bench bench-gpu clean which-python

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
	@test -n "$(PYTHON)" || { echo "make install: no Python >= 3.10 found (tried $(PYTHON_CANDIDATES)); set PYTHON=..." >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@if [ "$(TORCH)" = cpu ]; then echo "torch: CPU-only build"; \
		$(BIN)/python -m pip install -q --index-url $(TORCH_CPU_INDEX) $(TORCH_PINS); fi
	-$(BIN)/python -m pip uninstall -q -y $(ORT_OTHER) 2>/dev/null
	$(BIN)/python -m pip install -q -e '.[dev,ray,$(ORT)]'
	touch $(BIN)/vl2

# Which interpreter `make install` would use (and why not: empty when none qualifies).
which-python:
	@echo $(PYTHON)

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
