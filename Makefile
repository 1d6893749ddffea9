# Each target builds .venv if it is missing and installs what it needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint clean

# torch goes in first and pinned: its CPU wheel lies on local disk here, where an
# unpinned torch would pull a multi-GB CUDA build; the calibrate extra then finds it.
$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,calibrate]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/llmsim run scenarios/quickstart.yaml --out results/quickstart

test: $(STAMP)
	$(BIN)/pytest -n 2 --dist loadfile -m "not timing"
	$(BIN)/pytest -m timing

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

lint: $(STAMP)
	$(BIN)/ruff check sim tests bench
	$(BIN)/ruff format --check sim tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) results .pytest_cache .mypy_cache .ruff_cache
