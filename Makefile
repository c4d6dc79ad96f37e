# Every target bootstraps its own virtual environment (.venv) with only Python 3.11 present.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python

.PHONY: demo up test test-fast bench proto clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Runtime packages only (what the services need).
$(VENV)/.runtime: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	touch $@

# Runtime + tests + training tools (torch CPU, onnx) for the test suite.
$(VENV)/.dev: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev,train]'
	touch $@ $(VENV)/.runtime

demo: $(VENV)/.runtime  ## the main job on a generated sample, with the embedded stack
	$(BIN)/streamsight demo --out out/demo

up: $(VENV)/.runtime  ## embedded NATS + every built service, until Ctrl-C
	$(BIN)/streamsight up

test: $(VENV)/.dev  ## the whole suite (slow tests included), two workers: slow tests one at a time in one (tests/conftest.py)
	$(BIN)/pytest -q -n 2 --dist loadgroup

test-fast: $(VENV)/.dev
	$(BIN)/pytest -q -m "not slow"

bench: $(VENV)/.dev  ## benchmarks: ratios against baselines measured in the same run
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

proto: $(VENV)/.dev  ## regenerate streamsight/gen from protos/
	$(PY) -m streamsight.protogen

clean:
	rm -rf $(VENV) var out .pytest_cache
