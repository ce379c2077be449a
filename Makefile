# The two commands of the README. Everything else is set up by them.
PYTHON ?= python3
VENV ?= .venv
# Default: the CPU build on this disk. GPU users: make TORCH_SPEC='torch' (or a CUDA index spec).
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: install install-dev quickstart test lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.installed: $(PY) pyproject.toml
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[dev]"
	touch $@

install install-dev: $(VENV)/.installed

quickstart: $(VENV)/.installed
	$(VENV)/bin/tuneforge quickstart

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests bench examples
	$(VENV)/bin/ruff format --check src tests bench examples

test: lint
	$(VENV)/bin/pytest -q

bench: $(VENV)/.installed
	$(PY) bench/train_throughput.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
