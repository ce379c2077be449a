# The two commands of the README. Everything else is set up by them.
PYTHON ?= python3
VENV ?= .venv
# torch is installed first, so that tuneforge's `torch>=2.3` accepts it and pulls no other build.
# From PyPI, torch==2.13.0 on Linux x86_64 is the CUDA build (with its nvidia-* wheels); on macOS and
# Windows it is the CPU one. For the CPU build on Linux: make quickstart TORCH_INDEX=https://download.pytorch.org/whl/cpu
# (a CUDA index, e.g. .../whl/cu128, picks that CUDA version). Empty: pip's own indexes.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: install install-dev quickstart test lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# Runtime: what `tuneforge` needs to train, serve and run the server (make quickstart).
$(VENV)/.installed: $(PY) pyproject.toml
	$(PIP) install -q$(if $(TORCH_INDEX), --index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	$(PIP) install -q -e .
	touch $@

# Dev: + pytest, ruff and the real clients and browser driver the tests speak through (make test).
$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

quickstart: $(VENV)/.installed
	$(VENV)/bin/tuneforge quickstart

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check src tests bench examples
	$(VENV)/bin/ruff format --check src tests bench examples

# Two workers, a test file each (module fixtures and in-file order hold): the suite's servers and workers
# wait on each other much of the time, so two files at once use both cores.
test: lint
	$(VENV)/bin/pytest -q -n 2 --dist loadfile

bench: $(VENV)/.installed
	$(PY) bench/train_throughput.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
