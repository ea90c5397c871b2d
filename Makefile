# Two commands do all the set-up on a fresh machine:
#   make demo   - create .venv, install tunelab, run the quick-start on the embedded Gemma 3 270M
#   make test   - create .venv, install tunelab with test extras, run the whole test suite
#
# TORCH picks the torch wheel. The default is the CPU build that lies on this kind of
# machine's disk; on a GPU machine use `make test TORCH=torch` (or pre-install your own
# CUDA torch into .venv) and pip leaves it alone, since tunelab only asks for torch>=2.4.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test test-fast install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/tunelab quickstart

test: install
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -q -m "not real_model and not browser" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) test-output .pytest_cache
