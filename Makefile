PYTHON ?= python3.11
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: install test bench clean

install: $(BIN)/vl2

$(BIN)/vl2: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(BIN)/vl2

test:
	$(BIN)/python -m pytest -q

bench:
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) build *.egg-info
