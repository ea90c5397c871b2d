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
# llama-cpp-python has no Linux wheel on PyPI: it compiles llama.cpp (about 5.5 minutes on 2 idle cores).
# The wheel is built once per machine, not per clone: pip's own wheel cache keeps it in a cache
# dir named after the CMake flags (pip's cache key ignores CMAKE_ARGS, so a wheel built with other
# flags must never be found there), and .cache/wheels keeps a copy beside the clone.
# GGML_NATIVE=OFF with AVX2: a -march=native build enables AMX kernels that segfault in
# llama_decode on these VMs (seen with Gemma 3 Q4_K_M), and a portable wheel can be cached.
# llama.cpp's tests, tools, examples and server are already off when llama-cpp-python builds it
# as a subdirectory. (LLAVA_BUILD=OFF would also skip libmtmd, which tunelab never loads; it is
# left on until a build with it off has been checked.)
LLAMA_CPP_VERSION ?= 0.3.36
LLAMA_CPP_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
LLAMA_PIP_CACHE ?= $(HOME)/.cache/tunelab/pip-llama-cpp-$(shell echo '$(LLAMA_CPP_CMAKE_ARGS)' | cksum | cut -d' ' -f1)
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
WHEELS := .cache/wheels/avx2

.PHONY: demo test test-fast install install-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# Test extras: llama.cpp (GGUF verification) and a browser (web UI tests).
$(VENV)/.test-installed: $(VENV)/.installed
	ls $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1 || \
		CMAKE_ARGS="$(LLAMA_CPP_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$(JOBS) $(BIN)/pip wheel -q --no-deps \
		--cache-dir "$(LLAMA_PIP_CACHE)" -w $(WHEELS) llama-cpp-python==$(LLAMA_CPP_VERSION)
	$(BIN)/pip install -q --force-reinstall --no-deps $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl
	$(BIN)/pip install -q diskcache
	command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium) || \
		echo "warning: could not install chromium; browser tests will be skipped"
	touch $@

install-test: $(VENV)/.test-installed

demo: install
	$(BIN)/tunelab quickstart

test: install-test
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: install-test
	$(BIN)/python -m pytest -q -m "not real_model and not browser" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) test-output .pytest_cache
