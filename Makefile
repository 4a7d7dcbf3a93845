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
# with CUDA), at the versions the lock pins.
TORCH  ?= default
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

# What `make install` installs: the lock of exact versions (requirements/lock-$(ORT).txt, written by
# `make lock`), so two installs a month apart are the same. A lock holds for the Python and platform it
# was resolved for (its "resolved-for" line); anywhere else the ranges of pyproject.toml are installed
# instead, and the step says so.
LOCK      = requirements/lock-$(ORT).txt
LOCK_FOR  = $(shell sed -n 's/^\# resolved-for: //p' $(LOCK))
HERE_FOR  = $(shell $(PYTHON) -c 'import sys, platform; print(f"python{sys.version_info.major}.{sys.version_info.minor}-{sys.platform}-{platform.machine()}")' 2>/dev/null)
# TORCH=cpu installs torch from the CPU index first, so the lock's CUDA libraries are left out.
CUDA_ONLY = ^(nvidia-|triton==|cuda-)
# The oldest stack vl2 supports (the GPU machine's transformers and huggingface_hub), staged beside the
# venv with pip --target: `make test` runs the model tests once more against it.
OLDEST_DIR ?= .stack-oldest
OLDEST_TESTS = tests/test_decode_loop.py tests/test_reference_parity.py tests/test_label_scoring.py tests/test_v1_parity.py tests/test_model_loading.py
# One generation setting of the decode-loop parity is enough to exercise the old API (the other two
# differ only in logits processors, which are transformers' own classes on both stacks).
OLDEST_SELECT = -k "not qwen2-instruct-penalty and not strong-penalty-and-ngrams"
# The GPU machine's Python, for the wheels `make gpu-check` stages there (it lacks av, decord, jsonschema).
GPU_WHEELS ?= .gpu-wheels

.PHONY: install browser slurm test test-all test-oldest test-latest lock bench bench-gpu gpu-wheels gpu-check gpu-check-dry-run clean which-python

install: $(BIN)/vl2 browser slurm $(GPU_WHEELS)/.downloaded

# The report test drives Debian's chromium (tests/test_report.py skips without it): installed with
# apt-get where that works (root, Debian); anywhere else this step says so and goes on.
browser:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
		|| echo "make: chromium could not be installed; the browser test of vl2 report will be skipped"; \
	else echo "make: no chromium and no apt-get as root; the browser test of vl2 report will be skipped"; fi

# The cluster docs test (tests/test_cluster_docs.py, slow) submits the docs' sbatch scripts to a real
# one-node Slurm: Debian's slurm-wlm and munge, installed like chromium (no daemon is started here).
slurm:
	@if command -v slurmctld >/dev/null 2>&1 && command -v munged >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null 2>&1) \
		|| echo "make: slurm-wlm/munge could not be installed; the Slurm test of the cluster docs will be skipped"; \
	else echo "make: no Slurm and no apt-get as root; the Slurm test of the cluster docs will be skipped"; fi

$(BIN)/vl2: pyproject.toml requirements/lock-cpu.txt requirements/lock-gpu.txt
	@test -n "$(PYTHON)" || { echo "make install: no Python >= 3.10 found (tried $(PYTHON_CANDIDATES)); set PYTHON=..." >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	-$(BIN)/python -m pip uninstall -q -y $(ORT_OTHER) 2>/dev/null
	@if [ "$(TORCH)" = cpu ]; then echo "torch: CPU-only build"; \
		$(BIN)/python -m pip install -q --index-url $(TORCH_CPU_INDEX) $$(grep -E '^(torch|torchvision)==' $(LOCK)); fi
	@if [ "$(LOCK_FOR)" = "$(HERE_FOR)" ]; then echo "install: $(LOCK) (exact versions)"; \
		grep -vE '$(if $(filter cpu,$(TORCH)),$(CUDA_ONLY),^$$)' $(LOCK) > $(VENV)/lock.txt; \
		$(BIN)/python -m pip install -q -r $(VENV)/lock.txt && $(BIN)/python -m pip install -q --no-deps -e . ; \
	else echo "install: $(LOCK) was resolved for $(LOCK_FOR), this is $(HERE_FOR): installing the ranges of pyproject.toml"; \
		$(BIN)/python -m pip install -q -e '.[dev,ray,tensorrt-rtx,$(ORT)]'; fi
	touch $(BIN)/vl2

# Which interpreter `make install` would use (and why not: empty when none qualifies).
which-python:
	@echo $(PYTHON)

# Refresh the locks from what pip resolves today within pyproject.toml's ranges (then run make test).
lock:
	$(BIN)/python requirements/lock.py

# `make test`: every test but those marked slow (tests/test_gpu_check.py runs the GPU check's dry run:
# its size and command-line limits, its CPU smoke path), then the model tests once more on the oldest
# supported stack.
# `make test SLOW=1` (or `make test-all`) runs the slow ones too (subprocess end-to-end runs, signals,
# kill -9, the CLI export).
PYTEST_SELECT = $(if $(SLOW),,-m "not slow")

test:
	$(BIN)/python -m pytest -q $(PYTEST_SELECT)
	$(MAKE) --no-print-directory test-oldest

test-all:
	$(MAKE) --no-print-directory test SLOW=1

$(OLDEST_DIR)/.staged: requirements/oldest.txt
	rm -rf $(OLDEST_DIR)
	$(BIN)/python -m pip install -q --no-deps --target $(OLDEST_DIR) -r requirements/oldest.txt
	touch $@

test-oldest: $(OLDEST_DIR)/.staged
	PYTHONPATH=$(OLDEST_DIR) VL2_TEST_EXPECT_TRANSFORMERS=$$(sed -n 's/^transformers==//p' requirements/oldest.txt) \
		$(BIN)/python -m pytest -q -m "not slow" -p no:cacheprovider $(OLDEST_SELECT) tests/test_stack_version.py $(OLDEST_TESTS)

# The suite on the newest releases of everything (upper bounds ignored), in its own venv: drift found
# on purpose, not by a user. Not part of CI.
test-latest:
	$(PYTHON) -m venv .venv-latest
	.venv-latest/bin/python -m pip install -q --upgrade pip
	$(BIN)/python requirements/latest.py '.[dev,ray,$(ORT)]' > .venv-latest/requirements.txt
	.venv-latest/bin/python -m pip install -q --upgrade -r .venv-latest/requirements.txt
	.venv-latest/bin/python -m pip install -q --no-deps -e .
	.venv-latest/bin/python -m pip list --format=freeze > .venv-latest/versions.txt
	.venv-latest/bin/python -m pytest -q $(PYTEST_SELECT)

bench:
	$(BIN)/python -m benchmarks.run

# Full-size GPU benchmark (docs/benchmarks.md); flags through BENCH_GPU_ARGS, e.g. "--json out.json".
bench-gpu:
	$(BIN)/python -m benchmarks.bench_gpu $(BENCH_GPU_ARGS)

# The wheels the GPU machine lacks, for its Python (3.12), into $(GPU_WHEELS)/ (git-ignored, carried to
# it by `make gpu-check`'s command). Part of `make install` (about 36 MB), so the dry run can weigh them;
# where they cannot be downloaded the install goes on and the dry-run test says why it skips.
$(GPU_WHEELS)/.downloaded: requirements/lock-cpu.txt
	@$(BIN)/python -m benchmarks.gpu_check wheels --into $(GPU_WHEELS) >/dev/null 2>&1 && touch $@ \
		|| echo "make: the GPU machine's wheels could not be downloaded (make gpu-wheels); the GPU check's dry run will be skipped"

gpu-wheels:
	$(BIN)/python -m benchmarks.gpu_check wheels --into $(GPU_WHEELS)

# The whole GPU check as one command on the GPU machine (docs/benchmarks.md, "The GPU check"):
#   python3 -m benchmarks.gpu_check run --out "$$OUT"     (carry: $(GPU_WHEELS))
# Here: the dry run, which checks what travels against the limits and runs the CPU smoke path.
gpu-check:
	$(BIN)/python -m benchmarks.gpu_check run --out gpu-check-out

gpu-check-dry-run:
	$(BIN)/python -m benchmarks.gpu_check run --dry-run --out $(or $(TMPDIR),/tmp)/vl2-gpu-check-dry-run

clean:
	rm -rf $(VENV) .venv-latest $(OLDEST_DIR) build *.egg-info
