# Each target builds .venv if it is missing and installs what it needs: the core and
# development dependencies for demo, test, bench and lint; PyTorch only for calibrate.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_STAMP := $(VENV)/.installed-calibrate

.PHONY: demo test test-calibrate calibrate bench lint clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# torch goes in pinned first: its CPU wheel lies on local disk here, where an unpinned
# torch would pull a multi-GB CUDA build; the calibrate extra (torch>=2.1) then finds it.
# Elsewhere `pip install -e '.[calibrate]'` takes whichever torch suits the machine.
$(TORCH_STAMP): $(STAMP)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,calibrate]'
	touch $(TORCH_STAMP)

demo: $(STAMP)
	$(BIN)/llmsim run scenarios/quickstart.yaml --out results/quickstart

test: $(STAMP)
	$(BIN)/pytest -n 2 --dist loadfile -m "not timing"

# The calibration harness and the CPU calibrate -> predict check, with PyTorch.
test-calibrate: $(TORCH_STAMP)
	$(BIN)/pytest -n 2 tests/test_calibrate_harness.py
	$(BIN)/pytest -m timing

calibrate: $(TORCH_STAMP)
	$(BIN)/llmsim calibrate --device cpu --quick --out results/calibration/cpu.yaml

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

lint: $(STAMP)
	$(BIN)/ruff check sim tests bench
	$(BIN)/ruff format --check sim tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) results .pytest_cache .mypy_cache .ruff_cache
