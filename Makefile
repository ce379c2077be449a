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
UV := $(VENV)/bin/uv pip install -q --python $(PY)

.PHONY: install install-dev quickstart test lint docs bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# Its own target: a venv made before uv was used here gets it too.
$(VENV)/bin/uv: $(PY)
	$(PIP) install -q --upgrade uv

# Runtime: what `tuneforge` needs to train, serve and run the server (make quickstart). torch through pip
# (it honours the pip configuration a machine may keep its torch build in); the rest through uv, which
# keeps that torch and installs the other packages in parallel: the dev install below took pip over 25
# minutes on a loaded 2-core machine and uv 70 s.
$(VENV)/.installed: $(VENV)/bin/uv pyproject.toml
	$(PIP) install -q$(if $(TORCH_INDEX), --index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	$(UV) -e .
	touch $@

# Dev: + pytest, ruff and the real clients, servers and engines the tests speak to (OpenAI/Triton/KServe
# clients, Chromium's driver, an MLflow server, W&B and SwanLab offline, a Ray cluster) (make test), and
# MkDocs with its Material theme for the docs site (make docs).
$(VENV)/.installed-dev: $(VENV)/.installed
	$(UV) -e ".[dev,docs,ray,wandb,swanlab]"
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

quickstart: $(VENV)/.installed
	$(VENV)/bin/tuneforge quickstart

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check src tests bench examples
	$(VENV)/bin/ruff format --check src tests bench examples

# The docs site (mkdocs.yml, docs/) into site/. --strict: a dead link or anchor, or a page left out of the nav,
# fails the build, and so `make test`. NO_MKDOCS_2_WARNING: Material otherwise prints a banner about MkDocs 2
# on every build (the docs extra keeps mkdocs below 2).
docs: $(VENV)/.installed-dev
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict -d site/

# Two workers, a test file each (module fixtures and in-file order hold): the suite's servers and workers
# wait on each other much of the time, so two files at once use both cores. --durations: CI's log names the
# slowest tests, where the next minute of a 20-minute budget comes from.
# The Ray file runs in a pytest of its own beside them: its 5-8 minutes are mostly Ray's own waits (a
# two-node cluster's start, Ray Train restarting a lost worker) at ~10% of a core, and as one of the two
# workers' files it kept a core idle that long. Its log follows the suite's; either failing fails the target,
# and a lane that hangs is stopped after RAY_LANE_TIMEOUT seconds (exit 124, its log printed) rather than
# holding the target after the suite ended.
RAY_TESTS := tests/platform/test_ray_executor.py
RAY_LANE_TIMEOUT ?= 1200
test: lint docs
	log=$$(mktemp); timeout -k 30 $(RAY_LANE_TIMEOUT) $(VENV)/bin/pytest -q -p no:xdist --durations=10 $(RAY_TESTS) >$$log 2>&1 & ray=$$!; \
	$(VENV)/bin/pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=30 --ignore=$(RAY_TESTS); \
	suite=$$?; wait $$ray; lane=$$?; echo "--- $(RAY_TESTS), beside the suite (exit $$lane):"; cat $$log; \
	rm -f $$log; [ $$suite -eq 0 ] && [ $$lane -eq 0 ]

bench: $(VENV)/.installed
	$(PY) bench/train_throughput.py

clean:
	rm -rf $(VENV) build site *.egg-info src/*.egg-info
